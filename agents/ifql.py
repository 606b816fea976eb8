"""Implicit Flow Q-Learning with action chunking (IFQL; docs/algorithms.md section 6).

The flow variant of IDQL: a value V(s) is fitted by expectile regression to the pessimistic target
critic at the data's chunks, the critic ensemble regresses to R + gamma^H mask V(s'), and the actor is
a plain BC flow. Acting draws `num_samples` chunks from the flow and keeps the one with the highest
min_i Q_i.
"""

import jax
import jax.numpy as jnp
import ml_collections

from agents.base import CONFIG_RANGES as SHARED_RANGES
from agents.base import Agent, critic_network, flow_network, prefixed
from core.errors import COUNT, Range
from core.critic import (
    chunk_td_target,
    critic_info,
    ensemble_regression_loss,
    expectile_loss,
    pessimistic_ensemble_value,
)
from core.flow import euler_ode_sample, flow_matching_loss
from core.networks import Value


class IFQLAgent(Agent):
    PRETRAINED_FLOW_MODULES = ('flow',)

    def value_loss(self, batch, grad_params):
        """Expectile regression of V(s) toward mean_i Qbar_i(s, a_data) - rho std_i Qbar_i(s, a_data)."""
        target_qs = self.network.select('target_critic')(batch['observations'], batch['actions'])
        targets = pessimistic_ensemble_value(target_qs, self.config['rho'])
        values = self.network.select('value')(batch['observations'], params=grad_params)
        # Not masked by `valid`, as in the reference: the data chunk is a fine action either way.
        loss = jnp.mean(expectile_loss(targets - values, self.config['expectile']))
        return loss, {'value_loss': loss, 'v_mean': values.mean(), 'v_max': values.max(), 'v_min': values.min()}

    def critic_loss(self, batch, grad_params):
        next_value = self.network.select('value')(batch['next_observations'])
        targets = chunk_td_target(batch, next_value, self.config['discount'], self.config['horizon_length'])
        qs = self.network.select('critic')(batch['observations'], batch['actions'], params=grad_params)
        loss = ensemble_regression_loss(qs, targets, batch['valid'])
        return loss, critic_info(qs, targets, loss)

    def actor_loss(self, batch, grad_params, rng):
        flow = lambda x, t: self.network.select('flow')(batch['observations'], x, t, params=grad_params)  # noqa: E731
        loss = flow_matching_loss(flow, batch['actions'], rng, batch['valid'])
        return loss, {'actor_loss': loss, 'bc_flow_loss': loss}

    def total_loss(self, batch, grad_params, rng):
        value_loss, value_metrics = self.value_loss(batch, grad_params)
        critic_loss, critic_metrics = self.critic_loss(batch, grad_params)
        actor_loss, actor_metrics = self.actor_loss(batch, grad_params, rng)
        info = {
            **prefixed('value', value_metrics),
            **prefixed('critic', critic_metrics),
            **prefixed('actor', actor_metrics),
        }
        return value_loss + critic_loss + actor_loss, info

    @jax.jit
    def sample_actions(self, observations, rng):
        """Best of `num_samples` BC-flow chunks per observation under min_i Q_i; any leading batch shape."""
        num_samples = self.config['num_samples']
        batch_shape = observations.shape[:-1]
        repeated = jnp.broadcast_to(observations[..., None, :], (*batch_shape, num_samples, observations.shape[-1]))
        noises = jax.random.normal(rng, (*batch_shape, num_samples, self.config['chunk_dim']))
        flow = lambda x, t: self.network.select('flow')(repeated, x, t)  # noqa: E731
        candidates = euler_ode_sample(flow, noises, self.config['flow_steps'])  # (..., N, H * |A|)
        scores = self.network.select('critic')(repeated, candidates).min(axis=0)  # (..., N)
        best = jnp.argmax(scores, axis=-1)
        return jnp.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]

    TARGET_MODULES = ('critic',)

    @classmethod
    def modules(cls, config, observations, actions):
        value = Value(config['value_hidden_dims'], config['value_layer_norm'], dtype=config['compute_dtype'])
        return {
            'critic': (critic_network(config), (observations, actions)),
            'value': (value, (observations,)),
            'flow': (flow_network(config), (observations, actions, actions[..., :1])),
        }


CONFIG_RANGES = {**SHARED_RANGES, 'expectile': Range(0, 1, low_open=True, high_open=True), 'num_samples': COUNT}


def get_config():
    return ml_collections.ConfigDict(
        dict(
            agent_name='ifql',
            lr=3e-4,  # Adam learning rate, one optimiser over all modules.
            batch_size=256,
            actor_hidden_dims=(512, 512, 512, 512),  # BC flow.
            value_hidden_dims=(512, 512, 512, 512),  # Critic ensemble and value V(s).
            actor_layer_norm=False,
            value_layer_norm=True,
            num_qs=10,  # Critic ensemble size N_q.
            rho=0.5,  # Pessimism of the value's target: mean - rho * std over the ensemble.
            discount=0.99,
            tau=0.005,  # Polyak rate of the target critic.
            horizon_length=ml_collections.config_dict.placeholder(int),  # Chunk length H (None: per domain).
            flow_steps=10,  # Euler steps K of the BC flow's ODE.
            expectile=0.9,  # kappa of the value's expectile regression (per domain, docs/algorithms.md section 8).
            num_samples=32,  # Flow samples per observation when acting; the best under min_i Q_i is taken.
            compute_dtype='float32',  # Dtype of the networks' matrix products; parameters and losses stay float32.
        )
    )
