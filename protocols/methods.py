"""The registry of agents and methods: the one place that names them.

An agent is a class in `agents/{agent_name}.py` whose config's `agent_name` is the module's name. A method is a column of
the papers' tables: an agent, its config file (QAM-E's is agents/qam_e.py: agents/qam.py's agent with
edit_scale > 0), the settings that identify it and its per-domain hyperparameters (docs/algorithms.md
section 8). Table labels, run-name prefixes, benchmark names, the sweep's jobs and what a protocol sets
all derive from `METHODS`, so adding a method is its file plus one entry here.

    method = method_of(config)            # the method an agent config is, e.g. QAM-E
    paper_methods('qam')                  # the columns of the QAM paper's table, the QAM sweep's methods
    METHODS['QAM-E'].overrides('puzzle-4x4-play-singletask-task2-v0', 'trqam')   # its --agent.* values there
    METHODS['QAM-E'].protocol_settings('puzzle-4x4-play-singletask-task2-v0', 'trqam', dataset_dir)
"""

import dataclasses
import importlib
import math
from typing import Callable, Dict, Mapping, Optional, Tuple

from protocols import domains

# The papers whose tables the registry knows (protocols/domains.py `Protocol.paper`: the protocol reproducing each).
PAPERS = ('trqam', 'qam')
# Keys a run may change without becoming another method (network sizes: the CPU presets and the tests use small
# ones), and with them the ones every method gets alike on a domain (protocols/domains.py `Protocol.agent_settings`).
NETWORK_KEYS = ('actor_hidden_dims', 'value_hidden_dims', 'actor_layer_norm', 'num_qs', 'batch_size')
SHARED_KEYS = frozenset(NETWORK_KEYS) | {'discount', 'rho', 'horizon_length', 'compute_dtype'}


def column(*values) -> Dict[str, float]:
    """One per-domain value for each of the ten benchmark domains, in the order of `protocols.domains.DOMAINS`."""
    if len(values) != len(domains.DOMAINS):
        raise ValueError(f'A per-domain column needs {len(domains.DOMAINS)} values, got {len(values)}.')
    return {domain: float(value) for domain, value in zip(domains.DOMAINS, values)}


