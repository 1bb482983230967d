"""PGS: literature Gaussian mixture on a hand-made phantom with known labels; the CLI."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from physeg.cli import main
from physeg.data import write_nifti
from physeg.pgs import (
    PGS_OPTIONS,
    dice,
    physics_gold_standard,
    tissue_parameters,
    tissue_volumes_ml,
    truth_labels,
)

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def phantom(noise=0.0, seed=0):
    """8x8x8 volume: background shell, then GM / WM / CSF slabs with literature values."""
    lit = tissue_parameters()
    labels = np.zeros((8, 8, 8), np.int64)
    labels[1:7, 1:7, 1:3] = 1
    labels[1:7, 1:7, 3:5] = 2
    labels[1:7, 1:7, 5:7] = 3
    maps = np.zeros((3, 8, 8, 8), np.float32)
    rng = np.random.default_rng(seed)
    for lab, tissue in ((1, "GM"), (2, "WM"), (3, "CSF")):
        sel = labels == lab
        for c, q in enumerate(("PD", "T1", "T2star")):
            mean, sd = lit[tissue][q]
            maps[c][sel] = mean + noise * sd * rng.standard_normal(sel.sum())
    return torch.from_numpy(maps), torch.from_numpy(labels > 0), labels


def test_literature_table():
    lit = tissue_parameters()
    assert lit["WM"]["T1"] == (0.83, 0.05) and lit["GM"]["T1"] == (1.33, 0.08)
    assert lit["CSF"]["T2star"][0] == 0.5 and lit["GM"]["PD"] == (0.80, 0.04)


@pytest.mark.parametrize("option", list(PGS_OPTIONS))
def test_phantom_recovered_by_every_option(option):
    maps, mask, labels = phantom(noise=0.5)
    out = physics_gold_standard(maps, mask, **PGS_OPTIONS[option])
    assert out.dtype == torch.int64 and out.shape == labels.shape
    assert (out.numpy()[~mask.numpy()] == 0).all()
    for lab in (1, 2, 3):
        assert dice(out, labels, label=lab) > 0.95, option


def test_default_is_exact_without_noise():
    maps, mask, labels = phantom()
    np.testing.assert_array_equal(physics_gold_standard(maps, mask).numpy(), labels)


def test_partial_volume_threshold_on_t1():
    """Rate mixing puts the WM/GM decision near 50 % GM: 30 % GM -> WM, 70 % -> GM."""
    lit = tissue_parameters()
    r_gm, r_wm = 1 / lit["GM"]["T1"][0], 1 / lit["WM"]["T1"][0]
    t1 = [1 / (p * r_gm + (1 - p) * r_wm) for p in (0.3, 0.7)]
    maps = torch.tensor([[[[0.7, 0.7]]], [[t1]], [[[0.06, 0.06]]]], dtype=torch.float32)
    maps = maps.reshape(3, 1, 1, 2)
    out = physics_gold_standard(maps, torch.ones(1, 1, 2, dtype=torch.bool))
    assert out.flatten().tolist() == [2, 1]


def test_volumes_and_truth_labels():
    labels = torch.tensor([0, 1, 1, 2, 3, 3, 3])
    assert tissue_volumes_ml(labels, 0.008) == pytest.approx({"GM": 0.016, "WM": 0.008, "CSF": 0.024})
    truth = torch.zeros(4, 2)
    truth[1, 0], truth[0, 1] = 0.6, 0.9
    assert truth_labels(truth).tolist() == [1, 0]


def test_cli_pgs_on_nifti_files(tmp_path, capsys):
    maps, mask, labels = phantom()
    with np.errstate(divide="ignore"):
        r1 = np.where(maps[1] > 0, 1 / maps[1].numpy(), 0).astype(np.float32)
    write_nifti(tmp_path / "pd.nii.gz", maps[0].numpy(), AFFINE)
    write_nifti(tmp_path / "r1.nii.gz", r1, AFFINE)
    write_nifti(tmp_path / "t2s.nii.gz", maps[2].numpy() * 1000, AFFINE)
    write_nifti(tmp_path / "mask.nii.gz", mask.numpy().astype(np.uint8), AFFINE)
    args = ["pgs", "--pd", str(tmp_path / "pd.nii.gz"), "--r1", str(tmp_path / "r1.nii.gz"),
            "--t2s", str(tmp_path / "t2s.nii.gz"), "--time-units", "ms", "--mask", str(tmp_path / "mask.nii.gz"),
            "--output", str(tmp_path / "out")]
    assert main(args) == 0
    img = nib.load(tmp_path / "out" / "pd_dseg.nii.gz")
    np.testing.assert_array_equal(np.asarray(img.dataobj), labels)
    np.testing.assert_array_equal(img.affine, AFFINE)
    vols = json.loads((tmp_path / "out" / "pd_volumes.json").read_text())["volumes_ml"]
    assert vols["GM"] == pytest.approx(72 * 0.008)
    assert "GM\t" in (tmp_path / "out" / "pd_volumes.tsv").read_text()
    assert main(args) == 2  # refuses to overwrite: a usage error
    assert "--force" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0


def test_cli_pgs_on_bids(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("_bids_helpers", Path(__file__).with_name("test_data_bids.py"))
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    make_bids = helpers.make_bids
    make_bids(tmp_path / "bids")
    assert main(["pgs", "--bids", str(tmp_path / "bids"), "--subject", "sub-01", "--output",
                 str(tmp_path / "o")]) == 0
    out = np.asarray(nib.load(tmp_path / "o" / "sub-01_dseg.nii.gz").dataobj)
    assert (out[:3] == 1).all() and (out[3:] == 2).all()


# --------------------------------------------------------------------------- hostile input
def _phantom_files(folder):
    maps, mask, labels = phantom()
    with np.errstate(divide="ignore"):
        r1 = np.where(maps[1] > 0, 1 / maps[1].numpy(), 0).astype(np.float32)
    paths = {k: folder / f"{k}.nii.gz" for k in ("pd", "r1", "t2s", "mask")}
    write_nifti(paths["pd"], maps[0].numpy(), AFFINE)
    write_nifti(paths["r1"], r1, AFFINE)
    write_nifti(paths["t2s"], maps[2].numpy(), AFFINE)
    write_nifti(paths["mask"], mask.numpy().astype(np.uint8), AFFINE)
    return paths, r1, mask.numpy()


def _pgs_args(paths, out, **override):
    files = {**{k: str(v) for k, v in paths.items()}, **override}
    return ["pgs", "--pd", files["pd"], "--r1", files["r1"], "--t2s", files["t2s"], "--mask", files["mask"],
            "--output", str(out)]


def _usage(capsys, rc, *needles):
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("physeg pgs: error:") and "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def test_cli_pgs_refuses_negative_r1_with_count(tmp_path, capsys):
    paths, r1, mask = _phantom_files(tmp_path)
    brain = np.flatnonzero(mask)
    bad = r1.copy()
    bad.flat[brain[: int(0.3 * brain.size)]] *= -1  # 30 % negative R1 inside the brain
    write_nifti(tmp_path / "r1neg.nii.gz", bad, AFFINE)
    rc = main(_pgs_args(paths, tmp_path / "out", r1=str(tmp_path / "r1neg.nii.gz")))
    _usage(capsys, rc, "r1neg.nii.gz", f"{int(0.3 * brain.size)} of {brain.size} brain-mask voxels", "negative")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("features", ["T1,T3", "T1,T1", "bogus"])
def test_cli_pgs_bad_features(tmp_path, capsys, features):
    paths, _, _ = _phantom_files(tmp_path)
    rc = main(_pgs_args(paths, tmp_path / "out") + ["--features", features])
    _usage(capsys, rc, "--features")


def test_cli_pgs_output_that_is_a_file(tmp_path, capsys):
    paths, _, _ = _phantom_files(tmp_path)
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    _usage(capsys, main(_pgs_args(paths, target)), "exists and is not a folder")
    assert target.read_text() == "mine"


def test_cli_pgs_sidecar_time_true(tmp_path, capsys):
    paths, _, _ = _phantom_files(tmp_path)
    (tmp_path / "r1.json").write_text('{"Units": true}')
    _usage(capsys, main(_pgs_args(paths, tmp_path / "out")), "r1.json", "'Units' must be a string")
    (tmp_path / "r1.json").write_text("7")
    _usage(capsys, main(_pgs_args(paths, tmp_path / "out")), "r1.json", "must be a JSON object")


def test_cli_pgs_units_from_sidecar_match_flag(tmp_path):
    """The same loader as simulate: a T2* map in ms is read through its sidecar or through --time-units."""
    paths, _, _ = _phantom_files(tmp_path)
    t2s = np.asarray(nib.load(paths["t2s"]).dataobj) * 1000
    write_nifti(tmp_path / "t2s_ms.nii.gz", t2s.astype(np.float32), AFFINE)
    (tmp_path / "t2s_ms.json").write_text(json.dumps({"Units": "ms"}))
    both = ["--features", "T1,T2star"]  # labels depend on the T2* values
    assert main(_pgs_args(paths, tmp_path / "a", t2s=str(tmp_path / "t2s_ms.nii.gz")) + both) == 0
    assert main(_pgs_args(paths, tmp_path / "b") + both) == 0
    a, b = (np.asarray(nib.load(tmp_path / d / "pd_dseg.nii.gz").dataobj) for d in "ab")
    np.testing.assert_array_equal(a, b)
