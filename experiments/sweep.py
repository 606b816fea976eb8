"""Launches the papers' sweeps (experiments/presets.py): methods x tasks x seeds under a protocol, as main.py
commands run as local processes or SLURM job arrays.

    python experiments/sweep.py --dry_run                     # the TRQAM paper's sweep: commands, counts, cost
    python experiments/sweep.py --dry_run --protocol=qam      # the QAM paper's (12 seeds, one stage)
    python experiments/sweep.py --dataset_dir=DATA --launcher=local --max_workers=4 --seeds_per_job=4
    python experiments/sweep.py --dataset_dir=DATA --launcher=slurm --slurm_submit
    python experiments/sweep.py --preset=cpu                  # the small sweep: data, runs and tables
    python experiments/sweep.py --preset=robomimic --dry_run  # the stability experiment

A job's command sets only what the sweep must (env, seeds, folders, steps, the preset's flags and network sizes);
main.py completes it by `protocols.methods.resolve_protocol`, which the sweep calls too, to name the runs and to pass
each method the BC run main.py would pick (so that methods starting together do not meet at its directory lock).
Under --protocol=trqam BC pre-training (main.py --bc_only) runs first, once per task, seed and flow shape. A method
configured as another on a task (`Method.is_configured_as`) is launched once. A job is complete when every seed's
eval.csv has its final step; an incomplete one is run again and main.py resumes it. The local launcher starts a
method after its BC job succeeded (logs in {save_dir}/logs/); SLURM gets a job array per stage, the second after the
first, and a task requeues itself when main.py saves and exits with `core.errors.EXIT_PREEMPTED` (on USR1 before the
time limit, or TERM). Domains without data are listed with how to get it and not launched. Relative paths are
relative to the repository root.

--dry_run estimates device-hours from measured costs (--costs, schema in `check_costs`): per seed, updates x ms per
update + evaluations x episodes x ms per episode, over the speed-up of the largest measured group of at most
--seeds_per_job seeds in one process; what the file lacks is named in the report and not counted.
"""

import ast
import collections
import concurrent.futures
import dataclasses
import functools
import json
import os
import pathlib
import shlex
import stat
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ''):  # `python experiments/sweep.py` from the repository root.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from core.errors import EXIT_PREEMPTED  # noqa: E402
from envs import robomimic  # noqa: E402
from experiments.presets import PAPER_SEEDS, PRESETS, SweepSpec, domain_envs, resolve_spec  # noqa: E402
from protocols import domains as domains_lib  # noqa: E402
from protocols.methods import BC, METHODS, bc_config_for, paper_methods, resolve_protocol, same_setting  # noqa: E402
from runner import layout  # noqa: E402
from runner.flags import default_flag_values  # noqa: E402
from runner.logs import read_csv  # noqa: E402
from runner.schedule import Schedule  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_COSTS = 'experiments/reference_results/update_costs_cpu.json'


@dataclasses.dataclass
class Job:
    """One main.py process: a method (or BC) on one task for one or several seeds."""

    stage: str  # 'bc' or 'rl'
    method: str  # table label ('BC' for stage 1)
    env_name: str
    seeds: Tuple[int, ...]
    run_dirs: Tuple[str, ...]  # one per seed
    command: List[str]
    total_steps: int  # the final step of each run directory
    name: str  # the run directory's name, with the seeds' range for several seeds
    depends_on: Optional[str] = None  # name of the BC job
    size: str = ''  # network size (protocols.domains.size_name), for the cost estimate
    updates: int = 0  # gradient updates per seed
    evaluations: int = 0  # per seed
    eval_episodes: int = 0  # per evaluation

    def shell(self) -> str:
        return shlex.join(self.command)


@dataclasses.dataclass
class Sweep:
    bc_jobs: List[Job]
    rl_jobs: List[Job]
    expected: List[Tuple[str, str, int]]  # (method, env, seed) of the table, duplicates included
    duplicates: List[Tuple[str, str, int, str]]  # (method, env, seed, same configuration as method)
    missing_data: Dict[str, str]  # domain -> what is missing and how to get it
    spec: SweepSpec

    def launchable(self) -> Tuple[List[Job], List[Job]]:
        """The BC and method jobs of the domains with data."""
        return tuple([job for job in jobs if domains_lib.domain_name(job.env_name) not in self.missing_data]
                     for jobs in (self.bc_jobs, self.rl_jobs))

    @property
    def bc_runs(self) -> int:
        return sum(len(job.seeds) for job in self.bc_jobs)

    @property
    def rl_runs(self) -> int:
        return sum(len(job.seeds) for job in self.rl_jobs)


def format_value(value) -> str:
    if isinstance(value, (tuple, list)):
        return '(' + ','.join(format_value(v) for v in value) + (',)' if len(value) == 1 else ')')
    return str(value)


def flag_args(flags: dict, prefix: str = '') -> List[str]:
    return [(f'--{name}' if value else f'--no{name}') if isinstance(value, bool) and not prefix
            else f'--{prefix}{name}={format_value(value)}' for name, value in flags.items()]


def seeds_label(seeds: Tuple[int, ...]) -> str:
    """'3', '0-3' (consecutive) or '0,2,5': a job's seeds in its name."""
    if len(seeds) > 1 and seeds == tuple(range(seeds[0], seeds[-1] + 1)):
        return f'{seeds[0]}-{seeds[-1]}'
    return ','.join(map(str, seeds))


