"""The ensemble critic regression every agent shares (docs/algorithms.md section 2)."""

import jax.numpy as jnp


def pessimistic_ensemble_value(qs, rho: float):
    """mean_i Q_i - rho * std_i Q_i over the ensemble axis 0 (population std)."""
    return qs.mean(axis=0) - rho * qs.std(axis=0)


def chunk_td_target(batch, next_value, discount: float, horizon_length: int):
    """y = R_chunk + gamma^H * mask * next_value, with R_chunk already discounted over the chunk."""
    return batch['rewards'] + discount**horizon_length * batch['masks'] * next_value


def ensemble_regression_loss(qs, targets, valid):
    """Mean over ensemble and batch of valid * (Q_i - y)^2; one shared target for every member."""
    return jnp.mean(valid * jnp.square(qs - targets))


def critic_info(qs, targets, loss):
    return {'critic_loss': loss, 'q_mean': qs.mean(), 'q_max': qs.max(), 'q_min': qs.min(), 'target_mean': targets.mean()}


def expectile_loss(diff, expectile: float):
    """Asymmetric squared loss |kappa - 1(diff < 0)| diff^2, elementwise, with diff = target - prediction.

    Its minimiser over a constant prediction is the kappa-expectile of the targets (IQL's value loss).
    """
    weight = jnp.where(diff >= 0, expectile, 1.0 - expectile)
    return weight * jnp.square(diff)
