"""The hot path compiles the way the speed work intends, without changing any number.

The entry points register the straight-line Threefry lowering on the CPU (runner/prng.py): every random number
must be bit-identical to stock JAX, and random draws must no longer compile to loops. The training step
is compiled with XLA's own dot emitter (runner/training.py), which must reach the compiled program.
"""

import json
import os
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from runner.prng import use_unrolled_threefry_on_cpu
from tests.conftest import REPO_ROOT

use_unrolled_threefry_on_cpu()  # as every entry point of the project does

# Random draws of every kind the agents use: seeding, split, fold_in, normal, uniform, randint, bits,
# eagerly, under jit, and inside a scan (where the training step draws them).
DRAWS = '''
import jax, jax.numpy as jnp
def draws():
    key = jax.random.PRNGKey(7)
    a, b = jax.random.split(key)
    c = jax.random.fold_in(b, 123)
    out = {
        'split': jax.random.key_data(jax.random.split(c, 5)).tolist(),
        'normal': jax.random.normal(a, (3, 4)).tolist(),
        'uniform': jax.random.uniform(c, (6,)).tolist(),
        'randint': jax.random.randint(b, (8,), 0, 1000).tolist(),
        'bits': jax.random.bits(c, (5,), jnp.uint32).tolist(),
        'jit_normal': jax.jit(lambda k: jax.random.normal(k, (64, 25)))(a).tolist(),
    }
    def body(carry, step):
        k = jax.random.fold_in(key, step)
        return carry + jax.random.normal(k, (4,)), jax.random.uniform(k, (2,))
    total, per_step = jax.jit(lambda: jax.lax.scan(body, jnp.zeros(4), jnp.arange(5)))()
    out['scan'] = [total.tolist(), per_step.tolist()]
    return out
'''


def _draws_here():
    namespace = {}
    exec(DRAWS, namespace)  # noqa: S102 - the same source as the stock-JAX process below
    return json.loads(json.dumps(namespace['draws']()))


def test_random_numbers_are_those_of_stock_jax():
    """A fresh process with stock JAX draws exactly the same numbers."""
    script = DRAWS + '\nimport json\nprint(json.dumps(draws()))\n'
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, check=True,
                            env={'JAX_PLATFORMS': 'cpu', 'PATH': ''})
    assert json.loads(result.stdout) == _draws_here()


def test_random_draws_compile_without_loops_on_cpu():
    assert use_unrolled_threefry_on_cpu()
    compiled = jax.jit(lambda key: jax.random.normal(key, (64, 25))).lower(jax.random.PRNGKey(0)).compile()
    assert ' while(' not in compiled.as_text()


def test_the_private_jax_lowering_is_there_in_the_pinned_jax():
    """runner/prng.py registers a lowering through two private JAX names. They exist in the JAX that
    requirements.txt pins; a JAX upgrade fails here first, loudly, instead of the entry points falling back to
    the slower rolled loops with only a warning: re-check runner/prng.py (and its benchmark figure) then."""
    pinned = next(line.split('==')[1].strip() for line in open(os.path.join(REPO_ROOT, 'requirements.txt'))
                  if line.startswith('jax=='))
    assert jax.__version__ == pinned, f'jax {jax.__version__} is not the pinned {pinned}: re-check runner/prng.py'
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert use_unrolled_threefry_on_cpu()


def _transitions(size, obs_dim=6, action_dim=2, episode_length=40):
    rng = np.random.default_rng(0)
    terminals = (np.arange(size) % episode_length == episode_length - 1).astype(np.float32)
    observations = rng.normal(size=(size, obs_dim)).astype(np.float32)
    return dict(observations=observations, next_observations=np.roll(observations, -1, axis=0),
                actions=rng.uniform(-1, 1, (size, action_dim)).astype(np.float32),
                rewards=rng.normal(size=size).astype(np.float32), masks=1.0 - terminals, terminals=terminals)


def test_training_step_uses_xla_dot_emitter_on_cpu():
    import agents.fql as fql
    from envs.datasets import Dataset, example_batch
    from runner.training import train_steps

    dataset = Dataset.create(_transitions(200))
    config = fql.get_config()
    config.update(actor_hidden_dims=(16, 16), value_hidden_dims=(16, 16), num_qs=2, batch_size=8, horizon_length=5)
    agent = fql.FQLAgent.create(0, example_batch(dataset, 5), config)
    lowered = train_steps.lower(agent, dataset, jax.random.PRNGKey(0), 1, num_updates=2, batch_size=8,
                                horizon_length=5)
    text = lowered.compile().as_text()
    assert 'ynn_fusion' not in text and 'dot' in text
    # And the options do not change what is computed: same result as compiling without them.
    fresh = lambda: jax.tree_util.tree_map(jnp.copy, agent)  # noqa: E731 - train_steps donates its agent
    with_options, _ = train_steps(fresh(), dataset, jax.random.PRNGKey(0), 1, num_updates=2, batch_size=8,
                                  horizon_length=5)
    plain = jax.jit(train_steps.__wrapped__, static_argnames=('num_updates', 'batch_size', 'horizon_length'))
    without_options, _ = plain(fresh(), dataset, jax.random.PRNGKey(0), 1, num_updates=2, batch_size=8,
                               horizon_length=5)
    for a, b in zip(jax.tree_util.tree_leaves(with_options), jax.tree_util.tree_leaves(without_options)):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-4, atol=1e-6)
