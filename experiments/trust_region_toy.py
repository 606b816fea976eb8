"""Trust region vs fixed temperature under critic error, on a one-step bandit small enough for a CPU.

The stability argument of the TRQAM paper (docs/algorithms.md section 4, Lemma 1) on a toy where everything is known
(DESCRIPTION, also in results.json): a 1-D two-mode base with its exact flow velocity, the true reward Q*(a) = a and a
learned critic Q~ with a misleading bump of height eps (the critic error) between the modes. QAM at fixed inverse
temperatures c and TRQAM at path-KL budgets (agents.trqam.projected_dual_step after every gradient step) fine-tune
v_theta = v_base + MLP(x, t), which starts at the base, on Q~ through the memoryless-SDE core of core/flow.py.

results.json holds, against training steps and eps: the path KL from the base (on fresh rollouts and on the training
batches, which the dual step controls), E[Q*] and E[Q~], the mass on the bump, the TV and W1 distances to the
critic-free run (same method, setting and seed, trained on Q*); beside them the exact continuous-time optima
(quadrature of pi_base exp(beta Q~(clip a)); for TRQAM beta solves KL = eps_KL), Lemma 1's bound
TV <= (exp(2 beta eps) - 1) / 2 for QAM and Pinsker's through the base, 2 sqrt(eps_KL / 2), for TRQAM. With K = 10
the discretised chain is not the continuous one and the samplers need not reach the exact optimum in the steps given
(compare `base.bump_mass` with the continuous base's, `final` with `exact`).

    python experiments/trust_region_toy.py --out_dir=runs/trust_region_toy
"""

import dataclasses
import itertools
import json
import os
import sys
import time

if __package__ in (None, ''):  # `python experiments/trust_region_toy.py` from the repository root.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from absl import app, flags  # noqa: E402

from agents.trqam import get_config as get_trqam_config  # noqa: E402
from agents.trqam import projected_dual_step  # noqa: E402
from core.flow import (adjoint_matching_loss, euler_ode_sample, lean_adjoint, memoryless_sde_rollout,  # noqa: E402
                       path_kl, terminal_adjoint)

# The problem: the mixture base, and the critic's bump.
BASE_MEANS, BASE_STDS, BASE_WEIGHTS = (-0.5, 0.5), (0.15, 0.15), (0.5, 0.5)
BUMP_CENTER, BUMP_WIDTH = 0.0, 0.2
BUMP_HALF_WINDOW = 0.2  # "mass on the bump" = fraction of actions within this distance of its centre
HORIZON = 1  # one action per chunk: D_hat / H = D_hat

FULL = dict(critic_errors=(0.0, 0.5, 1.0, 1.5, 2.0), inv_temps=(1.0, 3.0, 10.0), budgets=(0.1, 0.3, 1.0),
            batch_size=256, flow_steps=10,  # K, as in the paper
            num_evals=30,  # evaluation points along training
            eval_samples=4096, dual_lr=None)  # None: the agent's default eta_lambda
QUICK = dict(critic_errors=(0.0, 2.0), inv_temps=(1.0, 10.0), budgets=(0.1, 0.3), batch_size=128, flow_steps=10,
             num_evals=5, eval_samples=2048,
             dual_lr=0.05)  # above the agent's default, so that lambda settles within the few quick steps
FULL_STEPS, QUICK_STEPS = 2000, 600
HIST_BINS = 40
HIST_EDGES = np.linspace(-1.0, 1.0, HIST_BINS + 1)  # actions are clipped to [-1, 1]
FINAL_FRACTION = 0.2
METRICS = ('path_kl', 'true_reward', 'critic_reward', 'bump_mass', 'true_reward_ode', 'lambda_eff', 'kl_ema')
DUAL_KEYS = ('lam_scale', 'lambda_init', 'lambda_min', 'lambda_max', 'dual_lr', 'kl_ema_coef', 'kl_clip_coef')


