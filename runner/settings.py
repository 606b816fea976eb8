"""The settings of a main.py run: the flags and agent config as the user gave them, completed by the
protocol's per-domain table (protocols/domains.py, protocols.methods.METHODS), and what flags.json records of them.

Explicit settings always win: a flag or agent key the user set is never changed by the protocol. The
resolved settings are printed at start (`describe`) and recorded in every seed's flags.json, with the ones
the protocol set under 'protocol_settings', so a run directory says exactly what ran.
"""

import os
from typing import Dict, Optional

import ml_collections

from protocols.methods import BC, bc_config_for, method_of, resolve_protocol
from runner import layout
from protocols.domains import PROTOCOLS, dims_label, get_protocol
from core.errors import RunError
from runner.logs import read_json
from runner.state import settings_changes
from runner.schedule import Schedule
from runner.validation import InvalidSettings, check_settings

# Flags that name where a run lives, how it is grouped or how it reports, not what it computes: a resume may
# change them. 'protocol' itself is free because every value it sets is recorded and compared.
RESUME_FREE_FLAGS = ('save_dir', 'run_name', 'wandb_mode', 'wandb_project', 'wandb_group', 'allow_config_change',
                     'debug', 'seeds', 'protocol', 'eval_workers', 'eval_envs', 'video_episodes', 'overlap_updates')
# What flags.json records beyond the flags, derived or a history, not compared either.
RESUME_FREE_SETTINGS = RESUME_FREE_FLAGS + ('config_changes', 'protocol_settings')
# Flags a BC pre-training run does not use. It records their defaults, so that every method's command (and
# --bc_only) resolves to the same BC run.
BC_UNUSED_FLAGS = ('online_steps', 'start_training', 'utd_ratio', 'balanced_sampling', 'pretrained_actor_path',
                   'run_name')


class ConfigMismatch(RunError):
    pass


def resolve_config(flag_values: dict, agent_config, explicit=(), defaults: Optional[dict] = None):
    """The run's settings: the flag values and agent config completed by the protocol (where the user set
    nothing), the method, seeds, run directories, BC starting points and schedule. The inputs stay untouched."""
    defaults = defaults or {}
    method = method_of(agent_config)
    explicit = set(explicit) | {name for name, value in flag_values.items() if name in defaults and
                                value != defaults[name]}
    base = method.default_config()
    explicit |= {f'agent.{key}' for key, value in agent_config.items() if key not in base or base[key] != value}
    values, agent, applied = resolve_protocol(method, flag_values, agent_config, explicit)
    if values['bc_only']:
        values, agent = _bc_run(values, agent, defaults)
        applied = {key: value for key, value in applied.items()
                   if not key.startswith('agent.') or agent.get(key[len('agent.'):], object()) == value}
    seeds = _seeds(values)
    config = ml_collections.ConfigDict(values)
    config.agent = agent
    config.method = (BC if values['bc_only'] else method).label
    config.agent_class = (BC if values['bc_only'] else method).agent_class()
    config.flag_names = tuple(sorted(flag_values))
    config.protocol_settings = tuple(applied.items())  # ('agent.KEY', value): dotted names are no ConfigDict keys
    config.seeds = seeds
    config.run_dirs = tuple(_run_dir(values, agent, BC if values['bc_only'] else method, seed) for seed in seeds)
    config.bc_stage = _needs_bc_stage(values, config.agent_class)
    config.pretrained_paths = _pretrained_paths(values, agent, seeds, config.bc_stage)
    config.schedule = Schedule(
        values['offline_steps'], values['online_steps'], values['log_interval'], values['eval_interval'],
        values['save_interval'], values['dataset_replace_interval'] if values['dataset_shards_dir'] else 0,
        values['steps_per_call'])
    check_settings(config)
    return ml_collections.FrozenConfigDict(config)


def _seeds(values) -> tuple:
    given = list(values['seeds'] or [values['seed']])
    try:
        return tuple(int(seed) for seed in given)
    except (TypeError, ValueError):
        name = '--seeds' if values['seeds'] else '--seed'
        raise InvalidSettings(f'{name}={",".join(map(str, given))}: must be integers >= 0, e.g. 0,1,2,3.') from None


def _bc_run(values, agent, defaults):
    """Stage 1 on its own: the BC flow with the method's network, for `bc_steps` steps."""
    values = {**values, **{name: defaults.get(name) for name in BC_UNUSED_FLAGS}}
    if not values['bc_steps'] and values['protocol'] != 'trqam':
        raise RunError(f'--bc_only under --protocol={values["protocol"]} needs --bc_steps (this protocol has no BC '
                       f'pre-training stage; the TRQAM paper\'s is {PROTOCOLS["trqam"].bc_steps}).')
    values['bc_steps'] = values['bc_steps'] or PROTOCOLS['trqam'].bc_steps
    values.update(offline_steps=values['bc_steps'], online_steps=0)
    return values, bc_config_for(agent)


