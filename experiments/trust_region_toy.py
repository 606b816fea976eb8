"""Trust region vs fixed temperature under critic error, on a one-step bandit that runs on a laptop CPU.

Reproduces the stability argument of the TRQAM paper (docs/algorithms.md section 4, Lemma 1) on a toy where
everything is known:

* Base policy: a 1-D mixture 0.5 N(-0.5, 0.15^2) + 0.5 N(0.5, 0.15^2) with its exact flow velocity (the
  marginal velocity of the linear interpolant, a posterior-weighted sum of per-component velocities).
* True reward Q*(a) = a (the right mode is better).
* Learned critic Q~ = Q* + eps * exp(-a^2 / (2 * 0.2^2)): a misleading bump of height eps (the critic
  error, ||Q~ - Q*||_inf = eps) between the two modes, where the base has little mass (no data; 2% of
  the base lies within 0.2 of it). It is wide enough that the rollouts feel its gradient: a bump the
  sampler never reaches cannot mislead it.
* Fine-tuning, on Q~ only, with the shared memoryless-SDE core of core/flow.py (rollout, lean adjoint,
  adjoint-matching loss, Girsanov path KL): QAM at fixed inverse temperatures c (sigma_k = g_k, terminal
  adjoint -c grad Q~), and TRQAM at several path-KL budgets (sigma_k = g_k / sqrt(lambda_eff), terminal
  adjoint -grad Q~, agents.trqam.projected_dual_step after every gradient step, the agent's defaults).
  The fine-tuned flow is v_theta = v_base + MLP(x, t) with a zero last layer, so it starts at the base.

Measured, against training steps and against the critic error eps: the path KL from the base (the
Girsanov estimate D_hat on fresh rollouts, and its average on the training batches, which the dual step
controls), the true reward E[Q*] and the critic's belief E[Q~] of the terminal actions of the SDE (the
process whose KL is measured; `true_reward_ode` is the deterministic Euler sampler the agents act with),
the mass put on the bump, and the distance (TV of histograms, and W1) to the critic-free solution: the
same method and setting fine-tuned on Q* (eps = 0, same seed, so the runs are coupled). Final values
average the evaluations of the last 20% of training. The JSON also holds the exact continuous-time
optima (quadrature of pi_base exp(beta Q~(clip a)); for TRQAM beta solves KL = eps_KL) and Lemma 1's
bound TV(pi_Q*, pi_Q~) <= (exp(2 beta eps) - 1) / 2 for QAM. For TRQAM the analogous bound does not
depend on eps: by Pinsker through the base, TV(pi_eps, pi_0) <= 2 sqrt(eps_KL / 2) (for the SDE's
terminal marginals, whose KL the path KL bounds).

Caveats, visible in the numbers: with K = 10 the discretised chain is not the continuous one (the base
SDE puts 7% of its mass within 0.2 of the bump instead of 2%; D_hat at a given lambda exceeds the
continuous KL), and the samplers need not reach the exact optimum in the given steps (QAM at c = 10
with a large bump is far from its fixed point).

Example (a few minutes on 2 CPU cores):
    python experiments/trust_region_toy.py --out_dir=runs/trust_region_toy
"""

import json
import os
import sys
import time

if __name__ == '__main__':
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from absl import flags  # noqa: E402

from agents.trqam import get_config as get_trqam_config  # noqa: E402
from agents.trqam import projected_dual_step  # noqa: E402
from core.flow import (  # noqa: E402
    adjoint_matching_loss,
    euler_ode_sample,
    lean_adjoint,
    memoryless_sde_rollout,
    path_kl,
    terminal_adjoint,
)

# Private flag registry: importing this module (e.g. from a test) never clashes with other absl flags.
FLAGS = flags.FlagValues()
flags.DEFINE_string('out_dir', 'runs/trust_region_toy', 'Where the JSON and the PNG are written.', flag_values=FLAGS)
flags.DEFINE_integer('steps', 2000, 'Gradient steps per run.', flag_values=FLAGS)
flags.DEFINE_integer('seed', 0, 'Seed (shared by all runs, so that eps = 0 is a coupled reference).', flag_values=FLAGS)
flags.DEFINE_bool('quick', False, 'A very fast setting for a smoke test (few settings, few steps).', flag_values=FLAGS)

