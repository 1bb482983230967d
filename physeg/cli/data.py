"""``physeg data``: build the synthetic cohort, verify it against the manifest, fetch public data."""

from __future__ import annotations

import argparse
from pathlib import Path

from physeg.cli.errors import RuntimeFailure, UsageError, run_cli, usage_errors
from physeg.paths import cache_root
from physeg.profiles import PROFILES, Profile, get_profile

EPILOG = """\
examples:
  physeg data build --profile smoke          build (or reuse) the smoke cohort, print its folder
  physeg data build --profile paper --workers 8
                                             the 1 mm cohort, 8 subjects at a time
  physeg data build --profile demo --root ~/cohorts/demo
                                             build into a folder of your choice (absent or empty)
  physeg data verify --profile demo          check every file's sha256 against data_manifest.yaml
  physeg data fetch NAME --dest DIR          download a manifest dataset, verify, install atomically
  physeg data list                           datasets known to the manifest

safety: `build` replaces only a folder physeg built (it carries .physeg-complete.json); an
  existing folder without it is refused, never deleted. A reused build is checked against the
  record of its files (.physeg-files.json: size and mtime; every sha256 with --verify); one
  process at a time builds a folder (the second waits). `fetch` refuses manifest file names
  with folders, '..' or absolute paths, and never leaves a partial file.
exit codes: 0 ok, 2 usage error (profile, folder, manifest, dataset name), 1 failure
  (files differ from the manifest, download failed or did not verify).
"""


def _profile_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default=None,
                        help=f"one of {', '.join(sorted(PROFILES))} (default: $PHYSEG_PROFILE or demo)")
    parser.add_argument("--root", type=Path, default=None,
                        help="cohort folder (default: <cache>/cohorts/synthetic-v<G>-<voxel>mm-seed<seed>)")


def _profile(args: argparse.Namespace) -> Profile:
    with usage_errors(ValueError):
        return get_profile(args.profile)


# Imports of physeg.data.* are deferred into the actions below: the package's __init__ loads
# the BIDS loader and the cohort generator (torch, scipy), and this parser is built for every command.


def _cohort_root(args: argparse.Namespace, prof: Profile) -> Path:
    """``--root``, else the profile's default folder; refused when it holds something physeg did not build."""
    from physeg.data.cohort import check_cohort_root, default_cohort_dir

    root = args.root or default_cohort_dir(voxel_size_mm=prof.voxel_size_mm, seed=prof.seed,
                                           generator_version=prof.cohort_generator)
    with usage_errors(FileExistsError):
        check_cohort_root(root)
    return root


def _build(args: argparse.Namespace) -> None:
    from physeg.data.cohort import build_cohort

    prof = _profile(args)
    root = _cohort_root(args, prof)
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    print(build_cohort(prof, root=root, force=args.force, progress=not args.quiet, verify_full=args.verify,
                       workers=args.workers))


def _verify(args: argparse.Namespace) -> None:
    from physeg.data.cohort import default_cohort_dir
    from physeg.data.manifest import verify_build

    prof = _profile(args)
    root = args.root or default_cohort_dir(voxel_size_mm=prof.voxel_size_mm, seed=prof.seed,
                                           generator_version=prof.cohort_generator)
    if not Path(root).is_dir():
        what = "is not a folder" if Path(root).exists() else "does not exist"
        raise UsageError(f"cohort folder {root} {what}; run `physeg data build --profile {prof.name}`")
    build = args.build or prof.name
    with usage_errors():
        problems = verify_build(root, build=build, manifest_path=args.manifest)
    if problems:
        print("\n".join(problems))  # the full list on stdout; the summary is the error line
        raise RuntimeFailure(f"{len(problems)} file(s) of {root} differ from the manifest build {build!r}; "
                             f"first: {problems[0]}")
    print(f"OK: {root} matches the manifest build {build!r}")


