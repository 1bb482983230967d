"""Which floating-point precision a training or inference step runs in, and saying so (provenance).

Autocast runs the matrix-heavy operations (convolutions, linear layers) in a
16-bit type and keeps reductions and the losses in float32
(:mod:`physeg.models.losses` casts logits to float32 itself). bfloat16 has
float32's 8 exponent bits, so no loss scaling is needed (unlike float16), at
the cost of 8 significant bits instead of 24 — enough for segmentation
training (the paper's nnU-Net [10] trains in mixed precision), and only worth
it where the hardware multiplies bf16 natively:

* CUDA: bf16 autocast when the GPU supports bf16 natively (compute
  capability ≥ 8.0, e.g. A100/H100), else float32.
* CPU: bf16 autocast only when the processor has bf16 instructions —
  x86 ``avx512_bf16`` or ``amx_bf16``, ARM ``bf16`` (flags of
  ``/proc/cpuinfo``, or torch's own CPU probe). Without them oneDNN
  emulates bf16 with conversions and a step is far *slower* than float32
  (demo-size Phys-Strat-Aug step on an AVX2 AMD EPYC, one thread: 1.4 s in
  float32, 23 s under bf16 autocast; ``benchmarks/convergence.py``), so float32.
* Anything else (MPS, …): float32.

:func:`choose_precision` decides, :meth:`Precision.context` is the context
manager to wrap the forward pass and loss in, and :meth:`Precision.describe`
is the sentence to store with a model's provenance (which dtype ran, and why).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager

import torch

#: ``/proc/cpuinfo`` flags that mean native bf16 arithmetic (x86 AVX-512 BF16, AMX; ARMv8.6 BF16).
CPU_BF16_FLAGS: frozenset[str] = frozenset({"avx512_bf16", "amx_bf16", "bf16"})

#: Requests :func:`choose_precision` understands.
MODES: tuple[str, ...] = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class Precision:
    """The precision of a step on one device.

    Attributes
    ----------
    device_type
        ``"cuda"``, ``"cpu"``, … (``torch.device.type``).
    dtype
        The autocast dtype (``torch.bfloat16``), or ``None`` for plain float32.
    reason
        Why, in words (hardware support or an explicit request).
    """

    device_type: str
    dtype: torch.dtype | None
    reason: str

    @property
    def name(self) -> str:
        """``"bf16-autocast"`` or ``"fp32"`` (short, for tables and file names)."""
        return "bf16-autocast" if self.dtype == torch.bfloat16 else "fp32"

    def context(self) -> ContextManager:
        """``torch.autocast(device_type, dtype)`` or a no-op context for float32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def describe(self) -> str:
        """One sentence for provenance, e.g. ``"fp32 on cpu: the CPU has no native bf16 (…)"``."""
        what = "bfloat16 autocast (float32 weights and losses)" if self.dtype is not None else "float32"
        return f"{what} on {self.device_type}: {self.reason}"


def cpu_flags(*, cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The feature flags of the first processor in ``cpuinfo`` (x86 ``flags``, ARM ``Features``);
    empty when the file does not exist (not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def cpu_has_native_bf16(*, flags: Iterable[str] | None = None) -> bool:
    """Whether this CPU computes bf16 natively: any of :data:`CPU_BF16_FLAGS` in ``flags``
    (default: :func:`cpu_flags`), or torch's probe of AVX-512 BF16 / AMX when ``flags`` is not given."""
    if flags is not None:
        return bool(CPU_BF16_FLAGS & set(flags))
    if CPU_BF16_FLAGS & cpu_flags():
        return True
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, p, lambda: False)()) for p in probes)


def _cuda_bf16(device: torch.device) -> bool:
    """Native (not emulated) bf16 on this CUDA device."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # older torch without the keyword
        major, _ = torch.cuda.get_device_capability(device)
        return major >= 8


def choose_precision(*, device: torch.device | str, mode: str = "auto",
                     flags: Iterable[str] | None = None) -> Precision:
    """The precision for ``device`` (module docstring).

    Parameters
    ----------
    device
        Where the step runs.
    mode
        ``"auto"`` (hardware decides), ``"bf16"`` (bf16 autocast whatever the
        hardware: benchmarks) or ``"fp32"``.
    flags
        CPU flags to decide on instead of this machine's (tests).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    dev = torch.device(device)
    if mode == "fp32":
        return Precision(dev.type, None, "float32 requested")
    if mode == "bf16":
        return Precision(dev.type, torch.bfloat16, "bf16 autocast requested")
    if dev.type == "cuda":
        if _cuda_bf16(dev):
            return Precision("cuda", torch.bfloat16, "the GPU computes bf16 natively")
        return Precision("cuda", None, "the GPU has no native bf16")
    if dev.type == "cpu":
        if cpu_has_native_bf16(flags=flags):
            return Precision("cpu", torch.bfloat16, "the CPU has native bf16 instructions (avx512_bf16/amx_bf16/bf16)")
        return Precision("cpu", None, "the CPU has no native bf16 instructions (no avx512_bf16, amx_bf16 or bf16 "
                                      "flag), where bf16 is emulated and slower")
    return Precision(dev.type, None, f"no bf16 autocast policy for {dev.type}")


def autocast_context(*, device: torch.device | str, mode: str = "auto") -> ContextManager:
    """``choose_precision(device=device, mode=mode).context()``."""
    return choose_precision(device=device, mode=mode).context()


def describe_precision(*, device: torch.device | str, mode: str = "auto") -> str:
    """``choose_precision(device=device, mode=mode).describe()``: the sentence for provenance."""
    return choose_precision(device=device, mode=mode).describe()
