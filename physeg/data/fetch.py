"""Download a dataset listed in the manifest, verify its sha256, install it atomically.

Steps: stream ``url`` (http, https or file) into ``<dest>/.<name>.part-<pid>``
while hashing; compare the sha256 with the manifest; on success rename to
``<dest>/<filename>`` (``os.replace``, atomic on one file system); on any failure
delete the partial file. A manifest entry whose sha256 is null is refused
unless ``allow_unverified=True``.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from physeg.data.manifest import load_manifest


class FetchError(RuntimeError):
    """A dataset could not be fetched or failed verification."""


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
    KeyError     ``name`` is not in the manifest.
    FetchError   no URL, unverified checksum (without ``allow_unverified``),
                 network/offline failure, or checksum mismatch. Never leaves a
                 partial file behind.
    """
    manifest = load_manifest(manifest_path)
    datasets = manifest["datasets"]
    if name not in datasets:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(datasets)}")
    entry: dict[str, Any] = datasets[name]
    url = entry.get("url")
    if not url:
        raise FetchError(f"{name}: the manifest has no download URL ({entry.get('note', 'generated locally')})")
    expected = entry.get("sha256")
    if not expected and not allow_unverified:
        raise FetchError(
            f"{name}: no sha256 recorded in the manifest, so the download cannot be verified; "
            "pass --allow-unverified to install it anyway"
        )
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    filename = entry.get("filename") or Path(urllib.parse.urlparse(url).path).name or name
    target = dest / filename
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
