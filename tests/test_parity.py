"""Parity with the authors' implementations (ColinQiyangLi/qam): our agents replay their recorded tensors.

Each `tests/data/parity/<agent>.npz` was recorded from the authors' code by `tests/parity/record.py` at the tiny
size of `tests/parity/specs.py`. Here our agent of the same config starts from the authors' initial parameters
(their module tree mapped onto ours), takes the same batch and the same noise (their draws injected into ours in
order: our shared code splits the rng differently from theirs), and must give their metrics and gradients, their
parameters and targets after the recorded updates, and their sampled actions, to float32 round-off. The test
reads only the recordings; it needs neither the authors' repository nor their dependencies.
"""

import contextlib
import importlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from protocols.methods import get_agent_class
from tests.conftest import REPO_ROOT
from tests.parity import specs

DATA_DIR = os.path.join(REPO_ROOT, 'tests', 'data', 'parity')
RECORDED = sorted(name for name in specs.SPECS if os.path.exists(os.path.join(DATA_DIR, f'{name}.npz')))
# float32 round-off of a few hundred operations in a different order (our ConcatDense, fused reductions, ...).
RTOL, ATOL = 1e-5, 1e-6


def recorded_tree(recording, prefix):
    """The nested dict of the arrays recorded under `prefix/...`."""
    tree = {}
    for key in recording.files:
        if key.startswith(prefix + '/'):
            node = tree
            *path, leaf = key[len(prefix) + 1:].split('/')
            for name in path:
                node = node.setdefault(name, {})
            node[leaf] = recording[key]
    return tree


def onto(theirs, ours, where):
    """The authors' module parameters `theirs` renamed onto the tree of ours (specs.SUBMODULE_NAMES), checked."""
    renamed = {}
    for name, subtree in theirs.items():
        candidates = [c for c in specs.SUBMODULE_NAMES.get(name, (name,)) if c in ours and c not in renamed]
        assert candidates, f'{where}: no module of ours for the authors\' {name!r} (ours: {sorted(ours)})'
        renamed[candidates[0]] = subtree
    shapes = lambda tree: jax.tree_util.tree_map(np.shape, tree)  # noqa: E731
    assert shapes(renamed) == shapes(ours), f'{where}: the authors\' parameters do not fit ours'
    return jax.tree_util.tree_map(jnp.asarray, renamed)


def mapped(recording, prefix, spec, ours):
    """{our module: parameters} of the authors' modules recorded under `prefix`."""
    names = spec.modules if prefix != 'target' else spec.targets
    return {names[module]: onto(recorded_tree(recording, f'{prefix}/{module}'), ours[names[module]], module)
            for module in names}


@contextlib.contextmanager
def injected_draws(recording, phase):
    """jax.random.normal / uniform / randint return the authors' draws of `phase` in order, whatever the key: a request
    of n values takes the next recorded draws of its kind until they hold n (ours draws the K noise increments
    of an SDE rollout at once, theirs one per step). Every recorded draw must be used."""
    queues = {'normal': [], 'uniform': [], 'randint': []}
    for key in sorted(k for k in recording.files if k.startswith(f'draws/{phase}/')):
        queues[key.rsplit('_', 1)[1]].append(recording[key])
    originals = {kind: getattr(jax.random, kind) for kind in queues}

    def replay(kind):
        def draw(key, shape=(), *args, **kwargs):
            size, taken = int(np.prod(shape)), []
            while sum(x.size for x in taken) < size:
                assert queues[kind], f'{phase}: ours draws more {kind} values than the authors\' code'
                taken.append(queues[kind].pop(0).ravel())
            values = np.concatenate(taken)
            assert values.size == size, f'{phase}: a {kind} draw of shape {shape} splits a recorded draw'
            return jnp.asarray(values.reshape(shape))  # the recorded dtype: float32, int32 for randint
        return draw

    for kind in queues:
        setattr(jax.random, kind, replay(kind))
    try:
        with jax.disable_jit():  # the draws happen when called, not once at a (cached) trace
            yield
    finally:
        for kind, function in originals.items():
            setattr(jax.random, kind, function)
    assert not any(queues.values()), f'{phase}: authors\' draws left unused: {[(k, len(q)) for k, q in queues.items()]}'


