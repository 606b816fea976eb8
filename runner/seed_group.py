"""What the phases of main.py share for a group of seeds: the settings, each seed's logs and checkpoints,
the training and acting programs, the evaluation and online environments, progress and the stop signals.

A seed whose training diverges leaves the group (its run directory keeps its last finite checkpoint and
says what happened); the others go on.
"""

import dataclasses
import os
import sys
from typing import Dict, List

import jax
import jax.numpy as jnp
import numpy as np

from runner import layout
from runner.acting import OnlineCollector, evaluate, evaluation_slots
from runner.checkpoints import Checkpointer
from envs.env_pool import EnvPool
from core.errors import Preempted, RunError, disk_full_message, is_disk_full
from runner.logs import Progress, RunLogger, Throughput, plot_learning_curve, read_json, write_json
from runner.settings import RESUME_FREE_SETTINGS, history_of_changes, recorded_settings
from runner.state import NonFiniteState, RunState, checkpoint_bytes, save_state, settings_changes
from runner.seed_axis import map_seeds
from runner.training import run_keys, train_seeds
from envs.video import choose_render_backend

class TrainingDiverged(RunError):
    pass


class DiskFull(RunError):
    pass


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


def workers_for(num_envs: int, requested: int = -1) -> int:
    """Worker processes for `num_envs` environments: `requested`, or (-1) one per core up to one per
    environment, and none (this process) for a single environment."""
    if requested >= 0:
        return min(requested, num_envs)
    return 0 if num_envs <= 1 else min(available_cores(), num_envs)


