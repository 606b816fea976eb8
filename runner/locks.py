"""One process per run directory: an exclusive `flock` on `{run_dir}/.lock`, which the kernel releases
when its holder ends in any way (so a lock left by a killed process is simply taken over)."""

import fcntl
import os
import shutil
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


def first_missing_folder(path: str):
    """The outermost folder of `path` that does not exist yet (None when `path` exists)."""
    path, missing = os.path.abspath(path), None
    while not os.path.exists(path):
        path, missing = os.path.dirname(path), path
    return missing


def holds_files(folder: str) -> bool:
    """Whether `folder` holds any file but a run directory's lock."""
    return any(name != '.lock' for _, _, names in os.walk(folder) for name in names)


class RunLocks:
    """The locks of several run directories (the seeds of one run), all or none. Leaving on an error, it removes
    the folders it made that still hold nothing but locks: a start that fails leaves no run directory."""

    def __init__(self, run_dirs):
        self.locks = [RunLock(run_dir) for run_dir in run_dirs]
        self.held = []
        self.made = []

    def __enter__(self):
        self.made = sorted({first_missing_folder(lock.run_dir) for lock in self.locks} - {None})
        try:
            for lock in self.locks:
                self.held.append(lock.__enter__())
        except BaseException as error:
            self.__exit__(type(error))
            raise
        return self

    def __exit__(self, exc_type=None, *exc):
        while self.held:
            self.held.pop().__exit__()
        if exc_type is not None:
            for folder in self.made:
                if os.path.isdir(folder) and not holds_files(folder):
                    shutil.rmtree(folder, ignore_errors=True)
        return False
