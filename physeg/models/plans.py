"""The model folder contract: ``plans.json``, written by training, read by everyone else.

One typed class, :class:`Plans`, writes and reads the file (after nnU-Net's
idea of a plans manager: one owner for the description of a trained model).
Reading is strict: a missing or unknown key is an error naming the key and
the file, never a silent default, so a folder written by another version of
physeg says so instead of being half understood.

A model folder holds::

    plans.json       this class: what the model is and how it was made
    best.pt          weights of the selected checkpoint (``torch.load(weights_only=True)``)
    last.pt          full training state for ``--resume``
    metrics.csv      one row per validation (also metrics.json)
    finished.json    written last: the training summary; its presence marks a finished model
    calibration.json optional: volume-interval calibration (paper §2.4)

Units: parameter ranges in seconds and radians, voxel size in mm.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from physeg.models.network import NetworkConfig
from physeg.models.registry import ModelSpec

PLANS_FILE = "plans.json"
#: Bump when the layout of ``plans.json`` changes.
PLANS_VERSION = 1


class PlansError(ValueError):
    """``plans.json`` is missing, unreadable or not in this version's layout."""


@dataclass(frozen=True)
class Plans:
    """Everything that defines a trained model and how to apply it.

    The fields in :meth:`identity` determine the weights and are hashed into
    the model folder's name; :attr:`provenance` (versions, device, full
    profile) is recorded but not hashed.
    """

    #: The ablation's switches (:mod:`physeg.models.registry`).
    spec: ModelSpec
    #: Sequence the model was trained on (``"MPRAGE"`` or ``"SPGR"``).
    sequence: str
    #: Model seed: initialisation, batches, dropout.
    seed: int
    network: NetworkConfig
    #: Isotropic voxel size (mm) of the training maps: images are resampled to it.
    voxel_size_mm: float
    #: Training patch edge (voxels) = sliding-window size at inference.
    patch_size: int
    #: Sliding-window overlap at inference (fraction of the window).
    sw_overlap: float
    #: Acquisition-parameter box of the training data, ``{name: (low, high)}``, seconds/radians.
    training_ranges: dict[str, tuple[float, float]]
    #: The training settings that shaped the weights (optimiser, budget, loss weights...).
    training: dict[str, Any]
    #: Version of the training code (a bump invalidates cached models).
    training_version: str
    #: Not hashed: physeg/torch/monai versions, commit, device, world size, the full profile.
    provenance: dict[str, Any] = field(default_factory=dict)
    plans_version: int = PLANS_VERSION

    # -- derived --------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def uses_physics(self) -> bool:
        """Whether the network reads the acquisition parameters θ."""
        return self.network.physics != "none"

    @property
    def uncertainty(self) -> str:
        """``"none"``, ``"epistemic"`` or ``"aleatoric"``."""
        return self.network.uncertainty

    def identity(self) -> dict[str, Any]:
        """The part of the plans that determines the weights (hashed into the folder name)."""
        d = self.to_dict()
        for k in ("provenance", "plans_version"):
            d.pop(k)
        return d

    # -- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spec"] = self.spec.to_dict()
        d["network"] = self.network.to_dict()
        d["training_ranges"] = {k: [float(v[0]), float(v[1])] for k, v in self.training_ranges.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "plans") -> "Plans":
        """Strict inverse of :meth:`to_dict`: unknown or missing keys raise :class:`PlansError`."""
        if not isinstance(d, dict):
            raise PlansError(f"{source}: expected a JSON object, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.name not in ("provenance", "plans_version")}
        unknown, missing = sorted(set(d) - names), sorted(required - set(d))
        if unknown or missing:
            raise PlansError(f"{source} is not a physeg {PLANS_VERSION} plans file"
                             + (f"; unknown keys {unknown}" if unknown else "")
                             + (f"; missing keys {missing}" if missing else ""))
        if d.get("plans_version", PLANS_VERSION) != PLANS_VERSION:
            raise PlansError(f"{source}: plans version {d['plans_version']}, this physeg reads {PLANS_VERSION}")
        try:
            spec = ModelSpec(**d["spec"])
            network = NetworkConfig.from_dict(d["network"])
            ranges = {str(k): (float(v[0]), float(v[1])) for k, v in d["training_ranges"].items()}
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            raise PlansError(f"{source}: {exc.__class__.__name__}: {exc}") from None
        return cls(**{**d, "spec": spec, "network": network, "training_ranges": ranges,
                      "seed": int(d["seed"]), "voxel_size_mm": float(d["voxel_size_mm"]),
                      "patch_size": int(d["patch_size"]), "sw_overlap": float(d["sw_overlap"])})

    def write(self, folder: str | Path) -> Path:
        """Write ``folder/plans.json`` through a temporary name (never half a file)."""
        from physeg.io_safety import atomic_write_text

        return atomic_write_text(Path(folder) / PLANS_FILE, json.dumps(self.to_dict(), indent=2, default=str) + "\n")

    @classmethod
    def read(cls, folder: str | Path) -> "Plans":
        """``folder/plans.json``; :class:`PlansError` (one line, naming the file) when absent or foreign."""
        path = Path(folder) / PLANS_FILE
        if not path.is_file():
            raise PlansError(f"{folder} is not a physeg model folder: no {PLANS_FILE}")
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PlansError(f"cannot read {path} ({exc.__class__.__name__}: {exc})") from None
        return cls.from_dict(raw, source=str(path))