def base_velocity(x, t):
    """Exact velocity of the linear interpolant x_t = (1 - t) x_0 + t x_1 to the mixture base (1-D).

    Given component i, x_t ~ N(t m_i, var_i(t)) with var_i = (1 - t)^2 + t^2 s_i^2 and velocity
    v_i = m_i + (x - t m_i) (t s_i^2 - (1 - t)) / var_i; the marginal velocity averages the v_i under the posterior
    of the component given x_t.
    """
    means, stds = jnp.asarray(BASE_MEANS), jnp.asarray(BASE_STDS)
    var = (1.0 - t) ** 2 + t ** 2 * stds ** 2  # (..., C) from t (..., 1)
    centred = x - t * means
    logits = jnp.log(jnp.asarray(BASE_WEIGHTS)) - 0.5 * centred ** 2 / var - 0.5 * jnp.log(var)
    velocities = means + centred * (t * stds ** 2 - (1.0 - t)) / var
    return jnp.sum(jax.nn.softmax(logits, axis=-1) * velocities, axis=-1, keepdims=True)


def true_reward(actions):
    return actions[..., 0]


def learned_critic(actions, critic_error):
    bump = jnp.exp(-jnp.square(actions[..., 0] - BUMP_CENTER) / (2.0 * BUMP_WIDTH ** 2))
    return true_reward(actions) + critic_error * bump


class Residual(nn.Module):
    """v_theta(x, t) - v_base(x, t); the zero last layer makes the fine-tuned flow start at the base."""

    hidden_dims: tuple = (64, 64)

    @nn.compact
    def __call__(self, x, t):
        h = jnp.concatenate([x, t], axis=-1)
        for size in self.hidden_dims:
            h = nn.gelu(nn.Dense(size)(h))
        return nn.Dense(x.shape[-1], kernel_init=nn.initializers.zeros)(h)


