r"""Segment your own scan: NIfTI in, labels, probabilities and volume intervals out.

This is the library behind ``physeg segment`` (and the shared input/output
helpers of ``physeg simulate``). One call, :func:`segment_images`, takes
NIfTI images with their acquisition parameters and a trained model folder and
writes, per image ``<stem>``:

* ``<stem>_dseg.nii.gz`` -- label map, uint8: 0 background, 1 GM, 2 WM, 3 CSF
  (lookup table ``dseg.tsv``);
* ``<stem>_probseg.nii.gz`` -- 4D float32 class probabilities, volumes in the
  order background, GM, WM, CSF (mean over the Monte-Carlo samples);

and, for all images together, ``volumes.tsv`` and ``volumes.json``: GM, WM
and CSF volumes in ml with the 25–75 % interval (IQR) of ``--samples``
Monte-Carlo samples, whether that interval is calibrated, and warnings.

Pipeline per image
------------------
1. **Read and validate** the NIfTI: readable, 3D (a trailing singleton 4th
   axis is dropped; a real 4D series is refused), finite values.
2. **Acquisition parameters** (:func:`resolve_acquisition`) from the BIDS JSON
   sidecar next to the image (``InversionTime``, ``RepetitionTime``,
   ``EchoTime`` in **seconds**, ``FlipAngle`` in **degrees**), or from the
   command-line flags, which take precedence. The sequence is ``--sequence``,
   else MPRAGE when an inversion time is known, else SPGR. Unit checks (kept
   deliberately simple):

   =========  ==================================  ===========================
   parameter  refused as "looks like milliseconds"  note
   =========  ==================================  ===========================
   TI         > 10 (s)                             TI of a brain MPRAGE ≲ 3 s
   TR         > 10 (s)
   TE         > 1 (s)
   FA         > 180 (degrees): refused             ≤ π: **warning** only -- it
                                                   may be radians (BIDS says
                                                   degrees), or a tiny angle
   =========  ==================================  ===========================

3. **Sequence check**: the model folder's ``plans.json`` says which sequence it
   was trained on; another sequence is an error, not a warning.
4. **Out-of-distribution check**: parameters outside the model's training
   range (``plans.json``, else the project's IoD box
   :data:`physeg.simulation.IOD_RANGES`) give a warning, logged and stored in
   ``volumes.json`` (the segmentation still runs: that is what the paper's
   physics-informed models are for, and their wider intervals say how much to
   trust it).
5. **Resample** to the model's isotropic voxel size on a grid with the same
   orientation and origin (trilinear, :func:`resample_to_grid`), skipped when
   the voxel size already matches.
6. **Normalise** the intensities as the training images were
   (:func:`physeg.simulation.normalise_intensity`: divide by the 99th
   percentile of the voxels > 0, clip to [0, 2]).
7. **Run the model** (sliding window) ``--samples`` times:
   epistemic models with Monte-Carlo dropout, aleatoric models with logit
   noise from one forward pass, deterministic models once (their interval has
   zero width and says so).
8. **Back to the input grid**: probabilities are resampled trilinearly to the
   input's grid (outside the model grid: background) and the label map is
   their argmax; both are written with the input's affine and header.

Volumes
-------
``volume_ml`` is counted on the output label map (input grid). The samples
(``median_ml``, ``iqr_low_ml``, ``iqr_high_ml``) are counted on the model grid,
where the network works (resampling every sample back would multiply the cost
by the number of samples); when both grids coincide they are the same
quantity. The IQR is the calibrated 50 % interval
(:class:`physeg.evaluation.calibration.PercentileCalibration`, Eaton-Rosen et al. 2018)
when the model folder holds ``calibration.json``; otherwise it is the raw
25th–75th sample percentiles and the table says ``calibrated = false``.

Errors
------
:class:`UsageError` (exit code 2): something the user gave is wrong or
missing -- a file, a sidecar or parameter, units, a 4D image, the sequence, an
existing output folder, the device. :class:`RuntimeFailure` (exit code 1): the
inputs looked right but the work failed (e.g. a broken checkpoint).
:func:`run_cli` turns both into one line ``physeg <command>: error: ...`` on
stderr, without traceback (``physeg -v`` logs it at debug level).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

# NIfTI file-name and geometry helpers live with the BIDS reader (one implementation);
# re-exported here because the segment CLI and its users call them as physeg.inference.segment.*.
# LABELS: label names by value of the output label map.
from physeg.data.bids import LABELS, nifti_stem, sidecar_path, voxel_volume_ml  # noqa: F401

# Tissues reported in the volume table, with their label value (one definition in physeg.conventions).
from physeg.cli.errors import RuntimeFailure, UsageError, run_cli  # noqa: F401
from physeg.conventions import TISSUES

log = logging.getLogger(__name__)

#: BIDS sidecar key of each acquisition parameter (TI/TR/TE seconds, FA degrees).
SIDECAR_KEYS: dict[str, str] = {
    "TI": "InversionTime",
    "TR": "RepetitionTime",
    "TE": "EchoTime",
    "FA": "FlipAngle",
}
#: Largest plausible values in seconds; above them a time "looks like milliseconds".
MAX_SECONDS: dict[str, float] = {"TI": 10.0, "TR": 10.0, "TE": 1.0}
#: Flip angles (degrees) at or below this value may be radians: warning.
FA_RADIANS_SUSPICIOUS_DEG: float = math.pi
#: Default number of Monte-Carlo samples.
DEFAULT_SAMPLES: int = 50
#: File name of a stored volume-interval calibration inside a model folder.
CALIBRATION_FILE: str = "calibration.json"


# --------------------------------------------------------------------------- NIfTI
def read_volume(path: str | Path, *, what: str = "image") -> tuple[np.ndarray, nib.Nifti1Image]:
    """A 3D NIfTI as float32 array and its image (affine, header).

    Raises :class:`UsageError` for a missing or unreadable file, a 4D series
    (a trailing singleton axis is accepted) and non-finite-only data. NaN and
    infinite voxels are set to 0 with a warning.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} {path} does not exist")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # noqa: BLE001
        raise UsageError(f"cannot read {what} {path} as NIfTI ({exc.__class__.__name__}: {exc})") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 4:
        raise UsageError(
            f"{what} {path} is 4D with shape {data.shape}; give one 3D volume per image "
            "(split the series, e.g. with `fslsplit` or nibabel)"
        )
    if data.ndim != 3:
        raise UsageError(f"{what} {path} has {data.ndim} dimensions (shape {data.shape}); expected a 3D volume")
    finite = np.isfinite(data)
    if not finite.any():
        raise UsageError(f"{what} {path} has no finite values")
    if not finite.all():
        log.warning("%s: %d non-finite voxels set to 0", path, int((~finite).sum()))
        data = np.where(finite, data, 0.0).astype(np.float32)
    return data, img


