"""Results tables and curves from run directories (main.py's `{save_dir}/{run_name}/`).

    python experiments/aggregate.py --runs_dir=runs/paper --step=offline_end --reference
    python experiments/aggregate.py --runs_dir=runs/cpu_preset --step=online_end --expect=cpu

For the chosen step (`offline_end`: the evaluation at step == offline_steps of each run; `online_end`: at
offline_steps + online_steps; or a step number) it reports the success rate (%) per task, per domain and
"all" (the mean of the domain means), as the mean and sample standard deviation over seeds (per domain
and "all": over the per-seed averages of the tasks / domains, from the seeds that have every task), plus
the IQM over runs x tasks with 95% stratified-bootstrap confidence intervals (rliable when it is installed,
else a numpy implementation of the same estimator). Runs that are expected but absent, or whose eval.csv
stops before the step, are listed and never averaged in. `--reference` puts the published numbers beside
ours (QAM paper per domain and "all"; the TRQAM paper's offline "all" row), from the data files in
experiments/reference_results/ (their README says where the numbers come from).

Methods are labelled from the agent config by the registry (`protocols.methods.method_of`: qam with edit_scale > 0 is
QAM-E, ...); --bc_only runs are BC. A run whose configuration is also another method's configuration on its
domain under its protocol (the registry's `Method.is_configured_as`: QAM on scene / cube-double, where the
QAM paper's QAM-E has edit_scale 0) counts for both.

Protocols. Each run's flags.json records main.py's `--protocol` (trqam, qam or none; runs made before it
existed record none and are shown as "unrecorded"). A table says which protocol its runs used, and says so
prominently when it mixes several (their numbers are not comparable: pass `--protocol` to keep one).
`--reference` puts beside a table the paper its protocol reproduces: the QAM paper's per-domain numbers
beside qam-protocol runs, the TRQAM paper's aggregate row beside trqam-protocol runs (both when the
protocol is unrecorded or mixed; none beside --protocol=none runs).

Importable: load_runs, success_table, to_markdown, to_latex, plot_curves, load_reference, iqm, iqm_interval.
"""

import dataclasses
import glob
import json
import math
import os
import re
import sys
from typing import Dict, List, Optional, Tuple

import numpy as np

if __package__ in (None, ''):  # `python experiments/aggregate.py` from the repository root.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from protocols.methods import BC, METHODS, method_of, paper_methods  # noqa: E402
from protocols import domains as domains_lib  # noqa: E402
from runner import layout  # noqa: E402
from runner.logs import read_csv  # noqa: E402
from envs.robomimic import is_robomimic  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The published numbers, in the repository (experiments/reference_results/README.md says where they come from).
DEFAULT_REFERENCE_DIR = 'experiments/reference_results'
QAM_PAPER_FILE = 'qam_paper_success.csv'  # QAM paper: per domain and "all", offline and online
TRQAM_PAPER_FILE = 'trqam_paper_aggregate.csv'  # TRQAM paper: offline "all" only
REFERENCE_FILES = {'qam_paper': QAM_PAPER_FILE, 'trqam_paper': TRQAM_PAPER_FILE}
SUCCESS_KEY = layout.SUCCESS_KEY
SINGLE_TASK_NAME = re.compile(r'.-singletask(-task\d+)?-v\d+$')
DUAL_KEYS = ('training/dual/lambda', 'training/dual/path_kl', 'training/dual/kl_ema', 'training/dual/kl_budget')
REFERENCE_PHASES = {'offline_end': 'offline_1M', 'online_end': 'online_end_1.5M'}


# ----------------------------------------------------------------------------------------------------------------------
# Runs.
# ----------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RunRecord:
    run_dir: str
    method: str
    agent_name: str
    env_name: str
    domain: str
    seed: int
    offline_steps: int
    online_steps: int
    config: dict
    eval_rows: List[Dict[str, float]]
    alias_of: Optional[str] = None  # set on the copy that counts this run under another method's label
    protocol: Optional[str] = None  # main.py's --protocol (None: not recorded)

    @property
    def total_steps(self) -> int:
        return self.offline_steps + self.online_steps

    def target_step(self, step) -> int:
        if step == 'offline_end':
            return self.offline_steps
        if step == 'online_end':
            return self.total_steps
        return int(step)

    def success_at(self, step) -> Optional[float]:
        """Success (%) at the evaluation row of `step`, None when eval.csv has no such row."""
        target = self.target_step(step)
        for row in self.eval_rows:
            if int(row['step']) == target and SUCCESS_KEY in row and math.isfinite(row[SUCCESS_KEY]):
                return 100.0 * row[SUCCESS_KEY]
        return None

    def last_eval_step(self) -> Optional[int]:
        return int(self.eval_rows[-1]['step']) if self.eval_rows else None

    def train_rows(self) -> List[Dict[str, float]]:
        path = os.path.join(self.run_dir, layout.TRAIN_CSV)
        if not os.path.exists(path):
            return []
        return read_csv(path)


