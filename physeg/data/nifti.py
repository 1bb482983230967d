r"""NIfTI images of the user: reading, writing on the input's grid, file names, voxel grids.

Geometry conventions: an affine :math:`A` maps voxel indices to world
coordinates in mm; the voxel edge lengths are the column norms of
:math:`A_{3\times3}` and one voxel's volume is :math:`|\det A_{3\times3}| / 1000`
ml. The network works on an isotropic grid of the model's voxel size
(:func:`model_grid`) with the same orientation and field of view as the
input; images go there and results come back by :func:`resample_to_grid`
(paper §2.1 trains on 1 mm isotropic maps; the profiles use coarser ones).

Errors in what the user gave (missing, unreadable, 4D files) raise
:class:`physeg.cli.errors.UsageError`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from physeg.cli.errors import UsageError
from physeg.io_safety import atomic_path

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- file names
def nifti_stem(path: str | Path) -> str:
    """File name without ``.nii.gz`` / ``.nii``."""
    name = Path(path).name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def sidecar_path(path: str | Path) -> Path:
    """The BIDS JSON sidecar next to a NIfTI file: ``x.nii.gz`` → ``x.json``."""
    path = Path(path)
    return path.with_name(nifti_stem(path) + ".json")


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume of one voxel in ml, :math:`|\\det A_{3\\times 3}| / 1000` (affine in mm)."""
    return float(abs(np.linalg.det(np.asarray(affine)[:3, :3])) / 1000.0)


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel edge lengths (mm) of an affine: column norms of :math:`A_{3\\times3}`."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


# --------------------------------------------------------------------------- reading and writing
def read_volume(path: str | Path, *, what: str = "image") -> tuple[np.ndarray, nib.Nifti1Image]:
    """A 3D NIfTI as float32 array and its image (affine, header).

    Raises :class:`UsageError` for a missing or unreadable file, a 4D series
    (a trailing singleton axis is accepted) and non-finite-only data. NaN and
    infinite voxels are set to 0 with a warning.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} {path} does not exist")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # noqa: BLE001  (nibabel raises many kinds for a broken file)
        raise UsageError(f"cannot read {what} {path} as NIfTI ({exc.__class__.__name__}: {exc})") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 4:
        raise UsageError(
            f"{what} {path} is 4D with shape {data.shape}; give one 3D volume per image "
            "(split the series, e.g. with `fslsplit` or nibabel)"
        )
    if data.ndim != 3:
        raise UsageError(f"{what} {path} has {data.ndim} dimensions (shape {data.shape}); expected a 3D volume")
    finite = np.isfinite(data)
    if not finite.any():
        raise UsageError(f"{what} {path} has no finite values")
    if not finite.all():
        log.warning("%s: %d non-finite voxels set to 0", path, int((~finite).sum()))
        data = np.where(finite, data, 0.0).astype(np.float32)
    return data, img


def write_like(path: str | Path, data: np.ndarray, reference: nib.Nifti1Image, *, dtype=None) -> Path:
    """Write ``data`` (3D or 4D) on the grid of ``reference``, keeping its affine and header.

    The header is a copy of the reference's (orientation codes, qform/sform,
    units, description); the data type and the intensity scaling are reset.
    The file is written under a temporary name in the same folder and renamed,
    so ``path`` is never half written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = reference.header.copy()
    arr = np.asarray(data, dtype=dtype) if dtype is not None else np.asarray(data)
    header.set_data_dtype(arr.dtype)
    out = nib.Nifti1Image(arr, reference.affine, header=header)
    sform, scode = reference.get_sform(coded=True)
    qform, qcode = reference.get_qform(coded=True)
    out.set_sform(reference.affine if sform is None else sform, code=int(scode) if sform is not None else 2)
    if qform is not None:
        out.set_qform(qform, code=int(qcode))
    out.header.set_slope_inter(1.0, 0.0)
    with atomic_path(path) as tmp:  # the temporary name keeps .nii or .nii.gz: nibabel picks the format from it
        nib.save(out, str(tmp))
    return path


# --------------------------------------------------------------------------- grids
def model_grid(affine: np.ndarray, shape: Sequence[int], voxel_size_mm: float) -> tuple[np.ndarray, tuple[int, ...]]:
    """Grid with isotropic ``voxel_size_mm`` covering the same field of view.

    Same orientation and same world position of the first voxel's corner: the
    axes of ``affine`` are rescaled by ``voxel_size_mm / s_j`` (``s_j`` the
    input voxel sizes) and the origin shifted so that the field of view (voxel
    edges) starts at the same place; ``ceil(n_j s_j / voxel_size_mm)`` voxels per axis.
    """
    affine = np.asarray(affine, dtype=np.float64)
    sizes = voxel_sizes(affine)
    scale = float(voxel_size_mm) / sizes
    out = affine.copy()
    out[:3, :3] = affine[:3, :3] * scale[None, :]
    # corner of voxel 0 stays put: centre_new = corner + half new voxel
    corner = affine[:3, :3] @ np.full(3, -0.5) + affine[:3, 3]
    out[:3, 3] = corner + out[:3, :3] @ np.full(3, 0.5)
    new_shape = tuple(max(1, int(math.ceil(n * s / float(voxel_size_mm) - 1e-6))) for n, s in zip(shape, sizes))
    return out, new_shape


def resample_to_grid(
    data: np.ndarray,
    affine_in: np.ndarray,
    affine_out: np.ndarray,
    shape_out: Sequence[int],
    *,
    order: int = 1,
    cval: float | Sequence[float] = 0.0,
) -> np.ndarray:
    """Resample ``data`` ((X, Y, Z) or (C, X, Y, Z)) from one voxel grid to another (world coordinates).

    Output voxel :math:`v` takes the input at :math:`A_{in}^{-1} A_{out} v`.
    ``order`` 1 = trilinear, 0 = nearest. ``cval`` fills points outside the
    input (one value per channel allowed). Same grid: a copy.
    """
    m = np.linalg.inv(np.asarray(affine_in, float)) @ np.asarray(affine_out, float)
    shape_out = tuple(int(s) for s in shape_out)
    if np.asarray(data).shape[-3:] == shape_out and np.allclose(m, np.eye(4), atol=1e-6):
        return np.asarray(data).copy()

    def one(vol: np.ndarray, c: float) -> np.ndarray:
        return ndimage.affine_transform(
            vol, m[:3, :3], offset=m[:3, 3], output_shape=shape_out, order=order, mode="constant", cval=float(c)
        )

    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 3:
        return one(data, float(np.ravel([cval])[0])).astype(np.float32)
    cvals = np.broadcast_to(np.asarray(cval, float), (data.shape[0],))
    return np.stack([one(ch, c) for ch, c in zip(data, cvals)]).astype(np.float32)
