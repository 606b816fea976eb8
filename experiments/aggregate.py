"""Results tables and figures from run directories (main.py's `{save_dir}/{run_name}/`).

    python experiments/aggregate.py --runs_dir=runs/paper --step=offline_end --reference
    python experiments/aggregate.py --runs_dir=runs/cpu_preset --step=online_end --expect=cpu

Every run's evaluations (runner.layout's flags.json and eval.csv) go into one tidy pandas DataFrame, one row per
run and evaluation step. For the chosen step (`offline_end`: the evaluation at step == offline_steps of each run;
`online_end`: at offline_steps + online_steps; or a step number) the tables give the success rate (%) per task, per
domain and "all" (the mean of the domain means), as the mean and sample standard deviation over seeds (per domain
and "all": over the per-seed averages of the tasks / domains, from the seeds that have every task), and the IQM over
runs x tasks with its 95% stratified-bootstrap confidence interval (rliable). Runs that are expected but absent, or
whose eval.csv stops before the step, are listed and never averaged in. Beside the tables (Markdown, LaTeX, JSON)
go rliable's figures (PNG and PDF): the IQM intervals, the performance profiles and the probability that the first
method of the table improves on each other one; and the learning curves per domain (PNG), with TRQAM's dual
variables from train.csv.

Methods are labelled from the agent config by the registry (`protocols.methods.method_of`); --bc_only runs are BC.
A run whose configuration is also another method's on its domain under its protocol (`Method.is_configured_as`:
QAM on scene / cube-double, where the QAM paper's QAM-E has edit_scale 0) counts for both.

Protocols: each run's flags.json records main.py's `--protocol` (runs made before it existed are "unrecorded"). A
table says which protocol its runs used, and says so prominently when it mixes several (pass `--protocol` to keep
one). `--reference` puts beside a table the published numbers of the paper its protocol reproduces (the QAM paper's
per domain beside qam runs, the TRQAM paper's aggregate row beside trqam runs, both when unrecorded or mixed), read
from experiments/reference_results/ (its README says where they come from).

rliable needs `arch<8`, whose 7.x releases do not import under pandas 3: requirements.txt pins pandas 2.
"""

import contextlib
import glob
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

if __package__ in (None, ''):  # `python experiments/aggregate.py` from the repository root.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from envs import ogbench_data, robomimic  # noqa: E402
from protocols import domains as domains_lib  # noqa: E402
from protocols.methods import BC, METHODS, method_of, paper_methods  # noqa: E402
from runner import layout  # noqa: E402
from runner.logs import read_csv  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_REFERENCE_DIR = 'experiments/reference_results'  # relative to the repository root
REFERENCE_FILES = {'qam_paper': 'qam_paper_success.csv', 'trqam_paper': 'trqam_paper_aggregate.csv'}
REFERENCE_PHASES = {'offline_end': 'offline_1M', 'online_end': 'online_end_1.5M'}
# The published numbers each protocol reproduces (docs/algorithms.md section 9.1); others get both, labelled.
REFERENCE_OF_PROTOCOL = {'qam': ('qam_paper',), 'trqam': ('trqam_paper',), 'none': ()}
DUAL_KEYS = ('training/dual/lambda', 'training/dual/path_kl', 'training/dual/kl_ema', 'training/dual/kl_budget')
UNRECORDED = 'unrecorded'
KEY = ['method', 'env', 'seed']


# Runs.


def method_label(agent_config: dict, bc_only: bool = False) -> str:
    if bc_only:
        return BC.label
    try:
        return method_of(agent_config).label
    except ValueError:  # an agent this checkout does not register
        return str(agent_config.get('agent_name', '')).upper()


def task_name_problem(env_name: str) -> Optional[str]:
    """Why `env_name` is not one task of a table (envs/ parses the names), None when it is one."""
    try:
        (robomimic if robomimic.is_robomimic(env_name) else ogbench_data).parse_env_name(env_name)
    except ValueError as error:
        return str(error).splitlines()[0]
    return None


