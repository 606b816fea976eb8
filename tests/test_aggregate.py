"""experiments/aggregate.py on hand-made run directories (main.py's layout) with known numbers."""

import json
import os

import numpy as np
import pandas as pd
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
    return make_runs(str(tmp_path / 'runs'))


def make_runs(root):
    """SUCCESS's runs (with train.csv for TRQAM) and a BC pre-training run, under `root`."""
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


def stats(frame, key):
    return tuple(frame.loc[key, ['mean', 'std', 'n']])


def test_table_numbers_by_hand(runs_dir):
    runs = aggregate.load_runs(runs_dir)
    assert {'method', 'domain', 'env', 'seed', 'step', 'success'} <= set(runs.columns)  # one tidy frame
    table = aggregate.success_table(runs, step='offline_end', bootstrap_reps=200)
    assert table.methods == ['TRQAM', 'QAM-E', 'FQL'] and table.domains == ['puzzle-3x3-play', 'cube-double-play']
    assert stats(table.per_task, ('TRQAM', A1)) == pytest.approx((40.0, 20.0, 3))
    assert table.per_task.loc[('TRQAM', B1), 'std'] == pytest.approx(50.0)
    # Per domain: mean of the task means; std over the per-seed task averages (40, 60, 80).
    assert stats(table.per_domain, ('TRQAM', 'cube-double-play')) == pytest.approx((60.0, 20.0, 3))
    # "all": mean of the domain means (60, 50); std over per-seed averages (20, 55, 90).
    assert stats(table.per_domain, ('TRQAM', 'all')) == pytest.approx((55.0, 35.0, 3))
    # FQL seed 2 of task 2 stops early: left out (n = 2 there and for the domain), listed.
    assert table.per_task.loc[('FQL', A2), 'n'] == 2
    assert stats(table.per_domain, ('FQL', 'cube-double-play')) == pytest.approx((10.0, 0.0, 2))
    # QAM-E has no seed 2 on puzzle: its domain has 2 seeds.
    assert table.per_domain.loc[('QAM-E', 'puzzle-3x3-play'), 'mean'] == pytest.approx(30.0)
    assert table.per_domain.loc[('QAM-E', 'all'), 'mean'] == pytest.approx((50.0 + 30.0) / 2)
    # The BC run is not in the table unless asked for.
    assert 'BC' not in table.methods
    with_bc = aggregate.success_table(runs, step='offline_end', include_bc=True, expected=[], bootstrap_reps=200)
    assert with_bc.per_task.loc[('BC', A1), 'mean'] == pytest.approx(25.0)  # its offline_end is its own step 300


def test_missing_and_partial_runs_are_listed(runs_dir):
    table = aggregate.success_table(aggregate.load_runs(runs_dir), step='offline_end', bootstrap_reps=200)
    listed = {(m, env, seed): reason for m, env, seed, reason in table.missing.itertuples(index=False)}
    assert set(listed) == {('QAM-E', B1, 2), ('FQL', A2, 2)}
    assert listed[('QAM-E', B1, 2)].startswith('missing')
    assert listed[('FQL', A2, 2)].startswith('incomplete') and 'ends at step 50' in listed[('FQL', A2, 2)]
    # An explicit expectation (e.g. the sweep's) lists every absent cell, seeds included.
    expected = [(m, env, seed) for m in ('TRQAM', 'QAM') for env in (A1,) for seed in (0, 1, 2, 3)]
    table = aggregate.success_table(aggregate.load_runs(runs_dir), expected=expected, bootstrap_reps=200)
    listed = set(table.missing[['method', 'env', 'seed']].itertuples(index=False, name=None))
    assert ('TRQAM', A1, 3) in listed and ('QAM', A1, 0) in listed and ('TRQAM', A1, 0) not in listed
    assert f'- TRQAM {A1} seed 3: missing: no run directory' in aggregate.to_markdown(table)


def test_steps_online_end_and_number(runs_dir):
    runs = aggregate.load_runs(runs_dir)
    online = aggregate.success_table(runs, step='online_end', bootstrap_reps=200)
    assert online.per_task.loc[('TRQAM', A1), 'mean'] == pytest.approx(50.0)
    at_50 = aggregate.success_table(runs, step=50, bootstrap_reps=200)
    assert stats(at_50.per_task, ('FQL', A2)) == pytest.approx((0.0, 0.0, 3))
    assert aggregate.parse_step('online_end') == 'online_end' and aggregate.parse_step('500000') == 500000
    with pytest.raises(ValueError):
        aggregate.parse_step('end')


