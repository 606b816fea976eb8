"""Generate an OGBench-format manipulation dataset locally with OGBench's scripted oracles.

    python experiments/generate_dataset.py --env_name=cube-single-play-v0 --num_episodes=1000 --dataset_dir=DIR

writes DIR/cube-single-play-v0.npz and DIR/cube-single-play-v0-val.npz, which ``envs.ogbench_data`` reads, then
prints ``envs.ogbench_data.task_success_report`` of them (the per-task completion rates) unless --noreport.

The collection is that of OGBench's data_gen_scripts/generate_manipspace.py with the flags of its commands.sh: the
base environment with ``terminate_at_goal=False, mode='data_collection'`` (``visualize_info=False`` only colours
geoms); 'play' data from the plan oracles with smoothed action noise, 'noisy' data from the closed-loop Markov oracles
with a per-episode noise level ``xi ~ U(0, noise)`` (std ``[xi, xi, xi, 3 xi, 10 xi]``) and random actions with
probability ``p_random_action``; the cube / cube+button+drawer+window / button (gripper always closed) oracles for
cube, scene and puzzle; a new target from ``env.unwrapped.set_new_target`` whenever the oracle is done, with the
episode's stacking probability P_STACK; scene episodes in which the cube leaves the visible area collected again.
Saved keys: observations, actions, terminals (True at each episode's last step), qpos and qvel (the state *before*
each action) and button_states (scene, puzzle); train episodes first, then validation ones.

Deliberate differences from OGBench's script: the seed is used (the global ``np.random`` the oracles draw from and
the environment are seeded, so a seed gives identical files); random actions come from the seeded ``np.random``
(uniform in [-1, 1]^5, the law of ``env.action_space.sample()``, whose Box ManipSpace re-creates unseeded on every
access); files are written atomically; the default episode count is the official dataset's.
"""

import contextlib
import dataclasses
import os
import sys
import time

import numpy as np
from absl import app, flags
from absl import logging as absl_logging

if __package__ in (None, ''):  # `python experiments/generate_dataset.py` from the repository root.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from envs.ogbench_data import (DEFAULT_DATASET_DIR, MANIPULATION_DATASET_TYPES, dataset_files,  # noqa: E402
                               parse_dataset_name, quiet_environment_warnings, task_success_report)

GENERATABLE_FAMILIES = ('cube-single', 'cube-double', 'cube-triple', 'cube-quadruple', 'cube-octuple', 'scene',
                        'puzzle-3x3', 'puzzle-4x4', 'puzzle-4x5', 'puzzle-4x6')
# Training episodes of the official OGBench datasets (data_gen_scripts/commands.sh).
OFFICIAL_NUM_EPISODES = {'cube-single': 1000, 'cube-double': 1000, 'cube-triple': 3000, 'cube-quadruple': 5000,
                         'scene': 1000, 'puzzle-3x3': 1000, 'puzzle-4x4': 1000, 'puzzle-4x5': 3000,
                         'puzzle-4x6': 5000}
# Per-episode probability of stacking the target cube on another: a number, or the bounds of a uniform draw.
P_STACK = {'cube-single': 0.0, 'cube-double': (0.0, 0.25), 'cube-triple': (0.05, 0.35),
           'cube-quadruple': (0.1, 0.5), 'cube-octuple': (0.0, 0.35)}
OTHER_P_STACK = 0.5
DEFAULT_MAX_EPISODE_STEPS = 1001  # OGBench's: 1000 transitions per episode after the next-observation shift
SAVE_DTYPES = {'terminals': bool, 'button_states': np.int64}  # the other keys (state observations too) are float32


@dataclasses.dataclass(frozen=True)
class Collection:
    """How the episodes of one dataset are collected."""

    family: str
    markov: bool  # noisy data: closed-loop Markov oracles with per-episode noise; play data: plan oracles
    noise: float
    noise_smoothing: float
    min_norm: float
    p_random_action: float


def check_generatable(family, dataset_type):
    """Raises ValueError unless the scripted oracles can generate this dataset (manipulation, play or noisy)."""
    if dataset_type not in MANIPULATION_DATASET_TYPES:
        raise ValueError(
            f'Dataset type must be {" or ".join(MANIPULATION_DATASET_TYPES)} to generate data, got {dataset_type!r}.')
    if family not in GENERATABLE_FAMILIES:
        raise ValueError(
            f'Cannot generate data for environment family {family!r}; supported: {", ".join(GENERATABLE_FAMILIES)}. '
            "Locomotion datasets (antmaze/humanoidmaze/...) need OGBench's expert policies and can only be "
            'downloaded.')


