"""Evaluation: all episodes of all seeds at once in parallel worker processes, one batched policy call per chunk
step. Episode e of seed i is seeded by (seed, round, e) alone, so the numbers do not depend on the workers, and
each episode's chunks are those of a policy call for that episode alone (up to float round-off)."""

import functools

import jax
import numpy as np

from agents.bc_flow import BCFlowAgent, get_config
from runner.acting import EVAL_ACTIONS, EVAL_RESETS, episode_seed, evaluate, sample_episode_chunks
from envs.env_pool import EnvPool
from envs.ogbench_data import make_env
from runner.seed_axis import stack
from tests.test_video import short_episodes

ENV = 'puzzle-3x3-play-singletask-task1-v0'  # rewards count the lights, so returns differ between episodes
HORIZON, SEEDS, EPISODES, ROUND, STEPS = 5, (0, 1), 2, 7, 150


def untrained_flow(seed, obs_dim, action_dim):
    """A flow policy at initialisation: its actions are about its noise, so every key shows in the episode."""
    config = get_config()
    config.update(dict(actor_hidden_dims=(16, 16), batch_size=8, flow_steps=3, horizon_length=HORIZON))
    batch = {'observations': np.zeros((1, obs_dim), np.float32),
             'actions': np.zeros((1, HORIZON * action_dim), np.float32)}
    return BCFlowAgent.create(seed, batch, config)


def test_parallel_evaluation_equals_the_sequential_one_episode_by_episode():
    env = make_env(ENV)
    obs_dim, action_dim = env.observation_space.shape[0], env.action_space.shape[0]
    agents = stack([untrained_flow(seed, obs_dim, action_dim) for seed in SEEDS])
    returns = []
    # Every episode at once, and one environment per seed playing its episodes one after another.
    for slots in (EPISODES, 1):
        results = {}
        for workers in (2, 0):  # worker processes; 0: the environments stepped in turn in this process
            with EnvPool(functools.partial(short_episodes, ENV, STEPS), len(SEEDS) * slots, workers) as pool:
                results[workers] = evaluate(agents, pool, SEEDS, EPISODES, ROUND, HORIZON)
        for parallel, sequential in zip(results[2], results[0]):
            for key in ('success', 'episode_return', 'episode_length'):
                np.testing.assert_array_equal(parallel[key], sequential[key], err_msg=key)
            assert np.all(parallel['episode_length'] == STEPS)
            returns += list(parallel['episode_return'])
    assert len(set(returns)) > 1  # the episodes differ, so equal numbers mean equal episodes


def test_each_episode_gets_the_chunk_of_its_own_policy_call():
    env = make_env(ENV)
    obs_dim, action_dim = env.observation_space.shape[0], env.action_space.shape[0]
    agents = [untrained_flow(seed, obs_dim, action_dim) for seed in SEEDS]
    observations = np.stack([np.stack([env.reset(seed=episode_seed(seed, EVAL_RESETS + ROUND, e))[0]
                                       for e in range(EPISODES)]) for seed in SEEDS])
    keys = np.stack([np.stack([np.asarray(jax.random.PRNGKey(episode_seed(seed, EVAL_ACTIONS + ROUND, e)))
                               for e in range(EPISODES)]) for seed in SEEDS])
    step = 10
    batched = np.asarray(sample_episode_chunks(stack(agents), observations, keys, np.full(keys.shape[:2], step)))
    for i, agent in enumerate(agents):
        for e in range(EPISODES):
            alone = agent.sample_actions(observations[i, e], jax.random.fold_in(keys[i, e], step))
            # A batched matrix product sums in another order: equal to float round-off, not bit for bit.
            np.testing.assert_allclose(batched[i, e], alone, atol=1e-5)
    assert not np.allclose(batched[0, 0], batched[0, 1], atol=1e-2)  # other keys, other chunks
