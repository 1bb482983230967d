"""The data manifest: every dataset physeg knows, with checksums (``data_manifest.yaml``).

The manifest at the repository root lists

* ``synthetic-mpm``: the generated cohort; per build (profile) the relative
  path, size in bytes and sha256 of every file, so a rebuild on another
  machine can be checked byte for byte (:func:`verify_build`);
* public real MPM datasets: URL, licence, size, sha256 and citation, used by
  :mod:`physeg.data.fetch` (a null sha256 means "not verified").

A manifest is data from outside the program: :func:`load_manifest` refuses
invalid YAML and a wrong structure with a ``ValueError`` naming the file, and
every path it names is checked (:func:`safe_relative_path`) before it is
joined to a folder, so a manifest can never make physeg read or write outside
that folder.
"""

from __future__ import annotations

import hashlib
from importlib.metadata import version
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import yaml

from physeg.io_safety import atomic_write_text
from physeg.paths import REPO_ROOT

#: Default manifest location (repository root).
MANIFEST_PATH: Path = REPO_ROOT / "data_manifest.yaml"
#: Name of the synthetic cohort's entry.
SYNTHETIC: str = "synthetic-mpm"


def sha256_file(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def load_manifest(path: str | Path | None = None) -> dict[str, Any]:
    """Parsed manifest (``{"version": int, "datasets": {name: entry}}``).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming
    the file for invalid YAML or a wrong structure (``datasets`` must map names
    to mappings).
    """
    p = Path(path) if path is not None else MANIFEST_PATH
    if not p.is_file():
        raise FileNotFoundError(f"data manifest {p} not found")
    try:
        data = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = " ".join(str(exc).split())
        raise ValueError(f"{p}: not a valid YAML manifest ({first})") from None
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), dict):
        raise ValueError(f"{p}: a manifest is a mapping with a 'datasets' mapping (name: entry)")
    bad = [name for name, entry in data["datasets"].items() if not isinstance(entry, dict)]
    if bad:
        raise ValueError(f"{p}: dataset {bad[0]!r} is not a mapping of fields")
    return data


