"""The files training writes into a model folder, and reading a trained model back.

One model = one folder ``<cache>/models/<profile>/<model>_<sequence>_seed<seed>_<hash>/``
(the name from :mod:`physeg.training.identity`)::

    plans.json       everything that made the model (spec, network, training settings, versions, device)
    last.pt          full state after the last finished epoch (model, optimiser, sampler and RNG
                     states, epoch, best score, early-stopping counter, history); weights_only-safe
    best.pt          model weights of the best validation epoch (paper §2.1: early stopping)
    metrics.csv      one row per epoch (also metrics.json)
    finished.json    summary (wall time, epochs, best epoch, val Dice/CoV)
    integrity.json   written last: sha256 and size of best.pt and plans.json (calibration.json
                     is added when one is stored), verified whenever the model is loaded

Every file is written to a unique temporary name and renamed
(:mod:`physeg.io_safety`), so a killed run never leaves half a checkpoint and
two runs never share a temporary file; :func:`model_lock` keeps a second
process from training the same folder at the same time.
"""

from __future__ import annotations

import json
import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from physeg.io_safety import (
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    folder_lock,
    read_integrity,
    verify_file,
    write_integrity,
)
from physeg.models.network import PhysicsUNet, build_network
from physeg.models.plans import PLANS_FILE, Plans
from physeg.training.distributed import resolve_device
from physeg.training.rng import rng_state, set_rng_state

LAST, BEST, FINISHED = "last.pt", "best.pt", "finished.json"


@dataclass
class TrainState:
    """Progress of one training run (saved in ``last.pt`` next to the weights)."""

    #: Epochs finished.
    epoch: int = 0
    #: Best validation score so far and the (1-based) epoch that gave it; -1 before any.
    best_score: float = -math.inf
    best_epoch: int = -1
    #: Epochs since the last strict improvement (early stopping counter).
    bad_epochs: int = 0
    #: One row per finished epoch (losses, validation metrics, timing).
    history: list[dict[str, Any]] = field(default_factory=list)
    #: Wall time of the finished epochs, seconds.
    elapsed_s: float = 0.0
    #: Early stopping fired.
    stopped: bool = False


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a unique temporary name, fsync and an atomic rename (:mod:`physeg.io_safety`)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_checkpoint(folder: Path, *, model: torch.nn.Module, optimiser: torch.optim.Optimizer,
                    sampler_state: dict[str, torch.Tensor], state: TrainState) -> None:
    """``last.pt``: weights, optimiser, sampler and RNG states, and :class:`TrainState` (history as JSON text)."""
    scalars = {f.name: getattr(state, f.name) for f in fields(state) if f.name != "history"}
    atomic_save({"model": model.state_dict(), "optimizer": optimiser.state_dict(), "sampler": sampler_state,
                 "rng": rng_state(), **scalars, "history": json.dumps(state.history)}, folder / LAST)


def model_lock(folder: Path, *, timeout_s: float = -1) -> AbstractContextManager:
    """The lock of one model folder (:func:`physeg.io_safety.folder_lock`): one training at a time.

    Taken by rank 0 only: the ranks of one distributed run train the folder together.
    """
    from physeg.training.distributed import world

    if world()[0] != 0:
        return nullcontext()
    return folder_lock(folder, timeout_s=timeout_s, what="model folder")


def _load(path: Path, *, map_location: str | torch.device) -> Any:
    """``torch.load(weights_only=True)``; a truncated or damaged file is a ``RuntimeFailure`` naming it."""
    from physeg.cli.errors import RuntimeFailure

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise RuntimeFailure(f"{path} is damaged or truncated ({first}); delete it to start that "
                             "training again") from None


def load_checkpoint(folder: Path, *, device: torch.device) -> dict[str, Any] | None:
    """``last.pt`` loaded with ``weights_only=True``, or ``None`` when there is none.

    A truncated or damaged ``last.pt`` (e.g. ``--resume`` after a full disk) is
    a one-line ``RuntimeFailure`` naming the file.
    """
    last = folder / LAST
    return _load(last, map_location=device) if last.exists() else None


def restore_checkpoint(ckpt: dict[str, Any], *, model: torch.nn.Module, optimiser: torch.optim.Optimizer) -> TrainState:
    """Load weights and optimiser state, restore the RNG states; return the saved :class:`TrainState`.

    The sampler's generator state (``ckpt["sampler"]``) is the caller's to restore.
    """
    model.load_state_dict(ckpt["model"])
    optimiser.load_state_dict(ckpt["optimizer"])
    set_rng_state(ckpt["rng"])
    scalars = {f.name: ckpt[f.name] for f in fields(TrainState) if f.name != "history"}
    return TrainState(**scalars, history=json.loads(ckpt["history"]))


def write_metrics(folder: Path, history: list[dict[str, Any]]) -> None:
    """``metrics.csv`` and ``metrics.json``: one row per epoch."""
    atomic_write(folder / "metrics.csv", lambda tmp: pd.DataFrame(history).to_csv(tmp, index=False))
    atomic_write_text(folder / "metrics.json", json.dumps(history, indent=1))


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    """The rows :func:`write_metrics` wrote (one per epoch), ``[]`` before the first epoch ends."""
    path = Path(folder) / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else []


def write_finished(folder: Path, summary: dict[str, Any]) -> None:
    """``finished.json``: the summary (its presence marks a finished model), then ``integrity.json``.

    The integrity record holds the sha256 of ``best.pt`` and ``plans.json`` as
    training left them; :func:`load_checkpoint_weights` and
    :func:`physeg.inference.model_folder.read_model_info` verify them.
    """
    atomic_write_json(folder / FINISHED, summary)
    write_integrity(folder, [BEST, PLANS_FILE])


def read_finished(folder: Path) -> dict[str, Any] | None:
    """The summary of a finished model folder, ``None`` if unfinished."""
    marker = Path(folder) / FINISHED
    return json.loads(marker.read_text()) if marker.exists() else None


def load_checkpoint_weights(folder: Path, *, which: str = "best", map_location: str | torch.device = "cpu") -> dict:
    """State dict of ``best.pt`` (or ``last.pt``'s model) with ``weights_only=True``.

    ``best.pt`` is first checked against the sha256 recorded at training time
    (``integrity.json``; :class:`~physeg.io_safety.IntegrityError` naming the file).
    """
    folder = Path(folder)
    if which == "best":
        verify_file(folder, BEST, record=read_integrity(folder))
        return _load(folder / BEST, map_location=map_location)
    return _load(folder / LAST, map_location=map_location)["model"]


def load_model(folder: str | Path, *, which: str = "best", device: str | torch.device = "cpu"
               ) -> tuple[PhysicsUNet, Plans]:
    """``(model in eval mode, plans)`` from a model folder."""
    folder = Path(folder)
    plans = Plans.read(folder)
    model = build_network(plans.network)
    model.load_state_dict(load_checkpoint_weights(folder, which=which, map_location=device))
    return model.to(resolve_device(device)).eval(), plans
