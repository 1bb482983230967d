r"""Multi-echo SPGR: the spoiled gradient echo of :mod:`.spgr` read out at :data:`N_ECHOES` echo times.

As the multi-parameter mapping (MPM) protocol acquires it (Weiskopf et al. 2013,
Front. Neurosci. 7:95: 6-8 echoes, equidistant). Echo :math:`e = 0, \dots, E-1`
at :math:`TE_e = TE_1 + e\,\Delta TE`:

.. math::

    S_e = \mathrm{PD}\,\sin(B_1^+\alpha)\,
          \frac{(1 - e^{-TR/T_1})\,e^{-TE_e/T_2^*}}{1 - \cos(B_1^+\alpha)\, e^{-TR/T_1}}

(TR, TE s; α rad; PD a.u.; signal in the units of PD). Output modes:
``"default"`` the echoes *combined* as their mean magnitude (one image, the
echo-averaged contrast of the MPM pipeline), ``"all"`` every echo as a channel.
Every echo must fit in the repetition: :math:`TE_1 + (E-1)\Delta TE < TR`.
"""

from __future__ import annotations

import math
from types import MappingProxyType


from .common import ParameterSpec, SequenceSpec, bids_value, check_angles, magnitude
from .spgr import spgr

__all__ = ["N_ECHOES", "echo_times", "SPEC"]

#: Echoes per repetition.
N_ECHOES: int = 6
_deg = math.radians


def echo_times(params: torch.Tensor) -> torch.Tensor:
    """``(N, E)`` echo times (s) of ``(N, 4)`` parameters ``[TR, TE1, dTE, FA]``."""
    import torch
    e = torch.arange(N_ECHOES, dtype=params.dtype, device=params.device)
    return params[:, 1:2] + e * params[:, 2:3]


def _channels(pd, t1, t2s, params, *, b1=None):
    """``(N, E, V)`` echo signals."""
    te = echo_times(params)[:, :, None]
    p = params[:, :, None]
    b1 = None if b1 is None else b1[:, None, :]
    return spgr(pd[None, None], t1[None, None], t2s[None, None], tr=p[:, 0:1], te=te, fa=p[:, 3:4], b1=b1)


def _outputs(re, im, *, mode="default", sign="magnitude"):
    mag = magnitude(re, im)
    return mag.mean(dim=1, keepdim=True) if mode == "default" else mag


def _last_echo(p):
    return p[:, 1] + (N_ECHOES - 1) * p[:, 2]


def _check(p, fail):
    fail("TE1", "> 0 s (first echo time in seconds)", p[:, 1] <= 0, 1)
    fail("dTE", "> 0 s (echo spacing in seconds)", p[:, 2] <= 0, 2)
    fail("TR", f"> TE1 + {N_ECHOES - 1} dTE (every echo inside the repetition)", p[:, 0] <= _last_echo(p), 0)
    check_angles(p, {"FA": 3}, fail, "MESPGR")


def _features(p):
    import torch
    return torch.cat([p, torch.exp(-p[:, :2]), torch.sin(p[:, 3:4])], dim=1)


def _sidecars(row, mode):
    base = {"RepetitionTime": bids_value(SPEC.parameters[0], row[0]),
            "FlipAngle": bids_value(SPEC.parameters[3], row[3])}
    tes = [round(row[1] + e * row[2], 9) for e in range(N_ECHOES)]
    if mode == "default":
        return [{**base, "EchoTime": tes}]
    return [{**base, "EchoTime": te} for te in tes]


SPEC = SequenceSpec(
    name="MESPGR",
    parameters=(
        ParameterSpec("TR", "s", "--tr", "RepetitionTime", "repetition time", "TR"),
        ParameterSpec("TE1", "s", "--te1", "EchoTime", "first echo time", "TE"),
        ParameterSpec("dTE", "s", "--dte", "EchoSpacingTime", "echo spacing", "TE"),
        ParameterSpec("FA", "rad", "--fa", "FlipAngle", "flip angle", "FA"),
    ),
    iod=MappingProxyType({"TR": (0.020, 0.050), "TE1": (0.002, 0.004), "dTE": (0.002, 0.003),
                          "FA": (_deg(5.0), _deg(30.0))}),
    ood=MappingProxyType({"TR": (0.015, 0.100), "TE1": (0.0015, 0.006), "dTE": (0.0015, 0.005),
                          "FA": (_deg(3.0), _deg(60.0))}),
    feature_names=("TR", "TE1", "dTE", "FA", "exp(-TR)", "exp(-TE1)", "sin(FA)"),
    features=_features,
    check=_check,
    channels=_channels,
    outputs=_outputs,
    output_names=MappingProxyType({"default": ("MESPGR",), "all": tuple(f"echo-{e + 1}" for e in range(N_ECHOES))}),
    feasible=lambda p: _last_echo(p) < p[:, 0],
    sidecars=_sidecars,
    stems=lambda mode: ("MESPGR",) if mode == "default" else tuple(f"echo-{e + 1}_MEGRE" for e in range(N_ECHOES)),
    equation="S_e = PD sin(B1 a)(1 - E1) exp(-TE_e/T2*)/(1 - cos(B1 a) E1), TE_e = TE1 + e dTE",
)
