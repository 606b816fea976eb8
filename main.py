"""Train and evaluate an agent on an OGBench single-task environment.

    python main.py --agent=agents/trqam.py --env_name=cube-triple-play-singletask-task2-v0

Phases: BC pre-training of the flow (`--bc_only`), offline RL (`--offline_steps`), then online
fine-tuning (`--online_steps`) with the offline data as the start of the replay buffer. A run killed
at any point resumes from its latest checkpoint when the same command is started again.
"""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from agents import get_agent_class
from utils.checkpoints import Checkpointer, load_flow_params, unflatten_like
from utils.datasets import TRANSITION_KEYS, Dataset, add_transition, example_batch
from utils.domains import default_horizon_length
from utils.evaluation import ChunkedActor, episode_seed, evaluate
from utils.logging import CsvLogger, WandbLogger, plot_learning_curve, write_json
from utils.ogbench_data import ShardRotation, list_dataset_shards, load_dataset_shard, make_env_and_datasets
from utils.training import train_steps

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
flags.DEFINE_string('run_name', None, 'Run directory name (default: agent_env_seed; _bc with --bc_only).')
flags.DEFINE_bool('bc_only', False, 'Stage 1 of the protocol: train only the BC flow, with the --agent network sizes.')
flags.DEFINE_string('pretrained_actor_path', None, 'Run directory of a --bc_only run to start the flow networks from.')
flags.DEFINE_string('wandb_mode', 'disabled', 'wandb mode: disabled (no account needed), offline or online.')
flags.DEFINE_string('wandb_project', 'trqam', 'wandb project.')
flags.DEFINE_string('wandb_group', 'default', 'wandb group.')

config_flags.DEFINE_config_file('agent', 'agents/fql.py', 'Agent config file; override keys with --agent.key=value.')


class TrainingDiverged(FloatingPointError):
    pass


def resolve_config():
    """The agent config with run-level settings filled in, as a new object (flags stay untouched)."""
    config = FLAGS.agent.copy_and_resolve_references()
    with config.unlocked():
        if FLAGS.horizon_length is not None:
            config.horizon_length = FLAGS.horizon_length
        elif config.get('horizon_length') is None:
            config.horizon_length = default_horizon_length(FLAGS.env_name)
    return config


def check_finite(metrics, step, run_dir, last_checkpoint):
    bad = [key for key, value in metrics.items() if not np.all(np.isfinite(value))]
    if bad:
        raise TrainingDiverged(
            f'Training diverged at step {step}: {", ".join(bad)} became non-finite. Nothing was saved after '
            f'the last checkpoint (step {last_checkpoint}); logs are in {run_dir}. Lower --agent.lr, check '
            'the rewards of the dataset, or resume from the checkpoint with a different seed.'
        )


