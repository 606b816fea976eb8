"""Revisited BRAC (ReBRAC, arXiv 2305.09836), the QAM paper's Gaussian-policy baseline (docs/algorithms.md
section 12.1).

TD3+BC with layer-normed critics: a deterministic tanh actor maximises the pessimistic ensemble value, normalised
by its mean magnitude, under a BC penalty alpha_actor ||pi(s) - a||^2; the critic's next actions are the target
actor's with clipped Gaussian smoothing noise. Every `actor_freq` updates the targets move; with `delay_actor`
(ReBRAC's and TD3's schedule, the default) the actor also steps only then, without it every update (what the
authors' QAM code runs: section 12.1 says why we do not follow it by default).
"""

import jax
import jax.numpy as jnp
import ml_collections

from agents.base import CONFIG_RANGES as SHARED_RANGES
from agents.base import Agent, critic_network
from core.critic import pessimistic_ensemble_value
from core.errors import COUNT, NON_NEGATIVE, POSITIVE, Choice
from core.networks import TanhActor


class ReBRACAgent(Agent):
    TARGET_MODULES = ('critic', 'actor')

    def smoothed(self, actions, rng):
        """clip(a + clip(sigma * eps, -c, c), -1, 1): TD3's target-policy smoothing, also ReBRAC's exploration."""
        noise = self.config['actor_noise'] * jax.random.normal(rng, actions.shape)
        noise = jnp.clip(noise, -self.config['actor_noise_clip'], self.config['actor_noise_clip'])
        return jnp.clip(actions + noise, -1, 1)

    def next_actions(self, next_observations, rng):
        """The critic target's a': the target actor's, with smoothing noise."""
        return self.smoothed(self.network.select('target_actor')(next_observations), rng)

    def actor_loss(self, batch, grad_params, rng):
        """-Q(s, pi(s)) / stop_grad(mean |Q|) + alpha_actor * valid * ||pi(s) - a||^2 (section 12.1)."""
        actions = self.network.select('actor')(batch['observations'], params=grad_params)
        qs = self.network.select('critic')(batch['observations'], actions)
        q = pessimistic_ensemble_value(qs, self.config['rho'])
        q_loss = -jnp.mean(q / jax.lax.stop_gradient(jnp.abs(q).mean()))
        squared_errors = jnp.sum(jnp.square(actions - batch['actions']), axis=-1) * batch['valid']
        bc_loss = self.config['alpha_actor'] * squared_errors.mean()
        loss = q_loss + bc_loss
        return loss, {'actor_loss': loss, 'q_loss': q_loss, 'bc_loss': bc_loss, 'mse': squared_errors.mean()}

    def gradient_step(self, batch):
        """One step; the targets move only on every `actor_freq`-th update (counted from 1), and with
        `delay_actor` the actor's parameters and Adam moments stay as they were on the others."""
        new_rng, rng = jax.random.split(self.rng)
        is_full = (self.network.step + 1) % self.config['actor_freq'] == 0
        tau = jnp.where(is_full, self.config['tau'], 0.0)
        network, info = self.network.apply_loss_fn(lambda params: self.total_loss(batch, params, rng), tau=tau)
        if self.config['delay_actor']:
            keep = lambda path, new, old: jnp.where(is_full, new, old) if _in_actor(path) else new  # noqa: E731
            network = network.replace(
                params=jax.tree_util.tree_map_with_path(keep, network.params, self.network.params),
                opt_state=jax.tree_util.tree_map_with_path(keep, network.opt_state, self.network.opt_state))
        return self.replace(network=network, rng=new_rng), info

    @jax.jit
    def sample_actions(self, observations, rng):
        return self.smoothed(self.network.select('actor')(observations), rng)

    @classmethod
    def modules(cls, config, observations, actions):
        actor = TanhActor(config['actor_hidden_dims'], config['chunk_dim'], config['actor_layer_norm'],
                          config['actor_final_init_scale'], dtype=config['compute_dtype'])
        return {
            'critic': (critic_network(config), (observations, actions)),
            'actor': (actor, (observations,)),
        }


def _in_actor(path) -> bool:
    return any(getattr(key, 'key', None) == 'modules_actor' for key in path)


CONFIG_RANGES = {**SHARED_RANGES, 'alpha_actor': NON_NEGATIVE, 'actor_noise': NON_NEGATIVE,
                 'actor_noise_clip': NON_NEGATIVE, 'actor_freq': COUNT, 'delay_actor': Choice((True, False)),
                 'actor_final_init_scale': POSITIVE}


def get_config():
    return ml_collections.ConfigDict(
        dict(
            agent_name='rebrac',
            lr=3e-4,  # Adam learning rate, one optimiser over all modules.
            batch_size=256,
            actor_hidden_dims=(512, 512, 512, 512),
            value_hidden_dims=(512, 512, 512, 512),
            actor_layer_norm=False,
            value_layer_norm=True,
            num_qs=10,  # Critic ensemble size N_q.
            rho=0.5,  # Pessimism of the target and of the actor's objective: mean - rho * std over the ensemble.
            discount=0.99,
            tau=0.005,  # Polyak rate of the target critic and actor, applied every actor_freq updates.
            horizon_length=ml_collections.config_dict.placeholder(int),  # Chunk length H (None: per domain).
            alpha_actor=0.01,  # Weight of the actor's BC penalty (per domain, docs/algorithms.md section 12.3).
            actor_noise=0.2,  # Std of the smoothing noise on target and acting actions (per domain).
            actor_noise_clip=0.5,  # The noise is clipped to +-actor_noise_clip.
            actor_freq=2,  # The targets (and with delay_actor the actor) update every actor_freq updates.
            delay_actor=True,  # ReBRAC/TD3's delayed actor; False: every update, as the authors' code runs.
            actor_final_init_scale=1e-2,  # Init scale of the actor's output layer: first actions near 0.
            compute_dtype='float32',  # Dtype of the networks' matrix products; parameters and losses stay float32.
        )
    )
