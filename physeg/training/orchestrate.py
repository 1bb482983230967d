"""Train every model a profile asks for, reusing finished ones (paper §4).

Models: ``profile.ablations`` (Baseline, Phys-Base, Phys-Strat, Phys-Strat-Aug)
plus epistemic and aleatoric variants of ``profile.uncertainty_models``
(Baseline, Phys-Strat-Aug), each for every sequence in ``profile.sequences``:
(4 + 2×2) × 2 = 16 models for the default profiles.

Each model lives in ``<cache>/models/<profile>/<model>_<sequence>_seed<seed>_<hash>/``
where ``<hash>`` = :func:`physeg.paths.config_hash` of the model's
:meth:`~physeg.models.plans.Plans.identity` (:mod:`physeg.training.identity`:
model switches, network, the training settings, seed, training code version).
A folder with ``finished.json`` is reused as is; any change of those inputs
gives a new folder. The pre-generated realisations and the validation set of a
sequence are built once and shared by all models trained for it.
"""

from __future__ import annotations

import logging
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import pandas as pd

from physeg.conventions import TISSUE_NAMES, stable_seed
from physeg.data import build_cohort, cohort_split, load_subject
from physeg.models.registry import get_model_spec, profile_models
from physeg.paths import cache_root, config_hash
from physeg.profiles import Profile
from physeg.training.augmentation import ARMS
from physeg.training.batches import Volumes, pregenerate
from physeg.training.checkpoint import BEST, FINISHED, model_lock, read_finished
from physeg.training.identity import make_plans
from physeg.training.loop import train_model
from physeg.training.parallel import TrainingJob, run_jobs
from physeg.training.validation import make_validation_set

log = logging.getLogger(__name__)

__all__ = ["model_folder", "job_folder", "load_volumes", "train_one", "train_all", "profile_jobs", "arm_jobs", "train_jobs", "summary_table", "find_models"]


def model_folder(model: str, *, profile: Profile, sequence: str, seed: int | None = None,
                 augmentation: str | None = None) -> Path:
    """``<cache>/models/<profile>/<model>_<sequence>_seed<seed>_<hash>/`` (not created).

    With an artefact augmentation arm (:data:`physeg.training.augmentation.ARMS`):
    ``<cache>/models/<profile>/augmentation/<model>+<arm>_<sequence>_seed<seed>_<hash>/``,
    the hash covering the plans and the arm.
    """
    plans = make_plans(get_model_spec(model), profile=profile, sequence=sequence, seed=seed)
    root = cache_root() / "models" / profile.name
    if augmentation is None:
        return root / f"{model}_{sequence}_seed{plans.seed}_{config_hash(plans.identity())}"
    key = config_hash({"plans": plans.identity(), "augmentation": ARMS[augmentation].to_dict()})
    return root / "augmentation" / f"{model}+{augmentation}_{sequence}_seed{plans.seed}_{key}"


def job_folder(job: TrainingJob, *, profile: Profile) -> Path:
    """:func:`model_folder` of a training job."""
    return model_folder(job.model, profile=profile, sequence=job.sequence, seed=job.seed,
                        augmentation=job.augmentation)


def load_volumes(profile: Profile) -> dict[str, list[Volumes]]:
    """Training and validation subjects of the profile's cohort (built if missing)."""
    root = build_cohort(profile)
    split = cohort_split(profile)
    return {part: [Volumes.from_subject(load_subject(root, sid)) for sid in split[part]]
            for part in ("train", "val")}


def _shared_sets(volumes: dict[str, list[Volumes]], *, profile: Profile, sequence: str) -> dict[str, Any]:
    """The validation set and the pre-generated training realisations of one sequence (shared by its models)."""
    return {
        "val_set": make_validation_set(volumes["val"], sequence=sequence, profile=profile),
        "pregenerated": pregenerate(volumes["train"], sequence=sequence, n=profile.training.n_pregenerated,
                                    seed=stable_seed("pregenerated", profile.seed, sequence)),
    }


def _parent_weights(spec, *, profile: Profile, sequence: str, seed: int | None) -> Path | None:
    """``best.pt`` of the model ``spec`` starts from (:attr:`~physeg.models.registry.ModelSpec.init_from`).

    The parent comes earlier in :func:`~physeg.models.registry.profile_models`,
    so it is trained by then; a parent that is missing is an error, not a silent
    training from scratch.
    """
    if spec.init_from is None:
        return None
    parent = model_folder(spec.init_from, profile=profile, sequence=sequence, seed=seed)
    if read_finished(parent) is None:
        raise RuntimeError(f"{spec.name} starts from {spec.init_from}, which is not trained: {parent}")
    return parent / BEST


def train_one(job: TrainingJob, *, profile: Profile, device: str = "auto", resume: bool = False,
              progress: bool = False) -> dict[str, Any]:
    """Train the model of ``job`` into its folder; returns its ``finished.json`` summary.

    Module-level (and the profile a frozen dataclass) so that
    :func:`physeg.training.parallel.run_jobs` can send it to a worker process.
    The cohort and the shared sets of a sequence are built once per process.
    """
    folder = job_folder(job, profile=profile)
    volumes = _volumes(profile)
    spec = get_model_spec(job.model)
    init = _parent_weights(spec, profile=profile, sequence=job.sequence, seed=job.seed)
    log.info("training %s %s seed %s -> %s", job.model, job.sequence, job.seed, folder)
    with model_lock(folder):  # a second process training this folder waits, then reuses the result
        if read_finished(folder) is None:
            train_model(
                spec, profile=profile, sequence=job.sequence, folder=folder,
                train_subjects=volumes["train"], val_subjects=volumes["val"], seed=job.seed, device=device,
                resume=resume, progress=progress, init_weights=init, **_shared(profile, job.sequence),
                augmentation=None if job.augmentation is None else ARMS[job.augmentation],
            )
    return read_finished(folder)


