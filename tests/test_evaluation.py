import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from physeg.evaluation import runs as ev
from physeg.profiles import get_profile

SIM = pytest.importorskip("physeg.simulation")
NET = pytest.importorskip("physeg.models.network")


@pytest.fixture(scope="module")
def profile():
    return dataclasses.replace(get_profile("smoke"), n_test_iod=3, n_test_ood=6, patch_size=16, channels=(2, 4),
                               n_val_realisations=3, n_uncertainty_samples=4)


def _subject(sid="sub-x", shape=(12, 12, 12), seed=0):
    g = torch.Generator().manual_seed(seed)
    pgs = torch.zeros(shape, dtype=torch.int64)
    pgs[2:10, 2:10, 2:10] = 1
    pgs[4:8, 4:8, 4:8] = 2
    pgs[5:7, 5:7, 2:4] = 3
    t1 = torch.tensor([0.0, 1.33, 0.83, 4.2])[pgs]
    t2 = torch.tensor([0.0, 0.066, 0.053, 0.5])[pgs]
    pd_ = torch.tensor([0.0, 0.8, 0.69, 1.0])[pgs]
    maps = torch.stack([pd_, t1, t2]) * (1 + 0.01 * torch.randn((3, *shape), generator=g))
    return SimpleNamespace(subject_id=sid, maps=maps.float(), mask=pgs > 0, pgs=pgs, voxel_volume_ml=0.008)


def _model(sequence, physics="early+late", uncertainty="none"):
    torch.manual_seed(0)
    cfg = NET.NetworkConfig(channels=(2, 4), physics=physics, uncertainty=uncertainty,
                            sequence=sequence if physics != "none" else None)
    return NET.build_network(cfg).eval()


def test_grid_deterministic_and_ood(profile):
    a = ev.test_parameters(profile, "SPGR", "OoD")
    assert torch.equal(a, ev.test_parameters(profile, "SPGR", "OoD"))
    assert a.shape == (6, 3)
    fa = torch.rad2deg(a[:, 2])
    assert (fa < 10).sum() >= math.ceil(6 / 5) and (fa >= 5).all()
    assert not SIM.is_in_distribution("SPGR", a).any()
    ti = ev.test_parameters(profile, "MPRAGE", "OoD")[:, 0]
    assert ((ti >= 0.1) & (ti <= 2.0)).all() and ((ti < 0.6) | (ti > 1.2)).all()
    assert (ti < 0.6).any() and (ti > 1.2).any()
    iod = ev.test_parameters(profile, "MPRAGE", "IoD")
    assert SIM.is_in_distribution("MPRAGE", iod).all() and iod.shape == (3, 1)
    grid = ev.test_grid(profile)
    assert set(grid["distribution"]) == {"IoD", "OoD"} and grid["low_fa"].sum() >= 1


def test_model_folders_from_plans(tmp_path, profile):
    from physeg.models.registry import get_model_spec
    from physeg.training.identity import make_plans
    for name, seq in (("Baseline", "MPRAGE"), ("Phys-Base", "SPGR")):
        f = tmp_path / f"{name}_{seq}"
        f.mkdir()
        make_plans(get_model_spec(name), profile=profile, sequence=seq).write(f)
    got = ev.model_folders({"a": [tmp_path / "Baseline_MPRAGE"], "b": tmp_path / "Phys-Base_SPGR"})
    assert set(got) == {("Baseline", "MPRAGE"), ("Phys-Base", "SPGR")}


def test_evaluate_segmentation_long_table(profile):
    prof = dataclasses.replace(profile, sequences=("MPRAGE",), n_test_ood=2, n_test_iod=2)
    models = {("Baseline", "MPRAGE"): _model("MPRAGE", physics="none"), ("Phys-Base", "MPRAGE"): _model("MPRAGE")}
    res, ex = ev.evaluate_segmentation(prof, models, [_subject("sub-a"), _subject("sub-b", seed=1)])
    assert set(ev.RESULT_COLUMNS) <= set(res.columns)
    assert len(res) == 2 * 2 * 2 * 2 * 3  # subjects × models × distributions × params × tissues
    assert res["dice"].dropna().between(0, 1).all()
    assert (res["pgs_volume_ml"] > 0).all()
    assert set(ex["MPRAGE"]["seg"]) == {"Baseline", "Phys-Base"}


