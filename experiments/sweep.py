"""The papers' sweeps: methods x tasks x seeds under a protocol (`--protocol`, protocols/domains.py), as full
main.py command lines, for local processes or SLURM job arrays.

    python experiments/sweep.py --dry_run                                  # the TRQAM paper's sweep, and its cost
    python experiments/sweep.py --dry_run --protocol=qam                   # the QAM paper's (12 seeds, one stage)
    python experiments/sweep.py --dataset_dir=DATA --launcher=local --max_workers=4 --seeds_per_job=4
    python experiments/sweep.py --dataset_dir=DATA --launcher=slurm --slurm_submit
    python experiments/sweep.py --preset=cpu                               # ~1 hour on a 2-core laptop
    python experiments/sweep.py --preset=robomimic --dry_run               # the stability experiment

Jobs are built from the resolution main.py itself uses, not from a copy of the settings: a job passes
`--protocol=...` and only what the sweep must set explicitly (env, seeds, save_dir, dataset_dir, step
counts, the preset's main.py flags and network sizes), and main.py completes it from the same
`Method.protocol_settings` the sweep reads to name the runs (runner/layout.py) and the BC pre-training
runs they start from (`protocols.methods.bc_config_for`). The one addition is `--pretrained_actor_path`, which names
exactly the shared BC run main.py would pick by itself (`runner.layout.bc_run_name`): with it a method's
process does not reopen the finished BC run, whose directory lock would make the methods of one task
refuse each other when they start together.

Under `--protocol=trqam` a sweep has two stages: BC pre-training (`main.py --bc_only`) once per task,
seed and flow-network shape, then every method from that run. Under `--protocol=qam` the methods start
from scratch: one stage. Jobs whose configuration equals another job's (QAM-E where its per-domain
edit_scale is 0 is QAM) are launched once, by the rule the aggregation counts such runs under both labels
with (`Method.is_configured_as`, under the job's protocol).

`--seeds_per_job=K` trains K seeds in one main.py process (`--seeds=a,b,c`): a job's run directories are
its K seeds', and it is complete when each seed's eval.csv has its final step. A partially complete job
is simply started again: main.py resumes each seed. BC jobs are grouped the same way.

Launchers:
  local  `--max_workers` main.py processes at a time (concurrent.futures + subprocess); a method's job
         starts when its BC job has succeeded. Logs in {save_dir}/logs/. Finished jobs are skipped.
  slurm  sbatch job-array scripts for each stage (arrays of at most --slurm_array_limit tasks), the second
         stage with --dependency=afterok on the first; `#SBATCH --requeue` and `--signal=B:USR1@...`.
         The script forwards USR1 and TERM to main.py, which saves and exits with status 75, and then
         requeues the task; the rerun resumes from that checkpoint.

Domains whose data is not under --dataset_dir are listed, with how to get the data, and their jobs are
not launched. Relative paths are relative to the repository root (the jobs run there).

Cost estimate (`--dry_run`): device-hours of the whole sweep from measured costs, read from `--costs=FILE`
(default experiments/reference_results/update_costs_cpu.json), the file `experiments/benchmark.py
--out=FILE` writes (its schema, checked there by `check_costs`):

    {"device": "cpu: Intel(R) Xeon(R) Processor (2 cores)",   # where the numbers were measured
     "command": "python experiments/benchmark.py ...",        # how (provenance)
     "ms_per_update": {"trqam": {"paper": 770, "large": 2900, "small": 4.4}, "bc": {...}, ...},
     "seed_group_speedup": {"small": {"1": 1.0, "2": 1.7, "4": 2.9, "8": 4.6}, ...},
     "eval_ms_per_episode": {"paper": 900, "small": 400}}

`ms_per_update`: float32 ms per offline update of one seed, by agent and network size. Agents are the
registry's slugs (`protocols.methods.METHODS[...].slug`: trqam, qam-e, cgql-l, bc, ...); an absent slug falls back to
its agent module's name (qam-e -> qam, cgql-l -> cgql, bc -> bc_flow). Sizes are experiments/benchmark.py's
('paper' = 4 x 512 with 10 critics and batch 256, 'small' = 2 x 64, 'tiny' = 2 x 16) plus 'large' = 4 x 1024,
the large-data domains' networks under trqam; other shapes are named like '3x256'. Where 'large' is absent
it is 4 x the 'paper' cost (the hidden products are 4 x larger). `seed_group_speedup`: the wall time of N
single-seed main.py processes over that of one N-seed process, per size (whole runs: updates, environment
steps, evaluation). `eval_ms_per_episode`: one evaluation episode, per size (4 x 1024: the 4 x 512 figure).

Per job: (bc_steps for a BC job, offline_steps + online_steps x utd_ratio for a method) updates x its
agent's ms per update at its size, plus its evaluations (runner/schedule.py's: every eval_interval and at the
end of each phase) x eval_episodes x ms per episode, for each seed; a job of K seeds in one process costs K
times that over the file's K-seed speed-up at its size (K times, where the file has none). Online
environment stepping apart from evaluation is not in the schema and is not counted. The hours are those of
the file's device, each job alone on it.
"""

import ast
import concurrent.futures
import csv
import dataclasses
import functools
import json
import os
import shlex
import stat
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ''):  # `python experiments/sweep.py` from the repository root.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ml_collections  # noqa: E402

from protocols.methods import BC, METHODS, bc_config_for, paper_methods, resolve_protocol  # noqa: E402
from experiments.presets import PRESETS, domain_envs, expected_runs, resolve_spec  # noqa: E402,F401
from protocols import domains as domains_lib  # noqa: E402
from runner import layout  # noqa: E402
from runner.flags import default_flag_values  # noqa: E402
from core.errors import EXIT_PREEMPTED  # noqa: E402
from runner.schedule import is_due  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN_PY = os.path.join(REPO_ROOT, 'main.py')
DEFAULT_COSTS = 'experiments/reference_results/update_costs_cpu.json'
# experiments/benchmark.py's network sizes by hidden layers, and the large-data domains' 4 x 1024.
SIZE_NAMES = {(512,) * 4: 'paper', (1024,) * 4: 'large', (64, 64): 'small', (16, 16): 'tiny'}
DEFAULT_LARGE_OVER_PAPER = 4.0  # 4 x 1024 against 4 x 512 where not measured: the hidden products are 4 x larger


