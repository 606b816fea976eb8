"""Per-domain protocol settings of the papers (ALGORITHMS.md sections 1, 7 and 8): the one home for them.

    from utils.domains import agent_overrides, main_flags
    agent_overrides('QAM-E', 'puzzle-4x4-play-singletask-task2-v0')
    # {'inv_temp': 0.1, 'edit_scale': 0.9, 'fql_alpha': 0.0, 'discount': 0.99, 'rho': 0.5,
    #  'actor_hidden_dims': (1024, 1024, 1024, 1024), 'value_hidden_dims': (1024, ...), 'actor_layer_norm': True}
    main_flags('QAM-E', 'puzzle-4x4-play-singletask-task2-v0', dataset_dir='data')
    # {'horizon_length': 5, 'sparse': True, 'dataset_shards_dir': 'data/puzzle-4x4-play-10m-v0'}

`agent_overrides` returns `--agent.KEY=VALUE` overrides as {KEY: VALUE} (without the `agent.` prefix);
`main_flags` returns main.py flags as {FLAG: VALUE}. Methods are the labels of the papers' tables:
TRQAM, QAM, QAM-E, FQL, IFQL, DSRL, CGQL-L (section 8), plus BC (the pre-training run of the protocol).
"""

import dataclasses
import os
import re
from typing import Dict, Optional, Tuple

from utils.ogbench_data import is_locomotion


def default_horizon_length(env_name: str) -> int:
    """Chunk length H: 5 for the manipulation domains (cube, scene, puzzle), 1 for the mazes."""
    return 1 if is_locomotion(env_name) else 5


DEFAULT_HIDDEN_DIMS = (512, 512, 512, 512)
LARGE_HIDDEN_DIMS = (1024, 1024, 1024, 1024)
NUM_TASKS = 5


@dataclasses.dataclass(frozen=True)
class DomainSettings:
    """Settings of one OGBench domain (the env name without `-singletask-taskN-v0`)."""

    name: str
    # ALGORITHMS.md section 8 (QAM paper).
    qam_inv_temp: float
    qam_e: Tuple[float, float]  # (inv_temp, edit_scale)
    fql_alpha: float
    ifql_kappa: float  # expectile
    dsrl_noise_scale: float
    cgql_l: Tuple[float, float, float]  # (inv_temp, guidance_coef, noisy_coef)
    sparse: bool  # rewards r -> -1[r != 0] (puzzle and scene in the QAM paper)
    # Discounts: the QAM paper's baselines used 0.99 except 0.995 for antmaze-giant and humanoidmaze;
    # TRQAM's default is 0.995 everywhere and 0.999 for humanoidmaze.
    discount: float
    trqam_discount: float
    rho: float  # pessimism of the critic target (0 for humanoidmaze)
    # TRQAM paper (section 7): 4 x 1024 networks and actor layer norm on the four large-data domains.
    hidden_dims: Tuple[int, ...]
    actor_layer_norm: bool
    dataset_size: int  # transitions: 1M standard, 10M / 100M as directories of 1M shards
    # TRQAM's per-domain eps_KL is not public (ALGORITHMS.md section 8): 1.0 (the agent's default)
    # everywhere, 0.5 for cube-triple after the authors' example command.
    kl_budget: float

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


def _domain(name, qam, qam_e, fql, ifql, dsrl, cgql_l, *, large=False, size=1_000_000, kl_budget=1.0):
    humanoid = name.startswith('humanoidmaze')
    giant = name.startswith('antmaze-giant')
    return DomainSettings(
        name=name, qam_inv_temp=float(qam), qam_e=tuple(map(float, qam_e)), fql_alpha=float(fql),
        ifql_kappa=float(ifql), dsrl_noise_scale=float(dsrl), cgql_l=tuple(map(float, cgql_l)),
        sparse=name.startswith(('puzzle', 'scene')),
        discount=0.995 if (humanoid or giant) else 0.99, trqam_discount=0.999 if humanoid else 0.995,
        rho=0.0 if humanoid else 0.5, hidden_dims=LARGE_HIDDEN_DIMS if large else DEFAULT_HIDDEN_DIMS,
        actor_layer_norm=large, dataset_size=size, kl_budget=kl_budget,
    )


