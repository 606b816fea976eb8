"""Stopping a run cleanly on SIGTERM, SIGINT and SIGUSR1 (SLURM preemption and time limits, Ctrl-C).

The first signal only sets `received`: the training loop finishes the jitted call in flight, saves a
checkpoint at the next point where it can resume exactly (offline: at once; online: at the end of the
current episode) and exits with `EXIT_PREEMPTED`. A second signal ends the process at once; its latest
checkpoint stays intact.
"""

import os
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class StopSignals:
    def __init__(self):
        self.received = None  # name of the first signal, e.g. 'SIGTERM'
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signal handlers need the main thread
            for number in SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}
        return False

    def _handle(self, number, frame):
        if self.received is None:
            self.received = signal.Signals(number).name
            return
        self.__exit__()  # a second signal: default behaviour, now
        os.kill(os.getpid(), number)
