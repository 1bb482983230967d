"""BIDS loader: unit conversions and clear errors on malformed input (tiny hand-made data)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from physeg.data import load_subject, write_nifti
from physeg.data.bids import load_map_files

SHAPE = (6, 5, 4)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _t1_field():
    t1 = np.full(SHAPE, 0.83, np.float32)
    t1[:3] = 1.33
    return t1


def make_bids(root, *, r1_units="1/s", t1_instead=None, sidecars=True, pd_units="a.u."):
    anat = root / "sub-01" / "anat"
    t1 = _t1_field()
    pd = np.full(SHAPE, 0.75, np.float32)
    t2s = np.full(SHAPE, 0.06, np.float32)
    files = {}
    if t1_instead is None:
        scale = 1.0 if r1_units == "1/s" else 1e-3
        files["R1map"] = ((1.0 / t1) * scale, r1_units)
    else:
        files["T1map"] = (t1 * (1000.0 if t1_instead == "ms" else 1.0), t1_instead)
    files["R2starmap"] = (1.0 / t2s, "1/s")
    files["PDmap"] = (pd * (100.0 if pd_units == "%" else 1.0), pd_units)
    for suffix, (data, units) in files.items():
        write_nifti(anat / f"sub-01_{suffix}.nii.gz", data.astype(np.float32), AFFINE)
        if sidecars:
            (anat / f"sub-01_{suffix}.json").write_text(json.dumps({"Units": units}))
    return root


@pytest.mark.parametrize(
    "kwargs",
    [{"r1_units": "1/s"}, {"r1_units": "1/ms"}, {"t1_instead": "s"}, {"t1_instead": "ms"}, {"pd_units": "%"}],
)
def test_unit_conversions(tmp_path, kwargs):
    make_bids(tmp_path, **kwargs)
    s = load_subject(tmp_path, "sub-01", cache_pgs=False)
    np.testing.assert_allclose(s.maps[1].numpy(), _t1_field(), rtol=1e-5)
    np.testing.assert_allclose(s.maps[2].numpy(), 0.06, rtol=1e-5)
    np.testing.assert_allclose(s.maps[0].numpy(), 0.75, rtol=1e-5)
    assert s.mask.all() and s.truth is None
    np.testing.assert_array_equal(s.affine, AFFINE)
    assert s.voxel_volume_ml == pytest.approx(0.008)
    assert set(np.unique(s.pgs.numpy())) == {1, 2}


def test_pgs_is_cached(tmp_path):
    make_bids(tmp_path)
    load_subject(tmp_path, "sub-01")
    assert (tmp_path / "derivatives/pgs/sub-01/anat/sub-01_dseg.nii.gz").is_file()


def test_missing_map(tmp_path):
    make_bids(tmp_path)
    (tmp_path / "sub-01/anat/sub-01_R2starmap.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="T2star"):
        load_subject(tmp_path, "sub-01")


def test_missing_sidecar(tmp_path):
    make_bids(tmp_path)
    (tmp_path / "sub-01/anat/sub-01_PDmap.json").unlink()
    with pytest.raises(FileNotFoundError, match="sub-01_PDmap.json"):
        load_subject(tmp_path, "sub-01")


def test_missing_subject(tmp_path):
    make_bids(tmp_path)
    with pytest.raises(FileNotFoundError, match="sub-02"):
        load_subject(tmp_path, "sub-02")


def test_shape_mismatch(tmp_path):
    make_bids(tmp_path)
    write_nifti(tmp_path / "sub-01/anat/sub-01_PDmap.nii.gz", np.full((6, 5, 3), 0.7, np.float32), AFFINE)
    with pytest.raises(ValueError, match="shape"):
        load_subject(tmp_path, "sub-01")


def test_affine_mismatch(tmp_path):
    make_bids(tmp_path)
    shifted = AFFINE.copy()
    shifted[0, 3] = 5.0
    write_nifti(tmp_path / "sub-01/anat/sub-01_R1map.nii.gz", np.full(SHAPE, 1.0, np.float32), shifted)
    with pytest.raises(ValueError, match="sub-01_R1map.nii.gz: affine"):
        load_subject(tmp_path, "sub-01")


def test_nan_map(tmp_path):
    make_bids(tmp_path)
    write_nifti(tmp_path / "sub-01/anat/sub-01_R2starmap.nii.gz", np.full(SHAPE, np.nan, np.float32), AFFINE)
    with pytest.raises(ValueError, match="sub-01_R2starmap.nii.gz.*NaN"):
        load_subject(tmp_path, "sub-01")


def test_wrong_units_are_implausible(tmp_path):
    make_bids(tmp_path, t1_instead="ms")
    side = tmp_path / "sub-01/anat/sub-01_T1map.json"
    side.write_text(json.dumps({"Units": "s"}))  # values are ms but labelled s
    with pytest.raises(ValueError, match="sub-01_T1map.nii.gz.*plausible"):
        load_subject(tmp_path, "sub-01")


def test_negative_map_rejected(tmp_path):
    make_bids(tmp_path, t1_instead="s")
    write_nifti(tmp_path / "sub-01/anat/sub-01_T1map.nii.gz", np.full(SHAPE, -1.0, np.float32), AFFINE)
    with pytest.raises(ValueError, match="non-physical"):
        load_subject(tmp_path, "sub-01")


def test_unknown_units(tmp_path):
    make_bids(tmp_path)
    (tmp_path / "sub-01/anat/sub-01_R1map.json").write_text(json.dumps({"Units": "furlongs"}))
    with pytest.raises(ValueError, match="Units"):
        load_subject(tmp_path, "sub-01")


def test_deterministic_nifti_bytes(tmp_path):
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    a = write_nifti(tmp_path / "a.nii.gz", data, AFFINE).read_bytes()
    b = write_nifti(tmp_path / "sub" / "b.nii.gz", data, AFFINE).read_bytes()
    assert a == b
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "a.nii.gz").dataobj), data)


def test_load_map_files_without_sidecars(tmp_path):
    make_bids(tmp_path, t1_instead="ms", sidecars=False)
    anat = tmp_path / "sub-01/anat"
    s = load_map_files(pd=anat / "sub-01_PDmap.nii.gz", t1=anat / "sub-01_T1map.nii.gz",
                       r2star=anat / "sub-01_R2starmap.nii.gz", units={"t1": "ms"})
    np.testing.assert_allclose(s.maps[1].numpy(), _t1_field(), rtol=1e-5)


# --------------------------------------------------------------------------- hostile input
def _write_t1(root, t1, units="s"):
    """Replace the R1 map of :func:`make_bids` by a T1 map with ``units``."""
    anat = root / "sub-01/anat"
    for f in anat.glob("sub-01_R1map.*"):
        f.unlink()
    write_nifti(anat / "sub-01_T1map.nii.gz", t1.astype(np.float32), AFFINE)
    (anat / "sub-01_T1map.json").write_text(json.dumps({"Units": units}))


def test_nan_voxels_in_brain_refused_with_count(tmp_path):
    make_bids(tmp_path)
    t1 = _t1_field()
    t1.flat[:12] = np.nan  # 10 % of the 120 brain voxels
    _write_t1(tmp_path, t1)
    with pytest.raises(ValueError, match=r"sub-01_T1map.nii.gz: 12 of 120 brain-mask voxels are invalid "
                                         r"\(12 NaN/inf, 0 zero, 0 negative\).*refusing"):
        load_subject(tmp_path, "sub-01", cache_pgs=False)


def test_zero_and_negative_rates_refused_with_counts(tmp_path):
    make_bids(tmp_path)
    r1 = 1.0 / _t1_field()
    r1.flat[:20] = 0.0
    r1.flat[20:56] = -1.0  # 30 % negative R1: PGS volumes moved by 30 % before
    write_nifti(tmp_path / "sub-01/anat/sub-01_R1map.nii.gz", r1.astype(np.float32), AFFINE)
    with pytest.raises(ValueError, match=r"sub-01_R1map.nii.gz: 56 of 120 .*\(0 NaN/inf, 20 zero, 36 negative\)"):
        load_subject(tmp_path, "sub-01", cache_pgs=False)


def test_few_invalid_voxels_reported_left_out_and_dark(tmp_path, caplog):
    make_bids(tmp_path)
    t1 = _t1_field()
    t1.flat[7] = -0.5  # 1 of 120 voxels (< 1 %)
    _write_t1(tmp_path, t1)
    s = load_subject(tmp_path, "sub-01", cache_pgs=False)
    assert "sub-01_T1map.nii.gz: 1 of 120 brain-mask voxels are invalid (0 NaN/inf, 0 zero, 1 negative)" in caplog.text
    idx = np.unravel_index(7, SHAPE)
    assert not s.mask[idx] and int(s.mask.sum()) == 119
    assert s.maps[(slice(None), *idx)].tolist() == [0.0, 0.0, 0.0]  # background in every map: never bright
    assert s.pgs[idx] == 0


def test_invalid_voxels_in_mask_file_are_counted(tmp_path):
    make_bids(tmp_path)
    pd = np.full(SHAPE, 0.75, np.float32)
    pd[0] = 0.0  # 20 zero-PD voxels inside the mask given as a file
    write_nifti(tmp_path / "sub-01/anat/sub-01_PDmap.nii.gz", pd, AFFINE)
    write_nifti(tmp_path / "sub-01/anat/sub-01_desc-brain_mask.nii.gz", np.ones(SHAPE, np.uint8), AFFINE)
    with pytest.raises(ValueError, match=r"sub-01_PDmap.nii.gz: 20 of 120 .*20 zero"):
        load_subject(tmp_path, "sub-01", cache_pgs=False)


def test_mask_affine_mismatch(tmp_path):
    make_bids(tmp_path)
    shifted = AFFINE.copy()
    shifted[1, 3] = 4.0
    write_nifti(tmp_path / "sub-01/anat/sub-01_desc-brain_mask.nii.gz", np.ones(SHAPE, np.uint8), shifted)
    with pytest.raises(ValueError, match="desc-brain_mask.nii.gz: affine differs"):
        load_subject(tmp_path, "sub-01", cache_pgs=False)


@pytest.mark.parametrize(
    "text, message",
    [("3", "must be a JSON object"), ('["1/s"]', "must be a JSON object"), ("{not json", "not a readable JSON"),
     ('{"Units": true}', "'Units' must be a string"), ('{"Units": 1000}', "'Units' must be a string")],
)
def test_malformed_sidecars_name_the_file(tmp_path, text, message):
    make_bids(tmp_path)
    (tmp_path / "sub-01/anat/sub-01_R1map.json").write_text(text)
    with pytest.raises(ValueError, match=f"sub-01_R1map.json: .*{message}"):
        load_subject(tmp_path, "sub-01", cache_pgs=False)


def test_ambiguous_map_files_refused(tmp_path):
    make_bids(tmp_path)
    anat = tmp_path / "sub-01/anat"
    write_nifti(anat / "sub-01_acq-old_R1map.nii.gz", np.full(SHAPE, 0.5, np.float32), AFFINE)
    with pytest.raises(ValueError, match="several R1map files.*sub-01_R1map.nii.gz"):
        load_subject(tmp_path, "sub-01", cache_pgs=False)


def test_milliseconds_labelled_seconds_says_so(tmp_path):
    make_bids(tmp_path)
    _write_t1(tmp_path, _t1_field() * 1000.0, units="s")
    with pytest.raises(ValueError, match="looks like milliseconds"):
        load_subject(tmp_path, "sub-01", cache_pgs=False)


def test_explicit_units_override_the_sidecar(tmp_path, caplog):
    make_bids(tmp_path, t1_instead="ms")
    anat = tmp_path / "sub-01/anat"
    (anat / "sub-01_T1map.json").write_text(json.dumps({"Units": "s"}))  # wrong sidecar
    s = load_map_files(pd=anat / "sub-01_PDmap.nii.gz", t1=anat / "sub-01_T1map.nii.gz",
                       r2star=anat / "sub-01_R2starmap.nii.gz", units={"t1": "ms"}, compute_pgs=False)
    np.testing.assert_allclose(s.maps[1].numpy(), _t1_field(), rtol=1e-5)
    assert "using the given units 'ms', not the sidecar's 's'" in caplog.text
    assert int(s.pgs.abs().sum()) == 0  # compute_pgs=False: no labels computed