def _abs(path: str) -> str:
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.join(REPO_ROOT, path)


def resolve_agent(method, env_name: str, protocol: str, dataset_dir: Optional[str], agent_overrides: dict) -> dict:
    """The agent config main.py resolves for `main.py --protocol=PROTOCOL --agent=<method's file>
    --env_name=ENV --dataset_dir=DIR --agent.K=V...`, by its own rule."""
    values = {**default_flag_values(), 'env_name': env_name, 'protocol': protocol, 'dataset_dir': dataset_dir}
    config = method.default_config()
    with config.unlocked():
        config.update(agent_overrides)
    _, agent, _ = resolve_protocol(method, values, config, explicit={f'agent.{key}' for key in agent_overrides})
    return agent.to_dict()


def data_status(env_name: str, dataset_dir: str, protocol) -> Tuple[bool, str]:
    """(present, what is missing and how to get it) of the data a run of `protocol` on `env_name` reads."""
    if domains_lib.domain_settings(env_name).suite == 'robomimic':
        path, shown = (robomimic.dataset_path(env_name, folder) for folder in (_abs(dataset_dir), dataset_dir))
        if os.path.isfile(path):
            return True, path
        return False, f'no {shown}. ' + robomimic.download_instructions(env_name, shown).replace('\n', '\n      ')
    present, detail = domains_lib.dataset_status(env_name, _abs(dataset_dir), protocol)
    return present, detail if present else f'{detail}; {domains_lib.how_to_get(env_name, dataset_dir, protocol)}'


@dataclasses.dataclass(frozen=True)
class BCRun:
    """A BC pre-training run the methods of a task start from (one run directory per seed)."""

    env_name: str
    first_method: str  # the method that asked for it first
    name_parts: tuple  # run-name parts after the seed: hidden dims, layer norm, chunk length
    agent_overrides: dict  # the BC job's --agent.* values

    def name(self, seed) -> str:
        return layout.bc_run_name(self.env_name, seed, *self.name_parts)


class JobBuilder:
    """Builds the jobs of a spec; a BC job is built once, for every method job that starts from it."""

    def __init__(self, spec: SweepSpec):
        self.spec, self.protocol = spec, domains_lib.get_protocol(spec.protocol)
        self.main_flags = {**default_flag_values(), **spec.main_flags}
        self.bc_jobs: Dict[str, Job] = {}  # by name
        self.bc_runs: Dict[tuple, BCRun] = {}  # by (env, BC config)

    def agent_overrides(self, label: str) -> dict:
        """The --agent.* values of a method's jobs: the settings that make the method where its config file has
        others (CGQL-M's mode: main.py tells the method by the config, so agents/cgql.py alone would be CGQL-L's),
        then the spec's network and extra overrides its config has."""
        method = METHODS[label]
        config = method.default_config()
        identity = {key: value for key, value in method.fixed.items() if not same_setting(config.get(key), value)}
        return {**identity, **{key: value for key, value in {**self.spec.network, **self.spec.extra_agent_overrides}
                               .items() if key in config}}

    def distinct_configs(self, env_name: str) -> Tuple[List[Tuple[str, dict]], Dict[str, str]]:
        """([(method, resolved agent config)] to launch on `env_name`, {method: the earlier method it equals})."""
        launched, same_as = [], {}
        for label in self.spec.methods:
            config = resolve_agent(METHODS[label], env_name, self.protocol.name, self.spec.dataset_dir,
                                   self.agent_overrides(label))
            earlier = [other for other, other_config in launched
                       if METHODS[label].is_configured_as(other_config, env_name, self.protocol.name, other)]
            if earlier:
                same_as[label] = earlier[0]
            else:
                launched.append((label, config))
        return launched, same_as

    def bc_run(self, label: str, method_config: dict, bc_env: str) -> BCRun:
        """The BC run a method's config starts from, with the --agent.* values that make main.py resolve it."""
        target = bc_config_for(ml_collections.ConfigDict(method_config)).to_dict()
        key = (bc_env, repr(sorted(target.items())))
        if key in self.bc_runs:
            return self.bc_runs[key]
        parts = (target['actor_hidden_dims'], target['actor_layer_norm'], target['horizon_length'])
        for other in self.bc_runs.values():
            if other.env_name == bc_env and other.name_parts == parts:
                raise ValueError(f'{label} and {other.first_method} would start from the same BC run on {bc_env} '
                                 f'({other.name(0)}) with different BC configs.')
        spec, protocol = self.spec, self.protocol.name
        plain = resolve_agent(BC, bc_env, protocol, spec.dataset_dir, {})
        overrides = {key: value for key, value in target.items() if key != 'agent_name' and (
            key in spec.network or key in spec.extra_agent_overrides or not same_setting(value, plain[key]))}
        resolved = bc_config_for(ml_collections.ConfigDict(
            resolve_agent(BC, bc_env, protocol, spec.dataset_dir, overrides))).to_dict()
        differences = {key: (resolved.get(key), value) for key, value in target.items()
                       if not same_setting(resolved.get(key), value)}
        if differences:
            raise ValueError(f'The BC job on {bc_env} would not resolve to {label}\'s BC config: {differences}.')
        self.bc_runs[key] = BCRun(bc_env, label, parts, overrides)
        return self.bc_runs[key]

    def _command(self, agent_file: str, env_name: str, seeds: Sequence[int], steps: dict, overrides: dict):
        spec = self.spec
        seed_arg = f'--seed={seeds[0]}' if len(seeds) == 1 else f'--seeds={",".join(map(str, seeds))}'
        return ['python', 'main.py', *(['--bc_only'] if agent_file == BC.agent_file else []),
                f'--protocol={self.protocol.name}', f'--agent={agent_file}', f'--env_name={env_name}', seed_arg,
                f'--save_dir={spec.save_dir}', f'--dataset_dir={spec.dataset_dir}', *flag_args(steps),
                *flag_args(spec.main_flags), *spec.extra_main_flags, *flag_args(overrides, 'agent.')]

    def _job(self, stage: str, label: str, env_name: str, seeds: Tuple[int, ...], run_name, command: List[str],
             size: str, offline_steps: int, online_steps: int, depends_on: Optional[str] = None) -> Job:
        """A Job whose run directories are named `run_name(seed)`, with its network size and work per seed."""
        main_flags = self.main_flags
        return Job(stage, label, env_name, seeds, tuple(os.path.join(self.spec.save_dir, run_name(s)) for s in seeds),
                   command, offline_steps + online_steps, run_name(seeds_label(seeds)), depends_on, size,
                   updates=offline_steps + online_steps * main_flags['utd_ratio'],
                   evaluations=Schedule(offline_steps, online_steps, 0, main_flags['eval_interval'], 0).num_evaluations,
                   eval_episodes=main_flags['eval_episodes'])

    def bc_job(self, run: BCRun, seeds: Tuple[int, ...]) -> Job:
        name, spec = run.name(seeds_label(seeds)), self.spec
        if name not in self.bc_jobs:
            self.bc_jobs[name] = self._job(
                'bc', BC.label, run.env_name, seeds, run.name,
                self._command(BC.agent_file, run.env_name, seeds, {'bc_steps': spec.bc_steps}, run.agent_overrides),
                domains_lib.size_name({'actor_hidden_dims': run.name_parts[0]}), spec.bc_steps, 0)
        return self.bc_jobs[name]

    def method_job(self, label: str, config: dict, env_name: str, seeds: Tuple[int, ...],
                   bc_run: Optional[BCRun]) -> Job:
        spec, method = self.spec, METHODS[label]
        # The method's own flags (RLPD: no offline phase) replace the sweep's.
        steps = {'offline_steps': spec.offline_steps, 'online_steps': spec.online_steps,
                 **method.flags_under(self.protocol.name)}
        bc_job = None
        if bc_run is not None:
            bc_job = self.bc_job(bc_run, seeds)
            pretrained = bc_job.run_dirs[0] if len(seeds) == 1 else os.path.join(spec.save_dir, bc_run.name('{seed}'))
            steps.update(bc_steps=spec.bc_steps, pretrained_actor_path=pretrained)
        return self._job('rl', label, env_name, seeds, functools.partial(layout.run_name, method.slug, env_name),
                         self._command(method.agent_file, env_name, seeds, steps, self.agent_overrides(label)),
                         domains_lib.size_name(config), steps['offline_steps'], steps['online_steps'],
                         bc_job and bc_job.name)


