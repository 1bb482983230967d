import numpy as np
import pandas as pd
import pytest

from physeg.evaluation import claims as cl
from physeg.profiles import ABLATIONS


def _summary(cov_by_model, dice_by_model, sequences=("MPRAGE", "SPGR")):
    rows = []
    for m in cov_by_model:
        for s in sequences:
            for t in ("GM", "WM"):
                for d in ("IoD", "OoD"):
                    c = cov_by_model[m][s] if isinstance(cov_by_model[m], dict) else cov_by_model[m]
                    rows.append(dict(table="cov_x1000", model=m, sequence=s, tissue=t, distribution=d, mean=c, sd=0.1))
                    rows.append(dict(table="dice", model=m, sequence=s, tissue=t, distribution=d,
                                     mean=dice_by_model[m], sd=0.01))
    return pd.DataFrame(rows)


GOOD_COV = {"Baseline": 20.0, "Phys-Base": 12.0, "Phys-Strat": 3.0,
            "Phys-Strat-Aug": {"MPRAGE": 2.9, "SPGR": 1.5}}
GOOD_DICE = {"Baseline": 0.90, "Phys-Base": 0.905, "Phys-Strat": 0.91, "Phys-Strat-Aug": 0.91}


def test_claims_1_to_3_reproduced():
    s = _summary(GOOD_COV, GOOD_DICE)
    assert cl.claim_cov_order(s)["verdict"] == cl.REPRODUCED
    assert cl.claim_dice_not_sacrificed(s)["verdict"] == cl.REPRODUCED
    assert cl.claim_aug_spgr(s)["verdict"] == cl.REPRODUCED


def test_claims_1_to_3_not_reproduced():
    cov = dict(GOOD_COV, **{"Phys-Base": 25.0})  # Phys-Base worse than Baseline
    assert cl.claim_cov_order(_summary(cov, GOOD_DICE))["verdict"] == cl.NOT_REPRODUCED
    cov = {"Baseline": 20.0, "Phys-Base": 5.0, "Phys-Strat": 4.0, "Phys-Strat-Aug": 3.0}  # largest step B→PB
    r = cl.claim_cov_order(_summary(cov, GOOD_DICE))
    assert r["verdict"] == cl.NOT_REPRODUCED and "stratification is the largest step in 0/4" in r["evidence"]
    dice = dict(GOOD_DICE, **{"Phys-Strat": 0.85})
    assert cl.claim_dice_not_sacrificed(_summary(GOOD_COV, dice))["verdict"] == cl.NOT_REPRODUCED
    # within tolerance still counts as not sacrificed
    dice = dict(GOOD_DICE, **{"Phys-Strat": 0.90 - cl.DICE_TOLERANCE / 2})
    assert cl.claim_dice_not_sacrificed(_summary(GOOD_COV, dice))["verdict"] == cl.REPRODUCED
    cov = dict(GOOD_COV, **{"Phys-Strat-Aug": {"MPRAGE": 1.0, "SPGR": 2.9}})
    assert cl.claim_aug_spgr(_summary(cov, GOOD_DICE))["verdict"] == cl.NOT_REPRODUCED


def test_missing_model_not_testable():
    cov = {k: v for k, v in GOOD_COV.items() if k != "Phys-Base"}
    s = _summary(cov, GOOD_DICE)
    r = cl.claim_cov_order(s)
    assert r["verdict"] == cl.NOT_TESTABLE and "Phys-Base" in r["evidence"]
    s2 = _summary({"Baseline": 1.0}, GOOD_DICE)
    assert cl.claim_aug_spgr(s2)["verdict"] == cl.NOT_TESTABLE
    assert cl.claim_dice_not_sacrificed(s2)["verdict"] == cl.NOT_TESTABLE


