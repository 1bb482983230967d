"""Execute the numbered notebooks with papermill and build the site.

The paper is the set of numbered jupytext notebooks under ``notebooks/``
(``00_overview.py``, ``01_simulation.py``, ...). For each one, in order, this
runner

1. converts it to ``.ipynb`` with jupytext,
2. adds a provenance header (profile, seed(s), commit, device, date of this
   execution; :func:`physeg.reproduce.provenance.header_cell`) that lands right
   after papermill's injected-parameters cell,
3. executes it with papermill, injecting ``profile`` after the cell tagged
   ``parameters``, in a kernel whose environment says which profile runs and
   that progress bars are off (:data:`KERNEL_ENV`), and writes the executed copy
   to ``_build/notebooks/``,
4. stops at the first failure, printing the notebook, the failing cell and the
   traceback, and exits non-zero.

Then it builds the static MyST site into ``_build/html`` (offline).
Notebooks talk to each other only through :mod:`physeg` (cached results under
:func:`physeg.paths.cache_root`), never through the working directory.

Usage::

    python -m physeg.reproduce.runner --profile demo      # or: physeg paper --profile demo
    python -m physeg.reproduce.runner --profile smoke --only 01 02 --no-site
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from physeg.io_safety import atomic_write_json
from physeg.paths import build_root, notebooks_dir
from physeg.profiles import PROFILES, get_profile
from physeg.reproduce import provenance
from physeg.reproduce.progress import RunProgress, load_estimate

log = logging.getLogger("physeg.reproduce.runner")

#: Environment of the notebook kernels besides ``PHYSEG_PROFILE``: a page is
#: read, not watched, so tqdm progress bars (which write to stderr) are off
#: unless a call asks for them explicitly.
KERNEL_ENV: dict[str, str] = {"TQDM_DISABLE": "1"}


class NotebookFailed(RuntimeError):
    """A notebook raised; carries what a reader needs to find the error."""

    def __init__(self, notebook: Path, cell_index: int | None, cell_source: str, traceback: str):
        self.notebook = notebook
        self.cell_index = cell_index
        self.cell_source = cell_source
        self.traceback = traceback
        where = f"cell {cell_index}" if cell_index is not None else "an unknown cell"
        super().__init__(f"notebook {notebook.name} failed in {where}")

    @classmethod
    def kernel_died(cls, notebook: Path, exc: BaseException) -> "NotebookFailed":
        """The kernel died or could not run (not an error in a cell): the message names the notebook."""
        first = (str(exc).strip().splitlines() or [""])[0]
        failure = cls(notebook, None, "", f"{exc.__class__.__name__}: {first}")
        hint = ("; finished work is cached: rerun with --only and a longer --cell-timeout (0: no limit) to resume"
                if "Timeout" in exc.__class__.__name__ else "")
        failure.args = (f"notebook {notebook.name}: the kernel died or could not run "
                        f"({exc.__class__.__name__}: {first or 'no message'}){hint}",)
        return failure

    def report(self) -> str:
        """Multi-line message: notebook, cell, the cell's source and the traceback."""
        return (
            f"\n{'=' * 72}\nFAILED: {self.notebook}\n"
            f"cell: {self.cell_index}\n{'-' * 72}\n{self.cell_source}\n{'-' * 72}\n"
            f"{self.traceback}\n{'=' * 72}"
        )


@dataclass(frozen=True)
class NotebookRun:
    """Outcome of one executed notebook."""

    source: Path
    executed: Path
    seconds: float


def discover_notebooks(folder: Path | None = None) -> list[Path]:
    """Numbered notebooks (``NN_name.py`` or ``NN_name.md``) in execution order."""
    folder = folder or notebooks_dir()
    found = [p for p in folder.iterdir() if p.suffix in {".py", ".md"} and p.name[:2].isdigit() and p.name[2] == "_"]
    return sorted(found, key=lambda p: p.name)


def _select(notebooks: list[Path], only: list[str] | None) -> list[Path]:
    if not only:
        return notebooks
    chosen = [nb for nb in notebooks if any(nb.name.startswith(prefix) for prefix in only)]
    if not chosen:
        raise ValueError(f"--only {only} matches none of {[nb.name for nb in notebooks]}")
    return chosen


