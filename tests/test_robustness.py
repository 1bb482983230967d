"""physeg.evaluation.robustness: the conditions of the study and its summaries (computed by hand here)."""

from __future__ import annotations

import pandas as pd
import pytest

from physeg.evaluation import robustness as rb
from physeg.profiles import get_profile


def test_conditions_are_one_artefact_at_a_time():
    conds = rb.conditions()
    assert conds[0] == ("clean", 0.0, None)
    assert len(conds) == 1 + sum(len(v) for v in rb.LEVELS.values())
    for kind, level, art in conds[1:]:
        active = {"b1": art.b1[1] > 0, "bias": art.bias[1] > 0, "snr": art.snr is not None}
        assert sum(active.values()) == 1
        if kind.startswith("B1"):
            assert art.b1 == (level, level)
        elif kind == "SNR":
            assert art.snr == (level, level)


def test_config_sizes_per_profile():
    smoke = rb.config_for(get_profile("smoke"))
    assert (smoke.n_subjects, smoke.n_images) == (1, 2)
    assert [c[1] for c in rb.conditions(smoke)] == [0.0, 0.3, 0.6, 10.0]  # the largest level of each
    paper = get_profile("paper")
    assert rb.config_for(paper).n_subjects == paper.n_test


def _frame():
    rows = []
    for model, vols in (("A", [100.0, 110.0]), ("B", [100.0, 100.0])):
        for image, v in enumerate(vols):
            for tissue, d in (("GM", 0.8), ("WM", 0.9), ("CSF", 0.4)):
                rows.append({"training_seed": 0, "sequence": "MPRAGE", "model": model, "kind": "SNR", "level": 20.0,
                             "subject": "s1", "image": image, "tissue": tissue, "dice": d, "volume_ml": v})
    return pd.DataFrame(rows)


def test_summary_and_cov_by_hand():
    tab = rb.summary(_frame())
    row = tab[tab["model"] == "A"].iloc[0]
    assert (row["GM"], row["WM"], row["CSF"]) == (0.8, 0.9, 0.4)
    assert row["mean"] == pytest.approx((0.8 + 0.9 + 0.4) / 3)
    cov = rb.cov_summary(_frame()).set_index("model")["cov_x1000"]
    # volumes 100, 110: SD (ddof 1) = 7.0711, mean 105 -> CoV 0.067344 -> x1000 = 67.34
    assert cov["A"] == pytest.approx(1e3 * 7.0710678 / 105.0, rel=1e-6)
    assert cov["B"] == 0.0


def test_seed_spread_and_arm_difference_by_hand():
    rows = []
    for seed, shift in ((0, 0.0), (1, 0.1)):
        for kind, level in (("clean", 0.0), ("SNR", 10.0)):
            for tissue in ("GM", "WM"):
                rows.append({"training_seed": seed, "sequence": "MPRAGE", "model": "Phys-Strat-Aug", "kind": kind,
                             "level": level, "tissue": tissue, "dice": 0.8 + shift + (0.05 if kind == "SNR" else 0)})
    results = pd.DataFrame(rows)
    # per-seed means 0.8 / 0.9 in each condition: SD (ddof 1) = 0.1 / sqrt(2)
    assert rb.seed_spread(results, model="Phys-Strat-Aug") == pytest.approx(0.1 / 2 ** 0.5)
    assert rb.seed_spread(results[results["training_seed"] == 0], model="Phys-Strat-Aug") != \
        rb.seed_spread(results[results["training_seed"] == 0], model="Phys-Strat-Aug")  # one seed: NaN
    table = pd.DataFrame({"sequence": "SPGR", "model": ["a", "b", "a", "b"], "kind": ["clean", "clean", "SNR", "SNR"],
                          "level": [0.0, 0.0, 10.0, 10.0], "mean": [0.9, 0.5, 0.7, 0.6]})
    gap = rb.arm_difference(table, first="a", second="b")
    assert list(gap.index) == [("SPGR", "SNR", 10.0)] and gap.iloc[0] == pytest.approx(0.1)