# The problem.
BASE_MEANS = (-0.5, 0.5)
BASE_STDS = (0.15, 0.15)
BASE_WEIGHTS = (0.5, 0.5)
BUMP_CENTER = 0.0
BUMP_WIDTH = 0.2
BUMP_HALF_WINDOW = 0.2  # "mass on the bump" = fraction of actions within this distance of its centre
HORIZON = 1  # one action per chunk: D_hat / H = D_hat

FULL = dict(
    critic_errors=(0.0, 0.5, 1.0, 1.5, 2.0),
    inv_temps=(1.0, 3.0, 10.0),
    budgets=(0.1, 0.3, 1.0),
    batch_size=256,
    flow_steps=10,  # K, as in the paper
    num_evals=30,  # evaluation points along training
    eval_samples=4096,
    dual_lr=None,  # None: the agent's default eta_lambda
)
QUICK = dict(
    critic_errors=(0.0, 2.0),
    inv_temps=(1.0, 10.0),
    budgets=(0.1, 0.3),
    batch_size=128,
    flow_steps=10,
    num_evals=5,
    eval_samples=2048,
    dual_lr=0.05,  # 5x the default so that lambda settles within the few quick steps
)
QUICK_STEPS = 600
HIST_BINS = 40
FINAL_FRACTION = 0.2
METRICS = ('path_kl', 'true_reward', 'critic_reward', 'bump_mass', 'true_reward_ode', 'lambda_eff', 'kl_ema')


def base_velocity(x, t):
    """Exact velocity of the linear interpolant x_t = (1 - t) x_0 + t x_1 to the mixture base (1-D).

    Given component i, x_t ~ N(t m_i, var_i(t)) with var_i = (1 - t)^2 + t^2 s_i^2 and velocity
    v_i = m_i + (x - t m_i) (t s_i^2 - (1 - t)) / var_i; the marginal velocity averages the v_i under the
    posterior of the component given x_t.
    """
    means, stds = jnp.asarray(BASE_MEANS), jnp.asarray(BASE_STDS)
    var = (1.0 - t) ** 2 + t ** 2 * stds ** 2  # (..., C) from t (..., 1)
    centred = x - t * means
    logits = jnp.log(jnp.asarray(BASE_WEIGHTS)) - 0.5 * centred ** 2 / var - 0.5 * jnp.log(var)
    velocities = means + centred * (t * stds ** 2 - (1.0 - t)) / var
    return jnp.sum(jax.nn.softmax(logits, axis=-1) * velocities, axis=-1, keepdims=True)


def true_reward(actions):
    return actions[..., 0]


def bump(actions):
    return jnp.exp(-jnp.square(actions[..., 0] - BUMP_CENTER) / (2.0 * BUMP_WIDTH ** 2))


def learned_critic(actions, critic_error):
    return true_reward(actions) + critic_error * bump(actions)


class Residual(nn.Module):
    """v_theta(x, t) - v_base(x, t); the zero last layer makes the fine-tuned flow start at the base."""

    hidden_dims: tuple = (64, 64)

    @nn.compact
    def __call__(self, x, t):
        h = jnp.concatenate([x, t], axis=-1)
        for size in self.hidden_dims:
            h = nn.gelu(nn.Dense(size)(h))
        return nn.Dense(x.shape[-1], kernel_init=nn.initializers.zeros)(h)


