"""``physeg simulate``: maps (NIfTI files or BIDS) → images with BIDS sidecars; usage errors."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest

from physeg.cli import main


def tiny_maps(shape=(14, 16, 12)):
    """PD, T1 (s), T2* (s) of a 'brain' ball: WM core, GM shell, CSF rim; zeros outside."""
    idx = np.indices(shape).astype(float)
    c = (np.array(shape) - 1) / 2
    r = np.sqrt(sum(((idx[i] - c[i]) / (shape[i] / 2)) ** 2 for i in range(3)))
    pd = np.select([r < 0.4, r < 0.65, r < 0.85], [0.69, 0.8, 1.0], 0.0)
    t1 = np.select([r < 0.4, r < 0.65, r < 0.85], [0.83, 1.33, 4.2], 0.0)
    t2s = np.select([r < 0.4, r < 0.65, r < 0.85], [0.053, 0.066, 0.5], 0.0)
    return pd.astype(np.float32), t1.astype(np.float32), t2s.astype(np.float32), r < 0.85


#: Oblique-ish affine with 3 mm voxels, to check that it is kept exactly.
AFFINE = np.array([[3.0, 0.1, 0.0, -20.0], [0.0, 2.9, 0.3, -30.0], [0.0, -0.2, 3.0, 10.0], [0, 0, 0, 1]])


@pytest.fixture()
def map_files(tmp_path):
    pd, t1, t2s, mask = tiny_maps()
    paths = {}
    for name, arr in (("pd", pd), ("t1", t1), ("t2s", t2s), ("mask", mask.astype(np.uint8))):
        paths[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(arr, AFFINE), str(paths[name]))
    with np.errstate(divide="ignore"):
        for name, arr in (("r1", t1), ("r2s", t2s)):
            paths[name] = tmp_path / f"{name}.nii.gz"
            rate = np.where(arr > 0, 1.0 / np.where(arr > 0, arr, 1), 0).astype(np.float32)
            nib.save(nib.Nifti1Image(rate, AFFINE), str(paths[name]))
    return paths


def test_simulate_mprage_explicit_ti(map_files, tmp_path):
    out = tmp_path / "sims"
    rc = main(["simulate", "--pd", str(map_files["pd"]), "--t1", str(map_files["t1"]), "--t2s",
               str(map_files["t2s"]), "--sequence", "MPRAGE", "--ti", "0.6", "0.9", "-o", str(out)])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "parameters.tsv", "sim-001_MPRAGE.json", "sim-001_MPRAGE.nii.gz", "sim-002_MPRAGE.json",
        "sim-002_MPRAGE.nii.gz"]
    side = json.loads((out / "sim-002_MPRAGE.json").read_text())
    assert side["InversionTime"] == pytest.approx(0.9)
    assert side["PulseSequenceType"] == "MPRAGE"
    img = nib.load(str(out / "sim-001_MPRAGE.nii.gz"))
    np.testing.assert_allclose(img.affine, AFFINE, atol=1e-5)
    data = np.asarray(img.dataobj)
    assert data.shape == (14, 16, 12) and np.isfinite(data).all() and data.max() > 0


def test_simulate_spgr_sampled_ood_from_rates(map_files, tmp_path):
    out = tmp_path / "sims"
    rc = main(["simulate", "--pd", str(map_files["pd"]), "--r1", str(map_files["r1"]), "--r2s",
               str(map_files["r2s"]), "--sequence", "spgr", "--range", "ood", "--n", "3", "--seed", "4",
               "--normalise", "--mask", str(map_files["mask"]), "-o", str(out)])
    assert rc == 0
    sides = [json.loads((out / f"sim-00{i}_SPGR.json").read_text()) for i in (1, 2, 3)]
    for s in sides:
        assert set(s) >= {"RepetitionTime", "EchoTime", "FlipAngle"}
        assert 5 <= s["FlipAngle"] <= 90  # degrees
        assert 0.002 <= s["EchoTime"] < s["RepetitionTime"] <= 0.2
        assert s["physeg"]["InTrainingRange"] is False
    data = np.asarray(nib.load(str(out / "sim-001_SPGR.nii.gz")).dataobj)
    assert 0 <= data.min() and data.max() <= 2.0  # normalised and clipped


def test_simulate_from_bids(tmp_path):
    from physeg.data import write_nifti

    pd, t1, t2s, mask = tiny_maps()
    anat = tmp_path / "bids" / "sub-01" / "anat"
    with np.errstate(divide="ignore"):
        r1 = np.where(t1 > 0, 1 / np.where(t1 > 0, t1, 1), 0)
        r2 = np.where(t2s > 0, 1 / np.where(t2s > 0, t2s, 1), 0)
    for suffix, arr, units in (("R1map", r1, "1/s"), ("R2starmap", r2, "1/s"), ("PDmap", pd, "a.u.")):
        write_nifti(anat / f"sub-01_{suffix}.nii.gz", arr.astype(np.float32), AFFINE)
        (anat / f"sub-01_{suffix}.json").write_text(json.dumps({"Units": units}))
    write_nifti(anat / "sub-01_desc-brain_mask.nii.gz", mask.astype(np.uint8), AFFINE)
    out = tmp_path / "sims"
    rc = main(["simulate", "--bids", str(tmp_path / "bids"), "--subject", "01", "--sequence", "MPRAGE",
               "--range", "iod", "--n", "2", "-o", str(out), "--prefix", "x"])
    assert rc == 0
    side = json.loads((out / "x-002_MPRAGE.json").read_text())
    assert 0.6 <= side["InversionTime"] <= 1.2 and side["physeg"]["InTrainingRange"]
    np.testing.assert_allclose(nib.load(str(out / "x-001_MPRAGE.nii.gz")).affine, AFFINE, atol=1e-5)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--sequence", "MPRAGE"], "needs --ti"),
        (["--sequence", "MPRAGE", "--ti", "900"], "looks like milliseconds"),
        (["--sequence", "SPGR", "--tr", "20", "--te", "0.005", "--fa", "20"], "looks like milliseconds"),
        (["--sequence", "SPGR", "--tr", "0.02", "--te", "0.005", "--fa", "200"], "above 180"),
        (["--sequence", "SPGR", "--tr", "0.004", "--te", "0.005", "--fa", "20"], "TR"),
        (["--sequence", "MPRAGE", "--tr", "0.02"], "does not apply"),
        (["--sequence", "MPRAGE", "--ti", "0.9", "--range", "iod"], "not both"),
    ],
)
def test_simulate_parameter_errors(map_files, tmp_path, capsys, extra, message):
    rc = main(["simulate", "--pd", str(map_files["pd"]), "--t1", str(map_files["t1"]), "--t2s",
               str(map_files["t2s"]), "-o", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("physeg simulate: error:") and message in err
    assert "Traceback" not in err


def test_simulate_map_errors_and_overwrite(map_files, tmp_path, capsys):
    base = ["simulate", "--sequence", "MPRAGE", "--ti", "0.9", "-o", str(tmp_path / "o")]
    assert main([*base, "--pd", str(map_files["pd"])]) == 2
    assert "give the maps" in capsys.readouterr().err
    # T1 map in milliseconds
    ms = tmp_path / "t1ms.nii.gz"
    nib.save(nib.Nifti1Image(tiny_maps()[1] * 1000, AFFINE), str(ms))
    assert main([*base, "--pd", str(map_files["pd"]), "--t1", str(ms), "--t2s", str(map_files["t2s"])]) == 2
    assert "milliseconds" in capsys.readouterr().err
    files = ["--pd", str(map_files["pd"]), "--t1", str(map_files["t1"]), "--t2s", str(map_files["t2s"])]
    assert main([*base, *files]) == 0
    assert main([*base, *files]) == 2
    assert "--force" in capsys.readouterr().err
    assert main([*base, *files, "--force"]) == 0


def test_check_value_fa_radians_warns():
    from physeg.data.acquisition import check_value

    assert check_value("FA", 0.5, "x") and "radians" in check_value("FA", 0.5, "x")[0]
    assert check_value("FA", 30, "x") == []
    assert math.radians(180) > math.pi - 1e-9


# --------------------------------------------------------------------------- units and hostile input
def _mprage(out, pd, t1, t2s, *extra):
    return main(["simulate", "--pd", str(pd), "--t1", str(t1), "--t2s", str(t2s), "--sequence", "MPRAGE",
                 "--ti", "0.9", "-o", str(out), *extra])


def _usage(capsys, rc, *needles):
    """A usage error: exit 2, one line ``physeg simulate: error: ...`` containing every needle."""
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("physeg simulate: error:") and "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def test_t1_in_ms_with_sidecar_equals_t1_in_s(map_files, tmp_path):
    """One map reader for pgs and simulate: the sidecar's Units converts ms to s."""
    ms = tmp_path / "t1ms.nii.gz"
    nib.save(nib.Nifti1Image(tiny_maps()[1] * 1000, AFFINE), str(ms))
    (tmp_path / "t1ms.json").write_text(json.dumps({"Units": "ms"}))
    assert _mprage(tmp_path / "s", map_files["pd"], map_files["t1"], map_files["t2s"]) == 0
    assert _mprage(tmp_path / "ms", map_files["pd"], ms, map_files["t2s"]) == 0
    a = np.asarray(nib.load(str(tmp_path / "s" / "sim-001_MPRAGE.nii.gz")).dataobj)
    b = np.asarray(nib.load(str(tmp_path / "ms" / "sim-001_MPRAGE.nii.gz")).dataobj)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # without sidecars, --time-units says ms for both time maps (and it would override a sidecar)
    (tmp_path / "t1ms.json").unlink()
    t2s_ms = tmp_path / "t2sms.nii.gz"
    nib.save(nib.Nifti1Image(tiny_maps()[2] * 1000, AFFINE), str(t2s_ms))
    assert _mprage(tmp_path / "flag", map_files["pd"], ms, t2s_ms, "--time-units", "ms") == 0
    c = np.asarray(nib.load(str(tmp_path / "flag" / "sim-001_MPRAGE.nii.gz")).dataobj)
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-7)


