"""Tests for envs/video.py: the render backend choice, an evaluation episode of a real OGBench environment rendered
in a worker started with 'spawn' (as evaluation workers are) into an MP4 read back, and MP4 files."""

import functools
import os

import numpy as np
import pytest

from envs import video
from tests.conftest import assert_one_screen

ENV_NAME = 'cube-single-play-singletask-task1-v0'
RENDER_VARIABLES = ('MUJOCO_GL', 'PYOPENGL_PLATFORM')


@pytest.fixture
def render_environment():
    """A fresh backend choice whose environment variables are undone afterwards: other tests of this session import
    mujoco with whatever MUJOCO_GL they find."""
    saved = {name: os.environ.get(name) for name in RENDER_VARIABLES}
    video.choose_render_backend.cache_clear()
    yield
    video.choose_render_backend.cache_clear()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _read_mp4(path):
    """The metadata and the frames of an MP4 file, decoded by the ffmpeg that wrote it."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(path)
    metadata = next(reader)
    width, height = metadata['size']
    frames = [np.frombuffer(data, np.uint8).reshape(height, width, 3) for data in reader]
    return metadata, frames


def short_episodes(env_name, max_steps, render=False):
    """An OGBench environment whose episodes end after `max_steps` (module-level: pickled into workers)."""
    import gymnasium

    from envs.ogbench_data import make_env

    return gymnasium.wrappers.TimeLimit(make_env(env_name, render=render), max_steps)


def test_evaluation_renders_its_first_episode_into_an_mp4_in_a_worker(render_environment, tmp_path):
    from tests.test_evaluation import untrained_flow
    from runner.acting import evaluate
    from envs.env_pool import EnvPool
    from runner.seed_axis import stack

    try:
        video.choose_render_backend()
    except video.RenderBackendError as error:
        pytest.skip(f'MuJoCo cannot render offscreen on this machine: {error}')
    path = str(tmp_path / 'videos' / 'episode0.mp4')
    agent = untrained_flow(0, obs_dim=28, action_dim=5)  # cube-single's sizes
    # One spawned worker, as evaluation runs with videos: it inherits the backend chosen here.
    with EnvPool(functools.partial(short_episodes, ENV_NAME, 10), 2, num_workers=1, render=[0]) as pool:
        evaluate(stack([agent]), pool, (0,), 2, 0, 5, videos={(0, 0): path})
    assert os.listdir(tmp_path / 'videos') == ['episode0.mp4']  # only the episode asked for, written whole

    metadata, frames = _read_mp4(path)
    assert metadata['codec'].startswith('h264') and metadata['size'] == (200, 200)  # OGBench's render size
    assert metadata['fps'] == pytest.approx(10.0)  # OGBench steps at 20 Hz; every other frame is kept
    assert len(frames) == 6  # after the reset and after steps 2, 4, ..., 10
    for frame in frames:
        assert frame.std() > 10 and len(np.unique(frame.reshape(-1, 3), axis=0)) > 100  # a scene, not a blank
    assert np.abs(frames[-1].astype(int) - frames[0]).mean() > 1  # the arm moved


def test_mp4_of_synthetic_frames_reads_back_and_odd_sizes_are_rounded_up(tmp_path):
    frames = [np.full((47, 64, 3), 20 * index, np.uint8) for index in range(5)]
    path = str(tmp_path / 'gradient.mp4')
    video.write_mp4(frames, path, fps=4)
    metadata, decoded = _read_mp4(path)
    assert metadata['size'] == (64, 48) and len(decoded) == 5
    assert os.listdir(tmp_path) == ['gradient.mp4']  # no partial file left behind
    written = (tmp_path / 'gradient.mp4').read_bytes()
    with pytest.raises(ValueError) as refused:
        video.write_mp4([frames[0], frames[1][:10]], path, fps=4)
    assert_one_screen(str(refused.value), 1, '(10, 64, 3)')  # the frame at fault and its shape
    assert os.listdir(tmp_path) == ['gradient.mp4']
    assert (tmp_path / 'gradient.mp4').read_bytes() == written  # the video written before is kept whole


def test_backend_fallback_and_the_error_when_none_works(render_environment, monkeypatch):
    failures = {'egl': 'ImportError: Cannot initialize a EGL device display', 'osmesa': None}
    probed = []

    def fake_probe(backend):
        probed.append(backend)
        return failures.get(backend, 'failed')

    monkeypatch.setattr(video, '_probe', fake_probe)
    monkeypatch.delenv('MUJOCO_GL', raising=False)
    assert video.choose_render_backend() == 'osmesa' and probed == ['egl', 'osmesa']
    assert os.environ['MUJOCO_GL'] == os.environ['PYOPENGL_PLATFORM'] == 'osmesa'

    video.choose_render_backend.cache_clear()
    monkeypatch.delenv('MUJOCO_GL')
    failures['osmesa'] = 'ImportError: Unable to load OpenGL library'
    with pytest.raises(video.RenderBackendError) as raised:
        video.choose_render_backend()
    # Each backend tried with its failure, the packages that make one work, and the flag that turns videos off.
    assert_one_screen(str(raised.value), *failures.values(), 'MUJOCO_GL=egl', 'MUJOCO_GL=osmesa',
                      'libegl1 libgl1 libgl1-mesa-dri', 'libosmesa6', '--video_episodes=0')

    # A backend the user set is the only one tried.
    video.choose_render_backend.cache_clear()
    probed.clear()
    monkeypatch.setenv('MUJOCO_GL', 'glfw')
    failures['glfw'] = 'GLFWError: The DISPLAY environment variable is missing'
    with pytest.raises(video.RenderBackendError) as raised:
        video.choose_render_backend()
    assert probed == ['glfw']
    # The user's setting, why it fails, and the flag that turns videos off.
    assert_one_screen(str(raised.value), 'MUJOCO_GL=glfw', failures['glfw'], '--video_episodes=0')


def test_wandb_gets_the_mp4_file_and_nothing_is_logged_without_a_run(tmp_path):
    import wandb

    from runner.logs import WandbLogger

    class RecordingRun:
        def log(self, data, step):
            self.logged = data, step

    path = str(tmp_path / 'step7_episode0.mp4')
    video.write_mp4([np.zeros((16, 16, 3), np.uint8)] * 2, path, fps=2)
    logger = WandbLogger('disabled', 'project', 'group', 'name', {}, str(tmp_path))
    logger.log_video(path, step=7)  # wandb off: no run, nothing to log to, no error
    assert logger.run is None
    logger.run = RecordingRun()
    logger.log_video(path, step=7)
    (key, logged_video), = logger.run.logged[0].items()
    assert key == 'evaluation/video/step7_episode0.mp4' and logger.run.logged[1] == 7
    assert isinstance(logged_video, wandb.Video) and logged_video._path == path