"""OGBench data layer: environments, datasets, validation and dataset shards.

This module wraps ``ogbench.make_env_and_datasets`` so that

* the ``dataset_dir`` convention (``{dataset_dir}/{dataset_name}.npz`` and ``{dataset_name}-val.npz``) and the
  single-task reward/mask relabelling are exactly OGBench's own;
* missing datasets fail early with an actionable ``FileNotFoundError`` (which files, where, and how to obtain them)
  instead of a stack trace from ``urllib`` -- and a failed download never leaves a partial ``.tmp`` file behind;
* malformed datasets fail with a ``ValueError`` naming the file and the problem;
* the returned datasets are post-processed like the FQL reference implementation (actions clipped to
  ``[-1 + eps, 1 - eps]``, optional sparse rewards ``r -> -1[r != 0]``) and are plain dicts of float32 numpy arrays
  with the keys ``envs.datasets.TRANSITION_KEYS`` (``observations, actions, rewards, masks, terminals,
  next_observations``).

It also provides helpers for the sharded large datasets (directories of 1M-transition ``.npz`` shards):
``list_dataset_shards`` and ``load_dataset_shard``; and ``task_success_report``, a dataset's per-task completion rates.

Names: an OGBench single-task name such as ``cube-double-play-singletask-task2-v0`` consists of the environment
*family* (``cube-double``), the dataset type (``play``), the task and the version; ``ParsedEnvName`` holds these parts.
``parse_dataset_name`` reads the dataset (``cube-double-play-v0``) of a dataset, single-task or base environment name.

``ogbench`` (and through it MuJoCo / dm_control) is imported lazily; importing this module loads only numpy and
``envs.datasets``.
"""

import contextlib
import dataclasses
import glob
import os
import re
import socket
import textwrap
import warnings
import zipfile
from typing import NamedTuple

import numpy as np

from core.errors import close_match
from envs.datasets import TRANSITION_KEYS, sparse_rewards

DEFAULT_DATASET_DIR = '~/.ogbench/data'  # OGBench's own default (ogbench.utils.DEFAULT_DATASET_DIR).

INFO_KEYS = ('qpos', 'qvel', 'button_states')
DATASET_TYPES = ('play', 'noisy', 'navigate', 'stitch', 'explore')
MANIPULATION_DATASET_TYPES = ('play', 'noisy')
NAME_PATTERN = '{family}-{play|noisy|navigate|stitch|explore}-singletask[-task{1..5}]-v0'
GENERATE_SCRIPT = 'experiments/generate_dataset.py'
NUM_TASKS = 5

# Tolerance for actions slightly outside [-1, 1] (e.g. float rounding) before a dataset is declared malformed.
ACTION_BOUND_TOL = 1e-3
# Timeout (seconds) for each network operation of ogbench's downloader (it uses urllib without a timeout).
DOWNLOAD_TIMEOUT = 60.0

_MANIPULATION_PREFIXES = ('cube-', 'scene', 'puzzle-')
_LOCOMOTION_PREFIXES = ('pointmaze-', 'antmaze-', 'humanoidmaze-', 'antsoccer-')
_TASK_TOKEN_RE = re.compile(r'^task\d+$')


# ----------------------------------------------------------------------------------------------------------------------
# Names.
# ----------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ParsedEnvName:
    """Components of an OGBench single-task name such as ``cube-double-play-singletask-task2-v0``."""

    env_name: str  # The full name that was parsed.
    family: str  # e.g. 'cube-double' (the environment family, without the dataset type).
    dataset_type: str  # e.g. 'play'.
    task: int | None  # 1..5, or None for the default task ('...-singletask-v0').
    version: str  # e.g. 'v0'.

    @property
    def env_id(self) -> str:
        """Gymnasium id of the single-task environment, e.g. 'cube-double-singletask-task2-v0'."""
        task = '' if self.task is None else f'-task{self.task}'
        return f'{self.family}-singletask{task}-{self.version}'

    @property
    def dataset_name(self) -> str:
        """OGBench dataset name (file stem), e.g. 'cube-double-play-v0'."""
        return f'{self.family}-{self.dataset_type}-{self.version}'


def _ogbench():
    """Import ogbench lazily (this also registers its environments with gymnasium), quietly."""
    quiet_environment_warnings()
    import ogbench  # noqa: PLC0415

    return ogbench


