"""Smoke test of experiments/benchmark.py: fields of the JSON, never a timing assertion."""

import json

import numpy as np

from experiments import benchmark

FIELDS = ('agent', 'size', 'status', 'updates_per_second', 'ms_per_update', 'window_updates_per_second',
          'first_call_s', 'compile_s', 'peak_rss_mb', 'rss_increase_mb', 'device_peak_bytes', 'dataset_size',
          'updates_per_call', 'num_qs', 'batch_size', 'actor_hidden_dims', 'reference_ms_per_update',
          'speedup_vs_reference', 'platform', 'jax_version', 'metrics_finite')


def test_synthetic_dataset_has_episode_boundaries():
    data = benchmark.synthetic_transitions(3000, seed=1)
    assert data['observations'].shape == (3000, benchmark.OBS_DIM)
    assert data['actions'].shape == (3000, benchmark.ACTION_DIM)
    ends = np.flatnonzero(data['terminals'])
    assert ends[-1] == 2999 and np.all(np.diff(ends[:-1]) >= 400) and np.all(np.diff(ends[:-1]) <= 600)
    np.testing.assert_array_equal(data['next_observations'][:-1], data['observations'][1:])


def test_benchmark_fql_tiny_writes_json_and_markdown(tmp_path):
    records = benchmark.run_benchmarks(['fql'], ['tiny'], dataset_size=2000, updates_per_call=2,
                                       num_windows=2, isolate=False, log=lambda *args: None)
    json_path, md_path = benchmark.write_outputs(records, str(tmp_path))
    loaded = json.load(open(json_path))['records']
    (fql,) = [r for r in loaded if r['agent'] == 'fql']
    assert fql['status'] == 'ok', fql
    for field in FIELDS:
        assert field in fql, field
    assert fql['size'] == 'tiny' and fql['num_qs'] == 2 and fql['batch_size'] == 8 and fql['dataset_size'] == 2000
    assert len(fql['window_updates_per_second']) == 2 and fql['metrics_finite']
    assert fql['updates_per_second'] > 0 and fql['reference_ms_per_update'] is None
    assert '| fql | tiny |' in open(md_path).read()


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
    try:
        benchmark.parse_references(['fql-small-3.6'])
    except ValueError as error:
        assert 'agent:size:ms' in str(error)
    else:
        raise AssertionError('a malformed entry must be refused')
