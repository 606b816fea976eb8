"""The paper's sweep: every method x the 50 tasks x seeds, with the per-domain settings (utils/domains.py)
and the two-stage protocol (ALGORITHMS.md section 4): BC pre-training once per task and seed, then every
method from that checkpoint with --pretrained_actor_path.

    python experiments/sweep.py --dry_run                                  # the full paper sweep's commands
    python experiments/sweep.py --dataset_dir=DATA --save_dir=runs/paper --launcher=local --max_workers=4
    python experiments/sweep.py --dataset_dir=DATA --save_dir=runs/paper --launcher=slurm --slurm_submit
    python experiments/sweep.py --preset=cpu                               # ~1 hour on a 2-core laptop

Every job is a full `python main.py ...` command line. A method's run depends on its BC run. All methods
of a domain use the domain's network width (4 x 1024 with actor layer norm on the four large-data domains,
4 x 512 elsewhere), so one BC run serves all of them. Jobs whose configuration equals another job's
(QAM-E where the QAM paper's edit_scale is 0, i.e. QAM with the same inv_temp) are launched once; the
aggregation reports such runs under both labels.

Launchers:
  local  `--max_workers` main.py processes at a time (concurrent.futures + subprocess); a method's run
         starts when its BC run has succeeded. Logs in {save_dir}/logs/. Finished runs are skipped.
  slurm  sbatch job-array scripts for each stage (arrays of at most --slurm_array_limit tasks), the second
         stage with --dependency=afterok on the first; `#SBATCH --requeue` and `--signal=B:USR1@...`.
         The script forwards USR1 and TERM to main.py, which saves and exits with status 75, and then
         requeues the task; the rerun resumes from that checkpoint.

Domains whose data is not under --dataset_dir are listed, with how to get the data, and their jobs are
not launched. Relative paths are relative to the repository root (the jobs run there).
"""

import concurrent.futures
import csv
import dataclasses
import os
import shlex
import stat
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

if __package__ in (None, ''):  # `python experiments/sweep.py` from the repository root.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agents import BC, METHODS, paper_methods  # noqa: E402
from experiments.presets import PRESETS, expected_runs, resolve_spec  # noqa: E402,F401
from utils import domains as domains_lib  # noqa: E402
from utils import run_dir as layout  # noqa: E402
from utils.errors import EXIT_PREEMPTED  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What a BC run shares with the methods that start from it: the flow network's shape (and the batch).
BC_SHARED_KEYS = ('actor_hidden_dims', 'actor_layer_norm', 'batch_size')


@dataclasses.dataclass
class Job:
    stage: str  # 'bc' or 'rl'
    method: str
    env_name: str
    seed: int
    run_dir: str
    command: List[str]
    total_steps: int
    depends_on: Optional[str] = None  # run_dir of the BC job
    data_ok: bool = True

    @property
    def name(self) -> str:
        return os.path.basename(self.run_dir)

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


def bc_run_dir(save_dir: str, env_name: str, seed: int) -> str:
    """main.py's default run directory of `--bc_only --agent=agents/bc_flow.py`."""
    return os.path.join(save_dir, layout.run_name(BC.slug, env_name, seed, bc_only=True))


def agent_overrides(method: str, env_name: str, spec: dict) -> dict:
    """The --agent.* overrides of a job: the method's on the domain, then the spec's network and extra
    overrides; a BC job takes of the latter what its flow must share with the methods."""
    overrides = {**METHODS[method].overrides(env_name), **spec['network'], **spec['extra_agent_overrides']}
    if method == BC.label:
        own = METHODS[method].overrides(env_name)
        overrides = {key: value for key, value in overrides.items() if key in own or key in BC_SHARED_KEYS}
    return overrides


