"""Tests of core/flow.py against answers known in closed form (docs/algorithms.md sections 1, 3, 4).

The toy everywhere is the linear interpolant to a Gaussian N(mu, s^2 I), whose exact base velocity is
affine in x. Then every K-step scheme of flow.py (Euler ODE, memoryless SDE, lean adjoint, and the
adjoint-matching fixed point) is an affine-Gaussian recursion whose exact finite-K answer is computed in
float64 by experiments/sde_convergence.py, independently of flow.py. The tests compare flow.py with
(i) those exact finite-K answers, tightly, and (ii) the continuous-time answers (the target Gaussian,
the exponentially tilted Gaussian, the Girsanov KL), with tolerances that state the K = 10 bias.

Run `python -m pytest tests/test_flow.py -q -s` to see the tables.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.sde_convergence import (
    convergence_rows,
    discrete_fixed_point,
    gaussian_base_velocity,
    lean_adjoint_gains,
    markdown_table,
    schedule,
    tilted_gaussian,
)
from core.flow import (
    SDERollout,
    adjoint_matching_loss,
    euler_ode_sample,
    flow_matching_loss,
    lean_adjoint,
    memoryless_noise_scale,
    memoryless_sde_rollout,
    path_kl,
    terminal_adjoint,
)
from core.networks import MLP, VectorField

K = 10


def step_index(t, flow_steps=K):
    """k from the time column t_k = k / K that flow.py passes to the velocity."""
    return jnp.round(t[..., 0] * flow_steps).astype(jnp.int32)


def affine_control(base, alpha, beta):
    """fine(x, t_k) = base(x, t_k) + alpha_k + beta_k * x, from (K, d) tables."""
    alpha, beta = jnp.asarray(alpha, jnp.float32), jnp.asarray(beta, jnp.float32)

    def fine(x, t):
        k = step_index(t)
        return base(x, t) + alpha[k] + beta[k] * x

    return fine


def fixed_point_tables(mu, s, scale, w=None, q=None, m=None, flow_steps=K):
    """discrete_fixed_point per dim, stacked: dict of (d,) moments and (K, d) control tables."""
    per_dim = [
        discrete_fixed_point(
            mu[i], s, flow_steps, scale, None if w is None else w[i], q, None if m is None else m[i]
        )
        for i in range(len(mu))
    ]
    out = {key: np.array([fp[key] for fp in per_dim]) for key in per_dim[0]}
    out['alpha'], out['beta'] = out['alpha'].T, out['beta'].T
    return out


# ------------------------------------------------------------------------------------------------
# 1. K-convergence of the SDE and ODE marginals to N(mu, s^2 I).
# ------------------------------------------------------------------------------------------------

CONV_MU, CONV_S, CONV_KS, CONV_N = (0.3, -0.5), 0.4, (5, 10, 20, 50), 50_000


@pytest.fixture(scope='module')
def convergence():
    rows = convergence_rows(CONV_MU, CONV_S, CONV_KS, CONV_N, seed=0)
    print('\n' + markdown_table(rows))
    return rows


@pytest.mark.parametrize('sampler', ['sde', 'ode'])
def test_marginal_matches_exact_k_step_law(convergence, sampler):
    """flow.py's samples have exactly the law of the K-step recursion (to Monte-Carlo error), every K."""
    for row in [r for r in convergence if r['sampler'] == sampler]:
        se_mean = row['exact_std'] / np.sqrt(CONV_N)
        se_std = row['exact_std'] / np.sqrt(2 * CONV_N)
        np.testing.assert_array_less(np.abs(row['mc_mean'] - row['exact_mean']), 5 * se_mean, err_msg=str(row))
        np.testing.assert_array_less(np.abs(row['mc_std'] - row['exact_std']), 5 * se_std, err_msg=str(row))


@pytest.mark.parametrize('sampler', ['sde', 'ode'])
def test_marginal_converges_in_k(convergence, sampler):
    rows = [r for r in convergence if r['sampler'] == sampler]
    exact_std_errs = [r['exact_std_err'] for r in rows]
    assert all(a > b for a, b in zip(exact_std_errs, exact_std_errs[1:])), exact_std_errs
    if sampler == 'sde':
        exact_mean_errs = [r['exact_mean_err'] for r in rows]
        assert all(a > b for a, b in zip(exact_mean_errs, exact_mean_errs[1:])), exact_mean_errs
    else:  # The Euler ODE of the exact field keeps E[x_k] = t_k mu exactly.
        assert max(r['exact_mean_err'] for r in rows) < 1e-12
    first, last = rows[0], rows[-1]
    # Monte Carlo: the K=50 error is well below the K=5 error (first order in h: about 10x).
    assert last['mc_std_err'] < 0.25 * first['mc_std_err']
    assert last['mc_mean_err'] + last['mc_std_err'] < 0.25 * (first['mc_mean_err'] + first['mc_std_err'])
    # K = 10, s = 0.4: the exact K-step law is off by 0.021 in the mean (SDE) and by 0.056 (SDE) / 0.061 (ODE)
    # in the std, i.e. 14-15% of s. That is the discretisation of the spec's scheme, not sampling noise.
    k10 = next(r for r in rows if r['K'] == 10)
    assert k10['mc_mean_err'] < (0.03 if sampler == 'sde' else 0.006)
    assert k10['mc_std_err'] < 0.07