def quiet_environment_warnings():
    """Silences two warnings every environment process would print and that tell the user nothing: GLFW's
    missing X display (offscreen rendering uses EGL or OSMesa, envs/video.py) and gymnasium's note that the
    environments' float64 bounds are cast to their float32 spaces. Any other warning still shows."""
    warnings.filterwarnings('ignore', message='.*DISPLAY environment variable is missing')
    warnings.filterwarnings('ignore', message=".*Box (low|high)'s precision lowered by casting to float32")


def is_manipulation(env_name: str) -> bool:
    """Whether the name refers to a manipulation domain (cube, scene, puzzle)."""
    name = env_name[len('visual-') :] if env_name.startswith('visual-') else env_name
    return name.startswith(_MANIPULATION_PREFIXES)


def is_locomotion(env_name: str) -> bool:
    """Whether the name refers to a locomotion domain (pointmaze, antmaze, humanoidmaze, antsoccer)."""
    name = env_name[len('visual-') :] if env_name.startswith('visual-') else env_name
    return name.startswith(_LOCOMOTION_PREFIXES)


def _allowed_dataset_types(family: str) -> tuple:
    if is_manipulation(family):
        return MANIPULATION_DATASET_TYPES
    if family.startswith('antmaze-'):
        return ('navigate', 'stitch', 'explore')
    return ('navigate', 'stitch')


def supported_families() -> list[str]:
    """State-based OGBench environment families that have single-task variants registered with gymnasium."""
    import gymnasium  # noqa: PLC0415

    _ogbench()
    families = set()
    for env_id in gymnasium.registry:
        m = re.fullmatch(r'(.+)-singletask-v\d+', env_id)
        if m and not m.group(1).startswith('visual-') and (is_manipulation(m.group(1)) or is_locomotion(m.group(1))):
            families.add(m.group(1))
    return sorted(families)


def valid_env_names() -> list[str]:
    """Every single-task name this data layer accepts, e.g. cube-double-play-singletask-task2-v0."""
    tasks = [''] + [f'-task{task}' for task in range(1, NUM_TASKS + 1)]
    return [f'{family}-{dataset_type}-singletask{task}-v0' for family in supported_families()
            for dataset_type in _allowed_dataset_types(family) for task in tasks]


def _name_error(env_name: str, problem: str) -> ValueError:
    families = supported_families()
    lines = [
        f'Invalid OGBench single-task environment name {env_name!r}: {problem}.'
        + close_match(env_name, valid_env_names()),
        f'Expected the pattern {NAME_PATTERN}, e.g. cube-double-play-singletask-task2-v0 '
        '(without "-taskN" the default task of the environment family is used).',
        'Supported environment families, by their dataset types:',
    ]
    by_types = {}
    for family in families:
        by_types.setdefault('|'.join(_allowed_dataset_types(family)), []).append(family)
    for types, members in by_types.items():
        lines += textwrap.wrap(f'{types}: {", ".join(members)}', 110, initial_indent='  ', subsequent_indent='    ',
                               break_on_hyphens=False)
    return ValueError('\n'.join(lines))