def test_iqm_by_hand_with_its_interval(runs_dir):
    table = aggregate.success_table(aggregate.load_runs(runs_dir), bootstrap_reps=500)
    # TRQAM's seeds x tasks: 0 20 40 | 50 60 80 | 100 60 100; sorted, the middle half (2 of 9 cut each side) is
    # 40 50 60 60 80.
    point, low, high, num_runs, num_tasks = table.iqm.loc[('TRQAM', 'all')]
    assert point == pytest.approx(np.mean([40, 50, 60, 60, 80])) and (num_runs, num_tasks) == (3, 3)
    assert low <= point <= high and high - low > 10
    # FQL's scores are constant: no spread to resample.
    assert tuple(table.iqm.loc[('FQL', 'puzzle-3x3-play'), ['iqm', 'low', 'high']]) == pytest.approx((10, 10, 10))
    assert tuple(table.iqm.loc[('QAM-E', 'puzzle-3x3-play'), ['runs', 'tasks']]) == (2, 1)  # the complete seeds
    again = aggregate.success_table(aggregate.load_runs(runs_dir), bootstrap_reps=500)
    assert again.iqm.equals(table.iqm)  # seeded


def cells(markdown, first):
    """The cells of the Markdown row that starts with `first`."""
    rows = [[cell.strip() for cell in line.strip().strip('|').split('|')] for line in markdown.splitlines()
            if line.startswith('|')]
    return [row for row in rows if row[0] == first][0][1:]  # the first table that has such a row


def test_markdown_latex_and_reference(runs_dir, tmp_path):
    table = aggregate.success_table(aggregate.load_runs(runs_dir), step='offline_end', bootstrap_reps=200)
    markdown = aggregate.to_markdown(table)
    assert cells(markdown, 'domain') == ['TRQAM', 'QAM-E', 'FQL']
    assert cells(markdown, 'cube-double-play') == ['60.0 ± 20.0', '50.0 ± 0.0', '10.0 ± 0.0 (n=2)']
    assert cells(markdown, 'all')[0] == '55.0 ± 35.0'
    assert cells(markdown, A1)[0] == '40.0 ± 20.0'
    iqm_table = markdown.split('### IQM')[1]
    assert cells(iqm_table, 'all')[0].startswith('58.0 [') and cells(iqm_table, 'all')[0].endswith('] (3x3)')
    latex = aggregate.to_latex(table)
    assert latex.count(r'\begin{tabular}') == 3 and r'60.0 $\pm$ 20.0' in latex and r'Success rate (\%)' in latex
    assert r'cube-double-play-singletask-task1-v0' in latex and r'\_' not in latex.split(r'\caption')[0]

    reference_dir = tmp_path / 'reference'
    reference_dir.mkdir()
    # The QAM paper's numbers derive from its released curves: mean and std over the seeds at each phase's end.
    write_curves(reference_dir, {('cube-double-play', 'QAM-E'): ([0.6, 0.65, 0.7], [1.0, 1.0, 1.0]),
                                 ('all', 'QAM-E'): ([0.44, 0.46, 0.48], [0.5, 0.5, 0.5])})
    # The TRQAM paper's row comes from its data file (no std published; FQL left out: an empty cell).
    (reference_dir / 'trqam_paper_aggregate.csv').write_text(
        'phase,domain,method,success_mean_pct,success_std_pct\n'
        'offline_1M,all,TRQAM,61,\noffline_1M,all,QAM-E,42.5,\n')
    reference = aggregate.load_reference(str(reference_dir))
    markdown = aggregate.to_markdown(table, reference)
    assert cells(markdown, 'cube-double-play')[1] == '50.0 ± 0.0 / 65 ± 5'
    assert cells(markdown, 'all')[1] == '40.0 ± 0.0 (n=2) / 46 ± 2'
    assert cells(markdown, 'all, TRQAM paper (offline, 50 tasks, 8 seeds)') == ['61', '42.5', '']
    assert r'50.0 $\pm$ 0.0 / 65 $\pm$ 5' in aggregate.to_latex(table, reference)
    online = aggregate.success_table(aggregate.load_runs(runs_dir), step='online_end', bootstrap_reps=200)
    online_markdown = aggregate.to_markdown(online, reference)
    assert cells(online_markdown, 'cube-double-play')[1].endswith('/ 100 ± 0')
    assert 'TRQAM paper (' not in online_markdown
    written = aggregate.write_tables(table, str(tmp_path / 'out'), reference=reference)
    assert [os.path.splitext(path)[1] for path in written] == ['.md', '.tex', '.json']
    with open(written[2]) as f:
        saved = json.load(f)
    assert {(row['method'], row['domain']): row['mean'] for row in saved['per_domain']}[('TRQAM', 'all')] == 55.0


