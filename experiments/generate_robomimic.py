"""Generate a robomimic-format low-dim dataset locally with a scripted demonstrator on robosuite's own physics.

    python experiments/generate_robomimic.py --task=lift --num_demos=300 --dataset_dir=DIR

writes DIR/lift/mh/low_dim_v15.hdf5 (``envs.robomimic.dataset_path``), which ``envs.robomimic`` reads exactly as it
reads a published file, so ``main.py --env_name=lift-mh-low_dim --dataset_dir=DIR`` trains on it.

The environment is the one robomimic's v1.5 Lift files name in their ``env_args`` (`lift_env_args`: the Panda arm,
robosuite's OSC_POSE controller with delta inputs, 20 Hz), built by ``envs.robomimic.make_robosuite_env`` as
evaluation builds it. The demonstrator reads the simulator's state (the cube's body position, the gripper's site)
and goes through the phases approach (above the cube), descend, grasp (close the gripper), lift; when the cube is
not rising with the gripper after the lift has begun (a missed or slipped grasp) it goes back to the approach, the
way an operator tries again. Its position command is proportional to the error, capped at the quality's speed, with
temporally correlated Gaussian noise on the arm's six inputs and an aiming error of the grasp point drawn per
attempt. The three `QUALITIES` stand for the ``mh`` datasets' operators (better, okay, worse: faster and cleaner to
slower and noisier); ``ph`` uses the best alone.

As in robomimic's files, only successful demonstrations are kept (a failed attempt is discarded and counted), each
ends at its first success step, and rewards and dones are robomimic's done_mode 2 labels (1 at the success step).
The file holds ``data/demo_N/{obs,next_obs}/{robot0_eef_pos, robot0_eef_quat, robot0_gripper_qpos, object}``,
``actions``, ``rewards``, ``dones``, ``states`` (MuJoCo's flattened state before each action), the attributes
``num_samples`` per demo and ``total`` and ``env_args`` on ``data``, and the filter keys ``mask/{train,valid}``
(plus one per quality and per pair of qualities for mh, as robomimic's mh files have). The same seed gives the same
file. Differences from a published file: no ``model_file`` attribute per demo (robomimic's playback scripts need it;
training and evaluation do not), and only Lift (Can's carry and place is not scripted).
"""

import dataclasses
import itertools
import json
import os
import sys
import time

import numpy as np
from absl import app, flags

if __package__ in (None, ''):  # `python experiments/generate_robomimic.py` from the repository root.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from envs import robomimic  # noqa: E402

GENERATABLE_TASKS = ('lift',)
VALID_FRACTION = 0.1  # robomimic's split_train_val.py default
GRASP_STEPS = 8  # steps with the gripper closing before the lift, long enough for the fingers to close
APPROACH_HEIGHT = 0.08  # metres above the cube's centre where the descent starts
GRASP_DEPTH = 0.005  # metres below the cube's centre where the gripper's site closes
APPROACH_TOLERANCE, GRASP_TOLERANCE = 0.015, 0.01  # metres from a phase's target that end the phase
LIFT_CHECK_STEPS = 10  # lift steps after which a cube far below the gripper means the grasp missed
MISSED_GRASP_GAP = 0.04  # metres between the gripper's site and the cube's centre that mean it is not held
POSITION_GAIN = 2.0  # proportional gain of the position command, in units of the controller's maximum step
GRIPPER_OPEN, GRIPPER_CLOSED = -1.0, 1.0
ROTATION_NOISE_SCALE = 0.2  # the rotation inputs' noise relative to the position inputs'
GIVE_UP_FAILURES = 20  # failed attempts after which a demonstrator failing more often than not is stopped


@dataclasses.dataclass(frozen=True)
class Quality:
    """One operator's skill: the cap on the position command (of [0, 1]), the std of its noise (of the input range),
    the noise's correlation from one step to the next, and the std of the grasp point's aiming error in metres."""

    speed: float
    noise: float
    aim_error: float
    noise_correlation: float = 0.8


QUALITIES = {'better': Quality(speed=0.8, noise=0.05, aim_error=0.003),
             'okay': Quality(speed=0.5, noise=0.15, aim_error=0.008),
             'worse': Quality(speed=0.35, noise=0.25, aim_error=0.012)}
DATASET_QUALITIES = {'mh': ('better', 'okay', 'worse'), 'ph': ('better',)}