def build_sweep(spec: dict) -> Sweep:
    """Every job of `spec` (see `resolve_spec`), in launch order."""
    save_dir, dataset_dir = spec['save_dir'], spec['dataset_dir']
    bc_jobs, rl_jobs, expected, duplicates, missing = [], [], [], [], {}
    bc_by_key = {}
    for domain in spec['domains']:
        settings = domains_lib.DOMAINS[domain]
        present, detail = domains_lib.dataset_status(settings.env_names()[0], _abs(dataset_dir))
        if not present:
            missing[domain] = f'{detail}; {domains_lib.how_to_get(settings.env_names()[0], dataset_dir)}'
        for task in spec['tasks']:
            env_name = settings.env_names([task])[0]
            for seed in spec['seeds']:
                # Stage 1: BC pre-training (once per task and seed, or per domain and seed).
                bc_env = settings.env_names([spec['tasks'][0]])[0] if spec['bc_per_domain'] else env_name
                bc_dir = bc_run_dir(save_dir, bc_env, seed)
                if (bc_env, seed) not in bc_by_key:
                    command = [spec['python'], 'main.py', '--bc_only', f'--agent={BC.agent_file}',
                               f'--env_name={bc_env}', f'--seed={seed}', f'--save_dir={save_dir}',
                               f'--offline_steps={spec["bc_steps"]}',
                               *flag_args(domains_lib.run_flags(bc_env, dataset_dir)),
                               *flag_args(spec['main_flags']), *spec['extra_main_flags'],
                               *flag_args(agent_overrides(BC.label, bc_env, spec), 'agent.')]
                    job = Job('bc', 'BC', bc_env, seed, bc_dir, command, spec['bc_steps'], data_ok=present)
                    bc_by_key[(bc_env, seed)] = job
                    bc_jobs.append(job)
                # Stage 2: every method from the BC checkpoint; identical configurations run once.
                launched = []  # (method, agent config of its job)
                for method in spec['methods']:
                    expected.append((method, env_name, seed))
                    overrides = agent_overrides(method, env_name, spec)
                    same_as = [label for label, config in launched
                               if METHODS[method].is_configured_as(config, env_name)]
                    if same_as:
                        duplicates.append((method, env_name, seed, same_as[0]))
                        continue
                    launched.append((method, {'agent_name': METHODS[method].agent_name, **overrides}))
                    run_name = layout.run_name(METHODS[method].slug, env_name, seed)
                    command = [spec['python'], 'main.py', f'--agent={METHODS[method].agent_file}',
                               f'--env_name={env_name}', f'--seed={seed}', f'--save_dir={save_dir}',
                               f'--run_name={run_name}', f'--pretrained_actor_path={bc_dir}',
                               f'--offline_steps={spec["offline_steps"]}', f'--online_steps={spec["online_steps"]}',
                               *flag_args(domains_lib.run_flags(env_name, dataset_dir)),
                               *flag_args(spec['main_flags']), *spec['extra_main_flags'],
                               *flag_args(overrides, 'agent.')]
                    rl_jobs.append(Job('rl', method, env_name, seed, os.path.join(save_dir, run_name), command,
                                       spec['offline_steps'] + spec['online_steps'], depends_on=bc_dir,
                                       data_ok=present))
    return Sweep(bc_jobs, rl_jobs, expected, duplicates, missing, spec)


def summary(sweep: Sweep) -> str:
    spec = sweep.spec
    num_tasks = len(spec['domains']) * len(spec['tasks'])
    lines = [
        f'Sweep {spec["preset"]!r}: {len(spec["methods"])} methods x {num_tasks} tasks x {len(spec["seeds"])} seeds '
        f'= {len(sweep.expected)} runs in the table, plus {len(sweep.bc_jobs)} BC pre-training runs '
        f'({"one per domain" if spec["bc_per_domain"] else "one per task"} and seed).',
    ]
    if sweep.duplicates:
        groups = {}
        for method, env_name, _, same_as in sweep.duplicates:
            groups.setdefault((method, same_as), set()).add(domains_lib.domain_name(env_name))
        for (method, same_as), names in groups.items():
            count = sum(1 for d in sweep.duplicates if (d[0], d[3]) == (method, same_as))
            lines.append(f'  {count} {method} runs have the configuration of {same_as} ({", ".join(sorted(names))}) '
                         f'and are launched once; the aggregation reports them under both labels.')
    lines.append(f'Jobs: {len(sweep.bc_jobs)} BC + {len(sweep.rl_jobs)} methods = '
                 f'{len(sweep.bc_jobs) + len(sweep.rl_jobs)} main.py runs.')
    if sweep.missing_data:
        bc, rl = sweep.launchable()
        lines.append(f'Data missing under {spec["dataset_dir"]} for {len(sweep.missing_data)} of '
                     f'{len(spec["domains"])} domains; their jobs are not launched '
                     f'({len(sweep.bc_jobs) - len(bc)} BC + {len(sweep.rl_jobs) - len(rl)} method runs):')
        lines += [f'  - {domain}: {detail}' for domain, detail in sweep.missing_data.items()]
    return '\n'.join(lines)


# ----------------------------------------------------------------------------------------------------------------------
# Launchers.
# ----------------------------------------------------------------------------------------------------------------------


def _abs(path: str) -> str:
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.join(REPO_ROOT, path)