def episode_counts(family, num_episodes, num_val_episodes, max_episode_steps):
    """(train, validation) episode counts, the defaults filled in; ValueError for impossible ones."""
    num_episodes = int(OFFICIAL_NUM_EPISODES.get(family, 1000) if num_episodes is None else num_episodes)
    num_val_episodes = int(max(1, num_episodes // 10) if num_val_episodes is None else num_val_episodes)
    for name, value, least in (('num_episodes', num_episodes, 1), ('num_val_episodes', num_val_episodes, 0),
                               ('max_episode_steps', max_episode_steps, 2)):
        if value < least:
            raise ValueError(f'{name} must be >= {least}, got {value}.')
    return num_episodes, num_val_episodes


def make_oracles(env, collection):
    """The oracle of each target task ('cube', 'button', 'drawer', 'window'), as in OGBench's script."""
    from ogbench.manipspace.oracles.markov import button_markov, cube_markov, drawer_markov, window_markov
    from ogbench.manipspace.oracles.plan import button_plan, cube_plan, drawer_plan, window_plan

    if collection.markov:
        kwargs = dict(env=env, min_norm=collection.min_norm)
        cube, button = cube_markov.CubeMarkovOracle, button_markov.ButtonMarkovOracle
        drawer, window = drawer_markov.DrawerMarkovOracle, window_markov.WindowMarkovOracle
    else:
        kwargs = dict(env=env, noise=collection.noise, noise_smoothing=collection.noise_smoothing)
        cube, button = cube_plan.CubePlanOracle, button_plan.ButtonPlanOracle
        drawer, window = drawer_plan.DrawerPlanOracle, window_plan.WindowPlanOracle
    family = collection.family
    if family.startswith('cube'):
        return {'cube': cube(**kwargs)}
    if family == 'scene':
        scene_cube = cube(max_step=100, **kwargs) if collection.markov else cube(**kwargs)
        return {'cube': scene_cube, 'button': button(**kwargs), 'drawer': drawer(**kwargs),
                'window': window(**kwargs)}
    return {'button': button(gripper_always_closed=True, **kwargs)}  # puzzle (check_generatable knows no other)


def scene_episode_is_healthy(qpos):
    """OGBench's scene check: the cube stays visible unless it is inside the drawer."""
    block_xyz = qpos[:, 14:17]
    too_far_right = block_xyz[:, 1] >= 0.29
    too_far_left = block_xyz[:, 1] <= -0.3
    not_in_drawer = (block_xyz[:, 2] < 0.06) | (block_xyz[:, 2] > 0.08)
    return not too_far_right.any() and not (too_far_left & not_in_drawer).any()


def select_action(agent, ob, info, collection, xi):
    """The oracle's action with the episode's noise, or a uniformly random one."""
    if np.random.rand() < collection.p_random_action:
        action = np.random.uniform(-1.0, 1.0, size=5)
    else:
        action = np.array(agent.select_action(ob, info), dtype=np.float64)
        if collection.markov:
            action = action + np.random.normal(0, [xi, xi, xi, xi * 3, xi * 10], action.shape)
    return np.clip(action, -1, 1)


def collect_episode(env, agents, collection, has_button_states):
    """One episode: a dict of per-step lists."""
    ob, info = env.reset()
    p_stack = P_STACK.get(collection.family, OTHER_P_STACK)
    p_stack = np.random.uniform(*p_stack) if isinstance(p_stack, tuple) else p_stack
    xi = np.random.uniform(0, collection.noise) if collection.markov else 0.0
    agent = agents[info['privileged/target_task']]
    agent.reset(ob, info)
    keys = ('observations', 'actions', 'terminals', 'qpos', 'qvel') + (('button_states',) if has_button_states else ())
    episode = {key: [] for key in keys}
    done = False
    while not done:
        action = select_action(agent, ob, info, collection, xi)
        next_ob, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        if agent.done:  # the sub-task is finished: a new target, and the oracle for it
            agent_ob, agent_info = env.unwrapped.set_new_target(p_stack=p_stack)
            agent = agents[agent_info['privileged/target_task']]
            agent.reset(agent_ob, agent_info)
        step = dict(observations=ob, actions=action, terminals=done, qpos=info['prev_qpos'], qvel=info['prev_qvel'],
                    button_states=info.get('prev_button_states'))
        for key in keys:
            episode[key].append(step[key])
        ob = next_ob
    return episode


@contextlib.contextmanager
def seeded_global_numpy(seed):
    """Seeds the global np.random (which OGBench's oracles use) and restores its state afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def collect_episodes(env, collection, num_episodes, seed, bar):
    """`num_episodes` healthy episodes as arrays, the number of unhealthy ones collected again, and the seconds."""
    episodes, num_unhealthy, steps = [], 0, 0
    with seeded_global_numpy(seed):
        env.reset(seed=int(seed))  # compiles the MuJoCo model (slow, untimed) and seeds the env's np_random
        agents = make_oracles(env, collection)
        has_button_states = hasattr(env.unwrapped, '_cur_button_states')
        start = time.perf_counter()
        while len(episodes) < num_episodes:
            episode = collect_episode(env, agents, collection, has_button_states)
            if collection.family == 'scene' and not scene_episode_is_healthy(np.asarray(episode['qpos'])):
                num_unhealthy += 1  # discarded and collected again, as OGBench does
                continue
            episodes.append({key: np.asarray(values, SAVE_DTYPES.get(key, np.float32))
                             for key, values in episode.items()})
            steps += len(episode['terminals'])
            bar.update(1)
            bar.set_postfix(steps=steps, steps_per_s=f'{steps / (time.perf_counter() - start):.0f}')
    return episodes, num_unhealthy, time.perf_counter() - start


def atomic_savez(path, arrays):
    """np.savez_compressed to a temporary file renamed into place: never a partial `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = os.path.join(os.path.dirname(os.path.abspath(path)), f'.{os.path.basename(path)}.tmp')
    try:
        with open(temporary, 'wb') as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)


def write_split(path, episodes):
    """One file of concatenated episodes; returns its number of steps."""
    arrays = {key: np.concatenate([episode[key] for episode in episodes]) for key in episodes[0]}
    atomic_savez(path, arrays)
    return len(arrays['terminals'])


def generate(env_name, num_episodes=None, dataset_dir=DEFAULT_DATASET_DIR, seed=0, *, num_val_episodes=None,
             max_episode_steps=DEFAULT_MAX_EPISODE_STEPS, noise=0.1, noise_smoothing=0.5, min_norm=0.4,
             p_random_action=None, dataset_type=None, progress=True, report=False, verbose=True):
    """Generates `{dataset_dir}/{dataset_name}.npz` and `-val.npz` (no val file with num_val_episodes=0).

    env_name is a dataset name such as 'cube-single-play-v0' (or see `parse_dataset_name`); the defaults (None:
    the flags' help) are OGBench's; the same seed gives identical arrays. report: also `task_success_report` of the
    written files. Returns a dict of the paths, episode and step counts, seconds and transitions per second.
    """
    family, dataset_type, version, dataset_name = parse_dataset_name(env_name, dataset_type)
    check_generatable(family, dataset_type)
    num_episodes, num_val_episodes = episode_counts(family, num_episodes, num_val_episodes, max_episode_steps)
    quiet_environment_warnings()
    import gymnasium
    import ogbench.manipspace  # noqa: F401 - registers the environments
    from tqdm import tqdm

    if p_random_action is None:
        p_random_action = 0.0 if dataset_type == 'play' else (0.2 if family.startswith('puzzle') else 0.1)
    collection = Collection(family, dataset_type != 'play', noise, noise_smoothing, min_norm, p_random_action)
    dataset_dir = os.path.expanduser(os.fspath(dataset_dir))
    train_path, val_path = dataset_files(dataset_dir, dataset_name)

    env = gymnasium.make(f'{family}-{version}', terminate_at_goal=False, mode='data_collection',
                         max_episode_steps=int(max_episode_steps), visualize_info=False)
    total = num_episodes + num_val_episodes
    try:
        # A bar on a terminal only: in a log file its carriage-return updates would be noise (the summary follows).
        with tqdm(total=total, desc=dataset_name, unit='ep', disable=not (progress and sys.stderr.isatty())) as bar:
            episodes, num_unhealthy, seconds = collect_episodes(env, collection, total, seed, bar)
    finally:
        env.close()
    num_train_steps = write_split(train_path, episodes[:num_episodes])
    num_val_steps = write_split(val_path, episodes[num_episodes:]) if num_val_episodes else 0
    result = dict(train_path=train_path, val_path=val_path if num_val_episodes else None,
                  num_train_episodes=num_episodes, num_val_episodes=num_val_episodes, num_train_steps=num_train_steps,
                  num_val_steps=num_val_steps, num_transitions=num_train_steps + num_val_steps,
                  num_unhealthy_episodes=num_unhealthy, seconds=seconds,
                  transitions_per_second=(num_train_steps + num_val_steps) / max(seconds, 1e-9))
    if verbose:
        print(generation_summary(dataset_name, result))
    if report:
        result['report'] = task_success_report(dataset_name, dataset_dir, include_val=True)
        if verbose:
            print(format_report(dataset_name, result['report']))
    return result


def generation_summary(dataset_name, result):
    lines = [f'Generated {dataset_name}: {result["num_train_episodes"]} train + {result["num_val_episodes"]} val '
             f'episodes, {result["num_transitions"]} steps in {result["seconds"]:.1f}s '
             f'({result["transitions_per_second"]:.0f} transitions/s).']
    if result['num_unhealthy_episodes']:
        lines.append(f'Re-collected {result["num_unhealthy_episodes"]} unhealthy scene episode(s).')
    val = f' and {result["val_path"]}' if result['val_path'] else ' (no val file)'
    return '\n'.join(lines + [f'Wrote {result["train_path"]}{val}'])


def format_report(dataset_name, report):
    lines = [f'Task completion in {dataset_name} (OGBench single-task relabelling, train + val):']
    for task, r in report.items():
        lines.append(f'  {task}: {100 * r["episode_success_rate"]:5.1f}% of episodes reach success '
                     f'({r["num_successful_episodes"]}/{r["num_episodes"]}), '
                     f'{100 * r["transition_success_rate"]:6.2f}% of transitions are successful')
    return '\n'.join(lines)


def _define_flags():
    flags.DEFINE_string('env_name', 'cube-single-play-v0', 'Dataset name, e.g. cube-double-play-v0.')
    flags.DEFINE_integer('num_episodes', None, 'Training episodes (default: the official OGBench count).')
    flags.DEFINE_integer('num_val_episodes', None, 'Validation episodes (default: max(1, num_episodes // 10)).')
    flags.DEFINE_string('dataset_dir', DEFAULT_DATASET_DIR, 'Output directory.')
    flags.DEFINE_integer('seed', 0, 'Random seed.')
    flags.DEFINE_integer('max_episode_steps', DEFAULT_MAX_EPISODE_STEPS, 'Steps per episode.')
    flags.DEFINE_float('noise', 0.1, 'Action noise level (plan oracle noise scale / max Markov noise std).')
    flags.DEFINE_float('noise_smoothing', 0.5, 'Action noise smoothing for the plan oracles.')
    flags.DEFINE_float('min_norm', 0.4, 'Minimum action norm for the Markov oracles.')
    flags.DEFINE_float('p_random_action', None, 'Random-action probability (default: 0 play; noisy: 0.1, puzzle 0.2).')
    flags.DEFINE_string('dataset_type', None, 'play or noisy (default: inferred from env_name).')
    flags.DEFINE_boolean('report', True, 'Print the per-task completion rates of the generated data.')
    flags.DEFINE_boolean('progress', True, 'Show a progress bar.')


def main(_):
    absl_logging.set_verbosity(absl_logging.WARNING)  # dm_control logs its OpenGL backend choice at INFO
    settings = ('num_episodes', 'dataset_dir', 'seed', 'num_val_episodes', 'max_episode_steps', 'noise',
                'noise_smoothing', 'min_norm', 'p_random_action', 'dataset_type', 'progress', 'report')
    generate(flags.FLAGS.env_name, **{name: flags.FLAGS[name].value for name in settings})


if __name__ == '__main__':
    _define_flags()
    app.run(main)
