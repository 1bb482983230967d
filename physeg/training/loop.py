r"""Training loop: epochs, validation, early stopping, checkpoints, exact resume, DDP.

One model = one folder ``<cache>/models/<profile>/<model>_<sequence>_seed<seed>_<hash>/``::

    plans.json       everything that made the model (spec, network, profile, versions, device)
    last.pt          full state after the last finished epoch (model, optimiser, RNG states,
                     epoch, best score, early-stopping counter, history); loads with weights_only=True
    best.pt          model weights of the best validation epoch
    metrics.csv      one row per epoch (also metrics.json)
    finished.json    written last: summary (wall time, epochs, best epoch, val Dice/CoV)

Validation score (early stopping, paper §2.1 "Dice score combined with CoV")
    On the validation subjects, each simulated with a fixed IoD set of
    ``profile.n_val_realisations`` parameter vectors (seeded by the profile
    seed; identical for every model), whole volumes are segmented with
    :func:`infer_volume`. With tissues :math:`k \in \{GM, WM, CSF\}`,

    .. math::

        \text{score} = \frac13\sum_k \overline{\text{Dice}}_k
                     - \frac13\sum_k \overline{\text{CoV}}_k ,\qquad
        \text{CoV}_{s,k} = \frac{\text{SD}_r(V_{s,r,k})}{\text{mean}_r(V_{s,r,k})}

    where Dice is averaged over subjects and realisations, and the CoV (sample
    SD, ddof = 1) of the tissue volume over the realisations ``r`` of subject
    ``s`` is averaged over subjects. Training stops after ``profile.patience``
    epochs without a strictly larger score, or at ``profile.max_epochs``.

Exact resume
    At the start of epoch ``e`` every random source (python, numpy, torch,
    the batch sampler) is re-seeded from ``(seed, e, rank)``; the checkpoint
    holds model and Adam state, so a run killed after epoch ``e`` and resumed
    reproduces the uninterrupted run bit for bit (on the same device). The RNG
    states are stored too (as tensors / plain types) and restored.

DDP (``torchrun --nproc_per_node N``)
    With ``WORLD_SIZE > 1`` the process group is initialised (gloo on CPU,
    nccl on CUDA) and the model wrapped in DDP. Each rank draws its own
    batches (sampler seeded by rank) and runs ``ceil(steps_per_epoch / N)``
    steps, so an epoch covers ``steps_per_epoch`` batches across ranks
    (effective batch ``N × batch_size``). Rank 0 validates, writes, and
    broadcasts the stop decision.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from physeg.evaluation import metrics
from physeg import simulation as sim
from physeg.models.losses import segmentation_loss
from physeg.models.registry import ModelSpec
from physeg.models.network import NetworkConfig, PhysicsUNet, build_network
from physeg.inference.predictor import autocast_context, infer_volume
from physeg.models.plans import Plans
from physeg.profiles import Profile
from physeg.training.batches import Realisations, TrainingBatches, Volumes, pregenerate, stable_seed
from physeg.training.validation import dice_per_tissue, make_validation_set, validate  # noqa: F401

#: Bump when a change to the training code should invalidate cached models.
TRAINING_VERSION = "3"
TISSUES: tuple[str, ...] = ("GM", "WM", "CSF")
TISSUE_LABELS: dict[str, int] = metrics.TISSUES


# ---------------------------------------------------------------------------- devices & DDP
def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA if available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def world() -> tuple[int, int]:
    """``(rank, world_size)``; (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def setup_distributed(device: torch.device) -> torch.device:
    """Initialise the process group when launched by torchrun (``WORLD_SIZE > 1``).

    Returns the device of this rank (``cuda:LOCAL_RANK`` on GPUs).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


# ---------------------------------------------------------------------------- RNG
def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """RNG states as tensors / plain types (``torch.load(weights_only=True)``-safe)."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python_version": int(py[0]),
        "python_state": torch.tensor(py[1], dtype=torch.int64),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]),
        "numpy_cached_gauss": float(np_state[4]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    random.setstate((state["python_version"], tuple(int(v) for v in state["python_state"].tolist()), None))
    np.random.set_state((
        "MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
        state["numpy_has_gauss"], state["numpy_cached_gauss"],
    ))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------- plans
def network_config(spec: ModelSpec, *, profile: Profile, sequence: str) -> NetworkConfig:
    """Network of ``spec`` at the profile's widths."""
    return NetworkConfig(
        channels=tuple(profile.channels),
        physics=spec.physics,
        sequence=sequence if spec.physics != "none" else None,
        uncertainty=spec.uncertainty,
    )


#: Profile fields that shape the weights (recorded in ``Plans.training`` and hashed).
TRAINING_PROFILE_FIELDS: tuple[str, ...] = (
    "name", "n_train", "n_val", "batch_size", "learning_rate", "max_epochs", "steps_per_epoch", "patience",
    "n_pregenerated", "n_val_realisations", "aleatoric_passes", "strat_weight", "seed",
)


def make_plans(spec: ModelSpec, *, profile: Profile, sequence: str, seed: int | None = None) -> Plans:
    """The :class:`~physeg.models.plans.Plans` of one model (its identity is hashed into the folder name)."""
    prof = profile.to_dict()
    return Plans(
        spec=spec, sequence=sequence, seed=profile.seed if seed is None else int(seed),
        network=network_config(spec, profile=profile, sequence=sequence),
        voxel_size_mm=float(profile.voxel_size_mm), patch_size=int(profile.patch_size),
        sw_overlap=float(profile.sw_overlap),
        training_ranges={k: (float(v[0]), float(v[1])) for k, v in sim.IOD_RANGES[sequence].items()},
        training={**{k: prof[k] for k in TRAINING_PROFILE_FIELDS},
                  "dice_weight": float(profile.extra.get("dice_weight", 0.0))},
        training_version=TRAINING_VERSION,
    )


def _versions() -> dict[str, str]:
    import monai

    from physeg import __version__
    from physeg.reproduce.provenance import git_commit

    return {"physeg": __version__, "torch": torch.__version__, "monai": monai.__version__,
            "commit": git_commit()}


# ---------------------------------------------------------------------------- training
def _write_metrics(folder: Path, history: list[dict]) -> None:
    import pandas as pd

    pd.DataFrame(history).to_csv(folder / "metrics.csv", index=False)
    (folder / "metrics.json").write_text(json.dumps(history, indent=1))


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train_model(
    spec: ModelSpec,
    *,
    profile: Profile,
    sequence: str,
    folder: Path,
    train_subjects: list[Volumes],
    val_subjects: list[Volumes],
    seed: int | None = None,
    device: str | torch.device = "auto",
    resume: bool = False,
    max_epochs: int | None = None,
    progress: bool = True,
    pregenerated: list[Realisations] | None = None,
    val_set: list[tuple[Volumes, Realisations]] | None = None,
) -> dict[str, Any]:
    """Train one model into ``folder`` (layout in the module docstring).

    Parameters
    ----------
    spec, profile, sequence
        Which ablation, at which size, for which sequence.
    train_subjects, val_subjects
        In-memory subjects (:class:`physeg.training.batches.Volumes`).
    seed
        Model seed (default ``profile.seed``): initialisation, batches, dropout.
    resume
        Continue from ``folder/last.pt`` if present (else start afresh).
    max_epochs
        Stop after this many epochs in total (default ``profile.max_epochs``);
        used by tests and to simulate a killed run.
    pregenerated, val_set
        Reuse realisation sets across models (orchestration); built here otherwise.

    Returns
    -------
    The summary written to ``finished.json`` (or, when stopped by
    ``max_epochs`` before the profile's end, the same fields without the marker).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    seed = profile.seed if seed is None else int(seed)
    device = setup_distributed(resolve_device(device))
    rank, world_size = world()
    max_epochs = profile.max_epochs if max_epochs is None else int(max_epochs)
    plans = make_plans(spec, profile=profile, sequence=sequence, seed=seed)
    if rank == 0:
        provenance = {"versions": _versions(), "device": str(device), "world_size": world_size,
                      "folder": folder.name, "profile": profile.to_dict()}
        dataclasses.replace(plans, provenance=provenance).write(folder)

    seed_everything(stable_seed(seed, "init"))
    model = build_network(network_config(spec, profile=profile, sequence=sequence)).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=profile.learning_rate)
    use_physics = spec.physics != "none"

    sampler = TrainingBatches(
        train_subjects, sequence=sequence, patch_size=profile.patch_size, batch_size=profile.batch_size,
        data=spec.data, batches=spec.batches, n_pregenerated=profile.n_pregenerated,
        pregenerated_seed=stable_seed("pregenerated", profile.seed, sequence), seed=seed, device=device,
        pregenerated=pregenerated if spec.data == "pregenerated" else None,
    )
    if rank == 0 and val_set is None:
        val_set = make_validation_set(val_subjects, sequence=sequence, profile=profile)

    state = {"epoch": 0, "best_score": -math.inf, "best_epoch": -1, "bad_epochs": 0, "history": [],
             "elapsed_s": 0.0, "stopped": False}
    last = folder / "last.pt"
    if resume and last.exists():
        ckpt = torch.load(last, map_location=device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimiser.load_state_dict(ckpt["optimizer"])
        sampler.load_state_dict(ckpt["sampler"])
        set_rng_state(ckpt["rng"])
        state.update({k: ckpt[k] for k in state})
        state["history"] = json.loads(ckpt["history"])

    net = model
    if world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    steps = math.ceil(profile.steps_per_epoch / world_size)
    strat_weight = profile.strat_weight if spec.strat_loss else 0.0
    dice_weight = plans.training["dice_weight"]

    desc = f"{spec.name}/{sequence}"
    epochs = range(state["epoch"], max_epochs)
    bar = tqdm(epochs, desc=desc, disable=not progress or rank != 0, leave=False)
    for epoch in bar:
        if state["stopped"]:
            break
        t0 = time.perf_counter()
        seed_everything(stable_seed(seed, "epoch", epoch, rank))
        sampler.reseed(stable_seed(seed, "sampler", epoch, rank))
        net.train()
        sums = {"loss": 0.0, "ce": 0.0, "strat": 0.0, "dice": 0.0}
        for _ in range(steps):
            batch = sampler.next_batch()
            with autocast_context(device):
                out = _forward_heads(net, batch["image"], batch["params"] if use_physics else None)
                parts = segmentation_loss(out, batch["label"], strat_weight=strat_weight, dice_weight=dice_weight,
                                          aleatoric_passes=profile.aleatoric_passes)
            optimiser.zero_grad(set_to_none=True)
            parts["loss"].backward()
            optimiser.step()
            for k in sums:
                sums[k] += float(parts[k].detach())
        means = torch.tensor([sums[k] / steps for k in sums], dtype=torch.float64)
        if world_size > 1:
            dist.all_reduce(means)
            means /= world_size
        row: dict[str, Any] = {"epoch": epoch + 1, **{f"train_{k}": float(v) for k, v in zip(sums, means)}}
        stop = False
        if rank == 0:
            row.update(validate(model, val_set, profile=profile, use_physics=use_physics))
            improved = row["score"] > state["best_score"]
            if improved:
                state.update(best_score=row["score"], best_epoch=epoch + 1, bad_epochs=0)
                _atomic_save(model.state_dict(), folder / "best.pt")
            else:
                state["bad_epochs"] += 1
            stop = state["bad_epochs"] >= profile.patience
            state["elapsed_s"] += time.perf_counter() - t0
            row.update(improved=improved, best_score=state["best_score"], epoch_time_s=time.perf_counter() - t0,
                       elapsed_s=state["elapsed_s"])
            state["history"].append(row)
            state["epoch"] = epoch + 1
            state["stopped"] = stop
            _atomic_save({
                "model": model.state_dict(), "optimizer": optimiser.state_dict(),
                "sampler": sampler.state_dict(), "rng": rng_state(),
                **{k: v for k, v in state.items() if k != "history"},
                "history": json.dumps(state["history"]),
            }, last)
            _write_metrics(folder, state["history"])
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", score=f"{row['score']:.3f}")
        if world_size > 1:
            flag = [stop]
            dist.broadcast_object_list(flag, src=0)
            stop = flag[0]
        if stop:
            break
    summary = {}
    if rank == 0:
        summary = _summary(spec, sequence, state, device, world_size)
        if state["stopped"] or state["epoch"] >= profile.max_epochs:
            (folder / "finished.json").write_text(json.dumps(summary, indent=2))
    if world_size > 1:
        dist.barrier()
    return summary


def _forward_heads(net: torch.nn.Module, image: torch.Tensor, physics: torch.Tensor | None) -> dict:
    """``heads`` through DDP: DDP only hooks ``forward``, so call it with a flag."""
    if isinstance(net, torch.nn.parallel.DistributedDataParallel):
        return net(image, physics, return_features="all")
    return net.heads(image, physics)


def _summary(spec: ModelSpec, sequence: str, state: dict, device: torch.device, world_size: int) -> dict:
    hist = state["history"]
    best = next((h for h in hist if h["epoch"] == state["best_epoch"]), hist[-1] if hist else {})
    return {
        "model": spec.name, "sequence": sequence, "epochs": state["epoch"], "best_epoch": state["best_epoch"],
        "best_score": state["best_score"], "wall_time_s": state["elapsed_s"], "early_stopped": state["stopped"],
        "device": str(device), "world_size": world_size,
        **{k: best.get(k) for k in (*(f"val_dice_{t}" for t in TISSUES), *(f"val_cov_{t}" for t in TISSUES),
                                     "val_dice_mean", "val_cov_mean")},
    }


def load_checkpoint_weights(folder: Path, *, which: str = "best", map_location: str | torch.device = "cpu") -> dict:
    """State dict of ``best.pt`` (or ``last.pt``'s model) with ``weights_only=True``."""
    folder = Path(folder)
    if which == "best":
        return torch.load(folder / "best.pt", map_location=map_location, weights_only=True)
    return torch.load(folder / "last.pt", map_location=map_location, weights_only=True)["model"]


def load_model(folder: str | Path, *, which: str = "best", device: str | torch.device = "cpu"
               ) -> tuple[PhysicsUNet, Plans]:
    """``(model in eval mode, plans)`` from a model folder."""
    folder = Path(folder)
    plans = Plans.read(folder)
    model = build_network(plans.network)
    model.load_state_dict(load_checkpoint_weights(folder, which=which, map_location=device))
    return model.to(resolve_device(device)).eval(), plans
