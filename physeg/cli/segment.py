"""``physeg segment``: segment NIfTI images, a folder of them, or a BIDS study; volumes with intervals."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

EPILOG = """\
examples:
  # a BIDS dataset: every sub-*/[ses-*/]anat/*_T1w.nii[.gz], parameters from the sidecars,
  # one model per sequence; derivatives in BIDS_ROOT/derivatives/physeg
  physeg segment BIDS_ROOT --model MPRAGE=MPRAGE_MODEL_FOLDER --model SPGR=SPGR_MODEL_FOLDER

  # a scheduler's shard: two subjects, participant level only; then the group level once
  physeg segment BIDS_ROOT -o DERIV --model MODEL_FOLDER --participant-label 01 02 --analysis-level participant
  physeg segment BIDS_ROOT -o DERIV --analysis-level group --protocol-card --profile demo

  # one image, parameters from its BIDS sidecar (sub-01_T1w.json: InversionTime in s)
  physeg segment sub-01_T1w.nii.gz --model ~/.cache/physeg/models/demo/Phys-Strat-Aug-Epistemic_MPRAGE_seed0_<hash> \\
      --output seg/

  # parameters on the command line (seconds; flip angle in degrees), several images or a folder of them
  physeg segment a.nii.gz b.nii.gz --tr 0.02 --te 0.005 --fa 25 --model MODEL_FOLDER --output seg/ --samples 20
  physeg segment scans/ --ti 0.9 --model MODEL_FOLDER --output seg/ --force --device cuda

