"""The sweeps this project knows (the paper's and a CPU-sized one), shared by the launcher
(experiments/sweep.py) and the report (experiments/aggregate.py)."""

import os
import sys
from typing import List, Tuple

if __package__ in (None, ''):  # imported from a script run from the repository root.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agents import METHODS, paper_methods  # noqa: E402
from utils import domains  # noqa: E402
from utils.ogbench_data import DEFAULT_DATASET_DIR  # noqa: E402

SMALL_NETWORK = {'actor_hidden_dims': (64, 64), 'value_hidden_dims': (64, 64), 'actor_layer_norm': False,
                 'num_qs': 2, 'batch_size': 64}
PRESETS = {
    # ALGORITHMS.md section 4 "Protocol": 300K BC steps, 1M offline, 500K online, eval every 50K steps with
    # 50 episodes (main.py's defaults), 8 seeds, the 50 tasks.
    'paper': dict(
        methods=None, domains=tuple(domains.DOMAINS), tasks=(1, 2, 3, 4, 5),
        seeds=tuple(range(8)), bc_steps=300_000, offline_steps=1_000_000, online_steps=500_000,
        main_flags={}, network={}, save_dir='runs/paper', dataset_dir=DEFAULT_DATASET_DIR, generate_episodes=None,
        max_workers=1,
    ),
    # A 2-core laptop in about an hour: the locally generated manipulation domains of the table, task 1,
    # 2 seeds, every method, 2 x 64 networks with 2 critics, 3K BC + 5K offline + 2K online steps.
    'cpu': dict(
        methods=None, domains=('scene-play', 'puzzle-3x3-play', 'cube-double-play'),
        tasks=(1,), seeds=(0, 1), bc_steps=3_000, offline_steps=5_000, online_steps=2_000,
        main_flags={'eval_interval': 2_500, 'eval_episodes': 10, 'save_interval': 2_500, 'log_interval': 500,
                    'steps_per_call': 250, 'start_training': 500},
        network=SMALL_NETWORK, save_dir='runs/cpu_preset', dataset_dir='data/cpu_preset', generate_episodes=50,
        max_workers=2,
    ),
}


def resolve_spec(preset: str = 'paper', **changes) -> dict:
    """A preset with `changes` (values that are None keep the preset's); methods default to the papers'."""
    if preset not in PRESETS:
        raise ValueError(f'Unknown preset {preset!r}; known: {", ".join(PRESETS)}.')
    spec = dict(PRESETS[preset], preset=preset, bc_per_domain=False, python='python', extra_main_flags=(),
                extra_agent_overrides={})
    spec.update({key: value for key, value in changes.items() if value is not None})
    spec['methods'] = tuple(spec['methods'] or paper_methods())
    unknown = [m for m in spec['methods'] if m not in METHODS or m == 'BC']
    if unknown:
        raise ValueError(f'Unknown methods {unknown}; known: {", ".join(m for m in METHODS if m != "BC")}.')
    for domain in spec['domains']:
        domains.domain_settings(domain + '-v0')  # raises with the list of domains
    return spec


def expected_runs(preset: str = 'paper', **changes) -> List[Tuple[str, str, int]]:
    """(method, env, seed) of every cell of the sweep's table (for experiments/aggregate.py)."""
    spec = resolve_spec(preset, **changes)
    return [(method, settings.env_names([task])[0], seed)
            for settings in (domains.DOMAINS[d] for d in spec['domains'])
            for task in spec['tasks'] for seed in spec['seeds'] for method in spec['methods']]