@dataclasses.dataclass(frozen=True)
class Method:
    label: str  # as in the papers' tables
    agent: str  # 'package.module.Class', e.g. 'agents.fql.FQLAgent' (agent_name: the module's name)
    fixed: Mapping[str, object] = dataclasses.field(default_factory=dict)  # the settings that make the method
    per_domain: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)  # key -> column()
    # An agent config is this method when it has the `fixed` settings and meets `condition`.
    condition: Callable[[Mapping], bool] = lambda config: True
    papers: Tuple[str, ...] = ()  # the papers (PAPERS) whose tables have it as a column: their sweeps run it
    run_prefix: Optional[str] = None  # default: the lower-cased label
    config: Optional[str] = None  # module of its config file (default: the agent's module)
    # main.py flags that are part of the method under a paper's protocol, e.g. RLPD's online-only runs; they
    # take the place of the protocol's and the sweep's values of those flags (an explicit flag still wins).
    run_flags: Mapping[str, object] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        unknown = [paper for paper in self.papers if paper not in PAPERS]
        if unknown:
            raise ValueError(f'Method {self.label}: unknown papers {unknown}; known: {", ".join(PAPERS)}.')

    @property
    def module(self) -> str:
        return self.agent.rpartition('.')[0]

    @property
    def agent_name(self) -> str:
        return self.module.rpartition('.')[2]

    @property
    def config_module(self) -> str:
        return self.config or self.module

    @property
    def agent_file(self) -> str:
        """The config file main.py's --agent takes, e.g. 'agents/fql.py'."""
        return self.config_module.replace('.', '/') + '.py'

    @property
    def slug(self) -> str:
        """Run-name prefix and benchmark name, e.g. 'qam-e'."""
        return self.run_prefix or self.label.lower()

    def agent_class(self):
        return getattr(importlib.import_module(self.module), self.agent.rpartition('.')[2])

    def default_config(self):
        """The method's config file's config (outside any domain)."""
        return importlib.import_module(self.config_module).get_config()

    def overrides(self, env_name: Optional[str] = None, protocol: str = 'trqam') -> Dict[str, object]:
        """`--agent.KEY=VALUE` values of the method as {KEY: VALUE}: on the domain of `env_name` under
        `protocol`, the domain's network and critic settings (protocols/domains.py) and, on a benchmark domain, the
        method's per-domain values; the method's fixed settings always. Only keys its config has."""
        values = {}
        protocol = domains.get_protocol(protocol)
        if env_name is not None:
            domain = domains.domain_settings(env_name)
            values.update(protocol.agent_settings(env_name))
            if protocol.paper_settings and domain.in_benchmark:
                values.update({key: by_domain[domain.name] for key, by_domain in self.per_domain.items()})
        values.update(self.fixed)
        keys = self.default_config().keys()
        return {key: value for key, value in values.items() if key in keys}

    def protocol_settings(self, env_name: str, protocol: str, dataset_dir: Optional[str] = None) -> Dict[str, object]:
        """Everything `protocol` sets for this method on `env_name`: main.py flags by name and agent config
        keys as 'agent.KEY'. main.py applies those the user did not set; the sweep reads the same."""
        return {**domains.get_protocol(protocol).run_flags(env_name, dataset_dir), **self.flags_under(protocol),
                **{f'agent.{key}': value for key, value in self.overrides(env_name, protocol).items()}}

    def flags_under(self, protocol: str) -> Dict[str, object]:
        """The method's own main.py flags (`run_flags`) under `protocol`: those of a paper's protocol, none under
        'none' (only the flags and the agent config)."""
        return dict(self.run_flags) if domains.get_protocol(protocol).paper_settings else {}

    def describes(self, config: Mapping) -> bool:
        """Whether an agent config (a dict) is this method."""
        return config.get('agent_name') == self.agent_name and self.condition(config) and \
            all(same_setting(config.get(key), value) for key, value in self.fixed.items())

    def is_configured_as(self, config: Mapping, env_name: str, protocol: Optional[str] = 'trqam',
                         of_method: Optional[str] = None) -> bool:
        """Whether an agent config (a dict) of a run of `protocol` on `env_name` is also this method's
        configuration there: the one rule for "the same configuration" (the sweep launches such runs once,
        the aggregation counts them under every method they are; QAM-E where its per-domain edit_scale is 0
        is QAM). Compared: this method's settings under the protocol, and its config file's values where they
        differ from those of the method the run was (`of_method`, default `method_of(config)`): QAM-E's file
        sets edit_scale 0.1, so where no per-domain value replaces it, QAM-E is not QAM. Network sizes and what
        every method shares on a domain (SHARED_KEYS) aside; a run recording no protocol counts as trqam."""
        if config.get('agent_name') != self.agent_name:
            return False
        identity = {}
        run_method = METHODS.get(of_method) if of_method is not None else _method_or_none(config)
        if run_method is not None:
            own, target = run_method.default_config().to_dict(), self.default_config().to_dict()
            identity = {key: value for key, value in target.items()
                        if key not in own or not same_setting(own[key], value)}
        identity.update(self.overrides(env_name, protocol or 'trqam'))
        return all(same_setting(config.get(key), value) for key, value in identity.items() if key not in SHARED_KEYS)


def resolve_protocol(method: Method, flag_values: Mapping, agent_config, explicit=()):
    """What main.py runs for `flag_values` (its flags by name) and `agent_config` of `method`: (flag values,
    agent config, {setting: value the protocol set}). The protocol (flag_values['protocol']) completes every
    setting not in `explicit` (flag names and 'agent.KEY'), and the chunk length is the horizon_length flag's,
    else the config's, else the domain's. The one rule main.py and the sweep both follow; inputs stay untouched."""
    values = dict(flag_values)
    agent = agent_config.copy_and_resolve_references()
    protocol_values = method.protocol_settings(values['env_name'], values['protocol'], values['dataset_dir'])
    skipped = set(explicit)
    if values['dataset_path']:
        skipped.add('dataset_shards_dir')
    if 'agent.horizon_length' in explicit:
        skipped.add('horizon_length')
    applied = {key: value for key, value in protocol_values.items() if key not in skipped}
    with agent.unlocked():
        for key, value in applied.items():
            if key.startswith('agent.'):
                agent[key[len('agent.'):]] = value
            else:
                values[key] = value
    values['sparse'] = bool(values['sparse'])
    values['bc_steps'] = values['bc_steps'] or 0
    agent = domains.with_horizon_length(agent, values['env_name'], values['horizon_length'])
    values['horizon_length'] = agent.horizon_length
    return values, agent, applied


def _method_or_none(config: Mapping) -> Optional['Method']:
    try:
        return method_of(config)
    except ValueError:
        return None


