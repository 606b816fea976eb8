"""Q-learning with Adjoint Matching (QAM, arXiv 2601.14234; docs/algorithms.md sections 3 and 5).

A base flow is trained by BC all along; its EMA is the reference process. A fine-tuned flow is
regressed by adjoint matching onto the memoryless-SDE control whose fixed point samples
pi*(a|s) proportional to pi_base(a|s) exp(inv_temp * Q(s, a)). Variants by config:
QAM-E (`edit_scale` > 0): a tanh-Gaussian edit policy refines the flow's action;
QAM-F (`fql_alpha` > 0): a one-step policy distilled from the fine-tuned flow while maximising Q.
"""

import jax
import jax.numpy as jnp
import ml_collections

from agents.base import CONFIG_RANGES as SHARED_RANGES
from agents.base import Agent, critic_network, edit_modules, edit_policy_loss, edited_actions, flow_network
from core.errors import NON_NEGATIVE, POSITIVE, Range
from core.distributions import target_entropy_for
from core.flow import (
    adjoint_matching_loss,
    euler_ode_sample,
    flow_matching_loss,
    lean_adjoint,
    memoryless_sde_rollout,
    path_kl,
    terminal_adjoint,
)


class QAMAgent(Agent):
    PRETRAINED_FLOW_MODULES = ('base_flow', 'fine_flow')

    # The two quantities TRQAM changes (section 4); QAM: a_K = -inv_temp grad Q and sigma_k = g_k.
    def adjoint_scale(self):
        return self.config['inv_temp']

    def control_sigmas(self, noise_scales):
        return noise_scales

    def adjoint_matching(self, observations, grad_params, rng):
        """L_AM on one rollout of the memoryless SDE (section 3); logs the rollout's path KL per chunk step."""
        noise_rng, rollout_rng = jax.random.split(rng)
        fine = lambda x, t: self.network.select('fine_flow')(observations, x, t, params=grad_params)  # noqa: E731
        base = lambda x, t: self.network.select('target_base_flow')(observations, x, t)  # noqa: E731
        critic = lambda a: self.network.select('target_critic')(observations, a).mean(axis=0)  # noqa: E731

        noise = jax.random.normal(noise_rng, (*observations.shape[:-1], self.config['chunk_dim']))
        rollout = memoryless_sde_rollout(fine, base, noise, rollout_rng, self.config['flow_steps'])
        adjoints = lean_adjoint(
            base, rollout.states, terminal_adjoint(critic, rollout.terminal, self.adjoint_scale()), self.config['flow_steps']
        )
        loss = adjoint_matching_loss(rollout, adjoints, self.control_sigmas(rollout.noise_scales))
        kl = jnp.mean(path_kl(rollout)) / self.config['horizon_length']
        return loss, {'adj_loss': loss, 'path_kl': kl, 'adjoint_abs_mean': jnp.abs(adjoints).mean()}

    def actor_loss(self, batch, grad_params, rng):
        observations = batch['observations']
        bc_rng, am_rng, variant_rng = jax.random.split(rng, 3)
        base_flow = lambda x, t: self.network.select('base_flow')(observations, x, t, params=grad_params)  # noqa: E731
        bc_loss = flow_matching_loss(base_flow, batch['actions'], bc_rng, batch['valid'])
        adj_loss, info = self.adjoint_matching(observations, grad_params, am_rng)
        loss = bc_loss + adj_loss
        info['bc_flow_loss'] = bc_loss
        if self.config['edit_scale'] > 0:
            edit_loss, edit_info = self.edit_policy_loss(observations, grad_params, variant_rng)
            loss, info = loss + edit_loss, {**info, **edit_info}
        if self.config['fql_alpha'] > 0:
            one_step_loss, one_step_info = self.one_step_policy_loss(observations, grad_params, variant_rng)
            loss, info = loss + one_step_loss, {**info, **one_step_info}
        info['actor_loss'] = loss
        return loss, info

    def fine_flow_actions(self, observations, noises):
        fine = lambda x, t: self.network.select('fine_flow')(observations, x, t)  # noqa: E731
        return euler_ode_sample(fine, noises, self.config['flow_steps'])

    def edit_policy_loss(self, observations, grad_params, rng):
        """QAM-E: -Q(s, clip(a_flow + edit_scale * e)) + alpha log pi_e(e | s, a_flow), alpha auto-tuned."""
        noise_rng, edit_rng = jax.random.split(rng)
        flow_actions = self.fine_flow_actions(observations, jax.random.normal(noise_rng, self._chunk_shape(observations)))
        return edit_policy_loss(self.network, observations, flow_actions, grad_params, edit_rng,
                                self.config['edit_scale'], self.config['edit_target_entropy'])

    def one_step_policy_loss(self, observations, grad_params, rng):
        """QAM-F: -Q(s, clip(mu(s, z))) + fql_alpha ||mu(s, z) - ODE_fine(s, z)||^2."""
        noises = jax.random.normal(rng, self._chunk_shape(observations))
        flow_actions = self.fine_flow_actions(observations, noises)
        one_step_actions = self.network.select('one_step_actor')(observations, noises, params=grad_params)
        distill_loss = jnp.mean(jnp.square(one_step_actions - flow_actions))
        q_loss = -self.network.select('critic')(observations, jnp.clip(one_step_actions, -1, 1)).mean()
        return q_loss + self.config['fql_alpha'] * distill_loss, {'distill_loss': distill_loss, 'one_step_q_loss': q_loss}

    def _chunk_shape(self, observations):
        return (*observations.shape[:-1], self.config['chunk_dim'])

    @jax.jit
    def sample_actions(self, observations, rng):
        noise_rng, edit_rng = jax.random.split(rng)
        noises = jax.random.normal(noise_rng, self._chunk_shape(observations))
        if self.config['fql_alpha'] > 0:
            return jnp.clip(self.network.select('one_step_actor')(observations, noises), -1, 1)
        actions = self.fine_flow_actions(observations, noises)
        if self.config['edit_scale'] > 0:
            actions, _ = edited_actions(self.network, observations, actions, self.config['edit_scale'], edit_rng)
        return actions

    TARGET_MODULES = ('critic', 'base_flow')

    @classmethod
    def complete_config(cls, config, chunk_dim):
        if config['edit_scale'] > 0 and config['fql_alpha'] > 0:
            raise ValueError(
                f'QAM-E (edit_scale={config["edit_scale"]}) and QAM-F (fql_alpha={config["fql_alpha"]}) exclude '
                'each other: set one of --agent.edit_scale and --agent.fql_alpha to 0.'
            )
        target_entropy = target_entropy_for(
            config.get('edit_target_entropy'), config['edit_target_entropy_multiplier'], chunk_dim
        )
        return dict(chunk_dim=chunk_dim, edit_target_entropy=target_entropy)

    @classmethod
    def modules(cls, config, observations, actions):
        times = actions[..., :1]
        modules = {
            'critic': (critic_network(config), (observations, actions)),
            'base_flow': (flow_network(config), (observations, actions, times)),
            'fine_flow': (flow_network(config), (observations, actions, times)),
        }
        if config['edit_scale'] > 0:
            modules.update(edit_modules(config, observations, actions))
        if config['fql_alpha'] > 0:
            modules['one_step_actor'] = (flow_network(config), (observations, actions))
        return modules