# ------------------------------------------------------------------------------------------------
# Rollout structure: the transitions are the Euler-Maruyama kernels of section 3.
# ------------------------------------------------------------------------------------------------


def test_noise_scale_schedule():
    g = np.asarray(memoryless_noise_scale(K))
    h, t, g2 = schedule(K)
    np.testing.assert_allclose(g, np.sqrt(g2), rtol=1e-6)
    np.testing.assert_allclose(g[[0, -1]], [np.sqrt(22.0), np.sqrt(0.4)], rtol=1e-6)


def test_rollout_transitions_are_euler_maruyama():
    d, n = 2, 20_000
    base = gaussian_base_velocity((0.2, -0.3), 0.5)
    fine = lambda x, t: base(x, t) + 0.3 * jnp.sin(2.0 * x + 3.0 * t)  # noqa: E731
    noise = jax.random.normal(jax.random.PRNGKey(0), (n, d))
    ro = jax.jit(lambda z, key: memoryless_sde_rollout(fine, base, z, key, K))(noise, jax.random.PRNGKey(1))
    assert ro.states.shape == (K, n, d) and ro.terminal.shape == (n, d) and ro.noise_scales.shape == (K,)
    np.testing.assert_array_equal(ro.states[0], noise)
    h, t, g2 = schedule(K)
    t_col = jnp.asarray(t, jnp.float32)[:, None, None] * jnp.ones((K, n, 1))
    np.testing.assert_allclose(ro.fine_velocities, fine(ro.states, t_col), atol=1e-5)
    np.testing.assert_allclose(ro.base_velocities, base(ro.states, t_col), atol=1e-5)
    x, v = np.asarray(ro.states, np.float64), np.asarray(ro.fine_velocities, np.float64)
    tt = t[:, None, None]
    eps = (x[1:] - x[:-1] - h * (2 * v[:-1] - x[:-1] / (tt[:-1] + h))) / (np.sqrt(h * g2[:-1])[:, None, None])
    se = 1 / np.sqrt(n)
    assert np.abs(eps.mean(1)).max() < 5 * se
    assert np.abs(eps.std(1) - 1).max() < 5 * se
    corr_with_state = (eps * (x[:-1] - x[:-1].mean(1, keepdims=True))).mean(1) / x[:-1].std(1)
    assert np.abs(corr_with_state).max() < 5 * se
    corr_between_steps = (eps[1:] * eps[:-1]).mean(1)
    assert np.abs(corr_between_steps).max() < 5 * se
    # Last step: noiseless, under the base.
    np.testing.assert_allclose(ro.terminal, x[-1] + h * np.asarray(ro.base_velocities[-1]), atol=1e-5)


def test_rollout_gradient_contract():
    """Gradients reach the fine parameters only through fine_velocities; states and terminal are constants."""
    d = 2
    base = gaussian_base_velocity((0.0, 0.0), 0.5)
    noise = jax.random.normal(jax.random.PRNGKey(0), (8, d))

    def rollout(theta):
        return memoryless_sde_rollout(lambda x, t: base(x, t) + theta * x, base, noise, jax.random.PRNGKey(1), K)

    @jax.jit
    def grads(theta):
        def sums(th):
            ro = rollout(th)
            return jnp.sum(ro.terminal), jnp.sum(ro.states), jnp.sum(ro.fine_velocities)

        return jax.jacrev(sums)(theta), jnp.sum(rollout(theta).states)

    (g_terminal, g_states, g_fine), state_sum = grads(0.3)
    assert g_terminal == 0 and g_states == 0
    np.testing.assert_allclose(g_fine, state_sum, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# 2. Lean adjoint = reverse-mode derivative of the deterministic chain it linearises.
# ------------------------------------------------------------------------------------------------


def test_lean_adjoint_equals_autodiff_of_base_chain():
    d, batch = 3, 4
    net = MLP((32, 32, d))
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, d + 1)))
    vbar = lambda x, t: net.apply(params, jnp.concatenate([x, t], -1))  # noqa: E731
    reward = lambda x: jnp.sum(jnp.sin(2.0 * x) + 0.5 * x**2 * jnp.cos(x[..., ::-1]), -1)  # noqa: E731
    h = 1.0 / K
    times = np.arange(K) / K

    def chain_step(x, t):  # t = t_k + h
        return x + h * (2.0 * vbar(x, jnp.full((*x.shape[:-1], 1), t, x.dtype)) - x / t)

    def terminal_reward(x0, kicks):
        """r(x_K) of the chain with x_k -> x_k + kick_k; d/d kick_k at 0 is d r(x_K) / d x_k."""

        def step(x, inputs):
            t, kick = inputs
            x = x + kick
            return chain_step(x, t), x

        x, states = jax.lax.scan(step, x0, (jnp.asarray(times + h, jnp.float32), kicks))
        return jnp.sum(reward(x)), (states, x)

    x0 = jax.random.normal(jax.random.PRNGKey(1), (batch, d))
    kicks = jnp.zeros((K, batch, d))
    grads, (states, x_terminal) = jax.jit(jax.grad(terminal_reward, argnums=1, has_aux=True))(x0, kicks)
    a_terminal = -jax.grad(lambda x: jnp.sum(reward(x)))(x_terminal)
    adjoints = jax.jit(lambda st, a: lean_adjoint(vbar, st, a, K))(states, a_terminal)
    assert adjoints.shape == (K, batch, d)
    for k in range(K):
        expected = -grads[k]
        rel = float(jnp.linalg.norm(adjoints[k] - expected) / jnp.linalg.norm(expected))
        assert rel < 1e-4, (k, rel)
    # Not vacuous: the Jacobian products differ from the identity by far more than the tolerance.
    assert float(jnp.linalg.norm(adjoints[0] - a_terminal) / jnp.linalg.norm(a_terminal)) > 0.1


