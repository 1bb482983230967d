"""One 15-minute GPU lease: the paper's scale (profile ``paper-short``) and page 09's two arms on one device.

Usage (on the lent machine, from the repository root, PHYSEG_CACHE holding the 4 mm cohort)::

    COMMIT=<sha> python3 scripts/gpu_paper_short.py OUT_DIR [--budget-s 540]
    python3 scripts/gpu_paper_short.py OUT_DIR --rehearse     # the same stages on the CPU at smoke size

Stages, each writing what it made into OUT_DIR at once, so that a run cut short still returns its part:

1. ``machine.txt``: commit, GPU, versions.
2. In the background, page 09's two artefact arms (Phys-Strat-Aug trained with the physics artefacts inside
   the simulation, and with TorchIO's bias field and noise) of ``reference-long``, both sequences, on the
   GPU: the page's comparison then no longer differs in device and precision. Packed as ``arms-models.tar``
   (model folders without ``last.pt``) and ``arms_finished.json``.
3. The 1 mm cohort, built by 14 processes side by side (about 30 s per subject on one core).
4. ``paper-short`` Baseline and Phys-Strat-Aug on MPRAGE, seed 0, two processes sharing the GPU.
5. Their test-grid evaluation on the GPU: ``paper_results.csv`` (one row per image and tissue: Dice
   against the PGS, volumes) and ``paper_finished.json`` (each model's ``finished.json``; a model the time
   cap stopped is evaluated from its best checkpoint and marked ``"finished": false``, with the epochs it
   reached and the epoch of that checkpoint: :func:`model_record`).

``log.txt`` gathers every stage's output. At most 8 files come back from the device machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
STUBS = HERE / "scripts" / "device_stubs"  # SimpleITK stand-in: TorchIO imports it, the arm never calls it


def _stamp(out: Path, text: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {text}"
    print(line, flush=True)
    with open(out / "log.txt", "a") as f:
        f.write(line + "\n")


def _machine(out: Path, device: str) -> None:
    import torch

    lines = [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             f"commit {os.environ.get('COMMIT', 'unknown (set COMMIT=<sha>)')}",
             f"torch {torch.__version__} python {platform.python_version()} cores {os.cpu_count()}",
             f"device {torch.cuda.get_device_name(0) if device == 'cuda' else 'cpu'}"]
    (out / "machine.txt").write_text("\n".join(lines) + "\n")


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    parts = [str(HERE), env.get("PYTHONPATH", "")]
    try:
        import SimpleITK  # noqa: F401
    except ImportError:
        parts.insert(1, str(STUBS))
    env["PYTHONPATH"] = os.pathsep.join(p for p in parts if p)
    return env


ARMS_CODE = """
import sys
from physeg.profiles import get_profile
from physeg.training.orchestrate import arm_jobs, train_jobs
if __name__ == "__main__":
    profile = get_profile(sys.argv[1])
    out = train_jobs(profile, arm_jobs(profile, ["physics", "torchio"]), device=sys.argv[2],
                     workers=int(sys.argv[3]), progress=False)
    print(out["summary"].to_string())
"""


def _start_arms(out: Path, *, profile: str, device: str, workers: int) -> subprocess.Popen:
    log = open(out / "arms.log", "w")
    return subprocess.Popen([sys.executable, "-c", ARMS_CODE, profile, device, str(workers)],
                            stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=HERE, start_new_session=True)


def _pack_arms(out: Path, profile_name: str) -> None:
    from physeg.paths import cache_root
    from physeg.training.checkpoint import read_finished

    root = cache_root() / "models" / profile_name  # arms live under its augmentation/ folder
    done = sorted(f.parent for f in (root / "augmentation").glob("*/finished.json"))
    with tarfile.open(out / "arms-models.tar", "w") as tar:
        for folder in done:
            for p in sorted(folder.iterdir()):
                if p.is_file() and p.name != "last.pt":
                    tar.add(p, arcname=str(p.relative_to(root)))
    rows = [read_finished(f) | {"folder": str(f.relative_to(root))} for f in done]
    (out / "arms_finished.json").write_text(json.dumps(rows, indent=1))


def _build_cohort(profile) -> float:
    from physeg.data.cohort import build_cohort

    t0 = time.perf_counter()
    build_cohort(profile, workers=14, progress=False)
    return time.perf_counter() - t0


def _train(out: Path, *, profile: str, device: str, timeout_s: float) -> int:
    cmd = [sys.executable, "-m", "physeg", "train", "--profile", profile, "--models", "Baseline",
           "Phys-Strat-Aug", "--sequence", "MPRAGE", "--device", device, "--workers", "2"]
    with open(out / "train.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=HERE,
                                start_new_session=True)
        return _wait_or_kill(proc, timeout_s)


def _wait_or_kill(proc: subprocess.Popen, timeout_s: float) -> int:
    """Exit code, or 124 after killing the process and its training workers (its whole session)."""
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return 124


def model_record(folder: Path) -> dict:
    """``finished.json`` of a model folder with ``"finished": true``; for a run the time cap stopped,
    ``"finished": false``, the epochs its metrics reached and the epoch of its best checkpoint (the last
    validation that improved), so the record says where a stopped model's weights come from."""
    from physeg.training.checkpoint import read_finished, read_metrics

    finished = read_finished(folder)
    if finished is not None:
        return {"folder": folder.name, "finished": True, **finished}
    history = read_metrics(folder)
    improved = [row["epoch"] for row in history if row.get("improved")]
    return {"folder": folder.name, "finished": False, "epochs": history[-1]["epoch"] if history else 0,
            "best_epoch": improved[-1] if improved else None}


