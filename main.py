"""Train and evaluate an agent on an OGBench single-task environment.

    python main.py --agent=agents/trqam.py --env_name=cube-triple-play-singletask-task2-v0

The protocol, top to bottom in `train`: resolve the config, open the run directory, load the data,
restore or create the state, the offline phase (BC pre-training with `--bc_only`, else offline RL),
the online phase (fine-tuning with the offline data as the start of the replay buffer), close.

A run killed at any point resumes from its latest checkpoint when the same command is started again.
SIGTERM, SIGINT or SIGUSR1 make it save first (offline at once, online at the end of the episode) and
exit with status 75; a resumed run ends exactly as the uninterrupted one would.

From Python: `train(default_flag_values() | {'env_name': ...}, agent_config)` returns the run directory.
"""

import dataclasses
import os
import runpy
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from agents import BC, method_of
from utils import run_dir as layout
from utils.acting import OnlineCollector, evaluate
from utils.checkpoints import Checkpointer
from utils.datasets import add_transition, example_batch
from utils.domains import with_horizon_length
from utils.errors import Preempted, RunError, debug_requested, disk_full_message, is_disk_full
from utils.logging import RunLogger, Throughput, plot_learning_curve, read_json, write_json
from utils.offline_data import load_offline_data, replay_buffer
from utils.preemption import StopSignals
from utils.prng import use_unrolled_threefry_on_cpu
from utils.run_lock import RunLock
from utils.run_state import (NonFiniteState, RunState, checkpoint_bytes, load_flow_params, restore_state, save_state,
                             settings_changes)
from utils.schedule import Schedule
from utils.training import run_keys, train_steps

FLAGS = flags.FLAGS

flags.DEFINE_string('env_name', 'cube-single-play-singletask-task1-v0', 'OGBench single-task environment.')
flags.DEFINE_integer('seed', 0, 'Random seed (networks, batches, environment resets).')
flags.DEFINE_string('dataset_dir', None, 'Folder of OGBench .npz files (default: ogbench\'s ~/.ogbench/data).')
flags.DEFINE_string('dataset_path', None, 'One dataset .npz file (overrides --dataset_dir).')
flags.DEFINE_string('dataset_shards_dir', None, 'Folder of 1M-transition .npz shards (the 10M/100M datasets).')
flags.DEFINE_integer('dataset_replace_interval', 1000, 'Steps between shard rotations with --dataset_shards_dir.')
flags.DEFINE_bool('sparse', False, 'Sparse rewards r -> -1[r != 0] (the QAM paper used them for puzzle and scene).')
flags.DEFINE_integer('offline_steps', 1_000_000, 'Offline gradient steps.')
flags.DEFINE_integer('online_steps', 0, 'Online environment steps after the offline phase.')
flags.DEFINE_integer('horizon_length', None, 'Action chunk length H (default: agent config, else 5 manipulation / 1 maze).')
flags.DEFINE_integer('start_training', 5000, 'Online steps collected before online updates start.')
flags.DEFINE_integer('utd_ratio', 1, 'Online gradient updates per environment step (one scanned call).')
flags.DEFINE_integer('steps_per_call', 100, 'Offline updates per jitted call.')
flags.DEFINE_integer('log_interval', 5000, 'Steps between training-metric rows.')
flags.DEFINE_integer('eval_interval', 50_000, 'Steps between evaluations (0: only at the end).')
flags.DEFINE_integer('eval_episodes', 50, 'Episodes per evaluation.')
flags.DEFINE_integer('save_interval', 100_000, 'Steps between checkpoints (online: at the next episode end).')
flags.DEFINE_string('save_dir', 'runs', 'Parent folder of run directories.')
flags.DEFINE_string('run_name', None, 'Run directory name (default: method_env_seed; _bc with --bc_only).')
flags.DEFINE_bool('bc_only', False, 'Stage 1 of the protocol: train only the BC flow, with the --agent network sizes.')
flags.DEFINE_string('pretrained_actor_path', None, 'Run directory of a --bc_only run to start the flow networks from.')
flags.DEFINE_string('wandb_mode', 'disabled', 'wandb mode: disabled (no account needed), offline or online.')
flags.DEFINE_string('wandb_project', 'trqam', 'wandb project.')
flags.DEFINE_string('wandb_group', 'default', 'wandb group.')
flags.DEFINE_bool('allow_config_change', False, 'Resume although flags or agent config differ from the checkpoint\'s '
                  '(the changes are recorded in flags.json).')
