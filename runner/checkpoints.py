"""Checkpoints with orbax: the training state as a flat dict of arrays plus a JSON of counters.

Flattening by key path lets a restore compare what was saved with what the current config builds and
name every mismatch, instead of failing deep inside orbax.
"""

import os
import shutil
from typing import Any, Dict, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp


def _path_name(path) -> str:
    return '/'.join(str(getattr(key, 'key', getattr(key, 'name', getattr(key, 'idx', key)))) for key in path)


def flatten_state(tree) -> Dict[str, np.ndarray]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {_path_name(path): np.asarray(leaf) for path, leaf in leaves}


def unflatten_like(template, flat: Dict[str, np.ndarray], source: str = 'checkpoint'):
    """Fills `template`'s structure with `flat`'s arrays; raises a readable error on any mismatch."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    expected = {_path_name(path): np.shape(leaf) for path, leaf in leaves}
    problems = []
    for name in sorted(set(expected) - set(flat)):
        problems.append(f'  missing in {source}: {name} {expected[name]}')
    for name in sorted(set(flat) - set(expected)):
        problems.append(f'  not in this config: {name} {np.shape(flat[name])}')
    for name in sorted(set(expected) & set(flat)):
        if tuple(np.shape(flat[name])) != tuple(expected[name]):
            problems.append(f'  shape of {name}: {source} {np.shape(flat[name])}, this config {expected[name]}')
    if problems:
        shown = '\n'.join(problems[:20]) + (f'\n  ... and {len(problems) - 20} more' if len(problems) > 20 else '')
        raise ValueError(
            f'The {source} does not fit the current agent config:\n{shown}\n'
            'Use the same agent file, --agent.* overrides, environment and horizon_length as the run that '
            'wrote it, or point --save_dir/--run_name somewhere else to start a new run.'
        )
    return jax.tree_util.tree_unflatten(
        treedef, [np.asarray(flat[_path_name(path)]).astype(np.asarray(leaf).dtype) for path, leaf in leaves]
    )


class Checkpointer:
    """Keeps the latest `max_to_keep` checkpoints of a run under `directory`.

    Orbax writes each checkpoint into a temporary folder and renames it when complete, so a checkpoint
    is whole or absent; temporary folders left by a killed process are removed on opening.
    """

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True),
        )

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def save(self, step: int, arrays: Dict[str, Any], metadata: Dict[str, Any]):
        self.manager.save(
            step,
            args=ocp.args.Composite(
                arrays=ocp.args.StandardSave(flatten_state(arrays)), metadata=ocp.args.JsonSave(metadata)
            ),
        )
        self.manager.wait_until_finished()

    def restore(self, step: Optional[int] = None) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
        step = self.latest_step() if step is None else step
        restored = self.manager.restore(
            step, args=ocp.args.Composite(arrays=ocp.args.StandardRestore(), metadata=ocp.args.JsonRestore())
        )
        return {key: np.asarray(value) for key, value in restored['arrays'].items()}, dict(restored['metadata'])

    def restore_latest_intact(self, warn=print):
        """(step, arrays, metadata) of the newest checkpoint that reads back, or None when there is none.

        An unreadable checkpoint (a truncated or damaged file) is reported in one line and moved to
        `{directory}-corrupt/{step}`, out of the run's way but kept for inspection; the next older one is tried.
        """
        steps = sorted(self.manager.all_steps(), reverse=True)
        for position, step in enumerate(steps):
            try:
                arrays, metadata = self.restore(step)
            except Exception as error:  # noqa: BLE001 - orbax raises many kinds for a damaged file
                detail = (str(error).strip().splitlines() or [''])[0][:200]
                aside = os.path.join(self.directory + '-corrupt', str(step))
                os.makedirs(os.path.dirname(aside), exist_ok=True)
                shutil.move(os.path.join(self.directory, str(step)), aside)
                self.manager.reload()
                then = ('using the previous one' if position + 1 < len(steps) else
                        'no other checkpoint is left, so the run starts afresh from step 0')
                warn(f'Checkpoint {step} of {self.directory} is unreadable ({type(error).__name__}: {detail}); '
                     f'moved it to {aside} and {then}.')
                continue
            return step, arrays, metadata
        return None

    def close(self):
        self.manager.close()