def main(_):
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file operation at INFO
    config = resolve_config()
    horizon_length = config.horizon_length
    online_steps = 0 if FLAGS.bc_only else FLAGS.online_steps
    agent_class = get_agent_class('bc_flow' if FLAGS.bc_only else config.agent_name)

    run_name = FLAGS.run_name or f'{config.agent_name}_{FLAGS.env_name}_seed{FLAGS.seed}' + ('_bc' if FLAGS.bc_only else '')
    run_dir = os.path.join(FLAGS.save_dir, run_name)
    os.makedirs(run_dir, exist_ok=True)
    flag_values = {name: FLAGS[name].value for name in _OWN_FLAGS}
    write_json(os.path.join(run_dir, 'flags.json'), {**flag_values, 'agent': config.to_dict()})

    # Data: the offline dataset on the device, with room for the online transitions.
    shards, dataset_path = None, FLAGS.dataset_path
    if FLAGS.dataset_shards_dir:
        shards = ShardRotation(list_dataset_shards(FLAGS.dataset_shards_dir), FLAGS.dataset_replace_interval)
        dataset_path = shards.path_for_step(0)
    env, eval_env, train_data, _ = make_env_and_datasets(
        FLAGS.env_name, dataset_dir=FLAGS.dataset_dir, dataset_path=dataset_path, sparse=FLAGS.sparse
    )
    action_dim = env.action_space.shape[-1]

    def load_offline_data(step):
        if shards is None:
            return train_data
        return load_dataset_shard(FLAGS.env_name, shards.path_for_step(step), env, FLAGS.sparse)

    def shard_dataset(step):
        data = load_offline_data(step)
        return Dataset.create(data, capacity=max(dataset.capacity, len(data['observations']) + online_steps))

    # Agent, checkpoint, logs.
    dataset = Dataset.create(train_data, capacity=len(train_data['observations']) + online_steps)
    agent = agent_class.create(FLAGS.seed, example_batch(dataset, horizon_length), config)
    if FLAGS.pretrained_actor_path:
        agent = agent.load_pretrained_flow(load_flow_params(FLAGS.pretrained_actor_path))
    data_key = jax.random.PRNGKey(FLAGS.seed)
    data_key, act_key = jax.random.split(jax.random.fold_in(data_key, 1))

    checkpointer = Checkpointer(os.path.join(run_dir, 'checkpoints'))
    train_logger = CsvLogger(os.path.join(run_dir, 'train.csv'))
    eval_logger = CsvLogger(os.path.join(run_dir, 'eval.csv'))
    step, episode_index, offline_size = 0, 0, int(dataset.size)
    if checkpointer.latest_step() is not None:
        flat, metadata = checkpointer.restore()
        agent = unflatten_like(agent, {k[len('agent/'):]: v for k, v in flat.items() if k.startswith('agent/')})
        step, episode_index = metadata['step'], metadata['episode_index']
        if step > FLAGS.offline_steps:  # the online transitions collected so far
            online = {key: flat[f'replay/{key}'] for key in TRANSITION_KEYS}
            offline = load_offline_data(FLAGS.offline_steps)
            merged = {key: np.concatenate([offline[key], online[key]]) for key in TRANSITION_KEYS}
            dataset = Dataset.create(merged, capacity=len(offline['observations']) + online_steps)
            offline_size = len(offline['observations'])
        elif shards is not None:
            dataset = shard_dataset(step)
        train_logger.truncate_after(step)
        eval_logger.truncate_after(step)
        print(f'Resumed {run_dir} at step {step}.')
    agent = jax.tree_util.tree_map(jnp.asarray, agent)
    last_checkpoint = step
    wandb_logger = WandbLogger(FLAGS.wandb_mode, FLAGS.wandb_project, FLAGS.wandb_group, run_name,
                               {**flag_values, 'agent': config.to_dict()}, run_dir)

    def save(step):
        nonlocal last_checkpoint
        arrays = {'agent': agent}
        if step > FLAGS.offline_steps:
            size = int(dataset.size)
            arrays['replay'] = {key: np.asarray(getattr(dataset, key)[offline_size:size]) for key in TRANSITION_KEYS}
        checkpointer.save(step, arrays, {'step': step, 'episode_index': episode_index})
        last_checkpoint = step

    def run_evaluation(step):
        metrics = evaluate(agent, eval_env, FLAGS.eval_episodes, FLAGS.seed, step, action_dim)
        row = {f'evaluation/{key}': value for key, value in metrics.items()}
        eval_logger.log(row, step)
        wandb_logger.log(row, step)
        return metrics['success']

    def is_due(step, interval):
        return interval > 0 and step % interval == 0

    total_steps = FLAGS.offline_steps + online_steps
    progress = tqdm.tqdm(total=total_steps, initial=step, smoothing=0.1, dynamic_ncols=True, desc=run_name)
    latest_success, window_start, window_steps = None, time.time(), 0

    def after_step(step, info, phase):
        """Logging and evaluation due at `step`; `info` is None while no update has run in this phase."""
        nonlocal latest_success, window_start, window_steps
        if info is not None and is_due(step, FLAGS.log_interval):
            metrics = jax.device_get(info)
            check_finite(metrics, step, run_dir, last_checkpoint)
            elapsed = time.time() - window_start
            row = {f'training/{key}': value for key, value in metrics.items()}
            row['time/steps_per_second'] = window_steps / max(elapsed, 1e-9)
            row['phase'] = phase
            train_logger.log(row, step)
            wandb_logger.log(row, step)
            window_start, window_steps = time.time(), 0
        if is_due(step, FLAGS.eval_interval) or step == total_steps:
            latest_success = run_evaluation(step)
            progress.set_postfix(success=f'{latest_success:.2f}')

    # Offline phase: many updates per jitted call, stopping exactly at every log/eval/save/shard event.
    event_intervals = [FLAGS.log_interval, FLAGS.eval_interval, FLAGS.save_interval]
    if shards is not None:
        event_intervals.append(FLAGS.dataset_replace_interval)
    info = None
    while step < FLAGS.offline_steps:
        next_event = min([FLAGS.offline_steps] + [(step // i + 1) * i for i in event_intervals if i > 0])
        num_updates = min(FLAGS.steps_per_call, next_event - step)
        agent, info = train_steps(agent, dataset, data_key, step + 1, num_updates=num_updates,
                                  batch_size=config.batch_size, horizon_length=horizon_length)
        step += num_updates
        window_steps += num_updates
        progress.update(num_updates)
        after_step(step, info, 'offline')
        if shards is not None and is_due(step, FLAGS.dataset_replace_interval) and step < FLAGS.offline_steps:
            dataset = shard_dataset(step)
        if is_due(step, FLAGS.save_interval) or step == FLAGS.offline_steps:
            save(step)

    # Online phase: chunks executed open-loop, every transition into the replay buffer.
    if step < total_steps:
        if step == FLAGS.offline_steps:
            agent = agent.start_online()
        actor = ChunkedActor(agent, action_dim)
        observation, _ = env.reset(seed=episode_seed(FLAGS.seed, 3, episode_index))
        episode_return, save_pending, info = 0.0, False, None
        while step < total_steps:
            step += 1
            online_step = step - FLAGS.offline_steps
            actor.agent = agent
            action = actor.act(observation, jax.random.fold_in(act_key, step))
            next_observation, reward, terminated, truncated, env_info = env.step(action)
            if FLAGS.sparse:
                reward = -float(reward != 0.0)
            transition = dict(observations=observation, actions=action, rewards=reward, masks=1.0 - float(terminated),
                              terminals=float(terminated or truncated), next_observations=next_observation)
            dataset = add_transition(dataset, {key: jnp.asarray(value, jnp.float32) for key, value in transition.items()})
            episode_return += reward
            observation = next_observation
            if online_step >= FLAGS.start_training:
                agent, info = train_steps(agent, dataset, data_key, step * FLAGS.utd_ratio, num_updates=FLAGS.utd_ratio,
                                          batch_size=config.batch_size, horizon_length=horizon_length)
            window_steps += 1
            progress.update(1)
            episode_done = terminated or truncated
            if episode_done:
                row = {'online/episode_return': episode_return, 'online/episode_success': env_info.get('success', 0.0)}
                train_logger.log(row, step)
                wandb_logger.log(row, step)
                episode_index += 1
                episode_return = 0.0
                observation, _ = env.reset(seed=episode_seed(FLAGS.seed, 3, episode_index))
                actor.reset()
            after_step(step, info, 'online')
            # Online checkpoints wait for the episode's end, so a resumed run restarts at a fresh reset.
            save_pending = save_pending or is_due(step, FLAGS.save_interval)
            if save_pending and episode_done:
                save(step)
                save_pending = False
        save(step)

    progress.close()
    checkpointer.close()
    wandb_logger.finish()
    plot_learning_curve(run_dir, FLAGS.offline_steps if online_steps else None)
    print(f'Finished {run_dir}: step {step}, latest success {latest_success}.')


_OWN_FLAGS = (
    'env_name', 'seed', 'dataset_dir', 'dataset_path', 'dataset_shards_dir', 'dataset_replace_interval', 'sparse',
    'offline_steps', 'online_steps', 'horizon_length', 'start_training', 'utd_ratio', 'steps_per_call', 'log_interval',
    'eval_interval', 'eval_episodes', 'save_interval', 'save_dir', 'run_name', 'bc_only', 'pretrained_actor_path',
    'wandb_mode', 'wandb_project', 'wandb_group',
)

if __name__ == '__main__':
    app.run(main)
