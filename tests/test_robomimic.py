"""Tests for envs/robomimic.py: the loader on synthetic files in robomimic's layout, and real robosuite Lift
environments built from a file's metadata. Skipped without h5py / robosuite (requirements-robomimic.txt)."""

import concurrent.futures
import multiprocessing
import os
import pickle

import numpy as np
import pytest

from tests import robomimic_fixtures as fixtures
from envs import robomimic as rm
from envs.datasets import TRANSITION_KEYS
from tests.conftest import assert_one_screen

h5py = pytest.importorskip('h5py', reason='robomimic datasets need h5py: '
                           'pip install --no-deps -r requirements-robomimic.txt')

ENV_NAME = 'lift-ph-low_dim'
NUM_STEPS = sum(fixtures.DEMO_LENGTHS.values())
DEMO_ENDS = np.cumsum([fixtures.DEMO_LENGTHS[n] for n in sorted(fixtures.DEMO_LENGTHS)]) - 1


@pytest.fixture(scope='module')
def dataset_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp('robomimic')
    path = rm.dataset_path(ENV_NAME, str(directory))
    os.makedirs(os.path.dirname(path))
    raw = fixtures.write_lift_dataset(path, unfinished_demo=2)
    return str(directory), path, raw


@pytest.fixture(scope='module')
def loaded(dataset_dir):
    directory, _, _ = dataset_dir
    return rm.make_env_and_datasets(ENV_NAME, dataset_dir=directory)


def _raw_concat(raw, part):
    return np.concatenate([np.concatenate([raw[n][part][key] for key in rm.OBSERVATION_KEYS], axis=1)
                           for n in sorted(raw)])


# ----------------------------------------------------------------------------------------------------------------------
# Names and files.
# ----------------------------------------------------------------------------------------------------------------------


def test_names():
    assert rm.env_names() == ['lift-mh-low_dim', 'lift-ph-low_dim', 'can-mh-low_dim', 'can-ph-low_dim',
                              'square-mh-low_dim', 'square-ph-low_dim']
    assert rm.parse_env_name('square-mh-low_dim') == rm.ParsedEnvName('square', 'mh')
    for name in ('lift-mg-low_dim', 'transport-ph-low_dim', 'lift-ph-image', 'lift-ph'):
        assert rm.is_robomimic(name)
        with pytest.raises(ValueError) as error:
            rm.parse_env_name(name)
        assert_one_screen(str(error.value), repr(name), *rm.env_names())  # the name given and the valid ones
    assert not rm.is_robomimic('cube-double-play-singletask-task2-v0')
    assert rm.dataset_path('can-mh-low_dim', 'datasets') == os.path.join('datasets', 'can', 'mh', 'low_dim_v15.hdf5')
    assert rm.dataset_path('can-mh-low_dim') == os.path.expanduser('~/.robomimic/can/mh/low_dim_v15.hdf5')


def test_missing_file_says_where_and_how_to_download(tmp_path):
    expected = os.path.join(str(tmp_path), 'square', 'mh', 'low_dim_v15.hdf5')
    with pytest.raises(FileNotFoundError) as error:
        rm.make_env_and_datasets('square-mh-low_dim', dataset_dir=str(tmp_path))
    # Where the file belongs, and two ways to put it there.
    assert_one_screen(str(error.value), expected,
                      'https://huggingface.co/datasets/robomimic/robomimic_datasets/resolve/main/v1.5/square/mh/'
                      'low_dim_v15.hdf5', '--tasks square --dataset_types mh --hdf5_types low_dim')
    nowhere = str(tmp_path / 'nowhere.hdf5')
    with pytest.raises(FileNotFoundError) as error:
        rm.make_env_and_datasets(ENV_NAME, dataset_path=nowhere)
    assert_one_screen(str(error.value), nowhere)
    assert os.listdir(tmp_path) == []  # nothing written


# ----------------------------------------------------------------------------------------------------------------------
# Loading.
# ----------------------------------------------------------------------------------------------------------------------


