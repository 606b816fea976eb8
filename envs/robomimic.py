"""Robomimic tasks (lift, can, square) with the low-dim multi-human (`mh`) and proficient-human (`ph`) datasets,
without the robomimic package (it pulls torch and pins an old jax): the environments come from robosuite 1.5 itself
and the HDF5 files are read here.

Names: ``{task}-{mh|ph}-low_dim``, e.g. ``lift-mh-low_dim`` (the authors' naming).

Files: robomimic's v1.5 low-dim datasets, by default at ``~/.robomimic/{task}/{mh|ph}/low_dim_v15.hdf5`` (the layout
robomimic's download script writes under its ``--download_dir``). Their layout (robomimic's docs, "Dataset Structure"):
``data`` has the attributes ``total`` and ``env_args`` (JSON: env_name, env_version, type, env_kwargs) and one group
``demo_N`` per demonstration (attribute ``num_samples``; datasets ``actions``, ``rewards``, ``dones``, ``states``;
groups ``obs`` and ``next_obs`` of one dataset per observation key); ``mask`` holds the train/valid filter keys.

Processing, as the authors do it:

* observation = concat(robot0_eef_pos, robot0_eef_quat, robot0_gripper_qpos, object), min-max normalised to [-1, 1]
  with statistics over the obs and next_obs of every demo; the environment normalises with the same statistics;
* rewards (0/1 success) shifted by -1, offline here and online in `RobomimicEnv`;
* masks = 1 - dones; terminals = dones, plus each demo's last step (see `_transitions`).

`RobomimicEnv` builds the robosuite environment from the dataset's own env_args. robosuite, MuJoCo and h5py are
imported lazily (requirements-robomimic.txt); importing this module loads only numpy and gymnasium.
"""

import copy
import dataclasses
import json
import logging
import os
import re

import gymnasium
import numpy as np

from core.errors import close_match

TASKS = ('lift', 'can', 'square')
DATASET_TYPES = ('mh', 'ph')
# The robosuite environment each task's files name in env_args['env_name'].
ROBOSUITE_ENVS = {'lift': 'Lift', 'can': 'PickPlaceCan', 'square': 'NutAssemblySquare'}
# The authors' episode lengths (robomimic's own rollout horizons are longer: 400 for ph, 500 for mh).
MAX_EPISODE_STEPS = {'lift': 300, 'can': 300, 'square': 400}
OBSERVATION_KEYS = ('robot0_eef_pos', 'robot0_eef_quat', 'robot0_gripper_qpos', 'object')

DEFAULT_DATASET_DIR = '~/.robomimic'
DATASET_FILE = 'low_dim_v15.hdf5'
# robomimic's DATASET_REGISTRY (v1.5 low-dim files) in its Hugging Face dataset repository HF_REPO_ID.
DOWNLOAD_URL = ('https://huggingface.co/datasets/robomimic/robomimic_datasets/resolve/main/'
                'v1.5/{task}/{dataset_type}/' + DATASET_FILE)

# Tolerance for actions slightly outside [-1, 1] (float rounding) before a file is declared malformed.
ACTION_BOUND_TOL = 1e-3
# The authors' guard against a zero range in the min-max normalisation.
NORMALIZATION_EPS = 1e-6
RENDER_CAMERA = 'agentview'
RENDER_SIZE = (256, 256)  # (height, width), the authors' render size

_DEMO_NAME = re.compile(r'^demo_(\d+)$')


# ----------------------------------------------------------------------------------------------------------------------
# Names and files.
# ----------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ParsedEnvName:
    task: str  # 'lift', 'can' or 'square'
    dataset_type: str  # 'mh' or 'ph'


def env_names() -> list[str]:
    return [f'{task}-{dataset_type}-low_dim' for task in TASKS for dataset_type in DATASET_TYPES]


def is_robomimic(env_name: str) -> bool:
    """Whether the name is meant for this module (a robomimic task or a low-dim dataset name), valid or not, so that
    a misspelt robomimic name gets `parse_env_name`'s error rather than another loader's."""
    return isinstance(env_name, str) and (env_name.endswith('-low_dim') or env_name.split('-')[0] in TASKS)


