"""Device-resident transition storage and jitted sampling of chunked sequence batches.

A `Dataset` keeps every array on the accelerator with a fixed capacity and a dynamic `size`, so sampling
is one jitted gather and adding a transition never changes a shape (no retrace). The replay buffer of the
online phase is a `ReplayBuffer`: the offline data (one copy, shared by every seed of a run) followed by
that seed's online transitions, sampled as the one contiguous buffer it stands for. Batches follow
docs/algorithms.md section 1:

    observations       s_i
    actions            a_i .. a_{i+H-1}, flattened to H * |A|
    rewards            sum_{k<H} gamma^k r_{i+k}, cut at the episode end
    masks              min_k mask_{i+k}
    valid              0 when the chunk crosses an episode boundary
    next_observations  s_{i+H} (the next observation of the chunk's last transition)
"""

from functools import partial
from typing import Dict

import flax
import jax
import jax.numpy as jnp
import numpy as np

TRANSITION_KEYS = ('observations', 'actions', 'rewards', 'masks', 'terminals', 'next_observations')


class Dataset(flax.struct.PyTreeNode):
    observations: jax.Array
    actions: jax.Array
    rewards: jax.Array
    masks: jax.Array
    terminals: jax.Array
    next_observations: jax.Array
    size: jax.Array  # number of stored transitions (int32 scalar); rows beyond it are unused

    @classmethod
    def create(cls, transitions: Dict[str, np.ndarray], capacity: int = None):
        """Puts `transitions` on the device, padded with zeros up to `capacity` rows."""
        missing = [key for key in TRANSITION_KEYS if key not in transitions]
        if missing:
            raise ValueError(f'The dataset lacks {missing}; it needs {list(TRANSITION_KEYS)}.')
        size = len(transitions['observations'])
        capacity = size if capacity is None else capacity
        if capacity < size:
            raise ValueError(f'capacity {capacity} is smaller than the dataset ({size} transitions).')
        arrays = {}
        for key in TRANSITION_KEYS:
            value = np.asarray(transitions[key], dtype=np.float32)
            if len(value) != size:
                raise ValueError(f'Dataset key {key!r} has {len(value)} rows, observations have {size}.')
            padded = np.zeros((capacity, *value.shape[1:]), np.float32)
            padded[:size] = value
            arrays[key] = jnp.asarray(padded)
        return cls(**arrays, size=jnp.asarray(size, jnp.int32))

    @property
    def capacity(self) -> int:
        return self.observations.shape[0]

    def rows(self, key: str, indices):
        return getattr(self, key)[indices]


class ReplayBuffer(flax.struct.PyTreeNode):
    """The offline transitions, then the online ones: row i is `offline` row i below `offline.size`, else
    `online` row i - offline.size. Rotating an offline shard replaces `offline` and keeps `online`."""

    offline: Dataset
    online: Dataset

    @property
    def size(self):
        return self.offline.size + self.online.size

    def rows(self, key: str, indices):
        offline_size = self.offline.size
        offline_rows = self.offline.rows(key, jnp.minimum(indices, offline_size - 1))
        online_rows = self.online.rows(key, jnp.clip(indices - offline_size, 0, self.online.capacity - 1))
        in_offline = (indices < offline_size).reshape(indices.shape + (1,) * (offline_rows.ndim - indices.ndim))
        return jnp.where(in_offline, offline_rows, online_rows)


def sparse_rewards(rewards):
    """The QAM paper's sparse rewards r -> -1[r != 0] (puzzle, scene), for dataset arrays and online rewards alike."""
    return np.where(np.asarray(rewards) != 0.0, -1.0, 0.0).astype(np.float32)


@partial(jax.jit, donate_argnums=0)
def add_transition(dataset: Dataset, transition: Dict[str, jax.Array]) -> Dataset:
    """Appends one transition in place (the buffers are donated). The caller sizes the capacity."""
    index = dataset.size
    updated = {key: getattr(dataset, key).at[index].set(transition[key]) for key in TRANSITION_KEYS}
    return dataset.replace(**updated, size=index + 1)


def sample_sequences(data, rng: jax.Array, batch_size: int, horizon_length: int, discount: float,
                     balanced: bool = False):
    """A chunked batch (see the module docstring) from a `Dataset` or `ReplayBuffer`; jit-compatible, sizes
    static. `balanced` (a `ReplayBuffer`): half the chunks start in the offline data, half in the online
    transitions (the authors' `balanced_sampling`); otherwise uniformly over the whole buffer."""
    if balanced:
        half, (offline_rng, online_rng) = batch_size // 2, jax.random.split(rng)
        starts = jnp.concatenate([
            jax.random.randint(offline_rng, (half,), 0, data.offline.size - horizon_length + 1),
            data.offline.size + jax.random.randint(online_rng, (half,), 0, data.online.size - horizon_length + 1)])
    else:
        starts = jax.random.randint(rng, (batch_size,), 0, data.size - horizon_length + 1)
    return chunk_batch(data, starts, horizon_length, discount)


def chunk_batch(data, starts, horizon_length: int, discount: float):
    """The chunks of `data` starting at `starts` (B,)."""
    batch_size = starts.shape[0]
    indices = starts[:, None] + jnp.arange(horizon_length)  # (B, H)

    terminals = data.rows('terminals', indices)
    # alive_k = 1 while no earlier transition of the chunk ended its episode.
    ended_before = jnp.concatenate([jnp.zeros((batch_size, 1)), jnp.cumsum(terminals[:, :-1], axis=1)], axis=1)
    alive = (ended_before == 0).astype(jnp.float32)
    discounts = discount ** jnp.arange(horizon_length, dtype=jnp.float32)
    actions = data.rows('actions', indices)
    return {
        'observations': data.rows('observations', starts),
        'actions': actions.reshape(batch_size, -1),
        'rewards': jnp.sum(data.rows('rewards', indices) * discounts * alive, axis=1),
        'masks': jnp.min(data.rows('masks', indices), axis=1),
        'valid': alive[:, -1],
        'next_observations': data.rows('next_observations', indices[:, -1]),
    }


def example_batch(dataset: Dataset, horizon_length: int) -> Dict[str, jax.Array]:
    """A batch of one, for initialising networks with the right shapes."""
    return sample_sequences(dataset, jax.random.PRNGKey(0), 1, horizon_length, 1.0)
