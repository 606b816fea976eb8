"""Networks, the tanh-Gaussian, chunked batches and the Polyak target update."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.datasets import Dataset, add_transition, sample_sequences
from core.distributions import tanh_gaussian_sample
from core.flax_utils import polyak_average
from core.networks import MLP, GaussianHead, Value, VectorField
from tests.conftest import has_layer_norm


@pytest.mark.parametrize('num_ensembles, shape', [(None, (7,)), (1, (1, 7)), (3, (3, 7))])
def test_value_keeps_the_ensemble_axis_for_any_ensemble_size(num_ensembles, shape):
    value = Value((8,), num_ensembles=num_ensembles)
    observations, actions = jnp.ones((7, 4)), jnp.ones((7, 2))
    params = value.init(jax.random.PRNGKey(0), observations, actions)
    assert value.apply(params, observations, actions).shape == shape


def test_split_first_layer_is_a_dense_layer_on_the_concatenated_inputs():
    # VectorField feeds [s, x, t] to its first layer as separate terms (so XLA computes the observation
    # term once per rollout); parameters, initial values and outputs are those of Dense(concat[s, x, t]).
    inputs = [jax.random.normal(jax.random.PRNGKey(i), (5, d)) for i, d in enumerate((7, 3, 1))]
    concatenated = jnp.concatenate(inputs, axis=-1)
    mlp = MLP((16, 16, 3))
    split_params = mlp.init(jax.random.PRNGKey(4), inputs)
    concat_params = mlp.init(jax.random.PRNGKey(4), concatenated)
    jax.tree_util.tree_map(np.testing.assert_array_equal, split_params, concat_params)  # same tree, same values
    np.testing.assert_allclose(mlp.apply(split_params, inputs), mlp.apply(concat_params, concatenated), rtol=1e-5, atol=1e-6)

    field = VectorField((16, 16), output_dim=3)
    field_params = field.init(jax.random.PRNGKey(5), *inputs)['params']
    np.testing.assert_allclose(
        field.apply({'params': field_params}, *inputs),
        mlp.apply({'params': field_params['MLP_0']}, concatenated),
        rtol=1e-5, atol=1e-6,
    )


def test_gaussian_head_has_no_layer_norm_and_clips_the_log_std_to_the_authors_range():
    head = GaussianHead((8, 8), output_dim=2)
    observations = jnp.ones((3, 4))
    params = head.init(jax.random.PRNGKey(0), observations)['params']
    assert not has_layer_norm(params)
    # The second output layer gives the log-std: push it far beyond both bounds.
    params['Dense_1'] = {'kernel': jnp.zeros_like(params['Dense_1']['kernel']), 'bias': jnp.array([-100.0, 100.0])}
    _, log_stds = head.apply({'params': params}, observations)
    np.testing.assert_array_equal(log_stds, np.broadcast_to([-20.0, 2.0], (3, 2)))


def test_tanh_gaussian_log_prob_is_the_change_of_variables_density():
    means, log_stds = jnp.array([[0.3, -0.2]]), jnp.array([[-0.5, 0.1]])
    actions, log_probs = tanh_gaussian_sample(jax.random.PRNGKey(0), means, log_stds)
    pre_tanh = jnp.arctanh(actions)
    stds = jnp.exp(log_stds)
    gaussian = -0.5 * ((pre_tanh - means) / stds) ** 2 - jnp.log(stds) - 0.5 * jnp.log(2 * jnp.pi)
    expected = jnp.sum(gaussian - jnp.log(1 - actions**2), axis=-1)
    np.testing.assert_allclose(log_probs, expected, rtol=1e-4)


def test_tanh_gaussian_density_integrates_to_one():
    # 1-D: histogram of samples against exp(log_prob) on a grid via importance weights.
    means, log_stds = jnp.full((200_000, 1), 0.4), jnp.full((200_000, 1), -0.3)
    _, log_probs = tanh_gaussian_sample(jax.random.PRNGKey(1), means, log_stds)
    # E_pi[1 / pi(a)] over (-1, 1) is the interval's length, 2.
    np.testing.assert_allclose(jnp.mean(jnp.exp(-log_probs)), 2.0, rtol=0.05)


def test_polyak_average_moves_the_target_by_tau():
    online, target = {'w': jnp.ones(3)}, {'w': jnp.zeros(3)}
    np.testing.assert_allclose(polyak_average(online, target, 0.005)['w'], 0.005)


def _episodes(lengths, obs_dim=2, action_dim=1):
    size = sum(lengths)
    terminals = np.zeros(size, np.float32)
    terminals[np.cumsum(lengths) - 1] = 1.0
    return dict(
        observations=np.arange(size, dtype=np.float32)[:, None].repeat(obs_dim, 1),
        actions=np.arange(size, dtype=np.float32)[:, None].repeat(action_dim, 1) / 100,
        rewards=np.ones(size, np.float32),
        masks=np.ones(size, np.float32),
        terminals=terminals,
        next_observations=np.arange(1, size + 1, dtype=np.float32)[:, None].repeat(obs_dim, 1),
    )


def test_chunked_batches_cut_rewards_and_invalidate_at_episode_ends():
    dataset = Dataset.create(_episodes([4, 6]))
    batch = jax.device_get(sample_sequences(dataset, jax.random.PRNGKey(0), 512, 3, 0.5))
    for start, reward, valid, next_obs, actions in zip(batch['observations'][:, 0], batch['rewards'], batch['valid'],
                                                       batch['next_observations'][:, 0], batch['actions']):
        start = int(start)
        np.testing.assert_allclose(actions, np.arange(start, start + 3) / 100, atol=1e-6)
        assert next_obs == start + 3
        if start in (2, 3):  # the chunk crosses the end of the first episode (index 3)
            assert valid == 0.0
            assert reward == pytest.approx(1.0 if start == 3 else 1.5)  # cut after the terminal step
        else:
            assert valid == 1.0 and reward == pytest.approx(1.75)
    assert set(int(s) for s in batch['observations'][:, 0]) == set(range(0, 8))  # last start is size - H


def test_added_transitions_are_sampled_and_capacity_is_fixed():
    dataset = Dataset.create(_episodes([5]), capacity=8)
    transition = {key: jnp.full(np.shape(value[0]), 50.0) for key, value in _episodes([1]).items()}
    dataset = add_transition(dataset, transition)
    assert int(dataset.size) == 6 and dataset.capacity == 8
    batch = sample_sequences(dataset, jax.random.PRNGKey(0), 256, 1, 0.9)
    assert float(jnp.max(batch['observations'])) == 50.0
