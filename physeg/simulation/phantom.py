r"""A *teaching* phantom: quantitative maps built from MNI152 tissue templates.

This is not the project's cohort (``physeg.data`` builds that); it is a small,
deterministic subject for notebook 01, the tests of the layer and the
benchmark. Tissue fractions :math:`f_t` (GM, WM from nilearn's MNI152
probability templates, which ship inside the nilearn wheel -- no download;
CSF = brain mask − GM − WM, clipped to [0, 1] and renormalised) mix the
literature values of :data:`~physeg.simulation.tissues.TISSUE_PARAMETERS`:

.. math::

    PD = \sum_t f_t PD_t,\qquad
    \frac{1}{T_1} = \sum_t \frac{f_t}{T_{1,t}},\qquad
    \frac{1}{T_2^*} = \sum_t \frac{f_t}{T^*_{2,t}}

(rates mix linearly in a voxel in the fast-exchange approximation). Outside the
brain mask all three maps are 0, which also exercises the layer's handling of
invalid values (T1 = T2* = 0 → ε, PD = 0 → no signal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch

from physeg.conventions import TISSUE_NAMES

from .tissues import TISSUE_PARAMETERS, TissueParameters

__all__ = ["Phantom", "mni_phantom", "PHANTOM_TISSUES"]

#: Tissue order of :attr:`Phantom.fractions`; labels are 1 + index (0 = background): the shared label order.
PHANTOM_TISSUES: tuple[str, ...] = TISSUE_NAMES


@dataclass
class Phantom:
    """Maps and tissue model of the teaching phantom.

    Attributes
    ----------
    maps:
        ``(3, X, Y, Z)`` float32 ``[PD (a.u.), T1 (s), T2* (s)]``.
    mask:
        ``(X, Y, Z)`` bool brain mask.
    fractions:
        ``(3, X, Y, Z)`` float32 GM/WM/CSF fractions (sum 1 in the mask).
    labels:
        ``(X, Y, Z)`` int64, 0 background, 1 GM, 2 WM, 3 CSF (largest fraction).
    affine:
        ``(4, 4)`` voxel-to-MNI-mm affine.
    """

    maps: torch.Tensor
    mask: torch.Tensor
    fractions: torch.Tensor
    labels: torch.Tensor
    affine: np.ndarray

    @property
    def voxel_size_mm(self) -> float:
        return float(abs(self.affine[0, 0]))


def _load_templates(voxel_size_mm: float):
    from nilearn import datasets, image

    loaders = (datasets.load_mni152_gm_template, datasets.load_mni152_wm_template, datasets.load_mni152_brain_mask)
    if float(voxel_size_mm).is_integer():
        return [f(resolution=int(voxel_size_mm)) for f in loaders]
    imgs = [f(resolution=1) for f in loaders]
    target = np.diag([voxel_size_mm] * 3 + [1.0])
    target[:3, 3] = imgs[0].affine[:3, 3]
    return [image.resample_img(i, target_affine=target, interpolation="linear", force_resample=True, copy_header=True) for i in imgs]


def mni_phantom(
    *,
    voxel_size_mm: float = 2.0,
    tissues: Mapping[str, TissueParameters] = TISSUE_PARAMETERS,
) -> Phantom:
    """Build the teaching phantom at isotropic ``voxel_size_mm`` (1 mm: 197 × 233 × 189 voxels)."""
    gm_img, wm_img, mask_img = _load_templates(voxel_size_mm)
    gm = np.clip(np.asarray(gm_img.get_fdata(), dtype=np.float32), 0, 1)
    wm = np.clip(np.asarray(wm_img.get_fdata(), dtype=np.float32), 0, 1)
    mask = np.asarray(mask_img.get_fdata()) > 0.5
    csf = np.clip(1.0 - gm - wm, 0, 1)
    frac = np.stack([gm, wm, csf]) * mask
    total = frac.sum(0)
    frac = np.where(total > 0, frac / np.maximum(total, 1e-12), 0).astype(np.float32)
    mask &= total > 0
    params = np.array([tissues[t].as_tuple() for t in PHANTOM_TISSUES], dtype=np.float64)  # (3 tissues, PD/T1/T2*)
    pd = np.tensordot(params[:, 0], frac, axes=1)
    r1 = np.tensordot(1.0 / params[:, 1], frac, axes=1)
    r2 = np.tensordot(1.0 / params[:, 2], frac, axes=1)
    with np.errstate(divide="ignore"):
        t1 = np.where(mask, 1.0 / np.where(mask, r1, 1.0), 0.0)
        t2 = np.where(mask, 1.0 / np.where(mask, r2, 1.0), 0.0)
    maps = np.stack([pd * mask, t1, t2]).astype(np.float32)
    labels = np.where(mask, frac.argmax(0) + 1, 0).astype(np.int64)
    return Phantom(
        maps=torch.from_numpy(maps),
        mask=torch.from_numpy(mask),
        fractions=torch.from_numpy(frac),
        labels=torch.from_numpy(labels),
        affine=np.asarray(gm_img.affine, dtype=np.float64),
    )