@dataclasses.dataclass(frozen=True, eq=False)
class Toy:
    """One run's fine-tuning as functions of its state and its `run`: `trust_region` (0: QAM, 1: TRQAM), `inv_temp`
    (QAM's c), `budget` (TRQAM's eps_KL) and `critic_error` (the bump height). All runs share shapes, so `compile`
    vmaps them into one program."""

    flow_steps: int
    batch_size: int
    dual_config: dict
    tx: optax.GradientTransformation
    residual: Residual = Residual()

    def fine_velocity(self, params):
        return lambda x, t: base_velocity(x, t) + self.residual.apply(params, x, t)  # noqa: E731

    def rollout(self, params, rng, num):
        noise_rng, rollout_rng = jax.random.split(rng)
        noise = jax.random.normal(noise_rng, (num, 1))
        return memoryless_sde_rollout(self.fine_velocity(params), base_velocity, noise, rollout_rng, self.flow_steps)

    def loss(self, params, rng, run, lam):
        """QAM: a_K = -c grad Q~, sigma_k = g_k.  TRQAM: a_K = -grad Q~, sigma_k = g_k / sqrt(lambda_eff)."""
        sde = self.rollout(params, rng, self.batch_size)
        trust_region = run['trust_region'] > 0
        critic = lambda a: learned_critic(a, run['critic_error'])  # noqa: E731
        scale = jnp.where(trust_region, 1.0, run['inv_temp'])
        adjoints = lean_adjoint(base_velocity, sde.states, terminal_adjoint(critic, sde.terminal, scale),
                                self.flow_steps)
        lam_eff = self.dual_config['lam_scale'] * lam
        sigmas = jnp.where(trust_region, sde.noise_scales / jnp.sqrt(lam_eff), sde.noise_scales)
        return adjoint_matching_loss(sde, adjoints, sigmas), jnp.mean(path_kl(sde)) / HORIZON

    def init(self, run, rng):
        params = self.residual.init(rng, jnp.zeros((1, 1)), jnp.zeros((1, 1)))
        return dict(params=params, opt_state=self.tx.init(params), lam=jnp.float32(self.dual_config['lambda_init']),
                    kl_ema=jnp.float32(self.dual_config['kl_ema_init']), rng=jax.random.fold_in(rng, 1))

    def train_step(self, state, run):
        """One gradient step, then (TRQAM) the dual step; returns the state and the batch's path KL."""
        rng, step_rng = jax.random.split(state['rng'])
        grads, kl = jax.grad(self.loss, has_aux=True)(state['params'], step_rng, run, state['lam'])
        updates, opt_state = self.tx.update(grads, state['opt_state'], state['params'])
        lam, kl_ema = projected_dual_step(state['lam'], state['kl_ema'], kl, run['budget'], self.dual_config)
        trust_region = run['trust_region'] > 0
        return dict(params=optax.apply_updates(state['params'], updates), opt_state=opt_state,
                    lam=jnp.where(trust_region, lam, state['lam']),
                    kl_ema=jnp.where(trust_region, kl_ema, state['kl_ema']), rng=rng), kl

    def train_chunk(self, state, run, num_steps):
        state, kls = jax.lax.scan(lambda state, _: self.train_step(state, run), state, None, length=num_steps)
        return state, jnp.mean(kls)

    def evaluate(self, state, run, rng, num):
        """Path KL on fresh SDE rollouts; rewards of their terminal actions (the process whose KL is measured) and of
        the deterministic ODE sampler (how the agents act)."""
        sde_rng, ode_rng = jax.random.split(rng)
        sde = self.rollout(state['params'], sde_rng, num)
        actions = jnp.clip(sde.terminal, -1.0, 1.0)
        ode_actions = euler_ode_sample(self.fine_velocity(state['params']), jax.random.normal(ode_rng, (num, 1)),
                                       self.flow_steps)
        lam_eff = jnp.where(run['trust_region'] > 0, self.dual_config['lam_scale'] * state['lam'],
                            1.0 / run['inv_temp'])
        metrics = dict(path_kl=jnp.mean(path_kl(sde)) / HORIZON, true_reward=jnp.mean(true_reward(actions)),
                       critic_reward=jnp.mean(learned_critic(actions, run['critic_error'])),
                       bump_mass=jnp.mean(jnp.abs(actions[:, 0] - BUMP_CENTER) < BUMP_HALF_WINDOW),
                       true_reward_ode=jnp.mean(true_reward(ode_actions)), lambda_eff=lam_eff,
                       kl_ema=state['kl_ema'])
        return metrics, actions[:, 0]

    def compile(self):
        """init, train_chunk and evaluate, vmapped over a batch of runs and jitted."""
        return dict(init=jax.jit(jax.vmap(self.init)),
                    train_chunk=jax.jit(jax.vmap(self.train_chunk, in_axes=(0, 0, None)), static_argnums=2),
                    evaluate=jax.jit(jax.vmap(self.evaluate, in_axes=(0, 0, None, None)), static_argnums=3))


def make_toy(setup, dual_config, steps):
    # Cosine decay of the step size (3e-3 -> 3e-4) so that the final samplers are not dominated by SGD noise.
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(optax.cosine_decay_schedule(3e-3, steps, alpha=0.1)))
    return Toy(setup['flow_steps'], setup['batch_size'], dual_config, tx)


# Exact continuous-time optima by quadrature (numpy): pi_beta proportional to pi_base exp(beta Q~(clip a)).
_GRID = np.linspace(-2.0, 2.0, 40001)
_DX = _GRID[1] - _GRID[0]


def _base_density():
    return sum(w * np.exp(-0.5 * ((_GRID - m) / s) ** 2) / (np.sqrt(2 * np.pi) * s)
               for m, s, w in zip(BASE_MEANS, BASE_STDS, BASE_WEIGHTS))


def _tilted(beta, critic_error):
    clipped = np.clip(_GRID, -1.0, 1.0)  # the terminal adjoint differentiates Q~ at clip(a)
    logits = beta * (clipped + critic_error * np.exp(-((clipped - BUMP_CENTER) ** 2) / (2 * BUMP_WIDTH ** 2)))
    density = _base_density() * np.exp(logits - logits.max())
    return density / (density.sum() * _DX)


def _kl_to_base(density):
    base = _base_density()
    mask = density > 1e-300
    return float(np.sum(density[mask] * np.log(density[mask] / base[mask])) * _DX)


