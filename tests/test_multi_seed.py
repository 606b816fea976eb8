"""Several seeds in one main.py process: each seed's run directory equals its single-seed run's, offline and
online (up to floating-point reassociation), and a seed that diverges leaves the group while the others finish."""

import csv
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import main
import runner.seed_group
from agents.fql import get_config as fql_config
from tests.conftest import TINY_ENV, assert_one_screen
from runner.checkpoints import Checkpointer
from runner.layout import divergence

TINY = dict(actor_hidden_dims=(16, 16), value_hidden_dims=(16, 16), num_qs=2, batch_size=8, flow_steps=3)
# Updates amplify float reassociation chaotically (the vmapped program sums in another order); over these few
# steps it stays far below any difference of data, keys or order, which would show at the first row.
RTOL, ATOL = 1e-3, 1e-5


def tiny_fql():
    config = fql_config()
    config.update(TINY)
    return config


def flag_values(data_dir, save_dir, **changes):
    return {**main.default_flag_values(), 'env_name': TINY_ENV, 'dataset_dir': data_dir, 'save_dir': str(save_dir),
            'protocol': 'none', 'offline_steps': 30, 'online_steps': 60, 'start_training': 30, 'log_interval': 10,
            'eval_interval': 45, 'eval_episodes': 2, 'save_interval': 45, 'steps_per_call': 10, **changes}


def rows(run_dir, name):
    with open(os.path.join(run_dir, name), newline='') as f:
        return list(csv.DictReader(f))


def assert_same_run(expected_dir, actual_dir):
    for name in ('train.csv', 'eval.csv'):
        expected, actual = rows(expected_dir, name), rows(actual_dir, name)
        assert [row['step'] for row in expected] == [row['step'] for row in actual], name
        for want, got in zip(expected, actual):
            for key, value in want.items():
                if key.startswith('time/') or key == 'phase' or value == '':
                    assert got[key] == value or key.startswith('time/'), (name, key)
                else:
                    np.testing.assert_allclose(float(got[key]), float(value), rtol=RTOL, atol=ATOL,
                                               err_msg=f'{name} step {want["step"]} {key}')
    arrays = []
    for run_dir in (expected_dir, actual_dir):
        checkpointer = Checkpointer(os.path.join(run_dir, 'checkpoints'))
        arrays.append(checkpointer.restore()[0])
        checkpointer.close()
    assert arrays[0].keys() == arrays[1].keys() and any(key.startswith('replay/') for key in arrays[0])
    for key in arrays[0]:
        np.testing.assert_allclose(arrays[1][key], arrays[0][key], rtol=RTOL, atol=ATOL, err_msg=key)


@pytest.fixture(scope='module')
def group(tiny_dataset_dir, tmp_path_factory):
    """Seeds 3 and 7 in one process: their run directories."""
    return main.train(flag_values(tiny_dataset_dir, tmp_path_factory.mktemp('group'), seeds=['3', '7']), tiny_fql())


def test_each_seed_of_a_group_equals_its_single_seed_run(group, tiny_dataset_dir, tmp_path):
    assert [os.path.basename(d) for d in group] == [f'fql_{TINY_ENV}_seed3', f'fql_{TINY_ENV}_seed7']
    (single,) = main.train(flag_values(tiny_dataset_dir, tmp_path / 'single', seed=7), tiny_fql())
    assert_same_run(single, group[1])
    # The seeds really differ (networks, batches, environments).
    assert rows(group[0], 'train.csv')[0]['training/critic/critic_loss'] != \
        rows(group[1], 'train.csv')[0]['training/critic/critic_loss']


def test_a_diverging_seed_leaves_the_group_and_the_others_finish(group, tiny_dataset_dir, tmp_path, monkeypatch):
    train_seeds = runner.seed_group.train_seeds

    def poison_second_seed_after_step_10(agents, *args, **kwargs):
        agents, info = train_seeds(agents, *args, **kwargs)
        if args[3] > 10 and jax.tree_util.tree_leaves(agents)[0].shape[0] == 2:
            agents = jax.tree_util.tree_map(
                lambda leaf: leaf.at[1].set(jnp.nan) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf, agents)
            info = jax.tree_util.tree_map(lambda value: value.at[1].set(jnp.nan), info)
        return agents, info

    values = flag_values(tiny_dataset_dir, tmp_path / 'group', seeds=['3', '7'], save_interval=10)
    monkeypatch.setattr(runner.seed_group, 'train_seeds', poison_second_seed_after_step_10)
    healthy, diverged = main.train(values, tiny_fql())
    record = divergence(diverged)
    checkpointer = Checkpointer(os.path.join(diverged, 'checkpoints'))
    assert record['step'] == 20 and checkpointer.latest_step() == 10
    checkpointer.close()
    # Which seed diverged (its run directory and its number), when, and the checkpoint it resumes from.
    assert_one_screen(record['message'], diverged, 7, 20, 10)
    assert [row['step'] for row in rows(healthy, 'eval.csv')] == ['30', '45', '90']
    assert_same_run(group[0], healthy)  # seed 3 of the healthy group