def build_sweep(spec: SweepSpec) -> Sweep:
    """Every job of `spec` (see `experiments.presets.resolve_spec`), in launch order."""
    unknown = sorted((set(spec.network) | set(spec.extra_agent_overrides)) -
                     set().union(*(METHODS[label].default_config().keys() for label in spec.methods)))
    if unknown:
        raise ValueError(f'No method of the sweep has the agent config keys {unknown} (from the agent overrides).')
    builder, missing, rl_jobs, expected, duplicates = JobBuilder(spec), {}, [], [], []
    for domain in spec.domains:
        envs = domain_envs(domain, spec.tasks)
        present, detail = data_status(envs[0], spec.dataset_dir, builder.protocol)
        if not present:
            missing[domain] = detail
        for env_name in envs:
            launched, same_as = builder.distinct_configs(env_name)
            bc_env = envs[0] if spec.bc_per_domain else env_name
            bc_runs = {label: builder.bc_run(label, config, bc_env) for label, config in launched
                       if spec.bc_steps and METHODS[label].agent_class().PRETRAINED_FLOW_MODULES}
            expected += [(label, env_name, seed) for seed in spec.seeds for label in spec.methods]
            duplicates += [(label, env_name, seed, same_as[label]) for seed in spec.seeds for label in same_as]
            for start in range(0, len(spec.seeds), spec.seeds_per_job):  # the seeds of one main.py process
                seeds = spec.seeds[start:start + spec.seeds_per_job]
                rl_jobs += [builder.method_job(label, config, env_name, seeds, bc_runs.get(label))
                            for label, config in launched]
    return Sweep(list(builder.bc_jobs.values()), rl_jobs, expected, duplicates, missing, spec)


