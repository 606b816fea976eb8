"""What the parity harness compares, agent by agent: the one table `record.py` and `tests/test_parity.py` share.

Pure data (no project or authors' imports): `record.py` imports it beside the authors' `agents` package, which
shares its name with ours. A spec names the authors' agent and its config at the tiny size, our config file and
its settings at the same size, how the authors' modules map onto ours, and which metrics to compare.
Adding an agent to the harness is one entry here (and its recording, `python tests/parity/record.py`).
"""

import dataclasses
from typing import Dict, Mapping, Optional

# The tiny size of every recording: observations, actions, chunk length H, networks, ensemble, batch, Euler steps.
OBS_DIM, ACTION_DIM, HORIZON = 5, 2, 2
HIDDEN_DIMS = (16, 16)
NUM_QS, BATCH, FLOW_STEPS = 2, 8, 3
SEED = 0  # of the authors' agent (its initial parameters and rng) and of the batch
UPDATES = 1  # updates replayed after the loss's gradients, by default

# The settings both implementations share, under both sets of names (the authors': agent.X of their main.py).
SHARED = dict(actor_hidden_dims=HIDDEN_DIMS, value_hidden_dims=HIDDEN_DIMS, num_qs=NUM_QS, batch_size=BATCH,
              horizon_length=HORIZON, discount=0.99, rho=0.5, tau=0.005, lr=3e-4)
AUTHORS_SHARED = dict(SHARED, action_chunking=True)

# Names of the authors' sub-modules where ours differ (the first path component inside a module); each maps to
# the candidates of ours, the first that exists is taken. Everything below that component has the same name.
SUBMODULE_NAMES = {
    'value_net': ('VmapMLP_0', 'MLP_0'),  # Value: an ensemble, or one network
    'mlp': ('MLP_0',),  # ActorVectorField
    'actor_net': ('MLP_0',),  # Actor (ReBRAC): torso
    'mean_net': ('Dense_0',),  # Actor (ReBRAC): mean layer
    'OutputDenseMean': ('Dense_0',),  # TanhNormal: mean layer
    'OutputDenseLogStd': ('Dense_1',),  # TanhNormal: log-std layer
}


@dataclasses.dataclass(frozen=True)
class ParitySpec:
    authors_agent: str  # 'module.Class' in the authors' repository, e.g. 'agents.qam.QAMAgent'
    authors_config: Mapping[str, object]  # over the authors' get_config(), besides AUTHORS_SHARED
    config: str  # our config file's module, e.g. 'agents.qam'
    our_config: Mapping[str, object]  # over our get_config(), besides SHARED
    modules: Mapping[str, str]  # authors' module -> ours (online parameters)
    targets: Mapping[str, str]  # authors' target module -> our module whose target it is
    metrics: Mapping[str, str]  # our metric -> the authors' metric of the same quantity
    updates: int = UPDATES  # updates replayed after the loss's gradients
    # ReBRAC: the authors' update(batch, full_update) gets full_update on every n-th update, counted from 1.
    full_update_every: Optional[int] = None


_CRITIC_METRICS = {'critic/critic_loss': 'critic/critic_loss', 'critic/q_mean': 'critic/q_mean',
                   'critic/q_max': 'critic/q_max', 'critic/q_min': 'critic/q_min'}

