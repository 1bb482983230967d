import math

import numpy as np
import pandas as pd
import pytest
import torch

from physeg import conventions
from physeg.evaluation import metrics


def test_dice_known_overlap():
    ref = np.zeros((4, 4, 4), dtype=np.int64)
    pred = np.zeros_like(ref)
    ref[:2] = 1  # 32 voxels GM
    pred[:1] = 1  # 16 voxels, all inside ref
    assert metrics.dice(pred, ref, 1) == pytest.approx(2 * 16 / 48)
    # torch and numpy agree
    assert metrics.dice(torch.as_tensor(pred), torch.as_tensor(ref), 1) == pytest.approx(2 * 16 / 48)


def test_dice_empty_both_is_nan_and_one_sided_is_zero():
    ref = np.zeros((3, 3, 3), dtype=np.int64)
    pred = ref.copy()
    assert math.isnan(metrics.dice(pred, ref, 3))
    pred[0, 0, 0] = 3
    assert metrics.dice(pred, ref, 3) == 0.0
    d = metrics.dice_per_tissue(ref, ref)
    assert set(d) == {"GM", "WM", "CSF"} and all(math.isnan(v) for v in d.values())


def test_dice_shape_mismatch():
    with pytest.raises(ValueError):
        metrics.dice(np.zeros((2, 2)), np.zeros((2, 3)), 1)


def test_volumes_and_batch_volumes():
    lab = np.array([[0, 1, 1], [2, 2, 2], [3, 0, 0]])
    v = metrics.volumes_ml(lab, 0.5)
    assert v == {"GM": 1.0, "WM": 1.5, "CSF": 0.5}
    stack = np.stack([lab, np.zeros_like(lab)])
    bv = metrics.batch_volumes_ml(stack, 0.5)
    np.testing.assert_allclose(bv, [[1.0, 1.5, 0.5], [0, 0, 0]])


def test_cov_uses_sample_sd():
    v = np.array([9.0, 10.0, 11.0])
    assert metrics.coefficient_of_variation(v) == pytest.approx(1.0 / 10.0)
    assert math.isnan(metrics.coefficient_of_variation([5.0]))
    assert metrics.coefficient_of_variation([2.0, 2.0]) == 0.0


def test_cov_undefined_cases_are_nan():
    assert math.isnan(metrics.coefficient_of_variation([0.0, 0.0, 0.0]))  # tissue never segmented: zero mean
    assert math.isnan(metrics.coefficient_of_variation([]))
    # non-finite volumes are dropped before the statistic
    assert metrics.coefficient_of_variation([9.0, float("nan"), 10.0, 11.0]) == pytest.approx(0.1)
    assert math.isnan(metrics.coefficient_of_variation([7.0, float("inf")]))  # one finite value left


def test_tissues_are_the_shared_convention():
    assert metrics.TISSUES is conventions.TISSUES  # the default tissues of every metric
    lab = np.array([0, 1, 2, 3, 3])
    assert metrics.label_counts(lab) == {"GM": 1, "WM": 1, "CSF": 2}


def _long():
    rows = []
    for s in ("s1", "s2"):
        for i, vol in enumerate((9.0, 10.0, 11.0)):
            rows.append(dict(subject=s, sequence="MPRAGE", model="A", distribution="IoD", tissue="GM",
                             param_index=i, volume_ml=vol * (2 if s == "s2" else 1), dice=0.9 + 0.01 * i))
    return pd.DataFrame(rows)


def test_cov_table_and_summary():
    cov = metrics.cov_table(_long())
    assert len(cov) == 2
    np.testing.assert_allclose(cov["cov"], 0.1)
    np.testing.assert_allclose(cov["cov_x1000"], 100.0)
    assert (cov["n"] == 3).all()
    summ = metrics.summarise_across_subjects(cov, "cov_x1000")
    assert summ.loc[0, "mean"] == pytest.approx(100.0) and summ.loc[0, "sd"] == pytest.approx(0.0)
    assert summ.loc[0, "n_subjects"] == 2
    per = metrics.subject_means(_long(), "dice")
    np.testing.assert_allclose(per["dice"], 0.91)
