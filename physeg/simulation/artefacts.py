r"""MR artefacts as physics: a smooth transmit field B1+, a smooth receive bias and Rician noise.

Paper §5 names B0/B1 inhomogeneity as future work; TorchIO's ``RandomBiasField``
and SynthSeg multiply the finished image by a smooth field. Here the transmit
field enters the **signal equations** (flip angles and MPRAGE's inversion
efficiency, see :mod:`physeg.simulation.sequences`), so it changes contrast the
way a scanner does; only the receive field multiplies the signal.

Smooth fields. With voxel coordinates scaled to :math:`[-1, 1]` per axis and the
monomials :math:`m_k = x^a y^b z^c`, :math:`1 \le a+b+c \le d` (order
:math:`d`, default 2: 9 terms), a field draws coefficients
:math:`c_k \sim U(-1, 1)` and is normalised to a peak of 1 over the voxels it is
evaluated on (the head, PD > 0):

.. math::

    f = \frac{\sum_k c_k m_k}{\max |\sum_k c_k m_k|},\qquad
    B_1^+ = 1 + A_{B_1} f,\qquad b_\text{receive} = e^{A_b f'}

with amplitudes :math:`A_{B_1}` (peak relative flip-angle error; 3 T heads show
±20–30 %) and :math:`A_b` (peak log receive bias) drawn per realisation,
uniformly from the stated ranges of :class:`Artefacts`.

Noise. Each signal channel :math:`S` becomes the complex value
:math:`S + \sigma(n_1 + i n_2)`, :math:`n_{1,2} \sim N(0,1)` i.i.d. per voxel,
realisation and channel, in the whole volume (the background becomes Rayleigh
noise); magnitude images are therefore Rician. The noise level is
:math:`\sigma = \overline{|S|}/\mathrm{SNR}` with :math:`\overline{|S|}` the mean
noise-free signal magnitude over the head and the channels of that
realisation, and SNR drawn uniformly from :attr:`Artefacts.snr`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Artefacts", "ArtefactDraw", "SmoothField", "monomial_exponents", "field_values", "select", "describe"]


def monomial_exponents(order: int) -> list[tuple[int, int, int]]:
    """Exponents ``(a, b, c)`` with ``1 <= a + b + c <= order``, in a fixed order."""
    return [(a, b, c) for d in range(1, order + 1) for a in range(d, -1, -1) for b in range(d - a, -1, -1)
            for c in (d - a - b,)]


@dataclass(frozen=True)
class SmoothField:
    """Per-realisation smooth field: ``coef`` (N, K) monomial coefficients, ``amplitude`` (N,), ``kind``.

    ``kind="b1"``: :math:`1 + A f`; ``kind="bias"``: :math:`e^{A f}` (module docstring).
    """

    coef: torch.Tensor
    amplitude: torch.Tensor
    order: int
    kind: str

    def values(self, index: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
        """Field ``(N, V')`` at the flat voxel indices ``index`` (V',) of a volume of shape ``spatial``."""
        basis = monomial_basis(index, spatial, order=self.order, dtype=self.coef.dtype)
        f = self.coef.to(index.device) @ basis
        peak = f.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(f.dtype).tiny) if f.shape[1] else 1.0
        f = f.div_(peak).mul_(self.amplitude.to(index.device)[:, None])
        return f.add_(1.0) if self.kind == "b1" else f.exp_()


#: Bases of the last few voxel sets (exact match of the indices; a subject is simulated again and again in
#: training, and the monomials cost more than the fields themselves). Entries: (key, index, basis).
_BASIS_CACHE: list[tuple[tuple, torch.Tensor, torch.Tensor]] = []
_BASIS_CACHE_SIZE: int = 2


def monomial_basis(index: torch.Tensor, spatial: tuple[int, ...], *, order: int, dtype: torch.dtype) -> torch.Tensor:
    """``(K, V')`` monomials :math:`x^a y^b z^c` (:func:`monomial_exponents`) at flat indices ``index``.

    Coordinates are scaled to [-1, 1] per axis. The last :data:`_BASIS_CACHE_SIZE`
    results are kept and reused when ``index`` is equal element for element.
    """
    key = (tuple(spatial), order, dtype, index.device, index.numel())
    for k, idx, basis in _BASIS_CACHE:
        if k == key and torch.equal(idx, index):
            return basis
    coords, rest = [], index
    for size in reversed(spatial):
        coords.append(rest % size)
        rest = torch.div(rest, size, rounding_mode="floor")
    x, y, z = (2.0 * c.to(dtype) / max(s - 1, 1) - 1.0 for c, s in zip(reversed(coords), spatial))
    powers = [[torch.ones_like(v)] for v in (x, y, z)]
    for p, v in zip(powers, (x, y, z)):
        for _ in range(order):
            p.append(p[-1] * v)
    basis = torch.stack([powers[0][a] * powers[1][b] * powers[2][c] for a, b, c in monomial_exponents(order)])
    _BASIS_CACHE.insert(0, (key, index.clone(), basis))
    del _BASIS_CACHE[_BASIS_CACHE_SIZE:]
    return basis


def field_values(field, index: torch.Tensor, spatial: tuple[int, ...], *, n: int, dtype) -> torch.Tensor | None:
    """``(N, V')`` values of a :class:`SmoothField`, or of a tensor map ``(X, Y, Z)`` / ``(N, X, Y, Z)``."""
    if field is None:
        return None
    if isinstance(field, SmoothField):
        return field.values(index, spatial).to(dtype)
    t = torch.as_tensor(field, dtype=dtype, device=index.device)
    if tuple(t.shape[-3:]) != tuple(spatial) or t.ndim not in (3, 4):
        raise ValueError(f"a field map must have shape (X, Y, Z) or (N, X, Y, Z) with (X, Y, Z) = {spatial}; "
                         f"got {tuple(t.shape)}")
    flat = t.reshape(t.shape[0] if t.ndim == 4 else 1, -1).index_select(1, index)
    return flat.expand(n, -1) if flat.shape[0] == 1 else flat


@dataclass(frozen=True)
class ArtefactDraw:
    """The artefacts of ``N`` realisations: fields (or maps) and SNR (``None`` = off)."""

    b1: SmoothField | torch.Tensor | None = None
    bias: SmoothField | torch.Tensor | None = None
    snr: torch.Tensor | None = None
    #: Generator of the noise (CPU; ``None``: torch's global RNG).
    generator: torch.Generator | None = None

    @property
    def active(self) -> bool:
        return self.b1 is not None or self.bias is not None or self.snr is not None


def _check_range(name: str, r, *, low: float, high: float | None = None) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in r)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair of numbers; got {r!r}") from None
    if not (low <= a <= b) or (high is not None and b > high) or b != b:
        raise ValueError(f"{name} range must satisfy {low} <= low <= high" + (f" <= {high}" if high else "")
                         + f"; got ({a}, {b})")
    return a, b


@dataclass(frozen=True)
class Artefacts:
    """Ranges from which every realisation draws its artefacts (uniformly).

    ``b1``: peak relative flip-angle error :math:`A_{B_1}` (0.2 = up to ±20 %),
    in [0, 0.9]. ``bias``: peak log receive bias :math:`A_b`, in [0, 2].
    ``snr``: signal-to-noise ratio range (> 0), ``None`` for noise-free images.
    ``order``: polynomial order of the fields (1-4).
    """

    b1: tuple[float, float] = (0.0, 0.0)
    bias: tuple[float, float] = (0.0, 0.0)
    snr: tuple[float, float] | None = None
    order: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "b1", _check_range("b1", self.b1, low=0.0, high=0.9))
        object.__setattr__(self, "bias", _check_range("bias", self.bias, low=0.0, high=2.0))
        if self.snr is not None:
            snr = _check_range("snr", self.snr, low=0.0)
            if snr[0] <= 0:
                raise ValueError(f"snr must be > 0; got {self.snr}")
            object.__setattr__(self, "snr", snr)
        if not (isinstance(self.order, int) and 1 <= self.order <= 4):
            raise ValueError(f"order must be an integer in 1..4; got {self.order!r}")

    @property
    def active(self) -> bool:
        return self.b1[1] > 0 or self.bias[1] > 0 or self.snr is not None

    def to_dict(self) -> dict:
        return {"b1": list(self.b1), "bias": list(self.bias), "snr": None if self.snr is None else list(self.snr),
                "order": self.order}

    def draw(self, n: int, *, generator: torch.Generator | None = None,
             dtype: torch.dtype = torch.float32) -> ArtefactDraw:
        """Artefacts of ``n`` realisations, drawn on the CPU from ``generator`` (same draws on every device).

        Draw order (fixed): B1 amplitudes and coefficients, bias amplitudes and
        coefficients, SNR; an inactive artefact draws nothing.
        """
        k = len(monomial_exponents(self.order))

        def uniform(r, size):
            u = torch.rand(size, generator=generator, dtype=torch.float64)
            return (r[0] + u * (r[1] - r[0])).to(dtype)

        fields = []
        for kind, r in (("b1", self.b1), ("bias", self.bias)):
            if r[1] > 0:
                amp = uniform(r, (n,))
                coef = (2.0 * torch.rand(n, k, generator=generator, dtype=torch.float64) - 1.0).to(dtype)
                fields.append(SmoothField(coef, amp, self.order, kind))
            else:
                fields.append(None)
        snr = uniform(self.snr, (n,)) if self.snr is not None else None
        return ArtefactDraw(b1=fields[0], bias=fields[1], snr=snr, generator=generator)


