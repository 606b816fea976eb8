"""Stability of fixed-temperature adjoint matching against TRQAM's trust region, on one Robomimic task.

The TRQAM paper's claim (docs/algorithms.md sections 4, 5 and 10): on Robomimic, QAM's adjoint-matching loss explodes
at a fixed temperature, clipped or not, and its success collapses, while TRQAM, whose temperature lambda_eff is set by
a path-KL budget, stays stable. This runs QAM at each --temperatures with and without the gradient clip and TRQAM at
each --budgets with it, each through main.py's protocol (`main.train`) in its own run directory under --save_dir, one
after another in this process; a configuration whose seeds all diverge is reported and the next one runs. The same
command again resumes the unfinished runs and does not restart a diverged seed; SIGTERM or Ctrl-C save and stop.
It writes to --out_dir stability.json (per configuration, the curves against the steps averaged over the seeds that
reached each step, and per seed: adj_loss, path KL, the gradient norm before the clip, TRQAM's lambda_eff, success;
the step at which a seed diverged) and stability.png (loss, path KL and success against steps). TRQAM's adj_loss is
its own loss L_TR, lambda_eff times QAM's at inv_temp = 1 / lambda_eff (section 4).

The data is robomimic's v1.5 low-dim file, {dataset_dir}/{task}/{mh|ph}/low_dim_v15.hdf5 (a run without it prints
the command that downloads it; experiments/generate_robomimic.py writes a Lift one from scripted demonstrations); it
needs robosuite and h5py: pip install --no-deps -r requirements-robomimic.txt.
From the repository root (main.py's defaults are the paper's step counts; the second command is a CPU-sized look):

    python experiments/stability.py --env_name=lift-mh-low_dim --save_dir=runs/stability --seeds=0,1,2
    python experiments/stability.py --tiny --bc_steps=100 --offline_steps=500 --online_steps=600 \\
        --start_training=100 --log_interval=50 --eval_interval=250 --eval_episodes=2 --steps_per_call=50
"""

import dataclasses
import functools
import math
import os
import sys
from typing import Dict, List, Optional

if __package__ in (None, ''):  # `python experiments/stability.py` from the repository root.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pandas as pd  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

import main as main_py  # noqa: E402 - main.py; `main` is this script's entry point
from core.errors import Preempted, RunError, debug_requested  # noqa: E402
from envs.robomimic import DEFAULT_DATASET_DIR  # noqa: E402
from protocols.domains import NETWORK_SIZES  # noqa: E402
from protocols.methods import METHODS  # noqa: E402
from runner import layout  # noqa: E402
from runner.flags import default_flag_values  # noqa: E402
from runner.logs import read_csv, write_json  # noqa: E402
from runner.signals import StopSignals  # noqa: E402

REPORT_JSON = 'stability.json'
REPORT_PNG = 'stability.png'
TRAINING_KEYS = {'adj_loss': 'training/actor/adj_loss', 'path_kl': 'training/actor/path_kl',
                 'grad_norm': 'training/grad_norm', 'lambda': 'training/dual/lambda'}
TINY_FLOW_STEPS = 3  # --tiny: NETWORK_SIZES['tiny'] and a short flow, for a CPU test (tests/test_stability.py)
# The fixed-temperature methods that can stand for QAM: the QAM agent, plain or with a variant's head.
FIXED_TEMPERATURE_METHODS = ('QAM', 'QAM-E', 'QAM-F')
NAME_KEYS = {'inv_temp': 'invtemp', 'kl_budget': 'kl'}  # the swept keys in run directory names
# main.py flags this experiment sets from its own flags of the same name; STEP_FLAGS default to main.py's.
STEP_FLAGS = ('offline_steps', 'online_steps', 'start_training', 'log_interval', 'eval_interval', 'eval_episodes',
              'save_interval', 'steps_per_call')
PASSED_FLAGS = ('env_name', 'dataset_dir', 'dataset_path', 'save_dir', 'protocol', 'bc_steps') + STEP_FLAGS
# Its own flags: main.py, which this imports, defines flags of the same names on absl's FLAGS.
FLAGS = flags.FlagValues()


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


