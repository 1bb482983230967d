"""The generative model of the synthetic MPM cohort (:mod:`physeg.data.cohort`), piece by piece.

Subject :math:`s` (random numbers from
``SeedSequence([seed, s])``, so each subject is reproducible on its own):

1. **Atrophy.** A per-subject factor :math:`a_s \\sim U(0.05, 0.4)` moves grey
   matter next to CSF or background into CSF (cortical thinning),
   :math:`\\Delta_\\text{GM} = a_s\\, p_\\text{GM}\\, \\min(1, 2\\,G_{2\\,\\text{mm}} * (p_\\text{CSF}+p_\\text{bg}))`,
   and grows the lateral ventricles into the surrounding tissue by
   :math:`a^v_s\\, \\min(1, 3\\,G_{3\\,\\text{mm}} * (p_\\text{CSF} W))\\,(p_\\text{GM}+p_\\text{WM})`,
   with :math:`W` a smooth window around the ventricles in MNI space.
2. **Deformation.** Random displacements (SD ``deformation_mm``) on a
   control grid every ``control_spacing_mm``, cubic-spline upsampled; fractions
   are resampled trilinearly (a convex combination, so they still sum to 1).
2b. **Extra-cerebral CSF** (generator version 2 on): the brain lies in CSF, not
   in air. Background within a few millimetres of tissue becomes CSF,
   :math:`\\Delta = p_\\text{bg}\\,\\min(1, g\\,G_{s} * (1 - p_\\text{bg}))` with
   :math:`s` = ``csf_shell_mm`` and :math:`g` = ``csf_shell_gain``
   (:func:`extracerebral_csf`). Without it (version 1) a voxel at the brain's
   edge mixes grey matter with air: its PD is diluted while its T1 stays grey
   matter's, so the image is dark like CSF where the T1-based PGS says GM, and
   about a fifth of the PGS's CSF voxels were background in the truth (4 mm). No random
   draw: the draws of every other step are those of version 1.
3. **Tissue parameters.** Per tissue and map, a subject value
   :math:`\\theta = \\mu + \\sigma z`, :math:`z \\sim N(0,1)` clipped to
   :math:`\\pm 2`, with the literature mean and spread
   (:func:`physeg.pgs.tissue_parameters`), then within-tissue texture: a smooth
   Gaussian field of unit SD, :math:`\\theta(x) = \\theta (1 + \\tau n(x))`.
4. **Partial volume.** Relaxation *rates* mix linearly in the tissue fractions,
   :math:`R_1 = \\sum_k p_k R_{1,k} / \\sum_k p_k`, likewise :math:`R_2^*`, and
   :math:`PD = \\sum_k p_k PD_k` (background is air: no protons).
5. **Receive field** on PD: :math:`B(x) = \\exp(\\sum_j c_j \\phi_j(x))` with
   first and second order polynomials :math:`\\phi_j` of the normalised position.
6. **Noise:** additive Gaussian on :math:`R_1` (1/s), :math:`R_2^*` (1/s) and PD.

The generating fractions are kept as ground truth.

Each function takes the subject's random generator and draws from it in the
order :func:`physeg.data.cohort.generate_subject` calls them: that order is
part of the cohort's bytes (``data_manifest.yaml``), so it must not change
without bumping :data:`physeg.data.cohort.GENERATOR_VERSION`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from physeg.pgs import TISSUES, tissue_parameters


@dataclass(frozen=True)
class GeneratorSettings:
    """Knobs of the generative model (millimetres, seconds, relative units)."""

    atrophy_range: tuple[float, float] = (0.05, 0.4)
    deformation_mm: float = 3.0
    control_spacing_mm: float = 24.0
    parameter_z_clip: float = 2.0
    #: Between-subject share of the literature SD (the rest is texture and noise).
    parameter_spread: float = 0.5
    #: Relative SD of the within-tissue texture per map, and its smoothing (mm).
    texture: tuple[tuple[str, float], ...] = (("T1", 0.03), ("T2star", 0.05), ("PD", 0.02))
    texture_smoothing_mm: float = 3.0
    #: SD of the receive-field polynomial coefficients (first, second order).
    receive_sd: tuple[float, float] = (0.05, 0.03)
    #: Additive noise SD: R1 (1/s), R2* (1/s), PD (a.u.).
    noise_r1: float = 0.02
    noise_r2s: float = 0.8
    noise_pd: float = 0.01
    #: Extra-cerebral CSF (version 2): smoothing (mm) of the tissue occupancy and its gain.
    csf_shell_mm: float = 2.0
    csf_shell_gain: float = 3.0


#: Settings that generator version 2 added: a version-1 build leaves them out of its record.
VERSION_2_SETTINGS: tuple[str, ...] = ("csf_shell_mm", "csf_shell_gain")


def smooth_field(rng: np.random.Generator, shape: Sequence[int], sigma_vox: float) -> np.ndarray:
    """Gaussian random field of zero mean and unit SD, smoothed by ``sigma_vox`` voxels."""
    n = rng.standard_normal(tuple(shape)).astype(np.float32)
    if sigma_vox > 0.3:
        n = ndimage.gaussian_filter(n, sigma_vox, mode="reflect")
    sd = float(n.std())
    return n / sd if sd > 0 else n


def world_coords(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """(3, X, Y, Z) world coordinates (mm) of voxel centres."""
    idx = np.indices(tuple(shape), dtype=np.float64).reshape(3, -1)
    xyz = affine[:3, :3] @ idx + affine[:3, 3:4]
    return xyz.reshape(3, *shape)


def displacement(
    rng: np.random.Generator, shape: Sequence[int], *, voxel_size_mm: float, settings: GeneratorSettings
) -> np.ndarray:
    """Smooth displacement (3, X, Y, Z) in voxels: random control points, cubic upsampling."""
    shape = np.asarray(shape)
    n_ctrl = np.maximum(2, np.ceil(shape * voxel_size_mm / settings.control_spacing_mm).astype(int) + 1)
    ctrl = rng.normal(0.0, settings.deformation_mm / voxel_size_mm, size=(3, *n_ctrl))
    axes = [np.linspace(0, n_ctrl[i] - 1, shape[i]) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij")).reshape(3, -1)
    disp = np.stack(
        [ndimage.map_coordinates(c, grid, order=3, mode="nearest").reshape(tuple(shape)) for c in ctrl]
    )
    return disp


def atrophy(
    frac: np.ndarray, world: np.ndarray, *, a: float, a_ventricle: float, voxel_size_mm: float
) -> np.ndarray:
    """Cortical thinning (GM → CSF near CSF/background) and ventricle growth, fractions (4, ...)."""
    bg, gm, wm, csf = (c.astype(np.float64) for c in frac)
    near = np.clip(2.0 * ndimage.gaussian_filter(csf + bg, 2.0 / voxel_size_mm), 0.0, 1.0)
    d_gm = a * gm * near
    gm = gm - d_gm
    csf = csf + d_gm
    x, y, z = world
    window = np.exp(-((x / 22.0) ** 2 + ((y + 10.0) / 30.0) ** 2 + ((z - 12.0) / 18.0) ** 2))
    growth = np.clip(3.0 * ndimage.gaussian_filter(csf * window, 3.0 / voxel_size_mm), 0.0, 1.0)
    d_v = a_ventricle * growth * window
    d_gm2, d_wm2 = d_v * gm, d_v * wm
    gm, wm = gm - d_gm2, wm - d_wm2
    csf = csf + d_gm2 + d_wm2
    return np.stack([bg, gm, wm, csf])


def warp_fractions(frac: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """Fractions (4, X, Y, Z) resampled trilinearly at ``index + disp`` (voxels), renormalised to sum 1.

    Outside the volume: background. Trilinear weights keep a convex
    combination, so the fractions still sum to 1 up to the clipping.
    """
    coords = np.indices(frac.shape[1:], dtype=np.float64) + disp
    warped = np.stack(
        [
            ndimage.map_coordinates(frac[k], coords, order=1, mode="constant", cval=1.0 if k == 0 else 0.0)
            for k in range(4)
        ]
    )
    warped = np.clip(warped, 0.0, 1.0)
    warped /= np.maximum(warped.sum(axis=0, keepdims=True), 1e-12)
    return warped


def extracerebral_csf(frac: np.ndarray, *, voxel_size_mm: float, settings: GeneratorSettings) -> np.ndarray:
    """Fractions (4, ...) [bg, GM, WM, CSF] with background next to tissue turned into CSF (step 2b).

    :math:`\\Delta = p_\\text{bg} \\min(1, g\\, G_s * (1 - p_\\text{bg}))`, moved from
    background to CSF: the fractions still sum to 1, tissue (GM, WM) is
    unchanged and CSF only grows. Far from the brain :math:`G_s * (1-p_\\text{bg})
    \\approx 0`, so the head's outside stays background; a partial-volume voxel
    at the edge now mixes tissue with CSF, whose rates enter :func:`mixed_maps`.
    """
    bg = frac[0]
    occupancy = ndimage.gaussian_filter(1.0 - bg, settings.csf_shell_mm / voxel_size_mm)
    moved = bg * np.clip(settings.csf_shell_gain * occupancy, 0.0, 1.0)
    out = frac.copy()
    out[0] = bg - moved
    out[3] = frac[3] + moved
    return out


def tissue_fields(
    rng: np.random.Generator, shape: Sequence[int], *, voxel_size_mm: float, settings: GeneratorSettings
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, float]]]:
    """Per map (T1 s, T2* s, PD a.u.) a (3, X, Y, Z) field per tissue, and the subject's drawn values.

    Value :math:`\\theta = \\mu + s\\,\\sigma z` (z clipped), texture
    :math:`\\theta (1 + \\tau n(x))` with a smooth unit-SD field :math:`n`.
    """
    lit = tissue_parameters()
    draws: dict[str, dict[str, float]] = {}
    sigma_vox = settings.texture_smoothing_mm / voxel_size_mm
    texture = dict(settings.texture)
    fields: dict[str, np.ndarray] = {}
    for q in ("T1", "T2star", "PD"):
        per_tissue = []
        for t in TISSUES:
            mean, sd = lit[t][q]
            z = float(np.clip(rng.standard_normal(), -settings.parameter_z_clip, settings.parameter_z_clip))
            value = mean + settings.parameter_spread * sd * z
            draws.setdefault(t, {})[q] = value
            n = smooth_field(rng, shape, sigma_vox)
            per_tissue.append(value * (1.0 + texture[q] * n))
        fields[q] = np.stack(per_tissue)
    return fields, draws


def receive_field(rng: np.random.Generator, world: np.ndarray, settings: GeneratorSettings) -> np.ndarray:
    """Multiplicative receive field :math:`\\exp(\\sum_j c_j \\phi_j)` over first/second-order polynomials."""
    u = [np.asarray((world[i] - world[i].mean()) / (np.ptp(world[i]) / 2.0)) for i in range(3)]
    basis = [u[0], u[1], u[2], u[0] ** 2, u[1] ** 2, u[2] ** 2, u[0] * u[1], u[0] * u[2], u[1] * u[2]]
    coef = np.concatenate(
        [rng.normal(0, settings.receive_sd[0], 3), rng.normal(0, settings.receive_sd[1], 6)]
    )
    return np.exp(sum(c * b for c, b in zip(coef, basis)))


def mixed_maps(
    rng: np.random.Generator, tissue: np.ndarray, fields: dict[str, np.ndarray], world: np.ndarray,
    settings: GeneratorSettings,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R1 (1/s), R2* (1/s), PD (a.u.) from tissue fractions (3, X, Y, Z): rates mix linearly.

    Then the receive field on PD and additive noise; voxels without tissue are
    0 and the rest floored at R1 0.05, R2* 0.5, PD 0.
    """
    s = tissue.sum(axis=0)
    occupied = s > 1e-3
    s_safe = np.where(occupied, s, 1.0)
    r1 = (tissue / fields["T1"]).sum(axis=0) / s_safe
    r2s = (tissue / fields["T2star"]).sum(axis=0) / s_safe
    pd = (tissue * fields["PD"]).sum(axis=0) * receive_field(rng, world, settings)
    shape = s.shape
    r1 = r1 + settings.noise_r1 * rng.standard_normal(shape)
    r2s = r2s + settings.noise_r2s * rng.standard_normal(shape)
    pd = pd + settings.noise_pd * rng.standard_normal(shape)
    r1 = np.where(occupied, np.maximum(r1, 0.05), 0.0)
    r2s = np.where(occupied, np.maximum(r2s, 0.5), 0.0)
    pd = np.where(occupied, np.maximum(pd, 0.0), 0.0)
    return r1, r2s, pd
