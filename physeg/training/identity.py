"""What a trained model is: its network, its training settings, its plans (the folder's name).

A model folder is named ``<model>_<sequence>_seed<seed>_<hash>`` where
``<hash>`` hashes :meth:`physeg.models.plans.Plans.identity`: the ablation's
switches (paper §4), the network, the voxel size and patch, the training
range of the acquisition parameters (paper §3), the training settings that
shape the weights (:func:`training_settings`) and :data:`TRAINING_VERSION`.
Anything else (library versions, device, the full profile) is provenance:
written into ``plans.json`` but not hashed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import monai
import torch

from physeg import __version__
from physeg.models.network import NetworkConfig
from physeg.models.plans import Plans
from physeg.models.registry import ModelSpec
from physeg.profiles import Profile, TrainingConfig
from physeg.reproduce.provenance import git_commit
from physeg.simulation.parameters import IOD_RANGES

#: Bump when a change to the training code should invalidate cached models.
TRAINING_VERSION = "6"
#: Profile fields outside :class:`~physeg.profiles.TrainingConfig` that shape the weights.
PROFILE_TRAINING_FIELDS: tuple[str, ...] = ("name", "n_train", "n_val", "n_val_realisations", "seed")


def network_config(spec: ModelSpec, *, profile: Profile, sequence: str) -> NetworkConfig:
    """Network of ``spec`` at the profile's widths (physics branch only for physics models, §2.1).

    Epistemic models take the profile's ``epistemic_dropout``; the others keep the
    field's default (unused by them, but part of their hashed identity).
    """
    rate = {"dropout": profile.epistemic_dropout} if spec.uncertainty == "epistemic" else {}
    return NetworkConfig(
        channels=tuple(profile.channels),
        physics=spec.physics,
        sequence=sequence if spec.physics != "none" else None,
        uncertainty=spec.uncertainty,
        **rate,
    )


def training_config(spec: ModelSpec, *, profile: Profile) -> TrainingConfig:
    """The training settings one model runs with: the profile's, except the epistemic variants'
    budget, ``profile.epistemic_epochs`` epochs when set (their dropout fine-tuning, paper §2.4)."""
    if spec.uncertainty == "epistemic" and profile.epistemic_epochs is not None:
        return dataclasses.replace(profile.training, max_epochs=profile.epistemic_epochs)
    return profile.training


def training_settings(spec: ModelSpec, *, profile: Profile) -> dict[str, Any]:
    """The settings recorded in ``Plans.training`` and hashed: every :class:`~physeg.profiles.TrainingConfig`
    field of :func:`training_config` (:meth:`TrainingConfig.to_dict`: fields added later only once set) plus
    :data:`PROFILE_TRAINING_FIELDS` (same keys and values as before the typed config, so unchanged models keep
    their folders)."""
    return {**{k: getattr(profile, k) for k in PROFILE_TRAINING_FIELDS},
            **training_config(spec, profile=profile).to_dict()}


def make_plans(spec: ModelSpec, *, profile: Profile, sequence: str, seed: int | None = None) -> Plans:
    """The :class:`~physeg.models.plans.Plans` of one model (its identity is hashed into the folder name)."""
    return Plans(
        spec=spec, sequence=sequence, seed=profile.seed if seed is None else int(seed),
        network=network_config(spec, profile=profile, sequence=sequence),
        voxel_size_mm=float(profile.voxel_size_mm), patch_size=int(profile.patch_size),
        sw_overlap=float(profile.sw_overlap),
        training_ranges={k: (float(v[0]), float(v[1])) for k, v in IOD_RANGES[sequence].items()},
        training=training_settings(spec, profile=profile),
        training_version=TRAINING_VERSION,
    )


def provenance(*, profile: Profile, device: torch.device, world_size: int, folder_name: str) -> dict[str, Any]:
    """The unhashed part of ``plans.json``: versions, commit, device, world size, folder, full profile."""
    versions = {"physeg": __version__, "torch": torch.__version__, "monai": monai.__version__,
                "commit": git_commit()}
    return {"versions": versions, "device": str(device), "world_size": world_size,
            "folder": folder_name, "profile": profile.to_dict()}
