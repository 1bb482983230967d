r"""The registry path of the simulation layer: any sequence, any output mode, with artefacts (§2.3 + physics artefacts).

:func:`physeg.simulation.layer.simulate` sends here whatever its two fused
kernels (MPRAGE, SPGR without artefacts) do not cover. On the support (finite
PD > 0, where every signal lives) it evaluates the sequence's signed channels
(:attr:`SequenceSpec.channels`) with the transmit field B1+ inside the
equations, multiplies them by the receive bias, then

* without noise: turns them into the output images on the support
  (:attr:`SequenceSpec.outputs`) and scatters them into a zero volume;
* with noise: scatters the channels into the volume, adds complex Gaussian noise
  of standard deviation :math:`\sigma = \overline{|S|}/\mathrm{SNR}` per
  realisation to every voxel (:mod:`physeg.simulation.artefacts`) and forms the
  output images from the noisy complex channels (magnitude: Rician).

Normalisation as in the layer: per image and output channel, divided by the
99th percentile of its magnitude inside the mask (default: the support) and
clipped.
"""

from __future__ import annotations

import numpy as np
import torch

from .artefacts import ArtefactDraw, field_values
from .kernels import _mprage_kernel, _spgr_kernel
from .normalisation import _percentile_scale
from .sequences import get_sequence

__all__ = ["simulate_registry", "simulate_fused"]


def _device_generator(generator: torch.Generator | None, device) -> torch.Generator | None:
    """``generator`` on the CPU; elsewhere a device generator seeded by one draw from it (``None`` stays)."""
    if generator is None or torch.device(device).type == "cpu":
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def _randn(shape, *, generator: torch.Generator | None, dtype, device) -> torch.Tensor:
    """Standard normal draws from :func:`_device_generator`."""
    return torch.randn(shape, generator=_device_generator(generator, device), dtype=dtype, device=device)


def _rayleigh(n: int, v: int, sigma: torch.Tensor, *, generator: torch.Generator | None, dtype,
              device) -> torch.Tensor:
    """``(n, v)`` Rayleigh draws :math:`\\sigma\\sqrt{-2\\ln(1-U)}` (the magnitude of complex Gaussian noise).

    On the CPU the uniforms come from NumPy's SFC64 generator seeded by one draw
    from ``generator`` (torch's CPU generator is Mersenne Twister, about half as fast here).
    """
    if torch.device(device).type == "cpu" and dtype in (torch.float32, torch.float64):
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        rng = np.random.Generator(np.random.SFC64(seed))
        u = torch.from_numpy(rng.random((n, v), dtype=np.float32 if dtype == torch.float32 else np.float64))
    else:
        u = torch.empty(n, v, dtype=dtype, device=device).uniform_(generator=_device_generator(generator, device))
    return u.neg_().log1p_().mul_(-2.0).sqrt_().mul_(sigma)


