"""physeg.io_safety: atomic writes, integrity records, folder locks."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from physeg import io_safety as io


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    io.atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_written_files_get_the_usual_mode_not_mkstemps_0600(tmp_path):
    import os
    import stat

    target = io.atomic_write_text(tmp_path / "v.json", "{}")
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    assert stat.S_IMODE(os.stat(target).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path):
    target = tmp_path / "w.pt"
    target.write_bytes(b"old")

    def boom(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        io.atomic_write(target, boom)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pt"]


def test_temp_names_are_unique_and_keep_the_extension(tmp_path):
    seen = []
    for _ in range(2):
        with io.atomic_path(tmp_path / "x.nii.gz") as tmp:
            seen.append(tmp.name)
            assert tmp.name.endswith(".nii.gz") and tmp.name.startswith(".x.nii.gz.")
            tmp.write_bytes(b"1")
    assert seen[0] != seen[1]


def _writer(path: str, byte: bytes, n: int) -> None:
    for _ in range(n):
        io.atomic_write_bytes(path, byte * 100_000)


def test_two_processes_writing_one_file_never_mix(tmp_path):
    target = tmp_path / "last.pt"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(target), b, 20)) for b in (b"a", b"b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    data = target.read_bytes()
    assert data in (b"a" * 100_000, b"b" * 100_000)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_integrity_detects_tampering_and_truncation(tmp_path):
    (tmp_path / "best.pt").write_bytes(b"weights" * 10)
    io.write_integrity(tmp_path, ["best.pt", "absent.json"])
    record = io.read_integrity(tmp_path)
    assert set(record) == {"best.pt"}
    io.verify_file(tmp_path, "best.pt", record=record)
    (tmp_path / "best.pt").write_bytes(b"weightz" * 10)
    with pytest.raises(io.IntegrityError, match="best.pt differs from the sha256"):
        io.verify_file(tmp_path, "best.pt", record=record)
    (tmp_path / "best.pt").write_bytes(b"w")
    with pytest.raises(io.IntegrityError, match="best.pt has 1 bytes"):
        io.verify_file(tmp_path, "best.pt", record=record)


def _hold(folder: str, cache: str, ready, release) -> None:
    import os

    os.environ["PHYSEG_CACHE"] = cache
    with io.folder_lock(folder):
        ready.set()
        release.wait(30)


def test_second_process_is_told_another_run_holds_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("PHYSEG_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "model"
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold, args=(str(folder), str(tmp_path / "cache"), ready, release))
    p.start()
    try:
        assert ready.wait(60)
        with pytest.raises(io.LockBusy, match="another physeg run holds the folder"):
            with io.folder_lock(folder, timeout_s=0.2):
                pass
    finally:
        release.set()
        p.join(30)
    with io.folder_lock(folder, timeout_s=5):  # released: the next run gets it
        pass
    assert not folder.exists()  # the lock lives in the cache, not in or beside the folder
