"""The chance spread of a measured interval coverage (physeg.evaluation.coverage_spread)."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from physeg.evaluation import coverage_spread as cs

DEMO_LIKE = cs.CoverageDesign(calibration_subjects=4, images_per_calibration_subject=3, test_subjects=5,
                              images_per_test_subject=1, n_samples=10, between_sd=13.0, within_sd=1.5)


def _sample_table(rng, *, subjects, images, between, within, sd_ml=4.0, n_samples=10, distribution="IoD"):
    """Rows of one model x sequence x tissue: errors = subject bias + image noise (in sample SDs)."""
    rows = []
    bias = rng.normal(0, between, subjects)
    for s in range(subjects):
        for i in range(images):
            truth = 1000.0
            median = truth + sd_ml * (bias[s] + rng.normal(0, within))
            rows.append({"subject": f"sub-{s}", "model": "M", "sequence": "MPRAGE", "tissue": "GM",
                         "distribution": distribution, "pgs_volume_ml": truth,
                         "epistemic": median + sd_ml * rng.standard_normal(n_samples)})
    return pd.DataFrame(rows)


def test_error_components_separate_the_subject_bias_from_the_image_noise():
    rng = np.random.default_rng(0)
    comp = cs.error_components(_sample_table(rng, subjects=60, images=4, between=10.0, within=2.0, n_samples=200))
    row = comp.iloc[0]
    assert row.n_subjects == 60 and row.sample_sd_ml == pytest.approx(4.0, rel=0.05)
    assert row.between_sd == pytest.approx(10.0, rel=0.25)
    assert row.within_sd == pytest.approx(2.0, rel=0.25)


def test_with_many_subjects_the_coverage_concentrates_on_the_level():
    big = dataclasses.replace(DEMO_LIKE, calibration_subjects=150, test_subjects=150)
    pooled = cs.null_coverage(big, cells=1, repeats=40, seed=1)
    summary = cs.null_summary(pooled)
    assert summary["median"] == pytest.approx(0.5, abs=0.05)
    assert summary["q95"] - summary["q05"] < 0.2
    assert summary["p_in_window"] > 0.9


def test_with_few_subjects_it_spreads_and_shared_subjects_spread_it_more():
    one_cell = cs.null_summary(cs.null_coverage(DEMO_LIKE, cells=1, repeats=200, seed=2))
    assert one_cell["q95"] - one_cell["q05"] >= 0.6  # five test images: coverage moves in steps of 0.2
    independent = cs.null_summary(cs.null_coverage(DEMO_LIKE, cells=6, repeats=200, seed=2))
    shared = cs.null_summary(cs.null_coverage(DEMO_LIKE, cells=6, cell_correlation=1.0, repeats=200, seed=2))
    assert shared["q95"] - shared["q05"] > independent["q95"] - independent["q05"] + 0.1
    assert shared["p_in_window"] < independent["p_in_window"]


def test_null_coverage_is_reproducible_and_checks_its_arguments():
    a = cs.null_coverage(DEMO_LIKE, cells=2, repeats=20, seed=5)
    assert np.array_equal(a, cs.null_coverage(DEMO_LIKE, cells=2, repeats=20, seed=5))
    with pytest.raises(ValueError, match="cell_correlation"):
        cs.null_coverage(DEMO_LIKE, cells=2, cell_correlation=1.5)
    with pytest.raises(ValueError, match="calibration subjects"):
        cs.null_coverage(dataclasses.replace(DEMO_LIKE, calibration_subjects=1), cells=2)


def test_design_from_samples_counts_subjects_and_images():
    rng = np.random.default_rng(3)
    val = _sample_table(rng, subjects=4, images=3, between=12.0, within=1.0)
    test = pd.concat([_sample_table(rng, subjects=5, images=2, between=12.0, within=1.0),
                      _sample_table(rng, subjects=7, images=1, between=12.0, within=1.0, distribution="OoD")])
    design = cs.design_from_samples(val, test, n_samples=10)
    assert (design.calibration_subjects, design.images_per_calibration_subject) == (4, 3)
    assert (design.test_subjects, design.images_per_test_subject, design.n_samples) == (5, 2, 10)
    assert design.between_sd > 3 * design.within_sd and design.testable
    assert not dataclasses.replace(design, calibration_subjects=1).testable
    assert not dataclasses.replace(design, between_sd=float("nan")).testable
    spread = cs.subject_spread_by_tissue(val, test)
    assert list(spread.columns) == ["calibration_subjects", "test_subjects"] and list(spread.index) == ["GM"]
    assert spread.loc["GM", "test_subjects"] == pytest.approx(
        cs.error_components(test[test.distribution == "IoD"]).between_sd.iloc[0])


def test_a_run_without_samples_is_not_testable():
    empty = _sample_table(np.random.default_rng(4), subjects=2, images=1, between=1.0, within=1.0).iloc[:0]
    assert cs.error_components(empty).empty
    assert not cs.design_from_samples(empty, empty, n_samples=10).testable
    assert not cs.design_from_samples(pd.DataFrame(), pd.DataFrame(), n_samples=10).testable


def test_coverage_against_null_puts_each_scope_beside_its_spread():
    summary = pd.DataFrame({"model": ["A", "B", "A", "B"], "sequence": "MPRAGE", "tissue": ["GM", "GM", "WM", "WM"],
                            "coverage50_scl": [0.4, 0.6, 1.0, 1.0]}).set_index(["model", "sequence", "tissue"])
    table = cs.coverage_against_null(summary, "coverage50_scl", DEMO_LIKE, repeats=100)
    assert list(table.scope.unique()) == ["all", "GM", "WM"] and set(table.cell_correlation) == {0.0, 1.0}
    row = table[(table.scope == "all") & (table.cell_correlation == 0.0)].iloc[0]
    assert row.cells == 4 and row.measured == pytest.approx(0.75)
    gm = table[(table.scope == "GM") & (table.cell_correlation == 0.0)].iloc[0]
    assert gm.measured == pytest.approx(0.5) and gm.inside_90
    wm = table[(table.scope == "WM") & (table.cell_correlation == 0.0)].iloc[0]
    assert wm.inside_90 == (wm.q05 <= 1.0 <= wm.q95)
