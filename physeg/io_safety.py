"""Safe writes, integrity records and folder locks: the one place physeg writes a file.

Atomic writes
-------------
Every file physeg writes goes through :func:`atomic_path`: the content is
written to a temporary file in the destination's folder (same file system),
flushed to disk (``fsync``) and renamed onto the destination with
:func:`os.replace`, which is atomic on POSIX. A reader sees the old file or the
new one, never half of one; a crash leaves at most a hidden temporary file
``.<name>.<random>.tmp[<ext>]``. The temporary name comes from
:func:`tempfile.mkstemp` (created exclusively, ``O_EXCL``), so two processes or
threads writing the same destination never share a temporary file: the last
rename wins and both renames are whole files.

Integrity
---------
:func:`sha256_file` hashes a file in 1 MiB blocks; :func:`write_integrity`
records ``{name: {sha256, size}}`` of the files of a folder in
``integrity.json`` (written at training time) and :func:`verify_integrity`
recomputes them at load. A mismatch is an :class:`IntegrityError` (a
``ValueError``) naming the file, so a tampered or truncated weights file is
never used as if intact.

Locks
-----
:func:`folder_lock` holds an exclusive :mod:`filelock` lock
in physeg's cache (:func:`lock_path`) for a model or cohort folder, so
neither the folder's listing (and hashes) nor the user's files change. A second process waits up to
``timeout_s`` seconds and then fails with :class:`LockBusy` saying that another
run holds the folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import logging
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: File holding the sha256 and size of a folder's files (model folders).
INTEGRITY_FILE = "integrity.json"
#: Bytes read per block when hashing.
HASH_BLOCK = 1 << 20


class IntegrityError(ValueError):
    """A file differs from the hash recorded when physeg wrote it (or is missing)."""


class LockBusy(RuntimeError):
    """Another process holds the lock of a folder longer than the caller waits."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Mode of every file physeg writes: what ``open()`` would give (0o666 less the umask at import);
#: ``mkstemp`` alone would leave 0o600, readable by the owner only.
FILE_MODE: int = 0o666 & ~_umask()


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entry table (the rename) to disk; best effort where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_suffix(path: Path) -> str:
    """The extension a temporary file must keep for writers that pick the format from the name."""
    name = path.name
    for ext in (".nii.gz", ".nii", ".csv", ".json", ".tsv", ".npz", ".pt"):
        if name.endswith(ext):
            return ext
    return ""


@contextmanager
def atomic_path(path: str | Path, *, keep_suffix: bool = True) -> Iterator[Path]:
    """Yield a unique temporary path beside ``path``; on success fsync it and rename it onto ``path``.

    ``keep_suffix`` keeps the destination's extension on the temporary name
    (nibabel and pandas choose the format from it). On an exception the
    temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = temp_suffix(path) if keep_suffix else ""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{ext}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write(path: str | Path, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp)`` to write the content, then rename ``tmp`` onto ``path`` (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, content: Any, *, indent: int = 2, sort_keys: bool = False) -> Path:
    """JSON with a final newline, written atomically."""
    return atomic_write_text(path, json.dumps(content, indent=indent, sort_keys=sort_keys, default=str) + "\n")


# --------------------------------------------------------------------------- integrity
def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def write_integrity(folder: str | Path, names: Iterable[str]) -> Path:
    """Record sha256 and size of ``folder/<name>`` for each existing name in ``folder/integrity.json``."""
    folder = Path(folder)
    table = {n: {"sha256": sha256_file(folder / n), "size": (folder / n).stat().st_size}
             for n in sorted(set(names)) if (folder / n).is_file()}
    return atomic_write_json(folder / INTEGRITY_FILE, {"files": table})


def add_to_integrity(folder: str | Path, name: str) -> None:
    """Add (or refresh) ``folder/name`` in an existing ``integrity.json``; no record, nothing to do."""
    folder = Path(folder)
    record = read_integrity(folder)
    if record is not None:
        write_integrity(folder, [*record, name])


def read_integrity(folder: str | Path) -> dict[str, dict[str, Any]] | None:
    """The recorded ``{name: {sha256, size}}`` of a folder, ``None`` when it has no record."""
    path = Path(folder) / INTEGRITY_FILE
    if not path.is_file():
        return None
    try:
        files = json.loads(path.read_text())["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not a mapping")
        return files
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"unreadable integrity record {path} ({exc.__class__.__name__}: {exc})") from None


def verify_file(folder: str | Path, name: str, *, record: dict[str, dict[str, Any]] | None) -> None:
    """:class:`IntegrityError` naming ``folder/name`` when it differs from ``record`` (no record: no check)."""
    if record is None or name not in record:
        return
    path = Path(folder) / name
    want = record[name]
    if not path.is_file():
        raise IntegrityError(f"{path} is missing (recorded at training time)")
    size = path.stat().st_size
    if size != int(want.get("size", -1)):
        raise IntegrityError(f"{path} has {size} bytes, {want.get('size')} were recorded: the file was "
                             "altered or truncated; retrain or restore it")
    if sha256_file(path) != want.get("sha256"):
        raise IntegrityError(f"{path} differs from the sha256 recorded at training time: the file was "
                             "altered; retrain or restore it")


# --------------------------------------------------------------------------- locks
def lock_path(folder: str | Path) -> Path:
    """``$PHYSEG_CACHE/locks/<name>-<sha256 of the absolute path>.lock``.

    Locks live in physeg's cache, never in or beside the user's folder, so
    locking changes no file the user owns.
    """
    from physeg.paths import cache_root

    folder = Path(folder).absolute()
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    return cache_root() / "locks" / f"{folder.name[:40]}-{digest}.lock"


@contextmanager
def folder_lock(folder: str | Path, *, timeout_s: float = -1, what: str = "folder") -> Iterator[None]:
    """Hold the exclusive lock of ``folder`` (:func:`lock_path`).

    ``timeout_s < 0`` waits for ever (after a warning saying which run it
    waits for); otherwise :class:`LockBusy` after ``timeout_s`` seconds, naming
    the folder. Reentrant within a process.
    """
    from filelock import FileLock, Timeout

    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), is_singleton=True, thread_local=False)
    try:
        try:
            lock.acquire(timeout=0 if timeout_s < 0 else timeout_s)
        except Timeout:
            if timeout_s >= 0:
                raise
            log.warning("another physeg run holds the %s %s; waiting for it (lock %s)", what, folder, path)
            lock.acquire()
    except Timeout:
        raise LockBusy(f"another physeg run holds the {what} {folder} (lock {path}); wait for it to finish "
                       "or remove the lock file if no run is active") from None
    try:
        yield
    finally:
        lock.release()
