"""Shipped weights: ship into a temporary root, verify before use, segment without --model, models list."""

from __future__ import annotations

import json
import time

import nibabel as nib
import pytest
import yaml

from physeg.cli import main
from physeg.data.manifest import MANIFEST_PATH, load_manifest
from physeg.inference import shipped

from test_cli_segment import make_model_folder  # noqa: E402  (same folder, pytest rootdir import)
from test_cli_simulate import AFFINE, tiny_maps  # noqa: E402


@pytest.fixture()
def weights(tmp_path, monkeypatch):
    """An empty shipped-weights root and a manifest holding only the synthetic entry, set through the env."""
    root, manifest = tmp_path / "weights", tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"version": 1, "datasets": {"synthetic-mpm": {"kind": "synthetic"}}}))
    monkeypatch.setenv(shipped.WEIGHTS_ENV, str(root))
    monkeypatch.setenv(shipped.MANIFEST_ENV, str(manifest))
    return root, manifest


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """A simulated MPRAGE (TI 0.9 s) and SPGR scan with BIDS sidecars, and tiny untrained model folders."""
    root = tmp_path_factory.mktemp("shipped")
    pd, t1, t2s, _ = tiny_maps()
    for name, arr in (("pd", pd), ("t1", t1), ("t2s", t2s)):
        nib.save(nib.Nifti1Image(arr, AFFINE), str(root / f"{name}.nii.gz"))
    maps = ["--pd", str(root / "pd.nii.gz"), "--t1", str(root / "t1.nii.gz"), "--t2s", str(root / "t2s.nii.gz")]
    assert main(["simulate", *maps, "--sequence", "MPRAGE", "--ti", "0.9", "-o", str(root / "mp")]) == 0
    assert main(["simulate", *maps, "--sequence", "SPGR", "--tr", "0.02", "--te", "0.005", "--fa", "25",
                 "-o", str(root / "sp")]) == 0
    models = {(name, seq): make_model_folder(root / "models" / f"{name}_{seq}", name, seq)
              for name, seq in (("Phys-Strat-Aug-Epistemic", "MPRAGE"), ("Baseline", "MPRAGE"),
                                ("Phys-Strat-Aug", "SPGR"))}
    return {"mprage": root / "mp" / "sim-001_MPRAGE.nii.gz", "spgr": root / "sp" / "sim-001_SPGR.nii.gz",
            "models": models}


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    return err


def test_ship_then_segment_without_model(weights, scans, tmp_path, capsys):
    root, manifest = weights
    mprage_out, spgr_out = tmp_path / "seg_mp", tmp_path / "seg_sp"
    segment = ["--samples", "3", "--device", "cpu", "--no-progress"]
    assert main(["segment", str(scans["spgr"]), "-o", str(spgr_out), *segment]) == 2
    assert "no weights are shipped for SPGR" in _err(capsys) and not spgr_out.exists()

    for key in (("Baseline", "MPRAGE"), ("Phys-Strat-Aug-Epistemic", "MPRAGE")):
        assert main(["reference", "ship", "--from", str(scans["models"][key])]) == 0
    record = load_manifest(manifest)["datasets"][shipped.ENTRY]["models"]["MPRAGE/Phys-Strat-Aug-Epistemic"]
    assert set(record["files"]) == {"plans.json", "best.pt"} and len(record["files"]["best.pt"]["sha256"]) == 64
    assert record["voxel_size_mm"] == 4.0 and record["training_ranges"]["TI"] == [0.6, 1.2]
    folder = shipped.resolve_default_model("MPRAGE", root=root, manifest_path=manifest)
    assert folder == root / "MPRAGE" / "Phys-Strat-Aug-Epistemic"  # the paper's model is the default

    capsys.readouterr()
    assert main(["segment", str(scans["mprage"]), "-o", str(mprage_out), *segment]) == 0
    volumes = json.loads((mprage_out / "volumes.json").read_text())
    assert volumes["model"]["name"] == "Phys-Strat-Aug-Epistemic"
    assert volumes["model"]["folder"] == str(folder)
    assert (mprage_out / "sim-001_MPRAGE_dseg.nii.gz").is_file()

    (folder / "best.pt").write_bytes((folder / "best.pt").read_bytes() + b"x")  # tampered weights
    out2 = tmp_path / "seg_tampered"
    capsys.readouterr()
    assert main(["segment", str(scans["mprage"]), "-o", str(out2), *segment]) == 1
    err = _err(capsys)
    assert "fail verification" in err and "best.pt" in err and not out2.exists()


