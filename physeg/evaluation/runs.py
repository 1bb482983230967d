"""Test-time evaluation: segmentation metrics and uncertainty samples on the test grid (paper §3, §4).

The grid of acquisition parameters lives in :mod:`physeg.evaluation.grid`
(its names are re-exported here: ``runs.test_grid`` …); every prediction goes
through the one predictor, :class:`physeg.inference.predictor.Predictor`.

Segmentation
------------
Every test image (subject × sequence × distribution × parameter set) is
segmented by every model of that sequence on the whole volume (sliding window,
:meth:`~physeg.inference.predictor.Predictor.labels`), scored against the
subject's PGS: one row per image and tissue in a long table (:data:`RESULT_COLUMNS`).

Uncertainty (paper §4.1)
------------------------
Per image, ``profile.n_uncertainty_samples`` volume samples from each variant
(:meth:`~physeg.inference.predictor.Predictor.sample`, volumes only):

* aleatoric: ONE sliding-window forward pass gives logits ``f`` and ``σ``;
  ``n`` noisy logit maps ``f + σ·ε`` → ``n`` segmentations (fused per class);
* epistemic: ``n`` MC-dropout forward passes, batched: copies of the image go
  through the sliding window together (each copy and window draws its own
  dropout masks).

Each image's noise and dropout masks are seeded from (profile seed, split,
sequence, subject, distribution, model, image index), so a re-run gives the
same samples. Epistemic samples on the validation subjects (fixed IoD set)
calibrate the intervals (:mod:`physeg.evaluation.calibration`); test subjects
are scored IoD and OoD. Results are cached under :func:`physeg.paths.hashed_dir`
so notebooks 05–06 reuse notebook 04's work.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from physeg.conventions import DISTRIBUTIONS, TISSUES, stable_seed
from physeg.evaluation.grid import (  # noqa: F401  (re-exported: notebooks call runs.test_grid …)
    LOW_FA_DEG,
    LOW_FA_RANGE_DEG,
    generator_of,
    parameter_columns,
    test_grid,
    test_parameters,
    uncertainty_subset,
    validation_parameters,
)
from physeg.data.cohort import load_split
from physeg.evaluation import cache_io
from physeg.evaluation.interval_scores import score_uncertainty  # noqa: F401  (re-exported)
from physeg.evaluation.metrics import cov_table, dice_per_tissue, label_counts, volumes_ml
from physeg.evaluation.models import load_models, model_folders, train_models  # noqa: F401  (re-exported)
from physeg.inference.predictor import Predictor
from physeg.io_safety import atomic_write_json
from physeg.profiles import Profile

#: 3: seeds from physeg.conventions.stable_seed (CRC-32) instead of a SHA-256 hasher: new test grids and draws.
#: 4: epistemic copies go through the sliding window with more windows per network call on CPU
#:    (Predictor) and the MC-dropout masks come from sampling.dropout_keep_mask: other draws of
#:    the same distribution, so the epistemic samples change (segmentation and aleatoric do not).
#: 5: the cache is CSV/JSON/npz (:mod:`physeg.evaluation.cache_io`), never a pickle.
#: 6: predictor CPU layout (group norms, channels-last: logits move by float32 rounding), aleatoric noise per voxel block.
EVALUATION_VERSION = "6"
RESULT_COLUMNS: tuple[str, ...] = (
    "subject", "sequence", "model", "distribution", "param_index", "params", "tissue",
    "dice", "volume_ml", "pgs_volume_ml",
)


def _simulate(subject, sequence: str, params: torch.Tensor):
    from physeg.simulation import simulate

    images = simulate(subject.maps, sequence=sequence, params=params, mask=subject.mask)
    return images, params.float()


# --------------------------------------------------------------------------- segmentation evaluation
def evaluate_segmentation(
    profile: Profile,
    models: Mapping[tuple[str, str], Any],
    subjects: Sequence[Any],
    *,
    examples: bool = True,
    progress: bool = False,
) -> tuple[pd.DataFrame, dict]:
    """Segment the test grid with every model; returns ``(results, examples)``.

    ``results``: long table, one row per image × tissue with :data:`RESULT_COLUMNS`
    plus the parameter columns. ``examples``: Figure 2 material for the first
    subject: per sequence one OoD image (lowest TI / a FA < 10° image), the PGS
    and every model's segmentation, as numpy arrays.
    """
    rows, ex = [], {}
    for sequence in profile.sequences:
        seq_models = {name: Predictor.from_profile(m, profile) for (name, s), m in models.items() if s == sequence}
        if not seq_models:
            continue
        grids = {d: test_parameters(profile, sequence, d) for d in DISTRIBUTIONS}
        cols = {d: parameter_columns(sequence, grids[d]) for d in DISTRIBUTIONS}
        for si, subject in enumerate(subjects):
            pgs = subject.pgs
            pgs_vol = volumes_ml(pgs, subject.voxel_volume_ml)
            for d in DISTRIBUTIONS:
                images, feats = _simulate(subject, sequence, grids[d])
                ex_idx = None
                if examples and si == 0 and d == "OoD" and len(grids[d]):
                    ex_idx = int(np.argmin(grids[d][:, 0].numpy())) if sequence == "MPRAGE" else 0
                    ex[sequence] = {"subject": subject.subject_id, "params": cols[d][ex_idx]["params"],
                                    "image": images[ex_idx, 0].numpy(), "pgs": pgs.numpy(), "seg": {}}
                for name, predictor in seq_models.items():
                    for i in range(images.shape[0]):
                        t0 = time.perf_counter()
                        seg = predictor.labels(images[i], feats[i])[0]
                        dt = time.perf_counter() - t0
                        if i == ex_idx:
                            ex[sequence]["seg"][name] = seg.numpy()
                        dsc = dice_per_tissue(seg, pgs)
                        vol = volumes_ml(seg, subject.voxel_volume_ml)
                        for t in TISSUES:
                            rows.append({
                                "subject": subject.subject_id, "sequence": sequence, "model": name,
                                "distribution": d, "param_index": i, **cols[d][i], "tissue": t,
                                "dice": dsc[t], "volume_ml": vol[t],
                                "pgs_volume_ml": pgs_vol[t], "seconds": dt,
                            })
                if progress:
                    print(f"{sequence} {subject.subject_id} {d}: {len(seq_models)} models × {images.shape[0]} images")
    return pd.DataFrame(rows), ex


# --------------------------------------------------------------------------- uncertainty evaluation
def _image_samples(ale, epi, image: torch.Tensor, params: torch.Tensor, *, n: int, profile: Profile,
                   key: tuple, voxel_volume_ml: float) -> tuple[np.ndarray | None, np.ndarray | None, float, float]:
    """Aleatoric and epistemic volume samples ``(n, 3)`` (ml) of one image and their seconds.

    The aleatoric noise comes from a generator seeded by ``("aleatoric", *key)``,
    the dropout masks from the seed of ``("epistemic", *key)`` (module docstring).
    """
    va = ve = None
    t0 = time.perf_counter()
    if ale is not None:
        g = generator_of(profile.seed, "aleatoric", *key)
        va = Predictor.from_profile(ale, profile).sample(image, params, n=n, generator=g, maps=False)
        va = va.volumes_ml(voxel_volume_ml)
    t1 = time.perf_counter()
    if epi is not None:
        seed = stable_seed(profile.seed, "epistemic", *key) % (2**63)
        ve = Predictor.from_profile(epi, profile).sample(image, params, n=n, seed=seed, maps=False)
        ve = ve.volumes_ml(voxel_volume_ml)
    return va, ve, t1 - t0, time.perf_counter() - t1


def uncertainty_samples(
    profile: Profile,
    models: Mapping[tuple[str, str], Any],
    subjects: Sequence[Any],
    *,
    split: str,
    n: int | None = None,
    bases: Sequence[str] | None = None,
    partial_dir: Path | None = None,
) -> pd.DataFrame:
    """Volume samples of every image: one row per image × tissue with ``samples`` arrays.

    ``partial_dir``: every finished (subject, distribution, model) block is
    written there as it completes and read back instead of recomputed on the
    next call, so an interrupted run resumes where it stopped; the samples are
    seeded per image (:func:`_image_samples`), so a resumed run's samples equal
    an uninterrupted run's.

    ``models`` holds the uncertainty variants ``"<base>-Aleatoric"`` and
    ``"<base>-Epistemic"``. ``split="test"``: the IoD and OoD test grids;
    ``split="val"``: the validation IoD set. Columns: ``subject, split, sequence,
    model (base name), distribution, param_index, parameter columns, tissue,
    pgs_volume_ml, aleatoric, epistemic`` (arrays of ``n`` volumes, or None),
    ``t_aleatoric_s, t_epistemic_s`` (seconds per image).
    """
    n = n or profile.n_uncertainty_samples
    bases = list(bases or profile.uncertainty_models)
    tissue_names = list(TISSUES)
    rows = []
    for sequence in profile.sequences:
        grids = ({d: test_parameters(profile, sequence, d) for d in DISTRIBUTIONS} if split == "test"
                 else {"IoD": validation_parameters(profile, sequence)})
        if split == "test":
            grids = {d: params[uncertainty_subset(params, sequence, profile.n_uncertainty_images)]
                     for d, params in grids.items()}
        for subject in subjects:
            counts = label_counts(subject.pgs)
            for d, params in grids.items():
                cols = parameter_columns(sequence, params)
                images, feats = _simulate(subject, sequence, params)
                for base in bases:
                    ale, epi = (models.get((f"{base}-{v}", sequence)) for v in ("Aleatoric", "Epistemic"))
                    if ale is None and epi is None:
                        continue
                    block = None if partial_dir is None else Path(partial_dir) / (
                        f"{split}_{sequence}_{subject.subject_id}_{d}_{base}.csv")
                    if block is not None and cache_io.schema_path(block).is_file():
                        rows += cache_io.load_frame(block).to_dict("records")
                        continue
                    done = []
                    for i in range(images.shape[0]):
                        key = (split, sequence, subject.subject_id, d, base, i)
                        va, ve, t_ale, t_epi = _image_samples(ale, epi, images[i], feats[i], n=n, profile=profile,
                                                              key=key, voxel_volume_ml=subject.voxel_volume_ml)
                        for j, t in enumerate(tissue_names):
                            done.append({
                                "subject": subject.subject_id, "split": split, "sequence": sequence,
                                "model": base, "distribution": d, "param_index": i, **cols[i], "tissue": t,
                                "pgs_volume_ml": counts[t] * subject.voxel_volume_ml,
                                "aleatoric": None if va is None else va[:, j],
                                "epistemic": None if ve is None else ve[:, j],
                                "t_aleatoric_s": t_ale, "t_epistemic_s": t_epi,
                            })
                    if block is not None:
                        block.parent.mkdir(parents=True, exist_ok=True)
                        cache_io.save_frame(pd.DataFrame(done), block)  # schema last: marks the block complete
                    rows += done
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- cached runs
@dataclass
class EvaluationResults:
    """Segmentation results of one profile (cached)."""

    profile: str
    results: pd.DataFrame
    cov: pd.DataFrame
    grid: pd.DataFrame
    examples: dict = field(repr=False, default_factory=dict)
    folder: Path | None = None
    wall_s: float = float("nan")

    def tables(self) -> pd.DataFrame:
        """Our Tables 1–2 (long, the schema of the paper's)."""
        from physeg.evaluation.paper_tables import our_tables

        return our_tables(self.results, self.cov)


@dataclass
class UncertaintyResults:
    """Uncertainty results of one profile (cached)."""

    profile: str
    samples: pd.DataFrame  # test rows with sample arrays
    val_samples: pd.DataFrame
    per_image: pd.DataFrame
    coverage: pd.DataFrame
    calibration: pd.DataFrame
    folder: Path | None = None
    wall_s: float = float("nan")


#: Profile fields that cannot change any one evaluation: free text, and how many seeds train the
#: uncertainty variants (each seed's samples are cached under its own model folders).
_NOT_IN_ANY_KEY: tuple[str, ...] = ("notes", "uncertainty_seeds")
#: Profile fields that cannot change a segmentation evaluation (uncertainty settings, free text):
#: left out of its cache key, so that asking for more uncertainty images reuses Tables 1-2.
_NOT_IN_SEGMENTATION_KEY: tuple[str, ...] = ("n_uncertainty_images", "n_uncertainty_samples",
                                             "uncertainty_models", "epistemic_dropout", "epistemic_epochs",
                                             "n_calibration_subjects", *_NOT_IN_ANY_KEY)


def _cache_config(kind: str, profile: Profile, folders: Mapping[tuple[str, str], Path]) -> dict:
    settings = profile.to_dict()
    ignored = _NOT_IN_SEGMENTATION_KEY if kind == "segmentation" else _NOT_IN_ANY_KEY
    settings = {k: v for k, v in settings.items() if k not in ignored}
    return {"kind": kind, "evaluation_version": EVALUATION_VERSION, "profile": settings,
            "models": sorted(f"{n}/{s}/{Path(f).name}" for (n, s), f in folders.items())}


def cache_folder(kind: str, profile: Profile, folders: Mapping[tuple[str, str], Path], *,
                 n_samples: int | None = None) -> Path:
    """The evaluation cache folder of ``kind`` (``"segmentation"`` or ``"uncertainty"``, with its ``n_samples``)
    for these model folders, without creating it: where :func:`run_evaluation` and :func:`run_uncertainty`
    keep their results, for readers that must not compute (the reference freeze)."""
    from physeg.paths import hashed_path

    return hashed_path("evaluation", _cache_key(kind, profile, folders, n_samples=n_samples))


def _cache_key(kind: str, profile: Profile, folders: Mapping[tuple[str, str], Path], *,
               n_samples: int | None = None) -> dict:
    cfg = _cache_config(kind, profile, folders)
    return cfg | {"n_samples": n_samples} if kind == "uncertainty" else cfg


def _save(obj: Any, path: Path) -> None:
    """A table (``.csv`` + schema), arrays (``.npz``) or a dict (``.json``), written atomically; never a pickle."""
    if isinstance(obj, pd.DataFrame):
        cache_io.save_frame(obj, path)
    elif path.suffix == ".npz":
        cache_io.save_arrays(obj, path)
    else:
        atomic_write_json(path, obj)


def run_evaluation(profile: Profile, *, folders: Mapping | None = None, force: bool = False,
                   progress: bool = False) -> EvaluationResults:
    """Segmentation evaluation of the profile's ablations on the test grid, cached.

    Trains (or reuses) the models via :func:`physeg.training.orchestrate.train_all` when
    ``folders`` is not given.
    """
    from physeg.paths import hashed_dir

    folders = dict(folders) if folders is not None else train_models(profile)
    folders = {k: v for k, v in folders.items() if k[0] in profile.ablations}
    out = hashed_dir("evaluation", _cache_key("segmentation", profile, folders))
    files = {"results": out / "results.csv", "cov": out / "cov.csv", "grid": out / "grid.csv",
             "examples": out / "examples.npz", "meta": out / "meta.json"}
    if not force and all(f.exists() for f in files.values()):
        meta = json.loads(files["meta"].read_text())
        return EvaluationResults(profile.name, cache_io.load_frame(files["results"]),
                                 cache_io.load_frame(files["cov"]), cache_io.load_frame(files["grid"]),
                                 cache_io.load_arrays(files["examples"]), out, meta.get("wall_s", float("nan")))
    t0 = time.perf_counter()
    models = load_models(folders)
    results, ex = evaluate_segmentation(profile, models, load_split(profile, "test", progress=progress),
                                      progress=progress)
    cov = cov_table(results)
    grid = test_grid(profile)
    wall = time.perf_counter() - t0
    for path, obj in zip(files.values(), (results, cov, grid, ex, {"wall_s": wall})):
        _save(obj, path)  # "meta" last: its presence marks a complete cache
    return EvaluationResults(profile.name, results, cov, grid, ex, out, wall)


def run_uncertainty(profile: Profile, *, folders: Mapping | None = None, force: bool = False,
                    n: int | None = None) -> UncertaintyResults:
    """Uncertainty evaluation (samples on val and test subjects, calibration, scores), cached."""
    from physeg.paths import hashed_dir

    folders = dict(folders) if folders is not None else train_models(profile)
    wanted = {f"{b}-{v}" for b in profile.uncertainty_models for v in ("Aleatoric", "Epistemic")}
    folders = {k: v for k, v in folders.items() if k[0] in wanted}
    n = n or profile.n_uncertainty_samples
    out = hashed_dir("evaluation", _cache_key("uncertainty", profile, folders, n_samples=n))
    f = out / "uncertainty_meta.json"  # written last: its presence marks a complete cache
    if not force and f.exists():  # only the (expensive) samples are cached; scoring is recomputed
        d = {"samples": cache_io.load_frame(out / "uncertainty_samples.csv"),
             "val_samples": cache_io.load_frame(out / "uncertainty_val_samples.csv"),
             "wall_s": json.loads(f.read_text()).get("wall_s", float("nan"))}
    else:
        t0 = time.perf_counter()
        models = load_models(folders)
        partial = out / "partial"  # finished blocks of an interrupted run, reused (uncertainty_samples)
        val = uncertainty_samples(profile, models, load_split(profile, "calibration"), split="val", n=n,
                                  partial_dir=partial)
        test = uncertainty_samples(profile, models, load_split(profile, "test"), split="test", n=n,
                                   partial_dir=partial)
        d = {"samples": test, "val_samples": val, "wall_s": time.perf_counter() - t0}
        _save(test, out / "uncertainty_samples.csv")
        _save(val, out / "uncertainty_val_samples.csv")
        _save({"wall_s": d["wall_s"]}, f)
        shutil.rmtree(partial, ignore_errors=True)  # our own blocks, now inside the complete cache
    if d["samples"].empty:
        per, cov, cal = pd.DataFrame(), pd.DataFrame(), pd.DataFrame()
    else:
        per, cov, cal = score_uncertainty(d["val_samples"], d["samples"])
        _save(per, out / "uncertainty_per_image.csv")
    d = {**d, "per_image": per, "coverage": cov, "calibration": cal}
    return UncertaintyResults(profile.name, **d, folder=out)


def run_uncertainty_seeds(profile: Profile, *, force: bool = False) -> dict[int, UncertaintyResults]:
    """:func:`run_uncertainty` for each training seed of the uncertainty variants
    (:attr:`~physeg.profiles.Profile.uncertainty_seed_list`), trained or reused here; cached per seed."""
    from physeg.training.orchestrate import train_all

    return {seed: run_uncertainty(profile, folders=model_folders(train_all(profile, seed=seed, progress=False)),
                                  force=force)
            for seed in profile.uncertainty_seed_list}


def per_image_by_seed(results: Mapping[int, UncertaintyResults]) -> pd.DataFrame:
    """The per-image uncertainty tables of :func:`run_uncertainty_seeds` in one frame with a ``seed`` column
    (the input of claims 4-5, which judge each seed and then ask whether the seeds agree)."""
    frames = [r.per_image.assign(seed=seed) for seed, r in results.items() if not r.per_image.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