flags.DEFINE_bool('debug', False, 'Show the traceback of errors that otherwise get a one-screen message '
                  '(also TRQAM_DEBUG=1).')

config_flags.DEFINE_config_file('agent', 'agents/fql.py', 'Agent config file; override keys with --agent.key=value.')


class TrainingDiverged(RunError):
    pass


class ConfigMismatch(RunError):
    pass


class DiskFull(RunError):
    pass


# Flags that name where a run lives or how it reports, not what it computes: a resume may change them.
RESUME_FREE_FLAGS = ('save_dir', 'run_name', 'wandb_mode', 'wandb_project', 'wandb_group', 'allow_config_change',
                     'debug')


def default_flag_values() -> dict:
    """main.py's flags at their defaults (the agent config aside): the starting point of `train` from Python."""
    return {flag.name: flag.default for flag in _own_flags()}


def _own_flags():
    return [flag for flag in FLAGS.get_key_flags_for_module(sys.modules[__name__]) if flag.name != 'agent']


# ----------------------------------------------------------------------------------------------------------------------
# The protocol.
# ----------------------------------------------------------------------------------------------------------------------


def train(flag_values: dict, agent_config: ml_collections.ConfigDict, stop: StopSignals = None) -> str:
    """Runs (or resumes) one run of main.py; returns its run directory. `stop`: the signals that end it
    early (main.py installs them; from Python, none by default)."""
    use_unrolled_threefry_on_cpu()
    config = resolve_config(flag_values, agent_config)
    with RunLock(config.run_dir):
        env, eval_env, data = load_data(config)
        checkpointer = Checkpointer(layout.path(config.run_dir, layout.CHECKPOINT_DIR))
        state, changes = restore_or_create_state(config, data, checkpointer)
        run = Run(config, open_logs(config, state.step, changes), checkpointer, eval_env, stop, state.step)
        try:
            state = offline_phase(state, data, run)
            state = online_phase(state, env, run)
        finally:
            run.close()
        report_finished(config, run.logger, state)
    return config.run_dir


def resolve_config(flag_values: dict, agent_config) -> ml_collections.FrozenConfigDict:
    """The flag values with the run's derived settings: the agent config (chunk length filled in), the
    agent class, the schedule and the run directory. Flags and `agent_config` stay untouched."""
    config = ml_collections.ConfigDict(dict(flag_values))
    config.agent = with_horizon_length(agent_config, config.env_name, config.horizon_length)
    if config.bc_only:
        config.online_steps = 0
    method = method_of(config.agent)
    config.run_dir = os.path.join(config.save_dir, config.run_name or layout.run_name(
        method.slug, config.env_name, config.seed, config.bc_only))
    config.schedule = Schedule(
        config.offline_steps, config.online_steps, config.log_interval, config.eval_interval, config.save_interval,
        config.dataset_replace_interval if config.dataset_shards_dir else 0, config.steps_per_call)
    config.agent_class = (BC if config.bc_only else method).agent_class()
    return ml_collections.FrozenConfigDict(config)


def recorded_settings(config) -> dict:
    """What flags.json records: every flag of main.py as resolved for this run, and the agent config."""
    return {**{flag.name: config[flag.name] for flag in _own_flags()}, 'agent': config.agent.to_dict()}


def load_data(config):
    """(training env, evaluation env, OfflineData) of the run."""
    return load_offline_data(
        config.env_name, dataset_dir=config.dataset_dir, dataset_path=config.dataset_path,
        dataset_shards_dir=config.dataset_shards_dir, shard_interval=config.dataset_replace_interval,
        sparse=config.sparse, offline_steps=config.offline_steps, horizon_length=config.agent.horizon_length)


def restore_or_create_state(config, data, checkpointer):
    """(state, changed settings) from the newest intact checkpoint of the run directory, or a fresh state
    at step 0. A checkpoint whose settings differ from the config is refused unless --allow_config_change."""
    offline = data.transitions_at(0)
    replay = replay_buffer(offline, config.online_steps)
    agent = config.agent_class.create(config.seed, example_batch(replay, config.agent.horizon_length),
                                      ml_collections.ConfigDict(config.agent.to_dict()))
    if config.pretrained_actor_path:
        agent = agent.load_pretrained_flow(load_flow_params(config.pretrained_actor_path))
    state, changes = RunState(agent, replay, len(offline['observations']), step=0, episode_index=0), {}
    restored = restore_state(checkpointer, agent, check=lambda saved: check_resume(config, saved))
    if restored is not None:
        agent, online, step, episode_index, changes = restored
        offline = data.transitions_at(step)
        state = RunState(agent, replay_buffer(offline, config.online_steps, online), len(offline['observations']),
                         step, episode_index)
        print(f'Resumed {config.run_dir} at step {step}.')
    return dataclasses.replace(state, agent=jax.tree_util.tree_map(jnp.asarray, state.agent)), changes


