"""main.py's phases called in-process: the schedule, the offline shard rule, and a run interrupted in its
online phase that resumes to exactly the uninterrupted run, with rotating shards."""

import os

import numpy as np
import pytest

import main
from agents.trqam import get_config as trqam_config
from tests.conftest import TINY_ENV, assert_logs_match_golden
from utils.checkpoints import Checkpointer
from utils.offline_data import load_offline_data
from utils.run_dir import CHECKPOINT_DIR
from utils.schedule import Schedule


def tiny_trqam():
    config = trqam_config()
    config.update(dict(actor_hidden_dims=(16, 16), value_hidden_dims=(16, 16), num_qs=2, batch_size=8, flow_steps=3))
    return config


def flag_values(save_dir, **changes):
    return {**main.default_flag_values(), 'env_name': TINY_ENV, 'save_dir': str(save_dir), 'run_name': 'run',
            'eval_episodes': 1, 'steps_per_call': 10, **changes}


def test_schedule_stops_exactly_at_every_event():
    schedule = Schedule(offline_steps=100, online_steps=50, log_interval=30, eval_interval=45, save_interval=0,
                        shard_interval=20, steps_per_call=25)
    stops, step = [], 0
    while step < schedule.offline_steps:
        step = schedule.next_offline_stop(step)
        stops.append(step)
    assert stops == [20, 30, 40, 45, 60, 80, 90, 100]
    assert [s for s in range(1, 151) if schedule.evaluates(s)] == [45, 90, 135, 150]
    assert schedule.saves_offline(100) and not schedule.saves_offline(99)
    assert not any(schedule.save_due_online(s) for s in range(1, 151))


def test_live_shard_cycles_offline_and_stays_online(tiny_shards_dir):
    _, _, data = load_offline_data(TINY_ENV, dataset_dir=None, dataset_path=None, dataset_shards_dir=tiny_shards_dir,
                                   shard_interval=20, sparse=False, offline_steps=60, horizon_length=5)
    # Updates 1-20 on shard 0, 21-40 on shard 1, 41-60 on shard 0; online keeps the last offline shard.
    assert [data.live_shard(step) for step in (0, 19, 20, 39, 40, 59, 60, 61, 500)] == [0, 0, 1, 1, 0, 0, 0, 0, 0]
    first = data.transitions_at(0)['observations']
    assert not np.array_equal(data.transitions_at(20)['observations'][:5], first[:5])


def test_run_interrupted_online_resumes_to_the_uninterrupted_run(tiny_shards_dir, tmp_path):
    values = dict(dataset_shards_dir=tiny_shards_dir, dataset_replace_interval=20, offline_steps=60, online_steps=240,
                  start_training=20, log_interval=20, eval_interval=150, save_interval=100)
    straight = main.train(flag_values(tmp_path / 'straight', **values), tiny_trqam())
    assert_logs_match_golden(straight, 'trqam_shards')  # the values of the code before the redesign

    # The same run, stopped at step 280 without a final save: its last checkpoint is the online one at 260
    # (the first episode end after step 100), after the shard rotations at 20 and 40.
    config = main.resolve_config(flag_values(tmp_path / 'resumed', **values), tiny_trqam())
    env, eval_env, data = main.load_data(config)
    checkpointer = Checkpointer(os.path.join(config.run_dir, CHECKPOINT_DIR))
    state, changes = main.restore_or_create_state(config, data, checkpointer)
    assert state.step == 0 and changes == {}
    run = main.Run(config, main.open_logs(config, state.step, changes), checkpointer, eval_env, None, state.step)
    state = main.offline_phase(state, data, run)
    assert data.loaded_shard == 0 and state.step == 60
    state = main.online_phase(state, env, run, end_step=280)
    run.close()
    assert state.step == 280 and checkpointer.latest_step() == 260

    resumed = main.train(flag_values(tmp_path / 'resumed', **values), tiny_trqam())
    assert_logs_match_golden(resumed, 'trqam_shards')
    arrays = {}
    for run_dir in (straight, resumed):
        checkpoints = Checkpointer(os.path.join(run_dir, CHECKPOINT_DIR))
        assert checkpoints.latest_step() == 300
        arrays[run_dir], _ = checkpoints.restore()
        checkpoints.close()
    assert arrays[straight].keys() == arrays[resumed].keys() and any(k.startswith('replay/') for k in arrays[resumed])
    for key in arrays[straight]:
        np.testing.assert_array_equal(arrays[straight][key], arrays[resumed][key], err_msg=key)


def test_resolve_config_records_every_flag_and_leaves_the_inputs_alone(tmp_path):
    agent_config = tiny_trqam()
    values = flag_values(tmp_path, bc_only=True, online_steps=100, run_name=None)
    config = main.resolve_config(values, agent_config)
    assert agent_config.horizon_length is None and values['online_steps'] == 100
    assert config.agent.horizon_length == 5 and config.online_steps == 0
    assert config.run_dir == os.path.join(str(tmp_path), f'trqam_{TINY_ENV}_seed0_bc')
    assert config.agent_class.__name__ == 'BCFlowAgent'
    recorded = main.recorded_settings(config)
    assert set(recorded) == set(main.default_flag_values()) | {'agent'} and recorded['online_steps'] == 0


if __name__ == '__main__':
    pytest.main([__file__])
