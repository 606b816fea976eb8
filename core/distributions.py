"""A tanh-squashed diagonal Gaussian: the few lines we need instead of distrax."""

import jax
import jax.numpy as jnp

_LOG_SQRT_2PI = 0.5 * jnp.log(2.0 * jnp.pi)


def tanh_gaussian_sample(rng, means, log_stds):
    """Reparameterised sample a = tanh(mu + sigma * eps) and its log-density, summed over the last axis.

    log pi(a) = log N(u; mu, sigma) - sum log(1 - tanh(u)^2), with the numerically stable
    log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)).
    """
    noise = jax.random.normal(rng, means.shape, means.dtype)
    pre_tanh = means + jnp.exp(log_stds) * noise
    return jnp.tanh(pre_tanh), _log_prob(pre_tanh, noise, log_stds)


def _log_prob(pre_tanh, noise, log_stds):
    """log N(u; mu, sigma) - log|d tanh(u)/du| summed over the last axis, with noise = (u - mu) / sigma."""
    gaussian_log_prob = -0.5 * noise**2 - log_stds - _LOG_SQRT_2PI
    log_det_jacobian = 2.0 * (jnp.log(2.0) - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))
    return jnp.sum(gaussian_log_prob - log_det_jacobian, axis=-1)


def tanh_gaussian_log_prob(actions, means, log_stds):
    """log pi(a) of given actions a in (-1, 1) (pre-tanh u = atanh(a)), summed over the last axis; RLPD's BC term
    scores the data's actions with it."""
    pre_tanh = jnp.arctanh(actions)
    return _log_prob(pre_tanh, (pre_tanh - means) * jnp.exp(-log_stds), log_stds)


def auto_temperature_loss(alpha, log_probs, target_entropy):
    """SAC's temperature loss alpha * (H - H_target), with the entropy H = -mean log pi held constant.

    Differentiate it with respect to alpha only: descent raises alpha while the policy's entropy is below
    the target and lowers it above. Returns (loss, H). Shared by DSRL and QAM-E.
    """
    entropy = -jax.lax.stop_gradient(log_probs).mean()
    return alpha * (entropy - target_entropy), entropy


def target_entropy_for(target_entropy, multiplier: float, action_dim: int) -> float:
    """The configured target entropy, or SAC's default -multiplier * dim when it is None."""
    return -multiplier * action_dim if target_entropy is None else target_entropy