def method_label(agent_config: dict, bc_only: bool = False) -> str:
    """The table label of a run from its agent config (see the module docstring)."""
    if bc_only:
        return BC.label
    try:
        return method_of(agent_config).label
    except ValueError:  # an agent this checkout does not register
        return str(agent_config.get('agent_name', '')).upper()


def aliases(run: RunRecord) -> List[str]:
    """Other paper methods whose per-domain configuration under the run's protocol (network sizes aside) is
    this run's (`Method.is_configured_as`, the rule the sweep launches such runs once by)."""

    if run.method == BC.label or run.domain not in domains_lib.DOMAINS:
        return []
    return [label for label in paper_methods()
            if label != run.method
            and METHODS[label].is_configured_as(run.config, run.env_name, run.protocol, run.method)]


def load_run(run_dir: str) -> Optional[RunRecord]:
    with open(os.path.join(run_dir, layout.FLAGS_FILE)) as f:
        flags = json.load(f)
    config = flags.get('agent')
    if not isinstance(config, dict) or 'env_name' not in flags:
        return None  # not a main.py run directory
    bc_only = bool(flags.get('bc_only'))
    eval_path = os.path.join(run_dir, layout.EVAL_CSV)
    rows = read_csv(eval_path) if os.path.exists(eval_path) else []
    rows.sort(key=lambda row: row['step'])
    env_name = flags['env_name']
    return RunRecord(run_dir=run_dir, method=method_label(config, bc_only), agent_name=config.get('agent_name', ''),
               env_name=env_name, domain=domains_lib.domain_name(env_name), seed=int(flags.get('seed', 0)),
               offline_steps=int(flags.get('offline_steps') or 0),
               online_steps=0 if bc_only else int(flags.get('online_steps') or 0), config=config, eval_rows=rows,
               protocol=flags.get('protocol'))


def load_runs(runs_dir: str, with_aliases: bool = True, protocol: Optional[str] = None) -> List[RunRecord]:
    """Every run directory under `runs_dir` (recursively: folders holding a flags.json of main.py); with
    `protocol`, only the runs made under that --protocol.

    With `with_aliases`, a run also appears, as a copy with `alias_of` set, under every other method label
    whose configuration it is (see `aliases`).
    """
    paths = sorted(glob.glob(os.path.join(runs_dir, '**', layout.FLAGS_FILE), recursive=True))
    runs = []
    for path in paths:
        run = load_run(os.path.dirname(path))
        if run is None:
            continue
        if not (SINGLE_TASK_NAME.search(run.env_name) or is_robomimic(run.env_name)):
            print(f'Skipped {run.run_dir}: {run.env_name!r} is neither an OGBench single-task name nor a Robomimic '
                  'dataset.', file=sys.stderr)
            continue
        if protocol is not None and run.protocol != protocol:
            continue
        runs.append(run)
        if with_aliases:
            runs += [dataclasses.replace(run, method=method, alias_of=run.method) for method in aliases(run)]
    return runs


# ----------------------------------------------------------------------------------------------------------------------
# Statistics.
# ----------------------------------------------------------------------------------------------------------------------


def iqm(scores) -> float:
    """Interquartile mean: the 25% trimmed mean over all entries (scipy.stats.trim_mean(x, 0.25, axis=None),
    as rliable's metrics.aggregate_iqm)."""
    values = np.sort(np.asarray(scores, np.float64).ravel())
    cut = int(0.25 * len(values))
    return float(np.mean(values[cut:len(values) - cut]))


def _bootstrap_iqm_numpy(matrix, reps, confidence, seed):
    """Percentile bootstrap, stratified over tasks: each task's runs are resampled with replacement."""
    rng = np.random.default_rng(seed)
    num_runs, num_tasks = matrix.shape
    stats = np.empty(reps)
    for start in range(0, reps, 1000):
        count = min(1000, reps - start)
        indices = rng.integers(0, num_runs, size=(count, num_runs, num_tasks))
        samples = matrix[indices, np.arange(num_tasks)]  # (count, runs, tasks)
        flat = np.sort(samples.reshape(count, -1), axis=1)
        cut = int(0.25 * flat.shape[1])
        stats[start:start + count] = flat[:, cut:flat.shape[1] - cut].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def iqm_interval(matrix, reps: int = 5000, confidence: float = 0.95, seed: int = 0, use_rliable: bool = True):
    """(IQM, CI low, CI high, backend) of a (num_runs, num_tasks) score matrix, with a stratified bootstrap
    over runs (rliable.library.get_interval_estimates, percentile method); numpy fallback without rliable."""
    matrix = np.asarray(matrix, np.float64)
    point = iqm(matrix)
    if matrix.shape[0] < 2:
        return point, point, point, 'single run'
    if use_rliable:
        try:
            from rliable import library as rly
            from rliable import metrics
        except Exception:  # noqa: BLE001 - rliable (or its dependencies) absent or broken: use the fallback
            use_rliable = False
    if use_rliable:
        import warnings

        from absl import logging as absl_logging

        verbosity = absl_logging.get_verbosity()
        absl_logging.set_verbosity(absl_logging.WARNING)  # rliable logs every call at INFO
        try:
            with warnings.catch_warnings():  # arch deprecates the RandomState that rliable passes
                warnings.simplefilter('ignore', FutureWarning)
                points, intervals = rly.get_interval_estimates(
                    {'m': matrix}, lambda x: np.array([metrics.aggregate_iqm(x)]), method='percentile', reps=reps,
                    confidence_interval_size=confidence, random_state=np.random.RandomState(seed))
        finally:
            absl_logging.set_verbosity(verbosity)
        return float(points['m'][0]), float(intervals['m'][0, 0]), float(intervals['m'][1, 0]), 'rliable'
    low, high = _bootstrap_iqm_numpy(matrix, reps, confidence, seed)
    return point, low, high, 'numpy'


