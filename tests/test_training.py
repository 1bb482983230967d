"""physeg.training: validation score, plans identity, exact resume, early stopping, caching, DDP."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from physeg.inference.predictor import infer_volume
from physeg.models.plans import Plans
from physeg.models.registry import get_model_spec, profile_models
from physeg.models.network import NetworkConfig, build_network
from physeg.paths import config_hash
from physeg.profiles import get_profile
from physeg.training import checkpoint, identity, orchestrate, validation
from physeg.training import loop as training

try:
    from test_sampling import tiny_subjects
except ImportError:  # pragma: no cover
    from tests.test_sampling import tiny_subjects

SMOKE = get_profile("smoke")


def with_training(profile, **changes):
    """``profile`` with some :class:`~physeg.profiles.TrainingConfig` fields replaced."""
    return dataclasses.replace(profile, training=dataclasses.replace(profile.training, **changes))


TINY = with_training(
    dataclasses.replace(SMOKE, name="tiny", patch_size=8, channels=(2, 4), n_val_realisations=2),
    batch_size=2, max_epochs=3, steps_per_epoch=2, n_pregenerated=3, aleatoric_passes=2, patience=7,
)


def subjects():
    subs = tiny_subjects(3, shape=(12, 12, 10))
    return subs[:2], subs[2:]


def train(folder, name="Phys-Strat-Aug-Epistemic", **kw):
    tr, va = subjects()
    return training.train_model(get_model_spec(name), profile=TINY, sequence="MPRAGE", folder=folder,
                                train_subjects=tr, val_subjects=va, device="cpu", progress=False, **kw)


def test_infer_volume_single_window_equals_forward():
    torch.manual_seed(0)
    m = build_network(NetworkConfig(channels=(2, 4), physics="early+late", sequence="MPRAGE",
                                    uncertainty="aleatoric")).eval()
    x = torch.randn(2, 1, 8, 8, 8)
    p = torch.rand(2, 1)
    logits, sigma = infer_volume(m, x, p, roi_size=8, overlap=0.25, return_sigma=True)
    with torch.no_grad():
        out = m.heads(x, p)
    torch.testing.assert_close(logits, out["logits"])
    torch.testing.assert_close(sigma, out["sigma"])
    big = infer_volume(m, torch.randn(1, 13, 11, 9), p[0], profile=TINY)
    assert big.shape == (1, 4, 13, 11, 9)


def test_dice_per_tissue():
    truth = torch.tensor([1, 1, 2, 3, 0])
    seg = torch.tensor([1, 2, 2, 0, 0])
    d = validation.dice_per_tissue(seg, truth)
    assert d["GM"] == pytest.approx(2 / 3) and d["WM"] == pytest.approx(2 / 3) and d["CSF"] == 0.0
    assert validation.dice_per_tissue(torch.zeros(4), torch.zeros(4)) == {"GM": 1.0, "WM": 1.0, "CSF": 1.0}


def test_validation_cov_edge_cases_and_score():
    assert validation.validation_cov([10.0, 12.0, 14.0]) == pytest.approx(2.0 / 12.0)  # sample SD / mean
    assert validation.validation_cov([5.0]) == validation.COV_SINGLE_REALISATION == 0.0
    assert validation.validation_cov([0.0, 0.0]) == validation.COV_TISSUE_NEVER_SEGMENTED == 0.0
    # two realisations of one subject: GM stable, WM changes, CSF never segmented
    segs = torch.tensor([[1, 1, 2, 2], [1, 1, 2, 0]])
    truth = torch.tensor([1, 1, 2, 2])
    dices, covs = validation._subject_scores(segs, truth)
    assert dices["GM"] == [1.0, 1.0] and dices["WM"] == [1.0, pytest.approx(2 / 3)] and dices["CSF"] == [1.0, 1.0]
    assert covs["GM"] == 0.0 and covs["WM"] == pytest.approx(0.7071067811865476 / 1.5) and covs["CSF"] == 0.0
    s = validation.summarise_validation({k: v for k, v in dices.items()}, {k: [v] for k, v in covs.items()})
    assert s["score"] == pytest.approx(s["val_dice_mean"] - s["val_cov_mean"])
    assert s["val_cov_mean"] == pytest.approx((0.0 + 0.7071067811865476 / 1.5 + 0.0) / 3)


def test_dropping_a_tissue_is_not_scored_worse_than_a_few_consistent_voxels_of_it():
    truth = torch.tensor([[1] * 6 + [2] * 6 + [3] * 6] * 2)
    few = truth.clone()
    few[:, 12:] = 1
    few[:, 12] = 3  # one CSF voxel in every realisation, the rest of the CSF called GM
    none = truth.clone()
    none[:, 12:] = 1
    none[:, :1] = 2  # and slightly better GM/WM elsewhere: the better map overall
    scores = {}
    for name, segs in {"few": few, "none": none}.items():
        dices, covs = zip(*[validation._subject_scores(s[None], t) for s, t in zip(segs, truth)])
        merged = {k: sum((d[k] for d in dices), []) for k in dices[0]}
        scores[name] = validation.summarise_validation(merged, {k: [c[k] for c in covs] for k in covs[0]})["score"]
    assert abs(scores["few"] - scores["none"]) < 0.2  # no jump of 1/3 between one CSF voxel and none


def test_plans_record_the_typed_training_settings():
    plans = identity.make_plans(get_model_spec("Phys-Strat"), profile=SMOKE, sequence="SPGR")
    # the keys (and values) every plans.json has carried: renaming one changes every folder hash
    assert plans.training == {
        "name": "smoke", "n_train": 3, "n_val": 1, "batch_size": 4, "learning_rate": 1e-3, "max_epochs": 2,
        "steps_per_epoch": 2, "patience": 7, "n_pregenerated": 4, "n_val_realisations": 4, "aleatoric_passes": 3,
        "strat_weight": 1.0, "seed": 0, "dice_weight": 0.0, "lr_schedule": "constant", "warmup_fraction": 0.0,
            "precision": "auto", "aleatoric_form": "kendall-gal", "val_mc_samples": 4, "val_every_epochs": 1,
        "prior_bias": True}  # a field added later appears only where set (TrainingConfig.to_dict)
    heavier = with_training(SMOKE, dice_weight=0.5)
    other = identity.make_plans(get_model_spec("Phys-Strat"), profile=heavier, sequence="SPGR")
    assert other.training["dice_weight"] == 0.5
    assert config_hash(other.identity()) != config_hash(plans.identity())
    assert SMOKE.flat_dict()["training.batch_size"] == 4 and "training" not in SMOKE.flat_dict()


def test_resume_reproduces_uninterrupted_run(tmp_path):
    straight = train(tmp_path / "a")
    assert (tmp_path / "a" / "finished.json").exists()
    partial = train(tmp_path / "b", max_epochs=2)
    assert not (tmp_path / "b" / "finished.json").exists() and partial["epochs"] == 2
    resumed = train(tmp_path / "b", resume=True)
    assert resumed["epochs"] == straight["epochs"] == 3
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    ha, hb = json.loads(a["history"]), json.loads(b["history"])
    for ra, rb in zip(ha, hb):
        assert ra["train_loss"] == rb["train_loss"] and ra["score"] == rb["score"]
    # every artefact of the folder layout
    for name in ("plans.json", "best.pt", "last.pt", "metrics.csv", "metrics.json", "finished.json"):
        assert (tmp_path / "b" / name).exists()
    plans = Plans.read(tmp_path / "b")
    assert plans.name == "Phys-Strat-Aug-Epistemic" and plans.sequence == "MPRAGE"
    model, _ = checkpoint.load_model(tmp_path / "b")
    assert not model.training and model.config.uncertainty == "epistemic"


def test_early_stopping(tmp_path, monkeypatch):
    scores = iter([0.5, 0.4, 0.3, 0.2, 0.1])

    def fake_validate(model, val_set, *, profile, use_physics):
        return {"score": next(scores), "val_dice_mean": 0.0, "val_cov_mean": 0.0}

    monkeypatch.setattr(training, "validate", fake_validate)
    prof = with_training(TINY, patience=2, max_epochs=5)
    tr, va = subjects()
    s = training.train_model(get_model_spec("Baseline"), profile=prof, sequence="MPRAGE", folder=tmp_path,
                             train_subjects=tr, val_subjects=va, device="cpu", progress=False)
    assert s["epochs"] == 3 and s["best_epoch"] == 1 and s["early_stopped"]


def test_validation_every_k_epochs_and_after_the_last(tmp_path, monkeypatch):
    validated = []

    def fake_validate(model, val_set, *, profile, use_physics):
        validated.append(len(validated))
        return {"score": float(len(validated)), "val_dice_mean": 0.0, "val_cov_mean": 0.0}

    monkeypatch.setattr(training, "validate", fake_validate)
    prof = with_training(TINY, max_epochs=5, val_every_epochs=2)
    tr, va = subjects()
    s = training.train_model(get_model_spec("Baseline"), profile=prof, sequence="MPRAGE", folder=tmp_path,
                             train_subjects=tr, val_subjects=va, device="cpu", progress=False)
    history = json.loads((tmp_path / "metrics.json").read_text())
    assert [("score" in row) for row in history] == [False, True, False, True, True]  # epochs 2, 4 and the last
    assert len(validated) == 3 and s["epochs"] == 5 and s["best_epoch"] == 5


def test_train_all_caches(isolated_cache, monkeypatch):
    tr, va = subjects()
    monkeypatch.setattr(orchestrate, "load_volumes", lambda profile: {"train": tr, "val": va})
    prof = with_training(TINY, max_epochs=1)
    first = orchestrate.train_all(prof, sequences=["SPGR"], models=["Baseline", "Phys-Strat"], progress=False)
    df = first["summary"]
    assert list(df["model"]) == ["Baseline", "Phys-Strat"] and not df["cached"].any()
    folder = first["folders"][("Phys-Strat", "SPGR")]
    assert folder.parent == isolated_cache[0] / "models" / "tiny"
    assert folder.name.startswith("Phys-Strat_SPGR_seed0_")
    again = orchestrate.train_all(prof, sequences=["SPGR"], models=["Baseline", "Phys-Strat"], progress=False)
    assert again["summary"]["cached"].all()
    assert orchestrate.find_models(prof, sequence="SPGR", models=["Baseline"]) == {
        ("Baseline", "SPGR"): first["folders"][("Baseline", "SPGR")]}
    assert len(profile_models(get_profile("demo"))) == 8


def _ddp_worker(rank, port, folder, out):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    tr, va = subjects()
    prof = with_training(TINY, max_epochs=2)
    training.train_model(get_model_spec("Phys-Strat"), profile=prof, sequence="MPRAGE", folder=folder,
                         train_subjects=tr, val_subjects=va, device="cpu", progress=False)
    (Path(out) / f"rank{rank}.done").write_text("ok")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(tmp_path / "m"), str(tmp_path)), nprocs=2, join=True)
    summary = json.loads((tmp_path / "m" / "finished.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs"] == 2
    assert (tmp_path / "rank0.done").exists() and (tmp_path / "rank1.done").exists()
    rows = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert [r["epoch"] for r in rows] == [1, 2]  # rank 0 alone wrote one row per epoch


def test_learning_rate_follows_the_schedule_and_is_recorded(tmp_path):
    """Warm-up then poly decay over max_epochs x steps_per_epoch; the last step's lr is in metrics."""
    prof = with_training(TINY, lr_schedule="poly", warmup_fraction=0.25, max_epochs=2, steps_per_epoch=2)
    tr, va = subjects()
    training.train_model(get_model_spec("Baseline"), profile=prof, sequence="MPRAGE", folder=tmp_path / "m",
                         train_subjects=tr, val_subjects=va, device="cpu", progress=False)
    hist = json.loads((tmp_path / "m" / "metrics.json").read_text())
    from physeg.training.schedule import lr_factor
    base = prof.training.learning_rate
    assert hist[0]["lr_last"] == pytest.approx(base * lr_factor(1, warmup_steps=1, total_steps=4))
    assert hist[1]["lr_last"] == pytest.approx(base * lr_factor(3, warmup_steps=1, total_steps=4))
    assert hist[1]["lr_last"] < hist[0]["lr_last"] <= base
    finished = json.loads((tmp_path / "m" / "finished.json").read_text())
    assert finished["precision"].startswith(("float32 on cpu", "bfloat16 autocast"))


