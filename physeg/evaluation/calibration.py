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
ours; the paper does not say what it did. The PIT is clipped to
:math:`[10^{-9}, 1 - 10^{-9}]` (:data:`PIT_FLOOR`), so no interval reaches
further than about 6 sample SDs from the (moved) median: a calibration whose
validation references mostly lie beyond that is *at the cap* (``at_cap`` in
:meth:`PercentileCalibration.to_frame`), and its width is the cap's, not one
fitted to the data. A model whose samples are all
identical (zero spread) cannot be widened by any percentile recalibration: its
intervals stay of zero width and its coverage stays low — we report that rather
than hide it.

Location correction (ours, not the paper's)
-------------------------------------------
Central percentiles only ever widen an interval around the sample median. When
every dropout sample of a model misses the reference the same way (our
epistemic models at the paper's dropout 0.5 put 100-200 ml too much GM in
every sample, with a sample SD of about 7 ml), the widening needed is a dozen sample SDs, beyond anything 50
samples say, and the PIT of every validation image sits at the clipped end:
the "calibrated" IQR then measures the clip, not the data, and covers the test
references a fifth of the time. The *located* calibration first moves the
samples by :math:`b`, the median over validation images of
:math:`v^* - \operatorname{median}(v_{1..S})` (ml), then fits the central
percentiles on the moved samples. So that the fitted width also carries the
subject-to-subject variation of that bias (which a shift fitted on the very
images it corrects would hide), each validation image is moved by the shift
estimated from the *other* subjects' images (cross-fitting; with one subject,
by :math:`b` itself). Test intervals are the fitted percentiles of
:math:`v_{1..S} + b`. ``form="percentile"`` (:math:`b = 0`) is the paper's
method and what claim 5 uses.

