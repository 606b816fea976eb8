"""Behaviour cloning of a flow policy: stage 1 of the paper's protocol (docs/algorithms.md section 4).

`main.py --bc_only --agent=agents/X.py` trains this agent with X's network sizes, so every method
can then start its flow networks from the checkpoint (`--pretrained_actor_path`).
"""

import jax
import ml_collections

from agents.base import Agent, flow_network, prefixed
from core.flow import flow_matching_loss


class BCFlowAgent(Agent):
    PRETRAINED_FLOW_MODULES = ('flow',)

    def total_loss(self, batch, grad_params, rng):
        flow = lambda x, t: self.network.select('flow')(batch['observations'], x, t, params=grad_params)  # noqa: E731
        loss = flow_matching_loss(flow, batch['actions'], rng, batch['valid'])
        return loss, prefixed('actor', {'bc_flow_loss': loss})

    @jax.jit
    def sample_actions(self, observations, rng):
        return self.bc_flow_actions(observations, rng)

    @classmethod
    def modules(cls, config, observations, actions):
        return {'flow': (flow_network(config), (observations, actions, actions[..., :1]))}


def get_config():
    return ml_collections.ConfigDict(
        dict(
            agent_name='bc_flow',
            lr=3e-4,
            batch_size=256,
            actor_hidden_dims=(512, 512, 512, 512),
            actor_layer_norm=False,
            discount=0.99,  # Only used to build the chunked batches.
            tau=0.005,
            horizon_length=ml_collections.config_dict.placeholder(int),
            flow_steps=10,
            compute_dtype='float32',  # Dtype of the networks' matrix products; parameters and losses stay float32.
        )
    )
