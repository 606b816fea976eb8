"""Records the authors' agents (ColinQiyangLi/qam) at a tiny size, for `tests/test_parity.py` to replay on ours.

    python tests/parity/record.py --authors_repo=PATH_TO_QAM_CHECKOUT --agents=qam,fql [--out_dir=tests/data/parity]

For each agent of `specs.SPECS`: the authors' agent is built at the tiny size of specs.py from their code, and one
`<agent>.npz` keeps its initial parameters, a batch, every Gaussian and uniform draw its code makes (in order),
the metrics and gradients of its loss, its parameters and targets after the spec's updates, and the actions it
samples. The draws are kept because our shared code splits the rng differently from theirs: the test feeds ours
the same noise in the same order (the Nth draw of each kind gets the Nth recorded one, concatenated where we draw
several of theirs at once). Everything runs without jit, so the draws are concrete arrays.

The authors' networks import distrax and tensorflow_probability, which are not our dependencies; the few
distributions their agents use (a diagonal Gaussian, its tanh transform, their mode, sample and log-density) are
stand-ins below that follow those libraries' definitions, the sample drawing its noise through jax.random.normal.
"""

import contextlib
import importlib
import json
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

import specs

FLAGS = flags.FLAGS
flags.DEFINE_string('authors_repo', None, 'A checkout of github.com/ColinQiyangLi/qam.', required=True)
flags.DEFINE_list('agents', list(specs.SPECS), 'Which of specs.SPECS to record.')
flags.DEFINE_string('out_dir', os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                            'data', 'parity'), 'Where the .npz files go.')


# --- Stand-ins for distrax and tensorflow_probability (only what the authors' agents call). ---

