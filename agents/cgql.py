"""Classifier-guidance Q-learning with action chunking (CGQL; docs/algorithms.md section 6).

The critic is conditioned on flow time, Q(s, a_t, t), and is trained by TD at t = 1. Its action
gradient guides the Euler sampler of the (target) BC flow like a classifier. Modes, by how the critic
at t < 1 is obtained:
  simple: not trained below t = 1; guidance uses grad_a Q(s, a_t, 1);
  mse (CGQL-M): Q(s, a_t, t) regresses to Qbar(s, a_1, 1);
  linex (CGQL-L): Q(s, a_t, t) minimises the linex loss exp(d) + inv_temp Q_t with
      d = inv_temp (Qbar(s, a_1, 1) - Q(s, a_t, t)), whose minimiser is the soft value
      log E[exp(inv_temp Qbar) | a_t] / inv_temp; the loss is the linear d beyond `isd_clip`.
"""

import jax
import jax.numpy as jnp
import ml_collections

from agents.base import CONFIG_RANGES as SHARED_RANGES
from agents.base import Agent, critic_network, flow_network
from core.errors import NON_NEGATIVE, POSITIVE, Choice
from core.critic import chunk_td_target, critic_info, ensemble_regression_loss, pessimistic_ensemble_value
from core.flow import euler_ode_sample, flow_matching_loss

MODES = ('simple', 'mse', 'linex')


def linex_loss(noisy_qs, target_qs, inv_temp: float, isd_clip: float):
    """Elementwise exp(d) + inv_temp Q_t with d = inv_temp (Qbar - Q_t); just d where d > isd_clip.

    The exponential is clipped for numerical stability exactly as in the reference implementation: past
    the clip the loss is the linear d (gradient -inv_temp in Q_t), not a tangent continuation of exp.
    """
    d = inv_temp * (target_qs - noisy_qs)
    beyond = d > isd_clip
    return jnp.where(beyond, d, jnp.exp(jnp.where(beyond, isd_clip, d)) + inv_temp * noisy_qs)


