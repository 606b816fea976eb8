"""Reinforcement learning with prior data (RLPD, the QAM paper's online-only baseline; docs/algorithms.md
section 13): soft actor-critic over action chunks with a tanh-Gaussian policy, the shared critic ensemble
(section 2), an optional BC term, and no offline phase: the offline data only fill half of every online batch
(its protocol, `protocols.methods.METHODS['RLPD']`, sets --offline_steps=0 and --balanced_sampling).

    L_pi = mean_b [alpha log pi(a|s) - (mean_i Q_i(s, a) - rho std_i Q_i(s, a))] - bc_alpha mean_b [valid log pi(a_data|s)]

with a ~ pi(.|s) reparameterised and alpha auto-tuned to the target entropy.
"""

import jax
import jax.numpy as jnp
import ml_collections

from agents.base import CONFIG_RANGES as SHARED_RANGES
from agents.base import Agent, critic_network
from core.critic import pessimistic_ensemble_value
from core.distributions import auto_temperature_loss, tanh_gaussian_log_prob, tanh_gaussian_sample, target_entropy_for
from core.errors import NON_NEGATIVE, POSITIVE, Range
from core.networks import GaussianHead, LogParam

# The data's actions are scored at most this close to +-1, where atanh is finite.
BC_ACTION_BOUND = 1.0 - 1e-5


class RLPDAgent(Agent):
    TARGET_MODULES = ('critic',)

    def actor_loss(self, batch, grad_params, rng):
        observations = batch['observations']
        means, log_stds = self.network.select('actor')(observations, params=grad_params)
        actions, log_probs = tanh_gaussian_sample(rng, means, log_stds)
        q = pessimistic_ensemble_value(self.network.select('critic')(observations, actions), self.config['rho'])
        policy_loss = jnp.mean(log_probs * self.network.select('alpha')() - q)

        alpha = self.network.select('alpha')(params=grad_params)
        alpha_loss, entropy = auto_temperature_loss(alpha, log_probs, self.config['target_entropy'])

        data_actions = jnp.clip(batch['actions'], -BC_ACTION_BOUND, BC_ACTION_BOUND)
        bc_log_probs = tanh_gaussian_log_prob(data_actions, means, log_stds)
        bc_loss = -self.config['bc_alpha'] * jnp.mean(bc_log_probs * batch['valid'])
        loss = policy_loss + alpha_loss + bc_loss
        return loss, {'actor_loss': loss, 'policy_loss': policy_loss, 'alpha_loss': alpha_loss, 'bc_loss': bc_loss,
                      'alpha': alpha, 'entropy': entropy, 'q': q.mean()}

    @jax.jit
    def sample_actions(self, observations, rng):
        means, log_stds = self.network.select('actor')(observations)
        actions, _ = tanh_gaussian_sample(rng, means, log_stds)
        return jnp.clip(actions, -1, 1)

    @classmethod
    def complete_config(cls, config, chunk_dim):
        target_entropy = target_entropy_for(config.get('target_entropy'), config['target_entropy_multiplier'], chunk_dim)
        return dict(chunk_dim=chunk_dim, target_entropy=target_entropy)

    @classmethod
    def modules(cls, config, observations, actions):
        actor = GaussianHead(config['actor_hidden_dims'], config['chunk_dim'], dtype=config['compute_dtype'])
        return {
            'critic': (critic_network(config), (observations, actions)),
            'actor': (actor, (observations,)),
            'alpha': (LogParam(config['init_temp']), ()),
        }


CONFIG_RANGES = {**SHARED_RANGES, 'bc_alpha': NON_NEGATIVE, 'target_entropy': Range(optional=True),
                 'target_entropy_multiplier': Range(), 'init_temp': POSITIVE}


def get_config():
    return ml_collections.ConfigDict(
        dict(
            agent_name='rlpd',
            lr=3e-4,  # Adam learning rate, one optimiser over all modules.
            batch_size=256,
            actor_hidden_dims=(512, 512, 512, 512),  # Tanh-Gaussian policy (no layer norm, section 9.4).
            value_hidden_dims=(512, 512, 512, 512),
            actor_layer_norm=False,  # Unused: the Gaussian head never has layer norm.
            value_layer_norm=True,
            num_qs=10,  # Critic ensemble size N_q.
            rho=0.5,  # Pessimism of the target and of the policy's Q: mean - rho * std over the ensemble.
            discount=0.99,
            tau=0.005,  # Polyak rate of the target critic.
            horizon_length=ml_collections.config_dict.placeholder(int),  # Chunk length H (None: per domain).
            bc_alpha=0.0,  # Weight of the BC term -log pi(a_data|s) (per domain, section 13).
            target_entropy=ml_collections.config_dict.placeholder(float),  # None: -multiplier * dim(chunk).
            target_entropy_multiplier=0.5,
            init_temp=1.0,  # alpha at the start.
            compute_dtype='float32',  # Dtype of the networks' matrix products; parameters and losses stay float32.
        )
    )
