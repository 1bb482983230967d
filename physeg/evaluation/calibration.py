r"""Volume uncertainty: samples, variance decomposition, calibrated intervals.

Paper §4.1: per test image, 50 aleatoric samples (logit noise drawn from one
forward pass) and 50 epistemic samples (Monte-Carlo dropout) give 50 label maps
each, hence 50 tissue volumes. The paper reports that aleatoric variance is
negligible next to the epistemic one, and turns the epistemic samples into
*calibrated* volume intervals with the method of Eaton-Rosen et al. 2018
("Towards safe deep learning: accurately quantifying biomarker uncertainty in
neural network predictions", MICCAI).

Calibration (Eaton-Rosen 2018)
------------------------------
Raw sample percentiles are usually over-confident: the central 50 % of the
samples holds the reference volume far less than half of the time. On the
*validation* subjects we find, for each nominal coverage :math:`c`, which sample
percentiles :math:`(p_\mathrm{lo}(c), p_\mathrm{hi}(c))` do hold the reference a
fraction :math:`c` of the time; on the test subjects the interval of nominal
coverage :math:`c` is then the :math:`[p_\mathrm{lo}(c), p_\mathrm{hi}(c)]`
percentile range of that image's samples.

We compute it through the probability integral transform (PIT): for a
validation image with samples :math:`v_1..v_S` and reference :math:`v^*`,
:math:`u = \hat F(v^*)` is the position of the reference in the samples'
distribution, and :math:`w = |2u - 1|` is the nominal coverage of the smallest
*central* sample interval that holds it. The calibrated interval of nominal
coverage :math:`c` is the central sample interval of coverage
:math:`c' = Q_w(c)` (the :math:`c`-quantile of the validation :math:`w`'s),
i.e. percentiles :math:`p_\mathrm{lo} = (1-c')/2`, :math:`p_\mathrm{hi} = (1+c')/2`;
by construction a fraction :math:`c` of validation references fall inside.
Central intervals (one number per level) never collapse: a biased model gets
wider intervals, not shifted zero-width ones.

Percentiles beyond the sample range. With 50 samples the empirical percentiles
stop at :math:`1/51` and :math:`50/51`, but an over-confident model needs more
extreme ones. We use Weibull plotting positions :math:`k/(S+1)` with linear
interpolation inside the sample range and, outside it, a normal tail (sample
mean and SD) rescaled to join the empirical CDF continuously. This extension is
ours; the paper does not say what it did. A model whose samples are all
identical (zero spread) cannot be widened by any percentile recalibration: its
intervals stay of zero width and its coverage stays low — we report that rather
than hide it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri

from physeg.conventions import TISSUES
from physeg.evaluation.metrics import batch_volumes_ml

#: Nominal coverages calibrated by default (0.5 gives the IQR).
DEFAULT_LEVELS: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95)
#: Ratio var_aleatoric / var_epistemic below which aleatoric variance counts as negligible.
NEGLIGIBLE_RATIO: float = 0.1
_EPS = 1e-9


def volume_samples(label_samples, voxel_volume_ml: float, tissues: Mapping[str, int] = TISSUES) -> np.ndarray:
    """Volumes (ml) of a stack of sampled label maps ``(S, *spatial)`` → ``(S, n_tissues)``."""
    return batch_volumes_ml(label_samples, voxel_volume_ml, tissues)


# --------------------------------------------------------------------------- variance
def variance_ratio(aleatoric: np.ndarray, epistemic: np.ndarray, ddof: int = 1) -> pd.DataFrame:
    """Per-image sample variance of aleatoric vs epistemic volume samples.

    ``aleatoric`` and ``epistemic``: arrays ``(n_images, S)`` (one tissue).
    Returns ``var_aleatoric``, ``var_epistemic``, ``ratio`` (NaN when the
    epistemic variance is 0) and ``aleatoric_fraction`` = var_a / (var_a + var_e).
    """
    a = np.atleast_2d(np.asarray(aleatoric, float))
    e = np.atleast_2d(np.asarray(epistemic, float))
    va, ve = a.var(axis=1, ddof=ddof), e.var(axis=1, ddof=ddof)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(ve > 0, va / ve, np.nan)
        frac = np.where(va + ve > 0, va / (va + ve), np.nan)
    return pd.DataFrame({"var_aleatoric": va, "var_epistemic": ve, "ratio": ratio, "aleatoric_fraction": frac})


def total_variance_decomposition(samples: np.ndarray) -> dict[str, np.ndarray]:
    r"""Law of total variance for nested samples ``(..., M, T)``.

    ``M`` dropout masks (epistemic draws), each with ``T`` logit-noise draws
    (aleatoric). With population variances (``ddof=0``) the identity is exact:

    .. math:: \mathrm{Var}[v] = \underbrace{\mathbb E_m \mathrm{Var}[v\mid m]}_{\text{aleatoric}}
              + \underbrace{\mathrm{Var}_m \mathbb E[v\mid m]}_{\text{epistemic}}
    """
    s = np.asarray(samples, float)
    aleatoric = s.var(axis=-1).mean(axis=-1)
    epistemic = s.mean(axis=-1).var(axis=-1)
    total = s.reshape(*s.shape[:-2], -1).var(axis=-1)
    return {"aleatoric": aleatoric, "epistemic": epistemic, "total": total}


# --------------------------------------------------------------------------- quantiles
def _prep(samples) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x = np.sort(np.atleast_2d(np.asarray(samples, float)), axis=1)
    n = x.shape[1]
    pos = np.arange(1, n + 1) / (n + 1)
    m = x.mean(axis=1)
    sd = x.std(axis=1, ddof=1) if n > 1 else np.zeros(x.shape[0])
    return x, pos, m, sd


def sample_quantile(samples, p) -> np.ndarray:
    """Quantile ``p`` (scalar or one per row) of each row of ``samples`` ``(n, S)``.

    Inside the sample range: linear interpolation of Weibull plotting positions
    ``k/(S+1)``; outside: continuous normal tail (see module notes).
    """
    x, pos, m, sd = _prep(samples)
    n_rows, S = x.shape
    p = np.broadcast_to(np.asarray(p, float), (n_rows,)).clip(1e-12, 1 - 1e-12)
    out = np.empty(n_rows)
    for i in range(n_rows):
        xi, pi = x[i], p[i]
        if pos[0] <= pi <= pos[-1]:
            out[i] = np.interp(pi, pos, xi)
        elif sd[i] <= _EPS * max(1.0, abs(m[i])):
            out[i] = xi[0] if pi < pos[0] else xi[-1]
        elif pi > pos[-1]:
            tail = 1 - ndtr((xi[-1] - m[i]) / sd[i])
            out[i] = m[i] + sd[i] * ndtri(1 - (1 - pi) * tail / (1 - pos[-1]))
        else:
            head = ndtr((xi[0] - m[i]) / sd[i])
            out[i] = m[i] + sd[i] * ndtri(pi * head / pos[0])
    return out


def pit(samples, truth) -> np.ndarray:
    """Probability integral transform: position of each ``truth`` in its row's samples, in (0, 1).

    Inverse of :func:`sample_quantile`. Ties inside the samples (common: volumes
    are voxel counts) get the mid position. Degenerate rows (zero spread) give
    0.5 when the truth equals the samples, else ~0 or ~1.
    """
    x, pos, m, sd = _prep(samples)
    t = np.broadcast_to(np.asarray(truth, float), (x.shape[0],))
    u = np.empty(x.shape[0])
    S = x.shape[1]
    for i in range(x.shape[0]):
        xi, ti = x[i], t[i]
        if sd[i] <= _EPS * max(1.0, abs(m[i])):
            u[i] = 0.5 if np.isclose(ti, m[i]) else (1e-6 if ti < m[i] else 1 - 1e-6)
        elif xi[0] <= ti <= xi[-1]:
            lo = np.searchsorted(xi, ti, side="left")
            hi = np.searchsorted(xi, ti, side="right")
            if hi > lo:  # ties with samples: mid position of the tied block
                u[i] = (lo + 1 + hi) / 2 / (S + 1)
            else:
                u[i] = np.interp(ti, xi, pos)
        elif ti > xi[-1]:
            tail = 1 - ndtr((xi[-1] - m[i]) / sd[i])
            u[i] = 1 - (1 - pos[-1]) * (1 - ndtr((ti - m[i]) / sd[i])) / tail
        else:
            head = ndtr((xi[0] - m[i]) / sd[i])
            u[i] = pos[0] * ndtr((ti - m[i]) / sd[i]) / head
    return u.clip(1e-9, 1 - 1e-9)


def uncalibrated_interval(samples, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Central ``level`` interval of the raw samples: percentiles (1∓level)/2."""
    return sample_quantile(samples, (1 - level) / 2), sample_quantile(samples, (1 + level) / 2)