@dataclasses.dataclass
class Stats:
    mean: float
    std: float  # sample standard deviation (ddof 1); nan with fewer than 2 values
    n: int  # seeds behind the std (per domain / all: the seeds with every task)

    @classmethod
    def of(cls, values, mean=None):
        values = [v for v in values if v is not None]
        std = float(np.std(values, ddof=1)) if len(values) > 1 else float('nan')
        if mean is None:
            mean = float(np.mean(values)) if values else float('nan')
        return cls(mean, std, len(values))


@dataclasses.dataclass
class Table:
    step: str
    methods: List[str]
    domains: List[str]
    envs: List[str]
    per_task: Dict[Tuple[str, str], Stats]
    per_domain: Dict[Tuple[str, str], Stats]
    all: Dict[str, Stats]
    # (method, domain or 'all') -> (IQM, CI low, CI high, number of runs, number of tasks)
    iqm: Dict[Tuple[str, str], Tuple[float, float, float, int, int]]
    missing: List[Tuple[str, str, int, str]]  # (method, env, seed, reason)
    scores: Dict[Tuple[str, str, int], float]  # (method, env, seed) -> success (%)
    notes: List[str]
    iqm_backend: str = ''
    protocols: Dict[str, int] = dataclasses.field(default_factory=dict)  # protocol label -> run directories

    @property
    def protocol(self) -> Optional[str]:
        """The one protocol of the table's runs ('unrecorded' for runs that do not say), None when mixed."""
        return next(iter(self.protocols)) if len(self.protocols) == 1 else None

    def domain_envs(self, domain):
        return [env for env in self.envs if domains_lib.domain_name(env) == domain]


def _ordered(items, order):
    order = list(order)
    return sorted(items, key=lambda item: (order.index(item) if item in order else len(order), item))


def _env_order(envs):
    order = list(domains_lib.DOMAINS)

    def key(env):
        domain = domains_lib.domain_name(env)
        return (order.index(domain) if domain in order else len(order), domain, env)

    return sorted(envs, key=key)


def _most_complete_first(runs: List[RunRecord], step):
    """`runs` with, among several directories of one run (same method, task and seed), the one that has
    the evaluation at `step` (else the one that got furthest) first; and a note naming the others."""
    def completeness(run):
        return (run.alias_of is None, run.success_at(step) is not None, run.last_eval_step() or -1)

    groups = {}
    for run in runs:
        groups.setdefault((run.method, run.env_name, run.seed), []).append(run)
    ordered, notes = [], []
    for (method, env_name, seed), group in groups.items():
        group = sorted(group, key=completeness, reverse=True)
        own = [run for run in group if run.alias_of is None]
        if len(own) > 1:
            notes.append(f'{method} {env_name} seed {seed}: {len(own)} run directories; using {own[0].run_dir} '
                         f'(the most complete), not {", ".join(run.run_dir for run in own[1:])}.')
        ordered += group
    return ordered, notes


