"""The ``physeg`` command line: :func:`main` and one module per sub-command.

Every command follows one convention (:mod:`physeg.cli.errors`): a mistake in
what the user gave exits 2, a failure of the work exits 1, and either prints
one line ``physeg <command>: error: ...`` on stderr, never a traceback.

Imports: :func:`main` builds the parser of every command at start-up, so the
command modules import only light modules at the top; torch, pandas and the
loaders that pull them are imported inside the function that does the work,
so ``physeg --help`` and ``physeg data list`` stay instant.
"""

from physeg.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
