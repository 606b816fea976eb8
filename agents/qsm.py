"""Diffusion policies steered by the critic's action gradient: QSM and DAC (docs/algorithms.md section 13).

A DDPM noise network eps(s, x_t, t) over action chunks, trained with the DDPM loss weighted by `alpha` plus a
term that uses the target critic's action gradient at the noised chunk x_t, g = grad_a mean_i Qbar_i(s, x_t):
  qsm (Q-score matching, QSM): eps(s, x_t, t) regresses to -inv_temp * g;
  dac (diffusion actor-critic, DAC): mean_dims[sqrt(1 - alphabar_t) g * eps(s, x_t, t)] is minimised.
The policy is the network's ancestral sampler (core/diffusion.py); QSM clips each step to [-1, 1], DAC clips
the denoised estimate. The critic is the shared TD regression (section 2). This file's config is QSM's;
agents/dac.py is DAC's.
"""

import jax
import jax.numpy as jnp
import ml_collections

from agents.base import CONFIG_RANGES as SHARED_RANGES
from agents.base import Agent, critic_network
from core.diffusion import ddpm_sample, noised, vp_schedule
from core.errors import COUNT, NON_NEGATIVE, Choice
from core.networks import NoisePredictor

LOSSES = ('qsm', 'dac')
BOOL = Choice((True, False))


class QSMAgent(Agent):
    TARGET_MODULES = ('critic',)

    def schedule(self):
        return vp_schedule(self.config['diffusion_steps'])

    def actor_loss(self, batch, grad_params, rng):
        observations, actions, valid = batch['observations'], batch['actions'], batch['valid']
        step_rng, rng = jax.random.split(rng)
        noise_rng, _ = jax.random.split(rng)  # as the authors split
        steps = jax.random.randint(step_rng, (*actions.shape[:-1], 1), 1, self.config['diffusion_steps'] + 1)
        noise = jax.random.normal(noise_rng, actions.shape)
        noisy_actions = noised(self.schedule(), actions, noise, steps)
        predicted = self.network.select('noise_network')(observations, noisy_actions, steps, params=grad_params)
        bc_loss = jnp.mean(jnp.mean(jnp.square(noise - predicted), axis=-1) * valid)

        target_q = lambda a: self.network.select('target_critic')(observations, a).mean(axis=0).sum()  # noqa: E731
        q_grad = jax.grad(target_q)(noisy_actions)
        if self.config['loss'] == 'qsm':
            guidance = jnp.mean(jnp.square(-self.config['inv_temp'] * q_grad - predicted), axis=-1)
        else:
            noise_level = jnp.sqrt(1.0 - self.schedule().alpha_bars[steps])
            guidance = jnp.mean(noise_level * q_grad * predicted, axis=-1)
        guidance_loss = jnp.mean(guidance * valid)
        loss = self.config['alpha'] * bc_loss + guidance_loss
        return loss, {'actor_loss': loss, 'bc_loss': bc_loss, f'{self.config["loss"]}_loss': guidance_loss,
                      'q_grad_norm': jnp.linalg.norm(q_grad, axis=-1).mean()}

    @jax.jit
    def sample_actions(self, observations, rng):
        noise_rng, sampler_rng = jax.random.split(rng)
        noise = jax.random.normal(noise_rng, (*observations.shape[:-1], self.config['chunk_dim']))
        network = lambda x, t: self.network.select('noise_network')(observations, x, t)  # noqa: E731
        return ddpm_sample(network, self.schedule(), noise, sampler_rng, clip_denoised=self.config['clip_denoised'],
                           clip_steps=self.config['clip_steps'], posterior_mean=self.config['posterior_mean'])

    @classmethod
    def complete_config(cls, config, chunk_dim):
        if config['loss'] not in LOSSES:
            raise ValueError(f'--agent.loss={config["loss"]!r}; it must be one of {", ".join(LOSSES)}.')
        return super().complete_config(config, chunk_dim)

    @classmethod
    def modules(cls, config, observations, actions):
        noise_network = NoisePredictor(config['actor_hidden_dims'], config['chunk_dim'], config['time_dim'],
                                       config['actor_layer_norm'], dtype=config['compute_dtype'])
        return {
            'critic': (critic_network(config), (observations, actions)),
            'noise_network': (noise_network, (observations, actions, actions[..., :1])),
        }


CONFIG_RANGES = {**SHARED_RANGES, 'loss': Choice(LOSSES), 'diffusion_steps': COUNT, 'time_dim': COUNT,
                 'inv_temp': NON_NEGATIVE, 'alpha': NON_NEGATIVE, 'clip_denoised': BOOL, 'clip_steps': BOOL,
                 'posterior_mean': BOOL}


def get_config():
    return ml_collections.ConfigDict(
        dict(
            agent_name='qsm',
            lr=3e-4,  # Adam over all modules, after a global-norm clip.
            clip_grad_norm=1.0,
            batch_size=256,
            actor_hidden_dims=(512, 512, 512, 512),  # Both MLPs of the noise network.
            value_hidden_dims=(512, 512, 512, 512),
            actor_layer_norm=False,
            value_layer_norm=True,
            num_qs=10,  # Critic ensemble size N_q.
            rho=0.5,  # Pessimism of the target: mean - rho * std over the ensemble.
            discount=0.99,
            tau=0.005,  # Polyak rate of the target critic.
            horizon_length=ml_collections.config_dict.placeholder(int),  # Chunk length H (None: per domain).
            diffusion_steps=10,  # T, DDPM steps of the variance-preserving schedule.
            time_dim=64,  # Fourier features of the diffusion step.
            loss='qsm',  # 'qsm' (QSM) or 'dac' (DAC): how the critic's action gradient trains the network.
            inv_temp=1.0,  # QSM's scale of the gradient the noise regresses to (per domain, section 13; unused by DAC).
            alpha=0.0,  # Weight of the DDPM (BC) loss (per domain, section 13).
            clip_denoised=False,  # Clip the denoised estimate x0_hat at each step (DAC).
            clip_steps=True,  # Clip every intermediate chunk x_{t-1} (QSM).
            posterior_mean=True,  # False: the authors' step x_{t-1} = x0_hat + noise without clip_denoised (section 13).
            compute_dtype='float32',  # Dtype of the networks' matrix products; parameters and losses stay float32.
        )
    )
