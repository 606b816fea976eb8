"""Stability of fixed-temperature adjoint matching against TRQAM's trust region, on one Robomimic task.

The TRQAM paper's claim (docs/algorithms.md sections 4, 5 and 10): on Robomimic, QAM's adjoint-matching loss
explodes at a fixed temperature, with gradient clipping or without, and its success collapses, while TRQAM,
whose temperature lambda_eff is set by a path-KL budget, stays stable. This runs the configurations

    QAM at each --temperatures (inv_temp), with the gradient-norm clip (--clip_grad_norm) and without it (0);
    TRQAM at each --budgets (kl_budget, offline and online), with the same clip;
    (--qam_methods=QAM,QAM-E adds QAM-E, at the same temperatures and clips)

each through main.py's protocol (`main.train`, --protocol=trqam by default: the BC pre-training stage, which
every configuration shares, then the method offline and online), and writes, to --out_dir:

    stability.json  per configuration: the logged steps with the adjoint-matching loss (training/actor/adj_loss),
                    the path KL of the SDE rollout (training/actor/path_kl), the gradient norm before the clip
                    and, for TRQAM, lambda_eff (training/dual/lambda); the evaluation steps with the success rate;
                    all as the mean over the seeds that reached the step, and per seed; the step at which a seed
                    diverged (a non-finite metric: main.py stops that seed and keeps its last finite checkpoint).
    stability.png   adjoint-matching loss (log scale), path KL (log scale, TRQAM's budgets dotted) and success
                    against steps, one line per configuration, the start of the online phase dashed.

TRQAM's adj_loss is its own loss, L_TR, which equals lambda_eff times QAM's at inv_temp = 1 / lambda_eff (section 4).

Every configuration runs in this process, one after another, each in its own run directory under --save_dir
({method}_{setting}_{env_name}_seed{seed}). In-process rather than a main.py subprocess per configuration: the
configurations share one import of JAX and robosuite and JAX's caches of the operations they have in common
(network initialisation, data handling), so each one pays only for its own compiled training and acting programs,
which matters on a CPU; and main.train gives back the run directories and its faults as exceptions (a
configuration that diverges is recorded, and the next one runs). --seeds train together in one program per
configuration. Running the same command again resumes every unfinished run from its latest checkpoint (main.py's
resume), only re-reads the finished ones and does not start a diverged seed again; SIGTERM or Ctrl-C save a
checkpoint and stop (exit status 75).

The data: robomimic's v1.5 low-dim file of the task, by default at ~/.robomimic/{task}/{mh|ph}/low_dim_v15.hdf5
(--dataset_dir replaces ~/.robomimic, --dataset_path names the file). Download it on a machine with internet, e.g.

    mkdir -p ~/.robomimic/lift/mh && curl -L -o ~/.robomimic/lift/mh/low_dim_v15.hdf5 \\
        https://huggingface.co/datasets/robomimic/robomimic_datasets/resolve/main/v1.5/lift/mh/low_dim_v15.hdf5

(a run without the file prints the exact command for its task; envs/robomimic.py). It needs robosuite and h5py:
pip install --no-deps -r requirements-robomimic.txt.

    python experiments/stability.py --env_name=lift-mh-low_dim --save_dir=runs/stability --seeds=0,1,2
    python experiments/stability.py --tiny --bc_steps=100 --offline_steps=500 --online_steps=600 \\
        --start_training=100 --log_interval=50 --eval_interval=250 --eval_episodes=2 --steps_per_call=50

(the paper's step counts are main.py's defaults: the BC stage's 300K, 1M offline and 500K online steps; the
second command is a CPU-sized look). Run from the repository root.
"""

import argparse
import dataclasses
import math
import os
import sys
from typing import Dict, List, Optional

if __package__ in (None, ''):  # `python experiments/stability.py` from the repository root.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

import main as main_py  # noqa: E402 - main.py; `main` is this script's entry point
from protocols.methods import METHODS  # noqa: E402
from runner import layout  # noqa: E402
from core.errors import Preempted, RunError, debug_requested  # noqa: E402
from runner.logs import read_csv, write_json  # noqa: E402
from runner.signals import StopSignals  # noqa: E402

