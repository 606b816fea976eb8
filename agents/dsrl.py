"""Diffusion Steering via RL with action chunking (DSRL, arXiv 2506.15799; docs/algorithms.md section 6).

A BC flow models the data; its EMA decodes noise z into action chunks. RL happens in the noise space:
a tanh-Gaussian policy pi_w(z|s) maximises a noise critic Q_z(s, z), which is distilled from the action
critic through the decoder, Q_z(s, z) ~ Q(s, clip(ODE(s, z))) for z ~ N(0, I). The action critic is
trained by the shared TD regression (section 2) with next chunks from the agent's own sampler.
"""

import jax
import jax.numpy as jnp
import ml_collections

from agents.base import CONFIG_RANGES as SHARED_RANGES
from agents.base import Agent, critic_network, flow_network
from core.errors import POSITIVE, Range
from core.distributions import auto_temperature_loss, tanh_gaussian_sample, target_entropy_for
from core.flow import euler_ode_sample, flow_matching_loss
from core.networks import GaussianHead, LogParam


class DSRLAgent(Agent):
    # The target flow (the decoder) is filled too: `TrainState.load_modules` copies into targets.
    PRETRAINED_FLOW_MODULES = ('flow',)

    def decode(self, observations, noises):
        """Noise -> action chunk through the target BC flow's deterministic ODE (clipped to [-1, 1])."""
        flow = lambda x, t: self.network.select('target_flow')(observations, x, t)  # noqa: E731
        return euler_ode_sample(flow, noises, self.config['flow_steps'])

    def critic_loss(self, batch, grad_params, rng):
        sample_rng, noise_rng = jax.random.split(rng)
        loss, info = super().critic_loss(batch, grad_params, sample_rng)

        # Noise critic: member i of Q_z regresses to member i of the (online, fixed) action critic at
        # the decoded chunk, for z ~ N(0, I) (unmasked: z is synthetic, not a data chunk).
        observations = batch['observations']
        noises = jax.random.normal(noise_rng, batch['actions'].shape)
        decoded_qs = self.network.select('critic')(observations, self.decode(observations, noises))
        noise_qs = self.network.select('noise_critic')(observations, noises, params=grad_params)
        distill_loss = jnp.mean(jnp.square(noise_qs - decoded_qs))
        info.update(distill_loss=distill_loss, noise_q_mean=noise_qs.mean())
        return loss + distill_loss, info

    def actor_loss(self, batch, grad_params, rng):
        observations = batch['observations']
        bc_rng, noise_rng = jax.random.split(rng)
        flow = lambda x, t: self.network.select('flow')(observations, x, t, params=grad_params)  # noqa: E731
        bc_loss = flow_matching_loss(flow, batch['actions'], bc_rng, batch['valid'])

        # Noise policy: alpha log pi_w(z|s) - mean_i Q_z,i(s, noise_scale * z), alpha held fixed here.
        means, log_stds = self.network.select('noise_actor')(observations, params=grad_params)
        noises, log_probs = tanh_gaussian_sample(noise_rng, means, log_stds)
        noise_qs = self.network.select('noise_critic')(observations, self.config['noise_scale'] * noises)
        q = noise_qs.mean(axis=0)
        policy_loss = jnp.mean(self.network.select('alpha')() * log_probs - q)

        alpha = self.network.select('alpha')(params=grad_params)
        alpha_loss, entropy = auto_temperature_loss(alpha, log_probs, self.config['target_entropy'])

        loss = bc_loss + policy_loss + alpha_loss
        info = {
            'actor_loss': loss,
            'bc_flow_loss': bc_loss,
            'policy_loss': policy_loss,
            'alpha_loss': alpha_loss,
            'alpha': alpha,
            'entropy': entropy,
            'noise_std': jnp.exp(log_stds).mean(),
            'q': q.mean(),
        }
        return loss, info

    @jax.jit
    def sample_actions(self, observations, rng):
        """z ~ pi_w(.|s), clipped and scaled by `noise_scale`, decoded by the target flow, clipped."""
        means, log_stds = self.network.select('noise_actor')(observations)
        noises, _ = tanh_gaussian_sample(rng, means, log_stds)
        noises = self.config['noise_scale'] * jnp.clip(noises, -1, 1)
        return self.decode(observations, noises)

    TARGET_MODULES = ('critic', 'flow')

    @classmethod
    def complete_config(cls, config, chunk_dim):
        target_entropy = target_entropy_for(config.get('target_entropy'), config['target_entropy_multiplier'], chunk_dim)
        return dict(chunk_dim=chunk_dim, target_entropy=target_entropy)

    @classmethod
    def modules(cls, config, observations, actions):
        noise_actor = GaussianHead(config['actor_hidden_dims'], config['chunk_dim'], dtype=config['compute_dtype'])
        return {
            'critic': (critic_network(config), (observations, actions)),
            'noise_critic': (critic_network(config), (observations, actions)),
            'flow': (flow_network(config), (observations, actions, actions[..., :1])),
            'noise_actor': (noise_actor, (observations,)),
            'alpha': (LogParam(), ()),
        }


CONFIG_RANGES = {**SHARED_RANGES, 'noise_scale': POSITIVE, 'target_entropy': Range(optional=True),
                 'target_entropy_multiplier': Range()}


def get_config():
    return ml_collections.ConfigDict(
        dict(
            agent_name='dsrl',
            lr=3e-4,  # Adam learning rate, one optimiser over all modules.
            batch_size=256,
            actor_hidden_dims=(512, 512, 512, 512),  # BC flow and noise policy.
            value_hidden_dims=(512, 512, 512, 512),  # Action critic and noise critic ensembles.
            actor_layer_norm=False,
            value_layer_norm=True,
            num_qs=10,  # Ensemble size N_q of both critics.
            rho=0.5,  # Pessimism of the target: mean - rho * std over the ensemble.
            discount=0.99,
            tau=0.005,  # Polyak rate of the target critic and of the decoding flow's EMA.
            horizon_length=ml_collections.config_dict.placeholder(int),  # Chunk length H (None: per domain).
            flow_steps=10,  # Euler steps K of the decoder's ODE.
            noise_scale=1.0,  # Range of the steered noise, z in [-noise_scale, noise_scale] (section 8).
            target_entropy=ml_collections.config_dict.placeholder(float),  # None: -multiplier * dim(chunk).
            target_entropy_multiplier=0.5,
            compute_dtype='float32',  # Dtype of the networks' matrix products; parameters and losses stay float32.
        )
    )
