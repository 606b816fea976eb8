"""`--agent.compute_dtype=bfloat16`: the networks multiply in bfloat16, everything else stays float32.

bfloat16 keeps 8 significant bits: each product is rounded by up to 2^-8 relative. The networks return float32
(core/networks.py), so losses, adjoints, path KL, the optimiser and TRQAM's dual step are float32 arithmetic on
values that carry that rounding. The tests check (a) which dtypes the programs use, then (b, c) that closed-form
answers of tests/test_flow.py and tests/test_trqam.py still hold with bfloat16 networks, at shorter runs.
"""

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.extend import core as jax_core

from protocols.methods import get_agent_class
from agents.trqam import get_config as get_trqam_config
from experiments.sde_convergence import gaussian_base_velocity
from tests.test_flow import K, LINEAR, fixed_point_tables, linear_reward, train_adjoint_matching
from tests.test_trqam import TOY_MEAN, _Residual, _train_toy_trust_region, qam_and_trqam_adjoint_matching
from core.flow import memoryless_sde_rollout, path_kl, time_column
from core.networks import MLP, GaussianHead, NoisePredictor, Value, VectorField


def dot_dtypes(function, *args):
    """(lhs, rhs) dtypes of every dot_general in the program of `function(*args)`, inner programs (jit, scan,
    vmap, gradients) included."""
    dtypes = []

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == 'dot_general':
                dtypes.append(tuple(var.aval.dtype for var in eqn.invars))
            for inner in jax_core.jaxprs_in_params(eqn.params):
                visit(inner)

    visit(jax.make_jaxpr(function)(*args).jaxpr)
    return dtypes


def reduction_dtypes(function, *args):
    """Input dtypes of the sums in the program of `function(*args)` (a LayerNorm's mean and variance)."""
    dtypes = []

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == 'reduce_sum':
                dtypes.append(eqn.invars[0].aval.dtype)
            for inner in jax_core.jaxprs_in_params(eqn.params):
                visit(inner)

    visit(jax.make_jaxpr(function)(*args).jaxpr)
    return dtypes


def all_bfloat16(dtype_pairs):
    return len(dtype_pairs) > 0 and all(dtype == jnp.bfloat16 for pair in dtype_pairs for dtype in pair)


def all_float32(dtypes):
    return all(dtype == jnp.float32 for dtype in dtypes)


# ----------------------------------------------------------------------------------------------------------------------
# (a) bfloat16 products on float32 parameters; float32 outputs, state and losses.
# ----------------------------------------------------------------------------------------------------------------------

OBS_DIM, CHUNK_DIM, BATCH = 3, 4, 5
OBSERVATIONS, ACTIONS, TIMES = jnp.ones((BATCH, OBS_DIM)), jnp.ones((BATCH, CHUNK_DIM)), jnp.ones((BATCH, 1))

NETWORKS = {
    'critic ensemble with layer norm': (Value((8, 8), layer_norm=True, num_ensembles=2, dtype=jnp.bfloat16),
                                        (OBSERVATIONS, ACTIONS)),
    'flow (split first layer)': (VectorField((8, 8), CHUNK_DIM, layer_norm=True, dtype=jnp.bfloat16),
                                 (OBSERVATIONS, ACTIONS, TIMES)),
    'tanh-Gaussian head': (GaussianHead((8, 8), CHUNK_DIM, dtype=jnp.bfloat16), (OBSERVATIONS, ACTIONS)),
    'DDPM noise network': (NoisePredictor((8, 8), CHUNK_DIM, time_dim=8, layer_norm=True, dtype=jnp.bfloat16),
                           (OBSERVATIONS, ACTIONS, TIMES.astype(jnp.int32))),
}


@pytest.mark.parametrize('name', NETWORKS)
def test_network_multiplies_in_bfloat16_with_float32_parameters_statistics_and_outputs(name):
    network, inputs = NETWORKS[name]
    params = jax.eval_shape(network.init, jax.random.PRNGKey(0), *inputs)  # traced only, as everything here
    assert all_float32(leaf.dtype for leaf in jax.tree_util.tree_leaves(params))
    outputs = jax.eval_shape(network.apply, params, *inputs)
    assert all_float32(leaf.dtype for leaf in jax.tree_util.tree_leaves(outputs))
    assert all_bfloat16(dot_dtypes(network.apply, params, *inputs))
    assert all_float32(reduction_dtypes(network.apply, params, *inputs))  # LayerNorm statistics
    # The gradient's products too (float32 cotangents are cast before them).
    loss = lambda p: sum(jnp.sum(out) for out in jax.tree_util.tree_leaves(network.apply(p, *inputs)))  # noqa: E731
    assert all_bfloat16(dot_dtypes(jax.grad(loss), params))


