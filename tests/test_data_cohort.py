"""Synthetic cohort: fixed split, determinism (byte-identical builds), caching and completeness."""

from __future__ import annotations

import json

import numpy as np
import pytest

from physeg.data import SPLIT, build_cohort, cohort_split, generate_subject, list_subjects, load_subject
from physeg.data.cohort import MARKER, read_marker
from physeg.data.manifest import file_table
from physeg.profiles import get_profile

SMOKE = get_profile("smoke")

SUBJECTS = ["sub-01", "sub-19"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort") / "c"
    return build_cohort(SMOKE, root=root, subjects=SUBJECTS, progress=False)


def test_split_is_fixed_18_4_5():
    full = cohort_split(None)
    assert [len(full[k]) for k in ("train", "val", "test")] == [18, 4, 5]
    ids = full["train"] + full["val"] + full["test"]
    assert ids == [f"sub-{i:02d}" for i in range(1, 28)]
    smoke = cohort_split(SMOKE)
    assert smoke == {"train": ["sub-01", "sub-02", "sub-03"], "val": ["sub-19"], "test": ["sub-23", "sub-24"],
                     "calibration": ["sub-19"]}
    assert full["calibration"] == full["val"]
    assert SPLIT["test"][0] == "sub-23"


def test_generator_is_deterministic_and_physical():
    a = generate_subject(3, voxel_size_mm=6.0, seed=0)
    b = generate_subject(3, voxel_size_mm=6.0, seed=0)
    c = generate_subject(3, voxel_size_mm=6.0, seed=1)
    for k in ("R1", "R2star", "PD", "fractions"):
        assert a[k].dtype == np.float32
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["R1"], c["R1"])
    frac = a["fractions"]
    np.testing.assert_allclose(frac.sum(axis=0), 1.0, atol=1e-5)
    m = a["mask"]
    assert (a["R1"][m] > 0).all() and (a["R2star"][m] > 0).all()
    t1 = 1.0 / a["R1"][m]
    assert 0.6 < np.median(t1) < 2.0


def _pgs_and_truth(d):
    """PGS labels (from the generated maps, as the cohort loader computes them) and the truth argmax."""
    from physeg import pgs

    with np.errstate(divide="ignore"):
        t1, t2s = (np.where(d[k] > 0, 1.0 / d[k], 0.0) for k in ("R1", "R2star"))
    labels = pgs.physics_gold_standard(np.stack([d["PD"], t1, t2s]), d["mask"]).numpy()
    return labels, pgs.truth_labels(d["fractions"]).numpy()


