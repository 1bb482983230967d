"""``physeg simulate``: MPRAGE / SPGR images from quantitative maps (MPMs), with BIDS sidecars.

Input maps: a BIDS qMRI dataset (``--bids ROOT --subject ID``, read by
:func:`physeg.data.load_subject`: ``R1map``/``T1map``, ``R2starmap``/``T2starmap``,
``PDmap`` with ``Units`` in their sidecars), or three NIfTI files
(``--pd`` and ``--t1`` [s] or ``--r1`` [1/s], and ``--t2s`` [s] or ``--r2s`` [1/s]).

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
import json
import logging
import math
from pathlib import Path

import numpy as np

log = logging.getLogger("physeg.simulate")

EPILOG = """\
examples:
  # 5 in-distribution MPRAGE images of a BIDS subject
  physeg simulate --bids ~/.cache/physeg/cohorts/<cohort> --subject sub-23 --sequence MPRAGE \\
      --range iod --n 5 --seed 1 --output sims/

  # explicit inversion times (seconds) from three NIfTI maps (T1, T2* in seconds)
  physeg simulate --pd pd.nii.gz --t1 t1.nii.gz --t2s t2s.nii.gz --sequence MPRAGE --ti 0.6 0.9 1.2 -o sims/

  # one SPGR image from rate maps (1/s): TR 20 ms, TE 5 ms, flip angle 25 degrees
  physeg simulate --pd pd.nii.gz --r1 r1.nii.gz --r2s r2s.nii.gz --sequence SPGR \\
      --tr 0.020 --te 0.005 --fa 25 -o sims/