def test_rate_units_flag(map_files, tmp_path):
    per_ms = {}
    for name in ("r1", "r2s"):
        per_ms[name] = tmp_path / f"{name}_per_ms.nii.gz"
        rate = np.asarray(nib.load(str(map_files[name])).dataobj) / 1000
        nib.save(nib.Nifti1Image(rate, AFFINE), str(per_ms[name]))
    base = ["simulate", "--pd", str(map_files["pd"]), "--sequence", "MPRAGE", "--ti", "0.9"]
    assert main([*base, "--r1", str(map_files["r1"]), "--r2s", str(map_files["r2s"]), "-o", str(tmp_path / "a")]) == 0
    assert main([*base, "--r1", str(per_ms["r1"]), "--r2s", str(per_ms["r2s"]), "--rate-units", "1/ms",
                 "-o", str(tmp_path / "b")]) == 0
    a, b = (np.asarray(nib.load(str(tmp_path / d / "sim-001_MPRAGE.nii.gz")).dataobj) for d in "ab")
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_nan_voxels_inside_the_mask_refused(map_files, tmp_path, capsys):
    pd, t1, t2s, mask = tiny_maps()
    t1 = t1.copy()
    t1[mask] = np.where(np.arange(mask.sum()) % 10 == 0, np.nan, t1[mask])  # 10 % NaN in the brain
    bad = tmp_path / "t1nan.nii.gz"
    nib.save(nib.Nifti1Image(t1, AFFINE), str(bad))
    rc = _mprage(tmp_path / "o", map_files["pd"], bad, map_files["t2s"], "--mask", str(map_files["mask"]))
    _usage(capsys, rc, "t1nan.nii.gz", f"{int(np.ceil(mask.sum() / 10))} of {int(mask.sum())} brain-mask voxels",
           "NaN/inf")
    assert not (tmp_path / "o").exists()


