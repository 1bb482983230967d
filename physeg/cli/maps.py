"""Quantitative-map options shared by ``physeg pgs`` and ``physeg simulate``: one way in for maps.

Both commands take a BIDS subject (``--bids ROOT --subject ID``) or three NIfTI
files (``--pd``, ``--t1``/``--r1``, ``--t2s``/``--r2s``), and read them with
one function (:func:`physeg.data.bids.load_subject` /
:func:`physeg.data.bids.load_map_files`): units from the JSON sidecars
(``Units``: s, ms, 1/s, 1/ms), ``--time-units`` / ``--rate-units`` as an
explicit override, SI (s, 1/s) for files without a sidecar; the same checks on
grids, invalid voxels and plausible values (:mod:`physeg.data.map_checks`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from physeg.cli.errors import UsageError, usage_errors

if TYPE_CHECKING:  # the loader pulls torch; the parser must stay light
    from physeg.data.bids import Subject

#: Help text on units, shared by both commands' epilogs.
UNITS_HELP = """\
map units: from each map's JSON sidecar ("Units": s, ms, 1/s or 1/ms; PD a.u. or %);
  --time-units / --rate-units override them; files without a sidecar are taken as s and 1/s.
  Maps with more than 1% NaN, zero or negative voxels in the brain mask are refused
  (fewer are reported and left out of the mask); a median T1/T2* 1000x too large
  is reported as "looks like milliseconds".
"""


def add_map_arguments(parser: argparse.ArgumentParser, *, mask_help: str) -> None:
    """Add ``--bids/--subject`` and the map-file options (with units) to ``parser``."""
    src = parser.add_argument_group("maps (a BIDS subject, or three NIfTI files)")
    src.add_argument("--bids", type=Path, metavar="ROOT", help="BIDS qMRI dataset root")
    src.add_argument("--subject", metavar="ID", help="participant, e.g. sub-01 or 01 (with --bids)")
    src.add_argument("--pd", type=Path, metavar="NII", help="proton density map (a.u., or %% per its sidecar)")
    src.add_argument("--t1", type=Path, metavar="NII", help="T1 map (s or ms, see map units)")
    src.add_argument("--r1", type=Path, metavar="NII", help="R1 map (1/s or 1/ms), instead of --t1")
    src.add_argument("--t2s", type=Path, metavar="NII", help="T2* map (s or ms, see map units)")
    src.add_argument("--r2s", type=Path, metavar="NII", help="R2* map (1/s or 1/ms), instead of --t2s")
    src.add_argument("--mask", type=Path, metavar="NII", help=mask_help)
    src.add_argument("--time-units", choices=("s", "ms"), default=None,
                     help="units of --t1/--t2s, overriding their sidecars (default: sidecar, else s)")
    src.add_argument("--rate-units", choices=("1/s", "1/ms"), default=None,
                     help="units of --r1/--r2s, overriding their sidecars (default: sidecar, else 1/s)")


def _check_map_arguments(args: argparse.Namespace) -> None:
    """:class:`UsageError` for a contradictory or incomplete choice of maps (nothing read yet)."""
    files = [args.pd, args.t1, args.r1, args.t2s, args.r2s]
    if args.bids is not None:
        if any(f is not None for f in files):
            raise UsageError("give either --bids/--subject or map files (--pd, --t1/--r1, --t2s/--r2s), not both")
        if not args.subject:
            raise UsageError("--bids needs --subject (e.g. --subject sub-01)")
        if args.time_units or args.rate_units or args.mask is not None:
            raise UsageError("--time-units/--rate-units/--mask apply to map files; a BIDS dataset has its "
                             "units in its sidecars and its mask in sub-XX_desc-brain_mask.nii.gz")
        return
    if args.subject:
        raise UsageError("--subject needs --bids")
    if args.pd is None or (args.t1 is None and args.r1 is None) or (args.t2s is None and args.r2s is None):
        raise UsageError("give the maps: --bids ROOT --subject ID, or --pd and --t1/--r1 and --t2s/--r2s")
    if args.t1 is not None and args.r1 is not None:
        raise UsageError("give --t1 or --r1, not both")
    if args.t2s is not None and args.r2s is not None:
        raise UsageError("give --t2s or --r2s, not both")


def subject_label(args: argparse.Namespace) -> str:
    """The id outputs are named after: the BIDS participant, else the PD file's name without .nii[.gz]."""
    from physeg.data.bids import normalise_subject_id  # deferred: physeg.data pulls torch
    from physeg.data.nifti import nifti_stem

    _check_map_arguments(args)
    return normalise_subject_id(args.subject) if args.bids is not None else nifti_stem(args.pd)


def load_maps(args: argparse.Namespace, *, compute_pgs: bool) -> Subject:
    """Read and validate the maps the options name; every problem is a :class:`UsageError`.

    Returns a :class:`physeg.data.bids.Subject` (maps PD a.u., T1 s, T2* s;
    brain mask; PGS labels only with ``compute_pgs``, else zeros).
    """
    # Deferred: physeg.data.bids imports torch, and every command's parser is built at start-up.
    from physeg.data.bids import load_map_files, load_subject

    _check_map_arguments(args)
    with usage_errors():
        if args.bids is not None:
            return load_subject(args.bids, args.subject, compute_pgs=compute_pgs, cache_pgs=False)
        units = {}
        if args.time_units:
            units.update(t1=args.time_units, t2star=args.time_units)
        if args.rate_units:
            units.update(r1=args.rate_units, r2star=args.rate_units)
        return load_map_files(pd=args.pd, t1=args.t1, r1=args.r1, t2star=args.t2s, r2star=args.r2s,
                              mask=args.mask, units=units, subject_id=subject_label(args),
                              compute_pgs=compute_pgs)