def test_lean_adjoint_gaussian_gains():
    """For the exact Gaussian base, a_k = M_k a_K with M_k = prod_{j>=k} (1 + h (2 D(t_j + h) - 1 / (t_j + h)))."""
    s, d = 0.3, 2
    base = gaussian_base_velocity((0.1, -0.2), s)
    states = jax.random.normal(jax.random.PRNGKey(0), (K, 5, d))
    a_terminal = jax.random.normal(jax.random.PRNGKey(1), (5, d))
    adjoints = lean_adjoint(base, states, a_terminal, K)
    expected = lean_adjoint_gains(s, K)[:, None, None] * np.asarray(a_terminal)[None]
    np.testing.assert_allclose(adjoints, expected, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# 3. path_kl is the expected log-likelihood ratio of the two Euler-Maruyama chains.
# ------------------------------------------------------------------------------------------------


def test_path_kl_is_expected_log_likelihood_ratio():
    d, n = 2, 40_000
    h, t, g2 = schedule(K)
    base = gaussian_base_velocity((0.2, -0.3), 0.5)
    fine = lambda x, t: base(x, t) + 0.5 * jnp.tanh(x) * (1.0 + t) - 0.2  # noqa: E731
    noise_key, rollout_key, last_key = jax.random.split(jax.random.PRNGKey(0), 3)
    noise = jax.random.normal(noise_key, (n, d))
    ro = jax.jit(lambda z, key: memoryless_sde_rollout(fine, base, z, key, K))(noise, rollout_key)
    kl = np.asarray(path_kl(ro), np.float64)
    assert kl.shape == (n,)
    # All K steps noisy under the fine kernel: flow.py's states give x_0..x_{K-1} (K-1 fine steps), and the
    # last noisy fine step is drawn here.
    x = np.asarray(ro.states, np.float64)
    tt = jnp.asarray(t, jnp.float32)[:, None, None] * jnp.ones((K, n, 1))
    v_fine = np.asarray(fine(ro.states, tt), np.float64)
    v_base = np.asarray(base(ro.states, tt), np.float64)
    mean_fine = x + h * (2 * v_fine - x / (t + h)[:, None, None])
    mean_base = x + h * (2 * v_base - x / (t + h)[:, None, None])
    var = (h * g2)[:, None, None]
    last = mean_fine[-1] + np.sqrt(var[-1]) * np.asarray(jax.random.normal(last_key, (n, d)), np.float64)
    nxt = np.concatenate([x[1:], last[None]])

    def log_density(y, mean):
        return np.sum(-0.5 * (y - mean) ** 2 / var - 0.5 * np.log(2 * np.pi * var), -1)

    llr = np.sum(log_density(nxt, mean_fine) - log_density(nxt, mean_base), 0)
    diff = llr - kl  # a martingale increment with mean 0 if path_kl is the exact per-step KL
    tol = 4 * diff.std() / np.sqrt(n)
    print(f'\npath KL: E[log-ratio] {llr.mean():.4f}  E[path_kl] {kl.mean():.4f}  (4 SE = {tol:.4f})')
    assert kl.mean() > 20 * tol  # the comparison is not vacuous
    assert abs(llr.mean() - kl.mean()) < tol
    # Same rollout, base as fine: zero.
    same = ro._replace(fine_velocities=ro.base_velocities)
    np.testing.assert_array_equal(path_kl(same), 0.0)


# ------------------------------------------------------------------------------------------------
# 4. Terminal adjoint.
# ------------------------------------------------------------------------------------------------


def test_terminal_adjoint_linear_clipped_scaled():
    w = jnp.array([0.5, -2.0, 1.5])
    ensemble = jnp.array([[1.0, 0.0, 2.0], [0.0, -4.0, 1.0]])  # mean = w
    terminal = jnp.array([[0.3, -0.9, 0.99], [1.5, 0.2, -2.0], [-1.01, 1.2, 0.0]])
    inside = (jnp.abs(terminal) < 1.0).astype(jnp.float32)
    for reward in (lambda a: a @ w, lambda a: jnp.mean(a @ ensemble.T, -1)):
        got = terminal_adjoint(reward, terminal, 0.7)
        np.testing.assert_allclose(got, -0.7 * w * inside, rtol=1e-6)
    # Nonlinear reward, evaluated at the clipped action; leading batch axes kept.
    terminal = jnp.reshape(jnp.linspace(-1.6, 1.6, 12), (2, 2, 3))
    got = terminal_adjoint(lambda a: jnp.sum(jnp.sin(a), -1), terminal, 2.0)
    assert got.shape == terminal.shape
    np.testing.assert_allclose(got, -2.0 * jnp.cos(terminal) * (jnp.abs(terminal) < 1), rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------------
# 5. Flow-matching loss.
# ------------------------------------------------------------------------------------------------


def test_flow_matching_loss_point_mass_is_zero():
    c = jnp.array([0.3, -0.7, 0.1])
    actions = jnp.broadcast_to(c, (4096, 3))
    exact = lambda x, t: (c - x) / (1.0 - t)  # noqa: E731  E[x_1 - x_0 | x_t] for x_1 = c
    rng = jax.random.PRNGKey(0)
    valid = jnp.ones(4096)
    exact_loss, shifted_loss = jax.jit(
        lambda: (
            flow_matching_loss(exact, actions, rng, valid),
            flow_matching_loss(lambda x, t: exact(x, t) + 0.1, actions, rng, valid),
        )
    )()
    assert float(exact_loss) < 1e-6
    np.testing.assert_allclose(shifted_loss, 0.01, rtol=1e-3)


def test_flow_matching_loss_gaussian_minimum():
    """For x_1 ~ N(mu, s^2 I) the exact velocity leaves Var[x_1 - x_0 | x_t] = s^2 / ((1-t)^2 + t^2 s^2) per dim,
    whose mean over t ~ U[0, 1] is pi s / 2."""
    mu, s, n, batches = jnp.array([0.3, -0.5]), 0.4, 10_000, 20
    velocity = gaussian_base_velocity(mu, s)

    @jax.jit
    def one(key):
        data_key, loss_key = jax.random.split(key)
        actions = mu + s * jax.random.normal(data_key, (n, 2))
        return flow_matching_loss(velocity, actions, loss_key, jnp.ones(n))

    losses = np.array([one(key) for key in jax.random.split(jax.random.PRNGKey(0), batches)])
    tol = 4.5 * losses.std(ddof=1) / np.sqrt(batches)  # a t-statistic with 19 dof: p ~ 3e-4
    assert abs(losses.mean() - np.pi * s / 2) < tol, (losses.mean(), np.pi * s / 2, tol)
    assert tol < 0.02 * np.pi * s / 2  # and it is a sharp check


def test_flow_matching_loss_masking():
    n, d = 16, 3
    rng = jax.random.PRNGKey(0)
    actions = jax.random.uniform(jax.random.PRNGKey(1), (n, d), minval=-1, maxval=1)
    valid = (jnp.arange(n) % 3 != 0).astype(jnp.float32)
    velocity = lambda x, t: 0.5 * x - t  # noqa: E731
    fm_loss = jax.jit(lambda a, v: flow_matching_loss(velocity, a, rng, v))
    loss = fm_loss(actions, valid)
    # Masked rows do not matter, whatever they hold.
    garbage = jnp.where(valid[:, None] > 0, actions, 1e3)
    np.testing.assert_allclose(fm_loss(garbage, valid), loss, rtol=1e-6)
    assert float(fm_loss(actions, jnp.zeros(n))) == 0.0
    # Linear in `valid` with the batch mean as normaliser: mean_i valid_i err_i (the reference's
    # jnp.mean(err * valid)), so the one-hot masks add up to the unmasked loss.
    one_hot = np.array([fm_loss(actions, row) for row in jnp.eye(n)])
    np.testing.assert_allclose(np.sum(one_hot), fm_loss(actions, jnp.ones(n)), rtol=1e-5)
    np.testing.assert_allclose(np.sum(one_hot * np.asarray(valid)), loss, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# 6. The adjoint-matching fixed point.
# ------------------------------------------------------------------------------------------------

LINEAR = dict(mu=np.array([-0.1, 0.1]), s=0.2, scale=4.0, w=np.array([1.0, -1.0]))
QUADRATIC = dict(mu=np.array([0.0, 0.05]), s=0.3, scale=1.0, q=0.5 / 0.09, m=np.array([0.15, -0.2]))


def linear_reward(w):
    return lambda a: a @ jnp.asarray(w, jnp.float32)


def quadratic_reward(q, m):
    return lambda a: -0.5 * q * jnp.sum(jnp.square(a - jnp.asarray(m, jnp.float32)), -1)


def am_pieces(fine, base, reward, scale, noise, key):
    ro = memoryless_sde_rollout(fine, base, noise, key, K)
    adjoints = lean_adjoint(base, ro.states, terminal_adjoint(reward, ro.terminal, scale), K)
    return ro, adjoints


def test_reference_fixed_point_converges_to_tilted_gaussian():
    """The exact finite-K fixed point (numpy reference) tends to the continuous-time tilt as K grows."""
    for case, reward_args in ((LINEAR, ('w',)), (QUADRATIC, ('q', 'm'))):
        for i in range(2):
            kwargs = {k: (case[k][i] if np.ndim(case[k]) else case[k]) for k in reward_args}
            mean, var, kl = tilted_gaussian(case['mu'][i], case['s'], case['scale'], **kwargs)
            fp = discrete_fixed_point(case['mu'][i], case['s'], 2000, case['scale'], **kwargs)
            np.testing.assert_allclose([fp['mean'], fp['var'], fp['path_kl']], [mean, var, kl], rtol=0.01, atol=1e-3)


def test_exact_control_is_fixed_point_linear():
    """Gaussian base, linear Q: the optimal control u_k = (g_k^2 / 2) M_k c w is state-independent, so the
    adjoint-matching residual vanishes sample by sample; moving u_k by delta costs exactly d 4 delta^2 / g_k^2."""
    mu, s, scale, w = np.array([0.0, 0.05]), 0.15, 2.0, np.array([1.0, -1.0])  # |x_K| < 1 by > 4.5 std
    base = gaussian_base_velocity(mu, s)
    fp = fixed_point_tables(mu, s, scale, w=w)
    noise = jax.random.normal(jax.random.PRNGKey(0), (2048, 2))

    @jax.jit
    def loss_and_max_terminal(alpha):
        fine = affine_control(base, alpha, 0 * alpha)
        ro, adjoints = am_pieces(fine, base, linear_reward(w), scale, noise, jax.random.PRNGKey(1))
        return adjoint_matching_loss(ro, adjoints, ro.noise_scales), jnp.max(jnp.abs(ro.terminal))

    def loss(alpha):
        value, max_terminal = loss_and_max_terminal(jnp.asarray(alpha, jnp.float32))
        assert float(max_terminal) < 1.0
        return float(value)

    zero_control = loss(0 * fp['alpha'])
    assert zero_control > 1.0
    assert loss(fp['alpha']) < 1e-6 * zero_control
    g2 = schedule(K)[2]
    for k, delta in ((2, 0.05), (8, -0.1)):
        alpha = fp['alpha'].copy()
        alpha[k] += delta
        np.testing.assert_allclose(loss(alpha), 2 * 4 * delta**2 / g2[k], rtol=1e-3)


def test_exact_control_is_fixed_point_quadratic():
    """Quadratic Q: the exact finite-K control u_k = alpha_k + beta_k x makes the residual
    2 u_k / g_k + g_k a_k orthogonal to 1 and x_k (zero conditional mean), at every step; a perturbed one does not."""
    mu, s, scale, q, m = np.array([0.0, 0.05]), 0.2, 1.0, 0.5 / 0.04, np.array([0.15, -0.2])
    base = gaussian_base_velocity(mu, s)
    fp = fixed_point_tables(mu, s, scale, q=q, m=m)
    n = 40_000
    noise = jax.random.normal(jax.random.PRNGKey(0), (n, 2))

    @jax.jit
    def z_scores(alpha, beta):
        fine = affine_control(base, alpha, beta)
        ro, adjoints = am_pieces(fine, base, quadratic_reward(q, m), scale, noise, jax.random.PRNGKey(1))
        g = ro.noise_scales[:, None, None]
        target = g * adjoints
        residual = 2 * (ro.fine_velocities - ro.base_velocities) / g + target
        # The last step's residual is a deterministic function of x_{K-1} (the rollout's last step is the
        # noiseless base), zero up to float32 round-off; the floor keeps round-off from reading as signal.
        floor = 1e-4 * jnp.sqrt(jnp.mean(jnp.square(target), 1))
        scores = []
        for feature in (jnp.ones_like(ro.states), ro.states):
            moment = residual * feature
            scores.append(jnp.mean(moment, 1) / (jnp.std(moment, 1) / jnp.sqrt(n) + floor))
        return jnp.max(jnp.abs(jnp.stack(scores))), jnp.mean(jnp.abs(ro.terminal) > 1)

    z, clipped = z_scores(fp['alpha'], fp['beta'])
    assert float(clipped) < 1e-4
    assert float(z) < 4.5, float(z)
    z_wrong, _ = z_scores(fp['alpha'], 0.8 * fp['beta'])
    assert float(z_wrong) > 10, float(z_wrong)


class ResidualField(nn.Module):
    """v_theta(x, t) - v_base(x, t): a 2 x 32 GELU MLP on [x, t, sin(pi j t), cos(pi j t)], zero at init.

    Matrix products in `dtype` and a float32 output, as the agents' networks (tests/test_bfloat16.py).
    """

    output_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, t):
        freqs = jnp.pi * jnp.arange(1, 5, dtype=x.dtype)
        features = jnp.concatenate([x, t, jnp.sin(freqs * t), jnp.cos(freqs * t)], -1)
        hidden = MLP((32, 32), activate_final=True, dtype=self.dtype)(features)
        output = nn.Dense(self.output_dim, kernel_init=nn.initializers.zeros, dtype=self.dtype)(hidden)
        return output.astype(jnp.float32)


def train_adjoint_matching(base, reward, scale, d, steps=600, batch=256, lr=3e-3, seed=0, dtype=jnp.float32):
    """Adam on adjoint_matching_loss over fresh rollouts; returns the trained fine field."""
    net = ResidualField(d, dtype)
    params = net.init(jax.random.PRNGKey(seed), jnp.zeros((1, d)), jnp.zeros((1, 1)))
    tx = optax.adam(optax.cosine_decay_schedule(lr, steps, 0.05))

    def loss_fn(p, key):
        fine = lambda x, t: base(x, t) + net.apply(p, x, t)  # noqa: E731
        noise_key, rollout_key = jax.random.split(key)
        ro, adjoints = am_pieces(fine, base, reward, scale, jax.random.normal(noise_key, (batch, d)), rollout_key)
        return adjoint_matching_loss(ro, adjoints, ro.noise_scales)

    @jax.jit
    def train(params, key):
        def body(carry, key):
            p, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(p, key)
            updates, opt_state = tx.update(grads, opt_state, p)
            return (optax.apply_updates(p, updates), opt_state), loss

        (params, _), losses = jax.lax.scan(body, (params, tx.init(params)), jax.random.split(key, steps))
        return params, losses

    params, losses = train(params, jax.random.PRNGKey(seed + 1))
    return (lambda x, t: base(x, t) + net.apply(params, x, t)), np.asarray(losses)


def evaluate(fine, base, d, n=100_000):
    """Terminal law of the trained SDE rollout, its path KL, and (for information) the ODE's law."""
    sample_key, rollout_key, ode_key = jax.random.split(jax.random.PRNGKey(100), 3)
    ro = jax.jit(lambda z, key: memoryless_sde_rollout(fine, base, z, key, K))(
        jax.random.normal(sample_key, (n, d)), rollout_key
    )
    x = np.asarray(ro.terminal, np.float64)
    kl = np.asarray(path_kl(ro), np.float64)
    last_control = np.asarray(ro.fine_velocities[-1] - ro.base_velocities[-1], np.float64)
    last_term = (2.0 / K / float(ro.noise_scales[-1]) ** 2) * np.sum(np.square(last_control), -1)
    ode = jax.jit(lambda z: euler_ode_sample(fine, z, K, clip=False))(jax.random.normal(ode_key, (n, d)))
    ode = np.asarray(ode, np.float64)
    return dict(
        mean=x.mean(0),
        var=x.var(0),
        kl=kl.mean(),
        kl_applied=(kl - last_term).mean(),
        ode_mean=ode.mean(0),
        ode_var=ode.var(0),
        clipped=np.mean(np.abs(x) > 1),
    )


def report(name, got, fp, cont_mean, cont_var, cont_kl, losses):
    r = lambda v: np.round(v, 4)  # noqa: E731
    exact_applied_kl = (fp['path_kl'] - fp['last_step_kl']).sum()
    print(f'\n[{name}] AM loss {losses[0]:.3f} -> {losses[-20:].mean():.4f}; clipped terminals {got["clipped"]:.1e}')
    print(f'  SDE terminal mean {r(got["mean"])}  K=10 exact {r(fp["mean"])}  continuous {r(cont_mean)}')
    print(f'  SDE terminal var  {r(got["var"])}  K=10 exact {r(fp["var"])}  continuous {r(cont_var)}'
          f'  (K=10 base rollout {r(fp["base_var"])})')
    print(f'  path_kl {got["kl"]:.4f}  K=10 exact {fp["path_kl"].sum():.4f}  continuous {cont_kl:.4f}')
    print(f'  path_kl without the k=K-1 term (a control the rollout never applies) {got["kl_applied"]:.4f},'
          f' K=10 exact {exact_applied_kl:.4f}')
    print(f'  (ODE of the trained field, for information: mean {r(got["ode_mean"])} var {r(got["ode_var"])})')


def test_adjoint_matching_learns_linear_tilt():
    """Q(a) = w.a on N(mu, s^2 I): pi* = N(mu + c s^2 w, s^2 I), KL = c^2 s^2 |w|^2 / 2."""
    mu, s, scale, w = LINEAR['mu'], LINEAR['s'], LINEAR['scale'], LINEAR['w']
    base = gaussian_base_velocity(mu, s)
    fine, losses = train_adjoint_matching(base, linear_reward(w), scale, 2)
    got = evaluate(fine, base, 2)
    fp = fixed_point_tables(mu, s, scale, w=w)
    cont_mean, cont_var, cont_kl = tilted_gaussian(mu, s, scale, w=w)
    report('linear', got, fp, cont_mean, cont_var, cont_kl.sum(), losses)
    assert got['clipped'] < 1e-3
    assert losses[-20:].mean() < 0.01 * losses[0]  # the optimum has zero loss here
    # (i) The exact K = 10 fixed point: mean within 5% of the shift, variance within 5%.
    shift = fp['mean'] - fp['base_mean']  # 0.184 per dim
    np.testing.assert_allclose(got['mean'], fp['mean'], atol=0.05 * np.abs(shift).min())
    np.testing.assert_allclose(got['var'], fp['var'], rtol=0.05)
    np.testing.assert_allclose(got['kl'], fp['path_kl'].sum(), rtol=0.05)
    # (ii) Continuous time. The K = 10 scheme overshoots the shift c s^2 w = 0.16 by 15% (0.184) and its
    # base rollout already has variance 0.0612 instead of s^2 = 0.04; the linear tilt leaves the variance
    # of the rollout unchanged, as in continuous time.
    np.testing.assert_allclose(got['mean'] - fp['base_mean'], cont_mean - mu, rtol=0.25)
    np.testing.assert_allclose(got['var'] / fp['base_var'], cont_var / s**2, rtol=0.05)
    # path_kl sums K = 10 terms; the last one (k = K-1, weight 2h / g_{K-1}^2 = 1/2) prices a control the
    # rollout never applies (its last step is the base), and at this s it outweighs all the others together
    # (0.77 vs 0.55): E path_kl = 1.33 is 2.1x the Girsanov KL c^2 s^2 |w|^2 / 2 = 0.64. Without that term
    # it is 0.55 (-13%).
    np.testing.assert_allclose(got['kl_applied'], cont_kl.sum(), rtol=0.25)
    assert 1.5 * cont_kl.sum() < got['kl'] < 2.5 * cont_kl.sum()


def test_adjoint_matching_learns_quadratic_tilt():
    """Q(a) = -q |a - m|^2 / 2: pi* Gaussian with precision 1/s^2 + c q and mean (mu/s^2 + c q m) / precision."""
    mu, s, scale, q, m = QUADRATIC['mu'], QUADRATIC['s'], QUADRATIC['scale'], QUADRATIC['q'], QUADRATIC['m']
    base = gaussian_base_velocity(mu, s)
    fine, losses = train_adjoint_matching(base, quadratic_reward(q, m), scale, 2)
    got = evaluate(fine, base, 2)
    fp = fixed_point_tables(mu, s, scale, q=q, m=m)
    cont_mean, cont_var, cont_kl = tilted_gaussian(mu, s, scale, q=q, m=m)
    report('quadratic', got, fp, cont_mean, cont_var, cont_kl.sum(), losses)
    assert got['clipped'] < 1e-2
    # (i) The exact K = 10 fixed point (clipping ignored there; < 1% of terminals clip here).
    shift = fp['mean'] - fp['base_mean']  # (0.058, -0.098)
    np.testing.assert_allclose(got['mean'], fp['mean'], atol=0.1 * np.abs(shift).min())
    np.testing.assert_allclose(got['var'], fp['var'], rtol=0.05)
    np.testing.assert_allclose(got['kl'], fp['path_kl'].sum(), rtol=0.1)
    # (ii) Continuous time: the K = 10 shift is 17% above (0.058 vs 0.050, -0.098 vs -0.083); the variance
    # ratio to the base rollout is 0.76 against 2/3 (the base rollout's own variance is 0.123, not 0.09).
    np.testing.assert_allclose(got['mean'] - fp['base_mean'], cont_mean - mu, rtol=0.3)
    np.testing.assert_allclose(got['var'] / fp['base_var'], cont_var / s**2, rtol=0.2)


# ------------------------------------------------------------------------------------------------
# 7. Shapes, jit and vmap.
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def conditioned_fields():
    obs_dim, d = 3, 2
    fine_net, base_net = VectorField((16, 16), d), VectorField((16, 16), d)
    args = (jnp.zeros((1, obs_dim)), jnp.zeros((1, d)), jnp.zeros((1, 1)))
    fine_params = fine_net.init(jax.random.PRNGKey(0), *args)
    base_params = base_net.init(jax.random.PRNGKey(1), *args)

    def fields(obs):
        def expand(x):
            return jnp.broadcast_to(obs, (*x.shape[:-1], obs.shape[-1]))

        fine = lambda x, t: fine_net.apply(fine_params, expand(x), x, t)  # noqa: E731
        base = lambda x, t: base_net.apply(base_params, expand(x), x, t)  # noqa: E731
        return fine, base

    return fields, obs_dim, d


def test_rollout_and_adjoint_vmap_jit(conditioned_fields):
    fields, obs_dim, d = conditioned_fields
    num_states, num_samples = 2, 3
    obs = jax.random.normal(jax.random.PRNGKey(2), (num_states, obs_dim))
    noise = jax.random.normal(jax.random.PRNGKey(3), (num_states, num_samples, d))
    keys = jax.random.split(jax.random.PRNGKey(4), num_states * num_samples).reshape(num_states, num_samples, -1)
    reward = lambda a: jnp.sum(jnp.sin(3 * a), -1)  # noqa: E731

    def single(o, z, key):
        fine, base = fields(o)
        ro = memoryless_sde_rollout(fine, base, z, key, K)
        adjoints = lean_adjoint(base, ro.states, terminal_adjoint(reward, ro.terminal, 0.5), K)
        return ro, adjoints, adjoint_matching_loss(ro, adjoints, ro.noise_scales), path_kl(ro)

    per_sample = jax.vmap(single, in_axes=(None, 0, 0))  # several samples of one state
    batched = jax.jit(jax.vmap(per_sample))  # and several states
    ro_b, adj_b, loss_b, kl_b = batched(obs, noise, keys)
    assert ro_b.states.shape == (num_states, num_samples, K, d)
    assert ro_b.terminal.shape == (num_states, num_samples, d)
    assert ro_b.fine_velocities.shape == ro_b.base_velocities.shape == (num_states, num_samples, K, d)
    assert ro_b.noise_scales.shape == (num_states, num_samples, K)
    assert adj_b.shape == (num_states, num_samples, K, d)
    assert loss_b.shape == kl_b.shape == (num_states, num_samples)
    single = jax.jit(single)  # the unbatched call: one state, one sample, its own key
    for i in range(num_states):
        for j in range(num_samples):
            ro, adjoints, loss, kl = single(obs[i], noise[i, j], keys[i, j])
            assert ro.states.shape == (K, d) and ro.terminal.shape == (d,) and adjoints.shape == (K, d)
            assert ro.noise_scales.shape == (K,) and loss.shape == () and kl.shape == ()
            np.testing.assert_allclose(ro.states, ro_b.states[i, j], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(ro.terminal, ro_b.terminal[i, j], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(ro.fine_velocities, ro_b.fine_velocities[i, j], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(ro.base_velocities, ro_b.base_velocities[i, j], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(adjoints, adj_b[i, j], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(loss, loss_b[i, j], rtol=1e-5)
            np.testing.assert_allclose(kl, kl_b[i, j], rtol=1e-5, atol=1e-7)


def test_batched_leading_axes_match_vmap(conditioned_fields):
    """One call on (states, samples, d): per-step fields carry the leading axes after K, each state's
    velocities see its own observation, and lean_adjoint on (K, B, N, d) equals nested vmaps of (K, d) calls."""
    fields, obs_dim, d = conditioned_fields
    num_states, num_samples = 3, 5
    obs = jax.random.normal(jax.random.PRNGKey(5), (num_states, 1, obs_dim))
    noise = jax.random.normal(jax.random.PRNGKey(6), (num_states, num_samples, d))
    fine, base = fields(obs)
    ro = jax.jit(lambda z, key: memoryless_sde_rollout(fine, base, z, key, K))(noise, jax.random.PRNGKey(7))
    assert ro.states.shape == (K, num_states, num_samples, d) and ro.terminal.shape == (num_states, num_samples, d)
    assert ro.noise_scales.shape == (K,)
    t_col = (jnp.arange(K, dtype=jnp.float32) / K)[:, None]
    b, n = 2, 4
    fine_b, base_b = fields(obs[b, 0])
    np.testing.assert_allclose(ro.fine_velocities[:, b, n], fine_b(ro.states[:, b, n], t_col), atol=1e-5)
    np.testing.assert_allclose(ro.base_velocities[:, b, n], base_b(ro.states[:, b, n], t_col), atol=1e-5)
    assert path_kl(ro).shape == (num_states, num_samples)
    assert adjoint_matching_loss(ro, ro.states, ro.noise_scales).shape == ()
    a_terminal = jax.random.normal(jax.random.PRNGKey(8), (num_states, num_samples, d))
    adjoints = jax.jit(lambda st, a: lean_adjoint(base, st, a, K))(ro.states, a_terminal)
    assert adjoints.shape == (K, num_states, num_samples, d)

    def one(o, states, a):  # states (K, d), a (d,)
        return lean_adjoint(fields(o)[1], states, a, K)

    per_state = jax.vmap(one, in_axes=(None, 1, 0), out_axes=1)
    per_sample = jax.jit(jax.vmap(per_state, in_axes=(0, 1, 0), out_axes=1))
    np.testing.assert_allclose(per_sample(obs[:, 0], ro.states, a_terminal), adjoints, rtol=1e-5, atol=1e-6)
    # adjoint_matching_loss is the batch mean of the per-sample sums.
    rng = np.random.default_rng(0)
    fake = SDERollout(*(jnp.asarray(rng.normal(size=(K, 6, d)), jnp.float32) for _ in range(4)), ro.noise_scales)
    fake = fake._replace(terminal=fake.terminal[0])
    adj = jnp.asarray(rng.normal(size=(K, 6, d)), jnp.float32)
    sig = ro.noise_scales[:, None, None]
    residuals = 2 * (fake.fine_velocities - fake.base_velocities) / sig + sig * adj
    expected = np.mean(np.sum(np.square(residuals), axis=(0, 2)))
    np.testing.assert_allclose(adjoint_matching_loss(fake, adj, ro.noise_scales), expected, rtol=1e-5)