def _unc(ratio=0.01, aug_ood_wider=True, low_fa_wider=True, base_tracks=False, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for m in ("Baseline", "Phys-Strat-Aug"):
        for s in ("MPRAGE", "SPGR"):
            for t in ("GM", "WM"):
                for d in ("IoD", "OoD"):
                    for i in range(30):
                        low = s == "SPGR" and d == "OoD" and i < 6
                        err = rng.uniform(0, 10)
                        if m == "Baseline":
                            iqr = err if base_tracks else rng.uniform(1, 2)
                        else:
                            iqr = 1.0 + (1.0 if (d == "OoD" and aug_ood_wider) else 0) \
                                + (5.0 if (low and low_fa_wider) else 0) + rng.uniform(0, 0.1)
                        rows.append(dict(model=m, sequence=s, tissue=t, distribution=d, param_index=i,
                                         var_aleatoric=ratio * 4.0, var_epistemic=4.0, iqr_cal=iqr,
                                         abs_error=err, low_fa=low))
    return pd.DataFrame(rows)


def test_claim_4_both_outcomes():
    assert cl.claim_aleatoric_negligible(_unc(0.01))["verdict"] == cl.REPRODUCED
    assert cl.claim_aleatoric_negligible(_unc(0.5))["verdict"] == cl.NOT_REPRODUCED
    assert cl.claim_aleatoric_negligible(None)["verdict"] == cl.NOT_TESTABLE
    u = _unc()
    u["var_epistemic"] = 0.0
    assert cl.claim_aleatoric_negligible(u)["verdict"] == cl.NOT_TESTABLE
    u = _unc(0.01)
    u.loc[u.model == "Baseline", "var_epistemic"] = 0.0  # undefined for one model, fine for the other
    assert cl.claim_aleatoric_negligible(u)["verdict"] == cl.NOT_TESTABLE
    u = _unc(0.5)
    u.loc[u.model == "Baseline", "var_epistemic"] = 0.0  # one defined ratio fails: not reproduced
    assert cl.claim_aleatoric_negligible(u)["verdict"] == cl.NOT_REPRODUCED


def test_claim_5_both_outcomes():
    assert cl.claim_intervals(_unc())["verdict"] == cl.REPRODUCED
    assert cl.claim_intervals(_unc(aug_ood_wider=False))["verdict"] == cl.NOT_REPRODUCED
    assert cl.claim_intervals(_unc(low_fa_wider=False))["verdict"] == cl.NOT_REPRODUCED
    assert cl.claim_intervals(_unc(base_tracks=True))["verdict"] == cl.NOT_REPRODUCED
    u = _unc()
    u["low_fa"] = False
    r = cl.claim_intervals(u)
    assert r["verdict"] == cl.NOT_TESTABLE and "FA < 10" in r["evidence"]


def _seeded(*summaries):
    return pd.concat([x.assign(seed=i) for i, x in enumerate(summaries)], ignore_index=True)


def test_evaluate_claims_table_and_prose():
    s = _seeded(_summary(GOOD_COV, GOOD_DICE), _summary(GOOD_COV, dict(GOOD_DICE, Baseline=0.899)))
    t = cl.evaluate_claims(s, profile="smoke", uncertainty=_seeded(_unc(seed=0), _unc(seed=1)))
    assert list(t["claim"]) == [1, 2, 3, 4, 5]
    assert set(t.columns) >= {"claim", "verdict", "evidence", "profile", "paper_numbers", "criterion"}
    assert (t["verdict"] == cl.REPRODUCED).all() and (t["profile"] == "smoke").all()
    assert "2 seeds" in t.loc[0, "evidence"]
    # the paper's own Table 2 is not monotone for SPGR Phys-Base: criterion 1 reads it as not reproduced
    assert t.loc[0, "paper_numbers"] == cl.NOT_REPRODUCED and t.loc[3, "paper_numbers"] == "n/a"
    prose = cl.summary_prose(t)
    assert "of 5 claims: 5 reproduced" in prose and "smoke" in prose
    t2 = cl.evaluate_claims(None, profile="smoke")
    assert (t2["verdict"] == cl.NOT_TESTABLE).all()


def test_claims_need_more_than_one_seed_and_agreeing_seeds():
    one = cl.evaluate_claims(_summary(GOOD_COV, GOOD_DICE), profile="demo")
    assert (one.loc[:2, "verdict"] == cl.NOT_TESTABLE).all()
    assert "one training seed" in one.loc[0, "evidence"] and "criterion holds" in one.loc[0, "evidence"]
    flipped = dict(GOOD_COV, **{"Phys-Base": 25.0})  # on this seed the order fails
    two = cl.evaluate_claims(_seeded(_summary(GOOD_COV, GOOD_DICE), _summary(flipped, GOOD_DICE)), profile="demo")
    assert two.loc[0, "verdict"] == cl.INCONCLUSIVE and "seed 1: not reproduced" in two.loc[0, "evidence"]
    both = cl.evaluate_claims(_seeded(_summary(flipped, GOOD_DICE), _summary(flipped, GOOD_DICE)), profile="demo")
    assert both.loc[0, "verdict"] == cl.NOT_REPRODUCED


def test_claims_4_5_need_more_than_one_seed_of_the_uncertainty_models():
    s = _seeded(_summary(GOOD_COV, GOOD_DICE), _summary(GOOD_COV, GOOD_DICE))
    one = cl.evaluate_claims(s, profile="demo", uncertainty=_unc(0.01))  # no seed column: one training seed
    assert (one.loc[3:, "verdict"] == cl.NOT_TESTABLE).all()
    assert "one training seed" in one.loc[3, "evidence"] and "criterion holds" in one.loc[3, "evidence"]
    agree = cl.evaluate_claims(s, profile="demo", uncertainty=_seeded(_unc(0.01, seed=0), _unc(0.02, seed=1)))
    assert agree.loc[3, "verdict"] == cl.REPRODUCED
    assert "2 seeds" in agree.loc[3, "evidence"] and "seed 1: Baseline GM" in agree.loc[3, "evidence"]
    split = cl.evaluate_claims(s, profile="demo", uncertainty=_seeded(_unc(0.01, seed=0), _unc(0.5, seed=1)))
    assert split.loc[3, "verdict"] == cl.INCONCLUSIVE and "seed 1: not reproduced" in split.loc[3, "evidence"]
    fail = _seeded(_unc(aug_ood_wider=False, seed=0), _unc(aug_ood_wider=False, seed=1))
    assert cl.evaluate_claims(s, profile="demo", uncertainty=fail).loc[4, "verdict"] == cl.NOT_REPRODUCED
    untestable = _unc(seed=1).assign(low_fa=False)  # no FA < 10° image on the second seed's table
    row = cl.evaluate_claims(s, profile="demo", uncertainty=_seeded(_unc(seed=0), untestable)).loc[4]
    assert row["verdict"] == cl.NOT_TESTABLE and row["evidence"].startswith("not testable on seed 1: ")


def test_claim_5c_needs_power():
    assert cl.detectable_rho(3) == 1.0
    assert cl.detectable_rho(10) > 0.7 > cl.detectable_rho(60)
    small = _unc()
    small = small[small["param_index"] < 8]  # 16 Baseline images per sequence x tissue: underpowered
    r = cl.claim_intervals(small)
    assert r["verdict"] == cl.NOT_TESTABLE and "too few images" in r["evidence"]
    # a significant correlation is evidence whatever the power
    small_tracking = _unc(base_tracks=True)
    small_tracking = small_tracking[small_tracking["param_index"] < 8]
    assert cl.claim_intervals(small_tracking)["verdict"] == cl.NOT_REPRODUCED


def test_claim_5_zero_width_intervals_not_testable():
    u = _unc()
    u.loc[u.model == "Phys-Strat-Aug", "iqr_cal"] = 0.0
    r = cl.claim_intervals(u)
    assert r["verdict"] == cl.NOT_TESTABLE and "zero width" in r["evidence"]
