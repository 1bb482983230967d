"""physeg.evaluation.seeds: summaries across seeds and the long results CSV."""

import math

import numpy as np
import pandas as pd

from physeg.evaluation import seeds


def _per_seed():
    rows = []
    for seed, (d, c) in enumerate([(0.90, 5.0), (0.92, 7.0)]):
        for table, mean in (("dice", d), ("cov_x1000", c)):
            rows.append(dict(table=table, model="Baseline", sequence="MPRAGE", tissue="GM", distribution="IoD",
                             mean=mean, sd=0.01, n_subjects=5, seed=seed))
    return pd.DataFrame(rows)


def test_across_seeds_mean_and_spread():
    s = seeds.across_seeds(_per_seed())
    dice = s[s["table"] == "dice"].iloc[0]
    assert math.isclose(dice["mean"], 0.91) and math.isclose(dice["seed_sd"], np.std([0.90, 0.92], ddof=1))
    assert dice["n_seeds"] == 2 and dice["n_subjects"] == 5
    one = seeds.across_seeds(_per_seed().query("seed == 0").drop(columns="seed"))
    assert one["seed_sd"].isna().all() and (one["n_seeds"] == 1).all()


def test_beyond_spread():
    assert seeds.beyond_spread(1.0, 2.0, 0.1, 0.1) is True
    assert seeds.beyond_spread(1.0, 1.1, 0.1, 0.1) is False
    assert seeds.beyond_spread(1.0, 2.0, float("nan"), 0.1) is None


def test_results_csv_long_format(tmp_path):
    frame = seeds.results_csv_frame(seeds.across_seeds(_per_seed()))
    assert list(frame.columns) == list(seeds.RESULT_CSV_COLUMNS)
    cov = frame[frame["metric"] == "cov"].iloc[0]
    assert math.isclose(cov["mean"], 0.006) and cov["n_seeds"] == 2  # CoV as a fraction, not x10^3
    (tmp_path / "mine.txt").write_text("keep")
    paths = seeds.write_csv_tables({"tables": frame}, tmp_path)
    back = pd.read_csv(paths["tables"])
    assert len(back) == 2 and (tmp_path / "mine.txt").read_text() == "keep"
    assert not list(tmp_path.glob(".*.tmp"))


def test_spread_table_compares_steps_with_the_seed_sd():
    rows = []
    for seed, (base, phys) in enumerate([(10.0, 5.0), (10.4, 5.2)]):
        for model, v in (("Baseline", base), ("Phys-Base", phys)):
            rows.append(dict(table="cov_x1000", model=model, sequence="MPRAGE", tissue="GM", distribution="IoD",
                             mean=v, seed=seed))
    t = seeds.spread_table(seeds.across_seeds(pd.DataFrame(rows)))
    r = t.iloc[0]
    assert r["step"] == "Baseline → Phys-Base" and math.isclose(r["diff"], 5.1 - 10.2)
    assert bool(r["decrease_beyond_spread"]) is True
    one = seeds.spread_table(seeds.across_seeds(pd.DataFrame(rows).query("seed == 0")))
    assert one.iloc[0]["decrease_beyond_spread"] is None