# The ten domains of the benchmark (section 7), in the order of the papers' tables; values from section 8.
DOMAINS: Dict[str, DomainSettings] = {d.name: d for d in (
    #       domain                         QAM  QAM-E        FQL  IFQL  DSRL  CGQL-L
    _domain('antmaze-large-navigate', 10, (1, 0.1), 3, 0.9, 0.8, (10, 0.1, 0.001)),
    _domain('antmaze-giant-navigate', 3, (10, 0.1), 3, 0.8, 1.2, (10, 0.1, 0.001), large=True, size=10_000_000),
    _domain('humanoidmaze-medium-navigate', 3, (3, 0.1), 30, 0.7, 0.6, (10, 0.1, 0.1)),
    _domain('humanoidmaze-large-navigate', 3, (3, 0.1), 30, 0.8, 0.8, (10, 0.1, 0.1)),
    _domain('scene-play', 1, (1, 0.0), 300, 0.9, 0.4, (10, 0.1, 0.1)),
    _domain('puzzle-3x3-play', 3, (1, 0.1), 300, 0.95, 1.0, (10, 0.1, 0.001)),
    _domain('puzzle-4x4-play', 30, (0.1, 0.9), 1, 0.9, 1.0, (10, 1.0, 0.001), large=True, size=10_000_000),
    _domain('cube-double-play', 1, (1, 0.0), 300, 0.9, 1.0, (10, 0.01, 0.001)),
    _domain('cube-triple-play', 3, (3, 0.1), 30, 0.95, 1.4, (10, 0.1, 0.001), large=True, size=10_000_000,
            kl_budget=0.5),
    _domain('cube-quadruple-play', 1, (3, 0.1), 100, 0.95, 1.4, (10, 0.01, 0.1), large=True, size=100_000_000),
)}

# Methods of the papers' tables -> agent file.
AGENT_FILES = {
    'TRQAM': 'agents/trqam.py',
    'QAM': 'agents/qam.py',
    'QAM-E': 'agents/qam.py',
    'FQL': 'agents/fql.py',
    'IFQL': 'agents/ifql.py',
    'DSRL': 'agents/dsrl.py',
    'CGQL-L': 'agents/cgql.py',
    'BC': 'agents/bc_flow.py',
}
PAPER_METHODS = ('TRQAM', 'QAM', 'QAM-E', 'FQL', 'IFQL', 'DSRL', 'CGQL-L')

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


def _network(settings: DomainSettings, with_value: bool = True) -> dict:
    """Every method (and the BC pre-training) uses the domain's width, so one BC run serves them all."""
    overrides = {'actor_hidden_dims': settings.hidden_dims, 'actor_layer_norm': settings.actor_layer_norm}
    if with_value:
        overrides['value_hidden_dims'] = settings.hidden_dims
    return overrides


def agent_overrides(method: str, env_name: str) -> dict:
    """The `--agent.*` overrides of `method` on the domain of `env_name`, as {key: value}."""
    s = domain_settings(env_name)
    if method == 'BC':
        return _network(s, with_value=False)
    common = {'discount': s.discount, 'rho': s.rho}
    if method == 'TRQAM':
        specific = {'kl_budget': s.kl_budget, 'discount': s.trqam_discount, 'rho': s.rho}
    elif method == 'QAM':
        specific = {'inv_temp': s.qam_inv_temp, 'edit_scale': 0.0, 'fql_alpha': 0.0, **common}
    elif method == 'QAM-E':
        # Where the QAM paper's edit_scale is 0 (scene, cube-double), QAM-E is QAM with that inv_temp.
        specific = {'inv_temp': s.qam_e[0], 'edit_scale': s.qam_e[1], 'fql_alpha': 0.0, **common}
    elif method == 'FQL':
        specific = {'alpha': s.fql_alpha, **common}
    elif method == 'IFQL':
        specific = {'expectile': s.ifql_kappa, **common}
    elif method == 'DSRL':
        specific = {'noise_scale': s.dsrl_noise_scale, **common}
    elif method == 'CGQL-L':
        inv_temp, guidance, noisy = s.cgql_l
        specific = {'mode': 'linex', 'inv_temp': inv_temp, 'guidance_coef': guidance, 'noisy_coef': noisy, **common}
    else:
        raise ValueError(f'No per-domain settings for method {method!r}; known: {", ".join(AGENT_FILES)}.')
    return {**specific, **_network(s)}


def main_flags(method: str, env_name: str, dataset_dir: Optional[str] = None) -> dict:
    """main.py flags of `method` on the domain of `env_name` (the same for every method, BC included).

    With `dataset_dir`, also where the data is: `dataset_dir` for the 1M datasets, `dataset_shards_dir`
    (`{dataset_dir}/{shards_dir_name}`) for the 10M / 100M ones.
    """
    if method not in AGENT_FILES:
        raise ValueError(f'Unknown method {method!r}; known: {", ".join(AGENT_FILES)}.')
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
