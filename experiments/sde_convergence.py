"""How close the K-step samplers of core/flow.py get to a known Gaussian, as a Markdown table.

With the exact base velocity of the linear interpolant to N(mu, s^2 I) (docs/algorithms.md section 4),
v(x, t) = mu + (x - t mu) (t s^2 - (1 - t)) / ((1 - t)^2 + t^2 s^2), both the memoryless SDE
(`memoryless_sde_rollout`, no control: fine = base) and the Euler ODE (`euler_ode_sample`, clip=False) should end at
N(mu, s^2 I) as K grows. v is affine in x, so every step of both is an affine-Gaussian map and the exact law of the
K-step sampler is Gaussian, with moments from a short recursion (`exact_sampler_moments`). Per K, the table gives the
Monte-Carlo error of flow.py's samplers (max over dims of |mean - mu| and |std - s|) beside the exact K-step error:
discretisation bias and sampling noise apart. The same recursion gives the exact fixed point of adjoint matching at
finite K for a Gaussian base and a linear or quadratic reward (`discrete_fixed_point`, used by tests/test_flow.py);
--fixed_point prints how that K-step target approaches the tilted Gaussian of continuous time.

    python experiments/sde_convergence.py --ks=5,10,20,50 --num_samples=100000
    python experiments/sde_convergence.py --fixed_point
"""

import os
import sys

import numpy as np
from absl import app, flags

if __package__ in (None, ''):  # `python experiments/sde_convergence.py` from the repository root.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# tests/test_flow.py's toys for the fixed-point table: a linear and a quadratic reward, and a sharp base (s < h)
# whose explicit lean-adjoint gains 1 + h J_k turn negative near t = 0.8, so that the K = 10 fixed point moves
# against the reward gradient.
FIXED_POINT_CASES = (('linear', dict(mu=-0.1, s=0.2, scale=4.0, w=1.0)),
                     ('quadratic', dict(mu=0.0, s=0.3, scale=1.0, q=0.5 / 0.09, m=0.15)),
                     ('linear, s=0.1', dict(mu=0.0, s=0.1, scale=4.0, w=1.0)))
FIXED_POINT_KS = (5, 10, 20, 50, 200, 1000)


# Exact maths of the K-step schemes for a Gaussian base (numpy, float64, one scalar per dim).
def base_slope(t, s):
    """D(t) = d v / d x of the exact base velocity (v is affine in x with slope D(t) I)."""
    return (t * s**2 - (1.0 - t)) / ((1.0 - t) ** 2 + t**2 * s**2)


def schedule(flow_steps):
    """(h, t_k, g_k^2) of docs/algorithms.md section 3."""
    h = 1.0 / flow_steps
    t = np.arange(flow_steps) * h
    return h, t, 2.0 * (1.0 - t + h) / (t + h)


def _step_maps(mu, s, flow_steps):
    """Affine maps of one uncontrolled step: the noisy SDE step x -> a0 x + b0 (+ noise) and the base (ODE, and the
    SDE's last) step x -> a_ode x + b_ode. mu may be an array (one entry per dim)."""
    h, t, _ = schedule(flow_steps)
    mu = np.asarray(mu, np.float64)[..., None]
    slope = base_slope(t, s)
    base_offset = mu * (1.0 - t * slope)  # v(x, t) = slope x + base_offset
    return 1.0 + h * (2.0 * slope - 1.0 / (t + h)), 2.0 * h * base_offset, 1.0 + h * slope, h * base_offset


def exact_sampler_moments(mu, s, flow_steps, sampler='sde'):
    """Exact per-dim (mean, std) of the terminal state of flow.py's K-step sampler from x_0 ~ N(0, I)."""
    h, _, g2 = schedule(flow_steps)
    a0, b0, a_ode, b_ode = _step_maps(mu, s, flow_steps)
    mean, var = np.zeros(np.shape(mu)), np.ones(np.shape(mu))
    for k in range(flow_steps):
        if sampler != 'ode' and k < flow_steps - 1:
            mean, var = a0[k] * mean + b0[..., k], a0[k] ** 2 * var + h * g2[k]
        else:  # the ODE, and the SDE's noiseless last step under the base
            mean, var = a_ode[k] * mean + b_ode[..., k], a_ode[k] ** 2 * var
    return mean, np.sqrt(var)


def lean_adjoint_gains(s, flow_steps):
    """M_k with a_k = M_k a_K for the lean adjoint of a Gaussian base: prod_{j>=k} (1 + h J_j)."""
    h, t, _ = schedule(flow_steps)
    jac = 2.0 * base_slope(t + h, s) - 1.0 / (t + h)
    return np.cumprod((1.0 + h * jac)[::-1])[::-1]