@dataclasses.dataclass
class Job:
    stage: str  # 'bc' or 'rl'
    method: str  # table label ('BC' for stage 1)
    env_name: str
    seeds: Tuple[int, ...]
    run_dirs: Tuple[str, ...]  # one per seed
    command: List[str]
    total_steps: int  # the final step of each run directory
    depends_on: Optional[str] = None  # name of the BC job
    data_ok: bool = True
    name: str = ''  # default: the run directory's name (one seed), with the seeds' range (several)
    agent: str = ''  # cost keys: the method's slug and agent module
    agent_name: str = ''
    size: str = ''  # network size (SIZE_NAMES)
    updates: int = 0  # gradient updates per seed
    online_steps: int = 0  # environment steps per seed
    evaluations: int = 0  # per seed
    eval_episodes: int = 0  # per evaluation

    def __post_init__(self):
        self.seeds, self.run_dirs = tuple(self.seeds), tuple(self.run_dirs)
        if not self.name:
            self.name = os.path.basename(self.run_dirs[0])

    @property
    def run_dir(self) -> str:
        """The first seed's run directory."""
        return self.run_dirs[0]

    def shell(self) -> str:
        return shlex.join(self.command)


@dataclasses.dataclass
class Sweep:
    bc_jobs: List[Job]
    rl_jobs: List[Job]
    expected: List[Tuple[str, str, int]]  # (method, env, seed) of the table, duplicates included
    duplicates: List[Tuple[str, str, int, str]]  # (method, env, seed, same configuration as method)
    missing_data: Dict[str, str]  # domain -> what is missing and how to get it
    spec: dict

    def launchable(self):
        return [job for job in self.bc_jobs if job.data_ok], [job for job in self.rl_jobs if job.data_ok]

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
    args = []
    for name, value in flags.items():
        if isinstance(value, bool) and not prefix:
            args.append(f'--{name}' if value else f'--no{name}')
        else:
            args.append(f'--{prefix}{name}={format_value(value)}')
    return args


def seed_groups(seeds: Sequence[int], per_job: int) -> List[Tuple[int, ...]]:
    """`seeds` in consecutive groups of `per_job` (the last one may be smaller)."""
    seeds = tuple(seeds)
    return [seeds[start:start + per_job] for start in range(0, len(seeds), per_job)]


def seed_args(seeds: Sequence[int]) -> List[str]:
    return [f'--seed={seeds[0]}'] if len(seeds) == 1 else [f'--seeds={",".join(map(str, seeds))}']


def seeds_label(seeds: Sequence[int]) -> str:
    """'3', '0-3' (consecutive) or '0,2,5': a job's seeds in its name."""
    seeds = tuple(seeds)
    if len(seeds) == 1:
        return str(seeds[0])
    if seeds == tuple(range(seeds[0], seeds[0] + len(seeds))):
        return f'{seeds[0]}-{seeds[-1]}'
    return ','.join(map(str, seeds))


# ----------------------------------------------------------------------------------------------------------------------
# What main.py resolves for a job.
# ----------------------------------------------------------------------------------------------------------------------


def resolve_agent(method, env_name: str, protocol: str, dataset_dir: Optional[str], agent_overrides: dict,
                  flags: Optional[dict] = None) -> Tuple[dict, dict]:
    """(main.py flags the protocol sets, resolved agent config) of `main.py --protocol=PROTOCOL
    --agent=<method's file> --env_name=ENV --agent.K=V... [--FLAG=V...]`: main.py's own rule,
    `protocols.methods.resolve_protocol`, with the command's flags and agent keys as the explicit ones."""
    flags = dict(flags or {})
    values = {**default_flag_values(), **flags, 'env_name': env_name, 'protocol': protocol, 'dataset_dir': dataset_dir}
    config = method.default_config()
    with config.unlocked():
        config.update(agent_overrides)
    explicit = set(flags) | {f'agent.{key}' for key in agent_overrides}
    _, agent, applied = resolve_protocol(method, values, config, explicit)
    return {key: value for key, value in applied.items() if not key.startswith('agent.')}, agent.to_dict()


def network_size(agent_config: dict) -> str:
    """The cost table's name of a config's network size."""
    dims = tuple(agent_config.get('actor_hidden_dims') or ())
    if dims in SIZE_NAMES:
        return SIZE_NAMES[dims]
    return f'{len(dims)}x{dims[0]}' if dims and len(set(dims)) == 1 else '-'.join(map(str, dims))


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and list(a) == list(b)
    return a == b


def _differences(a: dict, b: dict) -> Dict[str, tuple]:
    return {key: (a.get(key), b.get(key)) for key in sorted(set(a) | set(b)) if not _same(a.get(key), b.get(key))}


def number_of_evaluations(offline_steps: int, online_steps: int, eval_interval: int) -> int:
    """Evaluations of one run (runner/schedule.py's rule: every eval_interval and at the end of each phase)."""
    total = offline_steps + online_steps
    count = total // eval_interval if eval_interval > 0 else 0
    return count + sum(1 for step in {offline_steps, total} if step > 0 and not is_due(step, eval_interval))


def _flow_method(label: str) -> bool:
    """Whether the method starts from a BC pre-trained flow (main.py's BC stage applies to it)."""
    return _cached_flow_method(label, METHODS[label].agent)


@functools.lru_cache(maxsize=None)
def _cached_flow_method(label: str, agent: str) -> bool:
    return bool(METHODS[label].agent_class().PRETRAINED_FLOW_MODULES)


# ----------------------------------------------------------------------------------------------------------------------
# The jobs.
# ----------------------------------------------------------------------------------------------------------------------


def _abs(path: str) -> str:
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.join(REPO_ROOT, path)


def data_status(env_name: str, dataset_dir: str, protocol) -> Tuple[bool, str]:
    """(present, what is missing and how to get it) of the data a run of `protocol` on `env_name` reads."""
    settings = domains_lib.domain_settings(env_name)
    if settings.suite == 'robomimic':
        from envs import robomimic

        path = robomimic.dataset_path(env_name, _abs(dataset_dir))
        if os.path.isfile(path):
            return True, path
        shown = robomimic.dataset_path(env_name, dataset_dir)
        return False, f'no {shown}. ' + robomimic.download_instructions(env_name, shown).replace('\n', '\n      ')
    present, detail = domains_lib.dataset_status(env_name, _abs(dataset_dir), protocol)
    if present:
        return True, detail
    return False, f'{detail}; {domains_lib.how_to_get(env_name, dataset_dir, protocol)}'


