r"""SPGR: spoiled gradient echo in the Ernst steady state (Borges et al. 2021 §2.3; Ernst & Anderson 1966).

.. math::

    S = \mathrm{PD}\,\sin(B_1^+\alpha)\,
        \frac{(1 - e^{-TR/T_1})\,e^{-TE/T_2^*}}{1 - \cos(B_1^+\alpha)\, e^{-TR/T_1}}

with repetition time :math:`TR` (s), echo time :math:`TE` (s), nominal flip
angle :math:`\alpha` (rad) and relative transmit field :math:`B_1^+` (1 =
nominal: the paper's equation). PD a.u.; the signal is in the units of PD,
non-negative for :math:`B_1^+\alpha \le \pi`. It is maximal over the flip angle at the Ernst angle
:math:`\alpha_E = \arccos e^{-TR/T_1}`.
"""

from __future__ import annotations

import math
from types import MappingProxyType


from .common import ParameterSpec, SequenceSpec, clean_pd, clean_time, magnitude

__all__ = ["spgr", "ernst_angle", "SPEC"]

_deg = math.radians


def spgr(
    pd: torch.Tensor,
    t1: torch.Tensor,
    t2s: torch.Tensor,
    *,
    tr: torch.Tensor | float,
    te: torch.Tensor | float,
    fa: torch.Tensor | float,
    b1: torch.Tensor | float | None = None,
) -> torch.Tensor:
    r"""SPGR signal :math:`S = PD\sin\alpha(1-E_1)E_2/(1-\cos\alpha E_1)` (module docstring).

    :math:`E_1 = e^{-TR/T_1}`, :math:`E_2 = e^{-TE/T_2^*}`; ``pd`` a.u., ``t1``,
    ``t2s``, ``tr``, ``te`` in s, ``fa`` in **radians** in (0, π]; ``b1``
    scales the flip angle (``None``: nominal). Finite; where the denominator
    underflows to 0 (α→0 with :math:`T_1=\infty`) the numerator is 0 too and the
    signal is 0.
    """
    import torch
    pd = clean_pd(pd)
    r1 = clean_time(t1).reciprocal()
    r2 = clean_time(t2s).reciprocal()
    dtype, device = r1.dtype, r1.device
    tr, te, fa = (torch.as_tensor(v, dtype=dtype, device=device) for v in (tr, te, fa))
    if b1 is not None:
        fa = fa * torch.as_tensor(b1, dtype=dtype, device=device)
    e1 = torch.exp(-tr * r1)
    e2 = torch.exp(-te * r2)
    den = (1.0 - torch.cos(fa) * e1).clamp_min(torch.finfo(dtype).tiny)
    return pd * torch.sin(fa) * (1.0 - e1) * e2 / den


def ernst_angle(t1: torch.Tensor | float, *, tr: torch.Tensor | float) -> torch.Tensor:
    r"""Ernst angle :math:`\alpha_E = \arccos e^{-TR/T_1}` (radians); Python floats are computed in float64."""
    import torch
    t1 = t1 if isinstance(t1, torch.Tensor) else torch.as_tensor(t1, dtype=torch.float64)
    return torch.arccos(torch.exp(-torch.as_tensor(tr, dtype=t1.dtype) / t1))


def _channels(pd, t1, t2s, params, *, b1=None):
    """SPGR signal ``(N, 1, V)``."""
    p = params[:, :, None]
    b1 = None if b1 is None else b1[:, None, :]
    return spgr(pd[None, None], t1[None, None], t2s[None, None], tr=p[:, 0:1], te=p[:, 1:2], fa=p[:, 2:3], b1=b1)


def _outputs(re, im, *, mode="default", sign="magnitude"):
    return magnitude(re, im)


def _check(p, fail):
    tr, te, fa = p.unbind(1)
    fail("TE", "> 0 s (echo time in seconds)", te <= 0, 1)
    fail("TR", "> TE (> 0 s, repetition time in seconds, longer than the echo time)", tr <= te, 0)
    over = fa > math.pi
    if over.any():
        row = int(over.nonzero()[0, 0])
        raise ValueError(
            f"SPGR parameter FA must be in (0, π] rad = (0, 180] degrees; got {fa[row].item():.6g} rad at row "
            f"{row} (flip angles are radians internally: use spgr_params(..., fa_deg=...) for degrees)"
        )
    fail("FA", "in (0, π] rad = (0, 180] degrees", fa <= 0, 2)


def _features(p):
    import torch
    return torch.cat([p, torch.exp(-p[:, :2]), torch.sin(p[:, 2:3])], dim=1)


SPEC = SequenceSpec(
    name="SPGR",
    parameters=(
        ParameterSpec("TR", "s", "--tr", "RepetitionTime", "repetition time", "TR"),
        ParameterSpec("TE", "s", "--te", "EchoTime", "echo time", "TE"),
        ParameterSpec("FA", "rad", "--fa", "FlipAngle", "flip angle", "FA"),
    ),
    iod=MappingProxyType({"TR": (0.015, 0.100), "TE": (0.004, 0.010), "FA": (_deg(15.0), _deg(75.0))}),
    ood=MappingProxyType({"TR": (0.010, 0.200), "TE": (0.002, 0.020), "FA": (_deg(5.0), _deg(90.0))}),
    feature_names=("TR", "TE", "FA", "exp(-TR)", "exp(-TE)", "sin(FA)"),
    features=_features,
    check=_check,
    channels=_channels,
    outputs=_outputs,
    output_names=MappingProxyType({"default": ("SPGR",), "all": ("SPGR",)}),
    feasible=lambda p: p[:, 1] < p[:, 0],
    equation="S = PD sin(B1 a) (1 - E1) E2 / (1 - cos(B1 a) E1)",
)
