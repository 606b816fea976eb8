"""Stopping a run cleanly on SIGTERM, SIGINT and SIGUSR1 (SLURM preemption and time limits, Ctrl-C).

Every stop ends with status `EXIT_PREEMPTED`, the one the sweep's SLURM script requeues, at any moment of the
process's life:
- while main.py imports and starts (`exit_at_once_on_stop_signals`, installed first thing), and while a run has
  nothing unsaved (`StopSignals.at_once`: before its first step, e.g. while it compiles), the process ends at once;
  nothing of the run is lost, because the same command resumes from its latest checkpoint, or starts afresh;
- later, the first signal only sets `received`: the training loop finishes the jitted call in flight, saves a
  checkpoint where it stands (offline: after that call; online: after the current environment step, from which a
  resumed run replays the episode's actions) and stops. A second signal ends the process at once; its latest checkpoint stays intact.
"""

import os
import shlex
import signal
import sys
import threading

from core.errors import EXIT_PREEMPTED

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def rerun_hint() -> str:
    """What to run next after a stop: the same command."""
    command = ' '.join(shlex.quote(arg) for arg in [os.path.basename(sys.executable), *sys.argv])
    return f'Run the same command again to resume:\n  {command}'


def exit_now(message: str):
    """Ends the process at once with the status the sweep requeues (no cleanup: nothing is unsaved)."""
    sys.stderr.write(f'\n{message}\n{rerun_hint()}\n')
    sys.stderr.flush()
    os._exit(EXIT_PREEMPTED)


def _exit_while_starting(number, frame):
    exit_now(f'Stopped by {signal.Signals(number).name} while starting, before the run had anything to save.')


def exit_at_once_on_stop_signals():
    """main.py's first act: a stop signal while it imports and starts ends it at once, with EXIT_PREEMPTED."""
    for number in SIGNALS:
        signal.signal(number, _exit_while_starting)


class StopSignals:
    def __init__(self):
        self.received = None  # name of the first signal, e.g. 'SIGTERM'
        self.at_once = True  # nothing unsaved (the run sets it while it has progress a stop must save first)
        self._previous = {}
        self._wakeup = None  # (read end, write end, previous wakeup fd) of the pipe the watcher reads
        self._exiting = threading.Lock()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signal handlers need the main thread
            for number in SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
            self._start_watcher()
        return self

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}
        if self._wakeup is not None:
            read_end, write_end, previous = self._wakeup
            signal.set_wakeup_fd(previous)
            os.close(write_end)  # the watcher reads the end of the pipe and closes its end
            self._wakeup = None
        return False

    def _start_watcher(self):
        """Python runs signal handlers in the main thread between bytecodes, so not while it compiles; the
        interpreter also writes every signal's number into the wakeup pipe at once, where this thread sees it."""
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        self._wakeup = (read_end, write_end, signal.set_wakeup_fd(write_end, warn_on_full_buffer=False))
        threading.Thread(target=self._watch, args=(read_end,), daemon=True, name='stop-signals').start()

    def _watch(self, read_end: int):
        try:
            while True:
                numbers = os.read(read_end, 64)
                if not numbers:
                    return
                stops = [number for number in numbers if number in SIGNALS]
                if stops and self.at_once:
                    self._stop_at_once(stops[0])
        finally:
            os.close(read_end)

    def _stop_at_once(self, number: int):
        if self._exiting.acquire(blocking=False):  # the handler and the watcher may both see the signal
            exit_now(f'Stopped by {signal.Signals(number).name} before the first step, with nothing to save.')

    def _handle(self, number, frame):
        if self.at_once:
            self._stop_at_once(number)
        elif self.received is None:
            self.received = signal.Signals(number).name
        elif self._exiting.acquire(blocking=False):  # a second signal: now
            exit_now(f'Stopped at once by a second {signal.Signals(number).name}; the latest checkpoint is intact.')
