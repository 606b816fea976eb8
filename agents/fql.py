"""Flow Q-Learning with action chunking (FQL, arXiv 2502.02538; docs/algorithms.md section 6).

A BC flow models the data; a one-step policy mu(s, z) maximises the critic while it is distilled
toward the flow's ODE solution from the same noise z. Acting and critic next-actions use mu.
"""

import jax
import jax.numpy as jnp
import ml_collections

from agents.base import CONFIG_RANGES as SHARED_RANGES
from agents.base import Agent, critic_network, flow_network
from core.errors import NON_NEGATIVE
from core.flow import euler_ode_sample, flow_matching_loss


class FQLAgent(Agent):
    PRETRAINED_FLOW_MODULES = ('flow',)

    def actor_loss(self, batch, grad_params, rng):
        observations, actions = batch['observations'], batch['actions']
        bc_rng, noise_rng = jax.random.split(rng)

        flow = lambda x, t, params=None: self.network.select('flow')(observations, x, t, params=params)  # noqa: E731
        bc_loss = flow_matching_loss(lambda x, t: flow(x, t, grad_params), actions, bc_rng, batch['valid'])

        # Distillation toward the BC flow's ODE solution from the same noise (flow held fixed).
        noises = jax.random.normal(noise_rng, actions.shape)
        flow_actions = euler_ode_sample(flow, noises, self.config['flow_steps'])
        one_step_actions = self.network.select('one_step_actor')(observations, noises, params=grad_params)
        distill_loss = jnp.mean(jnp.square(one_step_actions - flow_actions))

        # Q maximisation through the (fixed) critic ensemble's mean.
        qs = self.network.select('critic')(observations, jnp.clip(one_step_actions, -1, 1))
        q_loss = -qs.mean()

        loss = bc_loss + self.config['alpha'] * distill_loss + q_loss
        info = {'actor_loss': loss, 'bc_flow_loss': bc_loss, 'distill_loss': distill_loss, 'q_loss': q_loss}
        return loss, info

    @jax.jit
    def sample_actions(self, observations, rng):
        noises = jax.random.normal(rng, (*observations.shape[:-1], self.config['chunk_dim']))
        return jnp.clip(self.network.select('one_step_actor')(observations, noises), -1, 1)

    TARGET_MODULES = ('critic',)

    @classmethod
    def modules(cls, config, observations, actions):
        return {
            'critic': (critic_network(config), (observations, actions)),
            'flow': (flow_network(config), (observations, actions, actions[..., :1])),
            'one_step_actor': (flow_network(config), (observations, actions)),
        }


CONFIG_RANGES = {**SHARED_RANGES, 'alpha': NON_NEGATIVE}


def get_config():
    return ml_collections.ConfigDict(
        dict(
            agent_name='fql',
            lr=3e-4,  # Adam learning rate, one optimiser over all modules.
            batch_size=256,
            actor_hidden_dims=(512, 512, 512, 512),  # BC flow and one-step policy.
            value_hidden_dims=(512, 512, 512, 512),
            actor_layer_norm=False,
            value_layer_norm=True,
            num_qs=10,  # Critic ensemble size N_q.
            rho=0.5,  # Pessimism of the target: mean - rho * std over the ensemble.
            discount=0.99,
            tau=0.005,  # Polyak rate of the target critic.
            horizon_length=ml_collections.config_dict.placeholder(int),  # Chunk length H (None: per domain).
            flow_steps=10,  # Euler steps K of the BC flow's ODE.
            alpha=10.0,  # Distillation weight (per domain, docs/algorithms.md section 8).
            compute_dtype='float32',  # Dtype of the networks' matrix products; parameters and losses stay float32.
        )
    )
