"""main.py's flags, defined once: main.py defines them on absl's FLAGS; the sweep, the benchmark and the tests read
their defaults (`default_flag_values`) without defining them next to their own flags."""

import functools

from absl import flags
from ml_collections import config_flags

from core.errors import COUNT, Range
from envs import ogbench_data, robomimic

AGENT_DEFAULT = 'agents/trqam.py'  # --agent when not given
STEPS = Range(0, integer=True)
# The valid values of main.py's numeric flags, checked (with the agent config's) before a run creates anything.
FLAG_RANGES = {
    'seed': Range(0, integer=True),
    'dataset_replace_interval': STEPS,  # 0: no rotation
    'bc_steps': Range(0, integer=True, optional=True),
    'offline_steps': STEPS,
    'online_steps': STEPS,
    'horizon_length': Range(1, integer=True, optional=True),
    'start_training': STEPS,
    'utd_ratio': COUNT,
    'steps_per_call': COUNT,
    'log_interval': STEPS,  # 0: never (is_due)
    'eval_interval': STEPS,
    'eval_episodes': COUNT,
    'eval_workers': Range(-1, integer=True),
    'eval_envs': COUNT,
    'video_episodes': Range(0, integer=True),
    'save_interval': STEPS,  # 0: at the end of each phase only
}


def define_flags(flag_values: flags.FlagValues = flags.FLAGS, agent: bool = True) -> flags.FlagValues:
    """Defines main.py's flags on `flag_values`, and --agent (the agent config file) with `agent`."""
    string, integer, boolean, enum, comma_list = (
        functools.partial(define, flag_values=flag_values) for define in
        (flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_bool, flags.DEFINE_enum, flags.DEFINE_list))
    string('env_name', 'cube-single-play-singletask-task1-v0', 'OGBench single-task environment or '
           'Robomimic dataset (e.g. lift-mh-low_dim).')
    enum('protocol', 'trqam', ['trqam', 'qam', 'none'], 'Per-domain settings and stages of a paper '
         '(protocols/domains.py): trqam (BC pre-training, the TRQAM paper), qam (the QAM paper), none (the '
         'flags and the agent config only). Flags given explicitly always win.')
    integer('seed', 0, 'Random seed (networks, batches, environment resets).')
    comma_list('seeds', None, 'Several seeds trained in one program, e.g. 0,1,2,3 (default: --seed).')
    string('dataset_dir', None, f'Folder of the datasets (default: OGBench\'s {ogbench_data.DEFAULT_DATASET_DIR}, '
           f'Robomimic\'s {robomimic.DEFAULT_DATASET_DIR}).')
    string('dataset_path', None, 'One dataset file (overrides --dataset_dir).')
    string('dataset_shards_dir', None, 'Folder of 1M-transition .npz shards (the 10M/100M datasets; default: '
           'the protocol\'s).')
    integer('dataset_replace_interval', 1000, 'Steps between shard rotations, offline and online.')
    boolean('sparse', None, 'Sparse rewards r -> -1[r != 0] (default: the protocol\'s; puzzle and scene).')
    integer('bc_steps', None, 'Steps of the BC pre-training stage (default: the protocol\'s, 300K for trqam, '
            'none for qam; 300K with --bc_only).')
    integer('offline_steps', 1_000_000, 'Offline gradient steps.')
    integer('online_steps', 500_000, 'Online environment steps after the offline phase.')
    integer('horizon_length', None, 'Action chunk length H (default: the protocol\'s, else the agent '
            'config\'s, else 5 manipulation / 1 maze).')
    integer('start_training', 5000, 'Online steps collected before online updates start.')
    integer('utd_ratio', 1, 'Online gradient updates per environment step (one scanned call).')
    boolean('balanced_sampling', False, 'Online batches half offline data, half online transitions, and '
            'uniform random actions before --start_training (the authors\' option).')
    boolean('overlap_updates', False, 'Online, update while the environments play the next step in a worker process '
            '(where its action is known): the same results; no faster on 2 cores (README, Speed).')
    integer('steps_per_call', 100, 'Offline updates per jitted call.')
    integer('log_interval', 5000, 'Steps between training-metric rows.')
    integer('eval_interval', 50_000, 'Steps between evaluations (also at each phase\'s end; 0: only there).')
    integer('eval_episodes', 50, 'Episodes per evaluation.')
    integer('eval_workers', -1, 'Processes that step the evaluation episodes in parallel (-1: one per CPU '
            'core; 0: this process).')
    integer('eval_envs', 16, 'Evaluation environments at once, all seeds together (each OGBench manipulation '
            'environment holds 100-200 MB; a batched policy call serves them all).')
    integer('video_episodes', 0, 'Evaluation episodes rendered to MP4 (videos/ in the run directory).')
    integer('save_interval', 100_000, 'Steps between checkpoints.')
    string('save_dir', 'runs', 'Parent folder of run directories.')
    string('run_name', None, 'Run directory name (default: method_env_seed; "{seed}" is replaced by each '
           'seed).')
    boolean('bc_only', False, 'Only the BC pre-training stage, with the --agent network sizes.')
    string('pretrained_actor_path', None, 'Run directory of a BC run to start the flow networks from '
           '("{seed}" is replaced by each seed; default under --protocol=trqam: the shared BC run).')
    string('wandb_mode', 'disabled', 'wandb mode: disabled (no account needed), offline or online.')
    string('wandb_project', 'trqam', 'wandb project.')
    string('wandb_group', 'default', 'wandb group.')
    boolean('allow_config_change', False, 'Resume although flags or agent config differ from the checkpoint\'s '
            '(the changes are recorded in flags.json).')
    boolean('debug', False, 'Show the traceback of errors that otherwise get one screen (or TRQAM_DEBUG=1).')

    if agent:
        # No default here: ml_collections would load it, and apply the --agent.KEY overrides of sys.argv, while
        # the flag is defined; main.py's parse_flags adds --agent=AGENT_DEFAULT when it is not given.
        config_flags.DEFINE_config_file('agent', None, f'Agent config file (default: {AGENT_DEFAULT}); override '
                                        'keys with --agent.KEY=VALUE (--help lists its keys).', flag_values=flag_values)
    return flag_values


def default_flag_values() -> dict:
    """main.py's flags at their defaults (the agent config aside): the starting point of `train` from Python."""
    defined = define_flags(flags.FlagValues(), agent=False)
    return {name: defined[name].default for name in defined}


FLAG_NAMES = tuple(default_flag_values())  # main.py's own flags, the agent config aside