def write_curves(directory, ends):
    """A curves file in `directory` with {(name, method): (offline end, online end) success per seed} (fractions)."""
    from experiments import reference

    rows = [(name, method, phase, step, seed, value) for (name, method), by_phase in ends.items()
            for phase, step, values in zip(('offline', 'online'), (1_000_000, 1_500_000), by_phase)
            for seed, value in enumerate(values)]
    pd.DataFrame(rows, columns=reference.CURVE_COLUMNS).to_csv(directory / reference.CURVES_FILE, index=False)


def test_missing_reference_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match='reference_dir'):
        aggregate.load_reference(str(tmp_path / 'nowhere'))
    # A folder with only the QAM paper's file (e.g. an old copy) names the missing one.
    partial = tmp_path / 'partial'
    partial.mkdir()
    write_curves(partial, {})
    with pytest.raises(FileNotFoundError, match='trqam_paper_aggregate.csv'):
        aggregate.load_reference(str(partial))


def test_default_reference_is_the_in_repo_data():
    # The default folder is inside the repository (a bare clone has it), relative to the repository root.
    assert not os.path.isabs(aggregate.DEFAULT_REFERENCE_DIR) and '..' not in aggregate.DEFAULT_REFERENCE_DIR
    default = aggregate.resolve_reference_dir()
    assert default == os.path.join(aggregate.REPO_ROOT, 'experiments', 'reference_results')
    reference = aggregate.load_reference()
    qam_paper = reference['qam_paper']
    assert tuple(qam_paper.loc[('offline_1M', 'QAM', 'all')].round()) == (44.0, 1.0)
    assert tuple(qam_paper.loc[('online_end_1.5M', 'QAM-E', 'all')].round()) == (85.0, 2.0)
    # Ten domains plus "all", for each of the 17 methods (16 offline: RLPD has no offline phase).
    assert qam_paper.groupby(level='phase').size().to_dict() == {'offline_1M': 16 * 11, 'online_end_1.5M': 17 * 11}
    assert aggregate.published(reference, 'offline_end', 'trqam_paper')['mean'].xs('all', level='domain').to_dict() == {
        'TRQAM': 68.0, 'DSRL': 46.0, 'QAM-E': 45.0, 'QAM': 35.0, 'IFQL': 35.0, 'FQL': 28.0}
    assert aggregate.published(reference, 'online_end', 'trqam_paper').empty  # not published


def test_default_reference_in_the_tables(runs_dir):
    reference = aggregate.load_reference()
    table = aggregate.success_table(aggregate.load_runs(runs_dir), step='offline_end', bootstrap_reps=200)
    markdown = aggregate.to_markdown(table, reference)
    # Columns TRQAM, QAM-E, FQL: the TRQAM paper's offline numbers from its data file.
    assert cells(markdown, 'all, TRQAM paper (offline, 50 tasks, 8 seeds)') == ['68', '45', '28']
    assert cells(markdown, 'cube-double-play')[1].endswith('/ 65 ± 5')  # QAM-E, QAM paper, offline
    online = aggregate.success_table(aggregate.load_runs(runs_dir), step='online_end', bootstrap_reps=200)
    assert 'TRQAM paper (' not in aggregate.to_markdown(online, reference)


def read_png(path):
    import matplotlib.image

    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    return matplotlib.image.imread(path)


def test_rliable_figures_depend_on_the_data(runs_dir, tmp_path):
    runs = aggregate.load_runs(runs_dir)
    offline = aggregate.success_table(runs, step='offline_end', bootstrap_reps=200)
    at_50 = aggregate.success_table(runs, step=50, bootstrap_reps=200)  # every run at 0%
    # Every method's figures cover every task: FQL's seeds 0 and 1, QAM-E's 0 and 1 (seed 2 lacks B1).
    assert {m: matrix.shape for m, matrix in aggregate.score_matrices(offline).items()} == {
        'TRQAM': (3, 3), 'QAM-E': (2, 3), 'FQL': (2, 3)}
    written = {}
    for table in (offline, at_50):
        paths = aggregate.plot_comparison(table, str(tmp_path / 'figures'), reps=100)
        assert sorted(os.path.basename(path) for path in paths) == sorted(
            f'{name}_{table.step}.{extension}' for name in ('iqm', 'profile', 'improvement')
            for extension in ('png', 'pdf'))
        written[table.step] = paths
    for offline_path, other_path in zip(written['offline_end'], written['50']):
        assert os.path.getsize(offline_path) > 5000
        if offline_path.endswith('.pdf'):
            with open(offline_path, 'rb') as f:
                assert f.read(5) == b'%PDF-'
            continue
        image = read_png(offline_path)
        assert min(image.shape[:2]) > 150 and image.std() > 0.05  # drawn on, not blank
        other = read_png(other_path)
        assert image.shape != other.shape or np.abs(image - other).max() > 0  # other scores, other figure