def run_complete(run_dir: str, total_steps: int) -> bool:
    """Whether eval.csv has the final evaluation (main.py evaluates at the last step)."""
    path = os.path.join(_abs(run_dir), layout.EVAL_CSV)
    if not os.path.exists(path):
        return False
    with open(path, newline='') as f:
        return any(int(float(row['step'])) == total_steps for row in csv.DictReader(f))


def _local_command(command: List[str]) -> List[str]:
    return [sys.executable, *command[1:]] if command[0] == 'python' else list(command)


def run_local(bc_jobs: List[Job], rl_jobs: List[Job], max_workers: int, log_dir: str, skip_complete=True,
              log=print) -> Dict[str, str]:
    """Runs the jobs, at most `max_workers` at a time, every method's run after its BC run succeeded.

    Returns {run_dir: 'ok' | 'complete' (already finished) | 'failed (see LOG)' | 'skipped: ...'}.
    """
    os.makedirs(_abs(log_dir), exist_ok=True)
    dependants = {}
    for job in rl_jobs:
        dependants.setdefault(job.depends_on, []).append(job)
    status, total = {}, len(bc_jobs) + len(rl_jobs)

    def run(job):
        if skip_complete and run_complete(job.run_dir, job.total_steps):
            return 'complete'
        log_path = os.path.join(_abs(log_dir), f'{job.name}.log')
        start = time.time()
        with open(log_path, 'a') as log_file:
            log_file.write(f'$ {job.shell()}\n')
            log_file.flush()
            result = subprocess.run(_local_command(job.command), cwd=REPO_ROOT, stdout=log_file,
                                    stderr=subprocess.STDOUT)
        if result.returncode == EXIT_PREEMPTED:
            return f'preempted: saved and stopped; rerun the sweep to resume (log: {os.path.join(log_dir, job.name + ".log")})'
        if result.returncode != 0:
            return f'failed with exit code {result.returncode} (log: {os.path.join(log_dir, job.name + ".log")})'
        return f'ok ({time.time() - start:.0f}s)'

    with concurrent.futures.ThreadPoolExecutor(max_workers=max_workers) as executor:
        pending = {executor.submit(run, job): job for job in bc_jobs}
        # Method runs whose BC run is not part of this launch (e.g. already finished before) start at once.
        bc_dirs = {job.run_dir for job in bc_jobs}
        for job in rl_jobs:
            if job.depends_on not in bc_dirs:
                pending[executor.submit(run, job)] = job
        while pending:
            done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                job = pending.pop(future)
                try:
                    result = future.result()
                except Exception as error:  # noqa: BLE001
                    result = f'failed: {type(error).__name__}: {error}'
                status[job.run_dir] = result
                log(f'[{len(status)}/{total}] {job.name}: {result}')
                if job.stage == 'bc':
                    for dependant in dependants.get(job.run_dir, []):
                        if result == 'complete' or result.startswith('ok'):
                            pending[executor.submit(run, dependant)] = dependant
                        else:
                            status[dependant.run_dir] = f'skipped: its BC run {job.name} failed'
                            log(f'[{len(status)}/{total}] {dependant.name}: {status[dependant.run_dir]}')
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
    """Writes the job-array scripts of both stages and submit.sh (stage 2 after stage 1 with afterok).

    Returns the path of submit.sh.
    """
    slurm_dir = _abs(slurm_dir)
    log_dir = os.path.join(slurm_dir, 'logs')
    os.makedirs(log_dir, exist_ok=True)
    extra = list(extra) + ([f'--partition={partition}'] if partition else []) + ([f'--gres=gpu:{gpus}'] if gpus else [])
    scripts = {}
    for stage, jobs, doc in (('bc', bc_jobs, 'Stage 1: BC pre-training of the flow.'),
                             ('rl', rl_jobs, 'Stage 2: every method from its BC checkpoint.')):
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
    lines = ['#!/bin/bash',
             '# Submits stage 1 (BC) and stage 2 (methods, --dependency=afterok on every stage-1 array).',
             'set -euo pipefail', 'BC_IDS=""']
    for script in scripts['bc']:
        lines.append(f'BC_IDS="$BC_IDS:$(sbatch --parsable {shlex.quote(script)})"')
    lines.append('echo "stage 1 (BC): job(s) ${BC_IDS#:}"')
    dependency = '${BC_IDS:+--dependency=afterok$BC_IDS}'
    for script in scripts['rl']:
        lines.append(f'echo "stage 2: job $(sbatch --parsable {dependency} {shlex.quote(script)})"')
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
    todo = [domain for domain in sweep.missing_data
            if domains_lib.DOMAINS[domain].generatable and domains_lib.DOMAINS[domain].shards_dir_name is None]

    def generate(domain):
        command = [sys.executable, 'experiments/generate_dataset.py',
                   f'--env_name={domains_lib.DOMAINS[domain].dataset_name}', f'--dataset_dir={spec["dataset_dir"]}',
                   '--noprogress', '--noreport'] + ([f'--num_episodes={num_episodes}'] if num_episodes else [])
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

    runs = aggregate.load_runs(_abs(spec['save_dir']))
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

    flags.DEFINE_enum('preset', 'paper', list(PRESETS), 'paper: the full sweep; cpu: a ~1 hour run on 2 CPU cores.')
    flags.DEFINE_list('methods', None, f'Methods (default: the papers\' {", ".join(paper_methods())}).')
    flags.DEFINE_list('domains', None, f'Domains (default: the preset\'s; {", ".join(domains_lib.DOMAINS)}).')
    flags.DEFINE_list('tasks', None, 'Tasks 1..5 (default: the preset\'s).')
    flags.DEFINE_list('seeds', None, 'Seeds (default: the preset\'s; paper 0..7).')
    flags.DEFINE_integer('bc_steps', None, 'BC pre-training steps (paper 300K).')
    flags.DEFINE_integer('offline_steps', None, 'Offline steps (paper 1M).')
    flags.DEFINE_integer('online_steps', None, 'Online steps (paper 500K).')
    flags.DEFINE_bool('bc_per_domain', False, 'One BC run per domain and seed (task 1\'s) instead of per task: BC '
                      'uses no rewards, so it is the same training for every task of a domain.')
    flags.DEFINE_string('dataset_dir', None, 'OGBench data folder (default: the preset\'s; paper ~/.ogbench/data).')
    flags.DEFINE_string('save_dir', None, 'Parent of the run directories (default: the preset\'s).')
    flags.DEFINE_multi_string('main_flag', [],
                              'Extra main.py flag for every job, e.g. --main_flag=--wandb_mode=offline.')
    flags.DEFINE_multi_string('agent_override', [], 'Extra agent override for every method job, KEY=VALUE.')
    flags.DEFINE_enum('launcher', 'local', ['local', 'slurm'], 'How to run the jobs.')
    flags.DEFINE_bool('dry_run', False, 'Print the commands and their count; run nothing.')
    flags.DEFINE_integer('max_workers', None, 'Local launcher: parallel main.py processes (default: the preset\'s).')
    flags.DEFINE_bool('skip_complete', True, 'Local launcher: skip runs whose final evaluation exists.')
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
    import ast

    key, _, value = text.partition('=')
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def main(_):
    from absl import flags

    FLAGS = flags.FLAGS
    spec = resolve_spec(
        FLAGS.preset, methods=tuple(FLAGS.methods) if FLAGS.methods else None,
        domains=tuple(FLAGS.domains) if FLAGS.domains else None,
        tasks=tuple(int(t) for t in FLAGS.tasks) if FLAGS.tasks else None,
        seeds=tuple(int(s) for s in FLAGS.seeds) if FLAGS.seeds else None,
        bc_steps=FLAGS.bc_steps, offline_steps=FLAGS.offline_steps, online_steps=FLAGS.online_steps,
        bc_per_domain=FLAGS.bc_per_domain, dataset_dir=FLAGS.dataset_dir, save_dir=FLAGS.save_dir,
        extra_main_flags=tuple(FLAGS.main_flag), max_workers=FLAGS.max_workers,
        generate_episodes=FLAGS.generate_episodes,
        extra_agent_overrides=dict(_parse_override(text) for text in FLAGS.agent_override) or None,
    )
    sweep = build_sweep(spec)
    is_cpu = spec['preset'] == 'cpu'

    if FLAGS.dry_run:
        print(f'# Stage 1: BC pre-training ({len(sweep.bc_jobs)} jobs)')
        print('\n'.join(job.shell() for job in sweep.bc_jobs))
        print(f'# Stage 2: every method from its BC run, after it ({len(sweep.rl_jobs)} jobs)')
        print('\n'.join(job.shell() for job in sweep.rl_jobs))
        print(summary(sweep))
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
    failed = {run_dir: s for run_dir, s in status.items() if not (s == 'complete' or s.startswith('ok'))}
    print(f'Local sweep finished in {(time.time() - start) / 60:.1f} min: {len(status) - len(failed)} runs done, '
          f'{len(failed)} failed or skipped.')
    for run_dir, s in failed.items():
        print(f'  {os.path.basename(run_dir)}: {s}')
    if FLAGS.tables if FLAGS.tables is not None else is_cpu:
        print_tables(spec, sweep.expected)


if __name__ == '__main__':
    from absl import app

    _define_flags()
    app.run(main)
