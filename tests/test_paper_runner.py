"""The papermill runner: order, parameter injection, provenance header, clean kernels, loud failure."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import nbformat

from physeg.reproduce import provenance
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


# A notebook that imports what the pages import and reports its kernel's environment.
KERNEL_PROBE = """# %%
import json, os, pathlib, sys
import physeg.simulation, physeg.data, physeg.pgs, physeg.models.network  # torch, MONAI, nilearn, ... as the pages do
from tqdm import tqdm
for _ in tqdm(range(3), desc="a bar nobody asked to see"):
    pass
env = {k: os.environ.get(k) for k in ("PHYSEG_PROFILE", "TQDM_DISABLE")}
pathlib.Path(os.environ["OUT_FILE"]).write_text(json.dumps({**env, "tqdm_auto": "tqdm.auto" in sys.modules}))
print("probe done")
"""


def test_header_and_clean_kernel(tmp_path, monkeypatch):
    """The executed copy has the provenance header right after the injected parameters,
    and the kernel writes nothing to stderr (no TqdmWarning, no progress bar)."""
    src = tmp_path / "nb"
    src.mkdir()
    _write(src, "00_probe.py", KERNEL_PROBE)
    out_file = tmp_path / "kernel.json"
    monkeypatch.setenv("OUT_FILE", str(out_file))
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    runs = paper.run_paper(profile="smoke", notebooks_folder=src, out_dir=tmp_path / "build" / "notebooks", build_site=False)
    kernel = json.loads(out_file.read_text())
    assert kernel == {"PHYSEG_PROFILE": "smoke", "TQDM_DISABLE": "1", "tqdm_auto": False}
    assert "TQDM_DISABLE" not in os.environ, "the kernel environment is restored after the run"

    nb = nbformat.read(runs[0].executed, as_version=4)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    injected = next(i for i, t in enumerate(tags) if "injected-parameters" in t)
    assert "parameters" in tags[injected - 1]
    header = nb.cells[injected + 1]
    assert header.cell_type == "markdown" and provenance.HEADER_TAG in header.metadata["tags"]
    record = header.metadata["physeg_provenance"]
    seeds = provenance.profile_seeds("smoke")
    assert record["profile"] == "smoke" and record["seeds"] == ", ".join(map(str, seeds))
    assert re.fullmatch(r"[0-9a-f]{4,40}(\+dirty)?|unknown", record["commit"])
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", record["date_utc"])
    for value in ("`smoke`", f"{'seeds' if len(seeds) > 1 else 'seed'} {record['seeds']}", record["commit"], record["date_utc"]):
        assert value in header.source

    streams = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "stream"]
    assert [o.name for o in streams] == ["stdout"] and "probe done" in streams[0].text
    assert not [o for o in streams if o.name == "stderr"]


def test_header_position_without_parameters_cell():
    cells = [nbformat.v4.new_markdown_cell("# t"), nbformat.v4.new_code_cell("x = 1")]
    assert paper._header_index(cells) == 0
    cells.insert(1, nbformat.v4.new_code_cell("profile = 'demo'", metadata={"tags": ["parameters"]}))
    assert paper._header_index(cells) == 2


def test_header_markdown_names_several_seeds():
    record = {"profile": "paper", "seeds": "0, 1, 2", "commit": "abc1234", "device": "GPU", "date_utc": "2026-01-02 03:04 UTC"}
    text = provenance.header_markdown(record)
    assert "seeds 0, 1, 2" in text and "`paper`" in text and "`abc1234`" in text and "2026-01-02 03:04 UTC" in text
    assert all(isinstance(s, int) for s in provenance.profile_seeds("smoke"))


def test_full_run_clears_only_its_own_executed_notebooks(tmp_path):
    from physeg.reproduce.runner import ForeignFiles, clear_executed

    out = tmp_path / "notebooks"
    out.mkdir()
    (out / "01_old.ipynb").write_text("{}")
    clear_executed(out)
    assert out.is_dir() and not any(out.iterdir())
    (out / "01_old.ipynb").write_text("{}")
    (out / "my_notes.txt").write_text("keep")
    with pytest.raises(ForeignFiles, match="my_notes.txt"):
        clear_executed(out)
    assert (out / "01_old.ipynb").exists() and (out / "my_notes.txt").read_text() == "keep"  # nothing deleted
    with pytest.raises(ForeignFiles, match="not a folder"):
        clear_executed(out / "my_notes.txt")


# --------------------------------------------------------------------------- progress and time left
def _timings(path, profile, seconds):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"profile": profile, "seconds": seconds}))


def test_time_left_is_weighted_by_the_last_run_and_scaled_by_this_runs_pace(tmp_path):
    from physeg.reproduce.progress import RunProgress, load_estimate

    build = tmp_path / "build"
    _timings(build / "timings.json", "demo", {"00_a.py": 10.0, "01_b.py": 100.0, "02_c.py": 890.0})
    estimate = load_estimate(profile="demo", build_dir=build, runs_dir=tmp_path / "none")
    assert "last demo run" in estimate.source
    progress = RunProgress(["00_a.py", "01_b.py", "02_c.py"], estimate)
    assert progress.time_left() is None
    assert "took 15 min last time" in progress.starting("02_c.py")
    line = progress.finished("00_a.py", 20.0)  # this machine runs at half the recorded speed
    assert progress.time_left() == pytest.approx(2 * 990.0)
    assert "1 % done" in line and "~33 min left" in line
    progress.finished("01_b.py", 100.0)  # pace now (20 + 100) / 110
    assert progress.time_left() == pytest.approx(890.0 * 120.0 / 110.0)
    assert "left" not in progress.finished("02_c.py", 900.0)  # nothing left to estimate


def test_pace_against_a_record_of_cached_pages_stays_within_bounds(tmp_path):
    from physeg.reproduce.progress import MAX_PACE, RunProgress, load_estimate

    build = tmp_path / "build"
    # the record's training page found its models cached (9 s); this run trains them (55 min)
    _timings(build / "timings.json", "reference", {"03_t.py": 9.0, "05_u.py": 1600.0, "06_c.py": 10.0})
    progress = RunProgress(["03_t.py", "05_u.py", "06_c.py"],
                           load_estimate(profile="reference", build_dir=build, runs_dir=tmp_path / "none"))
    progress.finished("03_t.py", 3300.0)
    assert progress.time_left() == pytest.approx(MAX_PACE * 1610.0)
    fast = RunProgress(["03_t.py", "05_u.py"], progress.estimate)
    fast.finished("03_t.py", 0.01)
    assert fast.time_left() == pytest.approx(1600.0 / MAX_PACE)


def test_estimate_falls_back_to_the_committed_record_then_to_equal_weights(tmp_path):
    from physeg.reproduce.progress import RunProgress, load_estimate

    build, runs = tmp_path / "build", tmp_path / "runs"
    _timings(build / "timings.json", "smoke", {"00_a.py": 1.0})  # another profile: ignored
    _timings(runs / "2026-01-01-demo" / "timings.json", "demo", {"00_a.py": 1.0, "01_b.py": 1.0})
    _timings(runs / "2026-02-01-demo" / "timings.json", "demo", {"00_a.py": 5.0, "01_b.py": 45.0})
    (runs / "2026-03-01-demo").mkdir()
    (runs / "2026-03-01-demo" / "timings.json").write_text("{not json")  # unreadable: skipped
    estimate = load_estimate(profile="demo", build_dir=build, runs_dir=runs)
    assert estimate.source == "the committed record 2026-02-01-demo"
    assert estimate.seconds == {"00_a.py": 5.0, "01_b.py": 45.0}
    none = load_estimate(profile="reference", build_dir=build, runs_dir=runs)
    assert none.seconds == {} and "counts the same" in none.source
    progress = RunProgress(["00_a.py", "01_b.py", "02_new.py"], none)
    progress.finished("00_a.py", 30.0)
    assert progress.time_left() == pytest.approx(60.0)  # two notebooks left at 30 s each
    # a notebook the record does not know counts as the record's mean
    known = RunProgress(["00_a.py", "01_b.py", "02_new.py"], estimate)
    known.finished("00_a.py", 5.0)
    assert known.time_left() == pytest.approx(45.0 + 25.0)


def test_cell_timeout_by_profile_and_flag():
    assert paper.cell_timeout("smoke") == 3600 and paper.cell_timeout("demo") == 3600
    assert paper.cell_timeout("reference-long") is None and paper.cell_timeout("paper") is None
    assert paper.cell_timeout("demo", 0) is None and paper.cell_timeout("paper", 120) == 120


def test_a_partial_run_keeps_the_other_notebooks_timings(tmp_path):
    record = tmp_path / "timings.json"
    _timings(record, "reference", {"00_a.py": 10.0, "05_u.py": 3600.0})
    merged = paper.merged_timings(record, profile="reference", seconds={"05_u.py": 900.0}, partial=True)
    assert merged == {"profile": "reference", "seconds": {"00_a.py": 10.0, "05_u.py": 900.0}}
    # a full run, or another profile's record, starts afresh
    assert paper.merged_timings(record, profile="reference", seconds={"05_u.py": 1.0}, partial=False)["seconds"] \
        == {"05_u.py": 1.0}
    assert paper.merged_timings(record, profile="demo", seconds={"05_u.py": 1.0}, partial=True)["seconds"] \
        == {"05_u.py": 1.0}
    record.write_text("{not json")
    assert paper.merged_timings(record, profile="reference", seconds={"05_u.py": 1.0}, partial=True)["seconds"] \
        == {"05_u.py": 1.0}


def test_negative_cell_timeout_is_a_usage_error(tmp_path, capsys):
    from physeg.cli import main

    src = tmp_path / "nb"
    src.mkdir()
    _write(src, "00_first.py", "# %%\nx = 1\n")
    for bad in ("-5", "ten"):  # argparse rejects it (the shared option's type), before anything runs
        with pytest.raises(SystemExit) as info:
            main(["paper", "--profile", "smoke", "--notebooks", str(src), "--no-site", "--cell-timeout", bad])
        assert info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--cell-timeout" in err[0] and "Traceback" not in err[0]
    assert not (src.parent / "build").exists()  # nothing ran


def test_a_timed_out_notebook_says_how_to_resume():
    class CellTimeoutError(Exception):
        pass

    failure = paper.NotebookFailed.kernel_died(Path("05_u.py"), CellTimeoutError("after 3600 seconds"))
    assert "05_u.py" in str(failure) and "--cell-timeout" in str(failure) and "--only" in str(failure)
    died = paper.NotebookFailed.kernel_died(Path("05_u.py"), RuntimeError("kernel died"))
    assert "--cell-timeout" not in str(died)
