"""``physeg simulate``: MPRAGE / SPGR images from quantitative maps (MPMs), with BIDS sidecars.

Input maps: a BIDS qMRI dataset (``--bids ROOT --subject ID``: ``R1map``/``T1map``,
``R2starmap``/``T2starmap``, ``PDmap`` with ``Units`` in their sidecars), or three
NIfTI files (``--pd``, ``--t1`` or ``--r1``, ``--t2s`` or ``--r2s``), read and
checked exactly as ``physeg pgs`` reads them (:mod:`physeg.cli.maps`): units from
the sidecars (s, ms, 1/s, 1/ms), ``--time-units``/``--rate-units`` to override,
s and 1/s for files without a sidecar.

Parameters: explicit (``--ti`` seconds; or ``--tr``, ``--te`` seconds and
``--fa`` degrees; several values give several images, broadcast against each
other), or sampled (``--range iod|ood --n N --seed S``, see
:func:`physeg.simulation.sample_parameters`).

Outputs in ``--output``: ``sim-001_MPRAGE.nii.gz`` + ``sim-001_MPRAGE.json``
(BIDS ``InversionTime`` / ``RepetitionTime``, ``EchoTime`` in seconds,
``FlipAngle`` in degrees, ``PulseSequenceType``), …, and ``parameters.tsv``.
The affine of the maps is kept. Images are the raw static-equation signal
(a.u.; MPRAGE as magnitude) unless ``--normalise`` applies the training
normalisation (99th percentile in the brain mask, clip to [0, 2]).
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from physeg import __version__
from physeg.cli.errors import UsageError, check_outputs, run_cli
from physeg.cli.maps import UNITS_HELP, add_map_arguments, load_maps

log = logging.getLogger("physeg.simulate")

EPILOG = f"""\
examples:
  # 5 in-distribution MPRAGE images of a BIDS subject
  physeg simulate --bids ~/.cache/physeg/cohorts/<cohort> --subject sub-23 --sequence MPRAGE \\
      --range iod --n 5 --seed 1 --output sims/

  # explicit inversion times (seconds) from three NIfTI maps (T1, T2* in seconds)
  physeg simulate --pd pd.nii.gz --t1 t1.nii.gz --t2s t2s.nii.gz --sequence MPRAGE --ti 0.6 0.9 1.2 -o sims/

  # the same from T1/T2* maps in milliseconds without sidecars
  physeg simulate --pd pd.nii.gz --t1 t1_ms.nii.gz --t2s t2s_ms.nii.gz --time-units ms \\
      --sequence MPRAGE --ti 0.9 -o sims/

  # one SPGR image from rate maps (1/s): TR 20 ms, TE 5 ms, flip angle 25 degrees
  physeg simulate --pd pd.nii.gz --r1 r1.nii.gz --r2s r2s.nii.gz --sequence SPGR \\
      --tr 0.020 --te 0.005 --fa 25 -o sims/

acquisition units: TI, TR, TE in SECONDS; FA in DEGREES (as in BIDS sidecars).
{UNITS_HELP}
outputs: <prefix>-001_<SEQUENCE>.nii.gz + .json sidecar per image, parameters.tsv; existing
  ones are replaced only with --force, nothing else in the folder is touched.
