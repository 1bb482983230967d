"""The trained models of an evaluation: model folders (``plans.json``), training, loading.

A model folder is identified by the :class:`~physeg.models.plans.Plans` it
holds (model name and sequence), never by its file name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from physeg.models.plans import PLANS_FILE, Plans
from physeg.profiles import Profile


def _folder_entries(trained: Any) -> list[Path]:
    """Every folder in nested paths, mappings, iterables or objects with a ``folder``."""
    if isinstance(trained, (str, Path)):
        return [Path(trained)]
    if isinstance(trained, (Mapping, Iterable)):
        return [f for v in (trained.values() if isinstance(trained, Mapping) else trained)
                for f in _folder_entries(v)]
    return [Path(trained.folder)] if hasattr(trained, "folder") else []


def model_folders(trained: Any) -> dict[tuple[str, str], Path]:
    """``{(model name, sequence): folder}`` from whatever ``train_all`` returned (reads ``plans.json``)."""
    if isinstance(trained, Mapping) and "folders" in trained:
        trained = trained["folders"]
    out = {}
    for f in _folder_entries(trained):
        if (f / PLANS_FILE).exists():
            plans = Plans.read(f)
            out[(plans.name, plans.sequence)] = f
    return out


def train_models(profile: Profile) -> dict[tuple[str, str], Path]:
    """Train (or reuse cached) models of the profile: ``{(name, sequence): folder}``."""
    from physeg.training.orchestrate import train_all

    return model_folders(train_all(profile))


def load_models(folders: Mapping[tuple[str, str], Path], *, names: Iterable[str] | None = None,
                device: str = "cpu") -> dict[tuple[str, str], Any]:
    """``{(name, sequence): model in eval mode}`` for the requested names (default all)."""
    from physeg.training.checkpoint import load_model

    names = set(names) if names is not None else None
    return {k: load_model(f, device=device)[0] for k, f in folders.items() if names is None or k[0] in names}