def parse_env_name(env_name: str) -> ParsedEnvName:
    """Parse and validate an OGBench single-task name. Raises ``ValueError`` with the supported names if invalid."""
    if not isinstance(env_name, str) or not env_name:
        raise _name_error(str(env_name), 'empty or not a string')
    if env_name.startswith('visual-'):
        raise _name_error(env_name, 'pixel-based (visual-*) environments are not supported by this data layer')
    tokens = env_name.split('-')
    if 'singletask' not in tokens:
        raise _name_error(env_name, 'it is not a single-task name (it must contain "-singletask")')
    pos = tokens.index('singletask')
    if pos < 2:
        raise _name_error(env_name, 'missing environment family or dataset type before "-singletask"')
    family = '-'.join(tokens[: pos - 1])
    dataset_type = tokens[pos - 1]
    rest = tokens[pos + 1 :]
    task = None
    if len(rest) == 2 and _TASK_TOKEN_RE.match(rest[0]):
        task = int(rest[0][len('task') :])
        rest = rest[1:]
    if len(rest) != 1 or not re.fullmatch(r'v\d+', rest[0]):
        raise _name_error(env_name, 'expected "-singletask-v0" or "-singletask-taskN-v0" at the end')
    version = rest[0]
    if task is not None and not 1 <= task <= NUM_TASKS:
        raise _name_error(env_name, f'task must be in 1..{NUM_TASKS}, got {task}')
    if dataset_type not in DATASET_TYPES:
        raise _name_error(
            env_name, f'unknown dataset type {dataset_type!r} (expected one of {"|".join(DATASET_TYPES)})'
        )
    if not (is_manipulation(family) or is_locomotion(family)):
        raise _name_error(env_name, f'unknown environment family {family!r}')
    if dataset_type not in _allowed_dataset_types(family):
        raise _name_error(
            env_name,
            f'dataset type {dataset_type!r} does not exist for environment family {family!r} '
            f'(expected one of {"|".join(_allowed_dataset_types(family))})',
        )
    parsed = ParsedEnvName(env_name=env_name, family=family, dataset_type=dataset_type, task=task, version=version)

    import gymnasium  # noqa: PLC0415

    _ogbench()
    if parsed.env_id not in gymnasium.registry:
        raise _name_error(env_name, f'ogbench does not register the environment {parsed.env_id!r}')
    return parsed


class DatasetName(NamedTuple):
    """The parts of an OGBench dataset name, e.g. ('cube-double', 'play', 'v0', 'cube-double-play-v0')."""

    family: str
    dataset_type: str
    version: str
    dataset_name: str


def parse_dataset_name(name: str, dataset_type: str | None = None) -> DatasetName:
    """The dataset a name refers to: a dataset name ('cube-single-play-v0'), a single-task name
    ('cube-single-play-singletask-task1-v0') or a base env id with `dataset_type` ('cube-single-v0', 'play').

    Any of DATASET_TYPES is accepted and the family is not checked (callers check what they can serve); raises
    ``ValueError`` for a name without a version or a dataset type, or one that contradicts `dataset_type`.
    """
    tokens = name.split('-')
    if 'singletask' in tokens:  # drop '-singletask[-taskN]'
        tokens = tokens[: tokens.index('singletask')] + tokens[-1:]
    if len(tokens) < 2 or not re.fullmatch(r'v\d+', tokens[-1]):
        raise ValueError(f'Cannot parse {name!r}; expected e.g. cube-single-play-v0.')
    version, named_type = tokens[-1], tokens[-2] if tokens[-2] in DATASET_TYPES else None
    family = '-'.join(tokens[:-2] if named_type else tokens[:-1])
    if named_type and dataset_type not in (None, named_type):
        raise ValueError(f'--dataset_type={dataset_type} contradicts the name {name!r}.')
    dataset_type = named_type or dataset_type
    if dataset_type is None:
        raise ValueError(f'Cannot infer the dataset type from {name!r}; use a dataset name such as '
                         f'{family}-play-{version} or {family}-noisy-{version}.')
    if not family:
        raise ValueError(f'Cannot parse {name!r}: no environment family; expected e.g. cube-single-play-v0.')
    if dataset_type not in DATASET_TYPES:
        raise ValueError(f'Dataset type must be one of {"|".join(DATASET_TYPES)}, got {dataset_type!r}.')
    return DatasetName(family, dataset_type, version, f'{family}-{dataset_type}-{version}')


# ----------------------------------------------------------------------------------------------------------------------
# Files: existence, download, messages.
# ----------------------------------------------------------------------------------------------------------------------


def dataset_files(dataset_dir: str, dataset_name: str) -> tuple:
    return (
        os.path.join(dataset_dir, f'{dataset_name}.npz'),
        os.path.join(dataset_dir, f'{dataset_name}-val.npz'),
    )


def _val_sibling(path: str) -> str | None:
    return path[: -len('.npz')] + '-val.npz' if path.endswith('.npz') else None


