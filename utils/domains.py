"""Per-domain settings of the benchmark (ALGORITHMS.md sections 1, 7 and 8): the one home for them.

A domain is a benchmark row of the papers' tables, `cube-double-play` for the tasks
`cube-double-play-singletask-task{1..5}-v0`. This module holds what every method shares on a domain
(networks, discount and pessimism of the critic, rewards, chunk length, dataset); each method's own
per-domain hyperparameters are in its registry entry (`agents.METHODS`), which combines both:

    from agents import METHODS
    METHODS['QAM-E'].overrides('puzzle-4x4-play-singletask-task2-v0')
    # {'edit_scale': 0.9, 'inv_temp': 0.1, 'fql_alpha': 0.0, 'discount': 0.99, 'rho': 0.5,
    #  'actor_hidden_dims': (1024, 1024, 1024, 1024), 'value_hidden_dims': (1024, ...), 'actor_layer_norm': True}
    run_flags('puzzle-4x4-play-singletask-task2-v0', dataset_dir='data')
    # {'horizon_length': 5, 'sparse': True, 'dataset_shards_dir': 'data/puzzle-4x4-play-10m-v0'}
"""

import dataclasses
import os
import re
from typing import Dict, Optional, Tuple

from utils.ogbench_data import NUM_TASKS, is_locomotion


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


@dataclasses.dataclass(frozen=True)
class DomainSettings:
    """Settings of one OGBench domain (the env name without `-singletask-taskN-v0`)."""

    name: str
    sparse: bool  # rewards r -> -1[r != 0] (puzzle and scene in the QAM paper)
    # The QAM paper's discount for every method but TRQAM (whose own is in its registry entry): 0.99,
    # 0.995 for antmaze-giant and humanoidmaze.
    discount: float
    rho: float  # pessimism of the critic target (0 for humanoidmaze)
    # TRQAM paper (section 7): 4 x 1024 networks and actor layer norm on the four large-data domains.
    hidden_dims: Tuple[int, ...]
    actor_layer_norm: bool
    dataset_size: int  # transitions: 1M standard, 10M / 100M as directories of 1M shards

    def agent_settings(self) -> dict:
        """The `--agent.*` values every method gets on this domain. All methods, the BC pre-training
        included, use the domain's width, so one BC run serves them all."""
        return {'discount': self.discount, 'rho': self.rho, 'actor_hidden_dims': self.hidden_dims,
                'value_hidden_dims': self.hidden_dims, 'actor_layer_norm': self.actor_layer_norm}

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
        """Folder of 1M-transition shards for the large datasets, None for the 1M ones.

        Convention of this project: `{dataset_dir}/{domain}-10m-v0/` or `{domain}-100m-v0/`, every .npz in it
        (except *-val.npz) one shard. OGBench publishes `{domain}-100m-v0/` for puzzle-4x4, cube-triple and
        cube-quadruple; the TRQAM paper's 10M datasets of puzzle-4x4 and cube-triple are its shards 000-009
        (put them, e.g. as symlinks, into `{domain}-10m-v0/`).
        """
        if self.dataset_size <= 1_000_000:
            return None
        return f'{self.name}-{self.dataset_size // 1_000_000}m-v0'

    def env_names(self, tasks=range(1, NUM_TASKS + 1)):
        return [f'{self.name}-singletask-task{task}-v0' for task in tasks]


def _domain(name, *, large=False, size=1_000_000):
    humanoid = name.startswith('humanoidmaze')
    return DomainSettings(
        name=name, sparse=name.startswith(('puzzle', 'scene')),
        discount=0.995 if (humanoid or name.startswith('antmaze-giant')) else 0.99, rho=0.0 if humanoid else 0.5,
        hidden_dims=LARGE_HIDDEN_DIMS if large else DEFAULT_HIDDEN_DIMS, actor_layer_norm=large, dataset_size=size,
    )


