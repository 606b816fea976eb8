"""Acting in environments: action chunks executed open-loop (ALGORITHMS.md section 1), the online
collector of the fine-tuning phase and evaluation, with their episode-seed streams.

Every reset and every action key depends only on (run seed, stream, index), so an evaluation does not
depend on what happened before it and a resumed run replays exactly what the uninterrupted one did.
"""

import jax
import numpy as np

from utils.datasets import sparse_rewards

# Streams of `episode_seed`: online resets by episode index; evaluation action keys and resets by
# evaluation round (the step) and episode.
ONLINE_RESETS = 3
EVAL_ACTIONS = 1_000
EVAL_RESETS = 2_000


def episode_seed(seed: int, stream: int, index: int) -> int:
    """A reset seed that depends only on (run seed, stream, episode index): reproducible on resume."""
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1)[0])


class ChunkedActor:
    """Turns a chunk policy into a per-step one: samples H actions, then plays them in order."""

    def __init__(self, action_dim: int):
        self.action_dim = action_dim
        self.queue = []

    def reset(self):
        self.queue = []

    def act(self, agent, observation, rng) -> np.ndarray:
        if not self.queue:
            chunk = np.asarray(agent.sample_actions(observation, rng))
            self.queue = list(chunk.reshape(-1, self.action_dim))
        return self.queue.pop(0)


class OnlineCollector:
    """The online phase's environment: one `step` plays one action of the current chunk and returns the
    transition for the replay buffer and, when the episode ended, its summary row (the next episode's
    reset follows at once)."""

    def __init__(self, env, seed: int, episode_index: int, sparse: bool):
        self.env, self.seed, self.sparse = env, seed, sparse
        self.actor = ChunkedActor(env.action_space.shape[-1])
        self.episode_index = episode_index
        self.episode_return = 0.0
        self.observation, _ = env.reset(seed=episode_seed(seed, ONLINE_RESETS, episode_index))

    def step(self, agent, rng):
        observation = self.observation
        action = self.actor.act(agent, observation, rng)
        next_observation, reward, terminated, truncated, info = self.env.step(action)
        if self.sparse:
            reward = float(sparse_rewards(reward))
        transition = dict(observations=observation, actions=action, rewards=reward, masks=1.0 - float(terminated),
                          terminals=float(terminated or truncated), next_observations=next_observation)
        self.episode_return += reward
        self.observation = next_observation
        if not (terminated or truncated):
            return transition, None
        row = {'online/episode_return': self.episode_return, 'online/episode_success': info.get('success', 0.0)}
        self.episode_index += 1
        self.episode_return = 0.0
        self.observation, _ = self.env.reset(seed=episode_seed(self.seed, ONLINE_RESETS, self.episode_index))
        self.actor.reset()
        return transition, row


def evaluate(agent, env, num_episodes: int, seed: int, round_index: int):
    """Runs `num_episodes` episodes with the agent's deterministic sampler; success is the final step's.

    Resets and action noise are seeded from (seed, round_index, episode).
    """
    actor = ChunkedActor(env.action_space.shape[-1])
    successes, returns, lengths = [], [], []
    for episode in range(num_episodes):
        key = jax.random.PRNGKey(episode_seed(seed, EVAL_ACTIONS + round_index, episode))
        observation, info = env.reset(seed=episode_seed(seed, EVAL_RESETS + round_index, episode))
        actor.reset()
        done, total_reward, length = False, 0.0, 0
        while not done:
            action = actor.act(agent, observation, jax.random.fold_in(key, length))
            observation, reward, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            total_reward += reward
            length += 1
        successes.append(float(info.get('success', 0.0)))
        returns.append(total_reward)
        lengths.append(length)
    return {'success': np.mean(successes), 'episode_return': np.mean(returns), 'episode_length': np.mean(lengths)}
