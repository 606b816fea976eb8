"""What every agent shares: network construction under one optimiser and the protocol hooks.

An agent is an immutable `flax.struct.PyTreeNode` with `create(seed, example_batch, config)`,
a jitted `update(batch) -> (agent, info)` and a jitted `sample_actions(observations, rng)`.
"""

from typing import Any, ClassVar, Dict, Sequence, Tuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from core.errors import COUNT, NON_NEGATIVE, POSITIVE, UNIT, Choice, LayerSizes, Range
from core.flow import euler_ode_sample
from core.critic import chunk_td_target, critic_info, ensemble_regression_loss, pessimistic_ensemble_value
from core.flax_utils import ModuleDict, TrainState, nonpytree_field
from core.distributions import auto_temperature_loss, tanh_gaussian_sample
from core.networks import GaussianHead, LogParam, Value, VectorField


def freeze_config(config, **derived) -> ml_collections.FrozenConfigDict:
    """A hashable copy of `config` with values derived from the data; the caller's config is untouched."""
    values = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    values.update(derived)
    return ml_collections.FrozenConfigDict(values)


def chunk_dim_of(example_batch) -> int:
    """Size of a flattened action chunk, H * |A|."""
    return example_batch['actions'].shape[-1]


COMPUTE_DTYPES = ('float32', 'bfloat16')

# The valid values of the config keys every agent shares (main.py checks them before a run starts); each agent's
# module adds its own keys' next to its get_config, as CONFIG_RANGES = {**base.CONFIG_RANGES, ...}.
CONFIG_RANGES = {
    'lr': POSITIVE,
    'batch_size': COUNT,
    'actor_hidden_dims': LayerSizes(),
    'value_hidden_dims': LayerSizes(),
    'num_qs': COUNT,
    'rho': NON_NEGATIVE,
    'discount': UNIT,
    'tau': UNIT,
    'horizon_length': Range(1, integer=True, optional=True),
    'flow_steps': COUNT,
    'clip_grad_norm': NON_NEGATIVE,
    'compute_dtype': Choice(COMPUTE_DTYPES),
}


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
    if config['compute_dtype'] not in COMPUTE_DTYPES:
        raise ValueError(
            f'--agent.compute_dtype={config["compute_dtype"]!r}; it must be one of {", ".join(COMPUTE_DTYPES)}.'
        )
    network_def = ModuleDict({name: module for name, (module, _) in modules.items()})
    params = network_def.init(rng, **{name: inputs for name, (_, inputs) in modules.items()})['params']
    tx = optax.adam(learning_rate=config['lr'])
    if clip_grad_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(clip_grad_norm), tx)
    return TrainState.create(network_def, params, tx, target_modules=target_modules)


def critic_network(config) -> Value:
    """The agents' critic: an ensemble of `num_qs` Q(s, a) MLPs."""
    return Value(config['value_hidden_dims'], config['value_layer_norm'], config['num_qs'],
                 dtype=config['compute_dtype'])


def flow_network(config) -> VectorField:
    """The agents' flow velocity field v(s, x, t) over flattened action chunks (also their one-step policies)."""
    return VectorField(config['actor_hidden_dims'], config['chunk_dim'], config['actor_layer_norm'],
                       dtype=config['compute_dtype'])


def edit_modules(config, observations, actions) -> Dict[str, Tuple[flax.linen.Module, Sequence[Any]]]:
    """The edit policy pi_e(e | s, a), a tanh-Gaussian over the chunk, and its entropy temperature (QAM-E, FEdit)."""
    edit_actor = GaussianHead(config['actor_hidden_dims'], config['chunk_dim'], dtype=config['compute_dtype'])
    return {'edit_actor': (edit_actor, (observations, actions)), 'edit_alpha': (LogParam(), ())}


def edited_actions(network, observations, actions, edit_scale, rng, params=None):
    """(clip(a + edit_scale * e, -1, 1), log pi_e(e | s, a)) for e ~ pi_e(. | s, a): the edit of QAM-E and FEdit
    (docs/algorithms.md sections 5 and 12.2)."""
    means, log_stds = network.select('edit_actor')(observations, actions, params=params)
    edits, log_probs = tanh_gaussian_sample(rng, means, log_stds)
    return jnp.clip(actions + edit_scale * edits, -1, 1), log_probs


