"""Results tables and figures from main.py's run directories.

    python experiments/aggregate.py --runs_dir=runs/paper --step=offline_end --reference
    python experiments/aggregate.py --runs_dir=runs/cpu_preset --step=online_end --expect=cpu

Every run's evaluations (flags.json, eval.csv) go into one tidy DataFrame. At the step asked for, the tables (Markdown,
LaTeX, JSON) give the success rate (%) per task, per domain and "all" (the mean of the domain means) as mean ± std over
seeds, and the IQM over runs x tasks with its 95% stratified-bootstrap CI (rliable); runs expected (by default the grid
of the methods, tasks and seeds found) but absent or short of the step are listed, never averaged in. The figures:
rliable's comparisons (PNG, PDF), and learning curves per domain with TRQAM's dual variables (PNG). A run whose
configuration is also another method's on its domain (`Method.is_configured_as`) counts for both. A table names its
runs' --protocol; --reference puts beside it the published numbers of the paper that protocol reproduces and, for the
QAM paper, beside its released runs (experiments/reference_results/qam_paper_curves.csv.gz): our seeds' curves over
the published seeds' spread per task and domain (`reference_{domain}.png`) and the IQM of both at the end of each
phase (`reference_iqm.md`, `.json`, `.png`).
"""

import contextlib
import glob
import json
import os
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional

import matplotlib
import numpy as np
import pandas as pd
from absl import app, flags
from absl import logging as absl_logging

matplotlib.use('Agg')  # figures go to files
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ''):  # `python experiments/aggregate.py` from the repository root.
    sys.path.insert(0, REPO_ROOT)

import matplotlib.pyplot as plt  # noqa: E402
from rliable import library, metrics, plot_utils  # noqa: E402

from envs import ogbench_data, robomimic  # noqa: E402
from experiments import reference as release  # noqa: E402
from experiments.presets import PRESETS, expected_runs  # noqa: E402
from protocols.domains import DOMAINS, PROTOCOLS, domain_name  # noqa: E402
from protocols.methods import BC, METHODS, method_of, paper_methods  # noqa: E402
from runner import layout  # noqa: E402
from runner.logs import read_csv  # noqa: E402

DEFAULT_REFERENCE_DIR = 'experiments/reference_results'  # relative to the repository root
REFERENCE_FILES = {'qam_paper': release.CURVES_FILE, 'trqam_paper': 'trqam_paper_aggregate.csv'}
REFERENCE_PHASES = {step: release.SUMMARY_PHASES[phase] for step, phase in release.PHASE_ENDS.items()}
STEP_TITLES = {'offline_end': 'at the end of offline training (step = offline_steps of each run)',
               'online_end': 'at the end of online fine-tuning (step = offline_steps + online_steps)'}
# The published numbers each protocol reproduces (docs/algorithms.md section 9.1); others get both, labelled.
REFERENCE_OF_PROTOCOL = {name: (f'{protocol.paper}_paper',) if protocol.paper else ()
                         for name, protocol in PROTOCOLS.items()}
DUAL_KEYS = ('training/dual/lambda', 'training/dual/path_kl', 'training/dual/kl_ema', 'training/dual/kl_budget')
UNRECORDED = 'unrecorded'
KEY = ['method', 'env', 'seed']
LATEX_ESCAPES = str.maketrans({'\\': r'\textbackslash{}', '&': r'\&', '%': r'\%', '_': r'\_', '#': r'\#',
                               '±': r'$\pm$'})  # for captions: pandas escapes the cells
RUN_COLUMNS = ['run_dir', 'method', 'alias_of', 'env', 'domain', 'seed', 'protocol', 'offline_steps', 'online_steps',
               'step', 'success']


def method_label(agent_config: dict, bc_only: bool = False) -> str:
    try:
        return BC.label if bc_only else method_of(agent_config).label
    except ValueError:  # an agent this checkout does not register
        return str(agent_config.get('agent_name', '')).upper()


def load_run(run_dir: str, protocol: Optional[str] = None) -> Optional[pd.DataFrame]:
    """One row per evaluation of the run (one NaN row if none), repeated under each paper method whose configuration
    it also is (`alias_of`: its own); None for a folder not a main.py run of `protocol` (any if None) or of one
    task (said on stderr)."""
    with open(os.path.join(run_dir, layout.FLAGS_FILE)) as f:
        run = json.load(f)
    config, env_name, run_protocol = run.get('agent'), run.get('env_name'), run.get('protocol')
    if not isinstance(config, dict) or env_name is None or protocol not in (None, run_protocol):
        return None
    try:  # envs/ parses the names
        (robomimic if robomimic.is_robomimic(env_name) else ogbench_data).parse_env_name(env_name)
    except ValueError as error:
        print(f'Skipped {run_dir}: {str(error).splitlines()[0]}', file=sys.stderr)
        return None
    eval_path = os.path.join(run_dir, layout.EVAL_CSV)
    evals = pd.DataFrame(read_csv(eval_path) if os.path.exists(eval_path) else [], columns=['step', layout.SUCCESS_KEY])
    if evals.empty:
        evals = pd.DataFrame({'step': [np.nan], layout.SUCCESS_KEY: [np.nan]})
    bc_only = bool(run.get('bc_only'))
    method = method_label(config, bc_only)
    frame = evals.sort_values('step').rename(columns={layout.SUCCESS_KEY: 'success'}).assign(
        success=lambda f: 100.0 * f.success.where(np.isfinite(f.success)), run_dir=run_dir, method=method,
        alias_of='', env=env_name, domain=domain_name(env_name), seed=int(run.get('seed', 0)), protocol=run_protocol,
        offline_steps=int(run.get('offline_steps') or 0),
        online_steps=0 if bc_only else int(run.get('online_steps') or 0))
    others = [] if method == BC.label or domain_name(env_name) not in DOMAINS else [  # same config, other labels
        label for label in paper_methods(run_protocol or 'trqam')
        if label != method and METHODS[label].is_configured_as(config, env_name, run_protocol, method)]
    return pd.concat([frame] + [frame.assign(method=label, alias_of=method) for label in others], ignore_index=True)


