r"""The simulation layer (paper §2.3): maps of one subject → N simulated images.

:func:`simulate` evaluates the static equations of
:mod:`physeg.simulation.equations` for ``N`` parameter vectors at once: the
parameters broadcast along a leading realisation axis against the voxel axis,
so the work is a handful of element-wise tensor operations on an ``(N, V)``
array, on the device and in the dtype of the maps. There is no Python loop
over realisations or voxels. On the CPU the voxel axis is processed in blocks
of :data:`CPU_BLOCK_VOXELS` voxels (all N realisations of a block at once) so
that the temporaries stay in cache -- a tiling detail with bit-identical
results (``block_voxels=None`` disables it).

**Support.** Both signals are proportional to PD, and after cleaning (see
:func:`~physeg.simulation.equations.clean_maps`) every other factor is finite,
so the signal is *exactly zero outside PD > 0* (PD = 0, negative, NaN or ±inf).
The layer therefore gathers the support -- the voxels with a finite PD > 0,
found once with one ``nonzero`` -- evaluates the equations on those voxels
only, and scatters the result into a zero-initialised output. In a brain
volume in MNI space about 22 % of the voxels are brain, so most of the
exponentials are never computed. The values are those of the element-wise
formula on the whole volume (bit for bit, up to the sign of zero in the
background). When the support covers more than :data:`DENSE_SUPPORT_FRACTION`
of the volume the gather/scatter does not pay and the whole volume is computed.

Work shared by all realisations is done once per voxel: the cleaning of the
maps, the rates :math:`R_1 = 1/T_1`, :math:`R_2^* = 1/T_2^*`,
:math:`e^{-(T_D+\tau)R_1}` and :math:`\ln PD`. Per realisation and voxel,
MPRAGE needs one exponential and SPGR two:

.. math::

    S_\text{MPRAGE} = PD - 2PD\,\frac{E}{1 + E\,e^{-(T_D+\tau)R_1}},\quad E = e^{-TI\,R_1}

    S_\text{SPGR} = -\sin\alpha\;\frac{\operatorname{expm1}(-TR\,R_1)\;e^{\ln PD - TE\,R_2^*}}
                    {(1-\cos\alpha) - \cos\alpha\,\operatorname{expm1}(-TR\,R_1)}

(algebraically identical to the textbook forms; ``expm1`` is also more
accurate for TR ≪ T1).

Intensity normalisation (``normalise=True``), applied to each simulated image
separately before it reaches the network:

.. math::

    \hat S = \operatorname{clip}\left(S / q_{99}(|S|\ \text{in the mask}),\ 0,\ c\right)

with :math:`q_{99}` the 99th percentile (linear interpolation, as
``numpy.percentile``) of the image magnitude inside the brain mask -- or, when
no mask is given, inside the voxels with PD > 0 -- and :math:`c` =
:data:`NORMALISATION_CLIP` = 2. For ``sign="signed"`` MPRAGE the clip is
:math:`[-c, c]`. An image whose percentile is 0 is left unscaled. The mask is
used for this statistic only; voxels outside it are simulated normally (they
are 0 where PD = 0). The percentile is exact: it is computed from the support
values of the mask plus the count of mask voxels outside the support (known
zeros), by a selection on a thresholded upper tail (:func:`percentile_scale`).

The layer is an augmentation, not a differentiable operator: it runs under
``torch.no_grad()``.
"""

from __future__ import annotations

from typing import Mapping

import torch

from .equations import (
    EPS_S,
    MPRAGE_TAU_S,
    MPRAGE_TD_S,
    MprageSign,
    _check_sign,
    apply_sign,
    clean_pd,
)
from physeg.conventions import IOD, distribution_name

from .parameters import Ranges, check_sequence, sample_parameters, validate_parameters

__all__ = [
    "MAP_CHANNELS",
    "CPU_BLOCK_VOXELS",
    "DENSE_SUPPORT_FRACTION",
    "NORMALISATION_PERCENTILE",
    "NORMALISATION_CLIP",
    "check_maps",
    "maps_from_subject",
    "simulate",
    "normalise_intensity",
    "percentile_scale",
    "SimulationLayer",
]