outputs of a BIDS study (in --output, default BIDS_ROOT/derivatives/physeg):
  dataset_description.json, dseg.tsv      BIDS derivatives dataset, label table
  sub-*/[ses-*/]anat/*_dseg.nii.gz        labels 0 background, 1 GM, 2 WM, 3 CSF (input grid)
  sub-*/[ses-*/]anat/*_probseg.nii.gz     4D probabilities (background, GM, WM, CSF)
  sub-*/[ses-*/]anat/*_dseg.json          per-scan record: sources, hashes, model, volumes
  sub-*/figures/*_desc-qc_dseg.png        QC: three slices, labels, volumes and intervals
  volumes.tsv, failures.tsv, report.html  study table (one row per scan), failed scans, HTML report
  Scans whose outputs are current (same inputs, model weights, samples, seed) are skipped;
  a failing scan is reported and the others go on (exit code 1 at the end).

outputs of images or a folder (in --output):
  <image>_dseg.nii.gz, <image>_probseg.nii.gz, volumes.tsv, volumes.json, dseg.tsv

units: InversionTime, RepetitionTime, EchoTime in SECONDS, FlipAngle in DEGREES (BIDS).
A TI or TR above 10 or a TE above 1 is refused as "looks like milliseconds".
exit codes: 0 ok, 2 usage error (inputs, units, sequence, existing output), 1 runtime failure or failed scans.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="segment images, a folder or a BIDS study: labels, probabilities, volume intervals",
        description=(
            "Segment brain MRI (MPRAGE or SPGR) into background/GM/WM/CSF with a trained physeg model, "
            "using the image's acquisition parameters; report tissue volumes with Monte-Carlo intervals "
            "and warn when the parameters are outside the model's training range. Given a BIDS dataset "
            "root, write a BIDS derivatives dataset with a study table, QC figures and an HTML report."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", metavar="INPUT",
                        help="3D NIfTI image(s) (.nii or .nii.gz), a folder of them, or a BIDS dataset root")
    parser.add_argument("--model", action="append", metavar="[SEQUENCE=]FOLDER",
                        help="trained model folder (plans.json + best.pt); for a BIDS study give one per sequence, "
                             "e.g. --model MPRAGE=A --model SPGR=B (default: the shipped weights, if any)")
    parser.add_argument("--output", "-o", metavar="DIR", help="output folder (required for images; BIDS default "
                        "BIDS_ROOT/derivatives/physeg). Outputs of the same names are replaced only with --force "
                        "(BIDS: only a physeg derivatives folder is written into); nothing else is touched")
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
    bids = parser.add_argument_group("BIDS study")
    bids.add_argument("--participant-label", nargs="+", metavar="LABEL", help="only these subjects (01 or sub-01)")
    bids.add_argument("--analysis-level", choices=("participant", "group", "both"), default="both",
                      help="participant: segment scans; group: study table and report from existing outputs; "
                           "both (default)")
    bids.add_argument("--protocol-card", action="store_true", help="per protocol, the model's expected volume "
                      "bias and CoV, from the profile's simulated test subjects (builds the cohort; cached)")
    bids.add_argument("--profile", help="profile whose cohort makes the protocol cards (default PHYSEG_PROFILE or demo)")
    bids.add_argument("--wide-interval", type=float, default=0.10, metavar="FRAC",
                      help="flag scans whose 50%% interval is wider than FRAC of the volume (default 0.10)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def _images_of(inputs: list[str]) -> list[Path]:
    """The images: files as given; a folder's ``*.nii``/``*.nii.gz`` files (sorted)."""
    from physeg.cli.errors import UsageError

    images: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and p.name.endswith((".nii", ".nii.gz")))
            if not found:
                raise UsageError(f"folder {item} holds no .nii or .nii.gz image (and is not a BIDS dataset)")
            images += found
        else:
            images.append(item)
    return images


def _study(args: argparse.Namespace) -> int:
    from physeg.cli.errors import UsageError
    from physeg.inference.shipped import locations_from_env
    from physeg.profiles import get_profile
    from physeg.study import segment_study

    flags = [f"--{n}" for n in ("sequence", "ti", "tr", "te", "fa") if getattr(args, n) is not None]
    if flags or args.force:
        raise UsageError(f"{(flags or ['--force'])[0]} does not apply to a BIDS study (parameters come from the "
                         "sidecars; current outputs are skipped, stale ones replaced)")
    try:
        profile = get_profile(args.profile) if args.protocol_card else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    run = segment_study(args.images[0], output=args.output, models=args.model,
                        participant_labels=args.participant_label, analysis_level=args.analysis_level,
                        n_samples=args.samples, seed=args.seed, device=args.device, calibration=args.calibration,
                        card_profile=profile, wide_interval=args.wide_interval, progress=not args.no_progress,
                        shipped=locations_from_env())
    logging.getLogger("physeg.cli").info("%s; derivatives in %s", run.summary(), run.output)
    if run.failed:
        print(f"physeg segment: error: {run.summary()}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    from physeg.cli.errors import UsageError, run_cli
    from physeg.study.discovery import is_bids_root

    code = []

    def work() -> None:
        if len(args.images) == 1 and is_bids_root(args.images[0]):
            code.append(_study(args))
            return
        from physeg.inference.segment import segment_images

        if args.output is None:
            raise UsageError("--output is required for images (only a BIDS study has a default)")
        if args.model and (len(args.model) != 1 or "=" in args.model[0]):
            raise UsageError("give one --model FOLDER for images (SEQUENCE=FOLDER pairs are for BIDS studies)")
        images = _images_of(args.images)
        if args.model:
            model = args.model[0]
        else:  # the shipped weights for the first image's sequence (one line naming --model when none)
            from physeg.inference.shipped import default_model_for_images, locations_from_env

            model = default_model_for_images([str(p) for p in images], sequence=args.sequence, ti=args.ti,
                                             tr=args.tr, te=args.te, fa=args.fa, **locations_from_env())
        if args.participant_label or args.protocol_card or args.analysis_level != "both":
            raise UsageError("--participant-label, --analysis-level and --protocol-card need a BIDS dataset root")
        segment_images(
            images, model, args.output,
            sequence=args.sequence, ti=args.ti, tr=args.tr, te=args.te, fa=args.fa,
            n_samples=args.samples, device=args.device, calibration=args.calibration,
            force=args.force, seed=args.seed, progress=not args.no_progress,
        )

    rc = run_cli("segment", work)
    return code[0] if rc == 0 and code else rc
