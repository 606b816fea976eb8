"""Generate an OGBench-format manipulation dataset locally with OGBench's scripted oracles.

Example:
    python experiments/generate_dataset.py --env_name=cube-single-play-v0 --num_episodes=1000 --dataset_dir=DIR

This writes DIR/cube-single-play-v0.npz (num_episodes episodes) and DIR/cube-single-play-v0-val.npz
(num_episodes // 10 episodes, at least 1, unless --num_val_episodes is given), in the format that
``ogbench.load_dataset`` / ``envs.ogbench_data.make_env_and_datasets`` read.

The collection procedure follows OGBench's own data-collection script (data_gen_scripts/generate_manipspace.py in
the ogbench repository) and the flags of its data_gen_scripts/commands.sh:

* The base (goal-conditioned) environment is created with ``terminate_at_goal=False, mode='data_collection'`` and
  ``max_episode_steps`` (1001 by default, i.e. 1000 transitions per episode after the next-observation shift).
  We additionally pass ``visualize_info=False``: it only changes geom colours used for rendering, not the data.
* 'play' datasets use the non-Markovian plan oracles (``ogbench/manipspace/oracles/plan``) with smoothed action noise
  (``noise=0.1, noise_smoothing=0.5``); 'noisy' datasets use the closed-loop Markov oracles
  (``ogbench/manipspace/oracles/markov``, ``min_norm=0.4``) with per-episode Gaussian noise level
  ``xi ~ U(0, noise)`` (std ``[xi, xi, xi, 3 xi, 10 xi]``) and random actions with probability ``p_random_action``
  (0.1 for cube/scene, 0.2 for puzzle; 0 for play).
* Cube, scene and puzzle use the cube / cube+button+drawer+window / button (gripper always closed) oracles; the scene
  cube Markov oracle uses ``max_step=100``. Whenever the current oracle is done, a new target is sampled with
  ``env.unwrapped.set_new_target(p_stack=...)`` where the per-episode stacking probability is 0 (single),
  U(0, .25) (double), U(.05, .35) (triple), U(.1, .5) (quadruple), U(0, .35) (octuple), .5 otherwise.
* Scene episodes in which the cube leaves the visible area are discarded and re-collected (OGBench's health check).
* Saved keys: observations, actions, terminals (True at the last step of each episode), qpos, qvel (the state
  *before* each action, i.e. that of ``observations``) and button_states (scene/puzzle); float32 except terminals
  (bool) and button_states (int64). Episode order: train episodes first, then validation episodes.

Differences from the OGBench script (all deliberate): the seed is actually used (global ``np.random`` -- which the
oracles use -- and the environment are seeded, so a fixed seed gives identical files); random actions are drawn from
the seeded ``np.random`` (uniform in [-1, 1]^5, the same distribution as ``env.action_space.sample()``, whose Box is
re-created, hence unseeded, on every access in ManipSpace); files are written atomically; the default episode count is
the official one for the dataset.

``task_success_report`` (printed after generation unless --noreport) gives the per-task completion rates of a
dataset under OGBench's single-task relabelling; it works on any OGBench dataset, generated or downloaded.

Names: the environment *family* is the name without the dataset type, e.g. 'cube-double' in 'cube-double-play-v0'.
"""

import contextlib
import os
import re
import sys
import tempfile
import time

import numpy as np

if __package__ in (None, ''):  # Allow `python experiments/generate_dataset.py` from the repository root.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from envs.ogbench_data import (  # noqa: E402
    DATASET_TYPES,
    DEFAULT_DATASET_DIR,
    INFO_KEYS,
    MANIPULATION_DATASET_TYPES,
    NUM_TASKS,
    convert_load_errors,
    dataset_files,
    missing_files_error,
    validate_raw_file,
)

