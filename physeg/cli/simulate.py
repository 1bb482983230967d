"""``physeg simulate``: MPRAGE / SPGR / MP2RAGE / multi-echo SPGR images from quantitative maps, with BIDS sidecars.

Input maps: a BIDS qMRI dataset (``--bids ROOT --subject ID``: ``R1map``/``T1map``,
``R2starmap``/``T2starmap``, ``PDmap`` with ``Units`` in their sidecars), or three
NIfTI files (``--pd``, ``--t1`` or ``--r1``, ``--t2s`` or ``--r2s``), read and
checked exactly as ``physeg pgs`` reads them (:mod:`physeg.cli.maps`): units from
the sidecars (s, ms, 1/s, 1/ms), ``--time-units``/``--rate-units`` to override,
s and 1/s for files without a sidecar.

Parameters: explicit (``--ti`` seconds; or ``--tr``, ``--te`` seconds and
``--fa`` degrees; MP2RAGE ``--ti1 --ti2 --fa1 --fa2 --tr --cycle-tr
--readout-pulses``; MESPGR ``--tr --te1 --dte --fa``; the flags come from the
sequence registry; several values give several images, broadcast against each
other), or sampled (``--range iod|ood --n N --seed S``, see
:func:`physeg.simulation.sample_parameters`).

Artefacts (:mod:`physeg.simulation.artefacts`), drawn per image from ``--seed``:
``--b1 A [B]`` a smooth transmit field with peak relative flip-angle error in
[A, B] inside the equations, ``--bias A [B]`` a smooth receive bias (peak log
amplitude), ``--snr S [S2]`` Rician noise at that SNR (mean head signal / σ).

Outputs in ``--output``: ``sim-001_MPRAGE.nii.gz`` + ``sim-001_MPRAGE.json``
(BIDS ``InversionTime`` / ``RepetitionTime``, ``EchoTime`` in seconds,
``FlipAngle`` in degrees, ``PulseSequenceType``), …, and ``parameters.tsv``.
MP2RAGE writes ``sim-001_UNIT1`` (UNI + 1/2, in [0, 1]) and the magnitude
inversion images ``sim-001_inv-1_MP2RAGE``, ``sim-001_inv-2_MP2RAGE``; MESPGR
each echo (``sim-001_echo-1_MEGRE`` …) or, with ``--echoes combined``, their mean.
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

  # MP2RAGE (UNI + both inversions) with a +-20 % B1+ field and SNR 30
  physeg simulate --pd pd.nii.gz --t1 t1.nii.gz --t2s t2s.nii.gz --sequence MP2RAGE \\
      --ti1 0.7 --ti2 2.5 --fa1 4 --fa2 5 --tr 0.007 --cycle-tr 5 --readout-pulses 160 \\
      --b1 0.2 --snr 30 --seed 1 -o sims/

acquisition units: TI*, TR, TE*, dTE, cycle TR in SECONDS; FA* in DEGREES (as in BIDS sidecars).
{UNITS_HELP}
outputs: <prefix>-001_<SEQUENCE>.nii.gz + .json sidecar per image, parameters.tsv; existing
  ones are replaced only with --force, nothing else in the folder is touched.
exit codes: 0 ok, 2 usage error (options, maps, units, parameters, existing output), 1 runtime failure.
"""


