"""Evaluation and acting with action chunks executed open-loop (ALGORITHMS.md section 1)."""

import jax
import numpy as np


class ChunkedActor:
    """Turns a chunk policy into a per-step one: samples H actions, then plays them in order."""

    def __init__(self, agent, action_dim: int):
        self.agent = agent
        self.action_dim = action_dim
        self.queue = []

    def reset(self):
        self.queue = []

    def act(self, observation, rng) -> np.ndarray:
        if not self.queue:
            chunk = np.asarray(self.agent.sample_actions(observation, rng))
            self.queue = list(chunk.reshape(-1, self.action_dim))
        return self.queue.pop(0)


def episode_seed(seed: int, stream: int, index: int) -> int:
    """A reset seed that depends only on (run seed, stream, episode index): reproducible on resume."""
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1)[0])


def evaluate(agent, env, num_episodes: int, seed: int, round_index: int, action_dim: int):
    """Runs `num_episodes` episodes with the agent's deterministic sampler; success is the final step's.

    Resets and action noise are seeded from (seed, round_index, episode), so an evaluation does not
    depend on anything that happened before it.
    """
    actor = ChunkedActor(agent, action_dim)
    successes, returns, lengths = [], [], []
    for episode in range(num_episodes):
        key = jax.random.PRNGKey(episode_seed(seed, 1_000 + round_index, episode))
        observation, info = env.reset(seed=episode_seed(seed, 2_000 + round_index, episode))
        actor.reset()
        done, total_reward, length = False, 0.0, 0
        while not done:
            action = actor.act(observation, jax.random.fold_in(key, length))
            observation, reward, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            total_reward += reward
            length += 1
        successes.append(float(info.get('success', 0.0)))
        returns.append(total_reward)
        lengths.append(length)
    return {'success': np.mean(successes), 'episode_return': np.mean(returns), 'episode_length': np.mean(lengths)}