#: Channel order of a subject's map tensor; PD a.u., T1 and T2* in seconds.
MAP_CHANNELS: tuple[str, ...] = ("PD", "T1", "T2star")
#: Voxels per cache block on the CPU (64 Ki voxels x N realisations).
CPU_BLOCK_VOXELS: int = 1 << 16
#: Above this fraction of support voxels (finite PD > 0) the whole volume is computed without gather/scatter.
DENSE_SUPPORT_FRACTION: float = 0.6
NORMALISATION_PERCENTILE: float = 99.0
NORMALISATION_CLIP: float = 2.0


def maps_from_subject(subject, *, maps_key: str = "maps") -> torch.Tensor:
    """``(3, X, Y, Z)`` map tensor from a ``tio.Subject``.

    Either one 3-channel image ``subject[maps_key]`` in :data:`MAP_CHANNELS`
    order, or three 1-channel images named ``"PD"``, ``"T1"``, ``"T2star"``.
    """
    if maps_key in subject:
        return subject[maps_key].data
    if all(name in subject for name in MAP_CHANNELS):
        chans = [subject[name].data for name in MAP_CHANNELS]
        for name, c in zip(MAP_CHANNELS, chans):
            if c.shape[0] != 1:
                raise ValueError(f"subject image {name!r} must have 1 channel; got {c.shape[0]}")
        return torch.cat(chans, dim=0)
    raise ValueError(
        f"subject has neither a 3-channel image {maps_key!r} nor the images {MAP_CHANNELS}; "
        f"it has {list(subject.keys())}"
    )


def check_maps(maps) -> torch.Tensor:
    """Return the ``(3, X, Y, Z)`` floating map tensor of ``maps`` (tensor or ``tio.Subject``).

    Raises ValueError for a wrong number of channels or dimensions.
    Integer tensors are converted to the default float dtype.
    """
    if isinstance(maps, dict):  # tio.Subject is a dict
        maps = maps_from_subject(maps)
    maps = torch.as_tensor(maps)
    if maps.ndim != 4 or maps.shape[0] != len(MAP_CHANNELS):
        raise ValueError(
            f"maps must have shape (3, X, Y, Z) with channels {MAP_CHANNELS} (PD a.u., T1 s, T2* s); "
            f"got shape {tuple(maps.shape)}"
        )
    if not maps.is_floating_point():
        maps = maps.to(torch.get_default_dtype())
    return maps


def _block_ranges(v: int, block: int | None):
    if not block or block >= v:
        return [(0, v)]
    return [(s, min(v, s + block)) for s in range(0, v, block)]


#: Exponents are clamped at this value before ``exp``: :math:`e^{-80} \approx 1.8\times10^{-35}` is still a
#: normal float32, and very negative arguments (T1 = ε gives -TI/ε ≈ -10^6) hit a slow path of ``exp``.
#: Absolute error of the signal ≤ 2e-35 · PD.
MIN_EXPONENT: float = -80.0


def _rates(t: torch.Tensor) -> torch.Tensor:
    """Relaxation rate 1/T (1/s) of a cleaned time: NaN, -inf, T < ε → 1/ε; +inf → 0. New tensor."""
    return t.clamp_min(EPS_S).reciprocal_().nan_to_num_(nan=1.0 / EPS_S)