def _evaluate(out: Path, profile, device: str) -> float:
    """Every model with a best checkpoint, on the test grid; finished or stopped by the time cap."""
    from physeg.data import load_split
    from physeg.evaluation.models import load_models
    from physeg.evaluation.runs import evaluate_segmentation
    from physeg.training.orchestrate import model_folder

    folders = {(m, "MPRAGE"): model_folder(m, profile=profile, sequence="MPRAGE", seed=profile.seeds[0])
               for m in ("Baseline", "Phys-Strat-Aug")}
    folders = {k: f for k, f in folders.items() if (f / "best.pt").is_file()}
    records = [{"model": m, **model_record(f)} for (m, _), f in folders.items()]
    (out / "paper_finished.json").write_text(json.dumps(records, indent=1))
    if not folders:
        raise RuntimeError("no model has a best checkpoint")
    models = load_models(folders, device=device)
    t0 = time.perf_counter()
    results, _ = evaluate_segmentation(profile, models, load_split(profile, "test"), examples=False)
    results.to_csv(out / "paper_results.csv", index=False)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--budget-s", type=float, default=540.0, help="wall-clock budget of the whole script")
    parser.add_argument("--rehearse", action="store_true", help="smoke profile, CPU: every stage in minutes")
    args = parser.parse_args(argv)
    t_start = time.perf_counter()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(HERE))
    from physeg.profiles import get_profile

    device = "cpu" if args.rehearse else "cuda"
    paper = get_profile("smoke" if args.rehearse else "paper-short")
    arms_profile = "smoke" if args.rehearse else "reference-long"
    _machine(out, device)
    arms = _start_arms(out, profile=arms_profile, device=device, workers=1 if args.rehearse else 4)
    _stamp(out, f"arms of {arms_profile} started (pid {arms.pid})")
    _stamp(out, f"cohort {paper.voxel_size_mm:g} mm built in {_build_cohort(paper):.0f} s")
    eval_reserve = 60.0 if args.rehearse else 110.0  # the evaluation's time on the GPU, with the packing
    left = args.budget_s - (time.perf_counter() - t_start) - eval_reserve
    t0 = time.perf_counter()
    rc = _train(out, profile=paper.name, device=device, timeout_s=max(30.0, left))
    _stamp(out, f"{paper.name} training exit {rc} after {time.perf_counter() - t0:.0f} s")
    try:
        _stamp(out, f"{paper.name} evaluation on the test grid in {_evaluate(out, paper, device):.0f} s")
    except Exception as exc:  # the arms still come back
        _stamp(out, f"{paper.name} evaluation failed: {type(exc).__name__}: {exc}")
    rc = _wait_or_kill(arms, max(5.0, args.budget_s - (time.perf_counter() - t_start)))
    _stamp(out, f"arms exit {rc}")
    _pack_arms(out, arms_profile)
    for name in ("arms.log", "train.log"):
        with open(out / "log.txt", "a") as f:
            f.write(f"\n===== {name} (last 60 lines)\n" + "\n".join((out / name).read_text().splitlines()[-60:])
                    + "\n")
        (out / name).unlink()
    _stamp(out, f"done in {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
