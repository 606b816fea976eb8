"""A run's offline data: one dataset, or a folder of shards (the 10M / 100M datasets) that rotate through
the replay buffer, and the replay buffer built from it.

`live_shard(step)` is the one rule for which shard the updates after `step` completed steps train on,
used by the training loop and by resume alike: shard k serves updates k * interval + 1 .. (k + 1) *
interval, cycling through the shards; from the end of the offline phase on, the last offline shard stays.
"""

import dataclasses
from typing import Dict, List, Optional

import numpy as np

from utils.datasets import TRANSITION_KEYS, Dataset
from utils.errors import RunError
from utils.ogbench_data import DEFAULT_DATASET_DIR, list_dataset_shards, load_dataset_shard, make_env_and_datasets


@dataclasses.dataclass
class OfflineData:
    env_name: str
    env: object  # the single-task environment the shards are relabelled with (ogbench resets it once)
    sparse: bool
    offline_steps: int
    shard_paths: List[str]  # empty for a single dataset
    shard_interval: int
    horizon_length: int  # the chunk length the data must serve
    loaded_shard: int  # index of `transitions` among the shards (0 for a single dataset)
    transitions: Dict[str, np.ndarray]

    @property
    def sharded(self) -> bool:
        return bool(self.shard_paths)

    def live_shard(self, step: int) -> int:
        if not self.sharded or self.shard_interval <= 0:
            return 0
        last_offline_update = max(min(step, self.offline_steps - 1), 0)
        return (last_offline_update // self.shard_interval) % len(self.shard_paths)

    def transitions_at(self, step: int) -> Dict[str, np.ndarray]:
        """The offline transitions live at `step` (a shard is read from disk when it becomes live)."""
        shard = self.live_shard(step)
        if shard != self.loaded_shard:
            self.transitions = load_dataset_shard(self.env_name, self.shard_paths[shard], self.env, self.sparse)
            self.loaded_shard = shard
            check_chunkable(self.transitions, self.horizon_length, self.shard_paths[shard])
        return self.transitions


def check_chunkable(transitions: Dict[str, np.ndarray], horizon_length: int, source: str):
    size = len(transitions['observations'])
    if size < horizon_length:
        raise RunError(f'The dataset {source} has {size} transitions, fewer than the chunk length '
                       f'{horizon_length}: no action chunk can be drawn from it. Use a larger dataset or a '
                       'smaller --horizon_length.')


def load_offline_data(env_name: str, *, dataset_dir: Optional[str], dataset_path: Optional[str],
                      dataset_shards_dir: Optional[str], shard_interval: int, sparse: bool, offline_steps: int,
                      horizon_length: int):
    """(training env, evaluation env, OfflineData) with the data of step 0 loaded."""
    shard_paths = list_dataset_shards(dataset_shards_dir) if dataset_shards_dir else []
    source = shard_paths[0] if shard_paths else dataset_path
    env, eval_env, transitions, _ = make_env_and_datasets(env_name, dataset_dir=dataset_dir, dataset_path=source,
                                                          sparse=sparse)
    check_chunkable(transitions, horizon_length, source or f'of {env_name} in {dataset_dir or DEFAULT_DATASET_DIR}')
    data = OfflineData(env_name, env, sparse, offline_steps, shard_paths, shard_interval, horizon_length, 0,
                       transitions)
    return env, eval_env, data


def replay_buffer(offline: Dict[str, np.ndarray], online_capacity: int,
                  online: Optional[Dict[str, np.ndarray]] = None) -> Dataset:
    """The device buffer of a run: the offline transitions, then the online ones collected so far, with
    room for `online_capacity` online transitions in all."""
    transitions = offline if online is None else {key: np.concatenate([offline[key], online[key]])
                                                  for key in TRANSITION_KEYS}
    return Dataset.create(transitions, capacity=len(offline['observations']) + online_capacity)
