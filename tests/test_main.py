"""End-to-end runs of main.py on a generated dataset: logs, two-stage protocol, resume, clear errors."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import REPO_ROOT, TINY_ENV

TINY_AGENT = ['--agent.actor_hidden_dims=(16,16)', '--agent.value_hidden_dims=(16,16)', '--agent.num_qs=2',
              '--agent.batch_size=8', '--agent.flow_steps=3']


def main_command(data_dir, save_dir, *extra, agent='agents/fql.py'):
    return [sys.executable, 'main.py', f'--agent={agent}', f'--env_name={TINY_ENV}', f'--dataset_dir={data_dir}',
            f'--save_dir={save_dir}', '--eval_episodes=1', '--steps_per_call=10', *TINY_AGENT, *extra]


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
    assert [int(row['step']) for row in eval_rows] == [100, 200, 300]
    assert all(0.0 <= float(row['evaluation/success']) <= 1.0 for row in eval_rows)
    assert os.path.exists(os.path.join(run_dir, 'learning_curve.png'))
    assert os.path.isdir(os.path.join(run_dir, 'checkpoints', '300'))


def _final_arrays(run_dir):
    from utils.checkpoints import Checkpointer

    checkpointer = Checkpointer(os.path.join(run_dir, 'checkpoints'))
    arrays, metadata = checkpointer.restore()
    checkpointer.close()
    return arrays, metadata


def _comparable(rows):
    return [{key: value for key, value in row.items() if key != 'time/steps_per_second'} for row in rows]


def test_killed_run_resumes_to_the_same_result(tiny_dataset_dir, tmp_path):
    args = ['--offline_steps=60', '--online_steps=600', '--start_training=20', '--log_interval=20',
            '--eval_interval=330', '--save_interval=30']
    straight_dir, resumed_dir = tmp_path / 'straight', tmp_path / 'resumed'
    run(main_command(tiny_dataset_dir, straight_dir, *args, agent='agents/trqam.py'))

    # Kill the second run (SIGKILL, nothing flushed) right after its first online checkpoint.
    command = main_command(tiny_dataset_dir, resumed_dir, *args, agent='agents/trqam.py')
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    checkpoint_root = None
    deadline = time.time() + 600
    while process.poll() is None and time.time() < deadline:
        if checkpoint_root is None and resumed_dir.exists() and os.listdir(resumed_dir):
            checkpoint_root = os.path.join(only_run_dir(resumed_dir), 'checkpoints')
        steps = [int(name) for name in os.listdir(checkpoint_root) if name.isdigit()] if checkpoint_root and os.path.isdir(checkpoint_root) else []
        if any(step > 60 for step in steps):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait()
    killed_at = max(int(name) for name in os.listdir(checkpoint_root) if name.isdigit())
    assert killed_at < 660, 'the run finished before it could be killed; the test did not exercise a resume'

    result = run(command)
    assert 'Resumed' in result.stdout + result.stderr

    straight_run, resumed_run = only_run_dir(straight_dir), only_run_dir(resumed_dir)
    for name in ('eval.csv', 'train.csv'):
        assert _comparable(read_rows(os.path.join(straight_run, name))) == _comparable(
            read_rows(os.path.join(resumed_run, name))), name
    straight_arrays, straight_meta = _final_arrays(straight_run)
    resumed_arrays, resumed_meta = _final_arrays(resumed_run)
    assert straight_meta == resumed_meta
    assert straight_arrays.keys() == resumed_arrays.keys()
    assert any(key.startswith('replay/') for key in straight_arrays)
    assert any(key.endswith('lam') for key in straight_arrays)
    for key in straight_arrays:
        np.testing.assert_array_equal(straight_arrays[key], resumed_arrays[key], err_msg=key)


def test_bc_pretraining_then_finetuning_from_the_checkpoint(tiny_dataset_dir, tmp_path):
    run(main_command(tiny_dataset_dir, tmp_path, '--bc_only', '--offline_steps=20', '--log_interval=10',
                     '--eval_interval=0', agent='agents/qam.py'))
    bc_dir = only_run_dir(tmp_path)
    assert bc_dir.endswith('_bc')
    assert 'training/actor/bc_flow_loss' in read_rows(os.path.join(bc_dir, 'train.csv'))[0]

    finetune_dir = tmp_path / 'finetune'
    run(main_command(tiny_dataset_dir, finetune_dir, '--offline_steps=10', '--log_interval=10', '--eval_interval=0',
                     f'--pretrained_actor_path={bc_dir}', agent='agents/qam.py'))

    # A flow of another size cannot start from that checkpoint, and says why.
    result = run(main_command(tiny_dataset_dir, tmp_path / 'wider', '--offline_steps=10',
                              f'--pretrained_actor_path={bc_dir}', '--agent.actor_hidden_dims=(8,8)',
                              agent='agents/qam.py'), expect_ok=False)
    assert result.returncode != 0 and 'does not fit' in result.stderr


def test_checkpoint_that_does_not_fit_the_config(tiny_dataset_dir, tmp_path):
    run(main_command(tiny_dataset_dir, tmp_path, '--offline_steps=10', '--eval_interval=0', '--run_name=run'))
    result = run(main_command(tiny_dataset_dir, tmp_path, '--offline_steps=20', '--eval_interval=0', '--run_name=run',
                              '--agent.num_qs=3'), expect_ok=False)
    assert result.returncode != 0
    assert 'does not fit the current agent config' in result.stderr and 'critic' in result.stderr


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