def test_extracerebral_csf_makes_the_brain_edge_consistent_with_the_pgs():
    """Version 2 turns background next to the brain into CSF; tissue and every random draw stay version 1's."""
    v1 = generate_subject(1, voxel_size_mm=6.0, seed=0, generator_version=1)
    v2 = generate_subject(1, voxel_size_mm=6.0, seed=0, generator_version=2)
    f1, f2 = v1["fractions"], v2["fractions"]
    np.testing.assert_allclose(f2.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(f1[1:3], f2[1:3])  # GM, WM untouched
    assert (f2[3] >= f1[3]).all() and (f2[0] <= f1[0]).all() and f2[3].sum() > 1.5 * f1[3].sum()
    assert f2[0][0, 0, 0] == 1.0  # far from the brain: still background
    assert v1["meta"] == v2["meta"]  # the same draws (atrophy, tissue values)
    # v1: the edge mixes GM with air (dark, yet GM's T1): a fifth of the PGS's CSF is background in the truth
    shares = []
    for d in (v1, v2):
        labels, truth = _pgs_and_truth(d)
        shares.append(float(np.mean(truth[labels == 3] == 0)))
    assert shares[0] > 0.15 and shares[1] < 0.05, shares
    with pytest.raises(ValueError, match="generator version 3"):
        generate_subject(1, voxel_size_mm=6.0, generator_version=3)


def test_profiles_pin_their_cohort_generator(isolated_cache):
    """The frozen references keep version 1 (and their settings hash); new profiles get the newest."""
    from physeg.data.cohort import GENERATOR_VERSION, default_cohort_dir

    assert get_profile("reference").cohort_generator == get_profile("reference-long").cohort_generator == 1
    assert "cohort_generator" not in get_profile("reference").to_dict()
    assert SMOKE.cohort_generator == get_profile("demo").cohort_generator == GENERATOR_VERSION == 2
    assert SMOKE.to_dict()["cohort_generator"] == 2
    assert default_cohort_dir(voxel_size_mm=4.0, seed=0, generator_version=1).name == "synthetic-v1-4mm-seed0"
    assert default_cohort_dir(voxel_size_mm=4.0, seed=0).name == "synthetic-v2-4mm-seed0"


def test_a_version_1_build_records_version_1_settings(tmp_path):
    import dataclasses

    root = build_cohort(dataclasses.replace(SMOKE, cohort_generator=1), root=tmp_path / "v1", subjects=["sub-01"],
                        progress=False)
    desc = json.loads((root / "dataset_description.json").read_text())["physeg"]
    assert desc["generator_version"] == 1 and not any(k.startswith("csf_shell") for k in desc["settings"])
    assert read_marker(root)["generator_version"] == 1


def test_build_layout_and_loader(built):
    assert list_subjects(built) == SUBJECTS
    desc = json.loads((built / "dataset_description.json").read_text())
    assert desc["physeg"]["split"]["val"][0] == "sub-19"
    assert desc["physeg"]["generator_version"] == 2 and read_marker(built)["generator_version"] == 2
    tsv = (built / "participants.tsv").read_text().splitlines()
    assert tsv[0].startswith("participant_id\tsplit") and "sub-19\tval" in tsv[2]
    for suffix in ("R1map", "R2starmap", "PDmap"):
        assert (built / "sub-01" / "anat" / f"sub-01_{suffix}.nii.gz").is_file()
        assert (built / "sub-01" / "anat" / f"sub-01_{suffix}.json").is_file()
    assert (built / "derivatives/truth/sub-01/anat/sub-01_label-GM_probseg.nii.gz").is_file()
    assert (built / "derivatives/pgs/sub-01/anat/sub-01_dseg.nii.gz").is_file()
    assert (built / "derivatives/pgs/dseg.tsv").is_file()
    s = load_subject(built, "01")
    assert s.subject_id == "sub-01"
    assert s.maps.shape[0] == 3 and s.maps.dtype.is_floating_point
    assert s.truth is not None and s.truth.shape == (4, *s.maps.shape[1:])
    assert s.pgs.dtype.is_floating_point is False and int(s.pgs.max()) == 3
    assert abs(s.voxel_volume_ml - 0.216) < 1e-9
    np.testing.assert_allclose(s.affine[:3, :3], np.eye(3) * 6.0)


def test_two_builds_are_byte_identical_whatever_the_workers(built, tmp_path):
    # the second build generates the two subjects in two spawned processes
    other = build_cohort(SMOKE, root=tmp_path / "again", subjects=SUBJECTS, progress=False, workers=2)
    assert file_table(built) == file_table(other)
    assert (other / "participants.tsv").read_text() == (built / "participants.tsv").read_text()


def test_complete_build_is_reused_extended_and_replaced(tmp_path):
    root = tmp_path / "c"
    root.mkdir()  # an empty folder is fine to build into
    build_cohort(SMOKE, root=root, subjects=["sub-02"], progress=False)
    stamp = (root / MARKER).stat().st_mtime_ns
    assert build_cohort(SMOKE, root=root, subjects=["sub-02"], progress=False) == root
    assert (root / MARKER).stat().st_mtime_ns == stamp
    # asking for more subjects extends the build
    build_cohort(SMOKE, root=root, subjects=["sub-03"], progress=False)
    assert read_marker(root)["subjects"] == ["sub-02", "sub-03"]
    # --force replaces a physeg build (marker present), swapped in whole
    build_cohort(SMOKE, root=root, subjects=["sub-02"], force=True, progress=False)
    assert read_marker(root)["subjects"] == ["sub-02"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no partial or old copies left
    # a --root that links to a build: the link is replaced, the build it pointed to is left alone
    link = tmp_path / "link"
    link.symlink_to(root, target_is_directory=True)
    build_cohort(SMOKE, root=link, subjects=["sub-02"], force=True, progress=False)
    assert link.is_dir() and not link.is_symlink() and read_marker(root) is not None


@pytest.mark.parametrize("force", [False, True])
def test_folder_without_marker_is_refused_not_deleted(tmp_path, force):
    root = tmp_path / "c"
    (root / "sub-02" / "anat").mkdir(parents=True)
    mine = root / "sub-02" / "anat" / "sub-02_R1map.nii.gz"
    mine.write_bytes(b"my real data")  # e.g. a user's dataset, or a copy whose marker was removed
    with pytest.raises(FileExistsError, match=f"no {MARKER}"):
        build_cohort(SMOKE, root=root, subjects=["sub-02"], force=force, progress=False)
    assert mine.read_bytes() == b"my real data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_cli_build_refuses_foreign_root(tmp_path, capsys):
    from physeg.cli import main

    root = tmp_path / "study"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    assert main(["data", "build", "--profile", "smoke", "--root", str(root), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("physeg data build: error:") and str(root) in err and "Traceback" not in err
    assert [p.name for p in root.iterdir()] == ["notes.txt"]
    assert main(["data", "build", "--profile", "smoke", "--root", str(tmp_path / "new"), "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err and not (tmp_path / "new").exists()
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    assert main(["data", "build", "--profile", "smoke", "--root", str(afile), "--force"]) == 2
    assert "not a folder" in capsys.readouterr().err and afile.read_text() == "x"


def test_load_split_loads_one_part_in_split_order(isolated_cache):
    from physeg.data import load_split

    subjects = load_split(SMOKE, "test")
    assert [s.subject_id for s in subjects] == cohort_split(SMOKE)["test"] == ["sub-23", "sub-24"]
    assert all(s.pgs is not None for s in subjects)
