"""The method registry: labels, run names and per-domain settings derive from one entry per method, so a
new agent is one file plus one `Method` and the sweep, the aggregation and the benchmark all see it."""

import json
import os

import pytest

from protocols.methods import METHODS, Method, column, method_of, paper_methods
from experiments import aggregate, benchmark, sweep


@pytest.fixture
def toy_method(monkeypatch):
    """A new agent (tests/toy_agent.py) with its one registry entry, as a user adds one."""
    method = Method('TOY', 'tests.toy_agent.ToyAgent', fixed=dict(value_layer_norm=False), papers=('trqam',),
                    per_domain=dict(alpha=column(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)))
    monkeypatch.setitem(METHODS, method.label, method)
    return method


def test_every_builtin_method_labels_its_own_default_config():
    for label, method in METHODS.items():  # its config file with the settings that make it (CGQL-M: mode mse)
        config = method.default_config()
        config.update(method.fixed)
        assert method_of(config) is method, label
    assert [METHODS[label].slug for label in ('QAM-E', 'CGQL-L', 'BC')] == ['qam-e', 'cgql-l', 'bc']
    assert [METHODS[label].agent_file for label in ('QAM', 'QAM-E', 'QAM-F', 'BC')] == [
        'agents/qam.py', 'agents/qam_e.py', 'agents/qam_f.py', 'agents/bc_flow.py']
    assert not hasattr(METHODS['QAM'], 'defaults')  # a method's settings are its config file's


def test_a_registered_toy_agent_reaches_sweep_aggregation_and_benchmark(toy_method, tmp_path):
    assert toy_method.agent_file == 'tests/toy_agent.py' and 'TOY' in paper_methods('trqam')
    assert 'TOY' not in paper_methods('qam')
    env = 'cube-triple-play-singletask-task2-v0'
    assert toy_method.overrides(env, 'trqam')['alpha'] == 9.0
    assert toy_method.protocol_settings(env, 'qam', 'DATA')['agent.alpha'] == 9.0

    # Sweep: its jobs, with its per-domain value (set by the protocol in main.py, which the sweep resolves the
    # same way), its run-name prefix and the BC run it starts from.
    table = sweep.build_sweep(sweep.resolve_spec('paper', dataset_dir=str(tmp_path), domains=('cube-triple-play',),
                                                 tasks=(2,), seeds=(0,)))
    (job,) = [job for job in table.rl_jobs if job.method == 'TOY']
    assert '--agent=tests/toy_agent.py' in job.command and '--protocol=trqam' in job.command
    # The one --agent.* value: the setting that makes TOY, where its config file has another (main.py tells the method
    # by the config); main.py resolves the command to TOY.
    assert [arg for arg in job.command if arg.startswith('--agent.')] == ['--agent.value_layer_norm=False']
    from tests.test_sweep import _resolve
    assert _resolve(job.command).method == 'TOY'
    assert sweep.resolve_agent(toy_method, env, 'trqam', str(tmp_path), {})['alpha'] == 9.0
    assert job.name == f'toy_{env}_seed0' and os.path.basename(job.run_dirs[0]) == job.name
    assert job.depends_on == f'bc_{env}_seed0_4x1024ln_h5' == table.bc_jobs[0].name

    # Aggregation: a run directory whose flags.json has the toy config is labelled TOY, in its column.
    run_dir = tmp_path / 'runs' / job.name
    run_dir.mkdir(parents=True)
    config = {**toy_method.default_config().to_dict(), **toy_method.overrides(env)}
    json.dump({'env_name': env, 'seed': 0, 'offline_steps': 10, 'online_steps': 0, 'agent': config,
               'protocol': 'trqam'},
              open(run_dir / 'flags.json', 'w'), default=list)
    (run_dir / 'eval.csv').write_text('step,evaluation/success\n10,0.5\n')
    results = aggregate.success_table(aggregate.load_runs(str(tmp_path / 'runs')), step='offline_end')
    assert results.methods == ['TOY'] and results.per_task.loc[('TOY', env), 'mean'] == 50.0
    assert results.protocol == 'trqam'

    # Benchmark: measured under its slug.
    (record,) = benchmark.run_benchmarks(['toy'], ['tiny'], dataset_size=2000, updates_per_call=2, num_windows=1,
                                         log=lambda *args: None)
    assert record['status'] == 'ok' and record['agent'] == 'toy' and record['metrics_finite']