def seeds(args) -> List[int]:
    return [int(seed) for seed in args.seeds]


def run_configurations(args, configs: List[Configuration], stop=None) -> List[tuple]:
    """Runs (or resumes) every configuration through main.train; returns (configuration, {seed: run directory})
    pairs. A diverged seed is not started again: a resumed run repeats the uninterrupted one, divergence included."""
    network = network_settings(args)
    # The swept keys and network sizes are the experiment's, whatever the protocol's per-domain table says.
    explicit = {f'agent.{key}' for key in network} | {f'agent.{key}' for c in configs for key in c.settings}
    base_flags = {**default_flag_values(), **{name: getattr(args, name) for name in PASSED_FLAGS}}
    results = []
    for config in configs:
        run_name = config.run_name(args.env_name)
        run_dirs = {seed: os.path.join(args.save_dir, run_name.replace('{seed}', str(seed))) for seed in seeds(args)}
        results.append((config, run_dirs))
        to_run = [seed for seed, run_dir in run_dirs.items() if layout.divergence(run_dir) is None]
        print(f'\n=== {config.label} ===', flush=True)
        if not to_run:
            print('Every seed diverged in an earlier run; its logs are kept.', flush=True)
            continue
        flag_values = {**base_flags, 'run_name': run_name, 'seeds': [str(seed) for seed in to_run]}
        try:
            main_py.train(flag_values, config.agent_config(network), stop, explicit)
        except main_py.TrainingDiverged as error:
            print(f'{config.label}: every seed diverged.\n{error}', file=sys.stderr)
    return results


def network_settings(args) -> Dict[str, object]:
    """The agent config's network keys the flags set (--tiny, then the explicit ones)."""
    network = {**NETWORK_SIZES['tiny'], 'flow_steps': TINY_FLOW_STEPS} if args.tiny else {}
    if args.hidden_dims:
        dims = tuple(int(size) for size in args.hidden_dims)
        network.update(actor_hidden_dims=dims, value_hidden_dims=dims)
    network.update({key: getattr(args, key) for key in ('num_qs', 'batch_size', 'flow_steps')
                    if getattr(args, key) is not None})
    return network


def read_rows(path: str, columns: Dict[str, str]) -> pd.DataFrame:
    """The step and `columns` (renamed; NaN where empty) of the rows of a run's CSV that hold the first column: not
    the online episode rows nor rows of other metrics."""
    frame = pd.DataFrame(read_csv(path) if os.path.exists(path) else []).reindex(columns=['step', *columns])
    frame = frame[frame[next(iter(columns))].notna()].astype(float).astype({'step': int})
    return frame.rename(columns=columns)


def seed_rows(run_dir: str, names) -> tuple:
    """One seed's rows: the training metrics `names` at the logged steps, success at the evaluation steps."""
    return (read_rows(layout.path(run_dir, layout.TRAIN_CSV), {TRAINING_KEYS[name]: name for name in names}),
            read_rows(layout.path(run_dir, layout.EVAL_CSV), {layout.SUCCESS_KEY: 'success'}))


def as_curves(training: pd.DataFrame, evaluation: pd.DataFrame) -> dict:
    """The JSON curves: training metrics against 'steps', success against 'eval_steps' (None where empty)."""
    as_list = lambda values: [None if math.isnan(value) else value for value in values.tolist()]  # noqa: E731
    return {'steps': training['step'].tolist(), **{name: as_list(training[name]) for name in training.columns[1:]},
            'eval_steps': evaluation['step'].tolist(), 'success': as_list(evaluation['success'])}


