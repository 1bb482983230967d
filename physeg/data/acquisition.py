r"""Acquisition parameters of a user's image: BIDS sidecar or flags, units checked (paper §2.1).

The network reads the acquisition parameters θ in seconds and radians
(MPRAGE ``[TI]``, SPGR ``[TR, TE, FA]``). Users give them in BIDS units: the
JSON sidecar next to the image (``InversionTime``, ``RepetitionTime``,
``EchoTime`` in **seconds**, ``FlipAngle`` in **degrees**) or command-line
flags in the same units, which take precedence. Unit checks (kept
deliberately simple):

=========  ==================================  ===========================
parameter  refused as "looks like milliseconds"  note
=========  ==================================  ===========================
TI         > 10 (s)                             TI of a brain MPRAGE ≲ 3 s
TR         > 10 (s)
TE         > 1 (s)
FA         > 180 (degrees): refused             ≤ π: **warning** only -- it
                                                may be radians (BIDS says
                                                degrees), or a tiny angle
=========  ==================================  ===========================

A missing sidecar or parameter, or a value in the wrong units, raises
:class:`physeg.cli.errors.UsageError` naming the file and the flag to use.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from physeg.cli.errors import UsageError
from physeg.data.nifti import sidecar_path

#: BIDS sidecar key of each acquisition parameter (TI/TR/TE seconds, FA degrees).
SIDECAR_KEYS: dict[str, str] = {
    "TI": "InversionTime",
    "TR": "RepetitionTime",
    "TE": "EchoTime",
    "FA": "FlipAngle",
}
#: Largest plausible values in seconds; above them a time "looks like milliseconds".
MAX_SECONDS: dict[str, float] = {"TI": 10.0, "TR": 10.0, "TE": 1.0}
#: Flip angles (degrees) at or below this value may be radians: warning.
FA_RADIANS_SUSPICIOUS_DEG: float = math.pi


def _sequence_module():
    """:mod:`physeg.simulation` (parameter names, ranges), imported on first use to keep this module light."""
    from physeg import simulation

    return simulation


def check_value(name: str, value: float, source: str) -> list[str]:
    """Unit sanity of one parameter in user units (TI/TR/TE seconds, FA degrees).

    Raises :class:`UsageError` for values that look like milliseconds (see the
    table in the module docstring) or are not positive; returns warnings.
    """
    unit = "degrees" if name == "FA" else "s"
    if isinstance(value, (bool, np.bool_)):  # bool is an int in Python: true would read as 1 s
        raise UsageError(f"{source}: {name} must be a number in {unit}; got {str(value).lower()}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{source}: {name} must be a number; got {value!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"{source}: {name} must be a positive number in {unit}; got {value}")
    if name in MAX_SECONDS and value > MAX_SECONDS[name]:
        raise UsageError(
            f"{source}: {name} = {value:g} looks like milliseconds; physeg expects seconds "
            f"(BIDS convention), e.g. {value / 1000:g} for {value:g} ms"
        )
    if name == "FA":
        if value > 180:
            raise UsageError(f"{source}: FlipAngle = {value:g} degrees is above 180")
        if value <= FA_RADIANS_SUSPICIOUS_DEG:
            return [
                f"{source}: FlipAngle = {value:g} is read as degrees (BIDS); if it is in radians "
                f"({math.degrees(value):.1f} degrees) pass --fa in degrees"
            ]
    return []


@dataclass
class Acquisition:
    """Sequence and parameters of one image; ``values`` in user units (s, degrees)."""

    sequence: str
    values: dict[str, float]
    source: str
    warnings: list[str] = field(default_factory=list)

    def tensor(self) -> torch.Tensor:
        """``(1, P)`` parameters in seconds and radians (project convention)."""
        sim = _sequence_module()
        names = sim.PARAMETER_NAMES[self.sequence]
        row = [math.radians(self.values[n]) if n == "FA" else self.values[n] for n in names]
        return sim.validate_parameters(self.sequence, torch.tensor([row], dtype=torch.float64))

    def bids(self) -> dict[str, float]:
        """Parameters under their BIDS sidecar names (seconds, degrees)."""
        return {SIDECAR_KEYS[n]: v for n, v in self.values.items()}


def sequence_from_sidecar(meta: Mapping[str, Any]) -> str | None:
    """MPRAGE or SPGR when a sidecar field names it (``PulseSequenceType``, …), else ``None``.

    MPRAGE: the text contains MPRAGE or TFL (Siemens turbo-FLASH); SPGR: SPGR, FLASH or SPOILED.
    """
    for key in ("PulseSequenceType", "ScanningSequence", "SequenceName", "SeriesDescription"):
        text = str(meta.get(key, "")).upper().replace("-", "").replace("_", "").replace(" ", "")
        if "MPRAGE" in text or "TFL" in text:
            return "MPRAGE"
        if "SPGR" in text or "FLASH" in text or "SPOILED" in text:
            return "SPGR"
    return None


def resolve_acquisition(
    image: str | Path,
    *,
    sequence: str | None = None,
    ti: float | None = None,
    tr: float | None = None,
    te: float | None = None,
    fa: float | None = None,
) -> Acquisition:
    """Sequence and parameters of ``image``: flags first, then the BIDS sidecar.

    Flags (``ti``/``tr``/``te`` seconds, ``fa`` degrees) override sidecar
    values. The sequence is ``sequence``, else the one the sidecar names
    (``PulseSequenceType`` …), else MPRAGE when an inversion time is known,
    else SPGR. Raises :class:`UsageError` for a missing sidecar or parameter
    and for values in the wrong units.
    """
    sim = _sequence_module()
    flags = {k: v for k, v in (("TI", ti), ("TR", tr), ("TE", te), ("FA", fa)) if v is not None}
    side = sidecar_path(image)
    meta: dict[str, Any] = {}
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"cannot read the JSON sidecar {side} ({exc})") from None
        if not isinstance(meta, dict):
            raise UsageError(f"the JSON sidecar {side} is not a JSON object")
    if sequence is not None:
        try:
            sequence = sim.check_sequence(sequence)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    else:
        sequence = sequence_from_sidecar(meta)
        if sequence is None:
            has_ti = "TI" in flags or (
                meta.get("InversionTime") is not None and not ({"TR", "TE", "FA"} & set(flags))
            )
            sequence = "MPRAGE" if has_ti else "SPGR"
    names = sim.PARAMETER_NAMES[sequence]
    values: dict[str, float] = {}
    warnings: list[str] = []
    sources = set()
    for name in names:
        if name in flags:
            value, where = flags[name], f"--{name.lower()}"
            sources.add("flags")
        else:
            key = SIDECAR_KEYS[name]
            if not side.is_file():
                missing = ", ".join(f"--{n.lower()}" for n in names)
                raise UsageError(
                    f"{image}: no JSON sidecar {side.name} and no {name} given; "
                    f"{sequence} needs {', '.join(names)} (pass {missing}, times in s, FA in degrees)"
                )
            if key not in meta or meta[key] is None:
                raise UsageError(
                    f"{side}: missing {key} ({name}) needed for {sequence}; add it (BIDS: "
                    f"{'degrees' if name == 'FA' else 'seconds'}) or pass --{name.lower()}"
                )
            value, where = meta[key], f"{side} {key}"
            if isinstance(value, list):
                if len(value) != 1:
                    raise UsageError(f"{side}: {key} has {len(value)} values (multi-echo?); pass --{name.lower()}")
                value = value[0]
            sources.add("sidecar")
        warnings += check_value(name, value, where)
        values[name] = float(value)
    if sequence == "SPGR" and values["TR"] <= values["TE"]:
        raise UsageError(f"{image}: TR ({values['TR']:g} s) must be longer than TE ({values['TE']:g} s)")
    return Acquisition(sequence=sequence, values=values, source="+".join(sorted(sources)), warnings=warnings)


def describe_values(sequence: str, values: Mapping[str, float]) -> str:
    """``"TI=900 ms"`` / ``"TR=20 ms, TE=5 ms, FA=30°"``."""
    parts = []
    for n in _sequence_module().PARAMETER_NAMES[sequence]:
        v = values[n]
        parts.append(f"FA={v:.3g}°" if n == "FA" else f"{n}={1000 * v:.4g} ms")
    return ", ".join(parts)
