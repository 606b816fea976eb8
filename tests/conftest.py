"""Shared fixtures: a tiny OGBench-format dataset generated once per test session."""

import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

TINY_ENV = 'cube-single-play-singletask-task1-v0'


@pytest.fixture(scope='session')
def tiny_dataset_dir(tmp_path_factory):
    """Three short oracle episodes of cube-single-play (and one for validation)."""
    from experiments.generate_dataset import generate

    directory = tmp_path_factory.mktemp('ogbench_data')
    generate('cube-single-play-v0', num_episodes=3, dataset_dir=str(directory), seed=0, num_val_episodes=1,
             max_episode_steps=201, progress=False, verbose=False)
    return str(directory)
