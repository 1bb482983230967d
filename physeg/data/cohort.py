"""Synthetic MPM cohort: 27 deterministic subjects built from the MNI152 tissue priors.

The paper's 27-subject early-onset Alzheimer MPM cohort is not public
(paper §3). This module generates a stand-in with the same size and split
(18 train / 4 validation / 5 test), from nothing but the templates inside the
nilearn wheel (:mod:`physeg.data.templates`), so the project runs offline.

Subject :math:`s` draws its random numbers from ``SeedSequence([seed, s])``,
so each subject is reproducible on its own. The generative model -- atrophy,
deformation, tissue parameters with texture, partial volume of rates, receive
field, noise -- is described and implemented in :mod:`physeg.data.synthetic`;
:func:`generate_subject` composes it, :func:`build_cohort` writes the BIDS
dataset (maps with sidecars, masks, generating fractions as ground truth, PGS
labels) and marks a finished build with :data:`MARKER`.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from physeg.cores import available_cores, limit_torch_threads
from physeg.data.bids import (
    LABELS,
    load_subject,
    normalise_subject_id,
    subject_paths,
    write_dseg_tsv,
    write_json,
    write_nifti,
)
from physeg.data.synthetic import (VERSION_2_SETTINGS, GeneratorSettings, atrophy, displacement, extracerebral_csf,
                                   mixed_maps, tissue_fields, warp_fractions, world_coords)
from physeg.data.manifest import check_file_record, write_file_record
from physeg.data.templates import mni_fractions
from physeg.io_safety import folder_lock
from physeg.paths import cache_root
from physeg.pgs import TISSUES
from physeg.profiles import Profile

log = logging.getLogger(__name__)

#: Versions of the generative model this code builds, byte for byte: 1 (the brain's edge mixes with air)
#: and 2 (extra-cerebral CSF, :func:`physeg.data.synthetic.extracerebral_csf`). A profile names its own
#: (:attr:`Profile.cohort_generator`); a change to the bytes of one is a new version, never an edit.
GENERATOR_VERSIONS: tuple[int, ...] = (1, 2)
#: The newest version (a new profile's default).
GENERATOR_VERSION: int = GENERATOR_VERSIONS[-1]
#: Subjects in the cohort, as in the paper.
N_SUBJECTS: int = 27
#: The fixed split (paper §3.1: 18 / 4 / 5); never reshuffled.
SPLIT: dict[str, tuple[str, ...]] = {
    "train": tuple(f"sub-{i:02d}" for i in range(1, 19)),
    "val": tuple(f"sub-{i:02d}" for i in range(19, 23)),
    "test": tuple(f"sub-{i:02d}" for i in range(23, 28)),
}
#: Name of the file that marks a complete build (written last).
MARKER: str = ".physeg-complete.json"


def cohort_split(profile: Profile | None = None) -> dict[str, list[str]]:
    """Participant ids per part: the first ``n_train/n_val/n_test`` of :data:`SPLIT`, and
    ``"calibration"``: the first :attr:`~physeg.profiles.Profile.calibration_subjects` validation subjects.

    ``profile=None`` gives the whole 18 / 4 / 5 split (calibration: all four validation subjects).
    """
    if profile is None:
        return {**{k: list(v) for k, v in SPLIT.items()}, "calibration": list(SPLIT["val"])}
    n = {"train": profile.n_train, "val": profile.n_val, "test": profile.n_test}
    parts = {k: list(SPLIT[k][: n[k]]) for k in SPLIT}
    return {**parts, "calibration": list(SPLIT["val"][: profile.calibration_subjects])}


def split_of(subject_id: str) -> str:
    """Which part of :data:`SPLIT` a participant belongs to."""
    sub = normalise_subject_id(subject_id)
    for part, ids in SPLIT.items():
        if sub in ids:
            return part
    raise KeyError(f"{sub} is not in the synthetic cohort")


def _fmt_mm(v: float) -> str:
    return f"{v:g}"


def default_cohort_dir(*, voxel_size_mm: float, seed: int, generator_version: int = GENERATOR_VERSION) -> Path:
    """``cache_root()/cohorts/synthetic-v{generator_version}-{voxel}mm-seed{seed}``."""
    return cache_root() / "cohorts" / f"synthetic-v{generator_version}-{_fmt_mm(voxel_size_mm)}mm-seed{seed}"


# --------------------------------------------------------------------------- generator


def generate_subject(
    index: int,
    *,
    voxel_size_mm: float,
    seed: int = 0,
    settings: GeneratorSettings | None = None,
    generator_version: int = GENERATOR_VERSION,
) -> dict[str, Any]:
    """Generate subject ``index`` (1-based) of the cohort, entirely in memory (``generator_version``:
    one of :data:`GENERATOR_VERSIONS`).

    Returns ``{"R1": (X,Y,Z) 1/s, "R2star": 1/s, "PD": a.u., "mask": bool,
    "fractions": (4,X,Y,Z) [bg,GM,WM,CSF], "affine": (4,4) mm, "meta": dict}``,
    arrays float32. Deterministic in ``(index, voxel_size_mm, seed, settings, generator_version)``.
    """
    if generator_version not in GENERATOR_VERSIONS:
        raise ValueError(f"unknown cohort generator version {generator_version!r}; this code builds "
                         f"{', '.join(map(str, GENERATOR_VERSIONS))}")
    settings = settings or GeneratorSettings()
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
    base, affine = mni_fractions(voxel_size_mm=voxel_size_mm)
    shape = base.shape[1:]
    world = world_coords(shape, affine)
    # The order of the draws below is part of the cohort's bytes (see physeg.data.synthetic).
    a = float(rng.uniform(*settings.atrophy_range))
    a_v = float(np.clip(a * rng.uniform(0.5, 1.5), 0.0, 0.8))
    frac = atrophy(base, world, a=a, a_ventricle=a_v, voxel_size_mm=voxel_size_mm)
    warped = warp_fractions(frac, displacement(rng, shape, voxel_size_mm=voxel_size_mm, settings=settings))
    if generator_version >= 2:  # no draw: every later draw is version 1's
        warped = extracerebral_csf(warped, voxel_size_mm=voxel_size_mm, settings=settings)
    tissue = warped[1:]
    fields, draws = tissue_fields(rng, shape, voxel_size_mm=voxel_size_mm, settings=settings)
    r1, r2s, pd = mixed_maps(rng, tissue, fields, world, settings)

    meta = {
        "participant_id": f"sub-{index:02d}",
        "split": split_of(f"sub-{index:02d}"),
        "atrophy": round(a, 4),
        "ventricle_growth": round(a_v, 4),
        **{f"{t}_{q}": round(v, 4) for t, d in draws.items() for q, v in d.items()},
    }
    return {
        "R1": r1.astype(np.float32),
        "R2star": r2s.astype(np.float32),
        "PD": pd.astype(np.float32),
        "mask": tissue.sum(axis=0) >= 0.5,
        "fractions": warped.astype(np.float32),
        "affine": affine,
        "meta": meta,
    }


# --------------------------------------------------------------------------- writing / caching

_SIDECARS = {
    "R1map": {"Units": "1/s", "Description": "longitudinal relaxation rate R1 = 1/T1"},
    "R2starmap": {"Units": "1/s", "Description": "effective transverse relaxation rate R2* = 1/T2*"},
    "PDmap": {"Units": "a.u.", "Description": "proton density relative to water (with receive-field bias)"},
}


def _generated_by(version: int) -> list[dict[str, str]]:
    return [{"Name": "physeg synthetic MPM cohort", "Version": str(version)}]


def _write_subject(root: Path, data: dict[str, Any], *, version: int) -> None:
    sub = data["meta"]["participant_id"]
    anat = root / sub / "anat"
    aff = data["affine"]
    for suffix, key in (("R1map", "R1"), ("R2starmap", "R2star"), ("PDmap", "PD")):
        write_nifti(anat / f"{sub}_{suffix}.nii.gz", data[key], aff)
        write_json(
            anat / f"{sub}_{suffix}.json",
            {**_SIDECARS[suffix], "MagneticFieldStrength": 3, "GeneratedBy": _generated_by(version)},
        )
    paths = subject_paths(root, sub)
    write_nifti(paths["mask"], data["mask"].astype(np.uint8), aff)
    for i, t in enumerate(TISSUES):
        write_nifti(paths[f"truth_{t}"], data["fractions"][i + 1], aff)


def _write_dataset_files(root: Path, *, voxel_size_mm: float, seed: int, version: int, metas: list[dict]) -> None:
    description = {
        "Name": "physeg synthetic MPM cohort (MNI152 2009a priors)",
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "License": "CC0-1.0 (derived from the ICBM152 2009a templates shipped with nilearn)",
        "GeneratedBy": _generated_by(version),
        "physeg": {
            "generator_version": version,
            "seed": seed,
            "voxel_size_mm": voxel_size_mm,
            "n_subjects": N_SUBJECTS,
            "split": {k: list(v) for k, v in SPLIT.items()},
            "settings": {k: v for k, v in asdict(GeneratorSettings()).items()  # version 1's record, byte for byte
                         if version >= 2 or k not in VERSION_2_SETTINGS},
        },
    }
    write_json(root / "dataset_description.json", description)
    cols = list(metas[0].keys())
    lines = ["\t".join(cols)] + ["\t".join(str(m[c]) for c in cols) for m in metas]
    (root / "participants.tsv").write_text("\n".join(lines) + "\n")
    for name, desc in (
        ("truth", "generating tissue fractions (ground truth) of the synthetic cohort"),
        ("pgs", "physics gold standard labels (physeg.pgs default)"),
    ):
        write_json(
            root / "derivatives" / name / "dataset_description.json",
            {"Name": desc, "BIDSVersion": "1.9.0", "DatasetType": "derivative",
             "GeneratedBy": _generated_by(version)},
        )
    write_dseg_tsv(root / "derivatives" / "pgs" / "dseg.tsv")


def read_marker(root: Path) -> dict[str, Any] | None:
    """Contents of the completion marker of a build, or None if the build is absent/partial."""
    path = Path(root) / MARKER
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def check_cohort_root(root: str | Path) -> dict[str, Any] | None:
    """The completion marker of ``root``, None if ``root`` is absent or an empty folder.

    Raises ``FileExistsError`` when ``root`` is a file, or a non-empty folder
    without :data:`MARKER`: physeg replaces only folders it built itself, so it
    refuses rather than deleting someone else's files.
    """
    root = Path(root)
    if not root.exists() and not root.is_symlink():
        return None
    if not root.is_dir():
        raise FileExistsError(f"cohort root {root} exists and is not a folder")
    marker = read_marker(root)
    if marker is None and any(root.iterdir()):
        raise FileExistsError(
            f"{root} exists and is not a finished physeg cohort (no {MARKER}); physeg only replaces folders "
            "it built: choose another --root, or move that folder away yourself"
        )
    return marker


def _install(tmp: Path, root: Path) -> None:
    """Put the finished build ``tmp`` at ``root``, replacing a previous physeg build there.

    The old build is renamed aside first and deleted only once the new one is
    in place, so a crash leaves either the old or the new build at ``root``.
    """
    old = root.parent / f".{root.name}.old-{os.getpid()}"
    if root.is_dir() and read_marker(root) is not None:
        root.rename(old)
    elif root.is_dir():
        root.rmdir()  # empty (check_cohort_root refused anything else)
    tmp.rename(root)
    if old.is_symlink():  # --root was a link to a build elsewhere: drop the link, keep what it pointed to
        old.unlink()
    elif old.exists():
        shutil.rmtree(old)


def build_cohort(
    profile: Profile,
    *,
    root: str | Path | None = None,
    seed: int | None = None,
    subjects: Iterable[str] | None = None,
    force: bool = False,
    progress: bool = True,
    verify_full: bool = False,
    workers: int = 1,
) -> Path:
    """Build (or reuse) the synthetic BIDS cohort for ``profile``; returns its root.

    Voxel size from ``profile.voxel_size_mm``, generator from ``profile.cohort_generator``; ``seed`` defaults to
    ``profile.seed``; ``root`` to :func:`default_cohort_dir`. Builds the
    subjects the profile uses (:func:`cohort_split`) unless ``subjects`` is
    given; ids and split are always those of the full cohort. A finished build
    carries :data:`MARKER`; it is reused when it holds every requested subject
    and the same generator version, seed and voxel size, else (or with
    ``force``) rebuilt in a temporary folder and swapped in. A ``root`` that
    exists without the marker is refused (:func:`check_cohort_root`), never
    deleted, even with ``force``.

    One process at a time builds or reuses a root (:func:`physeg.io_safety.folder_lock`;
    a second one waits). A reused build is checked against the record of its
    own files (:func:`physeg.data.manifest.check_file_record`: size and mtime,
    every sha256 with ``verify_full``); a changed file is a ``ValueError`` naming it.

    ``workers`` processes generate subjects side by side (the 1 mm cohort of the
    ``paper`` profiles takes about 30 s per subject on one core); the files do not
    depend on it.
    """
    prof = profile
    voxel = float(prof.voxel_size_mm)
    seed = int(prof.seed if seed is None else seed)
    version = int(prof.cohort_generator)
    root = Path(root) if root is not None else default_cohort_dir(voxel_size_mm=voxel, seed=seed,
                                                                  generator_version=version)
    wanted = (
        {normalise_subject_id(s) for s in subjects}
        if subjects is not None
        else {s for ids in cohort_split(prof).values() for s in ids}
    )
    for s in wanted:
        split_of(s)
    config = {"generator_version": version, "seed": seed, "voxel_size_mm": voxel}
    with folder_lock(root, what="cohort folder"):
        return _build_or_reuse(root, config=config, wanted=wanted, force=force, progress=progress,
                               verify_full=verify_full, workers=workers)


def _generate_and_write(tmp: Path, sub: str, *, voxel_size_mm: float, seed: int, version: int) -> dict[str, Any]:
    """Generate one subject into the build folder ``tmp``; returns its participants.tsv row."""
    data = generate_subject(int(sub[4:]), voxel_size_mm=voxel_size_mm, seed=seed, generator_version=version)
    _write_subject(tmp, data, version=version)
    return data["meta"]


def _write_pgs(tmp: Path, sub: str) -> None:
    load_subject(tmp, sub, compute_pgs=True, cache_pgs=True)


def _map_subjects(fn: Callable[[str], Any], subjects: list[str], *, workers: int, desc: str,
                  progress: bool) -> list[Any]:
    """``[fn(s) for s in subjects]``, in order, in ``workers`` processes when more than one.

    Every subject draws from its own seed sequence, so the files are the same bytes
    whatever the number of workers (tested); processes are spawned, never forked from
    a process that holds torch threads.
    """
    bar = dict(desc=desc, disable=not progress, unit="subject", total=len(subjects))
    if workers <= 1 or len(subjects) <= 1:
        return [fn(s) for s in tqdm(subjects, **bar)]
    workers = min(workers, len(subjects))
    threads = max(1, available_cores() // workers)  # no oversubscription of the cores
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=limit_torch_threads,
                             initargs=(threads,)) as pool:
        return list(tqdm(pool.map(fn, subjects), **bar))


def _build_or_reuse(root: Path, *, config: dict[str, Any], wanted: set[str], force: bool, progress: bool,
                    verify_full: bool, workers: int = 1) -> Path:
    """The locked part of :func:`build_cohort`: reuse ``root`` if it matches, else build and swap in."""
    voxel, seed, version = config["voxel_size_mm"], config["seed"], config["generator_version"]
    marker = check_cohort_root(root)
    if marker is not None and not force:
        same = all(marker.get(k) == v for k, v in config.items())
        if same and wanted <= set(marker.get("subjects", [])):
            problems = check_file_record(root, full=verify_full)
            if problems:
                raise ValueError(f"cohort {root} changed since physeg built it ({problems[0]}"
                                 + (f"; {len(problems) - 1} more" if len(problems) > 1 else "")
                                 + "); rebuild it with `physeg data build --force`")
            log.info("reusing synthetic cohort at %s", root)
            return root
        if same:
            wanted |= set(marker.get("subjects", []))

    order = sorted(wanted)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.partial-{os.getpid()}"
    if tmp.exists():  # our own name (this process id): a leftover of an earlier physeg run
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        desc = f"synthetic cohort {voxel:g} mm"
        metas = _map_subjects(partial(_generate_and_write, tmp, voxel_size_mm=voxel, seed=seed, version=version),
                              order, workers=workers, desc=desc, progress=progress)
        _write_dataset_files(tmp, voxel_size_mm=voxel, seed=seed, version=version, metas=metas)
        # PGS through the public loader, exactly as a user would get it
        _map_subjects(partial(_write_pgs, tmp), order, workers=workers, desc=f"{desc}: PGS", progress=progress)
        write_json(tmp / MARKER, {**config, "subjects": order, "labels": list(LABELS)})
        write_file_record(tmp)
        _install(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("synthetic cohort written to %s", root)
    return root


def load_split(profile: Profile, part: str, *, progress: bool = False) -> list:
    """The profile's subjects of one part of the split (``"train"``, ``"val"``, ``"test"`` or ``"calibration"``), loaded.

    Builds the cohort first if it is not cached (:func:`build_cohort`); the
    subjects come in the order of :func:`cohort_split`.
    """
    root = build_cohort(profile, progress=progress)
    return [load_subject(root, sid) for sid in cohort_split(profile)[part]]
