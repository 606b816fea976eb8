"""Train and evaluate an agent on an OGBench or Robomimic task, with a paper's protocol by default.

    python main.py --agent=agents/trqam.py --env_name=cube-triple-play-singletask-task2-v0

The protocol, top to bottom in `train`: resolve the settings (the protocol's per-domain table under the
flags given), the BC pre-training stage when the protocol has one, then for the seeds: open the run
directories, load the data, restore or create the state, the offline phase (BC pre-training with
`--bc_only`, else offline RL), the online phase (fine-tuning with the offline data as the start of the
replay buffer), close. `--seeds=0,1,2,3` trains several seeds in one compiled program, each with its own
run directory, as if it had been run alone.

A run killed at any point resumes from its latest checkpoint when the same command is started again.
SIGTERM, SIGINT or SIGUSR1 make it save first (when it has anything unsaved) and exit with status 75, from the
first line of this file on; a resumed run ends exactly as the uninterrupted one would. Every flag and agent key is
checked before anything is created; `--help` lists the --agent file's keys.

From Python: `train(default_flag_values() | {'env_name': ...}, agent_config)` returns the run directories.
"""

from runner.signals import exit_at_once_on_stop_signals

if __name__ == '__main__':  # before the heavy imports: a stop while they run ends with the status a sweep requeues
    exit_at_once_on_stop_signals()

import dataclasses  # noqa: E402 - the imports below take seconds; the stop signals come first
import os
import sys
import time

import jax
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from core.errors import Preempted, RunError, debug_requested, disk_full_message, is_disk_full
from envs.offline_data import load_offline_data
from protocols.domains import get_protocol, how_to_get
from runner import flags as runner_flags
from runner import third_party
from runner.acting import SeedActing
from runner.flags import AGENT_DEFAULT, FLAG_NAMES, default_flag_values, define_flags
from runner.locks import RunDirectoryInUse, RunLocks
from runner.prng import use_unrolled_threefry_on_cpu
from runner.seed_axis import stack
from runner.seed_group import SeedGroup, TrainingDiverged
from runner.settings import check_resume, describe, resolve_config
from runner.signals import StopSignals, rerun_hint
from runner.state import RunState, load_flow_params, online_buffers, restore_state
from runner.training import DeferredUpdate, add_transitions
from runner.validation import InvalidSettings, agent_file_problem, agent_keys_help, unknown_agent_keys

FLAGS = flags.FLAGS
BC_WAIT_SECONDS = 30  # between looks at a BC run another process is training

define_flags(FLAGS)
flags.adopt_module_key_flags(runner_flags)  # --help lists them as main.py's


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
    if all(SeedGroup.finished(config, k) for k in range(len(config.seeds))):
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
        by_step.setdefault(SeedGroup.latest_checkpoint(run_dir), []).append(position)
    return list(by_step.values())


def run_seeds(config, positions, stop):
    """The offline and online phases of the seeds at `positions` of the run, which resume from one step. A start
    that fails before anything is written leaves no run directory (RunLocks removes the ones it made)."""
    if stop is not None:
        stop.at_once = True  # until the group's first step, a stop has nothing to save
    with RunLocks([config.run_dirs[k] for k in positions]):
        data = load_data(config)
        run = SeedGroup(config, positions, stop, data.make_env, data.action_dim)
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


def restore_or_create_state(config, data, run: SeedGroup) -> RunState:
    """Each seed from the newest intact checkpoint of its run directory, or fresh at step 0; then the run's
    logs, opened at that step. A checkpoint whose settings differ from the config is refused unless
    --allow_config_change."""
    example = data.example_batch(config.agent.horizon_length)
    agent_config = ml_collections.ConfigDict(config.agent.to_dict())
    agents, online, acting, steps, resumed = [], [], [], [], []
    for k in run.positions:
        agent = config.agent_class.create(config.seeds[k], example, agent_config)
        if config.pretrained_paths[k]:
            agent = agent.load_pretrained_flow(load_flow_params(config.pretrained_paths[k]))
        restored = restore_state(run.checkpointers[k], agent, check=lambda saved, k=k: check_resume(config, k, saved))
        agent, transitions, step, seed_acting, changes = restored or (agent, None, 0, SeedActing(), {})
        if restored:
            resumed.append(os.path.join(run.checkpointers[k].directory, str(step)))
        run.changes[k] = changes
        agents.append(agent)
        online.append(transitions)
        acting.append(seed_acting)
        steps.append(step)
    if len(set(steps)) > 1:
        raise RunError('The seeds\' latest intact checkpoints are at different steps '
                       f'({", ".join(f"seed {config.seeds[k]}: {s}" for k, s in zip(run.positions, steps))}). '
                       'Run the same command again: it resumes each group of seeds from its own step.')
    if resumed:
        print(f'Resuming from step {steps[0]} (checkpoint{"s" if len(resumed) > 1 else ""} {", ".join(resumed)}).',
              flush=True)
    buffers = online_buffers(online, config.online_steps, data.transitions) if config.online_steps else None
    state = RunState(stack([jax.tree_util.tree_map(jax.numpy.asarray, agent) for agent in agents]), buffers,
                     steps[0], tuple(acting))
    run.open_logs(state.step)
    return state


def offline_phase(state: RunState, data, run: SeedGroup) -> RunState:
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