class _DiagGaussian:
    def __init__(self, loc, scale_diag, **_):
        self.loc, self.scale_diag = loc, scale_diag

    def mode(self):
        return self.loc

    def stddev(self):
        return self.scale_diag

    def sample(self, seed, sample_shape=()):
        return self.loc + self.scale_diag * jax.random.normal(seed, tuple(sample_shape) + self.loc.shape)

    def log_prob(self, x):
        z = (x - self.loc) / self.scale_diag
        return jnp.sum(-0.5 * z ** 2 - jnp.log(self.scale_diag) - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


class _Tanh:
    def __init__(self, *args, **kwargs):
        pass

    def forward(self, x):
        return jnp.tanh(x)

    def forward_log_det_jacobian(self, x):
        return 2.0 * (jnp.log(2.0) - x - jax.nn.softplus(-2.0 * x))


class _Transformed:
    """A bijector applied to a distribution; like both libraries, log_prob of a sample reuses its pre-image."""

    def __init__(self, distribution, bijector, **_):
        self.distribution, self._distribution, self.bijector = distribution, distribution, bijector
        self._cache = []

    def sample(self, seed, sample_shape=()):
        x = self.distribution.sample(seed=seed, sample_shape=sample_shape)
        y = self.bijector.forward(x)
        self._cache.append((y, x))
        return y

    def log_prob(self, y):
        # A value not sampled here (RLPD's BC term scores the data's actions) goes through the inverse, atanh.
        x = next((x for cached_y, x in self._cache if cached_y is y), None)
        x = jnp.arctanh(y) if x is None else x
        return self.distribution.log_prob(x) - jnp.sum(self.bijector.forward_log_det_jacobian(x), axis=-1)

    def mode(self):
        return self.bijector.forward(self.distribution.mode())


def install_stand_ins():
    distrax = types.ModuleType('distrax')
    distrax.MultivariateNormalDiag, distrax.Transformed, distrax.Tanh = _DiagGaussian, _Transformed, _Tanh
    distrax.Block = lambda bijector, ndims: bijector
    tfd = types.SimpleNamespace(MultivariateNormalDiag=_DiagGaussian, TransformedDistribution=_Transformed,
                                Distribution=object, Normal=_DiagGaussian)
    tfb = types.SimpleNamespace(Tanh=_Tanh)
    tfp = types.ModuleType('tensorflow_probability')
    tfp.substrates = types.SimpleNamespace(jax=types.SimpleNamespace(distributions=tfd, bijectors=tfb))
    sys.modules.update({'distrax': distrax, 'tensorflow_probability': tfp})


# --- The draws. ---

DRAW_KINDS = ('normal', 'uniform', 'randint')


@contextlib.contextmanager
def logged_draws():
    """Logs every jax.random.normal / uniform / randint call's result, in call order, as (kind, array)."""
    log, originals = [], {kind: getattr(jax.random, kind) for kind in DRAW_KINDS}

    def logging(kind):
        def draw(*args, **kwargs):
            value = originals[kind](*args, **kwargs)
            log.append((kind, np.asarray(value)))
            return value
        return draw

    for kind in DRAW_KINDS:
        setattr(jax.random, kind, logging(kind))
    try:
        yield log
    finally:
        for kind, function in originals.items():
            setattr(jax.random, kind, function)


def tiny_batch(seed=specs.SEED):
    """Our chunked batch (actions flattened over the chunk; rewards, masks, valid and next observations of the
    chunk's end) as numpy float32."""
    rng = np.random.default_rng(seed)
    b, chunk_dim = specs.BATCH, specs.HORIZON * specs.ACTION_DIM
    return dict(
        observations=rng.normal(size=(b, specs.OBS_DIM)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(b, chunk_dim)).astype(np.float32),
        rewards=rng.normal(size=b).astype(np.float32),
        masks=(rng.uniform(size=b) < 0.75).astype(np.float32),
        valid=(rng.uniform(size=b) < 0.875).astype(np.float32),
        next_observations=rng.normal(size=(b, specs.OBS_DIM)).astype(np.float32),
    )


def authors_batch(batch):
    """The authors' layout: per-step (B, H, ...) arrays whose last step holds what ours keeps."""
    h = specs.HORIZON
    per_step = lambda x: np.repeat(x[:, None], h, axis=1)  # noqa: E731
    return dict(observations=batch['observations'],
                actions=batch['actions'].reshape(specs.BATCH, h, specs.ACTION_DIM),
                rewards=per_step(batch['rewards']), masks=per_step(batch['masks']), valid=per_step(batch['valid']),
                next_observations=per_step(batch['next_observations']))


def flat(prefix, tree):
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {prefix + '/' + '/'.join(str(k.key) for k in path): np.asarray(leaf) for path, leaf in leaves}


def module_arrays(prefix, modules, params):
    """{'prefix/module/path': array} of the authors' `modules` in their parameter (or gradient) tree."""
    arrays = {}
    for module in modules:
        arrays.update(flat(f'{prefix}/{module}', params[f'modules_{module}']))
    return arrays


def draws_record(prefix, log):
    return {f'{prefix}/{index:03d}_{kind}': value for index, (kind, value) in enumerate(log)}


def build_authors_agent(spec):
    module_name, class_name = spec.authors_agent.rsplit('.', 1)
    module = importlib.import_module(module_name)
    config = module.get_config()
    config.update({**specs.AUTHORS_SHARED, **spec.authors_config})
    agent_class = getattr(module, class_name)
    example_observations = jnp.zeros((specs.OBS_DIM,), jnp.float32)
    example_actions = jnp.zeros((specs.ACTION_DIM,), jnp.float32)
    return agent_class.create(specs.SEED, example_observations, example_actions, config)


def record(name):
    spec = specs.SPECS[name]
    agent = build_authors_agent(spec)
    batch = tiny_batch()
    theirs = {key: jnp.asarray(value) for key, value in authors_batch(batch).items()}
    params = agent.network.params
    out = {f'batch/{key}': value for key, value in batch.items()}
    out.update(module_arrays('init', spec.modules, params))
    with jax.disable_jit():
        loss_rng = jax.random.split(agent.rng)[1]  # what the first update's loss gets
        with logged_draws() as log:
            grads, info = jax.grad(lambda p: agent.total_loss(theirs, p, rng=loss_rng), has_aux=True)(params)
        out.update(draws_record('draws/loss', log))
        out.update({f'metric/{key}': np.asarray(value) for key, value in info.items()})
        out.update(module_arrays('grad', spec.modules, grads))
        for step in range(spec.updates):
            every = spec.full_update_every
            kwargs = {} if every is None else dict(full_update=(step + 1) % every == 0)
            with logged_draws() as log:
                agent, _ = agent.update(theirs, **kwargs)
            out.update(draws_record(f'draws/update{step}', log))
        with logged_draws() as log:
            actions = agent.sample_actions(theirs['observations'], rng=jax.random.PRNGKey(1))
        out.update(draws_record('draws/sample', log))
    params = agent.network.params
    out.update(module_arrays('final', spec.modules, params))
    out.update(module_arrays('target', spec.targets, params))
    out['actions'] = np.asarray(actions)
    out['config'] = np.asarray(json.dumps({key: value for key, value in agent.config.items() if _jsonable(value)}))
    return out


def _jsonable(value):
    try:
        json.dumps(value)
        return True
    except TypeError:
        return False


def main(_):
    unknown = sorted(set(FLAGS.agents) - set(specs.SPECS))
    if unknown:
        raise app.UsageError(f'--agents: unknown {unknown}; known: {", ".join(specs.SPECS)}.')
    if not os.path.isfile(os.path.join(FLAGS.authors_repo, 'agents', 'qam.py')):
        raise app.UsageError(f'--authors_repo={FLAGS.authors_repo} is not a checkout of ColinQiyangLi/qam '
                             '(no agents/qam.py there).')
    install_stand_ins()
    sys.path.insert(0, os.path.abspath(FLAGS.authors_repo))
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    for name in FLAGS.agents:
        path = os.path.join(FLAGS.out_dir, f'{name}.npz')
        np.savez_compressed(path, **record(name))
        print(f'{name}: {path} ({os.path.getsize(path) // 1024} KiB)')


if __name__ == '__main__':
    app.run(main)