def test_ship_refuses_and_replaces_only_with_force(weights, scans, tmp_path, capsys):
    root, manifest = weights
    src = scans["models"][("Phys-Strat-Aug", "SPGR")]
    assert main(["reference", "ship", "--from", str(src)]) == 0
    capsys.readouterr()
    assert main(["reference", "ship", "--from", str(src)]) == 2
    assert "use --force" in _err(capsys)
    assert main(["reference", "ship", "--from", str(src), "--force"]) == 0
    assert sorted(p.name for p in (root / "SPGR").iterdir()) == ["Phys-Strat-Aug"]  # no temporary folder left
    stray = root / "SPGR" / "Phys-Base"
    stray.mkdir()
    (stray / "mine.txt").write_text("keep")
    other = make_model_folder(tmp_path / "pb", "Phys-Base", "SPGR")
    capsys.readouterr()
    assert main(["reference", "ship", "--from", str(other), "--force"]) == 2
    assert "not recorded in the manifest" in _err(capsys) and (stray / "mine.txt").read_text() == "keep"
    capsys.readouterr()
    assert main(["reference", "ship", "--from", str(tmp_path)]) == 2
    assert "plans.json" in _err(capsys)
    assert main(["reference", "ship", "--from", str(tmp_path / "absent")]) == 2
    assert "not a folder" in _err(capsys)


def test_models_list_shows_profile_voxel_ranges_and_validation(weights, scans, tmp_path, capsys):
    root, manifest = weights
    assert main(["models", "list"]) == 0
    assert "no model weights are shipped" in capsys.readouterr().out
    src = scans["models"][("Phys-Strat-Aug", "SPGR")]
    (src / "finished.json").write_text(json.dumps({"epochs": 2, "val_dice_GM": 0.81, "val_dice_WM": 0.85,
                                                   "val_dice_CSF": 0.4}))
    try:
        assert main(["reference", "ship", "--from", str(src)]) == 0
    finally:
        (src / "finished.json").unlink()
    capsys.readouterr()
    assert main(["models", "list", "--verify"]) == 0
    out = capsys.readouterr().out
    assert "Phys-Strat-Aug (default)" in out and "SPGR" in out and "unknown" in out  # plans without provenance
    assert "TR 15–30 ms" in out or "FA" in out  # the training box in user units
    assert "0.81/0.85/0.40" in out and "1 shipped model(s)" in out
    (root / "SPGR" / "Phys-Strat-Aug" / "plans.json").write_text("{}")
    capsys.readouterr()
    assert main(["models", "list", "--verify"]) == 1
    assert "plans.json" in _err(capsys)


def test_malformed_shipped_entry_is_a_usage_error(weights, capsys):
    _, manifest = weights
    doc = yaml.safe_load(manifest.read_text())
    doc["datasets"][shipped.ENTRY] = {"kind": "weights", "models": {"../evil/x": {"files": {}}}}
    manifest.write_text(yaml.safe_dump(doc))
    assert main(["models", "list"]) == 2
    assert "leaves the destination" in _err(capsys)


def test_repository_shipped_weights_verify_or_say_none_are_shipped(scans, tmp_path, capsys, monkeypatch):
    """The checkout's own shipped weights: every recorded file matches its sha256; none → a one-line hint."""
    monkeypatch.delenv(shipped.WEIGHTS_ENV, raising=False)
    monkeypatch.delenv(shipped.MANIFEST_ENV, raising=False)
    entry = load_manifest(MANIFEST_PATH)["datasets"][shipped.ENTRY]
    assert entry["kind"] == "weights"
    models = shipped.registry()
    for m in models.values():
        shipped.verify_shipped(m)
    if not any(m.sequence == "SPGR" for m in models.values()):
        assert main(["segment", str(scans["spgr"]), "-o", str(tmp_path / "o"), "--samples", "2"]) == 2
        err = _err(capsys)
        assert "no weights are shipped for SPGR" in err and "--model" in err


