"""Volume-interval calibrations as JSON files: what ``physeg segment --calibration`` reads (paper §2.4).

A calibration (:class:`physeg.evaluation.calibration.PercentileCalibration`,
Eaton-Rosen et al. 2018) maps a nominal coverage ``c`` to the pair of sample
percentiles ``(lower[c], upper[c])`` in [0, 1] whose range covers the truth
with frequency ``c`` on the validation images. ``physeg segment`` uses the
``c = 0.5`` pair (the IQR); it must straddle the median,
``lower[0.5] ≤ 0.5 ≤ upper[0.5]``, so the reported interval always contains
the reported (median) volume.

A *located* calibration also carries ``shift_ml``, a volume (ml) added to
every sample before its percentiles are taken: the median error of the
model's sample medians on the validation images (module notes of
:mod:`physeg.evaluation.calibration`); the reported volume is then the moved
median, still inside its interval. A file without ``shift_ml`` is the paper's
percentile-only form (shift 0). A *scaled* calibration carries ``shift_ml``
and ``scale_sd`` (``{"0.5": k, …}``): the interval of nominal coverage ``c``
is the moved median ± ``scale_sd[c]`` sample SDs (no ``lower``/``upper``).

File layout: ``{"GM": {"lower": {"0.5": p_lo, …}, "upper": {…}, "n_val": n,
"shift_ml": b, "form": "located"}, "WM": …, "CSF": …}`` (one calibration per
tissue, as :func:`calibration_to_json` writes it) or one ``{"lower": …,
"upper": …, "n_val": n}`` for every tissue.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from physeg.cli.errors import UsageError
from physeg.conventions import TISSUES
from physeg.io_safety import add_to_integrity, atomic_write_text

#: File name of a stored volume-interval calibration inside a model folder.
CALIBRATION_FILE: str = "calibration.json"
#: The nominal coverage of the reported interval (the IQR).
IQR_LEVEL: float = 0.5


def _checked_shift(d: Mapping[str, Any]) -> float:
    shift = float(d.get("shift_ml", 0.0))
    if shift != shift or abs(shift) == float("inf"):
        raise ValueError(f"shift_ml must be a finite volume in ml, not {shift}")
    return shift


def _scaled_from_dict(d: Mapping[str, Any]):
    from physeg.evaluation.calibration import PercentileCalibration

    scale = {float(k): float(v) for k, v in d["scale_sd"].items()}
    if IQR_LEVEL not in scale:
        raise KeyError("no calibrated 0.5 level (the IQR)")
    if not all(0.0 <= v < float("inf") for v in scale.values()):
        raise ValueError(f"scale_sd values must be finite and >= 0 (sample SDs), got {sorted(scale.values())}")
    return PercentileCalibration(lower={}, upper={}, n_val=int(d.get("n_val", 0)), shift_ml=_checked_shift(d),
                                 form="scaled", scale_sd=scale)


def _calibration_from_dict(d: Mapping[str, Any]):
    from physeg.evaluation.calibration import CALIBRATION_FORMS, PercentileCalibration

    if d.get("form") == "scaled":
        return _scaled_from_dict(d)
    lower = {float(k): float(v) for k, v in d["lower"].items()}
    upper = {float(k): float(v) for k, v in d["upper"].items()}
    if IQR_LEVEL not in lower or IQR_LEVEL not in upper:
        raise KeyError("no calibrated 0.5 level (the IQR)")
    if not 0.0 <= lower[IQR_LEVEL] <= 0.5 <= upper[IQR_LEVEL] <= 1.0:
        raise ValueError(f"the 0.5 level's percentiles ({lower[IQR_LEVEL]}, {upper[IQR_LEVEL]}) must satisfy "
                         "0 <= lower <= 0.5 <= upper <= 1 (an interval around the median)")
    shift = _checked_shift(d)
    form = str(d.get("form", "located" if shift else "percentile"))
    if form not in CALIBRATION_FORMS:
        raise ValueError(f"form must be one of {', '.join(map(repr, CALIBRATION_FORMS))}, not {form!r}")
    return PercentileCalibration(lower=lower, upper=upper, n_val=int(d.get("n_val", 0)), shift_ml=shift,
                                 form=form)


def interval_description(calibration: Mapping[str, Any]) -> str:
    """How a reported interval was calibrated (for ``volumes.json``): the paper's form, located or scaled."""
    forms = {cal.form for cal in calibration.values()}
    if "scaled" in forms:
        return ("calibrated 50% interval (median moved by shift_ml, half-width scale_sd sample SDs, both fitted on "
                "validation images)")
    if "located" in forms:
        return ("calibrated 50% interval (Eaton-Rosen 2018 percentiles after a location correction of the "
                "samples by shift_ml, fitted on validation images)")
    return "calibrated 50% interval (Eaton-Rosen 2018)"