def summarise(config: Configuration, run_dirs: Dict[int, str]) -> dict:
    """The JSON entry of one configuration: the means over the seeds that logged each step (a diverged seed stops
    logging), and each seed's curves (lambda is TRQAM's alone)."""
    names = [name for name in TRAINING_KEYS if name != 'lambda' or config.method == 'TRQAM']
    per_seed = {seed: seed_rows(run_dir, names) for seed, run_dir in run_dirs.items()}
    means = [pd.concat(frames).groupby('step', as_index=False).mean() for frames in zip(*per_seed.values())]
    curves = as_curves(*means)
    diverged = {seed: layout.divergence(run_dir) for seed, run_dir in run_dirs.items()}  # main.py's record, or None
    adj_loss, success = ([value for value in curves[name] if value is not None] for name in ('adj_loss', 'success'))
    summary = {'adj_loss_first': adj_loss[0] if adj_loss else None, 'adj_loss_max': max(adj_loss, default=None),
               'adj_loss_last': adj_loss[-1] if adj_loss else None, 'success_max': max(success, default=None),
               'success_last': success[-1] if success else None}
    return {'label': config.label, 'method': config.method, **config.settings,
            'run_dirs': {str(seed): run_dir for seed, run_dir in run_dirs.items()},
            'diverged_at': {str(seed): record['step'] for seed, record in diverged.items() if record is not None},
            **curves, 'summary': summary, 'per_seed': {str(seed): as_curves(*rows) for seed, rows in per_seed.items()}}


PANELS = (('steps', 'adj_loss', 'adjoint-matching loss', 'log'), ('steps', 'path_kl', 'path KL per chunk step', 'log'),
          ('eval_steps', 'success', 'success rate', 'linear'))


def plot_entry(axes, entry, color):
    """One configuration's curves; without the clip dashed, a seed's divergence a dotted vertical line."""
    style = '--' if entry['clip_grad_norm'] == 0 else '-'
    for axis, (steps_key, name, _, _) in zip(axes, PANELS):
        points = [(step, value) for step, value in zip(entry[steps_key], entry[name]) if value is not None]
        if points:
            axis.plot(*zip(*points), style, color=color, marker='.' if len(points) < 30 else None, label=entry['label'])
        for step in entry['diverged_at'].values():
            axis.axvline(step, color=color, linestyle=':', linewidth=1)
    if entry['method'] == 'TRQAM':
        axes[1].axhline(entry['kl_budget'], color='grey', linestyle=':', linewidth=1)


def plot(entries: List[dict], path: str, online_start: Optional[int]):
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), sharex=True)
    # One colour per method and temperature or budget; with and without the clip differ by line style.
    setting = lambda entry: (entry['method'], entry.get('inv_temp', entry.get('kl_budget')))  # noqa: E731
    colors = {key: plt.get_cmap('tab10')(index % 10)
              for index, key in enumerate(dict.fromkeys(setting(entry) for entry in entries))}
    for entry in entries:
        plot_entry(axes, entry, colors[setting(entry)])
    for axis, (_, name, title, scale) in zip(axes, PANELS):
        if online_start:
            axis.axvline(online_start, color='grey', linestyle='--', linewidth=1)
        if scale == 'log' and axis.has_data():
            axis.set_yscale('log')
        if name == 'success':
            axis.set_ylim(-0.02, 1.02)
        axis.set(title=title, xlabel='step')
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
    entries = [summarise(config, run_dirs) for config, run_dirs in results]
    report = {'env_name': args.env_name, 'protocol': args.protocol, 'seeds': seeds(args),
              'offline_steps': args.offline_steps, 'online_steps': args.online_steps, 'configurations': entries}
    write_json(os.path.join(out_dir, REPORT_JSON), report)
    plot(entries, os.path.join(out_dir, REPORT_PNG), args.offline_steps if args.online_steps else None)
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


