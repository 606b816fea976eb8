"""Per-domain settings of the benchmark and the two papers' protocols (docs/algorithms.md sections 7-9): the one
home for them.

A domain is a benchmark row of the papers' tables, `cube-double-play` for the tasks
`cube-double-play-singletask-task{1..5}-v0`. This module holds what every method shares on a domain
(networks, discount and pessimism of the critic, rewards, chunk length, dataset) under each protocol;
each method's own per-domain hyperparameters are in its registry entry (`protocols.methods.METHODS`), which
combines both:

    from protocols.methods import METHODS
    METHODS['QAM-E'].overrides('puzzle-4x4-play-singletask-task2-v0', protocol='trqam')
    # {'edit_scale': 0.9, 'inv_temp': 0.1, 'fql_alpha': 0.0, 'discount': 0.995, 'rho': 0.5,
    #  'actor_hidden_dims': (1024, 1024, 1024, 1024), 'value_hidden_dims': (1024, ...), 'actor_layer_norm': True}
    PROTOCOLS['trqam'].run_flags('puzzle-4x4-play-singletask-task2-v0', dataset_dir='data')
    # {'horizon_length': 5, 'sparse': True, 'bc_steps': 300000, 'dataset_shards_dir': 'data/puzzle-4x4-play-10m-v0'}
"""

import dataclasses
import os
from typing import Dict, Optional, Tuple

from envs.offline_data import domain_name  # noqa: F401 - the suites parse the names; callers ask here too
from envs.ogbench_data import DEFAULT_DATASET_DIR, NUM_TASKS, is_locomotion


def default_horizon_length(env_name: str) -> int:
    """Chunk length H: 5 for the manipulation domains (cube, scene, puzzle), 1 for the mazes."""
    return 1 if is_locomotion(env_name) else 5


def with_horizon_length(agent_config, env_name: str, horizon_length: Optional[int] = None):
    """A copy of `agent_config` with its chunk length set: `horizon_length` when given, else the config's
    own, else the domain's default."""
    config = agent_config.copy_and_resolve_references()
    with config.unlocked():
        if horizon_length is not None:
            config.horizon_length = horizon_length
        elif config.get('horizon_length') is None:
            config.horizon_length = default_horizon_length(env_name)
    return config


DEFAULT_HIDDEN_DIMS = (512, 512, 512, 512)
LARGE_HIDDEN_DIMS = (1024, 1024, 1024, 1024)


def _network(dims, num_qs, batch_size, actor_layer_norm=False):
    return dict(actor_hidden_dims=dims, value_hidden_dims=dims, actor_layer_norm=actor_layer_norm, num_qs=num_qs,
                batch_size=batch_size)


# Network sizes by name, the one home of them: the papers' (paper; large, the TRQAM paper's on its large-data
# domains) and two for CPUs (small: the sweep's cpu preset and the benchmark; tiny: the tests).
NETWORK_SIZES = {
    'paper': _network(DEFAULT_HIDDEN_DIMS, num_qs=10, batch_size=256),
    'large': _network(LARGE_HIDDEN_DIMS, num_qs=10, batch_size=256, actor_layer_norm=True),
    'small': _network((64, 64), num_qs=2, batch_size=64),
    'tiny': _network((16, 16), num_qs=2, batch_size=8),
}


def dims_label(hidden_dims) -> str:
    """'4x512' for (512, 512, 512, 512), '64-32' for (64, 32): how run names and tables show a network."""
    hidden_dims = tuple(hidden_dims)
    if hidden_dims and len(set(hidden_dims)) == 1:
        return f'{len(hidden_dims)}x{hidden_dims[0]}'
    return '-'.join(map(str, hidden_dims))


def size_name(agent_config) -> str:
    """The NETWORK_SIZES name of an agent config's actor network, else its `dims_label`."""
    dims = tuple(agent_config.get('actor_hidden_dims') or ())
    return next((name for name, size in NETWORK_SIZES.items() if size['actor_hidden_dims'] == dims),
                dims_label(dims))
STANDARD_DATASET_SIZE = 1_000_000


