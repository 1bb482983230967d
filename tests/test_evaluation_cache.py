"""The evaluation cache is CSV/JSON/npz: read back equal (dtypes and floats), and never unpickled."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pandas as pd
import pytest
from test_evaluation import _model, _subject

from physeg.evaluation import cache_io
from physeg.evaluation import runs as ev
from physeg.profiles import get_profile


@pytest.fixture()
def no_unpickling(monkeypatch):
    """Any unpickling while the test runs fails it."""
    def refuse(*_a, **_k):
        raise AssertionError("a cache file was unpickled")

    for mod, name in ((pickle, "load"), (pickle, "loads"), (pd, "read_pickle")):
        monkeypatch.setattr(mod, name, refuse)


@pytest.fixture()
def prof(isolated_cache):
    return dataclasses.replace(get_profile("smoke"), n_test_iod=2, n_test_ood=2, patch_size=16, channels=(2, 4),
                               n_val_realisations=2, n_uncertainty_samples=3, sequences=("MPRAGE", "SPGR"),
                               ablations=("Baseline", "Phys-Base"), uncertainty_models=("Phys-Strat-Aug",))


def _fake_inputs(monkeypatch, models):
    monkeypatch.setattr(ev, "load_models", lambda folders: models)
    monkeypatch.setattr(ev, "load_split", lambda profile, split, **_: [_subject(f"sub-{split}", seed=len(split))])


def test_segmentation_cache_round_trip_without_pickle(prof, monkeypatch, tmp_path, no_unpickling):
    models = {(n, s): _model(s, physics="none" if n == "Baseline" else "early+late")
              for n in prof.ablations for s in prof.sequences}
    _fake_inputs(monkeypatch, models)
    folders = {k: tmp_path / f"{k[0]}_{k[1]}" for k in models}
    first = ev.run_evaluation(prof, folders=folders)
    assert not list(first.folder.glob("*.pkl"))
    assert ev.cache_folder("segmentation", prof, folders) == first.folder  # where the freeze looks
    monkeypatch.setattr(ev, "evaluate_segmentation", lambda *a, **k: pytest.fail("cache not reused"))
    again = ev.run_evaluation(prof, folders=folders)
    for name in ("results", "cov", "grid"):
        pd.testing.assert_frame_equal(getattr(again, name), getattr(first, name), check_exact=True)
    assert again.examples.keys() == first.examples.keys()
    for seq, e in first.examples.items():
        assert again.examples[seq]["params"] == e["params"] and again.examples[seq]["subject"] == e["subject"]
        for key in ("image", "pgs"):
            np.testing.assert_array_equal(again.examples[seq][key], e[key])
            assert again.examples[seq][key].dtype == e[key].dtype
        assert again.examples[seq]["seg"].keys() == e["seg"].keys()
    assert again.wall_s == first.wall_s


def test_uncertainty_cache_round_trip_without_pickle(prof, monkeypatch, tmp_path, no_unpickling):
    models = {(f"Phys-Strat-Aug-{v}", s): _model(s, uncertainty=v.lower())
              for v in ("Aleatoric", "Epistemic") for s in prof.sequences}
    _fake_inputs(monkeypatch, models)
    folders = {k: tmp_path / f"{k[0]}_{k[1]}" for k in models}
    first = ev.run_uncertainty(prof, folders=folders)
    assert ev.cache_folder("uncertainty", prof, folders, n_samples=prof.n_uncertainty_samples) == first.folder
    monkeypatch.setattr(ev, "uncertainty_samples", lambda *a, **k: pytest.fail("cache not reused"))
    again = ev.run_uncertainty(prof, folders=folders)
    for name in ("per_image", "coverage", "calibration"):
        pd.testing.assert_frame_equal(getattr(again, name), getattr(first, name), check_exact=True)
    for col in ("aleatoric", "epistemic"):
        assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(first.samples[col], again.samples[col]))


def test_frame_with_missing_arrays_and_mixed_columns(tmp_path):
    frame = pd.DataFrame({"subject": ["sub-01", "02"], "low_fa": [True, False], "n": np.array([1, 2], np.int64),
                          "TR_ms": [np.nan, 0.1 + 0.2], "ale": [np.array([0.1, 1 / 3]), None],
                          "params": ["TI=600 ms", "TR=10.0 ms, FA=8.0°"]})
    cache_io.save_frame(frame, tmp_path / "t.csv")
    back = cache_io.load_frame(tmp_path / "t.csv")
    pd.testing.assert_frame_equal(back.drop(columns="ale"), frame.drop(columns="ale"), check_exact=True)
    assert np.array_equal(back["ale"][0], frame["ale"][0]) and back["ale"][1] is None


def test_damaged_cache_names_the_file(tmp_path):
    cache_io.save_frame(pd.DataFrame({"a": [1.0]}), tmp_path / "t.csv")
    (tmp_path / "t.csv").write_text("b\n1\n")
    with pytest.raises(ValueError, match=r"damaged evaluation cache .*t\.csv"):
        cache_io.load_frame(tmp_path / "t.csv")


def test_no_module_reads_pickles():
    from pathlib import Path

    import physeg

    root = Path(physeg.__file__).parent
    offenders = [p for p in root.rglob("*.py")
                 if any(s in p.read_text() for s in ("read_pickle(", "pickle.load", "allow_pickle=True"))]
    assert offenders == []


def test_segmentation_cache_key_ignores_uncertainty_settings_only():
    """More uncertainty images or other notes reuse Tables 1-2; anything that changes a segmentation does not."""
    prof = get_profile("smoke")
    folders = {("Baseline", "MPRAGE"): "/cache/models/smoke/Baseline_MPRAGE_seed0_abc"}

    def key(kind, p):
        return ev.cache_folder(kind, p, folders, n_samples=5 if kind == "uncertainty" else None)

    more_images = dataclasses.replace(prof, n_uncertainty_images=10, n_uncertainty_samples=50, notes="other")
    assert key("segmentation", more_images) == key("segmentation", prof)
    assert key("uncertainty", more_images) != key("uncertainty", prof)
    assert key("uncertainty", dataclasses.replace(prof, notes="other")) == key("uncertainty", prof)
    # training the uncertainty variants on more seeds adds caches under the new seeds' model folders;
    # the first seed's samples stay where they were
    more_seeds = dataclasses.replace(prof, seeds=(0, 1), uncertainty_seeds=2)
    two_seeds = dataclasses.replace(prof, seeds=(0, 1))
    for kind in ("segmentation", "uncertainty"):
        assert key(kind, more_seeds) == key(kind, two_seeds)
    for changed in (dataclasses.replace(prof, n_test_iod=prof.n_test_iod + 1),
                    dataclasses.replace(prof, sw_overlap=0.5), dataclasses.replace(prof, seed=prof.seed + 1)):
        assert key("segmentation", changed) != key("segmentation", prof)