AGENTS = {
    'fql': ('fql', {}),
    'qam-e': ('qam', {'edit_scale': 0.1}),
    'qam-f': ('qam', {'fql_alpha': 10.0}),
    'trqam': ('trqam', {}),
    'ifql': ('ifql', {'num_samples': 4}),
    'dsrl': ('dsrl', {}),
    'cgql': ('cgql', {'mode': 'linex'}),
    'bc_flow': ('bc_flow', {}),
    'bam': ('bam', {}),
    'qsm': ('qsm', {'diffusion_steps': 2}),
    'dac': ('qsm', {'diffusion_steps': 2, 'loss': 'dac', 'clip_denoised': True, 'clip_steps': False}),
    'rlpd': ('rlpd', {}),
}


def _abstract_agent(name, overrides):
    """The agent's shapes and dtypes without computing it (traced only: these tests compile nothing)."""
    config = importlib.import_module(f'agents.{name}').get_config()
    config.update(actor_hidden_dims=(8, 8), flow_steps=2, horizon_length=2, compute_dtype='bfloat16', **overrides)
    if 'value_hidden_dims' in config:
        config.update(value_hidden_dims=(8, 8), num_qs=2)
    batch = {'observations': OBSERVATIONS, 'actions': ACTIONS, 'rewards': jnp.zeros(BATCH), 'masks': jnp.ones(BATCH),
             'valid': jnp.ones(BATCH), 'next_observations': OBSERVATIONS}
    agent_class = get_agent_class(config['agent_name'])
    return jax.eval_shape(functools.partial(agent_class.create, 0, batch, config)), batch


@pytest.mark.parametrize('method', AGENTS)
def test_agent_multiplies_in_bfloat16_and_keeps_its_state_and_losses_float32(method):
    agent, batch = _abstract_agent(*AGENTS[method])
    update = lambda agent, batch: agent.update(batch)  # noqa: E731
    sample = lambda agent, observations: agent.sample_actions(observations, jax.random.PRNGKey(0))  # noqa: E731
    # Every matrix product of the update (forward, adjoints, gradients) and of acting.
    assert all_bfloat16(dot_dtypes(update, agent, batch))
    assert all_bfloat16(dot_dtypes(sample, agent, OBSERVATIONS))
    new_agent, info = jax.eval_shape(update, agent, batch)
    floating = [leaf for leaf in jax.tree_util.tree_leaves(new_agent) if jnp.issubdtype(leaf.dtype, jnp.floating)]
    # Parameters, targets, optimiser moments and TRQAM's dual variables (weakly typed, they would retrace).
    assert all_float32(leaf.dtype for leaf in floating) and not any(leaf.weak_type for leaf in floating)
    assert all_float32(value.dtype for value in info.values())  # losses and metrics
    assert jax.eval_shape(sample, agent, OBSERVATIONS).dtype == jnp.float32
    if method == 'trqam':
        assert new_agent.lam.dtype == new_agent.kl_ema.dtype == jnp.float32


# ----------------------------------------------------------------------------------------------------------------------
# (b) Closed-form checks with bfloat16 networks.
# ----------------------------------------------------------------------------------------------------------------------


def test_split_first_layer_in_bfloat16_is_a_dense_layer_on_the_concatenated_inputs():
    # tests/test_networks.py's check in bfloat16. Both round each layer's output to bfloat16, the split layer after
    # summing its bfloat16 terms in float32: 2e-2 of the output's scale allows a few 2^-8 roundings per layer.
    inputs = [jax.random.normal(jax.random.PRNGKey(i), (64, d)) for i, d in enumerate((7, 3, 1))]
    mlp = MLP((16, 16, 3), dtype=jnp.bfloat16)
    params = jax.jit(mlp.init)(jax.random.PRNGKey(4), inputs)
    apply = jax.jit(lambda inputs: mlp.apply(params, inputs).astype(jnp.float32))
    split, concatenated = apply(inputs), apply(jnp.concatenate(inputs, axis=-1))
    assert float(jnp.max(jnp.abs(split - concatenated))) <= 2e-2 * float(jnp.max(jnp.abs(concatenated)))


