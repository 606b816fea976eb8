"""The online phase with the environments stepping while the previous update runs (--overlap_updates, the
default) equals the strictly serial loop to the last digit on one machine: logs, every checkpoint and the replay
buffers in them, for one seed and a seed group, chunks of 5 and of 1, balanced sampling with several updates per
step, and a run stopped by SIGTERM in the middle of a chunk and resumed."""

import os

import numpy as np
import pytest

import main
from core.errors import Preempted
from runner.acting import OnlineCollector
from runner.checkpoints import Checkpointer
from runner.layout import CHECKPOINT_DIR
from runner.signals import StopSignals
from tests.conftest import TINY_ENV, assert_same_logs
from tests.test_multi_seed import tiny_fql

OFFLINE_STEPS = 20


def flag_values(data_dir, save_dir, **changes):
    # Checkpoints every 25 steps (kept: the last two), logs every 5, an evaluation at each phase's end.
    return {**main.default_flag_values(), 'env_name': TINY_ENV, 'dataset_dir': data_dir, 'save_dir': str(save_dir),
            'run_name': 'run_{seed}', 'protocol': 'none', 'offline_steps': OFFLINE_STEPS, 'online_steps': 70,
            'start_training': 10, 'log_interval': 5, 'eval_interval': 0, 'eval_episodes': 1, 'save_interval': 25,
            'steps_per_call': 10, **changes}


def checkpoints(run_dir):
    """Every checkpoint a run kept: {step: arrays}."""
    checkpointer = Checkpointer(os.path.join(run_dir, CHECKPOINT_DIR))
    steps = sorted(int(name) for name in os.listdir(checkpointer.directory) if name.isdigit())
    saved = {step: checkpointer.restore(step)[0] for step in steps}
    checkpointer.close()
    return saved


def assert_same_runs(expected_dirs, actual_dirs):
    assert len(expected_dirs) == len(actual_dirs)
    for expected, actual in zip(expected_dirs, actual_dirs):
        assert_same_logs(expected, actual)
        want, got = checkpoints(expected), checkpoints(actual)
        assert list(got) == list(want) and len(want) == 2
        for step in want:
            assert got[step].keys() == want[step].keys() and any(key.startswith('replay/') for key in got[step])
            for key in want[step]:
                np.testing.assert_array_equal(got[step][key], want[step][key], err_msg=f'step {step} {key}')


def serial_run(data_dir, save_dir, **changes):
    return main.train(flag_values(data_dir, save_dir, overlap_updates=False, **changes), tiny_fql())


# Two seeds with chunks of 5 are the stopped run's below, which is overlapped before and after the stop.
@pytest.mark.parametrize('changes', [
    dict(horizon_length=5, balanced_sampling=True, utd_ratio=2),
    dict(horizon_length=1, seeds=['0', '1']),
], ids=['one_seed_H5_balanced_utd2', 'two_seeds_H1'])
def test_overlapped_online_phase_equals_the_serial_one(tiny_dataset_dir, tmp_path, changes):
    serial = serial_run(tiny_dataset_dir, tmp_path / 'serial', **changes)
    overlapped = main.train(flag_values(tiny_dataset_dir, tmp_path / 'overlapped', overlap_updates=True, **changes),
                            tiny_fql())
    assert_same_runs(serial, overlapped)


def test_overlapped_run_stopped_mid_chunk_resumes_to_the_serial_run(tiny_dataset_dir, tmp_path, monkeypatch):
    """SIGTERM arrives while the environment plays step 63, the third action of a chunk drawn at step 61, with
    an update in flight: the run saves at step 63 and stops; run again, it resumes there and ends as the serial
    run without a stop does."""
    changes = dict(horizon_length=5, seeds=['0', '1'])
    serial = serial_run(tiny_dataset_dir, tmp_path / 'serial', **changes)
    stop, start_step = StopSignals(), OnlineCollector.start_step
    stop_step = OFFLINE_STEPS + 43

    def start_then_signal(collector, agents, act_keys, step, acting, random_actions):
        start_step(collector, agents, act_keys, step, acting, random_actions)
        if step == stop_step:
            assert [len(seed.queue) for seed in acting] == [3, 3]  # the middle of the chunk
            stop.received = 'SIGTERM'

    monkeypatch.setattr(OnlineCollector, 'start_step', start_then_signal)
    values = flag_values(tiny_dataset_dir, tmp_path / 'resumed', overlap_updates=True, **changes)
    with pytest.raises(Preempted):
        main.train(values, tiny_fql(), stop)
    assert [max(checkpoints(str(tmp_path / 'resumed' / f'run_{seed}'))) for seed in (0, 1)] == [stop_step] * 2
    monkeypatch.undo()
    resumed = main.train(values, tiny_fql())
    assert_same_runs(serial, resumed)
