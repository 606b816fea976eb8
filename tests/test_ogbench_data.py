"""Tests for envs/ogbench_data.py and experiments/generate_dataset.py (tiny generated datasets, no network)."""

import os
import shutil

import numpy as np
import pytest

from experiments.generate_dataset import generate
from envs import ogbench_data as od
from envs.datasets import TRANSITION_KEYS
from tests.conftest import assert_one_screen

ENV_NAME = 'cube-single-play-singletask-task1-v0'
DATASET_NAME = 'cube-single-play-v0'
NUM_TRAIN, NUM_VAL, EP_STEPS = 3, 1, 40


def _gen(dataset_dir, seed=0):
    return generate(
        DATASET_NAME,
        num_episodes=NUM_TRAIN,
        num_val_episodes=NUM_VAL,
        max_episode_steps=EP_STEPS,
        dataset_dir=str(dataset_dir),
        seed=seed,
        progress=False,
        verbose=False,
    )


@pytest.fixture(scope='module')
def gen_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp('ogbench_data')
    _gen(d)
    return d


@pytest.fixture(scope='module')
def loaded(gen_dir):
    return od.make_env_and_datasets(ENV_NAME, dataset_dir=str(gen_dir), download=False)


def _copy_dataset(src_dir, dst_dir):
    os.makedirs(dst_dir, exist_ok=True)
    for suffix in ('', '-val'):
        shutil.copy(os.path.join(src_dir, f'{DATASET_NAME}{suffix}.npz'), dst_dir)