def _flags() -> dict[str, object]:
    """Every acquisition flag of the registry: ``{flag: ParameterSpec}`` (first declaration wins), torch-free."""
    from physeg.simulation.sequences import REGISTRY

    flags: dict[str, object] = {}
    for spec in REGISTRY.values():
        for p in spec.parameters:
            flags.setdefault(p.flag, p)
    return flags


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def register(subparsers: argparse._SubParsersAction) -> None:
    from physeg.simulation.sequences import REGISTRY  # torch-free: names, flags, ranges

    parser = subparsers.add_parser(
        "simulate",
        help=f"simulate {'/'.join(REGISTRY)} images from quantitative maps (NIfTI + BIDS sidecars)",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_map_arguments(parser, mask_help="brain mask with map files, for --normalise (default: PD > 0)")
    par = parser.add_argument_group("acquisition (explicit values, or a sampled range)")
    par.add_argument("--sequence", required=True, type=str.upper, choices=tuple(REGISTRY))
    units = {"s": ("S", "seconds", float), "rad": ("DEG", "degrees", float), "count": ("N", "a count", int)}
    for flag, p in _flags().items():
        metavar, unit, kind = units[p.unit]
        users = ", ".join(k for k, spec in REGISTRY.items() if any(q.flag == flag for q in spec.parameters))
        par.add_argument(flag, type=kind, nargs="+", metavar=metavar, dest=_dest(flag),
                         help=f"{p.description}(s), {unit} ({users})")
    par.add_argument("--range", choices=("iod", "ood"), dest="distribution",
                     help="sample parameters: iod = training range, ood = outside it")
    par.add_argument("--n", type=int, default=1, help="number of sampled images with --range (default 1)")
    par.add_argument("--seed", type=int, default=0, help="seed for --range and the artefacts (default 0)")
    art = parser.add_argument_group("artefacts (drawn per image from --seed; physeg.simulation.artefacts)")
    art.add_argument("--b1", type=float, nargs="+", metavar="A",
                     help="smooth B1+ field inside the equations: peak relative flip-angle error A (0.2 = +-20%%) "
                          "or a range A B")
    art.add_argument("--bias", type=float, nargs="+", metavar="A",
                     help="smooth receive bias: peak log amplitude A or a range A B")
    art.add_argument("--snr", type=float, nargs="+", metavar="S",
                     help="Rician noise: SNR (mean head signal / sigma) S or a range S1 S2")
    out = parser.add_argument_group("output")
    out.add_argument("--output", "-o", required=True, type=Path, metavar="DIR", help="output folder")
    out.add_argument("--prefix", default="sim", help="file name prefix (default sim)")
    out.add_argument("--echoes", choices=("separate", "combined"), default="separate",
                     help="MESPGR: one image per echo (default) or their mean")
    out.add_argument("--normalise", action="store_true",
                     help="apply the training intensity normalisation (default: raw signal)")
    out.add_argument("--force", action="store_true", help="replace this command's existing output files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``physeg simulate``: exit code 0, 2 (usage) or 1 (failure), one error line on stderr."""
    return run_cli("simulate", lambda: simulate_from_args(args))


# --------------------------------------------------------------------------- helpers
def _given(args: argparse.Namespace, spec) -> dict[str, list[float]]:
    """``{parameter name: values}`` of the flags given for ``spec``; :class:`UsageError` for foreign flags."""
    own = {p.flag for p in spec.parameters}
    foreign = [f for f in _flags() if f not in own and getattr(args, _dest(f), None) is not None]
    if foreign:
        raise UsageError(f"{spec.name} takes {', '.join(spec.names)}; {foreign[0]} does not apply")
    return {p.name: getattr(args, _dest(p.flag)) for p in spec.parameters if getattr(args, _dest(p.flag)) is not None}


def _check_user_value(p, value: float) -> list[str]:
    """Unit sanity of one value in user units (:func:`physeg.data.acquisition.check_value` for TI/TR/TE/FA)."""
    from physeg.data.acquisition import check_value

    if p.unit == "count":
        if value < 1:
            raise UsageError(f"{p.flag}: {p.name} must be a positive integer; got {value}")
        return []
    return check_value(p.check_as or p.name, value, p.flag)


def _parameters(args: argparse.Namespace):
    """``(N, P)`` float64 tensor of parameters in seconds/radians from the flags (:class:`UsageError` if wrong)."""
    # Deferred (heavy: torch): every command's parser is built at start-up (see physeg.cli).
    import torch

    from physeg import simulation as sim

    seq = args.sequence
    spec = sim.get_sequence(seq)
    names = spec.names
    given = _given(args, spec)
    if args.distribution:
        if given:
            raise UsageError("give explicit parameters or --range, not both")
        if args.n < 1:
            raise UsageError(f"--n must be >= 1; got {args.n}")
        g = torch.Generator().manual_seed(args.seed)
        return sim.sample_parameters(seq, args.n, distribution=args.distribution, generator=g, dtype=torch.float64)
    missing = [n for n in names if n not in given]
    if missing:
        flags = " ".join(p.flag for p in spec.parameters)
        raise UsageError(f"{seq} needs {flags} (seconds; FA degrees) or --range iod|ood; missing {', '.join(missing)}")
    lengths = {len(v) for v in given.values()} - {1}
    if len(lengths) > 1:
        raise UsageError("give one value or the same number of values for each parameter")
    n = lengths.pop() if lengths else 1
    cols = []
    for p in spec.parameters:
        vals = given[p.name] * n if len(given[p.name]) == 1 else given[p.name]
        for v in vals:
            for w in _check_user_value(p, v):
                log.warning(w)
        cols.append([math.radians(v) if p.unit == "rad" else float(v) for v in vals])
    try:
        return sim.validate_parameters(seq, torch.tensor(cols, dtype=torch.float64).T)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _artefacts(args: argparse.Namespace):
    """:class:`physeg.simulation.Artefacts` from ``--b1/--bias/--snr`` (``None`` when none is given)."""
    from physeg.simulation.artefacts import Artefacts

    ranges = {}
    for name in ("b1", "bias", "snr"):
        vals = getattr(args, name)
        if vals is None:
            continue
        if len(vals) > 2:
            raise UsageError(f"--{name} takes one value or a range of two; got {len(vals)}")
        ranges[name] = (vals[0], vals[-1])
    if not ranges:
        return None
    try:
        return Artefacts(**ranges)
    except ValueError as exc:
        raise UsageError(f"--{str(exc)}") from None


def sidecar(sequence: str, row, *, source: str, normalised: bool, in_distribution: bool,
            fields: dict | None = None, image: str | None = None, artefacts: dict | None = None) -> dict:
    """BIDS sidecar of one simulated image (times in seconds, FlipAngle in degrees).

    ``fields``: the image's BIDS fields (default: every parameter under its
    sidecar key); ``image``: which image of the sequence (UNI, INV1, echo-2, ...);
    ``artefacts``: amplitudes and SNR of the image's artefacts.
    """
    from physeg.simulation.sequences import get_sequence  # torch-free
    from physeg.simulation.sequences.common import bids_value

    spec = get_sequence(sequence)
    doc: dict = {"PulseSequenceType": sequence}
    doc.update(fields if fields is not None else {p.sidecar: bids_value(p, v) for p, v in zip(spec.parameters, row)})
    doc["physeg"] = {
        "SimulatedFrom": source,
        "Normalised": normalised,
        "MPRAGESign": "magnitude" if sequence == "MPRAGE" else None,
        "InTrainingRange": in_distribution,
        "Version": __version__,
    }
    if image is not None:
        doc["physeg"]["Image"] = image
        doc["physeg"]["Parameters"] = {p.name: bids_value(p, v) for p, v in zip(spec.parameters, row)}
    if artefacts is not None:
        doc["physeg"]["Artefacts"] = artefacts
    return doc


def _mode(args: argparse.Namespace) -> str:
    """Output mode: MP2RAGE writes UNI and both inversions, MESPGR per ``--echoes``, the rest one image."""
    if args.sequence == "MP2RAGE" or (args.sequence == "MESPGR" and args.echoes == "separate"):
        return "all"
    return "default"


def _output_names(args: argparse.Namespace, n_images: int) -> list[list[str]]:
    """Output stems per image (one per scanner image); :class:`UsageError` for a bad folder or prefix, or existing
    outputs without --force."""
    from physeg.simulation.sequences import get_sequence  # torch-free

    out = Path(args.output)
    if not args.prefix or Path(args.prefix).name != args.prefix or "\\" in args.prefix or args.prefix in (".", ".."):
        raise UsageError(f"--prefix must be a plain file-name prefix without folders; got {args.prefix!r}")
    spec = get_sequence(args.sequence)
    stems = spec.stems(_mode(args)) if spec.stems is not None else (args.sequence,)
    names = [[f"{args.prefix}-{i + 1:03d}_{stem}" for stem in stems] for i in range(n_images)]
    files = [out / f"{n}{ext}" for row in names for n in row for ext in (".nii.gz", ".json")]
    check_outputs(out, files + [out / "parameters.tsv"], force=args.force, elsewhere="--output or --prefix")
    return names


def simulate_from_args(args: argparse.Namespace) -> list[Path]:
    """Do the work of ``physeg simulate``; returns the written image paths.

    Parameters, artefacts, output names and maps are all checked before the
    output folder is created; every file is written to a temporary name and renamed.
    """
    # Deferred (heavy: torch, pandas): every command's parser is built at start-up (see physeg.cli).
    import numpy as np
    import pandas as pd
    import torch
    from tqdm import tqdm

    from physeg import simulation as sim
    from physeg.data.bids import write_json, write_nifti, write_text
    from physeg.simulation.artefacts import describe, select

    params = _parameters(args)
    artefacts = _artefacts(args)
    names = _output_names(args, params.shape[0])
    subject = load_maps(args, compute_pgs=False)
    # Normalisation statistics: the BIDS brain mask or --mask; without either, the PD > 0 support.
    mask = subject.mask if (args.bids is not None or args.mask is not None) else None
    source = f"{args.bids} {subject.subject_id}" if args.bids is not None else str(args.pd)
    seq, out, mode = args.sequence, Path(args.output), _mode(args)
    spec = sim.get_sequence(seq)
    inside = sim.is_in_distribution(seq, params).tolist()
    # one generator: parameters (if sampled) were drawn from --seed; artefacts and noise from this one
    g = torch.Generator().manual_seed(args.seed + 1)
    draws = artefacts.draw(params.shape[0], generator=g, dtype=subject.maps.dtype) if artefacts else None
    written, rows = [], []
    # disable=None: tqdm draws the bar only on a terminal (not in a notebook kernel or a log file)
    for i, stems in enumerate(tqdm(names, desc="simulate", unit="image", disable=True if len(names) < 2 else None)):
        draw = select(draws, i)
        images = sim.simulate(subject.maps, sequence=seq, params=params[i:i + 1].to(subject.maps.dtype),
                              mask=mask, normalise=args.normalise, outputs=mode, artefacts=draw)[0]
        row = params[i].tolist()
        fields = (spec.sidecars(row, mode) if spec.sidecars is not None else [None] * len(stems))
        for c, (stem, image_name) in enumerate(zip(stems, spec.output_names[mode])):
            path = write_nifti(out / f"{stem}.nii.gz", images[c].numpy().astype(np.float32), subject.affine)
            extra = {} if seq in ("MPRAGE", "SPGR") and draws is None else {
                "image": image_name, "artefacts": describe(draw)}
            doc = sidecar(seq, row, source=source, normalised=args.normalise, in_distribution=bool(inside[i]),
                          fields=fields[c], **extra)
            write_json(out / f"{stem}.json", doc, sort_keys=False)
            written.append(path)
            rows.append({"image": path.name, **{k: v for k, v in doc.items() if k != "physeg"},
                         "in_training_range": bool(inside[i]), **(describe(draw) if draws else {})})
    write_text(out / "parameters.tsv", pd.DataFrame(rows).to_csv(sep="\t", index=False))
    log.info("wrote %d %s image(s) with JSON sidecars to %s (parameters.tsv lists them)", len(written), seq, out)
    return written
