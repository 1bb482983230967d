r"""Static signal equations of the paper's two sequences (§2.3): re-exported from the sequence registry.

The equations live in :mod:`physeg.simulation.sequences` (MPRAGE in
:mod:`~physeg.simulation.sequences.mprage`, SPGR in
:mod:`~physeg.simulation.sequences.spgr`, with their units and sources); this
module keeps the old import path. Units: times in **seconds**, flip angles in
**radians**, PD relative (a.u.). Every function broadcasts, keeps dtype and
device and never returns NaN or infinity (map cleaning:
:mod:`physeg.simulation.sequences.common`).
"""

from __future__ import annotations

from .sequences.common import EPS_S, clean_maps, clean_pd, clean_time
from .sequences.mprage import (
    MPRAGE_SIGNS,
    MPRAGE_TAU_S,
    MPRAGE_TD_S,
    MprageSign,
    _check_sign,
    apply_sign,
    mprage,
    mprage_zero_crossing,
)
from .sequences.spgr import ernst_angle, spgr

__all__ = [
    "EPS_S",
    "MPRAGE_TD_S",
    "MPRAGE_TAU_S",
    "MPRAGE_SIGNS",
    "MprageSign",
    "apply_sign",
    "clean_pd",
    "clean_time",
    "clean_maps",
    "mprage",
    "spgr",
    "mprage_zero_crossing",
    "ernst_angle",
    "_check_sign",
]