def _failure_from(exc: Exception, source: Path, executed: Path) -> NotebookFailed:
    """Turn papermill's execution error into a :class:`NotebookFailed` with the cell source."""
    import nbformat

    cell_index = getattr(exc, "exec_count", None)
    traceback = "\n".join(getattr(exc, "traceback", []) or [str(exc)])
    cell_source = ""
    if executed.exists():
        nb = nbformat.read(executed, as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            if any(out.get("output_type") == "error" for out in cell.get("outputs", [])):
                cell_index, cell_source = i, cell.source
                break
    # Strip ANSI colour codes so logs and CI output stay readable.
    traceback = re.sub(r"\x1b\[[0-9;]*m", "", traceback)
    return NotebookFailed(source, cell_index, cell_source, traceback)


def _header_index(cells: list) -> int:
    """Where the provenance header goes: right after the ``parameters`` cell (papermill's
    injected cell then lands between the two), or first when there is none."""
    for i, cell in enumerate(cells):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return i + 1
    return 0


def execute_notebook(source: Path, *, profile: str, out_dir: Path, timeout_s: int | None = 3600) -> NotebookRun:
    """Convert ``source`` with jupytext and execute it with papermill into ``out_dir``.

    The executed copy gets the provenance header of this execution
    (:func:`physeg.reproduce.provenance.header_cell`) right after papermill's
    injected-parameters cell. ``timeout_s`` is the limit per cell, in seconds
    (``None``: none).

    Raises
    ------
    NotebookFailed
        If any cell raises; the executed copy with the error is still written.
    """
    import jupytext
    import papermill

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / "sources"
    staging.mkdir(parents=True, exist_ok=True)
    converted = staging / f"{source.stem}.ipynb"
    notebook = jupytext.read(source)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells.insert(_header_index(notebook.cells), provenance.header_cell(profile))
    jupytext.write(notebook, converted, fmt="ipynb")
    executed = out_dir / f"{source.stem}.ipynb"
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(converted),
            str(executed),
            parameters={"profile": profile},
            kernel_name="python3",
            cwd=str(out_dir),
            progress_bar=sys.stderr.isatty(),
            execution_timeout=timeout_s,
        )
    except papermill.PapermillExecutionError as exc:
        raise _failure_from(exc, source, executed) from exc
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001  (dead kernel, kernel that never started, timeout, ...)
        raise NotebookFailed.kernel_died(source, exc) from exc
    return NotebookRun(source=source, executed=executed, seconds=time.perf_counter() - start)


@contextlib.contextmanager
def _kernel_environment(*, profile: str) -> Iterator[None]:
    """Set ``PHYSEG_PROFILE`` and :data:`KERNEL_ENV` for the kernels (they inherit the
    environment of this process), and restore the previous values afterwards."""
    wanted = {"PHYSEG_PROFILE": profile, **KERNEL_ENV}
    previous = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


#: Limit per notebook cell (s) by profile: an hour catches a hung kernel on the laptop profiles; the long
#: profiles run single cells for hours (reference-long's 50 + 50 samples on 10 images per cell: about
#: 75 min; paper's training), so they have none. ``--cell-timeout`` overrides it.
CELL_TIMEOUT_S: dict[str, int] = {"smoke": 3600, "demo": 3600}


def cell_timeout(profile: str, requested: int | None = None) -> int | None:
    """Seconds a cell may run on ``profile`` (``None``: no limit); ``requested`` 0 lifts the limit."""
    if requested is not None:
        return None if requested == 0 else int(requested)
    return CELL_TIMEOUT_S.get(profile)


def _cell_seconds(text: str) -> int:
    """``--cell-timeout`` value: whole seconds, 0 for no limit (argparse reports anything else as a usage error)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (no limit) or a number of seconds, got {text!r}")
    return value


def merged_timings(path: Path, *, profile: str, seconds: dict[str, float], partial: bool) -> dict:
    """``timings.json`` content after a run: a partial run (``--only``) keeps the other notebooks' seconds
    from the same profile's previous record, so a resumed run still times every page."""
    merged: dict[str, float] = {}
    if partial and path.is_file():
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            doc = {}
        if isinstance(doc, dict) and doc.get("profile") == profile and isinstance(doc.get("seconds"), dict):
            merged = dict(doc["seconds"])
    merged.update(seconds)
    return {"profile": profile, "seconds": dict(sorted(merged.items()))}


#: Names of the executed notebooks the runner writes (``NN_name.ipynb``).
EXECUTED_NAME = re.compile(r"^\d\d_[^/]*\.ipynb$")


class ForeignFiles(ValueError):
    """The executed-notebooks folder holds something the runner did not write."""


