"""Freeze a finished run into ``results/<profile>/``: its tables, per-image metrics, claims, uncertainty summaries.

``physeg reference freeze --profile P`` (:mod:`physeg.cli.reference`) reads

* the CSV/TSV/JSON files the notebooks wrote under ``<build>/results/<profile>/``
  (notebook 04: ``tables.csv``, ``per_image.csv``, ``per_seed_tables.csv``;
  notebook 06: ``claims.csv``; anything else of those formats there);
* the executed notebooks' provenance headers (``<build>/notebooks/*.ipynb``:
  profile, commit, device, date of the run) and ``<build>/timings.json``
  (wall time per notebook);
* from the cache: ``finished.json`` of every trained model of the profile
  (all training seeds: epochs, wall time, validation Dice/CoV, precision) and
  the cached uncertainty samples of every training seed of the uncertainty
  variants, scored again (:func:`physeg.evaluation.runs.run_uncertainty`:
  per-image summary, interval coverage, the fitted calibration, with a ``seed``
  column; the first seed's calibration also as one ``calibration.json`` per
  epistemic model that ``physeg segment --calibration`` reads) and the time
  the cached segmentation evaluations took when computed (a notebook 04 that
  reused them runs in seconds);

and writes them, in open formats only, with ``provenance.json`` and
``SHA256SUMS`` (:mod:`physeg.reference.records`), into ``<dest>/<profile>/``.
Nothing is recomputed beyond re-scoring cached samples; nothing is trained.

Safety: everything is validated before anything is written; the folder is
assembled under a temporary name and renamed. An existing destination is
replaced only with ``force`` and only when every file in it is listed in its
own ``SHA256SUMS`` (i.e. an earlier freeze wrote it): physeg never deletes
what it did not write.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from physeg.reference import records

#: Files a finished run must have written into ``<build>/results/<profile>/``.
REQUIRED: tuple[str, ...] = ("tables.csv", "claims.csv")
#: Files whose presence marks complete cached uncertainty samples (CSV cache; the older pickle cache).
UNCERTAINTY_MARKERS: tuple[str, ...] = ("uncertainty_meta.json", "uncertainty_samples.pkl")
#: Formats copied from the run's results folder.
OPEN_SUFFIXES: tuple[str, ...] = (".csv", ".tsv", ".json")


class FreezeError(ValueError):
    """The run is not finished, belongs to another profile, or the destination is not ours to replace."""


@dataclass
class FreezeInputs:
    """What a freeze copies: the run's results folder and what the build and the cache say about the run."""

    source: Path
    #: Provenance headers of the executed notebooks, by notebook name.
    notebooks: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ``timings.json`` of the build (``{"profile", "seconds": {notebook: s}}``), if it is this profile's.
    timings: dict[str, Any] | None = None
    #: One row per finished model folder of the profile (all training seeds).
    models: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: ``run_uncertainty`` results from the cache per training seed, or ``None`` when none are cached.
    uncertainty: dict[int, Any] | None = None
    #: Seconds of the cached segmentation evaluations, all seeds (:func:`cached_segmentation_s`).
    segmentation_s: float | None = None


def notebook_headers(notebooks_dir: Path) -> dict[str, dict[str, Any]]:
    """``physeg_provenance`` metadata of each executed notebook (``NN_name.ipynb``) in ``notebooks_dir``."""
    out = {}
    for path in sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb")) if notebooks_dir.is_dir() else []:
        try:
            cells = json.loads(path.read_text()).get("cells", [])
        except (OSError, ValueError):
            continue
        for cell in cells:
            record = cell.get("metadata", {}).get("physeg_provenance")
            if record:
                out[path.stem] = dict(record)
                break
    return out


def model_table(profile: Any) -> pd.DataFrame:
    """``finished.json`` of every finished model of ``profile`` in the cache, all training seeds."""
    from physeg.training.checkpoint import read_finished
    from physeg.training.orchestrate import find_models

    rows = []
    for seed in dict.fromkeys((profile.seed, *profile.seeds)):
        for (name, sequence), folder in find_models(profile, seed=seed).items():
            summary = read_finished(folder) or {}
            rows.append({**summary, "model": name, "sequence": sequence, "seed": seed, "folder": folder.name})
    return pd.DataFrame(rows).drop_duplicates("folder") if rows else pd.DataFrame()


def cached_uncertainty(profile: Any) -> dict[int, Any] | None:
    """The profile's uncertainty results per training seed of its uncertainty variants
    (``{seed: run_uncertainty(...)}``) if their samples are cached, else ``None`` (never computes samples).

    Raises :class:`FreezeError` when some of those seeds are cached and others are not: claims 4-5
    were then judged on other samples than the ones a freeze would keep.
    """
    from physeg.evaluation import runs
    from physeg.training.orchestrate import find_models

    found, missing = {}, []
    for seed in profile.uncertainty_seed_list:
        folders = runs.uncertainty_folders(profile, find_models(profile, seed=seed))
        folder = runs.cache_folder("uncertainty", profile, folders, n_samples=profile.n_uncertainty_samples)
        if folders and any((folder / marker).is_file() for marker in UNCERTAINTY_MARKERS):
            found[seed] = folders
        else:
            missing.append(seed)
    if found and missing:
        raise FreezeError(f"uncertainty samples of training seed(s) {missing} are not cached for profile "
                          f"{profile.name!r} (seeds {sorted(found)} are): re-run notebooks 05 and 06")
    return {seed: runs.run_uncertainty(profile, folders=folders) for seed, folders in found.items()} or None