def test_a_few_invalid_voxels_are_dark_not_bright(map_files, tmp_path):
    pd, t1, t2s, mask = tiny_maps()
    t1 = t1.copy()
    where = tuple(np.argwhere(mask)[0])
    t1[where] = -1.0  # one negative voxel (< 1 %): T1 <= 0 would saturate the signal
    bad = tmp_path / "t1neg.nii.gz"
    nib.save(nib.Nifti1Image(t1, AFFINE), str(bad))
    assert _mprage(tmp_path / "o", map_files["pd"], bad, map_files["t2s"]) == 0
    image = np.asarray(nib.load(str(tmp_path / "o" / "sim-001_MPRAGE.nii.gz")).dataobj)
    assert image[where] == 0.0


@pytest.mark.parametrize("content, message", [("42", "must be a JSON object"),
                                              ('{"Units": true}', "'Units' must be a string")])
def test_malformed_map_sidecar(map_files, tmp_path, capsys, content, message):
    (tmp_path / "t1.json").write_text(content)  # next to map_files["t1"]
    rc = _mprage(tmp_path / "o", map_files["pd"], map_files["t1"], map_files["t2s"])
    _usage(capsys, rc, "t1.json", message)


def test_empty_mask_refused(map_files, tmp_path, capsys):
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((14, 16, 12), np.uint8), AFFINE), str(empty))
    rc = _mprage(tmp_path / "o", map_files["pd"], map_files["t1"], map_files["t2s"], "--mask", str(empty),
                 "--normalise")
    _usage(capsys, rc, "empty brain mask")


