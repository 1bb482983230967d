r"""How far a measured interval coverage can stray by chance, with this many subjects.

A calibrated 50 % interval should hold the reference volume on half of the
test images. Whether a run's measured coverage says anything about its
calibration depends on how many subjects the calibration was fitted on and
scored on, because our epistemic models' volume errors are mostly a bias per
subject: on the demo's validation images the subject-to-subject SD of the
error is 5–24 sample SDs, the image-to-image SD within a subject 0.3–5
(:func:`error_components`). Four calibration subjects then give four draws of
that bias to fit a width on, and five test subjects five draws to score it on.

:func:`null_coverage` answers: if the errors followed exactly the model the
scaled calibration assumes (in units of the image's sample SD, error =
subject bias :math:`b \sim N(0, \tau^2)` + image term :math:`w \sim N(0,
\omega^2)`; sample SD estimated from the run's number of samples), what
coverage would :func:`physeg.evaluation.calibration.fit_calibration` itself
(the library's fit, not a copy) reach on test subjects drawn the same way?
The answer is a distribution, not a number: a measured coverage inside its
central 90 % says nothing against the calibration, and a goal window that
this distribution mostly misses cannot be met reliably by any calibration
with these subjects. Cells (model × sequence × tissue) share their test
subjects, whose biases can be alike across cells; ``cell_correlation``
(0 independent, 1 identical subject effects) brackets that unknown.

This is a statement about the study design, not about our models: it uses
their error sizes only to pick :math:`\tau` and :math:`\omega`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from physeg.evaluation.calibration import coverage, fit_calibration


@dataclass(frozen=True)
class CoverageDesign:
    """Subjects and images of one calibration + test run (counts) and the error sizes (in sample SDs)."""

    calibration_subjects: int
    images_per_calibration_subject: int
    test_subjects: int
    images_per_test_subject: int
    n_samples: int
    between_sd: float
    within_sd: float

    @property
    def testable(self) -> bool:
        """Whether the spread can be simulated: at least 2 calibration subjects (the width is cross-fitted
        across them), 1 test subject and a finite subject SD."""
        return self.calibration_subjects >= 2 and self.test_subjects >= 1 and bool(np.isfinite(self.between_sd))


def error_components(val_samples: pd.DataFrame, *, column: str = "epistemic") -> pd.DataFrame:
    """Per model × sequence × tissue, the error of the sample median split into subject and image parts.

    ``val_samples``: rows with ``subject, model, sequence, tissue, pgs_volume_ml``
    and the sample array ``column``. The error ``median − PGS`` is divided by
    the cell's median sample SD; ``between_sd`` is the SD (ddof 1) of the
    subjects' mean errors, ``within_sd`` the root mean within-subject variance
    (ddof 1; NaN with one image per subject).
    """
    rows = []
    for key, g in val_samples.groupby(["model", "sequence", "tissue"]):
        samples = np.stack(g[column].to_numpy()).astype(float)
        sd = float(np.median(samples.std(axis=1, ddof=1)))
        z = (np.median(samples, axis=1) - g["pgs_volume_ml"].to_numpy(float)) / (sd if sd > 0 else np.nan)
        by_subject = pd.Series(z).groupby(g["subject"].to_numpy())
        rows.append({"model": key[0], "sequence": key[1], "tissue": key[2], "sample_sd_ml": sd,
                     "between_sd": float(by_subject.mean().std(ddof=1)),
                     "within_sd": float(np.sqrt(by_subject.var(ddof=1).mean())), "n_subjects": by_subject.ngroups})
    return pd.DataFrame(rows, columns=["model", "sequence", "tissue", "sample_sd_ml", "between_sd", "within_sd",
                                       "n_subjects"])


def subject_spread_by_tissue(val_samples: pd.DataFrame, test_samples: pd.DataFrame, *,
                             distribution: str = "IoD", column: str = "epistemic") -> pd.DataFrame:
    """Per tissue, the median over cells of the subject SD of the errors (sample SDs) on the calibration
    subjects and on the test subjects (one image per subject and cell there, so image noise included):
    a calibration fitted on subjects whose errors spread more than the test subjects' gives wide intervals."""
    spread = {}
    for name, frame in (("calibration_subjects", val_samples),
                        ("test_subjects", test_samples[test_samples["distribution"] == distribution])):
        spread[name] = error_components(frame, column=column).groupby("tissue")["between_sd"].median()
    return pd.DataFrame(spread)


def _simulated_cell(design: CoverageDesign, subject_z: np.ndarray, rng: np.random.Generator, level: float) -> float:
    """Coverage on the test images of one cell whose calibration is fitted on simulated validation images."""
    n_cal, n_test = design.calibration_subjects, design.test_subjects
    reps = {"cal": design.images_per_calibration_subject, "test": design.images_per_test_subject}
    parts = {}
    for part, subjects in (("cal", subject_z[:n_cal]), ("test", subject_z[n_cal:n_cal + n_test])):
        groups = np.repeat(np.arange(len(subjects)), reps[part])
        error = design.between_sd * subjects[groups] + design.within_sd * rng.standard_normal(groups.size)
        samples = rng.standard_normal((groups.size, design.n_samples))  # sample SD 1, median about 0
        truth = np.median(samples, axis=1) - error  # the reference lies `error` below the sample median
        parts[part] = (samples, truth, groups)
    samples, truth, groups = parts["cal"]
    cal = fit_calibration(samples, truth, [level], form="scaled", groups=groups)
    lo, hi = cal.interval(parts["test"][0], level)
    return coverage(lo, hi, parts["test"][1])