def test_epistemic_variants_start_from_their_deterministic_model():
    from physeg.models.registry import get_model_spec as spec
    assert spec("Phys-Strat-Aug-Epistemic").init_from == "Phys-Strat-Aug"
    assert spec("Baseline-Epistemic").init_from == "Baseline"
    assert spec("Baseline-Aleatoric").init_from is None and spec("Baseline").init_from is None
    names = profile_models(SMOKE)
    for n in names:
        parent = spec(n).init_from
        assert parent is None or names.index(parent) < names.index(n)  # parents are trained first


def test_init_weights_are_loaded_before_training(tmp_path):
    """The child starts from the parent's best.pt: after one short epoch it is still near it, not near a fresh init."""
    tr, va = subjects()
    train(tmp_path / "parent", name="Phys-Strat-Aug")
    child = tmp_path / "child"
    training.train_model(get_model_spec("Phys-Strat-Aug-Epistemic"), profile=TINY, sequence="MPRAGE", folder=child,
                         train_subjects=tr, val_subjects=va, device="cpu", progress=False, max_epochs=1,
                         init_weights=tmp_path / "parent" / "best.pt")
    parent_w = torch.load(tmp_path / "parent" / "best.pt", weights_only=True)
    fresh = build_network(identity.network_config(get_model_spec("Phys-Strat-Aug-Epistemic"), profile=TINY,
                                                  sequence="MPRAGE")).state_dict()
    child_w = torch.load(child / "last.pt", weights_only=True)["model"]
    key = "out.conv.conv.weight"
    # one epoch of fine-tuning moves the weights a little from the parent's, far less than from a fresh init
    assert (child_w[key] - parent_w[key]).abs().max() < (child_w[key] - fresh[key]).abs().max()