def load_runs(runs_dir: str, protocol: Optional[str] = None) -> pd.DataFrame:
    """`load_run` of every run directory under `runs_dir` (recursively), as one tidy frame."""
    paths = sorted(glob.glob(os.path.join(runs_dir, '**', layout.FLAGS_FILE), recursive=True))
    frames = [frame for path in paths if (frame := load_run(os.path.dirname(path), protocol)) is not None]
    return pd.concat(frames, ignore_index=True)[RUN_COLUMNS] if frames else pd.DataFrame(columns=RUN_COLUMNS)


@contextlib.contextmanager
def _rliable(seed: int = 0):
    """rliable quiet (it logs every estimate at INFO) and reproducible: its stratified bootstrap draws from numpy's
    global generator whatever random_state it is given, so that generator is seeded here and then restored."""
    verbosity, state = absl_logging.get_verbosity(), np.random.get_state()
    absl_logging.set_verbosity(absl_logging.WARNING)
    np.random.seed(seed)
    try:
        yield
    finally:
        absl_logging.set_verbosity(verbosity)
        np.random.set_state(state)


def interval_estimates(score_dict: dict, metric, reps: int, seed: int = 0) -> Dict[object, tuple]:
    """{key: (point, CI low, CI high)} of `metric` with rliable's stratified bootstrap (95%, percentile); a
    key's scores are a (runs, tasks) matrix, or a pair of them for a comparison of two methods."""
    with _rliable(seed):
        points, intervals = library.get_interval_estimates(
            score_dict, lambda *scores: np.atleast_1d(metric(*scores)), reps=reps)
    return {key: (float(points[key][0]), float(intervals[key][0][0]), float(intervals[key][1][0]))
            for key in score_dict}


def _ordered(items, order, by=lambda item: item) -> list:
    """Sorted by `order` (the registry's, the domain table's) of `by(item)` first, then the rest alphabetically."""
    order = list(order)
    return sorted(items, key=lambda item: (order.index(by(item)) if by(item) in order else len(order), by(item), item))


def _choose_runs(runs: pd.DataFrame, step):
    """(one row per (method, env, seed): the run directory used and its success at `step`, NaN without one; notes
    on the others). The one used is the run's own before an alias, with the evaluation, then the furthest."""
    ends = {'offline_end': runs.offline_steps, 'online_end': runs.offline_steps + runs.online_steps}
    target = ends[step] if step in ends else int(step)
    per_run = runs.assign(target=target, score=runs.success.where(runs.step == target)).groupby(
        ['run_dir', 'method', 'env', 'domain', 'seed', 'alias_of', 'target'], sort=False).agg(
        last=('step', 'max'), score=('score', 'max')).reset_index()
    per_run = per_run.assign(own=per_run.alias_of == '', has_score=per_run.score.notna()).sort_values(
        ['own', 'has_score', 'last'], ascending=False, na_position='last', kind='stable')
    notes = [f'{method} {env} seed {seed}: {len(group)} run directories; using {group.run_dir.iloc[0]} (the most '
             f'complete), not {", ".join(group.run_dir.iloc[1:])}.'
             for (method, env, seed), group in per_run[per_run.own].groupby(KEY, sort=False) if len(group) > 1]
    return per_run.drop_duplicates(KEY, keep='first'), notes


def _missing(chosen: pd.DataFrame, expected) -> pd.DataFrame:
    """Expected runs without a directory, and chosen runs without an evaluation at the step."""
    incomplete = chosen[chosen.score.isna()]
    reasons = [f'incomplete: no evaluation at step {int(run.target)} ('
               + ('no evaluation yet' if pd.isna(run.last) else f'eval.csv ends at step {int(run.last)}')
               + f'; {run.run_dir})' for run in incomplete.itertuples()]
    seen = set(chosen[KEY].itertuples(index=False, name=None))
    absent = [(*key, 'missing: no run directory') for key in expected if tuple(key) not in seen]
    rows = list(zip(incomplete.method, incomplete.env, incomplete.seed, reasons)) + absent
    return pd.DataFrame(rows, columns=KEY + ['reason']).sort_values(KEY, ignore_index=True)


@dataclass
class Table:
    step: str
    methods: List[str]
    domains: List[str]
    envs: List[str]
    scores: pd.DataFrame  # method, env, domain, seed, success (%): the runs averaged in
    per_task: pd.DataFrame  # (method, env) -> mean, std (ddof 1), n
    per_domain: pd.DataFrame  # (method, domain or 'all') -> mean, std over per-seed averages, n (complete seeds)
    iqm: pd.DataFrame  # (method, domain or 'all') -> iqm, low, high (95% CI), runs, tasks
    missing: pd.DataFrame  # method, env, seed, reason
    notes: List[str]
    protocols: Dict[str, int]  # protocol label -> run directories

    @property
    def protocol(self) -> Optional[str]:
        """The one protocol of the table's runs ('unrecorded' for runs that do not say), None when mixed."""
        return next(iter(self.protocols)) if len(self.protocols) == 1 else None