def clear_executed(out_dir: Path) -> None:
    """Remove the executed notebooks of an earlier run from ``out_dir``, and nothing else.

    Raises :class:`ForeignFiles` (before deleting anything) when ``out_dir`` is
    not a folder or holds files the runner does not write.
    """
    if not out_dir.is_dir():
        raise ForeignFiles(f"{out_dir} is not a folder; move it or set PHYSEG_BUILD")
    entries = list(out_dir.iterdir())
    foreign = [p.name for p in entries if not (p.is_file() and EXECUTED_NAME.match(p.name))]
    if foreign:
        raise ForeignFiles(f"{out_dir} holds files physeg did not write ({foreign[0]}); a full run replaces the "
                           "executed notebooks there: move them away or set PHYSEG_BUILD")
    for p in entries:
        p.unlink()


def run_paper(
    *,
    profile: str,
    only: list[str] | None = None,
    notebooks_folder: Path | None = None,
    out_dir: Path | None = None,
    build_site: bool = True,
    timeout_s: int | None = None,
) -> list[NotebookRun]:
    """Execute the notebooks in order on ``profile`` and (optionally) build the site.

    A full run (``only=None``) first clears stale executed copies so the site
    never shows a page from an earlier run. ``timeout_s``: limit per cell
    (:func:`cell_timeout`: by default an hour on smoke and demo, none on the
    long profiles; 0 for none).
    """
    get_profile(profile)  # fail early on an unknown name
    out_dir = out_dir or build_root() / "notebooks"
    folder = notebooks_folder or notebooks_dir()
    if not folder.is_dir():
        raise ValueError(f"notebooks folder {folder} does not exist or is not a folder")
    notebooks = _select(discover_notebooks(folder), only)
    if not notebooks:  # before clearing anything: an empty folder never wipes earlier pages
        raise ValueError(f"no numbered notebooks (NN_name.py or NN_name.md) in {folder}")
    if only is None and out_dir.exists():
        clear_executed(out_dir)
    estimate = load_estimate(profile=profile, build_dir=out_dir.parent)
    progress = RunProgress([nb.name for nb in notebooks], estimate)
    log.info("profile %s, %d notebooks; time left estimated from %s", profile, len(notebooks), estimate.source)
    runs: list[NotebookRun] = []
    limit_s = cell_timeout(profile, timeout_s)
    with _kernel_environment(profile=profile):
        for source in notebooks:
            log.info("%s", progress.starting(source.name))
            run = execute_notebook(source, profile=profile, out_dir=out_dir, timeout_s=limit_s)
            log.info("%s -> %s", progress.finished(source.name, run.seconds), run.executed)
            runs.append(run)
    timings = {r.source.name: round(r.seconds, 1) for r in runs}
    record = out_dir.parent / "timings.json"
    atomic_write_json(record, merged_timings(record, profile=profile, seconds=timings, partial=only is not None))
    if build_site:
        from physeg.reproduce.site import build_site as _build_site

        html = _build_site(build_dir=out_dir.parent)
        log.info("site written to %s (open %s)", html, html / "index.html")
    return runs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``python -m physeg.reproduce.runner`` and ``physeg paper``."""
    parser.add_argument(
        "--profile", default=os.environ.get("PHYSEG_PROFILE", "demo"), choices=sorted(PROFILES),
        help="compute profile injected into every notebook (default: $PHYSEG_PROFILE or demo)",
    )
    parser.add_argument("--only", nargs="+", metavar="NN", help="run only notebooks whose names start with these prefixes, e.g. 01 02")
    parser.add_argument("--no-site", action="store_true", help="execute notebooks but do not build the site")
    parser.add_argument("--notebooks", type=Path, default=None, metavar="DIR",
                        help="folder of numbered notebooks (default: notebooks/ of this checkout)")
    parser.add_argument("--cell-timeout", type=_cell_seconds, default=None, metavar="SECONDS",
                        help="limit per notebook cell; 0 for none (default: 3600 on smoke and demo, none on the "
                             "longer profiles)")


def run_from_args(args: argparse.Namespace) -> int:
    """Entry point behind the CLI; returns an exit code."""
    try:
        runs = run_paper(profile=args.profile, only=args.only, notebooks_folder=args.notebooks,
                         build_site=not args.no_site, timeout_s=args.cell_timeout)
    except NotebookFailed as failure:
        print(failure.report(), file=sys.stderr)
        print(f"physeg paper: {failure}", file=sys.stderr)
        return 1
    except ValueError as exc:  # ForeignFiles, an unknown profile, a missing or empty notebooks folder, --only
        print(f"physeg paper: error: {exc}", file=sys.stderr)
        return 2
    total = sum(r.seconds for r in runs)
    print(f"physeg paper: executed {len(runs)} notebooks on profile {args.profile!r} in {total:.0f} s")
    print(f"executed notebooks: {build_root() / 'notebooks'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m physeg.reproduce.runner", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_from_args(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