def test_paper_methods_are_the_columns_of_each_protocols_paper(monkeypatch):
    trqam = ('TRQAM', 'QAM', 'QAM-E', 'FQL', 'IFQL', 'DSRL', 'CGQL-L')
    assert paper_methods('trqam') == trqam and paper_methods('none') == trqam  # none reproduces no paper
    qam = paper_methods('qam')
    assert {'QAM', 'QAM-E', 'QAM-F', 'FQL', 'IFQL', 'DSRL', 'CGQL', 'CGQL-M', 'CGQL-L'} <= set(qam)
    assert not {'TRQAM', 'BC'} & set(qam) and [m for m in METHODS if m not in set(trqam) | set(qam)] == ['BC']
    # A new column of the QAM paper is its one entry with papers=('qam',): the QAM sweep runs it, the TRQAM one not.
    monkeypatch.setitem(METHODS, 'TOY', Method('TOY', 'tests.toy_agent.ToyAgent', papers=('qam',)))
    assert paper_methods('qam') == qam + ('TOY',) and paper_methods('trqam') == trqam
    with pytest.raises(ValueError, match="unknown papers \\['d4rl'\\]; known: trqam, qam"):
        Method('BAD', 'agents.fql.FQLAgent', papers=('qam', 'd4rl'))
    with pytest.raises(ValueError, match='Unknown --protocol=d4rl'):
        paper_methods('d4rl')


def test_same_configuration_is_one_rule():
    # `Method.is_configured_as` is the rule the sweep and the aggregation share, under the run's protocol.
    scene, puzzle = 'scene-play-singletask-task1-v0', 'puzzle-4x4-play-singletask-task1-v0'
    qam_on_scene = {'agent_name': 'qam', **METHODS['QAM'].overrides(scene, 'trqam'), 'actor_hidden_dims': (64, 64)}
    assert METHODS['QAM-E'].is_configured_as(qam_on_scene, scene)  # the QAM paper's edit_scale is 0 there
    qam_on_puzzle = {'agent_name': 'qam', **METHODS['QAM'].overrides(puzzle, 'trqam')}
    assert not METHODS['QAM-E'].is_configured_as(qam_on_puzzle, puzzle)
    # Under the QAM paper's protocol the shared discount differs, not the methods: still one configuration.
    qam_paper_scene = {'agent_name': 'qam', **METHODS['QAM'].overrides(scene, 'qam')}
    assert METHODS['QAM-E'].is_configured_as(qam_paper_scene, scene, 'qam')
    # Every paper method is its own configuration on every domain, and no other method's but QAM/QAM-E there.
    for domain in ('scene-play', 'cube-double-play', 'cube-triple-play'):
        env = f'{domain}-singletask-task1-v0'
        for label in paper_methods('trqam'):
            config = {**METHODS[label].default_config().to_dict(), **METHODS[label].overrides(env, 'trqam')}
            others = [other for other in paper_methods('trqam') if other != label
                      and METHODS[other].is_configured_as(config, env, 'trqam', label)]
            coincide = domain in ('scene-play', 'cube-double-play') and label in ('QAM', 'QAM-E')
            assert others == ([{'QAM': 'QAM-E', 'QAM-E': 'QAM'}[label]] if coincide else []), (label, env)


def test_methods_that_would_share_a_bc_run_with_other_settings_are_refused(tmp_path, monkeypatch):
    # A method whose flow settings differ (here the learning rate) would start from the BC run every method of
    # the task shares (named by task, seed and flow shape only): main.py would refuse the second one; the sweep
    # says so.
    monkeypatch.setitem(METHODS, 'TOY2', Method('TOY2', 'tests.toy_agent.ToyAgent', fixed=dict(lr=1e-3)))
    with pytest.raises(ValueError, match='same BC run'):
        sweep.build_sweep(sweep.resolve_spec('paper', dataset_dir=str(tmp_path), domains=('cube-double-play',),
                                             tasks=(1,), seeds=(0,), methods=('FQL', 'TOY2')))