@dataclasses.dataclass(frozen=True)
class DomainSettings:
    """Settings of one domain (the env name without `-singletask-taskN-v0`) that every method shares."""

    name: str
    sparse: bool  # rewards r -> -1[r != 0]
    rho: float  # pessimism of the critic target
    qam_discount: float  # the QAM paper's, for every method
    trqam_discount: float  # the authors' code default, with which the TRQAM paper ran every method
    dataset_size: int  # of the TRQAM paper's dataset: 1M standard, 10M / 100M as directories of 1M shards
    qam_dataset_size: int = 1_000_000  # of the QAM paper's dataset (its authors' experiments/reproduce.py)
    in_benchmark: bool = True  # a row of the papers' 50-task tables
    suite: str = 'ogbench'  # or 'robomimic' (one task per domain, named {task}-{mh|ph}-low_dim)

    @property
    def large(self) -> bool:
        """One of the TRQAM paper's large-data domains (4 x 1024 networks with actor layer norm there)."""
        return self.dataset_size > STANDARD_DATASET_SIZE

    @property
    def horizon_length(self) -> int:
        return default_horizon_length(self.name)

    @property
    def locomotion(self) -> bool:
        return is_locomotion(self.name)

    @property
    def generatable(self) -> bool:
        """Manipulation data can be generated locally (experiments/generate_dataset.py); locomotion data
        needs OGBench's expert policies and can only be downloaded."""
        return not self.locomotion

    @property
    def dataset_name(self) -> str:
        """The standard 1M dataset (file stem), e.g. 'cube-double-play-v0'."""
        return f'{self.name}-v0'

    @property
    def shards_dir_name(self) -> Optional[str]:
        """Folder of 1M-transition shards of the TRQAM paper's large dataset, None for the 1M ones
        (`shards_dir_name_for`)."""
        return self.shards_dir_name_for(self.dataset_size)

    def shards_dir_name_for(self, dataset_size: int) -> Optional[str]:
        """Folder of 1M-transition shards of a `dataset_size` dataset, None for the 1M ones.

        Convention of this project: `{dataset_dir}/{domain}-10m-v0/` or `{domain}-100m-v0/`, every .npz in it
        (except *-val.npz) one shard. OGBench publishes `{domain}-100m-v0/` for puzzle-4x4, cube-triple and
        cube-quadruple; the TRQAM paper's 10M datasets of puzzle-4x4 and cube-triple are its shards 000-009
        (put them, e.g. as symlinks, into `{domain}-10m-v0/`); antmaze-giant's 10M come from the authors.
        """
        if dataset_size <= STANDARD_DATASET_SIZE:
            return None
        return f'{self.name}-{dataset_size // 1_000_000}m-v0'

    def env_names(self, tasks=range(1, NUM_TASKS + 1)):
        if self.suite == 'robomimic':
            return [f'{self.name}-low_dim']
        return [f'{self.name}-singletask-task{task}-v0' for task in tasks]


def _row(name, sparse, rho, qam_discount, trqam_discount, dataset_size, qam_dataset_size):
    return DomainSettings(name, sparse, rho, qam_discount, trqam_discount, dataset_size, qam_dataset_size)


# The ten domains of the benchmark (docs/algorithms.md sections 7-9), in the order of the papers' tables.
M = 1_000_000  # transitions
DOMAINS: Dict[str, DomainSettings] = {d.name: d for d in (
    #     domain                         sparse  rho  QAM discount  TRQAM discount  TRQAM dataset  QAM dataset
    _row('antmaze-large-navigate',       False,  0.5, 0.99,         0.995,          1 * M,         1 * M),
    _row('antmaze-giant-navigate',       False,  0.5, 0.995,        0.995,          10 * M,        1 * M),
    _row('humanoidmaze-medium-navigate', False,  0.0, 0.995,        0.999,          1 * M,         1 * M),
    _row('humanoidmaze-large-navigate',  False,  0.0, 0.995,        0.999,          1 * M,         1 * M),
    _row('scene-play',                   True,   0.5, 0.99,         0.995,          1 * M,         1 * M),
    _row('puzzle-3x3-play',              True,   0.5, 0.99,         0.995,          1 * M,         1 * M),
    _row('puzzle-4x4-play',              True,   0.5, 0.99,         0.995,          10 * M,        100 * M),
    _row('cube-double-play',             False,  0.5, 0.99,         0.995,          1 * M,         1 * M),
    _row('cube-triple-play',             False,  0.5, 0.99,         0.995,          10 * M,        1 * M),
    _row('cube-quadruple-play',          False,  0.5, 0.99,         0.995,          100 * M,       100 * M),
)}


