"""Is a committed reference folder intact, and does it still describe what the code computes?

Two checks, in this order, on ``results/<profile>/``
(:mod:`physeg.reference.freeze` wrote it):

1. **Integrity**: every file against ``SHA256SUMS``
   (:func:`physeg.reference.records.verify_sums`). An altered, missing or
   unlisted file is an error naming it (:class:`ReferenceAltered`): numbers
   that are not the frozen ones are never shown.
2. **Staleness**: ``provenance.json`` against the current code and profile.
   The folder is *stale* when the profile's settings hash
   (:func:`physeg.reference.records.profile_hash`) differs (the changed
   settings are named), the profile no longer exists, or a code version of
   :func:`physeg.reference.records.code_versions` (training, evaluation, plans,
   cohort generator) or the freeze layout changed. Stale numbers are still
   shown, with the reason, because they are what that code produced.

The current profile and versions are passed in (resolved at the edge: the
notebook or the CLI), so a test can change either.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from physeg.reference import records

ABSENT, ALTERED, STALE, CURRENT = "absent", "altered", "stale", "current"


class ReferenceAltered(ValueError):
    """A committed reference file does not match ``SHA256SUMS`` (the message names the files)."""


@dataclass
class ReferenceStatus:
    """Outcome of :func:`reference_status` for one folder."""

    profile: str
    folder: Path
    #: :data:`ABSENT`, :data:`ALTERED`, :data:`STALE` or :data:`CURRENT`.
    state: str
    reasons: list[str] = field(default_factory=list)
    provenance: dict[str, Any] | None = None

    @property
    def usable(self) -> bool:
        """Whether the frozen numbers may be shown (intact; current or stale with the reason)."""
        return self.state in (STALE, CURRENT)

    def table(self, name: str) -> pd.DataFrame | None:
        """``<folder>/<name>.csv`` when :attr:`usable` and present, else ``None``."""
        path = self.folder / f"{name}.csv"
        return pd.read_csv(path) if self.usable and path.is_file() else None


def _changed_settings(frozen: Mapping[str, Any], now: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ between two :meth:`Profile.to_dict` records."""
    out = []
    for key in sorted(set(frozen) | set(now)):
        a, b = frozen.get(key), now.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _changed_settings(a, b, f"{prefix}{key}.")
        elif json.dumps(a, default=str) != json.dumps(b, default=str):
            out.append(f"{prefix}{key} {a!r} → {b!r}")
    return out


def staleness(provenance: Mapping[str, Any], *, profile: Any | None, versions: Mapping[str, str]) -> list[str]:
    """Why a frozen folder no longer matches ``profile`` (``None``: no longer defined) and ``versions``.

    Empty list: current. Each reason is one sentence naming what changed.
    """
    name = provenance.get("profile", "?")
    reasons = []
    if profile is None:
        reasons.append(f"profile {name!r} no longer exists in physeg.profiles")
    elif provenance.get("profile_hash") != records.profile_hash(profile):
        changed = _changed_settings(provenance.get("profile_settings") or {}, profile.to_dict())
        reasons.append(f"profile {name!r} changed since the freeze (settings hash {provenance.get('profile_hash')} → "
                       f"{records.profile_hash(profile)}" + (f": {'; '.join(changed)})" if changed else ")"))
    frozen = provenance.get("code_versions") or {}
    for key in sorted(set(frozen) | set(versions)):
        if str(frozen.get(key)) != str(versions.get(key)):
            reasons.append(f"{key} code version {frozen.get(key)} at the freeze, {versions.get(key)} now")
    if provenance.get("freeze_version") != records.FREEZE_VERSION:
        reasons.append(f"frozen with layout {provenance.get('freeze_version')}, this code reads {records.FREEZE_VERSION}")
    return reasons


def check_reference(folder: Path, *, profile: Any | None, versions: Mapping[str, str]) -> ReferenceStatus:
    """Integrity then staleness of ``folder``; raises :class:`ReferenceAltered` naming altered files.

    Raises ``FileNotFoundError`` when ``folder`` or its ``SHA256SUMS`` is absent.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no reference results at {folder}")
    problems = records.verify_sums(folder)
    if problems:
        raise ReferenceAltered(f"{folder} does not match its {records.SUMS_FILE}: " + "; ".join(problems))
    path = folder / records.PROVENANCE_FILE
    if not path.is_file():
        raise ReferenceAltered(f"{path} is missing (every frozen folder has one)")
    try:
        prov = json.loads(path.read_text())
    except ValueError as exc:
        raise ReferenceAltered(f"{path} is not JSON ({exc})") from None
    reasons = staleness(prov, profile=profile, versions=versions)
    return ReferenceStatus(profile=str(prov.get("profile", folder.name)), folder=folder,
                           state=STALE if reasons else CURRENT, reasons=reasons, provenance=prov)


def reference_status(folder: Path, *, profile: Any | None, versions: Mapping[str, str]) -> ReferenceStatus:
    """:func:`check_reference` for a page: never raises; absent and altered folders become states."""
    folder = Path(folder)
    try:
        return check_reference(folder, profile=profile, versions=versions)
    except FileNotFoundError as exc:
        return ReferenceStatus(profile=folder.name, folder=folder, state=ABSENT, reasons=[str(exc)])
    except (ReferenceAltered, ValueError) as exc:
        return ReferenceStatus(profile=folder.name, folder=folder, state=ALTERED, reasons=[str(exc)])


def committed_reference(name: str = "reference") -> ReferenceStatus:
    """:func:`reference_status` of this checkout's ``results/<name>/`` against this checkout's profile ``name``
    and code versions: what a page (an edge, like the CLI) shows under its reference columns."""
    from physeg.profiles import PROFILES

    return reference_status(records.RESULTS_ROOT / name, profile=PROFILES.get(name),
                            versions=records.code_versions(PROFILES.get(name)))


#: The committed runs the results pages show beside this run, in column order: the CPU reference
#: (360 training steps) and the same profile trained 4x longer on a GPU (``reference-long``).
COMMITTED_RUNS: tuple[str, ...] = ("reference", "reference-long")


def committed_runs(names: tuple[str, ...] = COMMITTED_RUNS) -> dict[str, ReferenceStatus]:
    """``{name: committed_reference(name)}`` for the runs a results page shows, in column order."""
    return {name: committed_reference(name) for name in names}


def committed_profiles(root: Path | None = None) -> list[str]:
    """Profiles with a frozen folder (one holding ``SHA256SUMS``) under ``root`` (default ``results/``)."""
    root = Path(root) if root is not None else records.RESULTS_ROOT
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / records.SUMS_FILE).is_file())