def summary(sweep: Sweep) -> str:
    spec, protocol = sweep.spec, domains_lib.get_protocol(sweep.spec.protocol)
    num_tasks = sum(len(domain_envs(domain, spec.tasks)) for domain in spec.domains)
    stage = (f', plus {sweep.bc_runs} BC pre-training runs (one per {"domain" if spec.bc_per_domain else "task"} and '
             f'seed, {spec.bc_steps} steps)' if sweep.bc_jobs else ', no BC pre-training stage (the methods start '
             'from scratch)')
    lines = [f'Sweep {spec.preset!r} under --protocol={protocol.name} ({protocol.description}): '
             f'{len(spec.methods)} methods x {num_tasks} tasks x {len(spec.seeds)} seeds '
             f'= {len(sweep.expected)} runs in the table{stage}.']
    same = collections.defaultdict(list)  # (method, the method it equals) -> a domain per run
    for method, env_name, _, same_as in sweep.duplicates:
        same[(method, same_as)].append(domains_lib.domain_name(env_name))
    lines += [f'  {len(names)} {method} runs have the configuration of {same_as} ({", ".join(sorted(set(names)))}) '
              'and are launched once; the aggregation reports them under both labels.'
              for (method, same_as), names in same.items()]
    per_job, bc, rl = spec.seeds_per_job, *sweep.launchable()
    lines.append(f'Jobs ({per_job} seed{"s" if per_job > 1 else ""} per main.py process): '
                 f'{len(sweep.bc_jobs)} BC + {len(sweep.rl_jobs)} methods = {len(sweep.bc_jobs) + len(sweep.rl_jobs)} '
                 f'jobs, for {sweep.bc_runs} + {sweep.rl_runs} run directories.')
    if sweep.missing_data:
        lines.append(f'Data missing under {spec.dataset_dir} for {len(sweep.missing_data)} of {len(spec.domains)} '
                     f'domains; their jobs are not launched ({len(sweep.bc_jobs) - len(bc)} BC + '
                     f'{len(sweep.rl_jobs) - len(rl)} method jobs):')
        lines += [f'  - {domain}: {detail}' for domain, detail in sweep.missing_data.items()]
    return '\n'.join(lines)


COSTS_SCHEMA = {  # the costs file; agents are `METHODS[...].slug`s, sizes `protocols.domains.size_name`s
    'device': str,  # where the figures were measured
    'command': str,  # how (provenance)
    'ms_per_update': dict,  # {agent: {size: ms}}: one float32 offline update of one seed
    'seed_group_speedup': dict,  # {size: {"N": x}}: wall time of N single-seed processes over one N-seed process's
    'eval_ms_per_episode': dict,  # {size: ms}: one evaluation episode
}
# Where the file has no evaluation or seed-group figure for a network size: the size costed in its place.
MEASURED_INSTEAD = {'large': 'paper'}
UNCOSTED = 'environment steps beyond evaluation are not in the costs file and not counted'


def check_costs(costs: dict):
    """Raises ValueError, in one line naming the bad key, unless `costs` follows COSTS_SCHEMA exactly."""
    if not isinstance(costs, dict):
        raise ValueError('the costs are not a JSON object')
    wrong = sorted(set(costs) ^ set(COSTS_SCHEMA))
    if wrong:
        raise ValueError(f'costs key {wrong[0]!r} is {"missing" if wrong[0] in COSTS_SCHEMA else "unknown"}')
    for key, kind in COSTS_SCHEMA.items():
        if not isinstance(costs[key], kind):
            raise ValueError(f'costs[{key!r}] is not a {"string" if kind is str else "JSON object"}')
    tables = {f'ms_per_update[{agent!r}]': sizes for agent, sizes in costs['ms_per_update'].items()}
    tables.update({f'seed_group_speedup[{size!r}]': row for size, row in costs['seed_group_speedup'].items()})
    tables['eval_ms_per_episode'] = costs['eval_ms_per_episode']
    for where, table in tables.items():
        if not isinstance(table, dict):
            raise ValueError(f'{where} is not a JSON object')
        bad = [key for key, value in table.items() if type(value) not in (int, float) or value <= 0 or (
            where.startswith('seed_group') and not (key.isdigit() and (key != '1' or value == 1.0)))]
        if bad:
            raise ValueError(f'{where}[{bad[0]!r}] is not a positive number (a group of N seeds: "N", "1" is 1.0)')


def load_costs(path: str) -> dict:
    with open(_abs(path)) as f:
        costs = json.load(f)
    check_costs(costs)
    return costs


def _figure(table: dict, size: str, what: str, notes: collections.Counter):
    """table[size], else the figure of the size measured instead (noted), else None."""
    instead = MEASURED_INSTEAD.get(size)
    if size not in table and instead in table:
        notes[f'{what} at size {size} costed as at size {instead}'] += 1
        return table[instead]
    return table.get(size)


def seed_group_speedup(costs: dict, size: str, seeds: int, notes: collections.Counter) -> float:
    """The speed-up of the largest measured group of at most `seeds` seeds in one process (1: none measured)."""
    row = (_figure(costs['seed_group_speedup'], size, 'seed groups', notes) or {}) if seeds > 1 else {}
    group = max((int(n) for n in row if int(n) <= seeds), default=1)
    if group < seeds:
        notes[f'{seeds} seeds per process at size {size} costed ' + (
            f'with the {group}-seed speed-up' if group > 1 else f'as {seeds} single-seed processes')] += 1
    return float(row.get(str(group), 1.0))


