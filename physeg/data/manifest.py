"""The data manifest: every dataset physeg knows, with checksums (``data_manifest.yaml``).

The manifest at the repository root lists

* ``synthetic-mpm``: the generated cohort; per build (profile) the relative
  path, size in bytes and sha256 of every file, so a rebuild on another
  machine can be checked byte for byte (:func:`verify_build`);
* public real MPM datasets: URL, licence, size, sha256 and citation, used by
  :mod:`physeg.data.fetch` (a null sha256 means "not verified").
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

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
    """Parsed manifest (``{"version": int, "datasets": {name: entry}}``)."""
    p = Path(path) if path is not None else MANIFEST_PATH
    if not p.is_file():
        raise FileNotFoundError(f"data manifest {p} not found")
    data = yaml.safe_load(p.read_text()) or {}
    if "datasets" not in data:
        raise ValueError(f"{p}: no 'datasets' section")
    return data


def file_table(root: str | Path) -> dict[str, dict[str, Any]]:
    """``{relative posix path: {"sha256", "size"}}`` of every non-hidden file under ``root``."""
    root = Path(root)
    table = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            table[rel.as_posix()] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    return table


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
    try:
        return manifest["datasets"][SYNTHETIC]["builds"][build]
    except KeyError:
        raise KeyError(f"manifest has no synthetic build {build!r}") from None


def verify_build(root: str | Path, *, build: str, manifest_path: str | Path | None = None) -> list[str]:
    """Check a synthetic cohort folder against the manifest's record of ``build``."""
    entry = build_entry(load_manifest(manifest_path), build)
    files = entry.get("files")
    if not files:
        raise ValueError(f"manifest build {build!r} records no checksums ({entry.get('note', '')})")
    return verify_files(root, files)


def record_build(
    root: str | Path, *, build: str, voxel_size_mm: float, subjects: list[str],
    manifest_path: str | Path | None = None,
) -> dict[str, Any]:
    """Write the checksums of a build folder into the manifest (maintainer tool)."""
    import nibabel
    import numpy
    import scipy

    from physeg.data.cohort import GENERATOR_VERSION

    path = Path(manifest_path) if manifest_path is not None else MANIFEST_PATH
    manifest = load_manifest(path)
    synth = manifest["datasets"][SYNTHETIC]
    if int(synth.get("generator_version", -1)) != GENERATOR_VERSION:
        raise ValueError("manifest generator_version differs from the code's GENERATOR_VERSION")
    entry = {
        "voxel_size_mm": voxel_size_mm,
        "subjects": subjects,
        "recorded_with": {"numpy": numpy.__version__, "scipy": scipy.__version__,
                          "nibabel": nibabel.__version__},
        "files": file_table(root),
    }
    synth.setdefault("builds", {})[build] = entry
    path.write_text(yaml.safe_dump(manifest, sort_keys=False, width=100))
    return entry
