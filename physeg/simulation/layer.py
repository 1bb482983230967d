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

from .artefacts import ArtefactDraw, Artefacts
from .maps import MAP_CHANNELS, _check_mask, check_maps, maps_from_subject
from .generic import simulate_fused, simulate_registry
from .parameters import Ranges, check_sequence, sample_parameters, validate_parameters
from .sequences import OUTPUT_MODES, get_sequence

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

#: Above this fraction of support voxels (finite PD > 0) the whole volume is computed without gather/scatter.
DENSE_SUPPORT_FRACTION: float = 0.6


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
    outputs: str = "default",
    artefacts: ArtefactDraw | None = None,
) -> torch.Tensor:
    """Simulate ``N`` images of one subject (any sequence of the registry).

    Parameters
    ----------
    maps:
        ``(3, X, Y, Z)`` tensor ``[PD (a.u.), T1 (s), T2* (s)]`` or a
        ``tio.Subject`` (see :func:`maps_from_subject`). Invalid values are
        handled as in :func:`physeg.simulation.equations.clean_maps`.
    sequence:
        A sequence of :mod:`physeg.simulation.sequences` (MPRAGE, SPGR, MP2RAGE, MESPGR).
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
    outputs:
        ``"default"`` (one image: MP2RAGE UNI, MESPGR echo mean) or ``"all"``
        (every image the scanner writes: UNI, INV1, INV2; each echo).
    artefacts:
        B1+ / receive bias / noise of each realisation
        (:meth:`physeg.simulation.artefacts.Artefacts.draw`); ``None``: none.

    Returns
    -------
    torch.Tensor
        ``(N, C, X, Y, Z)`` (C = 1 for ``"default"``), dtype and device of ``maps``, finite.
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
    if outputs not in OUTPUT_MODES:
        raise ValueError(f"outputs must be one of {OUTPUT_MODES}; got {outputs!r}")
    if n == 0:
        c = len(get_sequence(sequence).output_names[outputs])
        return torch.zeros(n, c, *spatial, dtype=maps.dtype, device=maps.device)
    signed = sequence == "MPRAGE" and sign == "signed"
    job = _Job(sequence=sequence, params=params, sign=sign, block=block_voxels, percentile=percentile,
               clip_range=(-clip if signed else 0.0, clip) if normalise else None, signed=signed)
    flat = maps.reshape(3, -1)
    support, gathered, dense = _support(flat, v=v)
    if sequence not in ("MPRAGE", "SPGR") or (artefacts is not None and artefacts.active):
        gathered = gathered if gathered.shape[0] == 3 else flat.index_select(1, support)
        return _physics_path(gathered, support, mask, job, spatial=spatial, outputs=outputs,
                             artefacts=artefacts).view(n, -1, *spatial)
    out = _simulate_dense(flat, support, mask, job) if dense else _simulate_sparse(gathered, support, mask, job, v=v)
    return out.view(n, 1, *spatial)


def _physics_path(gathered: torch.Tensor, support: torch.Tensor, mask: torch.Tensor | None, job: "_Job", *,
                  spatial: tuple[int, ...], outputs: str, artefacts: ArtefactDraw | None) -> torch.Tensor:
    """MPRAGE/SPGR with artefacts: fused kernels; anything else: the registry equations
    (:mod:`physeg.simulation.generic`). ``(N, C, V)``. MPRAGE and SPGR without artefacts never come here."""
    if job.sequence in ("MPRAGE", "SPGR"):
        return simulate_fused(gathered, support, sequence=job.sequence, params=job.params, spatial=spatial,
                              mask=mask, sign=job.sign, artefacts=artefacts, percentile=job.percentile,
                              clip_range=job.clip_range, block=job.block)
    return simulate_registry(gathered, support, sequence=job.sequence, params=job.params, spatial=spatial, mask=mask,
                             outputs=outputs, sign=job.sign, artefacts=artefacts, percentile=job.percentile,
                             clip_range=job.clip_range)


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
        Any sequence of the registry (:mod:`physeg.simulation.sequences`).
    distribution:
        ``"iod"`` (training default), ``"ood"`` or a mapping ``{name: (low, high)}``
        (s/rad), see :func:`~physeg.simulation.parameters.sample_parameters`.
    normalise, sign:
        As in :func:`simulate`.
    seed:
        Seed of the layer's own CPU generator (reproducible sequence of draws);
        ``None`` uses torch's global RNG.
    artefacts:
        :class:`~physeg.simulation.artefacts.Artefacts` ranges; every call draws
        each realisation's B1+ field, receive bias and SNR from the layer's
        generator after its parameters (``None`` or inactive: no draws, no artefacts).
    outputs:
        ``"default"`` or ``"all"`` (see :func:`simulate`).

    ``forward(maps, n, *, params=None, mask=None) -> (images, params)``:
    images ``(n, C, X, Y, Z)`` on the device/dtype of ``maps``; params ``(n, P)``
    in s/rad, same device/dtype. Passing ``params`` skips sampling. The last
    call's artefact draw is kept in :attr:`last_artefacts`.
    """

    def __init__(
        self,
        sequence: str,
        *,
        distribution: str | Ranges = IOD,
        normalise: bool = True,
        sign: MprageSign = "magnitude",
        seed: int | None = None,
        artefacts: Artefacts | None = None,
        outputs: str = "default",
    ) -> None:
        super().__init__()
        self.sequence = check_sequence(sequence)
        if outputs not in OUTPUT_MODES:
            raise ValueError(f"outputs must be one of {OUTPUT_MODES}; got {outputs!r}")
        self.artefacts, self.outputs = artefacts, outputs
        self.last_artefacts: ArtefactDraw | None = None
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
        draw = None
        if self.artefacts is not None and self.artefacts.active:
            draw = self.artefacts.draw(params.shape[0], generator=self.generator, dtype=maps.dtype)
        self.last_artefacts = draw
        images = simulate(maps, sequence=self.sequence, params=params, mask=mask, normalise=self.normalise,
                          sign=self.sign, outputs=self.outputs, artefacts=draw)
        return images, params

    def extra_repr(self) -> str:
        return (f"sequence={self.sequence!r}, distribution={self.distribution!r}, normalise={self.normalise}, "
                f"sign={self.sign!r}, seed={self.seed}, artefacts={self.artefacts!r}, outputs={self.outputs!r}")
