r"""MP2RAGE: two gradient-echo readouts after one inversion, and their UNI combination (Marques et al. 2010).

Marques JP, Kober T, Krueger G, van der Zwaag W, Van de Moortele P-F, Gruetter R.
MP2RAGE, a self bias-field corrected sequence for improved segmentation and
T1-mapping at high field. NeuroImage 2010;49:1271-1281 (Appendix: the signal
equations). Written here as a chain of affine maps of :math:`M_z` (in units of
the equilibrium magnetisation, proportional to PD); each event is
:math:`M_z \mapsto aM_z + b`:

* inversion: :math:`(a, b) = (-\delta, 0)` with efficiency :math:`\delta` =
  :data:`INVERSION_EFFICIENCY` (0.96, Marques' value; an adiabatic pulse, so
  B1+ does not change it);
* free relaxation for a time :math:`t`: :math:`(E, 1-E)`, :math:`E = e^{-t/T_1}`;
* one readout pulse of angle :math:`B_1^+\alpha` followed by :math:`TR`:
  :math:`(\cos(B_1^+\alpha)E_1,\ 1-E_1)`, :math:`E_1 = e^{-TR/T_1}`; ``n`` of them
  compose to :math:`(a^n,\ b\,(1-a^n)/(1-a))`.

One cycle of length :math:`TR_\text{MP2RAGE}`: inversion, :math:`T_A`, readout 1
(:math:`n` pulses at :math:`\alpha_1`), :math:`T_B`, readout 2 (:math:`n` at
:math:`\alpha_2`), :math:`T_C`, with

.. math::

    T_A = TI_1 - \lfloor n/2\rfloor TR,\quad T_B = TI_2 - TI_1 - n\,TR,\quad
    T_C = TR_\text{MP2RAGE} - TI_2 - (n - \lfloor n/2\rfloor) TR

(all ≥ 0: :func:`_check`). Pulse :math:`k = \lfloor n/2\rfloor` (0-based) of each
readout, at exactly :math:`TI_1` resp. :math:`TI_2` after the inversion, is the
centre of k-space. The steady state :math:`M_{ss} = b_c/(1-a_c)` of the whole
cycle's map :math:`(a_c, b_c)` gives

.. math::

    S_i = \mathrm{PD}\, e^{-TE/T_2^*} \sin(B_1^+\alpha_i)\, M_z^{(i)}(\text{before pulse } k),\qquad
    \mathrm{UNI} = \frac{S_1 S_2}{S_1^2 + S_2^2} \in [-\tfrac12, \tfrac12]

(signed real signals, a.u.; :math:`TE` = :data:`MP2RAGE_TE_S`). PD, :math:`T_2^*`
and the receive field cancel in UNI. The image the network sees is
:math:`\mathrm{UNI}+\tfrac12 \in [0, 1]` (the scanner stores
:math:`4095(\mathrm{UNI}+\tfrac12)`), 0 where :math:`S_1 = S_2 = 0`; with
complex noise UNI is :math:`\Re(\bar c_1 c_2)/(|c_1|^2+|c_2|^2)`, which gives the
familiar salt-and-pepper background.
"""

from __future__ import annotations

import math
from types import MappingProxyType


from .common import ParameterSpec, SequenceSpec, bids_value, check_angles, clean_pd, clean_time, magnitude

__all__ = ["INVERSION_EFFICIENCY", "MP2RAGE_TE_S", "MARQUES_3T", "mp2rage", "uni", "SPEC"]

#: Inversion efficiency of the adiabatic inversion (Marques et al. 2010).
INVERSION_EFFICIENCY: float = 0.96
#: Echo time of the readouts (s): fixed, typical of 3 T protocols; it cancels in UNI.
MP2RAGE_TE_S: float = 0.003
_deg = math.radians
#: A 3 T protocol close to Marques et al. 2010 (TI1/TI2 700/2500 ms, 4°/5°, cycle 5 s); readout TR and pulses ours.
MARQUES_3T: dict[str, float] = {"TI1": 0.7, "TI2": 2.5, "FA1": _deg(4.0), "FA2": _deg(5.0), "TR": 0.007,
                                 "TRcycle": 5.0, "NRO": 160.0}
NAMES = ("TI1", "TI2", "FA1", "FA2", "TR", "TRcycle", "NRO")


