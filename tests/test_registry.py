"""The method registry: labels, run names and per-domain settings derive from one entry per method, so a
new agent is one file plus one `Method` and the sweep, the aggregation and the benchmark all see it."""

import json
import os

import pytest

from agents import METHODS, Method, column, method_of, paper_methods, register, unregister
from experiments import aggregate, benchmark, sweep


@pytest.fixture
def toy_method():
    method = Method('TOY', 'tests.toy_agent.ToyAgent', fixed=dict(tau=0.01),
                    per_domain=dict(alpha=column(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)))
    register(method)
    yield method
    unregister('TOY')


def test_every_builtin_method_labels_its_own_default_config():
    for label, method in METHODS.items():
        assert method_of(method.default_config()) is method, label
    assert paper_methods() == ('TRQAM', 'QAM', 'QAM-E', 'FQL', 'IFQL', 'DSRL', 'CGQL-L')
    assert [METHODS[label].slug for label in ('QAM-E', 'CGQL-L', 'BC')] == ['qam-e', 'cgql-l', 'bc_flow']


def test_a_registered_toy_agent_reaches_sweep_aggregation_and_benchmark(toy_method, tmp_path):
    assert toy_method.agent_file == 'tests/toy_agent.py' and 'TOY' in paper_methods()
    env = 'cube-triple-play-singletask-task2-v0'
    assert toy_method.overrides(env)['alpha'] == 9.0

    # Sweep: its jobs, with its per-domain value, its run-name prefix and the BC run it starts from.
    table = sweep.build_sweep(sweep.resolve_spec('paper', dataset_dir=str(tmp_path), domains=('cube-triple-play',),
                                                 tasks=(2,), seeds=(0,)))
    (job,) = [job for job in table.rl_jobs if job.method == 'TOY']
    assert '--agent=tests/toy_agent.py' in job.command and '--agent.alpha=9.0' in job.command
    assert os.path.basename(job.run_dir) == f'toy_{env}_seed0' and job.depends_on.endswith('_bc')

    # Aggregation: a run directory whose flags.json has the toy config is labelled TOY, in its column.
    run_dir = tmp_path / 'runs' / os.path.basename(job.run_dir)
    run_dir.mkdir(parents=True)
    config = {**toy_method.default_config().to_dict(), **toy_method.overrides(env)}
    json.dump({'env_name': env, 'seed': 0, 'offline_steps': 10, 'online_steps': 0, 'agent': config},
              open(run_dir / 'flags.json', 'w'), default=list)
    (run_dir / 'eval.csv').write_text('step,evaluation/success\n10,0.5\n')
    results = aggregate.success_table(aggregate.load_runs(str(tmp_path / 'runs')), step='offline_end')
    assert results.methods == ['TOY'] and results.per_task[('TOY', env)].mean == 50.0

    # Benchmark: measured under its slug.
    (record,) = benchmark.run_benchmarks(['toy'], ['tiny'], dataset_size=2000, updates_per_call=2, num_windows=1,
                                         log=lambda *args: None)
    assert record['status'] == 'ok' and record['agent'] == 'toy' and record['metrics_finite']


def test_same_configuration_is_one_rule():
    scene = 'scene-play-singletask-task1-v0'
    qam_on_scene = {'agent_name': 'qam', **METHODS['QAM'].overrides(scene), 'actor_hidden_dims': (64, 64)}
    assert METHODS['QAM-E'].is_configured_as(qam_on_scene, scene)  # the QAM paper's edit_scale is 0 there
    puzzle = 'puzzle-4x4-play-singletask-task1-v0'
    assert not METHODS['QAM-E'].is_configured_as({'agent_name': 'qam', **METHODS['QAM'].overrides(puzzle)}, puzzle)