def test_epistemic_validation_uses_monte_carlo_votes(monkeypatch):
    tr, va = subjects()
    vset = validation.make_validation_set(va, sequence="MPRAGE", profile=TINY)
    net = build_network(identity.network_config(get_model_spec("Baseline-Epistemic"), profile=TINY,
                                                sequence="MPRAGE"))
    calls = []
    real_sample = validation.Predictor.sample

    def spy(self, *a, **kw):
        calls.append(kw["n"])
        return real_sample(self, *a, **kw)

    monkeypatch.setattr(validation.Predictor, "sample", spy)
    out = validation.validate(net, vset, profile=TINY, use_physics=False)
    assert calls == [TINY.training.val_mc_samples] * TINY.n_val_realisations and 0 <= out["val_dice_mean"] <= 1
    calls.clear()
    det = build_network(identity.network_config(get_model_spec("Baseline"), profile=TINY, sequence="MPRAGE"))
    validation.validate(det, vset, profile=TINY, use_physics=False)
    assert calls == []


def test_a_tampered_parent_is_refused_before_fine_tuning(tmp_path):
    from physeg.io_safety import IntegrityError

    tr, va = subjects()
    train(tmp_path / "parent", name="Phys-Strat-Aug")
    best = tmp_path / "parent" / "best.pt"
    weights = torch.load(best, weights_only=True)
    weights["out.conv.conv.weight"] += 1.0
    torch.save(weights, best)
    with pytest.raises(IntegrityError, match="best.pt"):
        training.train_model(get_model_spec("Phys-Strat-Aug-Epistemic"), profile=TINY, sequence="MPRAGE",
                             folder=tmp_path / "child", train_subjects=tr, val_subjects=va, device="cpu",
                             progress=False, max_epochs=1, init_weights=best)


