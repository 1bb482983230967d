"""Manifest verification and checked downloads (file:// and a local http server, never the internet)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import socket
import threading

import pytest
import yaml

from physeg.cli import main
from physeg.data.fetch import FetchError, FetchRefused, fetch
from physeg.data.cohort import GENERATOR_VERSIONS
from physeg.data.manifest import MANIFEST_PATH, file_table, load_manifest, verify_build, verify_files
from physeg.profiles import get_profile

PAYLOAD = b"pretend this is an MPM archive\n" * 100


def _tree(root):
    (root / "sub-01" / "anat").mkdir(parents=True)
    (root / "sub-01" / "anat" / "a.nii.gz").write_bytes(b"abc")
    (root / "dataset_description.json").write_text("{}\n")
    return root


def _manifest(path, *, url=None, sha=None, size=None, files=None, filename="toy.bin"):
    doc = {"version": 1, "datasets": {
        "synthetic-mpm": {"kind": "synthetic", "generator_versions": [1, 2], "builds": {"smoke": {"files": files or {}}}},
        "toy": {"kind": "real", "url": url, "sha256": sha, "size": size, "filename": filename},
    }}
    path.write_text(yaml.safe_dump(doc))
    return path


def test_repository_manifest_is_well_formed():
    m = load_manifest(MANIFEST_PATH)
    synth = m["datasets"]["synthetic-mpm"]
    assert synth["generator_versions"] == list(GENERATOR_VERSIONS)
    for build in ("smoke", "demo"):
        assert synth["builds"][build]["generator_version"] == get_profile(build).cohort_generator
        files = synth["builds"][build]["files"]
        assert any(k.endswith("_R1map.nii.gz") for k in files)
        assert all(len(v["sha256"]) == 64 and v["size"] > 0 for v in files.values())
    for name, entry in m["datasets"].items():
        if entry.get("kind") == "real":
            assert {"licence", "citation", "sha256", "size"} <= set(entry)


def test_record_build_writes_the_generator_version_the_manifest_lists(tmp_path):
    from physeg.data.manifest import record_build

    root = _tree(tmp_path / "c")
    manifest = _manifest(tmp_path / "m.yaml")
    entry = record_build(root, build="demo", voxel_size_mm=4.0, subjects=["sub-01"], generator_version=2,
                         manifest_path=manifest)
    assert entry["generator_version"] == 2 and set(entry["files"]) == set(file_table(root))
    assert load_manifest(manifest)["datasets"]["synthetic-mpm"]["builds"]["demo"]["generator_version"] == 2
    before = manifest.read_bytes()
    with pytest.raises(ValueError, match="do not list the profile's 3"):
        record_build(root, build="demo", voxel_size_mm=4.0, subjects=["sub-01"], generator_version=3,
                     manifest_path=manifest)
    assert manifest.read_bytes() == before  # refused before writing


def test_verify_pass_and_fail_names_the_file(tmp_path, capsys):
    root = _tree(tmp_path / "c")
    manifest = _manifest(tmp_path / "m.yaml", files=file_table(root))
    assert verify_files(root, file_table(root)) == []
    args = ["data", "verify", "--profile", "smoke", "--root", str(root), "--manifest", str(manifest)]
    assert main(args) == 0
    target = root / "sub-01" / "anat" / "a.nii.gz"
    target.write_bytes(b"abd")  # one byte changed, same size
    assert main(args) == 1  # the inputs were right, the check failed: a runtime failure
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("physeg data verify: error: 1 file(s)")
    assert "sha256 mismatch" in err and str(target) in err
    (root / "dataset_description.json").unlink()
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "missing" in out and "sha256 mismatch" in out  # every problem listed on stdout


def test_fetch_file_url(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    manifest = _manifest(tmp_path / "m.yaml", url=src.as_uri(), sha=sha, size=len(PAYLOAD))
    out = fetch("toy", dest=tmp_path / "dest", manifest_path=manifest)
    assert out.read_bytes() == PAYLOAD
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["toy.bin"]


def test_fetch_checksum_mismatch_leaves_nothing(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    manifest = _manifest(tmp_path / "m.yaml", url=src.as_uri(), sha="0" * 64)
    with pytest.raises(FetchError, match="sha256 mismatch"):
        fetch("toy", dest=tmp_path / "dest", manifest_path=manifest)
    assert list((tmp_path / "dest").iterdir()) == []


def test_fetch_unverified_refused_unless_allowed(tmp_path, capsys):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    manifest = _manifest(tmp_path / "m.yaml", url=src.as_uri(), sha=None)
    dest = tmp_path / "dest"
    assert main(["data", "fetch", "toy", "--dest", str(dest), "--manifest", str(manifest)]) == 2
    assert "allow-unverified" in capsys.readouterr().err
    assert not dest.exists()
    assert main(["data", "fetch", "toy", "--dest", str(dest), "--manifest", str(manifest),
                 "--allow-unverified"]) == 0
    assert (dest / "toy.bin").read_bytes() == PAYLOAD


def test_fetch_local_http_server(tmp_path):
    served = tmp_path / "www"
    served.mkdir()
    (served / "toy.bin").write_bytes(PAYLOAD)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/toy.bin"
        manifest = _manifest(tmp_path / "m.yaml", url=url, sha=hashlib.sha256(PAYLOAD).hexdigest())
        assert fetch("toy", dest=tmp_path / "d", manifest_path=manifest).read_bytes() == PAYLOAD
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_offline_fails_clearly(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manifest = _manifest(tmp_path / "m.yaml", url=f"http://127.0.0.1:{port}/toy.bin", sha="0" * 64)
    with pytest.raises(FetchError, match="could not download.*offline"):
        fetch("toy", dest=tmp_path / "d", manifest_path=manifest, timeout_s=5)
    assert list((tmp_path / "d").iterdir()) == []


def test_fetch_unknown_and_urlless(tmp_path):
    manifest = _manifest(tmp_path / "m.yaml")
    with pytest.raises(KeyError):
        fetch("nope", dest=tmp_path, manifest_path=manifest)
    with pytest.raises(FetchError, match="no download URL"):
        fetch("synthetic-mpm", dest=tmp_path, manifest_path=manifest)


# --------------------------------------------------------------------------- hostile input
def _usage(capsys, rc, command, *needles):
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith(f"physeg {command}: error:") and "Traceback" not in err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize("filename", ["../escape.bin", "/tmp/physeg-absolute.bin", "sub/toy.bin", "..", "C:\\x.bin"])
def test_fetch_refuses_names_outside_dest(tmp_path, capsys, filename):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    manifest = _manifest(tmp_path / "m.yaml", url=src.as_uri(), sha=hashlib.sha256(PAYLOAD).hexdigest(),
                         filename=filename)
    dest = tmp_path / "a" / "dest"
    with pytest.raises(FetchRefused, match="manifest filename"):
        fetch("toy", dest=dest, manifest_path=manifest)
    rc = main(["data", "fetch", "toy", "--dest", str(dest), "--manifest", str(manifest)])
    _usage(capsys, rc, "data fetch", repr(filename))
    assert not (tmp_path / "a").exists() and not (tmp_path / "escape.bin").exists()


def test_fetch_dest_that_is_a_file(tmp_path, capsys):
    manifest = _manifest(tmp_path / "m.yaml", url=(tmp_path / "src.bin").as_uri(), sha="0" * 64)
    dest = tmp_path / "dest"
    dest.write_text("mine")
    _usage(capsys, main(["data", "fetch", "toy", "--dest", str(dest), "--manifest", str(manifest)]),
           "data fetch", "not a folder")
    assert dest.read_text() == "mine"


def test_fetch_never_overwrites_a_different_file(tmp_path, capsys):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    manifest = _manifest(tmp_path / "m.yaml", url=src.as_uri(), sha=hashlib.sha256(PAYLOAD).hexdigest())
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "toy.bin").write_bytes(b"someone else's file")
    _usage(capsys, main(["data", "fetch", "toy", "--dest", str(dest), "--manifest", str(manifest)]),
           "data fetch", "exists and is not the verified download")
    assert (dest / "toy.bin").read_bytes() == b"someone else's file"
    (dest / "toy.bin").write_bytes(PAYLOAD)  # already installed and verified: nothing to do
    src.unlink()
    assert fetch("toy", dest=dest, manifest_path=manifest) == dest / "toy.bin"


def test_fetch_removes_partial_files_of_dead_fetches_only(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    manifest = _manifest(tmp_path / "m.yaml", url=src.as_uri(), sha=hashlib.sha256(PAYLOAD).hexdigest())
    dest = tmp_path / "dest"
    dest.mkdir()
    dead = dest / ".toy.bin.part-999999999"  # no such process
    alive = dest / f".toy.bin.part-{os.getppid()}"  # a running process: maybe downloading now
    other = dest / ".other.part-999999999"
    for f in (dead, alive, other):
        f.write_bytes(b"partial")
    fetch("toy", dest=dest, manifest_path=manifest)
    assert not dead.exists() and alive.exists() and other.exists()


@pytest.mark.parametrize(
    "text, message",
    [("datasets: [unclosed", "not a valid YAML manifest"), ("- a\n- b\n", "'datasets' mapping"),
     ("datasets:\n  toy: 3\n", "dataset 'toy' is not a mapping")],
)
def test_malformed_manifest_is_a_usage_error(tmp_path, capsys, text, message):
    bad = tmp_path / "m.yaml"
    bad.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_manifest(bad)
    _usage(capsys, main(["data", "list", "--manifest", str(bad)]), "data list", "m.yaml", message)
    root = _tree(tmp_path / "c")
    _usage(capsys, main(["data", "verify", "--profile", "smoke", "--root", str(root), "--manifest", str(bad)]),
           "data verify", message)
    _usage(capsys, main(["data", "fetch", "toy", "--dest", str(tmp_path / "d"), "--manifest", str(bad)]),
           "data fetch", message)


def test_verify_refuses_paths_outside_the_cohort(tmp_path, capsys):
    root = _tree(tmp_path / "c")
    manifest = _manifest(tmp_path / "m.yaml", files={"../m.yaml": {"sha256": "0" * 64, "size": 1}})
    with pytest.raises(ValueError, match="leaves the destination folder"):
        verify_build(root, build="smoke", manifest_path=manifest)
    _usage(capsys, main(["data", "verify", "--profile", "smoke", "--root", str(root), "--manifest", str(manifest)]),
           "data verify", "'../m.yaml'")


def test_verify_unknown_profile_and_build(tmp_path, capsys):
    root = _tree(tmp_path / "c")
    manifest = _manifest(tmp_path / "m.yaml", files=file_table(root))
    _usage(capsys, main(["data", "verify", "--profile", "bogus", "--root", str(root)]), "data verify",
           "unknown profile 'bogus'")
    _usage(capsys, main(["data", "verify", "--profile", "smoke", "--build", "nope", "--root", str(root),
                         "--manifest", str(manifest)]), "data verify", "no synthetic build 'nope'")
    _usage(capsys, main(["data", "verify", "--profile", "smoke", "--root", str(tmp_path / "none")]),
           "data verify", "does not exist")


def test_fetch_unknown_dataset_is_a_usage_error(tmp_path, capsys):
    manifest = _manifest(tmp_path / "m.yaml")
    _usage(capsys, main(["data", "fetch", "nope", "--dest", str(tmp_path / "d"), "--manifest", str(manifest)]),
           "data fetch", "unknown dataset 'nope'")