def job_ms(job: Job, costs: dict, seeds_per_process: int, notes: collections.Counter) -> np.ndarray:
    """[updates, evaluation] in ms of the job's seeds run `seeds_per_process` to a main.py process."""
    table, method = costs['ms_per_update'], METHODS[job.method]
    agent = method.slug if method.slug in table else method.agent_name  # e.g. qam-e measured as its module, qam
    if agent != method.slug and agent in table:
        notes[f'{method.slug} costed as {agent} (its agent module)'] += 1
    update_ms = table.get(agent, {}).get(job.size)
    if update_ms is None:
        notes[f'no ms_per_update for {method.slug} at size {job.size}: its updates count as 0 (measure them with '
              f'experiments/benchmark.py --agents={method.slug} --out=FILE)'] += 1
    episode_ms = _figure(costs['eval_ms_per_episode'], job.size, 'evaluation', notes)
    if episode_ms is None and job.evaluations:
        notes[f'no eval_ms_per_episode at size {job.size}: its evaluation counts as 0'] += 1
    scale = len(job.seeds) / seed_group_speedup(costs, job.size, seeds_per_process, notes)
    return scale * np.array([job.updates * (update_ms or 0.0),
                             job.evaluations * job.eval_episodes * (episode_ms or 0.0)])


# Device-hours of a sweep on the costs file's device, each job alone on it. jobs: main.py processes; hours: stage
# ('bc', 'rl') -> [updates, evaluation]; notes: what the file lacked and how it was costed -> jobs concerned.
Estimate = collections.namedtuple('Estimate', 'seeds_per_job jobs hours notes total')


def estimate(sweep: Sweep, costs: dict, one_seed_per_process: bool = False) -> Estimate:
    """The sweep's jobs as they are, or with every seed in its own main.py process."""
    hours, notes, processes = {'bc': np.zeros(2), 'rl': np.zeros(2)}, collections.Counter(), 0
    for job in sweep.bc_jobs + sweep.rl_jobs:
        per_process = 1 if one_seed_per_process else len(job.seeds)
        processes += len(job.seeds) // per_process
        hours[job.stage] += job_ms(job, costs, per_process, notes) / 3.6e6
    seeds_per_job = 1 if one_seed_per_process else sweep.spec.seeds_per_job
    return Estimate(seeds_per_job, processes, hours, dict(notes), sum(map(sum, hours.values())))


def estimate_report(sweep: Sweep, costs_path: str) -> str:
    """The dry run's estimate for one seed per job and for the sweep's --seeds_per_job."""
    try:
        costs = load_costs(costs_path)
    except (OSError, ValueError) as error:
        return f'No cost estimate from {costs_path}: {error}.'
    results = [estimate(sweep, costs, one_seed_per_process=True)]
    if sweep.spec.seeds_per_job != 1:
        results.append(estimate(sweep, costs))
    lines = [f'Estimated cost from {costs_path}: measured on {costs["device"]}; the hours are that device\'s, with '
             'each job alone on it (not your device\'s):']
    for result in results:
        updates, evaluation = sum(result.hours.values())
        lines.append(f'  seeds_per_job={result.seeds_per_job}: {result.jobs} jobs, {result.total:,.0f} device-hours '
                     f'({result.total / 24:,.1f} device-days): BC {sum(result.hours["bc"]):,.0f} + methods '
                     f'{sum(result.hours["rl"]):,.0f}; updates {updates:,.0f}, evaluation {evaluation:,.0f}')
    notes = dict.fromkeys([UNCOSTED] + [note for result in results for note in result.notes])
    return '\n'.join(lines + [f'  note: {note}' for note in notes])


def job_complete(job: Job) -> bool:
    """Whether every seed's eval.csv has the final evaluation (main.py evaluates at the last step)."""
    paths = [os.path.join(_abs(run_dir), layout.EVAL_CSV) for run_dir in job.run_dirs]
    return all(os.path.exists(path) and any(row['step'] == job.total_steps for row in read_csv(path)) for path in paths)


def succeeded(status: str) -> bool:
    return status == 'complete' or status.startswith('ok')


def run_job(job: Job, log_dir: str, skip_complete: bool = True) -> str:
    """Runs a job's command, logged to {log_dir}/{name}.log: 'ok (...)', 'complete' (skipped), 'preempted: ...'
    or 'failed ...'."""
    if skip_complete and job_complete(job):
        return 'complete'
    log_path, start = os.path.join(log_dir, f'{job.name}.log'), time.time()
    command = [sys.executable, *job.command[1:]]  # the commands' `python` is this interpreter
    with open(_abs(log_path), 'a') as log_file:
        log_file.write(f'$ {job.shell()}\n')
        log_file.flush()
        returncode = subprocess.run(command, cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT).returncode
    if returncode == EXIT_PREEMPTED:
        return f'preempted: saved and stopped; rerun the sweep to resume (log: {log_path})'
    if returncode != 0:
        return f'failed with exit code {returncode} (log: {log_path})'
    return f'ok ({time.time() - start:.0f}s)'


def run_local(bc_jobs: List[Job], rl_jobs: List[Job], max_workers: int, log_dir: str, skip_complete=True,
              log=print) -> Dict[str, str]:
    """Runs the jobs, at most `max_workers` at a time, every method's job after its BC job succeeded (at once
    when its BC job is not part of this launch). Returns {job name: status (`run_job`'s, or 'skipped: ...')}."""
    os.makedirs(_abs(log_dir), exist_ok=True)
    run = functools.partial(run_job, log_dir=log_dir, skip_complete=skip_complete)
    # BC job name -> the method jobs that start after it.
    waiting = {bc.name: [job for job in rl_jobs if job.depends_on == bc.name] for bc in bc_jobs}
    status, total = {}, len(bc_jobs) + len(rl_jobs)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max_workers) as executor:
        pending = {executor.submit(run, job): job for job in bc_jobs + rl_jobs if job.depends_on not in waiting}
        while pending:
            done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                job = pending.pop(future)
                try:
                    finished = [(job, future.result())]
                except Exception as error:  # noqa: BLE001
                    finished = [(job, f'failed: {type(error).__name__}: {error}')]
                for dependant in waiting.pop(job.name, []):
                    if succeeded(finished[0][1]):
                        pending[executor.submit(run, dependant)] = dependant
                    else:
                        finished.append((dependant, f'skipped: its BC job {job.name} did not finish'))
                for finished_job, result in finished:
                    status[finished_job.name] = result
                    log(f'[{len(status)}/{total}] {finished_job.name}: {result}')
    return status


