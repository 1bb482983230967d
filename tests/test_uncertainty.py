import numpy as np
import pytest

from physeg.evaluation import calibration as un


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
    tab = un.interval_table(test_s, test_t, cal)
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