GENERATABLE_FAMILIES = (
    'cube-single',
    'cube-double',
    'cube-triple',
    'cube-quadruple',
    'cube-octuple',
    'scene',
    'puzzle-3x3',
    'puzzle-4x4',
    'puzzle-4x5',
    'puzzle-4x6',
)
# Number of training episodes of the official OGBench datasets (data_gen_scripts/commands.sh).
OFFICIAL_NUM_EPISODES = {
    'cube-single': 1000,
    'cube-double': 1000,
    'cube-triple': 3000,
    'cube-quadruple': 5000,
    'scene': 1000,
    'puzzle-3x3': 1000,
    'puzzle-4x4': 1000,
    'puzzle-4x5': 3000,
    'puzzle-4x6': 5000,
}
DEFAULT_MAX_EPISODE_STEPS = 1001

__all__ = [
    'generate',
    'parse_dataset_name',
    'check_generatable',
    'task_success_report',
    'format_report',
    'GENERATABLE_FAMILIES',
    'OFFICIAL_NUM_EPISODES',
]


def parse_dataset_name(env_name, dataset_type=None):
    """Return (family, dataset_type, version, dataset_name) for an OGBench dataset name, e.g. 'cube-single-play-v0'.

    Also accepts a single-task name ('cube-single-play-singletask-task1-v0') or a base env id plus dataset_type
    ('cube-single-v0', dataset_type='play'). Any OGBench dataset type is accepted (locomotion datasets too); whether
    the dataset can be generated here is checked by ``check_generatable``.
    """
    tokens = env_name.split('-')
    if 'singletask' in tokens:
        pos = tokens.index('singletask')
        tokens = tokens[:pos] + tokens[-1:]
    if len(tokens) < 2 or not re.fullmatch(r'v\d+', tokens[-1]):
        raise ValueError(f'Cannot parse {env_name!r}; expected e.g. cube-single-play-v0.')
    version = tokens[-1]
    if tokens[-2] in DATASET_TYPES:
        name_type = tokens[-2]
        family = '-'.join(tokens[:-2])
        if dataset_type is not None and dataset_type != name_type:
            raise ValueError(f'--dataset_type={dataset_type} contradicts the name {env_name!r}.')
        dataset_type = name_type
    else:
        family = '-'.join(tokens[:-1])
        if dataset_type is None:
            raise ValueError(
                f'Cannot infer the dataset type from {env_name!r}; use a dataset name such as '
                f'{family}-play-{version} or {family}-noisy-{version}.'
            )
    if not family:
        raise ValueError(f'Cannot parse {env_name!r}: no environment family; expected e.g. cube-single-play-v0.')
    if dataset_type not in DATASET_TYPES:
        raise ValueError(f'Dataset type must be one of {"|".join(DATASET_TYPES)}, got {dataset_type!r}.')
    return family, dataset_type, version, f'{family}-{dataset_type}-{version}'


def check_generatable(family, dataset_type):
    """Raise ValueError unless the scripted oracles can generate this dataset (manipulation, play or noisy)."""
    if dataset_type not in MANIPULATION_DATASET_TYPES:
        raise ValueError(
            f'Dataset type must be {" or ".join(MANIPULATION_DATASET_TYPES)} to generate data, got {dataset_type!r}.'
        )
    if family not in GENERATABLE_FAMILIES:
        raise ValueError(
            f'Cannot generate data for environment family {family!r}; supported: {", ".join(GENERATABLE_FAMILIES)}. '
            'Locomotion datasets (antmaze/humanoidmaze/...) need OGBench\'s expert policies and can only be downloaded.'
        )


