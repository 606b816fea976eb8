"""experiments/benchmark.py at tiny sizes: its flags, each mode's pieces, the tables and the costs file; never a
timing assertion."""

import json
import os
import sys

import numpy as np
import pandas as pd
import pytest
from absl import flags

from experiments import benchmark, sweep
from protocols.domains import NETWORK_SIZES
from runner import layout
from runner.flags import default_flag_values
from tests.conftest import TINY_ENV

QUIET = dict(log=lambda *args: None)


def test_flags_parse_and_refuse_unknown_modes_sizes_and_dtypes():
    values = benchmark.define_flags(flags.FlagValues())
    values(['benchmark.py', '--mode=seeds,online', '--sizes=tiny,small', '--dtypes=float32,bfloat16', '--repeats=3',
            '--out=costs.json', '--reference_ms=fql:small:3.6'])
    assert values.mode == ['seeds', 'online'] and values.sizes == ['tiny', 'small'] and values.repeats == 3
    assert values.isolate and values.out == 'costs.json'
    for bad in ('--mode=speed', '--sizes=huge', '--dtypes=float16'):
        with pytest.raises(flags.IllegalFlagValueError):
            benchmark.define_flags(flags.FlagValues())(['benchmark.py', bad])


def test_synthetic_dataset_has_episode_boundaries():
    data = benchmark.synthetic_transitions(3000, 40, 5, seed=1)
    assert data['observations'].shape == (3000, 40) and data['actions'].shape == (3000, 5)
    ends = np.flatnonzero(data['terminals'])
    assert ends[-1] == 2999 and np.all(np.diff(ends[:-1]) >= 400) and np.all(np.diff(ends[:-1]) <= 600)
    np.testing.assert_array_equal(data['next_observations'][:-1], data['observations'][1:])


def test_agent_config_takes_the_size_the_dtype_and_the_method_s_settings():
    config = benchmark.agent_config('qam', 'small', 'bfloat16')
    assert config.compute_dtype == 'bfloat16' and config.edit_scale == 0.0  # QAM: its method's fixed setting
    for key, value in NETWORK_SIZES['small'].items():
        assert config[key] == value
    assert 'num_qs' not in benchmark.agent_config('bc', 'large')  # only the keys the config has
    with pytest.raises(ValueError):
        benchmark.agent_config('fql', 'tiny', 'float16')


def test_updates_of_a_tiny_agent_in_both_dtypes_with_the_reference_column(tmp_path):
    references = benchmark.parse_references(['bc:tiny:3.6', 'bc:paper:692-735'])
    assert references == {('bc', 'tiny'): (3.6, 3.6), ('bc', 'paper'): (692.0, 735.0)}
    records = benchmark.run_benchmarks(['bc'], ['tiny'], dataset_size=2000, updates_per_call=2, num_windows=2,
                                       references=references, dtypes=('float32', 'bfloat16'), **QUIET)
    assert [r['compute_dtype'] for r in records] == ['float32', 'bfloat16']
    for record in records:
        assert record['status'] == 'ok' and record['metrics_finite'] and len(record['window_ms']) == 2
        assert record['network'] == '2x16' and record['ms_per_update'] > 0 and record['num_params'] > 0
    assert records[0]['speedup'] == f'{3.6 / records[0]["ms_per_update"]:.2f}x' and 'speedup' not in records[1]
    json_path, md_path = benchmark.write_outputs({'updates': records}, str(tmp_path), 'python b.py')
    assert json.load(open(json_path))['updates'][0]['ms_per_update'] == records[0]['ms_per_update']
    lines = open(md_path).read().splitlines()
    assert lines[2].startswith('| agent | size | network | compute_dtype | ms_per_update |') and len(lines) == 6
    with pytest.raises(ValueError):
        benchmark.run_benchmarks(['nope'], ['tiny'], **QUIET)
    with pytest.raises(ValueError):
        benchmark.parse_references(['fql-small-3.6'])


def test_a_failed_measurement_is_a_row_with_its_error():
    (record,) = benchmark.run_benchmarks(['fql'], ['tiny'], dataset_size=2000, dtypes=('float16',), **QUIET)
    assert record['status'] == 'error' and record['note']
    assert 'float16' in benchmark.mode_table('updates', [record])


def test_markdown_table_formats_numbers_and_missing_values():
    frame = pd.DataFrame([{'a': 'x', 'b': 1206.253, 'c': None}, {'a': 'y', 'b': 0.2371, 'c': 2}]).astype(object)
    assert benchmark.markdown_table(frame) == '| a | b | c |\n|---|---|---|\n| x | 1206 |  |\n| y | 0.2371 | 2 |\n'


def test_main_command_is_main_py_flags_and_the_agent_s_keys():
    from agents.qam import get_config

    command = benchmark.main_command('qam', 'small', [0, 1], 'save', 'data', benchmark.RUN_SETTINGS['small'])
    assert command[1:3] == ['main.py', '--agent=agents/qam.py']
    given = dict(arg[2:].split('=', 1) for arg in command[3:])
    assert given['seeds'] == '0,1' and given['protocol'] == 'none' and given['agent.actor_hidden_dims'] == '(64,64)'
    assert given['agent.edit_scale'] == '0.0' and given['offline_steps'] == '3000'
    assert {name for name in given if not name.startswith('agent.')} <= set(default_flag_values())
    assert {name[len('agent.'):] for name in given if name.startswith('agent.')} <= set(get_config())
    with pytest.raises(ValueError):
        benchmark.main_command('fql', 'tiny', [0], 'save', 'data', {'not_a_flag': 1})
    assert benchmark.child_environment()['JAX_ENABLE_COMPILATION_CACHE'] == 'false'
    assert benchmark.child_environment('cache')['JAX_COMPILATION_CACHE_DIR'] == 'cache'