def parse_env_name(env_name: str) -> ParsedEnvName:
    parts = env_name.split('-') if isinstance(env_name, str) else []
    if len(parts) != 3 or parts[0] not in TASKS or parts[1] not in DATASET_TYPES or parts[2] != 'low_dim':
        raise ValueError(f'Invalid robomimic environment name {env_name!r}.{close_match(env_name, env_names())} '
                         f'Expected {{task}}-{{mh|ph}}-low_dim with task in {"|".join(TASKS)}; valid names: '
                         f'{", ".join(env_names())}.')
    return ParsedEnvName(task=parts[0], dataset_type=parts[1])


def dataset_path(env_name: str, dataset_dir: str | None = None) -> str:
    """Where the dataset of `env_name` lives: ``{dataset_dir}/{task}/{mh|ph}/low_dim_v15.hdf5``."""
    return _file_in(dataset_dir, parse_env_name(env_name))


def _file_in(dataset_dir: str | None, parsed: ParsedEnvName) -> str:
    directory = os.path.expanduser(os.fspath(dataset_dir if dataset_dir is not None else DEFAULT_DATASET_DIR))
    return os.path.join(directory, parsed.task, parsed.dataset_type, DATASET_FILE)


def download_instructions(env_name: str, path: str) -> str:
    """How to put the dataset of `env_name` at `path` on a machine with internet access."""
    parsed = parse_env_name(env_name)
    url = DOWNLOAD_URL.format(task=parsed.task, dataset_type=parsed.dataset_type)
    directory = os.path.dirname(path)
    lines = ['Download it on a machine with internet access:',
             f'  {f"mkdir -p {directory} && " if directory else ""}curl -L -o {path} {url}']
    layout = os.path.join(parsed.task, parsed.dataset_type, DATASET_FILE)
    if path == layout or path.endswith(os.sep + layout):  # where robomimic's script writes under --download_dir
        lines += ["or with robomimic's own script (it needs the robomimic package):",
                  f'  python robomimic/scripts/download_datasets.py --tasks {parsed.task} --dataset_types '
                  f'{parsed.dataset_type} --hdf5_types low_dim --download_dir {path[:-len(layout)] or "."}']
    return '\n'.join(lines)


def _missing_file_error(path: str, env_name: str | None) -> FileNotFoundError:
    lines = [f'Robomimic dataset file not found: {path}']
    if env_name is not None:
        lines.append(f'(the dataset of {env_name!r}; pass dataset_dir or dataset_path to look elsewhere).')
        lines.append(download_instructions(env_name, path))
    return FileNotFoundError('\n'.join(lines))


def _malformed(path: str, problem: str) -> ValueError:
    return ValueError(f'Malformed robomimic dataset file {path}: {problem}. Delete it and download it again.')


# ----------------------------------------------------------------------------------------------------------------------
# Loading.
# ----------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetMetadata:
    """What an environment needs from its dataset: the file's env_args and the observation statistics."""

    path: str
    env_args: dict  # data.attrs['env_args'], parsed: env_name, env_version, type, env_kwargs
    obs_min: np.ndarray  # (obs_dim,) float32, over obs and next_obs of the loaded demos
    obs_max: np.ndarray
    num_demos: int


def normalize_observations(observations, obs_min, obs_max) -> np.ndarray:
    """The authors' min-max normalisation to [-1, 1] (dataset statistics; online values may fall outside)."""
    observations = np.asarray(observations, np.float64)
    scale = np.asarray(obs_max, np.float64) - np.asarray(obs_min, np.float64) + NORMALIZATION_EPS
    return (2.0 * ((observations - obs_min) / scale - 0.5)).astype(np.float32)


def _import_h5py():
    try:
        import h5py  # noqa: PLC0415
    except ImportError as e:
        raise ImportError('Reading robomimic datasets needs h5py: '
                          'pip install --no-deps -r requirements-robomimic.txt') from e
    return h5py


