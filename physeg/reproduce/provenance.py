"""Provenance of a run: what produced the numbers a page shows.

Every published result carries the profile, the git commit, the device, the
library versions and the date, so a reader can tell a CPU ``demo`` page from a
GPU ``paper`` page.
"""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess

from physeg.paths import REPO_ROOT


def git_commit() -> str:
    """Short commit of the checkout, with ``+dirty`` when files are modified."""
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
    import os

    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU)"
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def collect(profile: str) -> dict[str, str]:
    """Provenance record for a run on ``profile``."""
    import monai
    import torch

    return {
        "profile": profile,
        "commit": git_commit(),
        "device": device_description(),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
    }
