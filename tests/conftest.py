"""Shared fixtures: a tiny OGBench-format dataset generated once per test session."""

import csv
import os
import sys

import numpy as np
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


# How far a recorded number may be from a run's on another machine. The offline phase agrees across CPUs to float32
# round-off. The online phase feeds the actions back through the contact dynamics, which amplify the last float32
# places that XLA's instruction choice (AVX-512 or not, Intel or AMD) changes: an AMD run of the Intel-recorded logs,
# and runs on data whose last float32 place was perturbed, move the online metrics by a few percent of each column's
# scale, so they are compared at ONLINE_SCALE_TOL of it. A recorded value still pins the online phase; equality on
# one machine, to the last digit, is what the resume, seed-group and parallel-evaluation tests check.
OFFLINE_RTOL = 1e-4
ONLINE_SCALE_TOL = 0.15


def assert_logs_match_golden(run_dir, name):
    """train.csv and eval.csv of a run equal the rows recorded in tests/data/golden/{name}_*.csv, the wall-clock
    column aside: the same rows and columns, text equal, the offline phase's numbers to float32 round-off and the
    online phase's within ONLINE_SCALE_TOL of each column's scale (any CPU; see above).

    A change meant to alter the numbers records them anew with RECORD_GOLDEN=1 (and says why in its commit).
    """
    if os.environ.get('RECORD_GOLDEN'):
        _record_golden(run_dir, name)
        return
    expected = {stream: _read_rows(os.path.join(GOLDEN_DIR, f'{name}_{stream}.csv')) for stream in ('train', 'eval')}
    offline_end = max(int(row['step']) for row in expected['train'] if row.get('phase') == 'offline')
    for stream, want_rows in expected.items():
        got_rows = _read_rows(os.path.join(run_dir, f'{stream}.csv'))
        assert [row['step'] for row in got_rows] == [row['step'] for row in want_rows], stream
        scales = _online_scales(want_rows, offline_end)
        for want, got in zip(want_rows, got_rows):
            online = int(want['step']) > offline_end or want.get('phase') == 'online'
            for key, value in want.items():
                where = f'{stream}.csv step {want["step"]} {key}'
                if not _is_number(value):
                    assert (got.get(key) or '') == (value or ''), where
                elif online:
                    assert abs(float(got[key]) - float(value)) <= ONLINE_SCALE_TOL * scales[key], \
                        f'{where}: {got[key]} recorded {value} (column scale {scales[key]:.3g})'
                else:
                    np.testing.assert_allclose(float(got[key]), float(value), rtol=OFFLINE_RTOL, atol=1e-6, err_msg=where)


def assert_same_logs(expected_dir, actual_dir):
    """Two runs on this machine logged the same train.csv and eval.csv rows, to the last digit (wall-clock aside)."""
    for name in ('train.csv', 'eval.csv'):
        strip = lambda rows: [{k: v for k, v in row.items() if not k.startswith('time/')} for row in rows]  # noqa: E731
        expected = strip(_read_rows(os.path.join(expected_dir, name)))
        assert strip(_read_rows(os.path.join(actual_dir, name))) == expected, name


def _read_rows(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def _online_scales(rows, offline_end):
    """Each numeric column's mean magnitude over the online rows (a floor of 1e-3 for columns that are all 0)."""
    values = {}
    for row in rows:
        if int(row['step']) > offline_end or row.get('phase') == 'online':
            for key, value in row.items():
                if _is_number(value):
                    values.setdefault(key, []).append(abs(float(value)))
    return {key: max(float(np.mean(column)), 1e-3) for key, column in values.items()}


def _record_golden(run_dir, name):

    for stream in ('train', 'eval'):
        with open(os.path.join(run_dir, f'{stream}.csv'), newline='') as f:
            rows = [{key: value for key, value in row.items() if not key.startswith('time/')} for row in csv.DictReader(f)]
        with open(os.path.join(GOLDEN_DIR, f'{name}_{stream}.csv'), 'w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def _is_number(text):
    if text in ('', None):
        return False
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
