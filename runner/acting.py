"""Acting in environments: action chunks executed open-loop (docs/algorithms.md section 1), the online
collector of the fine-tuning phase and evaluation, for every seed of a run at once.

Every reset and every action key depends only on (run seed, stream, index), so an evaluation does not
depend on what happened before it and a resumed run replays exactly what the uninterrupted one did.
Each policy call serves all seeds (and, in evaluation, all episodes) at once: one batched program.
"""

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np

from envs.datasets import TRANSITION_KEYS, sparse_rewards
from envs.env_pool import EnvPool
from core.errors import RunError
from runner.seed_axis import map_seeds

# Streams of `episode_seed`: online resets by episode index, uniform random actions (balanced sampling) by
# step, evaluation action keys and resets by evaluation round (the step) and episode.
ONLINE_RESETS = 3
RANDOM_ACTIONS = 4
EVAL_ACTIONS = 1_000
EVAL_RESETS = 2_000


def episode_seed(seed: int, stream: int, index: int) -> int:
    """A seed that depends only on (run seed, stream, index): reproducible on resume."""
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1)[0])


@jax.jit
def sample_chunks(agents, observations, keys, step):
    """Seed i's action chunk at its observation with the key `fold_in(keys[i], step)` (stacked on the seed axis)."""
    return map_seeds(lambda agent, observation, key: agent.sample_actions(observation, jax.random.fold_in(key, step)),
                     (0, 0, 0))(agents, observations, keys)


@jax.jit
def sample_episode_chunks(agents, observations, keys, episode_steps):
    """(seeds, slots, chunk): slot e of seed i with the key `fold_in(keys[i, e], episode_steps[i, e])`."""

    def one_seed(agent, observations, keys, steps):
        def one_episode(observation, key, step):
            return agent.sample_actions(observation, jax.random.fold_in(key, step))

        return map_seeds(one_episode, (0, 0, 0))(observations, keys, steps)

    return map_seeds(one_seed, (0, 0, 0, 0))(agents, observations, keys, episode_steps)


