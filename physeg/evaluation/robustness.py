r"""Robustness of the trained ablations to physics artefacts and to an unseen sequence (issue 17; paper §5).

The paper's models see noise-free images with ideal flip angles. Here the test
images of the evaluation grid (:func:`physeg.evaluation.grid.test_parameters`,
IoD, the same θ for every model) are simulated with

* a smooth **B1+** field inside the equations (peak relative flip-angle error
  :math:`A_{B_1}`; MPRAGE through its inversion efficiency, SPGR through the
  flip angle),
* a smooth **receive bias** (peak log amplitude :math:`A_b`),
* **Rician noise** at a stated SNR (mean head signal / σ),

one artefact at a time at increasing levels (:data:`LEVELS`), each image with
its own field draw, and segmented by every ablation. Out of family: the
MPRAGE models segment **MP2RAGE UNI** images (sequence they never saw; Marques
et al. 2010), given TI = TI1 as their physics input. Scores: Dice against the
PGS and, per subject, the CoV of each tissue volume over the images of a
condition (:func:`physeg.evaluation.metrics.coefficient_of_variation`).

Every draw is seeded from :func:`physeg.conventions.stable_seed` of the
profile seed, the sequence, the condition and the subject (``seed`` column).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from physeg.conventions import IOD, TISSUES, stable_seed
from physeg.evaluation.grid import generator_of, test_parameters
from physeg.evaluation.metrics import coefficient_of_variation, dice_per_tissue, volumes_ml

__all__ = ["LEVELS", "RobustnessConfig", "config_for", "conditions", "evaluate_artefacts", "evaluate_mp2rage",
           "summary", "cov_summary"]

#: Artefact levels (one artefact at a time); "clean" is the paper's noise-free image.
LEVELS: Mapping[str, tuple[float, ...]] = {
    "B1+ peak error": (0.1, 0.2, 0.3),
    "receive bias peak log": (0.2, 0.4, 0.6),
    "SNR": (40.0, 20.0, 10.0),
}


@dataclass(frozen=True)
class RobustnessConfig:
    """Size of the study: test subjects, images per condition (IoD θ of the test grid), MP2RAGE images, levels."""

    n_subjects: int
    n_images: int
    n_mp2rage: int
    levels: Mapping[str, tuple[float, ...]] = field(default_factory=lambda: dict(LEVELS))


def config_for(profile) -> RobustnessConfig:
    """Smoke: 1 subject × 2 images, the largest level of each artefact; demo: 2 × 2, two levels;
    paper: every test subject × 5, every level of :data:`LEVELS`."""
    if profile.name == "smoke":
        return RobustnessConfig(1, 2, 2, {k: v[-1:] for k, v in LEVELS.items()})
    if profile.name == "demo":
        return RobustnessConfig(2, 2, 2, {k: v[1:] for k, v in LEVELS.items()})
    return RobustnessConfig(profile.n_test, 5, 5)


def conditions(config: RobustnessConfig | None = None) -> list[tuple[str, float, Any]]:
    """``(kind, level, Artefacts | None)``: the clean images, then each artefact at each level."""
    from physeg.simulation import Artefacts

    out: list[tuple[str, float, Any]] = [("clean", 0.0, None)]
    for kind, levels in (config.levels if config is not None else LEVELS).items():
        for a in levels:
            if kind.startswith("B1"):
                out.append((kind, a, Artefacts(b1=(a, a))))
            elif kind.startswith("receive"):
                out.append((kind, a, Artefacts(bias=(a, a))))
            else:
                out.append((kind, a, Artefacts(snr=(a, a))))
    return out


def _score(rows: list[dict], seg, subject, base: dict) -> None:
    dsc = dice_per_tissue(seg, subject.pgs)
    vol = volumes_ml(seg, subject.voxel_volume_ml)
    for t in TISSUES:
        rows.append({**base, "tissue": t, "dice": dsc[t], "volume_ml": vol[t]})


def evaluate_artefacts(profile, models: Mapping[tuple[str, str], Any], subjects: Sequence[Any], *,
                       config: RobustnessConfig, training_seed: int) -> pd.DataFrame:
    """One row per model × condition × subject × image × tissue (Dice, volume); see the module docstring."""
    from physeg.inference.predictor import Predictor
    from physeg.simulation import simulate

    rows: list[dict] = []
    for sequence in profile.sequences:
        preds = {n: Predictor.from_profile(m, profile) for (n, s), m in models.items() if s == sequence}
        if not preds:
            continue
        params = test_parameters(profile, sequence, IOD)[: config.n_images]
        for subject in subjects[: config.n_subjects]:
            for kind, level, art in conditions(config):
                seed = stable_seed(profile.seed, "robustness", sequence, kind, level, subject.subject_id)
                g = torch.Generator().manual_seed(seed)
                draw = None if art is None else art.draw(params.shape[0], generator=g)
                images = simulate(subject.maps, sequence=sequence, params=params, mask=subject.mask, artefacts=draw)
                for name, predictor in preds.items():
                    for i in range(images.shape[0]):
                        seg = predictor.labels(images[i], params[i])[0]
                        base = {"training_seed": training_seed, "sequence": sequence, "model": name, "kind": kind,
                                "level": level, "subject": subject.subject_id, "image": i, "seed": seed}
                        _score(rows, seg, subject, base)
    return pd.DataFrame(rows)


def evaluate_mp2rage(profile, models: Mapping[tuple[str, str], Any], subjects: Sequence[Any], *,
                     config: RobustnessConfig, training_seed: int) -> pd.DataFrame:
    """MPRAGE models on MP2RAGE UNI images (IoD MP2RAGE θ, seeded), physics input TI = TI1; and on MPRAGE."""
    from physeg.inference.predictor import Predictor
    from physeg.simulation import sample_parameters, simulate

    preds = {n: Predictor.from_profile(m, profile) for (n, s), m in models.items() if s == "MPRAGE"}
    if not preds:
        return pd.DataFrame()
    seed = stable_seed(profile.seed, "robustness", "MP2RAGE")
    mp2 = sample_parameters("MP2RAGE", config.n_mp2rage, generator=generator_of(seed))
    ti = mp2[:, :1].clone()  # TI1 as the MPRAGE models' physics input
    rows: list[dict] = []
    for subject in subjects[: config.n_subjects]:
        uni = simulate(subject.maps, sequence="MP2RAGE", params=mp2, mask=subject.mask)
        mpr = simulate(subject.maps, sequence="MPRAGE", params=ti, mask=subject.mask)
        for name, predictor in preds.items():
            for label, images in (("MP2RAGE UNI", uni), ("MPRAGE at TI1", mpr)):
                for i in range(images.shape[0]):
                    seg = predictor.labels(images[i], ti[i])[0]
                    base = {"training_seed": training_seed, "sequence": "MPRAGE", "model": name, "kind": label,
                            "level": round(float(mp2[i, 0]), 4), "subject": subject.subject_id, "image": i,
                            "seed": seed}
                    _score(rows, seg, subject, base)
    return pd.DataFrame(rows)


def summary(results: pd.DataFrame, *, by: Sequence[str] = ("sequence", "model", "kind", "level")) -> pd.DataFrame:
    """Mean Dice over subjects, images and training seeds, one column per tissue, plus the tissue mean."""
    wide = results.pivot_table(index=list(by), columns="tissue", values="dice", aggfunc="mean", observed=True)
    wide = wide[[t for t in TISSUES if t in wide.columns]]
    wide["mean"] = wide.mean(axis=1)
    return wide.reset_index()


def cov_summary(results: pd.DataFrame) -> pd.DataFrame:
    """CoV × 10³ of each tissue volume over a condition's images, per subject, then averaged (GM, WM)."""
    keys = ["training_seed", "sequence", "model", "kind", "level", "subject", "tissue"]
    cov = (results.groupby(keys, observed=True)["volume_ml"]
           .apply(lambda v: 1e3 * coefficient_of_variation(v.tolist())).rename("cov_x1000").reset_index())
    cov = cov[cov["tissue"].isin(["GM", "WM"])]
    return (cov.groupby(["sequence", "model", "kind", "level"], observed=True)["cov_x1000"].mean()
            .reset_index())


def seed_spread(results: pd.DataFrame, *, model: str) -> float:
    """Largest SD over training seeds of ``model``'s mean Dice (tissues, subjects, images pooled) in any one
    sequence × condition: what a difference between two single-seed models must exceed. ``NaN`` for one seed."""
    d = results[results["model"] == model]
    per_seed = (d.groupby(["training_seed", "sequence", "kind", "level"], observed=True)["dice"].mean()
                .groupby(["sequence", "kind", "level"], observed=True).agg(["std", "count"]))
    return float(per_seed["std"].max()) if len(per_seed) and per_seed["count"].min() > 1 else float("nan")


def arm_difference(summary_table: pd.DataFrame, *, first: str, second: str) -> pd.Series:
    """Mean Dice of model ``first`` minus ``second`` per sequence × artefact kind × level (clean images left out),
    from :func:`summary`."""
    art = summary_table[summary_table["kind"] != "clean"].pivot_table(
        index=["sequence", "kind", "level"], columns="model", values="mean", observed=True)
    return (art[first] - art[second]).rename(f"{first} − {second}")