def coverage(lo, hi, truth) -> float:
    """Fraction of ``truth`` values inside ``[lo, hi]`` (inclusive)."""
    lo, hi, t = (np.asarray(v, float) for v in (lo, hi, truth))
    return float(np.mean((t >= lo) & (t <= hi))) if t.size else float("nan")


@dataclass
class PercentileCalibration:
    """Recalibrated sample percentiles, fitted on validation images.

    ``lower[c]``, ``upper[c]``: the sample percentiles (in [0, 1]) whose range
    is the interval of nominal coverage ``c``.
    """

    lower: dict[float, float]
    upper: dict[float, float]
    n_val: int
    val_pit: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0))

    @property
    def levels(self) -> list[float]:
        return sorted(self.lower)

    def interval(self, samples, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated interval of nominal coverage ``level`` for each row of ``samples``."""
        if level not in self.lower:
            raise KeyError(f"level {level} not calibrated; have {self.levels}")
        return sample_quantile(samples, self.lower[level]), sample_quantile(samples, self.upper[level])

    def iqr(self, samples) -> np.ndarray:
        """Width of the calibrated 50 % interval (the paper's IQR error bars)."""
        lo, hi = self.interval(samples, 0.5)
        return hi - lo

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {"level": self.levels, "lower_pct": [self.lower[c] for c in self.levels],
             "upper_pct": [self.upper[c] for c in self.levels], "n_val": self.n_val}
        )


def fit_calibration(val_samples, val_truth, levels: Sequence[float] = DEFAULT_LEVELS) -> PercentileCalibration:
    """Fit the central percentile recalibration on validation samples ``(n, S)`` and references ``(n,)``."""
    u = pit(val_samples, val_truth)
    w = np.abs(2 * u - 1)
    lower, upper = {}, {}
    for c in levels:
        cc = float(np.quantile(w, c))
        lower[float(c)], upper[float(c)] = (1 - cc) / 2, (1 + cc) / 2
    return PercentileCalibration(lower=lower, upper=upper, n_val=int(u.size), val_pit=u)


def interval_table(
    samples, truth, calibration: PercentileCalibration | None, levels: Sequence[float] | None = None
) -> pd.DataFrame:
    """Per-level coverage and mean width of raw and calibrated intervals.

    Columns: ``level``, ``coverage_raw``, ``width_raw``, ``coverage_cal``,
    ``width_cal``, ``n``.
    """
    levels = list(levels or (calibration.levels if calibration else DEFAULT_LEVELS))
    rows = []
    for c in levels:
        lo, hi = uncalibrated_interval(samples, c)
        row = {"level": c, "coverage_raw": coverage(lo, hi, truth), "width_raw": float(np.mean(hi - lo))}
        if calibration is not None:
            lo, hi = calibration.interval(samples, c)
            row.update(coverage_cal=coverage(lo, hi, truth), width_cal=float(np.mean(hi - lo)))
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
    ``n`` (images). Nominal coverage 0.5; a CPU profile's handful of images
    calls 0.35–0.65 calibrated.
    """
    iqr_col = "iqr_cal" if "iqr_cal" in per_image else "iqr_raw"
    cover_col = "covered50_cal" if "covered50_cal" in per_image else "covered50_raw"
    per_image = per_image.assign(signed_error=per_image["epi_median"] - per_image["pgs_volume_ml"])
    return per_image.groupby(["model", "sequence", "tissue", "distribution"]).agg(
        iqr_ml=(iqr_col, "mean"), coverage50=(cover_col, "mean"), coverage50_raw=("covered50_raw", "mean"),
        abs_error_ml=("abs_error", "mean"), bias_ml=("signed_error", "mean"), n=("param_index", "size"))


def score_uncertainty(val: pd.DataFrame, test: pd.DataFrame, levels: Sequence[float] | None = None
                      ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Calibrate on ``val`` and score ``test`` (both from :func:`physeg.evaluation.runs.uncertainty_samples`).

    Returns ``(per_image, coverage, calibration)``:

    * ``per_image``: the test rows without the sample arrays, plus ``ale_mean,
      ale_var, epi_mean, epi_median, epi_var`` (ddof=1), ``var_aleatoric``,
      ``var_epistemic`` (aliases), ``iqr_raw``, ``iqr_cal``, ``lo50_cal``, ``hi50_cal``,
      ``covered50_raw``, ``covered50_cal`` and ``abs_error`` = |epistemic median − PGS|;
    * ``coverage``: per model × sequence × tissue × distribution × level, raw
      and calibrated coverage and mean width (:func:`physeg.evaluation.calibration.interval_table`);
    * ``calibration``: the fitted percentiles per model × sequence × tissue.
    """
    levels = tuple(levels or DEFAULT_LEVELS)
    keys = ["model", "sequence", "tissue"]
    per_rows, cov_rows, cal_rows = [], [], []
    for key, g in test.groupby(keys, sort=False, observed=True):
        v = val
        for c, k in zip(keys, key):
            v = v[v[c] == k]
        has_epi = g["epistemic"].map(lambda a: a is not None).all()
        has_ale = g["aleatoric"].map(lambda a: a is not None).all()
        cal = None
        if has_epi and len(v) and v["epistemic"].map(lambda a: a is not None).all():
            cal = fit_calibration(np.stack(v["epistemic"]), v["pgs_volume_ml"].to_numpy(), levels)
            cal_rows.append(cal.to_frame().assign(**dict(zip(keys, key))))
        out = g.drop(columns=["aleatoric", "epistemic"]).copy()
        if has_ale:
            a = np.stack(g["aleatoric"])
            out["ale_mean"], out["ale_var"] = a.mean(1), a.var(1, ddof=1)
        else:
            out["ale_mean"] = out["ale_var"] = np.nan
        if has_epi:
            e = np.stack(g["epistemic"])
            truth = g["pgs_volume_ml"].to_numpy()
            out["epi_mean"], out["epi_median"], out["epi_var"] = e.mean(1), np.median(e, 1), e.var(1, ddof=1)
            lo, hi = uncalibrated_interval(e, 0.5)
            out["iqr_raw"], out["covered50_raw"] = hi - lo, (truth >= lo) & (truth <= hi)
            if cal is not None:
                lo, hi = cal.interval(e, 0.5)
                out["lo50_cal"], out["hi50_cal"], out["iqr_cal"] = lo, hi, hi - lo
                out["covered50_cal"] = (truth >= lo) & (truth <= hi)
            out["abs_error"] = np.abs(out["epi_median"] - truth)
            for d, gd in g.groupby("distribution", observed=True):
                tab = interval_table(np.stack(gd["epistemic"]), gd["pgs_volume_ml"].to_numpy(), cal, levels)
                cov_rows.append(tab.assign(**dict(zip(keys, key)), distribution=d))
        else:
            out["epi_mean"] = out["epi_median"] = out["epi_var"] = np.nan
        out["var_aleatoric"], out["var_epistemic"] = out["ale_var"], out["epi_var"]
        per_rows.append(out)
    per = pd.concat(per_rows, ignore_index=True) if per_rows else pd.DataFrame()
    cov = pd.concat(cov_rows, ignore_index=True) if cov_rows else pd.DataFrame()
    cal = pd.concat(cal_rows, ignore_index=True) if cal_rows else pd.DataFrame()
    return per, cov, cal
