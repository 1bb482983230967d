"""``physeg segment BIDS_ROOT``: a simulated BIDS study end to end, the derivatives layout, skips and resume."""

from __future__ import annotations

import json
import re
import shutil
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from physeg.cli import main
from physeg.study import segment_study
from physeg.study.simulated import Protocol, simulated_study

from test_cli_segment import make_model_folder  # noqa: E402  (same folder, pytest rootdir import)
from test_cli_simulate import AFFINE, tiny_maps  # noqa: E402

PROTOCOLS = (Protocol("1", "MPRAGE", {"TI": 0.9}), Protocol("2", "MPRAGE", {"TI": 0.3}),
             Protocol("3", "SPGR", {"TR": 0.02, "TE": 0.005, "FA": 25.0}))
GOOD = 6  # 2 subjects x 3 protocols
#: BIDS derivative names: sub-<label>[_ses-<label>][_acq-<label>]_{dseg,probseg}.{nii.gz,json}
DERIV_NAME = re.compile(r"^sub-[A-Za-z0-9]+(_ses-[A-Za-z0-9]+)?(_acq-[A-Za-z0-9]+)?_(dseg|probseg)\.(nii\.gz|json)$")


def tiny_subject(subject_id: str, scale: float = 1.0):
    pd_, t1, t2s, mask = tiny_maps()
    maps = torch.from_numpy(np.stack([pd_ * scale, t1, t2s]))
    return SimpleNamespace(subject_id=subject_id, maps=maps, mask=torch.from_numpy(mask), affine=AFFINE)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two subjects at three protocols, a corrupt scan (sub-03), a scan without sidecar (sub-04), two models."""
    root = tmp_path_factory.mktemp("study")
    bids = root / "bids"
    simulated_study(bids, subjects=[tiny_subject("sub-01"), tiny_subject("sub-02", 0.9)], protocols=PROTOCOLS)
    (bids / "sub-03" / "anat").mkdir(parents=True)
    (bids / "sub-03" / "anat" / "sub-03_acq-MPRAGE_T1w.nii.gz").write_bytes(b"not a nifti")
    (bids / "sub-03" / "anat" / "sub-03_acq-MPRAGE_T1w.json").write_text(json.dumps({"InversionTime": 0.9}))
    (bids / "sub-04" / "anat").mkdir(parents=True)
    shutil.copy(bids / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_acq-MPRAGE_T1w.nii.gz",
                bids / "sub-04" / "anat" / "sub-04_acq-MPRAGE_T1w.nii.gz")
    models = {"MPRAGE": make_model_folder(root / "m" / "mp", "Phys-Strat-Aug-Epistemic", "MPRAGE"),
              "SPGR": make_model_folder(root / "m" / "sp", "Phys-Strat-Aug-Aleatoric", "SPGR")}
    return {"bids": bids, "models": models, "root": root}


def model_args(study):
    return [a for seq, f in study["models"].items() for a in ("--model", f"{seq}={f}")]


@pytest.fixture(scope="module")
def first_run(study):
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["segment", str(study["bids"]), *model_args(study), "-n", "3", "--device", "cpu", "--no-progress"])
    return rc, err.getvalue(), study["bids"] / "derivatives" / "physeg"


def test_one_command_survives_bad_scans(first_run):
    rc, err, out = first_run
    assert rc == 1
    line = [ln for ln in err.splitlines() if ln.startswith("physeg segment: error:")]
    assert len(line) == 1 and "8 scans: 6 segmented, 0 skipped (current), 2 failed" in line[0], err
    assert "Traceback" not in err
    fail = pd.read_csv(out / "failures.tsv", sep="\t")
    assert list(fail["participant_id"]) == ["sub-03", "sub-04"]
    assert "cannot read" in fail["error"][0] or "gzip" in fail["error"][0]
    assert "no JSON sidecar" in fail["error"][1]


def test_derivatives_layout(first_run, study):
    _, _, out = first_run
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["BIDSVersion"]
    assert desc["GeneratedBy"][0]["Name"] == "physeg" and desc["GeneratedBy"][0]["Version"]
    assert desc["SourceDatasets"][0]["URL"].startswith("file://")
    assert (out / "dseg.tsv").read_text().splitlines() == ["index\tname", "0\tbackground", "1\tGM", "2\tWM", "3\tCSF"]
    anat = sorted(p for p in out.rglob("*") if p.is_file() and "anat" in p.parts)
    assert len(anat) == 3 * GOOD
    for p in anat:
        rel = p.relative_to(out).parts
        assert DERIV_NAME.match(p.name), p.name
        assert re.fullmatch(r"sub-\d+", rel[0]) and re.fullmatch(r"ses-\d", rel[1]) and rel[2] == "anat", rel
        assert p.name.startswith(f"{rel[0]}_{rel[1]}_")
    src = nib.load(str(study["bids"] / "sub-01/ses-3/anat/sub-01_ses-3_acq-SPGR_T1w.nii.gz"))
    dseg = nib.load(str(out / "sub-01/ses-3/anat/sub-01_ses-3_acq-SPGR_dseg.nii.gz"))
    prob = nib.load(str(out / "sub-01/ses-3/anat/sub-01_ses-3_acq-SPGR_probseg.nii.gz"))
    assert dseg.shape == src.shape and prob.shape == (*src.shape, 4)
    np.testing.assert_allclose(dseg.affine, src.affine, atol=1e-6)
    assert len(list(out.glob("sub-*/figures/*_desc-qc_dseg.png"))) == GOOD
    assert not [p for p in out.rglob(".*tmp*")]  # no temporary files left


def test_study_table(first_run, study):
    from physeg.study.models import sha256_of

    _, _, out = first_run
    table = pd.read_csv(out / "volumes.tsv", sep="\t")
    assert len(table) == GOOD and sorted(set(table["participant_id"])) == ["sub-01", "sub-02"]
    for t in ("GM", "WM", "CSF"):
        assert ((table[f"{t}_p95_low_ml"] <= table[f"{t}_p50_low_ml"] + 1e-9)
                & (table[f"{t}_p50_low_ml"] <= table[f"{t}_ml"]) & (table[f"{t}_ml"] <= table[f"{t}_p50_high_ml"])
                & (table[f"{t}_p50_high_ml"] <= table[f"{t}_p95_high_ml"] + 1e-9)).all()
    mp, sp = table[table.sequence == "MPRAGE"], table[table.sequence == "SPGR"]
    assert mp["GM_sd_aleatoric_ml"].isna().all() and mp["GM_sd_epistemic_ml"].notna().all()
    assert sp["GM_sd_epistemic_ml"].isna().all() and sp["GM_sd_aleatoric_ml"].notna().all()
    assert set(mp["model_sha256"]) == {sha256_of(study["models"]["MPRAGE"] / "best.pt")}
    ood = table[table.InversionTime == 0.3]
    assert len(ood) == 2 and (~ood["in_distribution"]).all() and ood["flags"].str.contains("OoD").all()
    assert table.loc[table.InversionTime == 0.9, "in_distribution"].all()
    assert set(table["protocol"]) == {"MPRAGE TI=900 ms", "MPRAGE TI=300 ms", "SPGR TR=20 ms, TE=5 ms, FA=25°"}
    rec = json.loads((out / "sub-02/ses-1/anat/sub-02_ses-1_acq-MPRAGE_dseg.json").read_text())
    assert rec["Sources"] == ["bids::sub-02/ses-1/anat/sub-02_ses-1_acq-MPRAGE_T1w.nii.gz"]
    assert set(rec["inputs_sha256"]) == {"image", "sidecar"} and rec["run"]["n_samples"] == 3


def test_report_lists_every_scan(first_run):
    _, _, out = first_run
    text = (out / "report.html").read_text()
    table = pd.read_csv(out / "volumes.tsv", sep="\t")
    for scan in [*table["scan"], "sub-03/anat/sub-03_acq-MPRAGE_T1w.nii.gz", "sub-04/anat/sub-04_acq-MPRAGE_T1w.nii.gz"]:
        assert scan in text
    assert "http://" not in text and "https://" not in text  # offline
    rows = re.findall(r"<tr( class=\"\w+\")?><td[^>]*>([^<]*)</td>", text)
    status = [s for _, s in rows]
    assert status[:2] == ["failed", "failed"] and status[2].startswith("OoD")  # flagged first


def test_second_run_does_no_work(first_run, study):
    _, _, out = first_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*_dseg.nii.gz")}
    run = segment_study(study["bids"], models=[f"{s}={f}" for s, f in study["models"].items()], n_samples=3,
                        device="cpu", progress=False)
    assert run.segmented == [] and len(run.skipped) == GOOD and len(run.failed) == 2
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*_dseg.nii.gz")} == before


def test_stale_and_interrupted_scans_are_redone(study, tmp_path):
    bids = tmp_path / "bids"
    shutil.copytree(study["bids"], bids, ignore=shutil.ignore_patterns("derivatives", "sub-03", "sub-04"))
    models = [f"{s}={f}" for s, f in study["models"].items()]
    kw = dict(models=models, n_samples=2, device="cpu", progress=False, output=tmp_path / "d")
    assert len(segment_study(bids, **kw).segmented) == GOOD
    side = bids / "sub-01/ses-1/anat/sub-01_ses-1_acq-MPRAGE_T1w.json"
    side.write_text(json.dumps({"PulseSequenceType": "MPRAGE", "InversionTime": 0.8}))  # new protocol: stale
    (tmp_path / "d/sub-02/ses-3/anat/sub-02_ses-3_acq-SPGR_dseg.json").unlink()  # interrupted before the record
    run = segment_study(bids, **kw)
    assert sorted(run.segmented) == ["sub-01/ses-1/anat/sub-01_ses-1_acq-MPRAGE_T1w.nii.gz",
                                     "sub-02/ses-3/anat/sub-02_ses-3_acq-SPGR_T1w.nii.gz"]
    assert len(run.skipped) == GOOD - 2
    # other samples count: nothing is current
    assert len(segment_study(bids, **{**kw, "n_samples": 3}).segmented) == GOOD


def test_a_new_calibration_makes_its_scans_stale(study, tmp_path):
    from physeg.evaluation.calibration import PercentileCalibration
    from physeg.inference.calibration_io import calibration_to_json

    bids = tmp_path / "bids"
    shutil.copytree(study["bids"], bids, ignore=shutil.ignore_patterns("derivatives", "sub-03", "sub-04"))
    mprage = tmp_path / "MPRAGE-model"
    shutil.copytree(study["models"]["MPRAGE"], mprage)
    kw = dict(models=[f"MPRAGE={mprage}", f"SPGR={study['models']['SPGR']}"], n_samples=2, device="cpu",
              progress=False, output=tmp_path / "d")
    assert len(segment_study(bids, **kw).segmented) == GOOD
    cal = PercentileCalibration(lower={0.5: 0.2}, upper={0.5: 0.8}, n_val=4, shift_ml=-3.0, form="located")
    calibration_to_json({t: cal for t in ("GM", "WM", "CSF")}, mprage / "calibration.json")
    run = segment_study(bids, **kw)  # the MPRAGE scans' intervals change: redone; SPGR's stay current
    assert run.segmented and all("MPRAGE" in s for s in run.segmented)
    assert run.skipped and all("SPGR" in s for s in run.skipped)
    table = pd.read_csv(tmp_path / "d" / "volumes.tsv", sep="\t")
    assert set(table.loc[table.sequence == "MPRAGE", "calibrated_50"]) == {True}
    assert len(segment_study(bids, **kw).skipped) == GOOD  # and then they are current again


def test_participant_then_group_level(study, tmp_path):
    models = [f"{s}={f}" for s, f in study["models"].items()]
    out = tmp_path / "d"
    run = segment_study(study["bids"], models=models, participant_labels=["sub-02"], analysis_level="participant",
                        n_samples=2, device="cpu", progress=False, output=out)
    assert len(run.segmented) == 3 and not (out / "volumes.tsv").exists()
    assert main(["segment", str(study["bids"]), "-o", str(out), "--analysis-level", "group", "--no-progress"]) == 0
    table = pd.read_csv(out / "volumes.tsv", sep="\t")
    assert list(table["participant_id"]) == ["sub-02"] * 3


def test_study_usage_errors(study, tmp_path, capsys):
    bids, models = study["bids"], model_args(study)

    def check(args, message):
        rc = main(["segment", *map(str, args), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err, err

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    check([bids, *models, "-o", foreign], "not a physeg derivatives dataset")
    assert (foreign / "notes.txt").read_text() == "mine" and len(list(foreign.iterdir())) == 1
    check([bids, "--model", f"SPGR={study['models']['MPRAGE']}", "-o", tmp_path / "x"], "trained on MPRAGE, not SPGR")
    check([bids, "--model", f"FLAIR={study['models']['MPRAGE']}", "-o", tmp_path / "x"], "sequence must be one of")
    check([bids, *models, "--participant-label", "99", "-o", tmp_path / "x"], "no folder sub-99")
    check([bids, *models, "--ti", "0.9", "-o", tmp_path / "x"], "does not apply to a BIDS study")
    assert not (tmp_path / "x").exists()


def test_missing_model_for_a_sequence_fails_those_scans(study, tmp_path):
    import yaml

    # an installation without shipped weights (the repository ships reference models for both sequences)
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"version": 1, "datasets": {"synthetic-mpm": {"kind": "synthetic"}}}))
    no_weights = {"root": tmp_path / "weights", "manifest_path": manifest}
    run = segment_study(study["bids"], models=[f"MPRAGE={study['models']['MPRAGE']}"], n_samples=1, device="cpu",
                        progress=False, output=tmp_path / "d", participant_labels=["01"], shipped=no_weights)
    assert len(run.segmented) == 2 and len(run.failed) == 1
    assert "SPGR" in run.failed[0]["error"] and "--model" in run.failed[0]["error"]


def test_folder_of_images(study, tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    for p in (study["bids"] / "sub-01").rglob("*acq-MPRAGE_T1w.*"):
        shutil.copy(p, folder / p.name)
    rc = main(["segment", str(folder), "--model", str(study["models"]["MPRAGE"]), "-o", str(tmp_path / "o"), "-n", "2",
               "--no-progress"])
    assert rc == 0 and len(pd.read_csv(tmp_path / "o" / "volumes.tsv", sep="\t")) == 2 * 3


def test_flipped_storage_gives_the_same_labels(study, tmp_path):
    """A scan stored with its first axis flipped (affine to match) is segmented to the same labels, flipped."""
    bids = tmp_path / "bids"
    shutil.copytree(study["bids"], bids, ignore=shutil.ignore_patterns("derivatives", "sub-02", "sub-03", "sub-04",
                                                                       "ses-2", "ses-3"))
    src = bids / "sub-01/ses-1/anat/sub-01_ses-1_acq-MPRAGE_T1w.nii.gz"
    img = nib.load(str(src))
    flip = np.diag([-1.0, 1, 1, 1])
    flip[0, 3] = img.shape[0] - 1
    dst = bids / "sub-05/ses-1/anat/sub-05_ses-1_acq-MPRAGE_T1w.nii.gz"
    dst.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[::-1].copy(), img.affine @ flip), str(dst))
    shutil.copy(src.with_name(src.name.replace(".nii.gz", ".json")), dst.with_name(dst.name.replace(".nii.gz", ".json")))
    run = segment_study(bids, models=[f"MPRAGE={study['models']['MPRAGE']}"], n_samples=2, device="cpu",
                        progress=False, output=tmp_path / "d")
    assert len(run.segmented) == 2
    a = np.asarray(nib.load(str(tmp_path / "d/sub-01/ses-1/anat/sub-01_ses-1_acq-MPRAGE_dseg.nii.gz")).dataobj)
    b = np.asarray(nib.load(str(tmp_path / "d/sub-05/ses-1/anat/sub-05_ses-1_acq-MPRAGE_dseg.nii.gz")).dataobj)
    np.testing.assert_array_equal(a, b[::-1])


def test_group_level_leaves_out_scans_no_longer_in_the_dataset(study, tmp_path):
    bids = tmp_path / "bids"
    shutil.copytree(study["bids"], bids, ignore=shutil.ignore_patterns("derivatives", "sub-02", "sub-04", "ses-3"))
    kw = dict(models=[f"MPRAGE={study['models']['MPRAGE']}"], n_samples=1, device="cpu", progress=False,
              output=tmp_path / "d")
    assert len(segment_study(bids, **kw).failed) == 1  # sub-03's corrupt scan
    shutil.rmtree(bids / "sub-01" / "ses-2")
    shutil.rmtree(bids / "sub-03")
    segment_study(bids, analysis_level="group", **kw)
    table = pd.read_csv(tmp_path / "d" / "volumes.tsv", sep="\t")
    assert list(table["session_id"]) == ["ses-1"]
    assert pd.read_csv(tmp_path / "d" / "failures.tsv", sep="\t").empty
    assert (tmp_path / "d/sub-01/ses-2/anat/sub-01_ses-2_acq-MPRAGE_dseg.nii.gz").is_file()  # files stay
