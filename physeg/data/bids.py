"""BIDS qMRI reading and writing: one subject's quantitative maps, mask, PGS and truth.

Layout (BIDS 1.9 qMRI; ``sub-XX`` is the participant label)::

    <root>/dataset_description.json, participants.tsv
    <root>/sub-XX/anat/sub-XX_R1map.nii.gz   (+ .json, "Units": "1/s")   or _T1map (s or ms)
    <root>/sub-XX/anat/sub-XX_R2starmap.nii.gz (+ .json, "1/s")          or _T2starmap
    <root>/sub-XX/anat/sub-XX_PDmap.nii.gz   (+ .json, "a.u." or "%")
    <root>/sub-XX/anat/sub-XX_desc-brain_mask.nii.gz                      (optional)
    <root>/derivatives/truth/sub-XX/anat/sub-XX_label-{GM,WM,CSF}_probseg.nii.gz (synthetic only)
    <root>/derivatives/pgs/sub-XX/anat/sub-XX_dseg.nii.gz  (+ derivatives/pgs/dseg.tsv)

:func:`load_subject` returns the canonical map tensor of the project,
(3, X, Y, Z) float32 [PD a.u., T1 s, T2* s], converting rates
:math:`T_1 = 1/R_1`, :math:`T_2^* = 1/R_2^*` (0 where the rate is 0: no tissue).

NIfTI files are written deterministically (:func:`write_nifti`): gzip with
``mtime = 0`` and no embedded file name, so identical arrays give identical bytes.
"""

from __future__ import annotations

import gzip
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

# Label names by integer value of the label maps (one definition in physeg.conventions).
from physeg.conventions import LABEL_NAMES as LABELS
from physeg.data.map_checks import check_grid, load_image, validated_maps
from physeg.io_safety import atomic_write_bytes, atomic_write_text
from physeg.data.nifti import nifti_stem, sidecar_path, voxel_volume_ml  # noqa: F401  (re-exported)
from physeg.pgs import TISSUES, physics_gold_standard

log = logging.getLogger(__name__)

#: Accepted suffixes per canonical channel: (suffix, kind) with kind "rate" or "time"/"pd".
MAP_SUFFIXES: dict[str, tuple[tuple[str, str], ...]] = {
    "PD": (("PDmap", "pd"),),
    "T1": (("R1map", "rate"), ("T1map", "time")),
    "T2star": (("R2starmap", "rate"), ("T2starmap", "time")),
}

# Unit strings (lower case, spaces removed) -> factor to SI (1/s, s, fraction).
_RATE_UNITS = {"1/s": 1.0, "s-1": 1.0, "s^-1": 1.0, "/s": 1.0, "hz": 1.0, "1/sec": 1.0,
               "1/ms": 1e3, "ms-1": 1e3, "ms^-1": 1e3, "/ms": 1e3, "khz": 1e3}
_TIME_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
               "ms": 1e-3, "msec": 1e-3, "millisecond": 1e-3, "milliseconds": 1e-3}
_PD_UNITS = {"a.u.": 1.0, "au": 1.0, "arbitrary": 1.0, "arbitraryunits": 1.0, "1": 1.0,
             "fraction": 1.0, "%": 0.01, "percent": 0.01, "p.u.": 0.01, "pu": 0.01}



@dataclass
class Subject:
    """One subject's maps and labels on one voxel grid.

    Attributes
    ----------
    subject_id : str        BIDS participant id, e.g. ``"sub-01"``.
    maps : torch.Tensor     (3, X, Y, Z) float32 [PD a.u., T1 s, T2* s].
    mask : torch.Tensor     (X, Y, Z) bool brain mask.
    pgs : torch.Tensor      (X, Y, Z) int64 PGS labels (0 bg, 1 GM, 2 WM, 3 CSF).
    truth : torch.Tensor | None   (4, X, Y, Z) float32 generating fractions [bg, GM, WM, CSF].
    affine : np.ndarray     (4, 4) voxel-to-world (mm).
    voxel_volume_ml : float  :math:`|\\det A_{3\\times3}| / 1000`.
    """

    subject_id: str
    maps: torch.Tensor
    mask: torch.Tensor
    pgs: torch.Tensor
    truth: torch.Tensor | None
    affine: np.ndarray
    voxel_volume_ml: float


# --------------------------------------------------------------------------- NIfTI helpers


# nifti_stem, sidecar_path, voxel_volume_ml: defined in physeg.data.nifti, imported above for bids users.


