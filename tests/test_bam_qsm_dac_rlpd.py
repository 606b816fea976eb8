"""BAM, QSM, DAC and RLPD (docs/algorithms.md section 13): the maths they add to core/ against closed forms and
short main.py runs (RLPD's online-only protocol from the registry). Their updates and policies against the
authors' code: tests/test_parity.py."""

import csv
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import main
from core.diffusion import ddpm_sample, noised, vp_schedule
from core.distributions import tanh_gaussian_log_prob, tanh_gaussian_sample
from core.flow import memoryless_sde_bptt, memoryless_sde_rollout, path_kl
from experiments import sweep
from protocols.methods import METHODS
from runner.settings import resolve_config
from tests.conftest import TINY_ENV

TINY = dict(actor_hidden_dims=(16, 16), value_hidden_dims=(16, 16), num_qs=2, batch_size=8, horizon_length=2)
FAST = dict(flow_steps=2, diffusion_steps=2, time_dim=4)  # the keys each config has


def tiny_config(label, **changes):
    config = METHODS[label].default_config()
    config.update(TINY, **{key: value for key, value in FAST.items() if key in config}, **changes)
    return config


# ----------------------------------------------------------------------------------------------------------------------
# The maths in core/.
# ----------------------------------------------------------------------------------------------------------------------


def test_bptt_rollout_is_the_memoryless_sde_with_its_gradient_and_the_authors_control_cost():
    flow_steps, shape = 5, (3, 2)
    rng = jax.random.PRNGKey(0)
    noise = jax.random.normal(jax.random.PRNGKey(1), shape)
    base = lambda x, t: -x + t  # noqa: E731
    fine_of = lambda theta: (lambda x, t: theta * x + t)  # noqa: E731
    rollout = memoryless_sde_rollout(fine_of(-0.5), base, noise, rng, flow_steps)
    increments = jax.random.normal(rng, (flow_steps, *shape))  # the rollout's Brownian increments
    terminal, penalty = memoryless_sde_bptt(fine_of(-0.5), base, noise, increments, flow_steps)
    np.testing.assert_allclose(terminal, rollout.terminal, rtol=1e-5, atol=1e-6)
    # path_kl's sum without the last (noiseless) step, divided by h.
    last = 2.0 / flow_steps / rollout.noise_scales[-1] ** 2 * jnp.sum(
        jnp.square(rollout.fine_velocities[-1] - rollout.base_velocities[-1]), axis=-1)
    np.testing.assert_allclose(penalty / flow_steps, path_kl(rollout) - last, rtol=1e-5, atol=1e-6)

    # The terminal's derivative in the fine field's parameter, through every step, by central differences.
    @jax.jit
    def total(theta):
        return jnp.sum(memoryless_sde_bptt(fine_of(theta), base, noise, increments, flow_steps)[0])

    thetas, delta = jnp.array([-0.5, -0.49, -0.51]), 1e-2
    gradient, values = jax.grad(total)(thetas[0]), jax.vmap(total)(thetas)
    assert abs(float(gradient)) > 0.1
    np.testing.assert_allclose(gradient, (values[1] - values[2]) / (2 * delta), rtol=1e-3)


def test_ddpm_sampler_with_the_exact_noise_of_a_point_mass_returns_it():
    # Data a.s. at c: eps*(x, t) = (x - sqrt(alphabar_t) c) / sqrt(1 - alphabar_t), so x0_hat = c at every step, and
    # the last step (t = 1, alphabar_0 = 1, no noise) returns the posterior mean c, or c itself.
    schedule = vp_schedule(5)
    assert schedule.alpha_bars[0] == 1.0 and bool(jnp.all(jnp.diff(schedule.alpha_bars) < 0))
    np.testing.assert_allclose(schedule.alpha_bars[-1], np.exp(-0.1 - 9.9 / 2), rtol=1e-5)
    c = jnp.array([0.3, -0.7, 0.9])
    exact = lambda x, t: (x - jnp.sqrt(schedule.alpha_bars[t]) * c) / jnp.sqrt(1 - schedule.alpha_bars[t])  # noqa
    noise = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
    np.testing.assert_allclose(noised(schedule, c, exact(noise, jnp.full((4, 1), 5)), 5), noise, rtol=1e-5, atol=1e-5)

    @jax.jit
    def samples(noise, rng):  # QSM's clipping, DAC's, and the authors' step without either
        return [ddpm_sample(exact, schedule, noise, rng, clip_denoised=clip_denoised, clip_steps=clip_steps,
                            posterior_mean=posterior_mean)
                for clip_denoised, clip_steps, posterior_mean in ((False, True, True), (True, False, True),
                                                                  (False, False, False))]

    for actions in samples(noise, jax.random.PRNGKey(1)):
        np.testing.assert_allclose(actions, jnp.broadcast_to(c, (4, 3)), atol=1e-5)


