"""Flow BRAC (FBRAC), the QAM paper's backpropagation-through-time baseline (docs/algorithms.md section 12.2).

A BC flow is trained by flow matching while maximising the critic at the end of its own Euler ODE: the gradient
of Q flows back through all K steps of the sampler, weighted by 1 / alpha against the BC loss. Acting and the
critic's next actions use the same ODE.
"""

import jax
import ml_collections

from agents.base import CONFIG_RANGES as SHARED_RANGES
from agents.base import Agent, critic_network, flow_network
from core.errors import POSITIVE
from core.flow import euler_ode_sample, flow_matching_loss


class FBRACAgent(Agent):
    PRETRAINED_FLOW_MODULES = ('flow',)
    TARGET_MODULES = ('critic',)

    def actor_loss(self, batch, grad_params, rng):
        """L_BC + (-mean_i Q_i(s, ODE_theta(s, z))) / alpha, the ODE differentiated through (section 12.2)."""
        observations = batch['observations']
        bc_rng, noise_rng = jax.random.split(rng)
        flow = lambda x, t: self.network.select('flow')(observations, x, t, params=grad_params)  # noqa: E731
        bc_loss = flow_matching_loss(flow, batch['actions'], bc_rng, batch['valid'])
        noises = jax.random.normal(noise_rng, batch['actions'].shape)
        actions = euler_ode_sample(flow, noises, self.config['flow_steps'])
        q_loss = -self.network.select('critic')(observations, actions).mean()
        loss = bc_loss + q_loss / self.config['alpha']
        return loss, {'actor_loss': loss, 'bc_flow_loss': bc_loss, 'q_loss': q_loss}

    @jax.jit
    def sample_actions(self, observations, rng):
        return self.bc_flow_actions(observations, rng)

    @classmethod
    def modules(cls, config, observations, actions):
        return {
            'critic': (critic_network(config), (observations, actions)),
            'flow': (flow_network(config), (observations, actions, actions[..., :1])),
        }


CONFIG_RANGES = {**SHARED_RANGES, 'alpha': POSITIVE}


def get_config():
    return ml_collections.ConfigDict(
        dict(
            agent_name='fbrac',
            lr=3e-4,  # Adam learning rate, one optimiser over all modules.
            batch_size=256,
            actor_hidden_dims=(512, 512, 512, 512),  # The BC flow.
            value_hidden_dims=(512, 512, 512, 512),
            actor_layer_norm=False,
            value_layer_norm=True,
            num_qs=10,  # Critic ensemble size N_q.
            rho=0.5,  # Pessimism of the target: mean - rho * std over the ensemble.
            discount=0.99,
            tau=0.005,  # Polyak rate of the target critic.
            horizon_length=ml_collections.config_dict.placeholder(int),  # Chunk length H (None: per domain).
            flow_steps=10,  # Euler steps K of the ODE, differentiated through by the actor loss.
            alpha=100.0,  # The Q term's weight is 1 / alpha (per domain, docs/algorithms.md section 12.3).
            compute_dtype='float32',  # Dtype of the networks' matrix products; parameters and losses stay float32.
        )
    )
