"""Environments stepped in parallel worker processes (or in this process), addressed by index.

Each worker holds a fixed set of the environments and steps them in turn when asked; the pool sends every
worker its share of a request before it waits for any answer, so the workers run in parallel. With
`num_workers=0` the same code runs in this process, with no copies and no process start-up.

Workers are started with the 'spawn' method: forking a process that has initialised JAX (many threads)
is unsafe. An environment comes from `make_env(render=...)`, a picklable callable (e.g. a
`functools.partial` of a module-level function), called in the worker.
"""

import dataclasses
import multiprocessing
import os
import traceback
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from core.errors import RunError


@dataclasses.dataclass
class StepResult:
    observation: np.ndarray
    reward: float
    terminated: bool
    truncated: bool
    success: float

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


class EnvironmentFailed(RunError):
    pass


# Every other frame: a software renderer costs far more per frame than a simulation step.
VIDEO_FRAME_SKIP = 2


class _Environments:
    """The environments of one worker and the commands on them."""

    def __init__(self, make_env: Callable, indices: Sequence[int], render: Sequence[int]):
        self.envs = {index: make_env(render=index in render) for index in indices}
        self.recorders = {}

    def reset(self, seeds: Dict[int, int]):
        observations = {}
        for index, seed in seeds.items():
            observations[index], _ = self.envs[index].reset(seed=int(seed))
            self._record(index)
        return observations

    def step(self, actions: Dict[int, np.ndarray]):
        results = {}
        for index, action in actions.items():
            observation, reward, terminated, truncated, info = self.envs[index].step(action)
            results[index] = StepResult(observation, float(reward), bool(terminated), bool(truncated),
                                        float(info.get('success', 0.0)))
            self._record(index)
        return results

    def play(self, chunks: Dict[int, np.ndarray]):
        """Each environment plays its actions (rows of its chunk) until they run out or its episode ends."""
        results = {}
        for index, chunk in chunks.items():
            results[index] = []
            for action in chunk:
                results[index].append(self.step({index: action})[index])
                if results[index][-1].done:
                    break
        return results

    def record(self, index: int, video_path: Optional[str]):
        """Starts rendering environment `index`'s frames, or (None) writes them to the video file given."""
        from envs import video

        if video_path is not None:
            self.recorders[index] = (video.EpisodeRecorder(self.envs[index], VIDEO_FRAME_SKIP), video_path)
            return
        recorder, path = self.recorders.pop(index)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        video.write_mp4(recorder.frames, path, recorder.fps)

    def _record(self, index):
        if index in self.recorders:
            self.recorders[index][0].capture()

    def close(self):
        for env in self.envs.values():
            env.close()


def _serve(connection, make_env, indices, render):
    try:
        environments = _Environments(make_env, indices, render)
        connection.send(('ok', None))
    except Exception:  # noqa: BLE001 - reported to the parent, which raises it with this traceback
        connection.send(('error', traceback.format_exc()))
        return
    while True:
        command, argument = connection.recv()
        if command == 'close':
            environments.close()
            connection.send(('ok', None))
            return
        try:
            connection.send(('ok', getattr(environments, command)(*argument)))
        except Exception:  # noqa: BLE001
            connection.send(('error', traceback.format_exc()))


class EnvPool:
    """`num_envs` environments from `make_env` in `num_workers` processes (0: in this process); the ones in
    `render` are made with rendering on (for videos)."""

    def __init__(self, make_env: Callable, num_envs: int, num_workers: int = 0, render: Sequence[int] = ()):
        self.num_envs, self._started = num_envs, None
        render = tuple(render)
        if num_workers <= 0:
            self.local, self.workers = _Environments(make_env, range(num_envs), render), []
            self.owner = {index: None for index in range(num_envs)}
            return
        self.local = None
        context = multiprocessing.get_context('spawn')
        shares = [list(range(num_envs))[worker::num_workers] for worker in range(min(num_workers, num_envs))]
        self.workers, self.owner = [], {}
        for worker, indices in enumerate(shares):
            parent, child = context.Pipe()
            process = context.Process(target=_serve, args=(child, make_env, indices, render), daemon=True)
            process.start()
            child.close()
            self.workers.append((parent, process))
            self.owner.update({index: worker for index in indices})
        for worker in range(len(self.workers)):
            self._answer(worker)

    def reset(self, seeds: Dict[int, int]) -> Dict[int, np.ndarray]:
        return self._call('reset', seeds)

    def step(self, actions: Dict[int, np.ndarray]) -> Dict[int, StepResult]:
        return self._call('step', actions)

    def play(self, chunks: Dict[int, np.ndarray]) -> Dict[int, List[StepResult]]:
        """`chunks[i]`: (steps, action_dim) actions that environment i plays one after another until they run
        out or its episode ends, all in one round trip to its worker; the StepResult of each step played."""
        return self._call('play', chunks)

    def record(self, index: int, video_path: Optional[str]):
        """Renders environment `index` (one made with rendering on) after each reset and step, in its process,
        until `record(index, None)`; then writes the frames to `video_path` there as an MP4."""
        self._send(self.owner[index], 'record', (index, video_path))
        return self._answer(self.owner[index])

    def start_step(self, actions: Dict[int, np.ndarray]):
        """`step` in two halves: the workers start stepping, and the caller is free until `finish_step`, which
        waits for their results (without workers, the step happens here, at once)."""
        assert self._started is None, 'finish_step was not called'
        self._started = self._request('step', actions)

    def finish_step(self) -> Dict[int, StepResult]:
        started, self._started = self._started, None
        return self._collect(started)

    def _call(self, command: str, requests: Dict[int, object]):
        return self._collect(self._request(command, requests))

    def _request(self, command: str, requests: Dict[int, object]):
        """Sends every worker its share of `requests`: (results so far, workers to wait for)."""
        if self.local is not None:
            return getattr(self.local, command)(requests), []
        by_worker: Dict[int, Dict[int, object]] = {}
        for index, value in requests.items():
            by_worker.setdefault(self.owner[index], {})[index] = value
        for worker, share in by_worker.items():
            self._send(worker, command, (share,))
        return {}, list(by_worker)

    def _collect(self, requested):
        results, workers = requested
        for worker in workers:
            results.update(self._answer(worker))
        return results

    def _send(self, worker: Optional[int], command: str, argument):
        if worker is None:
            return getattr(self.local, command)(*argument)
        self.workers[worker][0].send((command, argument))

    def _answer(self, worker: Optional[int]):
        if worker is None:
            return None
        connection, process = self.workers[worker]
        try:
            status, value = connection.recv()
        except EOFError:
            raise EnvironmentFailed(f'Environment worker {worker} (process {process.pid}) ended unexpectedly '
                                    f'(exit code {process.exitcode}).') from None
        if status == 'error':
            raise EnvironmentFailed(f'An environment failed in worker process {process.pid}:\n{value}')
        return value

    def close(self):
        if self.local is not None:
            self.local.close()
            self.local = None
        for connection, process in self.workers:
            try:
                connection.send(('close', None))
                connection.recv()
            except (EOFError, OSError, BrokenPipeError):
                pass
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
        self.workers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