units: TI, TR, TE in SECONDS; FA in DEGREES (as in BIDS sidecars).
outputs: <prefix>-001_<SEQUENCE>.nii.gz + .json sidecar per image, parameters.tsv.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="simulate MPRAGE/SPGR images from quantitative maps (NIfTI + BIDS sidecars)",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = parser.add_argument_group("maps (a BIDS subject, or three NIfTI files)")
    src.add_argument("--bids", metavar="ROOT", help="BIDS qMRI dataset root")
    src.add_argument("--subject", metavar="ID", help="participant, e.g. sub-01 or 01 (with --bids)")
    src.add_argument("--pd", metavar="NII", help="proton density map (a.u.)")
    src.add_argument("--t1", metavar="NII", help="T1 map in seconds")
    src.add_argument("--r1", metavar="NII", help="R1 map in 1/s (instead of --t1)")
    src.add_argument("--t2s", metavar="NII", help="T2* map in seconds")
    src.add_argument("--r2s", metavar="NII", help="R2* map in 1/s (instead of --t2s)")
    src.add_argument("--mask", metavar="NII", help="brain mask (for --normalise; default PD > 0)")
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
    out.add_argument("--output", "-o", required=True, metavar="DIR", help="output folder")
    out.add_argument("--prefix", default="sim", help="file name prefix (default sim)")
    out.add_argument("--normalise", action="store_true",
                     help="apply the training intensity normalisation (default: raw signal)")
    out.add_argument("--force", action="store_true", help="overwrite existing output files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from physeg.cli.errors import run_cli

    return run_cli("simulate", lambda: simulate_from_args(args))


# --------------------------------------------------------------------------- helpers
def _load_maps(args: argparse.Namespace):
    """``(maps (3,X,Y,Z) float32 tensor, mask or None, affine, description)``."""
    import torch

    from physeg.inference.segment import UsageError, read_volume

    files = [args.pd, args.t1, args.r1, args.t2s, args.r2s]
    if args.bids:
        if any(files):
            raise UsageError("give either --bids/--subject or map files (--pd, --t1/--r1, --t2s/--r2s), not both")
        if not args.subject:
            raise UsageError("--bids needs --subject (e.g. --subject sub-01)")
        from physeg.data import load_subject

        try:
            subject = load_subject(args.bids, args.subject, compute_pgs=False)
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        return subject.maps, subject.mask, subject.affine, f"{args.bids} {subject.subject_id}"
    if args.subject:
        raise UsageError("--subject needs --bids")
    if not args.pd or not (args.t1 or args.r1) or not (args.t2s or args.r2s):
        raise UsageError("give the maps: --bids ROOT --subject ID, or --pd and --t1/--r1 and --t2s/--r2s")
    if args.t1 and args.r1:
        raise UsageError("give --t1 (seconds) or --r1 (1/s), not both")
    if args.t2s and args.r2s:
        raise UsageError("give --t2s (seconds) or --r2s (1/s), not both")
    pd, ref = read_volume(args.pd, what="PD map")
    chans = [pd]
    for time_path, rate_path, name, lo, hi in (
        (args.t1, args.r1, "T1", 0.1, 10.0), (args.t2s, args.r2s, "T2*", 0.003, 1.0)
    ):
        data, img = read_volume(time_path or rate_path, what=f"{name} map")
        if data.shape != pd.shape or not np.allclose(img.affine, ref.affine, atol=1e-4):
            raise UsageError(f"{time_path or rate_path}: grid (shape/affine) differs from the PD map {args.pd}")
        if rate_path:
            with np.errstate(divide="ignore"):
                data = np.where(data > 0, 1.0 / np.where(data > 0, data, 1.0), 0.0).astype(np.float32)
        vals = data[(data > 0) & (pd > 0)]
        med = float(np.median(vals)) if vals.size else float("nan")
        if not (lo <= med <= hi):
            flag = "--r1" if name == "T1" else "--r2s"
            hint = " (looks like milliseconds: give seconds)" if med > hi and med / 1000 <= hi else ""
            raise UsageError(
                f"{time_path or rate_path}: median {name} {med:.4g} s is outside the plausible [{lo}, {hi}] s{hint}; "
                f"{name} maps are in seconds, rate maps ({flag}) in 1/s"
            )
        chans.append(data)
    mask = None
    if args.mask:
        m, img = read_volume(args.mask, what="mask")
        if m.shape != pd.shape:
            raise UsageError(f"mask {args.mask} shape {m.shape} differs from the maps {pd.shape}")
        mask = torch.from_numpy(m > 0)
    maps = torch.from_numpy(np.stack(chans).astype(np.float32))
    return maps, mask, np.asarray(ref.affine, float), f"{args.pd}"


def _parameters(args: argparse.Namespace):
    """``(N, P)`` parameters in seconds/radians from the flags."""
    import torch

    from physeg import simulation as sim
    from physeg.inference.segment import UsageError, check_value

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
    from physeg import __version__
    from physeg.inference.segment import SIDECAR_KEYS
    from physeg.simulation import PARAMETER_NAMES

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


def simulate_from_args(args: argparse.Namespace) -> list[Path]:
    """Do the work of ``physeg simulate``; returns the written image paths."""
    from tqdm import tqdm

    from physeg import simulation as sim
    from physeg.data import write_nifti
    from physeg.cli.errors import UsageError

    params = _parameters(args)
    maps, mask, affine, source = _load_maps(args)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} exists and is not a folder")
    seq = args.sequence
    names = [f"{args.prefix}-{i + 1:03d}_{seq}" for i in range(params.shape[0])]
    clash = [n for n in names if (out / f"{n}.nii.gz").exists() or (out / f"{n}.json").exists()]
    if clash and not args.force:
        raise UsageError(f"{out / clash[0]}.nii.gz exists; use --force to overwrite or another --output/--prefix")
    out.mkdir(parents=True, exist_ok=True)
    inside = sim.is_in_distribution(seq, params).tolist()
    written = []
    rows = []
    for i, name in enumerate(tqdm(names, desc="simulate", unit="image", disable=len(names) < 2)):
        image = sim.simulate(maps, sequence=seq, params=params[i:i + 1].to(maps.dtype), mask=mask,
                             normalise=args.normalise)[0, 0]
        path = write_nifti(out / f"{name}.nii.gz", image.numpy().astype(np.float32), affine)
        doc = sidecar(seq, params[i].tolist(), source=source, normalised=args.normalise,
                      in_distribution=bool(inside[i]))
        (out / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
        written.append(path)
        rows.append({"image": path.name, **{k: v for k, v in doc.items() if k != "physeg"},
                     "in_training_range": bool(inside[i])})
    import pandas as pd

    pd.DataFrame(rows).to_csv(out / "parameters.tsv", sep="\t", index=False)
    log.info("wrote %d %s image(s) with JSON sidecars to %s (parameters.tsv lists them)", len(written), seq, out)
    return written