@pytest.mark.slow
def test_ship_a_smoke_trained_model_and_segment(weights, scans, tmp_path, isolated_cache, capsys):
    """A smoke-trained Phys-Strat-Aug-Epistemic (and its parent) shipped into a temporary root, then used."""
    from physeg.profiles import get_profile
    from physeg.training.orchestrate import train_all

    trained = train_all(get_profile("smoke"), sequences=["MPRAGE"],
                        models=["Phys-Strat-Aug", "Phys-Strat-Aug-Epistemic"], progress=False)
    folder = trained["folders"][("Phys-Strat-Aug-Epistemic", "MPRAGE")]
    assert main(["reference", "ship", "--from", str(folder)]) == 0
    out = tmp_path / "seg"
    start = time.perf_counter()
    assert main(["segment", str(scans["mprage"]), "-o", str(out), "--samples", "10", "--device", "cpu",
                 "--no-progress"]) == 0
    print(f"segment with the shipped smoke model: {time.perf_counter() - start:.1f} s")
    rows = (out / "volumes.tsv").read_text().splitlines()
    assert len(rows) == 4 and "GM" in rows[1]
    capsys.readouterr()
    assert main(["models", "list", "--verify"]) == 0
    listing = capsys.readouterr().out
    assert "Phys-Strat-Aug-Epistemic (default)" in listing and "smoke" in listing and "6" in listing


def test_the_default_is_the_first_preferred_model_that_validated_close_to_the_best():
    from pathlib import Path

    def model(name, gm=None, wm=None):
        val = {} if gm is None else {"val_dice_GM": gm, "val_dice_WM": wm}
        return shipped.ShippedModel(key=f"MPRAGE/{name}", folder=Path(name),
                                    record={"model": name, "sequence": "MPRAGE", "validation": val})

    epi, det = model("Phys-Strat-Aug-Epistemic", 0.79, 0.69), model("Phys-Strat-Aug", 0.90, 0.90)
    ale, base = model("Phys-Strat-Aug-Aleatoric", 0.91, 0.90), model("Baseline", 0.89, 0.91)
    # the epistemic model validated 0.16 below the best: not the default; the aleatoric one comes next in order
    assert shipped.default_for([epi, det, ale, base], sequence="MPRAGE").model == "Phys-Strat-Aug-Aleatoric"
    assert shipped.default_for([epi, det, base], sequence="MPRAGE").model == "Phys-Strat-Aug"
    good_epi = model("Phys-Strat-Aug-Epistemic", 0.89, 0.89)  # within 0.03 of the best: the paper's choice
    assert shipped.default_for([good_epi, det, ale], sequence="MPRAGE").model == "Phys-Strat-Aug-Epistemic"
    # no validation figures: candidates by order; another sequence: nothing
    assert shipped.default_for([model("Phys-Strat-Aug-Epistemic"), det], sequence="MPRAGE").model == \
        "Phys-Strat-Aug-Epistemic"
    assert shipped.default_for([det], sequence="SPGR") is None


def test_the_shipped_reference_weights_segment_both_sequences_without_model(scans, tmp_path, caplog, monkeypatch):
    """The weights committed under physeg/weights: verified, then `physeg segment` with no --model on a simulated
    MPRAGE and SPGR scan picks a model of the scan's sequence and writes volumes inside their interval."""
    monkeypatch.delenv(shipped.WEIGHTS_ENV, raising=False)
    monkeypatch.delenv(shipped.MANIFEST_ENV, raising=False)
    models = shipped.registry()
    assert {m.sequence for m in models.values()} == {"MPRAGE", "SPGR"}
    assert {m.record["profile"] for m in models.values()} == {"reference-long"}
    for key, scan in (("mprage", scans["mprage"]), ("spgr", scans["spgr"])):
        out = tmp_path / key
        assert main(["segment", str(scan), "-o", str(out), "--samples", "4", "--device", "cpu", "--no-progress"]) == 0
        volumes = json.loads((out / "volumes.json").read_text())
        default = shipped.default_for(models.values(), sequence=key.upper())
        assert volumes["model"]["name"] == default.model and default.record["profile"] == "reference-long"
        import pandas as pd

        table = pd.read_csv(out / "volumes.tsv", sep="\t")
        assert list(table["tissue"]) == ["GM", "WM", "CSF"] and (table["volume_ml"] >= 0).all()
        assert ((table["iqr_low_ml"] <= table["volume_ml"]) & (table["volume_ml"] <= table["iqr_high_ml"])).all()
        # a tissue the shipped model validated below 0.05 Dice is flagged in volumes.json and in the log
        val = volumes["model"]["validation_dice"]
        flagged = [t for t in ("GM", "WM", "CSF") if val[t] < 0.05]
        assert volumes["model"]["unreliable_tissues"] == flagged
        assert all(f"its {t} volume is not a measurement" in caplog.text for t in flagged)
        caplog.clear()