def test_mask_on_another_grid_refused(map_files, tmp_path, capsys):
    moved = tmp_path / "moved.nii.gz"
    other = AFFINE.copy()
    other[0, 3] += 9.0
    nib.save(nib.Nifti1Image(tiny_maps()[3].astype(np.uint8), other), str(moved))
    rc = _mprage(tmp_path / "o", map_files["pd"], map_files["t1"], map_files["t2s"], "--mask", str(moved))
    _usage(capsys, rc, "moved.nii.gz", "affine differs")


def test_output_that_is_a_file_refused(map_files, tmp_path, capsys):
    target = tmp_path / "out.txt"
    target.write_text("mine")
    rc = _mprage(target, map_files["pd"], map_files["t1"], map_files["t2s"])
    _usage(capsys, rc, "exists and is not a folder")
    assert target.read_text() == "mine"


def test_prefix_with_folders_refused(map_files, tmp_path, capsys):
    rc = _mprage(tmp_path / "o", map_files["pd"], map_files["t1"], map_files["t2s"], "--prefix", "../escape")
    _usage(capsys, rc, "--prefix")
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob("escape*"))


def test_existing_parameters_tsv_is_not_overwritten(map_files, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "parameters.tsv").write_text("the user's own table\n")
    rc = _mprage(out, map_files["pd"], map_files["t1"], map_files["t2s"])
    _usage(capsys, rc, "parameters.tsv exists", "--force")
    assert (out / "parameters.tsv").read_text() == "the user's own table\n"
    assert sorted(p.name for p in out.iterdir()) == ["parameters.tsv"]


def test_bids_and_files_together_refused(map_files, tmp_path, capsys):
    rc = main(["simulate", "--bids", str(tmp_path), "--subject", "01", "--pd", str(map_files["pd"]),
               "--sequence", "MPRAGE", "--ti", "0.9", "-o", str(tmp_path / "o")])
    _usage(capsys, rc, "not both")


# ---------------------------------------------------------------- registry sequences and artefacts
MP2RAGE_FLAGS = ["--ti1", "0.7", "--ti2", "2.5", "--fa1", "4", "--fa2", "5", "--tr", "0.007", "--cycle-tr", "5",
                 "--readout-pulses", "160"]


def _files(map_files, out, *extra):
    return main(["simulate", "--pd", str(map_files["pd"]), "--t1", str(map_files["t1"]), "--t2s",
                 str(map_files["t2s"]), "-o", str(out), *extra])


def test_mp2rage_writes_uni_and_both_inversions_with_bids_sidecars(map_files, tmp_path):
    out = tmp_path / "mp2"
    assert _files(map_files, out, "--sequence", "MP2RAGE", *MP2RAGE_FLAGS) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "parameters.tsv", "sim-001_UNIT1.json", "sim-001_UNIT1.nii.gz", "sim-001_inv-1_MP2RAGE.json",
        "sim-001_inv-1_MP2RAGE.nii.gz", "sim-001_inv-2_MP2RAGE.json", "sim-001_inv-2_MP2RAGE.nii.gz"]
    inv1 = json.loads((out / "sim-001_inv-1_MP2RAGE.json").read_text())
    inv2 = json.loads((out / "sim-001_inv-2_MP2RAGE.json").read_text())
    assert inv1["InversionTime"] == pytest.approx(0.7) and inv2["InversionTime"] == pytest.approx(2.5)
    assert inv1["FlipAngle"] == pytest.approx(4) and inv2["FlipAngle"] == pytest.approx(5)
    assert inv1["RepetitionTimePreparation"] == pytest.approx(5) and inv1["NumberShots"] == 160
    assert inv1["RepetitionTimeExcitation"] == pytest.approx(0.007)
    uni = np.asarray(nib.load(str(out / "sim-001_UNIT1.nii.gz")).dataobj)
    pd, t1, _, mask = tiny_maps()
    # UNI + 1/2 in [0, 1]; WM (T1 0.83 s) brighter than GM (1.33 s) brighter than CSF (4.2 s); 0 outside the head
    assert 0 <= uni.min() and uni.max() <= 1 and (uni[pd == 0] == 0).all()
    wm, gm, csf = (uni[np.isclose(t1, v)].mean() for v in (0.83, 1.33, 4.2))
    assert wm > gm > csf
    i1 = np.asarray(nib.load(str(out / "sim-001_inv-1_MP2RAGE.nii.gz")).dataobj)
    assert (i1 >= 0).all() and i1.max() > 0  # magnitude