def test_curves_and_dual_pngs(runs_dir, tmp_path):
    paths = aggregate.plot_curves(aggregate.load_runs(runs_dir), str(tmp_path / 'plots'))
    names = sorted(os.path.basename(path) for path in paths)
    assert names == ['curves_cube-double-play.png', 'curves_puzzle-3x3-play.png', 'trqam_dual_cube-double-play.png',
                     'trqam_dual_puzzle-3x3-play.png']
    for path in paths:
        assert read_png(path).std() > 0.05
    curve = aggregate.seed_curve(aggregate.load_runs(runs_dir).query('method == "TRQAM" and env == @A1'), 'success')
    assert curve.loc[OFFLINE].tolist() == pytest.approx([40.0, np.std([20, 40, 60])])


def test_qam_run_counts_as_qam_e_where_their_configs_coincide(tmp_path):
    # On scene the QAM paper's QAM-E has edit_scale 0 and QAM's inv_temp: the sweep runs it once.
    root = str(tmp_path)
    config = {'agent_name': 'qam', 'inv_temp': 1.0, 'edit_scale': 0.0, 'fql_alpha': 0.0}
    make_run(root, 'qam_scene', config, 'scene-play-singletask-task1-v0', 0, [(OFFLINE, 0.9)])
    make_run(root, 'qam_cube', {**config, 'inv_temp': 3.0}, A1, 0, [(OFFLINE, 0.9)])  # not QAM-E's config
    runs = aggregate.load_runs(root)
    assert sorted(set(zip(runs.method, runs.domain))) == [
        ('QAM', 'cube-double-play'), ('QAM', 'scene-play'), ('QAM-E', 'scene-play')]
    table = aggregate.success_table(runs, expected=[], bootstrap_reps=200)
    assert table.per_domain.loc[('QAM-E', 'scene-play'), 'mean'] == pytest.approx(90.0)
    assert any('QAM-E on scene-play' in note for note in table.notes)


def test_duplicate_run_directories_use_the_complete_one_and_bad_names_are_skipped(tmp_path, capsys):
    root = str(tmp_path / 'runs')
    make_run(root, 'a_empty_failed_attempt', CONFIGS['FQL'], A1, 0, [])
    make_run(root, 'b_finished', CONFIGS['FQL'], A1, 0, [(OFFLINE, 0.7)])
    make_run(root, 'c_not_a_task', CONFIGS['FQL'], 'cube-double-play', 0, [(OFFLINE, 0.1)])
    runs = aggregate.load_runs(root)
    assert 'c_not_a_task' in capsys.readouterr().err and 'c_not_a_task' not in ' '.join(runs.run_dir)
    table = aggregate.success_table(runs, step='offline_end', bootstrap_reps=200)
    assert table.domains == ['cube-double-play'] and table.per_task.loc[('FQL', A1), 'mean'] == pytest.approx(70.0)
    assert table.missing.empty
    assert any('2 run directories' in note and 'b_finished' in note.split('not')[0] for note in table.notes)


def release_curves(shift=0.0):
    """A release in miniature: FQL and QAM-E on the fixture's tasks and domains, 4 seeds, evaluated at 500K, 1M
    (the offline end) and 1.5M (the online end). At the offline end seed s on task j (A1, A2, B1) has (3 s + j) / 20,
    + `shift`; elsewhere a value of the step alone."""
    from experiments import reference

    rows = []
    for method in ('FQL', 'QAM-E'):
        for name in (A1, A2, B1, 'cube-double-play', 'puzzle-3x3-play'):
            for seed in range(4):
                task_value = ((3 * seed + [A1, A2, B1].index(name)) / 20 if name in (A1, A2, B1) else 0.5) + shift
                rows += [(name, method, 'offline', 500_000, seed, 0.1),
                         (name, method, 'offline', 1_000_000, seed, task_value),
                         (name, method, 'online', 1_500_000, seed, 0.9)]
    return pd.DataFrame(rows, columns=reference.CURVE_COLUMNS)


