"""Train and evaluate an agent on an OGBench or Robomimic task, with a paper's protocol by default.

    python main.py --agent=agents/trqam.py --env_name=cube-triple-play-singletask-task2-v0

The protocol, top to bottom in `train`: resolve the settings (the protocol's per-domain table under the
flags given), the BC pre-training stage when the protocol has one, then for the seeds: open the run
directories, load the data, restore or create the state, the offline phase (BC pre-training with
`--bc_only`, else offline RL), the online phase (fine-tuning with the offline data as the start of the
replay buffer), close. `--seeds=0,1,2,3` trains several seeds in one compiled program, each with its own
run directory, as if it had been run alone.

A run killed at any point resumes from its latest checkpoint when the same command is started again.
SIGTERM, SIGINT or SIGUSR1 make it save first and exit with status 75; a resumed run ends exactly as the
uninterrupted one would.

From Python: `train(default_flag_values() | {'env_name': ...}, agent_config)` returns the run directories.
"""

import dataclasses
import os
import runpy
import sys
import time

import jax
import ml_collections
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from utils.domains import get_protocol, how_to_get
from utils.acting import SeedActing
from utils.errors import Preempted, RunError, debug_requested, disk_full_message, is_disk_full
from utils.offline_data import load_offline_data
from utils.preemption import StopSignals
from utils.prng import use_unrolled_threefry_on_cpu
from utils.run import Run, TrainingDiverged
from utils.run_config import ConfigMismatch, check_resume, describe, recorded_settings, resolve_config  # noqa: F401
from utils.run_lock import RunDirectoryInUse, RunLocks
from utils.run_state import RunState, load_flow_params, online_buffers, restore_state
from utils.seeds import stack
from utils.training import add_transitions

FLAGS = flags.FLAGS
BC_WAIT_SECONDS = 30  # between looks at a BC run another process is training

flags.DEFINE_string('env_name', 'cube-single-play-singletask-task1-v0', 'OGBench single-task environment or '
                    'Robomimic dataset (e.g. lift-mh-low_dim).')
flags.DEFINE_enum('protocol', 'trqam', ['trqam', 'qam', 'none'], 'Per-domain settings and stages of a paper '
                  '(utils/domains.py): trqam (BC pre-training, the TRQAM paper), qam (the QAM paper), none (the '
                  'flags and the agent config only). Flags given explicitly always win.')
flags.DEFINE_integer('seed', 0, 'Random seed (networks, batches, environment resets).')
flags.DEFINE_list('seeds', None, 'Several seeds trained in one program, e.g. 0,1,2,3 (default: --seed).')
flags.DEFINE_string('dataset_dir', None, 'Folder of the datasets (default: ogbench\'s ~/.ogbench/data, Robomimic\'s '
                    '~/.robomimic).')
flags.DEFINE_string('dataset_path', None, 'One dataset file (overrides --dataset_dir).')
flags.DEFINE_string('dataset_shards_dir', None, 'Folder of 1M-transition .npz shards (the 10M/100M datasets; default: '
                    'the protocol\'s).')
flags.DEFINE_integer('dataset_replace_interval', 1000, 'Steps between shard rotations, offline and online.')
flags.DEFINE_bool('sparse', None, 'Sparse rewards r -> -1[r != 0] (default: the protocol\'s; puzzle and scene).')
flags.DEFINE_integer('bc_steps', None, 'Steps of the BC pre-training stage (default: the protocol\'s, 300K for trqam, '
                     'none for qam; 300K with --bc_only).')
flags.DEFINE_integer('offline_steps', 1_000_000, 'Offline gradient steps.')
flags.DEFINE_integer('online_steps', 500_000, 'Online environment steps after the offline phase.')
flags.DEFINE_integer('horizon_length', None, 'Action chunk length H (default: the protocol\'s, else the agent '
                     'config\'s, else 5 manipulation / 1 maze).')
flags.DEFINE_integer('start_training', 5000, 'Online steps collected before online updates start.')
flags.DEFINE_integer('utd_ratio', 1, 'Online gradient updates per environment step (one scanned call).')
flags.DEFINE_bool('balanced_sampling', False, 'Online batches half offline data, half online transitions, and '
                  'uniform random actions before --start_training (the authors\' option).')
