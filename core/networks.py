"""Network modules shared by every agent (docs/algorithms.md section 1, "Networks").

`dtype` (an agent's `compute_dtype`) is the dtype of the matrix products; parameters stay float32, so the
gradients and the optimiser state do too. The networks an agent calls (Value, VectorField, GaussianHead)
return float32: everything computed from their outputs (losses, terminal and lean adjoints, path KL, the
ODE and SDE states, TRQAM's dual step) stays in float32 whatever the compute dtype.
"""

from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


def default_init(scale: float = 1.0):
    """Xavier-uniform (variance scaling over fan_avg), the init of the reference implementations."""
    return nn.initializers.variance_scaling(scale, 'fan_avg', 'uniform')


class ConcatDense(nn.Module):
    """`nn.Dense` of concat(inputs), with the same parameters, computed as sum_i inputs_i @ kernel_i + bias.

    The split lets XLA compute a term whose input does not change once: the observation term of a flow
    network is the same at all K flow steps, so the forward passes of the ODE sampler, the SDE rollout
    and the lean adjoint compute only the (action, time) part at each step.

    Like `nn.Dense(dtype=dtype)`: float32 parameters, products and output in `dtype`. The partial products
    are summed in float32 and rounded to `dtype` once. (Products returning float32 would save that rounding
    but make the gradient's products float32 too.)
    """

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs: Sequence[jnp.ndarray]):
        sizes = [x.shape[-1] for x in inputs]
        kernel = self.param('kernel', default_init(), (sum(sizes), self.features))
        bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
        bounds = np.cumsum([0, *sizes])
        outputs = bias
        for x, start, end in zip(inputs, bounds[:-1], bounds[1:]):
            outputs = outputs + (x.astype(self.dtype) @ kernel[start:end].astype(self.dtype)).astype(jnp.float32)
        return outputs.astype(self.dtype)


def mish(x):
    """x tanh(softplus(x)), the activation of the DDPM noise networks of QSM and DAC (section 13)."""
    return x * jnp.tanh(nn.softplus(x))


class MLP(nn.Module):
    """Dense -> activation (GELU) -> optional LayerNorm per hidden layer; the last layer is linear unless
    `activate_final`. The input is one array, or a sequence of arrays to concatenate (see ConcatDense).

    `dtype` is the dtype of the matrix products, activations and output; the parameters are float32.
    LayerNorm still computes its statistics and the normalisation in float32 (Flax's default for half
    precision inputs): a mean and variance over hundreds of features is where bfloat16 would lose digits.
    """

    hidden_dims: Sequence[int]
    activate_final: bool = False
    layer_norm: bool = False
    dtype: Any = jnp.float32
    activation: Callable = nn.gelu

    @nn.compact
    def __call__(self, x):
        for i, size in enumerate(self.hidden_dims):
            if i == 0 and isinstance(x, (list, tuple)):
                x = ConcatDense(size, dtype=self.dtype, name='Dense_0')(x)
            else:
                x = nn.Dense(size, kernel_init=default_init(), dtype=self.dtype, name=f'Dense_{i}')(x)
            if i + 1 < len(self.hidden_dims) or self.activate_final:
                x = self.activation(x)
                if self.layer_norm:
                    x = nn.LayerNorm(dtype=self.dtype)(x)
        return x


class Value(nn.Module):
    """Q(s, a) (or V(s) when called without actions) as an ensemble of `num_ensembles` MLPs.

    Returns shape (num_ensembles, *batch) for an ensemble (any integer, 1 included, so that ensemble
    reductions over axis 0 stay correct), and (*batch,) for a single network (num_ensembles=None).
    Extra inputs (e.g. flow time for classifier guidance) are concatenated after the action.
    """

    hidden_dims: Sequence[int]
    layer_norm: bool = True
    num_ensembles: Optional[int] = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, observations, actions=None, times=None):
        inputs = [observations]
        if actions is not None:
            inputs.append(actions)
        if times is not None:
            inputs.append(times)
        inputs = jnp.concatenate(inputs, axis=-1)
        mlp_class = MLP
        if self.num_ensembles is not None:
            # One set of parameters per member, one batched matmul for all of them.
            mlp_class = nn.vmap(
                MLP,
                variable_axes={'params': 0},
                split_rngs={'params': True},
                in_axes=None,
                out_axes=0,
                axis_size=self.num_ensembles,
            )
        values = mlp_class((*self.hidden_dims, 1), layer_norm=self.layer_norm, dtype=self.dtype)(inputs)
        return values.squeeze(-1).astype(jnp.float32)


