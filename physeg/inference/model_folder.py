"""A trained model folder as ``physeg segment`` uses it: plans, calibration, network, device.

The folder's ``plans.json`` is read by :class:`physeg.models.plans.Plans` (the
one strict reader: no guessing of keys); a ``calibration.json`` next to it,
or the file given with ``--calibration``, calibrates the volume intervals
(:mod:`physeg.inference.calibration_io`). Missing or foreign folders and an
unavailable device are the user's mistakes (:class:`UsageError`); a
checkpoint that does not load, or a ``best.pt``, ``plans.json`` or
``calibration.json`` that differs from the sha256 recorded at training time
(``integrity.json``, :mod:`physeg.io_safety`), is a :class:`RuntimeFailure`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from physeg.cli.errors import RuntimeFailure, UsageError
from physeg.conventions import TISSUE_NAMES
from physeg.inference.calibration_io import CALIBRATION_FILE, load_calibration
from physeg.io_safety import IntegrityError, read_integrity, verify_file
from physeg.models.plans import PLANS_FILE, Plans, PlansError
from physeg.training.checkpoint import BEST, read_finished


#: Validation Dice below which a tissue's volume from this model is flagged as not a measurement.
UNRELIABLE_DICE: float = 0.05


@dataclass
class ModelInfo:
    """A model folder, its :class:`~physeg.models.plans.Plans` and the interval calibration in use."""

    folder: Path
    plans: Plans
    #: tissue → PercentileCalibration, or ``None`` (raw sample percentiles).
    calibration: Any = None
    calibration_source: str | None = None

    @property
    def name(self) -> str:
        return self.plans.name

    @property
    def sequence(self) -> str:
        return self.plans.sequence

    @cached_property
    def validation_dice(self) -> dict[str, float]:
        """Validation Dice per tissue from the folder's ``finished.json`` (``{}`` without one; read once)."""
        try:
            finished = read_finished(self.folder) or {}
        except (OSError, ValueError):
            return {}
        return {t: float(finished[f"val_dice_{t}"]) for t in TISSUE_NAMES
                if isinstance(finished.get(f"val_dice_{t}"), (int, float))}

    @property
    def unreliable_tissues(self) -> list[str]:
        """Tissues the model validated at Dice below :data:`UNRELIABLE_DICE`: their volumes measure nothing."""
        return [t for t, d in self.validation_dice.items() if d < UNRELIABLE_DICE]

    def describe_range(self) -> str:
        """The training box in user units: ``"TI 600–1200 ms"``, ``"FA 5–30°"``."""
        return ", ".join(
            f"FA {math.degrees(lo):.3g}–{math.degrees(hi):.3g}°" if n == "FA"
            else f"{n} {1000 * lo:.4g}–{1000 * hi:.4g} ms"
            for n, (lo, hi) in self.plans.training_ranges.items()
        )


def read_model_info(folder: str | Path, *, calibration: str | Path | None = None) -> ModelInfo:
    """``plans.json`` of a trained model folder and its calibration (``calibration`` overrides the folder's).

    Raises :class:`UsageError` when the folder, its ``plans.json`` or the
    calibration file is missing or unreadable.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"model folder {folder} does not exist (train one with the notebooks, see README)")
    try:
        record = read_integrity(folder)
        for name in (PLANS_FILE, BEST):  # before any output is touched (load_network checks best.pt again)
            verify_file(folder, name, record=record)
        plans = Plans.read(folder)
    except IntegrityError as exc:
        raise RuntimeFailure(str(exc)) from None
    except PlansError as exc:
        raise UsageError(str(exc)) from None
    cal_path = Path(calibration) if calibration is not None else folder / CALIBRATION_FILE
    if calibration is None and not cal_path.is_file():
        return ModelInfo(folder=folder, plans=plans)
    if calibration is None:
        try:
            verify_file(folder, CALIBRATION_FILE, record=record)
        except IntegrityError as exc:
            raise RuntimeFailure(str(exc)) from None
    return ModelInfo(folder=folder, plans=plans, calibration=load_calibration(cal_path),
                     calibration_source=str(cal_path))


def load_network(info: ModelInfo, *, device: torch.device) -> torch.nn.Module:
    """The trained network (:func:`physeg.training.checkpoint.load_model`, best weights), eval mode."""
    from physeg.training.checkpoint import load_model

    try:
        model, _ = load_model(info.folder, device=device)
    except (IntegrityError, RuntimeFailure) as exc:  # already one line naming the file
        raise RuntimeFailure(f"cannot load the model in {info.folder}: {exc}") from None
    except Exception as exc:  # noqa: BLE001  (a broken checkpoint fails in many ways)
        raise RuntimeFailure(f"cannot load the model in {info.folder} ({exc.__class__.__name__}: {exc})") from exc
    return model.eval()


def pick_device(name: str = "auto") -> torch.device:
    """``cpu``, ``cuda`` (UsageError when absent) or ``auto``: the user's ``--device``, checked.

    ``auto`` is resolved by :func:`physeg.training.distributed.resolve_device`
    (the one place that picks CUDA when available).
    """
    from physeg.training.distributed import resolve_device

    name = (name or "auto").lower()
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but no CUDA device is available (use --device cpu or auto)")
    if name not in ("cpu", "cuda", "auto"):
        raise UsageError(f"--device must be cpu, cuda or auto; got {name!r}")
    return resolve_device(name)