def _raw(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


# ----------------------------------------------------------------------------------------------------------------------
# Generation.
# ----------------------------------------------------------------------------------------------------------------------


def test_generated_files_have_ogbench_format(gen_dir):
    train = _raw(os.path.join(gen_dir, f'{DATASET_NAME}.npz'))
    val = _raw(os.path.join(gen_dir, f'{DATASET_NAME}-val.npz'))
    assert set(train) == {'observations', 'actions', 'terminals', 'qpos', 'qvel'}
    assert len(train['terminals']) == NUM_TRAIN * EP_STEPS and len(val['terminals']) == NUM_VAL * EP_STEPS
    assert train['terminals'].dtype == np.bool_
    assert train['observations'].dtype == train['actions'].dtype == train['qpos'].dtype == np.float32
    assert np.flatnonzero(train['terminals']).tolist() == [EP_STEPS * (i + 1) - 1 for i in range(NUM_TRAIN)]
    assert np.abs(train['actions']).max() <= 1.0
    # No temp files left behind.
    assert sorted(os.listdir(gen_dir)) == [f'{DATASET_NAME}-val.npz', f'{DATASET_NAME}.npz']


def test_generation_is_deterministic(gen_dir, tmp_path):
    _gen(tmp_path / 'again', seed=0)
    for suffix in ('', '-val'):
        a = _raw(os.path.join(gen_dir, f'{DATASET_NAME}{suffix}.npz'))
        b = _raw(os.path.join(tmp_path / 'again', f'{DATASET_NAME}{suffix}.npz'))
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_generation_depends_on_seed(gen_dir, tmp_path):
    _gen(tmp_path, seed=1)
    a = _raw(os.path.join(gen_dir, f'{DATASET_NAME}.npz'))['observations']
    b = _raw(os.path.join(tmp_path, f'{DATASET_NAME}.npz'))['observations']
    assert not np.array_equal(a, b)


def test_parse_dataset_name():
    assert od.parse_dataset_name('cube-double-play-v0') == ('cube-double', 'play', 'v0', 'cube-double-play-v0')
    assert od.parse_dataset_name('puzzle-3x3-noisy-singletask-task4-v0').dataset_name == 'puzzle-3x3-noisy-v0'
    assert od.parse_dataset_name('scene-v0', dataset_type='noisy').dataset_name == 'scene-noisy-v0'
    assert od.parse_dataset_name('antmaze-large-navigate-v0') == ('antmaze-large', 'navigate', 'v0',
                                                                  'antmaze-large-navigate-v0')
    for bad in ('cube-single-v0', 'play-v0', 'cube-single-play', 'cube-single-play-vx'):
        with pytest.raises(ValueError):
            od.parse_dataset_name(bad)
    with pytest.raises(ValueError):
        od.parse_dataset_name('cube-single-play-v0', dataset_type='noisy')


@pytest.mark.parametrize('name, cause', [('antmaze-large-navigate-v0', 'navigate'),
                                         ('cube-single-navigate-v0', 'navigate'), ('foo-play-v0', 'foo')])
def test_generate_rejects_non_generatable(name, cause, tmp_path):
    with pytest.raises(ValueError) as e:
        generate(name, num_episodes=1, dataset_dir=str(tmp_path), progress=False, verbose=False)
    assert_one_screen(str(e.value), cause)  # the dataset type or family the oracles cannot generate
    assert os.listdir(tmp_path) == []


def test_task_success_report(gen_dir):
    report = od.task_success_report(DATASET_NAME, str(gen_dir))
    assert sorted(report) == [f'task{k}' for k in range(1, 6)]
    for r in report.values():
        assert 0.0 <= r['episode_success_rate'] <= 1.0 and 0.0 <= r['transition_success_rate'] <= 1.0
        assert r['num_episodes'] == NUM_TRAIN + NUM_VAL
        assert r['num_transitions'] == (NUM_TRAIN + NUM_VAL) * (EP_STEPS - 1)
    # A single-task name reports on the same dataset; include_val=False uses the train file only.
    assert od.task_success_report(ENV_NAME, str(gen_dir)) == report
    train_only = od.task_success_report(DATASET_NAME, str(gen_dir), include_val=False)
    assert all(r['num_episodes'] == NUM_TRAIN for r in train_only.values())


def test_task_success_report_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        od.task_success_report(DATASET_NAME, str(tmp_path))
    assert_one_screen(str(e.value), f'{DATASET_NAME}.npz')


# ----------------------------------------------------------------------------------------------------------------------
# Loading.
# ----------------------------------------------------------------------------------------------------------------------


def test_make_env_and_datasets(loaded, gen_dir):
    env, eval_env, train, val = loaded
    assert env is not eval_env
    n_train, n_val = NUM_TRAIN * (EP_STEPS - 1), NUM_VAL * (EP_STEPS - 1)
    ob_dim = env.observation_space.shape[0]
    for ds, n in ((train, n_train), (val, n_val)):
        assert set(ds) == set(TRANSITION_KEYS)
        for k, v in ds.items():
            assert isinstance(v, np.ndarray) and v.dtype == np.float32, k
            assert len(v) == n, k
        assert ds['observations'].shape == ds['next_observations'].shape == (n, ob_dim)
        assert ds['actions'].shape == (n, 5)
        num_eps = n // (EP_STEPS - 1)
        assert np.flatnonzero(ds['terminals']).tolist() == [(EP_STEPS - 1) * (i + 1) - 1 for i in range(num_eps)]
        assert np.all(ds['rewards'] <= 0)
        assert set(np.unique(ds['masks'])) <= {0.0, 1.0}
        assert np.all(ds['masks'] == (ds['rewards'] != 0))  # cube-single: success <=> reward 0.
        assert np.abs(ds['actions']).max() <= 1 - 1e-5
    # next_observations are observations shifted by one within each episode.
    raw = _raw(os.path.join(gen_dir, f'{DATASET_NAME}.npz'))['observations'].reshape(NUM_TRAIN, EP_STEPS, -1)
    np.testing.assert_array_equal(train['observations'].reshape(NUM_TRAIN, EP_STEPS - 1, -1), raw[:, :-1])
    np.testing.assert_array_equal(train['next_observations'].reshape(NUM_TRAIN, EP_STEPS - 1, -1), raw[:, 1:])
    ob, _ = eval_env.reset()
    assert ob.shape == (ob_dim,)


def test_sparse_rewards_and_no_clip(gen_dir, loaded):
    _, _, dense, _ = loaded
    _, _, train, val = od.make_env_and_datasets(
        ENV_NAME, dataset_dir=str(gen_dir), sparse=True, action_clip_eps=None, download=False
    )
    for ds in (train, val):
        assert set(np.unique(ds['rewards'])) <= {0.0, -1.0}
    np.testing.assert_array_equal(train['rewards'], -(dense['rewards'] != 0).astype(np.float32))
    raw_actions = _raw(os.path.join(gen_dir, f'{DATASET_NAME}.npz'))['actions']
    assert np.abs(train['actions']).max() == np.abs(raw_actions).max()


def test_dataset_path_with_and_without_val(gen_dir, tmp_path):
    path = os.path.join(gen_dir, f'{DATASET_NAME}.npz')
    _, _, train, val = od.make_env_and_datasets(ENV_NAME, dataset_path=path)
    assert val is not None and len(train['observations']) == NUM_TRAIN * (EP_STEPS - 1)
    lone = tmp_path / 'lone.npz'
    shutil.copy(path, lone)
    _, _, train2, val2 = od.make_env_and_datasets(ENV_NAME, dataset_path=str(lone))
    assert val2 is None
    for k in TRANSITION_KEYS:
        np.testing.assert_array_equal(train[k], train2[k])


def test_missing_files_give_actionable_error(tmp_path):
    empty = tmp_path / 'empty'
    with pytest.raises(FileNotFoundError) as e:
        od.make_env_and_datasets(ENV_NAME, dataset_dir=str(empty), download=False)
    # The missing files, where they belong, and the commands that fetch or generate them.
    assert_one_screen(str(e.value), *od.dataset_files(str(empty), DATASET_NAME),
                      f'ogbench.download_datasets([\'{DATASET_NAME}\'], \'{empty}\')',
                      f'python experiments/generate_dataset.py --env_name={DATASET_NAME} --dataset_dir={empty}')
    # A locomotion dataset is downloaded; no command to generate it is offered (the oracles cannot).
    locomotion = 'antmaze-large-navigate-v0'
    with pytest.raises(FileNotFoundError) as e:
        od.make_env_and_datasets('antmaze-large-navigate-singletask-task1-v0', dataset_dir=str(empty), download=False)
    assert_one_screen(str(e.value), f'ogbench.download_datasets([\'{locomotion}\'], \'{empty}\')')
    assert f'--env_name={locomotion}' not in str(e.value)
    assert not empty.exists()  # nothing written


def test_failed_download_leaves_no_tmp(tmp_path, monkeypatch):
    import ogbench

    def fake_download(names, dataset_dir):  # Simulates a connection dying mid-download.
        open(os.path.join(dataset_dir, f'{names[0]}.npz.tmp'), 'wb').write(b'partial')
        raise OSError('network is unreachable')

    monkeypatch.setattr(ogbench, 'download_datasets', fake_download)
    with pytest.raises(FileNotFoundError) as e:
        od.make_env_and_datasets(ENV_NAME, dataset_dir=str(tmp_path), download=True)
    # The cause (the downloader's error) and the files still missing.
    assert_one_screen(str(e.value), 'network is unreachable', *od.dataset_files(str(tmp_path), DATASET_NAME))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    'name, cause',
    [
        ('foo-play-singletask-task1-v0', "'foo'"),
        ('cube-single-play-v0', None),  # Not a single-task name.
        ('cube-single-play-singletask-task7-v0', 7),
        ('cube-single-navigate-singletask-task1-v0', "'navigate'"),
        ('cube-single-singletask-task1-v0', "'single'"),  # Missing dataset type.
        ('visual-cube-single-play-singletask-task1-v0', None),
    ],
)
def test_invalid_env_name(name, cause):
    with pytest.raises(ValueError) as e:
        od.make_env_and_datasets(name, download=False)
    # The name given, the part of it that is wrong, a valid name to copy, and every supported family.
    families = od.supported_families()
    assert_one_screen(str(e.value), repr(name), *[cause] * (cause is not None), 'cube-double-play-singletask-task2-v0',
                      *families, max_lines=15)


