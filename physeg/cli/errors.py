"""One error convention for every ``physeg`` command.

:class:`UsageError` (exit code 2): something the user gave is wrong or
missing -- a file, a parameter, units, an output path. :class:`RuntimeFailure`
(exit code 1): the inputs looked right but the work failed. :func:`run_cli`
turns both, and any other exception, into one line
``physeg <command>: error: ...`` on stderr; the traceback is logged at debug
level only (``physeg -v``).
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable
from typing import Any

log = logging.getLogger("physeg.cli")


class UsageError(Exception):
    """The user's input is wrong or missing (exit code 2)."""

    exit_code = 2


class RuntimeFailure(Exception):
    """The inputs looked right but the work failed (exit code 1)."""

    exit_code = 1


def run_cli(command: str, func: Callable[[], Any]) -> int:
    """Call ``func`` and map its errors to exit codes with one-line messages.

    Returns 0 on success, 2 for :class:`UsageError`, 1 for anything else; the
    message is ``physeg <command>: error: <text>`` on stderr, the traceback is
    only logged at debug level.
    """
    try:
        func()
        return 0
    except UsageError as exc:
        code, msg = 2, str(exc)
    except KeyboardInterrupt:
        code, msg = 1, "interrupted"
    except Exception as exc:  # noqa: BLE001 - last resort: one line, traceback at debug level
        code, msg = 1, str(exc) or exc.__class__.__name__
        if not isinstance(exc, RuntimeFailure):
            msg = f"{exc.__class__.__name__}: {msg}"
    log.debug("traceback:\n%s", traceback.format_exc())
    first = " ".join(msg.strip().splitlines()) if msg else "failed"
    print(f"physeg {command}: error: {first}", file=sys.stderr)
    return code
