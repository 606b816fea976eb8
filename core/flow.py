"""Flow-matching and the memoryless SDE: the one home of the maths every flow agent shares.

Conventions (docs/algorithms.md sections 1 and 3): flow time t in [0, 1], t = 0 is noise, t = 1 is data;
K = `flow_steps`, h = 1 / K, t_k = k h. A velocity field is a plain callable `velocity(x, t)` with
x of shape (..., d) and t of shape (..., 1); agents close over the observation, tests pass analytic
fields. Every function is pure, jit-compatible and shape-polymorphic over leading axes, so it vmaps
over states and over several samples per state.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

Velocity = Callable[[jax.Array, jax.Array], jax.Array]


def time_column(x: jax.Array, t) -> jax.Array:
    """The flow time as the (..., 1) column the networks take beside x."""
    return jnp.full((*x.shape[:-1], 1), t, dtype=x.dtype)


def flow_times(flow_steps: int) -> jax.Array:
    """t_k = k / K for k = 0..K-1."""
    return jnp.arange(flow_steps, dtype=jnp.float32) / flow_steps


def euler_ode_sample(velocity: Velocity, noise: jax.Array, flow_steps: int, clip: bool = True) -> jax.Array:
    """Deterministic sampler: x <- x + h v(x, t_k) from x_0 = noise, then clip to [-1, 1]."""
    step_size = 1.0 / flow_steps

    def step(x, t):
        return x + step_size * velocity(x, time_column(x, t)), None

    actions, _ = jax.lax.scan(step, noise, flow_times(flow_steps), unroll=True)
    return jnp.clip(actions, -1.0, 1.0) if clip else actions


def flow_matching_loss(velocity: Velocity, actions: jax.Array, rng: jax.Array, valid: jax.Array) -> jax.Array:
    """BC loss: mean over batch (masked by `valid`) and action dims of ||v(x_t, t) - (x_1 - x_0)||^2."""
    noise_rng, time_rng = jax.random.split(rng)
    noise = jax.random.normal(noise_rng, actions.shape, actions.dtype)
    times = jax.random.uniform(time_rng, (*actions.shape[:-1], 1), actions.dtype)
    interpolants = (1.0 - times) * noise + times * actions
    errors = jnp.mean(jnp.square(velocity(interpolants, times) - (actions - noise)), axis=-1)
    return jnp.mean(errors * valid)


def memoryless_noise_scale(flow_steps: int) -> jax.Array:
    """g_k = sqrt(2 (1 - t_k + h) / (t_k + h)), shifted by h to avoid the singularities (section 3)."""
    step_size = 1.0 / flow_steps
    times = flow_times(flow_steps)
    return jnp.sqrt(2.0 * (1.0 - times + step_size) / (times + step_size))


class SDERollout(NamedTuple):
    """One Euler-Maruyama rollout of the memoryless SDE and what the losses need from it.

    Leading axis K on every per-step field. `fine_velocities` carry gradients to the fine-tuned
    parameters when the `fine` callable does; the states are constants.
    """

    states: jax.Array  # x_0 .. x_{K-1}
    terminal: jax.Array  # x_K
    fine_velocities: jax.Array  # v_theta(x_k, t_k)
    base_velocities: jax.Array  # vbar_base(x_k, t_k)
    noise_scales: jax.Array  # g_k, shape (K,)


def memoryless_sde_rollout(fine: Velocity, base: Velocity, noise: jax.Array, rng: jax.Array, flow_steps: int) -> SDERollout:
    """K-1 noisy steps under the fine-tuned flow, then a noiseless last step under the base:

        x_{k+1} = x_k + h (2 v_theta(x_k, t_k) - x_k / (t_k + h)) + sqrt(h) g_k eps_k,   k < K-1
        x_K     = x_{K-1} + h vbar_base(x_{K-1}, t_{K-1})

    Each step evaluates both fields once at (x_k, t_k): the adjoint-matching loss and the path KL
    need exactly these values, so the loss never re-evaluates the networks on the same inputs.
    """
    step_size = 1.0 / flow_steps
    noise_scales = memoryless_noise_scale(flow_steps)
    increments = jax.random.normal(rng, (flow_steps, *noise.shape), noise.dtype)
    is_last = jnp.arange(flow_steps) == flow_steps - 1

    def step(x, inputs):
        t, g, eps, last = inputs
        x = jax.lax.stop_gradient(x)
        t_col = time_column(x, t)
        v_fine = fine(x, t_col)
        v_base = base(x, t_col)
        noisy_step = x + step_size * (2.0 * jax.lax.stop_gradient(v_fine) - x / (t + step_size))
        noisy_step = noisy_step + jnp.sqrt(step_size) * g * eps
        next_x = jnp.where(last, x + step_size * jax.lax.stop_gradient(v_base), noisy_step)
        return next_x, (x, v_fine, v_base)

    terminal, (states, fine_velocities, base_velocities) = jax.lax.scan(
        step, noise, (flow_times(flow_steps), noise_scales, increments, is_last)
    )
    return SDERollout(states, jax.lax.stop_gradient(terminal), fine_velocities, base_velocities, noise_scales)


def terminal_adjoint(reward: Callable[[jax.Array], jax.Array], terminal: jax.Array, scale) -> jax.Array:
    """a_K = -scale * grad_a reward(clip(a, -1, 1)) at the terminal state (clip inside the gradient).

    `reward(actions)` returns one value per sample (e.g. the mean of the target critics).
    """
    grad = jax.grad(lambda a: jnp.sum(reward(jnp.clip(a, -1.0, 1.0))))(terminal)
    return -scale * grad


def lean_adjoint(base: Velocity, states: jax.Array, terminal_adjoint_value: jax.Array, flow_steps: int) -> jax.Array:
    """a_k = a_{k+1} + h J_k^T a_{k+1},  J_k = d/dx [2 vbar_base(x, t_k + h) - x / (t_k + h)] at x_k.

    The base is evaluated at time t_k + h but state x_k (section 3). Returns a_0 .. a_{K-1}, constants.
    """
    step_size = 1.0 / flow_steps

    def step(adjoint, inputs):
        t, x = inputs
        drift = lambda y: 2.0 * base(y, time_column(y, t + step_size)) - y / (t + step_size)  # noqa: E731
        _, vjp = jax.vjp(drift, x)
        adjoint = adjoint + step_size * vjp(adjoint)[0]
        return adjoint, adjoint

    _, adjoints = jax.lax.scan(
        step, terminal_adjoint_value, (flow_times(flow_steps), jax.lax.stop_gradient(states)), reverse=True
    )
    return jax.lax.stop_gradient(adjoints)


def _per_step(values: jax.Array, like: jax.Array) -> jax.Array:
    """Broadcasts a (K,) schedule against (K, ..., d) per-step arrays."""
    return jnp.reshape(values, (-1,) + (1,) * (like.ndim - 1))


def adjoint_matching_loss(rollout: SDERollout, adjoints: jax.Array, sigmas: jax.Array) -> jax.Array:
    """L_AM = mean_b sum_k || 2 (v_theta - vbar_base)(x_k, t_k) / sigma_k + sigma_k a_k ||^2."""
    sigmas = _per_step(sigmas, adjoints)
    residuals = 2.0 * (rollout.fine_velocities - rollout.base_velocities) / sigmas + sigmas * adjoints
    return jnp.mean(jnp.sum(jnp.square(residuals), axis=(0, -1)))


def path_kl(rollout: SDERollout) -> jax.Array:
    """Girsanov KL of the discretised chains, per sample: sum_k (2 h / g_k^2) ||v_theta - vbar_base||^2.

    Two Euler-Maruyama kernels N(x + h b, h g_k^2 I) whose drifts differ by 2 (v_theta - vbar_base)
    have exactly this KL per step (section 4). Returns shape (...,) of the batch.
    """
    step_size = 1.0 / rollout.noise_scales.shape[0]
    weights = _per_step(2.0 * step_size / jnp.square(rollout.noise_scales), rollout.fine_velocities)
    squared = jnp.square(jax.lax.stop_gradient(rollout.fine_velocities - rollout.base_velocities))
    return jnp.sum(weights * squared, axis=(0, -1))


def memoryless_sde_bptt(fine: Velocity, base: Velocity, noise: jax.Array, increments: jax.Array, flow_steps: int):
    """The rollout of `memoryless_sde_rollout` differentiated end to end (BAM, docs/algorithms.md section 13).

    The states keep their gradient, so the terminal x_K carries the gradient of every step's v_theta (back-
    propagation through time). `increments` (K, ..., d) are the Brownian increments eps_k (the last one unused).
    Returns (x_K, penalty) with the per-sample penalty sum_{k < K-1} (2 / g_k^2) ||v_theta - vbar_base||^2(x_k, t_k),
    the authors' control cost: `path_kl`'s sum over the noisy steps without its factor h.
    """
    step_size = 1.0 / flow_steps
    noise_scales = memoryless_noise_scale(flow_steps)
    x, penalty = noise, jnp.zeros(noise.shape[:-1], noise.dtype)
    for k in range(flow_steps):  # unrolled: each step's own gradient path (K is small)
        t = k * step_size
        t_col = time_column(x, t)
        v_base = base(x, t_col)
        if k == flow_steps - 1:
            return x + step_size * v_base, penalty
        v_fine = fine(x, t_col)
        penalty = penalty + 2.0 / noise_scales[k] ** 2 * jnp.sum(jnp.square(v_fine - v_base), axis=-1)
        x = x + step_size * (2.0 * v_fine - x / (t + step_size)) + jnp.sqrt(step_size) * noise_scales[k] * increments[k]
