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

from dataclasses import dataclass
from typing import Mapping

import torch

from .equations import MprageSign, _check_sign
from .kernels import CPU_BLOCK_VOXELS, _block_ranges, _mprage_kernel, _spgr_kernel
from .normalisation import (
    NORMALISATION_CLIP,
    NORMALISATION_PERCENTILE,
    _percentile_scale,
    finish_block,
    normalise_intensity,
    percentile_scale,
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
#: Above this fraction of support voxels (finite PD > 0) the whole volume is computed without gather/scatter.
DENSE_SUPPORT_FRACTION: float = 0.6


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
    mask = _check_mask(mask, spatial=spatial, device=maps.device)
    if block_voxels == "auto":
        block_voxels = CPU_BLOCK_VOXELS if maps.device.type == "cpu" else None
    n, v = params.shape[0], maps[0].numel()
    if n == 0:
        return torch.zeros(n, 1, *spatial, dtype=maps.dtype, device=maps.device)
    signed = sequence == "MPRAGE" and sign == "signed"
    job = _Job(sequence=sequence, params=params, sign=sign, block=block_voxels, percentile=percentile,
               clip_range=(-clip if signed else 0.0, clip) if normalise else None, signed=signed)
    flat = maps.reshape(3, -1)
    support, gathered, dense = _support(flat, v=v)
    out = _simulate_dense(flat, support, mask, job) if dense else _simulate_sparse(gathered, support, mask, job, v=v)
    return out.view(n, 1, *spatial)


@dataclass(frozen=True)
class _Job:
    """What :func:`simulate` computes: sequence, parameters, blocking and normalisation."""

    sequence: str
    params: torch.Tensor
    sign: str
    block: int | None
    percentile: float
    #: ``None``: no normalisation; else the clip range after dividing by the percentile.
    clip_range: tuple[float, float] | None
    signed: bool

    def kernel(self, maps: torch.Tensor, out: torch.Tensor, scale: torch.Tensor | None = None,
               clip_range: tuple[float, float] | None = None, *, pd_clean: bool = False) -> None:
        if self.sequence == "MPRAGE":
            _mprage_kernel(maps, self.params, out, self.sign, self.block, scale, clip_range, pd_clean=pd_clean)
        else:
            _spgr_kernel(maps, self.params, out, self.block, scale, clip_range, pd_clean=pd_clean)

    def normalise(self, sig: torch.Tensor, vals: torch.Tensor, *, n_zeros: int) -> None:
        """Divide ``sig`` (N, V') by the percentile of ``vals`` (+ ``n_zeros`` zeros) and clip, in place."""
        if self.signed:
            vals = vals.abs()
        scale = _percentile_scale(vals, n_zeros, self.percentile)[:, None]
        for s, e in _block_ranges(sig.shape[1], self.block):
            finish_block(sig[:, s:e], scale, self.clip_range)


def _check_mask(mask, *, spatial: tuple[int, ...], device: torch.device) -> torch.Tensor | None:
    if mask is None:
        return None
    mask = torch.as_tensor(mask, device=device)
    if tuple(mask.shape) != spatial:
        raise ValueError(f"mask must have the spatial shape {spatial} of the maps; got {tuple(mask.shape)}")
    return mask.bool()


def _support(flat: torch.Tensor, *, v: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Indices of the voxels with a finite PD > 0, their maps (gathered unless dense), and whether dense.

    The signal is exactly 0 outside this support (module docstring).
    """
    pd = flat[0]
    support = pd.nonzero().squeeze(1)  # PD != 0, NaN included
    dense = support.numel() > DENSE_SUPPORT_FRACTION * v
    gathered = pd.index_select(0, support)[None] if dense else flat.index_select(1, support)
    if support.numel():
        lo_hi = torch.aminmax(gathered[0])
        if not (bool(lo_hi.min > 0) and bool(lo_hi.max < float("inf"))):  # negatives, NaN, ±inf: not support
            valid = (gathered[0] > 0) & (gathered[0] < float("inf"))
            support, gathered = support[valid], gathered[:, valid]
    return support, gathered, dense


def _simulate_dense(flat: torch.Tensor, support: torch.Tensor, mask: torch.Tensor | None, job: _Job) -> torch.Tensor:
    """The whole volume at once (the background gives 0), normalised afterwards: (N, V)."""
    out = torch.empty(job.params.shape[0], flat.shape[1], dtype=flat.dtype, device=flat.device)
    job.kernel(flat, out)
    if job.clip_range is not None:
        stats_idx = support if mask is None else mask.reshape(-1).nonzero().squeeze(1)
        job.normalise(out, out.index_select(1, stats_idx), n_zeros=0)
    return out


def _simulate_sparse(gathered: torch.Tensor, support: torch.Tensor, mask: torch.Tensor | None, job: _Job, *,
                     v: int) -> torch.Tensor:
    """Gather the support, simulate N x V_support, normalise, scatter into zeros: (N, V)."""
    n, n_support = job.params.shape[0], support.numel()
    sig = torch.empty(n, n_support, dtype=gathered.dtype, device=gathered.device)
    if n_support:
        job.kernel(gathered, sig, pd_clean=True)
    if job.clip_range is not None:
        if mask is None:
            vals, n_zeros = sig, 0  # the statistic's region is the support itself
        else:
            # take: no copy of a non-contiguous (e.g. Fortran-order NIfTI) mask
            in_mask = mask.reshape(-1).index_select(0, support) if mask.is_contiguous() else torch.take(mask, support)
            n_in = int(torch.count_nonzero(in_mask))
            n_zeros = int(torch.count_nonzero(mask)) - n_in  # mask voxels outside the support: S = 0
            vals = sig if n_in == n_support else sig[:, in_mask]
        job.normalise(sig, vals, n_zeros=n_zeros)
    out = torch.zeros(n, v, dtype=gathered.dtype, device=gathered.device)
    out.index_copy_(1, support, sig)
    return out


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
