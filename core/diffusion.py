"""Discrete-time DDPM maths of the diffusion policies (QSM, DAC; docs/algorithms.md section 13).

Conventions: T = `diffusion_steps`; step t = 1..T, t = 0 is data. beta_t from the variance-preserving schedule,
alpha_t = 1 - beta_t, alphabar_t = prod_{k <= t} alpha_k; the arrays below are indexed by t with a leading
beta_0 = 0 (alphabar_0 = 1), so x_0 is the clean chunk. A noise network is a callable `noise(x, t)` with x of
shape (..., d) and t an integer step of shape (..., 1).
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

NoiseNetwork = Callable[[jax.Array, jax.Array], jax.Array]


class Schedule(NamedTuple):
    betas: jax.Array  # (T + 1,), betas[0] = 0
    alphas: jax.Array
    alpha_bars: jax.Array


def vp_schedule(diffusion_steps: int, beta_min: float = 0.1, beta_max: float = 10.0) -> Schedule:
    """The discretised variance-preserving SDE: beta_t = 1 - exp(-beta_min / T - (beta_max - beta_min)(2t - 1) / (2 T^2))."""
    steps = jnp.arange(1, diffusion_steps + 1, dtype=jnp.float32)
    betas = 1.0 - jnp.exp(-beta_min / diffusion_steps
                          - 0.5 * (beta_max - beta_min) * (2.0 * steps - 1.0) / diffusion_steps**2)
    betas = jnp.concatenate([jnp.zeros((1,), jnp.float32), betas])
    alphas = 1.0 - betas
    return Schedule(betas, alphas, jnp.cumprod(alphas))


def noised(schedule: Schedule, actions, noise, steps):
    """x_t = sqrt(alphabar_t) x_0 + sqrt(1 - alphabar_t) eps, with `steps` of shape (..., 1)."""
    alpha_bars = schedule.alpha_bars[steps]
    return jnp.sqrt(alpha_bars) * actions + jnp.sqrt(1.0 - alpha_bars) * noise


def ddpm_sample(noise_network: NoiseNetwork, schedule: Schedule, noise, rng, *, clip_denoised: bool,
                clip_steps: bool, posterior_mean: bool = True):
    """Ancestral sampling from x_T = `noise` down to x_0, for t = T..1:

        x0_hat = (x_t - sqrt(1 - alphabar_t) eps(x_t, t)) / sqrt(alphabar_t), clipped to [-1, 1] if `clip_denoised`
        mean   = the DDPM posterior mean of x_{t-1} given x_t and x0_hat
               = (sqrt(alphabar_{t-1}) beta_t x0_hat + sqrt(alpha_t) (1 - alphabar_{t-1}) x_t) / (1 - alphabar_t)
        x_{t-1} = mean + sqrt(beta_t) z for t > 1 (z ~ N(0, I) from `rng`), clipped to [-1, 1] if `clip_steps`.

    `posterior_mean=False` is the authors' step without `clip_denoised`: mean = x0_hat (section 13).
    Random numbers are drawn as in the authors' implementation (one split of `rng` per step).
    """
    betas, alphas, alpha_bars = schedule
    diffusion_steps = betas.shape[0] - 1
    step_column = jnp.ones((*noise.shape[:-1], 1), jnp.int32)

    def step(carry, t):
        x, key = carry
        eps = noise_network(x, step_column * t)
        x0_hat = (x - jnp.sqrt(1.0 - alpha_bars[t]) * eps) / jnp.sqrt(alpha_bars[t])
        if clip_denoised:
            x0_hat = jnp.clip(x0_hat, -1.0, 1.0)
        if clip_denoised or posterior_mean:
            x = (jnp.sqrt(alpha_bars[t - 1]) * betas[t] * x0_hat
                 + jnp.sqrt(alphas[t]) * (1.0 - alpha_bars[t - 1]) * x) / (1.0 - alpha_bars[t])
        else:
            x = x0_hat
        key, z_key = jax.random.split(key)
        x = x + (t > 1) * jnp.sqrt(betas[t]) * jax.random.normal(z_key, x.shape, x.dtype)
        if clip_steps:
            x = jnp.clip(x, -1.0, 1.0)
        return (x, key), None

    (actions, _), _ = jax.lax.scan(step, (noise, jax.random.split(rng)[1]), jnp.arange(diffusion_steps, 0, -1),
                                   unroll=True)
    return actions
