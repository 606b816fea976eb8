"""The sweep's SLURM launcher on a real single-node SLURM (tests/slurm/start_slurm.sh installs and starts one, as
root): a tiny two-stage sweep submitted by the generated submit.sh, stage 2 after stage 1, two tasks preempted the
ways a cluster does it and requeued, and every run's logs equal to the same sweep's with --launcher=local.

Skipped where SLURM cannot be started (not root, no package manager); under CI=true that is a failure instead."""

import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from core.errors import EXIT_PREEMPTED
from tests.conftest import REPO_ROOT, assert_same_logs

START_SCRIPT = os.path.join('tests', 'slurm', 'start_slurm.sh')
TIMEOUT = 600  # seconds any one wait may take before the test fails
# Tiny networks run thousands of updates a second here, and a run writes its first log row with a lag: the stages
# must be long enough in wall time for a signal sent at the first row to arrive mid-run.
OFFLINE_STEPS = 40_000
TINY_SWEEP = ['--domains=scene-play', '--tasks=1', '--seeds=0', '--methods=FQL,QAM', '--bc_steps=20',
              f'--offline_steps={OFFLINE_STEPS}', '--online_steps=0',
              *[f'--agent_override={override}' for override in (
                  'actor_hidden_dims=(16,16)', 'value_hidden_dims=(16,16)', 'num_qs=2', 'batch_size=8', 'flow_steps=3')],
              *[f'--main_flag={flag}' for flag in (
                  '--eval_episodes=1', '--eval_interval=0', '--log_interval=2000', '--steps_per_call=50')]]
SLURM_FLAGS = ['--launcher=slurm', '--slurm_time=15:00', '--slurm_cpus=1', '--slurm_mem=2G', '--slurm_gpus=0']
# How each stage-2 task is preempted: as a cluster preempts (TERM to every process of the job), and as
# --signal=B:USR1 warns of the time limit (USR1 to the batch shell alone).
PREEMPTIONS = {'FQL': ['--full', '--signal=TERM'], 'QAM': ['--batch', '--signal=USR1']}


def _cluster_answers() -> bool:
    if not shutil.which('sinfo'):
        return False
    result = subprocess.run(['sinfo', '--noheader', '--responding'], capture_output=True, text=True)
    return result.returncode == 0 and bool(result.stdout.strip())


