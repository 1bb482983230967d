r"""Segment your own scan: NIfTI in, labels, probabilities and volume intervals out.

This is the library behind ``physeg segment``. One call, :func:`segment_images`,
takes NIfTI images with their acquisition parameters and a trained model
folder and writes, per image ``<stem>``:

* ``<stem>_dseg.nii.gz`` -- label map, uint8: 0 background, 1 GM, 2 WM, 3 CSF
  (lookup table ``dseg.tsv``): the per-voxel majority vote of the Monte-Carlo
  samples;
* ``<stem>_probseg.nii.gz`` -- 4D float32 class probabilities, volumes in the
  order background, GM, WM, CSF (mean softmax over the same samples);

and, for all images together, ``volumes.tsv`` and ``volumes.json``: GM, WM
and CSF volumes in ml with their 50 % interval, whether that interval is
calibrated, and warnings.

Pipeline per image
------------------
1. **Read and validate** the NIfTI (:func:`physeg.data.nifti.read_volume`).
2. **Acquisition parameters** from the BIDS sidecar or the flags, units
   checked (:func:`physeg.data.acquisition.resolve_acquisition`).
3. **Sequence check**: the model folder's ``plans.json`` says which sequence it
   was trained on; another sequence is an error, not a warning.
4. **Out-of-distribution check**: parameters outside the model's training
   range (``plans.json``) give a warning, logged and stored in
   ``volumes.json`` (the segmentation still runs: that is what the paper's
   physics-informed models are for, and their wider intervals say how much to
   trust it).
5. **Reorient and resample**: the voxel axes are reordered and flipped to the
   closest RAS+ frame (exact, :func:`physeg.data.nifti.to_canonical`), so the
   same world image stored flipped or permuted gives the same labels; then
   resampled to the model's isotropic voxel size on a grid with the same
   orientation and field of view (trilinear), skipped when it already matches.
6. **Normalise** the intensities as the training images were
   (:func:`intensity_normalise`).
7. **Sample** (:meth:`physeg.inference.predictor.Predictor.sample`) ``--samples``
   times: epistemic models with batched Monte-Carlo dropout, aleatoric models
   with logit noise on one forward pass, deterministic models once (their
   interval has zero width and says so). Label map, probabilities and volumes
   all come from these same samples.
8. **Back to the input grid**: probabilities and the per-class vote
   fractions are resampled trilinearly (outside the model grid: background);
   the label map is the argmax of the resampled vote fractions (on the model
   grid itself that is exactly the majority vote). Both are put back in the
   input's storage order and written with the input's affine and header.

Before any of this, every image's header is checked against
:class:`~physeg.data.nifti.GeometryLimits` (voxel 0.1–8 mm, field of view
30–500 mm per axis), before its data is read.

Volumes (paper §2.4)
--------------------
Per tissue, the :math:`n` sample volumes :math:`V_t = N_t \cdot v` (voxel count
times the model grid's voxel volume in ml). ``volume_ml`` is their median and
``iqr_low_ml``–``iqr_high_ml`` the 50 % interval of the same samples: the
calibrated one (:class:`~physeg.evaluation.calibration.PercentileCalibration`,
Eaton-Rosen et al. 2018) when the model folder holds ``calibration.json`` or
``--calibration`` is given, else the raw 25th–75th sample percentiles
(``calibrated = false``); a *located* or *scaled* calibration first moves every
sample by its ``shift_ml`` (the validation images' median error, recorded per
row), and a scaled one spans ± ``scale_sd`` sample SDs around the moved median.
The interval always contains ``volume_ml``.
``label_map_ml`` is the volume of the written label map (input grid), for
reference: the majority vote is not the median of the volumes.

Output folder
-------------
Files of the names above that already exist are replaced only with
``force``; nothing else in the folder is ever touched (the convention of every
command, :func:`physeg.cli.errors.check_outputs`). A model folder, or a folder
holding an input image, is refused. Every file is written under a temporary
name and renamed.

Errors
------
:class:`UsageError` (exit code 2): something the user gave is wrong or missing.
:class:`RuntimeFailure` (exit code 1): the inputs looked right but the work
failed (e.g. a broken checkpoint). :func:`physeg.cli.errors.run_cli` prints one
line ``physeg <command>: error: ...`` without traceback.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import nibabel as nib
import numpy as np
import torch

from physeg.cli.errors import RuntimeFailure, UsageError, check_outputs
from physeg.conventions import LABEL_NAMES, TISSUES
from physeg.data.acquisition import Acquisition, describe_values, resolve_acquisition
from physeg.data.nifti import (GeometryLimits, from_canonical, model_grid, nifti_stem, read_volume, resample_to_grid,
                               to_canonical, voxel_volume_ml, write_like)
from physeg.inference.calibration_io import CALIBRATION_FILE, IQR_LEVEL, interval_description
from physeg.inference.model_folder import ModelInfo, load_network, pick_device, read_model_info
from physeg.inference.predictor import Predictor, Samples
from physeg.io_safety import atomic_write_text
from physeg.models.plans import PLANS_FILE

log = logging.getLogger(__name__)

#: Default number of Monte-Carlo samples.
DEFAULT_SAMPLES: int = 50
#: Files written once per run (besides the per-image ``<stem>_dseg``/``_probseg``).
TABLE_FILES: tuple[str, ...] = ("dseg.tsv", "volumes.tsv", "volumes.json")
#: Class values of the background in resampling (outside the model grid: background).
BACKGROUND_FILL: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0)


def intensity_normalise(image: np.ndarray) -> np.ndarray:
    """The training images' normalisation, computed by :func:`physeg.simulation.normalise_intensity`.

    Divide by the 99th percentile and clip to [0, 2], as the simulated
    training images. The one difference is the support of the percentile: a
    real scan comes without a brain mask, so the statistic is taken over the
    voxels > 0 instead of the subject's brain mask used in training.
    """
    from physeg import simulation

    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).reshape(1, -1).clone()
    mask = t[0] > 0
    if not mask.any():
        raise UsageError("the image has no positive intensities")
    simulation.normalise_intensity(t, mask)
    return t.reshape(image.shape).numpy()


# --------------------------------------------------------------------------- volume table
def volume_rows(*, image_name: str, samples_ml: np.ndarray, label_map_ml: Mapping[str, float],
                calibration: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """One row per tissue: sample median (``volume_ml``) and the 50 % interval of the same samples (ml).

    ``samples_ml`` ``(n, 3)`` in :data:`~physeg.conventions.TISSUES` order. The
    median and interval come from :func:`physeg.evaluation.calibration.volume_interval`
    (moved by a located or scaled calibration's ``shift_ml``; the interval holds the median).
    """
    from physeg.evaluation.calibration import volume_interval

    rows = []
    for j, tissue in enumerate(TISSUES):
        cal = None if calibration is None else calibration[tissue]
        median, lo, hi, _ = volume_interval(np.asarray(samples_ml, float)[:, j], cal, IQR_LEVEL)
        rows.append({"image": image_name, "tissue": tissue, "volume_ml": median, "iqr_low_ml": lo,
                     "iqr_high_ml": hi, "iqr_ml": hi - lo, "label_map_ml": float(label_map_ml[tissue]),
                     "n_samples": int(np.shape(samples_ml)[0]), "calibrated": calibration is not None,
                     "shift_ml": 0.0 if cal is None else float(cal.shift_ml)})
    return rows


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


# --------------------------------------------------------------------------- output folder
def output_names(stems: Iterable[str]) -> list[str]:
    """Every file name a run on images with these stems writes into the output folder."""
    return [f"{s}_{kind}.nii.gz" for s in stems for kind in ("dseg", "probseg")] + list(TABLE_FILES)


def prepare_output(output: str | Path, *, force: bool, images: Iterable[Path], model_folder: Path,
                   create: bool = True) -> Path:
    """Check and create the output folder (module docstring, "Output folder"); nothing is deleted.

    Refused (:class:`UsageError`): a model folder, a folder holding an input
    image (or whose output names would hit one), and the checks of
    :func:`physeg.cli.errors.check_outputs` (a file in place of the folder, an
    output name that is a folder, existing outputs without ``force``).
    """
    output = Path(output)
    images = [Path(p) for p in images]
    files = [output / name for name in output_names(nifti_stem(p) for p in images)]
    if output.is_dir():
        real = output.resolve()
        if (output / PLANS_FILE).exists() or real == Path(model_folder).resolve():
            raise UsageError(f"output folder {output} is a model folder; choose another output folder")
        inputs = {p.resolve() for p in images}
        if any(p.parent == real for p in inputs) or any(f.resolve() in inputs for f in files):
            raise UsageError(f"output folder {output} holds an input image; choose another output folder")
    check_outputs(output, files, force=force)
    if create:
        output.mkdir(parents=True, exist_ok=True)
    return output


def _write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


# --------------------------------------------------------------------------- main entry
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
    limits: GeometryLimits | None = GeometryLimits(),
) -> list[SegmentResult]:
    """Segment NIfTI ``images`` with the model in ``model_folder``; write results to ``output``.

    See the module docstring for the steps, outputs and errors. All inputs are
    validated before anything is written or the model is loaded; ``limits``
    (:class:`~physeg.data.nifti.GeometryLimits`, ``None``: unchecked) refuses
    implausible voxel sizes and fields of view before any data is read. Returns one
    :class:`SegmentResult` per image; the table is ``output/volumes.tsv`` and
    ``output/volumes.json``.
    """
    from tqdm import tqdm

    images = [Path(p) for p in images]
    if not images:
        raise UsageError("give at least one image")
    if n_samples < 1:
        raise UsageError(f"--samples must be >= 1; got {n_samples}")
    stems = [nifti_stem(p) for p in images]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise UsageError(f"several images share the name {dup[0]!r}; outputs would collide")
    info = read_model_info(model_folder, calibration=calibration)
    dev = pick_device(device)

    checked = []  # validate every input first (fail fast, before the model and the outputs)
    for path in images:
        data, img = read_volume(path, limits=limits)
        acq = resolve_acquisition(path, sequence=sequence, ti=ti, tr=tr, te=te, fa=fa)
        if acq.sequence != info.sequence:
            raise UsageError(
                f"{path} is a {acq.sequence} image but model {info.name} ({info.folder}) was trained on "
                f"{info.sequence} only; use a {acq.sequence} model"
            )
        checked.append((path, data, img, acq))

    prepare_output(output, force=force, images=images, model_folder=info.folder, create=False)  # check only
    predictor = Predictor.from_plans(load_network(info, device=dev), info.plans)
    out = prepare_output(output, force=force, images=images, model_folder=info.folder)  # after the model loaded
    if predictor.uncertainty == "none" and n_samples > 1:
        log.info("model %s has no uncertainty variant: one deterministic pass, interval of zero width", info.name)
    for tissue in info.unreliable_tissues:  # e.g. a model that never learned CSF: say so, keep the other volumes
        log.warning("model %s validated at %s Dice %.2f: its %s volume is not a measurement", info.name, tissue,
                    info.validation_dice[tissue], tissue)
    if info.calibration is None:
        log.info("no calibration (--calibration or %s in the model folder): volume intervals are uncalibrated "
                 "sample percentiles", CALIBRATION_FILE)
    results = [
        _segment_one(path, data=data, img=img, acq=acq, info=info, predictor=predictor, n=n_samples, seed=seed,
                     out=out)
        for path, data, img, acq in tqdm(checked, desc="images", unit="image",
                                         disable=not progress or len(checked) < 2)
    ]
    _write_tables(out, results=results, info=info, n_samples=n_samples)
    return results


def range_warnings(path: Path, *, acq: Acquisition, info: ModelInfo) -> tuple[bool, list[str]]:
    """Whether θ lies in the model's training box, and the warnings of ``acq`` plus an OoD one."""
    from physeg import simulation

    warnings = list(acq.warnings)
    inside = bool(simulation.is_in_range(acq.sequence, acq.tensor(), info.plans.training_ranges)[0])
    if not inside:
        warnings.append(
            f"{path.name}: parameters {describe_values(acq.sequence, acq.values)} lie outside the model's "
            f"training range ({info.describe_range()}): out of distribution, trust the result less (see the IQR)"
        )
    for w in warnings:
        log.warning(w)
    return inside, warnings


@dataclass(frozen=True)
class InputGridPrediction:
    """The Monte-Carlo samples of one image, and their label map and probabilities back on the input's grid."""

    samples: Samples
    #: (X, Y, Z) uint8 labels in the input's storage order (majority vote of the samples).
    labels: np.ndarray
    #: (X, Y, Z, classes) mean soft-max probabilities in the input's storage order.
    probabilities: np.ndarray
    #: Volume (ml) of one voxel of the model grid (the samples' volumes) and of the label map per tissue.
    model_voxel_ml: float
    label_map_ml: dict[str, float]


def predict_on_input_grid(path: Path, *, data: np.ndarray, affine: np.ndarray, acq: Acquisition,
                          predictor: Predictor, voxel_size_mm: float, n: int, seed: int) -> InputGridPrediction:
    """Steps 4–6 of the module docstring: canonical frame, model grid, samples, and back to the input grid.

    Raises :class:`~physeg.cli.errors.RuntimeFailure` naming ``path`` when inference fails.
    """
    native_ml = voxel_volume_ml(np.asarray(affine, float))
    data, affine_in, ornt = to_canonical(data, np.asarray(affine, float))  # flipped/permuted storage: same array
    aff_m, shape_m = model_grid(affine_in, data.shape, voxel_size_mm)
    same = shape_m == tuple(data.shape) and np.allclose(aff_m, affine_in, atol=1e-4)
    x = intensity_normalise(data if same else resample_to_grid(data, affine_in, aff_m, shape_m, order=1))
    try:
        samples: Samples = predictor.sample(
            torch.from_numpy(x)[None], acq.tensor().float(), n=n, seed=seed,
            generator=torch.Generator().manual_seed(seed),
        )
    except Exception as exc:  # noqa: BLE001  (the inputs were checked: whatever fails now is a runtime failure)
        raise RuntimeFailure(f"inference failed on {path} ({exc.__class__.__name__}: {exc})") from exc
    probs, votes = samples.probabilities.numpy(), samples.votes.numpy()
    if same:
        labels = samples.labels.numpy()
    else:
        probs = resample_to_grid(probs, aff_m, affine_in, data.shape, order=1, cval=BACKGROUND_FILL)
        votes = resample_to_grid(votes, aff_m, affine_in, data.shape, order=1, cval=BACKGROUND_FILL)
        labels = votes.argmax(0)
    labels = from_canonical(labels.astype(np.uint8), ornt)  # back to the input's storage order
    return InputGridPrediction(
        samples=samples, labels=labels, probabilities=from_canonical(np.moveaxis(probs, 0, -1), ornt),
        model_voxel_ml=voxel_volume_ml(aff_m),
        label_map_ml={t: float((labels == v).sum()) * native_ml for t, v in TISSUES.items()},
    )


def _segment_one(path: Path, *, data: np.ndarray, img: nib.Nifti1Image, acq: Acquisition, info: ModelInfo,
                 predictor: Predictor, n: int, seed: int, out: Path) -> SegmentResult:
    """Steps 4–8 of the module docstring for one validated image."""
    inside, warnings = range_warnings(path, acq=acq, info=info)
    pred = predict_on_input_grid(path, data=data, affine=img.affine, acq=acq, predictor=predictor,
                                 voxel_size_mm=info.plans.voxel_size_mm, n=n, seed=seed)
    stem = nifti_stem(path)
    dseg = write_like(out / f"{stem}_dseg.nii.gz", pred.labels, img, dtype=np.uint8)
    probseg = write_like(out / f"{stem}_probseg.nii.gz", pred.probabilities, img, dtype=np.float32)
    rows = volume_rows(image_name=path.name, samples_ml=pred.samples.volumes_ml(pred.model_voxel_ml),
                       label_map_ml=pred.label_map_ml, calibration=info.calibration)
    for r in rows:
        r["in_distribution"] = inside
    log.info("%s -> %s, %s", path, dseg, probseg)
    return SegmentResult(path, dseg, probseg, acq, inside, warnings, rows)


def _write_tables(out: Path, *, results: list[SegmentResult], info: ModelInfo, n_samples: int) -> None:
    """``dseg.tsv``, ``volumes.tsv`` and ``volumes.json`` (module docstring), each written atomically."""
    import pandas as pd

    _write_text(out / "dseg.tsv", "index\tname\n" + "".join(f"{i}\t{n}\n" for i, n in enumerate(LABEL_NAMES)))
    table = pd.DataFrame([r for res in results for r in res.rows])
    _write_text(out / "volumes.tsv", table.to_csv(sep="\t", index=False, float_format="%.3f"))
    calibrated = info.calibration is not None
    plans = info.plans
    doc = {
        "model": {
            "folder": str(info.folder), "name": info.name, "sequence": info.sequence,
            "voxel_size_mm": plans.voxel_size_mm, "physics": plans.uses_physics, "uncertainty": plans.uncertainty,
            "training_range": {k: list(v) for k, v in plans.training_ranges.items()},
            "training_range_units": "seconds, FA radians",
            "validation_dice": info.validation_dice, "unreliable_tissues": info.unreliable_tissues,
        },
        "samples_requested": n_samples,
        "interval": interval_description(info.calibration) if calibrated
        else ("uncalibrated 25th-75th sample percentiles" if plans.uncertainty != "none"
              else "none: deterministic model, zero-width interval"),
        "calibrated": calibrated,
        "calibration_source": info.calibration_source,
        "volumes_note": "volume_ml: median of the Monte-Carlo sample volumes (model grid), plus shift_ml where "
                        "the calibration has one; iqr_low_ml/iqr_high_ml: the 50% interval of the same "
                        "(moved) samples, which contains volume_ml; label_map_ml: volume of the written label map "
                        "(majority vote of the same samples, input grid, never moved)",
        "images": [
            {
                "image": str(res.image), "sequence": res.acquisition.sequence,
                "parameters": res.acquisition.bids(),
                "parameters_units": "InversionTime/RepetitionTime/EchoTime seconds, FlipAngle degrees",
                "parameters_source": res.acquisition.source, "in_distribution": res.in_distribution,
                "warnings": res.warnings, "dseg": str(res.dseg), "probseg": str(res.probseg),
                "probseg_volumes": list(LABEL_NAMES), "volumes": res.rows,
            }
            for res in results
        ],
    }
    _write_text(out / "volumes.json", json.dumps(doc, indent=2) + "\n")
    log.info("volumes: %s and %s", out / "volumes.tsv", out / "volumes.json")