@lru_cache(maxsize=1)
def _volumes(profile: Profile) -> dict[str, list[Volumes]]:
    return load_volumes(profile)


@lru_cache(maxsize=2)
def _shared(profile: Profile, sequence: str) -> dict[str, Any]:
    return _shared_sets(_volumes(profile), profile=profile, sequence=sequence)


def train_all(
    profile: Profile,
    *,
    sequences: list[str] | tuple[str, ...] | None = None,
    models: list[str] | tuple[str, ...] | None = None,
    device: str = "auto",
    resume: bool = False,
    seed: int | None = None,
    progress: bool = True,
    workers: int = 1,
) -> dict[str, Any]:
    """Train (or reuse) every requested model with one model seed.

    Parameters
    ----------
    profile
        The resolved profile (:func:`physeg.profiles.get_profile` at the edge).
    sequences, models
        Subsets (default: the profile's sequences and :func:`physeg.models.registry.profile_models`).
    seed
        Model seed (default: the profile's ``seed``).
    resume
        Continue unfinished folders from ``last.pt`` instead of restarting them.
    workers
        Processes training models side by side (:mod:`physeg.training.parallel`);
        1 trains in this process, one model after the other.

    Returns
    -------
    ``{"folders": {(model, sequence): Path}, "summary": pandas.DataFrame}``; one
    summary row per model: wall time, epochs, best epoch, best val Dice per
    tissue, val CoV per tissue, score, whether it came from the cache.
    """
    seed = profile.seed if seed is None else seed
    jobs = [TrainingJob(name, sequence, seed) for sequence in (sequences or profile.sequences)
            for name in (models or profile_models(profile))]
    out = train_jobs(profile, jobs, device=device, resume=resume, progress=progress, workers=workers)
    return {"folders": {(job.model, job.sequence): f for job, f in out["folders"].items()}, "summary": out["summary"]}


def profile_jobs(profile: Profile) -> list[TrainingJob]:
    """Every model a profile's pages use: the ablations with every training seed, the uncertainty
    variants (§4.1) with the first ``profile.uncertainty_seeds`` of them.

    The seed-to-seed spread of the ablations (§4) judges claims 1-3; that of the
    variants, claims 4-5 (with one seed they give no verdict). Jobs come seed by
    seed, the first seed's complete set first.
    """
    variants = [name for name in profile_models(profile) if name not in profile.ablations]
    return [TrainingJob(name, sequence, s) for s in profile.seeds for sequence in profile.sequences
            for name in [*profile.ablations, *(variants if s in profile.uncertainty_seed_list else [])]]


def arm_jobs(profile: Profile, arms: list[str] | tuple[str, ...] = tuple(ARMS)) -> list[TrainingJob]:
    """Phys-Strat-Aug with each artefact augmentation arm (:data:`~physeg.training.augmentation.ARMS`),
    every sequence of the profile, first training seed: the models page 09 compares.

    Raises
    ------
    ValueError
        If an arm is not one of :data:`~physeg.training.augmentation.ARMS`.
    """
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise ValueError(f"unknown augmentation arm(s) {unknown}; choose from {sorted(ARMS)}")
    return [TrainingJob("Phys-Strat-Aug", seq, profile.seeds[0], augmentation=arm)
            for seq in profile.sequences for arm in arms]


def train_jobs(profile: Profile, jobs: list[TrainingJob], *, device: str = "auto", resume: bool = False,
               progress: bool = True, workers: int = 1) -> dict[str, Any]:
    """Train (or reuse) ``jobs``; returns ``{"folders": {job: Path}, "summary": DataFrame}`` (see :func:`train_all`)."""
    folders = {job: job_folder(job, profile=profile) for job in jobs}
    cached = {job for job in jobs if read_finished(folders[job]) is not None}
    todo = [job for job in jobs if job not in cached]
    if todo and workers > 1:
        build_cohort(profile)  # once, here: workers that each found it missing would build it side by side
    try:
        run_jobs(todo, workers=min(workers, max(1, len(todo))),
                 done=lambda job: read_finished(job_folder(job, profile=profile)) is not None,
                 train=partial(train_one, profile=profile, device=device, resume=resume,
                               progress=progress and workers == 1))
    finally:
        _volumes.cache_clear()
        _shared.cache_clear()
    rows = [{**read_finished(folders[job]), "cached": job in cached, "folder": str(folders[job])} for job in jobs]
    return {"folders": folders, "summary": summary_table(rows)}


def summary_table(rows: list[dict]) -> pd.DataFrame:
    """Rows of ``finished.json`` summaries as a DataFrame with the main columns first."""
    df = pd.DataFrame(rows)
    first = ["model", "sequence", "epochs", "best_epoch", "wall_time_s",
             *(f"val_dice_{t}" for t in TISSUE_NAMES), *(f"val_cov_{t}" for t in TISSUE_NAMES), "best_score"]
    return df[[c for c in first if c in df] + [c for c in df if c not in first]]


def find_models(profile: Profile, *, sequence: str | None = None, seed: int | None = None,
                models: list[str] | None = None) -> dict[tuple[str, str], Path]:
    """Finished model folders of a profile (current config hashes only): ``{(model, sequence): folder}``."""
    out = {}
    for seq in ([sequence] if sequence else profile.sequences):
        for name in models or profile_models(profile):
            folder = model_folder(name, profile=profile, sequence=seq, seed=seed)
            if (folder / FINISHED).exists():
                out[(name, seq)] = folder
    return out
