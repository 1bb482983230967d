"""Tests of physeg.simulation against values worked by hand (literals with their arithmetic)."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch
import torchio as tio

import physeg.simulation as sim
from physeg.simulation import (
    IOD_RANGES,
    OOD_RANGES,
    SimulateMRI,
    SimulationLayer,
    is_in_distribution,
    mprage,
    physics_features,
    sample_parameters,
    simulate,
    spgr,
    spgr_params,
    validate_parameters,
)


def _maps(shape=(6, 7, 5), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    pd = torch.rand(shape, generator=g, dtype=dtype) * 0.5 + 0.5
    t1 = torch.rand(shape, generator=g, dtype=dtype) * 3.5 + 0.7  # 0.7..4.2 s
    t2 = torch.rand(shape, generator=g, dtype=dtype) * 0.45 + 0.05  # 0.05..0.5 s
    return torch.stack([pd, t1, t2])


def _t(x, dtype=torch.float64):
    return torch.tensor(x, dtype=dtype)


# ---------------------------------------------------------------- equations


def test_mprage_spot_values():
    # PD=1, T1=1 s, TI=1 s: e^-1 = 0.367879, e^-(1+0.02) = 0.360595
    # S = 1 - 2*0.367879/(1+0.360595) = 1 - 0.735759/1.360595 = 0.459237
    s = mprage(_t(1.0), _t(1.0), ti=1.0)
    assert s.item() == pytest.approx(0.4592373816638695, rel=1e-9)
    # GM PD=0.8, T1=1.33 s, TI=0.3 s: e^(-0.3/1.33)=0.798066, e^(-0.32/1.33)=0.786155
    # S = 0.8*(1 - 2*0.798066/1.786155) = 0.8*0.106387 = 0.085109
    s = mprage(_t(0.8), _t(1.33), ti=0.3)
    assert s.item() == pytest.approx(0.08510918757149613, rel=1e-9)


def test_spgr_spot_values():
    # PD=1, T1=1, T2*=0.05, TR=0.1, TE=0.01, FA=90 deg: sin=1, cos=0
    # S = (1 - e^-0.1) e^-0.2 = 0.0951626*0.8187308 = 0.0779125
    s = spgr(_t(1.0), _t(1.0), _t(0.05), tr=0.1, te=0.01, fa=math.pi / 2)
    assert s.item() == pytest.approx(0.07791253239626403, rel=1e-9)
    # WM PD .69 T1 .83 T2* .053, TR 20 ms, TE 5 ms, FA 30 deg: E1 = e^(-.02/.83) = 0.976192,
    # E2 = e^(-.005/.053) = 0.909974; S = .69*.5*(1-.976192)*.909974/(1 - .866025*.976192) = 0.048349
    s = spgr(_t(0.69), _t(0.83), _t(0.053), tr=0.02, te=0.005, fa=math.radians(30))
    assert s.item() == pytest.approx(0.048348978222797455, rel=1e-9)


def test_spgr_long_tr_limit():
    # TR -> inf: E1 -> 0, S -> PD sin(a) e^(-TE/T2*) = 0.8*0.642788*0.859405 = 0.441932 (GM, FA 40, TE 10 ms)
    s = spgr(_t(0.8), _t(1.33), _t(0.066), tr=1000.0, te=0.01, fa=math.radians(40))
    assert s.item() == pytest.approx(0.44193183702681416, rel=1e-9)


def test_ernst_angle_maximises_spgr():
    # alpha_E = arccos(e^(-0.03/1.33)) = arccos(0.977696) = 0.211600 rad (12.12 deg)
    alpha_e = 0.21160011783126847
    assert sim.ernst_angle(1.33, tr=0.03).item() == pytest.approx(alpha_e, rel=1e-9)
    fa = _t([alpha_e - 0.01, alpha_e, alpha_e + 0.01])
    s = spgr(_t(0.8), _t(1.33), _t(0.066), tr=0.03, te=0.005, fa=fa)
    assert s[1] > s[0] and s[1] > s[2]


def test_mprage_zero_crossing_analytic():
    # 2e^(-TI/T1) = 1 + e^(-(TI+0.02)/T1)  =>  TI0 = T1 ln(2 - e^(-0.02/T1))
    # T1 = 0.83: e^(-0.02/0.83) = 0.976192; ln(1.023808) = 0.0235294; TI0 = 0.83*0.0235294 = 0.0195294 s
    ti0 = 0.019529390053237377
    assert sim.mprage_zero_crossing(0.83).item() == pytest.approx(ti0, rel=1e-9)
    s = mprage(_t(1.0), _t(0.83), ti=_t([ti0 - 0.005, ti0, ti0 + 0.005]), sign="signed")
    assert s[0] < 0 and abs(s[1].item()) < 1e-12 and s[2] > 0
    # magnitude and clip conventions
    assert mprage(_t(1.0), _t(0.83), ti=ti0 - 0.005, sign="magnitude").item() == pytest.approx(-s[0].item())
    assert mprage(_t(1.0), _t(0.83), ti=ti0 - 0.005, sign="clip").item() == 0.0


def test_mprage_sign_irrelevant_in_paper_ranges():
    # TI0 < TD + tau = 20 ms for every T1, so for TI >= 0.1 s the three conventions agree
    t1 = torch.logspace(-3, 1, 50, dtype=torch.float64)
    ti = torch.linspace(0.1, 2.0, 20, dtype=torch.float64)[:, None]
    signed = mprage(torch.ones_like(t1), t1, ti=ti, sign="signed")
    assert (signed >= 0).all()
    assert (sim.mprage_zero_crossing(t1) < 0.02).all()


def test_spgr_monotonic_decrease_in_te():
    te = torch.linspace(0.002, 0.02, 10, dtype=torch.float64)
    s = spgr(_t(0.8), _t(1.33), _t(0.066), tr=0.05, te=te, fa=math.radians(20))
    assert (s[1:] < s[:-1]).all()


def test_invalid_maps_give_finite_output():
    pd = _t([float("nan"), -1.0, float("inf"), 0.8, 0.8, 0.8, 0.8, 0.8])
    t1 = _t([1.0, 1.0, 1.0, float("nan"), -2.0, 0.0, float("inf"), float("-inf")])
    t2 = _t([0.05, 0.05, 0.05, float("nan"), 0.0, -1.0, float("inf"), float("-inf")])
    for s in (mprage(pd, t1, ti=0.8), spgr(pd, t1, t2, tr=0.03, te=0.005, fa=0.3)):
        assert torch.isfinite(s).all()
        assert (s[:3] == 0).all()  # invalid PD -> no signal
    maps = torch.stack([pd, t1, t2]).float().reshape(3, 2, 2, 2)
    for seq in ("MPRAGE", "SPGR"):
        p = sample_parameters(seq, 3, generator=torch.Generator().manual_seed(1))
        for norm in (True, False):
            assert torch.isfinite(simulate(maps, sequence=seq, params=p, normalise=norm)).all()


# ---------------------------------------------------------------- layer


@pytest.mark.parametrize("seq", ["MPRAGE", "SPGR"])
def test_simulate_matches_equations_and_batch_equals_single(seq):
    maps = _maps()
    p = sample_parameters(seq, 5, distribution="ood", generator=torch.Generator().manual_seed(3))
    raw = simulate(maps, sequence=seq, params=p, normalise=False)
    assert raw.shape == (5, 1, 6, 7, 5) and raw.dtype == torch.float32
    blocked = simulate(maps, sequence=seq, params=p, normalise=False, block_voxels=17)
    assert torch.equal(raw, blocked)
    for i in range(5):
        pi = p[i : i + 1]
        if seq == "MPRAGE":
            ref = mprage(maps[0], maps[1], ti=pi[0, 0])
        else:
            ref = spgr(maps[0], maps[1], maps[2], tr=pi[0, 0], te=pi[0, 1], fa=pi[0, 2])
        torch.testing.assert_close(raw[i, 0], ref, rtol=1e-5, atol=1e-6)
        single = simulate(maps, sequence=seq, params=pi)
        torch.testing.assert_close(simulate(maps, sequence=seq, params=p)[i : i + 1], single, rtol=0, atol=0)


@pytest.mark.parametrize("seq", ["MPRAGE", "SPGR"])
def test_float64_agrees_with_float32(seq):
    maps = _maps()
    p = sample_parameters(seq, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = simulate(maps, sequence=seq, params=p)
    b = simulate(maps.double(), sequence=seq, params=p)
    assert b.dtype == torch.float64
    torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5)


def test_normalisation_percentile_and_clip():
    maps = _maps(shape=(10, 10, 10))
    mask = torch.zeros(10, 10, 10, dtype=torch.bool)
    mask[2:8, 2:8, 2:8] = True
    p = spgr_params([0.03, 0.05], [0.005, 0.008], [20.0, 60.0])
    raw = simulate(maps, sequence="SPGR", params=p, normalise=False)
    out = simulate(maps, sequence="SPGR", params=p, mask=mask)
    for i in range(2):
        q = np.percentile(raw[i, 0][mask].numpy(), 99)  # numpy's linear interpolation
        expected = np.clip(raw[i, 0].numpy() / q, 0, 2)
        np.testing.assert_allclose(out[i, 0].numpy(), expected, rtol=1e-5, atol=1e-6)
    # default region: PD > 0
    maps[0, :5] = 0
    out = simulate(maps, sequence="SPGR", params=p)
    raw = simulate(maps, sequence="SPGR", params=p, normalise=False)
    q = np.percentile(raw[0, 0][maps[0] > 0].numpy(), 99)
    np.testing.assert_allclose(out[0, 0].numpy(), np.clip(raw[0, 0].numpy() / q, 0, 2), rtol=1e-5, atol=1e-6)


def test_layer_seeded_and_shapes():
    maps = _maps()
    a_img, a_p = SimulationLayer("SPGR", seed=7)(maps, 3)
    b_img, b_p = SimulationLayer("spgr", seed=7)(maps, 3)
    assert torch.equal(a_p, b_p) and torch.equal(a_img, b_img)
    assert a_img.shape == (3, 1, 6, 7, 5) and a_p.shape == (3, 3)
    assert is_in_distribution("SPGR", a_p).all()
    _, p_ood = SimulationLayer("MPRAGE", distribution="ood", seed=1)(maps.double(), 8)
    assert p_ood.dtype == torch.float64 and not is_in_distribution("MPRAGE", p_ood).any()


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize("seq", ["MPRAGE", "SPGR"])
def test_samplers(seq):
    g = torch.Generator().manual_seed(0)
    iod = sample_parameters(seq, 500, generator=g)
    ood = sample_parameters(seq, 500, distribution="ood", generator=g)
    assert iod.shape == ood.shape == (500, len(sim.PARAMETER_NAMES[seq]))
    assert is_in_distribution(seq, iod).all()
    assert not is_in_distribution(seq, ood).any()
    assert sim.is_in_range(seq, ood, OOD_RANGES[seq]).all()
    validate_parameters(seq, ood)  # physical, incl. TE < TR
    if seq == "SPGR":
        assert (ood[:, 1] < ood[:, 0]).all()
        # OoD is outside IoD in at least one parameter, and each parameter is sometimes outside
        for j, name in enumerate(sim.PARAMETER_NAMES[seq]):
            lo, hi = IOD_RANGES[seq][name]
            assert ((ood[:, j] < lo) | (ood[:, j] > hi)).any()
    again = sample_parameters(seq, 500, generator=torch.Generator().manual_seed(0))
    assert torch.equal(iod, again)


def test_iod_ranges_in_user_units():
    # 15..100 ms, 4..10 ms, 15..75 degrees = 0.261799..1.308997 rad
    assert IOD_RANGES["SPGR"]["FA"] == pytest.approx((0.2617993877991494, 1.3089969389957472))
    assert OOD_RANGES["SPGR"]["TR"] == (0.010, 0.200) and IOD_RANGES["MPRAGE"]["TI"] == (0.6, 1.2)


def test_physics_features_and_helpers():
    p = spgr_params(0.02, 0.005, 90.0)
    # [TR, TE, FA, e^-0.02 = 0.980199, e^-0.005 = 0.995012, sin(pi/2) = 1]
    f = physics_features("SPGR", p)
    expected = torch.tensor([[0.02, 0.005, math.pi / 2, 0.9801986733067553, 0.9950124791926823, 1.0]])
    torch.testing.assert_close(f, expected.to(f.dtype))
    f = physics_features("MPRAGE", sim.mprage_params([1.0]))
    torch.testing.assert_close(f, torch.tensor([[1.0, 0.36787944117144233]], dtype=f.dtype))  # e^-1
    assert sim.n_physics_features("MPRAGE") == 2 and sim.n_physics_features("SPGR") == 6
    rows = sim.to_display_units("SPGR", p)
    assert rows[0]["FA_deg"] == pytest.approx(90.0) and rows[0]["TR_ms"] == pytest.approx(20.0)


@pytest.mark.parametrize(
    "seq, params, match",
    [
        ("MPRAGE", [[0.0]], "TI"),
        ("MPRAGE", [[-0.5]], "TI"),
        ("MPRAGE", [[float("nan")]], "TI.*finite"),
        ("MPRAGE", [[0.5, 0.1]], r"shape \(N, 1\)"),
        ("SPGR", [[0.01, 0.01, 0.3]], "TR"),
        ("SPGR", [[0.01, 0.0, 0.3]], "TE"),
        ("SPGR", [[0.01, 0.005, 30.0]], r"FA.*\(0, 180\] degrees"),
        ("SPGR", [[0.01, 0.005, 0.0]], "FA"),
        ("SPGR", [[0.01, float("inf"), 0.3]], "TE.*finite"),
    ],
)
def test_parameter_errors(seq, params, match):
    with pytest.raises(ValueError, match=match):
        validate_parameters(seq, params)
    with pytest.raises(ValueError, match=match):
        simulate(_maps(), sequence=seq, params=torch.tensor(params))


def test_map_and_name_errors():
    p = sim.mprage_params([0.8])
    with pytest.raises(ValueError, match="3, X, Y, Z"):
        simulate(torch.rand(2, 4, 4, 4), sequence="MPRAGE", params=p)
    with pytest.raises(ValueError, match="3, X, Y, Z"):
        simulate(torch.rand(3, 4, 4), sequence="MPRAGE", params=p)
    with pytest.raises(ValueError, match="mask"):
        simulate(torch.rand(3, 4, 4, 4), sequence="MPRAGE", params=p, mask=torch.ones(4, 4, 3))
    with pytest.raises(ValueError, match="sequence"):
        simulate(torch.rand(3, 4, 4, 4), sequence="FLAIR", params=p)
    with pytest.raises(ValueError, match="sign"):
        mprage(_t(1.0), _t(1.0), ti=1.0, sign="abs")


# ---------------------------------------------------------------- TorchIO


def test_torchio_transform_from_nifti(tmp_path):
    maps = _maps(shape=(8, 9, 7))
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(maps.permute(1, 2, 3, 0).numpy(), affine), tmp_path / "maps.nii.gz")
    mask = np.zeros((8, 9, 7), dtype=np.uint8)
    mask[1:7, 1:8, 1:6] = 1
    nib.save(nib.Nifti1Image(mask, affine), tmp_path / "mask.nii.gz")
    subject = tio.Subject(maps=tio.ScalarImage(tmp_path / "maps.nii.gz"), mask=tio.LabelMap(tmp_path / "mask.nii.gz"))
    pipeline = tio.Compose([SimulateMRI("SPGR", mask_key="mask", seed=0), tio.RescaleIntensity(include=["image"])])
    out = pipeline(subject)
    assert out["image"].shape == (1, 8, 9, 7)
    np.testing.assert_allclose(out["image"].affine, affine)
    assert out["params"].shape == (3,) and out["physics"].shape == (6,) and out["sequence"] == "SPGR"
    assert is_in_distribution("SPGR", out["params"][None]).all()
    # same result as the functional API with the same parameters (before the rescale)
    direct = simulate(maps, sequence="SPGR", params=out["params"][None], mask=torch.from_numpy(mask))
    fixed = SimulateMRI("SPGR", params=out["params"], mask_key="mask")(subject)
    torch.testing.assert_close(fixed["image"].data, direct[0], rtol=1e-5, atol=1e-6)
    assert "image" not in subject  # TorchIO copies the input
    # separate PD/T1/T2star images
    sep = tio.Subject(**{n: tio.ScalarImage(tensor=maps[i : i + 1], affine=affine) for i, n in enumerate(sim.MAP_CHANNELS)})
    out2 = SimulateMRI("MPRAGE", distribution="ood", seed=1)(sep)
    assert out2["image"].shape == (1, 8, 9, 7) and not is_in_distribution("MPRAGE", out2["params"][None]).any()
    with pytest.raises(ValueError, match="maps"):
        SimulateMRI("MPRAGE")(tio.Subject(t1=tio.ScalarImage(tensor=maps[:1], affine=affine)))


# ---------------------------------------------------------------- phantom & benchmark


def test_phantom_and_benchmark_smoke():
    from physeg.simulation.benchmark import benchmark_simulation, format_results
    from physeg.simulation.phantom import mni_phantom

    ph = mni_phantom(voxel_size_mm=8)
    assert ph.maps.shape[0] == 3 and ph.maps.dtype == torch.float32
    inside = ph.maps[:, ph.mask]
    assert inside[1].min() >= 0.83 - 1e-4 and inside[1].max() <= 4.2 + 1e-4  # T1 between WM and CSF
    assert set(ph.labels.unique().tolist()) <= {0, 1, 2, 3}
    res = benchmark_simulation(ph.maps, ph.mask, repeats=1)
    assert len(res) == 2 and all(r["max_abs_diff"] < 1e-4 for r in res)
    assert "MPRAGE" in format_results(res)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("seq", ["MPRAGE", "SPGR"])
def test_cuda_matches_cpu(seq):
    maps = _maps(shape=(16, 16, 16))
    maps[:, 0, 0, 0] = torch.tensor([float("nan"), 0.0, float("inf")])
    p = sample_parameters(seq, 4, generator=torch.Generator().manual_seed(0))
    cpu = simulate(maps, sequence=seq, params=p)
    gpu = simulate(maps.cuda(), sequence=seq, params=p)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)
    img, par = SimulationLayer(seq, seed=0)(maps.cuda(), 2)
    assert img.is_cuda and par.is_cuda