def test_uncertainty_sampling_and_scoring(profile):
    prof = dataclasses.replace(profile, sequences=("SPGR",), uncertainty_models=("Phys-Strat-Aug",),
                               n_test_iod=2, n_test_ood=2)
    models = {("Phys-Strat-Aug-Aleatoric", "SPGR"): _model("SPGR", uncertainty="aleatoric"),
              ("Phys-Strat-Aug-Epistemic", "SPGR"): _model("SPGR", uncertainty="epistemic")}
    val = ev.uncertainty_samples(prof, models, [_subject("sub-v")], split="val")
    test = ev.uncertainty_samples(prof, models, [_subject("sub-t", seed=2)], split="test")
    assert len(val) == 3 * 3 and len(test) == 4 * 3
    assert test["aleatoric"].iloc[0].shape == (4,) and test["epistemic"].iloc[0].shape == (4,)
    # MC dropout (p=0.5) at init: samples are not all identical
    assert any(np.ptp(v) > 0 for v in test["epistemic"])
    per, cov, cal = ev.score_uncertainty(val, test)
    assert {"var_aleatoric", "var_epistemic", "iqr_raw", "iqr_cal", "abs_error", "low_fa"} <= set(per.columns)
    assert len(per) == len(test) and not cal.empty
    assert set(cov["distribution"]) == {"IoD", "OoD"}


def test_uncertainty_samples_reproducible_and_leave_global_rng(profile):
    prof = dataclasses.replace(profile, sequences=("MPRAGE",), uncertainty_models=("Phys-Strat-Aug",),
                               n_test_iod=1, n_test_ood=1)
    models = {("Phys-Strat-Aug-Aleatoric", "MPRAGE"): _model("MPRAGE", uncertainty="aleatoric"),
              ("Phys-Strat-Aug-Epistemic", "MPRAGE"): _model("MPRAGE", uncertainty="epistemic")}
    state = torch.get_rng_state()
    a = ev.uncertainty_samples(prof, models, [_subject("sub-t")], split="test")
    assert torch.equal(torch.get_rng_state(), state)  # dropout seeds are forked, not set globally
    b = ev.uncertainty_samples(prof, models, [_subject("sub-t")], split="test")
    for col in ("aleatoric", "epistemic"):
        assert all(np.array_equal(x, y) for x, y in zip(a[col], b[col]))


def test_uncertainty_subset_is_stratified_never_an_extreme():
    from physeg.evaluation.grid import test_parameters, uncertainty_subset
    from physeg.profiles import get_profile

    ti = torch.tensor([[0.9], [0.1], [2.0], [0.5], [1.5], [0.3], [1.2], [0.7], [1.8], [0.2]], dtype=torch.float64)
    assert uncertainty_subset(ti, "MPRAGE", None) == list(range(10))
    assert uncertainty_subset(ti[:4], "MPRAGE", 9) == [0, 1, 2, 3]
    one = uncertainty_subset(ti, "MPRAGE", 1)
    assert float(ti[one[0], 0]) == 0.9  # the median TI (rank 5 of 10), not the lowest
    three = sorted(float(ti[i, 0]) for i in uncertainty_subset(ti, "MPRAGE", 3))
    assert three == [0.2, 0.9, 1.8]  # ranks 1, 5, 8 of 10: one per TI tercile
    with pytest.raises(ValueError, match="n_uncertainty_images"):
        uncertainty_subset(ti, "MPRAGE", 0)
    # SPGR is stratified by FA: three images of the demo OoD grid include one with FA < 10 degrees
    params = test_parameters(get_profile("demo"), "SPGR", "OoD")
    fa = params[uncertainty_subset(params, "SPGR", 3), 2]
    assert float(fa.min()) < np.deg2rad(10) < float(fa.max())

def test_an_interrupted_uncertainty_run_resumes_from_its_finished_blocks(profile, tmp_path, monkeypatch):
    prof = dataclasses.replace(profile, sequences=("MPRAGE",), uncertainty_models=("Phys-Strat-Aug",),
                               n_test_iod=1, n_test_ood=1)
    models = {("Phys-Strat-Aug-Aleatoric", "MPRAGE"): _model("MPRAGE", uncertainty="aleatoric"),
              ("Phys-Strat-Aug-Epistemic", "MPRAGE"): _model("MPRAGE", uncertainty="epistemic")}
    subjects = [_subject("sub-a"), _subject("sub-b", seed=1)]
    straight = ev.uncertainty_samples(prof, models, subjects, split="test")
    from physeg.evaluation import volume_samples as vs

    real, calls = vs.image_samples, []

    def dies_on_the_third_image(*args, **kwargs):
        calls.append(kwargs["key"])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(vs, "image_samples", dies_on_the_third_image)
    partial = tmp_path / "partial"
    with pytest.raises(KeyboardInterrupt):
        ev.uncertainty_samples(prof, models, subjects, split="test", partial_dir=partial)
    assert len(list(partial.glob("*.schema.json"))) == 2  # sub-a's IoD and OoD blocks
    calls.clear()
    monkeypatch.setattr(vs, "image_samples", lambda *a, **k: calls.append(k["key"]) or real(*a, **k))
    resumed = ev.uncertainty_samples(prof, models, subjects, split="test", partial_dir=partial)
    assert {k[2] for k in calls} == {"sub-b"}  # sub-a's blocks were read back, not recomputed
    assert list(resumed.columns) == list(straight.columns) and len(resumed) == len(straight)
    for col in [c for c in straight.columns if not c.startswith("t_")]:  # all but the seconds taken
        for x, y in zip(straight[col], resumed[col]):
            assert np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y or (x != x and y != y), col


