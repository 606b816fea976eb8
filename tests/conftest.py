"""Shared fixtures: a tiny OGBench-format dataset generated once per test session."""

import csv
import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from runner.prng import use_unrolled_threefry_on_cpu  # noqa: E402

use_unrolled_threefry_on_cpu()  # as main.py and the experiments do: same numbers, faster small programs

TINY_ENV = 'cube-single-play-singletask-task1-v0'


@pytest.fixture(scope='session')
def tiny_dataset_dir(tmp_path_factory):
    """Three short oracle episodes of cube-single-play (and one for validation)."""
    from experiments.generate_dataset import generate

    directory = tmp_path_factory.mktemp('ogbench_data')
    generate('cube-single-play-v0', num_episodes=3, dataset_dir=str(directory), seed=0, num_val_episodes=1,
             max_episode_steps=201, progress=False, verbose=False)
    return str(directory)


@pytest.fixture(scope='session')
def tiny_shards_dir(tmp_path_factory):
    """Two one-episode shards of cube-single-play (seeds 1 and 2), a sharded dataset in miniature."""
    import shutil

    from experiments.generate_dataset import generate

    directory = tmp_path_factory.mktemp('ogbench_shards')
    for index, seed in enumerate((1, 2)):
        source = tmp_path_factory.mktemp(f'shard_source{index}')
        generate('cube-single-play-v0', num_episodes=1, dataset_dir=str(source), seed=seed, num_val_episodes=1,
                 max_episode_steps=201, progress=False, verbose=False)
        shutil.copy(source / 'cube-single-play-v0.npz', directory / f'shard{index}.npz')
    return str(directory)


GOLDEN_DIR = os.path.join(REPO_ROOT, 'tests', 'data', 'golden')


def assert_logs_match_golden(run_dir, name):
    """train.csv and eval.csv of a run equal the rows recorded in tests/data/golden/{name}_*.csv, the wall-clock
    column aside; numbers to float32 round-off (the online phase amplifies it, so the runs are short).

    A change meant to alter the numbers records them anew with RECORD_GOLDEN=1 (and says why in its commit).
    """
    import csv

    import numpy as np

    if os.environ.get('RECORD_GOLDEN'):
        _record_golden(run_dir, name)
        return
    for stream in ('train', 'eval'):
        with open(os.path.join(GOLDEN_DIR, f'{name}_{stream}.csv'), newline='') as f:
            expected = list(csv.DictReader(f))
        with open(os.path.join(run_dir, f'{stream}.csv'), newline='') as f:
            actual = list(csv.DictReader(f))
        assert len(actual) == len(expected), (stream, len(actual), len(expected))
        for want, got in zip(expected, actual):
            assert set(want) <= set(got), (stream, set(want) - set(got))
            for key, value in want.items():
                if value in ('', None) or not _is_number(value):
                    assert (got[key] or '') == (value or ''), (stream, want['step'], key)
                else:
                    np.testing.assert_allclose(float(got[key]), float(value), rtol=1e-4, atol=1e-6,
                                               err_msg=f'{stream}.csv step {want["step"]} {key}')


def _record_golden(run_dir, name):
    import csv

    for stream in ('train', 'eval'):
        with open(os.path.join(run_dir, f'{stream}.csv'), newline='') as f:
            rows = [{key: value for key, value in row.items() if not key.startswith('time/')} for row in csv.DictReader(f)]
        with open(os.path.join(GOLDEN_DIR, f'{name}_{stream}.csv'), 'w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def write_csv(path, rows):
    """A CSV log as main.py writes it: the union of the rows' columns, in order of first appearance."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


# ----------------------------------------------------------------------------------------------------------------------
# Messages for the user: what they name, not how they word it (a rewording must not break a test, dropping the
# flag, value, path or command the user needs must).
# ----------------------------------------------------------------------------------------------------------------------


def names(text, part):
    """Whether `text` names `part`: a string anywhere in it; a number as a whole number (not a digit of another
    number) outside the paths in it (a temporary directory holds numbers too)."""
    import re

    if isinstance(part, str):
        return part in text
    words = ' '.join(word for word in text.split() if os.sep not in word)
    return re.search(rf'(?<![\w.]){re.escape(str(part))}(?!\w|\.\d)', words) is not None


def assert_one_screen(text, *must_name, max_lines=25):
    """`text` is a message a user can act on: one screen, no Python traceback, and it names each of `must_name`
    (see `names`). Returns `text`."""
    lines = text.strip().splitlines()
    assert lines and len(lines) < max_lines, f'{len(lines)} lines:\n{text}'
    assert 'Traceback' not in text, text
    missing = [part for part in must_name if not names(text, part)]
    assert not missing, f'the message does not name {missing}:\n{text}'
    return text


def line_naming(text, *parts):
    """The first line of `text` that names all of `parts` (a setting with its old and new value, say)."""
    for line in text.splitlines():
        if all(names(line, part) for part in parts):
            return line
    raise AssertionError(f'no line names all of {parts}:\n{text}')


def has_layer_norm(params):
    """Whether a flax parameter tree holds the scale or bias of a LayerNorm module."""
    import jax

    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    return any(str(getattr(key, 'key', '')).startswith('LayerNorm') for path in paths for key in path)
