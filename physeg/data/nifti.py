r"""NIfTI images of the user: reading, writing on the input's grid, file names, voxel grids.

Geometry conventions: an affine :math:`A` maps voxel indices to world
coordinates in mm; the voxel edge lengths are the column norms of
:math:`A_{3\times3}` and one voxel's volume is :math:`|\det A_{3\times3}| / 1000`
ml. The network works on an isotropic grid of the model's voxel size
(:func:`model_grid`) with the same orientation and field of view as the
input; images go there and results come back by :func:`resample_to_grid`
(paper §2.1 trains on 1 mm isotropic maps; the profiles use coarser ones).

Orientation: :func:`to_canonical` reorders and flips the voxel axes to the
closest RAS+ frame (:func:`nibabel.orientations.io_orientation`, exact: no
interpolation) and :func:`from_canonical` undoes it, so an image stored
flipped or with permuted axes reaches the network as the same array.

Errors in what the user gave (missing, unreadable, damaged gzip, 4D files,
implausible geometry, :class:`GeometryLimits`) raise
:class:`physeg.cli.errors.UsageError`.
"""

from __future__ import annotations

import gzip
import logging
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class GeometryLimits:
    """Plausible geometry of a brain MRI volume, checked from the header before any data is read.

    Voxel edges (mm) in ``[min_voxel_mm, max_voxel_mm]``: below, the affine is
    likely in metres or broken; above, a voxel is larger than a cortical
    structure and every label would be wrong (a 60 mm voxel is "all GM").
    Field of view per axis (``n_j s_j``, mm) in ``[min_fov_mm, max_fov_mm]``:
    an adult brain spans 140-180 mm; ``min_fov_mm`` is lower to keep slabs and
    small test images. At most ``max_voxels`` voxels (memory).
    """

    min_voxel_mm: float = 0.1
    max_voxel_mm: float = 8.0
    min_fov_mm: float = 30.0
    max_fov_mm: float = 500.0
    max_voxels: int = 512**3


def check_geometry(img: nib.Nifti1Image, path: Path, *, limits: GeometryLimits, what: str = "image") -> None:
    """:class:`UsageError` naming ``path`` when the header's grid lies outside ``limits`` (reads no data)."""
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise UsageError(f"{what} {path} has a degenerate or non-finite affine; fix its header (sform/qform)")
    sizes = voxel_sizes(affine)
    shape = np.asarray(img.shape[:3], dtype=np.float64)
    fov = shape * sizes
    desc = "x".join(f"{s:.3g}" for s in sizes)
    if sizes.min() < limits.min_voxel_mm or sizes.max() > limits.max_voxel_mm:
        raise UsageError(f"{what} {path} has voxels of {desc} mm, outside the plausible "
                         f"{limits.min_voxel_mm:g}-{limits.max_voxel_mm:g} mm (check the header's units and affine)")
    if fov.min() < limits.min_fov_mm or fov.max() > limits.max_fov_mm:
        raise UsageError(f"{what} {path} covers {'x'.join(f'{f:.0f}' for f in fov)} mm, outside the plausible "
                         f"{limits.min_fov_mm:g}-{limits.max_fov_mm:g} mm per axis of a brain image")
    if float(np.prod(shape)) > limits.max_voxels:
        raise UsageError(f"{what} {path} has {int(np.prod(shape))} voxels, more than {limits.max_voxels}")


def to_canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(data, affine)`` reordered and flipped to the closest RAS+ axes, and the orientation used.

    ``data`` is (X, Y, Z, ...) (trailing axes kept). The new affine maps the
    new voxel indices to the same world points (:func:`nibabel.orientations.inv_ornt_aff`).
    """
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

    ornt = io_orientation(np.asarray(affine, dtype=np.float64))
    out = np.ascontiguousarray(apply_orientation(data, ornt))
    return out, np.asarray(affine, dtype=np.float64) @ inv_ornt_aff(ornt, data.shape[:3]), ornt


def from_canonical(data: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Undo :func:`to_canonical` on an array (X, Y, Z, ...) of the canonical grid."""
    from nibabel.orientations import apply_orientation, axcodes2ornt, ornt_transform

    back = ornt_transform(axcodes2ornt(("R", "A", "S")), ornt)
    return np.ascontiguousarray(apply_orientation(data, back))


# --------------------------------------------------------------------------- reading and writing
def check_gzip(path: str | Path, *, what: str = "file") -> None:
    """``ValueError`` naming ``path`` when a ``.gz`` file fails gzip's CRC-32 or length check.

    nibabel reads a gzip stream only as far as the image needs and never checks
    the trailer, so a flipped bit or a truncated copy would be read as data;
    here the whole stream is decompressed (4 MiB blocks) first.
    """
    path = Path(path)
    if not path.name.endswith(".gz"):
        return
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 22):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"cannot read {what} {path}: damaged gzip file ({exc}); copy or export it again") from None


def read_volume(path: str | Path, *, what: str = "image", limits: GeometryLimits | None = None
                ) -> tuple[np.ndarray, nib.Nifti1Image]:
    """A 3D NIfTI as float32 array and its image (affine, header).

    Raises :class:`UsageError` for a missing or unreadable file, a damaged
    gzip, a 4D series (a trailing singleton axis is accepted), a grid outside
    ``limits`` (:func:`check_geometry`, before the data is read) and
    non-finite-only data. NaN and infinite voxels are set to 0 with a warning.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} {path} does not exist")
    try:
        check_gzip(path, what=what)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        img = nib.load(str(path))
    except Exception as exc:  # noqa: BLE001  (nibabel raises many kinds for a broken file)
        raise UsageError(f"cannot read {what} {path} as NIfTI ({exc.__class__.__name__}: {exc})") from exc
    shape = tuple(img.shape)  # from the header: checked before any data is read
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) == 4:
        raise UsageError(
            f"{what} {path} is 4D with shape {shape}; give one 3D volume per image "
            "(split the series, e.g. with `fslsplit` or nibabel)"
        )
    if len(shape) != 3:
        raise UsageError(f"{what} {path} has {len(shape)} dimensions (shape {shape}); expected a 3D volume")
    if limits is not None:
        check_geometry(img, path, limits=limits, what=what)
    try:
        data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    except Exception as exc:  # noqa: BLE001  (nibabel raises many kinds for a broken file)
        raise UsageError(f"cannot read {what} {path} as NIfTI ({exc.__class__.__name__}: {exc})") from exc
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
    # a thousandth of a voxel of slack: sform is stored in float32, so an oblique 1 mm axis reads as
    # 1.0000001 mm and 256 voxels must not become ceil(256.00003) = 257
    new_shape = tuple(max(1, int(math.ceil(n * s / float(voxel_size_mm) - 1e-3))) for n, s in zip(shape, sizes))
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
