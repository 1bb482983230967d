"""``physeg segment``: segment NIfTI images with a trained model; volumes with intervals."""

from __future__ import annotations

import argparse

EPILOG = """\
examples:
  # parameters from the BIDS sidecar next to the image (sub-01_T1w.json: InversionTime in s)
  physeg segment sub-01_T1w.nii.gz --model ~/.cache/physeg/models/demo/Phys-Strat-Aug-Epistemic_MPRAGE_seed0_<hash> \\
      --output seg/

  # parameters on the command line (seconds; flip angle in degrees), several images
  physeg segment a.nii.gz b.nii.gz --tr 0.02 --te 0.005 --fa 25 --model MODEL_FOLDER --output seg/ --samples 20

  # recompute into an existing folder, on the GPU
  physeg segment scan.nii.gz --ti 0.9 --model MODEL_FOLDER --output seg/ --force --device cuda

outputs (in --output):
  <image>_dseg.nii.gz      labels 0 background, 1 GM, 2 WM, 3 CSF (input grid, affine and header kept)
  <image>_probseg.nii.gz   4D probabilities, volumes in the order background, GM, WM, CSF
  volumes.tsv, volumes.json  GM/WM/CSF volumes (ml), median and IQR (25-75%) of the Monte-Carlo
                           samples (calibrated if the model folder has calibration.json or with
                           --calibration), out-of-distribution warnings
  dseg.tsv                 label lookup table

units: InversionTime, RepetitionTime, EchoTime in SECONDS, FlipAngle in DEGREES (BIDS).
A TI or TR above 10 or a TE above 1 is refused as "looks like milliseconds".
exit codes: 0 ok, 2 usage error (inputs, units, sequence, existing output), 1 runtime failure.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="segment NIfTI images with a trained model: labels, probabilities, volume IQRs",
        description=(
            "Segment brain MRI (MPRAGE or SPGR) into background/GM/WM/CSF with a trained physeg model, "
            "using the image's acquisition parameters; report tissue volumes with Monte-Carlo intervals "
            "and warn when the parameters are outside the model's training range."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="3D NIfTI image(s) (.nii or .nii.gz)")
    parser.add_argument("--model", required=True, metavar="FOLDER",
                        help="trained model folder (has plans.json and best.pt; see physeg.training.orchestrate)")
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="output folder (outputs of the "
                        "same names are replaced only with --force; nothing else in it is touched)")
    parser.add_argument("--sequence", choices=("MPRAGE", "SPGR"), type=str.upper,
                        help="sequence of the images (default: from the sidecar, else MPRAGE if TI is known, else SPGR)")
    parser.add_argument("--ti", type=float, metavar="S", help="inversion time in seconds (MPRAGE)")
    parser.add_argument("--tr", type=float, metavar="S", help="repetition time in seconds (SPGR)")
    parser.add_argument("--te", type=float, metavar="S", help="echo time in seconds (SPGR)")
    parser.add_argument("--fa", type=float, metavar="DEG", help="flip angle in degrees (SPGR)")
    parser.add_argument("--samples", "-n", type=int, default=50, metavar="N",
                        help="Monte-Carlo samples for the volume intervals (default 50)")
    parser.add_argument("--calibration", metavar="JSON",
                        help="interval calibration (default: calibration.json in the model folder, if any)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto", help="default auto")
    parser.add_argument("--seed", type=int, default=0, help="seed of the Monte-Carlo sampling (default 0)")
    parser.add_argument("--force", action="store_true", help="replace existing outputs of the same names "
                        "(only the files this run writes; nothing else is touched)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from physeg.cli.errors import run_cli
    from physeg.inference.segment import segment_images

    def work() -> None:
        segment_images(
            args.images, args.model, args.output,
            sequence=args.sequence, ti=args.ti, tr=args.tr, te=args.te, fa=args.fa,
            n_samples=args.samples, device=args.device, calibration=args.calibration,
            force=args.force, seed=args.seed, progress=not args.no_progress,
        )

    return run_cli("segment", work)