def write_like(path: str | Path, data: np.ndarray, reference: nib.Nifti1Image, *, dtype=None) -> Path:
    """Write ``data`` (3D or 4D) on the grid of ``reference``, keeping its affine and header.

    The header is a copy of the reference's (orientation codes, qform/sform,
    units, description); the data type and the intensity scaling are reset.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = reference.header.copy()
    arr = np.asarray(data, dtype=dtype) if dtype is not None else np.asarray(data)
    header.set_data_dtype(arr.dtype)
    out = nib.Nifti1Image(arr, reference.affine, header=header)
    sform, scode = reference.get_sform(coded=True)
    qform, qcode = reference.get_qform(coded=True)
    out.set_sform(reference.affine if sform is None else sform, code=int(scode) if sform is not None else 2)
    if qform is not None:
        out.set_qform(qform, code=int(qcode))
    out.header.set_slope_inter(1.0, 0.0)
    nib.save(out, str(path))
    return path


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel edge lengths (mm) of an affine."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


# --------------------------------------------------------------------------- resampling
def model_grid(affine: np.ndarray, shape: Sequence[int], voxel_size_mm: float) -> tuple[np.ndarray, tuple[int, ...]]:
    """Grid with isotropic ``voxel_size_mm`` covering the same field of view.

    Same orientation and same world position of the first voxel's corner
    region: the axes of ``affine`` are rescaled, the origin shifted so that
    the field of view (voxel edges) starts at the same place.
    """
    affine = np.asarray(affine, dtype=np.float64)
    sizes = voxel_sizes(affine)
    scale = float(voxel_size_mm) / sizes
    out = affine.copy()
    out[:3, :3] = affine[:3, :3] * scale[None, :]
    # corner of voxel 0 stays put: centre_new = corner + half new voxel
    corner = affine[:3, :3] @ np.full(3, -0.5) + affine[:3, 3]
    out[:3, 3] = corner + out[:3, :3] @ np.full(3, 0.5)
    new_shape = tuple(max(1, int(math.ceil(n * s / float(voxel_size_mm) - 1e-6))) for n, s in zip(shape, sizes))
    return out, new_shape


def resample_to_grid(
    data: np.ndarray,
    affine_in: np.ndarray,
    affine_out: np.ndarray,
    shape_out: Sequence[int],
    *,
    order: int = 1,
    cval: float | Sequence[float] = 0.0,
) -> np.ndarray:
    """Resample ``data`` ((X, Y, Z) or (C, X, Y, Z)) from one voxel grid to another (world coordinates).

    ``order`` 1 = trilinear, 0 = nearest. ``cval`` fills points outside the
    input (one value per channel allowed).
    """
    m = np.linalg.inv(np.asarray(affine_in, float)) @ np.asarray(affine_out, float)
    shape_out = tuple(int(s) for s in shape_out)
    if np.asarray(data).shape[-3:] == shape_out and np.allclose(m, np.eye(4), atol=1e-6):
        return np.asarray(data).copy()

    def one(vol: np.ndarray, c: float) -> np.ndarray:
        return ndimage.affine_transform(
            vol, m[:3, :3], offset=m[:3, 3], output_shape=shape_out, order=order, mode="constant", cval=float(c)
        )

    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 3:
        return one(data, float(np.ravel([cval])[0])).astype(np.float32)
    cvals = np.broadcast_to(np.asarray(cval, float), (data.shape[0],))
    return np.stack([one(ch, c) for ch, c in zip(data, cvals)]).astype(np.float32)


# --------------------------------------------------------------------------- parameters
def _sequence_module():
    from physeg import simulation

    return simulation


def check_value(name: str, value: float, source: str) -> list[str]:
    """Unit sanity of one parameter in user units (TI/TR/TE seconds, FA degrees).

    Raises :class:`UsageError` for values that look like milliseconds (see the
    table in the module docstring) or are not positive; returns warnings.
    """
    unit = "degrees" if name == "FA" else "s"
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{source}: {name} must be a number; got {value!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"{source}: {name} must be a positive number in {unit}; got {value}")
    if name in MAX_SECONDS and value > MAX_SECONDS[name]:
        raise UsageError(
            f"{source}: {name} = {value:g} looks like milliseconds; physeg expects seconds "
            f"(BIDS convention), e.g. {value / 1000:g} for {value:g} ms"
        )
    if name == "FA":
        if value > 180:
            raise UsageError(f"{source}: FlipAngle = {value:g} degrees is above 180")
        if value <= FA_RADIANS_SUSPICIOUS_DEG:
            return [
                f"{source}: FlipAngle = {value:g} is read as degrees (BIDS); if it is in radians "
                f"({math.degrees(value):.1f} degrees) pass --fa in degrees"
            ]
    return []


@dataclass
class Acquisition:
    """Sequence and parameters of one image; ``values`` in user units (s, degrees)."""

    sequence: str
    values: dict[str, float]
    source: str
    warnings: list[str] = field(default_factory=list)

    def tensor(self) -> torch.Tensor:
        """``(1, P)`` parameters in seconds and radians (project convention)."""
        sim = _sequence_module()
        names = sim.PARAMETER_NAMES[self.sequence]
        row = [math.radians(self.values[n]) if n == "FA" else self.values[n] for n in names]
        return sim.validate_parameters(self.sequence, torch.tensor([row], dtype=torch.float64))

    def bids(self) -> dict[str, float]:
        """Parameters under their BIDS sidecar names (seconds, degrees)."""
        return {SIDECAR_KEYS[n]: v for n, v in self.values.items()}


def _sequence_from_sidecar(meta: Mapping[str, Any]) -> str | None:
    for key in ("PulseSequenceType", "ScanningSequence", "SequenceName", "SeriesDescription"):
        text = str(meta.get(key, "")).upper().replace("-", "").replace("_", "").replace(" ", "")
        if "MPRAGE" in text or "TFL" in text:
            return "MPRAGE"
        if "SPGR" in text or "FLASH" in text or "SPOILED" in text:
            return "SPGR"
    return None


def resolve_acquisition(
    image: str | Path,
    *,
    sequence: str | None = None,
    ti: float | None = None,
    tr: float | None = None,
    te: float | None = None,
    fa: float | None = None,
) -> Acquisition:
    """Sequence and parameters of ``image``: flags first, then the BIDS sidecar.

    Flags (``ti``/``tr``/``te`` seconds, ``fa`` degrees) override sidecar
    values. The sequence is ``sequence``, else the one the sidecar names
    (``PulseSequenceType`` …), else MPRAGE when an inversion time is known,
    else SPGR. Raises :class:`UsageError` for a missing sidecar or parameter
    and for values in the wrong units.
    """
    sim = _sequence_module()
    flags = {k: v for k, v in (("TI", ti), ("TR", tr), ("TE", te), ("FA", fa)) if v is not None}
    side = sidecar_path(image)
    meta: dict[str, Any] = {}
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"cannot read the JSON sidecar {side} ({exc})") from None
        if not isinstance(meta, dict):
            raise UsageError(f"the JSON sidecar {side} is not a JSON object")
    if sequence is not None:
        try:
            sequence = sim.check_sequence(sequence)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    else:
        sequence = _sequence_from_sidecar(meta)
        if sequence is None:
            has_ti = "TI" in flags or (
                meta.get("InversionTime") is not None and not ({"TR", "TE", "FA"} & set(flags))
            )
            sequence = "MPRAGE" if has_ti else "SPGR"
    names = sim.PARAMETER_NAMES[sequence]
    values: dict[str, float] = {}
    warnings: list[str] = []
    sources = set()
    for name in names:
        if name in flags:
            value, where = flags[name], f"--{name.lower()}"
            sources.add("flags")
        else:
            key = SIDECAR_KEYS[name]
            if not side.is_file():
                missing = ", ".join(f"--{n.lower()}" for n in names)
                raise UsageError(
                    f"{image}: no JSON sidecar {side.name} and no {name} given; "
                    f"{sequence} needs {', '.join(names)} (pass {missing}, times in s, FA in degrees)"
                )
            if key not in meta or meta[key] is None:
                raise UsageError(
                    f"{side}: missing {key} ({name}) needed for {sequence}; add it (BIDS: "
                    f"{'degrees' if name == 'FA' else 'seconds'}) or pass --{name.lower()}"
                )
            value, where = meta[key], f"{side.name} {key}"
            if isinstance(value, list):
                if len(value) != 1:
                    raise UsageError(f"{side}: {key} has {len(value)} values (multi-echo?); pass --{name.lower()}")
                value = value[0]
            sources.add("sidecar")
        warnings += check_value(name, value, where)
        values[name] = float(value)
    if sequence == "SPGR" and values["TR"] <= values["TE"]:
        raise UsageError(f"{image}: TR ({values['TR']:g} s) must be longer than TE ({values['TE']:g} s)")
    return Acquisition(sequence=sequence, values=values, source="+".join(sorted(sources)), warnings=warnings)


def describe_values(sequence: str, values: Mapping[str, float]) -> str:
    """``"TI=900 ms"`` / ``"TR=20 ms, TE=5 ms, FA=30°"``."""
    parts = []
    for n in _sequence_module().PARAMETER_NAMES[sequence]:
        v = values[n]
        parts.append(f"FA={v:.3g}°" if n == "FA" else f"{n}={1000 * v:.4g} ms")
    return ", ".join(parts)


# --------------------------------------------------------------------------- model folder
@dataclass
class ModelInfo:
    """What :func:`segment_images` needs to know about a trained model folder."""

    folder: Path
    name: str
    sequence: str
    voxel_size_mm: float
    physics: bool
    uncertainty: str
    ranges: dict[str, tuple[float, float]]
    ranges_source: str
    patch_size: int
    sw_overlap: float
    calibration: Any = None
    calibration_source: str | None = None
    plans: dict = field(default_factory=dict, repr=False)


def _get(plans: Mapping[str, Any], *keys: str, default=None):
    """First present key, also looking inside ``plans["profile"]``, ``["network"]``, ``["spec"]``."""
    for k in keys:
        if k in plans and plans[k] is not None:
            return plans[k]
    for sub in ("profile", "network", "spec", "model", "config"):
        inner = plans.get(sub)
        if isinstance(inner, Mapping):
            for k in keys:
                if k in inner and inner[k] is not None:
                    return inner[k]
    return default


def _training_ranges(plans: Mapping[str, Any], sequence: str) -> tuple[dict[str, tuple[float, float]], str]:
    sim = _sequence_module()
    raw = _get(plans, "training_range", "training_ranges", "parameter_range", "parameter_ranges", "iod_range")
    if isinstance(raw, Mapping):
        raw = raw.get(sequence, raw)
        try:
            ranges = {n: (float(raw[n][0]), float(raw[n][1])) for n in sim.PARAMETER_NAMES[sequence]}
            return ranges, "plans.json"
        except (KeyError, TypeError, IndexError, ValueError):
            log.debug("unreadable training range in plans.json: %r", raw)
    return {k: tuple(v) for k, v in sim.IOD_RANGES[sequence].items()}, "physeg.simulation.IOD_RANGES"


def _calibration_from_dict(d: Mapping[str, Any]):
    from physeg.evaluation.calibration import PercentileCalibration

    lower = {float(k): float(v) for k, v in d["lower"].items()}
    upper = {float(k): float(v) for k, v in d["upper"].items()}
    if 0.5 not in lower or 0.5 not in upper:
        raise KeyError("no calibrated 0.5 level (the IQR)")
    return PercentileCalibration(lower=lower, upper=upper, n_val=int(d.get("n_val", 0)))


def calibration_to_json(calibration, path: str | Path, *, model: str | None = None,
                        sequence: str | None = None) -> Path:
    """Store a volume-interval calibration as JSON readable by :func:`load_calibration`.

    ``calibration``: a mapping tissue → :class:`~physeg.evaluation.calibration.PercentileCalibration`,
    or the ``calibration`` frame of :func:`physeg.evaluation.runs.run_uncertainty`
    (columns ``level, lower_pct, upper_pct, n_val, model, sequence, tissue``;
    filtered by ``model`` and ``sequence``).
    """
    doc: dict[str, Any] = {}
    if hasattr(calibration, "columns"):
        frame = calibration
        if model is not None and "model" in frame:
            frame = frame[frame["model"] == model]
        if sequence is not None and "sequence" in frame:
            frame = frame[frame["sequence"] == sequence]
        for tissue in TISSUES:
            g = frame[frame["tissue"] == tissue]
            if g.empty:
                raise ValueError(f"no calibration rows for {model} {sequence} {tissue}")
            doc[tissue] = {
                "lower": {str(float(r.level)): float(r.lower_pct) for r in g.itertuples()},
                "upper": {str(float(r.level)): float(r.upper_pct) for r in g.itertuples()},
                "n_val": int(g["n_val"].iloc[0]),
            }
    else:
        for tissue in TISSUES:
            cal = calibration[tissue]
            doc[tissue] = {"lower": {str(k): v for k, v in cal.lower.items()},
                           "upper": {str(k): v for k, v in cal.upper.items()}, "n_val": cal.n_val}
    doc["_about"] = {"model": model, "sequence": sequence,
                     "method": "Eaton-Rosen 2018 percentile recalibration (physeg.evaluation.calibration)"}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def load_calibration(path: str | Path):
    """Volume-interval calibration from a JSON file: dict tissue → PercentileCalibration.

    Content: ``{"lower": {"0.5": p_lo, ...}, "upper": {...}, "n_val": n}`` (one
    calibration for every tissue) or ``{"GM": {...}, "WM": {...}, "CSF": {...}}``
    (one per tissue, as written by :func:`calibration_to_json`); levels are
    nominal coverages, percentiles in [0, 1]. Raises :class:`UsageError` when
    the file is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"calibration file {path} does not exist")
    try:
        raw = json.loads(path.read_text())
        if "lower" in raw:
            cal = _calibration_from_dict(raw)
            return {t: cal for t in TISSUES}
        return {t: _calibration_from_dict(raw[t]) for t in TISSUES}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"unreadable calibration {path} ({exc.__class__.__name__}: {exc})") from None


