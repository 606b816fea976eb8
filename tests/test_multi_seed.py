"""Several seeds vmapped in one program give each seed's single-seed result."""

import jax
import jax.numpy as jnp
import numpy as np

from agents.fql import FQLAgent, get_config
from experiments.benchmark import synthetic_transitions
from experiments.multi_seed import create_agents, data_key_for_seed, multi_seed_train_steps, unstack
from utils.datasets import Dataset, example_batch
from utils.training import train_steps

HORIZON, BATCH, STEPS, SEEDS = 5, 8, 4, (3, 7)


def tiny_config():
    config = get_config()
    config.update(dict(actor_hidden_dims=(16, 16), value_hidden_dims=(16, 16), num_qs=2, batch_size=BATCH,
                       flow_steps=3, horizon_length=HORIZON))
    return config


def leaves(tree):
    return jax.tree_util.tree_leaves(jax.device_get(tree))


def test_each_vmapped_seed_equals_its_single_seed_run():
    dataset = Dataset.create(synthetic_transitions(600, obs_dim=6, action_dim=2, episode_length=(50, 80)))
    batch, config = example_batch(dataset, HORIZON), tiny_config()

    stacked = create_agents(FQLAgent, SEEDS, batch, config)
    # Seed i of the stack is exactly `create(seeds[i])`. The single-seed runs start from the unstacked copies:
    # the same arrays, and one static tree definition, so train_steps compiles once for all seeds.
    singles = [unstack(stacked, index) for index in range(len(SEEDS))]
    for a, b in zip(leaves(singles[1]), leaves(FQLAgent.create(SEEDS[1], batch, config))):
        np.testing.assert_array_equal(a, b)

    data_keys = jnp.stack([data_key_for_seed(seed) for seed in SEEDS])
    stacked, stacked_info = multi_seed_train_steps(stacked, dataset, data_keys, 1, num_updates=STEPS,
                                                   batch_size=BATCH, horizon_length=HORIZON)
    assert all(value.shape == (len(SEEDS),) for value in stacked_info.values())

    for index, seed in enumerate(SEEDS):
        agent, info = train_steps(singles[index], dataset, data_key_for_seed(seed), 1, num_updates=STEPS,
                                  batch_size=BATCH, horizon_length=HORIZON)
        singles[index] = agent
        for a, b in zip(leaves(unstack(stacked, index)), leaves(agent)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        for key, value in info.items():
            np.testing.assert_allclose(stacked_info[key][index], value, rtol=1e-5, atol=1e-6)
    # The seeds really differ (networks and batch streams).
    assert not np.allclose(leaves(singles[0].network.params)[0], leaves(singles[1].network.params)[0])
