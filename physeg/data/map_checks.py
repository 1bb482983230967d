"""Checks on quantitative maps before anything uses them: grids, invalid voxels, plausible values.

Used by the BIDS loader (:func:`physeg.data.bids.load_subject`) and the map-file
loader of ``physeg pgs`` / ``physeg simulate``
(:func:`physeg.data.bids.load_map_files`), so every command refuses the same
inputs with the same messages. Maps arrive in SI units (PD a.u., T1 and T2* in
seconds). The rules, in the order they are applied:

1. A map with no finite value, or no positive value, is refused.
2. The three maps (and the mask file, if any) share one shape and affine
   (tolerance 1e-4 mm).
3. The brain region is the mask file, else the voxels with
   :math:`PD > 0.1\\,P_{99}(PD)`; an empty region is refused.
4. Per map, the voxels of the region that are NaN/inf, zero or negative are
   counted. Up to :data:`MAX_INVALID_FRACTION` (1 %) of the region they are
   reported (a warning naming the file and the counts) and left out of the
   mask; above it the map is refused with the same counts.
5. The median of each map inside the mask must lie in
   :data:`PLAUSIBLE_MEDIAN`; a time map that is 1000 times too large is said
   to look like milliseconds.

A voxel invalid in any map becomes background (0) in all three, so an invalid
T1 can never be simulated as a bright voxel (T1 = 0 saturates the signal).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from physeg.data.nifti import check_gzip

log = logging.getLogger(__name__)

#: Plausible median of each map inside the brain, SI units (PD a.u., T1 s, T2* s);
#: outside it the units are wrong or the file is not that map.
PLAUSIBLE_MEDIAN: dict[str, tuple[float, float]] = {"PD": (0.05, 5.0), "T1": (0.1, 10.0), "T2star": (0.003, 1.0)}
#: Largest share of brain-mask voxels of one map that may be NaN/inf, zero or negative:
#: up to it they are reported and left out of the mask, above it the map is refused.
MAX_INVALID_FRACTION: float = 0.01

#: One map as the loaders pass it: (data in SI units, affine in mm, file it came from).
Channel = tuple[np.ndarray, np.ndarray, Path]


def load_image(path: Path) -> nib.Nifti1Image:
    """A NIfTI image (lazy data); ``ValueError`` naming the file if it is a damaged gzip or nibabel cannot read it."""
    check_gzip(path)
    try:
        return nib.load(str(path))
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for broken files
        raise ValueError(f"{path}: not a readable NIfTI image ({exc})") from exc


def check_grid(path: Path, img: Any, shape: tuple[int, ...], affine: np.ndarray) -> None:
    """``ValueError`` naming ``path`` unless ``img`` has the 3-D ``shape`` and ``affine`` (mm, 1e-4)."""
    if tuple(img.shape[:3]) != tuple(shape) or (len(img.shape) > 3 and int(np.prod(img.shape[3:])) != 1):
        raise ValueError(f"{path}: shape {img.shape} does not match the maps' shape {tuple(shape)}")
    if not np.allclose(img.affine, affine, atol=1e-4):
        raise ValueError(f"{path}: affine differs from the maps' affine\n{img.affine}\nvs\n{affine}")


def count_invalid(data: np.ndarray, region: np.ndarray, path: Path) -> np.ndarray:
    """Valid voxels (finite and > 0) of one map; report or refuse the invalid ones inside ``region``.

    Up to :data:`MAX_INVALID_FRACTION` of the region may be invalid: a warning
    names the file and the counts (NaN/inf, zero, negative). Above it,
    ``ValueError`` with the same counts.
    """
    valid = np.isfinite(data) & (data > 0)
    vals = data[region]
    n_bad = int(region.sum() - valid[region].sum())
    if n_bad:
        counts = (f"{n_bad} of {vals.size} brain-mask voxels are invalid "
                  f"({int((~np.isfinite(vals)).sum())} NaN/inf, {int((vals == 0).sum())} zero, "
                  f"{int((vals < 0).sum())} negative)")
        if n_bad > MAX_INVALID_FRACTION * vals.size:
            raise ValueError(f"{path}: {counts}, more than {MAX_INVALID_FRACTION:.0%}; refusing a non-physical map")
        log.warning("%s: %s; they are left out of the brain mask and set to background", path, counts)
    return valid


def check_median(channel: str, data: np.ndarray, mask: np.ndarray, path: Path) -> None:
    """``ValueError`` naming ``path`` if the median of ``data`` in ``mask`` is outside :data:`PLAUSIBLE_MEDIAN`."""
    med = float(np.median(data[mask]))
    lo, hi = PLAUSIBLE_MEDIAN[channel]
    if not lo <= med <= hi:
        # A time map in ms labelled (or defaulted to) s is the usual mistake: say so.
        hint = ("; it looks like milliseconds: set the sidecar 'Units' to \"ms\" or give the units explicitly"
                if channel != "PD" and lo <= med / 1000 <= hi else "; check the sidecar 'Units'")
        raise ValueError(
            f"{path}: median {channel} in the brain is {med:.4g} (SI units after conversion), "
            f"outside the plausible range [{lo}, {hi}]{hint}"
        )


def _brain_region(pd_channel: Channel, mask_path: Path | None, sub: str) -> np.ndarray:
    """The voxels checked: the mask file (grid checked), else :math:`PD > 0.1\\,P_{99}(PD)`."""
    data, affine, _ = pd_channel
    if mask_path is not None:
        img = load_image(mask_path)
        check_grid(mask_path, img, data.shape, affine)
        region = np.asarray(img.dataobj).reshape(data.shape) > 0
    else:
        pd = np.where(np.isfinite(data) & (data > 0), data, 0.0)
        region = pd > 0.1 * np.percentile(pd[pd > 0], 99)
    if not region.any():
        raise ValueError(f"{sub}: empty brain mask ({mask_path or 'derived from the maps'})")
    return region


def validated_maps(
    channels: dict[str, Channel], mask_path: Path | None, sub: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Canonical (3, X, Y, Z) float32 maps [PD, T1 s, T2* s] and the brain mask, after every check.

    ``channels`` maps ``"PD"``, ``"T1"``, ``"T2star"`` to (SI data, affine,
    file). Applies the rules of this module in order; the first failure raises
    ``ValueError`` naming the file.
    """
    for data, _, path in channels.values():
        if not np.isfinite(data).any():
            raise ValueError(f"{path}: no finite values at all (NaN-only map)")
        if not (np.nan_to_num(data) > 0).any():
            raise ValueError(f"{path}: no positive values at all; non-physical map")
    ref_data, ref_affine, ref_path = channels["PD"]
    for channel in ("T1", "T2star"):
        data, affine, path = channels[channel]
        if data.shape != ref_data.shape:
            raise ValueError(f"{path}: shape {data.shape} does not match {ref_path.name} {ref_data.shape}")
        if not np.allclose(affine, ref_affine, atol=1e-4):
            raise ValueError(f"{path}: affine differs from {ref_path.name}")
    region = _brain_region(channels["PD"], mask_path, sub)
    valid = np.ones(ref_data.shape, dtype=bool)
    for data, _, path in channels.values():
        valid &= count_invalid(data, region, path)
    mask = region & valid
    for channel, (data, _, path) in channels.items():
        check_median(channel, data, mask, path)
    maps = np.stack([channels[c][0] for c in ("PD", "T1", "T2star")])
    return np.where(valid[None], maps, 0.0).astype(np.float32), mask