def _clean_pd_block(pd: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(pd, nan=0.0, posinf=0.0, neginf=0.0).clamp_min_(0.0)


def _finish(o: torch.Tensor, scale: torch.Tensor | None, clip: tuple[float, float] | None) -> None:
    """Per-block normalisation: divide by ``scale`` (N,1) and clip, while the block is in cache."""
    if scale is not None:
        o.div_(scale)
    if clip is not None:
        o.clamp_(*clip)


def _mprage_kernel(
    maps: torch.Tensor, params: torch.Tensor, out: torch.Tensor, sign: str, block: int | None,
    scale: torch.Tensor | None = None, clip: tuple[float, float] | None = None, *, pd_clean: bool = False,
) -> None:
    """Write MPRAGE signals of ``params`` (N,1) into ``out`` (N, V), block by block.

    ``pd_clean=True``: PD is known to be finite and >= 0 (the support), its cleaning is skipped.
    """
    pd_all, t1_all = maps[0].reshape(-1), maps[1].reshape(-1)
    neg_ti = -params[:, :1]  # (N, 1)
    one = torch.ones((), dtype=out.dtype, device=out.device)
    for s, e in _block_ranges(out.shape[1], block):
        pd = pd_all[s:e].clone() if pd_clean else _clean_pd_block(pd_all[s:e])
        r1 = _rates(t1_all[s:e])
        e_delay = torch.mul(r1, -(MPRAGE_TD_S + MPRAGE_TAU_S)).clamp_min_(MIN_EXPONENT).exp_()
        o = out[:, s:e]
        torch.mul(r1, neg_ti, out=o)
        o.clamp_min_(MIN_EXPONENT).exp_()  # E = exp(-TI R1)
        d = torch.addcmul(one, o, e_delay)  # 1 + E exp(-(TD+tau) R1)
        o.div_(d).mul_(pd.mul_(-2.0)).sub_(pd, alpha=0.5)  # -2PD E/d + PD  (pd now holds -2PD)
        apply_sign(o, sign)
        _finish(o, scale, clip)


def _spgr_kernel(
    maps: torch.Tensor, params: torch.Tensor, out: torch.Tensor, block: int | None,
    scale: torch.Tensor | None = None, clip: tuple[float, float] | None = None, *, pd_clean: bool = False,
) -> None:
    """Write SPGR signals of ``params`` (N,3) into ``out`` (N, V), block by block (``pd_clean`` as for MPRAGE)."""
    pd_all, t1_all, t2_all = (maps[i].reshape(-1) for i in range(3))
    neg_tr, neg_te, fa = -params[:, 0:1], -params[:, 1:2], params[:, 2:3]
    cos_a = torch.cos(fa)
    neg_cos = -cos_a
    one_minus_cos = 1.0 - cos_a
    neg_sin = -torch.sin(fa)
    tiny = torch.finfo(out.dtype).tiny
    for s, e in _block_ranges(out.shape[1], block):
        log_pd = pd_all[s:e].log() if pd_clean else _clean_pd_block(pd_all[s:e]).log_()  # -inf where PD = 0 -> 0
        r1 = _rates(t1_all[s:e])
        r2 = _rates(t2_all[s:e])
        o = out[:, s:e]
        torch.mul(r1, neg_tr, out=o)
        o.clamp_min_(MIN_EXPONENT).expm1_()  # E1 - 1
        d = torch.addcmul(one_minus_cos, o, neg_cos).clamp_min_(tiny)  # 1 - cos(a) E1
        f = torch.mul(r2, neg_te).clamp_min_(MIN_EXPONENT).add_(log_pd).exp_()  # PD E2
        o.mul_(f).div_(d).mul_(neg_sin)
        _finish(o, scale, clip)


#: Rows of at least this many values use the thresholded selection of :func:`_select_ranks`.
_SELECT_MIN_VALUES: int = 1 << 16
#: Size of the strided sample that sets the threshold of the upper tail.
_SELECT_SAMPLE: int = 1 << 14


def _select_ranks(values: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row values of ascending rank ``rank`` and ``min(rank + 1, M - 1)`` (0-based) of ``values`` (N, M).

    Exact. For long rows with a short upper tail (the 99th percentile) a threshold
    ``t`` per row is read from a strided sample so that about twice the needed
    tail is ``>= t``; the candidates ``>= t`` contain the ``M - rank`` largest
    values whenever there are at least that many of them (checked; otherwise,
    and for short rows, a ``topk`` of the whole tail), and the two ranks are
    selected among them. Values must not be NaN.
    """
    n, m = values.shape
    need = m - rank  # values of ascending rank >= rank
    hi = 1 if rank + 1 < m else 0
    if n > 0 and m >= _SELECT_MIN_VALUES and 8 * need <= m:
        stride = m // _SELECT_SAMPLE
        sample = values[:, ::stride]
        ms = sample.shape[1]
        keep = min(ms, (need * ms) // m * 5 // 4 + 64)  # ~1.25x the expected tail of the sample + margin
        thresh = sample.kthvalue(ms - keep + 1, dim=1, keepdim=True).values
        rows, cols = (values >= thresh).nonzero().unbind(1)
        counts = torch.bincount(rows, minlength=n).tolist()
        if min(counts) >= need:
            cand = values[rows, cols].split(counts)
            q_lo, q_hi = [], []
            for c, cnt in zip(cand, counts):
                k = rank - (m - cnt) + 1  # 1-based ascending rank inside the candidates
                lo_val = c.kthvalue(k).values
                q_lo.append(lo_val)
                if hi and int(torch.count_nonzero(c <= lo_val)) <= k:  # rank k + 1 is above lo_val (no tie)
                    q_hi.append(c[c > lo_val].amin())
                else:
                    q_hi.append(lo_val)
            return torch.stack(q_lo), torch.stack(q_hi)
    top = values.topk(need, dim=1, largest=True, sorted=True).values  # last column = ascending rank `rank`
    return top[:, -1], top[:, -1 - hi]


def _percentile_scale(values: torch.Tensor, n_zeros: int, percentile: float) -> torch.Tensor:
    """:func:`percentile_scale` of the rows of ``values`` (N, M) each extended by ``n_zeros`` zeros."""
    n, m = values.shape
    total = m + n_zeros
    if total == 0:
        return torch.ones(n, dtype=values.dtype, device=values.device)
    if n_zeros and (m == 0 or bool((values.amin(1) < 0).any())):
        # zeros are not at the bottom of the order: plain evaluation on the extended rows
        values = torch.cat([values, values.new_zeros(n, n_zeros)], dim=1)
        m, n_zeros = total, 0
    pos = percentile / 100.0 * (total - 1)
    lo = int(pos)
    frac = pos - lo
    if lo >= n_zeros:
        q_lo, q_hi = _select_ranks(values, lo - n_zeros)
    else:  # the zeros are the lowest values of every row
        q_lo = values.new_zeros(n)
        q_hi = q_lo if lo + 1 < n_zeros else values.amin(1)
    scale = q_lo + (q_hi - q_lo) * frac
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def percentile_scale(values: torch.Tensor, *, percentile: float = NORMALISATION_PERCENTILE) -> torch.Tensor:
    """Per-row ``percentile`` of ``values`` (N, M) with linear interpolation (``numpy.percentile``'s default).

    Exact, by a selection on the upper tail (see :func:`_select_ranks`). Rows whose
    percentile is not > 0 get scale 1 (left unscaled). Returns ``(N,)``.
    """
    return _percentile_scale(values, 0, percentile)


def normalise_intensity(
    images: torch.Tensor,
    stats_mask: torch.Tensor,
    *,
    percentile: float = NORMALISATION_PERCENTILE,
    clip: float = NORMALISATION_CLIP,
    signed: bool = False,
) -> torch.Tensor:
    """Divide each image of ``images`` (N, V) in place by its ``percentile`` of |S| in ``stats_mask`` (V,); clip.

    The statistic is :func:`percentile_scale` of the magnitudes inside the mask.
    Clip range ``[0, clip]`` (``[-clip, clip]`` if ``signed``). Returns ``images``.
    """
    idx = stats_mask.reshape(-1).nonzero().squeeze(1)
    vals = images.index_select(1, idx)
    if signed:
        vals.abs_()
    images.div_(percentile_scale(vals, percentile=percentile)[:, None])
    return images.clamp_(-clip if signed else 0.0, clip)


@torch.no_grad()
def simulate(
    maps,
    *,
    sequence: str,
    params: torch.Tensor,
    mask: torch.Tensor | None = None,
    normalise: bool = True,
    sign: MprageSign = "magnitude",
    percentile: float = NORMALISATION_PERCENTILE,
    clip: float = NORMALISATION_CLIP,
    block_voxels: int | None | str = "auto",
) -> torch.Tensor:
    """Simulate ``N`` images of one subject.

    Parameters
    ----------
    maps:
        ``(3, X, Y, Z)`` tensor ``[PD (a.u.), T1 (s), T2* (s)]`` or a
        ``tio.Subject`` (see :func:`maps_from_subject`). Invalid values are
        handled as in :func:`physeg.simulation.equations.clean_maps`.
    sequence:
        ``"MPRAGE"`` or ``"SPGR"``.
    params:
        ``(N, P)`` parameters in seconds/radians (validated, see
        :func:`~physeg.simulation.parameters.validate_parameters`); cast to
        the dtype and device of ``maps``.
    mask:
        Optional ``(X, Y, Z)`` brain mask (bool or 0/1) for the normalisation
        statistic; default: voxels with PD > 0.
    normalise:
        Apply the percentile normalisation and clip (module docstring).
    sign:
        MPRAGE sign convention: ``"magnitude"`` (default), ``"clip"``, ``"signed"``.
    percentile, clip:
        Normalisation percentile (default 99) and upper clip (default 2).
    block_voxels:
        Cache block size; ``"auto"`` = :data:`CPU_BLOCK_VOXELS` on the CPU, no
        blocking on other devices; ``None`` = no blocking.

    Returns
    -------
    torch.Tensor
        ``(N, 1, X, Y, Z)``, dtype and device of ``maps``, finite.
    """
    sequence = check_sequence(sequence)
    _check_sign(sign)
    maps = check_maps(maps)
    params = validate_parameters(sequence, params).to(dtype=maps.dtype, device=maps.device)
    spatial = tuple(maps.shape[1:])
    if mask is not None:
        mask = torch.as_tensor(mask, device=maps.device)
        if tuple(mask.shape) != spatial:
            raise ValueError(f"mask must have the spatial shape {spatial} of the maps; got {tuple(mask.shape)}")
        mask = mask.bool()
    if block_voxels == "auto":
        block_voxels = CPU_BLOCK_VOXELS if maps.device.type == "cpu" else None
    n, v = params.shape[0], maps[0].numel()
    signed = sequence == "MPRAGE" and sign == "signed"
    clip_range = (-clip if signed else 0.0, clip)

    def kernel(m: torch.Tensor, out: torch.Tensor, scale=None, clip_range=None, pd_clean=False) -> None:
        if sequence == "MPRAGE":
            _mprage_kernel(m, params, out, sign, block_voxels, scale, clip_range, pd_clean=pd_clean)
        else:
            _spgr_kernel(m, params, out, block_voxels, scale, clip_range, pd_clean=pd_clean)

    if n == 0:
        return torch.zeros(n, 1, *spatial, dtype=maps.dtype, device=maps.device)
    flat = maps.reshape(3, -1)
    # Support: finite PD > 0 (= clean_pd(PD) > 0); the signal is exactly 0 elsewhere.
    pd = flat[0]
    support = pd.nonzero().squeeze(1)  # PD != 0, NaN included
    dense = support.numel() > DENSE_SUPPORT_FRACTION * v
    gathered = pd.index_select(0, support)[None] if dense else flat.index_select(1, support)
    if support.numel():
        lo_hi = torch.aminmax(gathered[0])
        if not (bool(lo_hi.min > 0) and bool(lo_hi.max < float("inf"))):  # negatives, NaN, ±inf: not support
            valid = (gathered[0] > 0) & (gathered[0] < float("inf"))
            support, gathered = support[valid], gathered[:, valid]
    n_support = support.numel()

    if dense:
        # Dense: compute the whole volume (the background gives 0), normalise afterwards.
        out = torch.empty(n, v, dtype=maps.dtype, device=maps.device)
        kernel(flat, out)
        if normalise:
            stats_idx = support if mask is None else mask.reshape(-1).nonzero().squeeze(1)
            vals = out.index_select(1, stats_idx)
            if signed:
                vals.abs_()
            scale = _percentile_scale(vals, 0, percentile)[:, None]
            for s, e in _block_ranges(v, block_voxels):
                _finish(out[:, s:e], scale, clip_range)
        return out.view(n, 1, *spatial)

    # Sparse: gather the support, simulate N x V_support, normalise, scatter into zeros.
    sig = torch.empty(n, n_support, dtype=maps.dtype, device=maps.device)
    if n_support:
        kernel(gathered, sig, pd_clean=True)
    if normalise:
        if mask is None:
            vals, n_zeros = sig, 0  # the statistic's region is the support itself
        else:
            # take: no copy of a non-contiguous (e.g. Fortran-order NIfTI) mask
            in_mask = mask.reshape(-1).index_select(0, support) if mask.is_contiguous() else torch.take(mask, support)
            n_in = int(torch.count_nonzero(in_mask))
            n_zeros = int(torch.count_nonzero(mask)) - n_in  # mask voxels outside the support: S = 0
            vals = sig if n_in == n_support else sig[:, in_mask]
        if signed:
            vals = vals.abs()
        scale = _percentile_scale(vals, n_zeros, percentile)[:, None]
        for s, e in _block_ranges(n_support, block_voxels):
            _finish(sig[:, s:e], scale, clip_range)
    out = torch.zeros(n, v, dtype=maps.dtype, device=maps.device)
    out.index_copy_(1, support, sig)
    return out.view(n, 1, *spatial)


class SimulationLayer(torch.nn.Module):
    """Augmentation layer: sample ``n`` parameter vectors and simulate them.

    Parameters
    ----------
    sequence:
        ``"MPRAGE"`` or ``"SPGR"``.
    distribution:
        ``"iod"`` (training default), ``"ood"`` or a mapping ``{name: (low, high)}``
        (s/rad), see :func:`~physeg.simulation.parameters.sample_parameters`.
    normalise, sign:
        As in :func:`simulate`.
    seed:
        Seed of the layer's own CPU generator (reproducible sequence of draws);
        ``None`` uses torch's global RNG.

    ``forward(maps, n, *, params=None, mask=None) -> (images, params)``:
    images ``(n, 1, X, Y, Z)`` on the device/dtype of ``maps``; params ``(n, P)``
    in s/rad, same device/dtype. Passing ``params`` skips sampling.
    """

    def __init__(
        self,
        sequence: str,
        *,
        distribution: str | Ranges = IOD,
        normalise: bool = True,
        sign: MprageSign = "magnitude",
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.sequence = check_sequence(sequence)
        _check_sign(sign)
        if isinstance(distribution, str):
            distribution = distribution_name(distribution)  # IoD / OoD in any letter case (ValueError otherwise)
        self.distribution = distribution if not isinstance(distribution, Mapping) else dict(distribution)
        self.normalise = normalise
        self.sign = sign
        self.seed = seed
        self.generator: torch.Generator | None = None
        if seed is not None:
            self.manual_seed(seed)

    def manual_seed(self, seed: int) -> None:
        """(Re)seed the layer's generator."""
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, n: int, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        """Draw ``(n, P)`` parameters from the layer's distribution."""
        return sample_parameters(
            self.sequence, n, distribution=self.distribution, generator=self.generator, dtype=dtype, device=device
        )

    def forward(
        self,
        maps,
        n: int | None = None,
        *,
        params: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        maps = check_maps(maps)
        if params is None:
            if n is None:
                raise ValueError("give the number of realisations n or explicit params")
            params = self.sample(n, dtype=maps.dtype, device=maps.device)
        else:
            params = validate_parameters(self.sequence, params).to(dtype=maps.dtype, device=maps.device)
            if n is not None and n != params.shape[0]:
                raise ValueError(f"n={n} but params has {params.shape[0]} rows")
        images = simulate(
            maps, sequence=self.sequence, params=params, mask=mask, normalise=self.normalise, sign=self.sign
        )
        return images, params

    def extra_repr(self) -> str:
        return f"sequence={self.sequence!r}, distribution={self.distribution!r}, normalise={self.normalise}, sign={self.sign!r}, seed={self.seed}"