SBATCH_TEMPLATE = """#!/bin/bash
#SBATCH --job-name={job_name}
#SBATCH --array=0-{last_index}{throttle}
#SBATCH --output={log_dir}/%x_%A_%a.out
#SBATCH --time={time}
#SBATCH --cpus-per-task={cpus}
#SBATCH --mem={mem}
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --signal=B:USR1@{signal_seconds}
{extra}
# {stage_doc}
# Task i runs line i + 1 of {commands_file}. On SIGTERM (preemption) or USR1 (sent before the time limit)
# main.py saves a checkpoint and exits with status {exit_preempted}; the task is then requeued, runs the same
# command again and main.py resumes from that checkpoint; each run appends to the task's log (--open-mode).
# SLURM sends TERM to every process of the job itself (preemption, time limit, scancel), so this shell forwards only
# USR1, which reaches it alone: a forwarded TERM would be main.py's second signal, which stops it without saving.
set -u
cd {repo_root}
{setup}
COMMAND=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {commands_file})
echo "[$(date)] task ${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}} (restart ${{SLURM_RESTART_COUNT:-0}}): $COMMAND"
stop_child() {{
  echo "[$(date)] $1: asking main.py to save and stop"
  kill -"$1" "$CHILD" 2>/dev/null
}}
trap 'stop_child USR1' USR1
trap 'echo "[$(date)] TERM: main.py saves and stops"' TERM
bash -c "exec $COMMAND" &
CHILD=$!
while true; do
  wait "$CHILD"; STATUS=$?
  kill -0 "$CHILD" 2>/dev/null || break  # wait returns early when a trapped signal arrives
done
if [ "$STATUS" -eq {exit_preempted} ]; then
  echo "[$(date)] main.py saved and stopped (status {exit_preempted}): requeueing"
  scontrol requeue "${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
  exit 0
fi
exit "$STATUS"
"""
STAGE_DOCS = {'bc': 'Stage 1: BC pre-training of the flow.',
              'rl': 'Stage 2: every method (from its BC run when the protocol has one).'}
# write_slurm's options, the defaults of the --slurm_* flags.
SLURM_OPTIONS = dict(time='48:00:00', cpus=4, mem='32G', gpus=1, partition=None, extra=[], setup=[], max_parallel=0,
                     array_limit=1000, signal_seconds=300)


def submit_script(bc_scripts: List[str], rl_scripts: List[str]) -> str:
    """submit.sh: the methods' arrays with --dependency=afterok on every BC array (no BC arrays: at once)."""
    if not bc_scripts:
        lines = ['# Submits the methods\' job arrays (the protocol has no BC pre-training stage).', 'set -euo pipefail']
        lines += [f'echo "methods: job $(sbatch --parsable {shlex.quote(script)})"' for script in rl_scripts]
    else:
        lines = ['# Submits stage 1 (BC) and stage 2 (methods, --dependency=afterok on every stage-1 array).',
                 'set -euo pipefail', 'BC_IDS=""']
        lines += [f'BC_IDS="$BC_IDS:$(sbatch --parsable {shlex.quote(script)})"' for script in bc_scripts]
        lines.append('echo "stage 1 (BC): job(s) ${BC_IDS#:}"')
        lines += [f'echo "stage 2: job $(sbatch --parsable ${{BC_IDS:+--dependency=afterok$BC_IDS}} '
                  f'{shlex.quote(script)})"' for script in rl_scripts]
    return '\n'.join(['#!/bin/bash'] + lines) + '\n'


def write_slurm(bc_jobs: List[Job], rl_jobs: List[Job], slurm_dir: str, **options) -> str:
    """Writes the job-array scripts of both stages (one array task per job, all its seeds in one main.py
    process) and submit.sh, with `SLURM_OPTIONS` changed by `options`; returns the path of submit.sh."""
    slurm_dir, options = pathlib.Path(_abs(slurm_dir)), {**SLURM_OPTIONS, **options}
    (slurm_dir / 'logs').mkdir(parents=True, exist_ok=True)
    extra = [*options['extra'], *([f'--partition={options["partition"]}'] if options['partition'] else []),
             *([f'--gres=gpu:{options["gpus"]}'] if options['gpus'] else [])]
    fields = dict(options, throttle=f'%{options["max_parallel"]}' if options['max_parallel'] else '',
                  log_dir=shlex.quote(str(slurm_dir / 'logs')), extra='\n'.join(f'#SBATCH {e}' for e in extra),
                  repo_root=shlex.quote(REPO_ROOT), setup='\n'.join(options['setup']), exit_preempted=EXIT_PREEMPTED)
    scripts = {'bc': [], 'rl': []}
    for stage, jobs in (('bc', bc_jobs), ('rl', rl_jobs)):
        for part, start in enumerate(range(0, len(jobs), options['array_limit'])):
            chunk, path = jobs[start:start + options['array_limit']], slurm_dir / f'{stage}_{part:03d}'
            path.with_suffix('.txt').write_text(''.join(job.shell() + '\n' for job in chunk))
            path.with_suffix('.sbatch').write_text(SBATCH_TEMPLATE.format(
                job_name=f'trqam-{stage}', last_index=len(chunk) - 1, stage_doc=STAGE_DOCS[stage],
                commands_file=shlex.quote(str(path.with_suffix('.txt'))), **fields))
            scripts[stage].append(str(path.with_suffix('.sbatch')))
    submit = slurm_dir / 'submit.sh'
    submit.write_text(submit_script(scripts['bc'], scripts['rl']))
    submit.chmod(submit.stat().st_mode | stat.S_IXUSR)
    return str(submit)