def quadratic_control(maps, gains, g2, h, scale, q, m):
    """(alpha, beta) of the optimal affine control for the quadratic reward, solved backwards: with
    a_K = scale q (x_K - m) and E[x_K | x_{k+1} = x] = P x + r, u_k enters E[x_K | x_k] through step k itself,
    which gives a scalar linear equation per step."""
    a0, b0, a_last, b_last = maps
    flow_steps = len(g2)
    alpha, beta = np.zeros(flow_steps), np.zeros(flow_steps)
    slope, offset = a_last[-1], b_last[-1]
    lam = 0.5 * g2[-1] * gains[-1] * scale * q
    beta[-1], alpha[-1] = -lam * slope, -lam * (offset - m)
    for k in range(flow_steps - 2, -1, -1):
        lam = 0.5 * g2[k] * gains[k] * scale * q
        denom = 1.0 + 2.0 * h * lam * slope
        beta[k] = -lam * slope * a0[k] / denom
        alpha[k] = -lam * (slope * b0[k] + offset - m) / denom
        step_slope, step_offset = a0[k] + 2.0 * h * beta[k], b0[k] + 2.0 * h * alpha[k]
        slope, offset = slope * step_slope, slope * step_offset + offset
    return alpha, beta


def controlled_moments(maps, g2, h, alpha, beta):
    """Terminal mean and variance of the rollout under u_k = alpha_k + beta_k x, the expectation of flow.path_kl
    under it, and that of its k = K-1 term (a control the rollout never applies: its last step is the base)."""
    a0, b0, a_last, b_last = maps
    flow_steps = len(g2)
    mean, var, kl, last_kl = 0.0, 1.0, 0.0, 0.0
    for k in range(flow_steps):
        term = 2.0 * h / g2[k] * ((alpha[k] + beta[k] * mean) ** 2 + beta[k] ** 2 * var)
        kl += term
        if k < flow_steps - 1:
            step_slope = a0[k] + 2.0 * h * beta[k]
            mean = step_slope * mean + b0[k] + 2.0 * h * alpha[k]
            var = step_slope**2 * var + h * g2[k]
        else:
            last_kl = term
            mean, var = a_last[k] * mean + b_last[k], a_last[k] ** 2 * var
    return mean, var, kl, last_kl


def discrete_fixed_point(mu, s, flow_steps, scale, w=None, q=None, m=None):
    """Exact fixed point of adjoint matching (sigma_k = g_k) at finite K, for one dim.

    Reward Q(a) = w a (linear) or -q (a - m)^2 / 2 (quadratic), clipping ignored. The optimal control
    u_k(x) = v_theta(x, t_k) - v_base(x, t_k) = -(g_k^2 / 2) E[a_k | x_k = x] is affine in x, u_k = alpha_k + beta_k x.
    Returns a dict of alpha, beta, the controlled rollout's terminal mean and var, path_kl (its expectation),
    last_step_kl (that of the k = K-1 term) and the uncontrolled rollout's base_mean and base_var.
    """
    h, _, g2 = schedule(flow_steps)
    maps = _step_maps(mu, s, flow_steps)
    gains = lean_adjoint_gains(s, flow_steps)
    if q is None:  # a_K = -scale * w for every sample
        alpha, beta = 0.5 * g2 * gains * scale * w, np.zeros(flow_steps)
    else:
        alpha, beta = quadratic_control(maps, gains, g2, h, scale, q, m)
    mean, var, kl, last_kl = controlled_moments(maps, g2, h, alpha, beta)
    base_mean, base_var, _, _ = controlled_moments(maps, g2, h, 0.0 * alpha, 0.0 * beta)
    return dict(alpha=alpha, beta=beta, mean=mean, var=var, path_kl=kl, last_step_kl=last_kl, base_mean=base_mean,
                base_var=base_var)


def tilted_gaussian(mu, s, scale, w=None, q=None, m=None):
    """Continuous-time target pi* ~ N(mu, s^2) exp(scale Q), per dim: (mean, var, KL(pi* || base))."""
    if q is None:
        mean, var = mu + scale * s**2 * w, s**2
    else:
        precision = 1.0 / s**2 + scale * q
        mean, var = (mu / s**2 + scale * q * m) / precision, 1.0 / precision
    kl = 0.5 * (var / s**2 + (mean - mu) ** 2 / s**2 - 1.0 - np.log(var / s**2))
    return mean, var, kl


# Monte Carlo through core/flow.py.
def gaussian_base_velocity(mu, s):
    """The exact velocity of the linear interpolant to N(mu, s^2 I), as a flow.py velocity callable."""
    import jax.numpy as jnp

    mu = jnp.asarray(mu, jnp.float32)
    return lambda x, t: mu + (x - t * mu) * base_slope(t, s)


