"""The jitted training step shared by every agent and phase: sample chunked batches on the device and
update, `num_updates` times in one `lax.scan`, so the accelerator never waits for Python."""

from functools import partial

import jax

from utils.datasets import sample_sequences

# XLA:CPU hands dots to YNNPACK fusions by default. At small sizes, where the cost per op dominates, XLA's
# own dot emitter is faster (measure with experiments/benchmark.py); at the paper's size the two are
# equal. A CPU-only debug option: other backends ignore it.
TRAIN_COMPILER_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type': ''}


def run_keys(seed: int):
    """(data_key, act_key) of a run: the batch stream of the updates and the online action noise."""
    return jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), 1))


def train_step(agent, dataset, data_key, step, *, batch_size, horizon_length):
    """One update at `step`: the batch drawn with `fold_in(data_key, step)`, then `agent.update`.

    The inner step of `train_steps`, un-jitted so it can be scanned or vmapped (experiments/multi_seed.py).
    """
    batch = sample_sequences(
        dataset, jax.random.fold_in(data_key, step), batch_size, horizon_length, agent.config['discount']
    )
    return agent.update(batch)


@partial(
    jax.jit, static_argnames=('num_updates', 'batch_size', 'horizon_length'), donate_argnums=0,
    compiler_options=TRAIN_COMPILER_OPTIONS,
)
def train_steps(agent, dataset, data_key, first_step, *, num_updates, batch_size, horizon_length):
    """Runs updates for steps first_step .. first_step + num_updates - 1.

    The batch of step n is drawn with `fold_in(data_key, n)`, so the stream of batches depends only on
    the step, not on how the steps are grouped into calls (exact resume). Returns the new agent and the
    metrics of the last update. The agent's buffers are donated: do not reuse the `agent` passed in.
    """

    def one_update(agent, step):
        return train_step(agent, dataset, data_key, step, batch_size=batch_size, horizon_length=horizon_length)

    agent, infos = jax.lax.scan(one_update, agent, first_step + jax.numpy.arange(num_updates))
    return agent, jax.tree_util.tree_map(lambda values: values[-1], infos)
