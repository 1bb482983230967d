"""``physeg segment`` end to end on tiny data with tiny untrained models, and its error paths."""

from __future__ import annotations

import dataclasses
import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from physeg.cli import main

from test_cli_simulate import AFFINE, tiny_maps  # noqa: E402  (same folder, pytest rootdir import)


def make_model_folder(folder, model: str, sequence: str, *, voxel_size_mm: float = 4.0):
    """A model folder in the training engineer's format (plans.json + best.pt), tiny and untrained."""
    from physeg.models.registry import get_model_spec
    from physeg.models.network import build_network
    from physeg.profiles import get_profile
    from physeg.training.identity import make_plans

    prof = dataclasses.replace(get_profile("smoke"), channels=(2, 4), patch_size=8, voxel_size_mm=voxel_size_mm)
    plans = make_plans(get_model_spec(model), profile=prof, sequence=sequence)
    folder.mkdir(parents=True)
    plans.write(folder)
    torch.manual_seed(0)
    torch.save(build_network(plans.network).state_dict(), folder / "best.pt")
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Tiny maps → simulated MPRAGE (TI 0.9 s) and SPGR images with sidecars; three model folders."""
    root = tmp_path_factory.mktemp("seg")
    pd, t1, t2s, _ = tiny_maps()
    for name, arr in (("pd", pd), ("t1", t1), ("t2s", t2s)):
        nib.save(nib.Nifti1Image(arr, AFFINE), str(root / f"{name}.nii.gz"))
    maps = ["--pd", str(root / "pd.nii.gz"), "--t1", str(root / "t1.nii.gz"), "--t2s", str(root / "t2s.nii.gz")]
    assert main(["simulate", *maps, "--sequence", "MPRAGE", "--ti", "0.9", "0.2", "-o", str(root / "mp")]) == 0
    assert main(["simulate", *maps, "--sequence", "SPGR", "--tr", "0.02", "--te", "0.005", "--fa", "25",
                 "-o", str(root / "sp")]) == 0
    models = {
        name: make_model_folder(root / "models" / name, name, seq)
        for name, seq in (("Phys-Strat-Aug-Epistemic", "MPRAGE"), ("Phys-Strat-Aug-Aleatoric", "MPRAGE"),
                          ("Baseline", "MPRAGE"), ("Phys-Base", "SPGR"))
    }
    return {"root": root, "mprage": root / "mp" / "sim-001_MPRAGE.nii.gz",
            "mprage_ood": root / "mp" / "sim-002_MPRAGE.nii.gz", "spgr": root / "sp" / "sim-001_SPGR.nii.gz",
            "models": models}


@pytest.mark.parametrize("model", ["Phys-Strat-Aug-Epistemic", "Phys-Strat-Aug-Aleatoric", "Baseline"])
def test_segment_end_to_end(data, tmp_path, model):
    out = tmp_path / "out"
    rc = main(["segment", str(data["mprage"]), str(data["mprage_ood"]), "--model", str(data["models"][model]),
               "--output", str(out), "--samples", "4", "--device", "cpu", "--no-progress"])
    assert rc == 0
    src = nib.load(str(data["mprage"]))
    dseg = nib.load(str(out / "sim-001_MPRAGE_dseg.nii.gz"))
    prob = nib.load(str(out / "sim-001_MPRAGE_probseg.nii.gz"))
    assert dseg.shape == src.shape and prob.shape == (*src.shape, 4)
    np.testing.assert_allclose(dseg.affine, src.affine, atol=1e-6)
    np.testing.assert_allclose(prob.affine, src.affine, atol=1e-6)
    labels = np.asarray(dseg.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2, 3}
    p = np.asarray(prob.dataobj)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-4)
    import pandas as pd

    table = pd.read_csv(out / "volumes.tsv", sep="\t")
    assert list(table["tissue"][:3]) == ["GM", "WM", "CSF"] and len(table) == 6
    assert {"volume_ml", "label_map_ml", "iqr_low_ml", "iqr_high_ml", "calibrated", "in_distribution"} <= set(table)
    # every reported volume (the sample median) lies inside its interval
    assert ((table["iqr_low_ml"] <= table["volume_ml"]) & (table["volume_ml"] <= table["iqr_high_ml"])).all()
    doc = json.loads((out / "volumes.json").read_text())
    assert doc["calibrated"] is False and doc["model"]["sequence"] == "MPRAGE"
    iod, ood = doc["images"]
    assert iod["in_distribution"] and iod["warnings"] == [] and iod["parameters"]["InversionTime"] == 0.9
    assert not ood["in_distribution"] and "outside the model's training range" in ood["warnings"][0]
    n = 4 if model != "Baseline" else 1
    assert iod["volumes"][0]["n_samples"] == n
    vox_ml = abs(np.linalg.det(AFFINE[:3, :3])) / 1000
    assert iod["volumes"][1]["label_map_ml"] == pytest.approx((labels == 2).sum() * vox_ml)
    if model == "Baseline":  # one deterministic sample: zero-width interval at the volume
        assert (table["iqr_ml"] == 0).all()


def test_segment_calibrated_and_flags(data, tmp_path):
    from physeg.inference.calibration_io import calibration_to_json
    from physeg.evaluation.calibration import PercentileCalibration

    cal = PercentileCalibration(lower={0.5: 0.1}, upper={0.5: 0.9}, n_val=3)
    cal_path = calibration_to_json({t: cal for t in ("GM", "WM", "CSF")}, tmp_path / "cal.json")
    img = tmp_path / "noside.nii.gz"
    shutil.copy(data["mprage"], img)  # no sidecar: parameters from the flag
    out = tmp_path / "out"
    rc = main(["segment", str(img), "--ti", "0.8", "--model", str(data["models"]["Phys-Strat-Aug-Epistemic"]),
               "-o", str(out), "-n", "3", "--calibration", str(cal_path), "--no-progress"])
    assert rc == 0
    doc = json.loads((out / "volumes.json").read_text())
    assert doc["calibrated"] is True and doc["images"][0]["parameters_source"] == "flags"


def _run(args, capsys):
    rc = main(["segment", *map(str, args), "--no-progress"])
    err = capsys.readouterr().err
    return rc, err


def test_segment_usage_errors(data, tmp_path, capsys):
    model = data["models"]["Phys-Strat-Aug-Epistemic"]
    out = tmp_path / "out"

    def check(args, message, code=2):
        rc, err = _run(args, capsys)
        assert rc == code, err
        assert err.startswith("physeg segment: error:") and message in err, err
        assert "Traceback" not in err and err.count("\n") == 1

    # missing sidecar and no flags
    bare = tmp_path / "bare.nii.gz"
    shutil.copy(data["mprage"], bare)
    check([bare, "--model", model, "-o", out], "no JSON sidecar")
    # sidecar without the parameter
    nokey = tmp_path / "nokey.nii.gz"
    shutil.copy(data["mprage"], nokey)
    (tmp_path / "nokey.json").write_text(json.dumps({"PulseSequenceType": "MPRAGE"}))
    check([nokey, "--model", model, "-o", out], "missing InversionTime")
    # milliseconds in the sidecar
    ms = tmp_path / "ms.nii.gz"
    shutil.copy(data["mprage"], ms)
    (tmp_path / "ms.json").write_text(json.dumps({"InversionTime": 900}))
    check([ms, "--model", model, "-o", out], "looks like milliseconds")
    check([bare, "--ti", "900", "--model", model, "-o", out], "looks like milliseconds")
    # unreadable NIfTI
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not a nifti")
    check([junk, "--ti", "0.9", "--model", model, "-o", out], "cannot read")
    # 4D input
    four = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((6, 6, 6, 3), np.float32), AFFINE), str(four))
    check([four, "--ti", "0.9", "--model", model, "-o", out], "4D")
    # model / sequence mismatch (SPGR image, MPRAGE model), and the other way round
    check([data["spgr"], "--model", model, "-o", out], "trained on MPRAGE")
    check([data["mprage"], "--model", data["models"]["Phys-Base"], "-o", out], "trained on SPGR")
    # missing model folder
    check([data["mprage"], "--model", tmp_path / "nope", "-o", out], "does not exist")
    # nothing has been written by the failed runs
    assert not out.exists()
    # an output of the same name exists: replaced only with --force
    out.mkdir()
    (out / "volumes.tsv").write_text("x")
    check([data["mprage"], "--model", model, "-o", out, "-n", "2"], "--force")
    assert (out / "volumes.tsv").read_text() == "x"
    # a calibration whose IQR percentiles do not straddle the median
    bad = tmp_path / "bad_cal.json"
    bad.write_text(json.dumps({"lower": {"0.5": 0.6}, "upper": {"0.5": 0.9}, "n_val": 3}))
    check([data["mprage"], "--model", model, "-o", tmp_path / "o2", "--calibration", bad], "0 <= lower <= 0.5")


def test_segment_force_overwrites_only_its_own_files(data, tmp_path, capsys):
    model = data["models"]["Phys-Strat-Aug-Aleatoric"]
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # the user's file
    (out / "sub").mkdir()
    (out / "sub" / "keep.nii.gz").write_bytes(b"user data")
    (out / "sim-001_MPRAGE_dseg.nii.gz").write_bytes(b"stale output")  # a name this run writes
    rc, err = _run([data["mprage"], "--model", model, "-o", out, "-n", "2", "--force"], capsys)
    assert rc == 0, err
    assert (out / "notes.txt").read_text() == "mine" and (out / "sub" / "keep.nii.gz").read_bytes() == b"user data"
    assert nib.load(str(out / "sim-001_MPRAGE_dseg.nii.gz")).shape == nib.load(str(data["mprage"])).shape
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no temporary files left
    # refused even with --force: a model folder, a folder holding the input image
    rc, err = _run([data["mprage"], "--model", model, "-o", model, "--force"], capsys)
    assert rc == 2 and "model folder" in err and (model / "best.pt").exists()
    img = out / "scan.nii.gz"
    shutil.copy(data["mprage"], img)
    before = img.read_bytes()
    rc, err = _run([img, "--ti", "0.9", "--model", model, "-o", out, "--force"], capsys)
    assert rc == 2 and "holds an input image" in err and img.read_bytes() == before


def test_volume_rows_interval_contains_the_median():
    from physeg.evaluation.calibration import PercentileCalibration
    from physeg.inference.segment import volume_rows

    rng = np.random.default_rng(0)
    cals = [None] + [{t: PercentileCalibration(lower={0.5: lo}, upper={0.5: hi}, n_val=1) for t in ("GM", "WM", "CSF")}
                     for lo, hi in ((0.5, 0.5), (0.45, 0.5), (0.0, 1.0), (0.3, 0.99))]
    for n in (1, 2, 3, 4, 7, 50):
        for cal in cals:
            samples = np.round(rng.normal(100, 5, (n, 3)) * 7) * 0.008  # voxel counts × voxel volume
            for r in volume_rows(image_name="x", samples_ml=samples, label_map_ml={"GM": 1, "WM": 2, "CSF": 3},
                                 calibration=cal):
                assert r["iqr_low_ml"] <= r["volume_ml"] <= r["iqr_high_ml"], (n, cal, r)
                assert r["volume_ml"] == np.median(samples[:, ("GM", "WM", "CSF").index(r["tissue"])])


def test_volume_rows_apply_a_located_calibration():
    from physeg.evaluation.calibration import PercentileCalibration
    from physeg.inference.segment import volume_rows

    samples = np.random.default_rng(1).normal(500, 5, (20, 3))
    cal = {t: PercentileCalibration(lower={0.5: 0.2}, upper={0.5: 0.8}, n_val=6, shift_ml=-40.0, form="located")
           for t in ("GM", "WM", "CSF")}
    rows = volume_rows(image_name="x", samples_ml=samples, label_map_ml={"GM": 1, "WM": 2, "CSF": 3}, calibration=cal)
    plain = volume_rows(image_name="x", samples_ml=samples, label_map_ml={"GM": 1, "WM": 2, "CSF": 3},
                        calibration={t: PercentileCalibration(lower={0.5: 0.2}, upper={0.5: 0.8}, n_val=6)
                                     for t in cal})
    for r, p in zip(rows, plain):
        assert r["shift_ml"] == -40.0 and p["shift_ml"] == 0.0
        assert r["volume_ml"] == pytest.approx(p["volume_ml"] - 40.0)
        assert r["iqr_low_ml"] == pytest.approx(p["iqr_low_ml"] - 40.0)
        assert r["iqr_low_ml"] <= r["volume_ml"] <= r["iqr_high_ml"]
        assert r["label_map_ml"] == p["label_map_ml"]  # the written map is never moved


def test_calibration_json_round_trips_the_scaled_form_and_prefers_it(tmp_path):
    import pandas as pd

    from physeg.cli.errors import UsageError
    from physeg.evaluation.calibration import fit_calibration
    from physeg.inference.calibration_io import calibration_to_json, interval_description, load_calibration

    rng = np.random.default_rng(2)
    s, t, g = rng.normal(500, 4, (6, 20)), rng.normal(470, 30, 6), np.repeat([0, 1, 2], 2)
    fits = {f: fit_calibration(s, t, form=f, groups=g) for f in ("percentile", "located", "scaled")}
    frame = pd.concat([c.to_frame().assign(model="M", sequence="SPGR", tissue=tis)
                       for c in fits.values() for tis in ("GM", "WM", "CSF")])
    path = calibration_to_json(frame, tmp_path / "c.json", model="M", sequence="SPGR")  # no form: the scaled one
    back = load_calibration(path)
    assert back["GM"].form == "scaled" and back["GM"].scale_sd == pytest.approx(fits["scaled"].scale_sd)
    assert back["WM"].shift_ml == pytest.approx(fits["scaled"].shift_ml)
    assert np.allclose(back["CSF"].interval(s, 0.5), fits["scaled"].interval(s, 0.5))
    assert "scale_sd" in interval_description(back) and "scale_sd" in json.loads(path.read_text())["_about"]["method"]
    again = load_calibration(calibration_to_json({k: fits["scaled"] for k in ("GM", "WM", "CSF")}, tmp_path / "d.json"))
    assert again["GM"].scale_sd == back["GM"].scale_sd
    without = frame[frame.form != "scaled"]  # a frozen frame from before the scaled form: the located one
    assert load_calibration(calibration_to_json(without, tmp_path / "e.json", model="M", sequence="SPGR"))[
        "GM"].form == "located"
    bad = json.loads(path.read_text())
    bad["GM"]["scale_sd"]["0.5"] = -1.0
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(UsageError, match="unreadable calibration .*scale_sd"):
        load_calibration(tmp_path / "bad.json")


def test_calibration_json_keeps_the_shift_and_reads_old_files(tmp_path):
    import pandas as pd

    from physeg.cli.errors import UsageError
    from physeg.inference.calibration_io import calibration_to_json, load_calibration

    frame = pd.DataFrame([{"level": 0.5, "lower_pct": lo, "upper_pct": hi, "n_val": 6, "shift_ml": shift,
                           "form": form, "model": "M", "sequence": "MPRAGE", "tissue": t}
                          for t in ("GM", "WM", "CSF")
                          for form, lo, hi, shift in (("percentile", 0.01, 0.99, 0.0), ("located", 0.2, 0.8, -12.5))])
    located = load_calibration(calibration_to_json(frame, tmp_path / "a.json", model="M", sequence="MPRAGE"))
    assert located["GM"].shift_ml == -12.5 and located["GM"].form == "located" and located["GM"].lower[0.5] == 0.2
    paper = load_calibration(calibration_to_json(frame, tmp_path / "b.json", model="M", sequence="MPRAGE",
                                                 form="percentile"))
    assert paper["WM"].shift_ml == 0.0 and paper["WM"].form == "percentile" and paper["WM"].lower[0.5] == 0.01
    old = {"lower": {"0.5": 0.3}, "upper": {"0.5": 0.7}, "n_val": 2}  # written before the location correction
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert load_calibration(tmp_path / "old.json")["CSF"].shift_ml == 0.0
    (tmp_path / "bad.json").write_text(json.dumps({**old, "shift_ml": "nan"}))
    with pytest.raises(UsageError, match="unreadable calibration .*shift_ml"):
        load_calibration(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text(json.dumps({**old, "form": "shifted"}))
    with pytest.raises(UsageError, match="unreadable calibration .*form"):
        load_calibration(tmp_path / "bad.json")


def test_segment_runtime_failure(data, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(data["models"]["Baseline"], broken)
    (broken / "best.pt").write_bytes(b"garbage")
    rc, err = _run([data["mprage"], "--model", broken, "-o", tmp_path / "out"], capsys)
    assert rc == 1 and err.startswith("physeg segment: error: cannot load the model")


def test_resample_roundtrip_keeps_grid():
    from physeg.data.nifti import model_grid, resample_to_grid

    vol = np.random.default_rng(0).random((10, 12, 9)).astype(np.float32)
    aff, shape = model_grid(AFFINE, vol.shape, 6.0)
    assert shape == (5, 6, 5)
    np.testing.assert_allclose(np.linalg.norm(aff[:3, :3], axis=0), 6.0)
    down = resample_to_grid(vol, AFFINE, aff, shape)
    back = resample_to_grid(down, aff, AFFINE, vol.shape)
    assert back.shape == vol.shape


def _stored(src, tmp_path, name, transform):
    """``src`` stored with its voxel axes transformed (same world image), and its sidecar."""
    img = nib.load(str(src))
    data = np.asarray(img.dataobj)
    n = np.array(data.shape)
    if transform == "flip":  # index i -> n-1-i on axis 0
        flip = np.eye(4)
        flip[0, 0], flip[0, 3] = -1, n[0] - 1
        data, affine = data[::-1], img.affine @ flip
    else:  # permute axes 0 and 1
        perm = np.eye(4)[:, [1, 0, 2, 3]]
        data, affine = data.transpose(1, 0, 2), img.affine @ perm
    path = tmp_path / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), str(path))
    shutil.copy(str(src).replace(".nii.gz", ".json"), tmp_path / f"{name}.json")
    return path


@pytest.mark.parametrize("model", ["Baseline", "Phys-Strat-Aug-Epistemic"])
def test_flipped_and_permuted_storage_give_the_same_labels_in_world_space(data, tmp_path, capsys, model):
    src = data["mprage"]
    images = [_stored(src, tmp_path, "flip", "flip"), _stored(src, tmp_path, "perm", "perm")]
    rc, err = _run([src, *images, "--model", data["models"][model], "-o", tmp_path / "o", "-n", "3"], capsys)
    assert rc == 0, err
    ref = np.asarray(nib.load(str(tmp_path / "o" / "sim-001_MPRAGE_dseg.nii.gz")).dataobj)
    flip = nib.load(str(tmp_path / "o" / "flip_dseg.nii.gz"))
    perm = nib.load(str(tmp_path / "o" / "perm_dseg.nii.gz"))
    np.testing.assert_array_equal(np.asarray(flip.dataobj)[::-1], ref)
    np.testing.assert_array_equal(np.asarray(perm.dataobj).transpose(1, 0, 2), ref)
    # the outputs keep each input's own affine and storage order
    np.testing.assert_allclose(flip.affine, nib.load(str(images[0])).affine, atol=1e-6)
    np.testing.assert_allclose(perm.affine, nib.load(str(images[1])).affine, atol=1e-6)
    assert ref.any()


def test_oblique_float32_affine_gets_no_extra_model_voxel():
    from physeg.data.nifti import model_grid

    theta = np.deg2rad(17.0)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = (rot * 1.0).astype(np.float32)  # as stored in a NIfTI sform
    for n in (64, 181, 256):
        _, shape = model_grid(affine, (n, n, n), 1.0)
        assert shape == (n, n, n)
        _, shape = model_grid(affine, (n, n, n), 2.0)
        assert shape == ((n + 1) // 2,) * 3


@pytest.mark.parametrize("voxel, shape, message", [
    (60.0, (4, 4, 4), "voxels of 60x60x60 mm"),
    (9.0, (20, 20, 20), "outside the plausible 0.1-8 mm"),
    (0.001, (200, 200, 200), "outside the plausible 0.1-8 mm"),  # affine in metres
    (1.0, (20, 200, 200), "covers 20x200x200 mm"),
])
def test_implausible_geometry_refused_before_reading_data(data, tmp_path, capsys, voxel, shape, message):
    path = tmp_path / "odd.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(shape, np.float32), np.diag([voxel, voxel, voxel, 1.0])), str(path))
    rc, err = _run([path, "--ti", "0.9", "--model", data["models"]["Baseline"], "-o", tmp_path / "o"], capsys)
    assert rc == 2 and message in err and str(path) in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_tampered_weights_plans_and_calibration_are_refused(data, tmp_path, capsys):
    from physeg.evaluation.calibration import PercentileCalibration
    from physeg.inference.calibration_io import calibration_to_json
    from physeg.training.checkpoint import write_finished

    model = tmp_path / "model"
    shutil.copytree(data["models"]["Baseline"], model)
    write_finished(model, {"model": "Baseline"})  # records best.pt and plans.json
    cal = PercentileCalibration(lower={0.5: 0.2}, upper={0.5: 0.8}, n_val=3)
    calibration_to_json({t: cal for t in ("GM", "WM", "CSF")}, model / "calibration.json")
    args = [data["mprage"], "--model", model, "-n", "1"]
    rc, err = _run([*args, "-o", tmp_path / "ok"], capsys)
    assert rc == 0, err
    for name, change in (("best.pt", lambda b: b[:-1] + bytes([b[-1] ^ 1])),
                         ("plans.json", lambda b: b.replace(b'"seed": 0', b'"seed": 1')),
                         ("calibration.json", lambda b: b.replace(b"0.2", b"0.3"))):
        original = (model / name).read_bytes()
        (model / name).write_bytes(change(original))
        assert (model / name).read_bytes() != original
        rc, err = _run([*args, "-o", tmp_path / f"o_{name}"], capsys)
        assert rc == 1 and f"{model / name}" in err and "sha256" in err and err.count("\n") == 1, err
        assert not (tmp_path / f"o_{name}").exists()
        (model / name).write_bytes(original)
    (model / "best.pt").write_bytes((model / "best.pt").read_bytes()[:100])  # truncated
    rc, err = _run([*args, "-o", tmp_path / "o_trunc"], capsys)
    assert rc == 1 and "best.pt has 100 bytes" in err, err


def test_damaged_gzip_input_is_refused(data, tmp_path, capsys):
    bad = tmp_path / "bad.nii.gz"
    blob = bytearray(data["mprage"].read_bytes())
    blob[-6] ^= 0xFF  # the CRC-32 in the gzip trailer
    bad.write_bytes(bytes(blob))
    rc, err = _run([bad, "--ti", "0.9", "--model", data["models"]["Baseline"], "-o", tmp_path / "o"], capsys)
    assert rc == 2 and f"cannot read image {bad}: damaged gzip file" in err and err.count("\n") == 1, err