def read_model_info(folder: str | Path) -> ModelInfo:
    """Read ``plans.json`` of a trained model folder (see :mod:`physeg.training.checkpoint`).

    Raises :class:`UsageError` when the folder or its ``plans.json`` is missing.
    """
    from physeg.models.plans import Plans, PlansError

    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"model folder {folder} does not exist (train one with the notebooks, see README)")
    try:
        plans = Plans.read(folder)
    except PlansError as exc:
        raise UsageError(str(exc)) from None
    cal_path = folder / CALIBRATION_FILE
    return ModelInfo(
        folder=folder,
        name=plans.name,
        sequence=plans.sequence,
        voxel_size_mm=plans.voxel_size_mm,
        physics=plans.uses_physics,
        uncertainty=plans.uncertainty,
        ranges=dict(plans.training_ranges),
        ranges_source="plans.json",
        patch_size=plans.patch_size,
        sw_overlap=plans.sw_overlap,
        calibration=load_calibration(cal_path) if cal_path.is_file() else None,
        calibration_source=str(cal_path) if cal_path.is_file() else None,
        plans=plans,
    )


def load_network(info: ModelInfo, device: torch.device) -> torch.nn.Module:
    """The trained network of a model folder (:func:`physeg.training.checkpoint.load_model`, best weights), eval mode."""
    from physeg.training.checkpoint import load_model

    try:
        model, _ = load_model(info.folder, device=device)
    except Exception as exc:  # noqa: BLE001
        raise RuntimeFailure(f"cannot load the model in {info.folder} ({exc.__class__.__name__}: {exc})") from exc
    return model.eval()


