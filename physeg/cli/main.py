"""The ``physeg`` command line: one entry point, one sub-command per task.

Each sub-command lives in :mod:`physeg.cli` and registers itself; run
``physeg COMMAND --help`` for its options and examples.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from physeg import __version__

#: Modules under :mod:`physeg.cli` registered by :func:`build_parser`, in help order;
#: each exposes ``register(subparsers)``.
COMMANDS: tuple[str, ...] = ("paper", "data", "pgs", "simulate", "segment", "consistency", "train", "models", "reference")

EPILOG = """\
examples:
  physeg paper --profile demo          execute every notebook and build the site
  physeg data build --profile smoke    build the synthetic MPM cohort
  physeg COMMAND --help                options and examples of one command
"""


class OneLineErrorParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (exit 2), like every physeg error.

    argparse prints the whole usage block before the message; the usage is one
    ``--help`` away, so the line says that instead. Sub-command parsers inherit
    the class (``add_subparsers`` builds them with the parent's class).
    """

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Parser with every registered sub-command."""
    parser = OneLineErrorParser(
        prog="physeg",
        description=(
            "Acquisition-invariant brain MRI segmentation with informative "
            "uncertainties (Borges et al. 2021): simulate MPRAGE/SPGR images from "
            "quantitative maps, build physics gold standards, train and evaluate "
            "physics-conditioned segmenters, segment scans with volume intervals."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"physeg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"physeg.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
