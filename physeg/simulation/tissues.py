"""Literature tissue parameters at 3 T, the single source of truth for the project.

``TISSUE_PARAMETERS`` maps a tissue name to its proton density (PD, relative,
a.u., CSF = 1), longitudinal relaxation time T1 (seconds) and effective
transverse relaxation time T2* (seconds).

Sources
-------
- T1 of white and grey matter: Wansapura et al. 1999, "NMR relaxation times in
  the human brain at 3.0 tesla", J. Magn. Reson. Imaging 9:531-538
  (WM 832 ms, GM 1331 ms; rounded to 0.83 s and 1.33 s).
- T2* of white and grey matter: Peters et al. 2007, "T2* measurements in human
  brain at 1.5, 3 and 7 T", Magn. Reson. Imaging 25:748-753
  (3 T: WM 53.2 ms, GM 66.0 ms).
- CSF T1 4.2 s, CSF T2* 0.5 s and the relative proton densities
  (WM 0.69, GM 0.80, CSF 1.0) are the conventional round values used by
  simulation studies; CSF T2* in particular is poorly defined in vivo (it is
  dominated by field inhomogeneity) and only needs to be "long" here.

These values feed the teaching phantom (:mod:`physeg.simulation.phantom`), the
signal curves of notebook 01 and the Physics Gold Standard (``physeg.pgs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

__all__ = ["TissueParameters", "TISSUE_PARAMETERS", "TISSUE_SOURCES"]


@dataclass(frozen=True)
class TissueParameters:
    """Relaxometry of one tissue.

    Attributes
    ----------
    pd:
        Proton density, relative (a.u.; CSF = 1).
    t1_s:
        Longitudinal relaxation time T1 in seconds.
    t2star_s:
        Effective transverse relaxation time T2* in seconds.
    source:
        Short citation of where the numbers come from.
    """

    pd: float
    t1_s: float
    t2star_s: float
    source: str = ""

    def as_tuple(self) -> tuple[float, float, float]:
        """``(PD, T1 [s], T2* [s])`` in :data:`physeg.simulation.MAP_CHANNELS` order."""
        return (self.pd, self.t1_s, self.t2star_s)


TISSUE_SOURCES: Mapping[str, str] = MappingProxyType(
    {
        "Wansapura1999": "Wansapura JP et al. NMR relaxation times in the human brain at 3.0 T. JMRI 1999;9:531-538.",
        "Peters2007": "Peters AM et al. T2* measurements in human brain at 1.5, 3 and 7 T. MRI 2007;25:748-753.",
        "convention": "Conventional round values used in MR simulation studies (PD; CSF T1/T2*).",
    }
)

#: Literature values: WM, GM, CSF (PD a.u., T1 s, T2* s).
TISSUE_PARAMETERS: Mapping[str, TissueParameters] = MappingProxyType(
    {
        "WM": TissueParameters(pd=0.69, t1_s=0.83, t2star_s=0.053, source="T1 Wansapura1999; T2* Peters2007; PD convention"),
        "GM": TissueParameters(pd=0.80, t1_s=1.33, t2star_s=0.066, source="T1 Wansapura1999; T2* Peters2007; PD convention"),
        "CSF": TissueParameters(pd=1.00, t1_s=4.20, t2star_s=0.500, source="convention"),
    }
)