Scaled form (ours, not the paper's)
-----------------------------------
The located form still widens through percentiles, so it inherits their cap:
when the validation references lie a dozen sample SDs from the moved medians
(our CPU profiles' epistemic models: errors of 10-60 ml against sample SDs of
2-6 ml), every level's percentiles sit at the cap and the 50 % interval is the
90 % one. The *scaled* form keeps the located shift and fits the width in
units of each image's own sample SD: with the cross-fitted residuals
:math:`z_i = |v^*_i - \operatorname{median}_i - b_{-g(i)}| / s_i` of the
validation images (:math:`s_i` the sample SD, :math:`b_{-g(i)}` the shift
fitted without image :math:`i`'s subject), the interval of nominal coverage
:math:`c` is :math:`\operatorname{median} + b \pm k_c s` with
:math:`k_c = Q_z(c)`. No cap below :data:`MAX_SCALE_SD`; an image whose
samples spread more gets a wider interval, so the intervals stay informative
(σ-scaling, as Levi et al. 2019 and Laves et al. 2020 calibrate regression
uncertainty). It is what ``physeg segment`` applies when a calibration file
carries it (otherwise the located form, then the paper's). Cross-fitting with
:math:`G` subjects estimates each residual's shift from :math:`G-1` of them,
so :math:`k_c` errs wide by about :math:`\sqrt{(1+1/(G-1))/(1+1/G)}`
(1.15 with two subjects, 1.03 with four): we leave it so.
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
#: PIT values are kept inside [PIT_FLOOR, 1 − PIT_FLOOR]: no calibrated interval reaches further
#: than the normal tail's quantile of that mass, about 6 sample SDs from the (moved) median.
PIT_FLOOR: float = 1e-9
#: Widest half-interval of the scaled form, in sample SDs (validation residuals beyond it, or of
#: zero-spread images, are clipped to it; ``at_cap`` in :meth:`PercentileCalibration.to_frame`).
MAX_SCALE_SD: float = 1e3


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
    return u.clip(PIT_FLOOR, 1 - PIT_FLOOR)


def uncalibrated_interval(samples, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Central ``level`` interval of the raw samples: percentiles (1∓level)/2."""
    return sample_quantile(samples, (1 - level) / 2), sample_quantile(samples, (1 + level) / 2)


def coverage(lo, hi, truth) -> float:
    """Fraction of ``truth`` values inside ``[lo, hi]`` (inclusive)."""
    lo, hi, t = (np.asarray(v, float) for v in (lo, hi, truth))
    return float(np.mean((t >= lo) & (t <= hi))) if t.size else float("nan")


@dataclass
class PercentileCalibration:
    """A volume-interval calibration fitted on validation images (module notes; three forms).

    ``percentile`` and ``located``: ``lower[c]``, ``upper[c]`` are the sample
    percentiles (in [0, 1]) whose range is the interval of nominal coverage
    ``c`` (after moving the samples by ``shift_ml``). ``scaled``:
    ``scale_sd[c]`` is the half-width of that interval in sample SDs around the
    moved median (``lower``/``upper`` empty).
    """

    lower: dict[float, float]
    upper: dict[float, float]
    n_val: int
    val_pit: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0))
    #: Location correction (ml) added to every sample before its percentiles are
    #: taken (module notes); 0 for the paper's percentile-only form.
    shift_ml: float = 0.0
    #: ``"percentile"`` (the paper's), ``"located"`` or ``"scaled"`` (ours, module notes).
    form: str = "percentile"
    #: Half-width in sample SDs per nominal coverage (the scaled form only).
    scale_sd: dict[float, float] = field(default_factory=dict)

    @property
    def levels(self) -> list[float]:
        return sorted(self.scale_sd if self.form == "scaled" else self.lower)

    def has_level(self, level: float) -> bool:
        """Whether the nominal coverage ``level`` was calibrated."""
        return level in (self.scale_sd if self.form == "scaled" else self.lower)

    def interval(self, samples, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated interval of nominal coverage ``level`` for each row of ``samples``."""
        if not self.has_level(level):
            raise KeyError(f"level {level} not calibrated; have {self.levels}")
        moved = np.atleast_2d(np.asarray(samples, float)) + self.shift_ml
        if self.form == "scaled":
            centre = np.median(moved, axis=1)
            half = self.scale_sd[level] * _sample_sd(moved)
            return centre - half, centre + half
        return sample_quantile(moved, self.lower[level]), sample_quantile(moved, self.upper[level])

    def centre(self, samples) -> np.ndarray:
        """Median of each row of ``samples`` after the location correction (ml)."""
        return np.median(np.atleast_2d(np.asarray(samples, float)), axis=1) + self.shift_ml

    def iqr(self, samples) -> np.ndarray:
        """Width of the calibrated 50 % interval (the paper's IQR error bars)."""
        lo, hi = self.interval(samples, 0.5)
        return hi - lo

    def to_frame(self) -> pd.DataFrame:
        levels = self.levels
        scaled = self.form == "scaled"
        nan = [float("nan")] * len(levels)
        return pd.DataFrame(
            {"level": levels, "lower_pct": nan if scaled else [self.lower[c] for c in levels],
             "upper_pct": nan if scaled else [self.upper[c] for c in levels],
             "scale_sd": [self.scale_sd[c] for c in levels] if scaled else nan, "n_val": self.n_val,
             "shift_ml": self.shift_ml, "form": self.form,
             "at_cap": [self.scale_sd[c] >= MAX_SCALE_SD if scaled else self.lower[c] <= 2 * PIT_FLOOR
                        for c in levels]}
        )


def _sample_sd(samples: np.ndarray) -> np.ndarray:
    """Sample SD (ddof=1) of each row; 0 for a single sample."""
    return samples.std(axis=1, ddof=1) if samples.shape[1] > 1 else np.zeros(samples.shape[0])


def volume_interval(samples, calibration: PercentileCalibration | None, level: float
                    ) -> tuple[float, float, float, bool]:
    """One image's reported volume and interval from its samples ``(S,)`` (ml).

    Returns ``(median, low, high, calibrated)``: the sample median moved by a
    located calibration's ``shift_ml``, and the ``level`` interval, calibrated
    where ``calibration`` has that level, otherwise the raw central
    percentiles of the (moved) samples. Both sets of percentiles straddle 0.5,
    so the interval holds the median; ``min``/``max`` only absorb the
    quantile's rounding, so the reported volume always lies in its interval.
    """
    s = np.asarray(samples, float).reshape(1, -1)
    shift = 0.0 if calibration is None else float(calibration.shift_ml)
    median = float(np.median(s)) + shift
    calibrated = calibration is not None and calibration.has_level(level)
    lo, hi = calibration.interval(s, level) if calibrated else uncalibrated_interval(s + shift, level)
    return median, min(float(lo[0]), median), max(float(hi[0]), median), calibrated


def location_shift(val_samples, val_truth) -> float:
    """The located calibration's shift (ml): median over images of reference − sample median."""
    s = np.atleast_2d(np.asarray(val_samples, float))
    return float(np.median(np.asarray(val_truth, float) - np.median(s, axis=1)))


def _cross_fitted_shifts(samples: np.ndarray, truth: np.ndarray, groups) -> np.ndarray:
    """Per image, the shift estimated without its own group (subject); the overall one where alone."""
    groups = np.asarray(groups)
    shifts = np.full(len(truth), location_shift(samples, truth))
    for g in np.unique(groups):
        others = groups != g
        if others.any():
            shifts[groups == g] = location_shift(samples[others], truth[others])
    return shifts


#: The calibration forms: the paper's percentile recalibration and our located and scaled forms (module notes).
CALIBRATION_FORMS: tuple[str, ...] = ("percentile", "located", "scaled")

#: The forms in order of preference where several were fitted: the one a calibration file gets and the one
#: whose coverage is judged (the scaled form's width is fitted; the others' can sit at their cap).
PREFERRED_FORMS: tuple[str, ...] = ("scaled", "located", "percentile")


def _scale_factors(samples: np.ndarray, truth: np.ndarray, moves, levels: Sequence[float]) -> dict[float, float]:
    """The scaled form's :math:`k_c` (module notes): quantiles of the residuals in sample SDs, ≤ MAX_SCALE_SD."""
    sd = _sample_sd(samples)
    resid = np.abs(truth - np.median(samples, axis=1) - np.broadcast_to(moves, truth.shape))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sd > 0, resid / sd, np.where(resid > 0, np.inf, 0.0))
    z = np.minimum(z, MAX_SCALE_SD)
    return {float(c): float(np.quantile(z, c)) for c in levels}


def fit_calibration(val_samples, val_truth, levels: Sequence[float] = DEFAULT_LEVELS, *,
                    form: str = "percentile", groups=None) -> PercentileCalibration:
    """Fit a volume-interval calibration on validation samples ``(n, S)`` and references ``(n,)``.

    ``form="percentile"``: the paper's (Eaton-Rosen 2018). ``form="located"``:
    with the location correction of the module notes; ``form="scaled"``: the
    location correction and a width in sample SDs. ``groups`` (one label per
    image, e.g. the subject) cross-fits the shifts the widths are fitted on.
    """
    if form not in CALIBRATION_FORMS:
        raise ValueError(f"unknown calibration form {form!r}: one of {', '.join(map(repr, CALIBRATION_FORMS))}")
    samples = np.atleast_2d(np.asarray(val_samples, float))
    truth = np.asarray(val_truth, float)
    shift = 0.0
    moves = 0.0
    if form != "percentile":
        shift = location_shift(samples, truth)
        moves = _cross_fitted_shifts(samples, truth, groups) if groups is not None else shift
    if form == "scaled":
        return PercentileCalibration(lower={}, upper={}, n_val=int(truth.size), shift_ml=shift, form=form,
                                     scale_sd=_scale_factors(samples, truth, moves, levels))
    samples = samples + np.reshape(moves, (-1, 1))
    u = pit(samples, truth)
    w = np.abs(2 * u - 1)
    lower, upper = {}, {}
    for c in levels:
        cc = float(np.quantile(w, c))
        lower[float(c)], upper[float(c)] = (1 - cc) / 2, (1 + cc) / 2
    return PercentileCalibration(lower=lower, upper=upper, n_val=int(u.size), val_pit=u, shift_ml=shift,
                                 form=form)
