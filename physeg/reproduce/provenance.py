"""Provenance of a run: what produced the numbers a page shows.

Every published result carries the profile, the training seed(s), the git
commit, the device, the library versions and the date, so a reader can tell a
CPU ``demo`` page from a GPU ``paper`` page. :func:`collect` is the full record
(shown on the overview and training pages); :func:`header_cell` is the short
header the runner (:mod:`physeg.reproduce.runner`) writes into every executed
notebook, right after papermill's injected-parameters cell, and the site
template shows under each page's title.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess

from physeg.paths import REPO_ROOT

#: Cell tag of the provenance header (the site template places such a cell under the page title).
HEADER_TAG = "provenance"


def git_commit() -> str:
    """Short commit of the checkout, with ``+dirty`` when tracked files are modified."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def device_description() -> str:
    """Human-readable compute device: GPU name if CUDA is available, else CPU cores."""
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU)"
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def utc_now() -> str:
    """The current date and time in UTC, to the minute (``2026-11-25 16:20 UTC``)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def profile_seeds(profile: str) -> tuple[int, ...]:
    """Training seed(s) of a profile: ``profile.seeds`` when it lists several, else ``(profile.seed,)``."""
    from physeg.profiles import get_profile

    prof = get_profile(profile)
    seeds = tuple(getattr(prof, "seeds", ()) or ())
    return tuple(int(s) for s in seeds) if seeds else (int(prof.seed),)


def collect(profile: str) -> dict[str, str]:
    """Full provenance record for a run on ``profile``: commit, device, versions, date."""
    import monai
    import torch

    return {
        "profile": profile,
        "commit": git_commit(),
        "device": device_description(),
        "date_utc": utc_now(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
    }


def header_record(profile: str) -> dict[str, str]:
    """What heads a page: profile, seed(s), commit, device and date (UTC) of this execution."""
    seeds = profile_seeds(profile)
    return {
        "profile": profile,
        "seeds": ", ".join(map(str, seeds)),
        "commit": git_commit(),
        "device": device_description(),
        "date_utc": utc_now(),
    }


def header_markdown(record: dict[str, str]) -> str:
    """One line of Markdown for a :func:`header_record`."""
    label = "seeds" if "," in record["seeds"] else "seed"
    return (
        f"**Produced by** profile `{record['profile']}` · {label} {record['seeds']} · "
        f"commit `{record['commit']}` · {record['device']} · {record['date_utc']}"
    )


def header_cell(profile: str) -> dict:
    """A Jupyter markdown cell (nbformat 4) with the provenance header of an execution now.

    Tagged :data:`HEADER_TAG`; the record itself is kept in the cell's
    ``physeg_provenance`` metadata for tools that read executed notebooks.
    """
    import nbformat

    record = header_record(profile)
    cell = nbformat.v4.new_markdown_cell(header_markdown(record))
    cell.metadata["tags"] = [HEADER_TAG]
    cell.metadata["physeg_provenance"] = record
    return cell