def _config_keys(label: str) -> frozenset:
    method = METHODS[label]
    return _cached_config_keys(label, method.agent, method.config_module)


@functools.lru_cache(maxsize=None)
def _cached_config_keys(label: str, agent: str, config_module: str) -> frozenset:
    return frozenset(METHODS[label].default_config().keys())


def job_agent_overrides(label: str, spec: dict) -> dict:
    """The --agent.* values a method's job sets: the spec's network sizes and extra overrides its config has."""
    keys = _config_keys(label)
    return {key: value for key, value in {**spec['network'], **spec['extra_agent_overrides']}.items() if key in keys}


def _check_overrides(spec: dict):
    overrides = {**spec['network'], **spec['extra_agent_overrides']}
    known = set().union(*(_config_keys(label) for label in spec['methods']))
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f'No method of the sweep has the agent config keys {unknown} (from the agent overrides).')


class _BCStage:
    """The BC pre-training runs of a sweep: one job per (task, seed group, flow-network shape), whose
    config is every method's `bc_config_for` (they must agree: they share the run directory)."""

    def __init__(self, spec: dict, protocol, present: Dict[str, bool]):
        self.spec, self.protocol, self.present = spec, protocol, present
        self.jobs: Dict[str, Job] = {}
        self.runs: Dict[tuple, tuple] = {}  # (bc_env, BC config) -> (first method, run-name parts, agent overrides)
        self.by_method: Dict[tuple, tuple] = {}  # (method, env, bc_env) -> (run-name parts, agent overrides)

    def _bc_run(self, label: str, method_config: dict, bc_env: str):
        """(run-name parts, the BC job's --agent.* values) of the BC run a method's config starts from."""
        spec = self.spec
        target = bc_config_for(ml_collections.ConfigDict(method_config)).to_dict()
        key = (bc_env, repr(sorted(target.items())))
        if key in self.runs:
            return self.runs[key][1:]
        parts = (target['actor_hidden_dims'], target['actor_layer_norm'], target['horizon_length'])
        for (env, _), (first, other_parts, _) in self.runs.items():
            if env == bc_env and other_parts == parts:
                raise ValueError(f'{label} and {first} would start from the same BC run on {bc_env} '
                                 f'({layout.bc_run_name(bc_env, 0, *parts)}) with different BC configs.')
        # The BC job's own command: the agent keys its config would not resolve to by itself.
        _, plain = resolve_agent(BC, bc_env, self.protocol.name, spec['dataset_dir'], {})
        overrides = {key: value for key, value in target.items() if key != 'agent_name' and
                     (key in spec['network'] or key in spec['extra_agent_overrides'] or not _same(value, plain[key]))}
        _, resolved = resolve_agent(BC, bc_env, self.protocol.name, spec['dataset_dir'], overrides)
        differences = _differences(bc_config_for(ml_collections.ConfigDict(resolved)).to_dict(), target)
        if differences:
            raise ValueError(f'The BC job on {bc_env} would not resolve to {label}\'s BC config: {differences}.')
        self.runs[key] = (label, parts, overrides)
        return parts, overrides

    def job_for(self, label: str, env_name: str, method_config: dict, bc_env: str, seeds: Tuple[int, ...],
                domain: str) -> Tuple[Job, str]:
        """(the BC job a method's job on `seeds` starts from, its run directories with "{seed}" for the seed)."""
        spec = self.spec
        if (label, env_name, bc_env) not in self.by_method:
            self.by_method[(label, env_name, bc_env)] = self._bc_run(label, method_config, bc_env)
        parts, overrides = self.by_method[(label, env_name, bc_env)]
        pattern = os.path.join(spec['save_dir'], layout.bc_run_name(bc_env, '{seed}', *parts))
        name = layout.bc_run_name(bc_env, seeds_label(seeds), *parts)
        if name in self.jobs:
            return self.jobs[name], pattern
        run_dirs = tuple(os.path.join(spec['save_dir'], layout.bc_run_name(bc_env, seed, *parts)) for seed in seeds)
        command = [spec['python'], 'main.py', '--bc_only', f'--protocol={self.protocol.name}',
                   f'--agent={BC.agent_file}', f'--env_name={bc_env}', *seed_args(seeds),
                   f'--save_dir={spec["save_dir"]}', f'--dataset_dir={spec["dataset_dir"]}',
                   f'--bc_steps={spec["bc_steps"]}', *flag_args(spec['main_flags']), *spec['extra_main_flags'],
                   *flag_args(overrides, 'agent.')]
        main_flags = {**default_flag_values(), **spec['main_flags']}
        job = Job('bc', BC.label, bc_env, seeds, run_dirs, command, spec['bc_steps'], data_ok=self.present[domain],
                  name=name, agent=BC.slug, agent_name=BC.agent_name,
                  size=network_size({'actor_hidden_dims': parts[0]}),
                  updates=spec['bc_steps'],
                  evaluations=number_of_evaluations(spec['bc_steps'], 0, main_flags['eval_interval']),
                  eval_episodes=main_flags['eval_episodes'])
        self.jobs[name] = job
        return job, pattern