def _mean_true_reward(density):
    return float(np.sum(density * np.clip(_GRID, -1, 1)) * _DX)


def _trust_region_temperature(budget, critic_error):
    """lambda with KL(pi_{1/lambda} || pi_base) = budget (the KL decreases in lambda), by bisection in log."""
    lo, hi = np.log(1e-3), np.log(1e3)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _kl_to_base(_tilted(np.exp(-mid), critic_error)) > budget else (lo, mid)
    return float(np.exp(0.5 * (lo + hi)))


def exact_reference(method, value, critic_error):
    """The SOC optimum in continuous time for one setting, and its distance to the critic-free one."""
    beta, beta_free = ((value, value) if method == 'qam' else
                       [1.0 / _trust_region_temperature(value, error) for error in (critic_error, 0.0)])
    density, free = _tilted(beta, critic_error), _tilted(beta_free, 0.0)
    out = dict(lambda_eff=1.0 / beta, path_kl=_kl_to_base(density), true_reward=_mean_true_reward(density),
               tv_to_critic_free=float(0.5 * np.sum(np.abs(density - free)) * _DX))
    if method == 'qam':
        out['lemma1_tv_bound'] = float((np.exp(2 * beta * critic_error) - 1) / 2)
    return out


def wasserstein_1(samples, reference_samples):
    """W1 distance between two equal-size 1-D sample sets: the mean gap between sorted samples."""
    return float(np.mean(np.abs(np.sort(samples) - np.sort(reference_samples))))


def histogram(samples):
    """The fractions of the samples in the HIST_BINS bins of [-1, 1] (actions are clipped)."""
    counts, _ = np.histogram(np.clip(samples, -1, 1), HIST_EDGES)
    return counts / counts.sum()


def histogram_tv(samples, reference_samples):
    """TV distance between two sample sets on the HIST_BINS bins of [-1, 1]."""
    return float(0.5 * np.abs(histogram(samples) - histogram(reference_samples)).sum())


def run_settings(setup):
    """(method, inv_temp or budget, critic error) of every run, and the batch of their settings."""
    settings = [('qam', c) for c in setup['inv_temps']] + [('trqam', b) for b in setup['budgets']]
    runs = [(method, value, eps) for method, value in settings for eps in setup['critic_errors']]
    columns = np.array([(method == 'trqam', value if method == 'qam' else 1.0, value if method == 'trqam' else 1.0,
                         eps) for method, value, eps in runs], np.float32).T
    return runs, dict(zip(('trust_region', 'inv_temp', 'budget', 'critic_error'), jnp.asarray(columns)))


def train_and_evaluate(compiled, state, batch, setup, boundaries, num_final, eval_key, log):
    """Trains all runs between the evaluation steps `boundaries`; returns the curves of METRICS, the training
    batches' mean path KL per chunk and the actions of the last `num_final` evaluations."""
    num_evals = len(boundaries) - 1
    curves, train_kl, final_actions = {name: [] for name in METRICS}, [], []
    start = time.time()
    for i in range(num_evals + 1):
        if i > 0:
            state, chunk_kl = compiled['train_chunk'](state, batch, int(boundaries[i] - boundaries[i - 1]))
            train_kl.append(np.asarray(chunk_kl))
        metrics, actions = compiled['evaluate'](state, batch, jax.random.fold_in(eval_key, i), setup['eval_samples'])
        for name in curves:
            curves[name].append(np.asarray(metrics[name]))
        if i > num_evals - num_final:
            final_actions.append(np.asarray(actions))
        if i > 0:
            log(f'step {boundaries[i]:6d}/{boundaries[-1]}  ({time.time() - start:5.1f} s)')
    return curves, train_kl, np.concatenate(final_actions, axis=1)  # actions: (runs, num_final * eval_samples)