# Robomimic's multi-human datasets (the TRQAM paper's stability experiment, docs/algorithms.md section 10): the authors'
# width 512 without actor layer norm, discount 0.995, rho 0.5 and chunk length 5 (QAM's code default discount 0.99
# under --protocol=qam); the proficient-human (ph) datasets get the same settings.
ROBOMIMIC_DOMAINS: Dict[str, DomainSettings] = {d.name: d for d in (
    DomainSettings(f'{task}-{kind}', sparse=False, rho=0.5, qam_discount=0.99, trqam_discount=0.995, dataset_size=M,
                   in_benchmark=False, suite='robomimic')
    for kind in ('mh', 'ph') for task in ('lift', 'can', 'square'))}


def _generic(name: str) -> DomainSettings:
    """Any other domain: the authors' code defaults, with sparse rewards where the table's domains of the same
    environment (e.g. puzzle-4x5-play: puzzle) have them."""
    environment = name.split('-')[0]
    sparse = any(row.sparse for row in DOMAINS.values() if row.name.split('-')[0] == environment)
    return DomainSettings(name, sparse=sparse, rho=0.5, qam_discount=0.99, trqam_discount=0.995,
                          dataset_size=STANDARD_DATASET_SIZE, in_benchmark=False)


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How a paper ran its table: the stages of a run and what each domain's row sets."""

    name: str
    description: str
    bc_steps: int  # stage 1, BC pre-training of the flow (0: methods start from scratch)
    paper_settings: bool  # the domain table and the methods' per-domain hyperparameters apply
    trqam_data: bool  # the TRQAM paper's discounts, networks and large datasets (else the QAM paper's)
    paper: Optional[str] = None  # the paper whose table it reproduces (protocols.methods.PAPERS), if any

    def agent_settings(self, env_name: str) -> dict:
        """The `--agent.*` values every method gets on the domain of `env_name` (BC pre-training too, so one
        BC run serves them all)."""
        if not self.paper_settings:
            return {}
        domain = domain_settings(env_name)
        large = self.trqam_data and domain.large
        dims = LARGE_HIDDEN_DIMS if large else DEFAULT_HIDDEN_DIMS
        return {'discount': domain.trqam_discount if self.trqam_data else domain.qam_discount, 'rho': domain.rho,
                'actor_hidden_dims': dims, 'value_hidden_dims': dims, 'actor_layer_norm': large}

    def run_flags(self, env_name: str, dataset_dir: Optional[str] = None) -> dict:
        """main.py flags of the domain of `env_name` (the same for every method): chunk length, rewards,
        the BC pre-training stage and, on the large-data domains, the folder of shards under `dataset_dir`."""
        if not self.paper_settings:
            return {}
        domain = domain_settings(env_name)
        flags = {'horizon_length': domain.horizon_length, 'sparse': domain.sparse, 'bc_steps': self.bc_steps}
        shards = domain.shards_dir_name_for(self.dataset_size(domain))
        if shards:
            flags['dataset_shards_dir'] = os.path.join(dataset_dir or DEFAULT_DATASET_DIR, shards)
        return flags

    def dataset_size(self, domain: DomainSettings) -> int:
        """Transitions of the offline dataset of `domain` in this protocol's paper."""
        return domain.dataset_size if self.trqam_data else domain.qam_dataset_size


PROTOCOLS: Dict[str, Protocol] = {p.name: p for p in (
    Protocol('trqam', 'the TRQAM paper: BC pre-training, then every method with the authors\' discounts and the '
             'large datasets and networks on four domains', bc_steps=300_000, paper_settings=True, trqam_data=True,
             paper='trqam'),
    Protocol('qam', 'the QAM paper: every method from scratch, its discounts, the 100M datasets of puzzle-4x4 and '
             'cube-quadruple, the 1M ones elsewhere', bc_steps=0,
             paper_settings=True, trqam_data=False, paper='qam'),
    Protocol('none', 'only the flags and the agent config', bc_steps=0, paper_settings=False, trqam_data=False),
)}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f'Unknown --protocol={name}; known: {", ".join(f"{p.name} ({p.description})" for p in PROTOCOLS.values())}.')
    return PROTOCOLS[name]