def build_sweep(spec: dict) -> Sweep:
    """Every job of `spec` (see `experiments.presets.resolve_spec`), in launch order."""
    protocol = domains_lib.get_protocol(spec['protocol'])
    dataset_dir = spec['dataset_dir']
    _check_overrides(spec)
    main_flags = {**default_flag_values(), **spec['main_flags']}
    groups = seed_groups(spec['seeds'], spec['seeds_per_job'])
    rl_jobs, expected, duplicates, missing, present = [], [], [], {}, {}
    for domain in spec['domains']:
        envs = domain_envs(domain, spec['tasks'])
        present[domain], detail = data_status(envs[0], dataset_dir, protocol)
        if not present[domain]:
            missing[domain] = detail
    bc_stage = _BCStage(spec, protocol, present)
    for domain in spec['domains']:
        envs = domain_envs(domain, spec['tasks'])
        for env_name in envs:
            # Each method's configuration on this task; identical ones are launched once.
            launched, same_as = [], {}  # [(label, agent config)], {label: label of the same configuration}
            for label in spec['methods']:
                overrides = job_agent_overrides(label, spec)
                _, config = resolve_agent(METHODS[label], env_name, protocol.name, dataset_dir, overrides)
                earlier = [other for other, other_config in launched
                           if METHODS[label].is_configured_as(other_config, env_name, protocol.name, other)]
                if earlier:
                    same_as[label] = earlier[0]
                else:
                    launched.append((label, config))
            bc_env = envs[0] if spec['bc_per_domain'] else env_name
            for seeds in groups:
                for seed in seeds:
                    for label in spec['methods']:
                        expected.append((label, env_name, seed))
                        if label in same_as:
                            duplicates.append((label, env_name, seed, same_as[label]))
                for label, config in launched:
                    rl_jobs.append(_method_job(label, config, env_name, bc_env, seeds, spec, protocol, bc_stage,
                                               present[domain], main_flags, domain))
    return Sweep(list(bc_stage.jobs.values()), rl_jobs, expected, duplicates, missing, spec)


def _method_job(label, config, env_name, bc_env, seeds, spec, protocol, bc_stage, data_ok, main_flags, domain):
    method = METHODS[label]
    run_dirs = tuple(os.path.join(spec['save_dir'], layout.run_name(method.slug, env_name, seed)) for seed in seeds)
    command = [spec['python'], 'main.py', f'--protocol={protocol.name}', f'--agent={method.agent_file}',
               f'--env_name={env_name}', *seed_args(seeds), f'--save_dir={spec["save_dir"]}',
               f'--dataset_dir={spec["dataset_dir"]}', f'--offline_steps={spec["offline_steps"]}',
               f'--online_steps={spec["online_steps"]}']
    depends_on = None
    if spec['bc_steps'] and _flow_method(label):
        bc_job, pretrained = bc_stage.job_for(label, env_name, config, bc_env, seeds, domain)
        depends_on = bc_job.name
        if len(seeds) == 1:
            pretrained = bc_job.run_dirs[0]
        command += [f'--bc_steps={spec["bc_steps"]}', f'--pretrained_actor_path={pretrained}']
    command += [*flag_args(spec['main_flags']), *spec['extra_main_flags'],
                *flag_args(job_agent_overrides(label, spec), 'agent.')]
    name = run_dirs[0] if len(seeds) == 1 else layout.run_name(method.slug, env_name, seeds_label(seeds))
    return Job('rl', label, env_name, seeds, run_dirs, command, spec['offline_steps'] + spec['online_steps'],
               depends_on=depends_on, data_ok=data_ok, name=os.path.basename(name), agent=method.slug,
               agent_name=method.agent_name, size=network_size(config),
               updates=spec['offline_steps'] + spec['online_steps'] * main_flags['utd_ratio'],
               online_steps=spec['online_steps'],
               evaluations=number_of_evaluations(spec['offline_steps'], spec['online_steps'],
                                                 main_flags['eval_interval']),
               eval_episodes=main_flags['eval_episodes'])


def summary(sweep: Sweep) -> str:
    spec = sweep.spec
    protocol = domains_lib.get_protocol(spec['protocol'])
    num_tasks = sum(len(domain_envs(domain, spec['tasks'])) for domain in spec['domains'])
    if sweep.bc_jobs:
        stage = (f', plus {sweep.bc_runs} BC pre-training runs '
                 f'({"one per domain" if spec["bc_per_domain"] else "one per task"} and seed, '
                 f'{spec["bc_steps"]} steps)')
    else:
        stage = ', no BC pre-training stage (the methods start from scratch)'
    lines = [
        f'Sweep {spec["preset"]!r} under --protocol={protocol.name} ({protocol.description}): '
        f'{len(spec["methods"])} methods x {num_tasks} tasks x {len(spec["seeds"])} seeds '
        f'= {len(sweep.expected)} runs in the table{stage}.',
    ]
    if sweep.duplicates:
        groups = {}
        for method, env_name, _, same_as in sweep.duplicates:
            groups.setdefault((method, same_as), set()).add(domains_lib.domain_name(env_name))
        for (method, same_as), names in groups.items():
            count = sum(1 for d in sweep.duplicates if (d[0], d[3]) == (method, same_as))
            lines.append(f'  {count} {method} runs have the configuration of {same_as} ({", ".join(sorted(names))}) '
                         f'and are launched once; the aggregation reports them under both labels.')
    per_job = spec['seeds_per_job']
    lines.append(f'Jobs ({per_job} seed{"s" if per_job > 1 else ""} per main.py process): '
                 f'{len(sweep.bc_jobs)} BC + {len(sweep.rl_jobs)} methods = {len(sweep.bc_jobs) + len(sweep.rl_jobs)} '
                 f'jobs, for {sweep.bc_runs} + {sweep.rl_runs} run directories.')
    if sweep.missing_data:
        bc, rl = sweep.launchable()
        lines.append(f'Data missing under {spec["dataset_dir"]} for {len(sweep.missing_data)} of '
                     f'{len(spec["domains"])} domains; their jobs are not launched '
                     f'({len(sweep.bc_jobs) - len(bc)} BC + {len(sweep.rl_jobs) - len(rl)} method jobs):')
        lines += [f'  - {domain}: {detail}' for domain, detail in sweep.missing_data.items()]
    return '\n'.join(lines)


# ----------------------------------------------------------------------------------------------------------------------
# Cost estimate (device-hours) from measured per-update costs.
# ----------------------------------------------------------------------------------------------------------------------


class CostsError(ValueError):
    pass


def load_costs(path: str) -> dict:
    """The costs file (schema: the module docstring)."""
    with open(_abs(path)) as f:
        costs = json.load(f)
    if not isinstance(costs, dict) or not isinstance(costs.get('ms_per_update'), dict) or not costs['ms_per_update']:
        raise CostsError('no "ms_per_update" table ({agent: {size: ms}}); see experiments/sweep.py\'s docstring')
    if not costs.get('device'):
        raise CostsError('it does not say which device its numbers are from ("device")')
    return costs


