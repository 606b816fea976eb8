"""experiments/aggregate.py on hand-made run directories (main.py's layout) with known numbers."""

import json
import os

import numpy as np
import pytest

from experiments import aggregate
from tests.conftest import write_csv

A1, A2 = 'cube-double-play-singletask-task1-v0', 'cube-double-play-singletask-task2-v0'
B1 = 'puzzle-3x3-play-singletask-task1-v0'
OFFLINE, ONLINE = 100, 50

CONFIGS = {
    'TRQAM': {'agent_name': 'trqam', 'kl_budget': 1.0, 'edit_scale': 0.0, 'fql_alpha': 0.0},
    'QAM-E': {'agent_name': 'qam', 'inv_temp': 1.0, 'edit_scale': 0.1, 'fql_alpha': 0.0},
    'FQL': {'agent_name': 'fql', 'alpha': 300.0},
}
# Success at offline_end (fractions) per method, env and seed 0, 1, 2.
SUCCESS = {
    'TRQAM': {A1: [0.2, 0.4, 0.6], A2: [0.6, 0.8, 1.0], B1: [0.0, 0.5, 1.0]},
    'QAM-E': {A1: [0.5, 0.5, 0.5], A2: [0.5, 0.5, 0.5], B1: [0.3, 0.3, None]},  # seed 2 of B1: no run at all
    'FQL': {A1: [0.1, 0.1, 0.1], A2: [0.1, 0.1, 'partial'], B1: [0.1, 0.1, 0.1]},  # seed 2 of A2 stops early
}


def make_run(root, name, config, env_name, seed, eval_rows, train_rows=(), bc_only=False, offline=OFFLINE,
             online=ONLINE):
    run_dir = os.path.join(root, name)
    os.makedirs(run_dir)
    flags = {'env_name': env_name, 'seed': seed, 'offline_steps': offline, 'online_steps': online,
             'bc_only': bc_only, 'agent': {'horizon_length': 5, 'discount': 0.99, 'rho': 0.5, **config}}
    with open(os.path.join(run_dir, 'flags.json'), 'w') as f:
        json.dump(flags, f)
    write_csv(os.path.join(run_dir, 'eval.csv'), [
        {'step': step, 'evaluation/success': value, 'evaluation/episode_return': -10.0} for step, value in eval_rows])
    if train_rows:
        write_csv(os.path.join(run_dir, 'train.csv'), train_rows)
    return run_dir


def dual_rows(seed):
    return [{'step': step, 'training/critic/critic_loss': 1.0, 'training/dual/lambda': 3.0 + seed + step / 100,
             'training/dual/path_kl': 0.5, 'training/dual/kl_ema': 0.4, 'training/dual/kl_budget': 1.0,
             'phase': 'offline' if step <= OFFLINE else 'online'} for step in (50, 100, 150)]


@pytest.fixture
def runs_dir(tmp_path):
    root = str(tmp_path / 'runs')
    for method, by_env in SUCCESS.items():
        for env_name, values in by_env.items():
            for seed, value in enumerate(values):
                if value is None:
                    continue
                name = f'{method.lower()}_{env_name}_seed{seed}'
                if value == 'partial':
                    rows = [(50, 0.0)]
                else:
                    rows = [(50, 0.0), (OFFLINE, value), (OFFLINE + ONLINE, min(1.0, value + 0.1))]
                make_run(root, name, CONFIGS[method], env_name, seed, rows,
                         dual_rows(seed) if method == 'TRQAM' else ())
    # A BC pre-training run (300 steps), in a sub-folder: the search is recursive.
    make_run(os.path.join(root, 'bc'), f'bc_flow_{A1}_seed0_bc', {'agent_name': 'bc_flow'}, A1, 0,
             [(300, 0.25)], bc_only=True, offline=300, online=0)
    return root


def test_method_labels():
    label = aggregate.method_label
    assert label({'agent_name': 'qam', 'edit_scale': 0.1, 'fql_alpha': 0.0}) == 'QAM-E'
    assert label({'agent_name': 'qam', 'edit_scale': 0.0, 'fql_alpha': 10.0}) == 'QAM-F'
    assert label({'agent_name': 'qam', 'edit_scale': 0.0, 'fql_alpha': 0.0}) == 'QAM'
    assert label({'agent_name': 'cgql', 'mode': 'linex'}) == 'CGQL-L'
    assert label({'agent_name': 'cgql', 'mode': 'mse'}) == 'CGQL-M'
    assert label({'agent_name': 'cgql', 'mode': 'simple'}) == 'CGQL'
    assert label({'agent_name': 'fql'}, bc_only=True) == 'BC'
    assert label({'agent_name': 'bc_flow'}) == 'BC'
    for name in ('trqam', 'fql', 'ifql', 'dsrl'):
        assert label({'agent_name': name}) == name.upper()


