"""Scores of volume intervals: coverage tables and the per-image scoring of the uncertainty evaluation.

Paper §4.1 (Figures 3-4): the epistemic volume samples of each test image are
turned into 50 % intervals, raw and calibrated on the validation images
(:mod:`physeg.evaluation.calibration`: the paper's percentile form and our
located and scaled forms); these functions say how often they hold the PGS volume and how
wide they are, per model × sequence × tissue × distribution.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from physeg.evaluation.calibration import (DEFAULT_LEVELS, PREFERRED_FORMS, PercentileCalibration, coverage,
                                           fit_calibration, uncalibrated_interval)


#: Column suffix of each calibration form: the paper's percentile form keeps the original ``_cal``.
FORM_SUFFIX: dict[str, str] = {"percentile": "cal", "located": "loc", "scaled": "scl"}


def interval_table(
    samples, truth, calibration: PercentileCalibration | None, levels: Sequence[float] | None = None, *,
    located: PercentileCalibration | None = None, scaled: PercentileCalibration | None = None,
) -> pd.DataFrame:
    """Per-level coverage and mean width of raw and calibrated intervals.

    Columns: ``level``, ``coverage_raw``, ``width_raw``, ``coverage_cal``,
    ``width_cal`` (``calibration``, the paper's form), ``coverage_loc``,
    ``width_loc`` (``located``, when given), ``coverage_scl``, ``width_scl``
    (``scaled``, when given), ``n``.
    """
    levels = list(levels or (calibration.levels if calibration else DEFAULT_LEVELS))
    rows = []
    for c in levels:
        lo, hi = uncalibrated_interval(samples, c)
        row = {"level": c, "coverage_raw": coverage(lo, hi, truth), "width_raw": float(np.mean(hi - lo))}
        for suffix, cal in (("cal", calibration), ("loc", located), ("scl", scaled)):
            if cal is not None:
                lo, hi = cal.interval(samples, c)
                row.update({f"coverage_{suffix}": coverage(lo, hi, truth), f"width_{suffix}": float(np.mean(hi - lo))})
        row["n"] = int(np.atleast_2d(samples).shape[0])
        rows.append(row)
    return pd.DataFrame(rows)


def coverage50_summary(per_image: pd.DataFrame) -> pd.DataFrame:
    """The 50 % interval per model × sequence × tissue × distribution, from a per-image uncertainty table.

    Columns: ``iqr_ml`` (mean interquartile width, calibrated where the table
    has it), ``coverage50`` (share of images whose interval holds the PGS
    volume; calibrated where available), ``coverage50_raw`` (uncalibrated),
    ``abs_error_ml`` (mean |median − PGS|), ``bias_ml`` (mean median − PGS: a
    model that over- or under-segments a tissue in every sample has intervals
    centred off the truth, which no calibration of their width repairs) and
    ``n`` (images); where the table has the located or scaled calibration
    (:mod:`physeg.evaluation.calibration`), also ``iqr_loc_ml``,
    ``coverage50_loc``, ``iqr_scl_ml``, ``coverage50_scl`` and ``shift_ml``
    (their location correction). Nominal coverage 0.5; a CPU profile's handful
    of images calls 0.35–0.65 calibrated.
    """
    iqr_col = "iqr_cal" if "iqr_cal" in per_image else "iqr_raw"
    cover_col = "covered50_cal" if "covered50_cal" in per_image else "covered50_raw"
    per_image = per_image.assign(signed_error=per_image["epi_median"] - per_image["pgs_volume_ml"])
    ours = {}
    for form, suffix in FORM_SUFFIX.items():  # our forms; the paper's fills iqr_ml and coverage50 above
        if form != "percentile" and f"covered50_{suffix}" in per_image:
            ours |= {f"iqr_{suffix}_ml": (f"iqr_{suffix}", "mean"),
                     _coverage50_column(form): (f"covered50_{suffix}", "mean"), "shift_ml": ("shift_ml", "mean")}
    return per_image.groupby(["model", "sequence", "tissue", "distribution"]).agg(
        iqr_ml=(iqr_col, "mean"), coverage50=(cover_col, "mean"), coverage50_raw=("covered50_raw", "mean"),
        **ours, abs_error_ml=("abs_error", "mean"), bias_ml=("signed_error", "mean"),
        n=("param_index", "size"))


def _coverage50_column(form: str) -> str:
    """A form's 50 % coverage column in :func:`coverage50_summary`: the paper's percentile form has the plain one."""
    return "coverage50" if form == "percentile" else f"coverage50_{FORM_SUFFIX[form]}"


def coverage50_columns(summary: pd.DataFrame) -> dict[str, str]:
    """Calibration form → its 50 % coverage column in a :func:`coverage50_summary`, for the forms the summary
    holds, in :data:`~physeg.evaluation.calibration.PREFERRED_FORMS` order: the first is the one judged."""
    columns = {form: _coverage50_column(form) for form in PREFERRED_FORMS}
    return {form: column for form, column in columns.items() if column in summary}


def _fit_forms(val: pd.DataFrame, levels: Sequence[float]) -> dict[str, PercentileCalibration]:
    """Every calibration form (:data:`FORM_SUFFIX`) of one model × sequence × tissue (empty without samples)."""
    if not len(val) or not val["epistemic"].map(lambda a: a is not None).all():
        return {}
    samples, truth = np.stack(val["epistemic"]), val["pgs_volume_ml"].to_numpy()
    groups = val["subject"].to_numpy() if "subject" in val else None
    return {form: fit_calibration(samples, truth, levels, form=form, groups=groups) for form in FORM_SUFFIX}


def _epistemic_columns(out: pd.DataFrame, e: np.ndarray, truth: np.ndarray,
                       fitted: dict[str, PercentileCalibration]) -> None:
    """Add the epistemic sample summaries and the raw and calibrated 50 % intervals of every fitted form."""
    out["epi_mean"], out["epi_median"], out["epi_var"] = e.mean(1), np.median(e, 1), e.var(1, ddof=1)
    lo, hi = uncalibrated_interval(e, 0.5)
    out["iqr_raw"], out["covered50_raw"] = hi - lo, (truth >= lo) & (truth <= hi)
    for form, cal in fitted.items():
        x = FORM_SUFFIX[form]
        lo, hi = cal.interval(e, 0.5)
        out[f"lo50_{x}"], out[f"hi50_{x}"], out[f"iqr_{x}"] = lo, hi, hi - lo
        out[f"covered50_{x}"] = (truth >= lo) & (truth <= hi)
        if form != "percentile":
            out["shift_ml"], out[f"abs_error_{x}"] = cal.shift_ml, np.abs(cal.centre(e) - truth)
    out["abs_error"] = np.abs(out["epi_median"] - truth)


def score_uncertainty(val: pd.DataFrame, test: pd.DataFrame, levels: Sequence[float] | None = None
                      ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Calibrate on ``val`` and score ``test`` (both from :func:`physeg.evaluation.runs.uncertainty_samples`).

    Returns ``(per_image, coverage, calibration)``:

    * ``per_image``: the test rows without the sample arrays, plus ``ale_mean,
      ale_var, epi_mean, epi_median, epi_var`` (ddof=1), ``var_aleatoric``,
      ``var_epistemic`` (aliases), ``iqr_raw``, ``iqr_cal``, ``lo50_cal``, ``hi50_cal``,
      ``covered50_raw``, ``covered50_cal`` (the paper's percentile calibration),
      ``abs_error`` = |epistemic median − PGS|, and for the located calibration
      ``shift_ml``, ``lo50_loc``, ``hi50_loc``, ``iqr_loc``, ``covered50_loc``,
      ``abs_error_loc`` = |median + shift − PGS|, and the same ``_scl`` columns
      for the scaled calibration;
    * ``coverage``: per model × sequence × tissue × distribution × level, raw,
      calibrated, located and scaled coverage and mean width (:func:`interval_table`);
    * ``calibration``: the fitted percentiles or SD scales (and shift) per model ×
      sequence × tissue × ``form``.
    """
    levels = tuple(levels or DEFAULT_LEVELS)
    keys = ["model", "sequence", "tissue"]
    per_rows, cov_rows, cal_rows = [], [], []
    for key, g in test.groupby(keys, sort=False, observed=True):
        v = val
        for c, k in zip(keys, key):
            v = v[v[c] == k]
        fitted = _fit_forms(v, levels)
        for form_cal in fitted.values():
            cal_rows.append(form_cal.to_frame().assign(**dict(zip(keys, key))))
        out = g.drop(columns=["aleatoric", "epistemic"]).copy()
        if g["aleatoric"].map(lambda a: a is not None).all():
            a = np.stack(g["aleatoric"])
            out["ale_mean"], out["ale_var"] = a.mean(1), a.var(1, ddof=1)
        else:
            out["ale_mean"] = out["ale_var"] = np.nan
        if g["epistemic"].map(lambda a: a is not None).all():
            _epistemic_columns(out, np.stack(g["epistemic"]), g["pgs_volume_ml"].to_numpy(), fitted)
            for d, gd in g.groupby("distribution", observed=True):
                tab = interval_table(np.stack(gd["epistemic"]), gd["pgs_volume_ml"].to_numpy(),
                                     fitted.get("percentile"), levels, located=fitted.get("located"),
                                     scaled=fitted.get("scaled"))
                cov_rows.append(tab.assign(**dict(zip(keys, key)), distribution=d))
        else:
            out["epi_mean"] = out["epi_median"] = out["epi_var"] = np.nan
        out["var_aleatoric"], out["var_epistemic"] = out["ale_var"], out["epi_var"]
        per_rows.append(out)
    per = pd.concat(per_rows, ignore_index=True) if per_rows else pd.DataFrame()
    cov = pd.concat(cov_rows, ignore_index=True) if cov_rows else pd.DataFrame()
    cal = pd.concat(cal_rows, ignore_index=True) if cal_rows else pd.DataFrame()
    return per, cov, cal


def seed_spread(per_image: pd.DataFrame) -> pd.DataFrame:
    """What claims 4–5 read, per training seed of the uncertainty variants, GM and WM.

    ``per_image``: per-image tables of several seeds with a ``seed`` column
    (:func:`physeg.evaluation.runs.per_image_by_seed`). One row per model ×
    tissue × seed: ``variance_ratio`` (mean aleatoric over mean epistemic volume
    variance, claim 4), the mean calibrated IQR (the paper's form) IoD and OoD,
    both sequences pooled (claim 5(a) reads MPRAGE alone), and the located and
    scaled 50 % coverage IoD (notebook 05). Set side by
    side, the seeds show whether a verdict could flip with retraining.
    """
    d = per_image[per_image["tissue"].isin(["GM", "WM"])]
    if "seed" not in d:
        d = d.assign(seed=0)
    iqr = "iqr_cal" if "iqr_cal" in d else "iqr_raw"
    g = d.groupby(["model", "tissue", "seed"])
    out = pd.DataFrame({"variance_ratio": g["var_aleatoric"].mean() / g["var_epistemic"].mean()})
    for dist in ("IoD", "OoD"):
        out[f"iqr_{dist}_ml"] = d[d["distribution"] == dist].groupby(["model", "tissue", "seed"])[iqr].mean()
    for suffix in ("loc", "scl"):
        if f"covered50_{suffix}" in d:
            out[f"coverage50_{suffix}_IoD"] = d[d["distribution"] == "IoD"].groupby(["model", "tissue", "seed"])[
                f"covered50_{suffix}"].mean()
    return out.reset_index()