def success_table(runs: List[RunRecord], step='offline_end', expected=None, include_bc: bool = False,
                  bootstrap_reps: int = 5000, seed: int = 0, use_rliable: bool = True) -> Table:
    """The success table at `step` ('offline_end', 'online_end' or a step number).

    `expected`: (method, env, seed) triples that should exist (e.g. `experiments.sweep.expected_runs()`);
    by default the full grid of the methods, tasks and seeds found. Expected runs that are absent, or
    whose eval.csv has no row at the step, are listed in `missing` and left out of every average.
    """
    runs = [run for run in runs if include_bc or run.method != BC.label]
    scores, missing, notes, seen = {}, [], [], {}
    runs, duplicate_notes = _most_complete_first(runs, step)
    notes += duplicate_notes
    for run in runs:
        key = (run.method, run.env_name, run.seed)
        previous = seen.get(key)
        if previous is not None:
            if previous.alias_of is not None and run.alias_of is None:  # a run of its own beats an alias
                scores.pop(key, None)
                missing = [m for m in missing if m[:3] != key]
            else:
                continue
        seen[key] = run
        value = run.success_at(step)
        if value is None:
            last = run.last_eval_step()
            reason = 'no evaluation yet' if last is None else f'eval.csv ends at step {last}'
            missing.append((run.method, run.env_name, run.seed,
                            f'incomplete: no evaluation at step {run.target_step(step)} ({reason}; {run.run_dir})'))
        else:
            scores[key] = value
    if expected is None:
        methods = {run.method for run in runs}
        envs = {run.env_name for run in runs}
        seeds = {run.seed for run in runs}
        expected = [(m, e, s) for m in methods for e in envs for s in seeds]
    else:
        expected = [key for key in expected if include_bc or key[0] != BC.label]
    for key in expected:
        if key not in seen:
            missing.append((*key, 'missing: no run directory'))
    aliased = sorted({(run.method, run.alias_of, run.domain) for run in runs if run.alias_of})
    for method, alias_of, domain in aliased:
        notes.append(f'{method} on {domain}: the {alias_of} runs, which have its configuration there '
                     f'(protocols/domains.py).')

    methods = _ordered({key[0] for key in list(scores) + [m[:3] for m in missing]}, tuple(METHODS))
    envs = _env_order({key[1] for key in list(scores) + [m[:3] for m in missing]})
    domain_names = _ordered({domains_lib.domain_name(env) for env in envs}, domains_lib.DOMAINS)
    protocols = {}
    for run in runs:
        if run.alias_of is None:
            label = protocol_label(run.protocol)
            protocols[label] = protocols.get(label, 0) + 1
    if len(protocols) > 1:
        notes.insert(0, f'This table mixes runs of different protocols ({_protocol_counts(protocols)}): their numbers '
                        'are not comparable (pass --protocol to keep one).')
    table = Table(step=str(step), methods=methods, domains=domain_names, envs=envs, per_task={}, per_domain={},
                  all={}, iqm={}, missing=sorted(missing, key=lambda m: (m[0], m[1], m[2])), scores=scores,
                  notes=notes, protocols=dict(sorted(protocols.items())))
    backends = set()
    for method in methods:
        seed_domain_scores = {}  # seed -> {domain: mean over the domain's tasks}
        domain_means = []
        all_matrix_tasks = []
        for domain in domain_names:
            domain_envs = [env for env in table.domain_envs(domain)]
            task_values = {env: {s: v for (m, e, s), v in scores.items() if m == method and e == env}
                           for env in domain_envs}
            for env, values in task_values.items():
                if values:
                    table.per_task[(method, env)] = Stats.of(list(values.values()))
            present = [env for env, values in task_values.items() if values]
            if not present:
                continue
            complete_seeds = sorted(set.intersection(*(set(task_values[env]) for env in domain_envs)))
            per_seed = {s: float(np.mean([task_values[env][s] for env in domain_envs])) for s in complete_seeds}
            mean = float(np.mean([table.per_task[(method, env)].mean for env in present]))
            table.per_domain[(method, domain)] = Stats.of(list(per_seed.values()), mean=mean)
            domain_means.append(mean)
            for s, value in per_seed.items():
                seed_domain_scores.setdefault(s, {})[domain] = value
            if complete_seeds:
                matrix = np.array([[task_values[env][s] for env in domain_envs] for s in complete_seeds])
                point, low, high, backend = iqm_interval(matrix, bootstrap_reps, seed=seed, use_rliable=use_rliable)
                backends.add(backend)
                table.iqm[(method, domain)] = (point, low, high, len(complete_seeds), len(domain_envs))
            all_matrix_tasks += [(env, task_values[env]) for env in domain_envs]
        if domain_means:
            method_domains = [d for d in domain_names if (method, d) in table.per_domain]
            per_seed_all = [float(np.mean([values[d] for d in method_domains]))
                            for values in seed_domain_scores.values() if all(d in values for d in method_domains)]
            table.all[method] = Stats.of(per_seed_all, mean=float(np.mean(domain_means)))
            if len(method_domains) < len(domain_names):
                notes.append(f'{method}: "all" averages {len(method_domains)} of {len(domain_names)} domains.')
            common = sorted(set.intersection(*(set(values) for _, values in all_matrix_tasks)))
            if common:
                matrix = np.array([[values[s] for _, values in all_matrix_tasks] for s in common])
                point, low, high, backend = iqm_interval(matrix, bootstrap_reps, seed=seed, use_rliable=use_rliable)
                backends.add(backend)
                table.iqm[(method, 'all')] = (point, low, high, len(common), len(all_matrix_tasks))
    table.iqm_backend = ', '.join(sorted(backends))
    return table


