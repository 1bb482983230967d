"""physeg.training.batches (pre-generated and on-the-fly data, mixed and stratified batches) and physeg.conventions."""

from __future__ import annotations

import pytest
import torch

from physeg import conventions
from physeg.conventions import stable_seed
from physeg.simulation.layer import simulate
from physeg.simulation.parameters import is_in_distribution
from physeg.training.batches import TrainingBatches, Volumes, crop, pregenerate


def tiny_subjects(n=3, shape=(14, 12, 10), seed=0):
    """Random maps [PD, T1 s, T2* s] inside a ball mask, random labels 1..3 inside it."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij"))
    centre = torch.tensor([(s - 1) / 2 for s in shape]).reshape(3, 1, 1, 1)
    mask = ((grid - centre) ** 2).sum(0) <= (min(shape) / 2.5) ** 2
    subjects = []
    for i in range(n):
        labels = torch.randint(1, 4, shape, generator=g) * mask
        pd = torch.tensor([0.0, 0.8, 0.7, 1.0])[labels]
        t1 = torch.tensor([1.0, 1.4, 0.85, 4.0])[labels]
        t2 = torch.tensor([0.05, 0.06, 0.05, 0.5])[labels]
        maps = torch.stack([pd, t1, t2]) * (1 + 0.05 * torch.rand(3, *shape, generator=g))
        subjects.append(Volumes(f"sub-{i:02d}", maps.float(), mask, labels.long()))
    return subjects


def test_pregenerate_is_seeded():
    subs = tiny_subjects(2)
    a = pregenerate(subs, sequence="MPRAGE", n=3, seed=5)
    b = pregenerate(subs, sequence="MPRAGE", n=3, seed=5)
    c = pregenerate(subs, sequence="MPRAGE", n=3, seed=6)
    assert a[0].images.shape == (3, 1, 14, 12, 10) and a[0].params.shape == (3, 1)
    assert torch.equal(a[1].images, b[1].images) and not torch.equal(a[0].params, c[0].params)
    assert stable_seed("x", 1) == stable_seed("x", 1) != stable_seed("x", 2)
    # each image is the simulation of its own parameters
    torch.testing.assert_close(a[1].images, simulate(subs[1].maps, sequence="MPRAGE", params=a[1].params,
                                                     mask=subs[1].mask))


def test_conventions_one_vocabulary():
    assert stable_seed("validation", 0, "SPGR") == 290388941  # CRC-32: pinned, models and grids depend on it
    assert 0 <= stable_seed("any", 10**30) < 2**31
    assert conventions.TISSUE_NAMES == ("GM", "WM", "CSF")
    assert [conventions.LABEL_NAMES[v] for v in conventions.TISSUES.values()] == list(conventions.TISSUES)
    assert conventions.distribution_name("iod") == conventions.distribution_name("IOD") == conventions.IOD == "IoD"
    assert conventions.distribution_name("OoD") == "OoD"
    with pytest.raises(ValueError, match="IoD"):
        conventions.distribution_name("test")


@pytest.mark.parametrize("batches", ["mixed", "stratified"])
def test_onthefly_images_are_the_simulation_of_their_parameters(batches):
    subs = tiny_subjects()
    s = TrainingBatches(subs, sequence="SPGR", patch_size=8, batch_size=3, data="onthefly", batches=batches, seed=2)
    b = s.next_batch()
    assert is_in_distribution("SPGR", b["params"]).all()
    for i in range(3):
        sub = subs[int(b["subject"][i])]
        full = simulate(sub.maps, sequence="SPGR", params=b["params"][i:i + 1], mask=sub.mask)
        torch.testing.assert_close(b["image"][i], crop(full[0], tuple(b["start"][i].tolist()), 8))


@pytest.mark.parametrize("data", ["pregenerated", "onthefly"])
def test_stratified_batch_one_subject_one_location(data):
    subs = tiny_subjects()
    s = TrainingBatches(subs, sequence="SPGR", patch_size=8, batch_size=4, data=data, batches="stratified",
                        n_pregenerated=5, seed=1)
    for _ in range(5):
        b = s.next_batch()
        assert b["image"].shape == (4, 1, 8, 8, 8) and b["label"].shape == (4, 8, 8, 8)
        assert b["params"].shape == (4, 3)
        assert len(set(b["subject"].tolist())) == 1
        assert (b["start"] == b["start"][0]).all()
        assert (b["label"] == b["label"][0]).all()
        assert len({tuple(p.tolist()) for p in b["params"]}) == 4  # distinct realisations
        assert not torch.allclose(b["image"][0], b["image"][1])
        # patch lies in the volume and touches the brain
        sub = subs[int(b["subject"][0])]
        a, c, d = b["start"][0].tolist()
        assert sub.mask[a:a + 8, c:c + 8, d:d + 8].any()


def test_mixed_batch_and_pregenerated_realisations_are_fixed():
    subs = tiny_subjects()
    s = TrainingBatches(subs, sequence="MPRAGE", patch_size=8, batch_size=6, data="pregenerated",
                        batches="mixed", n_pregenerated=3, seed=0)
    seen_subjects, seen_params = set(), set()
    for _ in range(6):
        b = s.next_batch()
        seen_subjects |= set(b["subject"].tolist())
        seen_params |= {round(float(p), 6) for p in b["params"][:, 0]}
    assert len(seen_subjects) > 1
    assert len(seen_params) <= 3 * len(subs)  # only the fixed set


def test_onthefly_draws_new_parameters_and_state_roundtrip():
    subs = tiny_subjects()
    s = TrainingBatches(subs, sequence="MPRAGE", patch_size=8, batch_size=2, data="onthefly",
                        batches="stratified", seed=3)
    params = {round(float(p), 6) for _ in range(5) for p in s.next_batch()["params"][:, 0]}
    assert len(params) == 10
    state = s.state_dict()
    a = s.next_batch()
    s.load_state_dict(state)
    b = s.next_batch()
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["params"], b["params"])


def test_padding_when_volume_smaller_than_patch():
    subs = tiny_subjects(1, shape=(6, 7, 8))
    s = TrainingBatches(subs, sequence="MPRAGE", patch_size=8, batch_size=2, data="onthefly", batches="mixed")
    assert s.next_batch()["image"].shape == (2, 1, 8, 8, 8)