def _train(a: torch.Tensor, b: torch.Tensor, one_minus_a: torch.Tensor, n: torch.Tensor):
    """``n`` applications of ``M -> aM + b``: ``(a^n, b (1 - a^n)/(1 - a))`` (``1 - a`` given, accurately)."""
    import torch
    an = torch.pow(a, n)
    return an, b * (1.0 - an) / one_minus_a.clamp_min(torch.finfo(a.dtype).tiny)


def mp2rage(pd, t1, t2s, params: torch.Tensor, *, b1=None) -> torch.Tensor:
    r"""Signed signals ``(N, 2, V)`` of INV1 and INV2 (module docstring) for ``(V,)`` maps and ``(N, 7)`` params.

    ``params`` columns :data:`NAMES` (s, rad, count); ``b1`` ``(N, V)`` or
    ``None`` scales both flip angles. Finite for any cleaned maps.
    """
    import torch
    pd, r1 = clean_pd(pd)[None], clean_time(t1).reciprocal()[None]  # (1, V)
    e2 = torch.exp(-MP2RAGE_TE_S * clean_time(t2s).reciprocal())[None]
    ti1, ti2, fa1, fa2, tr, trc, n = (params[:, i:i + 1] for i in range(7))
    k = torch.floor(n / 2)
    ta, tb, tc = ti1 - k * tr, ti2 - ti1 - n * tr, trc - ti2 - (n - k) * tr
    a1, a2 = (fa if b1 is None else fa * b1 for fa in (fa1, fa2))
    neg_e1m1 = -torch.expm1(-tr * r1)  # 1 - E1
    e1 = 1.0 - neg_e1m1
    trains = []
    for a in (a1, a2):
        c = torch.cos(a)
        one_minus = 2.0 * torch.sin(a / 2) ** 2 + c * neg_e1m1  # 1 - cos(a) E1, without cancellation
        step = c * e1
        trains.append((_train(step, neg_e1m1, one_minus, n), _train(step, neg_e1m1, one_minus, k), torch.sin(a)))
    (A1n, B1n), (A1k, B1k), s1 = trains[0]
    (A2n, B2n), (A2k, B2k), s2 = trains[1]
    ea, eb, ec = (torch.exp(-t * r1) for t in (ta, tb, tc))
    # cycle from just before the inversion: (a_c, b_c); 1 - a_c = 1 + delta ea A1n eb A2n ec > 0
    a_c = -INVERSION_EFFICIENCY * ea * A1n * eb * A2n * ec
    b_c = (((1.0 - ea) * A1n + B1n) * eb + 1.0 - eb) * A2n * ec + B2n * ec + 1.0 - ec
    m_ss = b_c / (1.0 - a_c)
    m1 = -INVERSION_EFFICIENCY * ea * m_ss + 1.0 - ea  # start of readout 1
    m2 = eb * (A1n * m1 + B1n) + 1.0 - eb  # start of readout 2
    scale = pd * e2
    return torch.stack([scale * s1 * (A1k * m1 + B1k), scale * s2 * (A2k * m2 + B2k)], dim=1)


def uni(re: torch.Tensor, im: torch.Tensor | None = None) -> torch.Tensor:
    r"""UNI of ``(N, 2, V)`` INV1/INV2 channels: :math:`\Re(\bar c_1 c_2)/(|c_1|^2+|c_2|^2)`, 0 where both are 0."""
    import torch
    num = re[:, 0] * re[:, 1]
    den = re[:, 0].square() + re[:, 1].square()
    if im is not None:
        num = num + im[:, 0] * im[:, 1]
        den = den + im[:, 0].square() + im[:, 1].square()
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.zeros_like(den))


def _channels(pd, t1, t2s, params, *, b1=None):
    return mp2rage(pd, t1, t2s, params, b1=b1)


def _outputs(re, im, *, mode="default", sign="magnitude"):
    """``default``: UNI + 1/2 (0 where there is no signal); ``all``: that, |INV1|, |INV2|."""
    import torch
    u = uni(re, im)
    has = (re[:, 0] != 0) | (re[:, 1] != 0) if im is None else torch.ones_like(u, dtype=torch.bool)
    image = torch.where(has, u + 0.5, torch.zeros_like(u))[:, None]
    if mode == "default":
        return image
    return torch.cat([image, magnitude(re, im)], dim=1)


def _timing(p: torch.Tensor):
    import torch
    k = torch.floor(p[:, 6] / 2)
    return (p[:, 0] - k * p[:, 4], p[:, 1] - p[:, 0] - p[:, 6] * p[:, 4],
            p[:, 5] - p[:, 1] - (p[:, 6] - k) * p[:, 4])


