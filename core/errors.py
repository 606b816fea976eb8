"""Errors a user can fix, and how main.py shows them: one screen saying what is wrong and what to do,
without a traceback (`--debug` or TRQAM_DEBUG=1 shows it). Anything else is a bug and keeps its traceback.
Also the valid values of a setting (Range, Choice, LayerSizes), which say in one line what is wrong with a
value, and the nearest valid name to a mistyped one (`close_match`)."""

import dataclasses
import difflib
import errno
import math
import numbers
import os
import shutil
from typing import Iterable, Optional

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by a signal after saving; the same command resumes the run


class RunError(Exception):
    """A fault or bad input with an actionable message."""

    exit_code = 1


class Preempted(RunError):
    """The run saved a checkpoint and stopped because it was asked to (SIGTERM, SIGINT, SIGUSR1)."""

    exit_code = EXIT_PREEMPTED


def close_match(word: str, choices: Iterable[str]) -> str:
    """' Did you mean "X"?' for the choice nearest to a mistyped `word`, or '' when none is near."""
    matches = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f' Did you mean "{matches[0]}"?' if matches else ''


@dataclasses.dataclass(frozen=True)
class Range:
    """The valid values of a numeric setting: an interval (each end open or closed, None: unbounded), integers
    only when `integer`; `optional`: None is valid too (a setting the protocol or the data completes)."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    optional: bool = False

    def __str__(self) -> str:
        kind = 'an integer' if self.integer else 'a number'
        if self.low is not None and self.high is not None:
            bounds = f'in {"(" if self.low_open else "["}{self.low:g}, {self.high:g}{")" if self.high_open else "]"}'
        elif self.low is not None:
            bounds = f'{">" if self.low_open else ">="} {self.low:g}'
        elif self.high is not None:
            bounds = f'{"<" if self.high_open else "<="} {self.high:g}'
        else:
            bounds = ''
        return f'{kind} {bounds}'.strip() + (' (or None)' if self.optional else '')

    def contains(self, value) -> bool:
        if value is None:
            return self.optional
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            return False
        if self.integer and value != int(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def problem(self, name: str, value) -> Optional[str]:
        """One line naming the setting, its value and the valid range, or None when `value` is valid."""
        return None if self.contains(value) else f'{name}={value!r}: must be {self}.'


@dataclasses.dataclass(frozen=True)
class Choice:
    """A setting with a few valid values."""

    values: tuple

    def __str__(self) -> str:
        return f'one of {", ".join(map(str, self.values))}'

    def problem(self, name: str, value) -> Optional[str]:
        if value in self.values:
            return None
        return f'{name}={value!r}: must be {self}.' + close_match(value, self.values)


class LayerSizes:
    """Hidden-layer widths: a non-empty sequence of integers >= 1."""

    def __str__(self) -> str:
        return 'a non-empty tuple of integers >= 1'

    def problem(self, name: str, value) -> Optional[str]:
        sizes = value if isinstance(value, (tuple, list)) else ()
        if sizes and all(isinstance(size, numbers.Integral) and size >= 1 for size in sizes):
            return None
        return f'{name}={value!r}: must be {self}, e.g. (512, 512, 512, 512).'


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
COUNT = Range(1, integer=True)  # a number of things, at least one
UNIT = Range(0, 1, low_open=True)  # (0, 1]: a discount, a Polyak or EMA rate


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