UNRECORDED = 'unrecorded'


def protocol_label(protocol: Optional[str]) -> str:
    return protocol or UNRECORDED


def _protocol_counts(protocols: Dict[str, int]) -> str:
    return ', '.join(f'{count} run{"s" if count != 1 else ""} of --protocol={name}' if name != UNRECORDED else
                     f'{count} run{"s" if count != 1 else ""} without a recorded protocol'
                     for name, count in protocols.items())


def _protocol_line(table: Table) -> str:
    """What the table's runs are, by protocol."""
    if not table.protocols:
        return ''
    if table.protocol is None:
        return f'**Mixed protocols**: {_protocol_counts(table.protocols)}; their numbers are not comparable.'
    if table.protocol == UNRECORDED:
        return 'Protocol: not recorded by these runs (made before main.py had --protocol).'
    description = domains_lib.PROTOCOLS[table.protocol].description if table.protocol in domains_lib.PROTOCOLS else ''
    return f'Protocol: --protocol={table.protocol}' + (f' ({description}).' if description else '.')


# The published numbers each protocol reproduces (docs/algorithms.md section 9.1).
REFERENCE_OF_PROTOCOL = {'qam': ('qam_paper',), 'trqam': ('trqam_paper',), 'none': ()}


def reference_sources(table: Table) -> Tuple[str, ...]:
    """The published numbers that belong beside `table`: its protocol's paper; both papers' when the
    protocol is unrecorded or mixed (each labelled)."""
    return REFERENCE_OF_PROTOCOL.get(table.protocol, ('qam_paper', 'trqam_paper'))


# ----------------------------------------------------------------------------------------------------------------------
# Published numbers.
# ----------------------------------------------------------------------------------------------------------------------


def resolve_reference_dir(reference_dir: str = DEFAULT_REFERENCE_DIR) -> str:
    """`reference_dir` as an absolute path; relative paths are relative to the repository root."""
    return reference_dir if os.path.isabs(reference_dir) else os.path.normpath(os.path.join(REPO_ROOT, reference_dir))


def _read_reference_csv(path: str) -> Dict[str, Dict[Tuple[str, str], Tuple[float, float]]]:
    """{phase: {(method, domain or 'all'): (mean, std)}}; an empty std cell (not published) is NaN."""
    import csv

    reference = {}
    with open(path, newline='') as f:
        for row in csv.DictReader(f):
            std = (row.get('success_std_pct') or '').strip()
            reference.setdefault(row['phase'], {})[(row['method'], row['domain'])] = (
                float(row['success_mean_pct']), float(std) if std else float('nan'))
    return reference


def load_reference(reference_dir: str = DEFAULT_REFERENCE_DIR) -> Dict[str, Dict[str, Dict[Tuple[str, str], Tuple]]]:
    """The published numbers: {'qam_paper': {phase: {(method, domain or 'all'): (mean, std)}}, 'trqam_paper':
    {...}} from `reference_dir`/qam_paper_success.csv and trqam_paper_aggregate.csv (default: the repository's
    experiments/reference_results; relative paths are relative to the repository root)."""
    directory = resolve_reference_dir(reference_dir)
    paths = {source: os.path.join(directory, name) for source, name in REFERENCE_FILES.items()}
    absent = [path for path in paths.values() if not os.path.exists(path)]
    if absent:
        raise FileNotFoundError(
            f'Published results not found: {", ".join(absent)} missing. --reference needs a folder with '
            f'{" and ".join(REFERENCE_FILES.values())}; pass --reference_dir=DIR (default {DEFAULT_REFERENCE_DIR!r}, '
            'relative to the repository root) or run without --reference.')
    return {source: _read_reference_csv(path) for source, path in paths.items()}


def _reference_for(reference, step, source='qam_paper'):
    """{(method, domain): (mean, std)} of `source` at `step`; None without a reference or a published phase."""
    if reference is None or step not in REFERENCE_PHASES:
        return None
    return reference.get(source, {}).get(REFERENCE_PHASES[step], {})


def _trqam_paper_row(reference, step) -> Dict[str, float]:
    """{method: mean} of the TRQAM paper's "all" row at `step` ({} where it published none)."""
    published = _reference_for(reference, step, 'trqam_paper') or {}
    return {method: mean for (method, domain), (mean, _) in published.items() if domain == 'all'}


# ----------------------------------------------------------------------------------------------------------------------
# Output.
# ----------------------------------------------------------------------------------------------------------------------


def _fmt(value, digits=1):
    return '-' if value is None or not math.isfinite(value) else f'{value:.{digits}f}'