def _fetch(args: argparse.Namespace) -> None:
    from physeg.data.fetch import FetchError, FetchRefused, fetch
    from physeg.data.manifest import load_manifest

    dest = args.dest or cache_root() / "datasets" / args.name
    try:
        with usage_errors(FileNotFoundError, ValueError, KeyError, FetchRefused):
            load_manifest(args.manifest)  # a malformed manifest is the user's input, not a download failure
            path = fetch(args.name, dest=dest, manifest_path=args.manifest,
                         allow_unverified=args.allow_unverified)
    except FetchError as exc:  # the download itself failed or did not verify
        raise RuntimeFailure(str(exc)) from exc
    print(path)


def _record(args: argparse.Namespace) -> None:
    from physeg.data.cohort import build_cohort, cohort_split
    from physeg.data.manifest import load_manifest, record_build

    prof = _profile(args)
    with usage_errors():
        load_manifest(args.manifest)
    root = build_cohort(prof, root=_cohort_root(args, prof), progress=not args.quiet)
    subjects = sorted({s for ids in cohort_split(prof).values() for s in ids})
    entry = record_build(root, build=prof.name, voxel_size_mm=prof.voxel_size_mm, subjects=subjects,
                         generator_version=prof.cohort_generator, manifest_path=args.manifest)
    print(f"recorded {len(entry['files'])} files of {root} as build {prof.name!r}")


def _list(args: argparse.Namespace) -> None:
    from physeg.data.manifest import load_manifest

    with usage_errors():
        datasets = load_manifest(args.manifest)["datasets"]
    for name, entry in datasets.items():
        sha = "sha256 recorded" if entry.get("sha256") else "no sha256"
        print(f"{name:24s} {entry.get('kind', '?'):9s} {sha:16s} {entry.get('homepage') or entry.get('url') or ''}")


def _command(action, name: str):
    """``func`` for argparse: run ``action(args)`` under the one error convention as ``physeg data NAME``."""
    return lambda args: run_cli(f"data {name}", lambda: action(args))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data", help="build/verify the synthetic MPM cohort, fetch public datasets",
        description="Build the synthetic MPM cohort, verify it against data_manifest.yaml, fetch public datasets.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    shared = {"epilog": EPILOG, "formatter_class": argparse.RawDescriptionHelpFormatter}

    b = sub.add_parser("build", help="build (or reuse) the synthetic cohort of a profile", **shared)
    _profile_arg(b)
    b.add_argument("--force", action="store_true", help="rebuild even if a complete physeg build exists there")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.add_argument("--workers", type=int, default=1,
                   help="subjects generated side by side, one process each (same files whatever the number)")
    b.add_argument("--verify", action="store_true",
                   help="when reusing a build, hash every file (default: size and mtime, hashing only changed ones)")
    b.set_defaults(func=_command(_build, "build"))

    v = sub.add_parser("verify", help="check cohort files against data_manifest.yaml", **shared)
    _profile_arg(v)
    v.add_argument("--build", default=None, help="manifest build name (default: the profile name)")
    v.add_argument("--manifest", type=Path, default=None, help="manifest file (default: repository's)")
    v.set_defaults(func=_command(_verify, "verify"))

    f = sub.add_parser("fetch", help="download a manifest dataset and verify its sha256", **shared)
    f.add_argument("name", help="dataset name in the manifest")
    f.add_argument("--dest", type=Path, default=None, help="folder (default: <cache>/datasets/NAME)")
    f.add_argument("--manifest", type=Path, default=None)
    f.add_argument("--allow-unverified", action="store_true",
                   help="install even when the manifest records no sha256")
    f.set_defaults(func=_command(_fetch, "fetch"))

    r = sub.add_parser("record", help="(maintainers) write a build's checksums into the manifest", **shared)
    _profile_arg(r)
    r.add_argument("--manifest", type=Path, default=None)
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=_command(_record, "record"))

    ls = sub.add_parser("list", help="datasets known to the manifest", **shared)
    ls.add_argument("--manifest", type=Path, default=None)
    ls.set_defaults(func=_command(_list, "list"))