def edit_policy_loss(network, observations, flow_actions, grad_params, rng, edit_scale, target_entropy):
    """-Q(s, a_edited) + alpha log pi_e(e | s, a_flow), alpha auto-tuned to `target_entropy` (its loss added)."""
    actions, log_probs = edited_actions(network, observations, flow_actions, edit_scale, rng, params=grad_params)
    q_loss = -network.select('critic')(observations, actions).mean()
    entropy_loss = jnp.mean(log_probs * network.select('edit_alpha')())
    alpha = network.select('edit_alpha')(params=grad_params)
    alpha_loss, entropy = auto_temperature_loss(alpha, log_probs, target_entropy)
    return q_loss + entropy_loss + alpha_loss, {'edit_q_loss': q_loss, 'edit_entropy': entropy, 'edit_alpha': alpha}


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
    # Modules with a Polyak-averaged target copy.
    TARGET_MODULES: ClassVar[Tuple[str, ...]] = ()

    @classmethod
    def create(cls, seed, example_batch, config):
        """The agent with fresh networks (`modules`) under one optimiser; `config` completed with what the data
        fixes (`complete_config`) and frozen. The caller's config is untouched."""
        rng, init_rng = jax.random.split(jax.random.PRNGKey(seed))
        config = freeze_config(config, **cls.complete_config(config, chunk_dim_of(example_batch)))
        modules = cls.modules(config, example_batch['observations'], example_batch['actions'])
        network = build_network(init_rng, modules, config, cls.TARGET_MODULES, config.get('clip_grad_norm', 0.0))
        return cls(rng=rng, network=network, config=config, **cls.extra_state(config))

    @classmethod
    def extra_state(cls, config) -> Dict[str, Any]:
        """Agent fields beyond rng/network/config, at their start (TRQAM's dual variables)."""
        return {}

    @classmethod
    def complete_config(cls, config, chunk_dim: int) -> Dict[str, Any]:
        """Checks `config` and returns the values derived from the data (the chunk size H * |A|, ...)."""
        return dict(chunk_dim=chunk_dim)

    @classmethod
    def modules(cls, config, observations, actions) -> Dict[str, Tuple[flax.linen.Module, Sequence[Any]]]:
        """The agent's networks by name, each with example inputs: {name: (module, inputs)}."""
        raise NotImplementedError

    def critic_loss(self, batch, grad_params, rng):
        """Section 2: the ensemble regresses to R + gamma^H mask (mean - rho std) of the target critics at
        a' = `next_actions(s')`."""
        next_actions = self.next_actions(batch['next_observations'], rng)
        next_qs = self.network.select('target_critic')(batch['next_observations'], next_actions)
        next_value = pessimistic_ensemble_value(next_qs, self.config['rho'])
        targets = chunk_td_target(batch, next_value, self.config['discount'], self.config['horizon_length'])
        qs = self.network.select('critic')(batch['observations'], batch['actions'], params=grad_params)
        loss = ensemble_regression_loss(qs, targets, batch['valid'])
        return loss, critic_info(qs, targets, loss)

    def next_actions(self, next_observations, rng):
        """The critic target's a' at s': the agent's own sampler (ReBRAC: its target actor's)."""
        return self.sample_actions(next_observations, rng)

    def bc_flow_actions(self, observations, rng):
        """Chunks of the 'flow' module: its ODE (Euler, `flow_steps`) from Gaussian noise drawn with `rng`."""
        noises = jax.random.normal(rng, (*observations.shape[:-1], self.config['chunk_dim']))
        flow = lambda x, t: self.network.select('flow')(observations, x, t)  # noqa: E731
        return euler_ode_sample(flow, noises, self.config['flow_steps'])

    def total_loss(self, batch, grad_params, rng):
        """critic_loss + actor_loss, metrics prefixed `critic/` and `actor/`; agents with other terms override it."""
        critic_rng, actor_rng = jax.random.split(rng)
        critic_loss, critic_metrics = self.critic_loss(batch, grad_params, critic_rng)
        actor_loss, actor_metrics = self.actor_loss(batch, grad_params, actor_rng)
        return critic_loss + actor_loss, {**prefixed('critic', critic_metrics), **prefixed('actor', actor_metrics)}

    def gradient_step(self, batch):
        """One joint optimiser step on `total_loss` over all modules, then the Polyak target update."""
        new_rng, rng = jax.random.split(self.rng)
        network, info = self.network.apply_loss_fn(
            lambda params: self.total_loss(batch, params, rng), tau=self.config['tau']
        )
        return self.replace(network=network, rng=new_rng), info

    @jax.jit
    def update(self, batch):
        return self.gradient_step(batch)

    def load_pretrained_flow(self, flow_params):
        """Starts this agent's flow networks from a BC pre-training checkpoint (docs/algorithms.md section 4,
        "Protocol"); critics and extra heads stay fresh."""
        if not self.PRETRAINED_FLOW_MODULES:
            raise ValueError(f'{type(self).__name__} has no flow network to start from a BC checkpoint.')
        mapping = {name: 'flow' for name in self.PRETRAINED_FLOW_MODULES}
        return self.replace(network=self.network.load_modules({'modules_flow': flow_params}, mapping))

    def start_online(self):
        """Called once when the online phase begins; agents with phase-specific settings override it."""
        return self
