"""Faults and bad inputs as a user meets them (issue 22): the exit status, nothing lost, and one screen naming the
cause. Subprocess runs of main.py where the parsing or the output is the point; `main.train` in-process elsewhere."""

import json
import os
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest

import main
from agents.fql import get_config as fql_config
from core.errors import EXIT_PREEMPTED, Preempted
from runner import third_party
from runner.checkpoints import Checkpointer
from runner.validation import InvalidSettings
from tests.conftest import REPO_ROOT, TINY_ENV

TINY = dict(actor_hidden_dims=(16, 16), value_hidden_dims=(16, 16), num_qs=2, batch_size=8, flow_steps=3)
SCREEN = 40  # lines


def command(data_dir, save_dir, *extra, agent='agents/fql.py'):
    agent_flags = [f'--agent={agent}'] if agent else []
    return [sys.executable, 'main.py', *agent_flags, f'--env_name={TINY_ENV}', f'--dataset_dir={data_dir}',
            f'--save_dir={save_dir}', '--run_name=run', '--protocol=none', '--online_steps=0', '--eval_episodes=1',
            '--steps_per_call=10', *[f'--agent.{key}={value}'.replace(' ', '') for key, value in TINY.items()], *extra]


def run(args, timeout=300):
    return subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, 'JAX_PLATFORMS': 'cpu'})


def assert_one_screen(stderr, *causes):
    assert 'Traceback' not in stderr and '\\n' not in stderr and "\\'" not in stderr, stderr[-3000:]
    assert len(stderr.strip().splitlines()) <= SCREEN, stderr[-3000:]
    for cause in causes:
        assert cause in stderr, stderr[-3000:]


def flag_values(data_dir, save_dir, **changes):
    return {**main.default_flag_values(), 'env_name': TINY_ENV, 'dataset_dir': data_dir, 'save_dir': str(save_dir),
            'run_name': 'run', 'protocol': 'none', 'eval_episodes': 1, 'steps_per_call': 10, 'offline_steps': 30,
            'online_steps': 0, 'log_interval': 10, 'eval_interval': 0, 'save_interval': 10, **changes}


def tiny_fql(**changes):
    config = fql_config()
    config.update({**TINY, **changes})
    return config


def logged_steps(run_dir):
    lines = open(os.path.join(run_dir, 'train.csv')).read().splitlines()[1:]
    return [int(float(line.split(',')[0])) for line in lines]


# Bad inputs: refused before anything is created. -------------------------------------------------------------------


def test_invalid_numbers_and_a_mistyped_environment_are_refused_before_anything_is_created(tiny_dataset_dir, tmp_path):
    result = run(command(tiny_dataset_dir, tmp_path / 'runs', '--offline_steps=-5', '--eval_episodes=0',
                         '--agent.discount=1.5', '--env_name=cube-singel-play-singletask-task1-v0'))
    assert result.returncode == 2
    assert_one_screen(result.stderr, '--offline_steps=-5: must be an integer >= 0',
                      '--eval_episodes=0: must be an integer >= 1', '--agent.discount=1.5: must be a number in (0, 1]',
                      'Did you mean "cube-single-play-singletask-task1-v0"?')
    assert 'run director' not in result.stdout  # refused before the settings are shown
    assert not os.path.exists(tmp_path / 'runs')


@pytest.mark.parametrize('agent, key, cause', [
    (None, 'learning_rate', "agents/trqam.py has no config key 'learning_rate'"),  # the default agent
    ('agents/fql.py', 'discont', "agents/fql.py has no config key 'discont' (from --agent.discont=...). Did you "
                                 'mean "discount"?'),
])
def test_an_unknown_agent_key_is_one_screen(tiny_dataset_dir, tmp_path, agent, key, cause):
    result = run(command(tiny_dataset_dir, tmp_path, f'--agent.{key}=0.9', agent=agent))
    assert result.returncode == 2
    assert_one_screen(result.stderr, cause, 'Its keys: ')
    assert not os.path.exists(tmp_path / 'run')


