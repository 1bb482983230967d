"""How much dropout a narrow epistemic network carries: MC-dropout Dice, volume bias and coverage vs p.

The paper (§2.4) puts dropout p = 0.5 after every convolution (0.05 on the
input image) of a network whose first level has 30 channels. The CPU
profiles' networks have 8 (channels 8-16-32-64), and their epistemic models
are poor in the mode they are used in: on ``reference-long`` (1440 steps) the
Phys-Strat-Aug-Epistemic MPRAGE model's Monte-Carlo mean Dice is
0.84/0.76/0.20 (GM/WM/CSF) against 0.93/0.91/0.74 for the deterministic
Phys-Strat-Aug, and its median volumes are biased by +107…+170 ml GM, so no
calibration of the interval's width can make it cover the PGS volume.

This experiment trains the Phys-Strat-Aug-Epistemic network (physics early +
late, on-the-fly simulation, stratified batches, paper §2.1-§2.3) at the
profile's size with each dropout rate of ``--dropout`` (the input rate stays
0.05) as the pipeline does: starting from the profile's trained deterministic
Phys-Strat-Aug (``best.pt`` of seed ``--seed`` in the cache; ``--from-scratch``
to start from random weights), with the profile's recipe (Adam, learning rate,
warm-up + decay, CE + soft Dice, λ) for ``--steps`` steps (default: the
profile's budget), the same batch stream for every rate, one thread per model.
The parent's own eval-mode Dice is reported as ``parent``.
Then, on the validation subjects' fixed in-distribution realisations
(:func:`physeg.training.validation.make_validation_set`, PGS labels), it
reports per tissue:

* ``det``: Dice of the network in eval mode (dropout off);
* ``mc1``: mean Dice of single Monte-Carlo samples (``--samples`` of them);
* ``vote``: Dice of their majority vote (what validation and ``physeg segment`` use);
* ``bias_ml``: mean over images of (median sample volume − PGS volume), ml;
* ``cov50``: share of images whose PGS volume lies inside the raw 25–75 %
  percentiles of the sample volumes (uncalibrated; 0.5 for a calibrated model).

    .venv/bin/python benchmarks/epistemic_dropout.py [--profile reference] [--sequence MPRAGE]
        [--dropout 0.5 0.2 0.1] [--steps N] [--samples 20] [--from-scratch] [--lr-scale 1] [--json out.json]

One seed, one sequence: differences of a few hundredths are within what
another seed could give.

Measured 2026-11-26 (``--profile reference-long``, MPRAGE, seed 0, 1440 steps
from the trained parent, 20 samples, 6 validation images; the 2-core AVX2 EPYC
in float32, shared, so no times; record: ``runs/2026-11-26-epistemic-dropout/``),
vote Dice GM/WM/CSF and median-volume bias GM/WM (ml); parent 0.929/0.915/0.736:

=======  ===================  =============
p        vote Dice            bias GM / WM
=======  ===================  =============
0.5      0.856/0.778/0.241    +225 / −161
0.2      0.907/0.871/0.654    +103 / −89
0.1      0.918/0.891/0.721    +70 / −79
=======  ===================  =============

SPGR (same settings; parent 0.910/0.888/0.701): p = 0.2 0.883/0.837/0.644,
p = 0.1 0.897/0.859/0.674, bias GM/WM +86/−73 and +73/−64 ml. Raw 50 %
coverage 0 at every rate: the samples spread too little around a biased
median.

``--profile reference --dropout 0.1 --steps N`` (seed 0, MPRAGE, parent
0.904/0.898/0.641; same record): vote 0.892/0.864/0.633 at N = 360 (the
profile's budget), 0.908/0.885/0.679 at 720, 0.918/0.894/0.708 at 1440: twice
the budget is within 0.03 of the parent on every tissue.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from physeg.conventions import TISSUE_NAMES, TISSUES, stable_seed
from physeg.evaluation import metrics
from physeg.inference.predictor import Predictor
from physeg.models.losses import segmentation_loss
from physeg.models.network import build_network
from physeg.models.registry import get_model_spec
from physeg.profiles import Profile, get_profile
from physeg.training.batches import TrainingBatches
from physeg.training.checkpoint import FINISHED, load_checkpoint_weights
from physeg.training.identity import network_config
from physeg.training.orchestrate import load_volumes, model_folder
from physeg.training.precision import choose_precision
from physeg.training.rng import seed_everything
from physeg.training.schedule import lr_factor
from physeg.training.validation import make_validation_set

MODEL = "Phys-Strat-Aug-Epistemic"
PARENT = "Phys-Strat-Aug"


def parent_weights(*, profile: Profile, sequence: str, seed: int) -> dict:
    """``best.pt`` of the profile's trained deterministic parent (SystemExit naming the folder if absent)."""
    folder = model_folder(PARENT, profile=profile, sequence=sequence, seed=seed)
    if not (folder / FINISHED).is_file():
        raise SystemExit(f"epistemic_dropout: {folder} is not a finished model: train {PARENT} on profile "
                         f"{profile.name!r} first (physeg train), or pass --from-scratch")
    return load_checkpoint_weights(folder)