def _check(p, fail):
    import torch
    for col, name in ((0, "TI1"), (1, "TI2"), (4, "TR"), (5, "TRcycle")):
        fail(name, "> 0 s", p[:, col] <= 0, col)
    check_angles(p, {"FA1": 2, "FA2": 3}, fail, "MP2RAGE")
    fail("NRO", "an integer >= 1 (readout pulses)", (p[:, 6] < 1) | (p[:, 6] != torch.round(p[:, 6])), 6)
    ta, tb, tc = _timing(p)
    fail("TI1", ">= floor(NRO/2) x TR (readout 1 must start after the inversion)", ta < 0, 0)
    fail("TI2", ">= TI1 + NRO x TR (the readouts must not overlap)", tb < 0, 1)
    fail("TRcycle", ">= TI2 + ceil(NRO/2) x TR (readout 2 must end within the cycle)", tc < 0, 5)


def _feasible(p):
    ta, tb, tc = _timing(p)
    return (ta >= 0) & (tb >= 0) & (tc >= 0)


def _features(p):
    import torch
    scaled = torch.cat([p[:, :6], p[:, 6:7] / 100.0], dim=1)
    return torch.cat([scaled, torch.exp(-p[:, :2]), torch.sin(p[:, 2:4])], dim=1)


def _sidecars(row, mode):
    common = {"RepetitionTimeExcitation": bids_value(SPEC.parameters[4], row[4]),
              "RepetitionTimePreparation": bids_value(SPEC.parameters[5], row[5]),
              "NumberShots": int(round(row[6])), "EchoTime": MP2RAGE_TE_S}
    inv = [{"InversionTime": round(row[i], 9), "FlipAngle": round(math.degrees(row[2 + i]), 6), **common}
           for i in (0, 1)]
    both = {"InversionTime": [inv[0]["InversionTime"], inv[1]["InversionTime"]],
            "FlipAngle": [inv[0]["FlipAngle"], inv[1]["FlipAngle"]], **common}
    return [both] if mode == "default" else [both, *inv]


SPEC = SequenceSpec(
    name="MP2RAGE",
    parameters=(
        ParameterSpec("TI1", "s", "--ti1", "InversionTime", "first inversion time", "TI"),
        ParameterSpec("TI2", "s", "--ti2", "InversionTime", "second inversion time", "TI"),
        ParameterSpec("FA1", "rad", "--fa1", "FlipAngle", "flip angle of readout 1", "FA"),
        ParameterSpec("FA2", "rad", "--fa2", "FlipAngle", "flip angle of readout 2", "FA"),
        ParameterSpec("TR", "s", "--tr", "RepetitionTimeExcitation", "readout repetition time", "TR"),
        ParameterSpec("TRcycle", "s", "--cycle-tr", "RepetitionTimePreparation", "MP2RAGE cycle time", "TR"),
        ParameterSpec("NRO", "count", "--readout-pulses", "NumberShots", "pulses per readout"),
    ),
    iod=MappingProxyType({"TI1": (0.6, 0.9), "TI2": (2.0, 2.8), "FA1": (_deg(3.0), _deg(6.0)),
                          "FA2": (_deg(3.0), _deg(7.0)), "TR": (0.006, 0.0075), "TRcycle": (4.5, 6.0),
                          "NRO": (128.0, 176.0)}),
    ood=MappingProxyType({"TI1": (0.3, 1.2), "TI2": (1.5, 3.5), "FA1": (_deg(2.0), _deg(10.0)),
                          "FA2": (_deg(2.0), _deg(10.0)), "TR": (0.005, 0.010), "TRcycle": (3.5, 8.0),
                          "NRO": (96.0, 224.0)}),
    feature_names=("TI1", "TI2", "FA1", "FA2", "TR", "TRcycle", "NRO/100", "exp(-TI1)", "exp(-TI2)",
                   "sin(FA1)", "sin(FA2)"),
    features=_features,
    check=_check,
    channels=_channels,
    outputs=_outputs,
    output_names=MappingProxyType({"default": ("UNI",), "all": ("UNI", "INV1", "INV2")}),
    feasible=_feasible,
    sidecars=_sidecars,
    stems=lambda mode: ("UNIT1",) if mode == "default" else ("UNIT1", "inv-1_MP2RAGE", "inv-2_MP2RAGE"),
    equation="Marques et al. 2010 NeuroImage 49:1271, Appendix (affine chain of Mz)",
    extra=MappingProxyType({"integer": ("NRO",)}),
)