def _run_dir(values, agent, method, seed) -> str:
    if values['run_name']:
        return os.path.join(values['save_dir'], values['run_name'].replace('{seed}', str(seed)))
    if values['bc_only']:
        return os.path.join(values['save_dir'], _bc_name(values, agent, seed))
    return os.path.join(values['save_dir'], layout.run_name(method.slug, values['env_name'], seed))


def _bc_name(values, agent, seed) -> str:
    return layout.bc_run_name(values['env_name'], seed, agent['actor_hidden_dims'], agent['actor_layer_norm'],
                              agent['horizon_length'])


def _needs_bc_stage(values, agent_class) -> bool:
    """Stage 1 first: the protocol (or --bc_steps) has one, no flow was given and this agent has one."""
    return (not values['bc_only'] and values['bc_steps'] > 0 and not values['pretrained_actor_path']
            and bool(agent_class.PRETRAINED_FLOW_MODULES))


def _pretrained_paths(values, agent, seeds, bc_stage):
    if bc_stage:
        bc_agent = bc_config_for(agent)
        return tuple(os.path.join(values['save_dir'], _bc_name(values, bc_agent, seed)) for seed in seeds)
    path = values['pretrained_actor_path']
    return tuple(path.replace('{seed}', str(seed)) if path else None for seed in seeds)


def recorded_settings(config, k: int) -> dict:
    """What seed k's flags.json records: every flag of main.py as resolved for it, the agent config and what
    the protocol set."""
    flags = {name: config[name] for name in config.flag_names}
    flags.update(seed=config.seeds[k], pretrained_actor_path=config.pretrained_paths[k])
    return {**flags, 'agent': config.agent.to_dict(), 'protocol_settings': dict(config.protocol_settings)}


def check_resume(config, k: int, saved_settings) -> dict:
    """The settings of seed k that differ from its checkpoint's (older checkpoints: flags.json's); refuses
    them unless --allow_config_change."""
    run_dir = config.run_dirs[k]
    if saved_settings is None:
        flags_path = layout.path(run_dir, layout.FLAGS_FILE)
        saved_settings = read_json(flags_path) if os.path.exists(flags_path) else recorded_settings(config, k)
    changes = settings_changes(saved_settings, recorded_settings(config, k), free=RESUME_FREE_SETTINGS)
    if changes and not config.allow_config_change:
        listed = '\n'.join(f'  {key}: {old!r} in the checkpoint, {new!r} now' for key, (old, new) in changes.items())
        raise ConfigMismatch(
            f'{run_dir} holds a run with other settings:\n{listed}\nRun the command that started it to '
            'resume it; pass another --run_name (or --save_dir) for a new run; or add --allow_config_change to '
            'resume with the new settings (flags.json records the change).')
    return changes


def describe(config) -> str:
    """The resolved settings on one screen: what runs, and which of it the protocol chose."""
    seeds = ','.join(map(str, config.seeds))
    stage = 'BC pre-training (stage 1)' if config.bc_only else config.method
    lines = [f'{stage} on {config.env_name}, seed{"s" if len(config.seeds) > 1 else ""} {seeds}, '
             f'protocol {config.protocol}: {get_protocol(config.protocol).description}.']
    if config.bc_stage:
        lines.append(f'  starts from BC pre-training ({config.bc_steps} steps): {", ".join(config.pretrained_paths)}')
    elif any(config.pretrained_paths):
        lines.append(f'  starts from {", ".join(config.pretrained_paths)}')
    data = config.dataset_shards_dir or config.dataset_path or config.dataset_dir or 'the default data folder'
    lines.append(f'  steps: {config.offline_steps} offline + {config.online_steps} online; data: {data}; '
                 f'sparse rewards: {"yes" if config.sparse else "no"}; chunk length {config.agent.horizon_length}'
                 + ('; balanced sampling' if config.balanced_sampling else ''))
    shown = ('discount', 'rho', 'actor_hidden_dims', 'value_hidden_dims', 'actor_layer_norm', 'compute_dtype')
    lines.append('  agent: ' + ', '.join(f'{key} {_short(config.agent[key])}' for key in shown if key in config.agent))
    if config.protocol_settings:
        lines.append('  set by the protocol: ' + ', '.join(f'{key}={_short(value)}'
                                                             for key, value in config.protocol_settings))
    lines.append(f'  run director{"ies" if len(config.run_dirs) > 1 else "y"}: {", ".join(config.run_dirs)}')
    return '\n'.join(lines)


def _short(value) -> str:
    return dims_label(value) if isinstance(value, (tuple, list)) else str(value)


def history_of_changes(flags_path: str, step: int, changes: Dict[str, tuple]):
    """flags.json's list of allowed config changes (kept by every resume, with or without a change of its own, up
    to `step`: a run resumed from an earlier checkpoint no longer has the later ones), with `changes` (made at
    `step`) appended."""
    recorded = read_json(flags_path).get('config_changes', []) if os.path.exists(flags_path) else []
    history = [entry for entry in recorded if entry['step'] <= step]
    if changes:
        history.append({'step': step, 'changes': {key: list(values) for key, values in changes.items()}})
    return history
