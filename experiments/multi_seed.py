"""Several seeds of one configuration in one process: the agents stacked along a leading seed axis and
`jax.vmap` of the training step over it, so an accelerator runs all seeds in one compiled program.

    agents = create_agents(FQLAgent, seeds=[0, 1, 2], example_batch=batch, config=config)
    data_keys = jnp.stack([data_key_for_seed(s) for s in (0, 1, 2)])
    agents, info = multi_seed_train_steps(agents, dataset, data_keys, 1, num_updates=100,
                                          batch_size=256, horizon_length=5)
    agent_of_seed_1 = unstack(agents, 1)

Seed i gets the networks of `agent_class.create(seeds[i], ...)` and the batch stream of
`data_key_for_seed(seeds[i])` (main.py's, `utils.training.run_keys`), so its result equals the single-seed
`utils.training.train_steps` run of that seed up to floating-point reassociation (tests/test_multi_seed.py).

Scope: offline training on one shared device dataset. The online phase is out of scope in multi-seed
mode (each seed would need its own environment, replay buffer and acting loop): run main.py per seed.

Command line (offline training, then evaluation of every seed; no checkpoints or resume, unlike main.py):
    python experiments/multi_seed.py --agent=agents/fql.py --env_name=cube-double-play-singletask-task1-v0 \
        --dataset_dir=DIR --seeds=0,1,2,3 --offline_steps=1000000
"""

import json
import os
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp

if __package__ in (None, ''):  # `python experiments/multi_seed.py` from the repository root.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.training import TRAIN_COMPILER_OPTIONS, run_keys, train_step  # noqa: E402


def data_key_for_seed(seed: int) -> jax.Array:
    """The offline batch-stream key of main.py for `seed`."""
    return run_keys(seed)[0]


def stack(trees):
    """Pytrees with the same leaves -> one pytree with a leading axis on every leaf.

    `jax.tree_util.tree_map(lambda *x: jnp.stack(x), *trees)` would need equal tree definitions, but two
    agents built from one config differ in their static fields (the module's bound `apply` and the optax
    closures are new objects per agent, though they compute the same functions), so the leaves are
    stacked under the first tree's definition after checking that the leaf paths agree.
    """
    flat = [jax.tree_util.tree_flatten_with_path(tree) for tree in trees]
    paths = [path for path, _ in flat[0][0]]
    for leaves_with_paths, _ in flat[1:]:
        if [path for path, _ in leaves_with_paths] != paths:
            raise ValueError('The pytrees to stack have different leaves (different configs?).')
    stacked = [jnp.stack(leaves) for leaves in zip(*([leaf for _, leaf in leaves] for leaves, _ in flat))]
    return jax.tree_util.tree_unflatten(flat[0][1], stacked)


def unstack(tree, index: int):
    """Element `index` of the leading axis."""
    return jax.tree_util.tree_map(lambda leaf: leaf[index], tree)


def create_agents(agent_class, seeds, example_batch, config, pretrained_flows=None):
    """The agents of `seeds` (one per seed, as `agent_class.create(seed, ...)`), stacked.

    `pretrained_flows`: optional list (one per seed) of flow parameters from `utils.run_state.load_flow_params`.
    """
    agents = [agent_class.create(seed, example_batch, config) for seed in seeds]
    if pretrained_flows is not None:
        agents = [agent.load_pretrained_flow(flow) for agent, flow in zip(agents, pretrained_flows)]
    return stack([jax.tree_util.tree_map(jnp.asarray, agent) for agent in agents])


@partial(
    jax.jit, static_argnames=('num_updates', 'batch_size', 'horizon_length'), donate_argnums=0,
    compiler_options=TRAIN_COMPILER_OPTIONS,
)
def multi_seed_train_steps(agents, dataset, data_keys, first_step, *, num_updates, batch_size, horizon_length):
    """`utils.training.train_steps` for stacked agents: steps first_step .. first_step + num_updates - 1,
    vmapped over the seed axis of `agents` and `data_keys` (shape (num_seeds, 2)); the dataset is shared.

    Returns the stacked agents and the metrics of the last update, each of shape (num_seeds,).
    The agents' buffers are donated.
    """
    update = jax.vmap(
        lambda agent, data_key, step: train_step(
            agent, dataset, data_key, step, batch_size=batch_size, horizon_length=horizon_length),
        in_axes=(0, 0, None),
    )

    def one_update(agents, step):
        return update(agents, data_keys, step)

    agents, infos = jax.lax.scan(one_update, agents, first_step + jnp.arange(num_updates))
    return agents, jax.tree_util.tree_map(lambda values: values[-1], infos)