def cached_segmentation_s(profile: Any) -> float | None:
    """Seconds the segmentation evaluations (Tables 1-2, every training seed) took when they were computed.

    Read from each seed's evaluation cache (``meta.json``): a notebook 04 that
    reused the cache ran in seconds, and its time alone would hide this cost.
    ``None`` when no seed's evaluation is cached.
    """
    from physeg.evaluation import runs
    from physeg.training.orchestrate import find_models

    walls = []
    for seed in profile.seeds:
        folders = find_models(profile, seed=seed, models=list(profile.ablations))
        meta = runs.cache_folder("segmentation", profile, folders) / "meta.json"
        if folders and meta.is_file():
            wall = json.loads(meta.read_text()).get("wall_s")
            if wall is not None and np.isfinite(wall):
                walls.append(float(wall))
    return round(sum(walls), 1) if walls else None


def gather(profile: Any, *, build_dir: Path) -> FreezeInputs:
    """Collect a finished run of ``profile`` from ``build_dir`` and the cache (``PHYSEG_CACHE``, set at the edge).

    Raises :class:`FreezeError` when the results folder or a :data:`REQUIRED`
    file is missing, or the run's files name another profile.
    """
    source = Path(build_dir) / "results" / profile.name
    if not source.is_dir():
        raise FreezeError(f"{source} does not exist: run the notebooks on profile {profile.name!r} first "
                          f"(physeg paper --profile {profile.name})")
    missing = [name for name in REQUIRED if not (source / name).is_file()]
    if missing:
        raise FreezeError(f"{source / missing[0]} is missing: the run on {profile.name!r} did not finish "
                          "(notebooks 04 and 06 write tables.csv and claims.csv)")
    headers = notebook_headers(Path(build_dir) / "notebooks")
    other = sorted({h.get("profile") for h in headers.values()} - {profile.name})
    if other:
        raise FreezeError(f"the executed notebooks in {Path(build_dir) / 'notebooks'} ran on profile {other[0]!r}, "
                          f"not {profile.name!r}")
    timings = None
    timings_path = Path(build_dir) / "timings.json"
    if timings_path.is_file():
        doc = json.loads(timings_path.read_text())
        timings = doc if doc.get("profile") == profile.name else None
    return FreezeInputs(source=source, notebooks=headers, timings=timings, models=model_table(profile),
                        uncertainty=cached_uncertainty(profile), segmentation_s=cached_segmentation_s(profile))


def check_tables(inputs: FreezeInputs, *, profile: Any) -> None:
    """:class:`FreezeError` unless the run's tables and claims are this profile's, with all its seeds."""
    claims = pd.read_csv(inputs.source / "claims.csv")
    names = set(claims["profile"].astype(str)) if "profile" in claims else set()
    if names - {profile.name}:
        raise FreezeError(f"{inputs.source / 'claims.csv'} is from profile {sorted(names)[0]!r}, not {profile.name!r}")
    tables = pd.read_csv(inputs.source / "tables.csv")
    if "n_seeds" in tables and len(tables) and int(tables["n_seeds"].max()) != len(profile.seeds):
        raise FreezeError(f"{inputs.source / 'tables.csv'} holds {int(tables['n_seeds'].max())} training seed(s); "
                          f"profile {profile.name!r} has {len(profile.seeds)}: re-run notebook 04")


def check_destination(dest: Path, *, force: bool) -> None:
    """:class:`FreezeError` unless ``dest`` is absent, or (with ``force``) a folder an earlier freeze wrote."""
    if not dest.exists():
        return
    if not dest.is_dir():
        raise FreezeError(f"{dest} exists and is not a folder")
    if not (dest / records.SUMS_FILE).is_file():
        raise FreezeError(f"{dest} exists and was not written by physeg reference freeze (no {records.SUMS_FILE}); "
                          "move it away")
    sums = records.read_sums(dest)
    foreign = [rel for rel in records.listed_files(dest) if rel not in sums]
    if foreign:
        raise FreezeError(f"{dest / foreign[0]} is not listed in {dest / records.SUMS_FILE}: physeg did not "
                          "write it; move it away")
    if not force:
        raise FreezeError(f"{dest} exists; use --force to replace the reference results frozen there")