def test_valid_names_and_families():
    p = od.parse_env_name('cube-double-play-singletask-task2-v0')
    assert (p.family, p.dataset_type, p.task, p.version) == ('cube-double', 'play', 2, 'v0')
    assert (p.env_id, p.dataset_name) == ('cube-double-singletask-task2-v0', 'cube-double-play-v0')
    assert od.parse_env_name('scene-noisy-singletask-v0').env_id == 'scene-singletask-v0'
    assert od.parse_env_name('antmaze-large-navigate-singletask-task3-v0').dataset_name == 'antmaze-large-navigate-v0'
    assert od.parse_env_name('puzzle-4x4-noisy-singletask-v0').family == 'puzzle-4x4'
    assert {'cube-double', 'scene', 'puzzle-4x4', 'antmaze-large'} <= set(od.supported_families())
    assert od.is_manipulation('puzzle-3x3-play-singletask-task1-v0') and od.is_manipulation('scene-play-v0')
    assert not od.is_manipulation('humanoidmaze-medium-navigate-singletask-v0')


def test_malformed_lengths(gen_dir, tmp_path):
    _copy_dataset(gen_dir, tmp_path)
    path = os.path.join(tmp_path, f'{DATASET_NAME}.npz')
    raw = _raw(path)
    raw['actions'] = raw['actions'][:-3]
    np.savez_compressed(path, **raw)
    with pytest.raises(ValueError) as e:
        od.make_env_and_datasets(ENV_NAME, dataset_dir=str(tmp_path), download=False)
    assert_one_screen(str(e.value), path, NUM_TRAIN * EP_STEPS - 3)  # the file, and the odd length of its actions