REPORT_JSON = 'stability.json'
REPORT_PNG = 'stability.png'
TRAINING_KEYS = {'adj_loss': 'training/actor/adj_loss', 'path_kl': 'training/actor/path_kl',
                 'grad_norm': 'training/grad_norm', 'lambda': 'training/dual/lambda'}
SUCCESS_KEY = layout.SUCCESS_KEY
# --tiny: networks small enough for a CPU test (tests/test_stability.py).
TINY_NETWORK = {'actor_hidden_dims': (16, 16), 'value_hidden_dims': (16, 16), 'num_qs': 2, 'batch_size': 8,
                'flow_steps': 3}
# The fixed-temperature methods that can stand for QAM: the QAM agent, plain or with a variant's head.
FIXED_TEMPERATURE_METHODS = ('QAM', 'QAM-E', 'QAM-F')
# How the swept agent config keys appear in run directory names.
NAME_KEYS = {'inv_temp': 'invtemp', 'kl_budget': 'kl'}
# main.py flags this experiment sets from its own flags of the same name.
PASSED_FLAGS = ('env_name', 'dataset_dir', 'dataset_path', 'save_dir', 'protocol', 'bc_steps', 'offline_steps',
                'online_steps', 'start_training', 'log_interval', 'eval_interval', 'eval_episodes', 'save_interval',
                'steps_per_call')


@dataclasses.dataclass(frozen=True)
class Configuration:
    method: str  # a label of protocols.methods.METHODS
    settings: Dict[str, float]  # the agent config keys the experiment varies

    @property
    def clip(self) -> float:
        return self.settings['clip_grad_norm']

    @property
    def swept(self) -> tuple:
        """(key, value) of the temperature or the budget."""
        return next((key, value) for key, value in self.settings.items() if key != 'clip_grad_norm')

    @property
    def label(self) -> str:
        key, value = self.swept
        return f'{self.method} {key}={value:g}, {f"clip {self.clip:g}" if self.clip > 0 else "no clip"}'

    def run_name(self, env_name: str) -> str:
        """main.py's --run_name, with "{seed}" for each seed."""
        key, value = self.swept
        clip = f'clip{self.clip:g}' if self.clip > 0 else 'noclip'
        return f'{METHODS[self.method].slug}_{NAME_KEYS[key]}{value:g}_{clip}_{env_name}_seed{{seed}}'

    def agent_config(self, network: Dict[str, object]):
        config = METHODS[self.method].default_config()
        config.update({**network, **self.settings})
        return config


def configurations(temperatures, budgets, clip_grad_norm: float, qam_methods=('QAM',)) -> List[Configuration]:
    """Each fixed-temperature method at each temperature with and without the clip, then TRQAM at each budget."""
    clips = dict.fromkeys((float(clip_grad_norm), 0.0))  # once when the clip asked for is none
    fixed = [Configuration(method, {'inv_temp': float(temperature), 'clip_grad_norm': clip})
             for method in qam_methods for temperature in temperatures for clip in clips]
    trust_region = [Configuration('TRQAM', {'kl_budget': float(budget), 'clip_grad_norm': float(clip_grad_norm)})
                    for budget in budgets]
    return fixed + trust_region


# ----------------------------------------------------------------------------------------------------------------------
# Running.
# ----------------------------------------------------------------------------------------------------------------------


def run_configurations(args, configs: List[Configuration], stop=None) -> List[tuple]:
    """Runs (or resumes) every configuration through main.train; returns (configuration, {seed: run directory})
    pairs. A seed that diverged is not started again (with the same settings it diverges at the same step: a
    resumed run repeats the uninterrupted one); a configuration whose seeds all diverge is reported and the
    next one runs."""
    network = network_settings(args)
    # The swept keys and network sizes are the experiment's, whatever the protocol's per-domain table says.
    explicit = {f'agent.{key}' for key in network} | {f'agent.{key}' for c in configs for key in c.settings}
    base_flags = {**main_py.default_flag_values(), **{name: getattr(args, name) for name in PASSED_FLAGS}}
    results = []
    for config in configs:
        run_name = config.run_name(args.env_name)
        run_dirs = {seed: os.path.join(args.save_dir, run_name.replace('{seed}', str(seed))) for seed in args.seeds}
        results.append((config, run_dirs))
        seeds = [seed for seed, run_dir in run_dirs.items() if diverged_step(run_dir) is None]
        print(f'\n=== {config.label} ===', flush=True)
        if not seeds:
            print('Every seed diverged in an earlier run; its logs are kept.', flush=True)
            continue
        flag_values = {**base_flags, 'run_name': run_name, 'seeds': [str(seed) for seed in seeds]}
        try:
            main_py.train(flag_values, config.agent_config(network), stop, explicit)
        except main_py.TrainingDiverged as error:
            print(f'{config.label}: every seed diverged.\n{error}', file=sys.stderr)
    return results


