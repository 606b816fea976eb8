"""The sweeps this project knows (the papers' tables, a CPU-sized one, Robomimic's stability experiment), shared by
the launcher (experiments/sweep.py) and the report (experiments/aggregate.py). A preset says what to run; the protocol
(`--protocol`, protocols.domains.PROTOCOLS) says how main.py configures each run, and gives what a preset leaves None:
the seeds (PAPER_SEEDS) and the length of the BC pre-training stage.
"""

import dataclasses
from typing import List, Mapping, Optional, Tuple

from envs import ogbench_data, robomimic
from protocols import domains
from protocols.methods import BC, METHODS, paper_methods

# The papers' seeds per protocol (docs/algorithms.md section 9.1, "seeds (sweep)").
PAPER_SEEDS = {'trqam': 8, 'qam': 12, 'none': 8}


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """What a sweep runs and how its main.py commands are written. The defaults are the paper preset's."""

    preset: str = 'paper'
    protocol: str = 'trqam'  # main.py's --protocol of every job
    methods: Optional[Tuple[str, ...]] = None  # table labels; None: those of the protocol's paper
    domains: Tuple[str, ...] = tuple(domains.DOMAINS)
    tasks: Optional[Tuple[int, ...]] = (1, 2, 3, 4, 5)  # OGBench tasks (a Robomimic domain has one)
    seeds: Optional[Tuple[int, ...]] = None  # None: the protocol's PAPER_SEEDS
    seeds_per_job: int = 1  # seeds trained together in one main.py process (--seeds=a,b,...)
    bc_steps: Optional[int] = None  # BC pre-training steps; None: the protocol's (0: no BC stage)
    offline_steps: int = 1_000_000
    online_steps: int = 500_000
    bc_per_domain: bool = False  # one BC run per domain (task 1's) instead of one per task
    main_flags: Mapping[str, object] = dataclasses.field(default_factory=dict)  # main.py flags of every job
    network: Mapping[str, object] = dataclasses.field(default_factory=dict)  # a NETWORK_SIZES entry, or {}
    extra_main_flags: Tuple[str, ...] = ()  # --main_flag arguments, passed on verbatim
    extra_agent_overrides: Mapping[str, object] = dataclasses.field(default_factory=dict)  # --agent_override
    save_dir: str = 'runs/paper'  # parent of the run directories
    dataset_dir: str = ogbench_data.DEFAULT_DATASET_DIR
    generate_episodes: Optional[int] = None  # episodes per generated dataset; None: generate_dataset.py's
    max_workers: int = 1  # local launcher: main.py processes at a time


PRESETS = {spec.preset: spec for spec in (
    # The papers' tables (docs/algorithms.md sections 7-9): the 50 tasks, main.py's evaluation settings.
    SweepSpec(),
    # The whole pipeline in about an hour on a 2-core laptop: three locally generated manipulation domains, task 1,
    # 2 seeds, every method, small networks and short stages.
    SweepSpec(preset='cpu', domains=('scene-play', 'puzzle-3x3-play', 'cube-double-play'), tasks=(1,), seeds=(0, 1),
              bc_steps=3_000, offline_steps=5_000, online_steps=2_000,
              main_flags={'eval_interval': 2_500, 'eval_episodes': 10, 'save_interval': 2_500, 'log_interval': 500,
                          'steps_per_call': 250, 'start_training': 500},
              network=domains.NETWORK_SIZES['small'], save_dir='runs/cpu_preset', dataset_dir='data/cpu_preset',
              generate_episodes=50, max_workers=2),
    # The TRQAM paper's stability experiment (docs/algorithms.md section 10): Robomimic's multi-human low-dim
    # datasets; method hyperparameters are the agent configs' (section 8 covers OGBench only).
    SweepSpec(preset='robomimic', methods=('TRQAM', 'QAM', 'QAM-E'), domains=('lift-mh', 'can-mh', 'square-mh'),
              tasks=None, save_dir='runs/robomimic', dataset_dir=robomimic.DEFAULT_DATASET_DIR),
)}


def resolve_spec(preset: str = 'paper', **changes) -> SweepSpec:
    """A preset with `changes` (None keeps the preset's), completed by its protocol: its paper's methods, the
    protocol's seeds and BC stage, and a save folder named after a protocol other than trqam (same run names)."""
    if preset not in PRESETS:
        raise ValueError(f'Unknown preset {preset!r}; known: {", ".join(PRESETS)}.')
    given = {key: value for key, value in changes.items() if value is not None}
    spec = dataclasses.replace(PRESETS[preset], **given)
    protocol = domains.get_protocol(spec.protocol)
    methods = tuple(spec.methods or paper_methods(protocol.name))
    unknown = [label for label in methods if label not in METHODS or label == BC.label]
    if unknown:
        raise ValueError(f'Unknown methods {unknown}; known: {", ".join(m for m in METHODS if m != BC.label)}.')
    for domain in spec.domains:
        domains.table_domain(domain)  # raises with the list of domains
    if given.get('bc_steps') and not protocol.bc_steps:
        raise ValueError(f'--protocol={protocol.name} has no BC pre-training stage ({protocol.description}); '
                         'drop --bc_steps or use --protocol=trqam.')
    if spec.seeds_per_job < 1:
        raise ValueError(f'--seeds_per_job must be at least 1, got {spec.seeds_per_job}.')
    seeds = spec.seeds if spec.seeds is not None else range(PAPER_SEEDS[protocol.name])
    save_dir = spec.save_dir if 'save_dir' in given or protocol.name == 'trqam' else f'{spec.save_dir}_{protocol.name}'
    return dataclasses.replace(spec, methods=methods, seeds=tuple(map(int, seeds)), save_dir=save_dir,
                               bc_steps=(spec.bc_steps or protocol.bc_steps) if protocol.bc_steps else 0)


def domain_envs(domain: str, tasks: Optional[Tuple[int, ...]]) -> List[str]:
    """The env names of `domain` in a sweep: OGBench's chosen tasks, Robomimic's one task."""
    settings = domains.table_domain(domain)
    return settings.env_names(tasks) if tasks else settings.env_names()


def expected_runs(preset: str = 'paper', **changes) -> List[Tuple[str, str, int]]:
    """(method, env, seed) of every cell of the sweep's table (for experiments/aggregate.py)."""
    spec = resolve_spec(preset, **changes)
    return [(method, env_name, seed) for domain in spec.domains for env_name in domain_envs(domain, spec.tasks)
            for seed in spec.seeds for method in spec.methods]