def select(draw: ArtefactDraw | None, i: int) -> ArtefactDraw | None:
    """Realisation ``i`` of a draw (a draw of one), sharing its noise generator."""
    if draw is None:
        return None

    def one(f):
        if isinstance(f, SmoothField):
            return SmoothField(f.coef[i:i + 1], f.amplitude[i:i + 1], f.order, f.kind)
        if isinstance(f, torch.Tensor) and f.ndim == 4:
            return f[i:i + 1]
        return f

    snr = None if draw.snr is None else draw.snr[i:i + 1]
    return ArtefactDraw(b1=one(draw.b1), bias=one(draw.bias), snr=snr, generator=draw.generator)


def describe(draw: ArtefactDraw | None) -> dict:
    """JSON-ready summary of a one-realisation draw: B1+ and bias amplitudes, SNR (``None`` when off)."""
    if draw is None:
        return {"B1Amplitude": None, "ReceiveBiasAmplitude": None, "SNR": None}

    def amp(f):
        return round(float(f.amplitude[0]), 6) if isinstance(f, SmoothField) else (None if f is None else "map")

    return {"B1Amplitude": amp(draw.b1), "ReceiveBiasAmplitude": amp(draw.bias),
            "SNR": None if draw.snr is None else round(float(draw.snr[0]), 4)}