def _protocol_counts(protocols: Dict[str, int]) -> str:
    return ', '.join(f'{count} run{"s" * (count != 1)} '
                     + ('without a recorded protocol' if name == UNRECORDED else f'of --protocol={name}')
                     for name, count in protocols.items())


def _summaries(scores: pd.DataFrame, envs: List[str], domains: List[str], reps: int, seed: int):
    """(per_domain, iqm, notes) of the scores of every method. Per domain and "all", the std and the IQM are over
    the seeds that have every task (of the domain; of every domain the method has runs of)."""
    domain_rows, matrices, notes = [], {}, []
    for method, method_scores in scores.groupby('method', sort=False):
        by_seed = method_scores.pivot(index='seed', columns='env', values='success')
        groups = {domain: [env for env in envs if domain_name(env) == domain]
                  for domain in domains if domain in set(method_scores.domain)}
        complete = {name: by_seed.reindex(columns=group).dropna()
                    for name, group in {**groups, 'all': sum(groups.values(), [])}.items()}
        task_means = method_scores.groupby('env').success.mean()
        rows = [(method, domain, task_means.reindex(group).mean(), complete[domain].mean(axis=1).std(),
                 len(complete[domain])) for domain, group in groups.items()]
        per_seed = pd.DataFrame({domain: complete[domain].mean(axis=1) for domain in groups}).dropna().mean(axis=1)
        domain_rows += rows + [(method, 'all', np.mean([row[2] for row in rows]), per_seed.std(), len(per_seed))]
        matrices.update({(method, name): frame.to_numpy() for name, frame in complete.items() if len(frame)})
        if len(groups) < len(domains):
            notes.append(f'{method}: "all" averages {len(groups)} of {len(domains)} domains.')
    estimates = interval_estimates(matrices, metrics.aggregate_iqm, reps, seed) if matrices else {}
    iqm = pd.DataFrame([(*key, *estimates[key], *matrix.shape) for key, matrix in matrices.items()],
                       columns=['method', 'domain', 'iqm', 'low', 'high', 'runs', 'tasks'])
    per_domain = pd.DataFrame(domain_rows, columns=['method', 'domain', 'mean', 'std', 'n'])
    return per_domain.set_index(['method', 'domain']), iqm.set_index(['method', 'domain']), notes


def success_table(runs: pd.DataFrame, step='offline_end', expected=None, include_bc: bool = False,
                  bootstrap_reps: int = 5000, seed: int = 0) -> Table:
    """The success table at `step` ('offline_end', 'online_end' or a step number) of `load_runs`' frame. Runs
    `expected` ((method, env, seed) triples, default: the grid found) but absent or short of the step are `missing`."""
    runs = runs if include_bc else runs[runs.method != BC.label]
    chosen, duplicate_notes = _choose_runs(runs, step)
    if expected is None:
        expected = pd.MultiIndex.from_product([runs.method.unique(), runs.env.unique(), runs.seed.unique()])
    missing = _missing(chosen, [key for key in expected if include_bc or key[0] != BC.label])
    scores = chosen[chosen.score.notna()].rename(columns={'score': 'success'})[KEY + ['domain', 'success']]
    envs = _ordered(set(scores.env) | set(missing.env), DOMAINS, by=domain_name)
    domains = _ordered({domain_name(env) for env in envs}, DOMAINS)
    protocols = runs[runs.alias_of == ''].drop_duplicates('run_dir').protocol.fillna(UNRECORDED)
    protocols = protocols.value_counts().sort_index().to_dict()
    notes = [f'This table mixes runs of different protocols ({_protocol_counts(protocols)}): their numbers are not '
             'comparable (pass --protocol to keep one).'] if len(protocols) > 1 else []
    aliased = runs[runs.alias_of != ''][['method', 'alias_of', 'domain']].drop_duplicates()
    notes += [f'{method} on {domain}: the {alias_of} runs, which have its configuration there (protocols/domains.py).'
              for method, alias_of, domain in sorted(aliased.itertuples(index=False))]
    per_domain, iqm, domain_notes = _summaries(scores, envs, domains, bootstrap_reps, seed)
    per_task = scores.groupby(['method', 'env']).success.agg(['mean', 'std', 'count']).rename(columns={'count': 'n'})
    return Table(step=str(step), methods=_ordered(set(scores.method) | set(missing.method), METHODS), domains=domains,
                 envs=envs, scores=scores, per_task=per_task, per_domain=per_domain, iqm=iqm, missing=missing,
                 notes=notes + duplicate_notes + domain_notes, protocols=protocols)


def resolve_reference_dir(reference_dir: str = DEFAULT_REFERENCE_DIR) -> str:
    return os.path.normpath(os.path.join(REPO_ROOT, reference_dir))  # an absolute reference_dir stays itself


def load_reference(reference_dir: str = DEFAULT_REFERENCE_DIR) -> Dict[str, pd.DataFrame]:
    """{'qam_paper': frame, 'trqam_paper': frame, 'qam_paper_curves': frame} from the files of REFERENCE_FILES in
    `reference_dir`. The first two are indexed by (phase, method, domain) with the published `mean` and `std` (%; NaN
    where not published): the QAM paper's derived from its released curves (`reference.published_summary`), which
    the third holds as read (`reference.load_curves`)."""
    directory = resolve_reference_dir(reference_dir)
    paths = {source: os.path.join(directory, name) for source, name in REFERENCE_FILES.items()}
    absent = [path for path in paths.values() if not os.path.exists(path)]
    if absent:
        raise FileNotFoundError(f'{", ".join(absent)} missing: pass --reference_dir (default {DEFAULT_REFERENCE_DIR}, '
                                'relative to the repository root) or drop --reference.')
    curves = release.load_curves(paths['qam_paper'])
    trqam_paper = pd.read_csv(paths['trqam_paper']).rename(columns={'success_mean_pct': 'mean',
                                                                    'success_std_pct': 'std'})
    return {'qam_paper': release.published_summary(curves), 'qam_paper_curves': curves,
            'trqam_paper': trqam_paper.set_index(['phase', 'method', 'domain'])}


