r"""Results across training seeds: mean, seed-to-seed spread, and the long CSV that the site writes.

A difference between two ablations means something only if it is larger
than what retraining the same model with another seed changes. Every model
of a profile is trained with each of ``profile.seeds`` seeds; the tables of
:func:`physeg.evaluation.paper_tables.our_tables` are computed per seed (a
``seed`` column) and then summarised here:

.. math::

    \bar m = \frac{1}{S}\sum_{s=1}^{S} m_s ,\qquad
    \mathrm{SD}_{seed} = \sqrt{\frac{1}{S-1}\sum_s (m_s - \bar m)^2}

where :math:`m_s` is the table cell (mean Dice or mean CoV over test
subjects) obtained with seed :math:`s`. With one seed the spread is unknown
(``NaN``) and :mod:`physeg.evaluation.claims` says so instead of a verdict.

A comparison "a < b" *holds beyond the spread* when
:math:`\bar m_b - \bar m_a > k\,\sqrt{\mathrm{SD}_a^2 + \mathrm{SD}_b^2}`
(:func:`beyond_spread`, ``k = 1`` by default: one combined seed SD).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from pathlib import Path

import numpy as np
import pandas as pd

from physeg.io_safety import atomic_write

#: Keys of one table cell.
CELL_KEYS: tuple[str, ...] = ("table", "model", "sequence", "tissue", "distribution")
#: Columns of the long results CSV (one row per cell and metric).
RESULT_CSV_COLUMNS: tuple[str, ...] = (
    "model", "sequence", "tissue", "distribution", "metric", "mean", "sd", "n_seeds", "sd_subjects", "n_subjects",
)
#: Table name in :func:`~physeg.evaluation.paper_tables.our_tables` → metric name in the CSV, scale to plain units.
METRICS: dict[str, tuple[str, float]] = {"dice": ("dice", 1.0), "cov_x1000": ("cov", 1e-3)}
#: Number of combined seed SDs a difference must exceed (:func:`beyond_spread`).
SPREAD_K: float = 1.0


def across_seeds(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Summarise per-seed table cells across seeds.

    ``per_seed``: long table with :data:`CELL_KEYS`, ``mean`` (the cell of one
    seed), optionally ``sd`` (across subjects) and ``n_subjects``, and ``seed``
    (absent = one seed). Returns one row per cell: ``mean`` (over seeds),
    ``seed_sd`` (SD over seeds, ``ddof = 1``; NaN for one seed), ``n_seeds``,
    ``sd`` (the across-subject SD averaged over seeds) and ``n_subjects``.
    """
    d = per_seed.copy()
    if "seed" not in d:
        d["seed"] = 0
    if "sd" not in d:
        d["sd"] = np.nan
    if "n_subjects" not in d:
        d["n_subjects"] = np.nan
    keys = [k for k in CELL_KEYS if k in d.columns]
    g = d.groupby(keys, sort=True, observed=True)
    out = g.agg(
        mean=("mean", "mean"),
        seed_sd=("mean", lambda s: s.std(ddof=1) if s.notna().sum() > 1 else np.nan),
        n_seeds=("seed", "nunique"),
        sd=("sd", "mean"),
        n_subjects=("n_subjects", "max"),
    ).reset_index()
    return out


def beyond_spread(low_mean: float, high_mean: float, low_sd: float, high_sd: float, *,
                  k: float = SPREAD_K) -> bool | None:
    """Whether ``high_mean - low_mean`` exceeds ``k`` combined seed SDs.

    Returns ``None`` when a spread is unknown (one seed): no verdict.
    """
    if not (np.isfinite(low_sd) and np.isfinite(high_sd)):
        return None
    return bool(high_mean - low_mean > k * float(np.hypot(low_sd, high_sd)))