def safe_relative_path(name: Any, *, what: str, single: bool = False) -> PurePosixPath:
    """``name`` as a relative POSIX path that stays inside its folder, else ``ValueError``.

    Refused: a non-string or empty name, an absolute path (POSIX or Windows,
    with or without a drive), any ``..`` component, backslashes; with
    ``single=True`` also any folder part (a plain file name is required).
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what}: expected a file name, got {name!r}")
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or "\\" in name:
        raise ValueError(f"{what}: {name!r} is an absolute path; the manifest may only name paths inside "
                         "the destination folder")
    if ".." in posix.parts:
        raise ValueError(f"{what}: {name!r} leaves the destination folder ('..')")
    if single and (len(posix.parts) != 1 or posix.name != name):
        raise ValueError(f"{what}: {name!r} is not a plain file name (no folders)")
    return posix


def file_table(root: str | Path) -> dict[str, dict[str, Any]]:
    """``{relative posix path: {"sha256", "size"}}`` of every non-hidden file under ``root``."""
    root = Path(root)
    table = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            table[rel.as_posix()] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    return table


#: A cohort build's record of its own files (hidden, so not part of :func:`file_table`).
FILE_RECORD: str = ".physeg-files.json"


def write_file_record(root: str | Path) -> Path:
    """Record size, mtime (ns) and sha256 of every non-hidden file of a finished build in ``root/FILE_RECORD``."""
    import json

    from physeg.io_safety import atomic_write_text

    root = Path(root)
    table = file_table(root)
    for rel, entry in table.items():
        entry["mtime_ns"] = (root / rel).stat().st_mtime_ns
    return atomic_write_text(root / FILE_RECORD, json.dumps({"files": table}, indent=1, sort_keys=True) + "\n")


def check_file_record(root: str | Path, *, full: bool = False) -> list[str]:
    """Problems of a build against its own :data:`FILE_RECORD` (empty: unchanged; no record: nothing to check).

    Fast path (``full=False``): a file whose size and mtime match the record is
    taken as unchanged; any other is hashed. ``full=True`` hashes every file.
    Each problem names the file (see :func:`verify_files`).
    """
    import json

    root = Path(root)
    path = root / FILE_RECORD
    if not path.is_file():
        return []
    try:
        files = json.loads(path.read_text())["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"unreadable record: {path} ({exc.__class__.__name__}: {exc})"]
    suspect = {}
    for rel, want in files.items():
        p = root / safe_relative_path(rel, what=f"{path} entry")
        st = p.stat() if p.is_file() else None
        if full or st is None or st.st_size != want.get("size") or st.st_mtime_ns != want.get("mtime_ns"):
            suspect[rel] = want
    return verify_files(root, suspect)


def verify_files(root: str | Path, expected: dict[str, dict[str, Any]]) -> list[str]:
    """Problems of ``root`` against ``expected`` (empty list: all good).

    Each problem names the file: ``missing``, ``size`` or ``sha256`` mismatch.
    Extra files are not problems (a build may hold more subjects than recorded).
    """
    root = Path(root)
    problems = []
    for rel, want in sorted(expected.items()):
        p = root / rel
        if not p.is_file():
            problems.append(f"missing: {p}")
            continue
        size = p.stat().st_size
        if want.get("size") is not None and size != int(want["size"]):
            problems.append(f"size mismatch: {p} ({size} bytes, manifest {want['size']})")
            continue
        digest = sha256_file(p)
        if digest != want.get("sha256"):
            problems.append(f"sha256 mismatch: {p} ({digest}, manifest {want.get('sha256')})")
    return problems


def build_entry(manifest: dict[str, Any], build: str) -> dict[str, Any]:
    """The ``synthetic-mpm`` build record named ``build`` (a profile name)."""
    builds = manifest["datasets"].get(SYNTHETIC, {}).get("builds")
    if not isinstance(builds, dict) or build not in builds:
        known = sorted(builds) if isinstance(builds, dict) else []
        raise KeyError(f"manifest has no synthetic build {build!r}; recorded builds: {known}")
    if not isinstance(builds[build], dict):
        raise ValueError(f"manifest build {build!r} is not a mapping of fields")
    return builds[build]


def _checked_files(files: Any, build: str) -> dict[str, dict[str, Any]]:
    """The ``files`` table of a build, every path inside the cohort folder and every record well-formed."""
    if not isinstance(files, dict):
        raise ValueError(f"manifest build {build!r}: 'files' must map relative paths to {{sha256, size}}")
    for rel, want in files.items():
        safe_relative_path(rel, what=f"manifest build {build!r}")
        if not isinstance(want, dict) or not isinstance(want.get("sha256"), str):
            raise ValueError(f"manifest build {build!r}, file {rel}: expected {{sha256: <hex>, size: <bytes>}}")
        if want.get("size") is not None and (isinstance(want["size"], bool) or not isinstance(want["size"], int)):
            raise ValueError(f"manifest build {build!r}, file {rel}: size must be a whole number of bytes")
    return files


def verify_build(root: str | Path, *, build: str, manifest_path: str | Path | None = None) -> list[str]:
    """Check a synthetic cohort folder against the manifest's record of ``build``.

    Raises ``KeyError`` for an unknown build and ``ValueError`` for a malformed
    record; returns the problems of :func:`verify_files` (empty: all good).
    """
    entry = build_entry(load_manifest(manifest_path), build)
    files = entry.get("files")
    if not files:
        raise ValueError(f"manifest build {build!r} records no checksums ({entry.get('note', '')})")
    return verify_files(root, _checked_files(files, build))


def record_build(
    root: str | Path, *, build: str, voxel_size_mm: float, subjects: list[str],
    generator_version: int, manifest_path: str | Path | None = None,
) -> dict[str, Any]:
    """Write the checksums of a build folder into the manifest (maintainer tool).

    ``generator_version`` is the profile's :attr:`~physeg.profiles.Profile.cohort_generator`
    (passed in: importing the generator here would pull scipy and torch into
    every manifest reader); it must be one of the manifest's ``generator_versions``
    and is recorded with the build. The manifest is written to a temporary name and renamed.
    """
    path = Path(manifest_path) if manifest_path is not None else MANIFEST_PATH
    manifest = load_manifest(path)
    synth = manifest["datasets"].get(SYNTHETIC)
    if not isinstance(synth, dict) or generator_version not in synth.get("generator_versions", []):
        raise ValueError(f"{path}: {SYNTHETIC} generator_versions do not list the profile's {generator_version}")
    entry = {
        "generator_version": generator_version,
        "voxel_size_mm": voxel_size_mm,
        "subjects": subjects,
        "recorded_with": {lib: version(lib) for lib in ("numpy", "scipy", "nibabel")},
        "files": file_table(root),
    }
    synth.setdefault("builds", {})[build] = entry
    atomic_write_text(path, yaml.safe_dump(manifest, sort_keys=False, width=100))
    return entry
