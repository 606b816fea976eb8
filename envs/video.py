"""Evaluation videos: an offscreen OpenGL backend for MuJoCo, the frames of an episode, H.264 MP4 files and wandb.

MuJoCo picks its OpenGL backend from MUJOCO_GL once, when it is first imported, and with MUJOCO_GL unset it picks
GLFW, which needs a display. `choose_render_backend()` sets MUJOCO_GL and PYOPENGL_PLATFORM in `os.environ`, so call
it in the main process before starting evaluation workers (they inherit the environment, with multiprocessing's
'spawn' context too) and, to render in the main process itself, before anything imports mujoco (ogbench,
dm_control) there.

In an evaluation worker:

    recorder = EpisodeRecorder(env, frame_skip=2)
    env.reset()
    recorder.capture()
    while not done:
        ...  # env.step(action)
        recorder.capture()
    write_mp4(recorder.frames, path, recorder.fps)
"""

import functools
import os
import subprocess
import sys
import tempfile

import numpy as np

from core.errors import RunError

# Tried in this order: EGL renders without a display and uses a GPU when its driver provides one; OSMesa is the
# CPU-only fallback.
BACKENDS = ('egl', 'osmesa')
# Debian/Ubuntu packages each backend needs to render on the CPU with Mesa's llvmpipe (PyOpenGL's EGL platform takes
# the GL functions from libGL).
APT_PACKAGES = {'egl': 'libegl1 libgl1 libgl1-mesa-dri', 'osmesa': 'libosmesa6'}
# A probe imports mujoco and renders 16x16 pixels (about 1 s); the limit only guards against a hung driver.
PROBE_TIMEOUT_SECONDS = 120
# For an environment that declares neither metadata['render_fps'] nor a control timestep.
DEFAULT_FPS = 20.0

# Renders a lit box offscreen in a fresh interpreter, so that a GL library that fails to load, or crashes, takes
# down only the probe, never the training process.
_PROBE_SCRIPT = """
import mujoco
model = mujoco.MjModel.from_xml_string(
    '<mujoco><worldbody><light pos="0 0 1"/><geom type="box" size=".1 .1 .1"/></worldbody></mujoco>')
data = mujoco.MjData(model)
mujoco.mj_forward(model, data)
renderer = mujoco.Renderer(model, 16, 16)
renderer.update_scene(data)
pixels = renderer.render()
renderer.close()  # before interpreter exit, which would tear EGL down under the renderer and print errors
assert pixels.any(), 'the rendered image is all black'
"""


class RenderBackendError(RunError):
    """MuJoCo cannot render offscreen in this process."""


def _backend_environment(backend: str) -> dict:
    """MUJOCO_GL and the PYOPENGL_PLATFORM it needs (mujoco refuses to import its EGL or OSMesa context when
    PyOpenGL is set to another platform; other backends use PyOpenGL's default)."""
    environment = {'MUJOCO_GL': backend}
    if backend in BACKENDS:
        environment['PYOPENGL_PLATFORM'] = backend
    return environment