def published(reference, step, source: str) -> pd.DataFrame:
    """`source`'s numbers at `step`, indexed by (method, domain); empty where none were published."""
    frame = reference[source]
    return frame[frame.index.get_level_values('phase') == REFERENCE_PHASES.get(step)].droplevel('phase')


def _fmt(value) -> str:
    return '-' if value is None or not np.isfinite(value) else f'{value:.1f}'


def _cell(stats, max_n: int, reference=None) -> str:
    """'mean ± std', '(n=k)' when fewer seeds than elsewhere, ' / published mean ± std' with a reference (in
    whole percents, as the QAM paper's tables give them)."""
    text = '-'
    if stats is not None:
        text = _fmt(stats['mean']) + (f' ± {_fmt(stats["std"])}' if np.isfinite(stats['std']) else '')
        text += f' (n={int(stats["n"])})' if stats['n'] < max_n else ''
    return text + (f' / {release.whole_percent(reference["mean"])} ± {release.whole_percent(reference["std"])}'
                   if reference is not None else '')


def _row(frame: pd.DataFrame, key):
    return frame.loc[key] if key in frame.index else None


def _protocol_line(table: Table) -> str:
    if not table.protocols:
        return ''
    if table.protocol is None:
        return f'**Mixed protocols**: {_protocol_counts(table.protocols)}; their numbers are not comparable.'
    if table.protocol == UNRECORDED:
        return 'Protocol: not recorded by these runs (made before main.py had --protocol).'
    settings = PROTOCOLS.get(table.protocol)
    return f'Protocol: --protocol={table.protocol}' + (f' ({settings.description}).' if settings else '.')


def _reference_note(reference, table: Table) -> str:
    if reference is None:
        return ''
    if table.step not in REFERENCE_PHASES:
        return ' No published numbers exist for this step.'
    sources = REFERENCE_OF_PROTOCOL.get(table.protocol, tuple(REFERENCE_FILES))
    if not sources:
        return ' No published numbers beside runs of --protocol=none: they reproduce neither paper.'
    note = ''
    if 'qam_paper' in sources:
        note += (' After " / ": the QAM paper (12 seeds, no BC pre-training, 1M offline steps'
                 + (' + 500K online' if table.step == 'online_end' else '') + ')'
                 + (', whose protocol is --protocol=qam' if len(sources) > 1 else '') + '.')
    if 'trqam_paper' in sources and len(published(reference, table.step, 'trqam_paper')):
        note += (' The TRQAM paper row is its aggregate over all 50 tasks (8 seeds, after BC pre-training'
                 + (', --protocol=trqam' if len(sources) > 1 else '') + ').')
    elif sources == ('trqam_paper',):
        note += ' The TRQAM paper published no numbers for this step (only its offline aggregate).'
    if set(table.domains) != set(DOMAINS) or len(table.envs) != len(DOMAINS) * 5:
        note += (f' The published "all" values average all 50 tasks; ours average the {len(table.envs)} tasks '
                 f'of the {len(table.domains)} domains above.')
    return note


def table_frames(table: Table, reference=None) -> Dict[str, pd.DataFrame]:
    """The tables' cells as text: 'domains' (per domain, "all", the TRQAM paper's row), 'iqm' (if any), 'tasks'."""
    sources = REFERENCE_OF_PROTOCOL.get(table.protocol, tuple(REFERENCE_FILES)) if reference is not None else ()
    papers = {source: published(reference, table.step, source) for source in sources}
    qam_paper = papers.get('qam_paper')
    rows = {domain: [_cell(_row(table.per_domain, (m, domain)), table.per_domain.n.max(),
                           None if qam_paper is None else _row(qam_paper, (m, domain))) for m in table.methods]
            for domain in table.domains + ['all']}
    if len(papers.get('trqam_paper', [])):
        row = papers['trqam_paper'].xs('all', level='domain')['mean']
        rows[f'all, TRQAM paper ({table.step.split("_")[0]}, 50 tasks, 8 seeds)'] = [
            f'{row[m]:g}' if m in row.index else '' for m in table.methods]
    iqm = {domain: [f'{_fmt(v.iqm)} [{_fmt(v.low)}, {_fmt(v.high)}] ({v.runs:.0f}x{v.tasks:.0f})'
                    if (v := _row(table.iqm, (m, domain))) is not None else '-' for m in table.methods]
           for domain in table.domains + ['all']}
    tasks = {env: [_cell(_row(table.per_task, (m, env)), table.per_task.n.max()) for m in table.methods]
             for env in table.envs}
    tables = {'domains': (rows, 'domain'), 'iqm': (iqm, 'domain'), 'tasks': (tasks, 'task')}
    return {name: pd.DataFrame.from_dict(cells, orient='index', columns=table.methods).rename_axis(first).reset_index()
            for name, (cells, first) in tables.items() if name != 'iqm' or len(table.iqm)}


