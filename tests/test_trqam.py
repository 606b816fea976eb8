"""Tests for TRQAM (agents/trqam.py; docs/algorithms.md section 4) and the trust-region toy experiment.

The SDE core itself (rollout, lean adjoint, loss, path KL) is tested in tests/test_flow.py; here we test
what TRQAM adds on top of it: the temperature equivalence with QAM, the projected dual step, the dual
state of the agent, and that the dual step holds the path KL of a trained sampler at its budget.
"""

import json
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agents.qam import QAMAgent
from agents.qam import get_config as get_qam_config
from agents.trqam import TRQAMAgent, projected_dual_step
from agents.trqam import get_config as get_trqam_config
from core.flow import adjoint_matching_loss, lean_adjoint, memoryless_sde_rollout, path_kl, terminal_adjoint

OBS_DIM, CHUNK_DIM, BATCH = 3, 2, 8
TINY = dict(actor_hidden_dims=(16, 16), value_hidden_dims=(16, 16), num_qs=2, flow_steps=4, batch_size=BATCH,
            horizon_length=1)


def _batch(seed=0, batch_size=BATCH):
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    return {
        'observations': jax.random.normal(keys[0], (batch_size, OBS_DIM)),
        'actions': jax.random.uniform(keys[1], (batch_size, CHUNK_DIM), minval=-1.0, maxval=1.0),
        'rewards': jax.random.normal(keys[2], (batch_size,)),
        'masks': jnp.ones((batch_size,)),
        'valid': jnp.ones((batch_size,)),
        'next_observations': jax.random.normal(keys[3], (batch_size, OBS_DIM)),
    }


def _trqam_config(**overrides):
    config = get_trqam_config()
    config.update({**TINY, **overrides})
    return config


def _trqam(seed=0, **overrides):
    return TRQAMAgent.create(seed, _batch(), _trqam_config(**overrides))


# ----------------------------------------------------------------------------------------------------
# 1. TRQAM's loss is lambda_eff times QAM's loss at inv_temp = 1 / lambda_eff.


def qam_and_trqam_adjoint_matching(lam, lam_scale, **overrides):
    """((loss, info), gradients) of `adjoint_matching` for QAM at inv_temp = 1 / lambda_eff and for TRQAM at
    lambda_eff = lam_scale * lam, on the same networks, observations and rollout key."""
    lam_eff = lam * lam_scale
    qam_config = get_qam_config()
    qam_config.update({**TINY, **overrides, 'inv_temp': 1.0 / lam_eff})
    qam = QAMAgent.create(0, _batch(), qam_config)
    # Same networks (critic, base flow and its EMA, fine flow), another agent class and its dual state.
    trqam = _trqam(seed=1, lam_scale=lam_scale, **overrides).replace(network=qam.network, lam=jnp.float32(lam))
    assert float(trqam.lambda_eff()) == pytest.approx(lam_eff)

    observations = _batch(seed=2)['observations']
    params = qam.network.params
    rng = jax.random.PRNGKey(3)

    @jax.jit  # one program for both agents (bfloat16 networks are slow op by op on the CPU)
    def losses(params):
        return tuple(jax.value_and_grad(lambda p: agent.adjoint_matching(observations, p, rng), has_aux=True)(params)
                     for agent in (qam, trqam))

    return losses(params)


@pytest.mark.parametrize('lam, lam_scale', [(1.0, 3.0), (0.37, 3.0), (2.5, 1.0)])
def test_loss_is_lambda_eff_times_qam_loss_at_inverse_temperature(lam, lam_scale):
    lam_eff = lam * lam_scale
    ((qam_loss, qam_info), qam_grads), ((trqam_loss, trqam_info), trqam_grads) = qam_and_trqam_adjoint_matching(
        lam, lam_scale
    )
    assert float(qam_loss) > 0
    np.testing.assert_allclose(trqam_loss, lam_eff * qam_loss, rtol=1e-5)
    # Same rollout: the path KL does not depend on lambda or on the temperature.
    np.testing.assert_allclose(trqam_info['path_kl'], qam_info['path_kl'], rtol=1e-6)
    # Hence the same gradient direction, scaled by lambda_eff (only the fine flow gets gradients).
    fine_qam = qam_grads['modules_fine_flow']
    fine_trqam = trqam_grads['modules_fine_flow']
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, lam_eff * b, rtol=1e-4, atol=1e-7),
                           fine_trqam, fine_qam)
    assert optax.tree.norm(fine_qam) > 0
    assert optax.tree.norm(qam_grads['modules_critic']) == 0  # critic: only through the target copy