def make_runner(setup, dual_config, steps):
    """Jitted functions over a batch of runs (vmapped): init, `chunk` gradient steps, evaluation.

    A run is described by `trust_region` (0: QAM, 1: TRQAM), `inv_temp` (QAM's c), `budget` (TRQAM's
    eps_KL) and `critic_error` (the bump height); all runs share shapes, so one compilation serves all.
    """
    residual = Residual()
    flow_steps, batch_size = setup['flow_steps'], setup['batch_size']
    # Cosine decay of the step size (3e-3 -> 3e-4) so that the final samplers are not dominated by SGD noise.
    schedule = optax.cosine_decay_schedule(3e-3, steps, alpha=0.1)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    lam_scale = dual_config['lam_scale']

    def fine_velocity(params):
        return lambda x, t: base_velocity(x, t) + residual.apply(params, x, t)  # noqa: E731

    def rollout(params, rng, num):
        noise_rng, rollout_rng = jax.random.split(rng)
        noise = jax.random.normal(noise_rng, (num, 1))
        return memoryless_sde_rollout(fine_velocity(params), base_velocity, noise, rollout_rng, flow_steps)

    def loss_fn(params, rng, run, lam):
        sde = rollout(params, rng, batch_size)
        trust_region = run['trust_region'] > 0
        critic = lambda a: learned_critic(a, run['critic_error'])  # noqa: E731
        # QAM: a_K = -c grad Q~, sigma_k = g_k.  TRQAM: a_K = -grad Q~, sigma_k = g_k / sqrt(lambda_eff).
        scale = jnp.where(trust_region, 1.0, run['inv_temp'])
        adjoints = lean_adjoint(base_velocity, sde.states, terminal_adjoint(critic, sde.terminal, scale), flow_steps)
        sigmas = jnp.where(trust_region, sde.noise_scales / jnp.sqrt(lam_scale * lam), sde.noise_scales)
        loss = adjoint_matching_loss(sde, adjoints, sigmas)
        return loss, jnp.mean(path_kl(sde)) / HORIZON

    def init(run, rng):
        params = residual.init(rng, jnp.zeros((1, 1)), jnp.zeros((1, 1)))
        return dict(params=params, opt_state=tx.init(params), lam=jnp.float32(dual_config['lambda_init']),
                    kl_ema=jnp.float32(dual_config['kl_ema_init']), rng=jax.random.fold_in(rng, 1))

    def train_chunk(state, run, num_steps):
        def step(state, _):
            rng, step_rng = jax.random.split(state['rng'])
            grads, kl = jax.grad(loss_fn, has_aux=True)(state['params'], step_rng, run, state['lam'])
            updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
            lam, kl_ema = projected_dual_step(state['lam'], state['kl_ema'], kl, run['budget'], dual_config)
            trust_region = run['trust_region'] > 0
            state = dict(params=optax.apply_updates(state['params'], updates), opt_state=opt_state,
                         lam=jnp.where(trust_region, lam, state['lam']),
                         kl_ema=jnp.where(trust_region, kl_ema, state['kl_ema']), rng=rng)
            return state, kl

        state, kls = jax.lax.scan(step, state, None, length=num_steps)
        return state, jnp.mean(kls)

    def evaluate(state, run, rng, num):
        """Path KL on fresh SDE rollouts; rewards of their terminal actions (the process whose KL is measured)
        and of the deterministic ODE sampler (how the agents act)."""
        sde_rng, ode_rng = jax.random.split(rng)
        sde = rollout(state['params'], sde_rng, num)
        actions = jnp.clip(sde.terminal, -1.0, 1.0)
        ode_actions = euler_ode_sample(fine_velocity(state['params']), jax.random.normal(ode_rng, (num, 1)), flow_steps)
        lam_eff = jnp.where(run['trust_region'] > 0, lam_scale * state['lam'], 1.0 / run['inv_temp'])
        metrics = dict(
            path_kl=jnp.mean(path_kl(sde)) / HORIZON,
            true_reward=jnp.mean(true_reward(actions)),
            critic_reward=jnp.mean(learned_critic(actions, run['critic_error'])),
            bump_mass=jnp.mean(jnp.abs(actions[:, 0] - BUMP_CENTER) < BUMP_HALF_WINDOW),
            true_reward_ode=jnp.mean(true_reward(ode_actions)),
            lambda_eff=lam_eff,
            kl_ema=state['kl_ema'],
        )
        return metrics, actions[:, 0]

    return dict(
        init=jax.jit(jax.vmap(init)),
        train_chunk=jax.jit(jax.vmap(train_chunk, in_axes=(0, 0, None)), static_argnums=2),
        evaluate=jax.jit(jax.vmap(evaluate, in_axes=(0, 0, None, None)), static_argnums=3),
    )