def _stub_main(script):
    """A main_command that runs `script` (with the save_dir in sys.argv[1] and the seeds in sys.argv[2])."""
    def command(slug, size, seeds, save_dir, dataset_dir, settings, env_name):
        return [sys.executable, '-c', script, save_dir, ','.join(map(str, seeds))]
    return command


def test_seeds_mode_runs_every_process_and_tabulates_the_ratios(tmp_path, monkeypatch):
    # Each stub process sleeps 10 ms per seed, and seed 1 fails in the second repeat.
    script = ('import sys, time; seeds = sys.argv[2].split(","); time.sleep(0.01 * len(seeds)); '
              'sys.exit(seeds == ["1"] and sys.argv[1].endswith("1_single1"))')
    monkeypatch.setattr(benchmark, 'main_command', _stub_main(script))
    records = benchmark.seeds_benchmark(['tiny'], 'fql', str(tmp_path), work_dir=str(tmp_path), repeats=2, **QUIET)
    one, two = records
    assert (one['seeds'], one['speedup'], one['vs_one_seed'], one['repeats']) == (1, 1.0, 1.0, 2)
    assert two['seeds'] == 2 and two['repeats'] == 1 and two['speedup'] > 0  # the failed repeat is left out
    costs = benchmark.costs_from({'seeds': records}, 'cpu', 'x')
    assert costs['seed_group_speedup'] == {'tiny': {'1': 1.0, '2': two['speedup']}}


def test_eval_in_this_process_and_in_a_pool_give_the_same_episodes():
    (record,) = benchmark.eval_benchmark(['fql'], ['tiny'], TINY_ENV, episodes=2, workers=1, eval_envs=2, **QUIET)
    assert record['same_results'] and record['envs'] == 2 and record['workers'] == 1
    assert record['ms_per_episode'] == pytest.approx(1000 * record['pool_s'] / 2)
    costs = benchmark.costs_from({'eval': [record, {**record, 'ms_per_episode': 3 * record['ms_per_episode']}]},
                                 'cpu', 'x')
    assert costs['eval_ms_per_episode'] == {'tiny': pytest.approx(2 * record['ms_per_episode'])}


def test_online_mode_reads_the_loop_rate_of_main_py_s_online_rows(tmp_path, monkeypatch):
    # A stub main.py writes its run's train.csv: offline rows, then online rows at 50 steps/s after the first.
    run_name = layout.run_name('bc', TINY_ENV, 0)
    script = ('import os, sys; run_dir = os.path.join(sys.argv[1], "' + run_name + '"); os.makedirs(run_dir); '
              'open(os.path.join(run_dir, "train.csv"), "w").write("step,phase,time/steps_per_second\\n'
              '10,offline,900\\n16,online,3\\n24,online,50\\n32,online,40\\n40,online,60\\n")')
    monkeypatch.setattr(benchmark, 'main_command', _stub_main(script))
    (record,) = benchmark.online_benchmark(['tiny'], 'bc', str(tmp_path), TINY_ENV, str(tmp_path), online_steps=20,
                                           orderings=['serial'], **QUIET)
    assert record['ordering'] == 'serial' and record['loop_ms_per_step'] == pytest.approx(20.0)
    assert record['env_ms_per_step'] > 0 and record['update_ms'] > 0
    assert record['bound_ms'] == max(record['env_ms_per_step'], record['update_ms'])
    assert '| bc | tiny | serial | 20 |' in benchmark.mode_table('online', [record])
    settings = benchmark.online_settings(40)
    assert settings['start_training'] < settings['log_interval'] < settings['online_steps']  # rows after updates


def test_costs_json_schema_merge_and_file(tmp_path):
    updates = [{'agent': 'fql', 'size': 'small', 'status': 'ok', 'compute_dtype': 'float32', 'ms_per_update': 1.5},
               {'agent': 'fql', 'size': 'small', 'status': 'ok', 'compute_dtype': 'bfloat16', 'ms_per_update': 9.0},
               {'agent': 'qam', 'size': 'paper', 'compute_dtype': 'float32', 'status': 'error'}]
    costs = benchmark.costs_from({'updates': updates}, 'cpu: x', 'python b.py')
    assert costs == {'device': 'cpu: x', 'command': 'python b.py', 'ms_per_update': {'fql': {'small': 1.5}},
                     'seed_group_speedup': {}, 'eval_ms_per_episode': {}}
    path = str(tmp_path / 'costs.json')
    benchmark.write_costs(path, costs)
    later = benchmark.costs_from({'updates': [{**updates[0], 'agent': 'trqam', 'size': 'paper'}]}, 'cpu: x', 'python c.py')
    merged = benchmark.write_costs(path, later)
    assert json.load(open(path)) == merged and merged['command'] == 'python b.py ; python c.py'
    assert merged['ms_per_update'] == {'fql': {'small': 1.5}, 'trqam': {'paper': 1.5}}
    assert benchmark.write_costs(path, {**later, 'device': 'gpu: H100'})['ms_per_update'] == {'trqam': {'paper': 1.5}}
    reference = os.path.join(os.path.dirname(benchmark.__file__), 'reference_results', 'update_costs_cpu.json')
    sweep.check_costs(json.load(open(reference)))  # the committed file follows the schema
    for bad in ({**costs, 'extra': 1}, {**costs, 'seed_group_speedup': {'small': {'1': 2.0}}},
                {**costs, 'ms_per_update': {'fql': {'small': -1.0}}}):
        with pytest.raises(ValueError):
            sweep.check_costs(bad)