# ----------------------------------------------------------------------------------------------------
# 2. The projected dual step.

DUAL = dict(kl_clip_coef=2.0, kl_ema_coef=0.1, dual_lr=0.01, lambda_min=0.01, lambda_max=100.0)


def _dual(lam, kl_ema, path_kl_value, budget, **config):
    lam, kl_ema = projected_dual_step(jnp.float32(lam), jnp.float32(kl_ema), jnp.float32(path_kl_value),
                                      jnp.float32(budget), {**DUAL, **config})
    return float(lam), float(kl_ema)


def test_dual_step_sign():
    # KL estimate above the budget: the trust region is too loose, lambda (the temperature) rises.
    lam, _ = _dual(1.0, kl_ema=1.5, path_kl_value=1.5, budget=1.0)
    assert lam > 1.0
    # Below the budget: lambda falls.
    lam, _ = _dual(1.0, kl_ema=0.5, path_kl_value=0.5, budget=1.0)
    assert lam < 1.0
    # At the budget: unchanged.
    lam, _ = _dual(1.0, kl_ema=1.0, path_kl_value=1.0, budget=1.0)
    assert lam == pytest.approx(1.0)


def test_dual_step_clips_the_estimate_before_the_ema():
    # D_hat = 50 with budget 1: only kl_clip_coef * eps = 2 enters the EMA.
    lam, kl_ema = _dual(1.0, kl_ema=0.0, path_kl_value=50.0, budget=1.0)
    assert kl_ema == pytest.approx(0.1 * 2.0)
    assert lam == pytest.approx(1.0 + 0.01 * (0.2 - 1.0))
    # Another clip coefficient and budget.
    _, kl_ema = _dual(1.0, kl_ema=0.3, path_kl_value=50.0, budget=0.5, kl_clip_coef=3.0)
    assert kl_ema == pytest.approx(0.9 * 0.3 + 0.1 * 1.5)
    # Below the clip, D_hat enters unchanged.
    _, kl_ema = _dual(1.0, kl_ema=0.3, path_kl_value=0.7, budget=0.5)
    assert kl_ema == pytest.approx(0.9 * 0.3 + 0.1 * 0.7)


def test_dual_step_projects_onto_the_bounds():
    lam, _ = _dual(0.011, kl_ema=0.0, path_kl_value=0.0, budget=1.0)
    assert lam == pytest.approx(0.01)  # 0.011 - 0.01 * 0.9 would be 0.002
    lam, _ = _dual(99.999, kl_ema=2.0, path_kl_value=2.0, budget=1.0)
    assert lam == pytest.approx(100.0)
    lam, _ = _dual(5.0, kl_ema=2.0, path_kl_value=2.0, budget=1.0, dual_lr=100.0, lambda_max=7.0)
    assert lam == pytest.approx(7.0)


def test_dual_step_matches_a_hand_computation_over_several_steps():
    config = {**DUAL, 'dual_lr': 0.5, 'lambda_min': 0.2, 'lambda_max': 1.3}
    budget = 0.4
    estimates = [0.1, 3.0, 0.9, 0.0, 0.5, 2.0, 0.05, 0.05]
    lam, kl_ema = 1.0, 0.0
    expected_lam, expected_ema = 1.0, 0.0
    lam_hit_bounds = set()
    for estimate in estimates:
        lam, kl_ema = _dual(lam, kl_ema, estimate, budget, **config)
        expected_ema = 0.9 * expected_ema + 0.1 * min(estimate, 2.0 * budget)
        expected_lam = min(max(expected_lam + 0.5 * (expected_ema - budget), 0.2), 1.3)
        assert kl_ema == pytest.approx(expected_ema, rel=1e-5)
        assert lam == pytest.approx(expected_lam, rel=1e-5)
        lam_hit_bounds.add(expected_lam in (0.2, 1.3))
    assert lam_hit_bounds == {False, True}  # the sequence exercises the projection as well


# ----------------------------------------------------------------------------------------------------
# 3. The agent's dual state, its jitted update and its metrics.