def same_setting(a, b) -> bool:
    """The one equality rule of config values: sequences element-wise (a tuple equals a list), numbers to
    float round-off, anything else by ==."""
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b) and \
            all(same_setting(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


# Per-domain columns follow protocols.domains.DOMAINS: antmaze-large, antmaze-giant, humanoidmaze-medium,
# humanoidmaze-large, scene, puzzle-3x3, puzzle-4x4, cube-double, cube-triple, cube-quadruple. The QAM
# paper's values (section 8); TRQAM's per-domain eps_KL is not public: 1.0 everywhere, 0.5 on cube-triple
# after the authors' example command. Discounts, pessimism and networks are the protocol's (protocols/domains.py).
BOTH = PAPERS  # a column of both papers' tables
_METHODS = (
    Method('TRQAM', 'agents.trqam.TRQAMAgent', papers=('trqam',), per_domain=dict(
        kl_budget=column(1, 1, 1, 1, 1, 1, 1, 1, 0.5, 1))),
    Method('QAM', 'agents.qam.QAMAgent', fixed=dict(edit_scale=0.0, fql_alpha=0.0), papers=BOTH, per_domain=dict(
        inv_temp=column(10, 3, 3, 3, 1, 3, 30, 1, 3, 1))),
    # Where the QAM paper's edit_scale is 0 (scene, cube-double), QAM-E is QAM with that inv_temp.
    Method('QAM-E', 'agents.qam.QAMAgent', fixed=dict(fql_alpha=0.0), config='agents.qam_e', papers=BOTH,
           condition=lambda config: (config.get('edit_scale') or 0) > 0, per_domain=dict(
               inv_temp=column(1, 10, 3, 3, 1, 1, 0.1, 1, 3, 3),
               edit_scale=column(0.1, 0.1, 0.1, 0.1, 0, 0.1, 0.9, 0, 0.1, 0.1))),
    # Where the QAM paper's fql_alpha is 0 (puzzle-3x3, cube-double), QAM-F is QAM with that inv_temp.
    Method('QAM-F', 'agents.qam.QAMAgent', fixed=dict(edit_scale=0.0), config='agents.qam_f', papers=('qam',),
           condition=lambda config: (config.get('fql_alpha') or 0) > 0, per_domain=dict(
               inv_temp=column(3, 3, 1, 0.3, 1, 3, 3, 1, 10, 0.3),
               fql_alpha=column(30, 30, 30, 30, 300, 0, 3, 0, 300, 30))),
    Method('FQL', 'agents.fql.FQLAgent', papers=BOTH, per_domain=dict(
        alpha=column(3, 3, 30, 30, 300, 300, 1, 300, 30, 100))),
    Method('IFQL', 'agents.ifql.IFQLAgent', papers=BOTH, per_domain=dict(
        expectile=column(0.9, 0.8, 0.7, 0.8, 0.9, 0.95, 0.9, 0.9, 0.95, 0.95))),
    Method('DSRL', 'agents.dsrl.DSRLAgent', papers=BOTH, per_domain=dict(
        noise_scale=column(0.8, 1.2, 0.6, 0.8, 0.4, 1.0, 1.0, 1.0, 1.4, 1.4))),
    Method('CGQL-L', 'agents.cgql.CGQLAgent', fixed=dict(mode='linex'), papers=BOTH, per_domain=dict(
               guidance_coef=column(0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 1.0, 0.01, 0.1, 0.01),
               noisy_coef=column(0.001, 0.001, 0.1, 0.1, 0.1, 0.001, 0.001, 0.001, 0.001, 0.1))),
    Method('CGQL-M', 'agents.cgql.CGQLAgent', fixed=dict(mode='mse'), papers=('qam',), per_domain=dict(
               guidance_coef=column(0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 1.0, 0.01, 0.1, 0.01),
               noisy_coef=column(0.1, 0.001, 0.1, 0.1, 0.1, 0.1, 0.001, 0.001, 0.001, 0.1))),
    Method('CGQL', 'agents.cgql.CGQLAgent', fixed=dict(mode='simple'), papers=('qam',), per_domain=dict(
               guidance_coef=column(0.1, 0.1, 0.01, 0.01, 0.1, 0.1, 0.1, 0.01, 0.1, 0.1))),
    # The QAM paper's other baselines (docs/algorithms.md section 12), its per-domain values from the authors'
    # experiments/reproduce.py.
    Method('ReBRAC', 'agents.rebrac.ReBRACAgent', papers=('qam',), per_domain=dict(
        alpha_actor=column(0.01, 0.01, 0.01, 0.01, 0.03, 0.1, 0.01, 0.01, 0.01, 0.01),
        actor_noise=column(0, 0, 0, 0.1, 0, 0, 0.2, 0, 0.2, 0.2))),
    Method('FBRAC', 'agents.fbrac.FBRACAgent', papers=('qam',), per_domain=dict(
        alpha=column(0.1, 0.1, 30, 10, 100, 0.03, 0.3, 0.1, 0.03, 1))),
    Method('FAWAC', 'agents.fawac.FAWACAgent', papers=('qam',), per_domain=dict(
        inv_temp=column(6.4, 0.8, 6.4, 0.8, 6.4, 0.8, 0.8, 0.8, 0.8, 0.8))),
    Method('FEdit', 'agents.fedit.FEditAgent', papers=('qam',), per_domain=dict(
        edit_scale=column(0.2, 0.3, 0.5, 0.1, 0.2, 0.2, 0.8, 0.2, 0.3, 0.4))),
    # The QAM paper's other baselines (docs/algorithms.md section 13), from its authors' experiments/reproduce.py
    # and reproduce_rlpd.py.
    Method('BAM', 'agents.bam.BAMAgent', papers=('qam',), per_domain=dict(
        inv_temp=column(30, 30, 10, 30, 10, 10, 30, 10, 30, 10))),
    Method('QSM', 'agents.qsm.QSMAgent', papers=('qam',), fixed=dict(loss='qsm', clip_denoised=False, clip_steps=True),
           per_domain=dict(inv_temp=column(10, 10, 10, 10, 3, 10, 10, 1, 10, 1),
                           alpha=column(10, 10, 30, 30, 30, 30, 1, 10, 10, 10))),
    Method('DAC', 'agents.qsm.QSMAgent', papers=('qam',), config='agents.dac',
           fixed=dict(loss='dac', clip_denoised=True, clip_steps=False),
           per_domain=dict(alpha=column(0.3, 0.3, 1, 0.3, 1, 1, 1, 3, 0.3, 1))),
    # Online only: no offline phase, every online batch half offline data (its authors' reproduce_rlpd.py).
    Method('RLPD', 'agents.rlpd.RLPDAgent', papers=('qam',), run_flags=dict(offline_steps=0, balanced_sampling=True),
           per_domain=dict(bc_alpha=column(0, 0.01, 0.03, 0, 0.3, 0.01, 0, 0.1, 0, 0))),
    # Stage 1 of the TRQAM paper's protocol, BC pre-training (also what --bc_only trains for any agent file).
    Method('BC', 'agents.bc_flow.BCFlowAgent', run_prefix='bc'),
)
METHODS: Dict[str, Method] = {method.label: method for method in _METHODS}
BC = METHODS['BC']


def bc_config_for(agent_config):
    """The config of the BC pre-training run a method starts from: every setting of the BC agent that its
    training uses, taken from the method's config (so the flow networks have the same shape). The discount
    (it only sums the rewards BC ignores) and the Polyak rate (BC has no target) keep BC's own values, so
    every method of a task, whatever its discount, starts from the same BC run."""
    config = BC.default_config()
    unused = ('agent_name', 'discount', 'tau')
    config.update({key: agent_config[key] for key in config if key not in unused and key in agent_config})
    return config


def paper_methods(protocol: str) -> Tuple[str, ...]:
    """The labels of the columns of the table `protocol` reproduces (its `Protocol.paper`), in registry order: the
    sweep's default methods. A protocol reproducing no paper (none) runs the TRQAM paper's columns."""
    paper = domains.get_protocol(protocol).paper or 'trqam'
    return tuple(label for label, method in METHODS.items() if paper in method.papers)


def agent_names():
    return sorted({method.agent_name for method in METHODS.values()})


def _unknown_agent(agent_name: str) -> ValueError:
    return ValueError(f'Unknown agent_name {agent_name!r}. Known agents: {", ".join(agent_names())}. '
                      'Pass one of the files in agents/, e.g. --agent=agents/trqam.py.')


def get_agent_class(agent_name: str):
    for method in METHODS.values():
        if method.agent_name == agent_name:
            return method.agent_class()
    raise _unknown_agent(agent_name)


def method_of(config: Mapping) -> Method:
    """The method an agent config is (its table label, run prefix, ...)."""
    for method in METHODS.values():
        if method.describes(config):
            return method
    agent_name = config.get('agent_name')
    if agent_name in agent_names():
        raise ValueError(f'The {agent_name} config {dict(config)} is none of the registered methods '
                         f'({", ".join(m.label for m in METHODS.values() if m.agent_name == agent_name)}).')
    raise _unknown_agent(agent_name)


def method_by_slug(slug: str) -> Method:
    for method in METHODS.values():
        if method.slug == slug:
            return method
    raise ValueError(f'Unknown method {slug!r}; known: {", ".join(m.slug for m in METHODS.values())}.')
