"""experiments/benchmark.py: its pieces (flags, tables, the costs JSON, the seeds-mode plumbing, the evaluation
equality), never a timing assertion."""

import json
import os
import sys

import numpy as np
import pytest

from experiments import benchmark
from tests.conftest import TINY_ENV

FIELDS = ('agent', 'size', 'compute_dtype', 'status', 'updates_per_second', 'ms_per_update',
          'window_updates_per_second', 'first_call_s', 'compile_s', 'peak_rss_mb', 'rss_increase_mb',
          'device_peak_bytes', 'dataset_size', 'updates_per_call', 'num_qs', 'batch_size', 'actor_hidden_dims',
          'reference_ms_per_update', 'speedup_vs_reference', 'platform', 'jax_version', 'metrics_finite',
          'compiled_memory_mb', 'num_params')


def test_synthetic_dataset_has_episode_boundaries():
    data = benchmark.synthetic_transitions(3000, seed=1)
    assert data['observations'].shape == (3000, benchmark.OBS_DIM)
    assert data['actions'].shape == (3000, benchmark.ACTION_DIM)
    ends = np.flatnonzero(data['terminals'])
    assert ends[-1] == 2999 and np.all(np.diff(ends[:-1]) >= 400) and np.all(np.diff(ends[:-1]) <= 600)
    np.testing.assert_array_equal(data['next_observations'][:-1], data['observations'][1:])


def test_benchmark_fql_tiny_writes_json_and_markdown(tmp_path):
    records = benchmark.run_benchmarks(['fql'], ['tiny'], dataset_size=2000, updates_per_call=2,
                                       num_windows=2, isolate=False, log=lambda *args: None,
                                       dtypes=('float32', 'bfloat16'))
    json_path, md_path = benchmark.write_outputs(records, str(tmp_path))
    loaded = json.load(open(json_path))['records']
    assert [r['compute_dtype'] for r in loaded] == ['float32', 'bfloat16']
    for record in loaded:
        assert record['status'] == 'ok', record
        for field in FIELDS:
            assert field in record, field
        assert record['size'] == 'tiny' and record['num_qs'] == 2 and record['batch_size'] == 8
        assert record['dataset_size'] == 2000 and len(record['window_updates_per_second']) == 2
        assert record['metrics_finite'] and record['updates_per_second'] > 0
        assert record['reference_ms_per_update'] is None and record['compiled_memory_mb']['total'] > 0
    markdown = open(md_path).read()
    assert '| fql | tiny | float32 |' in markdown and '| fql | tiny | bfloat16 |' in markdown
    assert '| agent | size | float32 ms/update | bfloat16 ms/update | float32 / bfloat16 |' in markdown


def test_agent_config_sets_the_compute_dtype_and_the_size():
    assert benchmark.agent_config('trqam', 'small', 'bfloat16')['compute_dtype'] == 'bfloat16'
    large = benchmark.agent_config('bc', 'large')
    assert large['actor_hidden_dims'] == (1024,) * 4 and large['actor_layer_norm'] and 'bc' in benchmark.known_names()
    assert benchmark.agent_config('fql', 'paper')['compute_dtype'] == 'float32'
    assert benchmark.agent_config('fql', 'paper')['actor_hidden_dims'] == (512, 512, 512, 512)


def test_unknown_agent_is_refused_with_the_known_ones():
    try:
        benchmark.run_benchmarks(['nope'], ['tiny'], log=lambda *args: None)
    except ValueError as error:
        assert 'trqam' in str(error) and 'qam-e' in str(error)
    else:
        raise AssertionError('an unknown agent must be refused')


def test_reference_and_speedup_columns():
    record = {'status': 'ok', 'agent': 'trqam', 'size': 'paper', 'updates_per_second': 1.0, 'ms_per_update': 700.0,
              'compile_s': 1.0, 'peak_rss_mb': 1.0, 'device_peak_bytes': None,
              'reference_ms_per_update': [692.0, 735.0], 'speedup_vs_reference': [692 / 700, 735 / 700],
              'platform': 'cpu', 'device_kind': 'cpu', 'num_devices': 1, 'cpu': 'x', 'cpu_count': 2,
              'jax_version': '0', 'updates_per_call': 20, 'dataset_size': 10}
    markdown = benchmark.to_markdown([record])
    assert '| 692-735 | 0.99-1.05x |' in markdown


