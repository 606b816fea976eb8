"""The layout of a run directory `{save_dir}/{run_name}/`, which main.py writes and the experiments read."""

import os

FLAGS_FILE = 'flags.json'  # main.py's flag values, the resolved agent config under 'agent'
TRAIN_CSV = 'train.csv'  # training/..., time/..., online/... rows
EVAL_CSV = 'eval.csv'  # evaluation/... rows
CHECKPOINT_DIR = 'checkpoints'
LEARNING_CURVE = 'learning_curve.png'


def run_name(method_slug: str, env_name: str, seed: int, bc_only: bool = False) -> str:
    """The default run directory name, e.g. 'qam-e_cube-double-play-singletask-task1-v0_seed0'; BC
    pre-training runs (--bc_only) end in '_bc'."""
    return f'{method_slug}_{env_name}_seed{seed}' + ('_bc' if bc_only else '')


def path(run_dir: str, name: str) -> str:
    return os.path.join(run_dir, name)