def _how_to_obtain(dataset_name: str, dataset_dir: str) -> str:
    try:
        url = _ogbench().utils.DATASET_URL
    except Exception:  # pragma: no cover - only if ogbench layout changes.
        url = 'https://rail.eecs.berkeley.edu/datasets/ogbench'
    lines = [
        f'Download: {url}/{dataset_name}.npz and {url}/{dataset_name}-val.npz '
        f'(or python -c "import ogbench; ogbench.download_datasets([\'{dataset_name}\'], \'{dataset_dir}\')").',
    ]
    if is_manipulation(dataset_name):
        lines.append(
            'Or generate them locally with the OGBench scripted oracles (manipulation domains only):\n'
            f'  python {GENERATE_SCRIPT} --env_name={dataset_name} --dataset_dir={dataset_dir}\n'
            '(this writes both files; add --num_episodes=N for a smaller dataset).'
        )
        lines.append(
            'Locomotion datasets (antmaze/humanoidmaze/pointmaze/antsoccer) cannot be generated here; '
            'they can only be downloaded.'
        )
    else:
        lines.append(
            'This is a locomotion dataset (antmaze/humanoidmaze/pointmaze/antsoccer): it needs OGBench\'s trained '
            f'expert policies and can only be downloaded, not generated with {GENERATE_SCRIPT} '
            '(it supports only the manipulation domains cube/scene/puzzle).'
        )
    return '\n'.join(lines)


def missing_files_error(env_name, dataset_name, dataset_dir, missing, reason) -> FileNotFoundError:
    lines = [f'OGBench dataset {dataset_name!r} (for {env_name!r}) not found: {reason}.', 'Missing file(s):']
    lines += [f'  {p}' for p in missing]
    lines.append(
        f'Put {dataset_name}.npz and {dataset_name}-val.npz into {dataset_dir} '
        '(or point dataset_dir / dataset_path at the directory / file that holds them).'
    )
    lines.append(_how_to_obtain(dataset_name, dataset_dir))
    return FileNotFoundError('\n'.join(lines))


def _safe_download(dataset_name: str, dataset_dir: str) -> None:
    """Run ogbench's downloader; on any failure remove the partial ``.tmp`` files it leaves behind, then re-raise."""
    og = _ogbench()
    tmp_files = [p + '.tmp' for p in dataset_files(dataset_dir, dataset_name)]
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    try:
        og.download_datasets([dataset_name], dataset_dir)
    except BaseException:
        for tmp in tmp_files:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        raise
    finally:
        socket.setdefaulttimeout(old_timeout)


def _ensure_files(env_name, dataset_name, dataset_dir, download) -> None:
    missing = [p for p in dataset_files(dataset_dir, dataset_name) if not os.path.isfile(p)]
    if not missing:
        return
    if not download:
        raise missing_files_error(env_name, dataset_name, dataset_dir, missing, 'download=False')
    try:
        _safe_download(dataset_name, dataset_dir)
    except Exception as e:  # No internet, HTTP 404, disk full, ...
        missing = [p for p in dataset_files(dataset_dir, dataset_name) if not os.path.isfile(p)]
        raise missing_files_error(
            env_name, dataset_name, dataset_dir, missing, f'download failed ({type(e).__name__}: {e})'
        ) from e


# ----------------------------------------------------------------------------------------------------------------------
# Validation.
# ----------------------------------------------------------------------------------------------------------------------


def _fix_hint(path: str, dataset_name: str | None = None) -> str:
    name = dataset_name or os.path.basename(path)[: -len('.npz')].removesuffix('-val')
    hint = f'Delete {path} and re-download it'
    if is_manipulation(name):
        hint += f' or regenerate it (python {GENERATE_SCRIPT} --env_name={name} --dataset_dir=DIR)'
    return hint + '.'


def _malformed(path: str, problem: str, dataset_name: str | None = None) -> ValueError:
    return ValueError(f'Malformed OGBench dataset file {path}: {problem}. {_fix_hint(path, dataset_name)}')


def _npz_headers(path: str) -> dict:
    """Shapes and dtypes of the arrays in an ``.npz`` file, reading only the array headers (no decompression)."""
    headers = {}
    with zipfile.ZipFile(path) as zf:
        for member in zf.namelist():
            if not member.endswith('.npy'):
                continue
            key = member[: -len('.npy')]
            with zf.open(member) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    shape, dtype = None, None
            if shape is None:
                with np.load(path) as npz:
                    arr = npz[key]
                    shape, dtype = arr.shape, arr.dtype
            headers[key] = (tuple(shape), np.dtype(dtype))
    return headers


