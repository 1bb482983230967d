"""The simulation layer's support gather/scatter and exact percentile against whole-volume references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import physeg.simulation.layer as layer
from physeg.simulation import mprage, sample_parameters, simulate, spgr
from physeg.simulation.layer import _percentile_scale, percentile_scale


def _brain(shape=(48, 40, 36), seed=0, tied_fraction=0.05):
    """Maps with an ellipsoidal 'brain' (~35 % of voxels), invalid values and a tied bright cluster."""
    g = torch.Generator().manual_seed(seed)
    x, y, z = torch.meshgrid(*(torch.linspace(-1, 1, s) for s in shape), indexing="ij")
    brain = x**2 / 0.8 + y**2 / 0.8 + z**2 / 0.9 < 0.8
    pd = (torch.rand(shape, generator=g) * 0.5 + 0.5) * brain
    t1 = (torch.rand(shape, generator=g) * 3.5 + 0.7) * brain
    t2 = (torch.rand(shape, generator=g) * 0.45 + 0.05) * brain
    tied = brain & (torch.rand(shape, generator=g) < tied_fraction)  # pure 'CSF': identical values
    pd[tied], t1[tied], t2[tied] = 1.0, 4.2, 0.5
    maps = torch.stack([pd, t1, t2])
    flat = maps.reshape(3, -1)
    flat[:, :6] = torch.tensor(
        [[float("nan"), float("inf"), -float("inf"), -1.0, 0.7, 0.7],
         [1.0, 1.0, 1.0, 1.0, float("nan"), float("inf")],
         [0.05, 0.05, 0.05, 0.05, 0.0, float("inf")]]
    )
    return maps, brain


def _reference(maps, seq, p, *, mask, sign="magnitude", normalise=True):
    """Straightforward whole-volume evaluation: equations + numpy.percentile per image."""
    imgs = []
    for row in p:
        if seq == "MPRAGE":
            s = mprage(maps[0], maps[1], ti=row[0], sign=sign)
        else:
            s = spgr(maps[0], maps[1], maps[2], tr=row[0], te=row[1], fa=row[2])
        s = s.numpy().astype(np.float64)
        if normalise:
            region = mask.numpy() if mask is not None else (np.nan_to_num(maps[0].numpy(), posinf=0, neginf=0) > 0)
            q = np.percentile(np.abs(s[region]), 99)
            if q > 0:
                s = s / q
            s = np.clip(s, -2 if sign == "signed" else 0, 2)
        imgs.append(s[None])
    return np.stack(imgs)


@pytest.mark.parametrize("seq", ["MPRAGE", "SPGR"])
@pytest.mark.parametrize("mask_kind", ["none", "brain", "larger", "smaller", "fortran"])
def test_simulate_matches_whole_volume_reference(seq, mask_kind):
    maps, brain = _brain()
    mask = {
        "none": None,
        "brain": brain,
        "larger": brain | (torch.rand(brain.shape, generator=torch.Generator().manual_seed(1)) < 0.3),
        "smaller": brain & (torch.rand(brain.shape, generator=torch.Generator().manual_seed(2)) < 0.7),
        "fortran": brain.numpy().copy(order="F"),
    }[mask_kind]
    mask_t = None if mask is None else torch.as_tensor(mask)
    p = sample_parameters(seq, 3, distribution="ood", generator=torch.Generator().manual_seed(4))
    for normalise in (True, False):
        got = simulate(maps, sequence=seq, params=p, mask=mask_t, normalise=normalise)
        ref = _reference(maps, seq, p, mask=mask_t, normalise=normalise)
        np.testing.assert_allclose(got.numpy(), ref, rtol=2e-5, atol=2e-6)
        outside = ~(torch.nan_to_num(maps[0], posinf=0, neginf=0) > 0)
        assert (got[:, 0][:, outside] == 0).all()  # exactly zero outside PD > 0


@pytest.mark.parametrize("seq,sign", [("MPRAGE", "magnitude"), ("MPRAGE", "signed"), ("MPRAGE", "clip"), ("SPGR", None)])
def test_sparse_and_dense_paths_bit_identical(seq, sign, monkeypatch):
    maps, brain = _brain(seed=3)
    kw = {} if sign is None else {"sign": sign}
    p = sample_parameters(seq, 4, distribution="ood", generator=torch.Generator().manual_seed(5))
    if seq == "MPRAGE":
        p[0, 0] = 0.005  # signed signal negative for some voxels
    else:
        p[0, 2] = math.pi  # sin(float32(pi)) < 0: tiny negative signal, zeros not at the bottom
    for mask in (None, brain & (torch.arange(brain.numel()).reshape(brain.shape) % 3 > 0)):
        monkeypatch.setattr(layer, "DENSE_SUPPORT_FRACTION", 1.0)
        sparse = simulate(maps, sequence=seq, params=p, mask=mask, **kw)
        monkeypatch.setattr(layer, "DENSE_SUPPORT_FRACTION", 0.0)
        dense = simulate(maps, sequence=seq, params=p, mask=mask, **kw)
        dense_unblocked = simulate(maps, sequence=seq, params=p, mask=mask, block_voxels=None, **kw)
        assert torch.equal(sparse, dense) and torch.equal(dense, dense_unblocked)


@pytest.mark.parametrize("percentile", [99.0, 50.0, 0.0, 100.0, 99.9])
@pytest.mark.parametrize("n_zeros", [0, 10, 200_000])
def test_percentile_scale_exact(percentile, n_zeros):
    g = torch.Generator().manual_seed(0)
    vals = torch.rand(3, 150_000, generator=g)
    vals[1, :20_000] = 0.97  # a large tie across the percentile
    vals[2] = vals[2].round(decimals=2)  # many ties everywhere
    got = _percentile_scale(vals, n_zeros, percentile)
    full = np.concatenate([vals.numpy(), np.zeros((3, n_zeros), np.float32)], axis=1)
    ref = np.percentile(full.astype(np.float64), percentile, axis=1)
    ref = np.where(ref > 0, ref, 1.0)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-6, atol=0)
    if n_zeros == 0:
        assert torch.equal(got, percentile_scale(vals, percentile=percentile))


def test_percentile_scale_negative_values_with_zeros():
    vals = torch.tensor([[-3.0, -1.0, 2.0, 5.0], [1.0, 2.0, 3.0, 4.0]])
    got = _percentile_scale(vals, 3, 30.0)
    full = np.concatenate([vals.numpy(), np.zeros((2, 3), np.float32)], axis=1)
    ref = np.percentile(full, 30.0, axis=1)
    np.testing.assert_allclose(got.numpy(), np.where(ref > 0, ref, 1.0), rtol=1e-6)