def aliases(method: str, config: dict, env_name: str, protocol: Optional[str]) -> List[str]:
    """Other paper methods whose configuration on the run's domain under its protocol this run's is."""
    if method == BC.label or domains_lib.domain_name(env_name) not in domains_lib.DOMAINS:
        return []
    return [label for label in paper_methods()
            if label != method and METHODS[label].is_configured_as(config, env_name, protocol, method)]


def load_run(run_dir: str, with_aliases: bool = True) -> Optional[pd.DataFrame]:
    """One row per evaluation of the run (one row with NaN step if none), repeated under each alias."""
    with open(os.path.join(run_dir, layout.FLAGS_FILE)) as f:
        flags = json.load(f)
    config = flags.get('agent')
    if not isinstance(config, dict) or 'env_name' not in flags:
        return None  # not a main.py run directory
    env_name, bc_only = flags['env_name'], bool(flags.get('bc_only'))
    eval_path = os.path.join(run_dir, layout.EVAL_CSV)
    evals = pd.DataFrame(read_csv(eval_path) if os.path.exists(eval_path) else [])
    if layout.SUCCESS_KEY not in evals:
        evals = evals.assign(**{layout.SUCCESS_KEY: np.nan})
    evals = evals.reindex(columns=['step', layout.SUCCESS_KEY]).sort_values('step')
    if evals.empty:
        evals = pd.DataFrame({'step': [np.nan], layout.SUCCESS_KEY: [np.nan]})
    method = method_label(config, bc_only)
    frame = evals.rename(columns={layout.SUCCESS_KEY: 'success'}).assign(
        success=lambda f: 100.0 * f.success.where(np.isfinite(f.success)), run_dir=run_dir, method=method,
        alias_of='', env=env_name, domain=domains_lib.domain_name(env_name), seed=int(flags.get('seed', 0)),
        offline_steps=int(flags.get('offline_steps') or 0),
        online_steps=0 if bc_only else int(flags.get('online_steps') or 0), protocol=flags.get('protocol'))
    others = aliases(method, config, env_name, flags.get('protocol')) if with_aliases else []
    return pd.concat([frame] + [frame.assign(method=label, alias_of=method) for label in others], ignore_index=True)


def load_runs(runs_dir: str, with_aliases: bool = True, protocol: Optional[str] = None) -> pd.DataFrame:
    """The evaluations of every run directory under `runs_dir` (recursively: folders with main.py's flags.json),
    as one tidy frame; with `protocol`, only the runs made under that --protocol. With `with_aliases`, a run also
    appears under every other method whose configuration it is (`alias_of` names its own method)."""
    frames = []
    for path in sorted(glob.glob(os.path.join(runs_dir, '**', layout.FLAGS_FILE), recursive=True)):
        frame = load_run(os.path.dirname(path), with_aliases)
        if frame is None or (protocol is not None and frame.protocol.iloc[0] != protocol):
            continue
        problem = task_name_problem(frame.env.iloc[0])
        if problem:
            print(f'Skipped {os.path.dirname(path)}: {problem}', file=sys.stderr)
            continue
        frames.append(frame)
    columns = ['run_dir', 'method', 'alias_of', 'env', 'domain', 'seed', 'protocol', 'offline_steps', 'online_steps',
               'step', 'success']
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


# Statistics.


@contextlib.contextmanager
def _rliable(seed: int = 0):
    """rliable quiet (it logs every estimate at INFO) and reproducible: its stratified bootstrap draws from numpy's
    global generator whatever random_state it is given, so that generator is seeded here and then restored."""
    from absl import logging as absl_logging

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
    from rliable import library

    with _rliable(seed):
        points, intervals = library.get_interval_estimates(
            score_dict, lambda *scores: np.atleast_1d(metric(*scores)), reps=reps)
    return {key: (float(points[key][0]), float(intervals[key][0][0]), float(intervals[key][1][0]))
            for key in score_dict}


