"""Flow AWAC (FAWAC), the QAM paper's advantage-weighted flow baseline (docs/algorithms.md section 12.2).

The flow-matching loss of the BC flow is weighted per sample by min(exp(inv_temp (Q(s, a) - V(s))), 100), with
Q the critic ensemble's mean and V(s) a state-value network regressed onto the target critics at the data's
chunk. The critic's next actions and acting use the flow's Euler ODE.
"""

import jax
import jax.numpy as jnp
import ml_collections

from agents.base import CONFIG_RANGES as SHARED_RANGES
from agents.base import Agent, critic_network, flow_network
from core.errors import POSITIVE
from core.flow import flow_matching_loss
from core.networks import Value


class FAWACAgent(Agent):
    PRETRAINED_FLOW_MODULES = ('flow',)
    TARGET_MODULES = ('critic',)

    def critic_loss(self, batch, grad_params, rng):
        """Section 2's regression plus V's: mean_i valid * (Qbar_i(s, a) - V(s))^2 over the target critics."""
        loss, info = super().critic_loss(batch, grad_params, rng)
        target_qs = self.network.select('target_critic')(batch['observations'], batch['actions'])
        values = self.network.select('value')(batch['observations'], params=grad_params)
        value_loss = jnp.mean(jnp.square(target_qs - values) * batch['valid'])
        return loss + value_loss, {**info, 'value_loss': value_loss}

    def actor_loss(self, batch, grad_params, rng):
        """Advantage-weighted flow matching: the BC loss with weights min(exp(inv_temp A(s, a)), max_weight)."""
        observations = batch['observations']
        advantages = self.network.select('critic')(observations, batch['actions']).mean(axis=0) - \
            self.network.select('value')(observations)
        weights = jnp.minimum(jnp.exp(advantages * self.config['inv_temp']), self.config['max_weight'])
        flow = lambda x, t: self.network.select('flow')(observations, x, t, params=grad_params)  # noqa: E731
        loss = flow_matching_loss(flow, batch['actions'], rng, batch['valid'] * weights)
        return loss, {'actor_loss': loss, 'weight_mean': weights.mean(), 'weight_max': weights.max()}

    @jax.jit
    def sample_actions(self, observations, rng):
        return self.bc_flow_actions(observations, rng)

    @classmethod
    def modules(cls, config, observations, actions):
        value = Value(config['value_hidden_dims'], config['value_layer_norm'], dtype=config['compute_dtype'])
        return {
            'critic': (critic_network(config), (observations, actions)),
            'value': (value, (observations,)),
            'flow': (flow_network(config), (observations, actions, actions[..., :1])),
        }


CONFIG_RANGES = {**SHARED_RANGES, 'inv_temp': POSITIVE, 'max_weight': POSITIVE}


def get_config():
    return ml_collections.ConfigDict(
        dict(
            agent_name='fawac',
            lr=3e-4,  # Adam learning rate, one optimiser over all modules.
            batch_size=256,
            actor_hidden_dims=(512, 512, 512, 512),  # The BC flow.
            value_hidden_dims=(512, 512, 512, 512),  # Critics and the state-value network.
            actor_layer_norm=False,
            value_layer_norm=True,
            num_qs=10,  # Critic ensemble size N_q.
            rho=0.5,  # Pessimism of the target: mean - rho * std over the ensemble.
            discount=0.99,
            tau=0.005,  # Polyak rate of the target critic.
            horizon_length=ml_collections.config_dict.placeholder(int),  # Chunk length H (None: per domain).
            flow_steps=10,  # Euler steps K of the sampler.
            inv_temp=10.0,  # Inverse temperature of the advantage weights (per domain, docs/algorithms.md 12.3).
            max_weight=100.0,  # Weights are clipped here (IQL's AWR clip).
            compute_dtype='float32',  # Dtype of the networks' matrix products; parameters and losses stay float32.
        )
    )
