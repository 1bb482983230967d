"""physeg.evaluation.diagnosis: the measured causes printed beside the claims."""

from __future__ import annotations

import itertools

import pandas as pd

from physeg.evaluation.diagnosis import diagnose

MODELS = ("Baseline", "Phys-Base", "Phys-Strat", "Phys-Strat-Aug")


def _per_seed(seeds=(0, 1), cov_noise=5.0):
    rows = []
    for seed, (k, model), seq, dist, tissue in itertools.product(seeds, enumerate(MODELS), ("MPRAGE", "SPGR"),
                                                                  ("IoD", "OoD"), ("GM", "WM", "CSF")):
        dice = 0.85 if k < 2 else 0.80  # the stratified models 0.05 lower
        rows.append({"table": "dice", "model": model, "sequence": seq, "distribution": dist, "tissue": tissue,
                     "mean": dice, "seed": seed})
        if tissue != "CSF":  # CoV x 1000 falls by 1 per ablation, seeds differ by +-cov_noise
            rows.append({"table": "cov_x1000", "model": model, "sequence": seq, "distribution": dist,
                         "tissue": tissue, "mean": 20.0 - k + (cov_noise if seed else -cov_noise), "seed": seed})
    return pd.DataFrame(rows)


def test_each_cause_is_measured_from_the_tables():
    ceiling = pd.DataFrame({"tissue": ["GM", "WM", "CSF"], "mean": [0.92, 0.92, 0.70], "sd": 0.01, "n": 5})
    text = diagnose(_per_seed(), ceiling=ceiling, batch_size=4)
    assert "up to 0.12 Dice below that ceiling for GM/WM" in text
    assert "Of 24 CoV steps" in text and "0 are decreases larger than their combined seed-to-seed SD" in text
    assert "4× fewer distinct patches" in text and "mixed − stratified +0.050" in text


def test_steps_beyond_a_small_spread_are_counted():
    text = diagnose(_per_seed(cov_noise=0.01), ceiling=None, batch_size=4)
    assert "24 are decreases larger" in text and "ceiling" not in text


def test_one_seed_says_the_spread_is_unknown():
    text = diagnose(_per_seed(seeds=(0,)), ceiling=None, batch_size=4)
    assert "One training seed: the seed-to-seed spread is unknown" in text


def test_tissues_a_model_does_not_segment_are_listed():
    assert "Every model segments every tissue" in diagnose(_per_seed(), ceiling=None, batch_size=4)
    per_seed = _per_seed()
    csf_spgr = (per_seed["table"] == "dice") & (per_seed["sequence"] == "SPGR") & (per_seed["tissue"] == "CSF")
    per_seed.loc[csf_spgr & per_seed["model"].isin(["Phys-Strat", "Phys-Strat-Aug"]), "mean"] = 0.0
    per_seed.loc[csf_spgr & (per_seed["model"] == "Baseline") & (per_seed["seed"] == 1), "mean"] = 0.08  # mean 0.47
    text = diagnose(per_seed, ceiling=None, batch_size=4)
    assert "SPGR CSF: Phys-Strat 0.00, Phys-Strat-Aug 0.00." in text and "Baseline" not in text.split("**Missing")[1]


def test_uncertainty_paragraph_gives_the_rate_and_the_bias():
    per_image = pd.DataFrame({"model": "Baseline", "sequence": "MPRAGE", "tissue": ["GM", "GM", "WM", "CSF"],
                              "distribution": ["IoD", "IoD", "IoD", "IoD"], "epi_median": [110.0, 130.0, 90.0, 5.0],
                              "pgs_volume_ml": [100.0, 100.0, 100.0, 10.0]})
    text = diagnose(_per_seed(), ceiling=None, batch_size=4, uncertainty=per_image, epistemic_dropout=0.1)
    assert "dropout 0.1" in text and "Baseline MPRAGE GM +20" in text and "Baseline MPRAGE WM -10" in text
    assert "CSF" not in text.split("**Uncertainty models.**")[1]
    assert "Uncertainty models" not in diagnose(_per_seed(), ceiling=None, batch_size=4)
    assert "one training seed" in text
    seeded = pd.concat([per_image.assign(seed=0), per_image.assign(seed=1, epi_median=per_image.epi_median + 10)])
    text = diagnose(_per_seed(), ceiling=None, batch_size=4, uncertainty=seeded, epistemic_dropout=0.1)
    assert "2 training seeds" in text and "Baseline MPRAGE GM +25" in text