def test_epistemic_dropout_is_a_profile_setting_that_only_epistemic_models_see():
    from physeg.profiles import PROFILES, Profile

    demo, long_ = get_profile("demo"), get_profile("reference-long")
    assert demo.epistemic_dropout == 0.1 and long_.epistemic_dropout == 0.5  # CPU profiles vs the paper's rate
    for profile in (demo, long_):
        for name in ("Phys-Strat-Aug-Epistemic", "Phys-Strat-Aug", "Phys-Strat-Aug-Aleatoric"):
            plans = identity.make_plans(get_model_spec(name), profile=profile, sequence="MPRAGE")
            net = build_network(plans.network)
            rates = {m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)}
            if name.endswith("Epistemic"):
                assert rates == {profile.epistemic_dropout, plans.network.input_dropout}
            else:  # no dropout modules, and the unused field keeps its default (the folder name is unchanged)
                assert rates == set() and plans.network.dropout == NetworkConfig().dropout
    # left out of the dictionary (every hash) at its default, so profiles that keep 0.5 keep their caches
    assert "epistemic_dropout" not in long_.to_dict() and demo.to_dict()["epistemic_dropout"] == 0.1
    assert "epistemic_dropout" in long_.flat_dict()
    other = dataclasses.replace(long_, epistemic_dropout=0.2)
    assert config_hash(other.to_dict()) != config_hash(long_.to_dict())
    assert {f.name for f in dataclasses.fields(Profile)} >= set(PROFILES["smoke"].to_dict()) - {"training"}


