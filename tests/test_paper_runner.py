"""The papermill runner: order, parameter injection, and loud failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from physeg.reproduce import runner as paper

HEADER = "# %% tags=[\"parameters\"]\nprofile = \"demo\"\n\n"


def _write(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(HEADER + textwrap.dedent(body))
    return path


def test_discover_orders_numbered_notebooks_only(tmp_path):
    for name in ["02_b.py", "00_a.py", "10_c.md", "helper.py", "1_bad.py"]:
        (tmp_path / name).write_text("")
    assert [p.name for p in paper.discover_notebooks(tmp_path)] == ["00_a.py", "02_b.py", "10_c.md"]


def test_profile_is_injected_and_outputs_written(tmp_path, monkeypatch):
    src = tmp_path / "nb"
    src.mkdir()
    _write(src, "00_first.py", "# %%\nimport os, pathlib\npathlib.Path(os.environ['OUT_FILE']).write_text(profile)\n")
    out_file = tmp_path / "written.txt"
    monkeypatch.setenv("OUT_FILE", str(out_file))
    runs = paper.run_paper(profile="smoke", notebooks_folder=src, out_dir=tmp_path / "build" / "notebooks", build_site=False)
    assert out_file.read_text() == "smoke"
    assert runs[0].executed.exists()
    timings = json.loads((tmp_path / "build" / "timings.json").read_text())
    assert timings["profile"] == "smoke" and "00_first.py" in timings["seconds"]


def test_failure_names_notebook_and_cell_and_stops(tmp_path):
    src = tmp_path / "nb"
    src.mkdir()
    _write(src, "00_ok.py", "# %%\nx = 1\n")
    _write(src, "01_broken.py", "# %%\ny = 2\n\n# %%\nraise ValueError('deliberate failure 42')\n")
    _write(src, "02_never.py", "# %%\nz = 3\n")
    out = tmp_path / "build" / "notebooks"
    with pytest.raises(paper.NotebookFailed) as info:
        paper.run_paper(profile="smoke", notebooks_folder=src, out_dir=out, build_site=False)
    failure = info.value
    assert failure.notebook.name == "01_broken.py"
    assert "deliberate failure 42" in failure.traceback
    assert "raise ValueError" in failure.cell_source
    assert failure.cell_index is not None
    report = failure.report()
    assert "01_broken.py" in report and "cell" in report
    assert (out / "00_ok.ipynb").exists()
    assert not (out / "02_never.ipynb").exists(), "runner must stop at the first failing notebook"


def test_cli_exit_code_nonzero_on_failure(tmp_path):
    src = tmp_path / "nb"
    src.mkdir()
    _write(src, "00_boom.py", "# %%\n1 / 0\n")
    env = {**os.environ, "PHYSEG_BUILD": str(tmp_path / "build")}
    done = subprocess.run(
        [sys.executable, "-m", "physeg.reproduce.runner", "--profile", "smoke", "--no-site", "--notebooks", str(src)],
        capture_output=True, text=True, env=env,
    )
    assert done.returncode == 1
    assert "00_boom.py" in done.stderr and "ZeroDivisionError" in done.stderr
    assert "1 / 0" in done.stderr, "the failing cell's source is printed"


def test_unknown_profile_rejected():
    with pytest.raises(ValueError, match="unknown profile"):
        paper.run_paper(profile="huge", build_site=False)