flags.DEFINE_integer('steps_per_call', 100, 'Offline updates per jitted call.')
flags.DEFINE_integer('log_interval', 5000, 'Steps between training-metric rows.')
flags.DEFINE_integer('eval_interval', 50_000, 'Steps between evaluations (also at the end of each phase; 0: only '
                     'there).')
flags.DEFINE_integer('eval_episodes', 50, 'Episodes per evaluation.')
flags.DEFINE_integer('eval_workers', -1, 'Processes that step the evaluation episodes in parallel (-1: one per CPU '
                     'core; 0: this process).')
flags.DEFINE_integer('eval_envs', 16, 'Evaluation environments at once, all seeds together (each OGBench manipulation '
                     'environment holds 100-200 MB; a batched policy call serves them all).')
flags.DEFINE_integer('video_episodes', 0, 'Evaluation episodes rendered to MP4 (videos/ in the run directory).')
flags.DEFINE_integer('save_interval', 100_000, 'Steps between checkpoints.')
flags.DEFINE_string('save_dir', 'runs', 'Parent folder of run directories.')
flags.DEFINE_string('run_name', None, 'Run directory name (default: method_env_seed; "{seed}" is replaced by each '
                    'seed).')
flags.DEFINE_bool('bc_only', False, 'Only the BC pre-training stage, with the --agent network sizes.')
flags.DEFINE_string('pretrained_actor_path', None, 'Run directory of a BC run to start the flow networks from '
                    '("{seed}" is replaced by each seed; default under --protocol=trqam: the shared BC run).')
flags.DEFINE_string('wandb_mode', 'disabled', 'wandb mode: disabled (no account needed), offline or online.')
flags.DEFINE_string('wandb_project', 'trqam', 'wandb project.')
flags.DEFINE_string('wandb_group', 'default', 'wandb group.')
flags.DEFINE_bool('allow_config_change', False, 'Resume although flags or agent config differ from the checkpoint\'s '
                  '(the changes are recorded in flags.json).')
flags.DEFINE_bool('debug', False, 'Show the traceback of errors that otherwise get a one-screen message '
                  '(also TRQAM_DEBUG=1).')

config_flags.DEFINE_config_file('agent', 'agents/trqam.py', 'Agent config file; override keys with --agent.key=value.')


def default_flag_values() -> dict:
    """main.py's flags at their defaults (the agent config aside): the starting point of `train` from Python."""
    return {flag.name: flag.default for flag in _own_flags()}


def _own_flags():
    return [flag for flag in FLAGS.get_key_flags_for_module(sys.modules[__name__]) if flag.name != 'agent']


# ----------------------------------------------------------------------------------------------------------------------
# The protocol.
# ----------------------------------------------------------------------------------------------------------------------


def train(flag_values: dict, agent_config: ml_collections.ConfigDict, stop: StopSignals = None,
          explicit=()) -> list:
    """Runs (or resumes) main.py's protocol; returns the run directories, one per seed. `explicit`: the
    flags ('name') and agent keys ('agent.KEY') the user set, which the protocol leaves alone (values that
    differ from the defaults count as set too). `stop`: the signals that end it early."""
    use_unrolled_threefry_on_cpu()
    config = resolve_config(flag_values, agent_config, explicit, default_flag_values())
    print(describe(config), flush=True)
    if config.bc_stage:
        bc_stage({**flag_values, 'bc_only': True}, agent_config, stop, explicit)
    diverged = []
    for seeds in seed_groups(config):
        try:
            run_seeds(config, seeds, stop)
        except TrainingDiverged as error:  # the other groups still run
            diverged.append(str(error))
    if diverged:
        raise TrainingDiverged('\n\n'.join(diverged))
    return list(config.run_dirs)