# --------------------------------------------------------------------------- writing


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    """Write ``data`` as NIfTI-1 (``.nii.gz`` or ``.nii``) with reproducible bytes.

    Header: sform and qform set to ``affine`` (code 2, aligned), units mm; gzip
    level 6 with ``mtime=0`` and no file name, so checksums do not depend on time,
    machine or path. Written atomically (:func:`physeg.io_safety.atomic_write_bytes`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm")
    img.set_sform(affine, code=2)
    img.set_qform(affine, code=2)
    raw = img.to_bytes()
    blob = gzip.compress(raw, compresslevel=6, mtime=0) if path.name.endswith(".gz") else raw
    return atomic_write_bytes(path, blob)


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:mod:`physeg.io_safety`): never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, text)


def write_json(path: Path, content: dict[str, Any], *, sort_keys: bool = True) -> Path:
    """JSON with 2-space indent and a final newline (sorted keys: stable bytes), written atomically."""
    return write_text(path, json.dumps(content, indent=2, sort_keys=sort_keys) + "\n")


def write_dseg_tsv(path: Path) -> Path:
    """The BIDS ``dseg.tsv`` lookup table of :data:`LABELS`."""
    lines = ["index\tname"] + [f"{i}\t{name}" for i, name in enumerate(LABELS)]
    return write_text(path, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------- reading


def normalise_subject_id(subject_id: str | int) -> str:
    """``"01"``, ``1`` or ``"sub-01"`` -> ``"sub-01"`` (integers are zero-padded to 2)."""
    if isinstance(subject_id, int):
        return f"sub-{subject_id:02d}"
    s = str(subject_id)
    return s if s.startswith("sub-") else f"sub-{s}"


def list_subjects(bids_root: str | Path) -> list[str]:
    """Sorted participant ids (``sub-*`` folders) of a BIDS dataset."""
    root = Path(bids_root)
    if not root.is_dir():
        raise FileNotFoundError(f"BIDS root {root} does not exist")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("sub-"))


def _anat_dir(root: Path, sub: str) -> Path:
    direct = root / sub / "anat"
    if direct.is_dir():
        return direct
    sessions = sorted((root / sub).glob("ses-*/anat"))
    if sessions:
        return sessions[0]
    raise FileNotFoundError(f"no anat folder for {sub} under {root}")


def _find_one(folder: Path, sub: str, suffix: str) -> Path | None:
    hits = sorted(p for p in folder.glob(f"{sub}_*{suffix}.nii*") if not p.name.endswith(".tmp"))
    if len(hits) > 1:
        # Picking one silently could read a stray copy instead of the real map.
        raise ValueError(f"{folder}: several {suffix} files for {sub} ({', '.join(p.name for p in hits)}); "
                         "keep exactly one")
    return hits[0] if hits else None


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """A BIDS JSON sidecar as a dict; ``ValueError`` naming the file if it is not a JSON object."""
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable JSON sidecar ({exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: a sidecar must be a JSON object {{...}}, got {type(meta).__name__} {meta!r:.40}")
    return meta


def _unit_factor(units: Any, kind: str, path: Path) -> float:
    if not isinstance(units, str):  # e.g. true or 1000: str() would hide the mistake
        raise ValueError(f"{path}: 'Units' must be a string such as 's', 'ms', '1/s' or '1/ms'; got {units!r}")
    key = units.strip().lower().replace(" ", "")
    table = {"rate": _RATE_UNITS, "time": _TIME_UNITS, "pd": _PD_UNITS}[kind]
    if key not in table:
        raise ValueError(f"{path}: unsupported Units {units!r} for a {kind} map; expected one of {sorted(table)}")
    return table[key]


def read_map_file(path: str | Path, *, kind: str, units: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One quantitative map in SI units and its affine.

    ``kind``: ``"rate"`` (R1/R2* in 1/s or 1/ms, converted to the time 1/R in s;
    R = 0 gives 0, a negative R a negative time, a non-finite R NaN, so that
    invalid voxels stay recognisable), ``"time"`` (T1/T2* in s or ms) or
    ``"pd"``. ``units`` overrides the JSON sidecar's ``Units``; without it the
    sidecar is required.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"map file {path} does not exist")
    if units is None:
        side = sidecar_path(path)
        if not side.is_file():
            raise FileNotFoundError(f"{path}: missing JSON sidecar {side} (needed for 'Units')")
        meta = read_sidecar(side)
        if "Units" not in meta:
            raise ValueError(f"{side}: sidecar has no 'Units' field")
        factor = _unit_factor(meta["Units"], kind, side)
    else:
        factor = _unit_factor(units, kind, path)
    img = load_image(path)
    data = np.asarray(img.dataobj, dtype=np.float64)
    if data.ndim > 3:
        if int(np.prod(data.shape[3:])) != 1:
            raise ValueError(f"{path}: expected a 3-D map, got shape {data.shape}")
        data = data.reshape(data.shape[:3])
    data = data * factor
    if kind == "rate":
        with np.errstate(divide="ignore", invalid="ignore"):
            usable = np.isfinite(data) & (data != 0)
            data = np.where(usable, 1.0 / np.where(usable, data, 1.0), np.where(np.isfinite(data), 0.0, np.nan))
    return data, np.asarray(img.affine, dtype=np.float64)


def _read_map(anat: Path, sub: str, channel: str) -> tuple[np.ndarray, np.ndarray, Path]:
    """One canonical channel in SI units (PD fraction, T1 s, T2* s), its affine and file."""
    for suffix, kind in MAP_SUFFIXES[channel]:
        path = _find_one(anat, sub, suffix)
        if path is not None:
            data, affine = read_map_file(path, kind=kind)
            return data, affine, path
    names = " or ".join(f"{sub}_{s}.nii[.gz]" for s, _ in MAP_SUFFIXES[channel])
    raise FileNotFoundError(f"{anat}: missing {channel} map ({names})")


def subject_paths(bids_root: str | Path, subject_id: str | int) -> dict[str, Path]:
    """Where the mask, PGS and truth files of a subject live (whether or not they exist)."""
    root = Path(bids_root)
    sub = normalise_subject_id(subject_id)
    anat = root / sub / "anat"
    paths = {
        "mask": anat / f"{sub}_desc-brain_mask.nii.gz",
        "pgs": root / "derivatives" / "pgs" / sub / "anat" / f"{sub}_dseg.nii.gz",
    }
    for tissue in TISSUES:
        paths[f"truth_{tissue}"] = (
            root / "derivatives" / "truth" / sub / "anat" / f"{sub}_label-{tissue}_probseg.nii.gz"
        )
    return paths


def load_subject(
    bids_root: str | Path,
    subject_id: str | int,
    *,
    compute_pgs: bool = True,
    cache_pgs: bool = True,
) -> Subject:
    """Load one subject of a BIDS qMRI dataset into the canonical tensors.

    Maps: ``R1map`` (or ``T1map``), ``R2starmap`` (or ``T2starmap``), ``PDmap``,
    each with a JSON sidecar whose ``Units`` converts it to SI (rates in 1/s or
    1/ms, times in s or ms, PD in a.u. or percent). Mask: ``desc-brain_mask``
    if present, else voxels where all three maps are finite and positive and
    :math:`PD > 0.1\\,\\mathrm{P}_{99}(PD)`. PGS: read from ``derivatives/pgs``,
    else computed with the default :func:`physeg.pgs.physics_gold_standard` and
    (``cache_pgs``) written there. Truth: ``derivatives/truth`` probsegs, else None.

    Raises
    ------
    FileNotFoundError
        Missing subject, map or sidecar (the message names the file).
    ValueError
        Unknown units, mismatched shapes or affines, NaN-only or implausible maps.
    """
    root = Path(bids_root)
    sub = normalise_subject_id(subject_id)
    if not (root / sub).is_dir():
        raise FileNotFoundError(f"subject folder {root / sub} does not exist")
    anat = _anat_dir(root, sub)
    channels = {c: _read_map(anat, sub, c) for c in ("PD", "T1", "T2star")}
    paths = subject_paths(root, sub)
    mask_path = _find_one(anat, sub, "desc-brain_mask") or _find_one(anat, sub, "mask")
    truth_paths = [paths[f"truth_{t}"] for t in TISSUES]
    return _assemble(
        sub, channels, mask_path=mask_path,
        truth_paths=truth_paths if all(p.is_file() for p in truth_paths) else None,
        pgs_path=paths["pgs"], compute_pgs=compute_pgs, cache_pgs=cache_pgs,
        dseg_tsv=root / "derivatives" / "pgs" / "dseg.tsv",
    )


def load_map_files(
    *,
    pd: str | Path,
    t1: str | Path | None = None,
    r1: str | Path | None = None,
    t2star: str | Path | None = None,
    r2star: str | Path | None = None,
    mask: str | Path | None = None,
    units: dict[str, str] | None = None,
    subject_id: str | None = None,
    compute_pgs: bool = True,
) -> Subject:
    """A :class:`Subject` from three NIfTI maps outside a BIDS tree (PGS not cached).

    The one map reader of ``physeg pgs`` and ``physeg simulate``. Give ``t1``
    or ``r1`` and ``t2star`` or ``r2star``. Units, in this order: ``units``
    (keys ``"pd"``, ``"t1"``, ``"r1"``, ``"t2star"``, ``"r2star"``; an explicit
    choice overrides the file's sidecar), else each file's JSON sidecar
    ``Units`` (s, ms, 1/s, 1/ms; a.u. or % for PD), else SI (s, 1/s, a.u.).
    The mask is ``mask`` or derived from the maps as in :func:`load_subject`;
    maps are validated as there (grid, invalid voxels, plausible medians).
    """
    units = units or {}
    if (t1 is None) == (r1 is None):
        raise ValueError("give exactly one of a T1 map or an R1 map")
    if (t2star is None) == (r2star is None):
        raise ValueError("give exactly one of a T2* map or an R2* map")
    spec = {
        "PD": (pd, "pd", "pd", "a.u."),
        "T1": (t1, "time", "t1", "s") if t1 is not None else (r1, "rate", "r1", "1/s"),
        "T2star": (t2star, "time", "t2star", "s") if t2star is not None else (r2star, "rate", "r2star", "1/s"),
    }
    channels = {}
    for channel, (path, kind, key, default) in spec.items():
        path = Path(path)
        given = units.get(key)
        u = given if given is not None else (None if sidecar_path(path).is_file() else default)
        if given is not None and sidecar_path(path).is_file():
            side_units = read_sidecar(sidecar_path(path)).get("Units")
            if side_units is not None and side_units != given:
                log.warning("%s: using the given units %r, not the sidecar's %r", path, given, side_units)
        data, affine = read_map_file(path, kind=kind, units=u)
        channels[channel] = (data, affine, path)
    name = subject_id or nifti_stem(pd)
    return _assemble(name, channels, mask_path=Path(mask) if mask else None, truth_paths=None,
                     pgs_path=None, compute_pgs=compute_pgs, cache_pgs=False, dseg_tsv=None)


def _assemble(
    sub: str,
    channels: dict[str, tuple[np.ndarray, np.ndarray, Path]],
    *,
    mask_path: Path | None,
    truth_paths: list[Path] | None,
    pgs_path: Path | None,
    compute_pgs: bool,
    cache_pgs: bool,
    dseg_tsv: Path | None,
) -> Subject:
    """Validate the maps (:func:`_validated_maps`), read truth and PGS: the common loader core."""
    maps, mask = validated_maps(channels, mask_path, sub)
    ref_affine = channels["PD"][1]
    ref_shape = mask.shape
    maps_t = torch.from_numpy(maps)
    mask_t = torch.from_numpy(mask)

    truth = None
    if truth_paths is not None:
        parts = []
        for tp in truth_paths:
            img = load_image(tp)
            check_grid(tp, img, ref_shape, ref_affine)
            parts.append(np.asarray(img.dataobj, dtype=np.float32).reshape(ref_shape))
        tissue = np.stack(parts)
        bg = np.clip(1.0 - tissue.sum(axis=0), 0.0, 1.0)
        truth = torch.from_numpy(np.concatenate([bg[None], tissue]).astype(np.float32))

    if pgs_path is not None and pgs_path.is_file():
        img = load_image(pgs_path)
        check_grid(pgs_path, img, ref_shape, ref_affine)
        pgs = torch.from_numpy(np.asarray(img.dataobj).reshape(ref_shape).astype(np.int64))
    elif compute_pgs:
        pgs = physics_gold_standard(maps_t, mask_t)
        if cache_pgs and pgs_path is not None:
            try:
                write_nifti(pgs_path, pgs.numpy().astype(np.uint8), ref_affine)
                if dseg_tsv is not None:
                    write_dseg_tsv(dseg_tsv)
            except OSError as exc:
                log.warning("could not cache PGS at %s: %s", pgs_path, exc)
    else:
        pgs = torch.zeros(ref_shape, dtype=torch.int64)

    return Subject(
        subject_id=sub,
        maps=maps_t,
        mask=mask_t,
        pgs=pgs,
        truth=truth,
        affine=ref_affine,
        voxel_volume_ml=voxel_volume_ml(ref_affine),
    )