def _make_oracles(env, family, oracle_type, noise, noise_smoothing, min_norm):
    """Oracle per target task ('cube', 'button', 'drawer', 'window'), as in OGBench's collection script."""
    from ogbench.manipspace.oracles.markov.button_markov import ButtonMarkovOracle  # noqa: PLC0415
    from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle  # noqa: PLC0415
    from ogbench.manipspace.oracles.markov.drawer_markov import DrawerMarkovOracle  # noqa: PLC0415
    from ogbench.manipspace.oracles.markov.window_markov import WindowMarkovOracle  # noqa: PLC0415
    from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle  # noqa: PLC0415
    from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle  # noqa: PLC0415
    from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle  # noqa: PLC0415
    from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle  # noqa: PLC0415

    markov = oracle_type == 'markov'
    plan_kwargs = dict(env=env, noise=noise, noise_smoothing=noise_smoothing)
    markov_kwargs = dict(env=env, min_norm=min_norm)
    if family.startswith('cube'):
        return {'cube': CubeMarkovOracle(**markov_kwargs) if markov else CubePlanOracle(**plan_kwargs)}
    if family == 'scene':
        if markov:
            return {
                'cube': CubeMarkovOracle(max_step=100, **markov_kwargs),
                'button': ButtonMarkovOracle(**markov_kwargs),
                'drawer': DrawerMarkovOracle(**markov_kwargs),
                'window': WindowMarkovOracle(**markov_kwargs),
            }
        return {
            'cube': CubePlanOracle(**plan_kwargs),
            'button': ButtonPlanOracle(**plan_kwargs),
            'drawer': DrawerPlanOracle(**plan_kwargs),
            'window': WindowPlanOracle(**plan_kwargs),
        }
    if family.startswith('puzzle'):
        if markov:
            return {'button': ButtonMarkovOracle(gripper_always_closed=True, **markov_kwargs)}
        return {'button': ButtonPlanOracle(gripper_always_closed=True, **plan_kwargs)}
    raise ValueError(f'No oracle for environment family {family!r}.')


def _sample_p_stack(family):
    """Per-episode probability of stacking the target cube on another one."""
    if family == 'cube-single':
        return 0.0
    if family == 'cube-double':
        return np.random.uniform(0.0, 0.25)
    if family == 'cube-triple':
        return np.random.uniform(0.05, 0.35)
    if family == 'cube-quadruple':
        return np.random.uniform(0.1, 0.5)
    if family == 'cube-octuple':
        return np.random.uniform(0.0, 0.35)
    return 0.5


def _scene_episode_is_healthy(qpos):
    """OGBench's scene health check: the cube stays visible unless it is inside the drawer."""
    block_xyz = qpos[:, 14:17]
    if (block_xyz[:, 1] >= 0.29).any():  # Too far right.
        return False
    too_far_left = block_xyz[:, 1] <= -0.3
    not_in_drawer = (block_xyz[:, 2] < 0.06) | (block_xyz[:, 2] > 0.08)
    return not (too_far_left & not_in_drawer).any()


def _collect_episode(env, agents, family, oracle_type, noise, p_random_action, has_button_states):
    """Roll out one episode; returns a dict of per-step lists."""
    ob, info = env.reset()
    p_stack = _sample_p_stack(family)
    xi = np.random.uniform(0, noise) if oracle_type == 'markov' else 0.0
    agent = agents[info['privileged/target_task']]
    agent.reset(ob, info)

    ep = {k: [] for k in ('observations', 'actions', 'terminals', 'qpos', 'qvel')}
    if has_button_states:
        ep['button_states'] = []
    done = False
    while not done:
        if np.random.rand() < p_random_action:
            action = np.random.uniform(-1.0, 1.0, size=5)
        else:
            action = np.array(agent.select_action(ob, info), dtype=np.float64)
            if oracle_type == 'markov':
                action = action + np.random.normal(0, [xi, xi, xi, xi * 3, xi * 10], action.shape)
        action = np.clip(action, -1, 1)
        next_ob, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated

        if agent.done:
            # The current sub-task is finished: sample a new target and switch to the matching oracle.
            agent_ob, agent_info = env.unwrapped.set_new_target(p_stack=p_stack)
            agent = agents[agent_info['privileged/target_task']]
            agent.reset(agent_ob, agent_info)

        ep['observations'].append(ob)
        ep['actions'].append(action)
        ep['terminals'].append(done)
        ep['qpos'].append(info['prev_qpos'])
        ep['qvel'].append(info['prev_qvel'])
        if has_button_states:
            ep['button_states'].append(info['prev_button_states'])
        ob = next_ob
    return ep


def _save_dtype(key, first):
    if key == 'observations' and np.asarray(first).dtype == np.uint8:
        return np.uint8
    if key == 'terminals':
        return bool
    if key == 'button_states':
        return np.int64
    return np.float32


