"""physeg.evaluation.ceiling: PGS-vs-truth Dice, the ceiling beside the model Dice tables."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from physeg.evaluation.ceiling import ceiling_summary, pgs_vs_truth


def _subject(name: str, flipped_csf: int) -> SimpleNamespace:
    labels = np.zeros((4, 4, 4), dtype=np.int64)
    labels[0] = 1
    labels[1] = 2
    labels[2, :2] = 3  # 8 CSF voxels
    truth = np.stack([(labels == k).astype(np.float32) for k in range(4)])
    pgs = labels.copy()
    pgs[2, :2].flat[:flipped_csf] = 1  # the rim: CSF called GM
    return SimpleNamespace(subject_id=name, pgs=torch.from_numpy(pgs), truth=truth)


def test_pgs_vs_truth_scores_the_disagreement():
    per_subject = pgs_vs_truth([_subject("sub-a", 0), _subject("sub-b", 4)])
    b = per_subject[per_subject.subject == "sub-b"].set_index("tissue")["dice"]
    assert b["WM"] == 1.0
    assert b["CSF"] == pytest.approx(2 * 4 / (4 + 8))
    assert b["GM"] == pytest.approx(2 * 16 / (20 + 16))
    summary = ceiling_summary(per_subject).set_index("tissue")
    assert list(summary.index) == ["GM", "WM", "CSF"]
    assert summary.loc["CSF", "mean"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert summary.loc["CSF", "n"] == 2 and summary.loc["WM", "sd"] == 0.0


def test_a_subject_without_truth_is_named():
    subj = _subject("sub-real", 0)
    subj.truth = None
    with pytest.raises(ValueError, match="sub-real"):
        pgs_vs_truth([subj])
