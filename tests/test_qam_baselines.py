"""ReBRAC, FBRAC, FAWAC and FEdit (docs/algorithms.md section 12) through main.py, and ReBRAC's actor schedule.

Their losses are checked against the authors' code in tests/test_parity.py; their per-domain settings against the
docs' table in tests/test_sweep.py.
"""

import json
import os

import jax
import numpy as np
import pytest

from agents.rebrac import ReBRACAgent
from agents.rebrac import get_config as rebrac_config
from tests.conftest import TINY_ENV
from tests.test_main import main_command, only_run_dir, read_rows, run

AGENT_FILES = ('agents/rebrac.py', 'agents/fbrac.py', 'agents/fawac.py', 'agents/fedit.py')


@pytest.mark.parametrize('agent_file', AGENT_FILES)
def test_main_runs_offline_then_online(agent_file, tiny_dataset_dir, tmp_path):
    command = main_command(tiny_dataset_dir, tmp_path, '--offline_steps=4', '--online_steps=6', '--start_training=2',
                           '--log_interval=2', '--eval_interval=0', '--steps_per_call=2', agent=agent_file)
    if agent_file == 'agents/rebrac.py':  # no flow
        command = [arg for arg in command if not arg.startswith('--agent.flow_steps')]
    run(command)
    run_dir = only_run_dir(tmp_path)
    name = os.path.basename(agent_file)[:-3]
    assert os.path.basename(run_dir) == f'{name}_{TINY_ENV}_seed0'
    assert json.load(open(os.path.join(run_dir, 'flags.json')))['agent']['agent_name'] == name
    steps = [int(row['step']) for row in read_rows(os.path.join(run_dir, 'train.csv'))]
    assert steps and max(steps) > 4  # online updates were logged after the offline phase


def _tree_equal(a, b):
    return all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x, y: bool(np.array_equal(x, y)), a, b)))


@pytest.mark.parametrize('delay_actor', [True, False])
def test_rebrac_moves_targets_and_delayed_actor_every_actor_freq_updates(delay_actor):
    rng = np.random.default_rng(0)
    batch = dict(observations=rng.normal(size=(8, 5)), actions=rng.uniform(-1, 1, size=(8, 4)),
                 rewards=rng.normal(size=8), masks=np.ones(8), valid=np.ones(8),
                 next_observations=rng.normal(size=(8, 5)))
    batch = {key: np.asarray(value, np.float32) for key, value in batch.items()}
    config = rebrac_config()
    config.update(actor_hidden_dims=(16, 16), value_hidden_dims=(16, 16), num_qs=2, batch_size=8, horizon_length=2,
                  delay_actor=delay_actor, actor_freq=2)
    agent = ReBRACAgent.create(0, {key: value[:1] for key, value in batch.items()}, config)
    first, _ = agent.update(batch)
    second, _ = first.update(batch)
    actor = lambda a: a.network.params['modules_actor']  # noqa: E731
    # The first update (of actor_freq = 2) moves the critic only, and the actor unless delayed; the second all.
    assert not _tree_equal(agent.network.params['modules_critic'], first.network.params['modules_critic'])
    assert _tree_equal(actor(agent), actor(first)) == delay_actor
    assert _tree_equal(agent.network.target_params, first.network.target_params)
    assert not _tree_equal(actor(first), actor(second))
    for module in ('critic', 'actor'):
        assert not _tree_equal(first.network.target_params[module], second.network.target_params[module]), module