def evaluation_slots(num_seeds: int, num_episodes: int, max_envs: int) -> int:
    """Environments per seed in an evaluation: all its episodes at once, within `max_envs` for the run."""
    return max(1, min(num_episodes, max_envs // num_seeds))


def evaluate(agents, pool: EnvPool, seeds: Sequence[int], num_episodes: int, round_index: int, horizon_length: int,
             videos: Optional[Dict[Tuple[int, int], str]] = None) -> List[Dict[str, np.ndarray]]:
    """`num_episodes` episodes per seed with the agents' deterministic samplers, in `pool`: its environment
    i * slots + s is slot s of seed i (slots = pool size / seeds). A slot plays the seed's episodes one after
    another, each starting at a chunk boundary of the evaluation, so one batched policy call per chunk serves
    every slot and each environment plays its chunk in one round trip to its worker. Success is an episode's
    final step's.

    Episode e of seed i resets with a seed from (seed, round_index, e) and draws its chunk at its own step t
    with `fold_in(key(seed, round_index, e), t)`: the numbers of one episode at a time, in any batch and any
    number of slots. Episode e < slots of seed i plays in slot e from the start, rendered to the MP4 file
    `videos[(i, e)]` when given. Returns, per seed, the episodes' success, return and length.
    """
    num_seeds, slots = len(seeds), pool.num_envs // len(seeds)
    env = lambda i, s: i * slots + s  # noqa: E731
    pending = [list(range(num_episodes)) for _ in seeds]  # each seed's episodes not started, in order
    playing = {}  # (i, slot) -> episode
    observations = None  # (seeds, slots, ...) as the environments return them; an idle slot keeps its last
    keys = np.zeros((num_seeds, slots, 2), np.uint32)
    steps = np.zeros((num_seeds, slots), np.int32)
    totals = {name: np.zeros((num_seeds, num_episodes)) for name in ('success', 'episode_return', 'episode_length')}
    videos = videos or {}
    # Every iteration is a chunk boundary: free slots start their next episodes, one policy call draws every
    # playing slot's chunk, and each environment plays its chunk in one round trip to its worker.
    while playing or any(pending):
        starts = {}
        for i in range(num_seeds):
            for s in range(slots):
                if (i, s) not in playing and pending[i]:
                    playing[(i, s)] = e = pending[i].pop(0)
                    keys[i, s] = jax.random.PRNGKey(episode_seed(seeds[i], EVAL_ACTIONS + round_index, e))
                    steps[i, s] = 0
                    starts[env(i, s)] = episode_seed(seeds[i], EVAL_RESETS + round_index, e)
                    if (i, e) in videos:
                        pool.record(env(i, s), videos[(i, e)])
        for index, observation in pool.reset(starts).items():
            if observations is None:
                observations = np.zeros((num_seeds, slots, *np.shape(observation)), np.asarray(observation).dtype)
            observations[index // slots, index % slots] = observation
        chunks = np.asarray(sample_episode_chunks(agents, observations, keys, steps))
        chunks = chunks.reshape(num_seeds, slots, horizon_length, -1)
        played = pool.play({env(i, s): chunks[i, s] for i, s in playing})
        for (i, s), e in list(playing.items()):
            results = played[env(i, s)]
            observations[i, s] = results[-1].observation
            steps[i, s] += len(results)
            totals['episode_return'][i, e] += sum(result.reward for result in results)
            totals['episode_length'][i, e] += len(results)
            if results[-1].done:
                totals['success'][i, e] = results[-1].success
                del playing[(i, s)]
                if (i, e) in videos:
                    pool.record(env(i, s), None)
    return [{name: values[i] for name, values in totals.items()} for i in range(num_seeds)]


@dataclasses.dataclass(frozen=True)
class SeedActing:
    """What a resumed online phase needs beyond the replay buffer, per seed: episodes finished and the
    actions left of the current chunk."""

    episode_index: int = 0
    queue: Tuple[np.ndarray, ...] = ()


class OnlineCollector:
    """The online phase's environments, one per seed (pool environment k plays seed k): `start_step` plays one
    action in every environment and `finish_step` returns the transitions for the replay buffers and, per seed,
    the summary row of an episode that ended (the next episode's reset follows at once).

    `start` puts every environment where the run stands: the current episode's reset, then the actions of
    that episode already in the replay buffer, replayed (the simulation is deterministic), so a run resumed
    in the middle of an episode continues exactly as the uninterrupted one.
    """

    def __init__(self, pool: EnvPool, seeds: Sequence[int], action_dim: int, sparse: bool):
        self.pool, self.seeds, self.action_dim, self.sparse = pool, list(seeds), action_dim, sparse
        self.envs = list(range(len(seeds)))
        self.observations, self.returns = None, None
        self.actions, self.queues = None, None  # of the step started and not finished

    def start(self, acting: Sequence[SeedActing], online: Sequence[Optional[Dict[str, np.ndarray]]]):
        """`online[k]`: seed k's online transitions so far (None before the first)."""
        first = self.pool.reset({env: self._reset_seed(k, acting[k].episode_index) for k, env in enumerate(self.envs)})
        self.observations = [first[env] for env in self.envs]
        self.returns = [0.0] * len(self.envs)
        for k, transitions in enumerate(online):
            if transitions is not None:
                self._replay_current_episode(k, transitions)

    def _replay_current_episode(self, k, transitions):
        ends = np.flatnonzero(transitions['terminals'])
        start = ends[-1] + 1 if len(ends) else 0
        for index in range(start, len(transitions['actions'])):
            result = self.pool.step({self.envs[k]: transitions['actions'][index]})[self.envs[k]]
            self.observations[k] = result.observation
        self.returns[k] = sum(map(float, transitions['rewards'][start:]), 0.0)  # as `finish_step` adds them up
        if start < len(transitions['actions']) and not np.array_equal(
                np.asarray(self.observations[k], np.float32), transitions['next_observations'][-1]):
            raise RunError(f'Resuming seed {self.seeds[k]} in the middle of an episode: replaying its actions did not '
                           'reproduce the recorded observations (the environment is not deterministic here).')

    def _reset_seed(self, k, episode_index):
        return episode_seed(self.seeds[k], ONLINE_RESETS, episode_index)

    @staticmethod
    def draws_chunks(acting: Sequence[SeedActing]) -> bool:
        """Whether the next `start_step` draws new chunks: some seed has no action left of its current chunk."""
        return any(not seed.queue for seed in acting)

    def start_step(self, agents, act_keys, step: int, acting: Sequence[SeedActing], random_actions: bool):
        """Starts step `step` in every environment. A seed whose chunk is used up draws the next one with
        `fold_in(act_keys[k], step)` (one batched call for all seeds; `agents` are read only then), or, with
        `random_actions`, one uniform action in [-1, 1]."""
        queues = [list(seed.queue) for seed in acting]
        if self.draws_chunks(acting):
            if random_actions:
                for k, queue in enumerate(queues):
                    if not queue:
                        generator = np.random.default_rng(episode_seed(self.seeds[k], RANDOM_ACTIONS, step))
                        queue.append(generator.uniform(-1.0, 1.0, self.action_dim).astype(np.float32))
            else:
                chunks = np.asarray(sample_chunks(agents, np.stack(self.observations), act_keys, step))
                for k, queue in enumerate(queues):
                    if not queue:
                        queue.extend(chunks[k].reshape(-1, self.action_dim))
        self.actions = [queue.pop(0) for queue in queues]
        self.queues = queues
        self.pool.start_step(dict(zip(self.envs, self.actions)))

    def finish_step(self, acting: Sequence[SeedActing]):
        """The started step's results: (transitions stacked on the seed axis, each seed's summary row of an episode
        that ended or None, acting state after the step). An ended episode's next one is reset at once."""
        answers, actions, queues = self.pool.finish_step(), self.actions, self.queues
        results = [answers[env] for env in self.envs]
        rewards = [result.reward for result in results]
        rewards = [float(reward) for reward in sparse_rewards(rewards)] if self.sparse else rewards
        transitions = dict(
            observations=np.asarray(self.observations, np.float32), actions=np.asarray(actions, np.float32),
            rewards=np.asarray(rewards, np.float32),
            masks=np.asarray([1.0 - float(result.terminated) for result in results], np.float32),
            terminals=np.asarray([float(result.done) for result in results], np.float32),
            next_observations=np.asarray([result.observation for result in results], np.float32))
        rows, resets, next_acting = [], {}, []
        for k, (env, result) in enumerate(zip(self.envs, results)):
            self.returns[k] += rewards[k]
            self.observations[k] = result.observation
            episode_index, row = acting[k].episode_index, None
            if result.done:
                row = {'online/episode_return': self.returns[k], 'online/episode_success': result.success}
                episode_index, queues[k], self.returns[k] = episode_index + 1, [], 0.0
                resets[env] = self._reset_seed(k, episode_index)
            rows.append(row)
            next_acting.append(SeedActing(episode_index, tuple(queues[k])))
        if resets:
            for env, observation in self.pool.reset(resets).items():
                self.observations[self.envs.index(env)] = observation
        return transitions, rows, next_acting

    def drop(self, positions: Sequence[int]):
        """Stops playing the seeds at `positions` (a diverged seed leaves the group)."""
        keep = [k for k in range(len(self.envs)) if k not in set(positions)]
        self.seeds = [self.seeds[k] for k in keep]
        self.envs = [self.envs[k] for k in keep]
        self.observations = [self.observations[k] for k in keep]
        self.returns = [self.returns[k] for k in keep]