def generate_missing_data(sweep: Sweep):
    """Generates the missing datasets that can be generated locally (`--generate_episodes` episodes each,
    `--max_workers` at a time) by experiments/generate_dataset.py."""
    spec, protocol = sweep.spec, domains_lib.get_protocol(sweep.spec.protocol)
    rows = [domains_lib.table_domain(domain) for domain in sweep.missing_data]
    commands = [[sys.executable, 'experiments/generate_dataset.py', f'--env_name={row.dataset_name}',
                 f'--dataset_dir={spec.dataset_dir}', '--noprogress', '--noreport',
                 *([f'--num_episodes={spec.generate_episodes}'] if spec.generate_episodes else [])]
                for row in rows if row.suite == 'ogbench' and row.generatable
                and not (protocol.trqam_data and row.large)]
    for command in commands:
        print(f'[data] {shlex.join(command[1:])}')
    run = functools.partial(subprocess.run, cwd=REPO_ROOT, capture_output=True, text=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, spec.max_workers)) as executor:
        for command, result in zip(commands, executor.map(run, commands)):
            if result.returncode != 0:
                raise RuntimeError(f'{shlex.join(command[1:])} failed:\n{result.stderr[-3000:]}')


def print_tables(spec: SweepSpec, expected):
    """The aggregation of the sweep's runs (offline end and online end), as at the end of the cpu preset."""
    from experiments import aggregate

    runs = aggregate.load_runs(_abs(spec.save_dir), protocol=spec.protocol)
    out_dir = os.path.join(_abs(spec.save_dir), 'aggregate')
    for step in ('offline_end', 'online_end'):
        table = aggregate.success_table(runs, step=step, expected=expected)
        print(aggregate.to_markdown(table))
        aggregate.write_tables(table, out_dir, suffix=step)
    aggregate.plot_curves(runs, out_dir)
    print(f'Tables and curves in {out_dir}.')


def _define_flags():
    string, integer, boolean, enum, comma_list, multi_string = (
        flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_bool, flags.DEFINE_enum, flags.DEFINE_list,
        flags.DEFINE_multi_string)
    protocol_seeds = ', '.join(f'{count} under {name}' for name, count in PAPER_SEEDS.items())
    enum('preset', 'paper', list(PRESETS), 'What to run: paper, cpu (laptop-sized), robomimic (see presets.py).')
    enum('protocol', 'trqam', list(domains_lib.PROTOCOLS), 'main.py\'s --protocol of every job.')
    paper_columns = '; '.join(f'{name}: {", ".join(paper_methods(name))}' for name in domains_lib.PROTOCOLS
                              if domains_lib.PROTOCOLS[name].paper)
    comma_list('methods', None, f'Methods (default: the preset\'s, else the columns of the table the protocol '
               f'reproduces; {paper_columns}).')
    comma_list('domains', None, 'Domains (default: the preset\'s): '
               f'{", ".join([*domains_lib.DOMAINS, *domains_lib.ROBOMIMIC_DOMAINS])}.')
    comma_list('tasks', None, 'OGBench tasks 1..5 (default: the preset\'s).')
    comma_list('seeds', None, f'Seeds (default: the preset\'s, else the protocol\'s: {protocol_seeds}).')
    integer('seeds_per_job', 1, 'Seeds trained together in one main.py process (--seeds=a,b,...).')
    integer('bc_steps', None, 'BC pre-training steps (default: the preset\'s, else the protocol\'s).')
    integer('offline_steps', None, 'Offline steps (default: the preset\'s).')
    integer('online_steps', None, 'Online steps (default: the preset\'s).')
    boolean('bc_per_domain', False, 'One BC run per domain and seed (task 1\'s; BC uses no rewards).')
    string('dataset_dir', None, 'Data folder (default: the preset\'s).')
    string('save_dir', None, 'Parent of the run directories (default: the preset\'s, + _PROTOCOL but for trqam).')
    multi_string('main_flag', [], 'main.py flag of every job, e.g. --main_flag=--wandb_mode=offline.')
    multi_string('agent_override', [], 'KEY=VALUE for every job whose agent config has KEY.')
    enum('launcher', 'local', ['local', 'slurm'], 'How to run the jobs.')
    boolean('dry_run', False, 'Print the commands, their count and the estimated device-hours; run nothing.')
    string('costs', DEFAULT_COSTS, 'Measured costs for the --dry_run estimate (check_costs).')
    boolean('print_commands', True, 'With --dry_run, print every command.')
    integer('max_workers', None, 'Local launcher: parallel main.py processes (default: the preset\'s).')
    boolean('skip_complete', True, 'Local launcher: skip jobs whose every seed has its final evaluation.')
    boolean('generate_data', None, 'Generate missing manipulation datasets first (default: cpu preset only).')
    integer('generate_episodes', None, 'Episodes per generated dataset (default: the preset\'s).')
    boolean('tables', None, 'Print the aggregated tables at the end (default: cpu preset only).')
    string('slurm_dir', None, 'Where the sbatch scripts go (default: {save_dir}/slurm).')
    slurm = SLURM_OPTIONS  # write_slurm's defaults
    string('slurm_time', slurm['time'], 'Time limit per task.')
    integer('slurm_cpus', slurm['cpus'], 'CPUs per task.')
    string('slurm_mem', slurm['mem'], 'Memory per task.')
    integer('slurm_gpus', slurm['gpus'], 'GPUs per task (0: none).')
    string('slurm_partition', slurm['partition'], 'Partition.')
    multi_string('slurm_extra', slurm['extra'], 'Extra #SBATCH option, e.g. --slurm_extra=--account=abc.')
    multi_string('slurm_setup', slurm['setup'], 'Shell line run before each task, e.g. "source .venv/bin/activate".')
    integer('slurm_max_parallel', slurm['max_parallel'], 'Array throttle (%N); 0: none.')
    integer('slurm_array_limit', slurm['array_limit'], 'Tasks per array (< Slurm\'s MaxArraySize, 1001 by default).')
    integer('slurm_signal_seconds', slurm['signal_seconds'], 'USR1 this many seconds before the time limit (requeue).')
    boolean('slurm_submit', False, 'Run submit.sh after writing the scripts.')