def test_trqam_loss_is_lambda_eff_times_qam_loss_in_bfloat16():
    """tests/test_trqam.py's identity with bfloat16 networks: same forward values, TRQAM's scalings in float32."""
    lam, lam_scale = 0.37, 3.0
    lam_eff = lam * lam_scale
    ((qam_loss, qam_info), qam_grads), ((trqam_loss, trqam_info), trqam_grads) = qam_and_trqam_adjoint_matching(
        lam, lam_scale, compute_dtype='bfloat16'
    )
    # Same rollout, so the path KL is equal to float32 round-off.
    np.testing.assert_allclose(trqam_info['path_kl'], qam_info['path_kl'], rtol=1e-6)
    # The lean adjoint (and then the gradient) pushes adjoints 1 / lambda_eff apart in scale through bfloat16
    # products, so they round apart. The loss averages many such terms: half a rounding (2^-8); the gradient,
    # norm-wise, a few roundings.
    assert float(qam_loss) > 0
    np.testing.assert_allclose(trqam_loss, lam_eff * qam_loss, rtol=2e-3)
    fine_qam, fine_trqam = qam_grads['modules_fine_flow'], trqam_grads['modules_fine_flow']
    error = jax.tree_util.tree_map(lambda a, b: a - lam_eff * b, fine_trqam, fine_qam)
    assert optax.tree.norm(error) < 1e-2 * lam_eff * optax.tree.norm(fine_qam)


def test_adjoint_matching_learns_the_linear_tilt_in_bfloat16():
    """tests/test_flow.py's linear tilt (Q(a) = w.a on N(mu, s^2 I)) with a bfloat16 residual field, half its
    steps and batch, against the exact K-step fixed point."""
    mu, s, scale, w = LINEAR['mu'], LINEAR['s'], LINEAR['scale'], LINEAR['w']
    base = gaussian_base_velocity(mu, s)
    fine, losses = train_adjoint_matching(base, linear_reward(w), scale, 2, steps=300, batch=128, dtype=jnp.bfloat16)
    x = jnp.zeros((3, 2))
    assert all_bfloat16(dot_dtypes(fine, x, time_column(x, 0.5)))
    num_samples = 20_000
    noise_key, rollout_key = jax.random.split(jax.random.PRNGKey(100))
    rollout = jax.jit(lambda z, key: memoryless_sde_rollout(fine, base, z, key, K))(
        jax.random.normal(noise_key, (num_samples, 2)), rollout_key
    )
    terminal = np.asarray(rollout.terminal, np.float64)
    exact = fixed_point_tables(mu, s, scale, w=w)
    shift = exact['mean'] - exact['base_mean']
    assert losses[-20:].mean() < 0.01 * losses[0]
    # Mean and variance: 5% of the shift and of the variance, 5 Monte-Carlo standard errors at 20000 samples; the
    # bfloat16 rounding of the control (2^-8 relative) moves them by far less.
    np.testing.assert_allclose(terminal.mean(0), exact['mean'], atol=0.05 * np.abs(shift).min())
    np.testing.assert_allclose(terminal.var(0), exact['var'], rtol=0.05)
    # The path KL of this state-independent control has no sampling error: 1% bounds the control's bfloat16
    # rounding (2^-7 in a KL quadratic in it) and what training leaves.
    np.testing.assert_allclose(np.mean(path_kl(rollout)), exact['path_kl'].sum(), rtol=0.01)


# ----------------------------------------------------------------------------------------------------------------------
# (c) TRQAM holds its KL budget with a bfloat16 network.
# ----------------------------------------------------------------------------------------------------------------------


def test_dual_step_holds_the_path_kl_at_its_budget_in_bfloat16():
    """tests/test_trqam.py's toy (Gaussian base, linear Q) with a bfloat16 residual, one budget, half the steps and
    batch, and a faster dual step so that lambda settles within them."""
    dimension = TOY_MEAN.shape[0]
    x = jnp.zeros((3, dimension))
    residual = _Residual(jnp.bfloat16)
    residual_params = jax.eval_shape(residual.init, jax.random.PRNGKey(0), x, x[:, :1])
    assert all_bfloat16(dot_dtypes(residual.apply, residual_params, x, x[:, :1]))

    config = dict(get_trqam_config(), dual_lr=0.1)
    budget = 0.4
    lam_eff, kls, final_kl = _train_toy_trust_region(budget, steps=400, config=config, batch_size=128,
                                                     dtype=jnp.bfloat16)
    # The float32 test's 15%, set by the dual step's oscillation and the sampling noise of D_hat; the bfloat16
    # rounding of the control (2^-8 relative, 2^-7 in a KL quadratic in it) is far below it.
    assert np.mean(kls[-100:]) == pytest.approx(budget, rel=0.15), np.mean(kls[-100:])
    assert final_kl == pytest.approx(budget, rel=0.15), final_kl
    assert config['lambda_min'] < lam_eff / config['lam_scale'] < config['lambda_max']