def sample_terminal(mu, s, flow_steps, num_samples, seed=0, sampler='sde'):
    """Terminal samples of flow.py's sampler with the exact base velocity (no control)."""
    import jax

    from core.flow import euler_ode_sample, memoryless_sde_rollout

    velocity = gaussian_base_velocity(mu, s)
    noise_key, rollout_key = jax.random.split(jax.random.PRNGKey(seed))
    noise = jax.random.normal(noise_key, (num_samples, len(mu)))
    if sampler == 'ode':
        return np.asarray(jax.jit(lambda z: euler_ode_sample(velocity, z, flow_steps, clip=False))(noise), np.float64)
    rollout = jax.jit(lambda z, key: memoryless_sde_rollout(velocity, velocity, z, key, flow_steps).terminal)
    return np.asarray(rollout(noise, rollout_key), np.float64)


def convergence_rows(mu=(0.3, -0.5), s=0.4, ks=(5, 10, 20, 50), num_samples=100_000, seed=0, samplers=('sde', 'ode')):
    """One row per (sampler, K): Monte-Carlo and exact K-step errors of mean and std (max over dims)."""
    mu = np.asarray(mu, np.float64)
    rows = []
    for sampler in samplers:
        for k in ks:
            x = sample_terminal(mu, s, k, num_samples, seed, sampler)
            exact_mean, exact_std = exact_sampler_moments(mu, s, k, sampler)
            rows.append(dict(sampler=sampler, K=k, mc_mean=x.mean(0), mc_std=x.std(0), exact_mean=exact_mean,
                             exact_std=exact_std, mc_mean_err=float(np.max(np.abs(x.mean(0) - mu))),
                             mc_std_err=float(np.max(np.abs(x.std(0) - s))),
                             exact_mean_err=float(np.max(np.abs(exact_mean - mu))),
                             exact_std_err=float(np.max(np.abs(exact_std - s)))))
    return rows


def markdown_table(rows):
    lines = ['| sampler | K | MC max abs mean err | MC max abs std err | exact K-step mean err | exact K-step std err '
             '|', '|---|---|---|---|---|---|']
    lines += [f"| {r['sampler']} | {r['K']} | {r['mc_mean_err']:.4f} | {r['mc_std_err']:.4f} | "
              f"{r['exact_mean_err']:.4f} | {r['exact_std_err']:.4f} |" for r in rows]
    return '\n'.join(lines)


def fixed_point_table(ks=FIXED_POINT_KS):
    """The finite-K adjoint-matching targets of FIXED_POINT_CASES against continuous time."""
    lines = ['| reward | K | mean shift (vs base rollout) | var / base-rollout var | E path_kl | '
             'E path_kl without k=K-1 |', '|---|---|---|---|---|---|']
    for name, case in FIXED_POINT_CASES:
        reward = (case.get('w'), case.get('q'), case.get('m'))
        for k in ks:
            fp = discrete_fixed_point(case['mu'], case['s'], k, case['scale'], *reward)
            lines.append(f"| {name} | {k} | {fp['mean'] - fp['base_mean']:.4f} | {fp['var'] / fp['base_var']:.4f} | "
                         f"{fp['path_kl']:.4f} | {fp['path_kl'] - fp['last_step_kl']:.4f} |")
        mean, var, kl = tilted_gaussian(**case)
        lines.append(f"| {name} | continuous | {mean - case['mu']:.4f} | {var / case['s'] ** 2:.4f} | "
                     f'{kl:.4f} | {kl:.4f} |')
    return '\n'.join(lines)


def _define_flags():
    flags.DEFINE_list('ks', ['5', '10', '20', '50'], 'Flow steps K of the table\'s rows.')
    flags.DEFINE_integer('num_samples', 100_000, 'Monte-Carlo samples per row.')
    flags.DEFINE_list('mu', ['0.3', '-0.5'], 'Mean of the target Gaussian, one entry per dim.')
    flags.DEFINE_float('s', 0.4, 'Standard deviation of the target Gaussian.')
    flags.DEFINE_integer('seed', 0, 'Random seed.')
    flags.DEFINE_bool('fixed_point', False, 'Also print the finite-K adjoint-matching targets.')


def main(_):
    FLAGS = flags.FLAGS
    mu, ks = [float(value) for value in FLAGS.mu], [int(k) for k in FLAGS.ks]
    print(f'Target N(mu={mu}, s={FLAGS.s}^2 I), {FLAGS.num_samples} samples, seed {FLAGS.seed}.\n')
    print(markdown_table(convergence_rows(mu, FLAGS.s, ks, FLAGS.num_samples, FLAGS.seed)))
    if FLAGS.fixed_point:
        print('\nAdjoint-matching fixed point at finite K (per dim, exact recursion, clipping ignored):\n')
        print(fixed_point_table())


if __name__ == '__main__':
    _define_flags()
    app.run(main)