def bc_stage(flag_values, agent_config, stop, explicit):
    """Stage 1, the BC run every method of the task shares: reused when complete with these settings (without
    taking its lock, so the methods of a task can start together), else trained or resumed here. While another
    process trains it, this one waits."""
    config = resolve_config(flag_values, agent_config, explicit, default_flag_values())
    if all(Run.finished(config, k) for k in range(len(config.seeds))):
        print(f'BC pre-training (stage 1) complete: {", ".join(config.run_dirs)}', flush=True)
        return
    while True:
        try:
            return train(flag_values, agent_config, stop, explicit)
        except RunDirectoryInUse as busy:
            print(f'Waiting for the BC pre-training run: {busy}', file=sys.stderr, flush=True)
            for _ in range(BC_WAIT_SECONDS):
                if stop is not None and stop.received:
                    raise Preempted(f'Stopped by {stop.received} while waiting for the BC pre-training run.') from None
                time.sleep(1)


def seed_groups(config):
    """The seeds of the run, in groups that resume from the same step (all of them, normally)."""
    by_step = {}
    for position, run_dir in enumerate(config.run_dirs):
        by_step.setdefault(Run.latest_checkpoint(run_dir), []).append(position)
    return list(by_step.values())


def run_seeds(config, positions, stop):
    """The offline and online phases of the seeds at `positions` of the run, which resume from one step."""
    with RunLocks([config.run_dirs[k] for k in positions]):
        data = load_data(config)
        run = Run(config, positions, stop, data.make_env, data.action_dim)
        try:
            state = restore_or_create_state(config, data, run)
            state = offline_phase(state, data, run)
            state = online_phase(state, data, run)
            run.finish(state)
        finally:
            run.close()


def load_data(config):
    """The run's OfflineData (its environment factory and offline transitions)."""
    try:
        return load_offline_data(
            config.env_name, dataset_dir=config.dataset_dir, dataset_path=config.dataset_path,
            dataset_shards_dir=config.dataset_shards_dir, shard_interval=config.dataset_replace_interval,
            sparse=config.sparse, offline_steps=config.offline_steps, horizon_length=config.agent.horizon_length)
    except FileNotFoundError as error:
        if config.dataset_shards_dir and not os.path.isdir(os.path.expanduser(config.dataset_shards_dir)):
            source = 'protocol' if 'dataset_shards_dir' in dict(config.protocol_settings) else 'flags'
            raise FileNotFoundError(f'{error}\nThis run reads the large dataset (set by the {source}): '
                                    + how_to_get(config.env_name, os.path.dirname(config.dataset_shards_dir),
                                                 get_protocol('trqam'))) from None
        raise


def restore_or_create_state(config, data, run: Run) -> RunState:
    """Each seed from the newest intact checkpoint of its run directory, or fresh at step 0; then the run's
    logs, opened at that step. A checkpoint whose settings differ from the config is refused unless
    --allow_config_change."""
    example = data.example_batch(config.agent.horizon_length)
    agent_config = ml_collections.ConfigDict(config.agent.to_dict())
    agents, online, acting, steps = [], [], [], []
    for k in run.positions:
        agent = config.agent_class.create(config.seeds[k], example, agent_config)
        if config.pretrained_paths[k]:
            agent = agent.load_pretrained_flow(load_flow_params(config.pretrained_paths[k]))
        restored = restore_state(run.checkpointers[k], agent, check=lambda saved, k=k: check_resume(config, k, saved))
        agent, transitions, step, seed_acting, changes = restored or (agent, None, 0, SeedActing(), {})
        run.changes[k] = changes
        agents.append(agent)
        online.append(transitions)
        acting.append(seed_acting)
        steps.append(step)
    if len(set(steps)) > 1:
        raise RunError('The seeds\' latest intact checkpoints are at different steps '
                       f'({", ".join(f"seed {config.seeds[k]}: {s}" for k, s in zip(run.positions, steps))}). '
                       'Run the same command again: it resumes each group of seeds from its own step.')
    buffers = online_buffers(online, config.online_steps, data.transitions) if config.online_steps else None
    state = RunState(stack([jax.tree_util.tree_map(jax.numpy.asarray, agent) for agent in agents]), buffers,
                     steps[0], tuple(acting))
    run.open_logs(state.step)
    return state