def online_phase(state: RunState, data, run: SeedGroup, end_step: int = None) -> RunState:
    """Online fine-tuning up to `end_step` (default: the end of the run): chunks executed open-loop in every
    seed's environment, every transition into its replay buffer, `utd_ratio` updates per step once
    `start_training` steps are in. The offline part of the buffers keeps rotating through the shards.

    With --overlap_updates the update of step t runs while the environments play step t + 1, in worker processes,
    wherever that step's action is already known (inside a chunk, or random); a chunk is drawn with the updated
    policy. The updates see the same buffers in the same order as in the strictly serial loop, so logs, checkpoints
    and buffers are the same. Logging, evaluation, saving and progress happen only at the schedule's events."""
    config, schedule = run.config, run.config.schedule
    end_step = schedule.total_steps if end_step is None else end_step
    if state.step >= end_step:
        return state
    if state.step == schedule.offline_steps:
        state = dataclasses.replace(state, agents=run.start_online(state.agents))
    collector, update = run.online_collector(state), DeferredUpdate(defer=config.overlap_updates)
    run.has_progress()
    info, reported = None, state.step  # the latest update's metrics; the step of the latest event
    event = min(schedule.next_event(reported), end_step)
    while state.step < end_step:
        step, online_step = state.step + 1, state.step + 1 - schedule.offline_steps
        random_actions = config.balanced_sampling and online_step < config.start_training
        if collector.draws_chunks(state.acting) and not random_actions:
            state, info = update.result(state, info)  # the next chunk comes from the updated policy
        collector.start_step(state.agents, run.act_keys, step, state.acting, random_actions)
        state, info = update.result(state, info)  # while the environments step
        transitions, rows, acting = collector.finish_step(state.acting)
        state = dataclasses.replace(state, online=add_transitions(state.online, transitions), step=step,
                                    acting=tuple(acting))
        run.log_episodes(rows, step)
        if online_step >= config.start_training:
            update.add(run.train, state, data.dataset_for(step), step * config.utd_ratio, config.utd_ratio,
                       state.online)
        if step == event or run.stop_requested:
            state, info = update.result(state, info)
            state, reported = run.after_step(state, info, 'online', step - reported), step
            event = min(schedule.next_event(step), end_step)
            if schedule.saves(step):
                state = run.save(state)
            if run.stop_requested and step < schedule.total_steps:
                run.stop_here(state)
    return state


# ----------------------------------------------------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------------------------------------------------


HELP_FLAGS = ('--help', '-help', '-?', '--helpshort', '--helpfull')  # absl's (--helpxml aside)


def parse_flags(argv):
    """absl's parsing (which names the nearest flag to a mistyped one), with --agent=AGENT_DEFAULT when no --agent
    is given, one screen for a missing agent file or an --agent.KEY its config lacks, and the agent's keys after
    --help."""
    argv = list(argv)
    if '--agent' in argv[:-1]:  # the spaced form, --agent FILE
        position = argv.index('--agent')
        argv[position:position + 2] = [f'--agent={argv[position + 1]}']
    if not any(arg.startswith('--agent=') for arg in argv):
        argv.insert(1, f'--agent={AGENT_DEFAULT}')
    path = [arg.split('=', 1)[1] for arg in argv if arg.startswith('--agent=')][-1]  # absl takes the last
    overrides = [arg[len('--agent.'):].split('=', 1)[0] for arg in argv if arg.startswith('--agent.')]
    problem = agent_file_problem(path) or unknown_agent_keys(path, overrides)
    helping = any(arg in HELP_FLAGS for arg in argv)
    if problem and not helping:
        print(problem, file=sys.stderr)
        sys.exit(2)
    try:
        return FLAGS(argv)
    except flags.Error as error:  # a value a flag cannot parse, an unknown flag (absl names the nearest one)
        print(f'{error}\n(--help lists the flags and the agent config\'s keys.)', file=sys.stderr)
        sys.exit(2)
    except SystemExit:  # absl printed the help and ends the process: the agent's keys follow
        if helping and not agent_file_problem(path):
            print('\n' + agent_keys_help(path))
        raise


def explicit_settings() -> set:
    """The flags and agent keys given on the command line."""
    given = {name for name in FLAG_NAMES if FLAGS[name].present}
    return given | {f'agent.{key}' for key in config_flags.get_override_values(FLAGS['agent'])}


def main(_):
    third_party.report_only_unhandled(debug_requested(FLAGS.debug))
    with StopSignals() as stop:
        try:
            train({name: FLAGS[name].value for name in FLAG_NAMES}, FLAGS.agent, stop, explicit_settings())
        except Exception as error:  # noqa: BLE001 - faults with a clear message are shown without a traceback
            sys.exit(report_error(error))


def report_error(error: Exception) -> int:
    """Prints `error` on one screen when it is a fault or bad input the user can fix, or a stop (with the command
    that goes on); returns the exit status. Anything else (a bug) keeps its traceback."""
    if debug_requested(FLAGS.debug):
        raise error
    if isinstance(error, (Preempted, InvalidSettings)):  # a stop says what to run next; a traceback adds nothing
        print(f'\n{error}' + (f'\n{rerun_hint()}' if isinstance(error, Preempted) else ''), file=sys.stderr)
        return error.exit_code
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