def test_epistemic_epochs_lengthen_only_the_epistemic_fine_tuning(tmp_path):
    longer = dataclasses.replace(TINY, epistemic_epochs=TINY.training.max_epochs + 1)
    for name in ("Phys-Strat-Aug-Epistemic", "Phys-Strat-Aug", "Phys-Strat-Aug-Aleatoric"):
        spec = get_model_spec(name)
        before = identity.make_plans(spec, profile=TINY, sequence="MPRAGE")
        after = identity.make_plans(spec, profile=longer, sequence="MPRAGE")
        if name.endswith("Epistemic"):
            assert after.training["max_epochs"] == TINY.training.max_epochs + 1
            assert config_hash(after.identity()) != config_hash(before.identity())
        else:  # the other models keep their folders
            assert after.identity() == before.identity()
    # left out of every profile dictionary at its default: no profile that leaves it unset changes a hash
    assert "epistemic_epochs" not in TINY.to_dict() and longer.to_dict()["epistemic_epochs"] == 4
    tr, va = subjects()
    out = training.train_model(get_model_spec("Phys-Strat-Aug-Epistemic"), profile=longer, sequence="MPRAGE",
                               folder=tmp_path / "epi", train_subjects=tr, val_subjects=va, device="cpu",
                               progress=False)
    assert out["epochs"] == TINY.training.max_epochs + 1
    with pytest.raises(ValueError, match="epistemic_epochs must be at least 1"):
        dataclasses.replace(TINY, epistemic_epochs=0)


def test_uncertainty_variants_are_trained_with_the_profiles_uncertainty_seeds():
    from physeg.training.orchestrate import profile_jobs

    ref, long_ = get_profile("reference"), get_profile("reference-long")
    assert ref.uncertainty_seed_list == (0, 1) and long_.uncertainty_seed_list == (0,)
    jobs = profile_jobs(ref)
    variants = {(j.model, j.seed) for j in jobs if j.model not in ref.ablations}
    assert {seed for _, seed in variants} == {0, 1}
    assert {(j.model, j.seed) for j in jobs if j.model in ref.ablations} >= {("Baseline", 2)}
    assert len(jobs) == len(ref.sequences) * (len(ref.ablations) * 3 + 4 * 2)
    # every parent before its epistemic child, and the first seed's complete set first
    order = [(j.model, j.sequence, j.seed) for j in jobs]
    for j in jobs:
        if j.model.endswith("-Epistemic"):
            assert order.index((j.model[: -len("-Epistemic")], j.sequence, j.seed)) < order.index(
                (j.model, j.sequence, j.seed))
    assert {j.seed for j in jobs[: len(ref.sequences) * 8]} == {0}
    # left out of every hash at its default (reference-long keeps its caches and freeze), range-checked
    assert "uncertainty_seeds" not in long_.to_dict() and ref.to_dict()["uncertainty_seeds"] == 2
    for bad in (0, 4):
        with pytest.raises(ValueError, match="uncertainty_seeds must be between 1 and the number of seeds"):
            dataclasses.replace(ref, uncertainty_seeds=bad)