def _atomic_savez(path, arrays):
    """np.savez_compressed to a hidden temp file in the same directory, then rename: never a partial `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{os.path.basename(path)}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def _seeded_global_numpy(seed):
    """Seed the global np.random (used by OGBench's oracles) and restore its previous state afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def generate(
    env_name,
    num_episodes=None,
    dataset_dir=DEFAULT_DATASET_DIR,
    seed=0,
    *,
    num_val_episodes=None,
    max_episode_steps=DEFAULT_MAX_EPISODE_STEPS,
    noise=0.1,
    noise_smoothing=0.5,
    min_norm=0.4,
    p_random_action=None,
    dataset_type=None,
    progress=True,
    report=False,
    verbose=True,
):
    """Generate an OGBench-format dataset and write `{dataset_dir}/{dataset_name}.npz` and `-val.npz`.

    Args:
        env_name: Dataset name such as 'cube-single-play-v0' (type play or noisy is inferred from the name).
        num_episodes: Number of training episodes (default: the official count, e.g. 1000 for cube-single).
        dataset_dir: Output directory.
        seed: Random seed; the same seed gives identical arrays.
        num_val_episodes: Validation episodes (default max(1, num_episodes // 10)); 0 writes no val file.
        max_episode_steps: Steps per episode (1001 as in OGBench = 1000 transitions per episode).
        noise, noise_smoothing, min_norm: Oracle parameters (OGBench defaults).
        p_random_action: Probability of a uniformly random action (default 0 for play, 0.1 noisy cube/scene,
            0.2 noisy puzzle, as in OGBench's commands.sh).
        dataset_type: Optional explicit 'play'/'noisy' (must agree with the name).
        progress: Show a tqdm progress bar.
        report: Also compute `task_success_report` on the written files.
        verbose: Print a summary.

    Returns:
        dict with train_path, val_path (None if no val file), num_transitions (steps written, train + val),
        num_train_steps, num_val_steps, seconds, transitions_per_second, and report (if requested).
    """
    family, dataset_type, version, dataset_name = parse_dataset_name(env_name, dataset_type)
    check_generatable(family, dataset_type)

    import gymnasium  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    import ogbench.manipspace  # noqa: F401,PLC0415  (registers the environments)

    if num_episodes is None:
        num_episodes = OFFICIAL_NUM_EPISODES.get(family, 1000)
    num_episodes = int(num_episodes)
    if num_episodes < 1:
        raise ValueError(f'num_episodes must be >= 1, got {num_episodes}.')
    if num_val_episodes is None:
        num_val_episodes = max(1, num_episodes // 10)
    num_val_episodes = int(num_val_episodes)
    if num_val_episodes < 0:
        raise ValueError(f'num_val_episodes must be >= 0, got {num_val_episodes}.')
    if max_episode_steps < 2:
        raise ValueError(f'max_episode_steps must be >= 2, got {max_episode_steps}.')
    oracle_type = 'plan' if dataset_type == 'play' else 'markov'
    if p_random_action is None:
        p_random_action = 0.0 if dataset_type == 'play' else (0.2 if family.startswith('puzzle') else 0.1)

    dataset_dir = os.path.expanduser(os.fspath(dataset_dir))
    train_path, val_path = dataset_files(dataset_dir, dataset_name)

    env = gymnasium.make(
        f'{family}-{version}',
        terminate_at_goal=False,
        mode='data_collection',
        max_episode_steps=int(max_episode_steps),
        visualize_info=False,
    )
    episodes = []
    num_unhealthy = 0
    total_episodes = num_episodes + num_val_episodes
    try:
        with _seeded_global_numpy(seed):
            # The first reset compiles the MuJoCo model (slow) and seeds the env's np_random; keep it out of the timing.
            env.reset(seed=int(seed))
            agents = _make_oracles(env, family, oracle_type, noise, noise_smoothing, min_norm)
            has_button_states = hasattr(env.unwrapped, '_cur_button_states')
            steps = 0
            start = time.perf_counter()
            with tqdm(total=total_episodes, desc=dataset_name, unit='ep', disable=not progress) as bar:
                for _ in range(total_episodes):
                    while True:
                        ep = _collect_episode(
                            env, agents, family, oracle_type, noise, p_random_action, has_button_states
                        )
                        if family != 'scene' or _scene_episode_is_healthy(np.asarray(ep['qpos'])):
                            break
                        num_unhealthy += 1  # Discard and re-collect, as OGBench does.
                    episodes.append({k: np.asarray(v, dtype=_save_dtype(k, v[0])) for k, v in ep.items()})
                    steps += len(ep['terminals'])
                    bar.update(1)
                    bar.set_postfix(steps=steps, steps_per_s=f'{steps / (time.perf_counter() - start):.0f}')
    finally:
        env.close()
    seconds = time.perf_counter() - start

    splits = [(train_path, episodes[:num_episodes])]
    if num_val_episodes > 0:
        splits.append((val_path, episodes[num_episodes:]))
    split_steps = []
    for path, eps in splits:
        arrays = {k: np.concatenate([e[k] for e in eps]) for k in eps[0]}
        split_steps.append(len(arrays['terminals']))
        _atomic_savez(path, arrays)
    num_steps = sum(split_steps)
    result = dict(
        train_path=train_path,
        val_path=val_path if num_val_episodes > 0 else None,
        num_train_episodes=num_episodes,
        num_val_episodes=num_val_episodes,
        num_train_steps=split_steps[0],
        num_val_steps=split_steps[1] if num_val_episodes > 0 else 0,
        num_transitions=num_steps,
        num_unhealthy_episodes=num_unhealthy,
        seconds=seconds,
        transitions_per_second=num_steps / max(seconds, 1e-9),
    )
    if verbose:
        print(
            f'Generated {dataset_name}: {num_episodes} train + {num_val_episodes} val episodes, {num_steps} steps '
            f'in {seconds:.1f}s ({result["transitions_per_second"]:.0f} transitions/s).'
        )
        if num_unhealthy:
            print(f'Re-collected {num_unhealthy} unhealthy scene episode(s).')
        print(f'Wrote {train_path}' + (f' and {val_path}' if num_val_episodes > 0 else ' (no val file)'))
    if report:
        result['report'] = task_success_report(dataset_name, dataset_dir, include_val=True)
        if verbose:
            print(format_report(dataset_name, result['report']))
    return result


# ----------------------------------------------------------------------------------------------------------------------
# Task-completion statistics of a dataset.
# ----------------------------------------------------------------------------------------------------------------------


def task_success_report(env_name, dataset_dir=DEFAULT_DATASET_DIR, include_val=True):
    """Per-task completion statistics of a dataset under OGBench's single-task relabelling.

    For each task k in 1..5 of the environment family, the dataset (train file, plus the val file if present and
    include_val) is relabelled with ``ogbench.relabel_utils.relabel_dataset`` for '{family}-singletask-task{k}-v0'
    and we report

    * ``episode_success_rate``: fraction of episodes in which all subtasks of task k are achieved (mask == 0) at some
      step;
    * ``transition_success_rate``: fraction of transitions whose observation achieves task k.

    Args:
        env_name: Dataset name ('cube-double-play-v0') or single-task name ('cube-double-play-singletask-task2-v0').
        dataset_dir: Directory holding the dataset files.

    Returns:
        {'task1': {'episode_success_rate', 'transition_success_rate', 'num_episodes', 'num_transitions',
        'num_successful_episodes'}, ..., 'task5': {...}}.
    """
    import gymnasium  # noqa: PLC0415
    import ogbench  # noqa: PLC0415  (also registers the environments with gymnasium)
    from ogbench.relabel_utils import relabel_dataset  # noqa: PLC0415

    family, _, version, dataset_name = parse_dataset_name(env_name)
    dataset_dir = os.path.expanduser(os.fspath(dataset_dir))
    train_path, val_path = dataset_files(dataset_dir, dataset_name)
    paths = [train_path] + ([val_path] if include_val and os.path.isfile(val_path) else [])
    datasets = []
    for path in paths:
        if not os.path.isfile(path):
            raise missing_files_error(env_name, dataset_name, dataset_dir, [path], 'file missing')
        validate_raw_file(path, family, dataset_name)
        with convert_load_errors([path], dataset_name):
            datasets.append(ogbench.load_dataset(path, compact_dataset=False, add_info=True))
    info = {k: np.concatenate([d[k] for d in datasets]) for k in datasets[0] if k in INFO_KEYS}
    terminals = np.concatenate([d['terminals'] for d in datasets])
    episode_ids = np.concatenate([[0], np.cumsum(terminals[:-1])]).astype(np.int64)
    num_episodes = int(episode_ids[-1]) + 1

    report = {}
    for k in range(1, NUM_TASKS + 1):
        env_id = f'{family}-singletask-task{k}-{version}'
        env = gymnasium.make(env_id)
        try:
            ds = dict(info)
            relabel_dataset(env_id, env, ds)
        finally:
            env.close()
        success = ds['masks'] == 0.0
        ep_success = np.bincount(episode_ids, weights=success.astype(np.float64), minlength=num_episodes) > 0
        report[f'task{k}'] = dict(
            episode_success_rate=float(ep_success.mean()),
            transition_success_rate=float(success.mean()),
            num_episodes=num_episodes,
            num_successful_episodes=int(ep_success.sum()),
            num_transitions=int(len(success)),
        )
    return report


def format_report(dataset_name, report):
    lines = [f'Task completion in {dataset_name} (OGBench single-task relabelling, train + val):']
    for task, r in report.items():
        lines.append(
            f'  {task}: {100 * r["episode_success_rate"]:5.1f}% of episodes reach success '
            f'({r["num_successful_episodes"]}/{r["num_episodes"]}), '
            f'{100 * r["transition_success_rate"]:6.2f}% of transitions are successful'
        )
    return '\n'.join(lines)


def _define_flags():
    from absl import flags  # noqa: PLC0415

    flags.DEFINE_string('env_name', 'cube-single-play-v0', 'Dataset name, e.g. cube-double-play-v0.')
    flags.DEFINE_integer('num_episodes', None, 'Training episodes (default: the official OGBench count).')
    flags.DEFINE_integer('num_val_episodes', None, 'Validation episodes (default: max(1, num_episodes // 10)).')
    flags.DEFINE_string('dataset_dir', DEFAULT_DATASET_DIR, 'Output directory.')
    flags.DEFINE_integer('seed', 0, 'Random seed.')
    flags.DEFINE_integer('max_episode_steps', DEFAULT_MAX_EPISODE_STEPS, 'Steps per episode.')
    flags.DEFINE_float('noise', 0.1, 'Action noise level (plan oracle noise scale / max Markov noise std).')
    flags.DEFINE_float('noise_smoothing', 0.5, 'Action noise smoothing for the plan oracles.')
    flags.DEFINE_float('min_norm', 0.4, 'Minimum action norm for the Markov oracles.')
    flags.DEFINE_float('p_random_action', None, 'Random-action probability (default: 0 play, 0.1/0.2 noisy).')
    flags.DEFINE_string('dataset_type', None, 'play or noisy (default: inferred from env_name).')
    flags.DEFINE_boolean('report', True, 'Print the per-task completion rates of the generated data.')
    flags.DEFINE_boolean('progress', True, 'Show a progress bar.')


def main(_):
    from absl import flags  # noqa: PLC0415

    f = flags.FLAGS
    generate(
        f.env_name,
        num_episodes=f.num_episodes,
        dataset_dir=f.dataset_dir,
        seed=f.seed,
        num_val_episodes=f.num_val_episodes,
        max_episode_steps=f.max_episode_steps,
        noise=f.noise,
        noise_smoothing=f.noise_smoothing,
        min_norm=f.min_norm,
        p_random_action=f.p_random_action,
        dataset_type=f.dataset_type,
        progress=f.progress,
        report=f.report,
    )


if __name__ == '__main__':
    from absl import app

    _define_flags()
    app.run(main)