# ----------------------------------------------------------------------------------------------------
# Exact continuous-time optima by quadrature (numpy): pi_beta proportional to pi_base exp(beta Q~(clip a)).

_GRID = np.linspace(-2.0, 2.0, 40001)
_DX = _GRID[1] - _GRID[0]


def _base_density():
    return sum(w * np.exp(-0.5 * ((_GRID - m) / s) ** 2) / (np.sqrt(2 * np.pi) * s)
               for m, s, w in zip(BASE_MEANS, BASE_STDS, BASE_WEIGHTS))


def _tilted(beta, critic_error):
    clipped = np.clip(_GRID, -1.0, 1.0)  # the terminal adjoint differentiates Q~ at clip(a)
    logits = beta * (clipped + critic_error * np.exp(-((clipped - BUMP_CENTER) ** 2) / (2 * BUMP_WIDTH ** 2)))
    density = _base_density() * np.exp(logits - logits.max())
    return density / (density.sum() * _DX)


def _kl_to_base(density):
    base = _base_density()
    mask = density > 1e-300
    return float(np.sum(density[mask] * np.log(density[mask] / base[mask])) * _DX)


def _tv(p, q):
    return float(0.5 * np.sum(np.abs(p - q)) * _DX)


def _mean_true_reward(density):
    return float(np.sum(density * np.clip(_GRID, -1, 1)) * _DX)


def _trust_region_temperature(budget, critic_error):
    """lambda with KL(pi_{1/lambda} || pi_base) = budget (the KL decreases in lambda), by bisection in log."""
    lo, hi = np.log(1e-3), np.log(1e3)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if _kl_to_base(_tilted(np.exp(-mid), critic_error)) > budget:
            lo = mid
        else:
            hi = mid
    return float(np.exp(0.5 * (lo + hi)))


def exact_reference(method, value, critic_error):
    """The SOC optimum in continuous time for one setting, and its distance to the critic-free one."""
    if method == 'qam':
        beta, beta_free = value, value
    else:
        beta, beta_free = 1.0 / _trust_region_temperature(value, critic_error), 1.0 / _trust_region_temperature(value, 0.0)
    density, free = _tilted(beta, critic_error), _tilted(beta_free, 0.0)
    out = dict(lambda_eff=1.0 / beta, path_kl=_kl_to_base(density), true_reward=_mean_true_reward(density),
               tv_to_critic_free=_tv(density, free))
    if method == 'qam':
        out['lemma1_tv_bound'] = float((np.exp(2 * beta * critic_error) - 1) / 2)
    return out


# ----------------------------------------------------------------------------------------------------


def wasserstein_1(samples, reference_samples):
    """W1 distance between two equal-size 1-D sample sets: the mean gap between sorted samples."""
    return float(np.mean(np.abs(np.sort(samples) - np.sort(reference_samples))))


def histogram_tv(samples, reference_samples):
    """TV distance between two sample sets on HIST_BINS bins of [-1, 1] (actions are clipped)."""
    edges = np.linspace(-1.0, 1.0, HIST_BINS + 1)
    p, _ = np.histogram(np.clip(samples, -1, 1), edges)
    q, _ = np.histogram(np.clip(reference_samples, -1, 1), edges)
    return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())


