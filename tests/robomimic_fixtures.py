"""Synthetic robomimic low-dim datasets in the exact layout of robomimic's v1.5 files (robomimic's docs, "Dataset
Structure", and its dataset_states_to_obs.py / split_train_val.py writers): float64 arrays, int dones, the env_args
JSON of robosuite 1.5.1's Lift as those files carry it, and the train/valid filter keys. Needs h5py and numpy only."""

import json

import numpy as np

# env_args of robomimic's v1.5 Lift low-dim files: robosuite 1.5's composite controller config whose arm config still
# uses robosuite <= 1.4's argument names (damping, damping_limits, control_delta), plus robomimic's overrides.
LIFT_ENV_ARGS = {
    'env_name': 'Lift',
    'env_version': '1.5.1',
    'type': 1,  # robomimic's EnvType.ROBOSUITE_TYPE
    'env_kwargs': {
        'has_renderer': False,
        'has_offscreen_renderer': False,
        'ignore_done': True,
        'use_object_obs': True,
        'use_camera_obs': False,
        'control_freq': 20,
        'controller_configs': {
            'type': 'BASIC',
            'body_parts': {
                'right': {
                    'type': 'OSC_POSE',
                    'input_max': 1,
                    'input_min': -1,
                    'output_max': [0.05, 0.05, 0.05, 0.5, 0.5, 0.5],
                    'output_min': [-0.05, -0.05, -0.05, -0.5, -0.5, -0.5],
                    'kp': 150,
                    'damping': 1,
                    'impedance_mode': 'fixed',
                    'kp_limits': [0, 300],
                    'damping_limits': [0, 10],
                    'position_limits': None,
                    'orientation_limits': None,
                    'uncouple_pos_ori': True,
                    'control_delta': True,
                    'interpolation': None,
                    'ramp_ratio': 0.2,
                    'gripper': {'type': 'GRIP'},
                },
            },
        },
        'robots': ['Panda'],
        'camera_depths': False,
        'reward_shaping': False,
    },
}

# The same controller as robosuite <= 1.4 took it (robomimic's v1.4.1-era files): the arm's config alone.
LEGACY_LIFT_ENV_ARGS = {
    **LIFT_ENV_ARGS,
    'env_version': '1.4.1',
    'env_kwargs': {
        **LIFT_ENV_ARGS['env_kwargs'],
        'controller_configs': {key: value for key, value in
                               LIFT_ENV_ARGS['env_kwargs']['controller_configs']['body_parts']['right'].items()
                               if key != 'gripper'},
    },
}

LIFT_OBSERVATION_SIZES = {'robot0_eef_pos': 3, 'robot0_eef_quat': 4, 'robot0_gripper_qpos': 2, 'object': 10}
LIFT_STATE_SIZE = 32  # 1 (time) + qpos 16 + qvel 15 of robosuite's Lift
# Demo numbers out of lexical order (demo_10 sorts before demo_2 as text) and of different lengths.
DEMO_LENGTHS = {0: 12, 1: 9, 2: 10, 10: 11}
FILTER_KEYS = {'train': (0, 2, 10), 'valid': (1,)}


def _demo_arrays(rng, length: int, success_steps: int):
    """One demo: observations along a trajectory (next_obs[t] = obs[t + 1]), actions in [-1, 1], and robomimic's
    done_mode 2 labels (reward 1 on success states, done on success states and at the end)."""
    observations = {}
    for key, size in LIFT_OBSERVATION_SIZES.items():
        path = np.cumsum(rng.normal(0.0, 0.01, (length + 1, size)), axis=0) + rng.uniform(-1.0, 1.0, size)
        observations[key] = path
    rewards = np.zeros(length)
    rewards[length - success_steps:] = 1.0
    dones = rewards.astype(np.int64)
    if success_steps:
        dones[-1] = 1
    return {
        'obs': {key: path[:-1] for key, path in observations.items()},
        'next_obs': {key: path[1:] for key, path in observations.items()},
        'actions': rng.uniform(-1.0, 1.0, (length, 7)),
        'rewards': rewards,
        'dones': dones,
        'states': rng.normal(size=(length, LIFT_STATE_SIZE)),
    }


def write_lift_dataset(path, env_args=LIFT_ENV_ARGS, seed: int = 0, unfinished_demo: int | None = None):
    """Write a synthetic Lift low-dim dataset; returns {demo number: its arrays}. `unfinished_demo`: that demo never
    succeeds, so all its rewards and dones are 0 (its last step carries no done)."""
    import h5py  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    demos = {number: _demo_arrays(rng, length, 0 if number == unfinished_demo else 3)
             for number, length in DEMO_LENGTHS.items()}
    with h5py.File(path, 'w') as file:
        data = file.create_group('data')
        for number, demo in demos.items():
            group = data.create_group(f'demo_{number}')
            group.attrs['num_samples'] = len(demo['actions'])
            group.attrs['model_file'] = '<mujoco model="base"><worldbody/></mujoco>'
            for key in ('actions', 'states', 'rewards', 'dones'):
                group.create_dataset(key, data=demo[key])
            for part in ('obs', 'next_obs'):
                for key, values in demo[part].items():
                    group.create_dataset(f'{part}/{key}', data=values)
        data.attrs['total'] = sum(len(demo['actions']) for demo in demos.values())
        data.attrs['env_args'] = json.dumps(env_args, indent=4)
        for name, numbers in FILTER_KEYS.items():
            file[f'mask/{name}'] = np.array([f'demo_{number}' for number in numbers], dtype='S')
    return demos


def reset_observation(factory, seed: int):
    """The first observation of `factory(render=False)` after reset(seed); run in a fresh (spawned) process."""
    env = factory(render=False)
    try:
        return env.reset(seed=seed)[0]
    finally:
        env.close()