def offline_phase(state: RunState, data, run: Run) -> RunState:
    """Offline updates, many per jitted call, stopping exactly at every log/eval/save/shard event."""
    schedule = run.config.schedule
    while state.step < schedule.offline_steps:
        stop = schedule.next_offline_stop(state.step)
        state, info = run.train(state, data.dataset_for(state.step + 1), state.step + 1, stop - state.step, None)
        state = run.after_step(dataclasses.replace(state, step=stop), info, 'offline', stop - state.step)
        if schedule.saves(state.step):
            state = run.save(state)
        if run.stop_requested:
            run.stop_here(state)
    return state


def online_phase(state: RunState, data, run: Run, end_step: int = None) -> RunState:
    """Online fine-tuning up to `end_step` (default: the end of the run): chunks executed open-loop in every
    seed's environment, every transition into its replay buffer, `utd_ratio` updates per step once
    `start_training` steps are in. The offline part of the buffers keeps rotating through the shards."""
    config, schedule = run.config, run.config.schedule
    end_step = schedule.total_steps if end_step is None else end_step
    if state.step >= end_step:
        return state
    if state.step == schedule.offline_steps:
        state = dataclasses.replace(state, agents=run.start_online(state.agents))
    collector = run.online_collector(state)
    while state.step < end_step:
        step, online_step = state.step + 1, state.step + 1 - schedule.offline_steps
        random_actions = config.balanced_sampling and online_step < config.start_training
        transitions, rows, acting = collector.step(state.agents, run.act_keys, step, state.acting, random_actions)
        state = dataclasses.replace(state, online=add_transitions(state.online, transitions), step=step,
                                    acting=tuple(acting))
        info = None
        if online_step >= config.start_training:
            state, info = run.train(state, data.dataset_for(step), step * config.utd_ratio, config.utd_ratio,
                                    state.online)
        run.log_episodes(rows, step)
        state = run.after_step(state, info, 'online', 1)
        if schedule.saves(step):
            state = run.save(state)
        if run.stop_requested and step < schedule.total_steps:
            run.stop_here(state)
    return state


# ----------------------------------------------------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------------------------------------------------


def parse_flags(argv):
    """absl's parsing, with a clear message for an --agent.KEY the agent config does not have."""
    try:
        return FLAGS(argv)
    except AttributeError as error:  # ml_collections' word for an unknown override key
        key = str(error).strip('"\'')
        path = next((arg.split('=', 1)[1] for arg in argv if arg.startswith('--agent=')), FLAGS['agent'].default)
        keys = sorted(runpy.run_path(path)['get_config']().keys())
        print(f'{path} has no config key {key!r} (from --agent.{key}=...). Its keys: {", ".join(keys)}.',
              file=sys.stderr)
        sys.exit(2)


def explicit_settings() -> set:
    """The flags and agent keys given on the command line."""
    given = {flag.name for flag in _own_flags() if flag.present}
    return given | {f'agent.{key}' for key in config_flags.get_override_values(FLAGS['agent'])}


def main(_):
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file operation at INFO
    with StopSignals() as stop:
        try:
            train({flag.name: flag.value for flag in _own_flags()}, FLAGS.agent, stop, explicit_settings())
        except Exception as error:  # noqa: BLE001 - faults with a clear message are shown without a traceback
            sys.exit(report_error(error))


def report_error(error: Exception) -> int:
    """Prints `error` on one screen when it is a fault or bad input the user can fix; returns the exit
    status. Anything else (a bug) keeps its traceback."""
    if debug_requested(FLAGS.debug):
        raise error
    if isinstance(error, (RunError, ValueError, FileNotFoundError)):
        message = str(error)
    elif is_disk_full(error):
        where = getattr(error, 'filename', None) or FLAGS.save_dir
        message = (f'{disk_full_message(os.path.dirname(where) or ".")} ({type(error).__name__}: {error})\n'
                   'The latest checkpoint is intact: free some space and run the same command again to resume.')
    else:
        raise error
    print(f'\n{message}\n(--debug or TRQAM_DEBUG=1 shows the traceback.)', file=sys.stderr)
    return getattr(error, 'exit_code', 1)


if __name__ == '__main__':
    app.run(main, flags_parser=parse_flags)
