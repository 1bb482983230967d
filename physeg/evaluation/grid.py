"""The test grid: fixed acquisition parameters of the test and validation images (paper §3, §4).

Per sequence, fixed sets of acquisition parameters (the same for every test
subject and every model; seeded from the profile seed, the sequence and the
distribution, so a re-run gives the same grid). Parameters are in seconds and
radians (MPRAGE ``[TI]``, SPGR ``[TR, TE, FA]``):

* IoD: ``profile.n_test_iod`` draws from the training ranges;
* OoD: ``profile.n_test_ood`` parameter vectors outside the training ranges.
  MPRAGE: TI stratified over the OoD part of 0.1–2.0 s (one jittered point per
  equal-width stratum of [0.1, 0.6) ∪ (1.2, 2.0]) so the whole TI axis of the
  paper's Figure 3 is covered. SPGR: uniform on the OoD box minus the IoD box,
  then the first ``max(1, ceil(n/5))`` rows get FA ∈ [5°, 10°) so that the
  low-flip-angle images the paper singles out are always present.

The validation subjects get a fixed IoD set (:func:`validation_parameters`)
on which the volume intervals are calibrated; the uncertainty study may use
an evenly spread subset of the test grid (:func:`uncertainty_subset`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch

from physeg.conventions import DISTRIBUTIONS, distribution_name, stable_seed
from physeg.profiles import Profile

#: Images with FA below this (degrees) are the paper's "low flip angle" outliers.
LOW_FA_DEG: float = 10.0
LOW_FA_RANGE_DEG: tuple[float, float] = (5.0, 10.0)


def generator_of(*parts: object) -> torch.Generator:
    """CPU generator seeded with :func:`physeg.conventions.stable_seed` ``(parts)``."""
    return torch.Generator().manual_seed(stable_seed(*parts))


def _mprage_ood_ti(n: int, g: torch.Generator) -> torch.Tensor:
    """``(n, 1)`` OoD inversion times (s), one jittered point per stratum of the OoD TI axis.

    The OoD axis is ``[lo, ilo) ∪ (ihi, hi]`` (OoD box minus IoD box) of total
    length ``L``; point ``k`` is at arc length ``(k + u_k) L / n``, ``u_k ~ U(0, 1)``.
    """
    from physeg.simulation import IOD_RANGES, OOD_RANGES

    lo, hi = OOD_RANGES["MPRAGE"]["TI"]
    ilo, ihi = IOD_RANGES["MPRAGE"]["TI"]
    a, b = ilo - lo, hi - ihi  # lengths of the two OoD pieces
    u = (torch.arange(n, dtype=torch.float64) + torch.rand(n, generator=g, dtype=torch.float64)) / n
    s = u * (a + b)
    ti = torch.where(s < a, lo + s, ihi + (s - a))
    # never exactly on the IoD border
    ti = torch.where((ti >= ilo) & (ti <= ihi), torch.full_like(ti, ihi + 1e-3), ti)
    return ti.unsqueeze(1)


def test_parameters(profile: Profile, sequence: str, distribution: str, *, n: int | None = None) -> torch.Tensor:
    """Fixed test parameters ``(n, P)`` (seconds, radians) of one sequence and distribution."""
    from physeg.simulation import sample_parameters

    dist = distribution_name(distribution).lower()  # ValueError unless IoD/OoD; the sampler's spelling
    if n is None:
        n = profile.n_test_iod if dist == "iod" else profile.n_test_ood
    g = generator_of(profile.seed, "test-grid", sequence, dist)
    if dist == "ood" and sequence == "MPRAGE":
        return _mprage_ood_ti(n, g).float()
    p = sample_parameters(sequence, n, distribution=dist, generator=g, dtype=torch.float64)
    if dist == "ood" and sequence == "SPGR" and n > 0:
        k = max(1, math.ceil(n / 5))
        lo, hi = LOW_FA_RANGE_DEG
        fa = lo + (hi - lo) * torch.rand(k, generator=g, dtype=torch.float64)
        p[:k, 2] = torch.deg2rad(fa)
    return p.float()


def validation_parameters(profile: Profile, sequence: str) -> torch.Tensor:
    """Fixed IoD parameters of the validation subjects used for calibration."""
    from physeg.simulation import sample_parameters

    g = generator_of(profile.seed, "calibration-grid", sequence)
    return sample_parameters(sequence, profile.n_val_realisations, distribution="iod", generator=g).float()


def parameter_columns(sequence: str, params: torch.Tensor) -> list[dict[str, Any]]:
    """Display columns per parameter vector: MPRAGE ``TI_s``; SPGR ``TR_ms, TE_ms, FA_deg, low_fa``; ``params``."""
    p = torch.as_tensor(params, dtype=torch.float64).cpu().numpy()
    rows = []
    for v in p:
        if sequence == "MPRAGE":
            rows.append({"TI_s": float(v[0]), "params": f"TI={v[0] * 1000:.0f} ms", "low_fa": False})
        else:
            fa = float(np.rad2deg(v[2]))
            rows.append({"TR_ms": float(v[0] * 1000), "TE_ms": float(v[1] * 1000), "FA_deg": fa,
                         "low_fa": fa < LOW_FA_DEG,
                         "params": f"TR={v[0] * 1000:.1f} ms, TE={v[1] * 1000:.1f} ms, FA={fa:.1f}°"})
    return rows


def test_grid(profile: Profile) -> pd.DataFrame:
    """The whole test grid as a table: sequence, distribution, param_index and parameter columns."""
    rows = []
    for s in profile.sequences:
        for d in DISTRIBUTIONS:
            for i, c in enumerate(parameter_columns(s, test_parameters(profile, s, d))):
                rows.append({"sequence": s, "distribution": d, "param_index": i, **c})
    return pd.DataFrame(rows)


#: The parameter that orders each sequence's grid for the uncertainty subset: TI for MPRAGE, FA for SPGR
#: (the parameters the paper's Figure 3 and §4.1 discuss: interval width against TI and low flip angles).
STRATIFY_BY: dict[str, int] = {"MPRAGE": 0, "SPGR": 2}


def uncertainty_subset(params: torch.Tensor, sequence: str, n_selected: int | None) -> list[int]:
    """Indices of the test-grid images ``params`` (N, P) that get uncertainty samples.

    ``None`` (or ``n_selected >= N``) keeps every image. Otherwise the images
    are ordered by the sequence's stratifying parameter (:data:`STRATIFY_BY`)
    and the one at the centre of each of ``n_selected`` equal strata is taken:
    ranks ``floor((k + ½) N / n)``, ``k = 0 … n − 1``. One image is the median,
    never an extreme of the grid; three of an SPGR OoD grid whose lowest fifth
    has FA < 10° include one of those.
    """
    n_images = int(params.shape[0])
    if n_selected is None or n_selected >= n_images:
        return list(range(n_images))
    if n_selected < 1:
        raise ValueError(f"n_uncertainty_images must be >= 1 or None, got {n_selected}")
    order = torch.argsort(params[:, STRATIFY_BY[sequence]], stable=True).tolist()
    ranks = [int((k + 0.5) * n_images / n_selected) for k in range(n_selected)]
    return sorted(order[r] for r in ranks)


def simulate_grid(subject, sequence: str, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A subject's images ``(N, 1, *S)`` at the grid's parameters ``params`` ``(N, P)``, and ``params`` as float32."""
    from physeg.simulation import simulate

    images = simulate(subject.maps, sequence=sequence, params=params, mask=subject.mask)
    return images, params.float()
