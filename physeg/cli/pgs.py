"""``physeg pgs``: Physics Gold Standard labels and tissue volumes from quantitative maps.

examples:
  physeg pgs --bids DIR --subject sub-01 --output out/
  physeg pgs --pd pd.nii.gz --r1 r1.nii.gz --r2s r2s.nii.gz --output out/
  physeg pgs --pd pd.nii.gz --t1 t1.nii.gz --t2s t2s.nii.gz --time-units ms --output out/

Writes <id>_dseg.nii.gz (0 bg, 1 GM, 2 WM, 3 CSF; affine of the maps) and
<id>_volumes.tsv / .json (ml). Units come from JSON sidecars when present.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from physeg.data.bids import load_map_files, load_subject, write_nifti
    from physeg.pgs import physics_gold_standard, tissue_volumes_ml

    try:
        if args.bids is not None:
            if args.subject is None:
                print("error: --bids needs --subject", file=sys.stderr)
                return 2
            subj = load_subject(args.bids, args.subject, compute_pgs=False)
        else:
            if args.pd is None or (args.t1 is None) == (args.r1 is None) or (args.t2s is None) == (args.r2s is None):
                print("error: give --bids DIR --subject ID, or --pd with one of --t1/--r1 and one of --t2s/--r2s",
                      file=sys.stderr)
                return 2
            units = {"t1": args.time_units, "t2star": args.time_units} if args.time_units else {}
            subj = load_map_files(pd=args.pd, t1=args.t1, r1=args.r1, t2star=args.t2s, r2star=args.r2s,
                                  mask=args.mask, units=units)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    features = tuple(args.features.split(","))
    labels = physics_gold_standard(subj.maps, subj.mask, features=features, em_iterations=args.em)
    out = Path(args.output)
    targets = [out / f"{subj.subject_id}_dseg.nii.gz", out / f"{subj.subject_id}_volumes.tsv",
               out / f"{subj.subject_id}_volumes.json"]
    existing = [t for t in targets if t.exists()]
    if existing and not args.force:
        print(f"error: {existing[0]} exists; use --force to overwrite", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    write_nifti(targets[0], labels.numpy().astype(np.uint8), subj.affine)
    vols = tissue_volumes_ml(labels, subj.voxel_volume_ml)
    targets[1].write_text("tissue\tvolume_ml\n" + "".join(f"{k}\t{v:.3f}\n" for k, v in vols.items()))
    targets[2].write_text(json.dumps({"subject": subj.subject_id, "volumes_ml": vols,
                                      "features": list(features), "em_iterations": args.em}, indent=2) + "\n")
    for k, v in vols.items():
        print(f"{k}\t{v:.1f} ml")
    print(targets[0])
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pgs", help="Physics Gold Standard labels + tissue volumes from R1/R2*/PD (or T1/T2*/PD) maps",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bids", type=Path, default=None, help="BIDS qMRI dataset root")
    parser.add_argument("--subject", default=None, help="participant id, e.g. sub-01")
    parser.add_argument("--pd", type=Path, default=None, help="PD map NIfTI (a.u.)")
    parser.add_argument("--t1", type=Path, default=None, help="T1 map NIfTI (s, or --time-units)")
    parser.add_argument("--r1", type=Path, default=None, help="R1 map NIfTI (1/s)")
    parser.add_argument("--t2s", type=Path, default=None, help="T2* map NIfTI (s, or --time-units)")
    parser.add_argument("--r2s", type=Path, default=None, help="R2* map NIfTI (1/s)")
    parser.add_argument("--mask", type=Path, default=None, help="brain mask NIfTI (default: derived)")
    parser.add_argument("--time-units", choices=("s", "ms"), default=None,
                        help="units of --t1/--t2s files without sidecars (default s)")
    parser.add_argument("--features", default="T1", help="comma-separated: T1[,T2star,PD] (default T1)")
    parser.add_argument("--em", type=int, default=0, help="EM iterations from literature start (default 0)")
    parser.add_argument("--output", type=Path, required=True, help="output folder")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.set_defaults(func=_run)
