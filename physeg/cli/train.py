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
    parser.add_argument("--workers", type=int, default=1,
                        help="models trained side by side on the CPU, one process (one thread) each; "
                             "0 = one per available core (default 1)")
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
    from physeg.training.orchestrate import train_all
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
    workers = resolve_workers(args.workers or None, device=args.device)
    result = train_all(profile, sequences=args.sequences, models=args.models,
                       device=args.device, resume=args.resume, seed=args.seed, workers=workers)
    if world()[0] != 0:
        return
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        cols = [c for c in result["summary"].columns if c not in ("folder", "device", "world_size")]
        print(result["summary"][cols].round(4).to_string(index=False))
    for (name, seq), folder in result["folders"].items():
        print(f"{name:28s} {seq:7s} {folder}")
