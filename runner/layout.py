"""The layout of a run directory `{save_dir}/{run_name}/`, which main.py writes and the experiments read."""

import json
import os
from typing import Optional, Sequence

from protocols.domains import dims_label

FLAGS_FILE = 'flags.json'  # main.py's flag values, the resolved agent config under 'agent'
TRAIN_CSV = 'train.csv'  # training/..., time/..., online/... rows
EVAL_CSV = 'eval.csv'  # evaluation/... rows
CHECKPOINT_DIR = 'checkpoints'
LEARNING_CURVE = 'learning_curve.png'
VIDEO_DIR = 'videos'  # evaluation videos, step{step}_episode{e}.mp4
DIVERGED_FILE = 'diverged.json'  # a seed whose training diverged: {step, non_finite, message}
SUCCESS_KEY = 'evaluation/success'  # eval.csv's success rate, what tables and curves report


def run_name(method_slug: str, env_name: str, seed: int) -> str:
    """The default run directory name, e.g. 'qam-e_cube-double-play-singletask-task1-v0_seed0'."""
    return f'{method_slug}_{env_name}_seed{seed}'


def bc_run_name(env_name: str, seed: int, hidden_dims: Sequence[int], layer_norm: bool, horizon_length: int) -> str:
    """The BC pre-training run of a task, seed and flow-network shape, which every method of that task starts
    from, e.g. 'bc_cube-triple-play-singletask-task2-v0_seed0_4x1024ln_h5'."""
    return f'bc_{env_name}_seed{seed}_{dims_label(hidden_dims)}{"ln" if layer_norm else ""}_h{horizon_length}'


def video_path(run_dir: str, step: int, episode: int) -> str:
    return os.path.join(run_dir, VIDEO_DIR, f'step{step}_episode{episode}.mp4')


def path(run_dir: str, name: str) -> str:
    return os.path.join(run_dir, name)


def write_divergence(run_dir: str, step: int, non_finite: str, message: str):
    with open(path(run_dir, DIVERGED_FILE), 'w') as f:
        json.dump({'step': step, 'non_finite': non_finite, 'message': message}, f, indent=2)


def divergence(run_dir: str) -> Optional[dict]:
    """The run's DIVERGED_FILE ({step, non_finite, message}), None when it did not diverge."""
    if not os.path.exists(path(run_dir, DIVERGED_FILE)):
        return None
    with open(path(run_dir, DIVERGED_FILE)) as f:
        return json.load(f)