def network_settings(args) -> Dict[str, object]:
    """The agent config's network keys the flags set (--tiny, then the explicit ones)."""
    network = dict(TINY_NETWORK) if args.tiny else {}
    if args.hidden_dims is not None:
        network.update(actor_hidden_dims=tuple(args.hidden_dims), value_hidden_dims=tuple(args.hidden_dims))
    network.update({key: getattr(args, key) for key in ('num_qs', 'batch_size', 'flow_steps')
                    if getattr(args, key) is not None})
    return network


# ----------------------------------------------------------------------------------------------------------------------
# Collecting and reporting.
# ----------------------------------------------------------------------------------------------------------------------


def read_columns(path: str, keys) -> Dict[str, list]:
    """{'steps': [...], key: [...]} of the rows of a run's CSV that hold the first key (None where a cell is empty)."""
    columns = {'steps': [], **{key: [] for key in keys}}
    if not os.path.exists(path):
        return columns
    for row in read_csv(path):
        if not _present(row.get(keys[0])):  # online episode rows and rows of other metrics
            continue
        columns['steps'].append(int(row['step']))
        for key in keys:
            columns[key].append(row[key] if _present(row.get(key)) else None)
    return columns


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def metric_names(method: str) -> List[str]:
    """The TRAINING_KEYS a method logs: lambda is TRQAM's."""
    return [name for name in TRAINING_KEYS if name != 'lambda' or method == 'TRQAM']


def seed_curves(run_dir: str, names) -> dict:
    """One seed's curves: the training metrics `names` against the logged steps, success against the evaluation
    steps."""
    training = read_columns(layout.path(run_dir, layout.TRAIN_CSV), [TRAINING_KEYS[name] for name in names])
    evaluation = read_columns(layout.path(run_dir, layout.EVAL_CSV), [SUCCESS_KEY])
    return {'steps': training['steps'], **{name: training[TRAINING_KEYS[name]] for name in names},
            'eval_steps': evaluation['steps'], 'success': evaluation[SUCCESS_KEY]}


def diverged_step(run_dir: str) -> Optional[int]:
    """The step at which main.py stopped this seed for a non-finite metric (None if it did not)."""
    record = layout.divergence(run_dir)
    return None if record is None else record['step']


def mean_over_seeds(per_seed: Dict[int, dict], steps_key: str, names) -> dict:
    """The curves averaged over the seeds that logged each step (a diverged seed stops logging)."""
    values = {name: {} for name in names}
    for curves in per_seed.values():
        for index, step in enumerate(curves[steps_key]):
            for name in names:
                if curves[name][index] is not None:
                    values[name].setdefault(step, []).append(curves[name][index])
    steps = sorted({step for by_step in values.values() for step in by_step})
    return {steps_key: steps, **{name: [float(np.mean(values[name][step])) if step in values[name] else None
                                        for step in steps] for name in names}}


def summarise(config: Configuration, run_dirs: Dict[int, str]) -> dict:
    """The JSON entry of one configuration."""
    names = metric_names(config.method)
    per_seed = {seed: seed_curves(run_dir, names) for seed, run_dir in run_dirs.items()}
    curves = {**mean_over_seeds(per_seed, 'steps', names),
              **mean_over_seeds(per_seed, 'eval_steps', ['success'])}
    diverged = {seed: diverged_step(run_dir) for seed, run_dir in run_dirs.items()}
    logged = lambda values: [value for value in values if value is not None]  # noqa: E731
    adj_loss, success = logged(curves['adj_loss']), logged(curves['success'])
    summary = {'adj_loss_first': adj_loss[0] if adj_loss else None, 'adj_loss_max': max(adj_loss, default=None),
               'adj_loss_last': adj_loss[-1] if adj_loss else None, 'success_max': max(success, default=None),
               'success_last': success[-1] if success else None}
    return {'label': config.label, 'method': config.method, **config.settings,
            'run_dirs': {str(seed): run_dir for seed, run_dir in run_dirs.items()},
            'diverged_at': {str(seed): step for seed, step in diverged.items() if step is not None},
            **curves, 'summary': summary, 'per_seed': {str(seed): curves for seed, curves in per_seed.items()}}