def simulate_fused(
    gathered: torch.Tensor,
    support: torch.Tensor,
    *,
    sequence: str,
    params: torch.Tensor,
    spatial: tuple[int, ...],
    mask: torch.Tensor | None,
    sign: str,
    artefacts: ArtefactDraw,
    percentile: float,
    clip_range: tuple[float, float] | None,
    block: int | None,
) -> torch.Tensor:
    """MPRAGE / SPGR with artefacts through the fused kernels: ``(N, V)``; same physics as :func:`simulate_registry`.

    B1+ and the receive bias enter the cache-blocked kernels
    (:mod:`physeg.simulation.kernels`). Noise: Rician on the support,
    :math:`|S + \\sigma(n_1 + i n_2)|`, and Rayleigh in the background, drawn
    directly as :math:`\\sigma\\sqrt{-2\\ln(1-U)}`, :math:`U \\sim U(0,1)` (the
    magnitude of complex Gaussian noise). ``sign="clip"``/``"signed"`` MPRAGE keep
    the real part :math:`S + \\sigma n_1` (background: :math:`\\sigma n_1`).
    """
    n, v, dtype, device = params.shape[0], int(torch.Size(spatial).numel()), gathered.dtype, gathered.device
    b1 = field_values(artefacts.b1, support, spatial, n=n, dtype=dtype)
    bias = field_values(artefacts.bias, support, spatial, n=n, dtype=dtype)
    noisy = artefacts.snr is not None
    sig = torch.empty(n, support.numel(), dtype=dtype, device=device)
    if support.numel():
        if sequence == "MPRAGE":
            _mprage_kernel(gathered, params, sig, "signed" if noisy else sign, block, pd_clean=True, b1=b1, bias=bias)
        else:
            _spgr_kernel(gathered, params, sig, block, pd_clean=True, b1=b1, bias=bias)
    if not noisy:
        out = torch.zeros(n, v, dtype=dtype, device=device)
    else:
        g = _device_generator(artefacts.generator, device)
        mean = sig.abs().mean(1) if sig.shape[1] else torch.zeros(n, dtype=dtype, device=device)
        sigma = (mean / artefacts.snr.to(dtype=dtype, device=device))[:, None]
        magnitude = sequence == "SPGR" or sign == "magnitude"
        if magnitude:
            out = _rayleigh(n, v, sigma, generator=artefacts.generator, dtype=dtype, device=device)
        else:
            out = torch.randn(n, v, generator=g, dtype=dtype, device=device).mul_(sigma)
        sig.addcmul_(torch.randn(sig.shape, generator=g, dtype=dtype, device=device), sigma)
        if magnitude:
            sig = torch.hypot(sig, torch.randn(sig.shape, generator=g, dtype=dtype, device=device).mul_(sigma))
        elif sign == "clip":
            out.clamp_min_(0.0)
            sig.clamp_min_(0.0)
    out.index_copy_(1, support, sig)
    if clip_range is not None:
        _normalise(out[:, None], support=support, mask=mask, percentile=percentile, clip_range=clip_range)
    return out


def simulate_registry(
    gathered: torch.Tensor,
    support: torch.Tensor,
    *,
    sequence: str,
    params: torch.Tensor,
    spatial: tuple[int, ...],
    mask: torch.Tensor | None,
    outputs: str,
    sign: str,
    artefacts: ArtefactDraw | None,
    percentile: float,
    clip_range: tuple[float, float] | None,
) -> torch.Tensor:
    """Images ``(N, C, V)`` of the support maps ``gathered`` (3, V_s) at flat indices ``support`` (V_s,).

    ``clip_range``: ``None`` (no normalisation) or the clip after dividing by the percentile.
    """
    spec = get_sequence(sequence)
    n, v, dtype, device = params.shape[0], int(torch.Size(spatial).numel()), gathered.dtype, gathered.device
    art = artefacts or ArtefactDraw()
    b1 = field_values(art.b1, support, spatial, n=n, dtype=dtype)
    re = spec.channels(gathered[0], gathered[1], gathered[2], params, b1=b1)  # (N, C, V_s)
    bias = field_values(art.bias, support, spatial, n=n, dtype=dtype)
    if bias is not None:
        re.mul_(bias[:, None, :])
    if art.snr is None:
        img_s = spec.outputs(re, None, mode=outputs, sign=sign)
        out = torch.zeros(n, img_s.shape[1], v, dtype=dtype, device=device)
        out.index_copy_(2, support, img_s)
    else:
        mean = re.abs().mean(dim=(1, 2)) if re.shape[2] else torch.zeros(n, dtype=dtype, device=device)
        sigma = (mean / art.snr.to(dtype=dtype, device=device))[:, None, None]
        full = torch.zeros(n, re.shape[1], v, dtype=dtype, device=device)
        full.index_copy_(2, support, re)
        full.addcmul_(_randn(full.shape, generator=art.generator, dtype=dtype, device=device), sigma)
        im = _randn(full.shape, generator=art.generator, dtype=dtype, device=device).mul_(sigma)
        out = spec.outputs(full, im, mode=outputs, sign=sign)
    if clip_range is not None:
        _normalise(out, support=support, mask=mask, percentile=percentile, clip_range=clip_range)
    return out


def _normalise(out: torch.Tensor, *, support: torch.Tensor, mask: torch.Tensor | None, percentile: float,
               clip_range: tuple[float, float]) -> None:
    """Per image and channel: divide by the percentile of |value| in the mask (default: support); clip. In place."""
    n, c, v = out.shape
    idx = support if mask is None else mask.reshape(-1).nonzero().squeeze(1)
    rows = out.reshape(n * c, v)
    vals = rows.index_select(1, idx).abs_()
    scale = _percentile_scale(vals, 0, percentile)[:, None]
    rows.div_(scale).clamp_(*clip_range)