def run_experiment(steps, seed, setup, log=print):
    dual_config = dict(get_trqam_config())
    if setup['dual_lr'] is not None:
        dual_config['dual_lr'] = setup['dual_lr']
    settings = [('qam', c) for c in setup['inv_temps']] + [('trqam', b) for b in setup['budgets']]
    runs = [(method, value, eps) for method, value in settings for eps in setup['critic_errors']]
    batch = dict(
        trust_region=jnp.asarray([method == 'trqam' for method, _, _ in runs], jnp.float32),
        inv_temp=jnp.asarray([value if method == 'qam' else 1.0 for method, value, _ in runs], jnp.float32),
        budget=jnp.asarray([value if method == 'trqam' else 1.0 for method, value, _ in runs], jnp.float32),
        critic_error=jnp.asarray([eps for _, _, eps in runs], jnp.float32),
    )
    runner = make_runner(setup, dual_config, steps)
    key = jax.random.PRNGKey(seed)
    init_key, eval_key, base_key = jax.random.split(key, 3)
    state = runner['init'](batch, jnp.stack([init_key] * len(runs)))  # one seed for all: coupled runs

    num_evals = min(setup['num_evals'], steps)
    num_final = max(1, int(round(FINAL_FRACTION * num_evals)))
    boundaries = np.linspace(0, steps, num_evals + 1).astype(int)
    curves = {name: [] for name in METRICS}
    train_kl, final_actions = [], []
    start = time.time()
    for i in range(num_evals + 1):
        if i > 0:
            state, chunk_kl = runner['train_chunk'](state, batch, int(boundaries[i] - boundaries[i - 1]))
            train_kl.append(np.asarray(chunk_kl))
        metrics, actions = runner['evaluate'](state, batch, jax.random.fold_in(eval_key, i), setup['eval_samples'])
        for name in curves:
            curves[name].append(np.asarray(metrics[name]))
        if i > num_evals - num_final:
            final_actions.append(np.asarray(actions))
        if i > 0:
            log(f'step {boundaries[i]:6d}/{steps}  ({time.time() - start:5.1f} s)')
    train_seconds = time.time() - start
    final_actions = np.concatenate(final_actions, axis=1)  # (runs, num_final * eval_samples)

    base_rollout = memoryless_sde_rollout(base_velocity, base_velocity, jax.random.normal(base_key, (final_actions.shape[1], 1)),
                                          jax.random.fold_in(base_key, 1), setup['flow_steps'])
    base_actions = np.clip(np.asarray(base_rollout.terminal)[:, 0], -1, 1)
    edges = np.linspace(-1.0, 1.0, HIST_BINS + 1)
    results = []
    for r, (method, value, eps) in enumerate(runs):
        reference = runs.index((method, value, 0.0)) if 0.0 in setup['critic_errors'] else None
        histogram, _ = np.histogram(final_actions[r], edges)
        results.append(dict(
            method=method,
            inv_temp=value if method == 'qam' else None,
            budget=value if method == 'trqam' else None,
            critic_error=eps,
            # Averages over the evaluations of the last FINAL_FRACTION of training (smooths the oscillations).
            final={name: float(np.mean([values[r] for values in curves[name][-num_final:]])) for name in curves},
            # D_hat on the training batches of the same window: what the dual step controls.
            train_path_kl=float(np.mean([chunk[r] for chunk in train_kl[-num_final:]])),
            # Distances to the critic-free solution: the same method and setting trained on Q* (eps = 0).
            tv_to_critic_free=None if reference is None else histogram_tv(final_actions[r], final_actions[reference]),
            w1_to_critic_free=None if reference is None else wasserstein_1(final_actions[r], final_actions[reference]),
            tv_to_base=histogram_tv(final_actions[r], base_actions),
            curves={name: [float(values[r]) for values in curves[name]] for name in curves},
            action_histogram=(histogram / histogram.sum()).tolist(),
            exact=exact_reference(method, value, eps),
        ))
    return dict(
        description=('One-step bandit, 1-D: base 0.5 N(-0.5, 0.15^2) + 0.5 N(0.5, 0.15^2), true reward Q*(a) = a, '
                     f'critic Q~ = Q* + eps exp(-a^2 / (2 {BUMP_WIDTH:g}^2)); QAM at fixed inverse temperature c vs '
                     'TRQAM at a path-KL budget eps_KL, both fine-tuned on Q~ with the shared adjoint-matching core. '
                     'Rewards, masses and distances are measured on the terminal actions of the memoryless SDE '
                     '(the process whose path KL is measured); true_reward_ode is the deterministic ODE sampler. '
                     '"final" values are means over the evaluations of the last '
                     f'{FINAL_FRACTION:.0%} of training; distances use the actions pooled over them.'),
        steps=steps,
        seed=seed,
        setup={k: (list(v) if isinstance(v, tuple) else v) for k, v in setup.items()},
        dual={k: dual_config[k] for k in ('lam_scale', 'lambda_init', 'lambda_min', 'lambda_max', 'dual_lr',
                                          'kl_ema_coef', 'kl_clip_coef')},
        eval_steps=boundaries.tolist(),
        histogram_edges=edges.tolist(),
        base=dict(true_reward_exact=_mean_true_reward(_tilted(0.0, 0.0)),
                  true_reward=float(np.mean(base_actions)),
                  bump_mass=float(np.mean(np.abs(base_actions - BUMP_CENTER) < BUMP_HALF_WINDOW)),
                  action_histogram=(np.histogram(base_actions, edges)[0] / len(base_actions)).tolist()),
        train_seconds=train_seconds,
        runs=results,
    )


