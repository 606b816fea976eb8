"""main.py's phases called in-process: the schedule, the authors' shard rule offline and online, balanced
sampling, and a run interrupted in the middle of an online episode that resumes to exactly the
uninterrupted run, with rotating shards."""

import itertools
import os

import jax
import numpy as np
import pytest

import main
from agents.trqam import get_config as trqam_config
from tests.conftest import TINY_ENV, assert_logs_match_golden, assert_same_logs
from runner.checkpoints import Checkpointer
from envs.datasets import Dataset, ReplayBuffer, sample_sequences
from envs.offline_data import OfflineData
from runner.seed_group import SeedGroup
from runner.settings import recorded_settings
from runner.layout import CHECKPOINT_DIR
from runner.schedule import Schedule


def tiny_trqam():
    config = trqam_config()
    config.update(dict(actor_hidden_dims=(16, 16), value_hidden_dims=(16, 16), num_qs=2, batch_size=8, flow_steps=3))
    return config


def flag_values(save_dir, **changes):
    return {**main.default_flag_values(), 'env_name': TINY_ENV, 'save_dir': str(save_dir), 'run_name': 'run',
            'protocol': 'none', 'online_steps': 0, 'eval_episodes': 1, 'steps_per_call': 10, **changes}


def test_schedule_counts_the_steps_it_evaluates():
    for offline, online, interval in itertools.product((0, 40, 100), (0, 60, 100), (0, 20, 30, 50)):
        schedule = Schedule(offline, online, log_interval=1, eval_interval=interval, save_interval=0)
        evaluated = [step for step in range(1, offline + online + 1) if schedule.evaluates(step)]
        assert schedule.num_evaluations == len(evaluated), (offline, online, interval)


def test_schedule_stops_exactly_at_every_event():
    schedule = Schedule(offline_steps=100, online_steps=50, log_interval=30, eval_interval=45, save_interval=0,
                        shard_interval=20, steps_per_call=25)
    stops, step = [], 0
    while step < schedule.offline_steps:
        step = schedule.next_offline_stop(step)
        stops.append(step)
    # A shard rotates before updates 20, 40, ...: calls end at 19, 39, ... so that the rotation lands there.
    assert stops == [19, 30, 39, 45, 59, 60, 79, 90, 99, 100]
    # Every eval_interval, and always at the end of the offline phase and of the run.
    assert [s for s in range(1, 151) if schedule.evaluates(s)] == [45, 90, 100, 135, 150]
    assert schedule.saves(100) and schedule.saves(150) and not schedule.saves(99)


def _shards(offline_steps, interval, num_shards=2):
    return OfflineData(TINY_ENV, None, None, offline_steps, ['shard'] * num_shards, interval, 5, 0, {})


def test_shard_of_each_step_is_the_authors():
    # Their loop rotates before every offline update i with i % interval == 0, then before every online
    # environment step j with j % interval == 0, counting on from the offline rotations.
    for offline_steps, interval in ((60, 20), (50, 20), (45, 7)):
        data, shard, expected = _shards(offline_steps, interval), 0, []
        for i in range(1, offline_steps + 1):
            shard = (shard + 1) % 2 if i % interval == 0 else shard
            expected.append(shard)
        for j in range(1, 101):
            shard = (shard + 1) % 2 if j % interval == 0 else shard
            expected.append(shard)
        assert [data.shard_for_step(step) for step in range(1, offline_steps + 101)] == expected


def test_balanced_sampling_draws_half_offline_half_online():
    def transitions(size, first):
        observations = np.arange(first, first + size, dtype=np.float32)[:, None]
        terminals = np.zeros(size, np.float32)
        terminals[-1] = 1.0
        return dict(observations=observations, actions=np.zeros((size, 1), np.float32), rewards=np.zeros(size),
                    masks=np.ones(size), terminals=terminals, next_observations=observations + 1)

    buffer = ReplayBuffer(Dataset.create(transitions(1000, 0)), Dataset.create(transitions(30, 5000), capacity=100))
    for seed in range(3):
        starts = np.asarray(sample_sequences(buffer, jax.random.PRNGKey(seed), 64, 5, 0.99, balanced=True)
                            ['observations'][:, 0])
        assert np.all(starts[:32] < 1000 - 4) and np.all((starts[32:] >= 5000) & (starts[32:] <= 5000 + 30 - 5))
    uniform = np.asarray(sample_sequences(buffer, jax.random.PRNGKey(0), 512, 5, 0.99)['observations'][:, 0])
    assert np.mean(uniform >= 5000) < 0.1  # without it, online rows are drawn in proportion (30 of 1030)


def test_run_interrupted_mid_episode_online_resumes_to_the_uninterrupted_run(tiny_shards_dir, tmp_path, monkeypatch):
    values = dict(dataset_shards_dir=tiny_shards_dir, dataset_replace_interval=20, offline_steps=60, online_steps=240,
                  start_training=20, log_interval=20, eval_interval=150, save_interval=100)
    trained_on = {}  # step -> the shard its updates drew from
    dataset_for = OfflineData.dataset_for

    def recording(self, step):
        dataset = dataset_for(self, step)
        trained_on[step] = self.loaded_shard
        return dataset

    monkeypatch.setattr(OfflineData, 'dataset_for', recording)
    (straight,) = main.train(flag_values(tmp_path / 'straight', **values), tiny_trqam())
    assert_logs_match_golden(straight, 'trqam_shards')
    # Offline: the first update of every call (calls end before each rotation); online: every step with updates.
    assert set(trained_on) == {1, 11, 20, 21, 31, 40, 41, 51, 60} | set(range(80, 301))
    assert all(shard == _shards(60, 20).shard_for_step(step) for step, shard in trained_on.items())
    monkeypatch.undo()

    # The same run, stopped at step 280 without a final save (as a kill would): its last checkpoint is the one
    # at step 200, in the middle of the first online episode (steps 61-260), after shard rotations offline and
    # online.
    config = main.resolve_config(flag_values(tmp_path / 'resumed', **values), tiny_trqam(),
                                 defaults=main.default_flag_values())
    data = main.load_data(config)
    run = SeedGroup(config, [0], None, data.make_env, data.action_dim)
    state = main.restore_or_create_state(config, data, run)
    assert state.step == 0
    state = main.offline_phase(state, data, run)
    state = main.online_phase(state, data, run, end_step=280)
    run.close()
    checkpointer = Checkpointer(os.path.join(config.run_dirs[0], CHECKPOINT_DIR))
    assert state.step == 280 and checkpointer.latest_step() == 200
    checkpointer.close()

    (resumed,) = main.train(flag_values(tmp_path / 'resumed', **values), tiny_trqam())
    assert_same_logs(straight, resumed)
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
    values = flag_values(tmp_path, bc_only=True, bc_steps=50, online_steps=100, run_name=None)
    config = main.resolve_config(values, agent_config, defaults=main.default_flag_values())
    assert agent_config.horizon_length is None and values['online_steps'] == 100
    assert config.agent.horizon_length == 5 and config.online_steps == 0 and config.offline_steps == 50
    assert config.run_dirs == (os.path.join(str(tmp_path), f'bc_{TINY_ENV}_seed0_2x16_h5'),)
    assert config.agent_class.__name__ == 'BCFlowAgent' and config.agent.agent_name == 'bc_flow'
    recorded = recorded_settings(config, 0)
    assert set(recorded) == set(main.default_flag_values()) | {'agent', 'protocol_settings'}
    assert recorded['online_steps'] == 0


if __name__ == '__main__':
    pytest.main([__file__])