def lift_env_args() -> dict:
    """The env_args of robomimic's v1.5 Lift low-dim files: robosuite 1.5's composite controller around the
    OSC_POSE arm config, written with robosuite <= 1.4's argument names as those files have them."""
    arm = {'type': 'OSC_POSE', 'input_max': 1, 'input_min': -1,
           'output_max': [0.05, 0.05, 0.05, 0.5, 0.5, 0.5], 'output_min': [-0.05, -0.05, -0.05, -0.5, -0.5, -0.5],
           'kp': 150, 'damping': 1, 'impedance_mode': 'fixed', 'kp_limits': [0, 300], 'damping_limits': [0, 10],
           'position_limits': None, 'orientation_limits': None, 'uncouple_pos_ori': True, 'control_delta': True,
           'interpolation': None, 'ramp_ratio': 0.2, 'gripper': {'type': 'GRIP'}}
    env_kwargs = {'has_renderer': False, 'has_offscreen_renderer': False, 'ignore_done': True,
                  'use_object_obs': True, 'use_camera_obs': False, 'control_freq': 20,
                  'controller_configs': {'type': 'BASIC', 'body_parts': {'right': arm}}, 'robots': ['Panda'],
                  'camera_depths': False, 'reward_shaping': False}
    return {'env_name': robomimic.ROBOSUITE_ENVS['lift'], 'env_version': '1.5.1', 'type': 1,  # EnvType.ROBOSUITE
            'env_kwargs': env_kwargs}


class LiftDemonstrator:
    """The scripted operator of one demonstration (see the module docstring); `action` reads the simulator."""

    def __init__(self, env, quality: Quality, rng: np.random.Generator):
        self.env, self.quality, self.rng = env, quality, rng
        self.max_step = np.asarray(env.robots[0].part_controllers['right'].output_max[:3])
        self.noise = np.zeros(6)
        self._start_attempt()

    def _start_attempt(self):
        self.phase, self.phase_steps = 'approach', 0
        self.aim = np.append(self.rng.normal(0.0, self.quality.aim_error, 2), 0.0)

    def _positions(self):
        data = self.env.sim.data
        gripper = data.site_xpos[self.env.robots[0].eef_site_id['right']]
        return np.array(gripper), np.array(data.body_xpos[self.env.cube_body_id])

    def _target(self, gripper, cube):
        """The position target and the gripper command of the current phase, moving to the next phase on the way."""
        self.phase_steps += 1
        above, grasp_point = cube + self.aim + [0, 0, APPROACH_HEIGHT], cube + self.aim - [0, 0, GRASP_DEPTH]
        if self.phase == 'approach' and np.linalg.norm(above - gripper) < APPROACH_TOLERANCE:
            self.phase, self.phase_steps = 'descend', 0
        if self.phase == 'descend' and np.linalg.norm(grasp_point - gripper) < GRASP_TOLERANCE:
            self.phase, self.phase_steps = 'grasp', 0
        if self.phase == 'grasp' and self.phase_steps > GRASP_STEPS:
            self.phase, self.phase_steps = 'lift', 0
        if self.phase == 'lift' and self.phase_steps > LIFT_CHECK_STEPS and cube[2] < gripper[2] - MISSED_GRASP_GAP:
            self._start_attempt()
            return above, GRIPPER_OPEN
        targets = {'approach': (above, GRIPPER_OPEN), 'descend': (grasp_point, GRIPPER_OPEN),
                   'grasp': (gripper, GRIPPER_CLOSED), 'lift': (gripper + [0, 0, 1], GRIPPER_CLOSED)}
        return targets[self.phase]

    def action(self) -> np.ndarray:
        gripper, cube = self._positions()
        target, gripper_command = self._target(gripper, cube)
        speed, correlation = self.quality.speed, self.quality.noise_correlation
        position = np.clip(POSITION_GAIN * (target - gripper) / self.max_step, -speed, speed)
        # AR(1) noise of stationary std quality.noise: an operator's hand drifts rather than jitters.
        self.noise = correlation * self.noise + np.sqrt(1 - correlation ** 2) * self.rng.normal(
            0.0, self.quality.noise, 6)
        arm = np.concatenate([position, np.zeros(3)]) + self.noise * np.repeat([1.0, ROTATION_NOISE_SCALE], 3)
        return np.clip(np.append(arm, gripper_command), -1.0, 1.0)


