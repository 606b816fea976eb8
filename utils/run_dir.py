"""The layout of a run directory `{save_dir}/{run_name}/`, which main.py writes and the experiments read."""

import os
from typing import Sequence

FLAGS_FILE = 'flags.json'  # main.py's flag values, the resolved agent config under 'agent'
TRAIN_CSV = 'train.csv'  # training/..., time/..., online/... rows
EVAL_CSV = 'eval.csv'  # evaluation/... rows
CHECKPOINT_DIR = 'checkpoints'
LEARNING_CURVE = 'learning_curve.png'
VIDEO_DIR = 'videos'  # evaluation videos, step{step}_episode{e}.mp4


def run_name(method_slug: str, env_name: str, seed: int) -> str:
    """The default run directory name, e.g. 'qam-e_cube-double-play-singletask-task1-v0_seed0'."""
    return f'{method_slug}_{env_name}_seed{seed}'


def bc_run_name(env_name: str, seed: int, hidden_dims: Sequence[int], layer_norm: bool, horizon_length: int) -> str:
    """The BC pre-training run of a task, seed and flow-network shape, which every method of that task starts
    from, e.g. 'bc_cube-triple-play-singletask-task2-v0_seed0_4x1024ln_h5'."""
    dims = f'{len(hidden_dims)}x{hidden_dims[0]}' if len(set(hidden_dims)) == 1 else '-'.join(map(str, hidden_dims))
    return f'bc_{env_name}_seed{seed}_{dims}{"ln" if layer_norm else ""}_h{horizon_length}'


def video_path(run_dir: str, step: int, episode: int) -> str:
    return os.path.join(run_dir, VIDEO_DIR, f'step{step}_episode{episode}.mp4')


def path(run_dir: str, name: str) -> str:
    return os.path.join(run_dir, name)
