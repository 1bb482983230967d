"""Convergence of the demo-size Phys-Strat-Aug network on CPU: the current recipe vs warm-up + decay.

Trains the Phys-Strat-Aug network (physics early+late, on-the-fly simulation,
stratified batches, L = CE + λ·L_strat; paper §2.1-§2.3) at the profile's
size (demo: 4 mm maps, 32³ patches, channels 8-16-32-64, batch 4) on the
profile's cohort, one thread, in one run, with

(a) the current recipe: constant Adam lr 1e-3, float32, 144 steps (demo: 8 × 18);
(b) Adam lr 3e-3, linear warm-up (5 %) then poly-0.9 decay
    (:mod:`physeg.training.schedule`), precision by
    :func:`physeg.training.precision.choose_precision` (bf16 autocast only on
    a CPU with native bf16), 600 steps;

both from the same initial weights and the same batch stream. Reports the
validation Dice per tissue against the PGS labels
(:func:`physeg.training.validation.validate`: the fixed validation
realisations, whole volumes, sliding window), training wall time (validation
excluded) and steps. Also times one optimiser step in float32 and under
forced bf16 autocast on this CPU (interleaved blocks, median), and the
tissue content of training patches (:mod:`physeg.training.patches`).

    .venv/bin/python benchmarks/convergence.py [--profile demo] [--sequence MPRAGE]
        [--recipes a b] [--val-every 144] [--json /tmp/convergence.json]

Measured 2026-11-25 (demo, MPRAGE, seed 0, one thread on a shared 2-core AVX2
AMD EPYC with a load of about 5, so wall times are ~2-3× an idle machine's;
one run per recipe, one seed: differences of a few hundredths are within
what another seed could give):

=======  =====  =========  ============  =====  =====  =====
recipe   steps  precision  train wall s  GM     WM     CSF
=======  =====  =========  ============  =====  =====  =====
a        144    fp32       149           0.823  0.862  0.086
b        600    fp32 [*]   587           0.921  0.906  0.669
a600     600    fp32       472           0.903  0.884  0.646
a+dice   144    fp32        95           0.822  0.864  0.391
=======  =====  =========  ============  =====  =====  =====

[*] no native bf16 on this CPU; forced bf16 autocast: 23.3 s/step vs 1.40 s in fp32.
Most of b's gain over a comes from 4× the steps (a600); the schedule adds
+0.02 on each tissue at 600 steps. Every patch holds CSF (3.8 % of its
voxels); soft Dice raises CSF Dice at 144 steps from 0.09 to 0.39.

The demo's budget, other recipes (2026-11-26 13:55-14:26 UTC, commit 776471f plus these recipes, one
thread beside a 2-worker training run, so wall times compare only between the recipes of one run;
``--recipes demo demo-lr1e-2 demo-sgd demo-b2 demo-lr6e-3 --val-every 72 --no-step-times``, then
``--recipes demo demo-b2 --seed 1`` and ``--recipes demo demo-b2 --sequence SPGR``); validation Dice
GM / WM / CSF at the end:

==============  ========  =====  =====================  =====================  =====================
recipe          batch     steps  MPRAGE seed 0          MPRAGE seed 1          SPGR seed 0
==============  ========  =====  =====================  =====================  =====================
demo            4         144    0.834 / 0.854 / 0.337  0.780 / 0.858 / 0.000  0.784 / 0.818 / 0.000
demo-b2         2         288    0.888 / 0.865 / 0.582  0.833 / 0.881 / 0.000  0.845 / 0.841 / 0.000
demo-lr6e-3     4         144    0.699 / 0.849 / 0.075
demo-lr1e-2     4         144    0.808 / 0.839 / 0.000
demo-sgd        4         144    0.843 / 0.828 / 0.000
==============  ========  =====  =====================  =====================  =====================

Batch 2 for twice the steps (the same realisation-patches) gains GM +0.05 to +0.06 and WM +0.01 to
+0.02 in all three runs, for 1.10-1.11x the training wall time (190 vs 173 s, 180 vs 162 s); CSF is
learned or not by seed at this budget. A higher Adam rate or nnU-Net's SGD does not help at 144
steps. The demo profile trains with batch 2 since.

A class stuck at Dice 0, and the output prior (2026-11-26 17:29-17:43 UTC, commit 2b3f482 plus these recipes, with
the cohort generator version 2, ``--model M --sequence S --seed K --recipes demo-b2 demo-b2-prior``,
two runs side by side, one thread each, 81-96 s of training per recipe). In the demo's own cold run
at b778eb2, 7 of its 16 ablation models ended with validation CSF Dice 0 (GM 0.73-0.76 where CSF was
learned by the same model's other seed: 0.90-0.91). ``demo-b2-prior`` starts the output bias at the
log label shares of training patches (here estimated from 40 sampled patches; the pipeline and this
script now use the exact shares, ``physeg.training.patches.patch_label_frequencies``); validation Dice
GM / WM / CSF at 288 steps:

=======================  =====================  =========================
model, sequence, seed    demo-b2                demo-b2-prior
=======================  =====================  =========================
Baseline MPRAGE 0        0.732 / 0.830 / 0.002  0.868 / 0.840 / 0.711
Phys-Strat-Aug SPGR 0    0.863 / 0.824 / 0.732  0.865 / 0.823 / 0.812
Baseline SPGR 1          0.831 / 0.760 / 0.709  0.732 / **0.000** / 0.764
Phys-Strat-Aug MPRAGE 1  0.754 / 0.892 / 0.000  0.907 / 0.899 / 0.839
Baseline MPRAGE 2        0.778 / 0.809 / 0.005  0.803 / 0.823 / 0.556
Phys-Strat MPRAGE 2      0.883 / 0.882 / 0.686  0.899 / 0.887 / 0.782
=======================  =====================  =========================

A class stuck at zero in 3 of 6 runs without the prior, 1 of 6 with it (WM, Baseline SPGR seed 1,
where the plain recipe had learned every class); the mean Dice rose in 5 of 6. Not a cure: the prior
removes the start from a uniform soft-max, not the short budget. The demo and smoke profiles train with
``prior_bias`` since.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from physeg.conventions import TISSUE_NAMES, TISSUES, stable_seed
from physeg.models.losses import segmentation_loss
from physeg.models.network import build_network
from physeg.models.registry import get_model_spec
from physeg.profiles import Profile, get_profile
from physeg.training.batches import TrainingBatches, Volumes
from physeg.training.identity import network_config
from physeg.training.orchestrate import load_volumes
from physeg.training.patches import TissueAwareLocations, patch_label_frequencies, patch_tissue_fractions
from physeg.training.precision import choose_precision
from physeg.training.rng import seed_everything
from physeg.training.schedule import build_scheduler, default_warmup
from physeg.training.validation import make_validation_set, validate

MODEL = "Phys-Strat-Aug"


@dataclass(frozen=True)
class Recipe:
    """One training recipe: peak lr, steps, schedule (``None`` = constant) and precision request."""

    name: str
    learning_rate: float
    steps: int
    schedule: str | None
    precision: str  # "fp32" | "auto" | "bf16"
    dice_weight: float = 0.0
    #: "adam" or "sgd" (nnU-Net's: Nesterov momentum 0.99, weight decay 3e-5)
    optimiser: str = "adam"
    #: items per batch (``None``: the profile's)
    batch_size: int | None = None
    #: start the output convolution's bias at the log class frequencies of training patches (the softmax
    #: starts at the class prior instead of uniform)
    output_prior: bool = False


RECIPES: dict[str, Recipe] = {
    "a": Recipe("a: current (lr 1e-3 constant, fp32)", 1e-3, 144, None, "fp32"),
    "b": Recipe("b: lr 3e-3, warm-up + poly decay, bf16 if native", 3e-3, 600, "poly", "auto"),
    # not run by default: the control (as many steps as b, without the schedule) and the
    # class-imbalance experiment (soft Dice beside the CE)
    "a600": Recipe("a600: lr 1e-3 constant, fp32, 600 steps (control for b)", 1e-3, 600, None, "fp32"),
    "a+dice": Recipe("a+dice: current recipe + soft Dice (weight 1)", 1e-3, 144, None, "fp32", 1.0),
    "b+dice": Recipe("b+dice: recipe b + soft Dice (weight 1)", 3e-3, 600, "poly", "auto", 1.0),
    # the demo's recipe at its 144 steps, and variants of it at the same wall-time budget
    "demo": Recipe("demo: lr 3e-3, warm-up + poly, CE + soft Dice, 144 steps", 3e-3, 144, "poly", "auto", 1.0),
    "demo-lr6e-3": Recipe("demo-lr6e-3: the demo's recipe at lr 6e-3", 6e-3, 144, "poly", "auto", 1.0),
    "demo-lr1e-2": Recipe("demo-lr1e-2: the demo's recipe at lr 1e-2", 1e-2, 144, "poly", "auto", 1.0),
    "demo-sgd": Recipe("demo-sgd: nnU-Net's SGD (lr 1e-2, Nesterov 0.99) with the demo's schedule and loss",
                       1e-2, 144, "poly", "auto", 1.0, optimiser="sgd"),
    "demo-b2": Recipe("demo-b2: batch 2 for 288 steps (the demo's voxels per run), lr 3e-3", 3e-3, 288, "poly",
                      "auto", 1.0, batch_size=2),
    "demo-b2-prior": Recipe("demo-b2-prior: demo-b2 with the output bias at the log class frequencies", 3e-3, 288,
                            "poly", "auto", 1.0, batch_size=2, output_prior=True),
    "demo-b2-lr1e-3": Recipe("demo-b2-lr1e-3: demo-b2 at lr 1e-3", 1e-3, 288, "poly", "auto", 1.0, batch_size=2),
}
DEFAULT_RECIPES: tuple[str, ...] = ("a", "b")


def make_sampler(volumes: list[Volumes], *, profile: Profile, sequence: str, seed: int,
                 batch_size: int | None = None) -> TrainingBatches:
    """The Phys-Strat-Aug batch stream (on-the-fly, stratified) of the training loop."""
    spec = get_model_spec(MODEL)
    return TrainingBatches(volumes, sequence=sequence, patch_size=profile.patch_size,
                           batch_size=batch_size or profile.training.batch_size, data=spec.data,
                           batches=spec.batches, seed=seed)


def make_optimiser(recipe: Recipe, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam (the training loop's) or nnU-Net's SGD, at the recipe's peak learning rate."""
    if recipe.optimiser == "sgd":
        return torch.optim.SGD(model.parameters(), lr=recipe.learning_rate, momentum=0.99, nesterov=True,
                               weight_decay=3e-5)
    return torch.optim.Adam(model.parameters(), lr=recipe.learning_rate)