def _decode(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_env_args(data, path: str) -> dict:
    if 'env_args' not in data.attrs:
        raise _malformed(path, "the 'data' group has no 'env_args' attribute (the environment's metadata)")
    try:
        env_args = json.loads(_decode(data.attrs['env_args']))
    except json.JSONDecodeError as e:
        raise _malformed(path, f"data.attrs['env_args'] is not valid JSON ({e})") from e
    if not isinstance(env_args, dict) or not isinstance(env_args.get('env_name'), str) \
            or not isinstance(env_args.get('env_kwargs'), dict):
        raise _malformed(path, "data.attrs['env_args'] lacks 'env_name' (a string) or 'env_kwargs' (an object)")
    return env_args


def _demo_names(file, data, path: str, filter_key: str | None) -> list[str]:
    """The demos to load, sorted by their number (demo_2 before demo_10)."""
    names = [name for name in data if _DEMO_NAME.match(name)]
    if filter_key is not None:
        if f'mask/{filter_key}' not in file:
            masks = sorted(file['mask']) if 'mask' in file else []
            raise _malformed(path, f'it has no filter key mask/{filter_key} (filter keys: {masks})')
        listed = [_decode(name) for name in file[f'mask/{filter_key}'][()]]
        unknown = sorted(set(listed) - set(names))
        if unknown:
            raise _malformed(path, f'mask/{filter_key} lists demos that data does not hold: {unknown[:5]}')
        names = listed
    if not names:
        raise _malformed(path, 'it holds no demonstrations (no data/demo_N groups)'
                         + (f' under the filter key {filter_key!r}' if filter_key is not None else ''))
    return sorted(names, key=lambda name: int(_DEMO_NAME.match(name).group(1)))


def _read_demo(group, name: str, path: str) -> dict:
    """One demo's arrays (float64), checked for presence, shapes, lengths and values."""
    required = ['actions', 'rewards', 'dones'] + [f'{part}/{key}' for part in ('obs', 'next_obs')
                                                   for key in OBSERVATION_KEYS]
    missing = [key for key in required if key not in group]
    if missing:
        raise _malformed(path, f'{name} lacks {missing} (a low-dim robomimic demo has actions, rewards, dones and '
                         f'obs/next_obs of {list(OBSERVATION_KEYS)})')
    not_numeric = {key: str(group[key].dtype) for key in required if group[key].dtype.kind not in 'biuf'}
    if not_numeric:
        raise _malformed(path, f'{name} has non-numeric arrays {not_numeric}')
    arrays = {key: np.asarray(group[key][()], np.float64) for key in required}
    ranks = {key: 1 if key in ('rewards', 'dones') else 2 for key in required}
    wrong = {key: arrays[key].shape for key in required if arrays[key].ndim != ranks[key]}
    if wrong:
        raise _malformed(path, f'{name} has arrays of the wrong rank {wrong} (rewards and dones are (N,), the '
                         'others (N, dim))')
    dims = {key: (arrays[f'obs/{key}'].shape[1], arrays[f'next_obs/{key}'].shape[1]) for key in OBSERVATION_KEYS}
    unequal = {key: sizes for key, sizes in dims.items() if sizes[0] != sizes[1]}
    if unequal:
        raise _malformed(path, f'{name} has obs and next_obs of different sizes {unequal}')
    lengths = {key: len(arrays[key]) for key in required}
    if 'num_samples' in group.attrs:
        lengths['num_samples attribute'] = int(group.attrs['num_samples'])
    odd = {key: length for key, length in lengths.items() if length != lengths['actions']}
    if odd:
        raise _malformed(path, f'{name} has {lengths["actions"]} actions but lengths {odd}')
    if lengths['actions'] == 0:
        raise _malformed(path, f'{name} is empty')
    for key, values in arrays.items():
        bad = ~np.isfinite(values)
        if bad.any():
            step = int(np.argwhere(bad.reshape(len(values), -1).any(-1))[0, 0])
            raise _malformed(path, f'{name}/{key} holds {int(bad.sum())} non-finite value(s), first at step {step}')
    low, high = arrays['actions'].min(), arrays['actions'].max()
    if low < -1 - ACTION_BOUND_TOL or high > 1 + ACTION_BOUND_TOL:
        raise _malformed(path, f'{name}/actions must lie in [-1, 1], found range [{low:.4g}, {high:.4g}]')
    for key, meaning in (('rewards', 'sparse 0/1 success rewards'), ('dones', '0/1')):
        values = np.unique(arrays[key])
        if not np.isin(values, (0.0, 1.0)).all():
            raise _malformed(path, f'{name}/{key} must be {meaning}, found values {values[:10]}')
    return {
        'observations': np.concatenate([arrays[f'obs/{key}'] for key in OBSERVATION_KEYS], axis=1),
        'next_observations': np.concatenate([arrays[f'next_obs/{key}'] for key in OBSERVATION_KEYS], axis=1),
        'actions': np.clip(arrays['actions'], -1.0, 1.0),  # only float round-off lies beyond the bounds here
        'rewards': arrays['rewards'],
        'dones': arrays['dones'],
    }


def _transitions(demos: list, obs_min, obs_max) -> dict:
    """Our transition format (envs.datasets.TRANSITION_KEYS) from the demos, in order."""
    dones = np.concatenate([demo['dones'] for demo in demos])
    # Every demo ends with a terminal, so that action chunks never run from one demo into the next. The authors use
    # terminals = dones: a demo whose last done is 0 (possible in a file written without robomimic's done_mode 1/2)
    # then runs on into the following demo. The mask stays 1 - done there: the demo stopped, it did not fail.
    terminals = dones.copy()
    terminals[np.cumsum([len(demo['dones']) for demo in demos]) - 1] = 1.0
    concat = {key: np.concatenate([demo[key] for demo in demos]) for key in demos[0] if key != 'dones'}
    return {
        'observations': normalize_observations(concat['observations'], obs_min, obs_max),
        'actions': concat['actions'].astype(np.float32),
        'rewards': (concat['rewards'] - 1.0).astype(np.float32),  # the authors' shift: success 0, otherwise -1
        'masks': (1.0 - dones).astype(np.float32),
        'terminals': terminals.astype(np.float32),
        'next_observations': normalize_observations(concat['next_observations'], obs_min, obs_max),
    }


def load_dataset(path: str, filter_key: str | None = None) -> tuple[dict, DatasetMetadata]:
    """Read a robomimic low-dim HDF5 file.

    Args:
        path: the ``.hdf5`` file.
        filter_key: load only the demos listed in ``mask/{filter_key}`` (e.g. 'train' or 'valid'); None (the
            authors' choice) loads every demo. The normalisation statistics cover the loaded demos.

    Returns:
        (transitions, metadata): transitions is a dict of float32 arrays with exactly the keys observations,
        actions, rewards, masks, terminals, next_observations; metadata the file's env_args and the statistics.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: the file is not a well-formed robomimic low-dim dataset (the message names the file and the
            problem).
    """
    h5py = _import_h5py()
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(path):
        raise _missing_file_error(path, None)
    try:
        file = h5py.File(path, 'r')
    except OSError as e:
        raise _malformed(path, f'it cannot be opened as an HDF5 file ({e}); it may be truncated') from e
    with file:
        if 'data' not in file:
            raise _malformed(path, f"it has no 'data' group (top-level keys: {sorted(file)})")
        data = file['data']
        env_args = _read_env_args(data, path)
        names = _demo_names(file, data, path, filter_key)
        try:
            demos = [_read_demo(data[name], name, path) for name in names]
        except OSError as e:  # a truncated or corrupt dataset inside an intact header
            raise _malformed(path, f'reading it failed ({e}); it may be truncated or corrupt') from e
    dims = {(demo['observations'].shape[1], demo['actions'].shape[1]) for demo in demos}
    if len(dims) != 1:
        raise _malformed(path, f'its demos disagree on the (observation, action) sizes: {sorted(dims)}')
    observations = np.concatenate([demo[key] for demo in demos for key in ('observations', 'next_observations')])
    obs_min, obs_max = observations.min(axis=0).astype(np.float32), observations.max(axis=0).astype(np.float32)
    metadata = DatasetMetadata(path=path, env_args=env_args, obs_min=obs_min, obs_max=obs_max, num_demos=len(demos))
    return _transitions(demos, obs_min, obs_max), metadata


# ----------------------------------------------------------------------------------------------------------------------
# robosuite.
# ----------------------------------------------------------------------------------------------------------------------


class _QuietRobosuite(logging.Filter):
    """Drops robosuite's INFO lines (one per controller config loaded) and its import-time notices about optional
    extras these tasks do not use (robosuite_models, the mink whole-body IK, a private macro file)."""

    NOTICES = ('robosuite_models', 'mink', 'macro')

    def filter(self, record):
        message = record.getMessage()
        return record.levelno >= logging.WARNING and not any(notice in message for notice in self.NOTICES)


# Installed on robosuite's logger now, so that it also quiets an import of robosuite that does not go through here.
logging.getLogger('robosuite_logs').addFilter(_QuietRobosuite())
# Width in qpos and in qvel of MuJoCo's free and ball joints; hinge and slide joints have 1.
_JOINT_WIDTHS = {'mjJNT_FREE': (7, 6), 'mjJNT_BALL': (4, 3)}


def _import_robosuite():
    try:
        import robosuite  # noqa: PLC0415
    except ImportError as e:
        raise ImportError('Robomimic environments need robosuite: '
                          'pip install --no-deps -r requirements-robomimic.txt') from e
    _bridge_mujoco_api_changes()
    return robosuite


def _bridge_mujoco_api_changes():
    """robosuite 1.5.2 predates two changes of MuJoCo's Python API that the pinned MuJoCo (3.17) has:

    * MuJoCo's enums no longer compare equal to numpy integers from the enum's side, so robosuite's
      ``joint_type in (mjJNT_HINGE, mjJNT_SLIDE)`` assertion fails for every hinge joint;
    * ``mjData.qM`` is gone and ``mj_fullM`` takes ``(model, data, dst)``, so the controllers' mass matrix update
      raises.

    Both robosuite functions are replaced by versions that compute the same values with the current API. Idempotent.
    """
    import mujoco  # noqa: PLC0415
    from robosuite.controllers.parts.controller import Controller  # noqa: PLC0415
    from robosuite.utils.binding_utils import MjModel  # noqa: PLC0415

    widths = {int(getattr(mujoco.mjtJoint, name)): width for name, width in _JOINT_WIDTHS.items()}

    def joint_address(model, name, addresses, which):
        joint = model.joint_name2id(name)
        start = int(addresses[joint])
        width = widths.get(int(model.jnt_type[joint]), (1, 1))[which]
        return start if width == 1 else (start, start + width)

    MjModel.get_joint_qpos_addr = lambda self, name: joint_address(self, name, self.jnt_qposadr, 0)
    MjModel.get_joint_qvel_addr = lambda self, name: joint_address(self, name, self.jnt_dofadr, 1)

    if not hasattr(mujoco.MjData, 'qM'):
        def update(self, force=False):
            """robosuite's Controller.update, with MuJoCo's current mj_fullM(model, data, dst)."""
            if not (self.new_update or force):
                return
            if force or not self.lite_physics:
                self.sim.forward()
            if self.ref_name is not None:
                self.update_reference_data()
            self.joint_pos = np.array(self.sim.data.qpos[self.qpos_index])
            self.joint_vel = np.array(self.sim.data.qvel[self.qvel_index])
            mass_matrix = np.empty((self.sim.model.nv, self.sim.model.nv))
            mujoco.mj_fullM(self.sim.model._model, self.sim.data._data, mass_matrix)
            self.mass_matrix = mass_matrix[self.qvel_index, :][:, self.qvel_index]
            self.new_update = False

        Controller.update = update


# robosuite <= 1.4 names of OSC arguments that robosuite 1.5 renamed; 1.5's controllers swallow unknown arguments,
# so an old name would silently fall back to the default (control_delta=False would become delta control).
_RENAMED_CONTROLLER_ARGS = {'damping': 'damping_ratio', 'damping_limits': 'damping_ratio_limits'}


def _arm_config_for_robosuite15(config: dict) -> dict:
    config = dict(config)
    for old, new in _RENAMED_CONTROLLER_ARGS.items():
        if old in config:
            config.setdefault(new, config.pop(old))
    if 'control_delta' in config:
        config.setdefault('input_type', 'delta' if config.pop('control_delta') else 'absolute')
    return config


def robosuite_kwargs(env_args: dict, render: bool) -> dict:
    """robosuite.make's keyword arguments for a dataset's env_args, on robosuite 1.5.

    Controller configuration. robosuite 1.5 drives a robot with a composite controller ({"type": "BASIC",
    "body_parts": {"right": <arm config with "gripper": {"type": "GRIP"}>}}) where robosuite <= 1.4 took the arm's
    config alone ({"type": "OSC_POSE", ...}). The files carry one of two layouts:

    * robosuite <= 1.4 (an arm config at the top): converted with robosuite's own
      ``refactor_composite_controller_config`` (the robot's default composite config with each arm replaced by the
      old config plus a GRIP gripper). The old OSC expressed its deltas in the world frame and always ran the full
      physics forward pass, so ``input_ref_frame`` defaults to "world" and the environment's ``lite_physics`` to False
      (robosuite's documented setting for datasets of robosuite <= 1.4.1).
    * robomimic v1.5 (already composite, in the form that conversion produces): kept, frames and physics as the
      file says (robosuite 1.5's defaults where it is silent: "base" frame, lite physics; for these tasks' fixed,
      unrotated Panda base the two frames coincide).

    In both, each arm's robosuite <= 1.4 argument names are renamed to 1.5's: damping -> damping_ratio,
    damping_limits -> damping_ratio_limits, control_delta -> input_type ("delta" / "absolute"). robomimic's v1.5
    files keep the old names with the values damping 1 and control_delta true, which equal robosuite 1.5's defaults,
    so for them the renaming changes nothing; it matters for other values, which 1.5 would silently ignore.

    The rest: the file's env_kwargs (robots, control_freq, reward settings, ...) with robomimic's own overrides for
    evaluation: no on-screen renderer, no camera observations, object observations on, ``ignore_done`` (episode
    length is ours to enforce); the offscreen renderer only when rendering.
    """
    from robosuite.controllers.composite.composite_controller_factory import (  # noqa: PLC0415
        is_part_controller_config, refactor_composite_controller_config)
    from robosuite.models.robots.robot_model import REGISTERED_ROBOTS  # noqa: PLC0415

    kwargs = copy.deepcopy(env_args['env_kwargs'])
    robots = kwargs.get('robots')
    robot = robots[0] if isinstance(robots, (list, tuple)) else robots
    controller = kwargs.get('controller_configs')
    if controller is not None:
        arms = REGISTERED_ROBOTS[robot].arms
        if is_part_controller_config(controller):
            controller = refactor_composite_controller_config(controller, robot, arms)
            for arm in arms:
                controller['body_parts'][arm].setdefault('input_ref_frame', 'world')
            kwargs.setdefault('lite_physics', False)
        controller['body_parts'] = {part: _arm_config_for_robosuite15(config) if part in arms else config
                                    for part, config in controller['body_parts'].items()}
        kwargs['controller_configs'] = controller
    kwargs.update(has_renderer=False, has_offscreen_renderer=render, use_camera_obs=False, use_object_obs=True,
                  ignore_done=True)
    return kwargs


def make_robosuite_env(env_args: dict, render: bool = False):
    """The robosuite environment of a dataset's env_args (`robosuite_kwargs`), its raw observations unnormalised."""
    robosuite = _import_robosuite()
    return robosuite.make(env_args['env_name'], **robosuite_kwargs(env_args, render))


def low_dim_observation(robosuite_obs: dict) -> dict:
    """The low-dim keys of a robosuite observation under robomimic's names (its 'object' is robosuite's
    'object-state')."""
    raw = {**robosuite_obs, 'object': robosuite_obs['object-state']}
    return {key: np.asarray(raw[key], np.float64) for key in OBSERVATION_KEYS}


# ----------------------------------------------------------------------------------------------------------------------
# Environment.
# ----------------------------------------------------------------------------------------------------------------------


class RobomimicEnv(gymnasium.Env):
    """A robosuite task as the authors evaluate it: normalised low-dim observations, actions in [-1, 1]^7, reward
    success - 1, termination at success (``info['success']`` from the task's own success check), truncation after
    `max_episode_steps`.

    Seeding: robosuite 1.5 draws every random choice of a reset (the object's size and placement, the robot's
    initial joint noise) from one ``numpy.random.Generator``, ``env.rng``, which its placement samplers and robots
    hold by reference. ``reset(seed=s)`` re-seeds that generator in place, so the same seed gives the same initial
    state; ``reset()`` continues its stream.
    """

    metadata = {'render_modes': ['rgb_array']}

    def __init__(self, env_args: dict, obs_min, obs_max, max_episode_steps: int, render: bool = False):
        self._env = make_robosuite_env(env_args, render)
        self.obs_min = np.asarray(obs_min, np.float32)
        self.obs_max = np.asarray(obs_max, np.float32)
        self.max_episode_steps = max_episode_steps
        self.render_mode = 'rgb_array' if render else None
        self.metadata = {**self.metadata, 'render_fps': self._env.control_freq}
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, self._env.action_spec[0].shape, np.float32)
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, self.obs_min.shape, np.float32)
        self._steps = 0

    def _observation(self, robosuite_obs: dict) -> np.ndarray:
        observation = np.concatenate(list(low_dim_observation(robosuite_obs).values()))
        if observation.shape != self.obs_min.shape:
            raise ValueError(f'The environment gives {observation.shape[0]} observation values, the dataset '
                             f'statistics describe {self.obs_min.shape[0]}: the dataset is of another task.')
        return normalize_observations(observation, self.obs_min, self.obs_max)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self._env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        self._steps = 0
        return self._observation(self._env.reset()), {}

    def step(self, action):
        robosuite_obs, _, _, _ = self._env.step(np.asarray(action, np.float64))
        self._steps += 1
        success = bool(self._env._check_success())
        truncated = not success and self._steps >= self.max_episode_steps
        return self._observation(robosuite_obs), float(success) - 1.0, success, truncated, {'success': float(success)}

    def render(self):
        if self.render_mode is None:
            return None
        height, width = RENDER_SIZE
        frame = self._env.sim.render(camera_name=RENDER_CAMERA, height=height, width=width)
        return np.ascontiguousarray(frame[::-1])  # MuJoCo's image rows run bottom-up

    def close(self):
        self._env.close()