def train(p: float, *, volumes: dict, profile: Profile, sequence: str, steps: int, seed: int,
          start: dict | None, lr_scale: float = 1.0) -> tuple:
    """The epistemic network with dropout ``p`` trained ``steps`` steps with the profile's recipe from ``start``
    (its learning rate times ``lr_scale``)."""
    spec = get_model_spec(MODEL)
    t = profile.training
    config = dataclasses.replace(network_config(spec, profile=profile, sequence=sequence), dropout=p)
    seed_everything(stable_seed(seed, "init"))
    model = build_network(config)
    if start is not None:
        model.load_state_dict(start)
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=t.learning_rate * lr_scale)
    sampler = TrainingBatches(volumes["train"], sequence=sequence, patch_size=profile.patch_size,
                              batch_size=t.batch_size, data=spec.data, batches=spec.batches, seed=seed)
    precision = choose_precision(device="cpu", mode=t.precision)
    warmup = int(round(t.warmup_fraction * steps))
    t0 = time.perf_counter()
    for k in range(steps):
        factor = 1.0 if t.lr_schedule == "constant" else lr_factor(
            k, warmup_steps=min(warmup, steps - 1), total_steps=steps, decay=t.lr_schedule)
        for group in optimiser.param_groups:
            group["lr"] = t.learning_rate * lr_scale * factor
        batch = sampler.next_batch()
        with precision.context():
            parts = segmentation_loss(model.heads(batch["image"], batch["params"]), batch["label"],
                                      strat_weight=t.strat_weight if spec.strat_loss else 0.0,
                                      dice_weight=t.dice_weight)
        optimiser.zero_grad(set_to_none=True)
        parts["loss"].backward()
        optimiser.step()
        if (k + 1) % max(1, steps // 8) == 0:
            print(f"  p={p}: step {k + 1}/{steps}  loss {float(parts['loss'].detach()):.3f}  "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    return model.eval(), time.perf_counter() - t0, precision.describe()


def score(model: torch.nn.Module, val_set, *, profile: Profile, samples: int, voxel_ml: float) -> dict:
    """Per tissue: deterministic, single-sample and vote Dice; median-volume bias and raw 50 % coverage."""
    predictor = Predictor.from_profile(model, profile)
    det, mc1, vote, bias, inside = ({t: [] for t in TISSUE_NAMES} for _ in range(5))
    for vol, real in val_set:
        truth = vol.labels
        pgs_ml = {t: float((truth == TISSUES[t]).sum()) * voxel_ml for t in TISSUE_NAMES}
        for i in range(real.images.shape[0]):
            image, params = real.images[i:i + 1], real.params[i:i + 1]
            with torch.no_grad():
                labels = predictor.labels(image, params)[0]
            for t, d in metrics.dice_per_tissue(labels, truth).items():
                det[t].append(d)
            one = [predictor.sample(image, params, n=1, seed=stable_seed("single", i, j), maps=True).labels
                   for j in range(min(samples, 5))]
            for lab in one:
                for t, d in metrics.dice_per_tissue(lab, truth).items():
                    mc1[t].append(d)
            s = predictor.sample(image, params, n=samples, seed=stable_seed("vote", i), maps=True)
            for t, d in metrics.dice_per_tissue(s.labels, truth).items():
                vote[t].append(d)
            vols = s.volumes_ml(voxel_ml)
            for j, t in enumerate(TISSUE_NAMES):
                lo, med, hi = np.percentile(vols[:, j], [25, 50, 75])
                bias[t].append(med - pgs_ml[t])
                inside[t].append(float(lo <= pgs_ml[t] <= hi))
    return {t: {"det": float(np.nanmean(det[t])), "mc1": float(np.nanmean(mc1[t])),
                "vote": float(np.nanmean(vote[t])), "bias_ml": float(np.mean(bias[t])),
                "cov50": float(np.mean(inside[t])), "n_images": len(bias[t])} for t in TISSUE_NAMES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="reference")
    parser.add_argument("--sequence", default="MPRAGE")
    parser.add_argument("--dropout", type=float, nargs="+", default=[0.5, 0.2, 0.1])
    parser.add_argument("--steps", type=int, default=None, help="default: the profile's max_epochs x steps_per_epoch")
    parser.add_argument("--samples", type=int, default=20, help="Monte-Carlo samples per validation image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lr-scale", type=float, default=1.0,
                        help="fine-tune at the profile's learning rate times this (default 1)")
    parser.add_argument("--from-scratch", action="store_true", help="random initial weights instead of the parent's")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if any(not 0.0 <= p < 1.0 for p in args.dropout):
        parser.error("--dropout rates must lie in [0, 1)")
    if not args.lr_scale > 0:
        parser.error("--lr-scale must be positive")
    torch.set_num_threads(args.threads)
    profile = get_profile(args.profile)
    steps = args.steps or profile.training.max_epochs * profile.training.steps_per_epoch
    volumes = load_volumes(profile)
    val_set = make_validation_set(volumes["val"], sequence=args.sequence, profile=profile)
    voxel_ml = profile.voxel_size_mm ** 3 / 1000.0
    print(f"profile={profile.name} model={MODEL} sequence={args.sequence} channels={profile.channels} "
          f"steps={steps} samples={args.samples} threads={torch.get_num_threads()} "
          f"validation images={sum(r.images.shape[0] for _, r in val_set)}", flush=True)
    out = {"profile": profile.name, "sequence": args.sequence, "steps": steps, "samples": args.samples,
           "seed": args.seed, "from_parent": not args.from_scratch, "lr_scale": args.lr_scale, "rates": {}}
    start = None
    if not args.from_scratch:
        start = parent_weights(profile=profile, sequence=args.sequence, seed=args.seed)
        parent = build_network(network_config(get_model_spec(PARENT), profile=profile, sequence=args.sequence))
        parent.load_state_dict(start)
        out["parent"] = score(parent.eval(), val_set, profile=profile, samples=1, voxel_ml=voxel_ml)
        print("parent (eval mode): " + "  ".join(f"{t} {v['det']:.3f}" for t, v in out["parent"].items()),
              flush=True)
    for p in args.dropout:
        model, wall, precision = train(p, volumes=volumes, profile=profile, sequence=args.sequence, steps=steps,
                                       seed=args.seed, start=start, lr_scale=args.lr_scale)
        out["rates"][str(p)] = {"train_wall_s": wall, "precision": precision,
                                "tissues": score(model, val_set, profile=profile, samples=args.samples,
                                                 voxel_ml=voxel_ml)}
    print("\np    | tissue | det   | mc1   | vote  | bias ml | cov50")
    for p, r in out["rates"].items():
        for t, v in r["tissues"].items():
            print(f"{p:4} | {t:6} | {v['det']:.3f} | {v['mc1']:.3f} | {v['vote']:.3f} | {v['bias_ml']:+7.1f} | "
                  f"{v['cov50']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
