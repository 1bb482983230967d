"""``physeg consistency`` on constructed tables with known CoV, ICC and Bland–Altman; the protocol card's arithmetic."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from physeg.cli import main
from physeg.study.consistency import consistency


def known_table() -> pd.DataFrame:
    """Three subjects scanned twice (plus one scanned once, left out): GM pairs (10, 12), (20, 22), (30, 29)."""
    return pd.DataFrame({
        "participant_id": ["a", "a", "b", "b", "c", "c", "d"],
        "GM_ml": [10.0, 12.0, 20.0, 22.0, 30.0, 29.0, 50.0],
        "WM_ml": [5.0, 5.0, 6.0, 6.0, 7.0, 7.0, 1.0],
        "CSF_ml": [1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 9.0],
    })


def icc1_by_anova(x: np.ndarray) -> float:
    """ICC(1,1) from the one-way ANOVA mean squares (Shrout & Fleiss 1979), ``x`` subjects × scans."""
    n, k = x.shape
    msb = k * ((x.mean(1) - x.mean()) ** 2).sum() / (n - 1)
    msw = ((x - x.mean(1, keepdims=True)) ** 2).sum() / (n * (k - 1))
    return (msb - msw) / (msb + (k - 1) * msw)


def test_known_cov_icc_bland_altman():
    res = consistency(known_table())
    gm = res.summary.set_index("tissue").loc["GM"]
    assert gm["n_subjects"] == 3 and gm["n_scans"] == 6
    covs = [np.sqrt(2) / 11, np.sqrt(2) / 21, np.sqrt(0.5) / 29.5]  # SD (ddof 1) / mean of each pair
    assert gm["mean_cov_pct"] == pytest.approx(100 * np.mean(covs))
    assert gm["max_cov_pct"] == pytest.approx(100 * max(covs))
    x = np.array([[10, 12], [20, 22], [30, 29]], float)
    assert gm["icc1"] == pytest.approx(icc1_by_anova(x)) and gm["icc1"] == pytest.approx(0.98266, abs=1e-4)
    assert gm["icc1_ci95_low"] <= gm["icc1"] <= gm["icc1_ci95_high"]
    d = np.array([2.0, 2.0, -1.0])
    assert gm["ba_bias_ml"] == pytest.approx(1.0)
    assert gm["ba_loa_high_ml"] == pytest.approx(1 + 1.96 * d.std(ddof=1))
    wm = res.summary.set_index("tissue").loc["WM"]  # identical repeats: no variation at all
    assert wm["mean_cov_pct"] == 0 and wm["ba_bias_ml"] == 0
    subj = res.subjects[res.subjects.tissue == "GM"].set_index("participant_id")
    assert list(subj.index) == ["a", "b", "c"] and subj.loc["a", "cov_pct"] == pytest.approx(100 * covs[0])


def test_icc_keeps_subjects_with_the_common_scan_count():
    t = known_table()
    extra = pd.DataFrame({"participant_id": ["e"] * 3, "GM_ml": [40.0, 41, 80], "WM_ml": [1.0] * 3,
                          "CSF_ml": [1.0] * 3})
    res = consistency(pd.concat([t, extra], ignore_index=True))
    gm = res.summary.set_index("tissue").loc["GM"]
    x = np.array([[10, 12], [20, 22], [30, 29], [40, 41]], float)  # e's first two scans
    assert gm["icc_n_subjects"] == 4 and gm["icc1"] == pytest.approx(icc1_by_anova(x))
    assert gm["n_subjects"] == 4


def test_cli_writes_tsv_and_figures(tmp_path, capsys):
    deriv = tmp_path / "deriv"
    deriv.mkdir()
    known_table().to_csv(deriv / "volumes.tsv", sep="\t", index=False)
    assert main(["consistency", str(deriv)]) == 0
    out = deriv / "consistency"
    summary = pd.read_csv(out / "consistency.tsv", sep="\t")
    assert list(summary["tissue"]) == ["GM", "WM", "CSF"] and summary.loc[0, "icc1"] == pytest.approx(0.98266, abs=1e-4)
    assert len(pd.read_csv(out / "consistency_subjects.tsv", sep="\t")) == 9
    assert (out / "bland_altman.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    # existing outputs: refused without --force, replaced with it
    assert main(["consistency", str(deriv / "volumes.tsv")]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["consistency", str(deriv / "volumes.tsv"), "--force"]) == 0


@pytest.mark.parametrize("content, message", [
    (None, "no volumes.tsv"),
    ("participant_id\tGM_ml\n", "no column WM_ml"),
    ("participant_id\tGM_ml\tWM_ml\tCSF_ml\na\t1\t2\t3\nb\t1\t2\t3\n", "no subject has two or more scans"),
])
def test_cli_usage_errors(tmp_path, capsys, content, message):
    if content is not None:
        (tmp_path / "volumes.tsv").write_text(content)
    assert main(["consistency", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("physeg consistency: error:") and message in err and err.count("\n") == 1
    assert not (tmp_path / "consistency").exists()


def test_protocol_card_arithmetic():
    from physeg.study.protocol_card import card_from_volumes, perturbed_protocols

    vols = np.array([[[110, 50, 10], [100, 50, 10], [120, 50, 10]],
                     [[90, 40, 10], [90, 40, 10], [90, 40, 10]]], float)  # subjects × protocols × tissues
    pgs = np.array([[100, 50, 10], [100, 40, 20]], float)
    card = card_from_volumes(vols, pgs)
    assert card["tissues"]["GM"]["bias_pct"] == pytest.approx(100 * ((1.1 + 0.9) / 2 - 1))
    assert card["tissues"]["CSF"]["bias_pct"] == pytest.approx(100 * ((1.0 + 0.5) / 2 - 1))
    assert card["tissues"]["GM"]["cov_pct"] == pytest.approx(100 * (np.std([110, 100, 120], ddof=1) / 110) / 2)
    assert card["tissues"]["WM"]["cov_pct"] == 0 and card["n_subjects"] == 2 and card["n_protocols"] == 3
    assert perturbed_protocols("MPRAGE", {"TI": 1.0}) == [{"TI": 1.0}, {"TI": 0.9}, {"TI": 1.1}]
    spgr = perturbed_protocols("SPGR", {"TR": 0.0052, "TE": 0.005, "FA": 170.0})
    # TR x 0.9 < TE, TE x 1.1 > TR and FA x 1.1 > 180 are left out
    assert all(p["TR"] > p["TE"] and p["FA"] <= 180 for p in spgr) and len(spgr) == 4
