"""A run's offline data and environments: one dataset, or a folder of shards (the 10M / 100M datasets) that
rotate through the replay buffer, kept on the device.

Each benchmark suite (OGBench, Robomimic) is one loader in `SUITES`, chosen by the environment name; the
rest of the library sees only `OfflineData`: transitions in one format and a factory of environments.

`shard_for_step(step)` is the one rule for which shard step `step` (1-based: an offline update, then an
online environment step with its updates) trains on, used by the training loop and by resume alike. It is
the authors' schedule (docs/algorithms.md section 9): a rotation before every step that is a multiple of the
interval, offline counted from the first update and online from the first environment step, cycling
through the shards, so update i trains on shard (i // interval) mod n offline and online step j on shard
(offline_steps // interval + j // interval) mod n.
"""

import dataclasses
import functools
from typing import Callable, Dict, List, NamedTuple, Optional

import numpy as np

from envs.datasets import Dataset, example_batch
from envs import robomimic
from core.errors import RunError
from envs.ogbench_data import (DEFAULT_DATASET_DIR, list_dataset_shards, load_dataset_shard, make_env,
                                make_env_and_datasets, parse_dataset_name, parse_env_name)


def domain_name(env_name: str) -> str:
    """The domain of a task, the name its suite's datasets share: 'cube-double-play' for
    'cube-double-play-singletask-task2-v0' (or 'cube-double-play-v0'), 'lift-mh' for 'lift-mh-low_dim'."""
    if robomimic.is_robomimic(env_name):
        parsed = robomimic.parse_env_name(env_name)
        return f'{parsed.task}-{parsed.dataset_type}'
    parsed = parse_dataset_name(env_name)
    return f'{parsed.family}-{parsed.dataset_type}'


@dataclasses.dataclass
class OfflineData:
    env_name: str
    make_env: Callable  # make_env(render=False) -> a fresh environment of the task; picklable, for worker processes
    load_shard: Optional[Callable]  # shard path -> transitions (suites with sharded datasets)
    offline_steps: int
    shard_paths: List[str]  # empty for a single dataset
    shard_interval: int
    horizon_length: int  # the chunk length the data must serve
    loaded_shard: int  # index of `transitions` among the shards (0 for a single dataset)
    transitions: Dict[str, np.ndarray]
    _device: Optional[Dataset] = None

    @property
    def rotates(self) -> bool:
        return len(self.shard_paths) > 1 and self.shard_interval > 0

    def shard_for_step(self, step: int) -> int:
        if not self.rotates:
            return 0
        interval, offline = self.shard_interval, self.offline_steps
        rotations = step // interval if step <= offline else offline // interval + (step - offline) // interval
        return rotations % len(self.shard_paths)

    def transitions_for(self, step: int) -> Dict[str, np.ndarray]:
        """The offline transitions step `step` trains on (a shard is read from disk when it becomes live)."""
        shard = self.shard_for_step(step)
        if shard != self.loaded_shard:
            self.transitions = self.load_shard(self.shard_paths[shard])
            self.loaded_shard, self._device = shard, None
            check_chunkable(self.transitions, self.horizon_length, self.shard_paths[shard])
        return self.transitions

    @property
    def action_dim(self) -> int:
        return self.transitions['actions'].shape[-1]

    def example_batch(self, horizon_length: int):
        """A batch of one chunk, for initialising networks with the right shapes."""
        return example_batch(Dataset.create({key: value[:horizon_length] for key, value in self.transitions.items()}),
                             horizon_length)

    def dataset_for(self, step: int) -> Dataset:
        """`transitions_for(step)` on the device (one copy, shared by every seed of the run)."""
        transitions = self.transitions_for(step)
        if self._device is None:
            self._device = Dataset.create(transitions)
        return self._device


def check_chunkable(transitions: Dict[str, np.ndarray], horizon_length: int, source: str):
    size = len(transitions['observations'])
    if size < horizon_length:
        raise RunError(f'The dataset {source} has {size} transitions, fewer than the chunk length '
                       f'{horizon_length}: no action chunk can be drawn from it. Use a larger dataset or a '
                       'smaller --horizon_length.')


def _load_ogbench(env_name, dataset_dir, dataset_path, shard_paths, sparse):
    source = shard_paths[0] if shard_paths else dataset_path
    # ogbench relabels a shard with an environment it resets to read the task: this one, which never acts (the
    # authors relabel with their training environment, resetting it in the middle of an episode).
    env, _, transitions, _ = make_env_and_datasets(env_name, dataset_dir=dataset_dir, dataset_path=source,
                                                   sparse=sparse)
    load_shard = functools.partial(load_dataset_shard, env_name, env=env, sparse=sparse)
    return functools.partial(make_env, env_name), transitions, load_shard, source or f'of {env_name} in ' \
        f'{dataset_dir or DEFAULT_DATASET_DIR}'


def _load_robomimic(env_name, dataset_dir, dataset_path, shard_paths, sparse):
    if shard_paths:
        raise RunError(f'{env_name}: Robomimic datasets are single files, not shard folders (--dataset_shards_dir).')
    factory, transitions, metadata = robomimic.make_env_and_datasets(env_name, dataset_dir, dataset_path)
    # Its rewards are already the authors' success - 1, offline and online, which --sparse leaves as they are.
    return factory, transitions, None, metadata.path


class Suite(NamedTuple):
    name: str
    matches: Callable[[str], bool]  # whether an environment name is of the suite (the first match wins)
    parse_env_name: Callable  # raises ValueError, naming the valid names, for a name of no environment
    load: Callable


SUITES = (
    Suite('robomimic', robomimic.is_robomimic, robomimic.parse_env_name, _load_robomimic),
    Suite('ogbench', lambda env_name: True, parse_env_name, _load_ogbench),
)


def suite_of(env_name: str) -> Suite:
    return next(suite for suite in SUITES if suite.matches(env_name))


def load_offline_data(env_name: str, *, dataset_dir: Optional[str], dataset_path: Optional[str],
                      dataset_shards_dir: Optional[str], shard_interval: int, sparse: bool, offline_steps: int,
                      horizon_length: int):
    """The OfflineData of a run, with the first shard loaded."""
    shard_paths = list_dataset_shards(dataset_shards_dir) if dataset_shards_dir else []
    make_env, transitions, load_shard, source = suite_of(env_name).load(env_name, dataset_dir, dataset_path, shard_paths, sparse)
    check_chunkable(transitions, horizon_length, source)
    return OfflineData(env_name, make_env, load_shard, offline_steps, shard_paths, shard_interval, horizon_length, 0,
                       transitions)