def null_coverage(design: CoverageDesign, *, cells: int, level: float = 0.5, cell_correlation: float = 0.0,
                  repeats: int = 1000, seed: int = 0) -> np.ndarray:
    """Pooled coverage over ``cells`` cells in each of ``repeats`` simulated runs (module docstring).

    Each run draws every subject's standardised bias once per cell as
    :math:`\\sqrt{\\rho}\\,u_s + \\sqrt{1-\\rho}\\,e_{s,\\mathrm{cell}}` (:math:`\\rho` =
    ``cell_correlation``, :math:`u, e \\sim N(0, 1)`), fits the scaled
    calibration at ``level`` per cell on the calibration subjects and scores
    it on the test subjects. Returns ``(repeats,)`` pooled coverages.
    """
    if not 0.0 <= cell_correlation <= 1.0:
        raise ValueError(f"cell_correlation must be in [0, 1], got {cell_correlation}")
    if design.calibration_subjects < 2 or design.test_subjects < 1 or cells < 1:
        raise ValueError("need at least 2 calibration subjects, 1 test subject and 1 cell")
    rng = np.random.default_rng(seed)
    n_subjects = design.calibration_subjects + design.test_subjects
    out = np.empty(repeats)
    for r in range(repeats):
        shared = rng.standard_normal(n_subjects)
        own = rng.standard_normal((cells, n_subjects))
        z = np.sqrt(cell_correlation) * shared + np.sqrt(1.0 - cell_correlation) * own
        out[r] = np.mean([_simulated_cell(design, z[c], rng, level) for c in range(cells)])
    return out


def null_summary(pooled: np.ndarray, *, window: tuple[float, float] = (0.35, 0.65)) -> dict[str, float]:
    """Median, central 90 % range and the share of runs inside ``window`` of :func:`null_coverage`'s output."""
    lo, med, hi = np.quantile(pooled, [0.05, 0.5, 0.95])
    inside = float(np.mean((pooled >= window[0] - 1e-12) & (pooled <= window[1] + 1e-12)))
    return {"median": float(med), "q05": float(lo), "q95": float(hi), "p_in_window": inside}


def design_from_samples(val_samples: pd.DataFrame, test_samples: pd.DataFrame, *, n_samples: int,
                        distribution: str = "IoD", column: str = "epistemic") -> CoverageDesign:
    """The design of a run from its validation and test sample tables (subjects and images per cell),
    with the median over cells of :func:`error_components`' subject and image SDs."""
    if val_samples.empty or test_samples.empty:  # no uncertainty run: nothing to simulate (not testable)
        return CoverageDesign(0, 0, 0, 0, int(n_samples), float("nan"), float("nan"))
    cell = ["model", "sequence", "tissue"]
    test = test_samples[test_samples["distribution"] == distribution]
    comp = error_components(val_samples, column=column)
    within = comp["within_sd"].median()  # NaN with one image per subject: no image term measurable, taken as 0

    def images_per_subject(frame: pd.DataFrame) -> int:
        return int(frame.groupby([*cell, "subject"]).size().median()) if len(frame) else 0

    return CoverageDesign(
        calibration_subjects=int(val_samples["subject"].nunique()),
        images_per_calibration_subject=images_per_subject(val_samples),
        test_subjects=int(test["subject"].nunique()),
        images_per_test_subject=images_per_subject(test),
        n_samples=int(n_samples), between_sd=float(comp["between_sd"].median()),
        within_sd=0.0 if np.isnan(within) else float(within))


def coverage_against_null(summary: pd.DataFrame, column: str, design: CoverageDesign, *, level: float = 0.5,
                          correlations: tuple[float, ...] = (0.0, 1.0), repeats: int = 400,
                          seed: int = 0) -> pd.DataFrame:
    """Measured pooled coverage beside :func:`null_coverage`'s spread, over all cells and per tissue.

    ``summary``: one row per model × sequence × tissue (index or columns hold
    ``tissue``) with the measured coverage in ``column``. One row per scope
    (``all`` cells, then each tissue) and cell correlation: ``cells``,
    ``measured``, the null ``q05, median, q95``, ``p_in_window`` (35–65 %) and
    ``inside_90`` (the measured value within the null's central 90 %).
    """
    frame = summary.reset_index() if "tissue" not in summary else summary
    scopes = [("all", frame)] + [(t, g) for t, g in frame.groupby("tissue", sort=False)]
    nulls: dict[tuple[int, float], dict[str, float]] = {}  # scopes of as many cells share one simulation
    rows = []
    for scope, g in scopes:
        measured = float(g[column].mean())
        for rho in correlations:
            if (len(g), rho) not in nulls:
                nulls[len(g), rho] = null_summary(null_coverage(design, cells=len(g), level=level,
                                                                cell_correlation=rho, repeats=repeats, seed=seed))
            null = nulls[len(g), rho]
            rows.append({"scope": scope, "cells": len(g), "cell_correlation": rho, "measured": measured, **null,
                         "inside_90": null["q05"] <= measured <= null["q95"]})
    return pd.DataFrame(rows)
