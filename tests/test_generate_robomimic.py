"""experiments/generate_robomimic.py: scripted Lift demonstrations on robosuite's physics, written in robomimic's
layout and read by envs/robomimic.py as a published file is. Skipped without h5py / robosuite
(requirements-robomimic.txt)."""

import numpy as np
import pytest

from envs import robomimic as rm
from experiments import generate_robomimic
from tests import robomimic_fixtures as fixtures

pytest.importorskip('h5py', reason='robomimic datasets need h5py: pip install --no-deps -r requirements-robomimic.txt')
pytest.importorskip('robosuite', reason='robomimic demonstrations need robosuite: '
                    'pip install --no-deps -r requirements-robomimic.txt')

ENV_NAME = 'lift-mh-low_dim'
NUM_DEMOS = 3  # one per quality of the mh operators


@pytest.fixture(scope='module')
def generated(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp('generated'))
    return directory, generate_robomimic.generate('lift', NUM_DEMOS, directory, seed=0, verbose=False)


def test_generated_file_reads_as_a_published_one(generated):
    directory, result = generated
    assert result['path'] == rm.dataset_path(ENV_NAME, directory)  # where main.py's --dataset_dir looks
    _, transitions, metadata = rm.make_env_and_datasets(ENV_NAME, dataset_dir=directory)
    assert metadata.env_args == fixtures.LIFT_ENV_ARGS  # the env_args robomimic's v1.5 Lift files carry
    assert metadata.num_demos == NUM_DEMOS and len(transitions['actions']) == result['num_transitions']
    # Each demo ends at its first success: one success reward (0 after the shift), done and terminal, at its end.
    ends = np.flatnonzero(transitions['terminals'])
    assert len(ends) == NUM_DEMOS and ends[-1] == result['num_transitions'] - 1
    np.testing.assert_array_equal(np.flatnonzero(transitions['rewards'] == 0.0), ends)
    np.testing.assert_array_equal(np.flatnonzero(transitions['masks'] == 0.0), ends)
    # Along a demo, the next observation is the following step's observation.
    inside = np.setdiff1d(np.arange(len(transitions['actions']) - 1), ends)
    np.testing.assert_array_equal(transitions['next_observations'][inside], transitions['observations'][inside + 1])
    assert np.abs(transitions['actions']).max() <= 1.0
    assert np.abs(transitions['observations']).max() <= 1.0 + 1e-6  # min-max normalised, float32 round-off


def test_demonstrations_lift_the_cube(generated):
    """The recorded object state itself says the cube rose from the table above Lift's success height."""
    import h5py

    _, result = generated
    with h5py.File(result['path'], 'r') as file:
        heights = [(file[f'data/demo_{index}/obs/object'][0, 2], file[f'data/demo_{index}/next_obs/object'][-1, 2])
                   for index in range(NUM_DEMOS)]
        masks = {name: sorted(value.decode() for value in file[f'mask/{name}'][()]) for name in file['mask']}
    env = rm.make_robosuite_env(fixtures.LIFT_ENV_ARGS)
    success_height = env.model.mujoco_arena.table_offset[2] + 0.04  # robosuite Lift's _check_success
    env.close()
    for start, end in heights:
        assert start < success_height < end
    assert result['success_rate'] > 0 and result['attempts'] >= NUM_DEMOS
    assert set(result['mean_length']) == set(generate_robomimic.QUALITIES)
    assert masks['better'] == ['demo_0'] and masks['okay'] == ['demo_1'] and masks['worse'] == ['demo_2']
    assert masks['worse_okay'] == ['demo_1', 'demo_2'] and sorted(masks['train'] + masks['valid']) == \
        [f'demo_{index}' for index in range(NUM_DEMOS)]


@pytest.mark.parametrize('settings, message', [({'task': 'can'}, "Cannot generate 'can'"),
                                               ({'dataset_type': 'xh'}, 'dataset_type must be one of'),
                                               ({'num_demos': 0}, 'num_demos must be >= 1')])
def test_bad_settings_are_refused(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        generate_robomimic.generate(**{'dataset_dir': str(tmp_path), **settings})


def test_same_seed_same_file(tmp_path):
    """The seed fixes the objects' placements, the operator's noise and the train/valid split."""
    import h5py

    paths = [generate_robomimic.generate('lift', 1, str(tmp_path / name), dataset_type='ph', seed=5,
                                         verbose=False)['path'] for name in ('a', 'b')]
    contents = []
    for path in paths:
        with h5py.File(path, 'r') as file:
            arrays = {}
            file.visititems(lambda name, item: arrays.update({name: item[()]}) if isinstance(item, h5py.Dataset)
                            else None)
            contents.append(arrays)
    assert contents[0].keys() == contents[1].keys() and 'data/demo_0/actions' in contents[0]
    for name, values in contents[0].items():
        np.testing.assert_array_equal(values, contents[1][name], err_msg=name)


def test_a_demonstrator_that_keeps_failing_is_stopped(tmp_path):
    with pytest.raises(RuntimeError, match=f'failed {generate_robomimic.GIVE_UP_FAILURES} of '
                                           f'{generate_robomimic.GIVE_UP_FAILURES} attempts'):
        generate_robomimic.generate('lift', 1, str(tmp_path), max_steps=2, verbose=False)
    assert not list(tmp_path.rglob('*.hdf5'))