def results_csv_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """The long results table of the site in :data:`RESULT_CSV_COLUMNS`.

    ``summary``: output of :func:`across_seeds` (or a one-seed table with
    ``mean``/``sd``). ``metric`` is ``dice`` or ``cov`` (CoV as a fraction,
    not ×10³); ``sd`` is the seed-to-seed SD (empty for one seed),
    ``sd_subjects`` the SD across test subjects.
    """
    s = summary if "seed_sd" in summary else across_seeds(summary)
    rows = []
    for r in s.itertuples(index=False):
        if r.table not in METRICS:
            continue
        metric, scale = METRICS[r.table]
        rows.append({"model": r.model, "sequence": r.sequence, "tissue": r.tissue,
                     "distribution": r.distribution, "metric": metric, "mean": r.mean * scale,
                     "sd": r.seed_sd * scale, "n_seeds": int(r.n_seeds), "sd_subjects": r.sd * scale,
                     "n_subjects": r.n_subjects})
    return pd.DataFrame(rows, columns=list(RESULT_CSV_COLUMNS))


def write_csv_tables(tables: Mapping[str, pd.DataFrame], folder: str | Path) -> dict[str, Path]:
    """Write each table as ``folder/<name>.csv`` through a temporary name; returns the paths.

    Only files named here are written; nothing else in ``folder`` is touched.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, frame in tables.items():
        path = folder / f"{name}.csv"
        atomic_write(path, lambda tmp, frame=frame: frame.to_csv(tmp, index=False))
        out[name] = path
    return out


def evaluate_seeds(profile, *, progress: bool = False) -> tuple[dict[int, Any], pd.DataFrame]:
    """Train (or reuse) the ablations with every seed of ``profile.seeds`` and evaluate each.

    Returns ``({seed: EvaluationResults}, per_seed)`` where ``per_seed`` is the
    long table of :func:`~physeg.evaluation.paper_tables.our_tables` of every
    seed with a ``seed`` column (the input of :func:`across_seeds` and of
    :func:`physeg.evaluation.claims.evaluate_claims`).
    """
    from physeg.evaluation.models import model_folders
    from physeg.evaluation.runs import run_evaluation
    from physeg.training.orchestrate import train_all

    results, tables = {}, []
    for seed in profile.seeds:
        trained = train_all(profile, models=list(profile.ablations), seed=seed, progress=progress)
        results[seed] = run_evaluation(profile, folders=model_folders(trained))
        tables.append(results[seed].tables().assign(seed=seed))
    return results, pd.concat(tables, ignore_index=True)


def spread_table(summary: pd.DataFrame, *, table: str = "cov_x1000", tissues: tuple[str, ...] = ("GM", "WM"),
                 models: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Each consecutive pair of ablations: the difference of their mean cells beside the seed SD.

    ``summary``: :func:`across_seeds` output. One row per sequence × distribution
    × tissue × step ``a → b``: ``diff = mean_b − mean_a``, ``seed_sd_a``,
    ``seed_sd_b`` and ``beyond_spread`` (:func:`beyond_spread` on the decrease;
    empty with one seed).
    """
    d = summary[(summary["table"] == table) & summary["tissue"].isin(tissues)]
    models = tuple(models or [m for m in dict.fromkeys(d["model"])])
    rows = []
    for (seq, dist, tissue), g in d.groupby(["sequence", "distribution", "tissue"], observed=True):
        cells = g.set_index("model")
        for a, b in zip(models, models[1:]):
            if a not in cells.index or b not in cells.index:
                continue
            ca, cb = cells.loc[a], cells.loc[b]
            rows.append({"sequence": seq, "distribution": dist, "tissue": tissue, "step": f"{a} → {b}",
                         "mean_a": ca["mean"], "mean_b": cb["mean"], "diff": cb["mean"] - ca["mean"],
                         "seed_sd_a": ca["seed_sd"], "seed_sd_b": cb["seed_sd"],
                         "decrease_beyond_spread": beyond_spread(cb["mean"], ca["mean"], cb["seed_sd"],
                                                                 ca["seed_sd"])})
    return pd.DataFrame(rows)
