"""Scores of volume intervals: coverage tables and the per-image scoring of the uncertainty evaluation.

Paper §4.1 (Figures 3-4): the epistemic volume samples of each test image are
turned into 50 % intervals, raw and calibrated on the validation images
(:mod:`physeg.evaluation.calibration`: the paper's percentile form and our
located form); these functions say how often they hold the PGS volume and how
wide they are, per model × sequence × tissue × distribution.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from physeg.evaluation.calibration import (DEFAULT_LEVELS, PercentileCalibration, coverage, fit_calibration,
                                           uncalibrated_interval)


def interval_table(
    samples, truth, calibration: PercentileCalibration | None, levels: Sequence[float] | None = None, *,
    located: PercentileCalibration | None = None,
) -> pd.DataFrame:
    """Per-level coverage and mean width of raw and calibrated intervals.

    Columns: ``level``, ``coverage_raw``, ``width_raw``, ``coverage_cal``,
    ``width_cal`` (``calibration``, the paper's form), ``coverage_loc``,
    ``width_loc`` (``located``, when given), ``n``.
    """
    levels = list(levels or (calibration.levels if calibration else DEFAULT_LEVELS))
    rows = []
    for c in levels:
        lo, hi = uncalibrated_interval(samples, c)
        row = {"level": c, "coverage_raw": coverage(lo, hi, truth), "width_raw": float(np.mean(hi - lo))}
        for suffix, cal in (("cal", calibration), ("loc", located)):
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
    ``n`` (images); where the table has the located calibration
    (:mod:`physeg.evaluation.calibration`),
    also ``iqr_loc_ml``, ``coverage50_loc`` and ``shift_ml`` (its location
    correction). Nominal coverage 0.5; a CPU profile's handful of images
    calls 0.35–0.65 calibrated.
    """
    iqr_col = "iqr_cal" if "iqr_cal" in per_image else "iqr_raw"
    cover_col = "covered50_cal" if "covered50_cal" in per_image else "covered50_raw"
    per_image = per_image.assign(signed_error=per_image["epi_median"] - per_image["pgs_volume_ml"])
    located = {"iqr_loc_ml": ("iqr_loc", "mean"), "coverage50_loc": ("covered50_loc", "mean"),
               "shift_ml": ("shift_ml", "mean")} if "covered50_loc" in per_image else {}
    return per_image.groupby(["model", "sequence", "tissue", "distribution"]).agg(
        iqr_ml=(iqr_col, "mean"), coverage50=(cover_col, "mean"), coverage50_raw=("covered50_raw", "mean"),
        **located, abs_error_ml=("abs_error", "mean"), bias_ml=("signed_error", "mean"),
        n=("param_index", "size"))


def _fit_both(val: pd.DataFrame, levels: Sequence[float]
              ) -> tuple[PercentileCalibration | None, PercentileCalibration | None]:
    """The paper's and the located calibration of one model × sequence × tissue (``None`` without samples)."""
    if not len(val) or not val["epistemic"].map(lambda a: a is not None).all():
        return None, None
    samples, truth = np.stack(val["epistemic"]), val["pgs_volume_ml"].to_numpy()
    groups = val["subject"].to_numpy() if "subject" in val else None
    return (fit_calibration(samples, truth, levels),
            fit_calibration(samples, truth, levels, form="located", groups=groups))


def _epistemic_columns(out: pd.DataFrame, e: np.ndarray, truth: np.ndarray,
                       cal: PercentileCalibration | None, located: PercentileCalibration | None) -> None:
    """Add the epistemic sample summaries and the raw, paper-calibrated and located 50 % intervals."""
    out["epi_mean"], out["epi_median"], out["epi_var"] = e.mean(1), np.median(e, 1), e.var(1, ddof=1)
    lo, hi = uncalibrated_interval(e, 0.5)
    out["iqr_raw"], out["covered50_raw"] = hi - lo, (truth >= lo) & (truth <= hi)
    if cal is not None:
        lo, hi = cal.interval(e, 0.5)
        out["lo50_cal"], out["hi50_cal"], out["iqr_cal"] = lo, hi, hi - lo
        out["covered50_cal"] = (truth >= lo) & (truth <= hi)
    if located is not None:
        lo, hi = located.interval(e, 0.5)
        out["shift_ml"], out["lo50_loc"], out["hi50_loc"], out["iqr_loc"] = located.shift_ml, lo, hi, hi - lo
        out["covered50_loc"] = (truth >= lo) & (truth <= hi)
        out["abs_error_loc"] = np.abs(located.centre(e) - truth)
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
      ``abs_error_loc`` = |median + shift − PGS|;
    * ``coverage``: per model × sequence × tissue × distribution × level, raw,
      calibrated and located coverage and mean width (:func:`interval_table`);
    * ``calibration``: the fitted percentiles (and shift) per model × sequence ×
      tissue × ``form``.
    """
    levels = tuple(levels or DEFAULT_LEVELS)
    keys = ["model", "sequence", "tissue"]
    per_rows, cov_rows, cal_rows = [], [], []
    for key, g in test.groupby(keys, sort=False, observed=True):
        v = val
        for c, k in zip(keys, key):
            v = v[v[c] == k]
        cal, located = _fit_both(v, levels)
        for fitted in (cal, located):
            if fitted is not None:
                cal_rows.append(fitted.to_frame().assign(**dict(zip(keys, key))))
        out = g.drop(columns=["aleatoric", "epistemic"]).copy()
        if g["aleatoric"].map(lambda a: a is not None).all():
            a = np.stack(g["aleatoric"])
            out["ale_mean"], out["ale_var"] = a.mean(1), a.var(1, ddof=1)
        else:
            out["ale_mean"] = out["ale_var"] = np.nan
        if g["epistemic"].map(lambda a: a is not None).all():
            _epistemic_columns(out, np.stack(g["epistemic"]), g["pgs_volume_ml"].to_numpy(), cal, located)
            for d, gd in g.groupby("distribution", observed=True):
                tab = interval_table(np.stack(gd["epistemic"]), gd["pgs_volume_ml"].to_numpy(), cal, levels,
                                     located=located)
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
    both sequences pooled (claim 5(a) reads MPRAGE alone), and the located 50 %
    coverage IoD (notebook 05). Set side by
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
    if "covered50_loc" in d:
        out["coverage50_loc_IoD"] = d[d["distribution"] == "IoD"].groupby(["model", "tissue", "seed"])[
            "covered50_loc"].mean()
    return out.reset_index()
