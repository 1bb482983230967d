"""``physeg train``: train (or reuse from the cache) the models of a profile."""

from __future__ import annotations

import argparse

from physeg.cli.errors import UsageError, run_cli
from physeg.models.registry import MODELS
from physeg.profiles import PROFILES, SEQUENCES, get_profile

EPILOG = """\
examples:
  physeg train --profile smoke                          every model, both sequences
  physeg train --profile demo --models Baseline Phys-Strat-Aug --sequence MPRAGE
  physeg train --profile demo --resume                  continue interrupted runs from last.pt
  physeg train --profile demo --workers 0               one training process per CPU core
  physeg train --profile reference-long --all-seeds --augmentation physics --device cuda --workers 8
                                                        every model the pages use, 8 processes on one GPU
  torchrun --nproc_per_node 2 -m physeg train --profile paper --models Phys-Strat-Aug   (DDP)

Each model goes to <cache>/models/<profile>/<model>_<sequence>_seed<seed>_<hash>/
(plans.json, best.pt, last.pt, metrics.csv, finished.json); finished models are reused.
exit codes: 0 ok, 2 usage error (e.g. --device cuda without CUDA), 1 training failed.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train the ablation and uncertainty models of a profile (cached)",
        description="Train (or reuse from the cache) the ablation and uncertainty models of a profile.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--profile", default=None, choices=sorted(PROFILES),
                        help="compute profile (default: $PHYSEG_PROFILE or demo)")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=None, metavar="MODEL",
                        help=f"models to train, from {sorted(MODELS)} (default: the profile's ablations and "
                             "uncertainty variants)")
    parser.add_argument("--sequence", nargs="+", choices=SEQUENCES, default=None, dest="sequences", metavar="SEQ",
                        help="sequences (default: the profile's)")
    parser.add_argument("--resume", action="store_true", help="continue unfinished runs from last.pt")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--seed", type=int, default=None, help="model seed (default: the profile's)")
    parser.add_argument("--all-seeds", action="store_true",
                        help="train what the notebooks use: the ablations with every training seed of the profile, "
                             "the uncertainty variants with its first uncertainty_seeds (not with --models, "
                             "--sequence, --seed)")
    parser.add_argument("--augmentation", nargs="+", default=None, metavar="ARM",
                        help="also train Phys-Strat-Aug with these artefact arms (physics, torchio), first seed, "
                             "as notebook 09 does")
    parser.add_argument("--workers", type=int, default=1,
                        help="models trained side by side, one process each (on a GPU they share it); "
                             "0 = one per available CPU core, 1 on a GPU (default 1)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``physeg train``: exit code 0, 2 (usage) or 1 (failure), one error line on stderr."""
    return run_cli("train", lambda: train_from_args(args))


def train_from_args(args: argparse.Namespace) -> None:
    """Check the options, train (or reuse) the models, print the summary (rank 0 only)."""
    # Deferred (heavy: torch, pandas): every command's parser is built at start-up (see physeg.cli).
    import pandas as pd
    import torch

    from physeg.training.distributed import world
    from physeg.training.orchestrate import arm_jobs, profile_jobs, train_all, train_jobs
    from physeg.training.parallel import resolve_workers

    try:
        profile = get_profile(args.profile)  # $PHYSEG_PROFILE may name an unknown profile
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but CUDA is not available; use --device cpu or auto")
    if args.seed is not None and args.seed < 0:
        raise UsageError(f"--seed must be >= 0; got {args.seed}")
    if args.workers < 0:
        raise UsageError(f"--workers must be >= 0 (0: one per core); got {args.workers}")
    if args.all_seeds and (args.models or args.sequences or args.seed is not None):
        raise UsageError("--all-seeds trains every model, sequence and seed of the profile; "
                         "drop --models, --sequence and --seed, or drop --all-seeds")
    workers = resolve_workers(args.workers or None, device=args.device)
    try:
        arms = arm_jobs(profile, args.augmentation) if args.augmentation else []
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.all_seeds or arms:
        # the ablations of every seed first: if a run is cut short, the seed-to-seed comparison survives
        jobs = sorted(profile_jobs(profile), key=lambda j: j.model not in profile.ablations) if args.all_seeds else []
        result = train_jobs(profile, jobs + arms, device=args.device, resume=args.resume, workers=workers)
        result["folders"] = {(_job_label(job), job.sequence): f for job, f in result["folders"].items()}
    else:
        result = train_all(profile, sequences=args.sequences, models=args.models,
                           device=args.device, resume=args.resume, seed=args.seed, workers=workers)
    if world()[0] != 0:
        return
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        cols = [c for c in result["summary"].columns if c not in ("folder", "device", "world_size")]
        print(result["summary"][cols].round(4).to_string(index=False))
    for (name, seq), folder in result["folders"].items():
        print(f"{name:28s} {seq:7s} {folder}")


def _job_label(job) -> str:
    """``model[+arm] seed N``: one summary line per job, also when a model is trained with several seeds."""
    arm = f"+{job.augmentation}" if job.augmentation else ""
    return f"{job.model}{arm} seed {job.seed}"
