"""The ceiling of every Dice table: the PGS labels scored against the cohort's ground truth.

Models are scored against the Physics Gold Standard (PGS, paper §3.2), the
labels a Gaussian mixture gives on the quantitative maps. On the synthetic
cohort the maps come from known tissue fractions, so the PGS itself can be
scored against the truth (the argmax of those fractions,
:func:`physeg.pgs.truth_labels`). Where the PGS disagrees with the truth, at
coarse voxels mostly at the partial-volume rim of the brain where CSF and GM
mix, a model that learned the PGS perfectly still shows that disagreement,
and a model cannot be expected to agree with the PGS better than the maps
determine it. The PGS-vs-truth Dice is therefore shown beside the model Dice
as the scale of what is attainable for each tissue.
"""

from __future__ import annotations

from typing import Any, Iterable

import pandas as pd

from physeg.conventions import TISSUES
from physeg.evaluation.metrics import dice_per_tissue
from physeg.pgs import truth_labels

__all__ = ["pgs_vs_truth", "ceiling_summary"]


def pgs_vs_truth(subjects: Iterable[Any]) -> pd.DataFrame:
    """Dice of each subject's PGS labels against its ground truth: rows ``subject, tissue, dice``.

    ``subjects``: :class:`physeg.data.Subject` with ``pgs`` and ``truth`` (synthetic
    cohort). Raises ``ValueError`` naming the first subject without ground truth.
    """
    rows = []
    for subj in subjects:
        if subj.truth is None:
            raise ValueError(f"{subj.subject_id}: no ground-truth fractions, so no PGS ceiling")
        scores = dice_per_tissue(subj.pgs, truth_labels(subj.truth), TISSUES)
        rows += [{"subject": subj.subject_id, "tissue": t, "dice": d} for t, d in scores.items()]
    return pd.DataFrame(rows)


def ceiling_summary(per_subject: pd.DataFrame) -> pd.DataFrame:
    """Mean and SD over subjects per tissue (columns ``tissue, mean, sd, n``), tissues in paper order."""
    g = per_subject.groupby("tissue", sort=False)["dice"]
    out = pd.DataFrame({"mean": g.mean(), "sd": g.std(ddof=1), "n": g.count()}).reset_index()
    return out.set_index("tissue").loc[[t for t in TISSUES if t in set(out["tissue"])]].reset_index()
