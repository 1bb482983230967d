"""Artefacts as physics in the simulation layer: B1+ inside the equations, receive bias, Rician noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import physeg.simulation as sim
from physeg.simulation.artefacts import ArtefactDraw, Artefacts, SmoothField, select
from physeg.simulation.phantom import mni_phantom


@pytest.fixture(scope="module")
def phantom():
    return mni_phantom(voxel_size_mm=6.0)


def test_constant_b1_map_is_a_flip_angle_scale(phantom):
    p = sim.spgr_params(0.02, 0.005, 30.0)
    b1 = torch.full(phantom.maps.shape[1:], 0.8)
    got = sim.simulate(phantom.maps, sequence="SPGR", params=p, artefacts=ArtefactDraw(b1=b1), normalise=False)
    ref = sim.simulate(phantom.maps, sequence="SPGR", params=sim.spgr_params(0.02, 0.005, 24.0), normalise=False)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-7)


def test_registry_path_equals_fused_kernels_without_artefacts(phantom):
    for seq in ("MPRAGE", "SPGR"):
        p = sim.sample_parameters(seq, 3, generator=torch.Generator().manual_seed(1))
        fused = sim.simulate(phantom.maps, sequence=seq, params=p, mask=phantom.mask)
        ones = ArtefactDraw(b1=torch.ones(phantom.maps.shape[1:]))  # active, but B1+ = 1: the paper's equations
        registry = sim.simulate(phantom.maps, sequence=seq, params=p, mask=phantom.mask, artefacts=ones)
        torch.testing.assert_close(registry, fused, rtol=1e-5, atol=1e-6)


def test_smooth_fields_reach_the_drawn_peak_over_the_head(phantom):
    art = Artefacts(b1=(0.25, 0.25), bias=(0.3, 0.3))
    draw = art.draw(4, generator=torch.Generator().manual_seed(0))
    idx = (phantom.maps[0].reshape(-1) > 0).nonzero().squeeze(1)
    b1 = draw.b1.values(idx, tuple(phantom.maps.shape[1:]))
    bias = draw.bias.values(idx, tuple(phantom.maps.shape[1:]))
    torch.testing.assert_close((b1 - 1).abs().amax(1), torch.full((4,), 0.25))
    torch.testing.assert_close(bias.log().abs().amax(1), torch.full((4,), 0.3))
    # smooth: neighbouring voxels along x differ by far less than the peak
    full = draw.b1.values(torch.arange(phantom.maps[0].numel()), tuple(phantom.maps.shape[1:]))
    vol = full.reshape(4, *phantom.maps.shape[1:])
    assert float((vol[:, 1:] - vol[:, :-1]).abs().max()) < 0.1


def test_receive_bias_multiplies_the_raw_signal(phantom):
    p = sim.mprage_params([0.9])
    field = SmoothField(torch.tensor([[0.5, -0.3, 0.2, 0.1, 0.0, 0.0, 0.4, 0.0, -0.2]]), torch.tensor([0.3]), 2, "bias")
    got = sim.simulate(phantom.maps, sequence="MPRAGE", params=p, artefacts=ArtefactDraw(bias=field), normalise=False)
    ref = sim.simulate(phantom.maps, sequence="MPRAGE", params=p, normalise=False)
    head = phantom.maps[0] > 0
    ratio = got[0, 0][head] / ref[0, 0][head]
    assert float(ratio.log().abs().max()) == pytest.approx(0.3, rel=1e-4)
    assert (got[0, 0][~head] == 0).all()


def test_receive_bias_cancels_in_mp2rage_uni(phantom):
    """Marques et al. 2010: UNI is free of the receive field (and of PD and T2*), noise aside."""
    p = sim.sample_parameters("MP2RAGE", 2, generator=torch.Generator().manual_seed(2))
    field = Artefacts(bias=(0.5, 0.8)).draw(2, generator=torch.Generator().manual_seed(3)).bias
    got = sim.simulate(phantom.maps, sequence="MP2RAGE", params=p, artefacts=ArtefactDraw(bias=field), normalise=False)
    ref = sim.simulate(phantom.maps, sequence="MP2RAGE", params=p, normalise=False)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    # while the transmit field does change UNI (through both flip angles)
    b1 = Artefacts(b1=(0.3, 0.3)).draw(2, generator=torch.Generator().manual_seed(3)).b1
    moved = sim.simulate(phantom.maps, sequence="MP2RAGE", params=p, artefacts=ArtefactDraw(b1=b1), normalise=False)
    assert float((moved - ref).abs().max()) > 0.01


def test_rician_noise_level_matches_the_stated_snr(phantom):
    p = sim.mprage_params([0.9, 1.1])
    snr = torch.tensor([10.0, 40.0])
    draw = ArtefactDraw(snr=snr, generator=torch.Generator().manual_seed(0))
    noisy = sim.simulate(phantom.maps, sequence="MPRAGE", params=p, artefacts=draw, normalise=False)
    clean = sim.simulate(phantom.maps, sequence="MPRAGE", params=p, normalise=False)
    head = phantom.maps[0] > 0
    sigma = clean[:, 0][:, head].mean(1) / snr  # stated: mean head signal / SNR
    background = noisy[:, 0][:, ~head]
    # background magnitude of complex Gaussian noise is Rayleigh: mean sigma sqrt(pi/2), mean square 2 sigma^2
    np.testing.assert_allclose(background.mean(1).numpy(), (sigma * math.sqrt(math.pi / 2)).numpy(), rtol=0.03)
    np.testing.assert_allclose(background.square().mean(1).numpy(), (2 * sigma**2).numpy(), rtol=0.05)
    again = sim.simulate(phantom.maps, sequence="MPRAGE", params=p, normalise=False,
                         artefacts=ArtefactDraw(snr=snr, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(noisy, again, rtol=0, atol=0)


def test_layer_draws_artefacts_after_parameters_and_keeps_old_draws(phantom):
    plain = sim.SimulationLayer("SPGR", seed=4)
    off = sim.SimulationLayer("SPGR", seed=4, artefacts=Artefacts())  # inactive: no draws
    a, pa = plain(phantom.maps, 3)
    b, pb = off(phantom.maps, 3)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    on = sim.SimulationLayer("SPGR", seed=4, artefacts=Artefacts(b1=(0.1, 0.3), bias=(0, 0.2), snr=(20, 50)))
    c, pc = on(phantom.maps, 3)
    torch.testing.assert_close(pa, pc, rtol=0, atol=0)  # same parameters, drawn first
    assert c.shape == a.shape and torch.isfinite(c).all() and not torch.allclose(a, c)
    assert on.last_artefacts is not None and 0.1 <= float(on.last_artefacts.b1.amplitude.min())
    one = select(on.last_artefacts, 1)
    assert one.snr.shape == (1,) and one.b1.coef.shape[0] == 1


def test_transform_with_artefacts_and_all_outputs(phantom):
    import torchio as tio

    subject = tio.Subject(maps=tio.ScalarImage(tensor=phantom.maps))
    t = sim.SimulateMRI("MP2RAGE", outputs="all", artefacts=Artefacts(b1=(0.2, 0.2), snr=(30, 30)), seed=0)
    out = t(subject)
    assert out["image"].data.shape == (3, *phantom.maps.shape[1:])
    assert out["params"].shape == (7,) and out["physics"].shape == (11,)
    assert torch.isfinite(out["image"].data).all()


@pytest.mark.parametrize("kw, needle", [({"b1": (0.3, 0.1)}, "b1 range"), ({"b1": (0.0, 1.5)}, "b1 range"),
                                        ({"snr": (0.0, 5.0)}, "snr must be > 0"), ({"order": 7}, "order"),
                                        ({"bias": "x"}, "bias must be")])
def test_artefact_ranges_are_validated(kw, needle):
    with pytest.raises(ValueError, match=needle):
        Artefacts(**kw)


def test_outputs_mode_is_validated(phantom):
    with pytest.raises(ValueError, match="outputs must be one of"):
        sim.simulate(phantom.maps, sequence="MPRAGE", params=sim.mprage_params([0.9]), outputs="every")


def test_training_batches_take_physics_artefacts(phantom):
    from physeg.training.batches import TrainingBatches, Volumes

    vol = Volumes("s", phantom.maps.float(), phantom.mask, torch.zeros(phantom.mask.shape, dtype=torch.long))
    kw = dict(sequence="MPRAGE", patch_size=8, batch_size=3, data="onthefly", batches="stratified", seed=2)
    plain = TrainingBatches([vol], **kw).next_batch()
    none = TrainingBatches([vol], artefacts=None, **kw).next_batch()
    torch.testing.assert_close(plain["image"], none["image"], rtol=0, atol=0)
    art = TrainingBatches([vol], artefacts=Artefacts(b1=(0.2, 0.3), snr=(20, 40)), **kw).next_batch()
    torch.testing.assert_close(plain["params"], art["params"], rtol=0, atol=0)  # same θ, then the artefacts
    assert torch.isfinite(art["image"]).all() and not torch.equal(plain["image"], art["image"])
    pre = TrainingBatches([vol], **{**kw, "data": "pregenerated"}, n_pregenerated=4,
                          artefacts=Artefacts(bias=(0.2, 0.2))).next_batch()
    assert torch.isfinite(pre["image"]).all()


@pytest.mark.parametrize("seq", ["MPRAGE", "SPGR"])
def test_fused_artefact_kernels_equal_the_registry_equations(phantom, seq):
    """B1+ and receive bias through the cache-blocked kernels = the sequence module's plain equation."""
    from physeg.simulation.generic import simulate_registry

    p = sim.sample_parameters(seq, 3, generator=torch.Generator().manual_seed(5))
    draw = Artefacts(b1=(0.2, 0.35), bias=(0.1, 0.4)).draw(3, generator=torch.Generator().manual_seed(6))
    fused = sim.simulate(phantom.maps, sequence=seq, params=p, mask=phantom.mask, artefacts=draw)
    flat = phantom.maps.reshape(3, -1)
    support = (flat[0] > 0).nonzero().squeeze(1)
    plain = simulate_registry(flat.index_select(1, support), support, sequence=seq, params=p,
                              spatial=tuple(phantom.maps.shape[1:]), mask=phantom.mask, outputs="default",
                              sign="magnitude", artefacts=draw, percentile=99.0, clip_range=(0.0, 2.0))
    torch.testing.assert_close(fused, plain.view_as(fused), rtol=1e-4, atol=1e-5)