def to_markdown(table: Table, reference=None) -> str:
    """Markdown: per domain and "all", IQM, per task, notes, missing runs. `reference`: `load_reference()`."""
    markdown = {name: frame.to_markdown(index=False, disable_numparse=True)
                for name, frame in table_frames(table, reference).items()}
    protocol_line, step = _protocol_line(table), STEP_TITLES.get(table.step, f'at step {table.step}')
    lines = [f'## Success rate (%) {step}', ''] + ([protocol_line, ''] if protocol_line else []) + [
        'Mean ± sample std over seeds; per domain and "all" (the mean of the domain means) the std is over the '
        'per-seed averages, from the seeds that have every task; (n=k): fewer seeds than elsewhere.'
        + _reference_note(reference, table), '', markdown['domains']]
    missing = [f'- {m} {env} seed {s}: {reason}' for m, env, s, reason in table.missing.itertuples(index=False)]
    sections = {
        '### IQM (%) with 95% stratified bootstrap CI over seeds (rliable); (runs x tasks)': markdown.get('iqm'),
        '### Per task': markdown['tasks'], '### Notes': '\n'.join(f'- {note}' for note in table.notes),
        f'### Missing or incomplete runs ({len(missing)}), not averaged in': '\n'.join(missing) or '- none'}
    lines += [part for title, body in sections.items() if body for part in ('', title, '', body)]
    return '\n'.join(lines) + '\n'


def to_latex(table: Table, reference=None) -> str:
    """LaTeX (booktabs) tables: per domain with "all" (and the published rows), IQM, per task."""
    frames = table_frames(table, reference)
    step = STEP_TITLES.get(table.step, f'at step {table.step}')
    captions = {'domains': f'Success rate (%) {step}: mean ± std over seeds. {_protocol_line(table)}'.replace('**', '')
                + _reference_note(reference, table),
                'iqm': f'IQM (%) {step} with 95% stratified bootstrap confidence intervals.',
                'tasks': f'Success rate (%) per task {step}.'}
    blocks = [frames[name].to_latex(index=False, escape=True, caption=caption.translate(LATEX_ESCAPES), position='t')
              .replace('±', r'$\pm$') for name, caption in captions.items() if name in frames]
    return '\n'.join(blocks)


def to_json(table: Table) -> dict:
    return {'step': table.step, 'methods': table.methods, 'domains': table.domains, 'envs': table.envs,
            **{name: getattr(table, name).reset_index().to_dict('records')
               for name in ('per_task', 'per_domain', 'iqm')},
            'missing': table.missing.to_dict('records'), 'notes': table.notes, 'protocols': table.protocols}


def write_tables(table: Table, out_dir: str, suffix: str = '', reference=None) -> List[str]:
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f'results_{suffix or table.step}')
    texts = {f'{stem}.md': to_markdown(table, reference), f'{stem}.tex': to_latex(table, reference),
             f'{stem}.json': json.dumps(to_json(table), indent=2)}
    for path, text in texts.items():
        with open(path, 'w') as f:
            f.write(text)
    return list(texts)


def _save(fig, path_stem: str, formats=('png', 'pdf')) -> List[str]:
    paths = [f'{path_stem}.{extension}' for extension in formats]
    fig.tight_layout()
    for path in paths:
        fig.savefig(path, dpi=100, bbox_inches='tight')
    plt.close(fig)
    return paths


def score_matrices(table: Table) -> Dict[str, np.ndarray]:
    """{method: seeds x tasks success (%)} over every task of the table, from the seeds that have them all."""
    matrices = {method: scores.pivot(index='seed', columns='env', values='success').reindex(columns=table.envs).dropna()
                for method, scores in table.scores.groupby('method')}
    return {method: matrices[method].to_numpy() for method in table.methods if len(matrices.get(method, []))}


def plot_comparison(table: Table, out_dir: str, reps: int = 1000, seed: int = 0) -> List[str]:
    """rliable's figures, PNG and PDF: `iqm_{step}` (IQM over all tasks with its 95% CI), `profile_{step}` (the
    fraction of runs above each success rate, with CIs) and `improvement_{step}` (the probability that the first
    method improves on each other one on a task, with CIs)."""
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, '{}_' + table.step)
    iqm = table.iqm.xs('all', level='domain').reindex(table.methods).dropna() if len(table.iqm) else table.iqm
    paths = []
    if len(iqm):
        fig, _ = plot_utils.plot_interval_estimates(
            {m: [row.iqm] for m, row in iqm.iterrows()},
            {m: np.array([[row.low], [row.high]]) for m, row in iqm.iterrows()},
            metric_names=['IQM over all tasks'], algorithms=list(iqm.index[::-1]), xlabel='success (%)',
            subfigure_width=5, row_height=0.6)
        paths += _save(fig, stem.format('iqm'))
    matrices = score_matrices(table)
    if matrices:
        thresholds = np.linspace(0.0, 100.0, 101)
        with _rliable(seed):
            profiles, intervals = library.create_performance_profile(matrices, thresholds, reps=reps)
        axis = plot_utils.plot_performance_profiles(
            profiles, thresholds, performance_profile_cis=intervals, figsize=(7, 4), xticks=[0, 25, 50, 75, 100],
            xlabel=r'success rate $\tau$ (%)', ylabel=r'fraction of runs with success $> \tau$')
        axis.legend(fontsize=9, loc='upper right')
        paths += _save(axis.figure, stem.format('profile'))
    first, *others = list(matrices) or ['']
    if others:
        estimates = interval_estimates({f'{first},{other}': (matrices[first], matrices[other]) for other in others},
                                       metrics.probability_of_improvement, reps, seed)
        axis = plot_utils.plot_probability_of_improvement(
            {pair: [point] for pair, (point, _, _) in estimates.items()},
            {pair: np.array([[low], [high]]) for pair, (_, low, high) in estimates.items()},
            figsize=(5, 0.6 + 0.5 * len(others)))
        paths += _save(axis.figure, stem.format('improvement'))
    return paths


