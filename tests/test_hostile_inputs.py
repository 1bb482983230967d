"""Hostile and careless input across the commands: one clear line, the right exit code, nothing lost.

Every case builds its inputs in a fresh ``user`` folder, runs the command
in-process (``physeg.cli.main``), and asserts

* the exit code (2: the user's input is wrong; 1: the work failed),
* exactly one stderr line ``physeg <command>: error: ...`` without a traceback
  that contains the expected words and names the offending file,
* that no file the user or physeg had before the call changed: every file under
  the case folder and the shared inputs (images, maps, model folders) is hashed
  before and after (nothing is written when an input is refused).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from test_cli_segment import data  # noqa: F401  (module fixture: images, sidecars, tiny model folders)
from test_cli_simulate import AFFINE, tiny_maps

from physeg.cli import main
from physeg.cli.errors import run_cli

COMMANDS = ("segment", "simulate", "pgs", "data", "train", "paper")


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file (and the name of every folder) under ``roots``."""
    out = {}
    for root in roots:
        for p in sorted(Path(root).rglob("*")):
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


@dataclass
class Ctx:
    """What a case may use: its own folder, the shared data and the maps written there."""

    user: Path
    data: dict
    maps: dict[str, Path]
    monkeypatch: pytest.MonkeyPatch

    def env(self, key: str, value: str) -> bool:
        self.monkeypatch.setenv(key, value)
        return True

    def nii(self, name: str, arr: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
        path = self.user / name
        nib.save(nib.Nifti1Image(np.asarray(arr), affine), str(path))
        return path

    def copy(self, src: Path, name: str, sidecar: dict | str | None = None) -> Path:
        path = self.user / name
        shutil.copy(src, path)
        if sidecar is not None:
            text = sidecar if isinstance(sidecar, str) else json.dumps(sidecar)
            (self.user / name.replace(".nii.gz", ".json")).write_text(text)
        return path

    def model(self, name: str = "Baseline") -> Path:
        return self.data["models"][name]

    def model_copy(self, name: str = "Baseline") -> Path:
        dest = self.user / f"model_{name}"
        shutil.copytree(self.model(name), dest)
        return dest


@dataclass
class Case:
    """One hostile input: ``make(ctx) -> (argv, file the message must name)``."""

    id: str
    make: Callable[[Ctx], tuple[list, Path | str]]
    code: int
    words: str


def touch(path: Path, text: str = "the user's file") -> Path:
    path.write_text(text)
    return path


def seg(ctx: Ctx, image: Path, *extra, model: Path | None = None, out: Path | None = None) -> list:
    return ["segment", image, "--model", model or ctx.model(), "-o", out or ctx.user / "out", "--no-progress",
            "-n", "2", *extra]


def maps_args(ctx: Ctx, **override: Path) -> list:
    files = {**{k: ctx.maps[k] for k in ("pd", "t1", "t2s")}, **override}
    return [a for k, v in files.items() for a in (f"--{k}", v)]


def sim(ctx: Ctx, *extra, **override) -> list:
    return ["simulate", *maps_args(ctx, **override), "--sequence", "MPRAGE", "--ti", "0.9", "-o", ctx.user / "sims",
            *extra]


def pgs(ctx: Ctx, *extra, **override) -> list:
    return ["pgs", *maps_args(ctx, **override), "-o", ctx.user / "pgs", *extra]


def _bad_t1(ctx: Ctx, fill: float, fraction: float) -> Path:
    """T1 map with ``fraction`` of the brain set to ``fill``."""
    _, t1, _, mask = tiny_maps()
    idx = np.flatnonzero(mask)
    bad = t1.copy().ravel()
    bad[idx[: int(fraction * idx.size)]] = fill
    return ctx.nii("t1_bad.nii.gz", bad.reshape(t1.shape))


def _gzip_damaged(ctx: Ctx, src: Path, name: str, *, truncate: bool = False) -> Path:
    blob = bytearray(src.read_bytes())
    if truncate:
        blob = blob[: len(blob) * 2 // 3]
    else:
        blob[-6] ^= 0xFF  # CRC-32 of the gzip trailer
    path = ctx.user / name
    path.write_bytes(bytes(blob))
    return path


def _plans_edit(ctx: Ctx, text: Callable[[str], str]) -> Path:
    folder = ctx.model_copy()
    (folder / "plans.json").write_text(text((folder / "plans.json").read_text()))
    return folder


def _tampered_weights(ctx: Ctx) -> Path:
    from physeg.training.checkpoint import write_finished

    folder = ctx.model_copy()
    write_finished(folder, {"model": "Baseline"})  # records the sha256 of best.pt and plans.json
    state = torch.load(folder / "best.pt", weights_only=True)
    next(iter(state.values())).add_(1.0)  # a tampered, still loadable weights file
    torch.save(state, folder / "best.pt")
    return folder


def _truncated_weights(ctx: Ctx) -> Path:
    folder = ctx.model_copy()
    blob = (folder / "best.pt").read_bytes()
    (folder / "best.pt").write_bytes(blob[: len(blob) // 2])
    return folder


def _notebooks(ctx: Ctx, cells: list[str] | None) -> Path:
    folder = ctx.user / "nb"
    folder.mkdir()
    if cells is not None:
        (folder / "01_x.py").write_text("# %% tags=[\"parameters\"]\nprofile = 'smoke'\n\n"
                                        + "".join(f"# %%\n{c}\n\n" for c in cells))
    return folder


def _manifest(ctx: Ctx, text: str) -> Path:
    path = ctx.user / "manifest.yaml"
    path.write_text(text)
    return path


M = "sim-001_MPRAGE.nii.gz"
SEGMENT = [
    Case("seg-missing-image", lambda c: (seg(c, c.user / "none.nii.gz", "--ti", "0.9"), "none.nii.gz"), 2,
         "does not exist"),
    Case("seg-not-nifti", lambda c: (seg(c, p := touch(c.user / "x.nii"), "--ti", "0.9"), p), 2, "cannot read"),
    Case("seg-gzip-crc", lambda c: (seg(c, p := _gzip_damaged(c, c.data["mprage"], "crc.nii.gz"), "--ti", "0.9"), p),
         2, "damaged gzip"),
    Case("seg-gzip-truncated", lambda c: (seg(c, p := _gzip_damaged(c, c.data["mprage"], "cut.nii.gz",
                                                                    truncate=True), "--ti", "0.9"), p),
         2, "damaged gzip"),
    Case("seg-4d", lambda c: (seg(c, p := c.nii("four.nii.gz", np.ones((14, 16, 12, 2), np.float32)), "--ti", "0.9"),
                              p), 2, "4D"),
    Case("seg-60mm-voxels", lambda c: (seg(c, p := c.nii("big.nii.gz", np.ones((4, 4, 4), np.float32),
                                                           np.diag([60.0, 60, 60, 1])), "--ti", "0.9"), p),
         2, "voxels of 60x60x60 mm"),
    Case("seg-metre-affine", lambda c: (seg(c, p := c.nii("m.nii.gz", np.ones((64, 64, 64), np.float32),
                                                            np.diag([0.001, 0.001, 0.001, 1])), "--ti", "0.9"), p),
         2, "outside the plausible"),
    Case("seg-tiny-fov", lambda c: (seg(c, p := c.nii("slab.nii.gz", np.ones((10, 64, 64), np.float32),
                                                        np.diag([1.0, 1, 1, 1])), "--ti", "0.9"), p),
         2, "covers 10x64x64 mm"),
    Case("seg-empty-file", lambda c: (seg(c, p := touch(c.user / "empty.nii.gz", ""), "--ti", "0.9"), p),
         2, "cannot read"),
    Case("seg-all-nan", lambda c: (seg(c, p := c.nii("nan.nii.gz", np.full((14, 16, 12), np.nan, np.float32)),
                                       "--ti", "0.9"), p), 2, "no finite values"),
    Case("seg-sidecar-true", lambda c: (seg(c, c.copy(c.data["mprage"], "b.nii.gz", {"InversionTime": True})),
                                        c.user / "b.json"), 2, "TI must be a number in s; got true"),
    Case("seg-sidecar-number", lambda c: (seg(c, c.copy(c.data["mprage"], "n.nii.gz", "5")), c.user / "n.json"),
         2, "not a JSON object"),
    Case("seg-sidecar-malformed", lambda c: (seg(c, c.copy(c.data["mprage"], "j.nii.gz", "{\"Inv")),
                                             c.user / "j.json"), 2, "cannot read the JSON sidecar"),
    Case("seg-sidecar-ms", lambda c: (seg(c, c.copy(c.data["mprage"], "ms.nii.gz", {"InversionTime": 900})),
                                      c.user / "ms.json"), 2, "looks like milliseconds"),
    Case("seg-sidecar-negative", lambda c: (seg(c, c.copy(c.data["mprage"], "neg.nii.gz", {"InversionTime": -0.9})),
                                            c.user / "neg.json"), 2, "positive"),
    Case("seg-sidecar-two-values", lambda c: (seg(c, c.copy(c.data["mprage"], "two.nii.gz",
                                                            {"InversionTime": [0.9, 1.0]})), c.user / "two.json"),
         2, "has 2 values"),
    Case("seg-sidecar-string", lambda c: (seg(c, c.copy(c.data["mprage"], "s.nii.gz", {"InversionTime": "long"})),
                                          c.user / "s.json"), 2, "must be a number"),
    Case("seg-wrong-sequence", lambda c: (seg(c, c.data["spgr"]), c.model()), 2, "trained on MPRAGE"),
    Case("seg-output-is-file", lambda c: (seg(c, c.data["mprage"], out=(p := touch(c.user / "f.txt"))), p),
         2, "is not a folder"),
    Case("seg-output-model-folder", lambda c: (seg(c, c.data["mprage"], "--force", out=(m := c.model_copy())), m),
         2, "is a model folder"),
    Case("seg-output-holds-input", lambda c: (seg(c, p := c.copy(c.data["mprage"], "in.nii.gz"), "--ti", "0.9",
                                                  "--force", out=c.user), c.user), 2, "holds an input image"),
    Case("seg-output-exists", lambda c: (seg(c, c.data["mprage"], out=c.user), touch(c.user / "volumes.tsv")),
         2, "--force"),
    Case("seg-model-missing", lambda c: (seg(c, c.data["mprage"], model=(p := c.user / "nomodel")), p),
         2, "does not exist"),
    Case("seg-model-foreign-folder", lambda c: (seg(c, c.data["mprage"], model=c.user), c.user),
         2, "not a physeg model folder"),
    Case("seg-plans-malformed", lambda c: (seg(c, c.data["mprage"], model=(m := _plans_edit(c, lambda t: t[:40]))),
                                           m / "plans.json"), 2, "cannot read"),
    Case("seg-plans-foreign-keys", lambda c: (seg(c, c.data["mprage"], model=(m := _plans_edit(
        c, lambda t: t.replace('"seed"', '"sneed"')))), m / "plans.json"), 2, "unknown keys"),
    Case("seg-weights-tampered", lambda c: (seg(c, c.data["mprage"], model=(m := _tampered_weights(c))),
                                            m / "best.pt"), 1, "differs from the sha256"),
    Case("seg-weights-truncated", lambda c: (seg(c, c.data["mprage"], model=(m := _truncated_weights(c))),
                                             m / "best.pt"), 1, "damaged or truncated"),
    Case("seg-calibration-malformed", lambda c: (seg(c, c.data["mprage"], "--calibration",
                                                     p := touch(c.user / "cal.json", "[1, 2]")), p),
         2, "unreadable calibration"),
    Case("seg-calibration-missing", lambda c: (seg(c, c.data["mprage"], "--calibration", p := c.user / "c.json"), p),
         2, "does not exist"),
    Case("seg-duplicate-stems", lambda c: (["segment", c.data["mprage"], c.copy(c.data["mprage"], M),
                                            *seg(c, c.data["mprage"])[2:]], M[:-7]),
         2, "share the name"),
]

SIMULATE = [
    Case("sim-missing-map", lambda c: (sim(c, t1=(p := c.user / "none.nii.gz")), p), 2, "does not exist"),
    Case("sim-negative-t1", lambda c: (sim(c, t1=(p := _bad_t1(c, -1.0, 0.3))), p), 2, "negative"),
    Case("sim-nan-t1", lambda c: (sim(c, t1=(p := _bad_t1(c, np.nan, 0.05))), p), 2, "NaN"),
    Case("sim-zero-t1", lambda c: (sim(c, t1=(p := _bad_t1(c, 0.0, 0.2))), p), 2, "zero"),
    Case("sim-t1-in-ms", lambda c: (sim(c, t1=(p := c.nii("t1ms.nii.gz", tiny_maps()[1] * 1000))), p), 2, "t1ms"),
    Case("sim-grid-mismatch", lambda c: (sim(c, t1=(p := c.nii("t1s.nii.gz", tiny_maps((14, 16, 10))[1]))), p),
         2, "shape"),
    Case("sim-mask-affine", lambda c: (sim(c, "--mask", p := c.nii("mask.nii.gz", tiny_maps()[3].astype(np.uint8),
                                                                     AFFINE + np.diag([0, 0, 1.0, 0])),
                                           "--normalise"), p), 2, "affine"),
    Case("sim-empty-mask", lambda c: (sim(c, "--mask", p := c.nii("mask0.nii.gz", np.zeros((14, 16, 12), np.uint8)),
                                          "--normalise"), p), 2, "empty"),
    Case("sim-gzip-crc", lambda c: (sim(c, pd=(p := _gzip_damaged(c, c.maps["pd"], "pd.nii.gz"))), p),
         2, "damaged gzip"),
    Case("sim-map-sidecar-malformed", lambda c: (sim(c, t1=c.copy(c.maps["t1"], "t1j.nii.gz", "{oops")),
                                                 c.user / "t1j.json"), 2, "t1j.json"),
    Case("sim-output-is-file", lambda c: (sim(c, "-o", p := touch(c.user / "file")), p), 2, "not a folder"),
    Case("sim-ti-ms", lambda c: (["simulate", *maps_args(c), "--sequence", "MPRAGE", "--ti", "900", "-o",
                                  c.user / "o"], "--ti"), 2, "milliseconds"),
]

PGS = [
    Case("pgs-bad-features", lambda c: (pgs(c, "--features", "T1,XX"), "--features"), 2, "XX"),
    Case("pgs-negative-t1", lambda c: (pgs(c, t1=(p := _bad_t1(c, -1.0, 0.3))), p), 2, "negative"),
    Case("pgs-missing-map", lambda c: (pgs(c, pd=(p := c.user / "nopd.nii.gz")), p), 2, "does not exist"),
    Case("pgs-gzip-truncated", lambda c: (pgs(c, t2s=(p := _gzip_damaged(c, c.maps["t2s"], "t2.nii.gz",
                                                                         truncate=True))), p), 2, "damaged gzip"),
    Case("pgs-output-is-file", lambda c: (pgs(c, "-o", p := touch(c.user / "file")), p), 2, "not a folder"),
]

DATA = [
    Case("data-root-foreign", lambda c: (["data", "build", "--profile", "smoke", "--root", touch(c.user / "a").parent],
                                         c.user),
         2, "not a finished physeg cohort"),
    Case("data-root-file", lambda c: (["data", "build", "--profile", "smoke", "--root", p := touch(c.user / "f")], p),
         2, "not a folder"),
    Case("data-verify-unknown-profile", lambda c: (["data", "verify", "--profile", "nope"], "nope"),
         2, "unknown profile"),
    Case("data-verify-missing-root", lambda c: (["data", "verify", "--profile", "smoke", "--root",
                                                 p := c.user / "none"], p), 2, "does not exist"),
    Case("data-fetch-dotdot", lambda c: (["data", "fetch", "x", "--dest", c.user / "d", "--manifest", _manifest(
        c, "datasets:\n  x:\n    kind: archive\n    url: https://example.org/x.zip\n    filename: ../../evil.zip\n"
           f"    sha256: {'a' * 64}\n")], "../../evil.zip"), 2, "leaves the destination folder"),
    Case("data-manifest-malformed", lambda c: (["data", "list", "--manifest", p := _manifest(c, "datasets: [\n")], p),
         2, "manifest"),
]

TRAIN = [
    Case("train-profile-from-env", lambda c: (["train"], "nope") if c.env("PHYSEG_PROFILE", "nope") else 0,
         2, "unknown profile 'nope'"),
    Case("train-negative-seed", lambda c: (["train", "--profile", "smoke", "--seed", "-1"], "--seed"),
         2, "must be >= 0"),
]

PAPER = [
    Case("paper-missing-notebooks", lambda c: (["paper", "--profile", "smoke", "--notebooks", p := c.user / "nb"], p),
         2, "does not exist"),
    Case("paper-empty-notebooks", lambda c: (["paper", "--profile", "smoke", "--notebooks", p := _notebooks(c, None)],
                                             p), 2, "no numbered notebooks"),
    Case("paper-only-nothing", lambda c: (["paper", "--profile", "smoke", "--notebooks", _notebooks(c, ["1"]),
                                           "--only", "09"], "09"), 2, "matches none"),
]

CASES = SEGMENT + SIMULATE + PGS + DATA + TRAIN + PAPER


@pytest.fixture()
def ctx(data, tmp_path, monkeypatch):  # noqa: F811  (the imported fixture)
    monkeypatch.setenv("PHYSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PHYSEG_BUILD", str(tmp_path / "build"))
    monkeypatch.delenv("PHYSEG_PROFILE", raising=False)
    maps = data["root"]
    user = tmp_path / "user"
    user.mkdir()
    return Ctx(user=user, data=data, maps={k: maps / f"{k}.nii.gz" for k in ("pd", "t1", "t2s")},
               monkeypatch=monkeypatch)


def _command_of(argv: list) -> str:
    return f"data {argv[1]}" if argv[0] == "data" else argv[0]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, ctx: Ctx, capsys):
    argv, named = case.make(ctx)
    argv = [str(a) for a in argv]
    before = snapshot(ctx.user, ctx.data["root"])
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == case.code, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"physeg {_command_of(argv)}: error: "), lines[0]
    assert case.words in lines[0], lines[0]
    assert str(named) in lines[0], f"{named} not named in: {lines[0]}"
    assert snapshot(ctx.user, ctx.data["root"]) == before, "a file changed or appeared"


def test_enough_cases_across_commands():
    assert len(CASES) >= 40
    assert {c.id.split("-")[0] for c in CASES} == {"seg", "sim", "pgs", "data", "train", "paper"}


# --------------------------------------------------------------------------- cases outside the CLI's argv
def test_resume_on_truncated_checkpoint_names_the_file(tmp_path, capsys):
    """``physeg train --resume`` loads ``last.pt`` through :func:`load_checkpoint`; a truncated one is one line."""
    from physeg.training.checkpoint import LAST, load_checkpoint

    torch.save({"model": {"w": torch.ones(1000)}}, tmp_path / LAST)
    blob = (tmp_path / LAST).read_bytes()
    (tmp_path / LAST).write_bytes(blob[: len(blob) // 2])
    before = snapshot(tmp_path)
    rc = run_cli("train", lambda: load_checkpoint(tmp_path, device=torch.device("cpu")))
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and f"{tmp_path / LAST} is damaged or truncated" in err, err
    assert snapshot(tmp_path) == before


def test_reused_cohort_that_changed_is_refused(tmp_path, capsys, monkeypatch):
    from physeg.data import build_cohort
    from physeg.profiles import get_profile

    monkeypatch.setenv("PHYSEG_CACHE", str(tmp_path / "cache"))
    smoke = get_profile("smoke")
    root = build_cohort(smoke, root=tmp_path / "cohort", subjects=["sub-02"], progress=False)
    assert build_cohort(smoke, root=root, subjects=["sub-02"], progress=False) == root  # unchanged: reused
    victim = next(p for p in sorted(root.rglob("*R1map.nii.gz")))
    blob = bytearray(victim.read_bytes())
    blob[len(blob) // 2] ^= 1
    victim.write_bytes(bytes(blob))
    before = snapshot(root)
    rc = run_cli("data build", lambda: build_cohort(smoke, root=root, subjects=["sub-02"], progress=False))
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and str(victim) in err and "changed since physeg built it" in err, err
    assert snapshot(root) == before  # refused, not silently rebuilt or deleted
    # same size and mtime (a copy that kept both): only --verify (every sha256) sees it
    import os

    st = victim.stat()
    record = json.loads((root / ".physeg-files.json").read_text())
    rel = victim.relative_to(root).as_posix()
    record["files"][rel]["mtime_ns"] = st.st_mtime_ns
    (root / ".physeg-files.json").write_text(json.dumps(record))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert build_cohort(smoke, root=root, subjects=["sub-02"], progress=False) == root  # fast path: size+mtime
    rc = run_cli("data build", lambda: build_cohort(smoke, root=root, subjects=["sub-02"], progress=False,
                                                    verify_full=True))
    assert rc == 1 and str(victim) in capsys.readouterr().err


def test_dying_kernel_names_the_notebook(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PHYSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PHYSEG_BUILD", str(tmp_path / "build"))
    nb = tmp_path / "nb"
    nb.mkdir()
    (nb / "01_dies.py").write_text("# %% tags=[\"parameters\"]\nprofile = 'smoke'\n\n# %%\nimport os\nos._exit(3)\n")
    rc = main(["paper", "--profile", "smoke", "--notebooks", str(nb), "--no-site"])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert rc == 1 and last.startswith("physeg paper: error: ") and "01_dies.py" in last, err


#: Another process "training" a model folder: holds the folder's lock (what model_lock takes on rank 0,
#: through physeg.io_safety alone, so the child starts fast), then marks the folder finished.
HOLDER = """
import json, sys, time
from pathlib import Path
from physeg.io_safety import folder_lock
folder = Path(sys.argv[1])
with folder_lock(folder, what="model folder"):
    print("locked", flush=True)
    time.sleep(2.0)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "finished.json").write_text(json.dumps({"model": "Baseline", "by": "the first process"}))
"""


def test_second_training_of_one_model_waits_and_reuses(tmp_path, monkeypatch, caplog):
    import os
    import subprocess
    import sys

    from physeg.profiles import get_profile
    from physeg.training import orchestrate
    from physeg.training.parallel import TrainingJob

    monkeypatch.setenv("PHYSEG_CACHE", str(tmp_path / "cache"))
    smoke = get_profile("smoke")
    job = TrainingJob("Baseline", "MPRAGE", None)
    folder = orchestrate.model_folder("Baseline", profile=smoke, sequence="MPRAGE")
    monkeypatch.setattr(orchestrate, "_volumes", lambda profile: {"train": [], "val": []})
    monkeypatch.setattr(orchestrate, "_shared", lambda profile, sequence: {})
    monkeypatch.setattr(orchestrate, "train_model", lambda *a, **k: pytest.fail("trained the folder twice"))
    other = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PHYSEG_CACHE": str(tmp_path / "cache")})
    try:
        assert other.stdout.readline().strip() == "locked"
        with caplog.at_level("WARNING"):
            summary = orchestrate.train_one(job, profile=smoke)
    finally:
        other.wait(60)
    assert summary == {"model": "Baseline", "by": "the first process"}
    assert "another physeg run holds the model folder" in caplog.text