def test_reference_overrides_from_the_command_line():
    references = benchmark.parse_references(['fql:small:3.6', 'trqam:paper:692-735'])
    assert references == {('fql', 'small'): (3.6, 3.6), ('trqam', 'paper'): (692.0, 735.0)}
    record = benchmark.attach_reference({'agent': 'fql', 'size': 'small', 'ms_per_update': 1.2}, references)
    assert record['reference_ms_per_update'] == [3.6, 3.6]
    np.testing.assert_allclose(record['speedup_vs_reference'], [3.0, 3.0])
    assert benchmark.attach_reference({'agent': 'ifql', 'size': 'small', 'ms_per_update': 1.0},
                                      references)['speedup_vs_reference'] is None
    bf16 = {'agent': 'fql', 'size': 'small', 'ms_per_update': 1.2, 'compute_dtype': 'bfloat16'}
    assert benchmark.attach_reference(bf16, references)['speedup_vs_reference'] is None  # the authors' is float32
    try:
        benchmark.parse_references(['fql-small-3.6'])
    except ValueError as error:
        assert 'agent:size:ms' in str(error)
    else:
        raise AssertionError('a malformed entry must be refused')


def test_command_line_flags_and_their_parsing():
    from absl import flags

    flag_values = flags.FlagValues()
    benchmark._define_flags(flag_values)
    flag_values(['benchmark.py', '--mode=seeds,eval', '--dtypes=float32,bfloat16', '--seed_counts=small:1/2/4,paper:1',
                 '--repeats=3', '--out=costs.json'])
    assert benchmark.parse_modes(flag_values.mode) == ['seeds', 'eval']
    assert benchmark.parse_dtypes(flag_values.dtypes) == ['float32', 'bfloat16']
    assert benchmark.parse_seed_counts(flag_values.seed_counts) == {'small': (1, 2, 4), 'paper': (1,)}
    assert benchmark.parse_seed_counts(['1', '2', '8']) == {None: (1, 2, 8)}
    assert flag_values.repeats == 3 and flag_values.out == 'costs.json' and flag_values.sizes is None
    assert benchmark.sizes_for('eval', None) == ['paper'] and benchmark.sizes_for('seeds', ['tiny']) == ['tiny']
    for bad in (lambda: benchmark.parse_modes(['speed']), lambda: benchmark.parse_dtypes(['float16']),
                lambda: benchmark.parse_seed_counts(['small:0']), lambda: benchmark.sizes_for('seeds', ['huge'])):
        with pytest.raises(ValueError):
            bad()


def test_run_settings_and_the_main_py_command_are_main_py_flags():
    import main
    from agents.trqam import get_config

    settings = benchmark.run_settings('small', online_steps=100, seed_counts={None: (1, 2)})
    assert settings['online_steps'] == 100 and settings['start_training'] == 50 and settings['seed_counts'] == (1, 2)
    command = benchmark.main_command('trqam', 'small', [0, 1], 'save', 'data', settings)
    assert command[1] == 'main.py'
    assert '--protocol=none' in command and '--seeds=0,1' in command and '--agent=agents/trqam.py' in command
    assert '--agent.actor_hidden_dims=(64,64,)' in command and '--agent.num_qs=2' in command
    flags_given = dict(arg[2:].split('=', 1) for arg in command[2:])
    known = set(main.default_flag_values())
    assert {name for name in flags_given if not name.startswith('agent')} <= known
    assert {name.split('.', 1)[1] for name in flags_given if name.startswith('agent.')} <= set(get_config().keys())
    assert '--seeds=3' in benchmark.main_command('fql', 'tiny', [3], 'save', 'data', settings)
    env = benchmark.child_environment()
    assert 'JAX_COMPILATION_CACHE_DIR' not in env and env['JAX_ENABLE_COMPILATION_CACHE'] == 'false'
    assert benchmark.child_environment('cache')['JAX_COMPILATION_CACHE_DIR'] == 'cache'


def test_interleaved_schedule_runs_every_process_once_in_alternating_order():
    order = benchmark.interleaved_schedule((1, 2, 4, 8), 0)
    assert sorted(order) == sorted([('single', s) for s in range(8)] + [('group', 2), ('group', 4), ('group', 8)])
    groups = [i for i, (way, _) in enumerate(order) if way == 'group']
    assert groups[0] > 0 and groups[-1] < len(order) - 1 and min(np.diff(groups)) > 1  # spread among the singles
    assert benchmark.interleaved_schedule((1, 2, 4, 8), 1) == order[::-1]
    assert benchmark.interleaved_schedule((1,), 0) == [('single', 0)]


