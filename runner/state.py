"""The state of a run (a group of seeds: agents, online replay buffers, counters) and its checkpoints.

Every seed has its own run directory and checkpoints, laid out as a single-seed run's: the agent's arrays
under `agent/...`, the online transitions collected so far under `replay/...` (absent offline: the
offline data is read again from its files) and the counters as JSON.
"""

import dataclasses
import os
import sys
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from runner.acting import SeedActing
from runner.checkpoints import Checkpointer, flatten_state, unflatten_like
from envs.datasets import TRANSITION_KEYS, Dataset
from core.errors import RunError
from runner.layout import CHECKPOINT_DIR
from runner.seed_axis import stack, take, unstack

AGENT_KEY, REPLAY_KEY = 'agent', 'replay'
FLOW_PREFIX = f'{AGENT_KEY}/network/params/modules_flow/'  # the BC flow of a --bc_only run


@dataclasses.dataclass(frozen=True)
class RunState:
    agents: Any  # stacked on the seed axis
    online: Optional[Dataset]  # each seed's online transitions, stacked (None for a run without online phase)
    step: int
    acting: Tuple[SeedActing, ...]  # per seed

    @property
    def num_seeds(self) -> int:
        return len(self.acting)

    def online_transitions(self, k: int) -> Optional[Dict[str, np.ndarray]]:
        """Seed k's online transitions so far (None before the first)."""
        if self.online is None:
            return None
        size = int(self.online.size[k])
        if size == 0:
            return None
        return {key: np.asarray(getattr(self.online, key)[k, :size]) for key in TRANSITION_KEYS}

    def keep(self, positions) -> 'RunState':
        """The state of the seeds at `positions` only."""
        online = None if self.online is None else take(self.online, positions)
        return RunState(take(self.agents, positions), online, self.step, tuple(self.acting[k] for k in positions))


def online_buffers(transitions, capacity: int, example: Dict[str, np.ndarray]) -> Dataset:
    """The seeds' online buffers, stacked: room for `capacity` transitions each, filled with `transitions[k]`
    (None: empty). `example`: a transition dict giving the shapes."""
    empty = {key: np.zeros((0, *np.shape(value)[1:]), np.float32) for key, value in example.items()}
    return stack([Dataset.create(t if t is not None else empty, capacity=capacity) for t in transitions])


class NonFiniteState(RunError):
    pass


@jax.jit
def _finite_leaves(tree):
    return [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact)]


def non_finite_arrays(tree):
    """Names of the floating-point arrays of `tree` holding NaN or inf."""
    names = [name for name, leaf in flatten_state(tree).items() if np.issubdtype(leaf.dtype, np.inexact)]
    return [name for name, finite in zip(names, jax.device_get(_finite_leaves(tree))) if not finite]


def seed_arrays(state: RunState, k: int) -> Dict[str, Any]:
    arrays = {AGENT_KEY: unstack(state.agents, k)}
    online = state.online_transitions(k)
    if online is not None:
        arrays[REPLAY_KEY] = online
    return arrays


def save_state(checkpointer: Checkpointer, state: RunState, k: int, settings: dict):
    """Saves seed k of `state` with its run's `settings` (what flags.json records); refuses a non-finite
    state, so every checkpoint is one a run can resume from."""
    arrays = seed_arrays(state, k)
    bad = non_finite_arrays(arrays)
    if bad:
        raise NonFiniteState(f'{", ".join(bad[:5])}{" and more" if len(bad) > 5 else ""} became non-finite '
                             f'by step {state.step}')
    acting = state.acting[k]
    checkpointer.save(state.step, arrays, {'step': state.step, 'episode_index': acting.episode_index,
                                           'action_queue': [action.tolist() for action in acting.queue],
                                           'settings': settings})


def checkpoint_bytes(state: RunState, k: int) -> int:
    """About the size of seed k's checkpoint (its arrays)."""
    return int(sum(np.asarray(leaf).nbytes for leaf in jax.tree_util.tree_leaves(seed_arrays(state, k))))


def restore_state(checkpointer: Checkpointer, agent_template, check=lambda saved_settings: None):
    """(agent, online transitions or None, step, SeedActing, check's result) of the newest intact checkpoint,
    or None when there is none. `check` sees the checkpoint's settings (None for checkpoints older than this
    format) before any array is unpacked, and may refuse them by raising."""
    restored = checkpointer.restore_latest_intact(warn=lambda line: print(line, file=sys.stderr))
    if restored is None:
        return None
    _, flat, metadata = restored
    checked = check(metadata.get('settings'))
    agent = unflatten_like(agent_template, _under(flat, AGENT_KEY + '/'))
    replay = _under(flat, REPLAY_KEY + '/') or None
    queue = tuple(np.asarray(action, np.float32) for action in metadata.get('action_queue', ()))
    return agent, replay, metadata['step'], SeedActing(metadata['episode_index'], queue), checked


def settings_changes(saved: dict, current: dict, free=()) -> Dict[str, tuple]:
    """{name: (saved value, current value)} for every setting (flags and `agent.*` keys) that differs,
    except the names in `free`."""
    def flat(settings):
        out = {key: value for key, value in settings.items() if key != 'agent' and key not in free}
        out.update({f'agent.{key}': value for key, value in (settings.get('agent') or {}).items()})
        return out

    saved, current = flat(saved), flat(current)
    return {key: (saved.get(key), current.get(key)) for key in sorted(set(saved) | set(current))
            if _normal(saved.get(key)) != _normal(current.get(key))}


def _normal(value):
    return [_normal(item) for item in value] if isinstance(value, (list, tuple)) else value


def _under(flat: Dict[str, np.ndarray], prefix: str) -> Dict[str, np.ndarray]:
    return {key[len(prefix):]: value for key, value in flat.items() if key.startswith(prefix)}


def load_flow_params(path: str):
    """The BC flow's parameters from a `--bc_only` run directory or its checkpoint directory."""
    checkpoint_dir = path if os.path.basename(os.path.normpath(path)) == CHECKPOINT_DIR else \
        os.path.join(path, CHECKPOINT_DIR)
    if not os.path.isdir(checkpoint_dir):
        raise FileNotFoundError(
            f'No checkpoints under {path!r}. Pass the run directory of a `main.py --bc_only` run '
            '(the folder holding flags.json and checkpoints/).'
        )
    checkpointer = Checkpointer(checkpoint_dir)
    if checkpointer.latest_step() is None:
        raise FileNotFoundError(f'{checkpoint_dir!r} holds no finished checkpoint.')
    flat, _ = checkpointer.restore()
    checkpointer.close()
    flow = _under(flat, FLOW_PREFIX)
    if not flow:
        raise ValueError(f'The checkpoint in {checkpoint_dir!r} has no BC flow (module "flow"): was it a --bc_only run?')
    return _nest(flow)


def _nest(flat: Dict[str, np.ndarray]):
    tree: Dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split('/')
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return tree
