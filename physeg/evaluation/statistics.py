"""Paired model comparisons: Wilcoxon signed-rank, effect sizes, bootstrap CIs.

The paper (§4) compares models with signed-rank Wilcoxon tests and bolds the
best model at p < 0.01. It does not say what the paired unit is. With the
paper's 5 test subjects, a subject-level two-sided exact Wilcoxon test has
2⁵ = 32 equally likely sign patterns, so its smallest attainable p-value is
2/32 = 0.0625 > 0.01: no subject-level difference can ever be "significant".
We therefore always report the paired unit and the smallest attainable p:

* Dice — **image level**: one pair = the same test subject, the same
  acquisition parameters, two models (``unit="image"``); or subject level
  (mean over the subject's images, ``unit="subject"``) for comparison.
* CoV — one value per subject, tissue and distribution; the per-cell test pairs
  subjects (n = number of test subjects, **underpowered**), the pooled test pairs
  (subject, tissue, distribution) units of one sequence (``pool=...``).

Every test row also carries the matched-pairs rank-biserial correlation
(pingouin's ``RBC``, Kerby 2014; positive: model ``a`` larger), the median paired
difference ``a − b`` and its seeded percentile-bootstrap 95 % CI.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pandas as pd

#: Significance level of the paper.
ALPHA: float = 0.01


def min_attainable_p(n: int, alternative: str = "two-sided") -> float:
    """Smallest p-value of an exact Wilcoxon signed-rank test with ``n`` untied pairs."""
    if n <= 0:
        return float("nan")
    p = 0.5**n
    return min(1.0, 2 * p) if alternative == "two-sided" else p


def bootstrap_ci(
    values: np.ndarray,
    statistic=np.median,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of ``statistic`` of a 1-D sample (seeded)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(n_boot, v.size))
    stats = statistic(v[idx], axis=1)
    a = (1 - confidence) / 2
    lo, hi = np.quantile(stats, [a, 1 - a])
    return float(lo), float(hi)


def paired_wilcoxon(
    a,
    b,
    *,
    alternative: str = "two-sided",
    n_boot: int = 2000,
    seed: int = 0,
    unit: str = "",
) -> dict:
    """Paired Wilcoxon signed-rank test of ``a`` vs ``b`` (pingouin) with effect sizes.

    Pairs with a NaN on either side are dropped. Returns a dict with ``n``,
    ``W``, ``p``, ``rbc`` (matched-pairs rank-biserial, positive when ``a > b``),
    ``cles``, ``median_diff`` (median of ``a − b``), ``ci_low``/``ci_high``
    (bootstrap 95 % CI of the median difference), ``min_p`` (smallest attainable
    p for this ``n``) and ``unit``. When every difference is zero the test is
    undefined and we report ``p = 1``, ``rbc = 0``.
    """
    import pingouin as pg

    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in shape: {a.shape} vs {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    d = a - b
    out = {
        "unit": unit,
        "n": int(d.size),
        "mean_a": float(a.mean()) if d.size else float("nan"),
        "mean_b": float(b.mean()) if d.size else float("nan"),
        "median_diff": float(np.median(d)) if d.size else float("nan"),
        "min_p": min_attainable_p(int(d.size), alternative),
    }
    out["ci_low"], out["ci_high"] = bootstrap_ci(d, n_boot=n_boot, seed=seed)
    if d.size == 0:
        out.update(W=float("nan"), p=float("nan"), rbc=float("nan"), cles=float("nan"))
    elif np.all(d == 0):
        out.update(W=float("nan"), p=1.0, rbc=0.0, cles=0.5)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = pg.wilcoxon(a, b, alternative=alternative)
        row = res.iloc[0]
        get = lambda *names: next(float(row[n]) for n in names if n in row.index)  # noqa: E731
        out.update(W=get("W_val", "W-val"), p=get("p_val", "p-val"), rbc=get("RBC"), cles=get("CLES"))
    out["significant"] = bool(np.isfinite(out["p"]) and out["p"] < ALPHA)
    out["underpowered"] = bool(not np.isfinite(out["min_p"]) or out["min_p"] >= ALPHA)
    return out


def compare_models(
    df: pd.DataFrame,
    *,
    value: str,
    pair_on: Sequence[str],
    group_by: Sequence[str],
    models: Sequence[str] | None = None,
    pairs: Sequence[tuple[str, str]] | None = None,
    unit: str,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Paired Wilcoxon tests between models within each group.

    Parameters
    ----------
    df
        Long table with a ``model`` column, the ``value`` column, the columns in
        ``pair_on`` (what identifies one paired unit, e.g. ``subject,
        param_index``) and those in ``group_by`` (one test per group, e.g.
        ``sequence, distribution, tissue``).
    pairs
        Model pairs ``(a, b)`` to test; default all pairs of ``models`` (in the
        order given, default the order of appearance).
    unit
        Written into the output: what one pair is.
    """
    models = list(models) if models is not None else list(dict.fromkeys(df["model"]))
    pairs = list(pairs) if pairs is not None else list(combinations(models, 2))
    rows = []
    group_by = list(group_by)
    grouped = df.groupby(group_by, sort=True, observed=True) if group_by else [((), df)]
    for key, g in grouped:
        key = key if isinstance(key, tuple) else (key,)
        wide = g.pivot_table(index=list(pair_on), columns="model", values=value, aggfunc="mean")
        for ma, mb in pairs:
            if ma not in wide.columns or mb not in wide.columns:
                continue
            res = paired_wilcoxon(wide[ma].to_numpy(), wide[mb].to_numpy(), n_boot=n_boot, seed=seed, unit=unit)
            rows.append({**dict(zip(group_by, key)), "model_a": ma, "model_b": mb, "metric": value, **res})
    return pd.DataFrame(rows)