def _rank(item, order) -> tuple:
    """Sort key: the registry's or the domain table's order first, then the rest alphabetically."""
    order = list(order)
    return (order.index(item) if item in order else len(order), item)


def _ordered(items, order) -> list:
    return sorted(items, key=lambda item: _rank(item, order))


def _env_order(envs) -> list:
    return sorted(envs, key=lambda env: (_rank(domains_lib.domain_name(env), domains_lib.DOMAINS), env))


def _target_steps(runs: pd.DataFrame, step) -> pd.Series:
    if step == 'offline_end':
        return runs.offline_steps
    if step == 'online_end':
        return runs.offline_steps + runs.online_steps
    return pd.Series(int(step), index=runs.index)


def run_scores(runs: pd.DataFrame, step) -> pd.DataFrame:
    """One row per run directory and label: its success at `step` (NaN when eval.csv has none), sorted so that
    among several directories of one (method, env, seed) the one to use comes first: its own run before an
    alias, one with the evaluation before one without, then the one that got furthest."""
    runs = runs.assign(target=_target_steps(runs, step))
    at_step = runs.success.where(runs.step == runs.target)
    per_run = runs.assign(score=at_step).groupby(['run_dir', 'method'], sort=False).agg(
        env=('env', 'first'), seed=('seed', 'first'), alias_of=('alias_of', 'first'), protocol=('protocol', 'first'),
        target=('target', 'first'), last=('step', 'max'), score=('score', 'max')).reset_index()
    per_run['own'] = per_run.alias_of == ''
    return per_run.assign(has_score=per_run.score.notna()).sort_values(
        ['own', 'has_score', 'last'], ascending=False, na_position='last', kind='stable')


def _choose_runs(per_run: pd.DataFrame):
    """(the run used per (method, env, seed), notes naming the other directories of a run)."""
    notes = []
    for (method, env, seed), group in per_run[per_run.own].groupby(KEY, sort=False):
        if len(group) > 1:
            notes.append(f'{method} {env} seed {seed}: {len(group)} run directories; using {group.run_dir.iloc[0]} '
                         f'(the most complete), not {", ".join(group.run_dir.iloc[1:])}.')
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
    protocols: Dict[str, int] = field(default_factory=dict)  # protocol label -> run directories

    @property
    def protocol(self) -> Optional[str]:
        """The one protocol of the table's runs ('unrecorded' for runs that do not say), None when mixed."""
        return next(iter(self.protocols)) if len(self.protocols) == 1 else None


def _protocol_counts(protocols: Dict[str, int]) -> str:
    return ', '.join(f'{count} run{"s" * (count != 1)} ' + (f'of --protocol={name}' if name != UNRECORDED else
                                                            'without a recorded protocol')
                     for name, count in protocols.items())


def _method_summary(scores: pd.DataFrame, envs: List[str]):
    """(rows of per_domain, {domain or 'all': complete seeds x tasks matrix}) of one method's scores."""
    by_seed = scores.pivot(index='seed', columns='env', values='success')
    task_means = scores.groupby('env').success.mean()
    rows, matrices, seed_domain = [], {}, {}
    for domain in _ordered({domains_lib.domain_name(env) for env in scores.env}, domains_lib.DOMAINS):
        domain_envs = [env for env in envs if domains_lib.domain_name(env) == domain]
        complete = by_seed.reindex(columns=domain_envs).dropna()
        seed_domain[domain] = complete.mean(axis=1)
        rows.append((domain, task_means.reindex(domain_envs).mean(), seed_domain[domain].std(), len(complete)))
        if len(complete):
            matrices[domain] = complete.to_numpy()
    per_seed_all = pd.DataFrame(seed_domain).dropna().mean(axis=1)
    rows.append(('all', np.mean([row[1] for row in rows]), per_seed_all.std(), len(per_seed_all)))
    method_envs = [env for env in envs if domains_lib.domain_name(env) in seed_domain]
    if len(complete_all := by_seed.reindex(columns=method_envs).dropna()):
        matrices['all'] = complete_all.to_numpy()
    return rows, matrices


