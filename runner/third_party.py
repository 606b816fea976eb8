"""What third-party libraries print about faults a run handles, left out so that the run's own message is the one
screen the user reads (`--debug` or TRQAM_DEBUG=1 keeps all of it):
- orbax logs every failed write of a checkpoint (a full disk) at ERROR, with its traceback, before raising the
  error that main.py reports;
- after such a failure, or a checkpoint it cannot read, tensorstore's callbacks still post their results to the
  asyncio event loop orbax has closed, and Python reports each one as an unraisable 'Event loop is closed'.
"""

import functools
import logging
import os
import sys

from absl import logging as absl_logging

ORBAX_SOURCE = f'{os.sep}orbax{os.sep}'


def report_only_unhandled(debug: bool = False):
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file operation at INFO
    if debug:
        return
    absl_logging.get_absl_handler().addFilter(_not_orbax_error)
    if getattr(sys.unraisablehook, 'func', None) is not _unraisable:  # once
        sys.unraisablehook = functools.partial(_unraisable, sys.unraisablehook)


def _not_orbax_error(record: logging.LogRecord) -> bool:
    return record.levelno < logging.ERROR or ORBAX_SOURCE not in record.pathname


def _unraisable(default_hook, unraisable):
    error = unraisable.exc_value
    if not (isinstance(error, RuntimeError) and str(error) == 'Event loop is closed'):
        default_hook(unraisable)
