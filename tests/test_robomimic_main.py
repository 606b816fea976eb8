"""main.py on Robomimic as a user runs it (a subprocess): the TRQAM protocol offline and online on a few scripted
Lift demonstrations (experiments/generate_robomimic.py) with real robosuite Lift environments (skipped without h5py /
robosuite: requirements-robomimic.txt), and the message of a missing dataset."""

import csv
import json
import os
import subprocess
import sys

import pytest

from experiments import generate_robomimic
from tests.conftest import REPO_ROOT, assert_one_screen
from envs import robomimic

ENV_NAME = 'lift-mh-low_dim'
BC_STEPS, OFFLINE_STEPS, ONLINE_STEPS = 10, 20, 310
NUM_DEMOS = 2
EPISODE_STEPS = robomimic.MAX_EPISODE_STEPS['lift']  # 300: a policy that never succeeds ends its first episode there


def main_command(dataset_dir, save_dir, *extra):
    return [sys.executable, 'main.py', '--agent=agents/trqam.py', f'--env_name={ENV_NAME}',
            f'--dataset_dir={dataset_dir}', f'--save_dir={save_dir}', '--eval_episodes=1',
            '--agent.actor_hidden_dims=(16,16)', '--agent.value_hidden_dims=(16,16)', '--agent.num_qs=2',
            '--agent.batch_size=8', '--agent.flow_steps=3', *extra]


def run(command):
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, 'JAX_PLATFORMS': 'cpu'})


def read_rows(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def test_offline_then_online_on_lift(tmp_path):
    for module in ('h5py', 'robosuite'):
        pytest.importorskip(module, reason=f'Robomimic runs need {module}: '
                            'pip install --no-deps -r requirements-robomimic.txt')
    dataset_dir = tmp_path / 'robomimic'
    # Written where main.py's --dataset_dir looks, as robomimic's download script lays the files out.
    generate_robomimic.generate('lift', NUM_DEMOS, str(dataset_dir), dataset_type='mh', verbose=False)
    save_dir = tmp_path / 'runs'
    # The online phase acts in Lift and fills the replay buffer but starts no updates: compiling the online training
    # program would double the test's time, and it is the same program as on OGBench (tests/test_main.py). Evaluations
    # only at the end of each phase.
    result = run(main_command(dataset_dir, save_dir, f'--bc_steps={BC_STEPS}', f'--offline_steps={OFFLINE_STEPS}',
                              f'--online_steps={ONLINE_STEPS}', f'--start_training={ONLINE_STEPS + 1}',
                              '--log_interval=10', '--steps_per_call=10', '--eval_interval=0'))
    assert result.returncode == 0, result.stderr[-4000:]
    total = OFFLINE_STEPS + ONLINE_STEPS
    assert sorted(os.listdir(save_dir)) == [f'bc_{ENV_NAME}_seed0_2x16_h5', f'trqam_{ENV_NAME}_seed0']
    run_dir = save_dir / f'trqam_{ENV_NAME}_seed0'

    flags = json.load(open(run_dir / 'flags.json'))
    assert flags['env_name'] == ENV_NAME and flags['protocol'] == 'trqam' and flags['bc_steps'] == BC_STEPS
    assert flags['pretrained_actor_path'] == str(save_dir / f'bc_{ENV_NAME}_seed0_2x16_h5')
    # Robomimic's row of the protocol (docs/algorithms.md section 10); what was given explicitly it leaves alone.
    assert flags['protocol_settings'].items() >= {'horizon_length': 5, 'sparse': False, 'agent.discount': 0.995,
                                                  'agent.rho': 0.5, 'agent.actor_layer_norm': False}.items()
    assert not {'bc_steps', 'agent.actor_hidden_dims', 'agent.value_hidden_dims'} & set(flags['protocol_settings'])
    assert flags['agent']['discount'] == 0.995 and flags['agent']['actor_hidden_dims'] == [16, 16]

    evaluations = read_rows(run_dir / 'eval.csv')
    assert [int(row['step']) for row in evaluations] == [OFFLINE_STEPS, total]
    for row in evaluations:
        success, length = float(row['evaluation/success']), float(row['evaluation/episode_length'])
        assert success in (0.0, 1.0) and 1 <= length <= EPISODE_STEPS
        # Reward -1 on every step before success and 0 on the success step.
        assert float(row['evaluation/episode_return']) == -length + success

    rows = read_rows(run_dir / 'train.csv')
    training = [(int(row['step']), row['phase']) for row in rows if row.get('training/actor/adj_loss')]
    assert training == [(10, 'offline'), (20, 'offline')]
    assert all(float(row['training/dual/lambda']) > 0 for row in rows if row.get('training/actor/adj_loss'))
    episodes = [row for row in rows if row.get('online/episode_return')]
    assert episodes, 'no online episode ended'
    episode_start = OFFLINE_STEPS
    for row in episodes:
        step, success = int(row['step']), float(row['online/episode_success'])
        length = step - episode_start
        assert success in (0.0, 1.0) and 1 <= length <= EPISODE_STEPS
        assert float(row['online/episode_return']) == -length + success
        assert success or length == EPISODE_STEPS  # without success only the horizon ends an episode
        episode_start = step

    assert {OFFLINE_STEPS, total} <= {int(name) for name in os.listdir(run_dir / 'checkpoints') if name.isdigit()}
    assert os.path.exists(run_dir / 'learning_curve.png')


def test_missing_dataset_says_how_to_download(tmp_path):
    result = run(main_command(tmp_path / 'robomimic', tmp_path / 'runs', '--offline_steps=10'))
    assert result.returncode != 0
    # Where the file belongs, and the commands that put it there.
    expected = os.path.join(str(tmp_path / 'robomimic'), 'lift', 'mh', 'low_dim_v15.hdf5')
    assert_one_screen(result.stderr, expected,
                      f'curl -L -o {expected} https://huggingface.co/datasets/robomimic/robomimic_datasets/resolve/'
                      'main/v1.5/lift/mh/low_dim_v15.hdf5', '--tasks lift --dataset_types mh --hdf5_types low_dim')
    assert not os.path.exists(tmp_path / 'robomimic')  # nothing downloaded or created in its place