class SeedGroup:
    def __init__(self, config, positions, stop, make_env, action_dim: int):
        self.config, self.positions, self.stop = config, list(positions), stop
        self.make_env, self.action_dim = make_env, action_dim
        self.checkpointers = {k: Checkpointer(layout.path(config.run_dirs[k], layout.CHECKPOINT_DIR))
                              for k in positions}
        keys = np.stack([np.asarray(run_keys(config.seeds[k])) for k in positions])
        self.data_keys, self.act_keys = jnp.asarray(keys[:, 0]), jnp.asarray(keys[:, 1])
        self.last_checkpoint = {k: self.checkpointers[k].latest_step() for k in positions}
        self.loggers: Dict[int, RunLogger] = {}
        self.changes: Dict[int, dict] = {}
        self.eval_pool = self.online_pool = self.collector = None
        self.throughput, self.progress = Throughput(), None

    @staticmethod
    def latest_checkpoint(run_dir: str):
        """The newest finished checkpoint's step (orbax names them by step), read without touching anything."""
        directory = layout.path(run_dir, layout.CHECKPOINT_DIR)
        steps = [int(name) for name in os.listdir(directory) if name.isdigit()] if os.path.isdir(directory) else []
        return max(steps, default=None)

    @staticmethod
    def finished(config, k: int) -> bool:
        """Whether seed k's run directory holds this run, complete: its last checkpoint at the final step and
        the settings of flags.json equal to `config`'s."""
        run_dir = config.run_dirs[k]
        flags_path = layout.path(run_dir, layout.FLAGS_FILE)
        if SeedGroup.latest_checkpoint(run_dir) != config.schedule.total_steps or not os.path.exists(flags_path):
            return False
        return not settings_changes(read_json(flags_path), recorded_settings(config, k), free=RESUME_FREE_SETTINGS)

    @property
    def seeds(self) -> List[int]:
        return [self.config.seeds[k] for k in self.positions]

    @property
    def stop_requested(self) -> bool:
        return self.stop is not None and self.stop.received is not None

    def open_logs(self, step: int):
        """Each seed's flags.json (with the history of allowed config changes) and logs, trimmed to `step`."""
        config = self.config
        for k in self.positions:
            run_dir, settings = config.run_dirs[k], recorded_settings(config, k)
            flags_path = layout.path(run_dir, layout.FLAGS_FILE)
            history = history_of_changes(flags_path, step, self.changes.get(k, {}))
            write_json(flags_path, {**settings, **({'config_changes': history} if history else {})})
            if os.path.exists(layout.path(run_dir, layout.DIVERGED_FILE)):
                os.remove(layout.path(run_dir, layout.DIVERGED_FILE))
            wandb = {'mode': config.wandb_mode, 'project': config.wandb_project, 'group': config.wandb_group}
            self.loggers[k] = RunLogger(run_dir, step, wandb, os.path.basename(run_dir), settings)
        name = os.path.basename(config.run_dirs[self.positions[0]])
        self.progress = Progress(name if len(self.positions) == 1 else f'{name} (+{len(self.positions) - 1} seeds)',
                                 config.schedule.total_steps, step)

    # Training and acting. ---------------------------------------------------------------------------------------------

    def train(self, state: RunState, offline, first_step: int, num_updates: int, online):
        """`num_updates` updates of every seed, on the offline data followed by its online transitions."""
        agent = self.config.agent
        agents, info = train_seeds(state.agents, offline, online, self.data_keys, first_step, num_updates=num_updates,
                                   batch_size=agent.batch_size, horizon_length=agent.horizon_length,
                                   balanced=bool(self.config.balanced_sampling and online is not None))
        return dataclasses.replace(state, agents=agents), info

    @staticmethod
    def start_online(agents):
        """Each agent's settings for the online phase (e.g. TRQAM's online KL budget)."""
        return map_seeds(lambda agent: agent.start_online(), (0,))(agents)

    def online_collector(self, state: RunState) -> OnlineCollector:
        """The seeds' environments where the run stands (a resumed run replays the current episodes)."""
        workers = workers_for(len(self.positions))
        if self.config.overlap_updates:  # the environments step in another process while this one updates
            workers = max(workers, 1)
        self.online_pool = EnvPool(self.make_env, len(self.positions), workers)
        self.collector = OnlineCollector(self.online_pool, self.seeds, self.action_dim, self.config.sparse)
        self.collector.start(state.acting, [state.online_transitions(i) for i in range(state.num_seeds)])
        return self.collector

    def has_progress(self):
        """From now on the run has progress that a stop saves first."""
        if self.stop is not None:
            self.stop.at_once = False

    def after_step(self, state: RunState, info, phase_name: str, steps_done: int) -> RunState:
        """Logging and evaluation due at `state.step`; `info` is None while no update has run in this phase.
        Returns the state without the seeds whose metrics became non-finite."""
        schedule, step = self.config.schedule, state.step
        self.throughput.add(steps_done)
        self.progress.update(steps_done, report=schedule.logs(step) or step in (schedule.offline_steps,
                                                                                 schedule.total_steps))
        self.has_progress()
        if info is not None and schedule.logs(step):
            metrics = jax.device_get(info)
            rate = self.throughput.rate()
            diverged = {}
            for i, k in enumerate(self.positions):
                bad = [key for key, value in metrics.items() if not np.all(np.isfinite(value[i]))]
                if bad:
                    diverged[i] = ', '.join(bad)
                    continue
                row = {f'training/{key}': value[i] for key, value in metrics.items()}
                self.loggers[k].log({**row, 'time/steps_per_second': rate, 'phase': phase_name}, step)
            state = self.drop(state, diverged)
        if schedule.evaluates(step):
            self.evaluate(state)
        return state

    def evaluate(self, state: RunState):
        """`eval_episodes` episodes of every seed at once, the first `video_episodes` of each rendered."""
        config, step = self.config, state.step
        slots = evaluation_slots(len(self.positions), config.eval_episodes, config.eval_envs)
        num_videos = min(config.video_episodes, slots)  # video episodes play in the first slots, from the start
        if self.eval_pool is None:
            num_envs = len(self.positions) * slots
            workers = workers_for(num_envs, config.eval_workers)
            if num_videos:
                choose_render_backend()  # before the workers start: they inherit it
                workers = max(workers, 1)  # mujoco here was imported before the backend was chosen
            render = [i * slots + e for i in range(len(self.positions)) for e in range(num_videos)]
            self.eval_pool = EnvPool(self.make_env, num_envs, workers, render=render)
        videos = {(i, e): layout.video_path(config.run_dirs[k], step, e)
                  for i, k in enumerate(self.positions) for e in range(num_videos)}
        results = evaluate(state.agents, self.eval_pool, self.seeds, config.eval_episodes, step,
                           config.agent.horizon_length, videos)
        for (i, e), path in videos.items():
            self.loggers[self.positions[i]].log_video(path, step)
        for k, episodes in zip(self.positions, results):
            self.loggers[k].log({f'evaluation/{key}': float(np.mean(values)) for key, values in episodes.items()}, step)
        self.progress.set_success(float(np.mean([episodes['success'] for episodes in results])))

    def log_episodes(self, rows, step: int):
        for k, row in zip(self.positions, rows):
            if row is not None:
                self.loggers[k].log(row, step)

    # Checkpoints, divergence and stops. -------------------------------------------------------------------------------

    def save(self, state: RunState) -> RunState:
        """Saves every seed's checkpoint; a seed whose state is not finite is not saved and leaves the group."""
        diverged = {}
        for i, k in enumerate(self.positions):
            try:
                save_state(self.checkpointers[k], state, i, recorded_settings(self.config, k))
            except NonFiniteState as error:
                diverged[i] = str(error)
                continue
            except Exception as error:
                if is_disk_full(error):
                    raise DiskFull(disk_full_message(self.checkpointers[k].directory, checkpoint_bytes(state, i))
                                   + '\n' + self.nothing_lost(k)) from error
                raise
            self.last_checkpoint[k] = state.step
        return self.drop(state, diverged)

    def stop_here(self, state: RunState):
        """Saves `state` (a point the run resumes from exactly) and stops the run."""
        if any(self.last_checkpoint[k] != state.step for k in self.positions):
            state = self.save(state)
        raise Preempted(f'Stopped by {self.stop.received} at step {state.step} and saved a checkpoint there.')

    def drop(self, state: RunState, diverged: Dict[int, str]) -> RunState:
        """The state without the seeds (by position in the group) in `diverged` ({position: what became
        non-finite}); each one's run directory says so. Raises when no seed is left."""
        if not diverged:
            return state
        messages = {}
        for i, what in diverged.items():
            k = self.positions[i]
            messages[k] = self.diverged_message(k, state.step, what)
            layout.write_divergence(self.config.run_dirs[k], state.step, what, messages[k])
        keep = [i for i in range(len(self.positions)) if i not in diverged]
        if not keep:
            raise TrainingDiverged('\n'.join(messages.values()))
        for k, message in messages.items():
            print(f'\n{message}\nThe other seeds go on.', file=sys.stderr)
            self.loggers.pop(k).close()
        self.positions = [self.positions[i] for i in keep]
        self.data_keys, self.act_keys = self.data_keys[np.asarray(keep)], self.act_keys[np.asarray(keep)]
        if self.collector is not None:
            self.collector.drop(list(diverged))
        if self.eval_pool is not None:  # its environments are laid out by seed: the next evaluation makes anew
            self.eval_pool.close()
            self.eval_pool = None
        return state.keep(keep)

    def diverged_message(self, k: int, step: int, what: str) -> str:
        seed = f'seed {self.config.seeds[k]} ' if len(self.config.seeds) > 1 else ''
        return (f'Training {seed}diverged at step {step}: {what} became non-finite, so nothing of it was saved.\n'
                + self.nothing_lost(k) + '\nTo go on from there with other settings (for example a lower --agent.lr), '
                'add them and --allow_config_change to the same command; to start over, pass another --run_name.')

    def nothing_lost(self, k: int) -> str:
        run_dir = self.config.run_dirs[k]
        if self.last_checkpoint[k] is None:
            return f'No checkpoint was saved yet; the logs are in {run_dir}.'
        return (f'The latest checkpoint (step {self.last_checkpoint[k]}) is intact and the same command resumes from '
                f'it; the logs are in {run_dir}.')

    def finish(self, state: RunState):
        config = self.config
        self.progress.close()  # the bar's line ends before the summary lines
        for k in self.positions:
            plot_learning_curve(config.run_dirs[k], config.offline_steps if config.online_steps else None)
            latest = self.loggers[k].latest(layout.SUCCESS_KEY)
            print(f'Finished {config.run_dirs[k]}: step {state.step}, latest success '
                  f'{"none evaluated" if latest is None else f"{latest:.3f}"}.')

    def close(self):
        if self.progress is not None:
            self.progress.close()
        for checkpointer in self.checkpointers.values():
            checkpointer.close()
        for logger in self.loggers.values():
            logger.close()
        for pool in (self.eval_pool, self.online_pool):
            if pool is not None:
                pool.close()

