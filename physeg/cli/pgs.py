"""``physeg pgs``: Physics Gold Standard labels and tissue volumes from quantitative maps."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from physeg.cli.errors import UsageError, check_outputs, run_cli
from physeg.cli.maps import UNITS_HELP, add_map_arguments, load_maps, subject_label

EPILOG = f"""\
examples:
  physeg pgs --bids DIR --subject sub-01 --output out/
  physeg pgs --pd pd.nii.gz --r1 r1.nii.gz --r2s r2s.nii.gz --output out/
  physeg pgs --pd pd.nii.gz --t1 t1.nii.gz --t2s t2s.nii.gz --time-units ms --output out/
  physeg pgs --pd pd.nii.gz --r1 r1.nii.gz --r2s r2s.nii.gz --features T1,T2star,PD --em 20 --output out/

outputs (in --output): <id>_dseg.nii.gz (0 bg, 1 GM, 2 WM, 3 CSF; affine of the maps),
  <id>_volumes.tsv and <id>_volumes.json (ml). <id> is the participant or the PD file's name.
  Existing outputs are replaced only with --force; nothing else in the folder is touched.

{UNITS_HELP}
exit codes: 0 ok, 2 usage error (options, maps, units, existing output), 1 runtime failure.
"""

#: Mixture features ``--features`` accepts (canonical spelling of :mod:`physeg.pgs`).
FEATURES: tuple[str, ...] = ("T1", "T2star", "PD")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pgs", help="Physics Gold Standard labels + tissue volumes from R1/R2*/PD (or T1/T2*/PD) maps",
        description=("Physics Gold Standard: label every brain voxel GM, WM or CSF with a Gaussian mixture "
                     "on the quantitative maps (literature tissue values), and report tissue volumes."),
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_map_arguments(parser, mask_help="brain mask NIfTI with map files (default: derived from the maps)")
    parser.add_argument("--features", default="T1", help="comma-separated: T1[,T2star,PD] (default T1)")
    parser.add_argument("--em", type=int, default=0, help="EM iterations from literature start (default 0)")
    parser.add_argument("--output", "-o", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument("--force", action="store_true", help="replace this command's existing outputs")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``physeg pgs``: exit code 0, 2 (usage) or 1 (failure), one error line on stderr."""
    return run_cli("pgs", lambda: pgs_from_args(args))


def _features(text: str) -> tuple[str, ...]:
    """``--features`` as canonical names; :class:`UsageError` for an unknown or repeated one."""
    by_key = {f.lower(): f for f in FEATURES} | {"t2*": "T2star", "t2s": "T2star"}
    names = [part.strip() for part in text.split(",")]
    unknown = [n for n in names if n.lower() not in by_key]
    if unknown:
        raise UsageError(f"--features: unknown feature {unknown[0]!r}; use a comma-separated subset of "
                         f"{', '.join(FEATURES)}")
    feats = tuple(by_key[n.lower()] for n in names)
    if len(set(feats)) != len(feats):
        raise UsageError(f"--features: {text!r} names a feature twice")
    return feats


def _targets(args: argparse.Namespace) -> list[Path]:
    """The three output files; :class:`UsageError` if the folder is a file or they exist without --force."""
    out = Path(args.output)
    sid = subject_label(args)
    targets = [out / f"{sid}_dseg.nii.gz", out / f"{sid}_volumes.tsv", out / f"{sid}_volumes.json"]
    check_outputs(out, targets, force=args.force)
    return targets


def pgs_from_args(args: argparse.Namespace) -> list[Path]:
    """Do the work of ``physeg pgs``; returns the written files.

    Every argument and map is checked before the output folder is created or
    any file in it is written; each file is written to a temporary name and
    renamed.
    """
    # Deferred: numpy/torch and the loaders are heavy, and the parser is built for every command.
    import numpy as np

    from physeg.data.bids import write_nifti, write_text
    from physeg.pgs import physics_gold_standard, tissue_volumes_ml

    features = _features(args.features)
    if args.em < 0:
        raise UsageError(f"--em must be >= 0; got {args.em}")
    targets = _targets(args)
    subj = load_maps(args, compute_pgs=False)
    labels = physics_gold_standard(subj.maps, subj.mask, features=features, em_iterations=args.em)
    vols = tissue_volumes_ml(labels, subj.voxel_volume_ml)
    write_nifti(targets[0], labels.numpy().astype(np.uint8), subj.affine)
    write_text(targets[1], "tissue\tvolume_ml\n" + "".join(f"{k}\t{v:.3f}\n" for k, v in vols.items()))
    write_text(targets[2], json.dumps({"subject": subj.subject_id, "volumes_ml": vols,
                                       "features": list(features), "em_iterations": args.em}, indent=2) + "\n")
    for k, v in vols.items():
        print(f"{k}\t{v:.1f} ml")
    print(targets[0])
    return targets