def test_transitions_follow_the_authors_processing(dataset_dir, loaded):
    _, path, raw = dataset_dir
    factory, transitions, metadata = loaded
    assert list(transitions) == list(TRANSITION_KEYS)
    assert all(value.dtype == np.float32 and len(value) == NUM_STEPS for value in transitions.values())
    assert transitions['observations'].shape == transitions['next_observations'].shape == (NUM_STEPS, 19)
    assert transitions['actions'].shape == (NUM_STEPS, 7)

    # Demos in numeric order (demo_2 before demo_10), statistics over obs and next_obs of every demo.
    observations, next_observations = _raw_concat(raw, 'obs'), _raw_concat(raw, 'next_obs')
    both = np.concatenate([observations, next_observations])
    np.testing.assert_array_equal(metadata.obs_min, both.min(0).astype(np.float32))
    np.testing.assert_array_equal(metadata.obs_max, both.max(0).astype(np.float32))
    scale = metadata.obs_max.astype(np.float64) - metadata.obs_min + rm.NORMALIZATION_EPS
    np.testing.assert_allclose(transitions['observations'], 2 * ((observations - metadata.obs_min) / scale - 0.5),
                               atol=1e-5)
    normalized = np.concatenate([transitions['observations'], transitions['next_observations']])
    np.testing.assert_allclose(normalized.min(0), -1.0, atol=1e-5)
    assert normalized.max() <= 1.0 and np.all(normalized.max(0) > 0.999)

    rewards = np.concatenate([raw[n]['rewards'] for n in sorted(raw)])
    dones = np.concatenate([raw[n]['dones'] for n in sorted(raw)])
    np.testing.assert_array_equal(transitions['rewards'], rewards - 1)
    np.testing.assert_array_equal(transitions['masks'], 1 - dones)
    np.testing.assert_array_equal(transitions['actions'],
                                  np.concatenate([raw[n]['actions'] for n in sorted(raw)]).astype(np.float32))

    # Every demo ends terminal, demo_2 too although its last done is 0 (its mask stays 1); success states keep the
    # dones robomimic wrote (done_mode 2) as terminals.
    assert np.all(transitions['terminals'][DEMO_ENDS] == 1)
    unfinished_end = DEMO_ENDS[2]
    assert dones[unfinished_end] == 0 and transitions['masks'][unfinished_end] == 1
    np.testing.assert_array_equal(transitions['terminals'], np.maximum(dones, np.isin(np.arange(NUM_STEPS),
                                                                                      DEMO_ENDS)))
    assert metadata.env_args == fixtures.LIFT_ENV_ARGS and metadata.num_demos == 4 and metadata.path == path
    assert factory.max_episode_steps == 300


def test_filter_key_selects_demos(dataset_dir):
    _, path, _ = dataset_dir
    transitions, metadata = rm.load_dataset(path, filter_key='valid')
    assert metadata.num_demos == 1 and len(transitions['observations']) == fixtures.DEMO_LENGTHS[1]
    with pytest.raises(ValueError) as error:
        rm.load_dataset(path, filter_key='better')
    assert_one_screen(str(error.value), path, 'better', "'train'", "'valid'")  # the key asked for, those there are


def _delete(key):
    def mutate(file):
        del file[key]
    return mutate


def _replace(key, change):
    def mutate(file):
        values = change(file[key][()])
        del file[key]
        file[key] = values
    return mutate


def _set_item(index, value):
    def change(values):
        values[index] = value
        return values
    return change


def _drop_demos(file):
    for name in list(file['data']):
        del file[f'data/{name}']


# Each fault, and what the message must name besides the file: the demo, array or attribute at fault and the values
# that show what is wrong.
MALFORMED = {
    'missing key': (_delete('data/demo_1/obs/object'), ('demo_1', 'obs/object')),
    'mismatched lengths': (_replace('data/demo_10/rewards', lambda v: v[:-2]), ('demo_10', 'rewards', 11, 9)),
    'non-finite': (_replace('data/demo_0/next_obs/robot0_eef_pos', _set_item((4, 1), np.nan)),
                   ('demo_0/next_obs/robot0_eef_pos', 4)),
    'actions beyond bounds': (_replace('data/demo_2/actions', _set_item((3, 0), 1.5)), ('demo_2/actions', 1.5)),
    'dense rewards': (_replace('data/demo_0/rewards', _set_item(0, 0.5)), ('demo_0/rewards', 0.5)),
    'no demos': (_drop_demos, ('data/demo_N',)),
    'no env_args': (lambda file: file['data'].attrs.__delitem__('env_args'), ('env_args',)),
    'obs size differs': (_replace('data/demo_1/next_obs/object', lambda v: v[:, :7]), ('demo_1', "'object'", 7)),
}


def _read_bytes(path):
    with open(path, 'rb') as f:
        return f.read()