def _parse_override(text: str) -> Tuple[str, object]:
    key, _, value = text.partition('=')
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def spec_from_flags(FLAGS) -> SweepSpec:
    def ints(values):
        return tuple(int(value) for value in values) if values else None

    return resolve_spec(
        FLAGS.preset, protocol=FLAGS.protocol, methods=tuple(FLAGS.methods or ()) or None,
        domains=tuple(FLAGS.domains or ()) or None, tasks=ints(FLAGS.tasks), seeds=ints(FLAGS.seeds),
        seeds_per_job=FLAGS.seeds_per_job, bc_steps=FLAGS.bc_steps, offline_steps=FLAGS.offline_steps,
        online_steps=FLAGS.online_steps, bc_per_domain=FLAGS.bc_per_domain, dataset_dir=FLAGS.dataset_dir,
        save_dir=FLAGS.save_dir, extra_main_flags=tuple(FLAGS.main_flag), max_workers=FLAGS.max_workers,
        generate_episodes=FLAGS.generate_episodes,
        extra_agent_overrides=dict(map(_parse_override, FLAGS.agent_override)) or None)


def launch(sweep: Sweep, FLAGS):
    """The launchable jobs on SLURM (scripts, and submitted with --slurm_submit) or as local processes."""
    spec, (bc_jobs, rl_jobs) = sweep.spec, sweep.launchable()
    if not bc_jobs and not rl_jobs:
        print('Nothing to launch.')
    elif FLAGS.launcher == 'slurm':
        submit = write_slurm(bc_jobs, rl_jobs, FLAGS.slurm_dir or os.path.join(spec.save_dir, 'slurm'),
                             **{key: FLAGS[f'slurm_{key}'].value for key in SLURM_OPTIONS})
        print(f'Wrote the sbatch scripts; submit with: bash {submit}')
        if FLAGS.slurm_submit:
            subprocess.run(['bash', submit], check=True)
    else:
        start = time.time()
        status = run_local(bc_jobs, rl_jobs, spec.max_workers, os.path.join(spec.save_dir, 'logs'),
                           FLAGS.skip_complete)
        failed = {name: result for name, result in status.items() if not succeeded(result)}
        print(f'Local sweep finished in {(time.time() - start) / 60:.1f} min: {len(status) - len(failed)} jobs done, '
              f'{len(failed)} failed or skipped.')
        for name, result in failed.items():
            print(f'  {name}: {result}')
        if FLAGS.tables if FLAGS.tables is not None else spec.preset == 'cpu':
            print_tables(spec, sweep.expected)


def main(_):
    FLAGS = flags.FLAGS
    try:
        spec = spec_from_flags(FLAGS)
        sweep = build_sweep(spec)
    except (ValueError, KeyError) as error:
        sys.exit(f'experiments/sweep.py: {error}')
    generate = (spec.preset == 'cpu' if FLAGS.generate_data is None else FLAGS.generate_data) and sweep.missing_data
    if FLAGS.dry_run:
        if FLAGS.print_commands:
            if sweep.bc_jobs:
                print(f'# Stage 1: BC pre-training ({len(sweep.bc_jobs)} jobs)')
                print('\n'.join(job.shell() for job in sweep.bc_jobs))
                print(f'# Stage 2: every method from its BC run, after it ({len(sweep.rl_jobs)} jobs)')
            else:
                print(f'# Every method from scratch ({len(sweep.rl_jobs)} jobs)')
            print('\n'.join(job.shell() for job in sweep.rl_jobs))
        print(summary(sweep))
        print(estimate_report(sweep, FLAGS.costs))
        if generate:
            print('Without --dry_run, the missing manipulation datasets are generated first.')
        return
    if generate:
        generate_missing_data(sweep)
        sweep = build_sweep(spec)
    print(summary(sweep))
    launch(sweep, FLAGS)


if __name__ == '__main__':
    _define_flags()
    app.run(main)