class VectorField(nn.Module):
    """Flow velocity v(s, x, t), or a one-step policy mu(s, z) when called without `times`.

    The input is concat[s, x, t] with the raw scalar time (docs/algorithms.md section 1).
    """

    hidden_dims: Sequence[int]
    output_dim: int
    layer_norm: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, observations, actions, times=None):
        inputs = [observations, actions] if times is None else [observations, actions, times]
        mlp = MLP((*self.hidden_dims, self.output_dim), layer_norm=self.layer_norm, dtype=self.dtype)
        return mlp(inputs).astype(jnp.float32)


class GaussianHead(nn.Module):
    """Mean and log-std of a diagonal Gaussian (squashed by tanh in `core.distributions`).

    Used by DSRL's noise-space policy and QAM-E's edit policy. As in the authors' implementation of both
    (docs/algorithms.md section 9.4): no LayerNorm whatever `actor_layer_norm` says, log-std clipped to [-20, 2].
    """

    hidden_dims: Sequence[int]
    output_dim: int
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, observations, actions: Optional[jnp.ndarray] = None):
        inputs = observations if actions is None else jnp.concatenate([observations, actions], axis=-1)
        features = MLP(self.hidden_dims, activate_final=True, dtype=self.dtype)(inputs)
        means = nn.Dense(self.output_dim, kernel_init=default_init(), dtype=self.dtype)(features)
        log_stds = nn.Dense(self.output_dim, kernel_init=default_init(), dtype=self.dtype)(features)
        return means.astype(jnp.float32), jnp.clip(log_stds.astype(jnp.float32), self.log_std_min, self.log_std_max)


class TanhActor(nn.Module):
    """A deterministic policy a = tanh(W h(s) + b) (ReBRAC's actor, the mode of a tanh-squashed Gaussian).

    The torso's last layer is activated (and layer-normed with `layer_norm`); the output layer starts small
    (`final_init_scale`) so the first actions sit near 0 (docs/algorithms.md section 12).
    """

    hidden_dims: Sequence[int]
    output_dim: int
    layer_norm: bool = False
    final_init_scale: float = 1e-2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, observations):
        torso = MLP(self.hidden_dims, activate_final=True, layer_norm=self.layer_norm, dtype=self.dtype)
        features = torso(observations)
        means = nn.Dense(self.output_dim, kernel_init=default_init(self.final_init_scale), dtype=self.dtype)(features)
        return jnp.tanh(means.astype(jnp.float32))


class LogParam(nn.Module):
    """A learned positive scalar exp(log_value), e.g. the entropy temperature alpha."""

    init_value: float = 1.0

    @nn.compact
    def __call__(self):
        # A strongly typed float32: a weakly typed initial value would turn strong after the first update
        # (in the parameters, then in Adam's moments) and retrace every jitted step twice.
        log_value = self.param('log_value', lambda _: jnp.full((), jnp.log(self.init_value), jnp.float32))
        return jnp.exp(log_value)


class FourierFeatures(nn.Module):
    """[cos(2 pi t W^T), sin(2 pi t W^T)] with a learned W of shape (size / 2, 1), W ~ N(0, 0.2^2) at init."""

    size: int

    @nn.compact
    def __call__(self, times):
        kernel = self.param('kernel', nn.initializers.normal(0.2), (self.size // 2, times.shape[-1]), jnp.float32)
        # t W^T as a float32 elementwise sum whatever the compute dtype: the angles reach tens of radians.
        angles = 2.0 * jnp.pi * jnp.sum(times.astype(jnp.float32)[..., None, :] * kernel, axis=-1)
        return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


class NoisePredictor(nn.Module):
    """The DDPM noise network eps(s, x_t, t) of QSM and DAC (section 13), t the integer diffusion step.

    The step's Fourier features pass through a Mish MLP (`hidden_dims`, linear last layer); a second Mish MLP
    maps concat[x_t, s, features] to the noise. Layer norm (`layer_norm`) only in the second, as in the
    authors' implementation.
    """

    hidden_dims: Sequence[int]
    output_dim: int
    time_dim: int
    layer_norm: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, observations, actions, times):
        features = FourierFeatures(self.time_dim)(times)
        features = MLP(self.hidden_dims, dtype=self.dtype, activation=mish)(features)
        features = jnp.broadcast_to(features, (*actions.shape[:-1], features.shape[-1]))
        mlp = MLP((*self.hidden_dims, self.output_dim), layer_norm=self.layer_norm, dtype=self.dtype, activation=mish)
        return mlp([actions, observations, features]).astype(jnp.float32)