def test_table_numbers_by_hand(runs_dir):
    runs = aggregate.load_runs(runs_dir)
    table = aggregate.success_table(runs, step='offline_end', bootstrap_reps=200)
    assert table.methods == ['TRQAM', 'QAM-E', 'FQL'] and table.domains == ['puzzle-3x3-play', 'cube-double-play']
    task = table.per_task[('TRQAM', A1)]
    assert task.mean == pytest.approx(40.0) and task.std == pytest.approx(20.0) and task.n == 3
    assert table.per_task[('TRQAM', B1)].std == pytest.approx(50.0)
    # Per domain: mean of the task means; std over the per-seed task averages (40, 60, 80).
    domain = table.per_domain[('TRQAM', 'cube-double-play')]
    assert (domain.mean, domain.std, domain.n) == (pytest.approx(60.0), pytest.approx(20.0), 3)
    # "all": mean of the domain means (60, 50); std over per-seed averages (20, 55, 90).
    assert table.all['TRQAM'].mean == pytest.approx(55.0)
    assert table.all['TRQAM'].std == pytest.approx(35.0)
    # FQL seed 2 of task 2 stops early: left out (n = 2 there and for the domain), listed.
    assert table.per_task[('FQL', A2)].n == 2
    assert table.per_domain[('FQL', 'cube-double-play')].n == 2
    assert table.per_domain[('FQL', 'cube-double-play')].mean == pytest.approx(10.0)
    # QAM-E has no seed 2 on puzzle: its domain has 2 seeds.
    assert table.per_domain[('QAM-E', 'puzzle-3x3-play')].mean == pytest.approx(30.0)
    assert table.all['QAM-E'].mean == pytest.approx((50.0 + 30.0) / 2)
    # The BC run is not in the table unless asked for.
    assert 'BC' not in table.methods
    with_bc = aggregate.success_table(runs, step='offline_end', include_bc=True, expected=[], bootstrap_reps=200)
    assert with_bc.per_task[('BC', A1)].mean == pytest.approx(25.0)  # its offline_end is its own step 300


def test_missing_and_partial_runs_are_listed(runs_dir):
    table = aggregate.success_table(aggregate.load_runs(runs_dir), step='offline_end', bootstrap_reps=200)
    listed = {(m, env, seed): reason for m, env, seed, reason in table.missing}
    assert set(listed) == {('QAM-E', B1, 2), ('FQL', A2, 2)}
    assert listed[('QAM-E', B1, 2)].startswith('missing')
    assert listed[('FQL', A2, 2)].startswith('incomplete') and 'ends at step 50' in listed[('FQL', A2, 2)]
    # An explicit expectation (e.g. the sweep's) lists every absent cell, seeds included.
    expected = [(m, env, seed) for m in ('TRQAM', 'QAM') for env in (A1,) for seed in (0, 1, 2, 3)]
    table = aggregate.success_table(aggregate.load_runs(runs_dir), expected=expected, bootstrap_reps=200)
    listed = {(m, env, seed) for m, env, seed, _ in table.missing}
    assert ('TRQAM', A1, 3) in listed and ('QAM', A1, 0) in listed
    markdown = aggregate.to_markdown(table)
    assert f'- TRQAM {A1} seed 3: missing: no run directory' in markdown


def test_steps_online_end_and_number(runs_dir):
    runs = aggregate.load_runs(runs_dir)
    online = aggregate.success_table(runs, step='online_end', bootstrap_reps=200)
    assert online.per_task[('TRQAM', A1)].mean == pytest.approx(50.0)
    at_50 = aggregate.success_table(runs, step=50, bootstrap_reps=200)
    assert at_50.per_task[('FQL', A2)].n == 3 and at_50.per_task[('FQL', A2)].mean == 0.0
    assert aggregate.parse_step('online_end') == 'online_end' and aggregate.parse_step('500000') == 500000
    with pytest.raises(ValueError):
        aggregate.parse_step('end')


