"""physeg.training.augmentation: artefacts inside the simulation vs TorchIO's after it, as a training option."""

from __future__ import annotations

import pytest
import torch

from physeg.models.plans import Plans
from physeg.training import orchestrate
from physeg.training.augmentation import ARMS, Augmentation
from physeg.training.batches import TrainingBatches
from physeg.training.parallel import TrainingJob

try:
    from test_training import TINY, subjects, with_training
except ImportError:  # pragma: no cover
    from tests.test_training import TINY, subjects, with_training


def _batch(augmentation: Augmentation | None, *, seed: int = 3) -> dict[str, torch.Tensor]:
    tr, _ = subjects()
    torch.manual_seed(seed)  # TorchIO draws from torch's global generator
    sampler = TrainingBatches(
        tr, sequence="MPRAGE", patch_size=8, batch_size=2, data="onthefly", batches="stratified", seed=seed,
        artefacts=None if augmentation is None else augmentation.artefacts,
        post_transform=None if augmentation is None else augmentation.post_transform())
    return sampler.next_batch()


def test_both_arms_change_the_training_images_but_not_the_labels_or_theta():
    clean = _batch(None)
    for arm in ARMS.values():
        batch = _batch(arm)
        assert batch["image"].shape == clean["image"].shape and torch.isfinite(batch["image"]).all()
        assert torch.equal(batch["label"], clean["label"]) and torch.equal(batch["start"], clean["start"])
        assert (batch["image"] - clean["image"]).abs().max() > 1e-3, arm.name
    # the physics arm draws from the sampler's generator after θ: same θ as the clean stream
    assert torch.allclose(_batch(ARMS["physics"])["params"], clean["params"])
    # the TorchIO arm leaves the simulation alone: same θ and a multiplicative field + additive noise
    assert torch.allclose(_batch(ARMS["torchio"])["params"], clean["params"])


def test_the_torchio_arm_is_a_post_transform_and_the_physics_arm_is_not():
    assert ARMS["physics"].post_transform() is None and ARMS["physics"].artefacts.active
    assert ARMS["torchio"].artefacts is None and callable(ARMS["torchio"].post_transform())
    assert ARMS["torchio"].to_dict()["torchio_snr"] == [10.0, 40.0]
    tr, _ = subjects()
    with pytest.raises(ValueError, match="on-the-fly"):
        TrainingBatches(tr, sequence="MPRAGE", patch_size=8, batch_size=2, data="pregenerated",
                        post_transform=ARMS["torchio"].post_transform())


def test_arms_train_into_their_own_folders_with_the_arm_in_the_plans(isolated_cache, monkeypatch):
    tr, va = subjects()
    monkeypatch.setattr(orchestrate, "load_volumes", lambda profile: {"train": tr, "val": va})
    prof = with_training(TINY, max_epochs=1)
    jobs = [TrainingJob("Phys-Strat-Aug", "MPRAGE", 0, augmentation=arm) for arm in ARMS]
    out = orchestrate.train_jobs(prof, jobs, progress=False)
    folders = [out["folders"][j] for j in jobs]
    plain = orchestrate.model_folder("Phys-Strat-Aug", profile=prof, sequence="MPRAGE", seed=0)
    assert len({*folders, plain}) == 3 and all(f.parent.name == "augmentation" for f in folders)
    for job, folder in zip(jobs, folders):
        assert folder.name.startswith(f"Phys-Strat-Aug+{job.augmentation}_MPRAGE_seed0_")
        assert Plans.read(folder).provenance["augmentation"] == ARMS[job.augmentation].to_dict()
    again = orchestrate.train_jobs(prof, jobs, progress=False)
    assert again["summary"]["cached"].all()