def _cell(stats: Optional[Stats], max_n: int, pm: str, reference=None):
    if stats is None:
        text = '-'
    else:
        text = _fmt(stats.mean) + (f' {pm} {_fmt(stats.std)}' if math.isfinite(stats.std) else '')
        if stats.n < max_n:
            text += f' (n={stats.n})'
    if reference is not None:
        text += f' / {reference[0]:g} {pm} {reference[1]:g}'
    return text


def _step_title(step):
    if step == 'offline_end':
        return 'at the end of offline training (step = offline_steps of each run)'
    if step == 'online_end':
        return 'at the end of online fine-tuning (step = offline_steps + online_steps)'
    return f'at step {step}'


def _rows(table: Table, reference, pm):
    """(header, domain rows, reference rows, iqm rows, task rows) as lists of cell strings."""
    sources = reference_sources(table)
    ref = _reference_for(reference, table.step) if 'qam_paper' in sources else None
    max_n = max([s.n for s in list(table.per_domain.values()) + list(table.all.values())] + [0])
    domain_rows = []
    for domain in table.domains + ['all']:
        cells = [domain]
        for method in table.methods:
            stats = table.all.get(method) if domain == 'all' else table.per_domain.get((method, domain))
            cells.append(_cell(stats, max_n, pm, ref.get((method, domain)) if ref is not None else None))
        domain_rows.append(cells)
    reference_rows = []
    trqam_paper = _trqam_paper_row(reference, table.step) if 'trqam_paper' in sources else {}
    if trqam_paper:
        phase = 'offline' if table.step == 'offline_end' else 'online'
        reference_rows.append([f'all, TRQAM paper ({phase}, 50 tasks, 8 seeds)'] +
                              [f'{trqam_paper[m]:g}' if m in trqam_paper else '' for m in table.methods])
    iqm_rows = []
    for domain in table.domains + ['all']:
        cells = [domain]
        for method in table.methods:
            value = table.iqm.get((method, domain))
            cells.append('-' if value is None else
                         f'{_fmt(value[0])} [{_fmt(value[1])}, {_fmt(value[2])}] ({value[3]}x{value[4]})')
        iqm_rows.append(cells)
    max_task_n = max([s.n for s in table.per_task.values()] + [0])
    task_rows = [[env] + [_cell(table.per_task.get((m, env)), max_task_n, pm) for m in table.methods]
                 for env in table.envs]
    return ['domain'] + table.methods, domain_rows, reference_rows, iqm_rows, task_rows


def _reference_note(reference, table):
    step = table.step
    if reference is None:
        return ''
    if step not in REFERENCE_PHASES:
        return ' No published numbers exist for this step.'
    sources = reference_sources(table)
    if not sources:
        return ' No published numbers beside runs of --protocol=none: they reproduce neither paper.'
    both = len(sources) > 1
    note = ''
    if 'qam_paper' in sources:
        note += (' After " / ": the QAM paper (12 seeds, no BC pre-training, 1M offline steps'
                 + (' + 500K online' if step == 'online_end' else '') + ')'
                 + (', whose protocol is --protocol=qam' if both else '') + '.')
    if 'trqam_paper' in sources:
        if _trqam_paper_row(reference, step):
            note += (' The TRQAM paper row is its aggregate over all 50 tasks (8 seeds, after BC pre-training'
                     + (', --protocol=trqam' if both else '') + ').')
        elif not both:
            note += ' The TRQAM paper published no numbers for this step (only its offline aggregate).'
    if set(table.domains) != set(domains_lib.DOMAINS) or len(table.envs) != len(domains_lib.DOMAINS) * 5:
        note += (f' The published "all" values average all 50 tasks; ours average the {len(table.envs)} tasks '
                 f'of the {len(table.domains)} domains above.')
    return note


def to_markdown(table: Table, reference=None) -> str:
    """Markdown: per domain and "all", IQM, per task, notes, missing runs. `reference`: `load_reference()`."""
    header, domain_rows, reference_rows, iqm_rows, task_rows = _rows(table, reference, '±')

    def markdown_table(head, rows):
        lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
        return lines + ['| ' + ' | '.join(row) + ' |' for row in rows]

    protocol_line = _protocol_line(table)
    lines = [f'## Success rate (%) {_step_title(table.step)}', ''] + ([protocol_line, ''] if protocol_line else []) + [
             'Mean ± sample std over seeds; per domain and "all" (the mean of the domain means) the std is over the '
             'per-seed averages, from the seeds that have every task; (n=k): fewer seeds than elsewhere.'
             + _reference_note(reference, table), '']
    lines += markdown_table(header, domain_rows + reference_rows)
    if table.iqm:
        lines += ['', f'### IQM (%) with 95% stratified bootstrap CI over seeds ({table.iqm_backend}); (runs x tasks)',
                  '']
        lines += markdown_table(header, iqm_rows)
    lines += ['', '### Per task', '']
    lines += markdown_table(['task'] + table.methods, task_rows)
    if table.notes:
        lines += ['', '### Notes', ''] + [f'- {note}' for note in table.notes]
    lines += ['', f'### Missing or incomplete runs ({len(table.missing)}), not averaged in', '']
    lines += [f'- {m} {env} seed {s}: {reason}' for m, env, s, reason in table.missing] or ['- none']
    return '\n'.join(lines) + '\n'