def test_iqm_by_hand_and_bootstrap():
    assert aggregate.iqm(np.arange(1, 9)) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    # TRQAM's seeds x tasks matrix from the fixture: sorted 0 20 40 50 60 60 80 100 100, trim 2 each side.
    matrix = np.array([[0, 20, 40], [50, 60, 80], [100, 60, 100]], float)
    point, low, high, backend = aggregate.iqm_interval(matrix, reps=4000, use_rliable=False)
    assert backend == 'numpy' and point == pytest.approx(58.0) and low <= point <= high and high - low > 0
    try:
        import rliable  # noqa: F401
    except Exception:  # noqa: BLE001 - rliable is optional
        return
    r_point, r_low, r_high, r_backend = aggregate.iqm_interval(matrix, reps=4000, use_rliable=True)
    assert r_backend == 'rliable' and r_point == pytest.approx(58.0)
    assert abs(r_low - low) < 5 and abs(r_high - high) < 5


def test_table_iqm_uses_complete_seeds(runs_dir):
    table = aggregate.success_table(aggregate.load_runs(runs_dir), bootstrap_reps=200, use_rliable=False)
    point, low, high, num_runs, num_tasks = table.iqm[('TRQAM', 'all')]
    assert point == pytest.approx(58.0) and (num_runs, num_tasks) == (3, 3)
    assert table.iqm[('QAM-E', 'puzzle-3x3-play')][3:] == (2, 1)


def test_markdown_latex_and_reference(runs_dir, tmp_path):
    table = aggregate.success_table(aggregate.load_runs(runs_dir), step='offline_end', bootstrap_reps=200)
    markdown = aggregate.to_markdown(table)
    assert '| domain | TRQAM | QAM-E | FQL |' in markdown
    assert '| cube-double-play | 60.0 ± 20.0 | 50.0 ± 0.0 | 10.0 ± 0.0 (n=2) |' in markdown
    assert '| all | 55.0 ± 35.0 |' in markdown
    latex = aggregate.to_latex(table)
    assert r'\begin{tabular}' in latex and r'60.0 $\pm$ 20.0' in latex and r'Success rate (\%)' in latex

    reference_dir = tmp_path / 'reference'
    reference_dir.mkdir()
    (reference_dir / 'qam_paper_success.csv').write_text(
        'phase,domain,method,success_mean_pct,success_std_pct\n'
        'offline_1M,cube-double-play,QAM-E,65,5\noffline_1M,all,QAM-E,46,2\n'
        'online_end_1.5M,cube-double-play,QAM-E,100,0\n')
    # The TRQAM paper's row comes from its data file (no std published; FQL left out: an empty cell).
    (reference_dir / 'trqam_paper_aggregate.csv').write_text(
        'phase,domain,method,success_mean_pct,success_std_pct\n'
        'offline_1M,all,TRQAM,61,\noffline_1M,all,QAM-E,42.5,\n')
    reference = aggregate.load_reference(str(reference_dir))
    markdown = aggregate.to_markdown(table, reference)
    assert '50.0 ± 0.0 / 65 ± 5' in markdown and '40.0 ± 0.0 (n=2) / 46 ± 2' in markdown
    assert '| all, TRQAM paper (offline, 50 tasks, 8 seeds) | 61 | 42.5 |  |' in markdown
    assert r'50.0 $\pm$ 0.0 / 65 $\pm$ 5' in aggregate.to_latex(table, reference)
    online = aggregate.success_table(aggregate.load_runs(runs_dir), step='online_end', bootstrap_reps=200)
    online_markdown = aggregate.to_markdown(online, reference)
    assert '/ 100 ± 0' in online_markdown and 'TRQAM paper' not in online_markdown.split('### IQM')[0]
    written = aggregate.write_tables(table, str(tmp_path / 'out'), reference=reference)
    assert all(os.path.exists(path) for path in written)


def test_missing_reference_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match='reference_dir'):
        aggregate.load_reference(str(tmp_path / 'nowhere'))
    # A folder with only the QAM paper's file (e.g. an old copy) names the missing one.
    partial = tmp_path / 'partial'
    partial.mkdir()
    (partial / 'qam_paper_success.csv').write_text('phase,domain,method,success_mean_pct,success_std_pct\n')
    with pytest.raises(FileNotFoundError, match='trqam_paper_aggregate.csv'):
        aggregate.load_reference(str(partial))