def _notes(runs: pd.DataFrame, protocols: Dict[str, int]) -> List[str]:
    """The protocol warning and which runs count under another method's label."""
    notes = [f'This table mixes runs of different protocols ({_protocol_counts(protocols)}): their numbers are not '
             'comparable (pass --protocol to keep one).'] if len(protocols) > 1 else []
    aliased = runs[runs.alias_of != ''][['method', 'alias_of', 'domain']].drop_duplicates()
    return notes + [f'{method} on {domain}: the {alias_of} runs, which have its configuration there '
                    '(protocols/domains.py).' for method, alias_of, domain in sorted(aliased.itertuples(index=False))]


def _summaries(scores: pd.DataFrame, envs: List[str], domains: List[str], reps: int, seed: int):
    """(per_domain, iqm, notes) of the scores of every method."""
    from rliable import metrics

    domain_rows, matrices, notes = [], {}, []
    for method, method_scores in scores.groupby('method', sort=False):
        rows, method_matrices = _method_summary(method_scores, envs)
        domain_rows += [(method, *row) for row in rows]
        matrices.update({(method, domain): matrix for domain, matrix in method_matrices.items()})
        if len(rows) - 1 < len(domains):
            notes.append(f'{method}: "all" averages {len(rows) - 1} of {len(domains)} domains.')
    estimates = interval_estimates(matrices, metrics.aggregate_iqm, reps, seed) if matrices else {}
    iqm = pd.DataFrame([(*key, *estimates[key], *matrix.shape) for key, matrix in matrices.items()],
                       columns=['method', 'domain', 'iqm', 'low', 'high', 'runs', 'tasks'])
    per_domain = pd.DataFrame(domain_rows, columns=['method', 'domain', 'mean', 'std', 'n'])
    return per_domain.set_index(['method', 'domain']), iqm.set_index(['method', 'domain']), notes


def success_table(runs: pd.DataFrame, step='offline_end', expected=None, include_bc: bool = False,
                  bootstrap_reps: int = 5000, seed: int = 0) -> Table:
    """The success table at `step` ('offline_end', 'online_end' or a step number) of `load_runs`' frame.

    `expected`: (method, env, seed) triples that should exist (e.g. `experiments.presets.expected_runs()`); by
    default the full grid of the methods, tasks and seeds found. Absent runs, and runs without an evaluation at
    the step, are listed in `missing` and left out of every average.
    """
    runs = runs if include_bc else runs[runs.method != BC.label]
    chosen, duplicate_notes = _choose_runs(run_scores(runs, step))
    if expected is None:
        expected = pd.MultiIndex.from_product([runs.method.unique(), runs.env.unique(), runs.seed.unique()])
    missing = _missing(chosen, [key for key in expected if include_bc or key[0] != BC.label])
    scores = chosen[chosen.score.notna()].rename(columns={'score': 'success'})
    scores = scores.assign(domain=scores.env.map(domains_lib.domain_name))[KEY + ['domain', 'success']]
    envs = _env_order(set(scores.env) | set(missing.env))
    domains = _ordered({domains_lib.domain_name(env) for env in envs}, domains_lib.DOMAINS)
    protocols = runs[runs.alias_of == ''].drop_duplicates('run_dir').protocol.fillna(UNRECORDED)
    protocols = protocols.value_counts().sort_index().to_dict()
    per_domain, iqm, domain_notes = _summaries(scores, envs, domains, bootstrap_reps, seed)
    per_task = scores.groupby(['method', 'env']).success.agg(['mean', 'std', 'count']).rename(columns={'count': 'n'})
    return Table(step=str(step), methods=_ordered(set(scores.method) | set(missing.method), METHODS), domains=domains,
                 envs=envs, scores=scores, per_task=per_task, per_domain=per_domain, iqm=iqm, missing=missing,
                 notes=_notes(runs, protocols) + duplicate_notes + domain_notes, protocols=protocols)


