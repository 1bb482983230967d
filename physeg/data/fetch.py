"""Download a dataset listed in the manifest, verify its sha256, install it atomically.

Steps: stream ``url`` (http, https or file) into ``<dest>/.<name>.part-<pid>``
while hashing; compare the sha256 with the manifest; on success rename to
``<dest>/<filename>`` (``os.replace``, atomic on one file system); on any failure
delete the partial file. Refused before anything is downloaded or created
(:class:`FetchRefused`): an entry without URL, a null sha256 (unless
``allow_unverified=True``), a ``filename`` that is not a plain file name
(``..``, folders or an absolute path could write outside ``dest``), a ``dest``
that is a file.
"""

from __future__ import annotations

import hashlib
import os
from glob import escape as glob_escape
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from physeg.data.manifest import load_manifest, safe_relative_path, sha256_file


class FetchError(RuntimeError):
    """A dataset could not be fetched or failed verification."""


class FetchRefused(FetchError):
    """The request cannot be honoured as given (no URL, unverifiable, unsafe name); nothing was touched."""


def fetch(
    name: str,
    *,
    dest: str | Path,
    manifest_path: str | Path | None = None,
    allow_unverified: bool = False,
    timeout_s: float = 60.0,
) -> Path:
    """Fetch manifest dataset ``name`` into folder ``dest``; returns the installed file.

    Raises
    ------
    KeyError       ``name`` is not in the manifest.
    FetchRefused   no URL, unverified checksum (without ``allow_unverified``),
                   unsafe file name, ``dest`` is a file; nothing created.
    FetchError     network/offline failure, checksum or size mismatch. Never
                   leaves a partial file behind.
    """
    manifest = load_manifest(manifest_path)
    datasets = manifest["datasets"]
    if name not in datasets:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(datasets)}")
    entry: dict[str, Any] = datasets[name]
    url = entry.get("url")
    if not url:
        raise FetchRefused(f"{name}: the manifest has no download URL ({entry.get('note', 'generated locally')})")
    expected = entry.get("sha256")
    if not expected and not allow_unverified:
        raise FetchRefused(
            f"{name}: no sha256 recorded in the manifest, so the download cannot be verified; "
            "pass --allow-unverified to install it anyway"
        )
    filename = entry.get("filename") or Path(urllib.parse.urlparse(url).path).name or name
    try:
        safe_relative_path(filename, what=f"{name}: manifest filename", single=True)
    except ValueError as exc:
        raise FetchRefused(str(exc)) from None
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise FetchRefused(f"{name}: destination {dest} exists and is not a folder")
    target = dest / filename
    if target.exists() or target.is_symlink():
        if expected and target.is_file() and sha256_file(target) == expected:
            return target  # already installed and verified
        raise FetchRefused(f"{name}: {target} exists and is not the verified download; move it away first")
    dest.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(dest, filename)
    part = dest / f".{filename}.part-{os.getpid()}"
    h = hashlib.sha256()
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response, open(part, "wb") as out:
                while block := response.read(1 << 20):
                    h.update(block)
                    out.write(block)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise FetchError(f"{name}: could not download {url} ({exc}); are you offline?") from exc
        digest = h.hexdigest()
        if expected and digest != expected:
            raise FetchError(f"{name}: sha256 mismatch for {url}: got {digest}, manifest {expected}")
        size = entry.get("size")
        if size is not None and part.stat().st_size != int(size):
            raise FetchError(f"{name}: size {part.stat().st_size} bytes, manifest {size}")
        os.replace(part, target)
    finally:
        if part.exists():
            part.unlink()
    return target


def _remove_stale_parts(dest: Path, filename: str) -> None:
    """Delete partial downloads of ``filename`` left by fetches that were killed (their process is gone).

    Only files named ``.<filename>.part-<pid>`` -- the names this module
    writes -- whose process no longer exists are removed.
    """
    prefix = f".{filename}.part-"
    for part in dest.glob(f"{glob_escape(prefix)}*"):
        pid = part.name[len(prefix):]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)) and part.is_file():
            part.unlink()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0 checks without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