def base_summary(base_key, num, flow_steps):
    """The uncontrolled SDE's clipped terminal actions and their summary."""
    noise = jax.random.normal(base_key, (num, 1))
    rollout = memoryless_sde_rollout(base_velocity, base_velocity, noise, jax.random.fold_in(base_key, 1), flow_steps)
    actions = np.clip(np.asarray(rollout.terminal)[:, 0], -1, 1)
    return actions, dict(true_reward_exact=_mean_true_reward(_tilted(0.0, 0.0)), true_reward=float(np.mean(actions)),
                         bump_mass=float(np.mean(np.abs(actions - BUMP_CENTER) < BUMP_HALF_WINDOW)),
                         action_histogram=histogram(actions).tolist())


def run_result(index, runs, curves, train_kl, final_actions, base_actions, num_final):
    """The JSON entry of run `index`; distances are to the critic-free run (same method and setting, eps = 0)."""
    method, value, eps = runs[index]
    reference = runs.index((method, value, 0.0)) if (method, value, 0.0) in runs else None
    actions = final_actions[index]
    distance = lambda measure: None if reference is None else measure(actions, final_actions[reference])  # noqa: E731
    return dict(method=method, inv_temp=value if method == 'qam' else None,
                budget=value if method == 'trqam' else None, critic_error=eps,
                # Averages over the evaluations of the last FINAL_FRACTION of training (smooths the oscillations).
                final={name: float(np.mean([values[index] for values in curves[name][-num_final:]]))
                       for name in curves},
                # D_hat on the training batches of the same window: what the dual step controls.
                train_path_kl=float(np.mean([chunk[index] for chunk in train_kl[-num_final:]])),
                tv_to_critic_free=distance(histogram_tv), w1_to_critic_free=distance(wasserstein_1),
                tv_to_base=histogram_tv(actions, base_actions),
                curves={name: [float(values[index]) for values in curves[name]] for name in curves},
                action_histogram=histogram(actions).tolist(), exact=exact_reference(method, value, eps))


DESCRIPTION = ('One-step bandit, 1-D: base 0.5 N(-0.5, 0.15^2) + 0.5 N(0.5, 0.15^2), true reward Q*(a) = a, '
               f'critic Q~ = Q* + eps exp(-a^2 / (2 {BUMP_WIDTH:g}^2)); QAM at fixed inverse temperature c vs '
               'TRQAM at a path-KL budget eps_KL, both fine-tuned on Q~ with the shared adjoint-matching core. '
               'Rewards, masses and distances are measured on the terminal actions of the memoryless SDE '
               '(the process whose path KL is measured); true_reward_ode is the deterministic ODE sampler. '
               '"final" values are means over the evaluations of the last '
               f'{FINAL_FRACTION:.0%} of training; distances use the actions pooled over them.')


def run_experiment(steps, seed, setup, log=print):
    """Every run of `setup` for `steps` gradient steps, from one seed (coupled runs); returns the results."""
    dual_config = dict(get_trqam_config())
    if setup['dual_lr'] is not None:
        dual_config['dual_lr'] = setup['dual_lr']
    runs, batch = run_settings(setup)
    compiled = make_toy(setup, dual_config, steps).compile()
    init_key, eval_key, base_key = jax.random.split(jax.random.PRNGKey(seed), 3)
    state = compiled['init'](batch, jnp.stack([init_key] * len(runs)))  # one seed for all: coupled runs
    num_evals = min(setup['num_evals'], steps)
    num_final = max(1, int(round(FINAL_FRACTION * num_evals)))
    boundaries = np.linspace(0, steps, num_evals + 1).astype(int)
    start = time.time()
    curves, train_kl, final_actions = train_and_evaluate(compiled, state, batch, setup, boundaries, num_final,
                                                         eval_key, log)
    train_seconds = time.time() - start
    base_actions, base = base_summary(base_key, final_actions.shape[1], setup['flow_steps'])
    results = [run_result(index, runs, curves, train_kl, final_actions, base_actions, num_final)
               for index in range(len(runs))]
    return dict(description=DESCRIPTION, steps=steps, seed=seed,
                setup={k: (list(v) if isinstance(v, tuple) else v) for k, v in setup.items()},
                dual={k: dual_config[k] for k in DUAL_KEYS}, eval_steps=boundaries.tolist(),
                histogram_edges=HIST_EDGES.tolist(), base=base, train_seconds=train_seconds, runs=results)


