"""Faults and bad inputs a run must survive without losing anything or misrecording itself."""

import dataclasses
import errno
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import main
from agents.fql import get_config as fql_config
from tests.conftest import REPO_ROOT, TINY_ENV, assert_one_screen, line_naming
from runner.checkpoints import Checkpointer
from core.errors import EXIT_PREEMPTED
from runner.locks import RunDirectoryInUse, RunLock
from runner.layout import divergence
from runner.seed_group import DiskFull, SeedGroup
from runner.settings import ConfigMismatch

TINY = dict(actor_hidden_dims=(16, 16), value_hidden_dims=(16, 16), num_qs=2, batch_size=8, flow_steps=3)


def tiny_fql(**changes):
    config = fql_config()
    config.update({**TINY, **changes})
    return config


def flag_values(data_dir, save_dir, **changes):
    return {**main.default_flag_values(), 'env_name': TINY_ENV, 'dataset_dir': data_dir, 'save_dir': str(save_dir),
            'run_name': 'run', 'protocol': 'none', 'eval_episodes': 1, 'steps_per_call': 10, 'offline_steps': 30,
            'online_steps': 0, 'log_interval': 10, 'eval_interval': 0, 'save_interval': 10, **changes}


def rows(path):
    import csv

    with open(path, newline='') as f:
        return [{k: v for k, v in row.items() if k != 'time/steps_per_second'} for row in csv.DictReader(f)]


def checkpoint_arrays(run_dir):
    checkpointer = Checkpointer(os.path.join(run_dir, 'checkpoints'))
    arrays, metadata = checkpointer.restore()
    checkpointer.close()
    return arrays, metadata