def test_dual_state_is_float32_from_creation():
    agent = _trqam(lambda_init=0.7, kl_ema_init=0.2, kl_budget=0.3)
    for name, value in (('lam', 0.7), ('kl_ema', 0.2), ('kl_budget', 0.3)):
        leaf = getattr(agent, name)
        assert isinstance(leaf, jax.Array) and leaf.dtype == jnp.float32 and leaf.shape == (), name
        assert not leaf.weak_type, name
        assert float(leaf) == pytest.approx(value), name
    # They are pytree leaves of the agent (saved in checkpoints, carried through lax.scan).
    leaves = jax.tree_util.tree_leaves(agent)
    assert any(leaf is agent.lam for leaf in leaves) and any(leaf is agent.kl_budget for leaf in leaves)


# One config for the update tests, so that they share the compiled update.
UPDATE_CONFIG = dict(kl_budget=0.5, kl_budget_online=0.25)


def test_update_does_not_retrace_and_logs_the_dual_variables():
    agent = _trqam(**UPDATE_CONFIG)
    batch = _batch(seed=4)

    # A fresh jit of the same method, with a trace counter: independent of what other tests compiled.
    traces = []

    def counted_update(agent, batch):
        traces.append(1)
        return TRQAMAgent.update.__wrapped__(agent, batch)

    counted = jax.jit(counted_update)
    agent_1, info_1 = counted(agent, batch)
    agent_2, info_2 = counted(agent_1, _batch(seed=5))
    counted(agent_2, _batch(seed=6))
    assert len(traces) == 1, 'the update retraced: the dual state changed type, shape or weak type'

    # The agent's own jitted update behaves the same (cache size unchanged on the second call).
    first, _ = agent.update(batch)
    cache_size = TRQAMAgent.update._cache_size()
    second, _ = first.update(batch)
    assert TRQAMAgent.update._cache_size() == cache_size
    for name in ('lam', 'kl_ema', 'kl_budget'):
        assert getattr(second, name).dtype == jnp.float32 and not getattr(second, name).weak_type

    # Metrics: present and finite; dual/lambda is the effective value lam_scale * lam after the step's dual
    # update, as the authors log it.
    for info in (info_1, info_2):
        for key in ('dual/lambda', 'dual/path_kl', 'dual/kl_ema', 'dual/kl_budget', 'dual/sigma_scale'):
            assert key in info and np.isfinite(float(info[key])), key
    lam_scale = agent.config['lam_scale']
    assert float(agent_1.lam) != pytest.approx(float(agent.lam))  # so that after and before differ
    assert float(info_1['dual/lambda']) == pytest.approx(lam_scale * float(agent_1.lam))
    assert float(info_2['dual/lambda']) == pytest.approx(lam_scale * float(agent_2.lam))
    assert float(info_1['dual/sigma_scale']) == pytest.approx(1.0 / np.sqrt(lam_scale * float(agent_1.lam)))
    assert float(info_1['dual/kl_budget']) == pytest.approx(0.5)
    assert float(info_1['dual/path_kl']) == pytest.approx(float(info_1['actor/path_kl']))
    # The update applied exactly one projected dual step on the logged estimate.
    expected_lam, expected_ema = projected_dual_step(agent.lam, agent.kl_ema, info_1['dual/path_kl'],
                                                     agent.kl_budget, agent.config)
    assert float(agent_1.lam) == pytest.approx(float(expected_lam))
    assert float(agent_1.kl_ema) == pytest.approx(float(expected_ema))
    assert float(info_1['dual/kl_ema']) == pytest.approx(float(agent_1.kl_ema))
    assert int(agent_1.network.step) == 1


def test_start_online_switches_the_budget_without_mutating_the_config():
    agent = _trqam(**UPDATE_CONFIG)
    online = agent.start_online()
    assert float(online.kl_budget) == pytest.approx(0.25)
    assert online.kl_budget.dtype == jnp.float32 and not online.kl_budget.weak_type
    assert online.config['kl_budget'] == 0.5 and online.config['kl_budget_online'] == 0.25
    assert float(agent.kl_budget) == pytest.approx(0.5)  # the offline agent is untouched
    assert float(online.lam) == float(agent.lam) and float(online.kl_ema) == float(agent.kl_ema)
    # The same compiled update serves both phases (the budget is a leaf, not a static field).
    batch = _batch(seed=7)
    agent.update(batch)
    cache_size = TRQAMAgent.update._cache_size()
    _, info = online.update(batch)
    assert TRQAMAgent.update._cache_size() == cache_size
    assert float(info['dual/kl_budget']) == pytest.approx(0.25)

    # kl_budget_online None (the default): a no-op.
    agent = _trqam(kl_budget=0.6)
    assert agent.config['kl_budget_online'] is None
    assert agent.start_online() is agent