def plot(entries: List[dict], path: str, online_start: Optional[int]):
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), sharex=True)
    panels = (('steps', 'adj_loss', 'adjoint-matching loss', 'log'),
              ('steps', 'path_kl', 'path KL per chunk step', 'log'),
              ('eval_steps', 'success', 'success rate', 'linear'))
    # One colour per method and temperature or budget; with and without the clip differ by line style.
    setting = lambda entry: (entry['method'], entry.get('inv_temp', entry.get('kl_budget')))  # noqa: E731
    colors = {key: plt.get_cmap('tab10')(index % 10)
              for index, key in enumerate(dict.fromkeys(setting(entry) for entry in entries))}
    for entry in entries:
        color, style = colors[setting(entry)], '--' if entry['clip_grad_norm'] == 0 else '-'
        for axis, (steps_key, name, _, _) in zip(axes, panels):
            points = [(step, value) for step, value in zip(entry[steps_key], entry[name]) if value is not None]
            if points:
                axis.plot(*zip(*points), style, color=color, marker='.' if len(points) < 30 else None,
                          label=entry['label'])
            for step in entry['diverged_at'].values():
                axis.axvline(step, color=color, linestyle=':', linewidth=1)
    for entry in entries:
        if entry['method'] == 'TRQAM':
            axes[1].axhline(entry['kl_budget'], color='grey', linestyle=':', linewidth=1)
    for axis, (_, name, title, scale) in zip(axes, panels):
        if online_start:
            axis.axvline(online_start, color='grey', linestyle='--', linewidth=1)
        if scale == 'log' and axis.has_data():
            axis.set_yscale('log')
        if name == 'success':
            axis.set_ylim(-0.02, 1.02)
        axis.set_title(title)
        axis.set_xlabel('step')
        axis.grid(alpha=0.3)
    axes[2].legend(fontsize=8, loc='best')
    notes = ['dashed: no gradient clip'] + (['grey dashed: online starts'] if online_start else []) + \
        (['dotted: a seed diverged'] if any(entry['diverged_at'] for entry in entries) else [])
    fig.suptitle(f'Fixed temperature (QAM) vs trust region (TRQAM); {"; ".join(notes)}')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(args, results: List[tuple]) -> dict:
    """stability.json and stability.png in --out_dir from run_configurations' results; returns the JSON's content."""
    out_dir = args.out_dir or args.save_dir
    os.makedirs(out_dir, exist_ok=True)
    online_start = args.offline_steps if args.online_steps else None
    entries = [summarise(config, run_dirs) for config, run_dirs in results]
    report = {'env_name': args.env_name, 'protocol': args.protocol, 'seeds': list(args.seeds),
              'offline_steps': args.offline_steps, 'online_steps': args.online_steps, 'configurations': entries}
    write_json(os.path.join(out_dir, REPORT_JSON), report)
    plot(entries, os.path.join(out_dir, REPORT_PNG), online_start)
    return report


def print_summary(report: dict):
    columns = (('adj_loss_first', '.3g'), ('adj_loss_max', '.3g'), ('adj_loss_last', '.3g'), ('success_max', '.2f'),
               ('success_last', '.2f'))
    print(f'\n{"configuration":<34}' + ''.join(f'{name:>16}' for name, _ in columns) + '  diverged')
    for entry in report['configurations']:
        values = [entry['summary'][name] for name, _ in columns]
        diverged = ', '.join(f'seed {seed} at {step}' for seed, step in entry['diverged_at'].items()) or '-'
        print(f'{entry["label"]:<34}' + ''.join(f'{format(value, spec) if value is not None else "-":>16}'
                                                 for value, (_, spec) in zip(values, columns)) + f'  {diverged}')