exit codes: 0 ok, 2 usage error (options, maps, units, parameters, existing output), 1 runtime failure.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="simulate MPRAGE/SPGR images from quantitative maps (NIfTI + BIDS sidecars)",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_map_arguments(parser, mask_help="brain mask with map files, for --normalise (default: PD > 0)")
    par = parser.add_argument_group("acquisition (explicit values, or a sampled range)")
    par.add_argument("--sequence", required=True, type=str.upper, choices=("MPRAGE", "SPGR"))
    par.add_argument("--ti", type=float, nargs="+", metavar="S", help="inversion time(s), seconds")
    par.add_argument("--tr", type=float, nargs="+", metavar="S", help="repetition time(s), seconds")
    par.add_argument("--te", type=float, nargs="+", metavar="S", help="echo time(s), seconds")
    par.add_argument("--fa", type=float, nargs="+", metavar="DEG", help="flip angle(s), degrees")
    par.add_argument("--range", choices=("iod", "ood"), dest="distribution",
                     help="sample parameters: iod = training range, ood = outside it")
    par.add_argument("--n", type=int, default=1, help="number of sampled images with --range (default 1)")
    par.add_argument("--seed", type=int, default=0, help="seed for --range (default 0)")
    out = parser.add_argument_group("output")
    out.add_argument("--output", "-o", required=True, type=Path, metavar="DIR", help="output folder")
    out.add_argument("--prefix", default="sim", help="file name prefix (default sim)")
    out.add_argument("--normalise", action="store_true",
                     help="apply the training intensity normalisation (default: raw signal)")
    out.add_argument("--force", action="store_true", help="replace this command's existing output files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``physeg simulate``: exit code 0, 2 (usage) or 1 (failure), one error line on stderr."""
    return run_cli("simulate", lambda: simulate_from_args(args))


# --------------------------------------------------------------------------- helpers
def _parameters(args: argparse.Namespace):
    """``(N, P)`` float64 tensor of parameters in seconds/radians from the flags (:class:`UsageError` if wrong)."""
    # Deferred (heavy: torch): every command's parser is built at start-up (see physeg.cli).
    import torch

    from physeg import simulation as sim
    from physeg.data.acquisition import check_value

    seq = args.sequence
    names = sim.PARAMETER_NAMES[seq]
    given = {n: getattr(args, n.lower()) for n in ("TI", "TR", "TE", "FA") if getattr(args, n.lower()) is not None}
    wrong = sorted(set(given) - set(names))
    if wrong:
        raise UsageError(f"{seq} takes {', '.join(names)}; --{wrong[0].lower()} does not apply")
    if args.distribution:
        if given:
            raise UsageError("give explicit parameters or --range, not both")
        if args.n < 1:
            raise UsageError(f"--n must be >= 1; got {args.n}")
        g = torch.Generator().manual_seed(args.seed)
        return sim.sample_parameters(seq, args.n, distribution=args.distribution, generator=g, dtype=torch.float64)
    missing = [n for n in names if n not in given]
    if missing:
        flags = " ".join(f"--{n.lower()}" for n in names)
        raise UsageError(f"{seq} needs {flags} (seconds; FA degrees) or --range iod|ood; missing {', '.join(missing)}")
    lengths = {len(v) for v in given.values()} - {1}
    if len(lengths) > 1:
        raise UsageError("give one value or the same number of values for each parameter")
    n = lengths.pop() if lengths else 1
    cols = []
    for name in names:
        vals = given[name] * n if len(given[name]) == 1 else given[name]
        for v in vals:
            for w in check_value(name, v, f"--{name.lower()}"):
                log.warning(w)
        cols.append([math.radians(v) if name == "FA" else v for v in vals])
    try:
        return sim.validate_parameters(seq, torch.tensor(cols, dtype=torch.float64).T)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def sidecar(sequence: str, row, *, source: str, normalised: bool, in_distribution: bool) -> dict:
    """BIDS sidecar of one simulated image (times in seconds, FlipAngle in degrees)."""
    from physeg.data.acquisition import SIDECAR_KEYS  # deferred: heavy
    from physeg.simulation import PARAMETER_NAMES  # deferred: heavy

    doc: dict = {"PulseSequenceType": sequence}
    for name, value in zip(PARAMETER_NAMES[sequence], row):
        doc[SIDECAR_KEYS[name]] = round(math.degrees(value), 6) if name == "FA" else round(float(value), 9)
    doc["physeg"] = {
        "SimulatedFrom": source,
        "Normalised": normalised,
        "MPRAGESign": "magnitude" if sequence == "MPRAGE" else None,
        "InTrainingRange": in_distribution,
        "Version": __version__,
    }
    return doc


def _output_names(args: argparse.Namespace, n_images: int) -> list[str]:
    """Output stems; :class:`UsageError` for a bad folder or prefix, or existing outputs without --force."""
    out = Path(args.output)
    if not args.prefix or Path(args.prefix).name != args.prefix or "\\" in args.prefix or args.prefix in (".", ".."):
        raise UsageError(f"--prefix must be a plain file-name prefix without folders; got {args.prefix!r}")
    names = [f"{args.prefix}-{i + 1:03d}_{args.sequence}" for i in range(n_images)]
    files = [out / f"{n}{ext}" for n in names for ext in (".nii.gz", ".json")] + [out / "parameters.tsv"]
    check_outputs(out, files, force=args.force, elsewhere="--output or --prefix")
    return names


def simulate_from_args(args: argparse.Namespace) -> list[Path]:
    """Do the work of ``physeg simulate``; returns the written image paths.

    Parameters, output names and maps are all checked before the output folder
    is created; every file is written to a temporary name and renamed.
    """
    # Deferred (heavy: torch, pandas): every command's parser is built at start-up (see physeg.cli).
    import numpy as np
    import pandas as pd
    from tqdm import tqdm

    from physeg import simulation as sim
    from physeg.data.bids import write_json, write_nifti, write_text

    params = _parameters(args)
    names = _output_names(args, params.shape[0])
    subject = load_maps(args, compute_pgs=False)
    # Normalisation statistics: the BIDS brain mask or --mask; without either, the PD > 0 support.
    mask = subject.mask if (args.bids is not None or args.mask is not None) else None
    source = f"{args.bids} {subject.subject_id}" if args.bids is not None else str(args.pd)
    seq, out = args.sequence, Path(args.output)
    inside = sim.is_in_distribution(seq, params).tolist()
    written, rows = [], []
    # disable=None: tqdm draws the bar only on a terminal (not in a notebook kernel or a log file)
    for i, name in enumerate(tqdm(names, desc="simulate", unit="image", disable=True if len(names) < 2 else None)):
        image = sim.simulate(subject.maps, sequence=seq, params=params[i:i + 1].to(subject.maps.dtype),
                             mask=mask, normalise=args.normalise)[0, 0]
        path = write_nifti(out / f"{name}.nii.gz", image.numpy().astype(np.float32), subject.affine)
        doc = sidecar(seq, params[i].tolist(), source=source, normalised=args.normalise,
                      in_distribution=bool(inside[i]))
        write_json(out / f"{name}.json", doc, sort_keys=False)
        written.append(path)
        rows.append({"image": path.name, **{k: v for k, v in doc.items() if k != "physeg"},
                     "in_training_range": bool(inside[i])})
    write_text(out / "parameters.tsv", pd.DataFrame(rows).to_csv(sep="\t", index=False))
    log.info("wrote %d %s image(s) with JSON sidecars to %s (parameters.tsv lists them)", len(written), seq, out)
    return written