class CGQLAgent(Agent):
    PRETRAINED_FLOW_MODULES = ('flow',)

    def critic_loss(self, batch, grad_params, rng):
        observations, actions = batch['observations'], batch['actions']
        sample_rng, time_rng, noise_rng = jax.random.split(rng, 3)
        ones = jnp.ones_like(actions[..., :1])  # t = 1: noise-free chunks

        next_actions = self.sample_actions(batch['next_observations'], sample_rng)
        next_qs = self.network.select('target_critic')(batch['next_observations'], next_actions, ones)
        next_value = pessimistic_ensemble_value(next_qs, self.config['rho'])
        targets = chunk_td_target(batch, next_value, self.config['discount'], self.config['horizon_length'])
        qs = self.network.select('critic')(observations, actions, ones, params=grad_params)
        loss = ensemble_regression_loss(qs, targets, batch['valid'])
        info = critic_info(qs, targets, loss)
        if self.config['mode'] == 'simple':
            return loss, info

        # The critic below t = 1, member by member, toward the target critic at the clean chunk.
        times = jax.random.uniform(time_rng, ones.shape)
        noises = jax.random.normal(noise_rng, actions.shape)
        noisy_actions = (1.0 - times) * noises + times * actions
        clean_qs = self.network.select('target_critic')(observations, actions, ones)
        noisy_qs = self.network.select('critic')(observations, noisy_actions, times, params=grad_params)
        if self.config['mode'] == 'mse':
            noisy_loss = ensemble_regression_loss(noisy_qs, clean_qs, batch['valid'])
        else:
            losses = linex_loss(noisy_qs, clean_qs, self.config['inv_temp'], self.config['isd_clip'])
            noisy_loss = jnp.mean(losses * batch['valid'])
        info.update(noisy_critic_loss=noisy_loss, noisy_q_mean=noisy_qs.mean())
        return loss + self.config['noisy_coef'] * noisy_loss, info

    def actor_loss(self, batch, grad_params, rng):
        flow = lambda x, t: self.network.select('flow')(batch['observations'], x, t, params=grad_params)  # noqa: E731
        loss = flow_matching_loss(flow, batch['actions'], rng, batch['valid'])
        return loss, {'actor_loss': loss, 'bc_flow_loss': loss}

    def guided_velocity(self, observations):
        """v(x, t) of the target BC flow plus, for t > 0 (steps k >= 1), the classifier guidance

            (grad_a mean_i Q_i(s, a, t_Q) * (1 - t) * inv_temp + a) * guidance_coef / t,

        with t_Q = 1 in mode `simple`, else t, and the online critic. The "+ a" term is not part of
        textbook classifier guidance for this interpolant (that would be (1 - t) / t * inv_temp *
        grad Q alone); it is what the reference implementation does and the published CGQL numbers
        were produced with it (docs/algorithms.md section 6), so it is kept to reproduce them.
        """
        flow = self.network.select('target_flow')
        if self.config['inv_temp'] <= 0:  # The reference skips the whole guidance term then.
            return lambda x, t: flow(observations, x, t)

        def critic_value(x, t):
            critic_times = jnp.ones_like(t) if self.config['mode'] == 'simple' else t
            return self.network.select('critic')(observations, x, critic_times).mean(axis=0).sum()

        def velocity(x, t):
            grad = jax.grad(critic_value)(x, t)
            guided = t > 0  # k = 0 (t = 0) is unguided; the safe divisor avoids 0 / 0 there.
            guidance = (grad * (1.0 - t) * self.config['inv_temp'] + x) * self.config['guidance_coef']
            guidance = guidance / jnp.where(guided, t, 1.0)
            return flow(observations, x, t) + jnp.where(guided, guidance, 0.0)

        return velocity

    @jax.jit
    def sample_actions(self, observations, rng):
        noises = jax.random.normal(rng, (*observations.shape[:-1], self.config['chunk_dim']))
        return euler_ode_sample(self.guided_velocity(observations), noises, self.config['flow_steps'])

    TARGET_MODULES = ('critic', 'flow')

    @classmethod
    def complete_config(cls, config, chunk_dim):
        if config['mode'] not in MODES:
            raise ValueError(f'Unknown CGQL mode {config["mode"]!r}; --agent.mode must be one of {", ".join(MODES)}.')
        return super().complete_config(config, chunk_dim)

    @classmethod
    def modules(cls, config, observations, actions):
        times = actions[..., :1]
        return {
            'critic': (critic_network(config), (observations, actions, times)),
            'flow': (flow_network(config), (observations, actions, times)),
        }


CONFIG_RANGES = {**SHARED_RANGES, 'mode': Choice(('simple', 'mse', 'linex')), 'inv_temp': POSITIVE,
                 'guidance_coef': NON_NEGATIVE, 'noisy_coef': NON_NEGATIVE, 'isd_clip': POSITIVE}


def get_config():
    return ml_collections.ConfigDict(
        dict(
            agent_name='cgql',
            lr=3e-4,  # Adam learning rate, one optimiser over all modules.
            batch_size=256,
            actor_hidden_dims=(512, 512, 512, 512),  # BC flow.
            value_hidden_dims=(512, 512, 512, 512),  # Time-conditioned critic Q(s, a_t, t).
            actor_layer_norm=False,
            value_layer_norm=True,
            num_qs=10,  # Critic ensemble size N_q.
            rho=0.5,  # Pessimism of the target: mean - rho * std over the ensemble.
            discount=0.99,
            tau=0.005,  # Polyak rate of the target critic and of the guided flow's EMA.
            horizon_length=ml_collections.config_dict.placeholder(int),  # Chunk length H (None: per domain).
            flow_steps=10,  # Euler steps K of the guided sampler.
            mode='linex',  # Critic below t = 1: 'simple' (none), 'mse' (CGQL-M) or 'linex' (CGQL-L).
            inv_temp=10.0,  # Inverse temperature of the guidance and of the linex loss (section 8).
            guidance_coef=0.1,  # Guidance step scale (per domain, docs/algorithms.md section 8).
            noisy_coef=0.001,  # Weight of the t < 1 critic loss in modes mse and linex (section 8).
            isd_clip=5.0,  # The linex loss is linear in d beyond this value, for numerical stability.
            compute_dtype='float32',  # Dtype of the networks' matrix products; parameters and losses stay float32.
        )
    )