# The ten domains of the benchmark (section 7), in the order of the papers' tables.
DOMAINS: Dict[str, DomainSettings] = {d.name: d for d in (
    _domain('antmaze-large-navigate'),
    _domain('antmaze-giant-navigate', large=True, size=10_000_000),
    _domain('humanoidmaze-medium-navigate'),
    _domain('humanoidmaze-large-navigate'),
    _domain('scene-play'),
    _domain('puzzle-3x3-play'),
    _domain('puzzle-4x4-play', large=True, size=10_000_000),
    _domain('cube-double-play'),
    _domain('cube-triple-play', large=True, size=10_000_000),
    _domain('cube-quadruple-play', large=True, size=100_000_000),
)}

_SUFFIX_RE = re.compile(r'(-singletask)?(-task\d+)?-v\d+$')


def domain_name(env_name: str) -> str:
    """'cube-double-play' for 'cube-double-play-singletask-task2-v0' (or 'cube-double-play-v0')."""
    return _SUFFIX_RE.sub('', env_name)


def domain_settings(env_name: str) -> DomainSettings:
    name = domain_name(env_name)
    if name not in DOMAINS:
        raise KeyError(f'No per-domain settings for {name!r} (from {env_name!r}). The benchmark domains are: '
                       f'{", ".join(DOMAINS)}.')
    return DOMAINS[name]


def run_flags(env_name: str, dataset_dir: Optional[str] = None) -> dict:
    """main.py flags of the domain of `env_name` (the same for every method, BC included).

    With `dataset_dir`, also where the data is: `dataset_dir` for the 1M datasets, `dataset_shards_dir`
    (`{dataset_dir}/{shards_dir_name}`) for the 10M / 100M ones.
    """
    s = domain_settings(env_name)
    flags = {'horizon_length': s.horizon_length, 'sparse': s.sparse}
    if dataset_dir is not None:
        if s.shards_dir_name is None:
            flags['dataset_dir'] = dataset_dir
        else:
            flags['dataset_shards_dir'] = os.path.join(dataset_dir, s.shards_dir_name)
    return flags


def dataset_status(env_name: str, dataset_dir: str) -> Tuple[bool, str]:
    """(present, description) of the data `main_flags` points at under `dataset_dir`."""
    s = domain_settings(env_name)
    if s.shards_dir_name is None:
        files = [os.path.join(dataset_dir, f'{s.dataset_name}{suffix}.npz') for suffix in ('', '-val')]
        missing = [path for path in files if not os.path.isfile(path)]
        if missing:
            return False, f'no {" or ".join(os.path.basename(path) for path in missing)} in {dataset_dir}'
        return True, files[0]
    directory = os.path.join(dataset_dir, s.shards_dir_name)
    shards = [name for name in os.listdir(directory) if name.endswith('.npz') and not name.endswith('-val.npz')] \
        if os.path.isdir(directory) else []
    if not shards:
        return False, f'no shards in {directory}'
    expected = s.dataset_size // 1_000_000
    note = '' if len(shards) == expected else f' (expected {expected} shards)'
    return True, f'{directory}: {len(shards)} shards{note}'


def how_to_get(env_name: str, dataset_dir: str) -> str:
    """How to obtain the data of a domain, in one line."""
    s = domain_settings(env_name)
    if s.shards_dir_name is not None:
        return (f'put its {s.dataset_size // 1_000_000}M transitions as 1M-transition .npz shards into '
                f'{os.path.join(dataset_dir, s.shards_dir_name)}/ (OGBench publishes {s.name}-100m-v0/ shard folders; '
                'see DomainSettings.shards_dir_name in utils/domains.py)')
    if s.generatable:
        return (f'python experiments/generate_dataset.py --env_name={s.dataset_name} --dataset_dir={dataset_dir} '
                '(or download it)')
    return (f'download only (locomotion): python -c "import ogbench; '
            f'ogbench.download_datasets([\'{s.dataset_name}\'], \'{dataset_dir}\')"')