def test_malformed_nan(gen_dir, tmp_path):
    _copy_dataset(gen_dir, tmp_path)
    path = os.path.join(tmp_path, f'{DATASET_NAME}-val.npz')
    raw = _raw(path)
    raw['observations'][5, 2] = np.nan
    np.savez_compressed(path, **raw)
    with pytest.raises(ValueError) as e:
        od.make_env_and_datasets(ENV_NAME, dataset_dir=str(tmp_path), download=False)
    assert_one_screen(str(e.value), path, 'observations', 5)  # the file, the array and the step of the NaN


def test_malformed_missing_key_and_truncated(gen_dir, tmp_path):
    _copy_dataset(gen_dir, tmp_path)
    path = os.path.join(tmp_path, f'{DATASET_NAME}.npz')
    raw = _raw(path)
    del raw['qpos']
    np.savez_compressed(path, **raw)
    with pytest.raises(ValueError) as e:
        od.make_env_and_datasets(ENV_NAME, dataset_dir=str(tmp_path), download=False)
    assert_one_screen(str(e.value), path, 'qpos')  # the file and the array it lacks
    with open(path, 'r+b') as f:  # Truncate the file.
        f.truncate(100)
    with pytest.raises(ValueError) as e:
        od.make_env_and_datasets(ENV_NAME, dataset_dir=str(tmp_path), download=False)
    assert_one_screen(str(e.value), path)
    assert os.path.getsize(path) == 100  # left as it was, for the user to inspect or delete


# ----------------------------------------------------------------------------------------------------------------------
# Shards.
# ----------------------------------------------------------------------------------------------------------------------


def test_list_dataset_shards(tmp_path):
    for name in ('shard-010.npz', 'shard-002.npz', 'shard-002-val.npz', 'shard-001.npz', 'notes.txt'):
        (tmp_path / name).write_bytes(b'')
    assert [os.path.basename(p) for p in od.list_dataset_shards(str(tmp_path))] == [
        'shard-001.npz',
        'shard-002.npz',
        'shard-010.npz',
    ]
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError):
        od.list_dataset_shards(str(tmp_path / 'empty'))
    with pytest.raises(FileNotFoundError):
        od.list_dataset_shards(str(tmp_path / 'does-not-exist'))


def test_load_dataset_shard(gen_dir, loaded, tmp_path):
    env, _, train, _ = loaded
    shutil.copy(os.path.join(gen_dir, f'{DATASET_NAME}.npz'), tmp_path / 'shard-000.npz')  # Without a val sibling.
    _copy_dataset(gen_dir, tmp_path / 'withval')
    shards = od.list_dataset_shards(str(tmp_path)) + [os.path.join(tmp_path, 'withval', f'{DATASET_NAME}.npz')]
    for shard in shards:
        ds = od.load_dataset_shard(ENV_NAME, shard, env, sparse=False, action_clip_eps=1e-5)
        assert set(ds) == set(TRANSITION_KEYS)
        for k in TRANSITION_KEYS:
            np.testing.assert_array_equal(ds[k], train[k])