def _required_raw_keys(family: str) -> tuple:
    keys = ('observations', 'actions', 'terminals')
    # Keys that OGBench's single-task reward relabelling (ogbench.relabel_utils.relabel_dataset) reads.
    if family.startswith('puzzle'):
        return keys + ('button_states',)
    if family.startswith('scene'):
        return keys + ('qpos', 'button_states')
    return keys + ('qpos',)


def validate_raw_file(path: str, family: str, dataset_name: str | None = None) -> None:
    """Cheap checks on a dataset file before handing it to ogbench (headers + the small 'terminals' array).

    ``family`` is the environment family (e.g. 'cube-double'); it decides which relabelling keys are required."""
    try:
        headers = _npz_headers(path)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise _malformed(path, f'cannot be read as an .npz archive ({type(e).__name__}: {e}); it may be truncated',
                         dataset_name) from e
    missing = [k for k in _required_raw_keys(family) if k not in headers]
    if missing:
        raise _malformed(
            path,
            f'missing key(s) {missing} (found {sorted(headers)}); OGBench datasets need observations, actions and '
            f'terminals, and single-task reward relabelling for {family!r} needs '
            f'{list(_required_raw_keys(family)[3:])}',
            dataset_name,
        )
    for k, (shape, dtype) in headers.items():
        if dtype.hasobject:
            raise _malformed(path, f'array {k!r} has object dtype', dataset_name)
    if len(headers['observations'][0]) != 2:
        raise _malformed(path, f'observations must be 2-D (N, obs_dim), got shape {headers["observations"][0]}',
                         dataset_name)
    if len(headers['actions'][0]) != 2:
        raise _malformed(path, f'actions must be 2-D (N, action_dim), got shape {headers["actions"][0]}', dataset_name)
    if len(headers['terminals'][0]) != 1:
        raise _malformed(path, f'terminals must be 1-D (N,), got shape {headers["terminals"][0]}', dataset_name)
    lengths = {k: shape[0] for k, (shape, _) in headers.items() if k in ('observations', 'actions', 'terminals')
               or k in INFO_KEYS}
    if len(set(lengths.values())) != 1:
        raise _malformed(path, f'arrays have different lengths {lengths}', dataset_name)
    n = lengths['observations']
    if n < 2:
        raise _malformed(path, f'it holds only {n} step(s)', dataset_name)
    try:
        with np.load(path) as npz:
            terminals = np.asarray(npz['terminals'])
    except Exception as e:  # noqa: BLE001 - corrupt member, CRC error, ...
        raise _malformed(path, f'cannot read "terminals" ({type(e).__name__}: {e})', dataset_name) from e
    values = np.unique(terminals)
    if not np.all(np.isin(values, (0, 1))):
        raise _malformed(path, f'terminals must be 0/1, found values {values[:10]}', dataset_name)
    if terminals[-1] != 1:
        raise _malformed(path, 'the last step is not marked terminal (every trajectory must end with terminals=1)',
                         dataset_name)
    if n - int(terminals.sum()) < 1:
        raise _malformed(path, 'no transitions (every step is terminal)', dataset_name)