def _run(repeat, way, seeds, wall):
    return {'repeat': repeat, 'way': way, 'seeds': seeds, 'wall_s': wall, 'returncode': 0, 'other_cores': 0.1}


def test_seed_runs_summaries_and_tables():
    runs = []
    for repeat, scale in ((0, 1.0), (1, 1.2)):
        runs += [_run(repeat, 'single', [seed], 10.0 * scale) for seed in range(4)]
        runs += [_run(repeat, 'group', [0, 1], 12.0 * scale),
                 _run(repeat, 'group', [0, 1, 2, 3], 16.0 * scale)]
    rows = benchmark.summarize_seed_runs(runs, [1, 2, 4], repeats=2)
    assert rows[1]['speedup']['median'] == pytest.approx(1.0)
    assert rows[2]['separate_wall_s']['median'] == pytest.approx(22.0) and rows[2]['speedup']['median'] == \
        pytest.approx(20 / 12)
    assert rows[4]['speedup']['min'] == pytest.approx(40 / 16) and rows[4]['group_vs_one_seed']['median'] == \
        pytest.approx(1.6)
    assert rows[4]['other_cores']['median'] == pytest.approx(0.1)
    result = {'agent': 'trqam', 'env_name': 'cube', 'repeats': 2, 'compile_cache': None, 'failures': [],
              'sizes': {'small': {'settings': benchmark.RUN_SETTINGS['small'], 'rows': rows,
                                  'target': benchmark.seeds_target('small', rows)}}}
    assert 'met' in result['sizes']['small']['target']
    markdown = benchmark.seeds_markdown(result)
    assert '| small | 3000 + 1000, 5 x 2 | 4 | 17.6 (16.0-19.2) | 44.0 (40.0-48.0) | 2.50x |' in markdown


def test_costs_json_schema_merge_and_file(tmp_path):
    updates = [{'agent': 'fql', 'size': 'small', 'status': 'ok', 'compute_dtype': 'float32', 'ms_per_update': 1.5},
               {'agent': 'fql', 'size': 'small', 'status': 'ok', 'compute_dtype': 'bfloat16', 'ms_per_update': 9.0},
               {'agent': 'qam', 'size': 'paper', 'status': 'error'}]
    rows = {1: {'speedup': {'median': 0.97}}, 2: {'speedup': {'median': 1.7}}, 4: {'speedup': {'median': None}}}
    evals = [{'size': 'paper', 'status': 'ok', 'parallel_ms_per_episode': 100.0},
             {'size': 'paper', 'status': 'ok', 'parallel_ms_per_episode': 300.0}]
    costs = benchmark.costs_from(updates, {'sizes': {'small': {'rows': rows}}}, evals, 'cpu: x', 'python b.py')
    assert costs == {'device': 'cpu: x', 'command': 'python b.py', 'ms_per_update': {'fql': {'small': 1.5}},
                     'seed_group_speedup': {'small': {'1': 1.0, '2': 1.7}}, 'eval_ms_per_episode': {'paper': 200.0}}
    benchmark.check_costs(costs)
    path = str(tmp_path / 'costs.json')
    benchmark.write_costs(path, costs)
    later = benchmark.costs_from([{'agent': 'trqam', 'size': 'paper', 'status': 'ok', 'ms_per_update': 700.0}],
                                 None, None, 'cpu: x', 'python b.py --mode=updates')
    merged = benchmark.write_costs(path, later)
    assert json.load(open(path)) == merged
    assert merged['ms_per_update'] == {'fql': {'small': 1.5}, 'trqam': {'paper': 700.0}}
    assert merged['seed_group_speedup'] == {'small': {'1': 1.0, '2': 1.7}}
    assert merged['command'] == 'python b.py ; python b.py --mode=updates'
    other_device = benchmark.write_costs(path, {**later, 'device': 'gpu: H100'})
    assert other_device['ms_per_update'] == {'trqam': {'paper': 700.0}}  # another device replaces the file
    with pytest.raises(ValueError):
        benchmark.check_costs({**costs, 'extra': 1})
    with pytest.raises(ValueError):
        benchmark.check_costs({**costs, 'seed_group_speedup': {'small': {'1': 2.0}}})


