r"""MPRAGE: the authors' static equation (Borges et al. 2021 §2.3, after Jog et al. 2015).

.. math::

    S = \mathrm{PD}\left(1 - \frac{(1+\delta)\,e^{-TI/T_1}}{1 + \delta\,e^{-(TI + T_D + \tau)/T_1}}\right),
    \qquad \delta = -\cos(\pi\,B_1^+)

with inversion time :math:`TI` (s), delay time :math:`T_D = 10` ms and slice
imaging time :math:`\tau = 10` ms (:data:`MPRAGE_TD_S`, :data:`MPRAGE_TAU_S`),
PD in a.u. and the signal in the units of PD. :math:`\delta` is the inversion
efficiency: the inversion pulse turns :math:`M_z` into :math:`-\delta M_z`.
With a perfect pulse (:math:`B_1^+ = 1`, :math:`\delta = 1`) this is exactly the
paper's equation :math:`S = PD(1 - 2e^{-TI/T_1}/(1 + e^{-(TI+T_D+\tau)/T_1}))`,
the steady state of inversion recovery with period :math:`TI+T_D+\tau` and a
readout that leaves :math:`M_z` alone. A relative transmit field
:math:`B_1^+ \ne 1` scales the (hard, non-adiabatic) inversion angle π; the
readout flip angle is not part of the authors' model, so B1+ acts on MPRAGE
through :math:`\delta` only.

The formula is *signed*: with :math:`\delta = 1` a tissue crosses zero at
:math:`TI_0 = T_1 \ln(2 - e^{-(T_D+\tau)/T_1}) < T_D + \tau` = 20 ms.

MPRAGE sign (``sign=``): ``"magnitude"`` (default) returns :math:`|S|`,
``"clip"`` sets negatives to 0 (the authors), ``"signed"`` returns S.
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Literal


from .common import ParameterSpec, SequenceSpec, clean_pd, clean_time, magnitude

__all__ = ["MPRAGE_TD_S", "MPRAGE_TAU_S", "MPRAGE_SIGNS", "MprageSign", "apply_sign", "mprage",
           "mprage_zero_crossing", "SPEC"]

#: MPRAGE delay time T_D and slice imaging time tau (seconds), as in the authors' code.
MPRAGE_TD_S: float = 0.010
MPRAGE_TAU_S: float = 0.010
#: Accepted values of the ``sign`` argument.
MPRAGE_SIGNS: tuple[str, ...] = ("magnitude", "clip", "signed")

MprageSign = Literal["magnitude", "clip", "signed"]


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
    b1: torch.Tensor | float | None = None,
) -> torch.Tensor:
    r"""MPRAGE signal (module docstring), broadcasting, finite.

    ``pd`` a.u., ``t1`` s, ``ti`` s (> 0); ``td``, ``tau`` s (the authors' 10 ms
    each; larger values are only for teaching: as :math:`T_D+\tau\to\infty` the
    equation becomes plain inversion recovery). ``b1``: relative transmit field
    (1 = nominal; ``None`` evaluates the paper's equation exactly). ``sign`` as
    in the module docstring. Returns the signal in the units of PD.
    """
    import torch
    _check_sign(sign)
    pd = clean_pd(pd)
    r1 = clean_time(t1).reciprocal()  # R1 = 1/T1 (1/s), 0 for T1 = +inf
    ti = torch.as_tensor(ti, dtype=r1.dtype, device=r1.device)
    e_ti = torch.exp(-ti * r1)
    e_delay = torch.exp(-(ti + td + tau) * r1)
    if b1 is None:
        signal = pd * (1.0 - 2.0 * e_ti / (1.0 + e_delay))
    else:
        delta = -torch.cos(math.pi * torch.as_tensor(b1, dtype=r1.dtype, device=r1.device))
        signal = pd * (1.0 - (1.0 + delta) * e_ti / (1.0 + delta * e_delay))
    return apply_sign(signal, sign)


def mprage_zero_crossing(
    t1: torch.Tensor | float, *, td: float = MPRAGE_TD_S, tau: float = MPRAGE_TAU_S
) -> torch.Tensor:
    r"""Inversion time (s) where the signed MPRAGE signal of a tissue is 0 (perfect inversion).

    :math:`TI_0 = T_1 \ln(2 - e^{-(T_D+\tau)/T_1})`. Since
    :math:`\ln(2 - e^{-x}) < x`, :math:`TI_0 < T_D + \tau` = 20 ms for *every*
    T1 with the authors' constants: in the paper's TI ranges (≥ 0.1 s) the
    authors' MPRAGE signal is never negative, and magnitude, clip and signed
    agree. The familiar :math:`T_1\ln 2` is the limit :math:`T_D+\tau\to\infty`.
    """
    import torch
    t1 = t1 if isinstance(t1, torch.Tensor) else torch.as_tensor(t1, dtype=torch.float64)
    return t1 * torch.log(2.0 - torch.exp(-(td + tau) / t1))


def _channels(pd, t1, t2s, params, *, b1=None):
    """Signed MPRAGE signal ``(N, 1, V)``."""
    b1 = None if b1 is None else b1[:, None, :]
    return mprage(pd[None, None], t1[None, None], ti=params[:, 0:1, None], sign="signed", b1=b1)


def _outputs(re, im, *, mode="default", sign="magnitude"):
    """One image: magnitude (default), clipped or signed real part."""
    _check_sign(sign)
    if sign == "magnitude":
        return magnitude(re, im)
    return re.clamp_min(0.0) if sign == "clip" else re.clone()


def _check(p, fail):
    fail("TI", "> 0 s (inversion time in seconds)", p[:, 0] <= 0, 0)


def _features(p):
    import torch
    return torch.cat([p, torch.exp(-p)], dim=1)


SPEC = SequenceSpec(
    name="MPRAGE",
    parameters=(ParameterSpec("TI", "s", "--ti", "InversionTime", "inversion time", "TI"),),
    iod=MappingProxyType({"TI": (0.6, 1.2)}),
    ood=MappingProxyType({"TI": (0.1, 2.0)}),
    feature_names=("TI", "exp(-TI)"),
    features=_features,
    check=_check,
    channels=_channels,
    outputs=_outputs,
    output_names=MappingProxyType({"default": ("MPRAGE",), "all": ("MPRAGE",)}),
    equation="S = PD (1 - (1+d) exp(-TI/T1) / (1 + d exp(-(TI+TD+tau)/T1))), d = -cos(pi B1)",
)