# Published numbers.


def resolve_reference_dir(reference_dir: str = DEFAULT_REFERENCE_DIR) -> str:
    return reference_dir if os.path.isabs(reference_dir) else os.path.normpath(os.path.join(REPO_ROOT, reference_dir))


def load_reference(reference_dir: str = DEFAULT_REFERENCE_DIR) -> Dict[str, pd.DataFrame]:
    """{'qam_paper': frame, 'trqam_paper': frame}, each indexed by (phase, method, domain) with the published
    `mean` and `std` (%; NaN where not published), from the two files of REFERENCE_FILES in `reference_dir`."""
    directory = resolve_reference_dir(reference_dir)
    paths = {source: os.path.join(directory, name) for source, name in REFERENCE_FILES.items()}
    absent = [path for path in paths.values() if not os.path.exists(path)]
    if absent:
        raise FileNotFoundError(
            f'Published results not found: {", ".join(absent)} missing. --reference needs a folder with '
            f'{" and ".join(REFERENCE_FILES.values())}; pass --reference_dir=DIR (default {DEFAULT_REFERENCE_DIR!r}, '
            'relative to the repository root) or run without --reference.')
    return {source: pd.read_csv(path).rename(columns={'success_mean_pct': 'mean', 'success_std_pct': 'std'})
            .set_index(['phase', 'method', 'domain']) for source, path in paths.items()}


def reference_sources(table: Table) -> tuple:
    return REFERENCE_OF_PROTOCOL.get(table.protocol, ('qam_paper', 'trqam_paper'))


def published(reference, step, source: str) -> pd.DataFrame:
    """`source`'s numbers at `step`, indexed by (method, domain); empty where none were published."""
    frame = None if reference is None else reference[source]
    if frame is None or REFERENCE_PHASES.get(step) not in frame.index.get_level_values('phase'):
        return pd.DataFrame(columns=['mean', 'std'], index=pd.MultiIndex.from_tuples([], names=['method', 'domain']))
    return frame.xs(REFERENCE_PHASES[step], level='phase')


# Tables.


def _fmt(value) -> str:
    return '-' if value is None or not np.isfinite(value) else f'{value:.1f}'


def _cell(stats, max_n: int, reference=None) -> str:
    """'mean ± std', '(n=k)' when fewer seeds than elsewhere, ' / published mean ± std' with a reference."""
    text = '-'
    if stats is not None:
        text = _fmt(stats['mean']) + (f' ± {_fmt(stats["std"])}' if np.isfinite(stats['std']) else '')
        text += f' (n={int(stats["n"])})' if stats['n'] < max_n else ''
    return text + (f' / {reference["mean"]:g} ± {reference["std"]:g}' if reference is not None else '')


def _row(frame: pd.DataFrame, key):
    return frame.loc[key] if key in frame.index else None


def _step_title(step) -> str:
    return {'offline_end': 'at the end of offline training (step = offline_steps of each run)',
            'online_end': 'at the end of online fine-tuning (step = offline_steps + online_steps)'}.get(
        step, f'at step {step}')


def _protocol_line(table: Table) -> str:
    if not table.protocols:
        return ''
    if table.protocol is None:
        return f'**Mixed protocols**: {_protocol_counts(table.protocols)}; their numbers are not comparable.'
    if table.protocol == UNRECORDED:
        return 'Protocol: not recorded by these runs (made before main.py had --protocol).'
    settings = domains_lib.PROTOCOLS.get(table.protocol)
    return f'Protocol: --protocol={table.protocol}' + (f' ({settings.description}).' if settings else '.')


def _reference_note(reference, table: Table) -> str:
    if reference is None:
        return ''
    if table.step not in REFERENCE_PHASES:
        return ' No published numbers exist for this step.'
    sources = reference_sources(table)
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
    if set(table.domains) != set(domains_lib.DOMAINS) or len(table.envs) != len(domains_lib.DOMAINS) * 5:
        note += (f' The published "all" values average all 50 tasks; ours average the {len(table.envs)} tasks '
                 f'of the {len(table.domains)} domains above.')
    return note