def check_resume(config, saved_settings) -> dict:
    """The settings that differ from the checkpoint's (older checkpoints: flags.json's); refuses them
    unless --allow_config_change."""
    if saved_settings is None:
        flags_path = layout.path(config.run_dir, layout.FLAGS_FILE)
        saved_settings = read_json(flags_path) if os.path.exists(flags_path) else recorded_settings(config)
    changes = settings_changes(saved_settings, recorded_settings(config), free=RESUME_FREE_FLAGS + ('config_changes',))
    if changes and not config.allow_config_change:
        listed = '\n'.join(f'  {key}: {old!r} in the checkpoint, {new!r} now' for key, old, new in
                           ((key, *values) for key, values in changes.items()))
        raise ConfigMismatch(
            f'{config.run_dir} holds a run with other settings:\n{listed}\nRun the command that started it to '
            'resume it; pass another --run_name (or --save_dir) for a new run; or add --allow_config_change to '
            'resume with the new settings (flags.json records the change).')
    return changes


def open_logs(config, restored_step: int, changes: dict) -> RunLogger:
    """flags.json (with the history of allowed config changes) and the logs, trimmed to the restored step."""
    settings = recorded_settings(config)
    flags_path = layout.path(config.run_dir, layout.FLAGS_FILE)
    history = read_json(flags_path).get('config_changes', []) if changes and os.path.exists(flags_path) else []
    if changes:
        history.append({'step': restored_step, 'changes': {key: list(values) for key, values in changes.items()}})
    write_json(flags_path, {**settings, **({'config_changes': history} if history else {})})
    wandb = {'mode': config.wandb_mode, 'project': config.wandb_project, 'group': config.wandb_group}
    return RunLogger(config.run_dir, restored_step, wandb, os.path.basename(config.run_dir), settings)


class Run:
    """What the phases share: the config, logs, checkpoints, evaluation, progress and the stop signals."""

    def __init__(self, config, logger, checkpointer, eval_env, stop, restored_step):
        self.config, self.logger, self.checkpointer, self.eval_env, self.stop = config, logger, checkpointer, eval_env, stop
        self.data_key, self.act_key = run_keys(config.seed)
        self.last_checkpoint = restored_step if checkpointer.latest_step() is not None else None
        self.throughput = Throughput()
        self.progress = tqdm.tqdm(total=config.schedule.total_steps, initial=restored_step, smoothing=0.1,
                                  dynamic_ncols=True, desc=os.path.basename(config.run_dir))

    @property
    def stop_requested(self) -> bool:
        return self.stop is not None and self.stop.received is not None

    def train(self, state: RunState, first_step: int, num_updates: int):
        agent, info = train_steps(state.agent, state.replay, self.data_key, first_step, num_updates=num_updates,
                                  batch_size=self.config.agent.batch_size,
                                  horizon_length=self.config.agent.horizon_length)
        return dataclasses.replace(state, agent=agent), info

    def after_step(self, state: RunState, info, phase_name: str, steps_done: int):
        """Logging and evaluation due at `state.step`; `info` is None while no update has run in this phase."""
        schedule, step = self.config.schedule, state.step
        self.throughput.add(steps_done)
        self.progress.update(steps_done)
        if info is not None and schedule.logs(step):
            metrics = jax.device_get(info)
            bad = [key for key, value in metrics.items() if not np.all(np.isfinite(value))]
            if bad:
                raise self.diverged(step, ', '.join(bad))
            row = {f'training/{key}': value for key, value in metrics.items()}
            self.logger.log({**row, 'time/steps_per_second': self.throughput.rate(), 'phase': phase_name}, step)
        if schedule.evaluates(step):
            metrics = evaluate(state.agent, self.eval_env, self.config.eval_episodes, self.config.seed, step)
            self.logger.log({f'evaluation/{key}': value for key, value in metrics.items()}, step)
            self.progress.set_postfix(success=f'{metrics["success"]:.2f}')

    def save(self, state: RunState):
        try:
            save_state(self.checkpointer, state, recorded_settings(self.config))
        except NonFiniteState as error:
            raise self.diverged(state.step, str(error)) from None
        except Exception as error:
            if is_disk_full(error):
                raise DiskFull(disk_full_message(self.checkpointer.directory, checkpoint_bytes(state)) + '\n'
                               + self.nothing_lost()) from error
            raise
        self.last_checkpoint = state.step

    def stop_here(self, state: RunState):
        """Saves `state` (a point the run resumes from exactly) and stops the run."""
        if self.last_checkpoint != state.step:
            self.save(state)
        raise Preempted(f'Stopped by {self.stop.received} at step {state.step} and saved a checkpoint there. Run the '
                        'same command again to resume.')

    def diverged(self, step: int, what: str) -> TrainingDiverged:
        return TrainingDiverged(
            f'Training diverged at step {step}: {what} became non-finite, so nothing of it was saved.\n'
            + self.nothing_lost() + '\nTo go on from there with other settings (for example a lower --agent.lr), '
            'add them and --allow_config_change to the same command; to start over, pass another --run_name.')

    def nothing_lost(self) -> str:
        if self.last_checkpoint is None:
            return f'No checkpoint was saved yet; the logs are in {self.config.run_dir}.'
        return (f'The latest checkpoint (step {self.last_checkpoint}) is intact and the same command resumes from it; '
                f'the logs are in {self.config.run_dir}.')

    def close(self):
        self.progress.close()
        self.checkpointer.close()
        self.logger.close()