def new_model(*, profile: Profile, sequence: str, seed: int) -> torch.nn.Module:
    """Phys-Strat-Aug network at the profile's widths, initialised as the training loop does."""
    seed_everything(stable_seed(seed, "init"))
    return build_network(network_config(get_model_spec(MODEL), profile=profile, sequence=sequence))


def step(model: torch.nn.Module, optimiser: torch.optim.Optimizer, batch: dict, *, precision, strat_weight: float,
         dice_weight: float = 0.0) -> float:
    """One optimiser step of the training loop's loss; returns the loss."""
    with precision.context():
        parts = segmentation_loss(model.heads(batch["image"], batch["params"]), batch["label"],
                                  strat_weight=strat_weight, dice_weight=dice_weight)
    optimiser.zero_grad(set_to_none=True)
    parts["loss"].backward()
    optimiser.step()
    return float(parts["loss"].detach())


def train_recipe(recipe: Recipe, *, volumes: dict, val_set, profile: Profile, sequence: str, seed: int,
                 val_every: int) -> dict:
    """Train with ``recipe``; validation Dice every ``val_every`` steps and at the end."""
    model = new_model(profile=profile, sequence=sequence, seed=seed).train()
    if recipe.output_prior:  # as the training loop does with TrainingConfig.prior_bias
        model.set_output_prior(patch_label_frequencies(volumes["train"], patch_size=profile.patch_size,
                                                       n_labels=len(TISSUES) + 1))
    optimiser = make_optimiser(recipe, model)
    scheduler = None
    if recipe.schedule is not None:
        scheduler = build_scheduler(optimiser, warmup_steps=default_warmup(recipe.steps),
                                    total_steps=recipe.steps, decay=recipe.schedule)
    precision = choose_precision(device="cpu", mode=recipe.precision)
    sampler = make_sampler(volumes["train"], profile=profile, sequence=sequence, seed=seed,
                           batch_size=recipe.batch_size)
    curve, losses, train_s, val_s = [], [], 0.0, 0.0
    for k in range(1, recipe.steps + 1):
        t0 = time.perf_counter()
        losses.append(step(model, optimiser, sampler.next_batch(), precision=precision,
                           strat_weight=profile.training.strat_weight, dice_weight=recipe.dice_weight))
        if scheduler is not None:
            scheduler.step()
        train_s += time.perf_counter() - t0
        if k % val_every == 0 or k == recipe.steps:
            t1 = time.perf_counter()
            scores = validate(model, val_set, profile=profile, use_physics=model.uses_physics)
            model.train()
            val_s += time.perf_counter() - t1
            row = {"step": k, "train_s": round(train_s, 1), "loss_mean_last": sum(losses[-val_every:]) /
                   len(losses[-val_every:]), **{t: scores[f"val_dice_{t}"] for t in TISSUE_NAMES}}
            curve.append(row)
            print(f"  [{recipe.name[:1]}] step {k:4d}  train {train_s:6.1f} s  loss {row['loss_mean_last']:.3f}  "
                  + "  ".join(f"{t} {row[t]:.3f}" for t in TISSUE_NAMES), flush=True)
    return {"recipe": asdict(recipe), "precision": precision.describe(), "steps": recipe.steps,
            "train_wall_s": train_s, "validation_wall_s": val_s, "final": curve[-1], "curve": curve}