def _label(run):
    return f'QAM c={run["inv_temp"]:g}' if run['method'] == 'qam' else f'TRQAM eps_KL={run["budget"]:g}'


def _colour(run, setup):
    import matplotlib.pyplot as plt  # noqa: PLC0415

    if run['method'] == 'qam':
        values, cmap = setup['inv_temps'], plt.cm.Reds
        value = run['inv_temp']
    else:
        values, cmap = setup['budgets'], plt.cm.Blues
        value = run['budget']
    rank = list(values).index(value)
    return cmap(0.45 + 0.5 * rank / max(1, len(values) - 1))


def plot(results, path):
    import matplotlib  # noqa: PLC0415

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # noqa: PLC0415

    setup, runs = results['setup'], results['runs']
    errors = setup['critic_errors']
    worst = max(errors)
    settings = []
    for run in runs:
        if (run['method'], run['inv_temp'], run['budget']) not in [(s['method'], s['inv_temp'], s['budget']) for s in settings]:
            settings.append(run)

    def series(setting):
        return [r for r in runs if (r['method'], r['inv_temp'], r['budget']) == (setting['method'], setting['inv_temp'], setting['budget'])]

    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    steps = results['eval_steps']
    for setting in settings:
        colour, label = _colour(setting, setup), _label(setting)
        worst_run = next(r for r in series(setting) if r['critic_error'] == worst)
        axes[0, 0].plot(steps[1:], worst_run['curves']['path_kl'][1:], color=colour, label=label)  # log scale: skip 0
        axes[0, 1].plot(steps, worst_run['curves']['true_reward'], color=colour, label=label)
        line = series(setting)
        xs = [r['critic_error'] for r in line]
        axes[1, 0].plot(xs, [r['final']['path_kl'] for r in line], 'o-', color=colour, label=label)
        axes[1, 1].plot(xs, [r['final']['true_reward'] for r in line], 'o-', color=colour, label=label)
        if line[0]['tv_to_critic_free'] is not None:
            axes[1, 2].plot(xs, [r['tv_to_critic_free'] for r in line], 'o-', color=colour, label=label)
        if setting['method'] == 'qam':
            axes[1, 2].plot(xs, [min(1.0, r['exact']['lemma1_tv_bound']) for r in line], ':', color=colour)
        if setting['method'] == 'trqam':
            for ax in (axes[0, 0], axes[1, 0]):
                ax.axhline(setting['budget'], color=colour, ls='--', lw=0.8)
            # Pinsker through the base: TV(pi_eps, pi_0) <= 2 sqrt(eps_KL / 2), whatever the critic error.
            axes[1, 2].axhline(min(1.0, np.sqrt(2 * setting['budget'])), color=colour, ls='--', lw=0.8)
        axes[0, 2].step(results['histogram_edges'][:-1], worst_run['action_histogram'], where='post', color=colour,
                        label=label)
    axes[0, 2].step(results['histogram_edges'][:-1], results['base']['action_histogram'], where='post', color='k',
                    lw=2, label='base')
    axes[0, 2].axvspan(BUMP_CENTER - BUMP_HALF_WINDOW, BUMP_CENTER + BUMP_HALF_WINDOW, color='gold', alpha=0.3,
                       label='critic bump')
    axes[1, 1].axhline(results['base']['true_reward_exact'], color='k', lw=0.8, ls='--', label='base')

    axes[0, 0].set(title=f'Path KL from the base during training (critic error {worst:g})', xlabel='gradient step',
                   ylabel='D_hat (Girsanov)', yscale='log')
    axes[0, 1].set(title=f'True reward E[Q*] during training (critic error {worst:g})', xlabel='gradient step',
                   ylabel='E[Q*(a)]')
    axes[0, 2].set(title=f'Final action distribution (critic error {worst:g})', xlabel='action a',
                   ylabel='fraction of samples')
    axes[1, 0].set(title='Final path KL vs critic error (dashed: TRQAM budgets)', xlabel='critic error eps',
                   ylabel='D_hat (Girsanov)', yscale='log')
    axes[1, 1].set(title='Final true reward vs critic error', xlabel='critic error eps', ylabel='E[Q*(a)]')
    axes[1, 2].set(title='TV to the critic-free policy\n(dotted: Lemma 1 bound for QAM; dashed: sqrt(2 eps_KL))',
                   xlabel='critic error eps', ylabel='TV (histograms)', ylim=(-0.02, 1.02))
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    axes[0, 2].set_ylim(0, 1.45 * axes[0, 2].get_ylim()[1])  # room for the legend
    axes[0, 2].legend(fontsize=7, loc='upper left', ncol=2)
    axes[1, 1].legend(fontsize=8)
    fig.suptitle('Fixed temperature (QAM) vs trust region (TRQAM) under a misleading critic bump between the base modes')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_table(results):
    header = (f'{"method":<16}{"eps":>5}{"D_hat":>8}{"train":>8}{"E[Q*]":>8}{"E[Q~]":>8}{"bump":>7}{"TV":>7}{"W1":>7}'
              f'{"lam_eff":>9} | {"exact:KL":>8}{"E[Q*]":>7}{"TV":>7}{"Lemma1":>8}')
    lines = [header]
    for run in results['runs']:
        f, e = run['final'], run['exact']
        tv = '-' if run['tv_to_critic_free'] is None else f'{run["tv_to_critic_free"]:.3f}'
        w1 = '-' if run['w1_to_critic_free'] is None else f'{run["w1_to_critic_free"]:.3f}'
        bound = e.get('lemma1_tv_bound')
        bound = '-' if bound is None else (f'{bound:.2f}' if bound < 100 else '>100')
        lines.append(f'{_label(run):<16}{run["critic_error"]:>5g}{f["path_kl"]:>8.3f}{run["train_path_kl"]:>8.3f}'
                     f'{f["true_reward"]:>8.3f}{f["critic_reward"]:>8.3f}{f["bump_mass"]:>7.3f}{tv:>7}{w1:>7}'
                     f'{f["lambda_eff"]:>9.3f} | {e["path_kl"]:>8.3f}{e["true_reward"]:>7.3f}'
                     f'{e["tv_to_critic_free"]:>7.3f}{bound:>8}')
    base = results['base']
    lines.append(f'base (SDE, K={results["setup"]["flow_steps"]}): E[Q*] {base["true_reward"]:.3f}, '
                 f'bump mass {base["bump_mass"]:.3f}')
    return '\n'.join(lines)


def main(argv):
    if any(arg in ('-h', '--help', '--helpfull') for arg in argv[1:]):
        print(__doc__)
        print(FLAGS.get_help())
        return None
    FLAGS.unparse_flags()
    FLAGS(argv)
    setup = dict(QUICK if FLAGS.quick else FULL)
    steps = QUICK_STEPS if FLAGS.quick and not FLAGS['steps'].present else FLAGS.steps
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    start = time.time()
    results = run_experiment(steps, FLAGS.seed, setup)
    results['total_seconds'] = time.time() - start
    json_path = os.path.join(FLAGS.out_dir, 'results.json')
    png_path = os.path.join(FLAGS.out_dir, 'trust_region_toy.png')
    with open(json_path, 'w') as f:
        json.dump(results, f, indent=1)
    plot(results, png_path)
    print(summary_table(results))
    print(f'Wrote {json_path} and {png_path} ({results["total_seconds"]:.0f} s).')
    return results


if __name__ == '__main__':
    main(sys.argv)