@dataclasses.dataclass(frozen=True, eq=False)
class EnvFactory:
    """Picklable: ``factory(render=...)`` builds a `RobomimicEnv` in any process from the dataset's metadata."""

    env_args: dict
    obs_min: np.ndarray
    obs_max: np.ndarray
    max_episode_steps: int

    def __call__(self, render: bool = False) -> RobomimicEnv:
        return RobomimicEnv(self.env_args, self.obs_min, self.obs_max, self.max_episode_steps, render=render)


def make_env_and_datasets(env_name: str, dataset_dir: str | None = None, dataset_path: str | None = None):
    """(env_factory, transitions, metadata) for a robomimic name such as 'lift-mh-low_dim'.

    The file is `dataset_path` if given, else ``{dataset_dir}/{task}/{mh|ph}/low_dim_v15.hdf5`` (dataset_dir
    defaults to ~/.robomimic). Nothing is downloaded. The factory builds environments (in worker processes too);
    no environment is built here.

    Raises:
        ValueError: invalid name, malformed file, or a file of another task.
        FileNotFoundError: no file (the message says where it looked and how to download it).
    """
    parsed = parse_env_name(env_name)
    path = os.path.expanduser(os.fspath(dataset_path)) if dataset_path is not None else _file_in(dataset_dir, parsed)
    if not os.path.isfile(path):
        raise _missing_file_error(path, env_name)
    transitions, metadata = load_dataset(path)
    expected = ROBOSUITE_ENVS[parsed.task]
    if metadata.env_args['env_name'] != expected:
        raise ValueError(f'The robomimic dataset {path} is of the robosuite environment '
                         f'{metadata.env_args["env_name"]!r}, but {env_name!r} needs {expected!r}.')
    factory = EnvFactory(metadata.env_args, metadata.obs_min, metadata.obs_max, MAX_EPISODE_STEPS[parsed.task])
    return factory, transitions, metadata