def test_help_lists_the_agent_keys_with_defaults_and_comments():
    result = run([sys.executable, 'main.py', '--agent=agents/fql.py', '--help'])
    assert '--offline_steps' in result.stdout and 'Agent config keys of agents/fql.py' in result.stdout
    assert "--agent.alpha=10.0  # Distillation weight" in result.stdout
    assert '--agent.discount=0.99  # [a number in (0, 1]]' in result.stdout


def test_a_start_that_fails_leaves_no_run_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        main.train(flag_values(str(tmp_path / 'no_data'), tmp_path / 'runs'), tiny_fql())
    assert not os.path.exists(tmp_path / 'runs')


def test_invalid_agent_settings_from_python_name_each_key(tmp_path):
    with pytest.raises(InvalidSettings) as invalid:
        main.train(flag_values(str(tmp_path), tmp_path / 'runs', seeds=['0', '0']), tiny_fql(tau=0, num_qs=0))
    lines = str(invalid.value).splitlines()
    assert '--agent.tau=0.0: must be a number in (0, 1].' in lines and '--seeds=0,0 repeats a seed.' in lines
    assert '--agent.num_qs=0: must be an integer >= 1.' in lines
    assert not os.path.exists(tmp_path / 'runs')


# Signals: status 75 at any moment, and what to run next. -----------------------------------------------------------