def _probe(backend: str):
    """None if MuJoCo renders with `backend` in a subprocess, else why not (the last line of its error)."""
    environment = {**os.environ, **_backend_environment(backend)}
    try:
        result = subprocess.run([sys.executable, '-c', _PROBE_SCRIPT], env=environment, capture_output=True,
                                text=True, timeout=PROBE_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        return f'no image after {PROBE_TIMEOUT_SECONDS} s'
    if result.returncode == 0:
        return None
    error_lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    return error_lines[-1] if error_lines else f'exit code {result.returncode}'


@functools.cache
def choose_render_backend() -> str:
    """The OpenGL backend MuJoCo renders with offscreen, checked to work: MUJOCO_GL if the user set it, else the
    first of EGL and OSMesa that renders. Sets MUJOCO_GL and PYOPENGL_PLATFORM for this process and the processes it
    starts later; raises RenderBackendError saying what was tried, what failed and how to fix it."""
    user_backend = os.environ.get('MUJOCO_GL', '').strip().lower()
    if user_backend:
        failure = _probe(user_backend)
        if failure is not None:
            raise RenderBackendError(
                f'MuJoCo cannot render offscreen with MUJOCO_GL={user_backend}, set in the environment: {failure}\n'
                f'Fix: unset MUJOCO_GL to let the run try {" then ".join(BACKENDS)}, make {user_backend} work, or '
                f'run without videos (--video_episodes=0).')
        backend = user_backend
    else:
        failures = {}
        for candidate in BACKENDS:
            failures[candidate] = _probe(candidate)
            if failures[candidate] is None:
                backend = candidate
                break
        else:
            tried = ''.join(f'\n  MUJOCO_GL={candidate}: {failure}' for candidate, failure in failures.items())
            install = ', or '.join(f'apt-get install {APT_PACKAGES[name]} for {name}' for name in BACKENDS)
            raise RenderBackendError(
                f'MuJoCo cannot render offscreen with any OpenGL backend, so no evaluation video can be made. '
                f'Tried:{tried}\n'
                f'Fix: install the libraries of one backend (Debian/Ubuntu: {install}; with an NVIDIA GPU, its '
                f'driver\'s EGL library), set MUJOCO_GL to a backend that works on this machine, or run without videos '
                f'(--video_episodes=0).')
    os.environ.update(_backend_environment(backend))
    return backend


def _backend_loaded_in_this_process():
    """The backend of mujoco's GL context if mujoco is imported ('egl', 'osmesa', 'glfw', ...), else None."""
    gl_context = sys.modules.get('mujoco.rendering.classic.gl_context')
    context_class = getattr(gl_context, 'GLContext', None)
    return context_class.__module__.rsplit('.', 1)[-1] if context_class is not None else None


def render_frame(env) -> np.ndarray:
    """The current frame of a gymnasium environment whose render() returns an RGB array, as an (H, W, 3) uint8
    array that later steps do not overwrite."""
    try:
        frame = env.render()
    except Exception as error:
        loaded_backend = _backend_loaded_in_this_process()
        if loaded_backend not in (None, os.environ.get('MUJOCO_GL', '').strip().lower()):
            raise RenderBackendError(
                f'mujoco was imported in this process with the {loaded_backend} OpenGL backend, which it keeps, before '
                f'the render backend was chosen. Call envs.video.choose_render_backend() before anything imports '
                f'mujoco (ogbench, dm_control), or render in a process started after it.') from error
        raise
    if not (isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8):
        got = (f'an array of shape {frame.shape} and dtype {frame.dtype}' if isinstance(frame, np.ndarray)
               else type(frame).__name__)
        raise TypeError(f'{type(env.unwrapped).__name__}.render() returned {got}, not an (H, W, 3) uint8 RGB image; '
                        f"gymnasium environments need render_mode='rgb_array'.")
    return frame.copy()


def env_fps(env) -> float:
    """Environment steps per simulated second, so that a video of every step plays in real time: gymnasium's
    metadata['render_fps'], else 1 / control timestep (OGBench's manipulation environments declare only that)."""
    declared_fps = env.metadata.get('render_fps')
    if declared_fps:
        return float(declared_fps)
    control_timestep = getattr(env.unwrapped, 'control_timestep', None)
    if callable(control_timestep):
        return round(1.0 / control_timestep(), 6)  # 20.0, not 19.999999999999996
    return DEFAULT_FPS


class EpisodeRecorder:
    """The frames of one episode: call `capture()` after reset and after every step; it keeps every
    `frame_skip`-th frame, since with a software renderer a frame costs far more than a step."""

    def __init__(self, env, frame_skip: int = 1):
        if frame_skip < 1:
            raise ValueError(f'frame_skip must be at least 1, got {frame_skip}')
        self.env = env
        self.frame_skip = frame_skip
        self.fps = env_fps(env) / frame_skip  # so that the video plays in real time
        self.frames = []
        self._captures = 0

    def capture(self):
        if self._captures % self.frame_skip == 0:
            self.frames.append(render_frame(self.env))
        self._captures += 1


def write_mp4(frames, path: str, fps: float):
    """Write RGB frames ((H, W, 3) uint8, all of one size) to `path` as an H.264 MP4 (yuv420p, which browsers and
    wandb play). The file appears complete or not at all: it is written beside `path`, then renamed."""
    import imageio_ffmpeg  # noqa: PLC0415 - only runs that write videos need it

    frames = list(frames)
    if not frames:
        raise ValueError(f'no frames to write to {path}')
    shape = frames[0].shape
    for index, frame in enumerate(frames):
        if frame.shape != shape or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f'frame {index} has shape {frame.shape} and dtype {frame.dtype}; every frame must be '
                             f'(H, W, 3) uint8 with the shape of frame 0, {shape}')
    height, width = shape[:2]
    descriptor, partial_path = tempfile.mkstemp(suffix='.mp4', prefix='.partial-', dir=os.path.dirname(path) or '.')
    os.close(descriptor)
    try:
        # yuv420p stores colour at half resolution, so H.264 needs even sizes: macro_block_size=2 stretches only an
        # odd size, by one pixel, where the default would stretch every size that is not a multiple of 16 (OGBench
        # renders 200x200).
        # faststart puts the index first, so browsers can play the file while it downloads.
        writer = imageio_ffmpeg.write_frames(partial_path, (width, height), fps=fps, codec='libx264',
                                             pix_fmt_out='yuv420p', macro_block_size=2, ffmpeg_log_level='error',
                                             output_params=['-movflags', '+faststart'])
        writer.send(None)
        try:
            for frame in frames:
                writer.send(np.ascontiguousarray(frame))
        finally:
            writer.close()  # waits for ffmpeg to finish the file
        os.replace(partial_path, path)
    except BaseException:
        os.remove(partial_path)
        raise