SPECS: Dict[str, ParitySpec] = {
    'qam': ParitySpec(
        'agents.qam.QAMAgent', dict(inv_temp=1.0, flow_steps=FLOW_STEPS), 'agents.qam',
        dict(inv_temp=1.0, flow_steps=FLOW_STEPS),
        modules={'critic': 'critic', 'actor_slow': 'base_flow', 'actor_fast': 'fine_flow'},
        targets={'target_critic': 'critic', 'target_actor_slow': 'base_flow'},
        metrics={**_CRITIC_METRICS, 'actor/adj_loss': 'actor/adj_loss', 'actor/bc_flow_loss': 'actor/flow_loss'}),
    'qam_e': ParitySpec(
        'agents.qam.QAMAgent', dict(inv_temp=1.0, edit_scale=0.3, flow_steps=FLOW_STEPS), 'agents.qam_e',
        dict(inv_temp=1.0, edit_scale=0.3, flow_steps=FLOW_STEPS),
        modules={'critic': 'critic', 'actor_slow': 'base_flow', 'actor_fast': 'fine_flow',
                 'edit_actor': 'edit_actor', 'edit_alpha': 'edit_alpha'},
        targets={'target_critic': 'critic', 'target_actor_slow': 'base_flow'},
        metrics={**_CRITIC_METRICS, 'actor/adj_loss': 'actor/adj_loss', 'actor/edit_q_loss': 'actor/edit_q_loss',
                 'actor/edit_entropy': 'actor/edit_entropy', 'actor/edit_alpha': 'actor/edit_alpha'}),
    'fql': ParitySpec(
        'agents.fql.FQLAgent', dict(alpha=3.0, flow_steps=FLOW_STEPS), 'agents.fql',
        dict(alpha=3.0, flow_steps=FLOW_STEPS),
        modules={'critic': 'critic', 'actor_bc_flow': 'flow', 'actor_onestep_flow': 'one_step_actor'},
        targets={'target_critic': 'critic'},
        metrics={**_CRITIC_METRICS, 'actor/bc_flow_loss': 'actor/bc_flow_loss',
                 'actor/distill_loss': 'actor/distill_loss', 'actor/actor_loss': 'actor/actor_loss'}),
    'rebrac': ParitySpec(
        'agents.rebrac.ReBRACAgent', dict(alpha_actor=0.1, actor_noise=0.2), 'agents.rebrac',
        # The authors' code steps the actor on every update (section 12.1): ours with delay_actor=False.
        dict(alpha_actor=0.1, actor_noise=0.2, delay_actor=False),
        modules={'critic': 'critic', 'actor': 'actor'},
        targets={'target_critic': 'critic', 'target_actor': 'actor'},
        metrics={**_CRITIC_METRICS, 'actor/q_loss': 'actor/actor_loss', 'actor/bc_loss': 'actor/bc_loss',
                 'actor/mse': 'actor/mse', 'actor/actor_loss': 'actor/total_loss'},
        updates=2, full_update_every=2),
    'fbrac': ParitySpec(
        'agents.fbrac.FBRACAgent', dict(alpha=0.3, flow_steps=FLOW_STEPS), 'agents.fbrac',
        dict(alpha=0.3, flow_steps=FLOW_STEPS),
        modules={'critic': 'critic', 'actor_flow': 'flow'}, targets={'target_critic': 'critic'},
        metrics={**_CRITIC_METRICS, 'actor/actor_loss': 'actor/actor_loss',
                 'actor/bc_flow_loss': 'actor/bc_flow_loss'}),
    'fawac': ParitySpec(
        'agents.fawac.FAWACAgent', dict(inv_temp=0.8, flow_steps=FLOW_STEPS), 'agents.fawac',
        dict(inv_temp=0.8, flow_steps=FLOW_STEPS),
        modules={'critic': 'critic', 'value': 'value', 'actor': 'flow'}, targets={'target_critic': 'critic'},
        metrics={**_CRITIC_METRICS, 'critic/value_loss': 'critic/value_loss', 'actor/actor_loss': 'actor/actor_loss'}),
    'fedit': ParitySpec(
        'agents.fedit.FEditAgent', dict(edit_scale=0.3, flow_steps=FLOW_STEPS), 'agents.fedit',
        dict(edit_scale=0.3, flow_steps=FLOW_STEPS),
        modules={'critic': 'critic', 'actor_bc_flow': 'flow', 'edit_actor': 'edit_actor', 'alpha': 'edit_alpha'},
        targets={'target_critic': 'critic'},
        metrics={**_CRITIC_METRICS, 'actor/actor_loss': 'actor/actor_loss', 'actor/bc_flow_loss': 'actor/bc_flow_loss',
                 'actor/edit_q_loss': 'actor/edit_q_loss', 'actor/edit_entropy': 'actor/edit_entropy'}),
}

# BAM, QSM, DAC and RLPD (docs/algorithms.md section 13). QSM and DAC are the authors' one DCGQL agent in two
# settings; ours takes the authors' sampler step (posterior_mean=False) where it differs from DDPM's (section 13.5).
# Their DDPM losses weight a sample by x ** valid, ours by x * valid: equal gradients, losses apart by a constant, so
# their actor loss is compared through its gradients only.
DIFFUSION = dict(diffusion_steps=FLOW_STEPS, time_dim=8)
_DIFFUSION_MODULES = dict(modules={'critic': 'critic', 'actor': 'noise_network'}, targets={'target_critic': 'critic'},
                          metrics={'critic/critic_loss': 'critic/critic_loss', 'critic/q_mean': 'critic/q'})

SPECS.update({
    'bam': ParitySpec(
        'agents.bam.BAMAgent', dict(inv_temp=3.0, flow_steps=FLOW_STEPS), 'agents.bam',
        dict(inv_temp=3.0, flow_steps=FLOW_STEPS),
        modules={'critic': 'critic', 'actor_slow': 'base_flow', 'actor_fast': 'fine_flow'},
        targets={'target_critic': 'critic', 'target_actor_slow': 'base_flow'},
        metrics={**_CRITIC_METRICS, 'actor/bc_flow_loss': 'actor/flow_loss', 'actor/bam_loss': 'actor/bam_loss',
                 'actor/control_cost': 'actor/bc_loss'}),
    'qsm': ParitySpec(
        'agents.dcgql.DCGQLAgent', dict(actor_loss_type='qsm', inv_temp=10.0, alpha=3.0, clip_sampler_before=False,
                                        clip_sampler_after=True, **DIFFUSION), 'agents.qsm',
        dict(inv_temp=10.0, alpha=3.0, posterior_mean=False, **DIFFUSION), **_DIFFUSION_MODULES),
    'dac': ParitySpec(
        'agents.dcgql.DCGQLAgent', dict(actor_loss_type='dac', alpha=0.3, clip_sampler_before=True,
                                        clip_sampler_after=False, **DIFFUSION), 'agents.dac',
        dict(alpha=0.3, **DIFFUSION), **_DIFFUSION_MODULES),
    'rlpd': ParitySpec(
        'agents.rlpd.RLPDAgent', dict(bc_alpha=0.1), 'agents.rlpd', dict(bc_alpha=0.1),
        modules={'critic': 'critic', 'actor': 'actor', 'alpha': 'alpha'}, targets={'target_critic': 'critic'},
        metrics={**_CRITIC_METRICS, 'actor/actor_loss': 'actor/total_loss', 'actor/policy_loss': 'actor/actor_loss',
                 'actor/alpha_loss': 'actor/alpha_loss', 'actor/bc_loss': 'actor/bc_loss', 'actor/alpha': 'actor/alpha',
                 'actor/entropy': 'actor/entropy', 'actor/q': 'actor/q'}),
})