def pick_device(name: str = "auto") -> torch.device:
    """``cpu``, ``cuda`` (UsageError when absent) or ``auto``: the user's ``--device``, checked.

    ``auto`` is resolved by :func:`physeg.training.distributed.resolve_device` (the one place
    that picks CUDA when available).
    """
    from physeg.training.distributed import resolve_device

    name = (name or "auto").lower()
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but no CUDA device is available (use --device cpu or auto)")
    if name not in ("cpu", "cuda", "auto"):
        raise UsageError(f"--device must be cpu, cuda or auto; got {name!r}")
    return resolve_device(name)


# --------------------------------------------------------------------------- inference
def _sliding(model: torch.nn.Module, x: torch.Tensor, physics: torch.Tensor | None, info: ModelInfo,
             *, with_sigma: bool):
    """Whole-volume logits (1, C, *S) (and σ) by :func:`physeg.inference.predictor.infer_volume`, training patch size."""
    from physeg.inference.predictor import infer_volume

    return infer_volume(model, x, physics, roi_size=info.patch_size, overlap=info.sw_overlap,
                        return_sigma=with_sigma)


@torch.no_grad()
def predict_samples(
    model: torch.nn.Module,
    info: ModelInfo,
    image: np.ndarray,
    physics: torch.Tensor | None,
    *,
    n_samples: int,
    device: torch.device,
    seed: int = 0,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean class probabilities ``(4, *S)`` and tissue volume samples in voxels ``(n, 3)``.

    Epistemic models: ``n`` passes with Monte-Carlo dropout. Aleatoric: one
    pass, ``n`` logit-noise samples. Deterministic: one pass (``n`` = 1).
    Samples are reduced to voxel counts on the fly (no stack of label maps).
    """
    from tqdm import tqdm

    from physeg.models.sampling import mc_dropout, sample_logits

    torch.manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device)
    phys = None if physics is None else physics.to(device=device, dtype=torch.float32)
    from physeg.evaluation.metrics import batch_volumes_ml

    counts: list[list[float]] = []

    def count(lbl: torch.Tensor) -> None:  # lbl (S, *spatial); voxel counts = volumes at 1 voxel
        counts.extend(batch_volumes_ml(lbl, 1.0, TISSUES).tolist())

    kind = info.uncertainty
    if kind == "epistemic" and n_samples > 1:
        prob_sum = None
        with mc_dropout(model):
            for _ in tqdm(range(n_samples), desc="MC dropout", unit="sample", leave=False, disable=not progress):
                prob = torch.softmax(_sliding(model, x, phys, info, with_sigma=False), dim=1)[0]
                prob_sum = prob if prob_sum is None else prob_sum + prob
                count(prob.argmax(0)[None])
        probs = prob_sum / n_samples
    elif kind == "aleatoric":
        logits, sigma = _sliding(model, x, phys, info, with_sigma=True)
        logits, sigma = logits[0], sigma[0]
        gen = torch.Generator(device="cpu").manual_seed(seed)
        prob_sum = torch.zeros_like(logits)
        chunk = 5
        done = 0
        bar = tqdm(total=n_samples, desc="logit noise", unit="sample", leave=False, disable=not progress)
        while done < n_samples:
            k = min(chunk, n_samples - done)
            noisy = sample_logits(logits.cpu(), sigma.cpu(), k, generator=gen).to(device)
            prob = torch.softmax(noisy, dim=1)
            prob_sum += prob.sum(0)
            count(noisy.argmax(1))
            done += k
            bar.update(k)
        bar.close()
        probs = prob_sum / n_samples
    else:
        model.eval()
        probs = torch.softmax(_sliding(model, x, phys, info, with_sigma=False), dim=1)[0]
        count(probs.argmax(0)[None])
    return probs.float().cpu().numpy(), np.asarray(counts, dtype=np.float64)


def intensity_normalise(image: np.ndarray) -> np.ndarray:
    """The training images' normalisation, computed by :func:`physeg.simulation.normalise_intensity`.

    Same function, percentile (:data:`~physeg.simulation.NORMALISATION_PERCENTILE`)
    and clip (:data:`~physeg.simulation.NORMALISATION_CLIP`) as the simulated
    training images. The one difference is the support of the percentile: a
    real scan comes without a brain mask, so the statistic is taken over the
    voxels > 0 instead of the subject's brain mask used in training.
    """
    sim = _sequence_module()
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).reshape(1, -1).clone()
    mask = t[0] > 0
    if not mask.any():
        raise UsageError("the image has no positive intensities")
    sim.normalise_intensity(t, mask)
    return t.reshape(image.shape).numpy()


# --------------------------------------------------------------------------- volume table
def volume_rows(
    image_name: str,
    native_labels: np.ndarray,
    native_voxel_ml: float,
    sample_counts: np.ndarray,
    model_voxel_ml: float,
    calibration: Mapping[str, Any] | None,
) -> list[dict[str, Any]]:
    """One row per tissue: volume, sample median and IQR (ml)."""
    from physeg.evaluation.calibration import uncalibrated_interval

    rows = []
    samples_ml = np.asarray(sample_counts, float) * model_voxel_ml
    for j, (tissue, lab) in enumerate(TISSUES.items()):
        s = samples_ml[:, j][None, :]
        if calibration is not None:
            lo, hi = calibration[tissue].interval(s, 0.5)
        else:
            lo, hi = uncalibrated_interval(s, 0.5)
        rows.append(
            {
                "image": image_name,
                "tissue": tissue,
                "volume_ml": float((native_labels == lab).sum() * native_voxel_ml),
                "median_ml": float(np.median(s)),
                "iqr_low_ml": float(lo[0]),
                "iqr_high_ml": float(hi[0]),
                "iqr_ml": float(hi[0] - lo[0]),
                "n_samples": int(s.shape[1]),
                "calibrated": calibration is not None,
            }
        )
    return rows


# --------------------------------------------------------------------------- main entry
@dataclass
class SegmentResult:
    """What :func:`segment_images` wrote for one image."""

    image: Path
    dseg: Path
    probseg: Path
    acquisition: Acquisition
    in_distribution: bool
    warnings: list[str]
    rows: list[dict[str, Any]]


def prepare_output(output: str | Path, *, force: bool) -> Path:
    """Create ``output``; refuse an existing non-empty folder unless ``force`` (then it is emptied)."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UsageError(f"output {output} exists and is not a folder")
    if output.is_dir() and any(output.iterdir()):
        if not force:
            raise UsageError(f"output folder {output} exists and is not empty; use --force to overwrite")
        for child in output.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    output.mkdir(parents=True, exist_ok=True)
    return output


def segment_images(
    images: Iterable[str | Path],
    model_folder: str | Path,
    output: str | Path,
    *,
    sequence: str | None = None,
    ti: float | None = None,
    tr: float | None = None,
    te: float | None = None,
    fa: float | None = None,
    n_samples: int = DEFAULT_SAMPLES,
    device: str = "auto",
    calibration: str | Path | None = None,
    force: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> list[SegmentResult]:
    """Segment NIfTI ``images`` with the model in ``model_folder``; write results to ``output``.

    See the module docstring for the steps, outputs and errors. All inputs are
    validated before anything is written or the model is loaded. Returns one
    :class:`SegmentResult` per image; the table is ``output/volumes.tsv`` and
    ``output/volumes.json``.
    """
    from tqdm import tqdm

    sim = _sequence_module()
    images = [Path(p) for p in images]
    if not images:
        raise UsageError("give at least one image")
    if n_samples < 1:
        raise UsageError(f"--samples must be >= 1; got {n_samples}")
    stems = [nifti_stem(p) for p in images]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise UsageError(f"several images share the name {dup[0]!r}; outputs would collide")
    info = read_model_info(model_folder)
    if calibration is not None:
        info.calibration = load_calibration(calibration)
        info.calibration_source = str(calibration)
    dev = pick_device(device)

    # validate every input first (fail fast, before the model and the outputs)
    checked = []
    for path in images:
        data, img = read_volume(path)
        acq = resolve_acquisition(path, sequence=sequence, ti=ti, tr=tr, te=te, fa=fa)
        if acq.sequence != info.sequence:
            raise UsageError(
                f"{path} is a {acq.sequence} image but model {info.name} ({info.folder}) was trained on "
                f"{info.sequence} only; use a {acq.sequence} model"
            )
        checked.append((path, data, img, acq))

    out = prepare_output(output, force=force)
    model = load_network(info, dev)
    if info.uncertainty == "none" and n_samples > 1:
        log.info("model %s has no uncertainty variant: one deterministic pass, interval of zero width", info.name)
    if info.calibration is None:
        log.info("no calibration (--calibration or %s in the model folder): volume IQRs are uncalibrated "
                 "sample percentiles", CALIBRATION_FILE)

    results: list[SegmentResult] = []
    for path, data, img, acq in tqdm(checked, desc="images", unit="image", disable=not progress or len(checked) < 2):
        stem = nifti_stem(path)
        params = acq.tensor()
        warnings = list(acq.warnings)
        inside = bool(sim.is_in_range(acq.sequence, params, info.ranges)[0])
        if not inside:
            box = ", ".join(
                f"{n} {1000 * lo:.4g}–{1000 * hi:.4g} ms" if n != "FA"
                else f"FA {math.degrees(lo):.3g}–{math.degrees(hi):.3g}°"
                for n, (lo, hi) in info.ranges.items()
            )
            warnings.append(
                f"{path.name}: parameters {describe_values(acq.sequence, acq.values)} lie outside the model's "
                f"training range ({box}): out of distribution, trust the result less (see the IQR)"
            )
        for w in warnings:
            log.warning(w)

        affine_in = np.asarray(img.affine, float)
        aff_m, shape_m = model_grid(affine_in, data.shape, info.voxel_size_mm)
        same = shape_m == tuple(data.shape) and np.allclose(aff_m, affine_in, atol=1e-4)
        x = data if same else resample_to_grid(data, affine_in, aff_m, shape_m, order=1)
        x = intensity_normalise(x)
        physics = params.float() if info.physics else None
        n = n_samples if info.uncertainty in ("epistemic", "aleatoric") else 1
        try:
            probs_m, counts = predict_samples(
                model, info, x, physics, n_samples=n, device=dev, seed=seed, progress=progress
            )
        except (UsageError, RuntimeFailure):
            raise
        except Exception as exc:  # noqa: BLE001
            raise RuntimeFailure(f"inference failed on {path} ({exc.__class__.__name__}: {exc})") from exc
        if same:
            probs = probs_m
        else:
            probs = resample_to_grid(probs_m, aff_m, affine_in, data.shape, order=1, cval=[1.0, 0.0, 0.0, 0.0])
        labels = probs.argmax(0).astype(np.uint8)
        dseg = write_like(out / f"{stem}_dseg.nii.gz", labels, img, dtype=np.uint8)
        probseg = write_like(out / f"{stem}_probseg.nii.gz", np.moveaxis(probs, 0, -1), img, dtype=np.float32)
        rows = volume_rows(
            path.name, labels, voxel_volume_ml(affine_in), counts, voxel_volume_ml(aff_m), info.calibration
        )
        for r in rows:
            r["in_distribution"] = inside
        results.append(SegmentResult(path, dseg, probseg, acq, inside, warnings, rows))
        log.info("%s -> %s, %s", path, dseg, probseg)

    _write_tables(out, results, info, n_samples)
    return results


def _write_tables(out: Path, results: list[SegmentResult], info: ModelInfo, n_samples: int) -> None:
    import pandas as pd

    (out / "dseg.tsv").write_text("index\tname\n" + "".join(f"{i}\t{n}\n" for i, n in enumerate(LABELS)))
    rows = [r for res in results for r in res.rows]
    table = pd.DataFrame(rows)
    table.to_csv(out / "volumes.tsv", sep="\t", index=False, float_format="%.3f")
    calibrated = info.calibration is not None
    doc = {
        "model": {
            "folder": str(info.folder),
            "name": info.name,
            "sequence": info.sequence,
            "voxel_size_mm": info.voxel_size_mm,
            "physics": info.physics,
            "uncertainty": info.uncertainty,
            "training_range": {k: list(v) for k, v in info.ranges.items()},
            "training_range_source": info.ranges_source,
            "training_range_units": "seconds, FA radians",
        },
        "samples_requested": n_samples,
        "interval": "calibrated 50% interval (Eaton-Rosen 2018)" if calibrated
        else ("uncalibrated 25th-75th sample percentiles" if info.uncertainty != "none"
              else "none: deterministic model, zero-width interval"),
        "calibrated": calibrated,
        "calibration_source": info.calibration_source,
        "volumes_note": "volume_ml from the output label map (input grid); median and IQR from the Monte-Carlo "
                        "samples on the model grid",
        "images": [
            {
                "image": str(res.image),
                "sequence": res.acquisition.sequence,
                "parameters": res.acquisition.bids(),
                "parameters_units": "InversionTime/RepetitionTime/EchoTime seconds, FlipAngle degrees",
                "parameters_source": res.acquisition.source,
                "in_distribution": res.in_distribution,
                "warnings": res.warnings,
                "dseg": str(res.dseg),
                "probseg": str(res.probseg),
                "probseg_volumes": list(LABELS),
                "volumes": res.rows,
            }
            for res in results
        ],
    }
    (out / "volumes.json").write_text(json.dumps(doc, indent=2) + "\n")
    log.info("volumes: %s and %s", out / "volumes.tsv", out / "volumes.json")