def table_frames(table: Table, reference=None) -> Dict[str, pd.DataFrame]:
    """The cells of the three tables as text: 'domains' (per domain, "all", the TRQAM paper's row), 'iqm', 'tasks'."""
    sources = reference_sources(table)
    qam_paper = published(reference, table.step, 'qam_paper') if 'qam_paper' in sources else None
    max_n = table.per_domain.n.max() if len(table.per_domain) else 0
    rows = {domain: [_cell(_row(table.per_domain, (m, domain)), max_n,
                           None if qam_paper is None else _row(qam_paper, (m, domain))) for m in table.methods]
            for domain in table.domains + ['all']}
    trqam_paper = published(reference, table.step, 'trqam_paper') if 'trqam_paper' in sources else []
    if len(trqam_paper):
        row = trqam_paper.xs('all', level='domain')['mean']
        rows[f'all, TRQAM paper ({table.step.split("_")[0]}, 50 tasks, 8 seeds)'] = [
            f'{row[m]:g}' if m in row.index else '' for m in table.methods]
    iqm = {domain: [f'{_fmt(v.iqm)} [{_fmt(v.low)}, {_fmt(v.high)}] ({v.runs:.0f}x{v.tasks:.0f})'
                    if (v := _row(table.iqm, (m, domain))) is not None else '-' for m in table.methods]
           for domain in table.domains + ['all']}
    max_task_n = table.per_task.n.max() if len(table.per_task) else 0
    tasks = {env: [_cell(_row(table.per_task, (m, env)), max_task_n) for m in table.methods] for env in table.envs}
    return {name: pd.DataFrame.from_dict(cells, orient='index', columns=table.methods).rename_axis(first).reset_index()
            for name, cells, first in (('domains', rows, 'domain'), ('iqm', iqm, 'domain'), ('tasks', tasks, 'task'))}


def to_markdown(table: Table, reference=None) -> str:
    """Markdown: per domain and "all", IQM, per task, notes, missing runs. `reference`: `load_reference()`."""
    frames = table_frames(table, reference)
    markdown = {name: frame.to_markdown(index=False, disable_numparse=True) for name, frame in frames.items()}
    protocol_line = _protocol_line(table)
    lines = [f'## Success rate (%) {_step_title(table.step)}', ''] + ([protocol_line, ''] if protocol_line else []) + [
        'Mean ± sample std over seeds; per domain and "all" (the mean of the domain means) the std is over the '
        'per-seed averages, from the seeds that have every task; (n=k): fewer seeds than elsewhere.'
        + _reference_note(reference, table), '', markdown['domains']]
    if len(table.iqm):
        lines += ['', '### IQM (%) with 95% stratified bootstrap CI over seeds (rliable); (runs x tasks)', '',
                  markdown['iqm']]
    lines += ['', '### Per task', '', markdown['tasks']]
    if table.notes:
        lines += ['', '### Notes', ''] + [f'- {note}' for note in table.notes]
    lines += ['', f'### Missing or incomplete runs ({len(table.missing)}), not averaged in', '']
    lines += [f'- {m} {env} seed {s}: {reason}' for m, env, s, reason in table.missing.itertuples(index=False)]
    return '\n'.join(lines + ['- none'] * table.missing.empty) + '\n'


def _latex_text(text: str) -> str:
    for char, escaped in (('\\', r'\textbackslash{}'), ('&', r'\&'), ('%', r'\%'), ('_', r'\_'), ('#', r'\#')):
        text = text.replace(char, escaped)
    return text.replace('±', r'$\pm$')