class CostModel:
    """ms of a job from a costs table; `notes` says where it had to assume, `uncounted` what it could not
    cost ({(agent, size): number of jobs})."""

    def __init__(self, costs: dict):
        self.costs = costs
        self.notes: Dict[str, int] = {}
        self.uncounted: Dict[Tuple[str, str], int] = {}

    def _note(self, text: str):
        self.notes[text] = self.notes.get(text, 0) + 1

    def ms_per_update(self, job: Job) -> Optional[float]:
        """One update of one seed; None when the file has no cost for the job's agent at its size."""
        table = self.costs['ms_per_update']
        key = next((key for key in (job.agent, job.agent_name) if key in table), None)
        if key is None:
            return None
        sizes = table[key]
        if key != job.agent:
            self._note(f'{job.agent} costed as {key} (its agent module)')
        if job.size in sizes:
            return float(sizes[job.size])
        if job.size == 'large' and 'paper' in sizes:
            self._note(f'{key} at 4 x 1024 costed as {DEFAULT_LARGE_OVER_PAPER:g} x its 4 x 512 cost')
            return DEFAULT_LARGE_OVER_PAPER * float(sizes['paper'])
        return None

    def eval_ms_per_episode(self, job: Job) -> float:
        table = self.costs.get('eval_ms_per_episode') or {}
        if job.size in table:
            return float(table[job.size])
        if job.size == 'large' and 'paper' in table:
            self._note('evaluation at 4 x 1024 costed as at 4 x 512')
            return float(table['paper'])
        if job.evaluations:
            self._note(f'evaluation at size {job.size} not counted (no eval_ms_per_episode for it)')
        return 0.0

    def speedup(self, job: Job, num_seeds: int) -> float:
        """The file's wall-time factor of `num_seeds` seeds in one process against as many processes."""
        if num_seeds == 1:
            return 1.0
        table = self.costs.get('seed_group_speedup') or {}
        size = job.size if job.size in table or job.size != 'large' else 'paper'
        row = table.get(size) or {}
        value = row.get(str(num_seeds))
        if value is None:
            # A group is at least as efficient as a smaller one: the largest group measured below it, else none.
            smaller = max((int(n) for n in row if 1 < int(n) < num_seeds), default=None)
            if smaller is None:
                self._note(f'{num_seeds} seeds per process at size {job.size} costed as {num_seeds} single-seed '
                           f'processes (the file has no {num_seeds}-seed speed-up for it)')
                return 1.0
            self._note(f'{num_seeds} seeds per process at size {job.size} costed with the {smaller}-seed speed-up '
                       f'(the file has none for {num_seeds} seeds)')
            value = row[str(smaller)]
        if size != job.size:
            self._note(f'{num_seeds} seeds per process at 4 x 1024 sped up as at 4 x 512')
        return float(value)

    def job_ms(self, job: Job, num_seeds: Optional[int] = None) -> Tuple[float, float]:
        """(updates, evaluation) in ms of `job` with its seeds in processes of `num_seeds` (default: all in one)."""
        num_seeds = num_seeds or len(job.seeds)
        ms = self.ms_per_update(job)
        if ms is None:
            self.uncounted[(job.agent, job.size)] = self.uncounted.get((job.agent, job.size), 0) + 1
            ms = 0.0
        factor = len(job.seeds) / self.speedup(job, num_seeds)
        return (factor * job.updates * ms,
                factor * job.evaluations * job.eval_episodes * self.eval_ms_per_episode(job))


def estimate(sweep: Sweep, costs: dict, seeds_per_job: Optional[int] = None) -> dict:
    """Device-hours of the sweep's jobs, with `seeds_per_job` seeds per process (default: the sweep's own
    jobs; 1: every seed in its own process)."""
    model = CostModel(costs)
    totals = {'bc': [0.0, 0.0], 'rl': [0.0, 0.0]}
    jobs = 0
    for job in sweep.bc_jobs + sweep.rl_jobs:
        num_seeds = 1 if seeds_per_job == 1 else len(job.seeds)
        jobs += len(job.seeds) // num_seeds
        for index, ms in enumerate(model.job_ms(job, num_seeds)):
            totals[job.stage][index] += ms
    hours = {stage: [ms / 3.6e6 for ms in parts] for stage, parts in totals.items()}
    return {'seeds_per_job': seeds_per_job or sweep.spec['seeds_per_job'], 'jobs': jobs, 'hours': hours,
            'total': sum(sum(parts) for parts in hours.values()), 'notes': model.notes, 'uncounted': model.uncounted}


def _estimate_line(result: dict) -> str:
    hours = result['hours']
    return (f'  seeds_per_job={result["seeds_per_job"]}: {result["jobs"]} jobs, {result["total"]:,.0f} device-hours '
            f'({result["total"] / 24:,.1f} device-days): BC {sum(hours["bc"]):,.0f} + methods {sum(hours["rl"]):,.0f}; '
            f'updates {hours["bc"][0] + hours["rl"][0]:,.0f}, evaluation {hours["bc"][1] + hours["rl"][1]:,.0f}')


def estimate_report(sweep: Sweep, costs_path: str) -> str:
    """The dry run's estimate for one seed per job and for the sweep's --seeds_per_job."""
    try:
        costs = load_costs(costs_path)
    except (OSError, ValueError) as error:
        return f'No cost estimate from {costs_path}: {error}.'
    results = [estimate(sweep, costs, 1)]
    if sweep.spec['seeds_per_job'] != 1:
        results.append(estimate(sweep, costs))
    lines = [f'Estimated cost from {costs_path}: measured on {costs["device"]}; the hours are that device\'s, with '
             'each job alone on it (not your device\'s):']
    lines += [_estimate_line(result) for result in results]
    notes = {'online environment steps (beyond evaluation) are not in the costs file and not counted': True}
    for result in results:
        notes.update(dict.fromkeys(result['notes'], True))
        for (agent, size), count in result['uncounted'].items():
            notes[f'no cost for {agent} at size {size} in the file: its {count} jobs (seeds_per_job='
                  f'{result["seeds_per_job"]}) count as 0'] = True
    lines += [f'  note: {note}' for note in notes]
    return '\n'.join(lines)


