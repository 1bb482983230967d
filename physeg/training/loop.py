r"""Training one model (paper §2.1-§2.3): epochs, validation, early stopping, exact resume, DDP.

:func:`train_model` is a short function over the steps of a run:

1. build the run (:func:`_build_run`): plans written to the model folder,
   network and Adam optimiser seeded from ``(seed, "init")``, the batch
   sampler (:mod:`physeg.training.batches`), the fixed validation set
   (:mod:`physeg.training.validation`); then the parent's weights
   (fine-tuned variants) or, with ``prior_bias``, the output bias at the
   log label shares of the training patches;
2. resume from ``last.pt`` if asked (:mod:`physeg.training.checkpoint`);
3. per epoch, :data:`steps_per_epoch` optimiser steps on the loss of
   :func:`physeg.models.losses.segmentation_loss` (cross-entropy or the
   aleatoric loss, plus λ times the stratification loss for stratified
   models, §2.2), then validation, early stopping and checkpoints;
4. the summary, written as ``finished.json`` when training is complete.

Early stopping (paper §2.1)
    The score of :func:`physeg.training.validation.validate` (mean Dice minus
    mean CoV over GM, WM, CSF) is computed after every epoch; ``best.pt``
    keeps the weights of the best one. Training stops after
    ``training.patience`` epochs without a strictly larger score, or at
    ``training.max_epochs``.

Exact resume
    At the start of epoch ``e`` every random source (python, numpy, torch,
    the batch sampler) is re-seeded from ``(seed, e, rank)``
    (:func:`physeg.conventions.stable_seed`); the checkpoint holds model and
    Adam state, so a run killed after epoch ``e`` and resumed reproduces the
    uninterrupted run bit for bit (on the same device). The RNG states are
    stored too and restored.

DDP (``torchrun --nproc_per_node N``): see :mod:`physeg.training.distributed`.
Rank 0 validates, writes the folder and broadcasts the stop decision.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from physeg.conventions import TISSUE_NAMES, stable_seed
from physeg.training.precision import Precision, choose_precision
from physeg.training.schedule import lr_factor
from physeg.models.layout import cpu_layout
from physeg.models.losses import segmentation_loss
from physeg.models.network import build_network
from physeg.models.registry import ModelSpec
from physeg.profiles import Profile, TrainingConfig
from physeg.training.augmentation import Augmentation
from physeg.training.batches import Realisations, TrainingBatches, Volumes
from physeg.training.checkpoint import (
    BEST, TrainState, atomic_save, load_checkpoint, load_checkpoint_weights, restore_checkpoint, save_checkpoint,
    write_finished,
    write_metrics,
)
from physeg.training.distributed import (
    barrier, broadcast_flag, forward_heads, mean_over_ranks, resolve_device, setup_distributed, world, wrap_model,
)
from physeg.training.identity import make_plans, provenance, training_config
from physeg.training.patches import patch_label_frequencies
from physeg.training.rng import seed_everything
from physeg.training.validation import ValidationSet, make_validation_set, validate

#: The parts of the loss averaged into each epoch's ``train_<part>`` columns.
LOSS_PARTS: tuple[str, ...] = ("loss", "ce", "strat", "dice")


@dataclass
class _Run:
    """Everything one training run holds (built once by :func:`_build_run`)."""

    spec: ModelSpec
    sequence: str
    profile: Profile
    folder: Path
    seed: int
    device: torch.device
    rank: int
    world_size: int
    model: torch.nn.Module
    optimiser: torch.optim.Optimizer
    sampler: TrainingBatches
    val_set: ValidationSet | None
    precision: Precision

    @property
    def training(self) -> TrainingConfig:
        return training_config(self.spec, profile=self.profile)

    @property
    def use_physics(self) -> bool:
        return self.spec.physics != "none"


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
    val_set: ValidationSet | None = None,
    init_weights: Path | None = None,
    augmentation: Augmentation | None = None,
) -> dict[str, Any]:
    """Train one model into ``folder`` (layout in :mod:`physeg.training.checkpoint`).

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
        Stop after this many epochs in total (default ``profile.training.max_epochs``);
        used by tests and to simulate a killed run.
    pregenerated, val_set
        Reuse realisation sets across models (orchestration); built here otherwise.
    init_weights
        ``best.pt`` of the model to start from (``spec.init_from``; loaded before
        training, ignored on resume, where ``last.pt`` holds the weights).
    augmentation
        Artefacts added to the on-the-fly training images
        (:mod:`physeg.training.augmentation`; recorded in ``plans.json``'s
        provenance). The caller gives such a run its own ``folder``: the
        model-folder hash of the orchestrator does not include it.

    Returns
    -------
    The summary written to ``finished.json`` (or, when stopped by
    ``max_epochs`` before the profile's end, the same fields without the marker);
    ``{}`` on ranks other than 0.
    """
    run = _build_run(spec, profile=profile, sequence=sequence, folder=Path(folder), seed=seed, device=device,
                     train_subjects=train_subjects, val_subjects=val_subjects, pregenerated=pregenerated,
                     val_set=val_set, augmentation=augmentation)
    if init_weights is not None:
        # the parent's best.pt, verified against the sha256 its training recorded
        run.model.load_state_dict(load_checkpoint_weights(Path(init_weights).parent, map_location=run.device))
    elif run.training.prior_bias:  # no draw: the run's random stream is the same with or without it
        run.model.set_output_prior(patch_label_frequencies(train_subjects, patch_size=profile.patch_size,
                                                           n_labels=run.model.config.out_channels))
    state = _resume(run) if resume else TrainState()
    # DDP broadcasts rank 0's weights when wrapping: wrap after the resumed weights are loaded
    net = wrap_model(run.model, device=run.device, world_size=run.world_size)
    last_epoch = run.training.max_epochs if max_epochs is None else int(max_epochs)
    bar = tqdm(range(state.epoch, last_epoch), desc=f"{spec.name}/{sequence}",
               disable=not progress or run.rank != 0, leave=False)
    for epoch in bar:
        if state.stopped:
            break
        t0 = time.perf_counter()
        with cpu_layout(run.model, device=run.device):  # channels-last on CPU: the same function, faster
            row = _train_epoch(run, net, epoch=epoch)
        stop = False
        if run.rank == 0:
            stop = _close_epoch(run, state, row, t0=t0)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", score=f"{row.get('score', math.nan):.3f}")
        if broadcast_flag(stop, world_size=run.world_size):
            break
    return _finish(run, state)


def _build_run(spec: ModelSpec, *, profile: Profile, sequence: str, folder: Path, seed: int | None,
               device: str | torch.device, train_subjects: list[Volumes], val_subjects: list[Volumes],
               pregenerated: list[Realisations] | None, val_set: ValidationSet | None,
               augmentation: Augmentation | None = None) -> _Run:
    """Plans written, network and optimiser seeded, sampler and validation set built (in this order:
    the order of the random draws is part of exact reproducibility)."""
    folder.mkdir(parents=True, exist_ok=True)
    seed = profile.seed if seed is None else int(seed)
    device = setup_distributed(resolve_device(device))
    rank, world_size = world()
    plans = make_plans(spec, profile=profile, sequence=sequence, seed=seed)
    if rank == 0:
        record = provenance(profile=profile, device=device, world_size=world_size, folder_name=folder.name)
        if augmentation is not None:
            record["augmentation"] = augmentation.to_dict()
        dataclasses.replace(plans, provenance=record).write(folder)
    seed_everything(stable_seed(seed, "init"))
    model = build_network(plans.network).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=profile.training.learning_rate)
    sampler = TrainingBatches(
        train_subjects, sequence=sequence, patch_size=profile.patch_size, batch_size=profile.training.batch_size,
        data=spec.data, batches=spec.batches, n_pregenerated=profile.training.n_pregenerated,
        pregenerated_seed=stable_seed("pregenerated", profile.seed, sequence), seed=seed, device=device,
        pregenerated=pregenerated if spec.data == "pregenerated" else None,
        artefacts=None if augmentation is None else augmentation.artefacts,
        post_transform=None if augmentation is None else augmentation.post_transform(),
    )
    if rank == 0 and val_set is None:
        val_set = make_validation_set(val_subjects, sequence=sequence, profile=profile)
    return _Run(spec=spec, sequence=sequence, profile=profile, folder=folder, seed=seed, device=device, rank=rank,
                world_size=world_size, model=model, optimiser=optimiser, sampler=sampler, val_set=val_set,
                precision=choose_precision(device=device, mode=profile.training.precision))


def _resume(run: _Run) -> TrainState:
    """The state of ``last.pt`` (weights, optimiser, sampler, RNG restored), or a fresh one without it."""
    ckpt = load_checkpoint(run.folder, device=run.device)
    if ckpt is None:
        return TrainState()
    run.sampler.load_state_dict(ckpt["sampler"])
    return restore_checkpoint(ckpt, model=run.model, optimiser=run.optimiser)


def _train_step(run: _Run, net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """One optimiser step on one batch; the loss parts (paper §2.2, §2.4)."""
    batch = run.sampler.next_batch()
    with run.precision.context():
        out = forward_heads(net, batch["image"], batch["params"] if run.use_physics else None)
        parts = segmentation_loss(out, batch["label"],
                                  strat_weight=run.training.strat_weight if run.spec.strat_loss else 0.0,
                                  dice_weight=run.training.dice_weight,
                                  aleatoric_passes=run.training.aleatoric_passes,
                                  aleatoric_form=run.training.aleatoric_form)
    run.optimiser.zero_grad(set_to_none=True)
    parts["loss"].backward()
    run.optimiser.step()
    return parts


def _set_learning_rate(run: _Run, *, step: int) -> float:
    """Learning rate of global optimiser step ``step`` (0-based) from the profile's schedule.

    Stateless (a function of the step alone), so an interrupted run resumes on
    the same schedule without a scheduler state in the checkpoint.
    """
    t = run.training
    lr = t.learning_rate
    if t.lr_schedule != "constant":
        total = t.max_epochs * math.ceil(t.steps_per_epoch / run.world_size)
        warmup = int(round(t.warmup_fraction * total))
        lr *= lr_factor(step, warmup_steps=min(warmup, total - 1), total_steps=total, decay=t.lr_schedule)
    for group in run.optimiser.param_groups:
        group["lr"] = lr
    return lr


def _train_epoch(run: _Run, net: torch.nn.Module, *, epoch: int) -> dict[str, Any]:
    """Re-seed from ``(seed, epoch, rank)``, run this rank's steps; the epoch's mean losses over all ranks."""
    seed_everything(stable_seed(run.seed, "epoch", epoch, run.rank))
    run.sampler.reseed(stable_seed(run.seed, "sampler", epoch, run.rank))
    net.train()
    steps = math.ceil(run.training.steps_per_epoch / run.world_size)
    sums = dict.fromkeys(LOSS_PARTS, 0.0)
    lr = run.training.learning_rate
    for i in range(steps):
        lr = _set_learning_rate(run, step=epoch * steps + i)
        parts = _train_step(run, net)
        for k in sums:
            sums[k] += float(parts[k].detach())
    means = mean_over_ranks(torch.tensor([sums[k] / steps for k in sums], dtype=torch.float64),
                            world_size=run.world_size)
    return {"epoch": epoch + 1, **{f"train_{k}": float(v) for k, v in zip(sums, means)}, "lr_last": lr}


def _close_epoch(run: _Run, state: TrainState, row: dict[str, Any], *, t0: float) -> bool:
    """Rank 0: validate (every ``val_every_epochs`` and after the last), keep the best weights, count
    validations without improvement, checkpoint; stop?"""
    t = run.training
    improved = False
    if row["epoch"] % t.val_every_epochs == 0 or row["epoch"] >= t.max_epochs:
        row.update(validate(run.model, run.val_set, profile=run.profile, use_physics=run.use_physics))
        improved = row["score"] > state.best_score
        if improved:
            state.best_score, state.best_epoch, state.bad_epochs = row["score"], row["epoch"], 0
            atomic_save(run.model.state_dict(), run.folder / BEST)
        else:
            state.bad_epochs += 1
    stop = state.bad_epochs >= run.training.patience
    state.elapsed_s += time.perf_counter() - t0
    row.update(improved=improved, best_score=state.best_score, epoch_time_s=time.perf_counter() - t0,
               elapsed_s=state.elapsed_s)
    state.history.append(row)
    state.epoch = row["epoch"]
    state.stopped = stop
    save_checkpoint(run.folder, model=run.model, optimiser=run.optimiser, sampler_state=run.sampler.state_dict(),
                    state=state)
    write_metrics(run.folder, state.history)
    return stop


def _finish(run: _Run, state: TrainState) -> dict[str, Any]:
    """Rank 0: the summary, and ``finished.json`` once training is complete (early stop or last epoch)."""
    summary: dict[str, Any] = {}
    if run.rank == 0:
        summary = training_summary(run.spec, run.sequence, state, device=run.device, world_size=run.world_size)
        summary["precision"] = run.precision.describe()
        summary["seed"] = run.seed
        if state.stopped or state.epoch >= run.training.max_epochs:
            write_finished(run.folder, summary)
    barrier(world_size=run.world_size)
    return summary


def training_summary(spec: ModelSpec, sequence: str, state: TrainState, *, device: torch.device,
                     world_size: int) -> dict[str, Any]:
    """Model, epochs, best epoch and score, wall time, and the validation Dice/CoV of the best epoch."""
    hist = state.history
    best = next((h for h in hist if h["epoch"] == state.best_epoch), hist[-1] if hist else {})
    return {
        "model": spec.name, "sequence": sequence, "epochs": state.epoch, "best_epoch": state.best_epoch,
        "best_score": state.best_score, "wall_time_s": state.elapsed_s, "early_stopped": state.stopped,
        "device": str(device), "world_size": world_size,
        **{k: best.get(k) for k in (*(f"val_dice_{t}" for t in TISSUE_NAMES), *(f"val_cov_{t}" for t in TISSUE_NAMES),
                                     "val_dice_mean", "val_cov_mean")},
    }
