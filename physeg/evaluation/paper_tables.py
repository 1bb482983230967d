"""The paper's Tables 1–2 and our results laid out the same way.

The paper's numbers live in the package data file ``physeg/data/paper_tables.csv``
(a copy of the project's reference transcription; the header comment and the
``source`` column say where each number comes from). Our numbers come from
:mod:`physeg.evaluation.runs` results; nothing here is typed by hand.

Layout (both tables): rows = models (Baseline, Phys-Base, Phys-Strat,
Phys-Strat-Aug); columns = sequence (MPRAGE, SPGR) × tissue (GM, WM) ×
distribution (IoD, OoD); cells "mean (SD)" across test subjects. Table 1 is Dice
(per subject: mean over its images), Table 2 is CoV × 10³ (per subject: SD/mean
of its volumes over its images).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

import numpy as np
import pandas as pd

from physeg.conventions import DISTRIBUTIONS, PAPER_TISSUES
from physeg.evaluation.metrics import cov_table, subject_means, summarise_across_subjects
from physeg.profiles import ABLATIONS, SEQUENCES

#: Table name → (column in our results, digits of the paper).
TABLES: dict[str, tuple[str, int]] = {"dice": ("dice", 3), "cov_x1000": ("cov_x1000", 2)}


def paper_tables() -> pd.DataFrame:
    """The paper's Tables 1 (``table == "dice"``) and 2 (``"cov_x1000"``), long format."""
    path = resources.files("physeg.data").joinpath("paper_tables.csv")
    with resources.as_file(path) as p:
        return pd.read_csv(p, comment="#")


def our_tables(results: pd.DataFrame, cov: pd.DataFrame | None = None) -> pd.DataFrame:
    """Our Tables 1–2 in the schema of :func:`paper_tables` (plus ``n_subjects``).

    ``results``: long realisation-level table (``subject, sequence, model,
    distribution, tissue, dice, volume_ml``); ``cov``: per-subject CoV table
    (computed from ``results`` when omitted).
    """
    cov = cov_table(results) if cov is None else cov
    dice = summarise_across_subjects(subject_means(results, "dice"), "dice").assign(table="dice")
    cv = summarise_across_subjects(cov, "cov_x1000").assign(table="cov_x1000")
    out = pd.concat([dice, cv], ignore_index=True)
    return out[["table", "model", "sequence", "tissue", "distribution", "mean", "sd", "n_subjects"]]


def _fmt(mean: float, sd: float, digits: int) -> str:
    if not np.isfinite(mean):
        return "–"
    s = f"{mean:.{digits}f}"
    return s + (f" ({sd:.{digits}f})" if np.isfinite(sd) else " (–)")


def layout(
    long: pd.DataFrame,
    table: str,
    *,
    models: Sequence[str] = ABLATIONS,
    sequences: Sequence[str] = SEQUENCES,
    tissues: Sequence[str] = PAPER_TISSUES,
    best: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One table in the paper's layout, cells "mean (SD)".

    ``best`` (optional): output of :func:`physeg.evaluation.statistics.mark_best`; marked
    cells get a trailing ``*`` (the paper's bold). Missing cells show "–".
    """
    digits = TABLES[table][1]
    d = long[long["table"] == table] if "table" in long.columns else long
    cols = pd.MultiIndex.from_product([sequences, tissues, DISTRIBUTIONS], names=["sequence", "tissue", "distribution"])
    out = pd.DataFrame("–", index=pd.Index(list(models), name="model"), columns=cols)
    marks = set()
    if best is not None:
        for r in best[best["best"]].itertuples():
            marks.add((r.model, r.sequence, r.tissue, r.distribution))
    for r in d.itertuples():
        key = (r.sequence, r.tissue, r.distribution)
        if r.model in out.index and key in out.columns:
            cell = _fmt(r.mean, r.sd, digits)
            if (r.model, *key) in marks:
                cell += "*"
            out.loc[r.model, key] = cell
    return out


def comparison(ours: pd.DataFrame, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Long table of our mean/SD beside the paper's, with ``diff = ours − paper``
    and ``ratio = ours / paper``."""
    paper = paper_tables() if paper is None else paper
    keys = ["table", "model", "sequence", "tissue", "distribution"]
    m = paper[keys + ["mean", "sd"]].merge(
        ours[keys + ["mean", "sd", "n_subjects"]], on=keys, how="outer", suffixes=("_paper", "_ours")
    )
    m["diff"] = m["mean_ours"] - m["mean_paper"]
    m["ratio"] = m["mean_ours"] / m["mean_paper"]
    return m


def side_by_side(ours: pd.DataFrame, table: str, paper: pd.DataFrame | None = None, **kw) -> pd.DataFrame:
    """Paper layout with three rows per model: ``ours``, ``paper``, ``difference`` (ours − paper)."""
    paper = paper_tables() if paper is None else paper
    digits = TABLES[table][1]
    a = layout(ours, table, **kw)
    b = layout(paper, table, **{k: v for k, v in kw.items() if k != "best"})
    cmp = comparison(ours, paper)
    cmp = cmp[cmp["table"] == table]
    diff = pd.DataFrame("–", index=a.index, columns=a.columns)
    for r in cmp.itertuples():
        key = (r.sequence, r.tissue, r.distribution)
        if r.model in diff.index and key in diff.columns and np.isfinite(r.diff):
            diff.loc[r.model, key] = f"{r.diff:+.{digits}f}"
    frames = {"ours": a, "paper": b, "ours − paper": diff}
    out = pd.concat(frames, names=["source"]).swaplevel(0, 1)
    order = [(m, s) for m in a.index for s in frames]
    return out.loc[order]