def record_demo(env, quality: Quality, rng: np.random.Generator, max_steps: int):
    """One attempt from a reset: (its arrays in robomimic's layout, success). It ends at the first success."""
    observation = robomimic.low_dim_observation(env.reset())
    demonstrator = LiftDemonstrator(env, quality, rng)
    steps = {'obs': [], 'next_obs': [], 'actions': [], 'states': []}
    success = False
    while not success and len(steps['actions']) < max_steps:
        steps['states'].append(np.asarray(env.sim.get_state().flatten()))
        action = demonstrator.action()
        next_observation = robomimic.low_dim_observation(env.step(action)[0])
        steps['obs'].append(observation)
        steps['next_obs'].append(next_observation)
        steps['actions'].append(action)
        observation, success = next_observation, bool(env._check_success())
    labels = np.zeros(len(steps['actions']))
    labels[-1] = float(success)  # robomimic's done_mode 2 labels: 1 on success states (here only the last)
    demo = {part: {key: np.stack([obs[key] for obs in steps[part]]) for key in robomimic.OBSERVATION_KEYS}
            for part in ('obs', 'next_obs')}
    demo.update(actions=np.stack(steps['actions']), states=np.stack(steps['states']), rewards=labels,
                dones=labels.astype(np.int64))
    return demo, success