def test_iqm_beside_the_release_by_hand(runs_dir):
    runs = aggregate.load_runs(runs_dir)
    comparison = aggregate.reference_iqm(runs, release_curves(), reps=200).set_index(['step', 'method', 'source'])
    # TRQAM has no released runs; FQL's and QAM-E's seeds 0 and 1 have all three tasks.
    assert set(comparison.index.get_level_values('method')) == {'FQL', 'QAM-E'}
    assert tuple(comparison.loc[('offline_end', 'FQL', 'ours'), ['iqm', 'runs', 'tasks']]) == (10.0, 2, 3)
    # QAM-E's 2 x 3 scores 50 50 30 | 50 50 30: the middle half (1 of 6 cut each side) is 30 50 50 50.
    assert comparison.loc[('offline_end', 'QAM-E', 'ours'), 'iqm'] == pytest.approx(45.0)
    # Published, 4 seeds x 3 tasks: 0, 5, ..., 55 (%); the middle half (3 of 12 cut each side) is 15 ... 40.
    published = comparison.loc[('offline_end', 'FQL', 'published')]
    assert published.iqm == pytest.approx(np.mean([15, 20, 25, 30, 35, 40]))
    assert (published.runs, published.tasks) == (4, 3)
    assert published.low < published.iqm < published.high
    assert comparison.loc[('online_end', 'FQL', 'published'), 'iqm'] == pytest.approx(90.0)  # the 1.5M evaluation
    assert comparison.loc[('online_end', 'FQL', 'ours'), 'iqm'] == pytest.approx(20.0)
    text = aggregate.reference_markdown(comparison.reset_index())
    interval = f'[{published.low:.1f}, {published.high:.1f}]'
    assert cells(text, 'FQL')[:2] == ['10.0 [10.0, 10.0] (2x3)', f'27.5 {interval} (4x3)']
    # Runs of --protocol=trqam reproduce the other paper: not compared.
    trqam_runs = runs.assign(protocol='trqam')
    assert aggregate.reference_iqm(trqam_runs, release_curves(), reps=200).empty


def test_curves_beside_the_release_depend_on_both(runs_dir, tmp_path):
    runs = aggregate.load_runs(runs_dir)
    # A run of 100 offline + 50 online steps is drawn on the release's 1M + 500K axis.
    fql = runs[(runs.method == 'FQL') & (runs.env == A1) & (runs.seed == 0)]
    assert fql.step.tolist() == [50, OFFLINE, OFFLINE + ONLINE]
    assert aggregate.release_steps(fql, release_curves()).tolist() == [500_000, 1_000_000, 1_500_000]
    images, runs = {}, runs[runs.domain == 'cube-double-play']
    for name, (frame, curves) in {'base': (runs, release_curves()), 'published': (runs, release_curves(0.3)),
                                  'ours': (runs.assign(success=runs.success / 2), release_curves())}.items():
        paths = aggregate.plot_reference_curves(frame, curves, str(tmp_path / name))
        assert [os.path.basename(path) for path in paths] == ['reference_cube-double-play.png']
        images[name] = read_png(paths[0])
    assert images['base'].std() > 0.05 and min(images['base'].shape[:2]) > 300
    for other in ('published', 'ours'):
        assert images[other].shape == images['base'].shape and np.abs(images[other] - images['base']).max() > 0.1


def test_aggregate_script_with_reference_compares_a_tiny_run_to_the_release(runs_dir, tmp_path):
    # The script's wiring, with the committed release and without figures (drawn in-process above).
    import subprocess
    import sys

    out = tmp_path / 'out'
    result = subprocess.run([sys.executable, 'experiments/aggregate.py', f'--runs_dir={runs_dir}', f'--out_dir={out}',
                             '--reference', '--bootstrap_reps=100', '--noplots'], cwd=aggregate.REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'IQM (%) beside the QAM paper' in result.stdout and '| FQL ' in result.stdout
    with open(out / 'reference_iqm.json') as f:
        saved = {(row['step'], row['method'], row['source']): row for row in json.load(f)}
    assert (saved[('offline_end', 'FQL', 'ours')]['iqm'], saved[('offline_end', 'FQL', 'published')]['runs']) == (
        10.0, 12)  # the release's 12 seeds
    assert 'TRQAM' not in {method for _, method, _ in saved}  # no released runs