# ----------------------------------------------------------------------------------------------------
# 4. Toy trust region: Gaussian base, linear Q, the dual step holds the path KL at the budget.

TOY_MEAN = np.array([0.0, 0.0], np.float32)
TOY_STD = 0.3
TOY_W = np.array([1.5, 1.5], np.float32)  # Q(a) = w . a


def _gaussian_base_velocity(x, t):
    """Exact velocity of the linear interpolant to N(mu, s^2 I) (docs/algorithms.md section 4)."""
    s2 = TOY_STD ** 2
    return TOY_MEAN + (x - t * TOY_MEAN) * (t * s2 - (1.0 - t)) / ((1.0 - t) ** 2 + t ** 2 * s2)


class _Residual(nn.Module):
    """v_theta = v_base + MLP(x, t), with a zero last layer so that fine-tuning starts at the base.

    Matrix products in `dtype` and a float32 output, as the agents' networks (tests/test_bfloat16.py).
    """

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, t):
        h = jnp.concatenate([x, t], axis=-1)
        for _ in range(2):
            h = nn.gelu(nn.Dense(64, dtype=self.dtype)(h))
        return nn.Dense(x.shape[-1], kernel_init=nn.initializers.zeros, dtype=self.dtype)(h).astype(jnp.float32)


def _train_toy_trust_region(budget, steps, config, flow_steps=10, batch_size=256, seed=0, dtype=jnp.float32):
    """Adjoint matching on Q(a) = w.a with sigma_k = g_k / sqrt(lambda_eff), terminal adjoint scale 1, the
    projected dual step after every gradient step. Returns the final lambda_eff, the per-step D_hat, and a
    large-batch path KL of the final sampler."""
    residual = _Residual(dtype)
    dim = TOY_MEAN.shape[0]
    params = residual.init(jax.random.PRNGKey(seed), jnp.zeros((1, dim)), jnp.zeros((1, 1)))
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-3))
    reward = lambda a: a @ TOY_W  # noqa: E731
    horizon = 1  # one action per chunk: D_hat / H = D_hat

    def rollout(params, rng, num):
        fine = lambda x, t: _gaussian_base_velocity(x, t) + residual.apply(params, x, t)  # noqa: E731
        noise_rng, rollout_rng = jax.random.split(rng)
        noise = jax.random.normal(noise_rng, (num, dim))
        return memoryless_sde_rollout(fine, _gaussian_base_velocity, noise, rollout_rng, flow_steps)

    def loss_fn(params, rng, lam_eff):
        sde = rollout(params, rng, batch_size)
        adjoints = lean_adjoint(_gaussian_base_velocity, sde.states,
                                terminal_adjoint(reward, sde.terminal, 1.0), flow_steps)
        loss = adjoint_matching_loss(sde, adjoints, sde.noise_scales / jnp.sqrt(lam_eff))
        return loss, jnp.mean(path_kl(sde)) / horizon

    def step(carry, rng):
        params, opt_state, lam, kl_ema = carry
        grads, kl = jax.grad(loss_fn, has_aux=True)(params, rng, config['lam_scale'] * lam)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        lam, kl_ema = projected_dual_step(lam, kl_ema, kl, jnp.float32(budget), config)
        return (params, opt_state, lam, kl_ema), kl

    @jax.jit
    def train(params, rngs):
        carry = (params, tx.init(params), jnp.float32(config['lambda_init']), jnp.float32(config['kl_ema_init']))
        (params, _, lam, _), kls = jax.lax.scan(step, carry, rngs)
        final_kl = jnp.mean(path_kl(rollout(params, jax.random.PRNGKey(seed + 100), 8192))) / horizon
        return config['lam_scale'] * lam, kls, final_kl

    lam_eff, kls, final_kl = train(params, jax.random.split(jax.random.PRNGKey(seed + 1), steps))
    return float(lam_eff), np.asarray(kls), float(final_kl)