# ----------------------------------------------------------------------------------------------------------------------
# Launchers.
# ----------------------------------------------------------------------------------------------------------------------


def run_complete(run_dir: str, total_steps: int) -> bool:
    """Whether eval.csv has the final evaluation (main.py evaluates at the last step)."""
    path = os.path.join(_abs(run_dir), layout.EVAL_CSV)
    if not os.path.exists(path):
        return False
    with open(path, newline='') as f:
        return any(int(float(row['step'])) == total_steps for row in csv.DictReader(f))


def job_complete(job: Job) -> bool:
    """Whether every seed of the job has its final evaluation (a partly complete job is run again: main.py
    resumes each seed from its own checkpoint)."""
    return all(run_complete(run_dir, job.total_steps) for run_dir in job.run_dirs)


def _local_command(command: List[str]) -> List[str]:
    return [sys.executable, *command[1:]] if command[0] == 'python' else list(command)


def run_local(bc_jobs: List[Job], rl_jobs: List[Job], max_workers: int, log_dir: str, skip_complete=True,
              log=print) -> Dict[str, str]:
    """Runs the jobs, at most `max_workers` at a time, every method's job after its BC job succeeded.

    Returns {job name: 'ok' | 'complete' (already finished) | 'failed (see LOG)' | 'skipped: ...'}.
    """
    os.makedirs(_abs(log_dir), exist_ok=True)
    dependants = {}
    for job in rl_jobs:
        dependants.setdefault(job.depends_on, []).append(job)
    status, total = {}, len(bc_jobs) + len(rl_jobs)

    def run(job):
        if skip_complete and job_complete(job):
            return 'complete'
        log_path = os.path.join(_abs(log_dir), f'{job.name}.log')
        start = time.time()
        with open(log_path, 'a') as log_file:
            log_file.write(f'$ {job.shell()}\n')
            log_file.flush()
            result = subprocess.run(_local_command(job.command), cwd=REPO_ROOT, stdout=log_file,
                                    stderr=subprocess.STDOUT)
        shown = os.path.join(log_dir, job.name + '.log')
        if result.returncode == EXIT_PREEMPTED:
            return f'preempted: saved and stopped; rerun the sweep to resume (log: {shown})'
        if result.returncode != 0:
            return f'failed with exit code {result.returncode} (log: {shown})'
        return f'ok ({time.time() - start:.0f}s)'

    with concurrent.futures.ThreadPoolExecutor(max_workers=max_workers) as executor:
        pending = {executor.submit(run, job): job for job in bc_jobs}
        # Method jobs whose BC job is not part of this launch (e.g. finished before) start at once.
        bc_names = {job.name for job in bc_jobs}
        for job in rl_jobs:
            if job.depends_on not in bc_names:
                pending[executor.submit(run, job)] = job
        while pending:
            done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                job = pending.pop(future)
                try:
                    result = future.result()
                except Exception as error:  # noqa: BLE001
                    result = f'failed: {type(error).__name__}: {error}'
                status[job.name] = result
                log(f'[{len(status)}/{total}] {job.name}: {result}')
                if job.stage == 'bc':
                    for dependant in dependants.get(job.name, []):
                        if result == 'complete' or result.startswith('ok'):
                            pending[executor.submit(run, dependant)] = dependant
                        else:
                            status[dependant.name] = f'skipped: its BC job {job.name} did not finish'
                            log(f'[{len(status)}/{total}] {dependant.name}: {status[dependant.name]}')
    return status


SBATCH_TEMPLATE = """#!/bin/bash
#SBATCH --job-name={job_name}
#SBATCH --array=0-{last_index}{throttle}
#SBATCH --output={log_dir}/%x_%A_%a.out
#SBATCH --time={time}
#SBATCH --cpus-per-task={cpus}
#SBATCH --mem={mem}
#SBATCH --requeue
#SBATCH --signal=B:USR1@{signal_seconds}
{extra}
# {stage_doc}
# Task i runs line i + 1 of {commands_file}. On SIGTERM (preemption) or USR1 (sent before the time limit)
# main.py saves a checkpoint and exits with status 75; the task is then requeued, runs the same command
# again and main.py resumes from that checkpoint.
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
trap 'stop_child TERM' TERM
bash -c "exec $COMMAND" &
CHILD=$!
while true; do
  wait "$CHILD"; STATUS=$?
  kill -0 "$CHILD" 2>/dev/null || break  # wait returns early when a trapped signal arrives
done
if [ "$STATUS" -eq 75 ]; then
  echo "[$(date)] main.py saved and stopped (status 75): requeueing"
  scontrol requeue "${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
  exit 0
fi
exit "$STATUS"
"""


