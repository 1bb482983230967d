"""Model weights shipped inside physeg: ``physeg segment`` without ``--model``.

Shipped model folders live under the package, ``physeg/weights/<sequence>/<model>/``
(package data), each a trimmed copy of a trained model folder
(:data:`SHIPPED_FILES`: ``plans.json``, ``best.pt``, ``finished.json``,
``metrics.csv``, ``calibration.json`` when present; never the resumable
``last.pt``). Their sha256 and size are recorded in ``data_manifest.yaml``
under the entry :data:`ENTRY` (``kind: weights``), with the training profile,
voxel size, parameter ranges and validation figures that ``physeg models
list`` shows. :func:`resolve_default_model` verifies every file of a shipped
folder against the manifest **before** the folder is used; a mismatch is a
:class:`~physeg.cli.errors.RuntimeFailure` naming the file, never a silently
loaded file.

Default model of a sequence: the first shipped one in :data:`DEFAULT_ORDER`
(the paper's Phys-Strat-Aug with epistemic uncertainty first: intervals from
Monte-Carlo dropout, paper §2.4) among those that validated within
:data:`DEFAULT_DICE_MARGIN` of the best shipped model (:func:`default_for`). No shipped model for the sequence is a
:class:`~physeg.cli.errors.UsageError` telling the user to pass ``--model``.

The weights root and the manifest are keyword arguments (defaults: the
package folder and the checkout's manifest), resolved at the command-line edge
by :func:`locations_from_env` (``PHYSEG_WEIGHTS``, ``PHYSEG_WEIGHTS_MANIFEST``),
so tests ship into temporary folders. :func:`ship_model` copies a trained
folder in and records it (``physeg reference ship``).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from physeg.cli.errors import RuntimeFailure, UsageError
from physeg.data.manifest import MANIFEST_PATH, file_table, load_manifest, safe_relative_path, verify_files
from physeg.io_safety import atomic_write_text

#: Default weights root: ``physeg/weights`` inside the installed package.
WEIGHTS_ROOT: Path = Path(__file__).resolve().parent.parent / "weights"
#: Manifest entry recording the shipped weights.
ENTRY: str = "shipped-weights"
WEIGHTS_ENV, MANIFEST_ENV = "PHYSEG_WEIGHTS", "PHYSEG_WEIGHTS_MANIFEST"
#: Files of a model folder that are shipped (``plans.json`` and ``best.pt`` are required).
SHIPPED_FILES: tuple[str, ...] = ("plans.json", "best.pt", "finished.json", "metrics.csv", "calibration.json")
REQUIRED_FILES: tuple[str, ...] = ("plans.json", "best.pt")
#: Preference order of the default model of a sequence.
#: (uncertainty models before deterministic ones: an interval is what a user of the volumes needs).
DEFAULT_ORDER: tuple[str, ...] = ("Phys-Strat-Aug-Epistemic", "Phys-Strat-Aug-Aleatoric", "Phys-Strat-Aug",
                                  "Phys-Strat", "Phys-Base", "Baseline-Epistemic", "Baseline-Aleatoric", "Baseline")


@dataclass(frozen=True)
class ShippedModel:
    """One shipped model: its folder and its manifest record."""

    key: str
    folder: Path
    record: dict[str, Any]

    @property
    def model(self) -> str:
        return str(self.record.get("model", self.key.split("/")[-1]))

    @property
    def sequence(self) -> str:
        return str(self.record.get("sequence", self.key.split("/")[0]))


def locations_from_env() -> dict[str, Path]:
    """``{"root": …, "manifest_path": …}`` from ``PHYSEG_WEIGHTS`` / ``PHYSEG_WEIGHTS_MANIFEST`` (CLI edge)."""
    return {"root": Path(os.environ.get(WEIGHTS_ENV) or WEIGHTS_ROOT),
            "manifest_path": Path(os.environ.get(MANIFEST_ENV) or MANIFEST_PATH)}


def registry(*, root: Path = WEIGHTS_ROOT, manifest_path: Path = MANIFEST_PATH) -> dict[str, ShippedModel]:
    """Shipped models recorded in the manifest, ``{"<sequence>/<model>": ShippedModel}`` (may be empty).

    Raises ``ValueError`` naming the manifest for a malformed entry.
    """
    entry = load_manifest(manifest_path)["datasets"].get(ENTRY) or {}
    models = entry.get("models") or {}
    if not isinstance(models, dict):
        raise ValueError(f"{manifest_path}: {ENTRY}.models must map '<sequence>/<model>' to records")
    out = {}
    for key, record in models.items():
        rel = safe_relative_path(key, what=f"{manifest_path}: {ENTRY}")
        if len(rel.parts) != 2 or not isinstance(record, dict) or not isinstance(record.get("files"), dict):
            raise ValueError(f"{manifest_path}: {ENTRY} entry {key!r} must be '<sequence>/<model>' with a files table")
        for name in record["files"]:
            safe_relative_path(name, what=f"{manifest_path}: {ENTRY} {key}", single=True)
        out[key] = ShippedModel(key=key, folder=Path(root) / rel, record=record)
    return out


def verify_shipped(model: ShippedModel) -> None:
    """:class:`RuntimeFailure` naming the file unless every recorded file matches its sha256 and size."""
    problems = verify_files(model.folder, model.record["files"])
    if problems:
        raise RuntimeFailure(f"shipped weights {model.key} fail verification against the manifest: "
                             + "; ".join(problems) + " (reinstall physeg or pass --model FOLDER)")


#: A shipped model is a default candidate only if its validation Dice (mean of GM and WM, as recorded in
#: the manifest; Monte-Carlo votes for an epistemic model) is within this of the best shipped model's.
DEFAULT_DICE_MARGIN: float = 0.03


def _validated_dice(model: ShippedModel) -> float | None:
    val = model.record.get("validation") or {}
    values = [val.get(f"val_dice_{t}") for t in ("GM", "WM")]
    return None if any(v is None for v in values) else sum(float(v) for v in values) / len(values)


def default_for(models: Iterable[ShippedModel], *, sequence: str) -> ShippedModel | None:
    """The default shipped model of ``sequence``; ``None`` if none is shipped.

    First in :data:`DEFAULT_ORDER` (the paper's epistemic Phys-Strat-Aug first:
    intervals from Monte-Carlo dropout) among the models whose recorded
    validation Dice is within :data:`DEFAULT_DICE_MARGIN` of the best shipped
    one for the sequence: an uncertainty model that segments worse than its
    deterministic sibling is not made the default. Models without validation
    figures count as candidates.
    """
    rank = {name: i for i, name in enumerate(DEFAULT_ORDER)}
    shipped = [m for m in models if m.sequence == sequence]
    scores = {m.key: _validated_dice(m) for m in shipped}
    best = max((d for d in scores.values() if d is not None), default=None)
    candidates = [m for m in shipped if best is None or scores[m.key] is None
                  or scores[m.key] >= best - DEFAULT_DICE_MARGIN]
    return min(candidates, key=lambda m: (rank.get(m.model, len(rank)), m.model)) if candidates else None


def resolve_default_model(sequence: str, *, root: Path = WEIGHTS_ROOT, manifest_path: Path = MANIFEST_PATH) -> Path:
    """Folder of the shipped default model for ``sequence``, verified against the manifest.

    Raises :class:`UsageError` when no weights are shipped for ``sequence`` and
    :class:`RuntimeFailure` when a shipped file fails its sha256 check.
    """
    chosen = default_for(registry(root=root, manifest_path=manifest_path).values(), sequence=sequence)
    if chosen is None:
        raise UsageError(f"no weights are shipped for {sequence} in this installation; pass --model FOLDER "
                         "(a trained model folder, see `physeg train`)")
    verify_shipped(chosen)
    return chosen.folder


def default_model_for_images(images: list[str], *, sequence: str | None, ti: float | None, tr: float | None,
                             te: float | None, fa: float | None, root: Path = WEIGHTS_ROOT,
                             manifest_path: Path = MANIFEST_PATH) -> Path:
    """The shipped model for the sequence of the first image (flags, else its sidecar; :func:`resolve_acquisition`)."""
    from physeg.data.acquisition import resolve_acquisition

    if not images:
        raise UsageError("give at least one image")
    acq = resolve_acquisition(images[0], sequence=sequence, ti=ti, tr=tr, te=te, fa=fa)
    return resolve_default_model(acq.sequence, root=root, manifest_path=manifest_path)


def _record(folder: Path, files: dict[str, Any]) -> dict[str, Any]:
    """Manifest record of a model folder: what it is, how it was trained, how it validated."""
    from physeg.models.plans import Plans
    from physeg.training.checkpoint import read_finished

    plans = Plans.read(folder)
    finished = read_finished(folder) or {}
    profile = (plans.provenance or {}).get("profile") or {}
    return {
        "model": plans.name, "sequence": plans.sequence, "seed": plans.seed,
        "profile": profile.get("name") or "unknown", "voxel_size_mm": plans.voxel_size_mm,
        "patch_size": plans.patch_size,
        "channels": list(plans.network.channels), "training_version": plans.training_version,
        "training_ranges": {k: [float(v[0]), float(v[1])] for k, v in plans.training_ranges.items()},
        "validation": {k: float(v) for k, v in finished.items() if k.startswith("val_dice_")},
        "epochs": finished.get("epochs"), "source_folder": folder.name, "files": files,
    }


def _write_manifest(manifest_path: Path, key: str, record: dict[str, Any]) -> None:
    manifest = load_manifest(manifest_path)
    entry = manifest["datasets"].setdefault(ENTRY, {})
    entry.setdefault("kind", "weights")
    entry.setdefault("description", "trained model folders shipped inside physeg (physeg/weights/<sequence>/<model>/), "
                                    "verified against these sha256 before use by physeg segment")
    entry.setdefault("models", {})
    entry["models"] = {**(entry["models"] or {}), key: record}
    atomic_write_text(manifest_path, yaml.safe_dump(manifest, sort_keys=False, width=100))


def ship_model(folder: Path, *, root: Path = WEIGHTS_ROOT, manifest_path: Path = MANIFEST_PATH,
               calibration: Path | None = None, force: bool = False) -> ShippedModel:
    """Copy a trained model folder into ``root/<sequence>/<model>/`` and record its sha256 in the manifest.

    ``calibration`` (optional) becomes the shipped ``calibration.json``. Refuses
    (:class:`UsageError`, nothing written) a folder without ``plans.json`` or
    ``best.pt``, and an existing destination unless ``force`` and the manifest
    records it (only its recorded files are replaced).
    """
    from physeg.inference.model_folder import read_model_info

    folder = Path(folder)
    info = read_model_info(folder, calibration=calibration)  # UsageError for a foreign folder or calibration
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise UsageError(f"{folder} has no {missing[0]}: not a trained model folder")
    key = f"{info.sequence}/{info.name}"
    dest = Path(root) / key
    known = registry(root=root, manifest_path=manifest_path)
    if dest.exists() and not (force and key in known):
        raise UsageError(f"{dest} exists; " + ("use --force to replace it" if key in known
                                               else "it is not recorded in the manifest: move it away"))
    tmp = dest.parent / f".{dest.name}.ship-tmp"
    if tmp.exists():
        shutil.rmtree(tmp)  # our own leftover
    tmp.mkdir(parents=True)
    try:
        for name in SHIPPED_FILES:
            if (folder / name).is_file() and not (name == "calibration.json" and calibration is not None):
                shutil.copyfile(folder / name, tmp / name)
        if calibration is not None:
            shutil.copyfile(calibration, tmp / "calibration.json")
        record = _record(tmp, file_table(tmp)) | {"source_folder": folder.name}
        if dest.exists():
            for name in known[key].record["files"]:
                (dest / name).unlink(missing_ok=True)
            dest.rmdir()
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    _write_manifest(Path(manifest_path), key, record)
    return ShippedModel(key=key, folder=dest, record=record)