def test_log_prob_of_given_actions_is_the_sampler_s():
    means = jax.random.normal(jax.random.PRNGKey(0), (64, 3))
    log_stds = jnp.full((64, 3), -0.5)
    actions, log_probs = tanh_gaussian_sample(jax.random.PRNGKey(1), means, log_stds)
    np.testing.assert_allclose(tanh_gaussian_log_prob(actions, means, log_stds), log_probs, rtol=1e-3, atol=1e-3)


# ----------------------------------------------------------------------------------------------------------------------
# main.py.
# ----------------------------------------------------------------------------------------------------------------------


def flag_values(data_dir, save_dir, **changes):
    return {**main.default_flag_values(), 'env_name': TINY_ENV, 'dataset_dir': data_dir, 'save_dir': str(save_dir),
            'protocol': 'none', 'eval_episodes': 1, 'eval_workers': 0, 'steps_per_call': 10, 'offline_steps': 10,
            'online_steps': 20, 'start_training': 10, 'log_interval': 10, 'eval_interval': 0, 'save_interval': 0,
            **changes}


def logged_phases(run_dir):
    with open(os.path.join(run_dir, 'train.csv'), newline='') as f:
        return [(int(float(row['step'])), row['phase']) for row in csv.DictReader(f)]


# Each phase compiles its own update program (seconds on a CI core): BAM runs both phases, QSM the offline one
# (RLPD's test below runs the online phase of an agent without a flow), DAC, QSM's agent with another config, none
# (its update and sampler are in the parity tests).
@pytest.mark.parametrize('label, online_steps, phases', [
    ('BAM', 20, [(10, 'offline'), (20, 'online'), (30, 'online')]),
    ('QSM', 0, [(10, 'offline')]),
])
def test_main_trains_offline_then_online(label, online_steps, phases, tiny_dataset_dir, tmp_path):
    values = flag_values(tiny_dataset_dir, tmp_path, online_steps=online_steps)
    (run_dir,) = main.train(values, tiny_config(label, horizon_length=None))
    assert logged_phases(run_dir) == phases


def test_rlpd_runs_online_only_by_its_registry_entry(tiny_dataset_dir, tmp_path):
    """`--protocol=qam` (any paper's protocol): no offline phase and balanced batches, set by the method, not by
    main.py; an explicit flag still wins."""
    given = resolve_config(flag_values(tiny_dataset_dir, tmp_path, protocol='qam'), tiny_config('RLPD'),
                           defaults=main.default_flag_values())
    assert given.offline_steps == 10 and given.balanced_sampling
    values = flag_values(tiny_dataset_dir, tmp_path, protocol='qam', offline_steps=1_000_000)  # the default
    (run_dir,) = main.train(values, tiny_config('RLPD', horizon_length=None))
    recorded = json.load(open(os.path.join(run_dir, 'flags.json')))
    assert recorded['offline_steps'] == 0 and recorded['balanced_sampling'] is True
    assert recorded['protocol_settings']['offline_steps'] == 0
    assert logged_phases(run_dir) == [(10, 'online'), (20, 'online')]


def test_the_sweep_launches_rlpd_online_only(tmp_path):
    spec = sweep.resolve_spec('paper', protocol='qam', dataset_dir=str(tmp_path), domains=('cube-double-play',),
                              tasks=(1,), seeds=(0,), methods=('FQL', 'RLPD'))
    jobs = {job.method: job for job in sweep.build_sweep(spec).rl_jobs}
    assert '--offline_steps=0' in jobs['RLPD'].command and '--balanced_sampling' in jobs['RLPD'].command
    assert jobs['RLPD'].total_steps == jobs['RLPD'].updates == spec.online_steps  # costed without offline steps
    assert '--offline_steps=0' not in jobs['FQL'].command and jobs['FQL'].total_steps > spec.online_steps
    # Its per-domain value: set by the protocol in main.py, which the sweep resolves the same way.
    assert sweep.resolve_agent(METHODS['RLPD'], jobs['RLPD'].env_name, 'qam', str(tmp_path), {})['bc_alpha'] == 0.1