def write_slurm(bc_jobs: List[Job], rl_jobs: List[Job], slurm_dir: str, time_limit='48:00:00', cpus=4, mem='32G',
                gpus=1, partition=None, extra=(), setup=(), max_parallel=0, array_limit=1000, signal_seconds=300,
                job_name='trqam') -> str:
    """Writes the job-array scripts of both stages and submit.sh (stage 2 after stage 1 with afterok; without
    BC jobs, as under --protocol=qam, only stage 2). One array task per job: with several seeds per job, one
    main.py process for all of them.

    Returns the path of submit.sh.
    """
    slurm_dir = _abs(slurm_dir)
    log_dir = os.path.join(slurm_dir, 'logs')
    os.makedirs(log_dir, exist_ok=True)
    extra = list(extra) + ([f'--partition={partition}'] if partition else []) + ([f'--gres=gpu:{gpus}'] if gpus else [])
    scripts = {}
    for stage, jobs, doc in (('bc', bc_jobs, 'Stage 1: BC pre-training of the flow.'),
                             ('rl', rl_jobs, 'Stage 2: every method (from its BC run when the protocol has one).')):
        scripts[stage] = []
        for part, start in enumerate(range(0, len(jobs), array_limit)):
            chunk = jobs[start:start + array_limit]
            commands_file = os.path.join(slurm_dir, f'{stage}_{part:03d}.txt')
            with open(commands_file, 'w') as f:
                f.write(''.join(job.shell() + '\n' for job in chunk))
            script = os.path.join(slurm_dir, f'{stage}_{part:03d}.sbatch')
            with open(script, 'w') as f:
                f.write(SBATCH_TEMPLATE.format(
                    job_name=f'{job_name}-{stage}', last_index=len(chunk) - 1,
                    throttle=f'%{max_parallel}' if max_parallel else '', log_dir=shlex.quote(log_dir),
                    time=time_limit, cpus=cpus, mem=mem, signal_seconds=signal_seconds,
                    extra='\n'.join(f'#SBATCH {line}' for line in extra), stage_doc=doc,
                    commands_file=shlex.quote(commands_file), repo_root=shlex.quote(REPO_ROOT),
                    setup='\n'.join(setup)))
            scripts[stage].append(script)
    submit = os.path.join(slurm_dir, 'submit.sh')
    if scripts['bc']:
        lines = ['#!/bin/bash',
                 '# Submits stage 1 (BC) and stage 2 (methods, --dependency=afterok on every stage-1 array).',
                 'set -euo pipefail', 'BC_IDS=""']
        lines += [f'BC_IDS="$BC_IDS:$(sbatch --parsable {shlex.quote(script)})"' for script in scripts['bc']]
        lines.append('echo "stage 1 (BC): job(s) ${BC_IDS#:}"')
        lines += [f'echo "stage 2: job $(sbatch --parsable ${{BC_IDS:+--dependency=afterok$BC_IDS}} '
                  f'{shlex.quote(script)})"' for script in scripts['rl']]
    else:
        lines = ['#!/bin/bash', '# Submits the methods\' job arrays (the protocol has no BC pre-training stage).',
                 'set -euo pipefail']
        lines += [f'echo "methods: job $(sbatch --parsable {shlex.quote(script)})"' for script in scripts['rl']]
    with open(submit, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    os.chmod(submit, os.stat(submit).st_mode | stat.S_IXUSR)
    return submit


# ----------------------------------------------------------------------------------------------------------------------
# The CPU preset's data and table.
# ----------------------------------------------------------------------------------------------------------------------


def generate_missing_data(sweep: Sweep, num_episodes: Optional[int], max_workers: int, log=print) -> List[str]:
    """Generates the locally generatable datasets that are missing (experiments/generate_dataset.py, as a
    subprocess); returns the domains generated. Existing files are kept."""
    spec = sweep.spec
    protocol = domains_lib.get_protocol(spec['protocol'])
    todo = [domain for domain in sweep.missing_data
            if domains_lib.table_domain(domain).suite == 'ogbench' and domains_lib.table_domain(domain).generatable
            and not (protocol.trqam_data and domains_lib.table_domain(domain).large)]

    def generate(domain):
        command = [sys.executable, 'experiments/generate_dataset.py',
                   f'--env_name={domains_lib.table_domain(domain).dataset_name}',
                   f'--dataset_dir={spec["dataset_dir"]}', '--noprogress', '--noreport'] + \
            ([f'--num_episodes={num_episodes}'] if num_episodes else [])
        log(f'[data] {shlex.join(command[1:])}')
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f'Generating {domain} failed:\n{result.stderr[-3000:]}')
        return domain

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, max_workers)) as executor:
        return list(executor.map(generate, todo))


def print_tables(spec: dict, expected, log=print):
    """The aggregation of the sweep's runs (offline end and online end), as at the end of the CPU preset."""
    from experiments import aggregate

    runs = aggregate.load_runs(_abs(spec['save_dir']), protocol=spec['protocol'])
    out_dir = os.path.join(_abs(spec['save_dir']), 'aggregate')
    for step in ('offline_end', 'online_end'):
        table = aggregate.success_table(runs, step=step, expected=expected)
        text = aggregate.to_markdown(table)
        log(text)
        aggregate.write_tables(table, out_dir, suffix=step)
    aggregate.plot_curves(runs, out_dir)
    log(f'Tables and curves in {out_dir}.')


# ----------------------------------------------------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------------------------------------------------