def _latex_escape(text: str) -> str:
    for char, escaped in (('\\', r'\textbackslash{}'), ('&', r'\&'), ('%', r'\%'), ('_', r'\_'), ('#', r'\#')):
        text = text.replace(char, escaped)
    return text


def to_latex(table: Table, reference=None) -> str:
    """LaTeX (booktabs) tables: per domain with "all" (and the published rows), IQM, per task."""
    header, domain_rows, reference_rows, iqm_rows, task_rows = _rows(table, reference, r'$\pm$')

    def tabular(caption, head, rows, midrule_before=()):
        spec = 'l' + 'c' * (len(head) - 1)
        out = [r'\begin{table}[t]', r'\centering', r'\resizebox{\linewidth}{!}{%', rf'\begin{{tabular}}{{{spec}}}',
               r'\toprule', ' & '.join(_latex_escape(h) for h in head) + r' \\', r'\midrule']
        for index, row in enumerate(rows):
            if index in midrule_before:
                out.append(r'\midrule')
            out.append(' & '.join(_latex_escape(row[0]) if i == 0 else c.replace('[', '{[}').replace(']', '{]}')
                                  for i, c in enumerate(row)) + r' \\')
        out += [r'\bottomrule', r'\end{tabular}}', rf'\caption{{{caption}}}', r'\end{table}']
        return '\n'.join(out)

    step = _latex_escape(_step_title(table.step))
    protocol_line = _protocol_line(table).replace('**', '')
    blocks = [tabular(f'Success rate (\\%) {step}: mean $\\pm$ std over seeds.'
                      + (' ' + _latex_escape(protocol_line) if protocol_line else '')
                      + _latex_escape(_reference_note(reference, table)),
                      header, domain_rows + reference_rows, midrule_before=(len(table.domains),))]
    if table.iqm:
        blocks.append(tabular(f'IQM (\\%) {step} with 95\\% stratified bootstrap confidence intervals.',
                              header, iqm_rows, midrule_before=(len(table.domains),)))
    blocks.append(tabular(f'Success rate (\\%) per task {step}.', ['task'] + table.methods, task_rows))
    return '\n\n'.join(blocks) + '\n'


def to_json(table: Table) -> dict:
    def stats(s):
        return {'mean': s.mean, 'std': s.std, 'n': s.n}

    return {
        'step': table.step, 'methods': table.methods, 'domains': table.domains, 'envs': table.envs,
        'per_task': {f'{m}|{e}': stats(s) for (m, e), s in table.per_task.items()},
        'per_domain': {f'{m}|{d}': stats(s) for (m, d), s in table.per_domain.items()},
        'all': {m: stats(s) for m, s in table.all.items()},
        'iqm': {f'{m}|{d}': dict(zip(('iqm', 'ci_low', 'ci_high', 'runs', 'tasks'), v))
                for (m, d), v in table.iqm.items()},
        'missing': [dict(zip(('method', 'env', 'seed', 'reason'), m)) for m in table.missing],
        'notes': table.notes,
        'protocols': table.protocols,
    }


def write_tables(table: Table, out_dir: str, suffix: str = '', reference=None) -> List[str]:
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f'results_{suffix or table.step}')
    with open(stem + '.md', 'w') as f:
        f.write(to_markdown(table, reference))
    with open(stem + '.tex', 'w') as f:
        f.write(to_latex(table, reference))
    with open(stem + '.json', 'w') as f:
        json.dump(to_json(table), f, indent=2)
    return [stem + '.md', stem + '.tex', stem + '.json']


# ----------------------------------------------------------------------------------------------------------------------
# Curves.
# ----------------------------------------------------------------------------------------------------------------------


def _seed_curve(runs, key, rows_of):
    """steps, mean, std over seeds of the per-seed average (over the runs' tasks) of column `key`."""
    per_seed = {}
    for run in runs:
        for row in rows_of(run):
            value = row.get(key)
            if value is not None and math.isfinite(value):
                per_seed.setdefault(run.seed, {}).setdefault(int(row['step']), []).append(value)
    steps = sorted({step for values in per_seed.values() for step in values})
    means, stds = [], []
    for step in steps:
        values = [float(np.mean(v[step])) for v in per_seed.values() if step in v]
        means.append(float(np.mean(values)))
        stds.append(float(np.std(values)) if len(values) > 1 else 0.0)
    return np.array(steps), np.array(means), np.array(stds)