def test_restart_before_the_first_checkpoint_logs_each_step_once(tiny_dataset_dir, tmp_path):
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    (run_dir / 'train.csv').write_text('step,training/critic/critic_loss,phase\n10,1.0,offline\n20,2.0,offline\n')
    main.train(flag_values(tiny_dataset_dir, tmp_path), tiny_fql())
    assert [int(row['step']) for row in rows(run_dir / 'train.csv')] == [10, 20, 30]


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tiny_dataset_dir, tmp_path, capfd):
    values = flag_values(tiny_dataset_dir, tmp_path)
    (run_dir,) = main.train(values, tiny_fql())
    logged, (arrays, _) = rows(os.path.join(run_dir, 'train.csv')), checkpoint_arrays(run_dir)
    damaged = [os.path.join(root, name) for root, _, names in os.walk(os.path.join(run_dir, 'checkpoints', '30'))
               for name in names if os.path.getsize(os.path.join(root, name)) > 0]
    for path in damaged:  # truncate every file of the latest checkpoint
        with open(path, 'r+b') as f:
            f.truncate(os.path.getsize(path) // 2)
    capfd.readouterr()
    main.train(values, tiny_fql())
    err = capfd.readouterr().err
    aside = os.path.join(run_dir, 'checkpoints-corrupt', '30')
    assert os.path.isdir(aside)  # kept for inspection, out of the run's way
    line_naming(err, 30, aside)  # one line says which checkpoint and where it went
    assert rows(os.path.join(run_dir, 'train.csv')) == logged  # redone from step 20, to the same numbers
    again, _ = checkpoint_arrays(run_dir)
    for key in arrays:
        np.testing.assert_array_equal(arrays[key], again[key], err_msg=key)


def test_second_process_on_a_run_directory_is_refused(tmp_path):
    with RunLock(str(tmp_path)):
        with pytest.raises(RunDirectoryInUse) as refused:
            RunLock(str(tmp_path)).__enter__()
        assert_one_screen(str(refused.value), str(tmp_path), os.getpid())  # the directory and who holds it
    with RunLock(str(tmp_path)):  # released, and a lock file left behind is simply taken over
        pass


def test_resume_with_other_settings_is_refused_or_recorded(tiny_dataset_dir, tmp_path):
    (run_dir,) = main.train(flag_values(tiny_dataset_dir, tmp_path), tiny_fql())
    flags_path = os.path.join(run_dir, 'flags.json')
    before = open(flags_path).read()
    with pytest.raises(ConfigMismatch) as refused:
        main.train(flag_values(tiny_dataset_dir, tmp_path, offline_steps=40), tiny_fql(lr=1e-3))
    # Each setting that differs with its recorded and its new value, and the flag that accepts the change.
    message = assert_one_screen(str(refused.value), run_dir, '--allow_config_change')
    line_naming(message, 'agent.lr', 0.0003, 0.001)
    line_naming(message, 'offline_steps', 30, 40)
    assert open(flags_path).read() == before  # flags.json still describes what ran

    main.train(flag_values(tiny_dataset_dir, tmp_path, offline_steps=40, allow_config_change=True), tiny_fql())
    recorded = json.load(open(flags_path))
    assert recorded['offline_steps'] == 40
    assert recorded['config_changes'] == [{'step': 30, 'changes': {'offline_steps': [30, 40]}}]


def test_non_finite_state_is_never_saved(tiny_dataset_dir, tmp_path):
    config = main.resolve_config(flag_values(tiny_dataset_dir, tmp_path), tiny_fql(),
                                 defaults=main.default_flag_values())
    data = main.load_data(config)
    run = SeedGroup(config, [0], None, data.make_env, data.action_dim)
    state = main.restore_or_create_state(config, data, run)
    run.save(state)
    poisoned = jax.tree_util.tree_map(lambda leaf: leaf * jnp.nan if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf,
                                      state.agents)
    with pytest.raises(main.TrainingDiverged) as diverged:
        run.save(dataclasses.replace(state, agents=poisoned, step=10))
    # Where the run is, the step it diverged at, the checkpoint it resumes from, and how to go on.
    assert_one_screen(str(diverged.value), config.run_dirs[0], 10, 0, '--allow_config_change')
    assert run.checkpointers[0].latest_step() == 0
    assert divergence(config.run_dirs[0])['step'] == 10
    run.close()


def test_full_disk_gets_one_clear_message(tiny_dataset_dir, tmp_path, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device', str(tmp_path / 'run' / 'checkpoints'))

    monkeypatch.setattr(Checkpointer, 'save', no_space)
    with pytest.raises(DiskFull) as full:
        main.train(flag_values(tiny_dataset_dir, tmp_path), tiny_fql())
    # The directory that could not be written, the space free and needed, and where the logs are.
    run_dir = str(tmp_path / 'run')
    message = assert_one_screen(str(full.value), os.path.join(run_dir, 'checkpoints'))
    assert len(re.findall(r'\d B\b|\d [KMGT]B\b', message)) == 2, message
    assert re.search(re.escape(run_dir) + r'(?![\w/])', message), message  # the run directory itself: the logs
    assert not [name for name in os.listdir(os.path.join(run_dir, 'checkpoints')) if name.isdigit()]


def test_dataset_shorter_than_the_chunk_is_refused(tmp_path):
    from experiments.generate_dataset import generate

    generate('cube-single-play-v0', num_episodes=1, dataset_dir=str(tmp_path), seed=0, num_val_episodes=1,
             max_episode_steps=4, progress=False, verbose=False)
    with pytest.raises(main.RunError) as refused:
        main.train(flag_values(str(tmp_path), tmp_path / 'runs'), tiny_fql())
    # The dataset's size, the chunk length, and the flag that sets it.
    assert_one_screen(str(refused.value), 3, 5, '--horizon_length')


def _main(*args, data_dir, save_dir):
    return [sys.executable, 'main.py', '--agent=agents/fql.py', f'--env_name={TINY_ENV}', f'--dataset_dir={data_dir}',
            f'--save_dir={save_dir}', '--run_name=run', '--protocol=none', '--online_steps=0', '--eval_episodes=1',
            '--steps_per_call=10',
            *[f'--agent.{key}={value}'.replace(' ', '') for key, value in TINY.items()], *args]


def test_unknown_agent_key_lists_the_valid_ones(tiny_dataset_dir, tmp_path):
    result = subprocess.run(_main('--agent.nokey=1', data_dir=tiny_dataset_dir, save_dir=tmp_path), cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    # The key given, the agent file, and the keys it has.
    assert_one_screen(result.stderr, 'nokey', 'agents/fql.py', *sorted(fql_config().keys()))
    assert not os.listdir(tmp_path)  # no run started


def _signal_when(process, ready, signal_number, timeout=300):
    deadline = time.time() + timeout
    while process.poll() is None and time.time() < deadline:
        if ready():
            process.send_signal(signal_number)
            break
        time.sleep(0.01)
    return process.wait(timeout=timeout)


def _logged_steps(run_dir):
    path = os.path.join(run_dir, 'train.csv')
    try:
        return [int(float(line.split(',')[0])) for line in open(path).read().splitlines()[1:] if line[:1].isdigit()]
    except (OSError, ValueError):
        return []


def test_sigterm_offline_and_online_then_resume_equals_the_uninterrupted_run(tiny_dataset_dir, tmp_path):
    args = ['--offline_steps=800', '--online_steps=500', '--start_training=20', '--log_interval=10',
            '--eval_interval=1000', '--save_interval=100000']
    env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
    straight = _main(*args, data_dir=tiny_dataset_dir, save_dir=tmp_path / 'straight')
    subprocess.run(straight, cwd=REPO_ROOT, env=env, check=True, capture_output=True, timeout=600)

    command = _main(*args, data_dir=tiny_dataset_dir, save_dir=tmp_path / 'stopped')
    run_dir, stops = str(tmp_path / 'stopped' / 'run'), []
    for phase_started in (lambda: any(s >= 20 for s in _logged_steps(run_dir)),  # offline
                          lambda: any(s >= 860 for s in _logged_steps(run_dir))):  # online, mid-episode
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True)
        assert _signal_when(process, phase_started, signal.SIGTERM) == EXIT_PREEMPTED, process.stderr.read()[-3000:]
        assert 'SIGTERM' in process.stderr.read()  # the user sees what stopped it
        _, stopped = checkpoint_arrays(run_dir)
        stops.append(stopped['step'])
    assert stops[0] < 800 and stops[0] % 10 == 0  # offline: at the end of the jitted call in flight
    assert 860 <= stopped['step'] < 1300  # online: at once, in general in the middle of an episode
    subprocess.run(command, cwd=REPO_ROOT, env=env, check=True, capture_output=True, timeout=600)

    for name in ('train.csv', 'eval.csv'):
        assert rows(os.path.join(tmp_path / 'straight' / 'run', name)) == rows(os.path.join(run_dir, name)), name
    expected, _ = checkpoint_arrays(str(tmp_path / 'straight' / 'run'))
    resumed, _ = checkpoint_arrays(run_dir)
    assert expected.keys() == resumed.keys()
    for key in expected:
        np.testing.assert_array_equal(expected[key], resumed[key], err_msg=key)