def seed_curve(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """Per step: `mean` and `std` over seeds of the per-seed average (over the runs' tasks) of column `key`."""
    per_seed = frame[np.isfinite(frame[key].astype(float))].groupby(['seed', 'step'])[key].mean()
    return per_seed.groupby(level='step').agg(mean='mean', std=lambda values: values.std(ddof=0))


def _plot_success(axis, domain_runs: pd.DataFrame, domain: str):
    for method in _ordered(domain_runs.method.unique(), METHODS):
        runs = domain_runs[domain_runs.method == method]
        if len(curve := seed_curve(runs, 'success')):
            line, = axis.plot(curve.index, curve['mean'], marker='o', markersize=3, label=method)
            axis.fill_between(curve.index, curve['mean'] - curve['std'], curve['mean'] + curve['std'],
                              color=line.get_color(), alpha=0.15)
            for step in sorted(set(runs.offline_steps[runs.online_steps > 0])):
                axis.axvline(step, color='grey', linestyle='--', linewidth=1)
    axis.set(xlabel='step', ylabel='success (%)')
    axis.set_title(f'{domain} (mean over seeds of the task average; band: std over seeds)', fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc='best')


def _plot_duals(axes, trqam_runs: pd.DataFrame):
    runs = trqam_runs.drop_duplicates('run_dir')
    paths = {layout.path(run_dir, layout.TRAIN_CSV): seed for run_dir, seed in zip(runs.run_dir, runs.seed)}
    train = pd.concat([pd.DataFrame(read_csv(path)).assign(seed=seed) for path, seed in paths.items()
                       if os.path.exists(path)] or [pd.DataFrame()])
    for axis, key in zip(axes, DUAL_KEYS):
        if key in train and len(curve := seed_curve(train, key)):
            axis.plot(curve.index, curve['mean'])
            axis.fill_between(curve.index, curve['mean'] - curve['std'], curve['mean'] + curve['std'], alpha=0.2)
        axis.set(title=key.split('/')[-1] + (' (lambda_eff)' if key.endswith('lambda') else ''), xlabel='step')
        axis.grid(alpha=0.3)
        if key.endswith(('path_kl', 'kl_ema')):
            axis.set_yscale('symlog', linthresh=1e-3)


def plot_curves(runs: pd.DataFrame, out_dir: str, include_bc: bool = False) -> List[str]:
    """PNG files: success vs step per method for each domain (`curves_{domain}.png`) and, for TRQAM runs, the
    dual variables (`trqam_dual_{domain}.png`: lambda_eff, path KL, its EMA and the budget vs step)."""
    os.makedirs(out_dir, exist_ok=True)
    runs = runs if include_bc else runs[runs.method != BC.label]
    paths = []
    for domain in _ordered(runs.domain.unique(), DOMAINS):
        fig, axis = plt.subplots(figsize=(7, 4))
        _plot_success(axis, runs[runs.domain == domain], domain)
        paths += _save(fig, os.path.join(out_dir, f'curves_{domain}'), formats=('png',))
        trqam = runs[(runs.domain == domain) & (runs.method == 'TRQAM') & (runs.alias_of == '')]
        if len(trqam):
            fig, axes = plt.subplots(1, len(DUAL_KEYS), figsize=(4 * len(DUAL_KEYS), 3.5))
            _plot_duals(axes, trqam)
            fig.suptitle(f'TRQAM dual variables, {domain}')
            paths += _save(fig, os.path.join(out_dir, f'trqam_dual_{domain}'), formats=('png',))
    return paths


# ---------------------------------------------------------------------------------------------------------------------
# Beside the QAM paper's released runs (`--reference`, experiments/reference.py): per task and domain our seeds'
# curves over the published seeds' spread, and the IQM of both at the end of each phase.
# ---------------------------------------------------------------------------------------------------------------------

def compared_to_qam_paper(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs (not BC) whose protocol reproduces the QAM paper, or that record none (REFERENCE_OF_PROTOCOL)."""
    every = tuple(REFERENCE_FILES)
    keep = runs.protocol.map(lambda protocol: 'qam_paper' in REFERENCE_OF_PROTOCOL.get(protocol, every))
    return runs[keep.astype(bool) & (runs.method != BC.label) & runs.success.notna()]


def release_steps(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.Series:
    """Our runs' steps on the release's axis: each phase of a run stretched to the release's length for its method
    (1M offline, then 500K online; online only where the release has no offline phase), so a run of the paper's
    lengths keeps its steps and a short one spans the published curves."""
    offline_methods = set(curves.method[curves.phase == 'offline'])
    release_offline = runs.method.isin(offline_methods) * float(release.PHASE_STEPS['offline'])
    offline, online, step = (runs[key].astype(float) for key in ('offline_steps', 'online_steps', 'step'))
    in_offline = (step <= offline) & (offline > 0)
    offline_x = step / offline.where(offline > 0, 1.0) * release_offline
    online_x = release_offline.where(offline > 0, 0.0) + (step - offline) / online.where(online > 0, 1.0) * float(
        release.PHASE_STEPS['online'])
    return offline_x.where(in_offline, online_x)


def published_band(curves: pd.DataFrame, name: str, method: str) -> pd.DataFrame:
    """Per step of the release: the mean, quartiles, min and max over its seeds of the success (%) of `name`."""
    rows = curves[(curves.name == name) & (curves.method == method)]
    success = (100.0 * rows.success).groupby(rows.step)
    return pd.DataFrame({'mean': success.mean(), 'q25': success.quantile(0.25), 'q75': success.quantile(0.75),
                         'min': success.min(), 'max': success.max()})


def _plot_reference_panel(axis, ours: pd.DataFrame, band: pd.DataFrame, color, title: str):
    """The published seeds' min-max and interquartile bands and mean, under our seeds' curves and their mean
    (steps in millions)."""
    steps = band.index / 1e6
    axis.fill_between(steps, band['min'], band['max'], color='grey', alpha=0.2, linewidth=0, label='published: min-max')
    axis.fill_between(steps, band.q25, band.q75, color='grey', alpha=0.45, linewidth=0, label='published: IQR')
    axis.plot(steps, band['mean'], color='black', linewidth=1.2, label='published: mean')
    for _, curve in ours.groupby('seed'):
        axis.plot(curve.x / 1e6, curve.success, color=color, linewidth=0.8, alpha=0.7)
    mean = ours.groupby('x').success.mean()
    axis.plot(mean.index / 1e6, mean.to_numpy(), color=color, linewidth=2, marker='o', markersize=3,
              label='ours: mean (thin: seeds)')
    if band.index.max() > release.PHASE_STEPS['offline']:  # both phases: the end of the offline one
        axis.axvline(release.PHASE_STEPS['offline'] / 1e6, color='grey', linestyle='--', linewidth=1)
    axis.set_title(title, fontsize=8)
    axis.set_ylim(-2, 102)
    axis.grid(alpha=0.3)


def plot_reference_curves(runs: pd.DataFrame, curves: pd.DataFrame, out_dir: str) -> List[str]:
    """PNG files `reference_{domain}.png`: a column per method, a row for the domain (the per-seed average over our
    tasks of it, beside the release's domain rows) and one per task, our seeds over the published seeds' spread."""
    os.makedirs(out_dir, exist_ok=True)
    runs = compared_to_qam_paper(runs)
    runs = runs[runs.env.isin(set(curves.name)) & runs.method.isin(set(curves.method))]
    runs = runs.assign(x=release_steps(runs, curves)).drop_duplicates(['method', 'env', 'seed', 'step'])
    paths = []
    for domain in _ordered(runs.domain.unique(), DOMAINS):
        domain_runs = runs[runs.domain == domain]
        methods = _ordered(domain_runs.method.unique(), METHODS)
        envs = sorted(domain_runs.env.unique())
        fig, axes = plt.subplots(1 + len(envs), len(methods), figsize=(3.4 * len(methods), 2.4 * (1 + len(envs))),
                                 squeeze=False, sharex='col')
        for column, method in enumerate(methods):
            own = domain_runs[domain_runs.method == method]
            color = f'C{list(METHODS).index(method) % 10 if method in METHODS else column % 10}'
            average = own.groupby(['seed', 'x']).success.mean().reset_index()
            _plot_reference_panel(axes[0, column], average, published_band(curves, domain, method), color,
                                  f'{method}, {domain} ({own.env.nunique()} of our tasks)')
            for row, env in enumerate(envs, start=1):
                _plot_reference_panel(axes[row, column], own[own.env == env], published_band(curves, env, method),
                                      color, f'{method}, {env}')
        axes[0, 0].legend(fontsize=7, loc='best')
        for axis in axes[-1]:
            axis.set_xlabel('step (M; our phases stretched to the release\'s)', fontsize=8)
        for axis in axes[:, 0]:
            axis.set_ylabel('success (%)')
        paths += _save(fig, os.path.join(out_dir, f'reference_{domain}'), formats=('png',))
    return paths


def reference_iqm(runs: pd.DataFrame, curves: pd.DataFrame, reps: int = 5000, seed: int = 0) -> pd.DataFrame:
    """At the end of each phase (release.PHASE_ENDS) and for each method: the IQM over runs x tasks with its 95%
    stratified-bootstrap CI of our runs and of the release's runs on the same tasks (those our seeds all have)."""
    runs, matrices = compared_to_qam_paper(runs), {}
    runs = runs[runs.env.isin(set(curves.name))]
    for step in release.PHASE_ENDS:
        chosen, _ = _choose_runs(runs, step)
        for method, own in chosen[chosen.score.notna()].groupby('method', sort=False):
            ours = own.pivot(index='seed', columns='env', values='score').dropna()
            published = release.phase_end_matrix(curves, step, method, list(ours.columns))
            if len(ours) and len(published):
                matrices.update({(step, method, 'ours'): ours.to_numpy(), (step, method, 'published'): published})
    estimates = interval_estimates(matrices, metrics.aggregate_iqm, reps, seed) if matrices else {}
    rows = [(*key, *estimates[key], *matrix.shape) for key, matrix in matrices.items()]
    return pd.DataFrame(rows, columns=['step', 'method', 'source', 'iqm', 'low', 'high', 'runs', 'tasks'])


def reference_markdown(comparison: pd.DataFrame) -> str:
    """The IQM comparison as Markdown: a row per method, ours and published at each phase's end."""
    lines = ['## IQM (%) beside the QAM paper\'s released runs, on the tasks of ours', '',
             'IQM over runs x tasks with its 95% stratified bootstrap CI (rliable); (runs x tasks). Published: the '
             'release\'s 12 seeds on the same tasks, at the end of its 1M offline and 500K online steps; ours: at '
             'the end of each run\'s phases.', '']
    if comparison.empty:
        return '\n'.join(lines + ['No run of ours has an evaluation at a phase end on a task of the release.']) + '\n'
    cells = {(row.step, row.method, row.source): f'{_fmt(row.iqm)} [{_fmt(row.low)}, {_fmt(row.high)}] '
             f'({row.runs:.0f}x{row.tasks:.0f})' for row in comparison.itertuples()}
    columns = [(step, source) for step in release.PHASE_ENDS for source in ('ours', 'published')]
    frame = pd.DataFrame([[method] + [cells.get((step, method, source), '-') for step, source in columns]
                          for method in _ordered(comparison.method.unique(), METHODS)],
                         columns=['method'] + [f'{step}: {source}' for step, source in columns])
    return '\n'.join(lines + [frame.to_markdown(index=False, disable_numparse=True)]) + '\n'


def plot_reference_iqm(comparison: pd.DataFrame, out_dir: str) -> List[str]:
    """`reference_iqm.png`: per phase end, each method's IQM and CI, ours above the published one."""
    methods = _ordered(comparison.method.unique(), METHODS)
    fig, axes = plt.subplots(1, len(release.PHASE_ENDS), figsize=(10, 0.6 + 0.6 * len(methods)), squeeze=False)
    for axis, step in zip(axes[0], release.PHASE_ENDS):
        for offset, source, color in ((0.15, 'ours', 'C0'), (-0.15, 'published', 'black')):
            rows = comparison[(comparison.step == step) & (comparison.source == source)].set_index('method')
            rows = rows.reindex([m for m in methods if m in rows.index])
            y = np.array([len(methods) - 1 - methods.index(m) for m in rows.index]) + offset
            axis.errorbar(rows.iqm, y, xerr=[rows.iqm - rows.low, rows.high - rows.iqm], fmt='o', color=color,
                          capsize=3, label=source)
        axis.set(yticks=range(len(methods)), yticklabels=methods[::-1], xlim=(-2, 102), xlabel='IQM success (%)',
                 title=step.replace('_', ' '))
        axis.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc='best')
    return _save(fig, os.path.join(out_dir, 'reference_iqm'), formats=('png',))


def write_reference_comparison(runs: pd.DataFrame, curves: pd.DataFrame, out_dir: str, reps: int,
                               plots: bool = True) -> List[str]:
    """The IQM comparison (Markdown, JSON, printed) and, with `plots`, its figure and the curves per domain."""
    os.makedirs(out_dir, exist_ok=True)
    comparison = reference_iqm(runs, curves, reps)
    text = reference_markdown(comparison)
    print(text)
    stem = os.path.join(out_dir, 'reference_iqm')
    with open(f'{stem}.md', 'w') as f:
        f.write(text)
    with open(f'{stem}.json', 'w') as f:
        json.dump(comparison.to_dict('records'), f, indent=2)
    written = [f'{stem}.md', f'{stem}.json']
    if plots and len(comparison):
        written += plot_reference_iqm(comparison, out_dir)
    return written + (plot_reference_curves(runs, curves, out_dir) if plots else [])


def parse_step(text: str):
    if text in STEP_TITLES:
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(f'--step must be offline_end, online_end or a step number, got {text!r}.') from None


def define_flags():
    flags.DEFINE_string('runs_dir', 'runs', 'Folder searched recursively for run directories (flags.json).')
    flags.DEFINE_string('step', 'offline_end', 'offline_end, online_end or a step number.')
    flags.DEFINE_string('out_dir', None, 'Where tables and figures go (default: {runs_dir}/aggregate).')
    flags.DEFINE_bool('reference', False, 'Put the published numbers of each protocol\'s paper beside ours (for the '
                      'QAM paper also its released runs: curves and IQM at the phase ends).')
    flags.DEFINE_enum('protocol', None, list(PROTOCOLS), 'Only the runs of this --protocol (default: every run).')
    flags.DEFINE_string('reference_dir', DEFAULT_REFERENCE_DIR, 'Folder of the published numbers.')
    flags.DEFINE_enum('expect', None, list(PRESETS), 'Expected runs: a sweep preset\'s, under --protocol.')
    flags.DEFINE_bool('include_bc', False, 'Also report the BC pre-training runs.')
    flags.DEFINE_integer('bootstrap_reps', 5000, 'Bootstrap replications of the IQM confidence intervals.')
    flags.DEFINE_integer('figure_reps', 1000, 'Bootstrap replications of the figures\' confidence intervals.')
    flags.DEFINE_bool('plots', True, 'Write the figures.')


def main(_):
    options = flags.FLAGS
    step = parse_step(options.step)
    reference = load_reference(options.reference_dir) if options.reference else None
    runs = load_runs(options.runs_dir, protocol=options.protocol)
    expected = expected_runs(options.expect, protocol=options.protocol) if options.expect else None
    table = success_table(runs, step=step, expected=expected, include_bc=options.include_bc,
                          bootstrap_reps=options.bootstrap_reps)
    out_dir = options.out_dir or os.path.join(options.runs_dir, 'aggregate')
    print(to_markdown(table, reference))
    written = write_tables(table, out_dir, reference=reference)
    if options.plots:
        written += plot_comparison(table, out_dir, options.figure_reps) + plot_curves(runs, out_dir, options.include_bc)
    if reference is not None and 'qam_paper' in REFERENCE_OF_PROTOCOL.get(table.protocol, tuple(REFERENCE_FILES)):
        written += write_reference_comparison(runs, reference['qam_paper_curves'], out_dir, options.bootstrap_reps,
                                              options.plots)
    print(f'{runs[runs.alias_of == ""].run_dir.nunique()} run directories; wrote {", ".join(written)}.')


if __name__ == '__main__':
    define_flags()
    app.run(main)