# ----------------------------------------------------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    """argparse, not absl: importing main.py defines its absl flags, whose names (--env_name, --save_dir, ...)
    these share. Settings left unset are main.py's defaults (the paper's step counts) or the protocol's."""
    defaults = main_py.default_flag_values()
    floats = lambda text: [float(value) for value in text.split(',') if value]  # noqa: E731
    ints = lambda text: [int(value) for value in text.split(',') if value]  # noqa: E731
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--env_name', default='lift-mh-low_dim', help='Robomimic task, {task}-{mh|ph}-low_dim.')
    parser.add_argument('--dataset_dir', help='Folder of the robomimic datasets (default ~/.robomimic).')
    parser.add_argument('--dataset_path', help='The dataset file (overrides --dataset_dir).')
    parser.add_argument('--save_dir', default='runs/stability', help='Parent folder of the run directories.')
    parser.add_argument('--out_dir', help=f'Where {REPORT_JSON} and {REPORT_PNG} go (default: --save_dir).')
    parser.add_argument('--protocol', default='trqam', choices=('trqam', 'qam', 'none'),
                        help="main.py's --protocol (trqam: the BC pre-training stage, then each configuration).")
    parser.add_argument('--temperatures', type=floats, default=[0.3, 1.0, 3.0],
                        help='QAM inv_temp values (default 0.3,1,3).')
    parser.add_argument('--budgets', type=floats, default=[1.0], help='TRQAM kl_budget values (default 1).')
    parser.add_argument('--clip_grad_norm', type=float, default=1.0,
                        help='The gradient-norm clip of the clipped runs (the agents\' default); QAM also runs with 0.')
    parser.add_argument('--qam_methods', type=lambda text: text.split(','), default=['QAM'],
                        help=f'Fixed-temperature methods of {", ".join(FIXED_TEMPERATURE_METHODS)} (default QAM).')
    parser.add_argument('--seeds', type=ints, default=[0],
                        help='Seeds, trained together in each configuration (default 0).')
    parser.add_argument('--bc_steps', type=int, help='BC pre-training steps (default: the protocol\'s).')
    for name in ('offline_steps', 'online_steps', 'start_training', 'log_interval', 'eval_interval', 'eval_episodes',
                 'save_interval', 'steps_per_call'):
        parser.add_argument(f'--{name}', type=int, default=defaults[name],
                            help=f'main.py\'s --{name} (default {defaults[name]}).')
    parser.add_argument('--tiny', action='store_true', help=f'Tiny networks for a CPU check: {TINY_NETWORK}.')
    parser.add_argument('--hidden_dims', type=ints, help='Actor and critic hidden sizes, e.g. 256,256 (default: '
                        'the protocol\'s, else the agent config\'s).')
    parser.add_argument('--num_qs', type=int, help='Critic ensemble size.')
    parser.add_argument('--batch_size', type=int, help='Batch size.')
    parser.add_argument('--flow_steps', type=int, help='Flow steps K of the samplers and the SDE rollout.')
    parser.add_argument('--debug', action='store_true', help='Show the traceback of errors (also TRQAM_DEBUG=1).')
    args = parser.parse_args(argv)
    unknown = [method for method in args.qam_methods if method not in FIXED_TEMPERATURE_METHODS]
    if unknown or not args.temperatures and not args.budgets:
        parser.error(f'--qam_methods {unknown} is not among {FIXED_TEMPERATURE_METHODS}' if unknown else
                     'nothing to run: give --temperatures or --budgets.')
    return args


def main(argv=None) -> int:
    """Runs the experiment; returns the exit status (errors a user can fix get a message, not a traceback)."""
    args = parse_args(argv)
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file operation at INFO
    configs = configurations(args.temperatures, args.budgets, args.clip_grad_norm, args.qam_methods)
    with StopSignals() as stop:
        try:
            results = run_configurations(args, configs, stop)
        except (RunError, ValueError, FileNotFoundError) as error:
            if debug_requested(args.debug):
                raise
            print(f'\n{error}\n(--debug or TRQAM_DEBUG=1 shows the traceback.)', file=sys.stderr)
            if isinstance(error, Preempted):
                print('The finished configurations are kept; the same command resumes the rest.', file=sys.stderr)
            return getattr(error, 'exit_code', 1)
    report = write_report(args, results)
    print_summary(report)
    out_dir = args.out_dir or args.save_dir
    print(f'\nWrote {os.path.join(out_dir, REPORT_JSON)} and {os.path.join(out_dir, REPORT_PNG)}.')
    return 0


if __name__ == '__main__':
    sys.exit(main())