def test_calibration_subjects_leave_training_and_the_frozen_profiles_alone():
    from physeg.data.cohort import cohort_split

    demo, ref = get_profile("demo"), get_profile("reference")
    assert demo.calibration_subjects == 4 and ref.calibration_subjects == ref.n_val == 2
    assert cohort_split(demo)["calibration"] == ["sub-19", "sub-20", "sub-21", "sub-22"]
    assert cohort_split(demo)["val"] == ["sub-19", "sub-20"]  # training still validates on n_val
    # not a training setting: the demo's model folders are those of the profile without it
    spec = get_model_spec("Phys-Strat-Aug")
    without = dataclasses.replace(demo, n_calibration_subjects=None)
    assert (identity.make_plans(spec, profile=demo, sequence="SPGR").identity()
            == identity.make_plans(spec, profile=without, sequence="SPGR").identity())
    # left out of the profile dictionary where unset: the references keep their hashes and caches
    assert "n_calibration_subjects" not in ref.to_dict() and demo.to_dict()["n_calibration_subjects"] == 4
    for bad in (0, 5):
        with pytest.raises(ValueError, match="n_calibration_subjects must be between 1"):
            dataclasses.replace(demo, n_calibration_subjects=bad)


def test_patch_label_frequencies_equal_the_sampler_s_expectation_by_enumeration():
    """The integral-image shares equal a brute-force mean over every centre the sampler can pick."""
    from physeg.training.batches import Volumes
    from physeg.training.patches import patch_label_frequencies

    g = torch.Generator().manual_seed(0)
    vols = []
    for shape in ((10, 9, 8), (6, 7, 5)):  # the second is smaller than the patch: padded as the sampler pads it
        labels = torch.randint(0, 4, shape, generator=g)
        mask = torch.rand(shape, generator=g) < 0.6
        vols.append(Volumes("s", torch.zeros(3, *shape), mask, labels))
    p = 6
    want = []
    for v in vols:
        v = v.padded(p)
        hist = torch.zeros(4, dtype=torch.float64)
        centres = torch.nonzero(v.mask)
        for c in centres.tolist():
            a, b, d = (min(max(c[k] - p // 2, 0), v.mask.shape[k] - p) for k in range(3))
            hist += torch.bincount(v.labels[a:a + p, b:b + p, d:d + p].flatten(), minlength=4).double()
        want.append(hist / (len(centres) * p ** 3))
    got = patch_label_frequencies(vols, patch_size=p, n_labels=4)
    torch.testing.assert_close(got, torch.stack(want).mean(0).float())
    assert abs(float(got.sum()) - 1.0) < 1e-6


def test_prior_bias_starts_the_softmax_at_the_label_shares_and_only_where_asked(tmp_path, monkeypatch):
    from physeg.models.network import PhysicsUNet
    from physeg.training.patches import patch_label_frequencies

    net = build_network(identity.network_config(get_model_spec("Baseline"), profile=TINY, sequence="MPRAGE"))
    shares = torch.tensor([0.5, 0.25, 0.15, 0.1])
    net.set_output_prior(shares)
    torch.testing.assert_close(net.out.conv.conv.bias.detach().softmax(0), shares)
    # pinned like the cohort generator: the frozen references' settings (and folders) never saw the field
    assert get_profile("demo").training.prior_bias and not get_profile("reference").training.prior_bias
    assert "prior_bias" not in get_profile("reference").to_dict()["training"]
    assert get_profile("demo").to_dict()["training"]["prior_bias"] is True
    assert "prior_bias" not in identity.training_settings(get_model_spec("Baseline"), profile=get_profile("reference"))
    # in a run: set once, from the training subjects' label shares; not for a fine-tuned child
    seen = []
    original = PhysicsUNet.set_output_prior
    monkeypatch.setattr(PhysicsUNet, "set_output_prior", lambda self, f: (seen.append(f.clone()), original(self, f)))
    tr, va = subjects()
    prior = with_training(TINY, prior_bias=True)
    for name, init in (("Phys-Strat-Aug", None), ("Phys-Strat-Aug-Epistemic", tmp_path / "p" / "best.pt")):
        training.train_model(get_model_spec(name), profile=prior, sequence="MPRAGE", folder=tmp_path / name,
                             train_subjects=tr, val_subjects=va, device="cpu", progress=False, max_epochs=1,
                             init_weights=init if init is None else tmp_path / "Phys-Strat-Aug" / "best.pt")
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], patch_label_frequencies(tr, patch_size=prior.patch_size, n_labels=4))
