"""What every agent shares: network construction under one optimiser and the protocol hooks.

An agent is an immutable `flax.struct.PyTreeNode` with `create(seed, example_batch, config)`,
a jitted `update(batch) -> (agent, info)` and a jitted `sample_actions(observations, rng)`.
"""

from typing import Any, ClassVar, Dict, Sequence, Tuple

import flax
import jax
import ml_collections
import optax

from utils.flax_utils import ModuleDict, TrainState, nonpytree_field


def freeze_config(config, **derived) -> ml_collections.FrozenConfigDict:
    """A hashable copy of `config` with values derived from the data; the caller's config is untouched."""
    values = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    values.update(derived)
    return ml_collections.FrozenConfigDict(values)


def chunk_dim_of(example_batch) -> int:
    """Size of a flattened action chunk, H * |A|."""
    return example_batch['actions'].shape[-1]


def build_network(
    rng,
    modules: Dict[str, Tuple[flax.linen.Module, Sequence[Any]]],
    config,
    target_modules: Sequence[str] = (),
    clip_grad_norm: float = 0.0,
) -> TrainState:
    """Initialises `modules` (name -> (module, example inputs)) as one `ModuleDict` under one Adam.

    `clip_grad_norm` > 0 chains a global-norm gradient clip before Adam (QAM, TRQAM).
    """
    network_def = ModuleDict({name: module for name, (module, _) in modules.items()})
    params = network_def.init(rng, **{name: inputs for name, (_, inputs) in modules.items()})['params']
    tx = optax.adam(learning_rate=config['lr'])
    if clip_grad_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(clip_grad_norm), tx)
    return TrainState.create(network_def, params, tx, target_modules=target_modules)


def prefixed(prefix: str, info: Dict[str, jax.Array]) -> Dict[str, jax.Array]:
    return {f'{prefix}/{key}': value for key, value in info.items()}


class Agent(flax.struct.PyTreeNode):
    """Base of all agents: the RNG, the networks, the frozen config, and default protocol hooks."""

    rng: jax.Array
    network: TrainState
    config: ml_collections.FrozenConfigDict = nonpytree_field()

    # Modules of this agent that start from the BC pre-trained flow (`--pretrained_actor_path`),
    # with their target copies when they have one.
    PRETRAINED_FLOW_MODULES: ClassVar[Tuple[str, ...]] = ()

    def load_pretrained_flow(self, flow_params):
        """Starts this agent's flow networks from a BC pre-training checkpoint (ALGORITHMS.md section 4,
        "Protocol"); critics and extra heads stay fresh."""
        if not self.PRETRAINED_FLOW_MODULES:
            raise ValueError(f'{type(self).__name__} has no flow network to start from a BC checkpoint.')
        mapping = {name: 'flow' for name in self.PRETRAINED_FLOW_MODULES}
        return self.replace(network=self.network.load_modules({'modules_flow': flow_params}, mapping))

    def start_online(self):
        """Called once when the online phase begins; agents with phase-specific settings override it."""
        return self
