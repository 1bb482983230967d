import numpy as np
import pytest

from physeg.evaluation import calibration as un
from physeg.evaluation import interval_scores as scores


def _draws(rng, n, S, s_model, s_truth):
    mu = rng.uniform(400, 600, size=n)
    samples = mu[:, None] + rng.normal(0, s_model, size=(n, S))
    truth = mu + rng.normal(0, s_truth, size=n)
    return samples, truth


def test_overconfident_samples_recalibrated():
    rng = np.random.default_rng(0)
    s = 5.0
    val_s, val_t = _draws(rng, 1500, 50, s, 2 * s)
    test_s, test_t = _draws(rng, 1500, 50, s, 2 * s)
    lo, hi = un.uncalibrated_interval(test_s, 0.5)
    raw = un.coverage(lo, hi, test_t)
    assert raw < 0.35  # theory: P(|Z| < 0.337) = 0.264
    cal = un.fit_calibration(val_s, val_t)
    for c in un.DEFAULT_LEVELS:
        lo, hi = cal.interval(test_s, c)
        assert un.coverage(lo, hi, test_t) == pytest.approx(c, abs=0.04)
    # the recalibrated IQR is wider than the raw one (about 2x here)
    rlo, rhi = un.uncalibrated_interval(test_s, 0.5)
    assert np.mean(cal.iqr(test_s)) > 1.6 * np.mean(rhi - rlo)
    tab = scores.interval_table(test_s, test_t, cal)
    assert (tab["coverage_cal"] - tab["level"]).abs().max() < 0.04
    assert (tab["coverage_raw"] < tab["level"]).all()


def test_calibrated_input_stays_unchanged():
    rng = np.random.default_rng(1)
    val_s, val_t = _draws(rng, 2000, 50, 5.0, 5.0)
    cal = un.fit_calibration(val_s, val_t)
    assert cal.lower[0.5] == pytest.approx(0.25, abs=0.04)
    assert cal.upper[0.5] == pytest.approx(0.75, abs=0.04)
    assert cal.lower[0.9] == pytest.approx(0.05, abs=0.03)


def test_quantile_and_pit_are_inverse_including_tails():
    rng = np.random.default_rng(2)
    s = rng.normal(100, 3, size=(4, 50))
    for p in (1e-3, 0.01, 0.3, 0.5, 0.97, 0.999):
        q = un.sample_quantile(s, p)
        np.testing.assert_allclose(un.pit(s, q), p, atol=1e-6)
    assert np.all(np.diff([un.sample_quantile(s, p)[0] for p in np.linspace(0.001, 0.999, 50)]) > 0)


def test_degenerate_samples():
    s = np.full((3, 10), 7.0)
    assert np.all(un.sample_quantile(s, 0.99) == 7.0)
    np.testing.assert_allclose(un.pit(s, [7.0, 6.0, 8.0]), [0.5, 1e-6, 1 - 1e-6])


def test_variance_ratio_known():
    rng = np.random.default_rng(3)
    a = rng.normal(0, 1.0, size=(20, 2000))
    e = rng.normal(0, 10.0, size=(20, 2000))
    r = un.variance_ratio(a, e)
    assert r["ratio"].median() == pytest.approx(0.01, rel=0.15)
    assert (r["aleatoric_fraction"] < 0.02).all()


def test_total_variance_decomposition_known():
    rng = np.random.default_rng(4)
    M, T = 400, 400
    means = rng.normal(0, 3.0, size=(M, 1))  # epistemic var 9
    samples = means + rng.normal(0, 1.0, size=(M, T))  # aleatoric var 1
    d = un.total_variance_decomposition(samples)
    assert d["aleatoric"] == pytest.approx(1.0, rel=0.05)
    assert d["epistemic"] == pytest.approx(9.0, rel=0.2)
    assert d["total"] == pytest.approx(d["aleatoric"] + d["epistemic"], rel=1e-9)