def test_default_reference_is_the_in_repo_data():
    # The default folder is inside the repository (a bare clone has it), relative to the repository root.
    assert not os.path.isabs(aggregate.DEFAULT_REFERENCE_DIR) and '..' not in aggregate.DEFAULT_REFERENCE_DIR
    default = aggregate.resolve_reference_dir()
    assert default == os.path.join(aggregate.REPO_ROOT, 'experiments', 'reference_results')
    for name in ('qam_paper_success.csv', 'trqam_paper_aggregate.csv', 'README.md'):
        assert os.path.isfile(os.path.join(default, name)), name
    reference = aggregate.load_reference()
    qam_paper = reference['qam_paper']
    assert qam_paper['offline_1M'][('QAM', 'all')] == (44.0, 1.0)
    assert qam_paper['online_end_1.5M'][('QAM-E', 'all')] == (85.0, 2.0)
    # Ten domains plus "all", for each of the 7 methods and both phases.
    for phase in ('offline_1M', 'online_end_1.5M'):
        assert len(qam_paper[phase]) == 7 * 11
    assert aggregate._trqam_paper_row(reference, 'offline_end') == {
        'TRQAM': 68.0, 'DSRL': 46.0, 'QAM-E': 45.0, 'QAM': 35.0, 'IFQL': 35.0, 'FQL': 28.0}
    assert aggregate._trqam_paper_row(reference, 'online_end') == {}  # not published


def test_default_reference_in_the_tables(runs_dir):
    reference = aggregate.load_reference()
    table = aggregate.success_table(aggregate.load_runs(runs_dir), step='offline_end', bootstrap_reps=200)
    markdown = aggregate.to_markdown(table, reference)
    # Columns TRQAM, QAM-E, FQL: the TRQAM paper's offline numbers from its data file.
    assert '| all, TRQAM paper (offline, 50 tasks, 8 seeds) | 68 | 45 | 28 |' in markdown
    assert '/ 65 ± 5' in markdown.split('| cube-double-play |')[1].split('\n')[0]  # QAM-E, QAM paper, offline
    online = aggregate.success_table(aggregate.load_runs(runs_dir), step='online_end', bootstrap_reps=200)
    assert 'TRQAM paper' not in aggregate.to_markdown(online, reference)


def test_curves_and_dual_pngs(runs_dir, tmp_path):
    paths = aggregate.plot_curves(aggregate.load_runs(runs_dir), str(tmp_path / 'plots'))
    names = sorted(os.path.basename(path) for path in paths)
    assert names == ['curves_cube-double-play.png', 'curves_puzzle-3x3-play.png', 'trqam_dual_cube-double-play.png',
                     'trqam_dual_puzzle-3x3-play.png']
    for path in paths:
        with open(path, 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_qam_run_counts_as_qam_e_where_their_configs_coincide(tmp_path):
    # On scene the QAM paper's QAM-E has edit_scale 0 and QAM's inv_temp: the sweep runs it once.
    root = str(tmp_path)
    config = {'agent_name': 'qam', 'inv_temp': 1.0, 'edit_scale': 0.0, 'fql_alpha': 0.0}
    make_run(root, 'qam_scene', config, 'scene-play-singletask-task1-v0', 0, [(OFFLINE, 0.9)])
    make_run(root, 'qam_cube', {**config, 'inv_temp': 3.0}, A1, 0, [(OFFLINE, 0.9)])  # not QAM-E's config
    runs = aggregate.load_runs(root)
    assert sorted((run.method, run.domain) for run in runs) == [
        ('QAM', 'cube-double-play'), ('QAM', 'scene-play'), ('QAM-E', 'scene-play')]
    table = aggregate.success_table(runs, expected=[], bootstrap_reps=200)
    assert table.per_domain[('QAM-E', 'scene-play')].mean == pytest.approx(90.0)
    assert any('QAM-E on scene-play' in note for note in table.notes)


def test_duplicate_run_directories_use_the_complete_one_and_bad_names_are_skipped(tmp_path, capsys):
    root = str(tmp_path / 'runs')
    make_run(root, 'a_empty_failed_attempt', CONFIGS['FQL'], A1, 0, [])
    make_run(root, 'b_finished', CONFIGS['FQL'], A1, 0, [(OFFLINE, 0.7)])
    make_run(root, 'c_not_a_task', CONFIGS['FQL'], 'cube-double-play', 0, [(OFFLINE, 0.1)])
    runs = aggregate.load_runs(root)
    assert 'neither an OGBench single-task name nor a Robomimic dataset' in capsys.readouterr().err
    table = aggregate.success_table(runs, step='offline_end')
    assert table.domains == ['cube-double-play'] and table.per_task[('FQL', A1)].mean == pytest.approx(70.0)
    assert not table.missing
    assert any('2 run directories' in note and 'b_finished' in note.split('not')[0] for note in table.notes)