def to_latex(table: Table, reference=None) -> str:
    """LaTeX (booktabs) tables: per domain with "all" (and the published rows), IQM, per task."""
    frames = table_frames(table, reference)
    step = _step_title(table.step)
    captions = {'domains': f'Success rate (%) {step}: mean ± std over seeds. {_protocol_line(table)}'.replace('**', '')
                + _reference_note(reference, table),
                'iqm': f'IQM (%) {step} with 95% stratified bootstrap confidence intervals.',
                'tasks': f'Success rate (%) per task {step}.'}
    blocks = [frames[name].to_latex(index=False, escape=True, caption=_latex_text(caption), position='t')
              .replace('±', r'$\pm$') for name, caption in captions.items() if name != 'iqm' or len(table.iqm)]
    return '\n'.join(blocks)


def to_json(table: Table) -> dict:
    return {'step': table.step, 'methods': table.methods, 'domains': table.domains, 'envs': table.envs,
            **{name: getattr(table, name).reset_index().to_dict('records')
               for name in ('per_task', 'per_domain', 'iqm')},
            'missing': table.missing.to_dict('records'), 'notes': table.notes, 'protocols': table.protocols}


def write_tables(table: Table, out_dir: str, suffix: str = '', reference=None) -> List[str]:
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f'results_{suffix or table.step}')
    for extension, text in (('md', to_markdown(table, reference)), ('tex', to_latex(table, reference)),
                            ('json', json.dumps(to_json(table), indent=2))):
        with open(f'{stem}.{extension}', 'w') as f:
            f.write(text)
    return [f'{stem}.{extension}' for extension in ('md', 'tex', 'json')]


# Figures.


def _save(fig, path_stem: str, formats=('png', 'pdf')) -> List[str]:
    import matplotlib.pyplot as plt

    paths = [f'{path_stem}.{extension}' for extension in formats]
    fig.tight_layout()
    for path in paths:
        fig.savefig(path, dpi=100, bbox_inches='tight')
    plt.close(fig)
    return paths


def score_matrices(table: Table) -> Dict[str, np.ndarray]:
    """{method: seeds x tasks success (%)} over every task of the table, from the seeds that have them all;
    methods without such a seed are left out (the figures compare methods on the same tasks)."""
    matrices = {}
    for method in table.methods:
        complete = table.scores[table.scores.method == method].pivot(index='seed', columns='env', values='success')
        complete = complete.reindex(columns=table.envs).dropna()
        if len(complete):
            matrices[method] = complete.to_numpy()
    return matrices


def plot_comparison(table: Table, out_dir: str, reps: int = 1000, seed: int = 0) -> List[str]:
    """rliable's figures, PNG and PDF: `iqm_{step}` (IQM over all tasks with its 95% CI), `profile_{step}` (the
    fraction of runs above each success rate, with CIs) and `improvement_{step}` (the probability that the first
    method improves on each other one on a task, with CIs)."""
    import matplotlib

    matplotlib.use('Agg')
    from rliable import library, metrics, plot_utils

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
    finite = frame[np.isfinite(frame[key].astype(float))]
    per_seed = finite.groupby(['seed', 'step'])[key].mean()
    return per_seed.groupby(level='step').agg(mean='mean', std=lambda values: values.std(ddof=0))


def _plot_success(axis, domain_runs: pd.DataFrame, domain: str):
    for method in _ordered(domain_runs.method.unique(), METHODS):
        runs = domain_runs[domain_runs.method == method]
        curve = seed_curve(runs, 'success')
        if curve.empty:
            continue
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
    paths = {os.path.join(run_dir, layout.TRAIN_CSV): seed
             for run_dir, seed in zip(trqam_runs.run_dir, trqam_runs.seed)}
    train = pd.concat([pd.DataFrame(read_csv(path)).assign(seed=seed) for path, seed in paths.items()
                       if os.path.exists(path)] or [pd.DataFrame()])
    for axis, key in zip(axes, DUAL_KEYS):
        curve = seed_curve(train, key) if key in train else pd.DataFrame()
        if len(curve):
            axis.plot(curve.index, curve['mean'])
            axis.fill_between(curve.index, curve['mean'] - curve['std'], curve['mean'] + curve['std'], alpha=0.2)
        axis.set_title(key.split('/')[-1] + (' (lambda_eff)' if key.endswith('lambda') else ''))
        axis.set_xlabel('step')
        axis.grid(alpha=0.3)
        if key.endswith(('path_kl', 'kl_ema')):
            axis.set_yscale('symlog', linthresh=1e-3)


