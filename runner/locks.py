"""One process per run directory: an exclusive `flock` on `{run_dir}/.lock`, which the kernel releases
when its holder ends in any way (so a lock left by a killed process is simply taken over)."""

import fcntl
import os
import socket
import time

from core.errors import RunError


class RunDirectoryInUse(RunError):
    pass


class RunLock:
    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, '.lock')
        self._file = None

    def __enter__(self):
        os.makedirs(self.run_dir, exist_ok=True)
        handle = open(self.path, 'a+')
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or 'another process'
            handle.close()
            raise RunDirectoryInUse(
                f'{self.run_dir} is in use by {holder}. Two processes must not train one run: wait for it to '
                'finish (or stop it), or pass another --run_name / --save_dir.') from None
        handle.seek(0)
        handle.truncate()
        handle.write(f'process {os.getpid()} on {socket.gethostname()} since {time.strftime("%Y-%m-%d %H:%M:%S")}\n')
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc):
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        return False


class RunLocks:
    """The locks of several run directories (the seeds of one run), all or none."""

    def __init__(self, run_dirs):
        self.locks = [RunLock(run_dir) for run_dir in run_dirs]
        self.held = []

    def __enter__(self):
        try:
            for lock in self.locks:
                self.held.append(lock.__enter__())
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        while self.held:
            self.held.pop().__exit__()
        return False