def test_volume_samples():
    lab = np.zeros((5, 2, 2, 2), dtype=np.int64)
    lab[:, 0] = 2
    lab[2, 1] = 1
    v = un.volume_samples(lab, 2.0)
    assert v.shape == (5, 3)
    assert v[0, 1] == 8.0 and v[2, 0] == 8.0


def test_biased_model_widens_not_collapses():
    rng = np.random.default_rng(5)

    def draws(n):
        mu = rng.uniform(400, 600, size=n)
        return mu[:, None] + rng.normal(0, 5.0, size=(n, 50)), mu + 8.0 + rng.normal(0, 2.0, size=n)

    val_s, val_t = draws(1500)
    test_s, test_t = draws(1500)
    cal = un.fit_calibration(val_s, val_t)
    for c in (0.5, 0.9):
        lo, hi = cal.interval(test_s, c)
        assert un.coverage(lo, hi, test_t) == pytest.approx(c, abs=0.05)
        rlo, rhi = un.uncalibrated_interval(test_s, c)
        assert np.all(hi - lo > rhi - rlo)
    # a validation set whose references all lie far outside: the widest interval, not a zero-width one
    cal = un.fit_calibration(val_s[:4], val_s[:4, 0] - 1000.0)
    assert np.all(cal.iqr(test_s[:3]) > 0)
    # ... and the calibration says its width is the cap's (about 6 sample SDs each side), not a fitted one
    assert cal.to_frame()["at_cap"].all() and not un.fit_calibration(val_s, val_t).to_frame()["at_cap"].any()
    lo, hi = cal.interval(test_s[:3], 0.5)
    sd = test_s[:3].std(1, ddof=1)
    assert np.all((hi - lo) / sd > 10) and np.all((hi - lo) / sd < 14)


def _biased_subjects(rng, n_subjects, per_subject, *, bias, subject_sd, sample_sd=5.0, S=50):
    """Images of several subjects whose samples all miss the reference by a subject-specific bias (ml)."""
    groups = np.repeat(np.arange(n_subjects), per_subject)
    offsets = bias + rng.normal(0, subject_sd, size=n_subjects)[groups] + rng.normal(0, 2.0, size=groups.size)
    mu = rng.uniform(400, 600, size=groups.size)
    return mu[:, None] + rng.normal(0, sample_sd, size=(groups.size, S)), mu - offsets, groups


def test_located_calibration_removes_a_shared_bias():
    # every sample 60 ml too high, spread 5 ml: the paper's percentiles can only widen around the wrong median
    rng = np.random.default_rng(6)
    val_s, val_t, val_g = _biased_subjects(rng, 40, 5, bias=60.0, subject_sd=4.0)
    test_s, test_t, _ = _biased_subjects(rng, 200, 5, bias=60.0, subject_sd=4.0)
    paper = un.fit_calibration(val_s, val_t)
    located = un.fit_calibration(val_s, val_t, form="located", groups=val_g)
    assert paper.shift_ml == 0.0 and paper.form == "percentile" and located.form == "located"
    assert located.shift_ml == pytest.approx(-60.0, abs=3.0)
    lo, hi = located.interval(test_s, 0.5)
    assert un.coverage(lo, hi, test_t) == pytest.approx(0.5, abs=0.06)
    assert np.all((located.centre(test_s) >= lo) & (located.centre(test_s) <= hi))
    # the paper's form pays for the bias with width: an interval about 24 sample SDs wide
    assert np.mean(paper.iqr(test_s)) > 4 * np.mean(located.iqr(test_s))
    tab = scores.interval_table(test_s, test_t, paper, [0.5], located=located)
    assert tab.loc[0, "coverage_loc"] == pytest.approx(0.5, abs=0.06) and "width_loc" in tab