def test_mespgr_echoes_separate_or_combined(map_files, tmp_path):
    flags = ["--sequence", "MESPGR", "--tr", "0.025", "--te1", "0.0023", "--dte", "0.0025", "--fa", "21"]
    assert _files(map_files, tmp_path / "sep", *flags) == 0
    echoes = [np.asarray(nib.load(str(tmp_path / "sep" / f"sim-001_echo-{e}_MEGRE.nii.gz")).dataobj)
              for e in range(1, 7)]
    tes = [json.loads((tmp_path / "sep" / f"sim-001_echo-{e}_MEGRE.json").read_text())["EchoTime"] for e in range(1, 7)]
    assert tes == pytest.approx([0.0023 + 0.0025 * e for e in range(6)])
    head = tiny_maps()[0] > 0
    assert all((a[head] > b[head]).all() for a, b in zip(echoes, echoes[1:]))  # T2* decay
    assert _files(map_files, tmp_path / "comb", *flags, "--echoes", "combined") == 0
    comb = np.asarray(nib.load(str(tmp_path / "comb" / "sim-001_MESPGR.nii.gz")).dataobj)
    np.testing.assert_allclose(comb, np.mean(echoes, axis=0), rtol=1e-5, atol=1e-7)


def test_artefacts_are_seeded_recorded_and_change_the_image(map_files, tmp_path):
    base = ["--sequence", "SPGR", "--tr", "0.02", "--te", "0.005", "--fa", "25"]
    assert _files(map_files, tmp_path / "clean", *base) == 0
    for name in ("a", "b"):
        assert _files(map_files, tmp_path / name, *base, "--b1", "0.2", "0.3", "--snr", "30", "--seed", "5") == 0
    assert _files(map_files, tmp_path / "c", *base, "--b1", "0.2", "0.3", "--snr", "30", "--seed", "6") == 0
    load = lambda d: np.asarray(nib.load(str(tmp_path / d / "sim-001_SPGR.nii.gz")).dataobj)  # noqa: E731
    np.testing.assert_array_equal(load("a"), load("b"))  # same seed, same artefacts and noise
    assert not np.array_equal(load("a"), load("c")) and not np.allclose(load("a"), load("clean"))
    assert (load("a")[tiny_maps()[0] == 0] > 0).any()  # noise in the background (Rayleigh)
    art = json.loads((tmp_path / "a" / "sim-001_SPGR.json").read_text())["physeg"]["Artefacts"]
    assert 0.2 <= art["B1Amplitude"] <= 0.3 and art["SNR"] == pytest.approx(30)
    assert art["ReceiveBiasAmplitude"] is None


@pytest.mark.parametrize("extra, needles", [
    (["--sequence", "MP2RAGE", *MP2RAGE_FLAGS, "--te", "0.003"], ("MP2RAGE takes", "--te does not apply")),
    (["--sequence", "MP2RAGE", *MP2RAGE_FLAGS[:-2]], ("missing NRO",)),
    (["--sequence", "MP2RAGE", *MP2RAGE_FLAGS[:2], "--ti2", "1.0", *MP2RAGE_FLAGS[4:]], ("TI2", ">= TI1")),
    (["--sequence", "MP2RAGE", *MP2RAGE_FLAGS[:-1], "0"], ("--readout-pulses", "positive integer")),
    (["--sequence", "SPGR", "--tr", "0.02", "--te", "0.005", "--fa", "25", "--b1", "0.3", "0.2"], ("b1 range",)),
    (["--sequence", "SPGR", "--tr", "0.02", "--te", "0.005", "--fa", "25", "--snr", "0"], ("snr must be > 0",)),
    (["--sequence", "SPGR", "--tr", "0.02", "--te", "0.005", "--fa", "25", "--bias", "1", "2", "3"],
     ("--bias takes one value or a range",)),
    (["--sequence", "MESPGR", "--tr", "0.012", "--te1", "0.003", "--dte", "0.002", "--fa", "20"], ("TR", "TE1 + 5")),
])
def test_registry_and_artefact_usage_errors(map_files, tmp_path, capsys, extra, needles):
    rc = _files(map_files, tmp_path / "o", *extra)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and all(n in err for n in needles), err
    assert not (tmp_path / "o").exists()


def test_fractional_readout_pulses_is_an_argparse_usage_error(map_files, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _files(map_files, tmp_path / "o", "--sequence", "MP2RAGE", *MP2RAGE_FLAGS[:-1], "1.5")
    assert exc.value.code == 2 and "--readout-pulses: invalid int value" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