def _define_flags():
    from absl import flags
    from ml_collections import config_flags

    flags.DEFINE_string('env_name', 'cube-double-play-singletask-task1-v0', 'OGBench single-task environment.')
    flags.DEFINE_string('dataset_dir', None, 'Folder of OGBench .npz files.')
    flags.DEFINE_bool('sparse', False, 'Sparse rewards r -> -1[r != 0].')
    flags.DEFINE_list('seeds', ['0', '1', '2', '3'], 'Seeds, trained together.')
    flags.DEFINE_integer('offline_steps', 1_000_000, 'Offline gradient steps.')
    flags.DEFINE_integer('steps_per_call', 100, 'Updates per jitted call.')
    flags.DEFINE_integer('horizon_length', None, 'Chunk length H (default: per domain).')
    flags.DEFINE_integer('eval_episodes', 50, 'Evaluation episodes per seed at the end (0: none).')
    flags.DEFINE_string('pretrained_actor_path', None, 'BC run directory, with {seed} replaced by each seed.')
    flags.DEFINE_string('out', None, 'JSON file for the per-seed results (default: print only).')
    config_flags.DEFINE_config_file('agent', 'agents/fql.py', 'Agent config file; override with --agent.key=value.')


def main(_):
    from absl import flags
    from absl import logging as absl_logging

    from agents import get_agent_class
    from utils.acting import evaluate
    from utils.datasets import Dataset, example_batch
    from utils.domains import with_horizon_length
    from utils.ogbench_data import make_env_and_datasets
    from utils.prng import use_unrolled_threefry_on_cpu
    from utils.run_state import load_flow_params

    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file operation at INFO
    use_unrolled_threefry_on_cpu()
    FLAGS = flags.FLAGS
    seeds = [int(seed) for seed in FLAGS.seeds]
    config = with_horizon_length(FLAGS.agent, FLAGS.env_name, FLAGS.horizon_length)
    horizon_length = config.horizon_length
    _, eval_env, train_data, _ = make_env_and_datasets(FLAGS.env_name, dataset_dir=FLAGS.dataset_dir,
                                                         sparse=FLAGS.sparse)
    dataset = Dataset.create(train_data)
    flows = None
    if FLAGS.pretrained_actor_path:
        flows = [load_flow_params(FLAGS.pretrained_actor_path.format(seed=seed)) for seed in seeds]
    agents = create_agents(get_agent_class(config.agent_name), seeds, example_batch(dataset, horizon_length),
                           config, flows)
    data_keys = jnp.stack([data_key_for_seed(seed) for seed in seeds])

    step, start, info = 0, time.time(), None
    while step < FLAGS.offline_steps:
        num_updates = min(FLAGS.steps_per_call, FLAGS.offline_steps - step)
        agents, info = multi_seed_train_steps(agents, dataset, data_keys, step + 1, num_updates=num_updates,
                                              batch_size=config.batch_size, horizon_length=horizon_length)
        step += num_updates
    jax.block_until_ready(agents)
    elapsed = time.time() - start
    print(f'{len(seeds)} seeds x {step} updates in {elapsed:.1f}s ({len(seeds) * step / elapsed:.1f} updates/s).')

    results = []
    for index, seed in enumerate(seeds):
        row = {'seed': seed, 'step': step, **{f'training/{key}': float(value[index])
                                             for key, value in jax.device_get(info or {}).items()}}
        if FLAGS.eval_episodes > 0:
            metrics = evaluate(unstack(agents, index), eval_env, FLAGS.eval_episodes, seed, step)
            row.update({f'evaluation/{key}': float(value) for key, value in metrics.items()})
            print(f'seed {seed}: success {metrics["success"]:.3f}')
        results.append(row)
    if FLAGS.out:
        with open(FLAGS.out, 'w') as f:
            json.dump({'env_name': FLAGS.env_name, 'agent': config.to_dict(), 'results': results}, f, indent=2,
                      default=str)


if __name__ == '__main__':
    from absl import app

    _define_flags()
    app.run(main)
