"""The sweeps this project knows (the papers' tables, a CPU-sized one, Robomimic's stability experiment),
shared by the launcher (experiments/sweep.py) and the report (experiments/aggregate.py).

A preset says what to run (methods, domains, tasks, seeds, step counts, main.py flags, network sizes and
where); the protocol (`--protocol`, protocols/domains.py `PROTOCOLS`) says how main.py configures each run of
it. Settings left None here are the protocol's: the seeds (docs/algorithms.md section 9.1: 8 under trqam,
12 under qam) and the length of the BC pre-training stage (300K under trqam, none under qam).
"""

import os
import sys
from typing import List, Optional, Tuple

if __package__ in (None, ''):  # imported from a script run from the repository root.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from protocols.methods import BC, METHODS, paper_methods  # noqa: E402
from protocols import domains  # noqa: E402
from envs.ogbench_data import DEFAULT_DATASET_DIR  # noqa: E402

# The papers' seeds per protocol (docs/algorithms.md section 9.1, "seeds (sweep)").
PAPER_SEEDS = {'trqam': 8, 'qam': 12, 'none': 8}
SMALL_NETWORK = {'actor_hidden_dims': (64, 64), 'value_hidden_dims': (64, 64), 'actor_layer_norm': False,
                 'num_qs': 2, 'batch_size': 64}
ROBOMIMIC_DATASET_DIR = '~/.robomimic'  # envs/robomimic.py's default folder
PRESETS = {
    # The papers' tables (docs/algorithms.md sections 7-9): the 50 tasks, 1M offline + 500K online steps,
    # eval every 50K steps with 50 episodes (main.py's defaults); seeds and BC stage: the protocol's.
    'paper': dict(
        methods=None, domains=tuple(domains.DOMAINS), tasks=(1, 2, 3, 4, 5),
        seeds=None, bc_steps=None, offline_steps=1_000_000, online_steps=500_000,
        main_flags={}, network={}, save_dir='runs/paper', dataset_dir=DEFAULT_DATASET_DIR, generate_episodes=None,
        max_workers=1,
    ),
    # A 2-core laptop in about an hour: the locally generated manipulation domains of the table, task 1,
    # 2 seeds, every method, 2 x 64 networks with 2 critics, 3K BC (when the protocol has a BC stage) + 5K
    # offline + 2K online steps.
    'cpu': dict(
        methods=None, domains=('scene-play', 'puzzle-3x3-play', 'cube-double-play'),
        tasks=(1,), seeds=(0, 1), bc_steps=3_000, offline_steps=5_000, online_steps=2_000,
        main_flags={'eval_interval': 2_500, 'eval_episodes': 10, 'save_interval': 2_500, 'log_interval': 500,
                    'steps_per_call': 250, 'start_training': 500},
        network=SMALL_NETWORK, save_dir='runs/cpu_preset', dataset_dir='data/cpu_preset', generate_episodes=50,
        max_workers=2,
    ),
    # The TRQAM paper's stability experiment on Robomimic (docs/algorithms.md section 10): the multi-human
    # low-dim datasets of lift, can and square (one task each, env `{domain}-low_dim`), TRQAM against QAM and
    # QAM-E, with the papers' step counts. Method hyperparameters are the agent configs' (section 8 covers
    # OGBench only).
    'robomimic': dict(
        methods=('TRQAM', 'QAM', 'QAM-E'), domains=('lift-mh', 'can-mh', 'square-mh'), tasks=None,
        seeds=None, bc_steps=None, offline_steps=1_000_000, online_steps=500_000,
        main_flags={}, network={}, save_dir='runs/robomimic', dataset_dir=ROBOMIMIC_DATASET_DIR,
        generate_episodes=None, max_workers=1,
    ),
}


def resolve_spec(preset: str = 'paper', **changes) -> dict:
    """A preset with `changes` (values that are None keep the preset's) under `protocol` (default trqam):
    methods default to the papers', seeds and the BC stage's length to the protocol's, and the save folder
    of a protocol other than trqam gets its name appended (runs of two protocols have the same run names)."""
    if preset not in PRESETS:
        raise ValueError(f'Unknown preset {preset!r}; known: {", ".join(PRESETS)}.')
    spec = dict(PRESETS[preset], preset=preset, protocol='trqam', bc_per_domain=False, python='python',
                extra_main_flags=(), extra_agent_overrides={}, seeds_per_job=1)
    given = {key: value for key, value in changes.items() if value is not None}
    spec.update(given)
    protocol = domains.get_protocol(spec['protocol'])
    if 'save_dir' not in given and protocol.name != 'trqam':
        spec['save_dir'] = f'{spec["save_dir"]}_{protocol.name}'
    spec['methods'] = tuple(spec['methods'] or paper_methods())
    unknown = [m for m in spec['methods'] if m not in METHODS or m == BC.label]
    if unknown:
        raise ValueError(f'Unknown methods {unknown}; known: {", ".join(m for m in METHODS if m != BC.label)}.')
    for domain in spec['domains']:
        domains.table_domain(domain)  # raises with the list of domains
    if spec['seeds'] is None:
        spec['seeds'] = tuple(range(PAPER_SEEDS[protocol.name]))
    spec['seeds'] = tuple(int(seed) for seed in spec['seeds'])
    if protocol.bc_steps:
        spec['bc_steps'] = spec['bc_steps'] or protocol.bc_steps
    elif 'bc_steps' in given and given['bc_steps']:
        raise ValueError(f'--protocol={protocol.name} has no BC pre-training stage ({protocol.description}); '
                         'drop --bc_steps or use --protocol=trqam.')
    else:
        spec['bc_steps'] = 0
    if int(spec['seeds_per_job']) < 1:
        raise ValueError(f'--seeds_per_job must be at least 1, got {spec["seeds_per_job"]}.')
    spec['seeds_per_job'] = int(spec['seeds_per_job'])
    return spec


def domain_envs(domain: str, tasks: Optional[Tuple[int, ...]]) -> List[str]:
    """The env names of `domain` in a sweep: OGBench's chosen tasks, Robomimic's one task."""
    settings = domains.table_domain(domain)
    if settings.suite == 'robomimic':
        return settings.env_names()
    return settings.env_names(tasks or range(1, 6))


def expected_runs(preset: str = 'paper', **changes) -> List[Tuple[str, str, int]]:
    """(method, env, seed) of every cell of the sweep's table (for experiments/aggregate.py)."""
    spec = resolve_spec(preset, **changes)
    return [(method, env_name, seed) for domain in spec['domains'] for env_name in domain_envs(domain, spec['tasks'])
            for seed in spec['seeds'] for method in spec['methods']]