def define_flags(flag_values: flags.FlagValues) -> flags.FlagValues:
    """The experiment's flags; settings left unset are main.py's defaults or the protocol's."""
    string, integer, real, boolean, enum, comma_list = (
        functools.partial(define, flag_values=flag_values) for define in
        (flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_float, flags.DEFINE_bool, flags.DEFINE_enum,
         flags.DEFINE_list))
    defaults = default_flag_values()
    string('env_name', 'lift-mh-low_dim', 'Robomimic task, {task}-{mh|ph}-low_dim.')
    string('dataset_dir', None, f'Folder of the robomimic datasets (default {DEFAULT_DATASET_DIR}).')
    string('dataset_path', None, 'The dataset file (overrides --dataset_dir).')
    string('save_dir', 'runs/stability', 'Parent folder of the run directories.')
    string('out_dir', None, f'Where {REPORT_JSON} and {REPORT_PNG} go (default: --save_dir).')
    enum('protocol', 'trqam', ['trqam', 'qam', 'none'], "main.py's --protocol (trqam: BC pre-training first).")
    comma_list('temperatures', ['0.3', '1', '3'], 'QAM inv_temp values.')
    comma_list('budgets', ['1'], 'TRQAM kl_budget values.')
    real('clip_grad_norm', 1.0, 'Gradient-norm clip of the clipped runs; QAM also runs with 0.')
    comma_list('qam_methods', ['QAM'], f'Fixed-temperature methods of {", ".join(FIXED_TEMPERATURE_METHODS)}.')
    comma_list('seeds', ['0'], 'Seeds, trained together in each configuration.')
    integer('bc_steps', None, "BC pre-training steps (default: the protocol's).")
    for name in STEP_FLAGS:
        integer(name, defaults[name], f"main.py's --{name}.")
    boolean('tiny', False, f"Tiny networks for a CPU check: NETWORK_SIZES['tiny'], {TINY_FLOW_STEPS} flow steps.")
    comma_list('hidden_dims', None, "Actor and critic hidden sizes, e.g. 256,256 (default: the protocol's).")
    integer('num_qs', None, 'Critic ensemble size.')
    integer('batch_size', None, 'Batch size.')
    integer('flow_steps', None, 'Flow steps K of the samplers and the SDE rollout.')
    boolean('debug', False, 'Show the traceback of errors (also TRQAM_DEBUG=1).')
    flags.register_validator('qam_methods', lambda methods: set(methods) <= set(FIXED_TEMPERATURE_METHODS),
                             f'--qam_methods must be among {FIXED_TEMPERATURE_METHODS}', flag_values=flag_values)
    flags.register_multi_flags_validator(('temperatures', 'budgets'), lambda values: any(values.values()),
                                         'nothing to run: give --temperatures or --budgets.', flag_values=flag_values)
    return flag_values


define_flags(FLAGS)


def parse_flags(argv) -> Optional[int]:
    """Parses argv into FLAGS; the exit status where it cannot run: 0 after --help, 2 for a bad command line."""
    if any(arg in ('-h', '--help', '--helpfull') for arg in argv[1:]):
        print(f'{__doc__}\n{FLAGS.get_help()}')
        return 0
    FLAGS.unparse_flags()
    try:
        FLAGS(argv)
    except flags.Error as error:
        print(f'{argv[0]}: {error}', file=sys.stderr)
        return 2
    return None


def main(argv) -> int:
    """Runs the experiment; returns the exit status (errors a user can fix get a message, not a traceback)."""
    status = parse_flags(argv)
    if status is not None:
        return status
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file operation at INFO
    configs = configurations(FLAGS.temperatures, FLAGS.budgets, FLAGS.clip_grad_norm, FLAGS.qam_methods)
    with StopSignals() as stop:
        try:
            results = run_configurations(FLAGS, configs, stop)
        except (RunError, ValueError, FileNotFoundError) as error:
            if debug_requested(FLAGS.debug):
                raise
            print(f'\n{error}\n(--debug or TRQAM_DEBUG=1 shows the traceback.)', file=sys.stderr)
            if isinstance(error, Preempted):
                print('The finished configurations are kept; the same command resumes the rest.', file=sys.stderr)
            return getattr(error, 'exit_code', 1)
    report = write_report(FLAGS, results)
    print_summary(report)
    out_dir = FLAGS.out_dir or FLAGS.save_dir
    print(f'\nWrote {os.path.join(out_dir, REPORT_JSON)} and {os.path.join(out_dir, REPORT_PNG)}.')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