@pytest.fixture(scope='module')
def slurm():
    """A responding single-node SLURM: the running one, or one start_slurm.sh installs and starts (as root)."""
    problem = None
    if not _cluster_answers():
        if os.geteuid() != 0:
            problem = f'no SLURM answers and only root can start one ({START_SCRIPT})'
        else:
            result = subprocess.run(['bash', START_SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True,
                                    timeout=TIMEOUT)
            if result.returncode != 0 or not _cluster_answers():
                problem = f'{START_SCRIPT} could not start SLURM:\n{result.stdout[-2000:]}{result.stderr[-2000:]}'
    if problem and os.environ.get('CI') == 'true':
        pytest.fail(f'CI must run the SLURM tests: {problem}')
    if problem:
        pytest.skip(problem)


def _sweep_command(data_dir, save_dir, *extra):
    return [sys.executable, 'experiments/sweep.py', *TINY_SWEEP, f'--dataset_dir={data_dir}',
            f'--save_dir={save_dir}', *extra]


def _tasks(job_ids) -> dict:
    """{'JOB_TASK': (state, reason)} of the array tasks of `job_ids`, finished ones included."""
    result = subprocess.run(['squeue', '--noheader', '--array', '--states=all', f'--jobs={",".join(job_ids)}',
                             '--format=%i|%T|%r'], capture_output=True, text=True, check=True)
    return {task: (state, reason) for task, state, reason in
            (line.split('|') for line in result.stdout.splitlines())}


def _logged_steps(run_dir):
    try:
        return [int(line.split(',')[0]) for line in open(os.path.join(run_dir, 'train.csv')).read().split()[1:]]
    except (OSError, ValueError):
        return []


def _last_message(log_text):
    """The last line of a log, progress bars' updates (tqdm's 'name:  50%|...| 5/10 [...]') left out."""
    text = re.sub(r'\S+: +\d+%\|[^\]\r\n]*\]', '', log_text)
    return [line.strip() for line in re.split('[\r\n]', text) if line.strip()][-1]


class Watch:
    """The tasks' states over time, polled five times a second, and the preemptions the test makes on the way."""

    def __init__(self, bc_ids, rl_id, tasks, run_dirs):
        self.bc_ids, self.rl_id, self.tasks, self.run_dirs = bc_ids, rl_id, tasks, run_dirs
        self.history = []  # squeue snapshots
        self.signalled = {}  # task -> the last step its run had logged when it was signalled
        self.requeued_at, self.moved = {}, set()  # task -> when first seen requeued; the tasks started then

    def poll(self):
        tasks = _tasks([*self.bc_ids, self.rl_id])
        self.history.append(tasks)
        for method, args in PREEMPTIONS.items():
            task = self.tasks[method]
            state, reason = tasks.get(task, ('', ''))
            if task not in self.signalled and state == 'RUNNING' and _logged_steps(self.run_dirs[method]):
                self.signalled[task] = max(_logged_steps(self.run_dirs[method]))
                subprocess.run(['scancel', *args, task], check=True)
            elif task in self.signalled and state == 'PENDING' and reason == 'BeginTime' and task not in self.moved:
                # A requeued job waits for its begin time (cred_expire, 2 minutes by default). Started in the second
                # its previous run's credential was revoked, it fails for good ("Job credential revoked"): wait 2 s.
                self.requeued_at.setdefault(task, time.time())
                if time.time() - self.requeued_at[task] >= 2:
                    subprocess.run(['scontrol', 'update', f'JobId={task}', 'StartTime=now'], check=True)
                    self.moved.add(task)
        return tasks

    def wait(self):
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            tasks = self.poll()
            if tasks and all(state not in ('PENDING', 'RUNNING', 'REQUEUED', 'COMPLETING', 'CONFIGURING')
                             for state, _ in tasks.values()):
                return tasks
            time.sleep(0.2)
        raise AssertionError(f'the sweep did not end in {TIMEOUT}s: {self.history[-1]}')


def test_two_stage_sweep_with_preemptions_equals_the_local_sweep(slurm, tmp_path):
    data_dir = str(tmp_path / 'data')
    from experiments.generate_dataset import generate

    generate('scene-play-v0', num_episodes=3, dataset_dir=data_dir, seed=0, num_val_episodes=1, max_episode_steps=201,
             progress=False, verbose=False)
    # The SLURM tasks get this environment too (sbatch exports it); one compilation cache for every main.py (CI
    # gives one already) spares the resumed runs and the local ones compiling again.
    env = {'JAX_COMPILATION_CACHE_DIR': str(tmp_path / 'jax_cache'), **os.environ, 'JAX_PLATFORMS': 'cpu',
           'WANDB_MODE': 'disabled', 'MPLBACKEND': 'Agg'}
    # The same sweep with the local launcher, alongside.
    local_output = tmp_path / 'local_sweep.out'
    with open(local_output, 'w') as output:
        local = subprocess.Popen(_sweep_command(data_dir, tmp_path / 'local', '--launcher=local', '--max_workers=1'),
                                 cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)

    save_dir, slurm_dir = tmp_path / 'slurm_runs', tmp_path / 'slurm'
    subprocess.run(_sweep_command(data_dir, save_dir, *SLURM_FLAGS, f'--slurm_dir={slurm_dir}'), cwd=REPO_ROOT,
                   env=env, check=True, capture_output=True, timeout=TIMEOUT)
    submitted = subprocess.run(['bash', str(slurm_dir / 'submit.sh')], env=env, capture_output=True, text=True,
                               check=True, timeout=60).stdout
    bc_ids = re.search(r'stage 1 \(BC\): job\(s\) ([\d:]+)', submitted).group(1).split(':')
    rl_id = re.search(r'stage 2: job (\d+)', submitted).group(1)
    run_names = {'BC': 'bc_scene-play-singletask-task1-v0_seed0_2x16_h5',
                 **{method: f'{method.lower()}_scene-play-singletask-task1-v0_seed0' for method in PREEMPTIONS}}
    commands = (slurm_dir / 'rl_000.txt').read_text().splitlines()  # task i runs line i + 1
    tasks = {method: f'{rl_id}_{index}' for index, command in enumerate(commands) for method in PREEMPTIONS
             if f'--agent=agents/{method.lower()}.py' in command}
    watch = Watch(bc_ids, rl_id, tasks, {method: str(save_dir / name) for method, name in run_names.items()})
    final = watch.wait()
    assert local.wait(timeout=TIMEOUT) == 0, local_output.read_text()[-3000:]

    # Every task ended well, and no stage-2 task ran before every stage-1 task had ended.
    assert set(final) == {f'{bc_ids[0]}_0', f'{rl_id}_0', f'{rl_id}_1'}
    assert all(state == 'COMPLETED' for state, _ in final.values()), final
    bc_tasks = [task for task in final if task.split('_')[0] in bc_ids]
    for snapshot in watch.history:
        if any(snapshot.get(task, ('',))[0] != 'COMPLETED' for task in bc_tasks):
            assert all(snapshot[task][0] == 'PENDING' for task in snapshot if task.startswith(f'{rl_id}_')), snapshot
    assert any(reason == 'Dependency' for snapshot in watch.history for task, (_, reason) in snapshot.items()
               if task.startswith(f'{rl_id}_'))  # seen waiting for stage 1

    # Both preempted tasks saved, were requeued and resumed from their checkpoint.
    assert set(watch.signalled) == set(watch.moved) == {f'{rl_id}_0', f'{rl_id}_1'}, watch.history[-5:]
    logs = {name: (slurm_dir / 'logs' / name).read_text() for name in os.listdir(slurm_dir / 'logs')}
    for method, task in tasks.items():
        (log,) = [text for name, text in logs.items() if name.endswith(f'_{task}.out')]
        # One log for both runs, in order: the first, main.py's exit with EXIT_PREEMPTED, the resumed run.
        assert log.index('(restart 0)') < log.index(f'(status {EXIT_PREEMPTED})') < log.index('(restart 1)'), \
            log[-3000:]
        resumed = re.search(r'Resuming from step (\d+)', log)
        assert resumed and watch.signalled[task] <= int(resumed.group(1)) < OFFLINE_STEPS, log[-3000:]

    # The same logs as the local sweep, to the last digit; each task's log ends with main.py's last line, which names
    # its run.
    for name in run_names.values():
        assert_same_logs(tmp_path / 'local' / name, save_dir / name)
    last_messages = sorted(_last_message(text) for text in logs.values())
    assert len(last_messages) == len(run_names), last_messages
    for message, name in zip(last_messages, sorted(run_names.values())):
        assert message.startswith(f'Finished {save_dir / name}: step'), last_messages
