"""MNI152 2009 tissue priors shipped inside the nilearn wheel, at any voxel size.

nilearn ships the ICBM152 2009a (symmetric) T1 template and its grey and white
matter probability maps at 1 mm (197 × 233 × 189), plus a brain mask derived
from the template; :func:`nilearn.datasets.load_mni152_template` and friends
read them from the installed package, without network. There is no CSF map; we
take

.. math:: p_\\text{CSF} = \\operatorname{clip}(m - p_\\text{GM} - p_\\text{WM}, 0, 1),
          \\qquad p_\\text{bg} = 1 - p_\\text{GM} - p_\\text{WM} - p_\\text{CSF}

with :math:`m` the binary brain mask. Coarser grids are obtained by averaging
blocks of :math:`f^3` 1 mm voxels (integer factor :math:`f` = voxel size in mm),
which keeps partial-volume fractions exact; non-integer sizes use Gaussian
pre-smoothing and trilinear :func:`scipy.ndimage.zoom`.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
from scipy import ndimage

from physeg.conventions import LABEL_NAMES

#: Fraction channels of the generating tissue maps (the label order of physeg.conventions).
FRACTION_CHANNELS: tuple[str, ...] = LABEL_NAMES


@functools.lru_cache(maxsize=2)
def _mni_1mm() -> tuple[np.ndarray, np.ndarray]:
    """(4, 197, 233, 189) float32 fractions [bg, GM, WM, CSF] at 1 mm and the affine."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nilearn import datasets

        gm_img = datasets.load_mni152_gm_template(resolution=1)
        wm_img = datasets.load_mni152_wm_template(resolution=1)
        mask_img = datasets.load_mni152_brain_mask(resolution=1)
    gm = np.asarray(gm_img.dataobj, dtype=np.float32)
    wm = np.asarray(wm_img.dataobj, dtype=np.float32)
    mask = np.asarray(mask_img.dataobj, dtype=np.float32) > 0
    gm = np.clip(gm, 0, 1) * mask
    wm = np.clip(wm, 0, 1) * mask
    tissue = gm + wm
    over = tissue > 1
    gm[over] /= tissue[over]
    wm[over] /= tissue[over]
    csf = np.clip(mask.astype(np.float32) - gm - wm, 0, 1)
    bg = np.clip(1.0 - gm - wm - csf, 0, 1)
    return np.stack([bg, gm, wm, csf]).astype(np.float32), np.asarray(gm_img.affine, dtype=np.float64)


def mni_fractions(*, voxel_size_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """MNI152 tissue fractions (4, X, Y, Z) float32 [bg, GM, WM, CSF] at ``voxel_size_mm`` (mm).

    Returns the fractions (summing to 1 in every voxel) and the 4 × 4 voxel-to-MNI
    affine (mm). For an integer factor :math:`f`, output voxel :math:`i` covers
    1 mm voxels :math:`fi \\ldots fi+f-1`; its centre is at
    :math:`o + (f-1)/2 + f i` mm, with :math:`o` the 1 mm origin. The 1 mm grid is
    padded with background at the far end to a multiple of :math:`f`.
    """
    frac, affine = _mni_1mm()
    v = float(voxel_size_mm)
    if v <= 0:
        raise ValueError(f"voxel size must be positive, got {v} mm")
    f = int(round(v))
    if abs(v - f) < 1e-6:
        if f == 1:
            return frac.copy(), affine.copy()
        shape = np.array(frac.shape[1:])
        padded = (-(-shape // f)) * f
        buf = np.zeros((4, *padded), dtype=np.float32)
        buf[0] = 1.0
        buf[:, : shape[0], : shape[1], : shape[2]] = frac
        out = buf.reshape(4, padded[0] // f, f, padded[1] // f, f, padded[2] // f, f).mean(axis=(2, 4, 6))
        new_aff = affine.copy()
        new_aff[:3, :3] = affine[:3, :3] * f
        new_aff[:3, 3] = affine[:3, 3] + affine[:3, :3] @ np.full(3, (f - 1) / 2.0)
    else:
        zoom = 1.0 / v
        out = np.stack(
            [ndimage.zoom(ndimage.gaussian_filter(c, 0.4 * v), zoom, order=1) for c in frac]
        )
        # scipy's zoom maps first/last voxel centres onto each other: step per axis
        step = (np.array(frac.shape[1:]) - 1) / (np.array(out.shape[1:]) - 1)
        new_aff = affine.copy()
        new_aff[:3, :3] = affine[:3, :3] @ np.diag(step)
    out = np.clip(out, 0, 1)
    out /= out.sum(axis=0, keepdims=True)
    return out.astype(np.float32), new_aff
