"""The sequence registry: one module per sequence (parameters, ranges, signal equation, physics features).

Adding a sequence means adding one module with a :class:`SequenceSpec` named
``SPEC`` and listing it in :data:`REGISTRY`; the simulation layer, the TorchIO
transform, ``physeg simulate --sequence`` and training read everything from here.

========  ======================================  ================================
name      module                                  source of the equation
========  ======================================  ================================
MPRAGE    :mod:`.mprage`                          Borges et al. 2021 §2.3 (Jog et al.)
SPGR      :mod:`.spgr`                            Borges et al. 2021 §2.3 (Ernst)
MP2RAGE   :mod:`.mp2rage`                         Marques et al. 2010, Appendix
MESPGR    :mod:`.mespgr`                          SPGR at several echoes (MPM protocol)
========  ======================================  ================================
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from . import mespgr, mp2rage, mprage, spgr
from .common import ParameterSpec, SequenceSpec

__all__ = ["REGISTRY", "SequenceSpec", "ParameterSpec", "get_sequence", "OUTPUT_MODES"]

REGISTRY: Mapping[str, SequenceSpec] = MappingProxyType(
    {m.SPEC.name: m.SPEC for m in (mprage, spgr, mp2rage, mespgr)}
)
#: ``"default"``: the one image the network sees; ``"all"``: every image the scanner writes.
OUTPUT_MODES: tuple[str, ...] = ("default", "all")


def get_sequence(name: str) -> SequenceSpec:
    """Spec of a sequence by (case-insensitive) name; ValueError naming the choices otherwise."""
    if not isinstance(name, str) or name.upper() not in REGISTRY:
        raise ValueError(f"unknown sequence {name!r}; choose one of {tuple(REGISTRY)}")
    return REGISTRY[name.upper()]