def test_dual_step_holds_the_path_kl_of_a_trained_sampler_at_its_budget():
    # Analytic reference (exact at the SOC optimum): pi* = N(mu + s^2 w / lambda, s^2 I) and
    # KL(lambda) = s^2 ||w||^2 / (2 lambda^2) = 0.2025 / lambda^2, so the budgets 0.1 and 0.4 are reached at
    # lambda_eff ~ 1.4 and ~ 0.7 (lam ~ 0.47 and ~ 0.24, inside [lambda_min, lambda_max]); the tilted mean
    # shift s^2 w / lambda <= 0.2 keeps the samples inside the clip box [-1, 1].
    # With K = 10 the Girsanov estimate D_hat of the discretised chain is larger than the continuous KL at
    # the same lambda, so lambda settles ~30% above these values; the estimate the dual step controls is
    # D_hat, and that is what must settle at the budget.
    config = dict(get_trqam_config())
    # A faster dual step than the default eta_lambda = 0.01 so that this CI test converges in 800 steps;
    # the update formula is the agent's own projected_dual_step.
    config['dual_lr'] = 0.05
    results = {}
    for budget in (0.1, 0.4):
        lam_eff, kls, final_kl = _train_toy_trust_region(budget, steps=800, config=config)
        results[budget] = lam_eff
        assert np.mean(kls[-200:]) == pytest.approx(budget, rel=0.15), (budget, np.mean(kls[-200:]))
        assert final_kl == pytest.approx(budget, rel=0.15), (budget, final_kl)
        assert config['lambda_min'] < lam_eff / config['lam_scale'] < config['lambda_max']
    # For linear Q the discrete fixed point's control is proportional to 1 / lambda, so D_hat ~ 1 / lambda^2
    # exactly as in continuous time: a 4x smaller budget needs a 2x larger lambda.
    assert results[0.1] / results[0.4] == pytest.approx(2.0, rel=0.1)


# ----------------------------------------------------------------------------------------------------
# Smoke test of experiments/trust_region_toy.py.


def test_trust_region_toy_quick_run_writes_results_and_figure(tmp_path):
    from experiments import trust_region_toy

    trust_region_toy.run(str(tmp_path), quick=True)
    assert os.path.getsize(tmp_path / 'trust_region_toy.png') > 10_000
    with open(tmp_path / 'results.json') as f:
        results = json.load(f)
    for key in ('steps', 'seed', 'setup', 'dual', 'eval_steps', 'base', 'runs', 'train_seconds'):
        assert key in results, key
    setup = results['setup']
    expected_runs = (len(setup['inv_temps']) + len(setup['budgets'])) * len(setup['critic_errors'])
    assert len(results['runs']) == expected_runs
    assert {run['method'] for run in results['runs']} == {'qam', 'trqam'}
    for run in results['runs']:
        for name in ('path_kl', 'true_reward', 'critic_reward', 'bump_mass', 'lambda_eff'):
            assert np.isfinite(run['final'][name]), name
            assert len(run['curves'][name]) == len(results['eval_steps']), name
        assert run['tv_to_critic_free'] is not None and 0.0 <= run['tv_to_critic_free'] <= 1.0
        assert run['w1_to_critic_free'] >= 0.0
        for name in ('path_kl', 'true_reward', 'tv_to_critic_free'):
            assert np.isfinite(run['exact'][name]), name
        if run['method'] == 'qam':
            assert run['exact']['lemma1_tv_bound'] >= run['exact']['tv_to_critic_free'] - 1e-6  # Lemma 1 holds
            assert run['final']['lambda_eff'] == pytest.approx(1.0 / run['inv_temp'], rel=1e-5)
        else:
            assert run['budget'] in setup['budgets']
        if run['critic_error'] == 0.0:
            assert run['tv_to_critic_free'] == 0.0
    # The qualitative TRQAM claim, robust even in the quick setting (a larger dual step size, see QUICK):
    # the path KL that the dual step controls (D_hat on the training batches, last 20% of the steps) sits at the
    # budget, with or without the misleading critic bump.
    for run in results['runs']:
        if run['method'] == 'trqam':
            assert run['train_path_kl'] == pytest.approx(run['budget'], rel=0.3), run['critic_error']
