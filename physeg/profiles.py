"""Compute profiles: one configuration, several sizes.

Every notebook takes ``profile`` as a papermill parameter, the CLI takes
``--profile`` and the environment variable ``PHYSEG_PROFILE`` sets the default.

``smoke``
    CI on 2 CPU cores in minutes: tiny volumes, a handful of steps. Checks that
    the whole chain runs, not the science.
``demo``
    The README's default main job on a laptop CPU: coarse volumes, enough
    training to show the direction of the paper's claims.
``paper``
    The paper's settings: 1 mm maps, 128³ patches, batch 4, Adam lr 1e-4,
    early stopping after 7 epochs; needs a GPU.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

SEQUENCES: tuple[str, ...] = ("MPRAGE", "SPGR")

#: The four ablations of the paper (§4) and the uncertainty variants (§4.1).
ABLATIONS: tuple[str, ...] = ("Baseline", "Phys-Base", "Phys-Strat", "Phys-Strat-Aug")
UNCERTAINTY_MODELS: tuple[str, ...] = ("Baseline", "Phys-Strat-Aug")


@dataclass(frozen=True)
class Profile:
    """Sizes and budgets of one compute profile. Times in seconds, sizes in voxels/mm."""

    name: str
    #: Voxel size (mm, isotropic) of the cohort maps; MNI templates are resampled to it.
    voxel_size_mm: float
    #: Subjects used from the fixed 18/4/5 split (first n of each part).
    n_train: int
    n_val: int
    n_test: int
    #: Training patch edge (voxels) and U-Net channel widths per level.
    patch_size: int
    channels: tuple[int, ...]
    #: Realisations per batch (= N realisations of one subject in stratified batches).
    batch_size: int
    learning_rate: float
    max_epochs: int
    #: Optimiser steps per epoch (an "epoch" over the training subjects).
    steps_per_epoch: int
    #: Early stopping patience in epochs.
    patience: int
    #: Fixed realisations per training subject for the pre-generated ablations.
    n_pregenerated: int
    #: Realisations per validation subject (fixed IoD set).
    n_val_realisations: int
    #: Test grid per test subject and sequence.
    n_test_iod: int
    n_test_ood: int
    #: Monte-Carlo samples per image (aleatoric and epistemic each) and the
    #: number of noisy logit passes T in the aleatoric loss.
    n_uncertainty_samples: int
    aleatoric_passes: int
    #: Stratification loss weight λ.
    strat_weight: float
    #: Sliding-window overlap at inference.
    sw_overlap: float
    sequences: tuple[str, ...] = SEQUENCES
    ablations: tuple[str, ...] = ABLATIONS
    uncertainty_models: tuple[str, ...] = UNCERTAINTY_MODELS
    seed: int = 0
    #: Test-grid images per subject, sequence and distribution that get the
    #: 50 + 50 uncertainty samples (evenly spaced over the grid, always the
    #: first, which for SPGR OoD has FA < 10°); ``None`` = every image (paper).
    n_uncertainty_images: int | None = None
    notes: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain dictionary, for hashing and for writing next to results."""
        return dataclasses.asdict(self)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        voxel_size_mm=6.0,
        n_train=3,
        n_val=1,
        n_test=2,
        patch_size=16,
        channels=(4, 8, 16),
        batch_size=4,
        learning_rate=1e-3,
        max_epochs=2,
        steps_per_epoch=2,
        patience=7,
        n_pregenerated=4,
        n_val_realisations=4,
        n_test_iod=4,
        n_test_ood=4,
        n_uncertainty_samples=5,
        aleatoric_passes=3,
        strat_weight=1.0,
        sw_overlap=0.25,
        notes="CI: checks that everything runs, not the science.",
    ),
    "demo": Profile(
        name="demo",
        voxel_size_mm=4.0,
        n_train=18,
        n_val=2,
        n_test=5,
        patch_size=32,
        channels=(8, 16, 32, 64),
        batch_size=4,
        learning_rate=1e-3,
        max_epochs=8,
        steps_per_epoch=18,
        patience=7,
        n_pregenerated=8,
        n_val_realisations=3,
        n_test_iod=10,
        n_test_ood=10,
        n_uncertainty_samples=10,
        aleatoric_passes=10,
        strat_weight=1.0,
        sw_overlap=0.25,
        n_uncertainty_images=1,
        notes=(
            "Laptop CPU; uncertainty on 1 grid image per subject/sequence/distribution with 10 samples each "
            "(MC dropout over whole volumes is the CPU bottleneck);  lr 1e-3 instead of the paper's 1e-4 to converge in few steps; "
            "2 of the 4 validation subjects with 3 realisations each to keep validation cheap."
        ),
    ),
    "paper": Profile(
        name="paper",
        voxel_size_mm=1.0,
        n_train=18,
        n_val=4,
        n_test=5,
        patch_size=128,
        channels=(30, 60, 120, 240, 480),
        batch_size=4,
        learning_rate=1e-4,
        max_epochs=200,
        steps_per_epoch=72,
        patience=7,
        n_pregenerated=20,
        n_val_realisations=10,
        n_test_iod=30,
        n_test_ood=30,
        n_uncertainty_samples=50,
        aleatoric_passes=20,
        strat_weight=1.0,
        sw_overlap=0.5,
        notes="The paper's settings; needs a GPU.",
    ),
}

DEFAULT_PROFILE = "demo"


def get_profile(name: str | None = None) -> Profile:
    """Profile by name; ``None`` reads ``PHYSEG_PROFILE`` (default ``demo``).

    Raises
    ------
    ValueError
        If the name is not one of :data:`PROFILES`.
    """
    name = name or os.environ.get("PHYSEG_PROFILE", DEFAULT_PROFILE)
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown profile {name!r}; choose one of {sorted(PROFILES)}"
        ) from None
