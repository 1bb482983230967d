"""``physeg paper``: execute every notebook with papermill and build the site."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from physeg.cli.errors import RuntimeFailure, UsageError, run_cli
from physeg.paths import build_root, notebooks_dir
from physeg.profiles import get_profile
from physeg.reproduce import runner

EPILOG = """\
examples:
  physeg paper --profile demo                       every notebook, then the site (_build/html)
  physeg paper --profile smoke --only 01 02 --no-site
  physeg paper --profile smoke --notebooks my_notebooks/ --no-site
  physeg paper --profile reference --only 05 06 --cell-timeout 0   resume a long run, no limit per cell

A full run (no --only) replaces the executed notebooks in $PHYSEG_BUILD/notebooks; it refuses
when that folder holds anything but executed notebooks (NN_name.ipynb).
exit codes: 0 ok, 2 usage error (profile, notebooks folder, --only), 1 a notebook or the site
  build failed (the failing notebook, cell and traceback are printed above the error line).
"""



def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "paper",
        help="execute the notebooks (papermill) and build the offline site",
        description=runner.__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    runner.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``physeg paper``: exit code 0, 2 (usage) or 1 (failure), one error line on stderr."""
    return run_cli("paper", lambda: paper_from_args(args))


def _check(args: argparse.Namespace) -> None:
    """:class:`UsageError` for anything wrong with the options, before any notebook runs or file moves."""
    try:
        get_profile(args.profile)  # $PHYSEG_PROFILE is the default and escapes argparse's choices
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    folder = Path(args.notebooks) if args.notebooks is not None else notebooks_dir()
    if not folder.is_dir():
        raise UsageError(f"notebooks folder {folder} does not exist or is not a folder")
    notebooks = runner.discover_notebooks(folder)
    if not notebooks:
        raise UsageError(f"no numbered notebooks (NN_name.py or NN_name.md) in {folder}")
    if args.only and not any(nb.name.startswith(p) for nb in notebooks for p in args.only):
        raise UsageError(f"--only {' '.join(args.only)} matches none of {[nb.name for nb in notebooks]}")
    executed = build_root() / "notebooks"
    if not args.only and executed.exists():
        if not executed.is_dir():
            raise UsageError(f"{executed} is a file, not the executed-notebooks folder; move it or set PHYSEG_BUILD")
        foreign = [p.name for p in executed.iterdir() if not (p.is_file() and runner.EXECUTED_NAME.match(p.name))]
        if foreign:
            raise UsageError(f"{executed} holds files physeg did not write ({foreign[0]}); a full run replaces "
                             "that folder: move them away or set PHYSEG_BUILD")


def paper_from_args(args: argparse.Namespace) -> None:
    """Check the options, execute the notebooks, build the site; a failing notebook is reported in full."""
    _check(args)
    try:
        runs = runner.run_paper(profile=args.profile, only=args.only, notebooks_folder=args.notebooks,
                                build_site=not args.no_site, timeout_s=args.cell_timeout)
    except runner.NotebookFailed as failure:
        print(failure.report(), file=sys.stderr)  # the notebook's cell and traceback: what to fix
        raise RuntimeFailure(str(failure)) from None
    total = sum(r.seconds for r in runs)
    print(f"physeg paper: executed {len(runs)} notebooks on profile {args.profile!r} in {total:.0f} s")
    print(f"executed notebooks: {build_root() / 'notebooks'}")
