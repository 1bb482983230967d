"""``physeg data``: build the synthetic cohort, verify it against the manifest, fetch public data.

examples:
  physeg data build --profile smoke          build (or reuse) the smoke cohort, print its folder
  physeg data verify --profile demo          check every file's sha256 against data_manifest.yaml
  physeg data fetch NAME --dest DIR          download a manifest dataset, verify, install atomically
  physeg data list                           datasets known to the manifest
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _profile_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default=None, help="smoke, demo or paper (default: $PHYSEG_PROFILE or demo)")
    parser.add_argument("--root", type=Path, default=None,
                        help="cohort folder (default: <cache>/cohorts/synthetic-v<G>-<voxel>mm-seed<seed>)")


def _build(args: argparse.Namespace) -> int:
    from physeg.data.cohort import build_cohort

    root = build_cohort(args.profile, root=args.root, force=args.force, progress=not args.quiet)
    print(root)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from physeg.data.cohort import default_cohort_dir
    from physeg.data.manifest import verify_build
    from physeg.profiles import get_profile

    prof = get_profile(args.profile)
    root = args.root or default_cohort_dir(voxel_size_mm=prof.voxel_size_mm, seed=prof.seed)
    if not Path(root).is_dir():
        print(f"error: cohort folder {root} does not exist; run `physeg data build --profile {prof.name}`",
              file=sys.stderr)
        return 1
    try:
        problems = verify_build(root, build=args.build or prof.name, manifest_path=args.manifest)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"FAILED: {len(problems)} file(s) differ from the manifest", file=sys.stderr)
        return 1
    print(f"OK: {root} matches the manifest build {args.build or prof.name!r}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from physeg.data.fetch import FetchError, fetch
    from physeg.paths import cache_root

    dest = args.dest or cache_root() / "datasets" / args.name
    try:
        path = fetch(args.name, dest=dest, manifest_path=args.manifest, allow_unverified=args.allow_unverified)
    except (KeyError, FetchError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _record(args: argparse.Namespace) -> int:
    from physeg.data.cohort import build_cohort, cohort_split
    from physeg.data.manifest import record_build
    from physeg.profiles import get_profile

    prof = get_profile(args.profile)
    root = build_cohort(prof, root=args.root, progress=not args.quiet)
    subjects = sorted(s for ids in cohort_split(prof).values() for s in ids)
    entry = record_build(root, build=prof.name, voxel_size_mm=prof.voxel_size_mm, subjects=subjects,
                         manifest_path=args.manifest)
    print(f"recorded {len(entry['files'])} files of {root} as build {prof.name!r}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from physeg.data.manifest import load_manifest

    for name, entry in load_manifest(args.manifest)["datasets"].items():
        sha = "sha256 recorded" if entry.get("sha256") else "no sha256"
        print(f"{name:24s} {entry.get('kind', '?'):9s} {sha:16s} {entry.get('homepage') or entry.get('url') or ''}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data", help="build/verify the synthetic MPM cohort, fetch public datasets",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    b = sub.add_parser("build", help="build (or reuse) the synthetic cohort of a profile")
    _profile_arg(b)
    b.add_argument("--force", action="store_true", help="rebuild even if a complete build exists")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=_build)

    v = sub.add_parser("verify", help="check cohort files against data_manifest.yaml")
    _profile_arg(v)
    v.add_argument("--build", default=None, help="manifest build name (default: the profile name)")
    v.add_argument("--manifest", type=Path, default=None, help="manifest file (default: repository's)")
    v.set_defaults(func=_verify)

    f = sub.add_parser("fetch", help="download a manifest dataset and verify its sha256")
    f.add_argument("name", help="dataset name in the manifest")
    f.add_argument("--dest", type=Path, default=None, help="folder (default: <cache>/datasets/NAME)")
    f.add_argument("--manifest", type=Path, default=None)
    f.add_argument("--allow-unverified", action="store_true",
                   help="install even when the manifest records no sha256")
    f.set_defaults(func=_fetch)

    r = sub.add_parser("record", help="(maintainers) write a build's checksums into the manifest")
    _profile_arg(r)
    r.add_argument("--manifest", type=Path, default=None)
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=_record)

    ls = sub.add_parser("list", help="datasets known to the manifest")
    ls.add_argument("--manifest", type=Path, default=None)
    ls.set_defaults(func=_list)