def plot_curves(runs: pd.DataFrame, out_dir: str, include_bc: bool = False) -> List[str]:
    """PNG files: success vs step per method for each domain (`curves_{domain}.png`) and, for TRQAM runs, the
    dual variables (`trqam_dual_{domain}.png`: lambda_eff, path KL, its EMA and the budget vs step)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    runs = runs if include_bc else runs[runs.method != BC.label]
    paths = []
    for domain in _ordered(runs.domain.unique(), domains_lib.DOMAINS):
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


# Command line.


def parse_step(text: str):
    if text in ('offline_end', 'online_end'):
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(f'--step must be offline_end, online_end or a step number, got {text!r}.') from None


def define_flags():
    from absl import flags

    flags.DEFINE_string('runs_dir', 'runs', 'Folder searched recursively for run directories (flags.json).')
    flags.DEFINE_string('step', 'offline_end', 'offline_end, online_end or a step number.')
    flags.DEFINE_string('out_dir', None, 'Where tables and figures go (default: {runs_dir}/aggregate).')
    flags.DEFINE_bool('reference', False, 'Put the published numbers beside ours: the QAM paper\'s beside '
                      '--protocol=qam runs, the TRQAM paper\'s beside --protocol=trqam runs.')
    flags.DEFINE_enum('protocol', None, list(domains_lib.PROTOCOLS), 'Only the runs of this --protocol (default: '
                      'every run; a table of several protocols says so).')
    flags.DEFINE_string('reference_dir', DEFAULT_REFERENCE_DIR, 'Folder of ' + ' and '.join(REFERENCE_FILES.values())
                        + ' (relative paths: relative to the repository root).')
    flags.DEFINE_string('expect', None, 'Expected runs: a sweep preset (paper, cpu, robomimic; its seeds: '
                        '--protocol\'s, default trqam) or none (default: the grid of the methods, tasks and seeds '
                        'found).')
    flags.DEFINE_bool('include_bc', False, 'Also report the BC pre-training runs (label BC).')
    flags.DEFINE_integer('bootstrap_reps', 5000, 'Bootstrap replications of the IQM confidence intervals.')
    flags.DEFINE_integer('figure_reps', 1000, 'Bootstrap replications of the performance profiles\' and the '
                         'probabilities of improvement\'s confidence intervals.')
    flags.DEFINE_bool('plots', True, 'Write the figures (rliable\'s comparisons and the learning curves).')


def main(_):
    from absl import flags

    FLAGS = flags.FLAGS
    step = parse_step(FLAGS.step)
    reference = load_reference(FLAGS.reference_dir) if FLAGS.reference else None
    runs = load_runs(FLAGS.runs_dir, protocol=FLAGS.protocol)
    expected = None
    if FLAGS.expect:
        from experiments.presets import expected_runs

        expected = expected_runs(FLAGS.expect, protocol=FLAGS.protocol)
    table = success_table(runs, step=step, expected=expected, include_bc=FLAGS.include_bc,
                          bootstrap_reps=FLAGS.bootstrap_reps)
    out_dir = FLAGS.out_dir or os.path.join(FLAGS.runs_dir, 'aggregate')
    print(to_markdown(table, reference))
    written = write_tables(table, out_dir, reference=reference)
    if FLAGS.plots:
        written += plot_comparison(table, out_dir, FLAGS.figure_reps) + plot_curves(runs, out_dir, FLAGS.include_bc)
    print(f'{runs[runs.alias_of == ""].run_dir.nunique()} run directories; wrote {", ".join(written)}.')


if __name__ == '__main__':
    from absl import app

    define_flags()
    app.run(main)
