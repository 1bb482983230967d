r"""Consistency of repeated scans: per-tissue CoV, ICC and Bland–Altman (``physeg consistency``).

Input: a study table (``volumes.tsv`` of :mod:`physeg.study.table`, or the
derivatives folder holding it); the volume of tissue :math:`t` of scan
:math:`r` of subject :math:`i` is the column ``{t}_ml`` (the sample median).
Only subjects with two or more scans (sessions or protocols) count.

* **CoV** (paper §4): per subject :math:`\mathrm{CoV}_i = s_i / \bar V_i`
  (sample SD with ddof 1 over the subject's scans, divided by their mean);
  the table gives the mean and the largest over subjects, in %.
* **ICC(1,1)**, one-way random effects, absolute agreement, single scan
  (Shrout & Fleiss 1979; :func:`pingouin.intraclass_corr`): each subject's
  scans are different protocols or sessions, not one fixed set of raters,
  so the one-way model is the fitting one:
  :math:`\mathrm{ICC} = (\mathrm{MS_B} - \mathrm{MS_W}) / (\mathrm{MS_B} + (k-1)\,\mathrm{MS_W})`
  with its 95 % confidence interval. Subjects need the same number of scans
  :math:`k` (the most common count; subjects with fewer are left out and
  ``icc_n_subjects`` says how many were used; with more, their first
  :math:`k` scans in table order).
* **Bland–Altman** on each subject's first two scans in table order
  (:math:`a`, :math:`b`): difference :math:`d = b - a` against the mean
  :math:`(a + b)/2`; bias :math:`\bar d` and 95 % limits of agreement
  :math:`\bar d \pm 1.96\, s_d`.

Outputs: ``consistency.tsv`` (one row per tissue), ``consistency_subjects.tsv``
(one row per subject and tissue), ``bland_altman.png``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from physeg.cli.errors import UsageError
from physeg.conventions import TISSUES

#: Files written into the output folder.
OUTPUT_FILES: tuple[str, ...] = ("consistency.tsv", "consistency_subjects.tsv", "bland_altman.png")
#: Limits of agreement: bias ± this many SDs of the differences.
LOA_Z: float = 1.96


@dataclass
class Consistency:
    """Per-tissue summary, per-subject CoVs and the Bland–Altman pairs."""

    summary: pd.DataFrame
    subjects: pd.DataFrame
    pairs: pd.DataFrame


def read_volumes(source: str | Path) -> pd.DataFrame:
    """``volumes.tsv`` from a path to it or to the derivatives folder holding it (:class:`UsageError` if absent)."""
    path = Path(source)
    if path.is_dir():
        path = path / "volumes.tsv"
    if not path.is_file():
        raise UsageError(f"{source}: no volumes.tsv (run `physeg segment BIDS_ROOT` first, or give the file)")
    try:
        table = pd.read_csv(path, sep="\t")
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path} ({exc})") from None
    missing = [c for c in ("participant_id", *(f"{t}_ml" for t in TISSUES)) if c not in table]
    if missing:
        raise UsageError(f"{path} is not a physeg study table: no column {missing[0]}")
    return table


def icc1(long: pd.DataFrame) -> tuple[float, float, float, int]:
    """ICC(1,1) with its 95 % CI of ``long`` (columns ``subject, scan, value``); NaNs with < 2 subjects."""
    import pingouin as pg

    counts = long.groupby("subject")["scan"].nunique()
    k = int(counts.mode().max()) if len(counts) else 0
    keep = counts.index[counts >= k]
    data = long[long["subject"].isin(keep) & (long["scan"] < k)]
    if len(keep) < 2 or k < 2:
        return float("nan"), float("nan"), float("nan"), int(len(keep))
    with warnings.catch_warnings(), np.errstate(all="ignore"):  # zero variance: NaN/±inf, no warning
        warnings.simplefilter("ignore")  # and pingouin's deprecation notices of pandas features
        res = pg.intraclass_corr(data=data, targets="subject", raters="scan", ratings="value")
    row = res[res["Type"].isin(["ICC(1,1)", "ICC1"])].iloc[0]
    lo, hi = (float(v) for v in row["CI95"])
    return float(row["ICC"]), lo, hi, int(len(keep))


def _tissue_rows(multi: pd.DataFrame, tissue: str) -> tuple[dict, list[dict], list[dict]]:
    """Summary row, per-subject rows and Bland–Altman pairs of one tissue."""
    from physeg.evaluation.metrics import coefficient_of_variation

    col = f"{tissue}_ml"
    subj, pairs = [], []
    for sid, g in multi.groupby("participant_id", sort=True):
        v = g[col].to_numpy(float)
        subj.append({"participant_id": sid, "tissue": tissue, "n_scans": len(v), "mean_ml": float(v.mean()),
                     "sd_ml": float(v.std(ddof=1)), "cov_pct": 100 * coefficient_of_variation(v)})
        a, b = v[0], v[1]
        pairs.append({"participant_id": sid, "tissue": tissue, "first_ml": a, "second_ml": b,
                      "mean_ml": (a + b) / 2, "diff_ml": b - a})
    long = multi.assign(subject=multi["participant_id"], value=multi[col])[["subject", "value"]]
    long["scan"] = long.groupby("subject").cumcount()
    icc, lo, hi, n_icc = icc1(long)
    d = np.array([p["diff_ml"] for p in pairs])
    sd_d = float(d.std(ddof=1)) if len(d) > 1 else float("nan")
    covs = np.array([s["cov_pct"] for s in subj])
    row = {"tissue": tissue, "n_subjects": len(subj), "n_scans": int(len(multi)),
           "mean_cov_pct": float(covs.mean()), "max_cov_pct": float(covs.max()),
           "icc1": icc, "icc1_ci95_low": lo, "icc1_ci95_high": hi, "icc_n_subjects": n_icc,
           "ba_bias_ml": float(d.mean()), "ba_loa_low_ml": float(d.mean() - LOA_Z * sd_d),
           "ba_loa_high_ml": float(d.mean() + LOA_Z * sd_d)}
    return row, subj, pairs


def consistency(table: pd.DataFrame) -> Consistency:
    """CoV, ICC(1,1) and Bland–Altman per tissue over subjects scanned more than once (module docstring)."""
    n = table.groupby("participant_id")["participant_id"].transform("size")
    multi = table[n >= 2]
    if multi.empty:
        raise UsageError("no subject has two or more scans: nothing to compare")
    rows, subjects, pairs = [], [], []
    for t in TISSUES:
        r, s, p = _tissue_rows(multi, t)
        rows.append(r)
        subjects += s
        pairs += p
    return Consistency(pd.DataFrame(rows), pd.DataFrame(subjects), pd.DataFrame(pairs))


def bland_altman_figure(result: Consistency, path: str | Path | None = None):
    """One Bland–Altman panel per tissue (difference vs mean, bias and 95 % limits); saved when ``path``.

    A :class:`matplotlib.figure.Figure` made without pyplot (the caller's
    backend is left alone; a notebook shows it by displaying the returned figure).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * len(TISSUES), 3.6))
    axes = fig.subplots(1, len(TISSUES))
    for ax, t in zip(np.atleast_1d(axes), TISSUES):
        p = result.pairs[result.pairs["tissue"] == t]
        s = result.summary.set_index("tissue").loc[t]
        ax.scatter(p["mean_ml"], p["diff_ml"], s=18, color="k")
        for y, style in ((s["ba_bias_ml"], "-"), (s["ba_loa_low_ml"], "--"), (s["ba_loa_high_ml"], "--")):
            if np.isfinite(y):
                ax.axhline(y, color="tab:red", ls=style, lw=1)
        ax.set_title(f"{t}: bias {s['ba_bias_ml']:.2f} ml, ICC {s['icc1']:.2f}", fontsize=9)
        ax.set_xlabel("mean of two scans (ml)")
        ax.set_ylabel("second − first (ml)")
    fig.tight_layout()
    if path is not None:
        from physeg.io_safety import atomic_write

        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    return fig


def write_consistency(result: Consistency, out: Path) -> dict[str, Path]:
    """The three output files in ``out`` (created), each through a temporary name."""
    from physeg.study.derivatives import write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    files = {
        "summary": write_text_atomic(out / OUTPUT_FILES[0], result.summary.to_csv(sep="\t", index=False,
                                                                                  float_format="%.6g")),
        "subjects": write_text_atomic(out / OUTPUT_FILES[1], result.subjects.to_csv(sep="\t", index=False,
                                                                                    float_format="%.6g")),
    }
    bland_altman_figure(result, out / OUTPUT_FILES[2])
    files["figure"] = out / OUTPUT_FILES[2]
    return files
