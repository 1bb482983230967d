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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
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
        code, msg = 1, message_of(exc) or exc.__class__.__name__
        if not isinstance(exc, RuntimeFailure):
            msg = f"{exc.__class__.__name__}: {msg}"
    log.debug("traceback:\n%s", traceback.format_exc())
    first = " ".join(msg.strip().splitlines()) if msg else "failed"
    print(f"physeg {command}: error: {first}", file=sys.stderr)
    return code


def message_of(exc: BaseException) -> str:
    """The text of an exception; a :class:`KeyError`'s message without the quotes ``str`` adds."""
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc)


#: Library exceptions that mean "what the user gave is wrong" when raised while reading inputs.
INPUT_ERRORS: tuple[type[Exception], ...] = (FileNotFoundError, NotADirectoryError, ValueError, KeyError)


@contextmanager
def usage_errors(*kinds: type[Exception]) -> Iterator[None]:
    """Re-raise ``kinds`` (default :data:`INPUT_ERRORS`) as :class:`UsageError`, same message.

    For the part of a command that reads and validates what the user gave:
    the library raises ordinary exceptions, the command decides they are usage
    errors (exit code 2) rather than failures of the work (exit code 1).
    """
    try:
        yield
    except UsageError:
        raise
    except kinds or INPUT_ERRORS as exc:
        raise UsageError(message_of(exc)) from exc


def check_outputs(folder: Path, files: list[Path], *, force: bool, elsewhere: str = "--output") -> None:
    """:class:`UsageError` unless a command may write ``files`` into ``folder``; touches nothing.

    ``folder`` must be a folder or absent; each file must be absent, or a file
    when ``force`` (the command replaces only the files it names, nothing else
    in the folder). ``elsewhere`` names the options that choose other names.
    """
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--output {folder} exists and is not a folder")
    for f in files:
        if f.exists() and not f.is_file():
            raise UsageError(f"{f} exists and is not a file")
        if f.exists() and not force:
            raise UsageError(f"{f} exists; use --force to replace it or choose another {elsewhere}")