CONFIG_RANGES = {**SHARED_RANGES, 'inv_temp': POSITIVE, 'edit_scale': NON_NEGATIVE, 'fql_alpha': NON_NEGATIVE,
                 'edit_target_entropy': Range(optional=True), 'edit_target_entropy_multiplier': Range()}


def get_config():
    return ml_collections.ConfigDict(
        dict(
            agent_name='qam',
            lr=3e-4,  # Adam over all modules, after a global-norm clip.
            clip_grad_norm=1.0,
            batch_size=256,
            actor_hidden_dims=(512, 512, 512, 512),  # Base flow, fine-tuned flow, edit/one-step policies.
            value_hidden_dims=(512, 512, 512, 512),
            actor_layer_norm=False,
            value_layer_norm=True,
            num_qs=10,  # Critic ensemble size N_q.
            rho=0.5,  # Pessimism of the target: mean - rho * std over the ensemble.
            discount=0.99,
            tau=0.005,  # Polyak rate of the target critic and of the base flow's EMA.
            horizon_length=ml_collections.config_dict.placeholder(int),  # Chunk length H (None: per domain).
            flow_steps=10,  # K, for the ODE sampler and the SDE rollout.
            inv_temp=0.3,  # c in pi* ~ pi_base exp(c Q); tuned per domain (docs/algorithms.md section 8).
            edit_scale=0.0,  # > 0: QAM-E, actions a_flow + edit_scale * e.
            fql_alpha=0.0,  # > 0: QAM-F, distillation weight of the one-step policy.
            edit_target_entropy=ml_collections.config_dict.placeholder(float),  # None: -multiplier * dim(chunk).
            edit_target_entropy_multiplier=0.5,
            compute_dtype='float32',  # Dtype of the networks' matrix products; parameters and losses stay float32.
        )
    )