@pytest.mark.parametrize('case', sorted(MALFORMED))
def test_malformed_file_gives_one_clear_error(tmp_path, case):
    mutate, causes = MALFORMED[case]
    path = str(tmp_path / 'low_dim_v15.hdf5')
    fixtures.write_lift_dataset(path)
    with h5py.File(path, 'a') as file:
        mutate(file)
    content = _read_bytes(path)
    with pytest.raises(ValueError) as error:
        rm.load_dataset(path)
    assert_one_screen(str(error.value), path, *causes)
    assert _read_bytes(path) == content  # left as it was, for the user to inspect or delete


@pytest.mark.parametrize('content', ['not hdf5', 'truncated'])
def test_unreadable_file_gives_one_clear_error(tmp_path, content):
    path = str(tmp_path / 'low_dim_v15.hdf5')
    fixtures.write_lift_dataset(path)
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(b'this is not an HDF5 file' if content == 'not hdf5' else data[:len(data) // 2])
    with pytest.raises(ValueError) as error:
        rm.load_dataset(path)
    assert_one_screen(str(error.value), path)
    assert os.path.getsize(path) == (len(b'this is not an HDF5 file') if content == 'not hdf5' else len(data) // 2)


def test_corrupt_data_gives_one_clear_error(tmp_path):
    """A file whose structure is intact but whose (compressed) data is damaged fails while being read."""
    path = str(tmp_path / 'low_dim_v15.hdf5')
    fixtures.write_lift_dataset(path)
    with h5py.File(path, 'a') as file:
        values = file['data/demo_0/actions'][()]
        del file['data/demo_0/actions']
        chunk = file.create_dataset('data/demo_0/actions', data=values, compression='gzip').id.get_chunk_info(0)
    with open(path, 'r+b') as f:
        f.seek(chunk.byte_offset)
        f.write(b'\xff' * chunk.size)
    with pytest.raises(ValueError) as error:
        rm.load_dataset(path)
    assert_one_screen(str(error.value), path)


def test_file_of_another_task_is_refused(dataset_dir):
    _, path, _ = dataset_dir
    with pytest.raises(ValueError) as error:
        rm.make_env_and_datasets('can-ph-low_dim', dataset_path=path)
    # The file, the environment it holds, and the one the name needs.
    assert_one_screen(str(error.value), path, "'Lift'", "'can-ph-low_dim'", "'PickPlaceCan'")


# ----------------------------------------------------------------------------------------------------------------------
# robosuite environments.
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def robosuite():
    """robosuite, imported with the process's MUJOCO_GL restored afterwards: its import sets MUJOCO_GL=egl (unless
    it is osmesa or glx), which later tests of the session would otherwise take for the user's choice."""
    saved = os.environ.get('MUJOCO_GL')
    yield pytest.importorskip('robosuite', reason='robomimic environments need robosuite: '
                              'pip install --no-deps -r requirements-robomimic.txt')
    if saved is None:
        os.environ.pop('MUJOCO_GL', None)
    else:
        os.environ['MUJOCO_GL'] = saved


@pytest.fixture(scope='module')
def lift_env(robosuite, loaded):
    factory, _, _ = loaded
    env = pickle.loads(pickle.dumps(factory))(render=False)
    yield env
    env.close()


def test_controller_configs_for_robosuite15(robosuite):
    kwargs = rm.robosuite_kwargs(fixtures.LIFT_ENV_ARGS, render=False)
    arm = kwargs['controller_configs']['body_parts']['right']
    assert kwargs['controller_configs']['type'] == 'BASIC' and arm['type'] == 'OSC_POSE'
    assert (arm['input_type'], arm['damping_ratio'], arm['damping_ratio_limits']) == ('delta', 1, [0, 10])
    assert not {'control_delta', 'damping', 'damping_limits', 'input_ref_frame'} & set(arm)
    assert 'lite_physics' not in kwargs and kwargs['ignore_done'] and not kwargs['has_offscreen_renderer']

    legacy = rm.robosuite_kwargs(fixtures.LEGACY_LIFT_ENV_ARGS, render=True)
    arm = legacy['controller_configs']['body_parts']['right']
    assert legacy['controller_configs']['type'] == 'BASIC' and arm['gripper'] == {'type': 'GRIP'}
    assert (arm['type'], arm['input_type'], arm['input_ref_frame']) == ('OSC_POSE', 'delta', 'world')
    assert legacy['lite_physics'] is False and legacy['has_offscreen_renderer']
    assert fixtures.LEGACY_LIFT_ENV_ARGS['env_kwargs']['controller_configs']['control_delta']  # input left intact


def test_lift_env_resets_and_steps(lift_env):
    env = lift_env
    assert env.observation_space.shape == (19,) and env.action_space.shape == (7,)
    assert (env.action_space.low == -1).all() and (env.action_space.high == 1).all()
    assert env.render_mode is None and env.render() is None  # no offscreen renderer without render=True
    first, _ = env.reset(seed=3)
    assert first.shape == (19,) and first.dtype == np.float32
    np.testing.assert_array_equal(env.reset(seed=3)[0], first)
    assert not np.array_equal(env.reset(seed=4)[0], first)
    assert not np.array_equal(env.reset()[0], env.reset()[0])  # unseeded resets continue the stream

    env.reset(seed=0)
    observation, reward, terminated, truncated, info = env.step(np.zeros(7))
    assert observation.shape == (19,) and (reward, terminated, truncated, info) == (-1.0, False, False,
                                                                                     {'success': 0.0})
    controller = env._env.robots[0].composite_controller.part_controllers['right']
    assert (controller.input_type, controller.input_ref_frame) == ('delta', 'base')


def test_mujoco_bridge_computes_robosuites_quantities(lift_env):
    """The replacements of robosuite functions that the pinned MuJoCo broke give MuJoCo's own values."""
    import mujoco

    lift_env.reset(seed=0)  # a reset builds a new simulation (robosuite's hard reset): read it afterwards
    sim = lift_env._env.sim
    controller = lift_env._env.robots[0].composite_controller.part_controllers['right']
    controller.update(force=True)
    columns = []
    for unit in np.eye(sim.model.nv):
        column = np.zeros(sim.model.nv)
        mujoco.mj_mulM(sim.model._model, sim.data._data, column, unit)
        columns.append(column)
    mass_matrix = np.stack(columns, axis=1)
    np.testing.assert_allclose(controller.mass_matrix, mass_matrix[controller.qvel_index][:, controller.qvel_index])
    cube = sim.model.joint_name2id('cube_joint0')
    start, velocity_start = int(sim.model.jnt_qposadr[cube]), int(sim.model.jnt_dofadr[cube])
    assert sim.model.get_joint_qpos_addr('cube_joint0') == (start, start + 7)
    assert sim.model.get_joint_qvel_addr('cube_joint0') == (velocity_start, velocity_start + 6)
    assert sim.model.get_joint_qpos_addr('robot0_joint1') == int(sim.model.jnt_qposadr[
        sim.model.joint_name2id('robot0_joint1')])


def test_lift_env_truncates_and_terminates_on_success(lift_env, monkeypatch):
    env = lift_env
    monkeypatch.setattr(env, 'max_episode_steps', 2)
    env.reset(seed=1)
    assert env.step(np.zeros(7))[2:4] == (False, False)
    assert env.step(np.zeros(7))[2:4] == (False, True)
    env.reset(seed=1)
    monkeypatch.setattr(env._env, '_check_success', lambda: True)
    _, reward, terminated, truncated, info = env.step(np.zeros(7))
    assert (reward, terminated, truncated, info) == (0.0, True, False, {'success': 1.0})


def test_factory_builds_the_same_env_in_a_fresh_process(loaded, lift_env):
    factory, _, _ = loaded
    context = multiprocessing.get_context('spawn')
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        remote = pool.submit(fixtures.reset_observation, factory, 7).result(timeout=120)
    np.testing.assert_array_equal(remote, lift_env.reset(seed=7)[0])


def test_render(robosuite, loaded):
    factory, _, _ = loaded
    env = factory(render=True)
    try:
        assert env.render_mode == 'rgb_array' and env.metadata['render_fps'] == 20
        env.reset(seed=0)
        frame = env.render()
        assert frame.shape == (*rm.RENDER_SIZE, 3) and frame.dtype == np.uint8 and frame.std() > 1
    finally:
        env.close()


def test_legacy_controller_config_builds(robosuite):
    env = rm.RobomimicEnv(fixtures.LEGACY_LIFT_ENV_ARGS, np.zeros(19), np.ones(19), max_episode_steps=5)
    try:
        controller = env._env.robots[0].composite_controller.part_controllers['right']
        assert (controller.input_type, controller.input_ref_frame, controller.lite_physics) == ('delta', 'world',
                                                                                               False)
        env.reset(seed=0)
        assert env.step(np.zeros(7))[0].shape == (19,)
    finally:
        env.close()
