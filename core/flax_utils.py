"""One `ModuleDict` of all networks under one optimiser, with Polyak target copies.

Gradients are stopped by default: a module called without `params=` uses the stored parameters, which
the loss is not differentiated with respect to; pass `params=grad_params` to opt in.
"""

from typing import Any, Callable, Dict, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

nonpytree_field = lambda: flax.struct.field(pytree_node=False)  # noqa: E731

TARGET_PREFIX = 'target_'


class ModuleDict(nn.Module):
    """Holds named modules; `init` with `name=None` and one tuple of example inputs per module."""

    modules: Dict[str, nn.Module]

    @nn.compact
    def __call__(self, *args, name=None, **kwargs):
        if name is None:
            if set(kwargs) != set(self.modules):
                raise ValueError(f'Initialise every module: got {sorted(kwargs)}, need {sorted(self.modules)}.')
            return {key: self.modules[key](*inputs) for key, inputs in kwargs.items()}
        return self.modules[name](*args, **kwargs)


def polyak_average(online_params, target_params, tau: float):
    """target <- tau * online + (1 - tau) * target."""
    return jax.tree_util.tree_map(lambda p, tp: tau * p + (1.0 - tau) * tp, online_params, target_params)


class TrainState(flax.struct.PyTreeNode):
    """Parameters of a `ModuleDict`, their optimiser state, and EMA targets of some modules.

    `select('critic')` calls the online module, `select('target_critic')` its target copy. Targets
    live outside `params`, so the optimiser neither stores moments for them nor updates them.
    """

    step: jax.Array
    apply_fn: Callable = nonpytree_field()
    params: Dict[str, Any]
    target_params: Dict[str, Any]
    tx: optax.GradientTransformation = nonpytree_field()
    opt_state: Any

    @classmethod
    def create(cls, model_def: ModuleDict, params, tx, target_modules: Sequence[str] = ()):
        # Distinct buffers, so that a donated train step never donates one buffer twice.
        target_params = {name: jax.tree_util.tree_map(jnp.copy, params[f'modules_{name}']) for name in target_modules}
        return cls(
            step=jnp.zeros((), jnp.int32),
            apply_fn=model_def.apply,
            params=params,
            target_params=target_params,
            tx=tx,
            opt_state=tx.init(params),
        )

    def __call__(self, *args, name: str, params=None, **kwargs):
        params = self.params if params is None else params
        if name.startswith(TARGET_PREFIX):
            name = name[len(TARGET_PREFIX):]
            params = {**params, f'modules_{name}': self.target_params[name]}
        return self.apply_fn({'params': params}, *args, name=name, **kwargs)

    def select(self, name: str):
        def apply(*args, **kwargs):
            return self(*args, name=name, **kwargs)

        return apply

    def apply_loss_fn(self, loss_fn, tau: float):
        """One optimiser step on `loss_fn(params) -> (loss, info)`, then the Polyak target update.

        The targets move toward the parameters as they were *before* this step (a one-step lag, as in
        the published implementations; docs/algorithms.md section 1).
        """
        grads, info = jax.grad(loss_fn, has_aux=True)(self.params)
        updates, new_opt_state = self.tx.update(grads, self.opt_state, self.params)
        new_params = optax.apply_updates(self.params, updates)
        new_targets = {
            name: polyak_average(self.params[f'modules_{name}'], target, tau)
            for name, target in self.target_params.items()
        }
        info['grad_norm'] = optax.tree.norm(grads)
        new_state = self.replace(
            step=self.step + 1, params=new_params, target_params=new_targets, opt_state=new_opt_state
        )
        return new_state, info

    def load_modules(self, source_params: Dict[str, Any], mapping: Dict[str, str]):
        """Copies modules from another agent's `params` (e.g. a BC checkpoint), also into their targets.

        `mapping` maps a module of this state to a module of the source. Shapes must agree.
        """
        params = dict(self.params)
        target_params = dict(self.target_params)
        for name, source_name in mapping.items():
            source = source_params[f'modules_{source_name}']
            expected = jax.tree_util.tree_map(jnp.shape, params[f'modules_{name}'])
            found = jax.tree_util.tree_map(jnp.shape, source)
            if expected != found:
                raise ValueError(
                    f'Pretrained module {source_name!r} does not fit module {name!r} of this agent: '
                    f'parameter shapes {found} vs {expected}. Pre-train with the same network sizes, '
                    'horizon_length and environment.'
                )
            params[f'modules_{name}'] = jax.tree_util.tree_map(jnp.array, source)
            if name in target_params:
                target_params[name] = jax.tree_util.tree_map(jnp.array, source)
        # Fresh optimiser moments: the loaded modules start a new optimisation problem.
        return self.replace(params=params, target_params=target_params, opt_state=self.tx.init(params))