def our_agent(spec, recording):
    """Our agent at the recording's config, started from the authors' initial parameters."""
    config = importlib.import_module(spec.config).get_config()
    config.update({**specs.SHARED, **spec.our_config})
    batch = {key: jnp.asarray(value) for key, value in recorded_tree(recording, 'batch').items()}
    agent = get_agent_class(config.agent_name).create(specs.SEED, {k: v[:1] for k, v in batch.items()}, config)
    network = agent.network
    ours = {name[len('modules_'):]: tree for name, tree in network.params.items()}
    params = dict(network.params)
    for module, tree in mapped(recording, 'init', spec, ours).items():
        params[f'modules_{module}'] = tree
    targets = {name: jax.tree_util.tree_map(jnp.copy, params[f'modules_{name}']) for name in network.target_params}
    network = network.replace(params=params, target_params=targets, opt_state=network.tx.init(params))
    return agent.replace(network=network), batch, ours


def assert_close(actual, expected, what):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=RTOL, atol=ATOL, err_msg=what)


def assert_trees_close(actual, expected, what):
    for path, value in jax.tree_util.tree_flatten_with_path(expected)[0]:
        name = '/'.join(str(k.key) for k in path)
        node = actual
        for k in path:
            node = node[k.key]
        assert_close(node, value, f'{what}/{name}')


def test_every_recording_has_a_spec_and_the_harness_covers_agents():
    recordings = {name[:-4] for name in os.listdir(DATA_DIR) if name.endswith('.npz')}
    assert recordings <= set(specs.SPECS), f'recordings without a spec: {sorted(recordings - set(specs.SPECS))}'
    assert {'qam', 'fql'} <= set(RECORDED)


def assert_gradients_close(grads, expected_by_module):
    for module, expected in expected_by_module.items():
        scale = max(float(np.max(np.abs(x))) for x in jax.tree_util.tree_leaves(expected))
        for path, value in jax.tree_util.tree_flatten_with_path(expected)[0]:
            node = grads[module]
            for k in path:
                node = node[k.key]
            # A gradient sums many terms: its round-off is relative to the module's largest gradient.
            np.testing.assert_allclose(np.asarray(node), np.asarray(value), rtol=1e-4, atol=1e-5 * scale,
                                       err_msg=f'gradient of {module}')


@pytest.mark.parametrize('name', RECORDED)
def test_replays_the_authors_agent(name):
    """The loss's metrics and gradients, the parameters and targets after the recorded updates, and the actions
    sampled then, of our agent from the authors' parameters, batch and noise."""
    spec = specs.SPECS[name]
    recording = np.load(os.path.join(DATA_DIR, f'{name}.npz'))
    agent, batch, ours = our_agent(spec, recording)

    with injected_draws(recording, 'loss'):
        rng = jax.random.split(agent.rng)[1]
        grads, info = jax.grad(lambda p: agent.total_loss(batch, p, rng), has_aux=True)(agent.network.params)
    for our_key, their_key in spec.metrics.items():
        assert_close(info[our_key], recording[f'metric/{their_key}'], our_key)
    grads = {n[len('modules_'):]: tree for n, tree in grads.items()}
    assert_gradients_close(grads, mapped(recording, 'grad', spec, ours))

    for step in range(spec.updates):
        with injected_draws(recording, f'update{step}'):
            agent, _ = agent.update(batch)
    params = {n[len('modules_'):]: tree for n, tree in agent.network.params.items()}
    for module, expected in mapped(recording, 'final', spec, ours).items():
        assert_trees_close(params[module], expected, f'updated {module}')
    for module, expected in mapped(recording, 'target', spec, ours).items():
        assert_trees_close(agent.network.target_params[module], expected, f'target {module}')

    with injected_draws(recording, 'sample'):
        actions = agent.sample_actions(batch['observations'], jax.random.PRNGKey(1))
    assert_close(actions, recording['actions'], 'sampled actions')