def offline_phase(state: RunState, data, run: Run) -> RunState:
    """Offline updates, many per jitted call, stopping exactly at every log/eval/save/shard event."""
    schedule = run.config.schedule
    while state.step < schedule.offline_steps:
        stop = schedule.next_offline_stop(state.step)
        state, info = run.train(state, state.step + 1, stop - state.step)
        steps_done, state = stop - state.step, dataclasses.replace(state, step=stop)
        run.after_step(state, info, 'offline', steps_done)
        if data.live_shard(state.step) != data.loaded_shard:
            offline = data.transitions_at(state.step)
            state = dataclasses.replace(state, offline_size=len(offline['observations']),
                                        replay=replay_buffer(offline, run.config.online_steps))
        if schedule.saves_offline(state.step):
            run.save(state)
        if run.stop_requested:
            run.stop_here(state)
    return state


def online_phase(state: RunState, env, run: Run, end_step: int = None) -> RunState:
    """Online fine-tuning up to `end_step` (default: the end of the run): chunks executed open-loop, every
    transition into the replay buffer, `utd_ratio` updates per step once `start_training` steps are in.
    Checkpoints (and a stop on a signal) wait for the episode's end, where a resumed run restarts."""
    config, schedule = run.config, run.config.schedule
    end_step = schedule.total_steps if end_step is None else end_step
    if state.step >= end_step:
        return state
    agent = state.agent.start_online() if state.step == schedule.offline_steps else state.agent
    state = dataclasses.replace(state, agent=agent)
    collector = OnlineCollector(env, config.seed, state.episode_index, config.sparse)
    save_pending, info = False, None
    while state.step < end_step:
        step = state.step + 1
        transition, episode_row = collector.step(state.agent, jax.random.fold_in(run.act_key, step))
        replay = add_transition(state.replay, {key: jnp.asarray(value, jnp.float32) for key, value in transition.items()})
        state = dataclasses.replace(state, replay=replay, step=step, episode_index=collector.episode_index)
        if step - schedule.offline_steps >= config.start_training:
            state, info = run.train(state, step * config.utd_ratio, config.utd_ratio)
        if episode_row is not None:
            run.logger.log(episode_row, step)
        run.after_step(state, info, 'online', 1)
        save_pending = save_pending or schedule.save_due_online(step)
        if episode_row is not None and run.stop_requested and step < schedule.total_steps:
            run.stop_here(state)
        if save_pending and episode_row is not None:
            run.save(state)
            save_pending = False
    if state.step == schedule.total_steps:
        run.save(state)
    return state


def report_finished(config, logger: RunLogger, state: RunState):
    plot_learning_curve(config.run_dir, config.offline_steps if config.online_steps else None)
    latest = logger.latest('evaluation/success')
    print(f'Finished {config.run_dir}: step {state.step}, latest success '
          f'{"none evaluated" if latest is None else f"{latest:.3f}"}.')


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


def main(_):
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file operation at INFO
    with StopSignals() as stop:
        try:
            train({flag.name: flag.value for flag in _own_flags()}, FLAGS.agent, stop)
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
