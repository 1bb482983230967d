r"""Static signal equations of the two simulated sequences.

Units: times in **seconds**, flip angles in **radians**, proton density (PD)
relative (a.u.). All functions broadcast their tensor arguments, keep the dtype
and device of the inputs and never return NaN or infinity.

MPRAGE (the authors' implementation, Borges et al. 2021 §2.3 after Jog et al.)

.. math::

    S = \mathrm{PD}\left(1 - \frac{2\,e^{-TI/T_1}}{1 + e^{-(TI + T_D + \tau)/T_1}}\right)

with inversion time :math:`TI`, delay time :math:`T_D = 10` ms and slice
imaging time :math:`\tau = 10` ms (:data:`MPRAGE_TD_S`, :data:`MPRAGE_TAU_S`).
The formula is *signed*: a tissue's longitudinal magnetisation crosses zero at

.. math::

    TI_0 = T_1 \ln\!\left(2 - e^{-(T_D+\tau)/T_1}\right) < T_D + \tau = 20\ \text{ms}

for every T1 (because :math:`\ln(2-e^{-x}) < x`). So with the authors' short
:math:`T_D, \tau` the signal is negative only for TI below 20 ms, outside even
the OoD range (TI ≥ 0.1 s); the textbook crossing :math:`T_1 \ln 2` belongs to
plain inversion recovery, the limit :math:`T_D+\tau\to\infty`.

SPGR (spoiled gradient echo, Ernst steady state)

.. math::

    S = \mathrm{PD}\,\sin\alpha\,
        \frac{(1 - e^{-TR/T_1})\,e^{-TE/T_2^*}}{1 - \cos\alpha\, e^{-TR/T_1}}

with repetition time :math:`TR`, echo time :math:`TE` and flip angle
:math:`\alpha`. It is maximal over :math:`\alpha` at the Ernst angle
:math:`\alpha_E = \arccos e^{-TR/T_1}`.

Handling of invalid map values (maps come from fits and contain background,
fitting failures, ...) -- :func:`clean_maps`:

* PD: NaN, ±inf and negative values become 0 (no signal).
* T1, T2*: NaN, -inf and values below :data:`EPS_S` (= 1e-6 s, including 0 and
  negatives) become :data:`EPS_S`; +inf is kept and means "no relaxation"
  (relaxation *rate* 0, the mathematical limit), which is finite in both
  equations.

Hence every output is finite and :math:`|S| \le \mathrm{PD}`.

MPRAGE sign (``sign=``): ``"magnitude"`` (default) returns :math:`|S|`, as a
scanner's magnitude reconstruction does; ``"clip"`` sets negative values to 0,
as the authors did; ``"signed"`` returns the formula unchanged (a
phase-sensitive reconstruction). The three agree for TI ≥ 20 ms (above).
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = [
    "EPS_S",
    "MPRAGE_TD_S",
    "MPRAGE_TAU_S",
    "MPRAGE_SIGNS",
    "clean_pd",
    "clean_time",
    "clean_maps",
    "mprage",
    "spgr",
    "mprage_zero_crossing",
    "ernst_angle",
]

#: Smallest admissible relaxation time (seconds).
EPS_S: float = 1e-6
#: MPRAGE delay time T_D and slice imaging time tau (seconds), as in the authors' code.
MPRAGE_TD_S: float = 0.010
MPRAGE_TAU_S: float = 0.010
#: Accepted values of the ``sign`` argument.
MPRAGE_SIGNS: tuple[str, ...] = ("magnitude", "clip", "signed")

MprageSign = Literal["magnitude", "clip", "signed"]


def clean_pd(pd: torch.Tensor) -> torch.Tensor:
    """Proton density with NaN, ±inf and negatives replaced by 0 (new tensor)."""
    pd = torch.as_tensor(pd)
    return torch.nan_to_num(pd, nan=0.0, posinf=0.0, neginf=0.0).clamp_min_(0.0)


def clean_time(t: torch.Tensor, *, eps: float = EPS_S) -> torch.Tensor:
    """Relaxation time (s) with NaN, -inf and values < ``eps`` replaced by ``eps``.

    +inf is kept (no relaxation; its rate ``1/t`` is 0). Returns a new tensor.
    """
    t = torch.as_tensor(t)
    t = torch.where(torch.isnan(t), torch.full_like(t, eps), t)
    return t.clamp_min(eps)


def clean_maps(maps: torch.Tensor) -> torch.Tensor:
    """Clean a ``(3, ...)`` map tensor ``[PD, T1 (s), T2* (s)]`` (see module docstring)."""
    return torch.stack([clean_pd(maps[0]), clean_time(maps[1]), clean_time(maps[2])])


def _check_sign(sign: str) -> None:
    if sign not in MPRAGE_SIGNS:
        raise ValueError(f"sign must be one of {MPRAGE_SIGNS}; got {sign!r}")


def apply_sign(signal: torch.Tensor, sign: MprageSign) -> torch.Tensor:
    """Apply the MPRAGE sign convention in place and return ``signal``."""
    _check_sign(sign)
    if sign == "magnitude":
        return signal.abs_()
    if sign == "clip":
        return signal.clamp_min_(0.0)
    return signal


def mprage(
    pd: torch.Tensor,
    t1: torch.Tensor,
    *,
    ti: torch.Tensor | float,
    sign: MprageSign = "magnitude",
    td: float = MPRAGE_TD_S,
    tau: float = MPRAGE_TAU_S,
) -> torch.Tensor:
    r"""MPRAGE signal :math:`S = PD(1 - 2e^{-TI/T_1}/(1 + e^{-(TI+T_D+\tau)/T_1}))`.

    Parameters
    ----------
    pd:
        Proton density (a.u.).
    t1:
        Longitudinal relaxation time :math:`T_1` (s).
    ti:
        Inversion time :math:`TI` (s), > 0; broadcasts against ``pd`` and ``t1``.
    sign:
        ``"magnitude"`` (|S|, default), ``"clip"`` (max(S, 0), the authors'
        choice) or ``"signed"`` (S).
    td, tau:
        Delay time :math:`T_D` and slice imaging time :math:`\tau` (s); the
        defaults are the authors' 10 ms each (the simulation layer always uses
        them). Larger values are only for teaching: as :math:`T_D+\tau\to\infty`
        the equation becomes plain inversion recovery :math:`PD(1-2e^{-TI/T_1})`.

    Returns
    -------
    torch.Tensor
        Signal in the units of PD, broadcast shape, finite.
    """
    _check_sign(sign)
    pd = clean_pd(pd)
    r1 = clean_time(t1).reciprocal()  # R1 = 1/T1 (1/s), 0 for T1 = +inf
    ti = torch.as_tensor(ti, dtype=r1.dtype, device=r1.device)
    e_ti = torch.exp(-ti * r1)
    e_delay = torch.exp(-(ti + td + tau) * r1)
    signal = pd * (1.0 - 2.0 * e_ti / (1.0 + e_delay))
    return apply_sign(signal, sign)


def spgr(
    pd: torch.Tensor,
    t1: torch.Tensor,
    t2s: torch.Tensor,
    *,
    tr: torch.Tensor | float,
    te: torch.Tensor | float,
    fa: torch.Tensor | float,
) -> torch.Tensor:
    r"""SPGR signal :math:`S = PD\sin\alpha(1-E_1)E_2/(1-\cos\alpha E_1)`.

    :math:`E_1 = e^{-TR/T_1}`, :math:`E_2 = e^{-TE/T_2^*}`.

    Parameters
    ----------
    pd:
        Proton density (a.u.).
    t1, t2s:
        :math:`T_1` and :math:`T_2^*` (s).
    tr, te:
        Repetition and echo times (s).
    fa:
        Flip angle :math:`\alpha` in **radians**, in (0, π].

    Returns
    -------
    torch.Tensor
        Non-negative, finite signal in the units of PD (broadcast shape).
        Where the denominator underflows to 0 (α→0 with :math:`T_1=\infty`) the
        numerator is 0 too and the signal is 0.
    """
    pd = clean_pd(pd)
    r1 = clean_time(t1).reciprocal()
    r2 = clean_time(t2s).reciprocal()
    dtype, device = r1.dtype, r1.device
    tr, te, fa = (torch.as_tensor(v, dtype=dtype, device=device) for v in (tr, te, fa))
    e1 = torch.exp(-tr * r1)
    e2 = torch.exp(-te * r2)
    den = (1.0 - torch.cos(fa) * e1).clamp_min(torch.finfo(dtype).tiny)
    return pd * torch.sin(fa) * (1.0 - e1) * e2 / den


def mprage_zero_crossing(
    t1: torch.Tensor | float, *, td: float = MPRAGE_TD_S, tau: float = MPRAGE_TAU_S
) -> torch.Tensor:
    r"""Inversion time (s) where the signed MPRAGE signal of a tissue is 0.

    :math:`TI_0 = T_1 \ln(2 - e^{-(T_D+\tau)/T_1})`. Since
    :math:`\ln(2 - e^{-x}) < x`, :math:`TI_0 < T_D + \tau` = 20 ms for *every*
    T1 with the authors' constants: in the paper's TI ranges (≥ 0.1 s) the
    authors' MPRAGE signal is never negative, and magnitude, clip and signed
    agree. The familiar :math:`T_1\ln 2` is the limit :math:`T_D+\tau\to\infty`.
    """
    t1 = t1 if isinstance(t1, torch.Tensor) else torch.as_tensor(t1, dtype=torch.float64)
    return t1 * torch.log(2.0 - torch.exp(-(td + tau) / t1))


def ernst_angle(t1: torch.Tensor | float, *, tr: torch.Tensor | float) -> torch.Tensor:
    r"""Ernst angle :math:`\alpha_E = \arccos e^{-TR/T_1}` (radians); Python floats are computed in float64."""
    t1 = t1 if isinstance(t1, torch.Tensor) else torch.as_tensor(t1, dtype=torch.float64)
    return torch.arccos(torch.exp(-torch.as_tensor(tr, dtype=t1.dtype) / t1))