def _label(run):
    return f'QAM c={run["inv_temp"]:g}' if run['method'] == 'qam' else f'TRQAM eps_KL={run["budget"]:g}'


def _colour(run, setup):
    import matplotlib.pyplot as plt

    values, cmap, value = ((setup['inv_temps'], plt.cm.Reds, run['inv_temp']) if run['method'] == 'qam' else
                           (setup['budgets'], plt.cm.Blues, run['budget']))
    return cmap(0.45 + 0.5 * list(values).index(value) / max(1, len(values) - 1))


def plot_setting(axes, line, results):
    """One method and setting: its curves at the largest critic error and its final values against the error."""
    setting, steps = line[0], results['eval_steps']
    colour, label = _colour(setting, results['setup']), _label(setting)
    worst_run = next(r for r in line if r['critic_error'] == max(results['setup']['critic_errors']))
    axes[0, 0].plot(steps[1:], worst_run['curves']['path_kl'][1:], color=colour, label=label)  # log scale: skip 0
    axes[0, 1].plot(steps, worst_run['curves']['true_reward'], color=colour, label=label)
    axes[0, 2].step(results['histogram_edges'][:-1], worst_run['action_histogram'], where='post', color=colour,
                    label=label)
    xs = [r['critic_error'] for r in line]
    axes[1, 0].plot(xs, [r['final']['path_kl'] for r in line], 'o-', color=colour, label=label)
    axes[1, 1].plot(xs, [r['final']['true_reward'] for r in line], 'o-', color=colour, label=label)
    if setting['tv_to_critic_free'] is not None:
        axes[1, 2].plot(xs, [r['tv_to_critic_free'] for r in line], 'o-', color=colour, label=label)
    if setting['method'] == 'qam':
        axes[1, 2].plot(xs, [min(1.0, r['exact']['lemma1_tv_bound']) for r in line], ':', color=colour)
    else:
        for ax in (axes[0, 0], axes[1, 0]):
            ax.axhline(setting['budget'], color=colour, ls='--', lw=0.8)
        # Pinsker through the base: TV(pi_eps, pi_0) <= 2 sqrt(eps_KL / 2), whatever the critic error.
        axes[1, 2].axhline(min(1.0, np.sqrt(2 * setting['budget'])), color=colour, ls='--', lw=0.8)


def label_axes(axes, worst):
    at_worst = f'(critic error {worst:g})'
    axes[0, 0].set(title=f'Path KL from the base during training {at_worst}', xlabel='gradient step',
                   ylabel='D_hat (Girsanov)', yscale='log')
    axes[0, 1].set(title=f'True reward E[Q*] during training {at_worst}', xlabel='gradient step', ylabel='E[Q*(a)]')
    axes[0, 2].set(title=f'Final action distribution {at_worst}', xlabel='action a', ylabel='fraction of samples')
    axes[1, 0].set(title='Final path KL vs critic error (dashed: TRQAM budgets)', xlabel='critic error eps',
                   ylabel='D_hat (Girsanov)', yscale='log')
    axes[1, 1].set(title='Final true reward vs critic error', xlabel='critic error eps', ylabel='E[Q*(a)]')
    axes[1, 2].set(title='TV to the critic-free policy\n(dotted: Lemma 1 bound for QAM; dashed: sqrt(2 eps_KL))',
                   xlabel='critic error eps', ylabel='TV (histograms)', ylim=(-0.02, 1.02))
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    axes[0, 2].set_ylim(0, 1.45 * axes[0, 2].get_ylim()[1])  # room for the legend
    axes[0, 2].legend(fontsize=7, loc='upper left', ncol=2)
    axes[1, 1].legend(fontsize=8)


