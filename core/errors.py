"""Errors a user can fix, and how main.py shows them: one screen saying what is wrong and what to do,
without a traceback (`--debug` or TRQAM_DEBUG=1 shows it). Anything else is a bug and keeps its traceback."""

import errno
import os
import shutil

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by a signal after saving; the same command resumes the run


class RunError(Exception):
    """A fault or bad input with an actionable message."""

    exit_code = 1


class Preempted(RunError):
    """The run saved a checkpoint and stopped because it was asked to (SIGTERM, SIGINT, SIGUSR1)."""

    exit_code = EXIT_PREEMPTED


def is_disk_full(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from, is 'No space left on device' (libraries such as
    orbax wrap the OSError)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if 'No space left on device' in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def disk_full_message(path: str, needed_bytes: int = None) -> str:
    free = shutil.disk_usage(path).free if os.path.exists(path) else None
    lines = [f'The disk holding {path} is full'
             + (f' ({_size(free)} free' if free is not None else '')
             + (f', a checkpoint needs about {_size(needed_bytes)})' if needed_bytes else (')' if free is not None else ''))
             + '.']
    return '\n'.join(lines)


def _size(num_bytes: int) -> str:
    for unit in ('B', 'KB', 'MB', 'GB', 'TB'):
        if num_bytes < 1024 or unit == 'TB':
            return f'{num_bytes:.0f} {unit}' if unit == 'B' else f'{num_bytes:.1f} {unit}'
        num_bytes /= 1024


def debug_requested(flag: bool = False) -> bool:
    return flag or os.environ.get('TRQAM_DEBUG', '') not in ('', '0')
