"""Several seeds of one configuration in one compiled program: pytrees stacked on a leading seed axis,
and functions mapped over it.

`map_seeds(fn, in_axes)` is `jax.vmap(fn, in_axes)` for two or more seeds, and for a single seed calls
`fn` on the unstacked arguments: a one-seed run executes exactly the program of the plain single-agent
code, and seed i of a group equals its single-seed run up to floating-point reassociation.
"""

import jax
import jax.numpy as jnp


def stack(trees):
    """Pytrees with the same leaves -> one pytree with a leading axis on every leaf.

    Agents built from one config differ in their static fields (each holds its own bound `apply` and optax
    closures, which compute the same functions), so the leaves are stacked under the first tree's definition
    after checking that the leaf paths agree.
    """
    flat = [jax.tree_util.tree_flatten_with_path(tree) for tree in trees]
    paths = [path for path, _ in flat[0][0]]
    for leaves_with_paths, _ in flat[1:]:
        if [path for path, _ in leaves_with_paths] != paths:
            raise ValueError('The pytrees to stack have different leaves (different configs?).')
    stacked = [jnp.stack(leaves) for leaves in zip(*([leaf for _, leaf in leaves] for leaves, _ in flat))]
    return jax.tree_util.tree_unflatten(flat[0][1], stacked)


def unstack(tree, index: int):
    """Element `index` of the leading axis."""
    return jax.tree_util.tree_map(lambda leaf: leaf[index], tree)


def take(tree, indices):
    """The elements `indices` of the leading axis, still stacked."""
    indices = jnp.asarray(indices)
    return jax.tree_util.tree_map(lambda leaf: leaf[indices], tree)


def num_seeds(tree) -> int:
    return jax.tree_util.tree_leaves(tree)[0].shape[0]


def map_seeds(fn, in_axes):
    """`fn` mapped over the leading axis of the arguments whose `in_axes` entry is 0 (None: shared by every
    seed); outputs get the leading axis. See the module docstring for the single-seed case."""
    mapped = jax.vmap(fn, in_axes=in_axes)

    def call(*args):
        size = next(num_seeds(arg) for arg, axis in zip(args, in_axes) if axis == 0)
        if size > 1:
            return mapped(*args)
        single = [unstack(arg, 0) if axis == 0 else arg for arg, axis in zip(args, in_axes)]
        return jax.tree_util.tree_map(lambda leaf: leaf[None], fn(*single))

    return call