def plot(results, path):
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    # The runs of each method and setting, consecutive in run_settings' order.
    for _, line in itertools.groupby(results['runs'], lambda run: (run['method'], run['inv_temp'], run['budget'])):
        plot_setting(axes, list(line), results)
    axes[0, 2].step(results['histogram_edges'][:-1], results['base']['action_histogram'], where='post', color='k',
                    lw=2, label='base')
    axes[0, 2].axvspan(BUMP_CENTER - BUMP_HALF_WINDOW, BUMP_CENTER + BUMP_HALF_WINDOW, color='gold', alpha=0.3,
                       label='critic bump')
    axes[1, 1].axhline(results['base']['true_reward_exact'], color='k', lw=0.8, ls='--', label='base')
    label_axes(axes, max(results['setup']['critic_errors']))
    fig.suptitle('Fixed temperature (QAM) vs trust region (TRQAM) under a misleading critic bump between the base '
                 'modes')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_table(results):
    lines = [f'{"method":<16}{"eps":>5}{"D_hat":>8}{"train":>8}{"E[Q*]":>8}{"E[Q~]":>8}{"bump":>7}{"TV":>7}{"W1":>7}'
             f'{"lam_eff":>9} | {"exact:KL":>8}{"E[Q*]":>7}{"TV":>7}{"Lemma1":>8}']
    for run in results['runs']:
        f, e = run['final'], run['exact']
        tv, w1 = ('-' if value is None else f'{value:.3f}' for value in (run['tv_to_critic_free'],
                                                                         run['w1_to_critic_free']))
        bound = e.get('lemma1_tv_bound')
        bound = '-' if bound is None else (f'{bound:.2f}' if bound < 100 else '>100')
        lines.append(f'{_label(run):<16}{run["critic_error"]:>5g}{f["path_kl"]:>8.3f}{run["train_path_kl"]:>8.3f}'
                     f'{f["true_reward"]:>8.3f}{f["critic_reward"]:>8.3f}{f["bump_mass"]:>7.3f}{tv:>7}{w1:>7}'
                     f'{f["lambda_eff"]:>9.3f} | {e["path_kl"]:>8.3f}{e["true_reward"]:>7.3f}'
                     f'{e["tv_to_critic_free"]:>7.3f}{bound:>8}')
    base = results['base']
    lines.append(f'base (SDE, K={results["setup"]["flow_steps"]}): E[Q*] {base["true_reward"]:.3f}, '
                 f'bump mass {base["bump_mass"]:.3f}')
    return '\n'.join(lines)


def run(out_dir, steps=None, seed=0, quick=False, log=print) -> dict:
    """The experiment (FULL or QUICK, FULL_STEPS or QUICK_STEPS unless `steps`); writes results.json and
    trust_region_toy.png to `out_dir` and returns the results."""
    steps = steps if steps is not None else (QUICK_STEPS if quick else FULL_STEPS)
    os.makedirs(out_dir, exist_ok=True)
    start = time.time()
    results = run_experiment(steps, seed, dict(QUICK if quick else FULL), log)
    results['total_seconds'] = time.time() - start
    json_path, png_path = os.path.join(out_dir, 'results.json'), os.path.join(out_dir, 'trust_region_toy.png')
    with open(json_path, 'w') as f:
        json.dump(results, f, indent=1)
    plot(results, png_path)
    log(summary_table(results))
    log(f'Wrote {json_path} and {png_path} ({results["total_seconds"]:.0f} s).')
    return results


def _define_flags():
    flags.DEFINE_string('out_dir', 'runs/trust_region_toy', 'Where the JSON and the PNG are written.')
    flags.DEFINE_integer('steps', None, f'Gradient steps per run (default {FULL_STEPS}, {QUICK_STEPS} with --quick).')
    flags.DEFINE_integer('seed', 0, 'Seed (shared by all runs, so that eps = 0 is a coupled reference).')
    flags.DEFINE_bool('quick', False, 'A very fast setting for a smoke test (few settings, few steps).')


def main(_):
    run(flags.FLAGS.out_dir, flags.FLAGS.steps, flags.FLAGS.seed, flags.FLAGS.quick)


if __name__ == '__main__':
    _define_flags()
    app.run(main)
