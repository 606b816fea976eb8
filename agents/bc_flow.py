"""Behaviour cloning of a flow policy: stage 1 of the paper's protocol (docs/algorithms.md section 4).

`main.py --bc_only --agent=agents/X.py` trains this agent with X's network sizes, so every method
can then start its flow networks from the checkpoint (`--pretrained_actor_path`).
"""

import jax
import ml_collections

from agents.base import Agent, build_network, chunk_dim_of, freeze_config, prefixed
from core.flow import euler_ode_sample, flow_matching_loss
from core.networks import VectorField


class BCFlowAgent(Agent):
    PRETRAINED_FLOW_MODULES = ('flow',)

    def total_loss(self, batch, grad_params, rng):
        flow = lambda x, t: self.network.select('flow')(batch['observations'], x, t, params=grad_params)  # noqa: E731
        loss = flow_matching_loss(flow, batch['actions'], rng, batch['valid'])
        return loss, prefixed('actor', {'bc_flow_loss': loss})

    @jax.jit
    def sample_actions(self, observations, rng):
        noises = jax.random.normal(rng, (*observations.shape[:-1], self.config['chunk_dim']))
        flow = lambda x, t: self.network.select('flow')(observations, x, t)  # noqa: E731
        return euler_ode_sample(flow, noises, self.config['flow_steps'])

    @classmethod
    def create(cls, seed, example_batch, config):
        rng, init_rng = jax.random.split(jax.random.PRNGKey(seed))
        observations, actions = example_batch['observations'], example_batch['actions']
        config = freeze_config(config, chunk_dim=chunk_dim_of(example_batch))
        flow = VectorField(
            config['actor_hidden_dims'], config['chunk_dim'], config['actor_layer_norm'], dtype=config['compute_dtype']
        )
        network = build_network(init_rng, {'flow': (flow, (observations, actions, actions[..., :1]))}, config)
        return cls(rng=rng, network=network, config=config)


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
