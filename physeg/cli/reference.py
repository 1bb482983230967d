"""``physeg reference``: freeze a finished run into ``results/<profile>/``, check it, ship its model weights."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from physeg.cli.errors import RuntimeFailure, UsageError, run_cli, usage_errors

EPILOG = """\
examples:
  make paper PROFILE=reference                      the run (notebooks + site), resumable from the cache
  physeg reference freeze --profile reference       copy its tables, per-image metrics, claims and
                                                    uncertainty summaries into results/reference/
                                                    with provenance.json and SHA256SUMS
  physeg reference freeze --profile smoke --build /tmp/b --cache /tmp/c --dest /tmp/results
  physeg reference check --profile reference        checksums, then staleness against the code
  physeg reference ship --from ~/.cache/physeg/models/reference/Phys-Strat-Aug-Epistemic_MPRAGE_seed0_<hash> \\
      --calibration results/reference/calibration/Phys-Strat-Aug-Epistemic_MPRAGE.json

`ship` copies plans.json, best.pt, finished.json, metrics.csv (and calibration.json) into
physeg/weights/<sequence>/<model>/ (or $PHYSEG_WEIGHTS) and records their sha256 in
data_manifest.yaml (or $PHYSEG_WEIGHTS_MANIFEST); `physeg segment` without --model uses them.

safety: freeze and ship validate everything before writing and replace an existing folder only
  with --force and only when physeg wrote it (listed in SHA256SUMS / the manifest).
exit codes: 0 ok (check: intact and current), 2 usage error (unfinished run, existing folder,
  unknown profile), 1 failure (check: altered or stale).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reference", help="freeze, check and ship reference results and weights",
        description="Committed reference results (results/<profile>/) and shipped model weights.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="reference_command", metavar="ACTION", required=True)
    freeze = sub.add_parser("freeze", help="copy a finished run's results into results/<profile>/")
    freeze.add_argument("--profile", required=True, help="profile of the finished run (e.g. reference)")
    freeze.add_argument("--build", type=Path, default=None, help="the run's build folder (default $PHYSEG_BUILD or _build)")
    freeze.add_argument("--cache", type=Path, default=None, help="the run's cache (default $PHYSEG_CACHE or ~/.cache/physeg)")
    freeze.add_argument("--dest", type=Path, default=None, help="results root (default: results/ of this checkout)")
    freeze.add_argument("--force", action="store_true", help="replace a folder an earlier freeze wrote")
    freeze.add_argument("--training-note", default=None, metavar="TEXT",
                        help="where and how the models were trained, when not by the run itself (e.g. on a GPU)")
    freeze.set_defaults(func=_run_freeze)
    check = sub.add_parser("check", help="checksums and staleness of results/<profile>/")
    check.add_argument("--profile", required=True)
    check.add_argument("--dest", type=Path, default=None, help="results root (default: results/ of this checkout)")
    check.set_defaults(func=_run_check)
    ship = sub.add_parser("ship", help="copy trained model folders into the shipped weights")
    ship.add_argument("--from", dest="folders", type=Path, nargs="+", required=True, metavar="FOLDER")
    ship.add_argument("--calibration", type=Path, default=None, help="calibration.json for the (single) folder")
    ship.add_argument("--force", action="store_true", help="replace a shipped model of the same sequence and name")
    ship.set_defaults(func=_run_ship)


@contextlib.contextmanager
def _cache_env(cache: Path | None) -> Iterator[None]:
    """Point ``PHYSEG_CACHE`` at ``--cache`` while the library reads the run's cache (the edge sets it)."""
    if cache is None:
        yield
        return
    if not cache.is_dir():
        raise UsageError(f"--cache {cache} is not a folder")
    old = os.environ.get("PHYSEG_CACHE")
    os.environ["PHYSEG_CACHE"] = str(cache)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PHYSEG_CACHE", None)
        else:
            os.environ["PHYSEG_CACHE"] = old


def _profile(name: str):
    from physeg.profiles import get_profile

    with usage_errors(ValueError):
        return get_profile(name)


def _run_freeze(args: argparse.Namespace) -> int:
    from physeg.paths import build_root
    from physeg.reference import freeze, records

    def work() -> None:
        prof = _profile(args.profile)
        build = args.build if args.build is not None else build_root()
        if not build.is_dir():
            raise UsageError(f"--build {build} is not a folder")
        with _cache_env(args.cache), usage_errors(freeze.FreezeError):
            inputs = freeze.gather(prof, build_dir=build)
            dest = freeze.freeze(prof, inputs=inputs, dest_root=args.dest or records.RESULTS_ROOT, force=args.force,
                                 training_note=args.training_note)
        print(f"froze profile {prof.name!r} into {dest} ({len(records.read_sums(dest))} files, {records.SUMS_FILE})")

    return run_cli("reference freeze", work)


def _run_check(args: argparse.Namespace) -> int:
    from physeg.profiles import PROFILES
    from physeg.reference import records, status

    def work() -> None:
        folder = (args.dest or records.RESULTS_ROOT) / args.profile
        if not folder.is_dir():
            raise UsageError(f"no reference results at {folder}")
        try:
            prof = PROFILES.get(args.profile)
            st = status.check_reference(folder, profile=prof, versions=records.code_versions(prof))
        except status.ReferenceAltered as exc:
            raise RuntimeFailure(str(exc)) from None
        except FileNotFoundError as exc:
            raise RuntimeFailure(f"{exc}: {folder} was not written by physeg reference freeze") from None
        if st.state == status.STALE:
            raise RuntimeFailure(f"{folder} is stale: " + "; ".join(st.reasons))
        print(f"OK: {folder} matches its {records.SUMS_FILE} and the current profile and code versions")

    return run_cli("reference check", work)


def _run_ship(args: argparse.Namespace) -> int:
    from physeg.inference import shipped

    def work() -> None:
        if args.calibration is not None and len(args.folders) != 1:
            raise UsageError("--calibration goes with a single --from FOLDER")
        for folder in args.folders:
            if not folder.is_dir():
                raise UsageError(f"--from {folder} is not a folder")
        for folder in args.folders:
            with usage_errors(ValueError):
                model = shipped.ship_model(folder, calibration=args.calibration, force=args.force,
                                           **shipped.locations_from_env())
            size = sum(f["size"] for f in model.record["files"].values())
            print(f"shipped {model.key} -> {model.folder} ({size / 1e6:.2f} MB)")

    return run_cli("reference ship", work)
