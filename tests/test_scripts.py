"""The lent-GPU script, rehearsed on the CPU at smoke size: every stage runs and returns what it promises."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile

import pandas as pd
import pytest

from physeg.paths import REPO_ROOT


@pytest.mark.slow
def test_gpu_paper_short_rehearsal_returns_every_file(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PHYSEG_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "gpu_paper_short.py"), str(out), "--rehearse"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    # at most 8 files come back from the device machine; the stage logs are folded into log.txt
    assert sorted(p.name for p in out.iterdir()) == ["arms-models.tar", "arms_finished.json", "log.txt",
                                                    "machine.txt", "paper_finished.json", "paper_results.csv"]
    arms = json.loads((out / "arms_finished.json").read_text())
    assert sorted(a["folder"].split("_")[0] for a in arms) == ["augmentation/Phys-Strat-Aug+physics"] * 2 + [
        "augmentation/Phys-Strat-Aug+torchio"] * 2
    with tarfile.open(out / "arms-models.tar") as tar:
        names = tar.getnames()
    assert all(n.startswith("augmentation/") for n in names) and not any(n.endswith("last.pt") for n in names)
    assert sum(n.endswith("best.pt") for n in names) == 4
    trained = json.loads((out / "paper_finished.json").read_text())
    assert [(t["model"], t["finished"]) for t in trained] == [("Baseline", True), ("Phys-Strat-Aug", True)]
    results = pd.read_csv(out / "paper_results.csv")
    assert set(results["model"]) == {"Baseline", "Phys-Strat-Aug"} and set(results["sequence"]) == {"MPRAGE"}
    assert results["dice"].between(0, 1).all()
    log = (out / "log.txt").read_text()
    assert "training exit 0" in log and "arms exit 0" in log and "done in" in log


def _script():
    spec = importlib.util.spec_from_file_location("gpu_paper_short", REPO_ROOT / "scripts" / "gpu_paper_short.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_model_the_time_cap_stopped_is_recorded_with_the_epoch_of_its_checkpoint(tmp_path):
    folder = tmp_path / "Phys-Strat-Aug_MPRAGE_seed0_x"
    folder.mkdir()
    assert _script().model_record(folder) == {"folder": folder.name, "finished": False, "epochs": 0,
                                              "best_epoch": None}  # stopped before its first epoch ended
    history = [{"epoch": e, "improved": e in (2, 4)} for e in range(1, 7)]  # validations at 2 and 4, stopped in 7
    (folder / "metrics.json").write_text(json.dumps(history))
    record = _script().model_record(folder)
    assert record == {"folder": folder.name, "finished": False, "epochs": 6, "best_epoch": 4}
    (folder / "finished.json").write_text(json.dumps({"epochs": 8, "best_epoch": 8}))
    assert _script().model_record(folder) == {"folder": folder.name, "finished": True, "epochs": 8, "best_epoch": 8}
