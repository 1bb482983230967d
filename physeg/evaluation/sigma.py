r"""What σ the aleatoric models learned (paper §2.4).

An aleatoric model predicts, per voxel :math:`i` and class :math:`c`, a
standard deviation :math:`\sigma_{i,c} > 0` of Gaussian noise on its logits.
Under the mean-cross-entropy loss σ = 0 is optimal and the head switches
itself off; under the Kendall & Gal loss (the default,
:func:`physeg.models.losses.aleatoric_loss`) σ grows where the labels are
ambiguous during training. This module measures it on trained models: the
mean σ (over classes) inside the brain mask and outside it, and the share of
brain voxels with σ above :data:`SIGMA_VISIBLE` (a logit spread large enough
to flip a decision between two classes whose logits differ by that much).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from physeg.evaluation.grid import validation_parameters
from physeg.inference.predictor import Predictor
from physeg.profiles import Profile
from physeg.simulation import simulate
from physeg.training.checkpoint import load_model

#: σ (logit units) above which a voxel counts as uncertain in :func:`sigma_table`.
SIGMA_VISIBLE: float = 0.5


def sigma_map(model: torch.nn.Module, image: torch.Tensor, params: torch.Tensor | None, *,
              profile: Profile) -> torch.Tensor:
    """Mean σ over classes, ``(*S)``, of one image ``(1, *S)`` by sliding-window inference."""
    predictor = Predictor.from_profile(model, profile)
    _, sigma = predictor.logits(image, params, sigma=True)
    return sigma[0].mean(0).cpu()


def sigma_table(profile: Profile, folders: Mapping[tuple[str, str], Path], subjects: Sequence[Any]) -> pd.DataFrame:
    """One row per aleatoric model, sequence and subject: mean σ in and out of the brain.

    Each subject is simulated at the first validation parameter vector of the
    sequence (:func:`physeg.evaluation.grid.validation_parameters`), so every
    model sees the same image.
    """
    rows = []
    for (name, sequence), folder in sorted(folders.items()):
        if not name.endswith("-Aleatoric"):
            continue
        model, plans = load_model(folder)
        params = validation_parameters(profile, sequence)[:1]
        for subject in subjects:
            image = simulate(subject.maps, sequence=sequence, params=params, mask=subject.mask)[0]
            sig = sigma_map(model, image, params if plans.uses_physics else None, profile=profile)
            brain = torch.as_tensor(subject.mask).bool()
            rows.append({"model": name, "sequence": sequence, "subject": subject.subject_id,
                         "sigma_brain": float(sig[brain].mean()), "sigma_outside": float(sig[~brain].mean()),
                         f"brain_share_sigma_gt_{SIGMA_VISIBLE}": float((sig[brain] > SIGMA_VISIBLE).float().mean())})
    return pd.DataFrame(rows)
