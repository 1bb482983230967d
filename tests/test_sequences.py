"""Tests of the sequence registry against values computed independently of the modules' formulas.

MP2RAGE and multi-echo SPGR are checked against an event-by-event simulation of
the longitudinal magnetisation written here (pulse train, relaxation between
events, many cycles to reach the steady state) and against the known shape of
the UNI-vs-T1 curve (Marques et al. 2010, Fig. 2: monotonic decreasing in the
brain's T1 range, inside [-0.5, 0.5]).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import physeg.simulation as sim
from physeg.simulation.sequences import REGISTRY, get_sequence
from physeg.simulation.sequences import mespgr, mp2rage


def _bloch_mp2rage(t1, t2s, p, *, b1=1.0, cycles=40, delta=0.96, te=0.003):
    """Event-driven Mz simulation of the MP2RAGE cycle; signals at the centre pulse of each readout."""
    ti1, ti2, fa1, fa2, tr, trc, n = p
    n = int(n)
    t1 = np.asarray(t1, dtype=np.float64)
    events = [(0.0, "inv", None)]
    for j in range(n):
        events.append((ti1 + (j - n // 2) * tr, "p1", j))
    for j in range(n):
        events.append((ti2 + (j - n // 2) * tr, "p2", j))
    events.append((trc, "end", None))
    mz = np.ones_like(t1)
    out = {}
    for _ in range(cycles):
        t_prev = 0.0
        for t, kind, j in events:
            mz = 1.0 - (1.0 - mz) * np.exp(-(t - t_prev) / t1)
            t_prev = t
            if kind == "inv":
                mz = -delta * mz
            elif kind in ("p1", "p2"):
                a = (fa1 if kind == "p1" else fa2) * b1
                if j == n // 2:
                    out[kind] = np.sin(a) * mz * np.exp(-te / np.asarray(t2s))
                mz = mz * np.cos(a)
    return out["p1"], out["p2"]


def _p(**kw):
    d = dict(mp2rage.MARQUES_3T)
    d.update(kw)
    return [d[n] for n in mp2rage.NAMES]


T1S = np.array([0.5, 0.83, 1.33, 2.0, 3.0, 4.2])


@pytest.mark.parametrize("kw", [{}, {"TI1": 0.9, "FA1": math.radians(7), "NRO": 151.0}, {"TR": 0.009, "TRcycle": 6.0}])
def test_mp2rage_matches_pulse_train_simulation(kw):
    p = _p(**kw)
    t2s = np.full_like(T1S, 0.05)
    ref1, ref2 = _bloch_mp2rage(T1S, t2s, p)
    got = mp2rage.mp2rage(torch.ones(len(T1S), dtype=torch.float64), torch.tensor(T1S), torch.tensor(t2s),
                          torch.tensor([p], dtype=torch.float64))
    np.testing.assert_allclose(got[0, 0].numpy(), ref1, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got[0, 1].numpy(), ref2, rtol=1e-9, atol=1e-12)


def test_mp2rage_b1_enters_the_flip_angles_only():
    p = _p()
    ref1, ref2 = _bloch_mp2rage(T1S, np.full_like(T1S, 0.05), p, b1=1.25)
    b1 = torch.full((1, len(T1S)), 1.25, dtype=torch.float64)
    got = mp2rage.mp2rage(torch.ones(len(T1S), dtype=torch.float64), torch.tensor(T1S),
                          torch.full((len(T1S),), 0.05, dtype=torch.float64), torch.tensor([p], dtype=torch.float64),
                          b1=b1)
    np.testing.assert_allclose(got[0].numpy(), np.stack([ref1, ref2]), rtol=1e-9, atol=1e-12)


def test_uni_curve_has_the_literature_shape():
    t1 = torch.linspace(0.4, 4.5, 200, dtype=torch.float64)
    sig = mp2rage.mp2rage(torch.ones_like(t1), t1, torch.full_like(t1, 0.05), torch.tensor([_p()], dtype=torch.float64))
    u = mp2rage.uni(sig)[0]
    assert bool((u >= -0.5).all()) and bool((u <= 0.5).all())
    assert bool((u.diff() < 0).all()), "UNI must decrease monotonically with T1 over 0.4-4.5 s"
    # WM bright, CSF dark, GM in between (Marques 2010 Fig. 2/3): sign pattern of the 3 T protocol
    wm, gm, csf = (float(mp2rage.uni(mp2rage.mp2rage(torch.ones(1, dtype=torch.float64),
                                                     torch.tensor([x], dtype=torch.float64),
                                                     torch.tensor([0.05], dtype=torch.float64),
                                                     torch.tensor([_p()], dtype=torch.float64)))[0, 0])
                   for x in (0.83, 1.33, 4.2))
    assert wm > gm > csf and wm > 0 > csf and csf < -0.3


def test_uni_is_independent_of_pd_and_t2star():
    t1 = torch.tensor([0.8, 1.3, 4.0], dtype=torch.float64)
    p = torch.tensor([_p()], dtype=torch.float64)
    a = mp2rage.uni(mp2rage.mp2rage(torch.ones(3, dtype=torch.float64), t1, torch.full((3,), 0.05, dtype=torch.float64), p))
    b = mp2rage.uni(mp2rage.mp2rage(torch.tensor([0.3, 0.7, 1.0], dtype=torch.float64), t1,
                                    torch.tensor([0.02, 0.08, 0.5], dtype=torch.float64), p))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_mespgr_echoes_decay_as_t2star():
    # echo e of the multi-echo readout = Ernst steady state x exp(-TE_e/T2*), computed here from scratch
    tr, te1, dte, fa = 0.025, 0.0023, 0.0025, math.radians(21.0)
    pd, t1, t2s = 0.8, 1.33, 0.066
    e1 = math.exp(-tr / t1)
    steady = pd * math.sin(fa) * (1 - e1) / (1 - math.cos(fa) * e1)
    ref = [steady * math.exp(-(te1 + e * dte) / t2s) for e in range(mespgr.N_ECHOES)]
    got = mespgr.SPEC.channels(torch.tensor([pd], dtype=torch.float64), torch.tensor([t1], dtype=torch.float64),
                               torch.tensor([t2s], dtype=torch.float64),
                               torch.tensor([[tr, te1, dte, fa]], dtype=torch.float64))
    np.testing.assert_allclose(got[0, :, 0].numpy(), ref, rtol=1e-12)
    comb = mespgr.SPEC.outputs(got, None, mode="default")
    assert comb.shape == (1, 1, 1) and comb.item() == pytest.approx(sum(ref) / len(ref), rel=1e-12)


def test_spgr_b1_is_a_flip_angle_scale():
    # B1 = 0.8 at a nominal 30 degrees is the nominal equation at 24 degrees
    s_b1 = sim.spgr(torch.tensor(1.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64),
                    torch.tensor(0.05, dtype=torch.float64), tr=0.02, te=0.005, fa=math.radians(30), b1=0.8)
    s_24 = sim.spgr(torch.tensor(1.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64),
                    torch.tensor(0.05, dtype=torch.float64), tr=0.02, te=0.005, fa=math.radians(24))
    assert s_b1.item() == pytest.approx(s_24.item(), rel=1e-12)


def test_mprage_inversion_efficiency_from_pulse_simulation():
    # Steady state of: inversion by angle pi*B1 (Mz -> cos(pi B1) Mz), relaxation TI, readout (no effect),
    # relaxation TD + tau; iterate cycles here and read Mz at TI.
    t1, ti, b1 = 1.33, 0.8, 0.85
    mz = 1.0
    for _ in range(200):
        mz = math.cos(math.pi * b1) * mz
        at_ti = 1 - (1 - mz) * math.exp(-ti / t1)
        mz = 1 - (1 - at_ti) * math.exp(-(sim.MPRAGE_TD_S + sim.MPRAGE_TAU_S) / t1)
    got = sim.mprage(torch.tensor(1.0, dtype=torch.float64), torch.tensor(t1, dtype=torch.float64), ti=ti,
                     sign="signed", b1=b1)
    assert got.item() == pytest.approx(at_ti, rel=1e-10)
    # B1 = 1 gives the paper's equation bit for bit
    a = sim.mprage(torch.tensor(0.7), torch.tensor(1.1), ti=0.9, b1=1.0)
    b = sim.mprage(torch.tensor(0.7), torch.tensor(1.1), ti=0.9)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_sampling_is_feasible_and_finite_on_invalid_maps(name):
    spec = get_sequence(name)
    g = torch.Generator().manual_seed(3)
    for dist in ("iod", "ood"):
        p = sim.sample_parameters(name, 64, distribution=dist, generator=g, dtype=torch.float64)
        sim.validate_parameters(name, p)  # every sampled row passes the sequence's own rules
        assert p.shape == (64, len(spec.names))
        assert sim.physics_features(name, p).shape == (64, len(spec.feature_names))
    assert bool(sim.is_in_distribution(name, sim.sample_parameters(name, 16, generator=g)).all())
    bad = torch.tensor([float("nan"), float("inf"), -1.0, 0.0, 1.0])
    maps = torch.stack([torch.tensor([1.0, 0.5, float("nan"), 1.0, 1.0]), bad, bad.flip(0)])
    out = spec.channels(*maps, sim.sample_parameters(name, 3, generator=g))
    assert torch.isfinite(out).all()
    for mode in ("default", "all"):
        img = spec.outputs(out, None, mode=mode)
        assert torch.isfinite(img).all() and img.shape[1] == len(spec.output_names[mode])


def test_mp2rage_parameter_rules_name_the_parameter():
    with pytest.raises(ValueError, match="TI2"):
        sim.validate_parameters("MP2RAGE", torch.tensor([_p(TI2=1.0)]))
    with pytest.raises(ValueError, match="NRO"):
        sim.validate_parameters("MP2RAGE", torch.tensor([_p(NRO=150.5)]))
    with pytest.raises(ValueError, match="FA1"):
        sim.validate_parameters("MP2RAGE", torch.tensor([_p(FA1=4.0)]))
    with pytest.raises(ValueError, match="TRcycle"):
        sim.validate_parameters("MP2RAGE", torch.tensor([_p(TRcycle=2.9)]))
    with pytest.raises(ValueError, match="TR"):
        sim.validate_parameters("MESPGR", torch.tensor([[0.012, 0.003, 0.002, 0.3]]))