def _validate_loaded(ds: dict, path: str, env=None, dataset_name: str | None = None) -> None:
    """Checks on a dataset dict after ogbench loaded (and relabelled) it."""
    missing = [k for k in TRANSITION_KEYS if k not in ds]
    if missing:
        raise _malformed(path, f'after loading/relabelling, key(s) {missing} are missing', dataset_name)
    n = len(ds['observations'])
    lengths = {k: len(ds[k]) for k in TRANSITION_KEYS}
    if len(set(lengths.values())) != 1:
        raise _malformed(path, f'arrays have different lengths after loading {lengths}', dataset_name)
    if n == 0:
        raise _malformed(path, 'no transitions', dataset_name)
    for k in TRANSITION_KEYS:
        arr = ds[k]
        if not np.issubdtype(arr.dtype, np.number) and arr.dtype != np.bool_:
            raise _malformed(path, f'{k!r} has non-numeric dtype {arr.dtype}', dataset_name)
        if np.issubdtype(arr.dtype, np.floating):
            bad = ~np.isfinite(arr)
            if bad.any():
                idx = int(np.argwhere(bad.reshape(len(arr), -1).any(-1))[0, 0])
                raise _malformed(
                    path, f'{k!r} contains {int(bad.sum())} non-finite value(s) (NaN/inf), first at index {idx}',
                    dataset_name,
                )
    actions = ds['actions']
    amin, amax = float(actions.min()), float(actions.max())
    if amin < -1 - ACTION_BOUND_TOL or amax > 1 + ACTION_BOUND_TOL:
        raise _malformed(path, f'actions must lie in [-1, 1], found range [{amin:.4g}, {amax:.4g}]', dataset_name)
    for k in ('masks', 'terminals'):
        if not np.all(np.isin(ds[k], (0, 1))):
            raise _malformed(path, f'{k!r} must be 0/1', dataset_name)
    if env is not None:
        ob_shape = getattr(env.observation_space, 'shape', None)
        if ob_shape is not None and tuple(ds['observations'].shape[1:]) != tuple(ob_shape):
            raise _malformed(
                path,
                f'observation shape {ds["observations"].shape[1:]} does not match the environment\'s {ob_shape} '
                '(was the file generated for a different environment family?)',
                dataset_name,
            )
        ac_shape = getattr(env.action_space, 'shape', None)
        if ac_shape is not None and tuple(actions.shape[1:]) != tuple(ac_shape):
            raise _malformed(
                path, f'action shape {actions.shape[1:]} does not match the environment\'s {ac_shape}', dataset_name
            )