def _write_uncertainty(by_seed: dict[int, Any], folder: Path) -> list[str]:
    """Per-image summary, coverage and calibration CSVs of every seed (a ``seed`` column), and one
    calibration JSON per epistemic model of the first seed (the models ``physeg reference ship`` ships)."""
    from physeg.inference.calibration_io import calibration_to_json

    written = []
    for name in ("per_image", "coverage", "calibration"):
        frames = [getattr(u, name).assign(seed=seed) for seed, u in by_seed.items()
                  if getattr(u, name) is not None and not getattr(u, name).empty]
        if frames:
            pd.concat(frames, ignore_index=True).to_csv(folder / f"uncertainty_{name}.csv", index=False)
            written.append(f"uncertainty_{name}.csv")
    cal = next(iter(by_seed.values())).calibration
    if cal is not None and not cal.empty:
        for (model, sequence), _ in cal.groupby(["model", "sequence"], observed=True):
            rel = f"calibration/{model}-Epistemic_{sequence}.json"
            calibration_to_json(cal, folder / rel, model=model, sequence=sequence)
            written.append(rel)
    return written


def stage_times(inputs: FreezeInputs) -> dict[str, Any]:
    """Wall time per stage (s): each notebook (``timings.json``), training per model summed, uncertainty samples."""
    out: dict[str, Any] = {}
    if inputs.timings:
        out["notebooks_s"] = dict(inputs.timings.get("seconds", {}))
        out["notebooks_total_s"] = round(sum(out["notebooks_s"].values()), 1)
    if not inputs.models.empty and "wall_time_s" in inputs.models:
        out["training_models_total_s"] = round(float(inputs.models["wall_time_s"].sum()), 1)
        out["training_models"] = int(len(inputs.models))
    if inputs.segmentation_s is not None:
        out["segmentation_evaluation_s"] = inputs.segmentation_s
    walls = [u.wall_s for u in (inputs.uncertainty or {}).values() if pd.notna(u.wall_s)]
    if walls:
        out["uncertainty_samples_s"] = round(float(sum(walls)), 1)
    return out


def provenance_record(profile: Any, *, inputs: FreezeInputs, files: list[str],
                      training_note: str | None = None) -> dict[str, Any]:
    """The ``provenance.json`` of a freeze (see :mod:`physeg.reference.records`).

    ``training`` records the devices the models were trained on (their
    ``finished.json``) and ``training_note``, the freezer's words on where and how
    (the models may come from another machine than the notebooks, e.g. a GPU).
    """
    from physeg.reproduce.provenance import git_commit, utc_now

    commit = git_commit()
    precision = sorted(set(inputs.models["precision"].dropna())) if "precision" in inputs.models else []
    run_commits = sorted({h.get("commit", "?") for h in inputs.notebooks.values()})
    return {
        "freeze_version": records.FREEZE_VERSION,
        "profile": profile.name, "profile_hash": records.profile_hash(profile), "profile_settings": profile.to_dict(),
        "code_versions": records.code_versions(profile),
        "commit": commit.removesuffix("+dirty"), "dirty": commit.endswith("+dirty"),
        "run": {"commits": run_commits, "notebooks": inputs.notebooks,
                "devices": sorted({h.get("device", "?") for h in inputs.notebooks.values()}),
                "dates_utc": sorted({h.get("date_utc", "?") for h in inputs.notebooks.values()})},
        "machine": records.machine(), "precision": precision,
        "training": {"devices": sorted(set(inputs.models["device"].dropna())) if "device" in inputs.models else [],
                     "note": training_note},
        "machine_note": "machine is recorded at the freeze (the same machine when frozen right after the run); "
                        "run.devices are the executed notebooks' own device lines",
        "wall_time": stage_times(inputs), "frozen_utc": utc_now(), "files": files,
    }


def freeze(profile: Any, *, inputs: FreezeInputs, dest_root: Path, force: bool = False,
           training_note: str | None = None) -> Path:
    """Write ``dest_root/<profile>/`` from ``inputs`` (see the module docstring); returns the folder.

    Raises :class:`FreezeError` (nothing written) for an unfinished or foreign
    run, or a destination that is not ours to replace.
    """
    dest = Path(dest_root) / profile.name
    check_tables(inputs, profile=profile)
    check_destination(dest, force=force)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{profile.name}.freeze-tmp"
    if tmp.exists():
        shutil.rmtree(tmp)  # our own leftover from an interrupted freeze (hidden, named by us)
    tmp.mkdir()
    try:
        files = []
        for p in sorted(inputs.source.iterdir()):
            if p.is_file() and p.suffix in OPEN_SUFFIXES and not p.name.startswith("."):
                shutil.copyfile(p, tmp / p.name)
                files.append(p.name)
        if not inputs.models.empty:
            inputs.models.to_csv(tmp / "models.csv", index=False)
            files.append("models.csv")
        if inputs.uncertainty is not None:
            files += _write_uncertainty(inputs.uncertainty, tmp)
        records.write_json(tmp / records.PROVENANCE_FILE,
                           provenance_record(profile, inputs=inputs, files=files, training_note=training_note))
        records.write_sums(tmp)
        _replace(dest, tmp)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return dest


def _replace(dest: Path, tmp: Path) -> None:
    """Swap ``tmp`` in for ``dest``, removing only the files ``dest``'s own ``SHA256SUMS`` lists."""
    if dest.exists():
        for rel in records.read_sums(dest):
            (dest / rel).unlink(missing_ok=True)
        (dest / records.SUMS_FILE).unlink()
        for sub in sorted((p for p in dest.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            sub.rmdir()
        dest.rmdir()
    tmp.rename(dest)
