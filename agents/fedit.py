"""Flow + edit policy (FEdit, after EXPO arXiv 2507.07986), the QAM paper's edit baseline (docs/algorithms.md
section 12.2).

A BC flow proposes a chunk a_flow; a tanh-Gaussian edit policy e ~ pi_e(. | s, a_flow) refines it to
clip(a_flow + edit_scale * e), trained SAC-style to maximise the critic with an auto-tuned entropy temperature.
The flow is pure BC: the critic reaches the actions only through the edit. QAM-E's edit policy on a BC flow.
"""

import jax
import ml_collections

from agents.base import CONFIG_RANGES as SHARED_RANGES
from agents.base import Agent, critic_network, edit_modules, edit_policy_loss, edited_actions, flow_network
from core.distributions import target_entropy_for
from core.errors import POSITIVE, Range
from core.flow import euler_ode_sample, flow_matching_loss


class FEditAgent(Agent):
    PRETRAINED_FLOW_MODULES = ('flow',)
    TARGET_MODULES = ('critic',)

    def flow_actions(self, observations, noises):
        flow = lambda x, t: self.network.select('flow')(observations, x, t)  # noqa: E731
        return euler_ode_sample(flow, noises, self.config['flow_steps'])

    def actor_loss(self, batch, grad_params, rng):
        """L_BC of the flow + the edit policy's -Q(s, a_edited) + alpha log pi_e + the temperature loss."""
        observations = batch['observations']
        bc_rng, noise_rng, edit_rng = jax.random.split(rng, 3)
        flow = lambda x, t: self.network.select('flow')(observations, x, t, params=grad_params)  # noqa: E731
        bc_loss = flow_matching_loss(flow, batch['actions'], bc_rng, batch['valid'])

        flow_actions = self.flow_actions(observations, jax.random.normal(noise_rng, batch['actions'].shape))
        edit_loss, info = edit_policy_loss(self.network, observations, flow_actions, grad_params, edit_rng,
                                           self.config['edit_scale'], self.config['edit_target_entropy'])
        loss = bc_loss + edit_loss
        return loss, {'actor_loss': loss, 'bc_flow_loss': bc_loss, **info}

    @jax.jit
    def sample_actions(self, observations, rng):
        noise_rng, edit_rng = jax.random.split(rng)
        noises = jax.random.normal(noise_rng, (*observations.shape[:-1], self.config['chunk_dim']))
        flow_actions = self.flow_actions(observations, noises)
        return edited_actions(self.network, observations, flow_actions, self.config['edit_scale'], edit_rng)[0]

    @classmethod
    def complete_config(cls, config, chunk_dim):
        target_entropy = target_entropy_for(
            config.get('edit_target_entropy'), config['edit_target_entropy_multiplier'], chunk_dim
        )
        return dict(chunk_dim=chunk_dim, edit_target_entropy=target_entropy)

    @classmethod
    def modules(cls, config, observations, actions):
        return {
            'critic': (critic_network(config), (observations, actions)),
            'flow': (flow_network(config), (observations, actions, actions[..., :1])),
            **edit_modules(config, observations, actions),
        }


CONFIG_RANGES = {**SHARED_RANGES, 'edit_scale': POSITIVE, 'edit_target_entropy': Range(optional=True),
                 'edit_target_entropy_multiplier': Range()}


def get_config():
    return ml_collections.ConfigDict(
        dict(
            agent_name='fedit',
            lr=3e-4,  # Adam learning rate, one optimiser over all modules.
            batch_size=256,
            actor_hidden_dims=(512, 512, 512, 512),  # The BC flow and the edit policy.
            value_hidden_dims=(512, 512, 512, 512),
            actor_layer_norm=False,
            value_layer_norm=True,
            num_qs=10,  # Critic ensemble size N_q.
            rho=0.5,  # Pessimism of the target: mean - rho * std over the ensemble.
            discount=0.99,
            tau=0.005,  # Polyak rate of the target critic.
            horizon_length=ml_collections.config_dict.placeholder(int),  # Chunk length H (None: per domain).
            flow_steps=10,  # Euler steps K of the BC flow's ODE.
            edit_scale=0.2,  # Actions a_flow + edit_scale * e (per domain, docs/algorithms.md section 12.3).
            edit_target_entropy=ml_collections.config_dict.placeholder(float),  # None: -multiplier * dim(chunk).
            edit_target_entropy_multiplier=0.5,
            compute_dtype='float32',  # Dtype of the networks' matrix products; parameters and losses stay float32.
        )
    )