def plot_curves(runs: List[RunRecord], out_dir: str, include_bc: bool = False) -> List[str]:
    """PNG files: success vs step per method for each domain (`curves_{domain}.png`; mean over seeds of
    the per-seed task average, band = std over seeds) and, for TRQAM runs, the dual variables
    (`trqam_dual_{domain}.png`: lambda_eff, path KL, its EMA and the budget vs step)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    runs = [run for run in runs if include_bc or run.method != BC.label]
    paths = []
    by_domain = {}
    for run in runs:
        by_domain.setdefault(run.domain, {}).setdefault(run.method, []).append(run)
    for domain in _ordered(by_domain, domains_lib.DOMAINS):
        fig, axis = plt.subplots(figsize=(7, 4))
        offline_steps = set()
        for method in _ordered(by_domain[domain], tuple(METHODS)):
            group = by_domain[domain][method]
            steps, mean, std = _seed_curve(group, SUCCESS_KEY, lambda run: run.eval_rows)
            if len(steps) == 0:
                continue
            offline_steps.update(run.offline_steps for run in group if run.online_steps > 0)
            line, = axis.plot(steps, 100 * mean, marker='o', markersize=3, label=method)
            axis.fill_between(steps, 100 * (mean - std), 100 * (mean + std), color=line.get_color(), alpha=0.15)
        for step in sorted(offline_steps):
            axis.axvline(step, color='grey', linestyle='--', linewidth=1)
        axis.set_xlabel('step')
        axis.set_ylabel('success (%)')
        axis.set_title(f'{domain} (mean over seeds of the task average; band: std over seeds)', fontsize=9)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc='best')
        fig.tight_layout()
        path = os.path.join(out_dir, f'curves_{domain}.png')
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)

        trqam = [run for run in by_domain[domain].get('TRQAM', []) if run.alias_of is None]
        if trqam:
            cache = {run.run_dir: run.train_rows() for run in trqam}
            fig, axes = plt.subplots(1, len(DUAL_KEYS), figsize=(4 * len(DUAL_KEYS), 3.5))
            for axis, key in zip(axes, DUAL_KEYS):
                steps, mean, std = _seed_curve(trqam, key, lambda run: cache[run.run_dir])
                if len(steps):
                    axis.plot(steps, mean)
                    axis.fill_between(steps, mean - std, mean + std, alpha=0.2)
                axis.set_title(key.split('/')[-1] + (' (lambda_eff)' if key.endswith('lambda') else ''))
                axis.set_xlabel('step')
                axis.grid(alpha=0.3)
                if key.endswith(('path_kl', 'kl_ema')):
                    axis.set_yscale('symlog', linthresh=1e-3)
            fig.suptitle(f'TRQAM dual variables, {domain}')
            fig.tight_layout()
            path = os.path.join(out_dir, f'trqam_dual_{domain}.png')
            fig.savefig(path, dpi=100)
            plt.close(fig)
            paths.append(path)
    return paths


# ----------------------------------------------------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------------------------------------------------


def parse_step(text: str):
    if text in ('offline_end', 'online_end'):
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(f'--step must be offline_end, online_end or a step number, got {text!r}.') from None


def _define_flags():
    from absl import flags

    flags.DEFINE_string('runs_dir', 'runs', 'Folder searched recursively for run directories (flags.json).')
    flags.DEFINE_string('step', 'offline_end', 'offline_end, online_end or a step number.')
    flags.DEFINE_string('out_dir', None, 'Where tables and PNGs go (default: {runs_dir}/aggregate).')
    flags.DEFINE_bool('reference', False, 'Put the published numbers beside ours: the QAM paper\'s beside '
                      '--protocol=qam runs, the TRQAM paper\'s beside --protocol=trqam runs.')
    flags.DEFINE_enum('protocol', None, list(domains_lib.PROTOCOLS), 'Only the runs of this --protocol (default: '
                      'every run; a table of several protocols says so).')
    flags.DEFINE_string('reference_dir', DEFAULT_REFERENCE_DIR, f'Folder of {QAM_PAPER_FILE} and {TRQAM_PAPER_FILE} '
                        '(relative paths: relative to the repository root).')
    flags.DEFINE_string('expect', None, 'Expected runs: a sweep preset (paper, cpu, robomimic; its seeds: '
                        '--protocol\'s, default trqam) or none (default: the grid of the methods, tasks and seeds '
                        'found).')
    flags.DEFINE_bool('include_bc', False, 'Also report the BC pre-training runs (label BC).')
    flags.DEFINE_integer('bootstrap_reps', 5000, 'Bootstrap replications of the IQM confidence intervals.')
    flags.DEFINE_bool('plots', True, 'Write the PNG curves.')


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
        written += plot_curves(runs, out_dir, include_bc=FLAGS.include_bc)
    print(f'{len([r for r in runs if r.alias_of is None])} run directories; wrote {", ".join(written)}.')


if __name__ == '__main__':
    from absl import app

    _define_flags()
    app.run(main)
