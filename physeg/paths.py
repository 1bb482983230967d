"""Where physeg reads and writes: one place, overridable by environment variables.

Nothing in the package or the notebooks uses paths relative to the current
working directory; everything is derived from here.

Environment variables
---------------------
``PHYSEG_CACHE``
    Root of generated data and cached results (default ``~/.cache/physeg``).
``PHYSEG_BUILD``
    Where executed notebooks and the site go (default ``<repo>/_build``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

#: Repository root (the folder holding ``pyproject.toml``) when physeg is used
#: from a checkout; notebooks and the site are only built from a checkout.
REPO_ROOT: Path = Path(__file__).resolve().parent.parent


def cache_root() -> Path:
    """Root folder for generated cohorts, checkpoints and metric tables."""
    root = Path(os.environ.get("PHYSEG_CACHE", Path.home() / ".cache" / "physeg"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def build_root() -> Path:
    """Folder for executed notebooks (``notebooks/``) and the site (``html/``)."""
    root = Path(os.environ.get("PHYSEG_BUILD", REPO_ROOT / "_build"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def notebooks_dir() -> Path:
    """Source folder of the numbered jupytext notebooks."""
    return REPO_ROOT / "notebooks"


def config_hash(config: dict[str, Any], *, length: int = 12) -> str:
    """Stable short hash of a JSON-serialisable configuration.

    Keys are sorted so that two dictionaries with the same content give the same
    hash; used to name cache folders after everything that produced them.
    """
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def hashed_path(kind: str, config: dict[str, Any]) -> Path:
    """Where :func:`hashed_dir` keeps the results of ``config``, without creating anything (for lookups)."""
    return cache_root() / kind / config_hash(config)


def hashed_dir(kind: str, config: dict[str, Any]) -> Path:
    """Cache folder ``<cache>/<kind>/<hash>`` for results produced by ``config``.

    The configuration is written next to the results as ``config.json`` so a
    folder always says what made it.
    """
    folder = hashed_path(kind, config)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / "config.json"
    if not cfg.exists():
        cfg.write_text(json.dumps(config, sort_keys=True, indent=2, default=str))
    return folder