def _tissue_doc(frame, tissue: str, model: str | None, sequence: str | None) -> dict[str, Any]:
    """One tissue's rows of a calibration frame (one form) as the file's dictionary (:func:`_calibration_doc`)."""
    from physeg.evaluation.calibration import PercentileCalibration

    g = frame[frame["tissue"] == tissue]
    if g.empty:
        raise ValueError(f"no calibration rows for {model} {sequence} {tissue}")
    form = str(g["form"].iloc[0]) if "form" in g else "percentile"
    columns = {"scale_sd": "scale_sd"} if form == "scaled" else {"lower": "lower_pct", "upper": "upper_pct"}
    tables = {"lower": {}, "upper": {}} | {key: {float(r.level): float(getattr(r, col)) for r in g.itertuples()}
                                           for key, col in columns.items()}
    return _calibration_doc(PercentileCalibration(
        **tables, n_val=int(g["n_val"].iloc[0]), form=form,
        shift_ml=float(g["shift_ml"].iloc[0]) if "shift_ml" in g else 0.0))


def _calibration_doc(cal) -> dict[str, Any]:
    common = {"n_val": cal.n_val, "shift_ml": cal.shift_ml, "form": cal.form}
    if cal.form == "scaled":
        return {"scale_sd": {str(k): v for k, v in cal.scale_sd.items()}, **common}
    return {"lower": {str(k): v for k, v in cal.lower.items()}, "upper": {str(k): v for k, v in cal.upper.items()},
            **common}


_METHODS = {"percentile": "Eaton-Rosen 2018 percentile recalibration",
            "located": "Eaton-Rosen 2018 percentile recalibration after a location correction (shift_ml)",
            "scaled": "location correction (shift_ml) and half-widths in sample SDs (scale_sd)"}


def calibration_to_json(calibration, path: str | Path, *, model: str | None = None,
                        sequence: str | None = None, form: str | None = None) -> Path:
    """Store a volume-interval calibration as JSON readable by :func:`load_calibration`.

    ``calibration``: a mapping tissue → :class:`~physeg.evaluation.calibration.PercentileCalibration`,
    or the ``calibration`` frame of :func:`physeg.evaluation.runs.run_uncertainty`
    (columns ``level, lower_pct, upper_pct, scale_sd, n_val, shift_ml, form, model, sequence,
    tissue``; filtered by ``model`` and ``sequence``, and by ``form`` where the frame
    has those columns: ``None`` takes the first of
    :data:`~physeg.evaluation.calibration.PREFERRED_FORMS` it holds). Written through a temporary name.
    """
    doc: dict[str, Any] = {}
    if hasattr(calibration, "columns"):
        from physeg.evaluation.calibration import PREFERRED_FORMS

        frame = calibration
        for column, wanted in (("model", model), ("sequence", sequence)):
            if wanted is not None and column in frame:
                frame = frame[frame[column] == wanted]
        if "form" in frame:
            held = set(frame["form"])
            form = form or next((f for f in PREFERRED_FORMS if f in held), None)
            frame = frame[frame["form"] == form]
        doc = {tissue: _tissue_doc(frame, tissue, model, sequence) for tissue in TISSUES}
    else:
        doc = {tissue: _calibration_doc(calibration[tissue]) for tissue in TISSUES}
    forms = sorted({doc[t]["form"] for t in TISSUES})
    doc["_about"] = {"model": model, "sequence": sequence,
                     "method": "; ".join(_METHODS.get(f, f) for f in forms) + " (physeg.evaluation.calibration)"}
    path = atomic_write_text(Path(path), json.dumps(doc, indent=2) + "\n")
    if path.name == CALIBRATION_FILE:  # stored in a model folder: its sha256 joins the folder's record
        add_to_integrity(path.parent, CALIBRATION_FILE)
    return path


def load_calibration(path: str | Path):
    """Volume-interval calibration from a JSON file: dict tissue → PercentileCalibration.

    See the module docstring for the layout and the check of the 0.5 level.
    Raises :class:`UsageError` when the file is missing, unreadable or not a
    calibration.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"calibration file {path} does not exist")
    try:
        raw = json.loads(path.read_text())
        if "lower" in raw or "scale_sd" in raw:
            cal = _calibration_from_dict(raw)
            return {t: cal for t in TISSUES}
        return {t: _calibration_from_dict(raw[t]) for t in TISSUES}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"unreadable calibration {path} ({exc.__class__.__name__}: {exc})") from None
