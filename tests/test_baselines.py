"""Tests for the IFQL, DSRL and CGQL baselines (agents/ifql.py, agents/dsrl.py, agents/cgql.py).

Tiny networks on a synthetic dataset (no environment): the protocol every agent must follow, then one
property per method that a wrong implementation would break.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from protocols.methods import get_agent_class
from agents.base import COMPUTE_DTYPES, freeze_config
from agents.bc_flow import BCFlowAgent
from agents.bc_flow import get_config as get_bc_config
from agents.cgql import MODES, linex_loss
from core.critic import expectile_loss, pessimistic_ensemble_value
from envs.datasets import Dataset, example_batch, sample_sequences
from core.flow import euler_ode_sample, time_column
from runner.training import train_steps
from tests.conftest import assert_one_screen, has_layer_norm

OBS_DIM, ACTION_DIM, HORIZON, BATCH = 6, 2, 2, 16
CHUNK_DIM = HORIZON * ACTION_DIM
AGENTS = ('ifql', 'dsrl', 'cgql')
NUM_STATES = 64  # Observations per acting test (one shape for all, so compiled samplers are reused).


def _transitions(size=200, episode_length=50, seed=0):
    rng = np.random.default_rng(seed)
    terminals = np.zeros(size, np.float32)
    terminals[episode_length - 1 :: episode_length] = 1.0
    return dict(
        observations=rng.normal(size=(size, OBS_DIM)),
        actions=rng.uniform(-1, 1, size=(size, ACTION_DIM)),
        rewards=-rng.integers(0, 2, size=size).astype(np.float32),
        masks=1.0 - terminals,
        terminals=terminals,
        next_observations=rng.normal(size=(size, OBS_DIM)),
    )


@pytest.fixture(scope='module')
def dataset():
    return Dataset.create(_transitions())


def _config(name, **overrides):
    config = importlib.import_module(f'agents.{name}').get_config()
    config.update(
        actor_hidden_dims=(32, 32), value_hidden_dims=(32, 32), num_qs=2, batch_size=BATCH, flow_steps=3,
        horizon_length=HORIZON,
    )
    if name == 'ifql':
        config.num_samples = 4
    config.update(overrides)
    return config


def _create(name, dataset, seed=0, **overrides):
    config = _config(name, **overrides)
    return get_agent_class(config.agent_name).create(seed, example_batch(dataset, HORIZON), config)


def _batch(dataset, seed=0, batch_size=BATCH):
    return sample_sequences(dataset, jax.random.PRNGKey(seed), batch_size, HORIZON, 0.99)


def _observations():
    return jnp.asarray(_transitions()['observations'][:NUM_STATES], jnp.float32)


def _tree_equal(a, b):
    return all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x, y: bool(jnp.array_equal(x, y)), a, b)))


def _assert_finite(info):
    for key, value in info.items():
        assert np.all(np.isfinite(np.asarray(value))), key


def _fit(loss_of, params, steps, lr, seed=0):
    """Adam on `loss_of(params, key)` for `steps` steps in one scan (the toy problems below)."""
    tx = optax.adam(lr)

    @jax.jit
    def run(params, keys):
        def step(carry, key):
            params, opt_state = carry
            grads = jax.grad(loss_of)(params, key)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), keys)
        return params

    return run(params, jax.random.split(jax.random.PRNGKey(seed), steps))


# ----------------------------------------------------------------------------------------------------------------------
# The protocol, for every agent.
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize('name', AGENTS)
def test_create_is_deterministic(name, dataset):
    agent = _create(name, dataset)
    assert _tree_equal(agent.network.params, _create(name, dataset).network.params)
    assert not _tree_equal(agent.network.params, _create(name, dataset, seed=1).network.params)
    assert agent.config['chunk_dim'] == CHUNK_DIM
    # Target copies start equal to their online modules.
    for module, target in agent.network.target_params.items():
        assert _tree_equal(agent.network.params[f'modules_{module}'], target)
    observations, actions = jnp.zeros((3, OBS_DIM)), jnp.zeros((3, CHUNK_DIM))
    critic_inputs = (observations, actions, actions[..., :1]) if name == 'cgql' else (observations, actions)
    assert agent.network.select('critic')(*critic_inputs).shape == (2, 3)


def test_unknown_compute_dtype_is_refused(dataset):
    with pytest.raises(ValueError) as refused:
        _create('ifql', dataset, compute_dtype='float16')
    assert_one_screen(str(refused.value), 'float16', *COMPUTE_DTYPES)  # the value given and those there are


@pytest.mark.parametrize('name', AGENTS)
def test_update(name, dataset):
    agent, batch = _create(name, dataset), _batch(dataset)
    new_agent, info = agent.update(batch)
    _assert_finite(info)
    prefixes = {key.split('/')[0] for key in info}
    assert {'critic', 'actor'} <= prefixes <= {'critic', 'actor', 'value', 'grad_norm'}
    assert int(new_agent.network.step) == 1
    for module in agent.network.params:
        assert not _tree_equal(agent.network.params[module], new_agent.network.params[module]), module
    # Same seed, same batch: same result.
    assert _tree_equal(new_agent.network.params, _create(name, dataset).update(batch)[0].network.params)


@pytest.mark.parametrize('name', AGENTS)
def test_train_steps(name, dataset):
    agent = _create(name, dataset)
    initial_targets = jax.tree_util.tree_map(np.asarray, agent.network.target_params)
    agent, info = train_steps(
        agent, dataset, jax.random.PRNGKey(0), 0, num_updates=3, batch_size=BATCH, horizon_length=HORIZON
    )
    _assert_finite(info)
    assert int(agent.network.step) == 3
    for module, target in agent.network.target_params.items():
        assert not _tree_equal(initial_targets[module], target), module
    if name == 'dsrl':
        # The noise policy starts far above the target entropy -0.5 * dim, so the temperature falls.
        assert float(agent.network.select('alpha')()) < 1.0


@pytest.mark.parametrize('name', AGENTS)
def test_sample_actions(name, dataset):
    agent = _create(name, dataset)
    observations = _observations()
    key = jax.random.PRNGKey(3)
    actions = agent.sample_actions(observations, key)
    single = agent.sample_actions(observations[0], key)
    assert actions.shape == (NUM_STATES, CHUNK_DIM) and single.shape == (CHUNK_DIM,)
    for values in (actions, single):
        assert np.all(np.abs(np.asarray(values)) <= 1.0)
    assert np.array_equal(actions, agent.sample_actions(observations, key))
    assert not np.array_equal(actions, agent.sample_actions(observations, jax.random.PRNGKey(4)))


@pytest.mark.parametrize('name', AGENTS)
def test_load_pretrained_flow(name, dataset):
    agent = _create(name, dataset)
    bc_config = get_bc_config()
    bc_config.update(actor_hidden_dims=(32, 32), flow_steps=3, horizon_length=HORIZON)
    bc_agent = BCFlowAgent.create(7, example_batch(dataset, HORIZON), bc_config)
    bc_flow = bc_agent.network.params['modules_flow']
    assert not _tree_equal(agent.network.params['modules_flow'], bc_flow)

    loaded = agent.load_pretrained_flow(bc_flow)
    assert _tree_equal(loaded.network.params['modules_flow'], bc_flow)
    if 'flow' in loaded.network.target_params:
        assert _tree_equal(loaded.network.target_params['flow'], bc_flow)
    for module in agent.network.params:
        if module != 'modules_flow':
            assert _tree_equal(agent.network.params[module], loaded.network.params[module]), module


# ----------------------------------------------------------------------------------------------------------------------
# IFQL: expectile value, best-of-N acting.
# ----------------------------------------------------------------------------------------------------------------------


def _numpy_expectile(values, kappa):
    """The kappa-expectile e: kappa * sum (y - e)_+ = (1 - kappa) * sum (e - y)_+, by bisection."""
    low, high = values.min(), values.max()
    for _ in range(100):
        mid = 0.5 * (low + high)
        excess = kappa * np.maximum(values - mid, 0).sum() - (1 - kappa) * np.maximum(mid - values, 0).sum()
        low, high = (mid, high) if excess > 0 else (low, mid)
    return 0.5 * (low + high)


@pytest.mark.parametrize('kappa', [0.5, 0.7, 0.9])
def test_expectile_loss_minimiser_is_the_expectile(kappa):
    targets = np.random.default_rng(0).exponential(size=500).astype(np.float32)
    expected = _numpy_expectile(targets, kappa)
    grid = np.linspace(targets.min(), targets.max(), 4001).astype(np.float32)
    losses = jax.vmap(lambda v: jnp.mean(expectile_loss(targets - v, kappa)))(grid)
    assert abs(grid[int(jnp.argmin(losses))] - expected) < 2 * (grid[1] - grid[0])
    if kappa == 0.5:
        assert np.isclose(expected, targets.mean(), atol=1e-4)


def test_ifql_value_is_the_expectile_of_the_pessimistic_targets(dataset):
    """With one observation and the target critic fixed, V(s) converges to the kappa-expectile of
    mean - rho std of the target ensemble over the data chunks."""
    agent = _create('ifql', dataset, expectile=0.9)
    rng = np.random.default_rng(1)
    observations = jnp.asarray(np.tile(rng.normal(size=(1, OBS_DIM)), (256, 1)), jnp.float32)
    actions = jnp.asarray(rng.uniform(-1, 1, size=(256, CHUNK_DIM)), jnp.float32)
    batch = {'observations': observations, 'actions': actions}
    params = agent.network.params

    def loss_of(value_params, key):
        return agent.value_loss(batch, {**params, 'modules_value': value_params})[0]

    value_params = _fit(loss_of, params['modules_value'], steps=600, lr=3e-3)
    value = float(agent.network.select('value')(observations[:1], params={**params, 'modules_value': value_params})[0])
    targets = np.asarray(pessimistic_ensemble_value(agent.network.select('target_critic')(observations, actions), 0.5))
    expected = _numpy_expectile(targets, 0.9)
    spread = targets.max() - targets.min()
    assert expected > np.mean(targets) + 0.05 * spread
    assert abs(value - expected) < 0.03 * spread, (value, expected, targets.mean())


def test_ifql_acting_picks_high_q_chunks(dataset):
    agent = _create('ifql', dataset)  # 4 samples per state
    one_sample = agent.replace(config=freeze_config(agent.config, num_samples=1))
    observations = _observations()
    key = jax.random.PRNGKey(0)
    min_q = lambda a: agent.network.select('critic')(observations, a).min(axis=0)  # noqa: E731
    assert float(min_q(agent.sample_actions(observations, key)).mean()) > float(
        min_q(one_sample.sample_actions(observations, key)).mean()
    )


# ----------------------------------------------------------------------------------------------------------------------
# DSRL: the noise critic is the action critic composed with the target flow's decoder.
# ----------------------------------------------------------------------------------------------------------------------


def _decode(agent, observations, noises):
    target_flow = lambda x, t: agent.network.select('target_flow')(observations, x, t)  # noqa: E731
    return euler_ode_sample(target_flow, noises, agent.config['flow_steps'])


def _with_distinct_online_flow(agent, dataset):
    """Makes the online flow differ from the target flow, so that using the wrong one shows."""
    other = _create('dsrl', dataset, seed=5).network.params['modules_flow']
    return agent.replace(network=agent.network.replace(params={**agent.network.params, 'modules_flow': other}))


def test_dsrl_noise_critic_distils_the_decoded_action_critic(dataset):
    agent = _with_distinct_online_flow(_create('dsrl', dataset), dataset)
    rng = np.random.default_rng(2)
    batch = dict(_batch(dataset, batch_size=64))
    batch['observations'] = jnp.asarray(np.tile(rng.normal(size=(1, OBS_DIM)), (64, 1)), jnp.float32)
    params = agent.network.params

    def loss_of(noise_critic_params, key):
        return agent.critic_loss(batch, {**params, 'modules_noise_critic': noise_critic_params}, key)[0]

    def r_squared(noise_critic_params):
        observations = jnp.repeat(batch['observations'][:1], 512, axis=0)
        noises = jax.random.normal(jax.random.PRNGKey(9), (512, CHUNK_DIM))
        composed = agent.network.select('critic')(observations, _decode(agent, observations, noises))
        predicted = agent.network.select('noise_critic')(
            observations, noises, params={**params, 'modules_noise_critic': noise_critic_params}
        )
        return float(1.0 - jnp.mean(jnp.square(predicted - composed)) / jnp.mean(jnp.var(composed, axis=-1)))

    fitted = _fit(loss_of, params['modules_noise_critic'], steps=600, lr=3e-3)
    assert r_squared(params['modules_noise_critic']) < 0.5
    assert r_squared(fitted) > 0.95


def test_dsrl_noise_policy_never_has_layer_norm(dataset):
    # As in the authors' implementation: actor_layer_norm applies to the flow, not to the tanh-Gaussian head.
    params = _create('dsrl', dataset, actor_layer_norm=True).network.params
    assert has_layer_norm(params['modules_flow']) and not has_layer_norm(params['modules_noise_actor'])


def test_dsrl_acting_decodes_with_the_target_flow(dataset):
    """noise_scale = 0 pins z to 0, whatever pi_w draws: the chunk is the target flow's ODE from 0."""
    agent = _with_distinct_online_flow(_create('dsrl', dataset, noise_scale=0.0), dataset)
    observations = _observations()
    expected = _decode(agent, observations, jnp.zeros((NUM_STATES, CHUNK_DIM)))
    for seed in (0, 1):
        np.testing.assert_allclose(agent.sample_actions(observations, jax.random.PRNGKey(seed)), expected, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# CGQL: the linex loss, the guided velocity and its effect on samples.
# ----------------------------------------------------------------------------------------------------------------------


def test_linex_loss_on_hand_picked_numbers():
    noisy = jnp.array([0.0, 1.0, -2.0, 0.0, 0.0])
    target = jnp.array([0.5, 1.0, 10.0, -1.0, 2.5])
    # d = 2 (target - noisy) = [1, 0, 24, -2, 5]; d = 5 is not beyond the clip.
    expected = [np.exp(1.0), 1.0 + 2.0, 24.0, np.exp(-2.0), np.exp(5.0)]
    np.testing.assert_allclose(linex_loss(noisy, target, 2.0, 5.0), expected, rtol=1e-6)


def test_cgql_rejects_unknown_mode(dataset):
    with pytest.raises(ValueError) as refused:
        _create('cgql', dataset, mode='exp')
    assert_one_screen(str(refused.value), "'exp'", *MODES)  # the mode given and those there are


@pytest.mark.parametrize('mode', ['simple', 'mse'])
def test_cgql_other_modes_update(mode, dataset):
    _, info = _create('cgql', dataset, mode=mode).update(_batch(dataset))
    _assert_finite(info)
    assert ('critic/noisy_critic_loss' in info) == (mode == 'mse')


def test_cgql_guided_velocity_formula(dataset):
    agent = _create('cgql', dataset, mode='linex', inv_temp=3.0, guidance_coef=0.2)
    observations = jnp.asarray(_transitions()['observations'][:4], jnp.float32)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, CHUNK_DIM))
    velocity = jax.jit(agent.guided_velocity(observations))
    flow = jax.jit(lambda x, t: agent.network.select('target_flow')(observations, x, t))
    np.testing.assert_allclose(velocity(x, time_column(x, 0.0)), flow(x, time_column(x, 0.0)), atol=1e-6)

    @jax.jit
    def expected(x, t):
        grad = jax.grad(lambda a: agent.network.select('critic')(observations, a, t).mean(axis=0).sum())(x)
        return flow(x, t) + (grad * (1.0 - t) * 3.0 + x) * 0.2 / t

    t = time_column(x, 0.4)
    np.testing.assert_allclose(velocity(x, t), expected(x, t), rtol=1e-5, atol=1e-6)


def test_cgql_guidance_moves_samples_uphill(dataset):
    """The Q-gradient term raises Q(s, a, 1) of the samples. The baseline has a negligible inverse
    temperature, which keeps the reference's "+ a" term, so only the gradient term differs."""
    observations, key = _observations(), jax.random.PRNGKey(0)
    guided = _create('cgql', dataset, mode='simple', inv_temp=300.0, guidance_coef=0.01)
    weak = guided.replace(config=freeze_config(guided.config, inv_temp=1e-6))
    ones = jnp.ones((NUM_STATES, 1))
    q = lambda a: guided.network.select('critic')(observations, a, ones).mean(axis=0)  # noqa: E731
    gains = q(guided.sample_actions(observations, key)) - q(weak.sample_actions(observations, key))
    assert float(gains.mean()) > 0 and float((gains > 0).mean()) > 0.8
