"""Volume samples of the uncertainty variants, image by image (paper §4.1).

Per image, ``profile.n_uncertainty_samples`` volume samples from each variant
(:meth:`~physeg.inference.predictor.Predictor.sample`):

* aleatoric: ONE sliding-window forward pass gives logits ``f`` and ``σ``;
  ``n`` noisy logit maps ``f + σ·ε`` → ``n`` segmentations (volumes only);
* epistemic: ``n`` MC-dropout forward passes, batched: copies of the image go
  through the sliding window together (each copy and window draws its own
  dropout masks). From the same samples, the Monte-Carlo mean map (argmax of
  the mean soft-max, the prediction Gal & Ghahramani's dropout gives) is scored
  against the PGS, beside the deterministic parent's map of the same image:
  does the epistemic variant segment as well as the model it comes from, used
  as it is used?

Each image's noise and dropout masks are seeded from (profile seed, split,
sequence, subject, distribution, model, image index), so a re-run gives the
same samples. The validation subjects' fixed IoD set (the profile's
``calibration_subjects``) calibrates the intervals
(:mod:`physeg.evaluation.calibration`); the test subjects are scored IoD and OoD
on the evenly spread subset of the test grid
(:func:`physeg.evaluation.grid.uncertainty_subset`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from physeg.conventions import DISTRIBUTIONS, TISSUES, stable_seed
from physeg.evaluation import cache_io
from physeg.evaluation.grid import (generator_of, parameter_columns, simulate_grid, test_parameters,
                                    uncertainty_subset, validation_parameters)
from physeg.evaluation.metrics import dice_per_tissue, label_counts
from physeg.inference.predictor import Predictor
from physeg.inference.samples import class_argmax
from physeg.profiles import Profile

#: The uncertainty variants of a base model.
VARIANTS: tuple[str, ...] = ("Aleatoric", "Epistemic")


def uncertainty_folders(profile: Profile, folders: Mapping[tuple[str, str], Path]) -> dict[tuple[str, str], Path]:
    """The model folders an uncertainty evaluation reads: every variant of the profile's
    ``uncertainty_models`` and the deterministic parents (the epistemic maps are scored beside them)."""
    wanted = {f"{b}-{v}" for b in profile.uncertainty_models for v in VARIANTS} | set(profile.uncertainty_models)
    return {k: v for k, v in folders.items() if k[0] in wanted}


def image_samples(ale, epi, image: torch.Tensor, params: torch.Tensor, *, n: int, profile: Profile, key: tuple,
                  voxel_volume_ml: float, pgs: torch.Tensor | None = None, parent=None) -> dict[str, Any]:
    """Aleatoric and epistemic volume samples ``(n, 3)`` (ml) of one image, their seconds and Dice.

    The seconds are the samples' alone (with the epistemic maps the Dice needs), not the scoring.

    The aleatoric noise comes from a generator seeded by ``("aleatoric", *key)``,
    the dropout masks from the seed of ``("epistemic", *key)``. With ``pgs``,
    ``epi_dice`` is the Dice per tissue of the epistemic Monte-Carlo mean map
    and ``parent_dice`` that of ``parent``'s deterministic map (NaN without one).
    """
    out: dict[str, Any] = {"aleatoric": None, "epistemic": None, "epi_dice": None, "parent_dice": None}
    t0 = time.perf_counter()
    if ale is not None:
        g = generator_of(profile.seed, "aleatoric", *key)
        va = Predictor.from_profile(ale, profile).sample(image, params, n=n, generator=g, maps=False)
        out["aleatoric"] = va.volumes_ml(voxel_volume_ml)
    t1 = time.perf_counter()
    if epi is not None:
        seed = stable_seed(profile.seed, "epistemic", *key) % (2**63)
        ve = Predictor.from_profile(epi, profile).sample(image, params, n=n, seed=seed, maps=pgs is not None)
        out["epistemic"] = ve.volumes_ml(voxel_volume_ml)
    t2 = time.perf_counter()  # the scores below are not part of the samples' cost
    if epi is not None and pgs is not None:
        out["epi_dice"] = dice_per_tissue(class_argmax(ve.probabilities[None])[0], pgs)  # the Monte-Carlo mean map
        out["parent_dice"] = ({t: float("nan") for t in TISSUES} if parent is None else
                              dice_per_tissue(Predictor.from_profile(parent, profile).labels(image, params)[0], pgs))
    return {**out, "t_aleatoric_s": t1 - t0, "t_epistemic_s": t2 - t1}


def _grids(profile: Profile, sequence: str, split: str) -> dict[str, torch.Tensor]:
    if split != "test":
        return {"IoD": validation_parameters(profile, sequence)}
    grids = {d: test_parameters(profile, sequence, d) for d in DISTRIBUTIONS}
    return {d: p[uncertainty_subset(p, sequence, profile.n_uncertainty_images)] for d, p in grids.items()}


def _image_rows(subject, sequence: str, split: str, d: str, base: str, i: int, cols: dict, counts: dict,
                got: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for j, t in enumerate(TISSUES):
        rows.append({
            "subject": subject.subject_id, "split": split, "sequence": sequence, "model": base,
            "distribution": d, "param_index": i, **cols, "tissue": t,
            "pgs_volume_ml": counts[t] * subject.voxel_volume_ml,
            "aleatoric": None if got["aleatoric"] is None else got["aleatoric"][:, j],
            "epistemic": None if got["epistemic"] is None else got["epistemic"][:, j],
            "epi_dice": np.nan if got["epi_dice"] is None else got["epi_dice"][t],
            "parent_dice": np.nan if got["parent_dice"] is None else got["parent_dice"][t],
            "t_aleatoric_s": got["t_aleatoric_s"], "t_epistemic_s": got["t_epistemic_s"],
        })
    return rows


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
    seeded per image (:func:`image_samples`), so a resumed run's samples equal
    an uninterrupted run's.

    ``models`` holds the uncertainty variants ``"<base>-Aleatoric"`` and
    ``"<base>-Epistemic"`` (and, for ``epi_dice``'s comparison, the parents
    ``"<base>"``). ``split="test"``: the IoD and OoD test grids;
    ``split="val"``: the validation IoD set. Columns: ``subject, split, sequence,
    model (base name), distribution, param_index, parameter columns, tissue,
    pgs_volume_ml, aleatoric, epistemic`` (arrays of ``n`` volumes, or None),
    ``epi_dice, parent_dice`` (test split: the Monte-Carlo mean map's and the
    parent's Dice; NaN elsewhere), ``t_aleatoric_s, t_epistemic_s`` (seconds per image).
    """
    n = n or profile.n_uncertainty_samples
    bases = list(bases or profile.uncertainty_models)
    rows = []
    for sequence in profile.sequences:
        grids = _grids(profile, sequence, split)
        for subject in subjects:
            counts = label_counts(subject.pgs)
            for d, params in grids.items():
                cols = parameter_columns(sequence, params)
                images, feats = simulate_grid(subject, sequence, params)
                for base in bases:
                    ale, epi = (models.get((f"{base}-{v}", sequence)) for v in VARIANTS)
                    if ale is None and epi is None:
                        continue
                    block = None if partial_dir is None else Path(partial_dir) / (
                        f"{split}_{sequence}_{subject.subject_id}_{d}_{base}.csv")
                    if block is not None and cache_io.schema_path(block).is_file():
                        rows += cache_io.load_frame(block).to_dict("records")
                        continue
                    done = []
                    for i in range(images.shape[0]):
                        got = image_samples(ale, epi, images[i], feats[i], n=n, profile=profile,
                                            key=(split, sequence, subject.subject_id, d, base, i),
                                            voxel_volume_ml=subject.voxel_volume_ml,
                                            pgs=subject.pgs if split == "test" else None,
                                            parent=models.get((base, sequence)))
                        done += _image_rows(subject, sequence, split, d, base, i, cols[i], counts, got)
                    if block is not None:
                        block.parent.mkdir(parents=True, exist_ok=True)
                        cache_io.save_frame(pd.DataFrame(done), block)  # schema last: marks the block complete
                    rows += done
    return pd.DataFrame(rows)
