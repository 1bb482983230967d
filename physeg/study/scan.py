r"""Segment one scan in memory: the per-scan step of a study (paper §2.1, §2.4).

The same steps as :func:`physeg.inference.segment.segment_images` (read and
validate, acquisition parameters, out-of-distribution check, resample to the
model's voxel size, normalise, Monte-Carlo samples through the one
:class:`~physeg.inference.predictor.Predictor`, back to the input grid), for
one image whose model is chosen by its sequence, and with the sample volumes
summarised for the study table instead of written to a folder.

Volume summary per tissue :math:`t` from the :math:`n` sample volumes
:math:`V_{t,s} = N_{t,s}\,v` (ml, model grid):

* ``median_ml``: :math:`\operatorname{median}_s V_{t,s}`, plus the shift of a
  *located* or *scaled* calibration (the samples are moved by its ``shift_ml``
  before any interval is taken, :mod:`physeg.evaluation.calibration`);
* ``p50_low_ml``/``p50_high_ml`` and ``p95_low_ml``/``p95_high_ml``: the 50 %
  and 95 % intervals of the same samples, recalibrated (Eaton-Rosen et al.
  2018, :class:`~physeg.evaluation.calibration.PercentileCalibration`) when
  the model's calibration holds that level (``calibrated_50``/``calibrated_95``),
  else the raw central sample percentiles; each interval contains the median;
* ``sd_aleatoric_ml`` or ``sd_epistemic_ml``: the sample standard deviation
  (ddof 1) of :math:`V_{t,s}`, under the kind of uncertainty the model samples
  (one model samples one kind; the other is empty, ``None``; a deterministic
  model has neither);
* ``label_map_ml``: the volume of the written label map (input grid).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from physeg.conventions import TISSUES
from physeg.data.acquisition import Acquisition, resolve_acquisition, sequence_from_sidecar
from physeg.data.nifti import read_volume, sidecar_path
from physeg.study.models import ModelChooser, StudyModel

#: Interval levels of the study table.
LEVELS: tuple[float, ...] = (0.5, 0.95)


@dataclass
class ScanResult:
    """One segmented scan, in memory: input grid arrays and the volume summary."""

    image: np.ndarray
    img: nib.Nifti1Image
    labels: np.ndarray
    probabilities: np.ndarray
    acquisition: Acquisition
    model: StudyModel
    in_distribution: bool
    warnings: list[str]
    volumes: dict[str, dict[str, Any]]
    n_samples: int
    seconds: float


def level_key(level: float) -> str:
    """``0.5`` → ``"p50"``, ``0.95`` → ``"p95"``."""
    return f"p{round(100 * level)}"


def volume_summary(samples_ml: np.ndarray, *, calibration: Any, kind: str,
                   label_map_ml: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Per tissue: median, 50 %/95 % intervals, the sample SD by kind, label-map volume (module docstring).

    ``samples_ml`` ``(n, 3)`` in :data:`~physeg.conventions.TISSUES` order;
    ``calibration`` tissue → PercentileCalibration or ``None``; ``kind`` the
    model's uncertainty (``aleatoric``/``epistemic``/``none``).
    """
    from physeg.evaluation.calibration import volume_interval

    out = {}
    for j, tissue in enumerate(TISSUES):
        s = np.asarray(samples_ml, float)[:, j]
        tissue_cal = None if calibration is None else calibration[tissue]
        row: dict[str, Any] = {}
        for level in LEVELS:
            med, lo, hi, cal = volume_interval(s, tissue_cal, level)
            key = level_key(level)
            row["median_ml"], row[f"{key}_low_ml"], row[f"{key}_high_ml"] = med, lo, hi
            row[f"calibrated_{key[1:]}"] = cal
        sd = float(s.std(ddof=1)) if s.size > 1 else 0.0
        row["sd_aleatoric_ml"] = sd if kind == "aleatoric" else None
        row["sd_epistemic_ml"] = sd if kind == "epistemic" else None
        row["label_map_ml"] = float(label_map_ml[tissue])
        out[tissue] = row
    return out


def scan_acquisition(path: Path, *, hint: str | None) -> Acquisition:
    """Parameters from the sidecar; the ``acq-`` hint names the sequence only when the sidecar does not."""
    side = sidecar_path(path)
    named = None
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
            named = sequence_from_sidecar(meta) if isinstance(meta, dict) else None
        except (OSError, ValueError):
            named = None  # resolve_acquisition reports the unreadable sidecar
    return resolve_acquisition(path, sequence=None if named else hint)


def segment_scan(path: str | Path, *, hint: str | None, models: ModelChooser, n_samples: int,
                 seed: int) -> ScanResult:
    """Read, check and segment one scan with the model of its sequence (module docstring).

    Raises :class:`~physeg.cli.errors.UsageError` for a bad image, sidecar or
    missing model, :class:`~physeg.cli.errors.RuntimeFailure` when inference fails.
    """
    from physeg.inference.segment import predict_on_input_grid, range_warnings

    t0 = time.perf_counter()
    path = Path(path)
    data, img = read_volume(path)
    acq = scan_acquisition(path, hint=hint)
    model = models.for_sequence(acq.sequence)
    inside, warnings = range_warnings(path, acq=acq, info=model.info)
    pred = predict_on_input_grid(path, data=data, affine=img.affine, acq=acq, predictor=model.predictor(),
                                 voxel_size_mm=model.info.plans.voxel_size_mm, n=n_samples, seed=seed)
    volumes = volume_summary(pred.samples.volumes_ml(pred.model_voxel_ml), calibration=model.info.calibration,
                             kind=model.kind, label_map_ml=pred.label_map_ml)
    return ScanResult(image=data, img=img, labels=pred.labels, probabilities=pred.probabilities.astype(np.float32),
                      acquisition=acq, model=model, in_distribution=inside, warnings=warnings, volumes=volumes,
                      n_samples=pred.samples.n, seconds=time.perf_counter() - t0)
