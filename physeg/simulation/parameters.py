r"""Acquisition parameters: names, ranges, validation, sampling and network features.

Internal units are **seconds** and **radians**; degrees only appear at the user
edge (:func:`spgr_params`, :func:`to_display_units`). A batch of parameters is a
``(N, P)`` float tensor whose columns follow :data:`PARAMETER_NAMES`:

* MPRAGE, P = 1: ``[TI]``
* SPGR, P = 3: ``[TR, TE, FA]``
* MP2RAGE, P = 7: ``[TI1, TI2, FA1, FA2, TR, TRcycle, NRO]`` (:mod:`.sequences.mp2rage`)
* MESPGR, P = 4: ``[TR, TE1, dTE, FA]`` (:mod:`.sequences.mespgr`)

Names, units, ranges, rules and features come from the sequence registry
(:mod:`physeg.simulation.sequences`); the tables below are the paper's two.

Ranges (paper §3) are data, :data:`IOD_RANGES` and
:data:`OOD_RANGES`, mapping parameter name to ``(low, high)`` in s / rad:

============  ===================  =====================
parameter     in-distribution      out-of-distribution
============  ===================  =====================
MPRAGE TI     0.6 – 1.2 s          0.1 – 2.0 s
SPGR TR       15 – 100 ms          10 – 200 ms
SPGR TE       4 – 10 ms            2 – 20 ms
SPGR FA       15 – 75°             5 – 90°
============  ===================  =====================

Sampling: ``"iod"`` is uniform in the IoD box. ``"ood"`` is uniform on the
OoD box *minus* the IoD box (outside IoD in at least one parameter), drawn by
vectorised rejection from the OoD box. For SPGR every sample also satisfies
TE < TR (automatic for IoD since max TE = 10 ms < min TR = 15 ms).
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Mapping, Sequence

import torch

from physeg.conventions import IOD, OOD, distribution_name

from .sequences import REGISTRY, get_sequence

__all__ = [
    "SEQUENCES",
    "PARAMETER_NAMES",
    "PARAMETER_UNITS",
    "PHYSICS_FEATURE_NAMES",
    "IOD_RANGES",
    "OOD_RANGES",
    "check_sequence",
    "n_parameters",
    "n_physics_features",
    "validate_parameters",
    "mprage_params",
    "spgr_params",
    "to_display_units",
    "sample_parameters",
    "physics_features",
    "is_in_distribution",
    "is_in_range",
]

SEQUENCES: tuple[str, ...] = tuple(REGISTRY)

PARAMETER_NAMES: Mapping[str, tuple[str, ...]] = MappingProxyType({k: s.names for k, s in REGISTRY.items()})
#: Internal units of each parameter (a name shared by two sequences has the same unit in both).
PARAMETER_UNITS: Mapping[str, str] = MappingProxyType(
    {p.name: p.unit for s in REGISTRY.values() for p in s.parameters}
)

PHYSICS_FEATURE_NAMES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {k: s.feature_names for k, s in REGISTRY.items()}
)

IOD_RANGES: Mapping[str, Mapping[str, tuple[float, float]]] = MappingProxyType(
    {k: s.iod for k, s in REGISTRY.items()}
)
OOD_RANGES: Mapping[str, Mapping[str, tuple[float, float]]] = MappingProxyType(
    {k: s.ood for k, s in REGISTRY.items()}
)

Ranges = Mapping[str, tuple[float, float]]


def check_sequence(sequence: str) -> str:
    """Canonical (upper-case) sequence name; ValueError for an unknown one."""
    if not isinstance(sequence, str) or sequence.upper() not in SEQUENCES:
        raise ValueError(f"unknown sequence {sequence!r}; choose one of {SEQUENCES}")
    return sequence.upper()


def n_parameters(sequence: str) -> int:
    """Number P of acquisition parameters of ``sequence`` (MPRAGE 1, SPGR 3, MP2RAGE 7, MESPGR 4)."""
    return len(PARAMETER_NAMES[check_sequence(sequence)])


def n_physics_features(sequence: str) -> int:
    """Number F of physics features fed to the network (MPRAGE 2, SPGR 6, MP2RAGE 11, MESPGR 7)."""
    return len(PHYSICS_FEATURE_NAMES[check_sequence(sequence)])


def validate_parameters(
    sequence: str,
    params: torch.Tensor | Sequence[Sequence[float]],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""Check a ``(N, P)`` parameter batch against physics and return it as a tensor.

    Rules (seconds, radians): every value finite, then the sequence's own
    rules (:attr:`SequenceSpec.check`), e.g. MPRAGE TI > 0; SPGR TE > 0,
    TR > TE, 0 < FA ≤ π; MP2RAGE a readout timing that fits in the cycle.

    Raises
    ------
    ValueError
        Naming the parameter and its allowed range, for a wrong shape, NaN/inf
        or a value outside the physical range.
    """
    sequence = check_sequence(sequence)
    names = PARAMETER_NAMES[sequence]
    p = torch.as_tensor(params, dtype=dtype, device=device)
    if not p.is_floating_point():
        p = p.to(torch.get_default_dtype())
    if p.ndim != 2 or p.shape[1] != len(names):
        raise ValueError(
            f"{sequence} parameters must have shape (N, {len(names)}) with columns {names}; "
            f"got shape {tuple(p.shape)}"
        )
    bad = ~torch.isfinite(p)
    if bad.any():
        row, col = (int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{sequence} parameter {names[col]} must be finite; got {p[row, col].item()} at row {row}")

    def fail(name: str, rule: str, mask: torch.Tensor, col: int) -> None:
        if mask.any():
            row = int(mask.nonzero()[0, 0])
            unit = PARAMETER_UNITS[name]
            raise ValueError(
                f"{sequence} parameter {name} must be {rule}; got {p[row, col].item():.6g} {unit} at row {row}"
            )

    get_sequence(sequence).check(p, fail)
    return p


def mprage_params(ti_s: torch.Tensor | Sequence[float] | float) -> torch.Tensor:
    """MPRAGE parameter batch ``(N, 1)`` from inversion time(s) in seconds (validated)."""
    ti = torch.as_tensor(ti_s, dtype=torch.get_default_dtype()).reshape(-1, 1)
    return validate_parameters("MPRAGE", ti)


def spgr_params(
    tr_s: torch.Tensor | Sequence[float] | float,
    te_s: torch.Tensor | Sequence[float] | float,
    fa_deg: torch.Tensor | Sequence[float] | float,
) -> torch.Tensor:
    """SPGR parameter batch ``(N, 3)`` [TR s, TE s, FA rad] from TR, TE (s) and FA in **degrees**.

    Arguments broadcast against each other (scalars or 1-D sequences); validated.
    """
    dt = torch.get_default_dtype()
    tr, te, fa = torch.broadcast_tensors(*(torch.as_tensor(v, dtype=dt).reshape(-1) for v in (tr_s, te_s, fa_deg)))
    return validate_parameters("SPGR", torch.stack([tr, te, torch.deg2rad(fa)], dim=1))


def to_display_units(sequence: str, params: torch.Tensor) -> list[dict[str, float]]:
    """Rows as dictionaries in display units: times in ms, FA in degrees (e.g. for tables, captions)."""
    sequence = check_sequence(sequence)
    rows = []
    for row in torch.as_tensor(params).reshape(-1, n_parameters(sequence)).tolist():
        d = {}
        for p, value in zip(get_sequence(sequence).parameters, row):
            if p.unit == "rad":
                d[f"{p.name}_deg"] = math.degrees(value)
            elif p.unit == "count":
                d[p.name] = value
            else:
                d[f"{p.name}_ms"] = 1e3 * value
        rows.append(d)
    return rows


def _ranges_for(sequence: str, ranges: Ranges) -> tuple[torch.Tensor, torch.Tensor]:
    names = PARAMETER_NAMES[sequence]
    missing = [n for n in names if n not in ranges]
    if missing:
        raise ValueError(f"{sequence} range is missing parameters {missing}; need {names}")
    low = torch.tensor([float(ranges[n][0]) for n in names], dtype=torch.float64)
    high = torch.tensor([float(ranges[n][1]) for n in names], dtype=torch.float64)
    if (low > high).any():
        raise ValueError(f"{sequence} range has low > high: {dict(ranges)}")
    return low, high


def is_in_range(sequence: str, params: torch.Tensor, ranges: Ranges) -> torch.Tensor:
    """Boolean ``(N,)``: every parameter of the row inside the closed box ``ranges``."""
    sequence = check_sequence(sequence)
    p = torch.as_tensor(params)
    low, high = (b.to(p.dtype).to(p.device) for b in _ranges_for(sequence, ranges))
    return ((p >= low) & (p <= high)).all(dim=1)


def is_in_distribution(sequence: str, params: torch.Tensor) -> torch.Tensor:
    """Boolean ``(N,)``: row lies inside the in-distribution (training) box :data:`IOD_RANGES`."""
    sequence = check_sequence(sequence)
    return is_in_range(sequence, params, IOD_RANGES[sequence])


def sample_parameters(
    sequence: str,
    n: int,
    *,
    distribution: str | Ranges = IOD,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draw ``n`` parameter vectors, ``(n, P)`` in seconds/radians.

    Parameters
    ----------
    sequence:
        ``"MPRAGE"`` or ``"SPGR"``.
    n:
        Number of realisations (≥ 0).
    distribution:
        ``"iod"``: uniform in :data:`IOD_RANGES`. ``"ood"``: uniform on
        :data:`OOD_RANGES` minus the IoD box (each row outside IoD in at least
        one parameter). A mapping ``{name: (low, high)}``: uniform in that box.
        Rows always satisfy the sequence's feasibility (SPGR TE < TR, MP2RAGE
        timing, ...); counts are rounded to integers.
    generator:
        CPU ``torch.Generator`` for reproducibility (None: global RNG).
        Values are drawn on the CPU in float64, then cast and moved, so a
        seed gives the same parameters on every device.
    """
    sequence = check_sequence(sequence)
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    if isinstance(distribution, str):
        key = distribution_name(distribution)  # IoD / OoD in any letter case (ValueError otherwise)
        box = (IOD_RANGES if key == IOD else OOD_RANGES)[sequence]
        exclude_iod = key == OOD
    else:
        key, box, exclude_iod = "custom", distribution, False
    low, high = _ranges_for(sequence, box)
    spec = get_sequence(sequence)
    P = low.numel()
    accepted: list[torch.Tensor] = []
    count, rounds = 0, 0
    while count < n:
        m = 2 * (n - count) + 16
        u = torch.rand(m, P, generator=generator, dtype=torch.float64)
        cand = low + u * (high - low)
        for name in spec.extra.get("integer", ()):  # counts: rounded before any check
            col = spec.names.index(name)
            cand[:, col] = torch.round(cand[:, col])
        cand = cand.to(dtype)
        keep = torch.ones(m, dtype=torch.bool)
        if exclude_iod:
            keep &= ~is_in_range(sequence, cand, IOD_RANGES[sequence])
        if spec.feasible is not None:
            keep &= spec.feasible(cand)
        cand = cand[keep]
        accepted.append(cand)
        count += cand.shape[0]
        rounds += 1
        if rounds > 1000:
            raise ValueError(f"could not sample {sequence} parameters from {key} range {dict(box)}: empty region")
    out = torch.cat(accepted)[:n] if accepted else torch.empty(0, P, dtype=dtype)
    return out.to(device=device)


def physics_features(sequence: str, params: torch.Tensor) -> torch.Tensor:
    """Features fed to the network (authors' choice), ``(N, F)``, seconds/radians.

    MPRAGE: ``[TI, exp(-TI)]``; SPGR: ``[TR, TE, FA, exp(-TR), exp(-TE), sin(FA)]``;
    the others: :data:`PHYSICS_FEATURE_NAMES` (from the registry).
    """
    sequence = check_sequence(sequence)
    p = torch.as_tensor(params)
    if p.ndim != 2 or p.shape[1] != n_parameters(sequence):
        raise ValueError(f"{sequence} parameters must have shape (N, {n_parameters(sequence)}); got {tuple(p.shape)}")
    return get_sequence(sequence).features(p)