def _define_flags():
    from absl import flags

    flags.DEFINE_enum('preset', 'paper', list(PRESETS), 'paper: the papers\' 50 tasks; cpu: a ~1 hour run on 2 CPU '
                      'cores; robomimic: the stability experiment (lift-mh, can-mh, square-mh; TRQAM, QAM, QAM-E).')
    flags.DEFINE_enum('protocol', 'trqam', list(domains_lib.PROTOCOLS), 'main.py\'s --protocol for every job: trqam '
                      '(BC pre-training stage, then the methods; 8 seeds), qam (one stage; 12 seeds), none.')
    flags.DEFINE_list('methods', None, f'Methods (default: the preset\'s; the papers\' {", ".join(paper_methods())}).')
    flags.DEFINE_list('domains', None, f'Domains (default: the preset\'s; {", ".join(domains_lib.DOMAINS)}, '
                      f'{", ".join(domains_lib.ROBOMIMIC_DOMAINS)}).')
    flags.DEFINE_list('tasks', None, 'OGBench tasks 1..5 (default: the preset\'s).')
    flags.DEFINE_list('seeds', None, 'Seeds (default: the preset\'s, else the protocol\'s: 0..7 trqam, 0..11 qam).')
    flags.DEFINE_integer('seeds_per_job', 1, 'Seeds trained together in one main.py process (--seeds=a,b,...).')
    flags.DEFINE_integer('bc_steps', None, 'BC pre-training steps (default: the preset\'s, else the protocol\'s: '
                         '300K under trqam; only with a protocol that has a BC stage).')
    flags.DEFINE_integer('offline_steps', None, 'Offline steps (paper 1M).')
    flags.DEFINE_integer('online_steps', None, 'Online steps (paper 500K).')
    flags.DEFINE_bool('bc_per_domain', False, 'One BC run per domain and seed (task 1\'s) instead of per task: BC '
                      'uses no rewards, so it is the same training for every task of a domain.')
    flags.DEFINE_string('dataset_dir', None, 'Data folder (default: the preset\'s; paper ~/.ogbench/data, robomimic '
                        '~/.robomimic).')
    flags.DEFINE_string('save_dir', None, 'Parent of the run directories (default: the preset\'s, with _qam / _none '
                        'appended under those protocols).')
    flags.DEFINE_multi_string('main_flag', [],
                              'Extra main.py flag for every job, e.g. --main_flag=--wandb_mode=offline.')
    flags.DEFINE_multi_string('agent_override', [], 'Extra agent override for every job whose config has the key, '
                              'KEY=VALUE (the BC jobs get the keys of their config).')
    flags.DEFINE_enum('launcher', 'local', ['local', 'slurm'], 'How to run the jobs.')
    flags.DEFINE_bool('dry_run', False, 'Print the commands, their count and the estimated device-hours; run nothing.')
    flags.DEFINE_string('costs', DEFAULT_COSTS, 'Measured costs for the --dry_run estimate (experiments/benchmark.py '
                        '--out=FILE writes them; schema: this file\'s docstring).')
    flags.DEFINE_bool('print_commands', True, 'With --dry_run, print every command.')
    flags.DEFINE_integer('max_workers', None, 'Local launcher: parallel main.py processes (default: the preset\'s).')
    flags.DEFINE_bool('skip_complete', True, 'Local launcher: skip jobs whose every seed has its final evaluation.')
    flags.DEFINE_bool('generate_data', None, 'Generate missing manipulation datasets first (default: cpu preset only).')
    flags.DEFINE_integer('generate_episodes', None, 'Episodes per generated dataset (default: the preset\'s).')
    flags.DEFINE_bool('tables', None, 'Print the aggregated tables at the end (default: cpu preset only).')
    flags.DEFINE_string('slurm_dir', None, 'Where the sbatch scripts go (default: {save_dir}/slurm).')
    flags.DEFINE_string('slurm_time', '48:00:00', 'Time limit per task.')
    flags.DEFINE_integer('slurm_cpus', 4, 'CPUs per task.')
    flags.DEFINE_string('slurm_mem', '32G', 'Memory per task.')
    flags.DEFINE_integer('slurm_gpus', 1, 'GPUs per task (0: none).')
    flags.DEFINE_string('slurm_partition', None, 'Partition.')
    flags.DEFINE_multi_string('slurm_extra', [], 'Extra #SBATCH option, e.g. --slurm_extra=--account=abc.')
    flags.DEFINE_multi_string('slurm_setup', [], 'Shell line run before each task, e.g. "source .venv/bin/activate".')
    flags.DEFINE_integer('slurm_max_parallel', 0, 'Array throttle (%N); 0: none.')
    flags.DEFINE_integer('slurm_array_limit', 1000, 'Tasks per array (Slurm\'s MaxArraySize is 1001 by default).')
    flags.DEFINE_integer('slurm_signal_seconds', 300, 'USR1 this many seconds before the time limit (requeue).')
    flags.DEFINE_bool('slurm_submit', False, 'Run submit.sh after writing the scripts.')


def _parse_override(text):
    key, _, value = text.partition('=')
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def spec_from_flags(FLAGS) -> dict:
    return resolve_spec(
        FLAGS.preset, protocol=FLAGS.protocol, methods=tuple(FLAGS.methods) if FLAGS.methods else None,
        domains=tuple(FLAGS.domains) if FLAGS.domains else None,
        tasks=tuple(int(t) for t in FLAGS.tasks) if FLAGS.tasks else None,
        seeds=tuple(int(s) for s in FLAGS.seeds) if FLAGS.seeds else None, seeds_per_job=FLAGS.seeds_per_job,
        bc_steps=FLAGS.bc_steps, offline_steps=FLAGS.offline_steps, online_steps=FLAGS.online_steps,
        bc_per_domain=FLAGS.bc_per_domain, dataset_dir=FLAGS.dataset_dir, save_dir=FLAGS.save_dir,
        extra_main_flags=tuple(FLAGS.main_flag), max_workers=FLAGS.max_workers,
        generate_episodes=FLAGS.generate_episodes,
        extra_agent_overrides=dict(_parse_override(text) for text in FLAGS.agent_override) or None,
    )


def main(_):
    from absl import flags

    FLAGS = flags.FLAGS
    try:
        spec = spec_from_flags(FLAGS)
        sweep = build_sweep(spec)
    except (ValueError, KeyError) as error:
        sys.exit(f'experiments/sweep.py: {error}')
    is_cpu = spec['preset'] == 'cpu'

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
        if sweep.missing_data and (is_cpu if FLAGS.generate_data is None else FLAGS.generate_data):
            print('Without --dry_run, the missing manipulation datasets are generated first.')
        return

    generate = is_cpu if FLAGS.generate_data is None else FLAGS.generate_data
    if generate and sweep.missing_data:
        generate_missing_data(sweep, spec['generate_episodes'], spec['max_workers'])
        sweep = build_sweep(spec)
    print(summary(sweep))
    bc_jobs, rl_jobs = sweep.launchable()
    if not bc_jobs and not rl_jobs:
        print('Nothing to launch.')
        return

    if FLAGS.launcher == 'slurm':
        submit = write_slurm(bc_jobs, rl_jobs, FLAGS.slurm_dir or os.path.join(spec['save_dir'], 'slurm'),
                             FLAGS.slurm_time, FLAGS.slurm_cpus, FLAGS.slurm_mem, FLAGS.slurm_gpus,
                             FLAGS.slurm_partition, FLAGS.slurm_extra, FLAGS.slurm_setup, FLAGS.slurm_max_parallel,
                             FLAGS.slurm_array_limit, FLAGS.slurm_signal_seconds)
        print(f'Wrote the sbatch scripts; submit with: bash {submit}')
        if FLAGS.slurm_submit:
            subprocess.run(['bash', submit], check=True)
        return

    start = time.time()
    status = run_local(bc_jobs, rl_jobs, spec['max_workers'], os.path.join(spec['save_dir'], 'logs'),
                       FLAGS.skip_complete)
    failed = {name: s for name, s in status.items() if not (s == 'complete' or s.startswith('ok'))}
    print(f'Local sweep finished in {(time.time() - start) / 60:.1f} min: {len(status) - len(failed)} jobs done, '
          f'{len(failed)} failed or skipped.')
    for name, s in failed.items():
        print(f'  {name}: {s}')
    if FLAGS.tables if FLAGS.tables is not None else is_cpu:
        print_tables(spec, sweep.expected)


if __name__ == '__main__':
    from absl import app

    _define_flags()
    app.run(main)