@pytest.mark.parametrize('signal_number', [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_while_main_imports_ends_with_75_and_leaves_nothing(tiny_dataset_dir, tmp_path, signal_number):
    process = subprocess.Popen(command(tiny_dataset_dir, tmp_path / 'runs'), cwd=REPO_ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    time.sleep(1)  # main.py imports for seconds, with its stop handlers installed first
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == EXIT_PREEMPTED
    assert_one_screen(stderr, f'Stopped by {signal.Signals(signal_number).name}', 'Run the same command again')
    assert not os.path.exists(tmp_path / 'runs')


def test_a_signal_during_compilation_ends_the_run_at_once(tiny_dataset_dir, tmp_path):
    process = subprocess.Popen(command(tiny_dataset_dir, tmp_path, '--offline_steps=100'), cwd=REPO_ROOT, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    flags_json = tmp_path / 'run' / 'flags.json'  # written just before the first (compiling) call
    deadline = time.time() + 120
    while not flags_json.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    signalled = time.time()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == EXIT_PREEMPTED and time.time() - signalled < 5
    assert_one_screen(stderr, 'Stopped by SIGTERM before the first step', 'main.py')
    assert logged_steps(tmp_path / 'run') == []


def test_a_stop_says_what_to_run_next_and_the_resume_where_it_resumes(tiny_dataset_dir, tmp_path, capfd):
    args = command(tiny_dataset_dir, tmp_path, '--offline_steps=5000', '--log_interval=10', '--save_interval=100000')
    process = subprocess.Popen(args, cwd=REPO_ROOT, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    run_dir = tmp_path / 'run'
    while process.poll() is None and not (os.path.exists(run_dir / 'train.csv') and logged_steps(run_dir)):
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == EXIT_PREEMPTED
    assert_one_screen(stderr, 'Stopped by SIGTERM at step', 'Run the same command again to resume:',
                      '--offline_steps=5000')
    assert '--debug' not in stderr
    step = max(int(name) for name in os.listdir(run_dir / 'checkpoints') if name.isdigit())
    assert logged_steps(run_dir) == list(range(10, step + 1, 10))  # every step up to the stop, logged once


# Records: the history of changes across resumes; the only checkpoint corrupt. ------------------------------------


def test_flags_json_keeps_the_history_of_changes_across_three_resumes(tiny_dataset_dir, tmp_path, capfd):
    stop = types.SimpleNamespace(received='SIGTERM', at_once=False)  # stops after each first jitted call
    values = flag_values(tiny_dataset_dir, tmp_path, offline_steps=50)  # no evaluation before the end
    with pytest.raises(Preempted, match='at step 10'):
        main.train(values, tiny_fql(), stop)
    changed = {**values, 'allow_config_change': True}
    with pytest.raises(Preempted, match='at step 20'):
        main.train(changed, tiny_fql(lr=1e-3), stop)  # the change, recorded
    with pytest.raises(Preempted, match='at step 30'):
        main.train(values, tiny_fql(lr=1e-3), stop)  # a requeue of the changed job
    capfd.readouterr()
    with pytest.raises(Preempted, match='at step 40'):
        main.train(values, tiny_fql(lr=1e-3), stop)
    run_dir = tmp_path / 'run'
    assert f'Resuming from step 30 (checkpoint {run_dir / "checkpoints" / "30"})' in capfd.readouterr().out
    recorded = json.load(open(os.path.join(run_dir, 'flags.json')))
    assert recorded['agent']['lr'] == 1e-3
    assert recorded['config_changes'] == [{'step': 10, 'changes': {'agent.lr': [3e-4, 1e-3]}}]
    assert logged_steps(run_dir) == [10, 20, 30, 40]


def test_a_corrupt_only_checkpoint_says_the_run_starts_afresh(tiny_dataset_dir, tmp_path, capfd):
    values = flag_values(tiny_dataset_dir, tmp_path, offline_steps=10)
    (run_dir,) = main.train(values, tiny_fql())
    logged, arrays = open(os.path.join(run_dir, 'train.csv')).read(), read_checkpoint(run_dir)
    files = [os.path.join(root, name) for root, _, names in os.walk(os.path.join(run_dir, 'checkpoints', '10'))
             for name in names]
    os.truncate(max(files, key=os.path.getsize), 1000)
    capfd.readouterr()
    main.train(values, tiny_fql())
    captured = capfd.readouterr()
    assert 'Checkpoint 10' in captured.err and 'the run starts afresh from step 0' in captured.err
    assert 'previous one' not in captured.err and 'Resuming' not in captured.out
    assert_one_screen(captured.err)
    assert strip_times(open(os.path.join(run_dir, 'train.csv')).read()) == strip_times(logged)
    for key, value in read_checkpoint(run_dir).items():
        np.testing.assert_array_equal(arrays[key], value, err_msg=key)


def read_checkpoint(run_dir):
    checkpointer = Checkpointer(os.path.join(run_dir, 'checkpoints'))
    arrays, _ = checkpointer.restore()
    checkpointer.close()
    return arrays


def strip_times(csv_text):
    lines = [line.split(',') for line in csv_text.splitlines()]
    drop = lines[0].index('time/steps_per_second')
    return [[cell for i, cell in enumerate(line) if i != drop] for line in lines]


# Third-party noise about a handled fault. --------------------------------------------------------------------------


def test_orbax_errors_and_closed_event_loops_are_left_out_unless_debugging(monkeypatch):
    from absl import logging as absl_logging

    handler, reported = absl_logging.get_absl_handler(), []
    monkeypatch.setattr(sys, 'unraisablehook', reported.append)
    monkeypatch.setattr(handler, 'filters', list(handler.filters))
    third_party.report_only_unhandled(debug=False)
    orbax = absl_logging.ABSLLogger('orbax').makeRecord(
        'orbax', 40, os.path.join('site-packages', 'orbax', 'checkpoint', 'future.py'), 387, 'write failed', (), None)
    ours = absl_logging.ABSLLogger('runner').makeRecord('runner', 40, 'main.py', 1, 'ours', (), None)
    assert not handler.filter(orbax) and handler.filter(ours)
    closed_loop, bug = (types.SimpleNamespace(exc_value=RuntimeError(message), object=None)
                        for message in ('Event loop is closed', 'a bug of ours'))
    sys.unraisablehook(closed_loop)
    sys.unraisablehook(bug)
    assert reported == [bug]