def test_located_calibration_cross_fits_across_subjects():
    # the bias changes from subject to subject: cross-fitted shifts widen the interval to cover that too
    rng = np.random.default_rng(7)
    val_s, val_t, val_g = _biased_subjects(rng, 6, 10, bias=60.0, subject_sd=20.0)
    test_s, test_t, _ = _biased_subjects(rng, 300, 5, bias=60.0, subject_sd=20.0)
    crossed = un.fit_calibration(val_s, val_t, form="located", groups=val_g)
    naive = un.fit_calibration(val_s, val_t, form="located")
    assert crossed.shift_ml == naive.shift_ml
    assert np.mean(crossed.iqr(test_s)) > np.mean(naive.iqr(test_s))
    covered = [un.coverage(*cal.interval(test_s, 0.5), test_t) for cal in (naive, crossed)]
    assert abs(covered[1] - 0.5) < abs(covered[0] - 0.5)


def test_scaled_calibration_is_not_capped_where_the_percentiles_are():
    # errors of ~20 sample SDs from subject to subject: the percentile forms hit their cap (50 % = 90 % interval),
    # the scaled form fits k_c in sample SDs and covers about c of new subjects at every level
    rng = np.random.default_rng(9)
    val_s, val_t, val_g = _biased_subjects(rng, 120, 2, bias=40.0, subject_sd=60.0, sample_sd=3.0)
    test_s, test_t, _ = _biased_subjects(rng, 400, 1, bias=40.0, subject_sd=60.0, sample_sd=3.0)
    located = un.fit_calibration(val_s, val_t, form="located", groups=val_g)
    scaled = un.fit_calibration(val_s, val_t, form="scaled", groups=val_g)
    assert located.to_frame()["at_cap"].all() and not scaled.to_frame()["at_cap"].any()
    assert scaled.shift_ml == located.shift_ml and scaled.levels == located.levels
    assert 10 < scaled.scale_sd[0.5] < scaled.scale_sd[0.9]
    for level in (0.5, 0.8, 0.9):
        assert un.coverage(*scaled.interval(test_s, level), test_t) == pytest.approx(level, abs=0.08)
    assert un.coverage(*located.interval(test_s, 0.5), test_t) < 0.3  # the cap: ~6 SDs of a ~20-SD error
    # an image whose samples spread twice as much gets an interval twice as wide
    wide = np.median(test_s[:1], axis=1, keepdims=True) + 2 * (test_s[:1] - np.median(test_s[:1]))
    assert np.diff(scaled.interval(wide, 0.5), axis=0)[0, 0] == pytest.approx(
        2 * np.diff(scaled.interval(test_s[:1], 0.5), axis=0)[0, 0])
    med, lo, hi, cal = un.volume_interval(test_s[0], scaled, 0.5)
    assert cal and lo <= med <= hi and med == pytest.approx(np.median(test_s[0]) + scaled.shift_ml)


def test_scaled_calibration_of_zero_spread_samples_stays_finite():
    s = np.full((4, 10), 500.0)
    scaled = un.fit_calibration(s, np.array([500.0, 510.0, 490.0, 520.0]), form="scaled")
    assert scaled.scale_sd[0.95] == un.MAX_SCALE_SD and scaled.to_frame()["at_cap"].iloc[-1]
    lo, hi = scaled.interval(s, 0.5)
    assert np.all(np.isfinite(lo)) and np.all(lo == hi)  # zero spread: no width to scale, said by at_cap


def test_unknown_calibration_form_is_refused():
    with pytest.raises(ValueError, match="unknown calibration form"):
        un.fit_calibration(np.ones((2, 3)), np.ones(2), form="shifted")