def test_seeds_mode_plumbing_with_a_stub_main(tmp_path, monkeypatch):
    """The whole --mode=seeds path (schedule, processes, summaries, costs) with a stub for main.py."""
    stub = 'import sys; sys.exit(0)'

    def command(agent, size, seeds, save_dir, dataset_dir, settings, env_name):
        return [sys.executable, '-c', stub, ','.join(map(str, seeds))]

    monkeypatch.setattr(benchmark, 'main_command', command)
    result = benchmark.seeds_benchmark(['tiny'], dataset_dir=str(tmp_path), repeats=2, work_dir=str(tmp_path),
                                       log=lambda *args: None)
    table = result['sizes']['tiny']
    assert not result['failures'] and len(table['runs']) == 2 * 3  # seeds 0 and 1 alone, then both together
    assert set(table['rows']) == {1, 2} and table['rows'][2]['speedup']['n'] == 2
    assert all(run['returncode'] == 0 and run['wall_s'] > 0 for run in table['runs'])
    costs = benchmark.costs_from(None, result, None, 'cpu', 'x')
    assert set(costs['seed_group_speedup']['tiny']) == {'1', '2'}
    assert '| tiny |' in benchmark.seeds_markdown(result)


def test_eval_parallel_equals_one_episode_at_a_time():
    (record,) = benchmark.eval_benchmark(['fql'], ['tiny'], env_name=TINY_ENV, episodes=3, workers=1, eval_envs=2,
                                         log=lambda *args: None)
    assert record['status'] == 'ok', record
    assert record['ways'] == list(benchmark.EVAL_WAYS) and record['main_way'] == 'pool'
    assert record['same_results'], record['differences']
    assert record['metrics']['episode_length'] > 0 and set(record['pool_start_s']) == {'batched', 'pool'}
    assert 0 <= record['first_chunk_max_difference'] < 1e-4
    markdown = benchmark.eval_markdown([record])
    for way in benchmark.EVAL_WAYS:
        assert f'| fql | tiny | {way} |' in markdown
    costs = benchmark.costs_from(None, None, [record], 'cpu', 'x')
    assert costs['eval_ms_per_episode'] == {'tiny': record['ms_per_episode']['pool']}


def test_metrics_comparison_names_the_difference():
    a = {'success': np.array([0.0, 1.0]), 'episode_return': np.array([-3.0, -1.0]), 'episode_length': np.array([5, 3])}
    assert benchmark.compare_metrics(a, dict(a)) == ''
    b = {**a, 'episode_return': np.array([-3.0, -2.0])}
    assert 'episode_return: 1 episode(s) differ' in benchmark.compare_metrics(a, b)
    means = {key: float(np.mean(value)) for key, value in a.items()}
    assert benchmark.compare_metrics(a, means) == ''  # per-episode arrays against means: the means are compared


def test_cpu_flags_bf16_description_and_gpu_plan(tmp_path):
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text('model name\t: X\nflags\t\t: fpu avx512f avx512_bf16 sse\n')
    flags = benchmark.cpu_flags(str(cpuinfo))
    assert flags == {'avx512_bf16': True, 'amx_bf16': False, 'avx512f': True}
    assert benchmark.cpu_flags(str(tmp_path / 'missing')) == {}
    probe = {'shape': [256, 512, 512], 'bf16_dot_kept_in_bf16': False, 'float32_ms': 1.0, 'bfloat16_ms': 2.0,
             'bf16_speedup': 0.5}
    text = benchmark.describe_bf16(flags, probe, {('fql', 'paper'): 0.6, ('fql', 'small'): 0.8})
    assert 'amx_bf16 absent' in text and 'converting to f32' in text and 'a loss' in text
    assert 'no gain' in benchmark.describe_bf16(flags, {}, {('fql', 'small'): 1.02})
    record = {'status': 'ok', 'agent': 'trqam', 'size': 'paper', 'compiled_memory_mb': {'total': 420.0}}
    plan = benchmark.gpu_plan([record], 'python experiments/benchmark.py --mode=eval')
    assert 'jax[cuda12]' in plan and '--mode=updates,seeds,eval' in plan and 'trqam paper: 420 MB' in plan
    assert 'XLA_PYTHON_CLIENT_PREALLOCATE=false' in plan


def test_cpu_meter_splits_the_machine_s_cpu_into_ours_and_the_others():
    meter = benchmark.CpuMeter()
    start = benchmark.self_cpu_seconds()
    end = __import__('time').perf_counter() + 0.05
    while __import__('time').perf_counter() < end:
        pass
    cpu = meter.stop(benchmark.self_cpu_seconds() - start)
    assert cpu['wall_s'] > 0 and cpu['own_cores'] >= 0
    if cpu['busy_cores'] is not None:  # Linux
        assert cpu['other_cores'] >= 0
    assert benchmark.CpuMeter.process_seconds(os.getpid()) > 0
    assert benchmark.CpuMeter.process_seconds(-1) == 0.0