def domain_settings(env_name: str) -> DomainSettings:
    """The table's row of the domain of `env_name`, or the generic settings of a domain outside it."""
    name = domain_name(env_name)
    return DOMAINS.get(name) or ROBOMIMIC_DOMAINS.get(name) or _generic(name)


def table_domain(name: str) -> DomainSettings:
    """A row of the tables by domain name; anything else is refused with the list of domains."""
    rows = {**DOMAINS, **ROBOMIMIC_DOMAINS}
    if name not in rows:
        raise KeyError(f'{name!r} is not a domain of the tables; they are: {", ".join(rows)}.')
    return rows[name]


OGBENCH_100M_URL = 'https://rail.eecs.berkeley.edu/datasets/ogbench/{name}-100m-v0/'
# Where the TRQAM paper's large datasets come from: OGBench's 100M releases (the 10M ones are their shards 000-009)
# and, for antmaze-giant, the authors' 10M dataset.
LARGE_DATASET_SOURCES = {
    'antmaze-giant-navigate': 'the authors\' Hugging Face dataset yonghoon96/antmaze-giant-navigate-10m-v0',
    'puzzle-4x4-play': 'shards 000-009 of ' + OGBENCH_100M_URL.format(name='puzzle-4x4-play'),
    'cube-triple-play': 'shards 000-009 of ' + OGBENCH_100M_URL.format(name='cube-triple-play'),
    'cube-quadruple-play': 'all shards of ' + OGBENCH_100M_URL.format(name='cube-quadruple-play'),
}


def dataset_status(env_name: str, dataset_dir: str, protocol: Protocol) -> Tuple[bool, str]:
    """(present, description) of the data a run of `protocol` reads under `dataset_dir`."""
    s = domain_settings(env_name)
    shards_dir = s.shards_dir_name_for(protocol.dataset_size(s)) if protocol.paper_settings else None
    if not shards_dir:
        files = [os.path.join(dataset_dir, f'{s.dataset_name}{suffix}.npz') for suffix in ('', '-val')]
        missing = [path for path in files if not os.path.isfile(path)]
        if missing:
            return False, f'no {" or ".join(os.path.basename(path) for path in missing)} in {dataset_dir}'
        return True, files[0]
    directory = os.path.join(dataset_dir, shards_dir)
    shards = [name for name in os.listdir(directory) if name.endswith('.npz') and not name.endswith('-val.npz')] \
        if os.path.isdir(directory) else []
    if not shards:
        return False, f'no shards in {directory}'
    expected = protocol.dataset_size(s) // 1_000_000
    note = '' if len(shards) == expected else f' (expected {expected} shards)'
    return True, f'{directory}: {len(shards)} shards{note}'


def how_to_get(env_name: str, dataset_dir: str, protocol: Protocol) -> str:
    """How to obtain the data a run of `protocol` reads, in one line."""
    s = domain_settings(env_name)
    size = protocol.dataset_size(s) if protocol.paper_settings else STANDARD_DATASET_SIZE
    if s.shards_dir_name_for(size):
        source = LARGE_DATASET_SOURCES[s.name] if size == s.dataset_size else OGBENCH_100M_URL.format(name=s.name)
        return (f'put its {size // 1_000_000}M transitions as 1M-transition .npz shards into '
                f'{os.path.join(dataset_dir, s.shards_dir_name_for(size))}/ ({source}; see the README)'
                + ('' if s.shards_dir_name_for(s.qam_dataset_size) else ', or run the QAM paper\'s protocol on the '
                   '1M dataset with --protocol=qam'))
    if s.generatable:
        return (f'python experiments/generate_dataset.py --env_name={s.dataset_name} --dataset_dir={dataset_dir} '
                '(or download it)')
    return (f'download only (locomotion): python -c "import ogbench; '
            f'ogbench.download_datasets([\'{s.dataset_name}\'], \'{dataset_dir}\')"')