def test_score_uncertainty_reports_both_calibrations():
    import pandas as pd

    rng = np.random.default_rng(8)

    def frame(n_subjects):
        s, t, g = _biased_subjects(rng, n_subjects, 3, bias=30.0, subject_sd=5.0, S=20)
        return pd.DataFrame({"subject": [f"s{i}" for i in g], "model": "M", "sequence": "MPRAGE", "tissue": "GM",
                             "distribution": "IoD", "param_index": range(len(t)), "pgs_volume_ml": t,
                             "aleatoric": list(s[:, :5]), "epistemic": list(s)})

    per, cov, cal = scores.score_uncertainty(frame(8), frame(20))
    assert set(cal["form"]) == {"percentile", "located", "scaled"}
    assert cal.loc[cal.form == "scaled", "scale_sd"].gt(0).all() and cal.loc[cal.form == "scaled", "lower_pct"].isna().all()
    assert {"lo50_scl", "hi50_scl", "iqr_scl", "covered50_scl", "abs_error_scl"} <= set(per)
    assert {"coverage_scl", "width_scl"} <= set(cov)
    assert cal.loc[cal.form == "percentile", "shift_ml"].eq(0).all()
    assert cal.loc[cal.form == "located", "shift_ml"].iloc[0] == pytest.approx(-30.0, abs=6.0)
    assert {"shift_ml", "lo50_loc", "hi50_loc", "iqr_loc", "covered50_loc", "abs_error_loc"} <= set(per)
    assert per["abs_error_loc"].mean() < per["abs_error"].mean()
    summary = scores.coverage50_summary(per)
    assert {"coverage50_loc", "iqr_loc_ml", "coverage50_scl", "iqr_scl_ml", "shift_ml"} <= set(summary)
    assert summary["coverage50_loc"].iloc[0] > summary["coverage50_raw"].iloc[0]
    # the judged form comes first, and only the forms the summary holds are named
    assert list(scores.coverage50_columns(summary)) == ["scaled", "located", "percentile"]
    assert scores.coverage50_columns(summary)["percentile"] == "coverage50"
    assert list(scores.coverage50_columns(summary.drop(columns=["coverage50_scl"]))) == ["located", "percentile"]


def test_seed_spread_puts_each_training_seed_beside_the_others():
    import pandas as pd

    from physeg.evaluation.interval_scores import seed_spread

    rows = [dict(model="Baseline", tissue=t, seed=s, distribution=d, var_aleatoric=1.0, var_epistemic=10.0 * (s + 1),
                 iqr_cal=5.0 + s + (2 if d == "OoD" else 0), covered50_loc=bool(i % 2 or s))
            for t in ("GM", "WM", "CSF") for s in (0, 1) for d in ("IoD", "OoD") for i in range(4)]
    out = seed_spread(pd.DataFrame(rows)).set_index(["model", "tissue", "seed"])
    assert set(out.index.get_level_values("tissue")) == {"GM", "WM"}
    assert out.loc[("Baseline", "GM", 0), "variance_ratio"] == pytest.approx(0.1)
    assert out.loc[("Baseline", "GM", 1), "variance_ratio"] == pytest.approx(0.05)
    assert out.loc[("Baseline", "WM", 1), "iqr_OoD_ml"] == pytest.approx(8.0)
    assert out.loc[("Baseline", "WM", 0), "coverage50_loc_IoD"] == pytest.approx(0.5)
    assert out.loc[("Baseline", "WM", 1), "coverage50_loc_IoD"] == pytest.approx(1.0)


def test_volume_interval_holds_its_median_calibrated_or_not():
    rng = np.random.default_rng(3)
    s = rng.normal(500, 5, 50)
    med, lo, hi, cal = un.volume_interval(s, None, 0.5)
    assert not cal and lo <= med <= hi and med == pytest.approx(np.median(s))
    located = un.fit_calibration(rng.normal(500, 5, (8, 50)), np.full(8, 520.0), form="located")
    med, lo, hi, cal = un.volume_interval(s, located, 0.5)
    assert cal and med == pytest.approx(np.median(s) + located.shift_ml) and lo <= med <= hi
    med, lo, hi, cal = un.volume_interval(s, located, 0.37)  # a level the calibration lacks: raw, moved
    assert not cal and lo <= med <= hi and lo > 505
