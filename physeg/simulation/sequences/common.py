r"""What every sequence module shares: map cleaning and the :class:`SequenceSpec` record.

Units inside the package: times in **seconds**, angles in **radians**, proton
density (PD) relative (a.u.), counts as floats holding integers.

Map cleaning (maps come from fits and contain background, fitting failures, ...):

* PD: NaN, ±inf and negative values become 0 (no signal).
* T1, T2*: NaN, -inf and values below :data:`EPS_S` (= 1e-6 s, including 0 and
  negatives) become :data:`EPS_S`; +inf is kept and means "no relaxation"
  (rate 0), which is finite in every equation of the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping


__all__ = ["EPS_S", "clean_pd", "clean_time", "clean_maps", "ParameterSpec", "SequenceSpec", "Fail"]

#: Smallest admissible relaxation time (seconds).
EPS_S: float = 1e-6

#: ``fail(name, rule, mask, col)`` raises ValueError naming the first row where ``mask`` holds.
Fail = Callable[..., None]


def clean_pd(pd: torch.Tensor) -> torch.Tensor:
    """Proton density with NaN, ±inf and negatives replaced by 0 (new tensor)."""
    import torch
    pd = torch.as_tensor(pd)
    return torch.nan_to_num(pd, nan=0.0, posinf=0.0, neginf=0.0).clamp_min_(0.0)


def clean_time(t: torch.Tensor, *, eps: float = EPS_S) -> torch.Tensor:
    """Relaxation time (s) with NaN, -inf and values < ``eps`` replaced by ``eps``.

    +inf is kept (no relaxation; its rate ``1/t`` is 0). Returns a new tensor.
    """
    import torch
    t = torch.as_tensor(t)
    t = torch.where(torch.isnan(t), torch.full_like(t, eps), t)
    return t.clamp_min(eps)


def clean_maps(maps: torch.Tensor) -> torch.Tensor:
    """Clean a ``(3, ...)`` map tensor ``[PD, T1 (s), T2* (s)]`` (see module docstring)."""
    import torch
    return torch.stack([clean_pd(maps[0]), clean_time(maps[1]), clean_time(maps[2])])


@dataclass(frozen=True)
class ParameterSpec:
    """One acquisition parameter of a sequence.

    ``unit``: ``"s"``, ``"rad"`` or ``"count"`` (an integer). ``flag``: the
    ``physeg simulate`` option (user units: seconds, degrees, counts).
    ``sidecar``: its BIDS sidecar key (seconds, degrees). ``check_as``: the
    legacy name (TI, TR, TE, FA) whose unit sanity checks apply at the CLI edge.
    """

    name: str
    unit: str
    flag: str
    sidecar: str
    description: str
    check_as: str | None = None


@dataclass(frozen=True)
class SequenceSpec:
    """Everything the layer, the TorchIO transform, the CLI and training need about one sequence.

    ``channels(pd, t1, t2s, params, *, b1)`` returns the *signed real* signals
    ``(N, C, V)`` of the ``(V,)`` cleaned maps for ``(N, P)`` parameters, with
    ``b1`` the relative flip-angle scale ``(N, V)`` (``None``: 1 everywhere).
    ``outputs(re, im, *, mode, sign)`` turns the (possibly noisy, ``im`` the
    imaginary part or ``None``) channels into the images ``(N, C', V)``:
    ``mode="default"`` gives the one image the network sees, ``"all"`` every
    image the scanner writes (:attr:`output_names`).
    """

    name: str
    parameters: tuple[ParameterSpec, ...]
    iod: Mapping[str, tuple[float, float]]
    ood: Mapping[str, tuple[float, float]]
    feature_names: tuple[str, ...]
    features: Callable[[torch.Tensor], torch.Tensor]
    check: Callable[[torch.Tensor, Fail], None]
    channels: Callable[..., torch.Tensor]
    outputs: Callable[..., torch.Tensor]
    #: Names of the images of ``outputs(mode=...)``, per mode.
    output_names: Mapping[str, tuple[str, ...]]
    #: Row constraints beyond the boxes, as a boolean ``(N,)`` of feasible rows (sampling).
    feasible: Callable[[torch.Tensor], torch.Tensor] | None = None
    #: ``sidecars(row, mode)``: one BIDS sidecar dict per image of ``outputs(mode=...)`` (row in s/rad);
    #: ``None``: every image gets ``{parameter.sidecar: value}`` (seconds, degrees).
    sidecars: Callable[[list[float], str], list[dict]] | None = None
    #: ``stems(mode)``: BIDS-like file-name endings of the images, e.g. ``"inv-1_MP2RAGE"``; ``None``: the name.
    stems: Callable[[str], tuple[str, ...]] | None = None
    equation: str = ""
    extra: Mapping[str, object] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        """Parameter names in column order."""
        return tuple(p.name for p in self.parameters)

    @property
    def units(self) -> dict[str, str]:
        """``{name: unit}``."""
        return {p.name: p.unit for p in self.parameters}


def magnitude(re: torch.Tensor, im: torch.Tensor | None) -> torch.Tensor:
    """``|re + i im|`` (``|re|`` when ``im`` is None); new tensor."""
    import torch
    return re.abs() if im is None else torch.hypot(re, im)


def check_angles(p: torch.Tensor, cols: Mapping[str, int], fail: Fail, sequence: str) -> None:
    """Flip angles in (0, π] rad, with a hint when degrees were passed as radians."""
    import math

    for name, col in cols.items():
        over = p[:, col] > math.pi
        if over.any():
            row = int(over.nonzero()[0, 0])
            raise ValueError(
                f"{sequence} parameter {name} must be in (0, π] rad = (0, 180] degrees; got {p[row, col].item():.6g} "
                f"rad at row {row} (flip angles are radians internally: convert degrees with math.radians)"
            )
        fail(name, "in (0, π] rad = (0, 180] degrees", p[:, col] <= 0, col)


def bids_value(param: ParameterSpec, value: float) -> float:
    """A parameter in BIDS sidecar units: degrees for angles, seconds for times, integers for counts."""
    import math

    if param.unit == "rad":
        return round(math.degrees(value), 6)
    if param.unit == "count":
        return int(round(value))
    return round(float(value), 9)


def default_sidecars(spec: "SequenceSpec", row: list[float], mode: str) -> list[dict]:
    """``{parameter.sidecar: value}`` for every image of ``mode`` (BIDS units)."""
    doc = {p.sidecar: bids_value(p, v) for p, v in zip(spec.parameters, row)}
    return [dict(doc) for _ in spec.output_names[mode]]
