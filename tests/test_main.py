"""End-to-end runs of main.py on a generated dataset: logs equal to recorded values, the paper's two-stage protocol
by default, clear errors (resume and faults: tests/test_phases.py and tests/test_reliability.py)."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from protocols.methods import agent_names
from runner.checkpoints import Checkpointer
from runner.layout import divergence
from tests.conftest import REPO_ROOT, TINY_ENV, assert_logs_match_golden, assert_one_screen, line_naming, names

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
    result = run(main_command(tiny_dataset_dir, tmp_path, '--offline_steps=40', '--online_steps=260',
                              '--start_training=50', '--log_interval=20', '--eval_interval=100', '--save_interval=100'))
    run_dir = only_run_dir(tmp_path)
    assert os.path.basename(run_dir) == f'fql_{TINY_ENV}_seed0'
    # Output made for a log file (what a cluster job's is): one progress line per log step, no carriage-return
    # updates, no warning from the environment processes; the closing line on a line of its own.
    progress = [line for line in result.stderr.splitlines() if line.startswith(f'{os.path.basename(run_dir)}: step ')]
    assert [line.split()[2] for line in progress] == [f'{step}/300' for step in range(20, 301, 20)]
    assert '\r' not in result.stderr and 'warn' not in result.stderr.lower(), result.stderr
    assert result.stdout.splitlines()[-1].startswith(f'Finished {run_dir}: step 300')
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
    # The screen names the protocol, the BC run it starts from with its steps (on the first line naming that run,
    # before the BC stage's own lines), and what the protocol set.
    assert names(result.stdout, 'trqam')
    assert names(next(line for line in result.stdout.splitlines() if bc_dir in line), 20)
    line_naming(result.stdout, 'agent.discount', 0.995)  # QAM's own default is 0.99
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
    result = run(main_command(tiny_dataset_dir, tmp_path / 'narrower', '--offline_steps=10',
                              f'--pretrained_actor_path={bc_dir}', '--agent.actor_hidden_dims=(8,8)',
                              agent='agents/qam.py'), expect_ok=False)
    assert result.returncode == 1
    assert_one_screen(error_message(result.stderr), 16, 8)  # the widths of the checkpoint and of this flow
    assert not checkpoint_steps(tmp_path / 'narrower')


def error_message(stderr):
    """The message main.py ends with on a fault the user can fix (it prints it after a blank line)."""
    return stderr.rstrip().split('\n\n')[-1]


def checkpoint_steps(save_dir):
    """The steps of every checkpoint written under `save_dir`."""
    return [name for root, _, _ in os.walk(save_dir) if os.path.basename(root) == 'checkpoints'
            for name in os.listdir(root) if name.isdigit()]


@pytest.mark.parametrize('extra, causes, status', [
    (['--agent.agent_name=nope'], ["'nope'", *agent_names()], 1),  # the name given and the known ones
    # A setting that cannot run is refused before anything starts, with absl's status for a bad flag.
    (['--env_name=cube-single-play-singletask-task9-v0'], ['cube-single-play-singletask-task9-v0', 9], 2),
    (['--env_name=cube-double-play-singletask-task1-v0'], ['cube-double-play-v0.npz', 'cube-double-play-v0-val.npz',
                                                           'generate_dataset.py --env_name=cube-double-play-v0'], 1),
])
def test_bad_inputs_give_clear_errors(tiny_dataset_dir, tmp_path, extra, causes, status):
    result = run(main_command(tiny_dataset_dir, tmp_path, '--offline_steps=10', *extra), expect_ok=False)
    assert result.returncode == status and 'Traceback' not in result.stderr
    assert_one_screen(error_message(result.stderr), *causes)
    assert not checkpoint_steps(tmp_path)


def test_diverging_loss_stops_with_a_clear_error(tiny_dataset_dir, tmp_path):
    result = run(main_command(tiny_dataset_dir, tmp_path, '--offline_steps=200', '--log_interval=10',
                              '--save_interval=10', '--eval_interval=0', '--agent.lr=1e30'), expect_ok=False)
    assert result.returncode == 1
    run_dir = only_run_dir(tmp_path)
    record = divergence(run_dir)
    checkpointer = Checkpointer(os.path.join(run_dir, 'checkpoints'))
    intact = checkpointer.latest_step()
    checkpointer.close()
    assert record is not None and (intact is None or intact < record['step'])  # no non-finite state saved
    # The user sees what diverged.json records: where, when and what diverged, what it resumes from, how to go on.
    assert record['message'] in result.stderr
    assert_one_screen(record['message'], run_dir, record['step'], record['non_finite'], '--allow_config_change',
                      *[intact] * (intact is not None))
