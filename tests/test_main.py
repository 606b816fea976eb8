"""End-to-end runs of main.py on a generated dataset: logs equal to recorded values, the paper's two-stage protocol
by default, clear errors (resume and faults: tests/test_phases.py and tests/test_reliability.py)."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO_ROOT, TINY_ENV, assert_logs_match_golden

TINY_AGENT = ['--agent.actor_hidden_dims=(16,16)', '--agent.value_hidden_dims=(16,16)', '--agent.num_qs=2',
              '--agent.batch_size=8', '--agent.flow_steps=3']


def main_command(data_dir, save_dir, *extra, agent='agents/fql.py'):
    return [sys.executable, 'main.py', f'--agent={agent}', f'--env_name={TINY_ENV}', f'--dataset_dir={data_dir}',
            f'--save_dir={save_dir}', '--protocol=none', '--online_steps=0', '--eval_episodes=1', '--steps_per_call=10',
            *TINY_AGENT, *extra]


def run(command, expect_ok=True, timeout=600):
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    if expect_ok:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def read_rows(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def only_run_dir(save_dir):
    (name,) = os.listdir(save_dir)
    return os.path.join(save_dir, name)


def test_offline_then_online_writes_logs_curve_and_checkpoint(tiny_dataset_dir, tmp_path):
    run(main_command(tiny_dataset_dir, tmp_path, '--offline_steps=40', '--online_steps=260', '--start_training=50',
                     '--log_interval=20', '--eval_interval=100', '--save_interval=100'))
    run_dir = only_run_dir(tmp_path)
    assert os.path.basename(run_dir) == f'fql_{TINY_ENV}_seed0'
    assert_logs_match_golden(run_dir, 'fql')
    flags_json = json.load(open(os.path.join(run_dir, 'flags.json')))
    assert flags_json['env_name'] == TINY_ENV and flags_json['agent']['agent_name'] == 'fql'
    assert flags_json['agent']['horizon_length'] == 5  # manipulation default

    train_rows = read_rows(os.path.join(run_dir, 'train.csv'))
    offline = [row for row in train_rows if row.get('phase') == 'offline']
    online = [row for row in train_rows if row.get('phase') == 'online']
    assert [int(row['step']) for row in offline] == [20, 40]
    assert online and all(int(row['step']) > 40 for row in online)
    assert all(np.isfinite(float(row['training/critic/critic_loss'])) for row in offline + online)
    assert any(row.get('online/episode_return') not in (None, '') for row in train_rows)

    eval_rows = read_rows(os.path.join(run_dir, 'eval.csv'))
    assert [int(row['step']) for row in eval_rows] == [40, 100, 200, 300]  # 40: the end of the offline phase
    assert all(0.0 <= float(row['evaluation/success']) <= 1.0 for row in eval_rows)
    assert os.path.exists(os.path.join(run_dir, 'learning_curve.png'))
    assert os.path.isdir(os.path.join(run_dir, 'checkpoints', '300'))


def test_paper_protocol_by_default_runs_both_stages_and_says_so(tiny_dataset_dir, tmp_path):
    """No --protocol: the TRQAM paper's, BC pre-training first (shared by the methods of the task), its
    discount for every method, and a screen and flags.json that say what was set."""
    def command(agent):
        return [sys.executable, 'main.py', f'--agent={agent}', f'--env_name={TINY_ENV}',
                f'--dataset_dir={tiny_dataset_dir}', f'--save_dir={tmp_path}', '--bc_steps=20', '--offline_steps=10',
                '--online_steps=0', '--eval_episodes=1', '--eval_interval=0', '--log_interval=10',
                '--steps_per_call=10', *TINY_AGENT]

    result = run(command('agents/qam.py'))
    bc_dir = os.path.join(tmp_path, f'bc_{TINY_ENV}_seed0_2x16_h5')
    assert 'protocol trqam' in result.stdout and f'starts from BC pre-training (20 steps): {bc_dir}' in result.stdout
    assert 'agent.discount=0.995' in result.stdout  # QAM's own default is 0.99
    assert 'training/actor/bc_flow_loss' in read_rows(os.path.join(bc_dir, 'train.csv'))[0]
    recorded = json.load(open(os.path.join(tmp_path, f'qam_{TINY_ENV}_seed0', 'flags.json')))
    assert recorded['pretrained_actor_path'] == bc_dir and recorded['agent']['discount'] == 0.995
    assert recorded['protocol'] == 'trqam' and recorded['protocol_settings']['agent.discount'] == 0.995

    # Another method of the task starts from the same BC run, which is not trained again.
    bc_log = open(os.path.join(bc_dir, 'train.csv')).read()
    run(command('agents/fql.py'))
    assert open(os.path.join(bc_dir, 'train.csv')).read() == bc_log
    assert json.load(open(os.path.join(tmp_path, f'fql_{TINY_ENV}_seed0', 'flags.json')))['pretrained_actor_path'] \
        == bc_dir

    # A flow of another size cannot start from a given checkpoint, and says why.
    result = run(main_command(tiny_dataset_dir, tmp_path / 'wider', '--offline_steps=10',
                              f'--pretrained_actor_path={bc_dir}', '--agent.actor_hidden_dims=(8,8)',
                              agent='agents/qam.py'), expect_ok=False)
    assert result.returncode != 0 and 'does not fit' in result.stderr


@pytest.mark.parametrize('extra, message', [
    (['--agent.agent_name=nope'], 'Unknown agent_name'),
    (['--env_name=cube-single-play-singletask-task9-v0'], 'task'),
    (['--env_name=cube-double-play-singletask-task1-v0'], 'generate_dataset.py'),
])
def test_bad_inputs_give_clear_errors(tiny_dataset_dir, tmp_path, extra, message):
    result = run(main_command(tiny_dataset_dir, tmp_path, '--offline_steps=10', *extra), expect_ok=False)
    assert result.returncode != 0
    assert message in result.stderr.splitlines()[-1] or message in result.stderr[-3000:]


def test_diverging_loss_stops_with_a_clear_error(tiny_dataset_dir, tmp_path):
    result = run(main_command(tiny_dataset_dir, tmp_path, '--offline_steps=200', '--log_interval=10',
                              '--save_interval=10', '--eval_interval=0', '--agent.lr=1e30'), expect_ok=False)
    assert result.returncode != 0
    assert 'Training diverged at step' in result.stderr
