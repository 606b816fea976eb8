"""Basic adjoint matching (BAM, the QAM paper's baseline; docs/algorithms.md section 13).

Like QAM, a base flow is trained by BC and its EMA is the reference process of the memoryless SDE; unlike QAM,
the fine-tuned flow is trained by backpropagating through the whole SDE rollout (no lean adjoint): it minimises

    -inv_temp * mean_b [mean_i Q_i(s, x_K) - rho std_i Q_i(s, x_K)] + mean_b sum_{k<K-1} (2 / g_k^2) ||v_theta - vbar_base||^2

with x_K the rollout's terminal chunk under the online critic. The policy is the fine-tuned flow's ODE.
"""

import jax
import jax.numpy as jnp
import ml_collections

from agents.base import CONFIG_RANGES as SHARED_RANGES
from agents.base import Agent, critic_network, flow_network
from core.critic import pessimistic_ensemble_value
from core.errors import NON_NEGATIVE
from core.flow import euler_ode_sample, flow_matching_loss, memoryless_sde_bptt


class BAMAgent(Agent):
    PRETRAINED_FLOW_MODULES = ('base_flow', 'fine_flow')
    TARGET_MODULES = ('critic', 'base_flow')

    def actor_loss(self, batch, grad_params, rng):
        observations = batch['observations']
        bc_rng, rollout_rng = jax.random.split(rng)
        base_flow = lambda x, t: self.network.select('base_flow')(observations, x, t, params=grad_params)  # noqa: E731
        bc_loss = flow_matching_loss(base_flow, batch['actions'], bc_rng, batch['valid'])

        # The rollout's noise as the authors draw it: x_0 from the key itself, eps_k from its K splits.
        flow_steps = self.config['flow_steps']
        noise = jax.random.normal(rollout_rng, (*observations.shape[:-1], self.config['chunk_dim']))
        increments = jnp.stack([jax.random.normal(key, noise.shape) for key in jax.random.split(rollout_rng, flow_steps)])
        fine = lambda x, t: self.network.select('fine_flow')(observations, x, t, params=grad_params)  # noqa: E731
        base = lambda x, t: self.network.select('target_base_flow')(observations, x, t)  # noqa: E731
        terminal, penalty = memoryless_sde_bptt(fine, base, noise, increments, flow_steps)
        qs = self.network.select('critic')(observations, terminal)
        q = pessimistic_ensemble_value(qs, self.config['rho']).mean()
        penalty = penalty.mean()
        bam_loss = penalty - self.config['inv_temp'] * q
        loss = bc_loss + bam_loss
        return loss, {'actor_loss': loss, 'bc_flow_loss': bc_loss, 'bam_loss': bam_loss, 'control_cost': penalty,
                      'q': q}

    @jax.jit
    def sample_actions(self, observations, rng):
        noises = jax.random.normal(rng, (*observations.shape[:-1], self.config['chunk_dim']))
        fine = lambda x, t: self.network.select('fine_flow')(observations, x, t)  # noqa: E731
        return euler_ode_sample(fine, noises, self.config['flow_steps'])

    @classmethod
    def modules(cls, config, observations, actions):
        times = actions[..., :1]
        return {
            'critic': (critic_network(config), (observations, actions)),
            'base_flow': (flow_network(config), (observations, actions, times)),
            'fine_flow': (flow_network(config), (observations, actions, times)),
        }


CONFIG_RANGES = {**SHARED_RANGES, 'inv_temp': NON_NEGATIVE}


def get_config():
    return ml_collections.ConfigDict(
        dict(
            agent_name='bam',
            lr=3e-4,  # Adam over all modules, after a global-norm clip.
            clip_grad_norm=1.0,
            batch_size=256,
            actor_hidden_dims=(512, 512, 512, 512),  # Base flow and fine-tuned flow.
            value_hidden_dims=(512, 512, 512, 512),
            actor_layer_norm=False,
            value_layer_norm=True,
            num_qs=10,  # Critic ensemble size N_q.
            rho=0.5,  # Pessimism of the critic target and of the rollout's Q: mean - rho * std over the ensemble.
            discount=0.99,
            tau=0.005,  # Polyak rate of the target critic and of the base flow's EMA.
            horizon_length=ml_collections.config_dict.placeholder(int),  # Chunk length H (None: per domain).
            flow_steps=10,  # K, for the ODE sampler and the SDE rollout.
            inv_temp=0.3,  # Weight of Q against the control cost; tuned per domain (docs/algorithms.md section 13).
            compute_dtype='float32',  # Dtype of the networks' matrix products; parameters and losses stay float32.
        )
    )