def dice_comparisons(results: pd.DataFrame, *, unit: str = "image", **kw) -> pd.DataFrame:
    """Dice comparisons per (sequence, distribution, tissue).

    ``unit="image"``: pairs are (subject, parameter set) images scored by two
    models. ``unit="subject"``: pairs are subjects (mean Dice over their images);
    underpowered with 5 subjects (min p = 0.0625).
    """
    if unit == "image":
        return compare_models(
            results, value="dice", pair_on=["subject", "param_index"],
            group_by=["sequence", "distribution", "tissue"],
            unit="image (same subject, same parameters, two models)", **kw,
        )
    if unit == "subject":
        per = results.groupby(["subject", "sequence", "model", "distribution", "tissue"], observed=True)[
            "dice"].mean().reset_index()
        return compare_models(
            per, value="dice", pair_on=["subject"], group_by=["sequence", "distribution", "tissue"],
            unit="subject (mean Dice over the subject's images)", **kw,
        )
    raise ValueError("unit must be 'image' or 'subject'")


def cov_comparisons(cov: pd.DataFrame, *, pooled: bool = False, tissues=None, **kw) -> pd.DataFrame:
    """CoV comparisons between models.

    ``pooled=False``: one test per (sequence, distribution, tissue), pairs are
    subjects — underpowered (``min_p`` column). ``pooled=True``: one test per
    sequence, pairs are (subject, tissue, distribution) units — more pairs, but
    they are not independent (same subjects); read it as descriptive.
    """
    if tissues is not None:
        cov = cov[cov["tissue"].isin(tissues)]
    if pooled:
        return compare_models(
            cov, value="cov", pair_on=["subject", "tissue", "distribution"], group_by=["sequence"],
            unit="subject × tissue × distribution (pooled per sequence)", **kw,
        )
    return compare_models(
        cov, value="cov", pair_on=["subject"], group_by=["sequence", "distribution", "tissue"],
        unit="subject (CoV over the subject's realisations); underpowered", **kw,
    )


def mark_best(
    summary: pd.DataFrame,
    comparisons: pd.DataFrame,
    *,
    higher_is_better: bool,
    cell: Sequence[str] = ("sequence", "distribution", "tissue"),
    alpha: float = ALPHA,
) -> pd.DataFrame:
    """Mark the statistically best model(s) per table cell, as the paper bolds them.

    In each cell the model with the best mean is the candidate. The best set is
    the candidate plus every model *not* significantly different from it
    (p ≥ ``alpha``). The set is marked only if it is a strict subset of the
    models, i.e. the best set beats at least one model significantly; otherwise
    nothing is marked (no significant differences). Returns ``summary`` with a
    boolean ``best`` column (``summary`` needs ``model``, ``mean`` and ``cell``).
    """
    out = summary.copy()
    out["best"] = False
    cell = [c for c in cell if c in out.columns]
    for key, g in out.groupby(cell, sort=False, observed=True):
        key = key if isinstance(key, tuple) else (key,)
        g = g.dropna(subset=["mean"])
        if g.empty:
            continue
        top = g.loc[g["mean"].idxmax() if higher_is_better else g["mean"].idxmin(), "model"]
        c = comparisons
        for col, k in zip(cell, key):
            if col in c.columns:
                c = c[c[col] == k]
        best = {top}
        for m in g["model"]:
            if m == top:
                continue
            row = c[((c.model_a == top) & (c.model_b == m)) | ((c.model_a == m) & (c.model_b == top))]
            if row.empty or not (row["p"].iloc[0] < alpha):
                best.add(m)
        if len(best) < len(g):
            out.loc[g.index[g["model"].isin(best)], "best"] = True
    return out
