"""The jitted training steps shared by every agent and phase: sample chunked batches on the device and
update, `num_updates` times in one `lax.scan`, so the accelerator never waits for Python."""

from functools import partial

import jax

from envs.datasets import ReplayBuffer, add_transition, sample_sequences
from runner.seed_axis import map_seeds

# XLA:CPU hands dots to YNNPACK fusions by default. At small sizes, where the cost per op dominates, XLA's
# own dot emitter is faster (measure with experiments/benchmark.py); at the paper's size the two are
# equal. A CPU-only debug option: other backends ignore it.
TRAIN_COMPILER_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type': ''}


def run_keys(seed: int):
    """(data_key, act_key) of a run: the batch stream of the updates and the online action noise."""
    return jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), 1))


def train_step(agent, data, data_key, step, *, batch_size, horizon_length, balanced=False):
    """One update at `step`: the batch drawn with `fold_in(data_key, step)`, then `agent.update`."""
    batch = sample_sequences(data, jax.random.fold_in(data_key, step), batch_size, horizon_length,
                             agent.config['discount'], balanced)
    return agent.update(batch)


@partial(
    jax.jit, static_argnames=('num_updates', 'batch_size', 'horizon_length'), donate_argnums=0,
    compiler_options=TRAIN_COMPILER_OPTIONS,
)
def train_steps(agent, data, data_key, first_step, *, num_updates, batch_size, horizon_length):
    """Runs updates for steps first_step .. first_step + num_updates - 1 of one agent on `data` (a
    `Dataset` or `ReplayBuffer`).

    The batch of step n is drawn with `fold_in(data_key, n)`, so the stream of batches depends only on
    the step, not on how the steps are grouped into calls (exact resume). Returns the new agent and the
    metrics of the last update. The agent's buffers are donated: do not reuse the `agent` passed in.
    """

    def one_update(agent, step):
        return train_step(agent, data, data_key, step, batch_size=batch_size, horizon_length=horizon_length)

    agent, infos = jax.lax.scan(one_update, agent, first_step + jax.numpy.arange(num_updates))
    return agent, jax.tree_util.tree_map(lambda values: values[-1], infos)


@partial(
    jax.jit, static_argnames=('num_updates', 'batch_size', 'horizon_length', 'balanced'), donate_argnums=0,
    compiler_options=TRAIN_COMPILER_OPTIONS,
)
def train_seeds(agents, offline, online, data_keys, first_step, *, num_updates, batch_size, horizon_length,
                balanced=False):
    """`train_steps` for a group of seeds: `agents`, `online` (None offline) and `data_keys` stacked on a
    leading seed axis, the offline data shared. Seed i draws its batches from its own replay buffer (the
    offline data, then its online transitions) with its own key. Metrics have the seed axis."""

    def one_seed(agent, online, data_key, step):
        data = offline if online is None else ReplayBuffer(offline, online)
        return train_step(agent, data, data_key, step, batch_size=batch_size, horizon_length=horizon_length,
                          balanced=balanced)

    update = map_seeds(one_seed, in_axes=(0, None if online is None else 0, 0, None))

    def one_update(agents, step):
        return update(agents, online, data_keys, step)

    agents, infos = jax.lax.scan(one_update, agents, first_step + jax.numpy.arange(num_updates))
    return agents, jax.tree_util.tree_map(lambda values: values[-1], infos)


@partial(jax.jit, donate_argnums=0)
def add_transitions(online, transitions):
    """Appends one transition per seed to the seeds' online buffers (stacked; donated)."""
    return map_seeds(add_transition.__wrapped__, in_axes=(0, 0))(online, transitions)



class DeferredUpdate:
    """The online phase's update of a step, run when its result is first wanted: with `defer`, the caller starts
    the environments' next step in their worker processes first, so that the two run at the same time; without,
    at once (strictly serial). The same calls run in the same order on the same inputs either way.

    (XLA:CPU runs a program whose inputs are ready on the calling thread before the call returns, and a thread
    of this process would share the GIL with the environments' Python; the worker processes share nothing.)
    """

    def __init__(self, defer: bool):
        self.defer = defer
        self._call = self._result = None

    def add(self, function, *args):
        """`function(*args)`, now or (deferred) when `result` is next called; the previous result must be taken."""
        assert self._call is None and self._result is None, 'the previous update\'s result was not taken'
        if self.defer:
            self._call = (function, args)
        else:
            self._result = function(*args)

    def result(self, *otherwise):
        """The update's result (running it now if it was deferred), or `otherwise` when there is none."""
        if self._call is not None:
            (function, args), self._call = self._call, None
            return function(*args)
        result, self._result = self._result, None
        return otherwise if result is None else result