def test_epistemic_mc_mean_maps_are_scored_beside_the_parent_on_the_same_images(profile):
    from physeg.conventions import stable_seed
    from physeg.evaluation.grid import simulate_grid, test_parameters, uncertainty_subset
    from physeg.evaluation.metrics import dice_per_tissue
    from physeg.evaluation.models import mc_mean_against_parents
    from physeg.inference.predictor import Predictor

    prof = dataclasses.replace(profile, sequences=("MPRAGE",), uncertainty_models=("Phys-Strat-Aug",),
                               n_test_iod=1, n_test_ood=1)
    parent = _model("MPRAGE")
    torch.manual_seed(1)
    epi = _model("MPRAGE", uncertainty="epistemic")
    models = {("Phys-Strat-Aug-Epistemic", "MPRAGE"): epi, ("Phys-Strat-Aug", "MPRAGE"): parent}
    subject = _subject("sub-a")
    test = ev.uncertainty_samples(prof, models, [subject], split="test")
    params = test_parameters(prof, "MPRAGE", "IoD")
    image, feats = simulate_grid(subject, "MPRAGE", params[uncertainty_subset(params, "MPRAGE", None)])
    want_parent = dice_per_tissue(Predictor.from_profile(parent, prof).labels(image[0], feats[0])[0], subject.pgs)
    seed = stable_seed(prof.seed, "epistemic", "test", "MPRAGE", "sub-a", "IoD", "Phys-Strat-Aug", 0) % (2**63)
    mc = Predictor.from_profile(epi, prof).sample(image[0], feats[0], n=prof.n_uncertainty_samples, seed=seed)
    want_epi = dice_per_tissue(mc.probabilities.argmax(0), subject.pgs)
    iod = test[test.distribution == "IoD"].set_index("tissue")
    for t in ("GM", "WM", "CSF"):
        assert iod.loc[t, "parent_dice"] == pytest.approx(want_parent[t], nan_ok=True)
        assert iod.loc[t, "epi_dice"] == pytest.approx(want_epi[t], nan_ok=True)
    val = ev.uncertainty_samples(prof, models, [subject], split="val")
    assert val["epi_dice"].isna().all() and val["parent_dice"].isna().all()  # validation: volumes only
    per = test.drop(columns=["aleatoric", "epistemic"]).assign(
        epi_dice=lambda d: d.parent_dice - np.where(d.tissue == "WM", 0.05, 0.0))  # WM 0.05 below the parent
    table = mc_mean_against_parents(per).set_index("distribution")
    assert table.loc["IoD", "diff_WM"] == pytest.approx(-0.05) and not table["within"].any()
    assert mc_mean_against_parents(per.assign(epi_dice=per.parent_dice))["within"].all()
    assert mc_mean_against_parents(per.drop(columns=["epi_dice"])).empty


def test_variants_against_parents_flags_a_variant_that_falls_behind():
    import pandas as pd

    from physeg.evaluation.models import variants_against_parents

    rows = [("Baseline", 0.90, 0.90, 0.70), ("Baseline-Epistemic", 0.88, 0.86, 0.69),
            ("Baseline-Aleatoric", 0.91, 0.89, 0.68), ("Phys-Base", 0.90, 0.90, 0.70)]
    summary = pd.DataFrame([{"model": m, "sequence": "MPRAGE", "seed": 0, "val_dice_GM": g, "val_dice_WM": w,
                             "val_dice_CSF": c} for m, g, w, c in rows])
    gaps = variants_against_parents(summary).set_index("model")
    assert list(gaps.index) == ["Baseline-Epistemic", "Baseline-Aleatoric"]  # Phys-Base is not a variant
    assert gaps.loc["Baseline-Epistemic", "diff_WM"] == pytest.approx(-0.04)
    assert not gaps.loc["Baseline-Epistemic", "within"] and gaps.loc["Baseline-Aleatoric", "within"]
    assert variants_against_parents(summary[summary.model != "Baseline"]).empty  # no parent, no row
