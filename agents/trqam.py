"""Trust Region Q-Adjoint Matching (TRQAM, arXiv 2605.27079; docs/algorithms.md section 4).

QAM with the temperature replaced by a trust region: the control channel of the memoryless SDE is
sigma_lambda = g / sqrt(lambda_eff) and the terminal adjoint is -grad Q without temperature, so the
fixed point is pi* proportional to pi_base exp(Q / lambda_eff). lambda is the dual variable of the
constraint KL(P^u || P^base) <= eps_KL on the path-space KL, updated by projected dual descent on an
EMA of the Girsanov estimate D_hat after every gradient step.
"""

import jax
import jax.numpy as jnp
import ml_collections

from agents.qam import CONFIG_RANGES as QAM_RANGES
from agents.qam import QAMAgent
from core.errors import NON_NEGATIVE, POSITIVE, UNIT, Range
from agents.qam import get_config as get_qam_config


def projected_dual_step(lam, kl_ema, path_kl, kl_budget, config):
    """D_clip = min(D_hat, kl_clip_coef eps); D_ema <- (1 - beta) D_ema + beta D_clip;
    lambda <- clip(lambda + eta (D_ema - eps), lambda_min, lambda_max).

    Raising lambda when the KL exceeds the budget is the right sign: the KL decreases in lambda
    (dKL/dlambda = -Var_pi*(Q) / lambda^3).
    """
    clipped_kl = jnp.minimum(path_kl, config['kl_clip_coef'] * kl_budget)
    kl_ema = (1.0 - config['kl_ema_coef']) * kl_ema + config['kl_ema_coef'] * clipped_kl
    lam = jnp.clip(lam + config['dual_lr'] * (kl_ema - kl_budget), config['lambda_min'], config['lambda_max'])
    return lam, kl_ema


class TRQAMAgent(QAMAgent):
    # Dual state: float32 arrays from creation, so the first update compiles once and never again.
    lam: jax.Array
    kl_ema: jax.Array
    kl_budget: jax.Array  # eps_KL of the current phase (offline, then `kl_budget_online`)

    def lambda_eff(self):
        return self.config['lam_scale'] * self.lam

    def adjoint_scale(self):
        return 1.0

    def control_sigmas(self, noise_scales):
        # Simulated noise stays memoryless (sqrt(lambda) sigma = g); the control channel carries 1/sqrt(lambda).
        return noise_scales / jnp.sqrt(self.lambda_eff())

    @jax.jit
    def update(self, batch):
        agent, info = self.gradient_step(batch)
        # D_hat is measured on the rollout of this step, under the parameters before it.
        path_kl = info['actor/path_kl']
        lam, kl_ema = projected_dual_step(self.lam, self.kl_ema, path_kl, self.kl_budget, self.config)
        agent = agent.replace(lam=lam, kl_ema=kl_ema)
        # lambda_eff and the sigma scale after the dual step, as the authors log them (docs/algorithms.md section 9.4).
        info.update({
            'dual/lambda': agent.lambda_eff(),
            'dual/sigma_scale': 1.0 / jnp.sqrt(agent.lambda_eff()),
            'dual/path_kl': path_kl,
            'dual/kl_ema': kl_ema,
            'dual/kl_budget': self.kl_budget,
        })
        return agent, info

    def start_online(self):
        if self.config['kl_budget_online'] is None:
            return self
        return self.replace(kl_budget=jnp.asarray(self.config['kl_budget_online'], jnp.float32))

    @classmethod
    def extra_state(cls, config):
        return {
            'lam': jnp.asarray(config['lambda_init'], jnp.float32),
            'kl_ema': jnp.asarray(config['kl_ema_init'], jnp.float32),
            'kl_budget': jnp.asarray(config['kl_budget'], jnp.float32),
        }


CONFIG_RANGES = {**QAM_RANGES, 'kl_budget': POSITIVE, 'kl_budget_online': Range(0, low_open=True, optional=True),
                 'lam_scale': POSITIVE, 'lambda_init': POSITIVE, 'lambda_min': POSITIVE, 'lambda_max': POSITIVE,
                 'dual_lr': POSITIVE, 'kl_ema_coef': UNIT, 'kl_ema_init': NON_NEGATIVE, 'kl_clip_coef': POSITIVE}


def config_problems(config) -> list:
    """What CONFIG_RANGES cannot say: the dual variable starts inside its projection bounds."""
    low, start, high = config['lambda_min'], config['lambda_init'], config['lambda_max']
    if all(isinstance(value, (int, float)) for value in (low, start, high)) and not low <= start <= high:
        return [f'lambda_min={low!r}, lambda_init={start!r}, lambda_max={high!r}: need lambda_min <= lambda_init '
                '<= lambda_max.']
    return []


def get_config():
    config = get_qam_config()
    del config['inv_temp']  # lambda_eff is the temperature, set by the dual step
    config.update(
        dict(
            agent_name='trqam',
            discount=0.995,  # TRQAM's default everywhere (0.999 with rho 0 for humanoidmaze).
            kl_budget=1.0,  # eps_KL: path-space KL budget per chunk step, offline.
            kl_budget_online=ml_collections.config_dict.placeholder(float),  # None: keep kl_budget online.
            lam_scale=3.0,  # lambda_eff = lam_scale * lambda.
            lambda_init=1.0,
            lambda_min=0.01,  # Projection bounds of the dual variable.
            lambda_max=100.0,
            dual_lr=0.01,  # eta_lambda of the projected dual descent.
            kl_ema_coef=0.1,  # beta of the KL estimate's EMA.
            kl_ema_init=0.0,
            kl_clip_coef=2.0,  # D_hat is clipped at kl_clip_coef * eps_KL before the EMA.
        )
    )
    return config
