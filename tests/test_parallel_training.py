"""physeg.training.parallel: models trained side by side equal the same models trained one after the other."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from physeg.profiles import get_profile
from physeg.training import orchestrate
from physeg.training.checkpoint import load_checkpoint_weights
from physeg.training.parallel import TrainingJob, resolve_workers, run_jobs

SMOKE = get_profile("smoke")
TINY = dataclasses.replace(
    SMOKE, name="tiny-parallel", patch_size=8, channels=(2, 4), n_train=2, n_val=1, n_val_realisations=2,
    training=dataclasses.replace(SMOKE.training, batch_size=2, max_epochs=2, steps_per_epoch=2, n_pregenerated=2,
                                 aleatoric_passes=2),
)
JOBS = [TrainingJob("Baseline", "MPRAGE", 0), TrainingJob("Baseline-Epistemic", "MPRAGE", 0),
        TrainingJob("Phys-Strat", "MPRAGE", 1)]


def _weights(folder):
    return load_checkpoint_weights(folder, which="best", map_location="cpu")


def test_two_workers_give_the_weights_of_one_after_the_other(tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    trained = {}
    try:
        torch.set_num_threads(1)  # the workers' thread count on a 2-core machine
        for workers in (1, 2):
            cache = tmp_path / f"cache{workers}"
            if workers == 2:  # the same cohort, other model folders
                cache.mkdir()
                (cache / "cohorts").symlink_to(tmp_path / "cache1" / "cohorts")
            monkeypatch.setenv("PHYSEG_CACHE", str(cache))
            trained[workers] = orchestrate.train_jobs(TINY, list(JOBS), device="cpu", progress=False,
                                                      workers=workers)
    finally:
        torch.set_num_threads(threads)
    assert not trained[2]["summary"]["cached"].any()
    for job in JOBS:
        one, two = _weights(trained[1]["folders"][job]), _weights(trained[2]["folders"][job])
        assert one.keys() == two.keys()
        assert all(torch.equal(one[k], two[k]) for k in one), job
    # the epistemic child started from its parent: different from a fresh Baseline-Epistemic is not checkable
    # here, but its folder exists only if the parent was finished first (train_one refuses otherwise)
    assert (trained[2]["folders"][JOBS[1]] / "finished.json").exists()


def test_a_child_whose_parent_is_neither_listed_nor_trained_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PHYSEG_CACHE", str(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match="parent"):
        run_jobs([JOBS[1]], train=lambda job: {}, workers=2, done=lambda job: False)


def test_workers_resolution():
    assert resolve_workers(3, device="cpu") == 3
    assert resolve_workers(2, device="cuda") == 2  # explicit: processes sharing one GPU
    assert resolve_workers(None, device="cuda") == 1
    assert resolve_workers(None, device="cpu") >= 1
    with pytest.raises(ValueError, match="workers"):
        resolve_workers(0, device="cpu")