def step_times(*, volumes: dict, profile: Profile, sequence: str, seed: int, steps: int = 4, blocks: int = 3
               ) -> dict:
    """Median seconds per optimiser step in float32 and under forced bf16 autocast, interleaved blocks."""
    batch = make_sampler(volumes["train"], profile=profile, sequence=sequence, seed=seed).next_batch()
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    models = {m: new_model(profile=profile, sequence=sequence, seed=seed).train() for m in times}
    opts = {m: torch.optim.Adam(models[m].parameters(), lr=1e-3) for m in times}
    for b in range(blocks):
        for mode in times:
            prec = choose_precision(device="cpu", mode=mode)
            for i in range(steps + (1 if b == 0 else 0)):  # first step of each model untimed
                t0 = time.perf_counter()
                step(models[mode], opts[mode], batch, precision=prec, strat_weight=profile.training.strat_weight)
                if b or i:
                    times[mode].append(time.perf_counter() - t0)
    med = {m: sorted(v)[len(v) // 2] for m, v in times.items()}
    return {"fp32_s_per_step": med["fp32"], "bf16_s_per_step": med["bf16"],
            "bf16_speedup": med["fp32"] / med["bf16"], "samples_per_mode": len(times["fp32"])}


def location_csf_fraction(volumes: list[Volumes], *, patch_size: int, oversample: dict[int, float], n: int = 540,
                          seed: int = 0) -> float:
    """Mean CSF share of ``n`` patch crops whose corners come from :class:`TissueAwareLocations`."""
    padded = [v.padded(patch_size) for v in volumes]
    locations = TissueAwareLocations([v.labels for v in padded], [v.mask for v in padded], patch_size=patch_size,
                                     oversample=oversample)
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for j in range(n):
        s = j % len(padded)
        a, b, c = locations.corner(s, generator=g)
        crop = padded[s].labels[a:a + patch_size, b:b + patch_size, c:c + patch_size]
        total += float((crop == TISSUES["CSF"]).float().mean())
    return total / n


def main(argv: list[str] | None = None) -> int:
    global MODEL  # --model: the functions above train this ablation
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--sequence", default="MPRAGE")
    parser.add_argument("--recipes", nargs="+", default=list(DEFAULT_RECIPES), choices=list(RECIPES))
    parser.add_argument("--val-every", type=int, default=144)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=MODEL, help=f"ablation to train (default {MODEL})")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-step-times", action="store_true", help="skip the fp32/bf16 step timing")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    MODEL = args.model
    torch.set_num_threads(args.threads)
    profile = get_profile(args.profile)
    t0 = time.perf_counter()
    volumes = load_volumes(profile)
    val_set = make_validation_set(volumes["val"], sequence=args.sequence, profile=profile)
    print(f"profile={profile.name} model={MODEL} sequence={args.sequence} channels={profile.channels} "
          f"patch={profile.patch_size} batch={profile.training.batch_size} threads={torch.get_num_threads()} "
          f"train/val subjects={len(volumes['train'])}/{len(volumes['val'])} "
          f"(data + validation set {time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"CPU precision (auto): {choose_precision(device='cpu').describe()}", flush=True)
    out: dict = {"profile": profile.name, "sequence": args.sequence, "threads": torch.get_num_threads()}
    sampler = make_sampler(volumes["train"], profile=profile, sequence=args.sequence, seed=args.seed)
    out["patch_tissue_fractions"] = patch_tissue_fractions(sampler, n=400)
    print("tissue fraction of 400 training patches (mean; share of patches with any):",
          json.dumps(out["patch_tissue_fractions"]), flush=True)
    csf = TISSUES["CSF"]
    out["csf_share_by_location_rule"] = {
        f"q_csf={q}": location_csf_fraction(volumes["train"], patch_size=profile.patch_size, oversample={csf: q})
        for q in (0.0, 0.33, 1.0)}
    print("CSF share of patch voxels, centres uniform in the mask (q=0) / CSF-centred with probability q:",
          json.dumps(out["csf_share_by_location_rule"]), flush=True)
    if not args.no_step_times:
        out["step_times"] = st = step_times(volumes=volumes, profile=profile, sequence=args.sequence, seed=args.seed)
        print(f"one step: fp32 {st['fp32_s_per_step'] * 1e3:.0f} ms, forced bf16 autocast "
              f"{st['bf16_s_per_step'] * 1e3:.0f} ms: bf16 speed-up {st['bf16_speedup']:.2f}x", flush=True)
    out["recipes"] = {}
    for key in args.recipes:
        recipe = RECIPES[key]
        print(recipe.name, flush=True)
        out["recipes"][key] = train_recipe(recipe, volumes=volumes, val_set=val_set, profile=profile,
                                           sequence=args.sequence, seed=args.seed, val_every=args.val_every)
    print("\nrecipe | steps | precision | train wall s | " + " | ".join(f"val Dice {t}" for t in TISSUE_NAMES))
    for key, r in out["recipes"].items():
        print(f"{key} | {r['steps']} | {r['precision'].split(':')[0]} | {r['train_wall_s']:.0f} | "
              + " | ".join(f"{r['final'][t]:.3f}" for t in TISSUE_NAMES))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