@contextlib.contextmanager
def convert_load_errors(paths, dataset_name=None):
    """Turn low-level errors raised while ogbench reads the files into a ValueError naming the file(s)."""
    try:
        yield
    except (FileNotFoundError, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 - BadZipFile, zlib.error, KeyError, IndexError, ...
        where = ' / '.join(paths)
        raise ValueError(
            f'Malformed OGBench dataset file(s) {where}: ogbench failed to load them ({type(e).__name__}: {e}). '
            f'{_fix_hint(paths[0], dataset_name)}'
        ) from e


# ----------------------------------------------------------------------------------------------------------------------
# Loading and post-processing.
# ----------------------------------------------------------------------------------------------------------------------


def _postprocess(ds: dict, sparse: bool, action_clip_eps: float | None) -> dict:
    """FQL-style post-processing; returns a plain dict of float32 arrays with exactly TRANSITION_KEYS."""
    out = {k: np.asarray(ds[k], dtype=np.float32) for k in TRANSITION_KEYS}
    if action_clip_eps is not None:
        out['actions'] = np.clip(out['actions'], -1 + action_clip_eps, 1 - action_clip_eps).astype(np.float32)
    if sparse:
        out['rewards'] = sparse_rewards(out['rewards'])
    return out


def _load_split_like_ogbench(parsed: ParsedEnvName, path: str, env) -> dict:
    """Load one file exactly as ``ogbench.make_env_and_datasets`` does for a single-task name (load_dataset with
    add_info=True, relabel_dataset, drop info keys). Used when there is no ``-val.npz`` sibling, which ogbench's own
    function requires."""
    og = _ogbench()
    from ogbench.relabel_utils import relabel_dataset  # noqa: PLC0415

    ds = og.load_dataset(path, ob_dtype=np.float32, action_dtype=np.float32, compact_dataset=False, add_info=True)
    relabel_dataset(parsed.env_id, env, ds)
    for k in INFO_KEYS:
        ds.pop(k, None)
    return ds


def _load_from_path(parsed: ParsedEnvName, path: str, env) -> tuple:
    """(train, val-or-None) from a single file path, with ``env`` being the single-task env used for relabelling."""
    og = _ogbench()
    val_path = _val_sibling(path)
    has_val = val_path is not None and os.path.isfile(val_path)
    if has_val:
        validate_raw_file(val_path, parsed.family, parsed.dataset_name)
    # ogbench derives the validation path with str.replace('.npz', '-val.npz'); only use its function when that
    # points at the same sibling file.
    if has_val and path.replace('.npz', '-val.npz') == val_path:
        with convert_load_errors([path, val_path], parsed.dataset_name):
            train, val = og.make_env_and_datasets(
                parsed.env_name, dataset_path=path, compact_dataset=False, dataset_only=True, cur_env=env
            )
        return train, val
    with convert_load_errors([path], parsed.dataset_name):
        train = _load_split_like_ogbench(parsed, path, env)
    val = None
    if has_val:
        with convert_load_errors([val_path], parsed.dataset_name):
            val = _load_split_like_ogbench(parsed, val_path, env)
    return train, val


def make_env_and_datasets(
    env_name: str,
    dataset_dir: str | None = None,
    dataset_path: str | None = None,
    sparse: bool = False,
    action_clip_eps: float = 1e-5,
    download: bool = True,
):
    """Make an OGBench single-task environment, an evaluation copy of it, and the train/val datasets.

    Args:
        env_name: OGBench single-task name, e.g. 'cube-double-play-singletask-task2-v0' (or '...-singletask-v0' for
            the default task).
        dataset_dir: Directory holding '{dataset_name}.npz' and '{dataset_name}-val.npz' (dataset_name is env_name
            without 'singletask'/'taskN', e.g. 'cube-double-play-v0'). Defaults to DEFAULT_DATASET_DIR.
        dataset_path: A single .npz file; overrides dataset_dir. Its '-val.npz' sibling is optional (val_dataset is
            None when it is missing). No download is attempted.
        sparse: Replace rewards by -1[r != 0] (float32).
        action_clip_eps: Clip dataset actions to [-1 + eps, 1 - eps] (None: no clipping).
        download: Try ogbench's downloader when files are missing from dataset_dir.

    Returns:
        (env, eval_env, train_dataset, val_dataset). Datasets are dicts of float32 arrays with keys observations,
        actions, rewards, masks, terminals, next_observations; val_dataset may be None (dataset_path only).

    Raises:
        ValueError: invalid env_name or malformed dataset file.
        FileNotFoundError: dataset files missing (message says which, where, and how to obtain them).
    """
    parsed = parse_env_name(env_name)
    og = _ogbench()

    if dataset_path is not None:
        dataset_path = os.path.expanduser(os.fspath(dataset_path))
        if not os.path.isfile(dataset_path):
            raise FileNotFoundError(
                f'OGBench dataset file not found: {dataset_path} (given as dataset_path for {env_name!r}).\n'
                + _how_to_obtain(parsed.dataset_name, os.path.dirname(dataset_path) or '.')
            )
        validate_raw_file(dataset_path, parsed.family, parsed.dataset_name)
        env = og.make_env_and_datasets(env_name, env_only=True)
        train, val = _load_from_path(parsed, dataset_path, env)
        train_path, val_path = dataset_path, _val_sibling(dataset_path)
    else:
        dataset_dir = os.path.expanduser(os.fspath(dataset_dir if dataset_dir is not None else DEFAULT_DATASET_DIR))
        _ensure_files(env_name, parsed.dataset_name, dataset_dir, download)
        train_path, val_path = dataset_files(dataset_dir, parsed.dataset_name)
        validate_raw_file(train_path, parsed.family, parsed.dataset_name)
        validate_raw_file(val_path, parsed.family, parsed.dataset_name)
        with convert_load_errors([train_path, val_path], parsed.dataset_name):
            env, train, val = og.make_env_and_datasets(env_name, dataset_dir=dataset_dir, compact_dataset=False)

    eval_env = og.make_env_and_datasets(env_name, env_only=True)

    _validate_loaded(train, train_path, env, parsed.dataset_name)
    train = _postprocess(train, sparse, action_clip_eps)
    if val is not None:
        _validate_loaded(val, val_path, env, parsed.dataset_name)
        val = _postprocess(val, sparse, action_clip_eps)
    return env, eval_env, train, val


def make_env(env_name: str, render: bool = False):
    """A fresh single-task environment (for acting: evaluation and the online phase); with `render`, its
    `render()` returns RGB frames."""
    kwargs = {'render_mode': 'rgb_array'} if render else {}
    return _ogbench().make_env_and_datasets(env_name, env_only=True, **kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# Sharded datasets.
# ----------------------------------------------------------------------------------------------------------------------


def list_dataset_shards(dataset_dir: str) -> list[str]:
    """Sorted ``*.npz`` files in ``dataset_dir``, excluding ``*-val.npz`` (same rule as the FQL reference)."""
    dataset_dir = os.path.expanduser(os.fspath(dataset_dir))
    if not os.path.isdir(dataset_dir):
        raise FileNotFoundError(f'Sharded dataset directory does not exist: {dataset_dir}')
    paths = sorted(p for p in glob.glob(os.path.join(dataset_dir, '*.npz')) if not p.endswith('-val.npz'))
    if not paths:
        raise FileNotFoundError(
            f'No dataset shards (*.npz files other than *-val.npz) found in {dataset_dir}. A sharded dataset is a '
            'directory of OGBench-format .npz files (e.g. the 1M-transition shards of the 10M/100M datasets).'
        )
    return paths


def load_dataset_shard(
    env_name: str, shard_path: str, env, sparse: bool = False, action_clip_eps: float = 1e-5
) -> dict:
    """Load one shard as a train dataset, with the same relabelling, validation and post-processing as
    ``make_env_and_datasets``. ``env`` is the single-task env returned by ``make_env_and_datasets`` (ogbench resets it
    once to read the task goal for relabelling)."""
    parsed = parse_env_name(env_name)
    shard_path = os.path.expanduser(os.fspath(shard_path))
    if not os.path.isfile(shard_path):
        raise FileNotFoundError(f'Dataset shard not found: {shard_path}')
    validate_raw_file(shard_path, parsed.family, parsed.dataset_name)
    train, _ = _load_from_path(parsed, shard_path, env)
    _validate_loaded(train, shard_path, env, parsed.dataset_name)
    return _postprocess(train, sparse, action_clip_eps)


# ----------------------------------------------------------------------------------------------------------------------
# Task completion of a dataset.
# ----------------------------------------------------------------------------------------------------------------------


def _load_info(env_name: str, dataset_dir: str, include_val: bool) -> dict:
    """The INFO_KEYS arrays and terminals of a dataset's files (train, and val if present and include_val)."""
    family, _, _, dataset_name = parse_dataset_name(env_name)
    train_path, val_path = dataset_files(dataset_dir, dataset_name)
    if not os.path.isfile(train_path):
        raise missing_files_error(env_name, dataset_name, dataset_dir, [train_path], 'file missing')
    datasets = []
    for path in [train_path] + ([val_path] if include_val and os.path.isfile(val_path) else []):
        validate_raw_file(path, family, dataset_name)
        with convert_load_errors([path], dataset_name):
            datasets.append(_ogbench().load_dataset(path, compact_dataset=False, add_info=True))
    return {key: np.concatenate([dataset[key] for dataset in datasets])
            for key in datasets[0] if key in INFO_KEYS or key == 'terminals'}


def task_success_report(env_name: str, dataset_dir: str = DEFAULT_DATASET_DIR, include_val: bool = True) -> dict:
    """Per-task completion of a dataset (generated or downloaded) under OGBench's single-task relabelling.

    For each task k, the dataset (of a dataset or single-task name) is relabelled by
    ``ogbench.relabel_utils.relabel_dataset`` for '{family}-singletask-task{k}-v0': episode_success_rate is the
    fraction of episodes that achieve every subtask of task k (mask 0) at some step, transition_success_rate the
    fraction of transitions whose observation achieves it. Returns {'task1': {'episode_success_rate',
    'transition_success_rate', 'num_episodes', 'num_successful_episodes', 'num_transitions'}, ...}.
    """
    import gymnasium
    from ogbench.relabel_utils import relabel_dataset

    family, _, version, _ = parse_dataset_name(env_name)
    data = _load_info(env_name, os.path.expanduser(os.fspath(dataset_dir)), include_val)
    terminals = data.pop('terminals')
    episode_ids = np.concatenate([[0], np.cumsum(terminals[:-1])]).astype(np.int64)
    num_episodes = int(episode_ids[-1]) + 1
    report = {}
    for task in range(1, NUM_TASKS + 1):
        env_id = f'{family}-singletask-task{task}-{version}'
        env = gymnasium.make(env_id)
        try:
            relabelled = dict(data)
            relabel_dataset(env_id, env, relabelled)
        finally:
            env.close()
        success = relabelled['masks'] == 0.0
        episode_success = np.bincount(episode_ids, weights=success, minlength=num_episodes) > 0
        report[f'task{task}'] = dict(episode_success_rate=float(episode_success.mean()),
                                     transition_success_rate=float(success.mean()), num_episodes=num_episodes,
                                     num_successful_episodes=int(episode_success.sum()),
                                     num_transitions=len(success))
    return report