def collect(env, qualities, num_demos: int, rng: np.random.Generator, max_steps: int, verbose=True):
    """`num_demos` successful demos, the qualities in turn; returns (demos, their quality names, statistics)."""
    demos, names, failures, steps = [], [], 0, 0
    start = time.perf_counter()
    while len(demos) < num_demos:
        name = qualities[len(demos) % len(qualities)]
        demo, success = record_demo(env, QUALITIES[name], rng, max_steps)
        steps += len(demo['actions'])
        if not success:
            failures += 1
            if failures >= GIVE_UP_FAILURES and failures > len(demos):
                raise RuntimeError(f'The scripted demonstrator failed {failures} of {failures + len(demos)} attempts '
                                   f'(max_steps={max_steps}); no dataset written.')
            continue
        demos.append(demo)
        names.append(name)
        if verbose and len(demos) % max(1, num_demos // 10) == 0:
            print(f'  {len(demos)}/{num_demos} demos, {failures} failed attempts, {time.perf_counter() - start:.0f}s',
                  flush=True)
    seconds = time.perf_counter() - start
    attempts = num_demos + failures
    stats = {'attempts': attempts, 'failures': failures, 'success_rate': num_demos / attempts, 'seconds': seconds,
             'attempts_per_second': attempts / seconds, 'steps_per_second': steps / seconds,
             'mean_length': {name: float(np.mean([len(d['actions']) for d, n in zip(demos, names) if n == name]))
                             for name in dict.fromkeys(names)}}  # the qualities that made a demo
    return demos, names, stats


def filter_keys(names, rng: np.random.Generator) -> dict:
    """robomimic's filter keys: train/valid (a random VALID_FRACTION of the demos) and, with several qualities, one
    key per quality and per pair of them (e.g. 'okay_better'), as in robomimic's mh files."""
    demo_names = np.array([f'demo_{index}' for index in range(len(names))])
    num_valid = int(round(VALID_FRACTION * len(names)))
    valid = np.zeros(len(names), bool)
    valid[rng.permutation(len(names))[:num_valid]] = True
    keys = {'train': demo_names[~valid], 'valid': demo_names[valid]}
    qualities = list(dict.fromkeys(names))
    if len(qualities) > 1:
        for size in (1, 2):
            for group in itertools.combinations(reversed(qualities), size):
                keys['_'.join(group)] = demo_names[np.isin(names, group)]
    return keys


def write_dataset(path: str, demos, env_args: dict, masks: dict):
    """The HDF5 file in robomimic's v1.5 layout, written to a temporary name and renamed into place."""
    import h5py  # noqa: PLC0415

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = os.path.join(os.path.dirname(os.path.abspath(path)), f'.{os.path.basename(path)}.tmp')
    try:
        with h5py.File(temporary, 'w') as file:
            data = file.create_group('data')
            for index, demo in enumerate(demos):
                group = data.create_group(f'demo_{index}')
                group.attrs['num_samples'] = len(demo['actions'])
                for key in ('actions', 'states', 'rewards', 'dones'):
                    group.create_dataset(key, data=demo[key])
                for part in ('obs', 'next_obs'):
                    for key, values in demo[part].items():
                        group.create_dataset(f'{part}/{key}', data=values)
            data.attrs['total'] = sum(len(demo['actions']) for demo in demos)
            data.attrs['env_args'] = json.dumps(env_args, indent=4)
            for name, demo_names in masks.items():
                file[f'mask/{name}'] = np.array(demo_names, dtype='S')
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def generate(task='lift', num_demos=300, dataset_dir=robomimic.DEFAULT_DATASET_DIR, dataset_type='mh', seed=0,
             max_steps=None, dataset_path=None, verbose=True) -> dict:
    """Writes the dataset (`dataset_path`, default ``{dataset_dir}/{task}/{dataset_type}/low_dim_v15.hdf5``) and
    returns its path and the collection's statistics (success rate of the attempts, their speed, demo lengths)."""
    if task not in GENERATABLE_TASKS:
        raise ValueError(f'Cannot generate {task!r} demonstrations; the scripted tasks are {GENERATABLE_TASKS}.')
    if dataset_type not in DATASET_QUALITIES:
        raise ValueError(f'dataset_type must be one of {tuple(DATASET_QUALITIES)}, got {dataset_type!r}.')
    if num_demos < 1:
        raise ValueError(f'num_demos must be >= 1, got {num_demos}.')
    env_name = f'{task}-{dataset_type}-low_dim'
    path = dataset_path or robomimic.dataset_path(env_name, dataset_dir)
    max_steps = max_steps or robomimic.MAX_EPISODE_STEPS[task]
    env_args = lift_env_args()
    env = robomimic.make_robosuite_env(env_args)
    rng = np.random.default_rng(seed)
    env.rng.bit_generator.state = np.random.default_rng(rng.integers(2 ** 63)).bit_generator.state
    try:
        demos, names, stats = collect(env, DATASET_QUALITIES[dataset_type], num_demos, rng, max_steps, verbose)
    finally:
        env.close()
    write_dataset(path, demos, env_args, filter_keys(names, rng))
    return {'path': path, 'num_demos': num_demos, 'num_transitions': sum(len(d['actions']) for d in demos), **stats}


def summary(result: dict) -> str:
    lengths = ', '.join(f'{name} {length:.0f}' for name, length in result['mean_length'].items())
    return (f'{result["num_demos"]} successful demos ({result["num_transitions"]} transitions) of '
            f'{result["attempts"]} attempts: success rate {100 * result["success_rate"]:.1f}%; '
            f'{result["attempts_per_second"]:.2f} attempts/s, {result["steps_per_second"]:.0f} steps/s '
            f'({result["seconds"]:.1f}s). Mean demo length: {lengths}.\nWrote {result["path"]}')


def _define_flags():
    flags.DEFINE_enum('task', 'lift', GENERATABLE_TASKS, 'Robomimic task.')
    flags.DEFINE_integer('num_demos', 300, 'Successful demonstrations to write (robomimic lift mh has 300).')
    flags.DEFINE_string('dataset_dir', robomimic.DEFAULT_DATASET_DIR, 'Writes {dir}/{task}/{type}/low_dim_v15.hdf5.')
    flags.DEFINE_string('dataset_path', None, 'The output file (overrides --dataset_dir).')
    flags.DEFINE_enum('dataset_type', 'mh', list(DATASET_QUALITIES),
                      'mh: the better, okay and worse operators in turn; ph: the better one alone.')
    flags.DEFINE_integer('seed', 0, 'Random seed (the same seed gives the same file).')
    flags.DEFINE_integer('max_steps', None, "Steps before an attempt counts as failed (default: the task's episode "
                                            'length in envs.robomimic.MAX_EPISODE_STEPS).')


def main(_):
    settings = ('task', 'num_demos', 'dataset_dir', 'dataset_type', 'seed', 'max_steps', 'dataset_path')
    try:
        result = generate(**{name: flags.FLAGS[name].value for name in settings})
    except (ValueError, RuntimeError) as error:
        sys.exit(f'{error}')
    print(summary(result))


if __name__ == '__main__':
    _define_flags()
    app.run(main)
