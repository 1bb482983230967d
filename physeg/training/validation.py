r"""Validation during training: the early-stopping score (paper §2.1).

The paper selects the checkpoint by "the Dice score combined with the
coefficient of variation" on the validation subjects. Here each validation
subject is simulated with a fixed IoD set of ``n_val_realisations``
acquisition-parameter vectors (seeded by the profile seed and the sequence,
so every model of a profile sees the same images: :func:`make_validation_set`),
and whole volumes are segmented by sliding-window inference. With tissues
:math:`k \in \{GM, WM, CSF\}`, subjects :math:`s` and realisations :math:`r`,

.. math::

    \text{score} = \frac13\sum_k \overline{\text{Dice}}_k
                 - \frac13\sum_k \overline{\text{CoV}}_k ,\qquad
    \text{CoV}_{s,k} = \frac{\text{SD}_r(V_{s,r,k})}{\text{mean}_r(V_{s,r,k})}

where Dice is averaged over subjects and realisations and the CoV of the
tissue volume :math:`V` (voxel count; sample SD, ``ddof = 1``, by
:func:`physeg.evaluation.metrics.coefficient_of_variation`) over the
realisations of a subject is averaged over subjects.

Edge cases (the score must stay a finite number to rank epochs)
    * Dice of a tissue absent from both maps is 1 (nothing to segment, nothing
      missed) rather than the ``NaN`` of the evaluation tables.
    * The CoV is undefined for a single realisation (no spread observed): 0.
    * The CoV is undefined when a tissue is never segmented in any realisation
      (zero mean): 0, the volume did not vary. Dropping a tissue is already
      paid for in its Dice (0 where the truth has it). An earlier version
      scored it 1 (a 100 % variation) and measured what that does: at the demo
      budget the SPGR physics models then kept their epoch-2 weights (a few
      CSF voxels, consistently: CoV ≈ 0) over their epoch-8 weights (no CSF:
      CoV 1), losing 0.06 GM and 0.05 WM validation Dice, because the
      penalty jumps from 0 to 1/3 of the score between "3 voxels" and "none".
"""

from __future__ import annotations

import math

import numpy as np
import torch

from physeg.conventions import IOD, TISSUE_NAMES, TISSUES, stable_seed
from physeg.evaluation import metrics
from physeg.inference.predictor import Predictor
from physeg.models.network import PhysicsUNet
from physeg.profiles import Profile
from physeg.training.batches import Realisations, Volumes, pregenerate

#: CoV of the validation score when it is undefined (see the module docstring).
COV_SINGLE_REALISATION: float = 0.0
COV_TISSUE_NEVER_SEGMENTED: float = 0.0

ValidationSet = list[tuple[Volumes, Realisations]]


def dice_per_tissue(seg: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    r"""Dice :math:`2|A\cap B|/(|A|+|B|)` per tissue, 1 when both are empty.

    :func:`physeg.evaluation.metrics.dice_per_tissue` with ``empty=1.0``: the validation
    score is a plain mean, so an absent tissue counts as a success here rather
    than as the ``NaN`` of the evaluation tables.
    """
    return metrics.dice_per_tissue(seg, truth, TISSUES, empty=1.0)


def validation_cov(volumes: list[float]) -> float:
    """CoV of one subject's tissue volumes over its realisations, with the edge cases of the module docstring."""
    cov = metrics.coefficient_of_variation(volumes)
    if math.isnan(cov):
        return COV_SINGLE_REALISATION if len(volumes) <= 1 else COV_TISSUE_NEVER_SEGMENTED
    return cov


def make_validation_set(subjects: list[Volumes], *, sequence: str, profile: Profile) -> ValidationSet:
    """Fixed IoD realisations of the validation subjects (seeded by profile seed and sequence)."""
    real = pregenerate(subjects, sequence=sequence, n=profile.n_val_realisations,
                       seed=stable_seed("validation", profile.seed, sequence), distribution=IOD)
    return list(zip(subjects, real))


def _subject_scores(segs: torch.Tensor, truth: torch.Tensor) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Dice of every realisation and the CoV over realisations, per tissue, of one subject's label maps ``segs``."""
    dices: dict[str, list[float]] = {t: [] for t in TISSUE_NAMES}
    volumes: dict[str, list[float]] = {t: [] for t in TISSUE_NAMES}
    for seg in segs:
        for t, d in dice_per_tissue(seg, truth).items():
            dices[t].append(d)
        for t, n in metrics.label_counts(seg, TISSUES).items():
            volumes[t].append(float(n))
    return dices, {t: validation_cov(volumes[t]) for t in TISSUE_NAMES}


def summarise_validation(dices: dict[str, list[float]], covs: dict[str, list[float]]) -> dict[str, float]:
    """Mean Dice and CoV per tissue, their means over tissues, and ``score`` = mean Dice − mean CoV."""
    out: dict[str, float] = {}
    for t in TISSUE_NAMES:
        out[f"val_dice_{t}"] = float(np.mean(dices[t]))
        out[f"val_cov_{t}"] = float(np.mean(covs[t]))
    out["val_dice_mean"] = float(np.mean([out[f"val_dice_{t}"] for t in TISSUE_NAMES]))
    out["val_cov_mean"] = float(np.mean([out[f"val_cov_{t}"] for t in TISSUE_NAMES]))
    out["score"] = out["val_dice_mean"] - out["val_cov_mean"]
    return out


def _mc_vote_labels(predictor: Predictor, real: Realisations, params: torch.Tensor | None, *,
                    n: int) -> torch.Tensor:
    """Majority-vote label maps ``(R, *S)`` of ``n`` MC-dropout samples for each realisation."""
    maps = []
    for i in range(real.images.shape[0]):
        p = None if params is None else params[i:i + 1]
        s = predictor.sample(real.images[i:i + 1], p, n=n, seed=stable_seed("validation-mc", i), maps=True)
        maps.append(s.labels.long())
    return torch.stack(maps)


def validate(model: PhysicsUNet, val_set: ValidationSet, *, profile: Profile, use_physics: bool) -> dict[str, float]:
    """Mean Dice and mean CoV per tissue, and the early-stopping score (module docstring).

    Epistemic models are scored in the mode they are used in: each image is
    segmented by the majority vote of ``profile.training.val_mc_samples``
    Monte-Carlo dropout samples (fixed dropout seeds, so epochs are compared on
    the same masks), not by the deterministic eval-mode network.
    """
    model.eval()
    dices: dict[str, list[float]] = {t: [] for t in TISSUE_NAMES}
    covs: dict[str, list[float]] = {t: [] for t in TISSUE_NAMES}
    predictor = Predictor.from_profile(model, profile, amp=True)
    for vol, real in val_set:
        # bf16 autocast on CUDA as before (amp does nothing on CPU)
        params = real.params if use_physics else None
        if predictor.uncertainty == "epistemic":
            segs = _mc_vote_labels(predictor, real, params, n=profile.training.val_mc_samples)
        else:
            segs = predictor.labels(real.images, params)
        subject_dices, subject_covs = _subject_scores(segs, vol.labels)
        for t in TISSUE_NAMES:
            dices[t] += subject_dices[t]
            covs[t].append(subject_covs[t])
    return summarise_validation(dices, covs)
