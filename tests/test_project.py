"""Project-level consistency: dependency lists, profiles, CLI help."""

from __future__ import annotations

import dataclasses
import re
import tomllib

import pytest
import yaml

from physeg import cli
from physeg.paths import REPO_ROOT, config_hash
from physeg.profiles import PROFILES, get_profile


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r): r.replace(" ", "") for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {_name(r): r.replace(" ", "") for r in pip_section if not r.startswith("-e")}
    assert listed == wanted, "environment.yml and pyproject.toml list different dependencies or versions"


def test_constraint_pins_cpu_torch():
    assert "torch==2.13.0" in (REPO_ROOT / "constraints.txt").read_text()


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO_ROOT / "README.md").read_text()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make paper" in readme
    assert [line for line in ci.splitlines() if line and not line.startswith(("#", "set ", "cd "))] == ["make test"]


def test_profiles_by_name_and_env(monkeypatch):
    assert set(PROFILES) == {"smoke", "demo", "reference", "reference-long", "paper", "paper-short"}
    monkeypatch.setenv("PHYSEG_PROFILE", "smoke")
    assert get_profile().name == "smoke"
    monkeypatch.delenv("PHYSEG_PROFILE")
    assert get_profile().name == "demo"
    with pytest.raises(ValueError, match="smoke"):
        get_profile("nope")
    paper = get_profile("paper")
    assert (paper.patch_size, paper.training.batch_size, paper.training.learning_rate, paper.training.patience) == (128, 4, 1e-4, 7)
    assert paper.channels == (30, 60, 120, 240, 480)
    short = get_profile("paper-short")  # the paper's scale and optimiser, cut to a 15-minute GPU lease
    assert (short.voxel_size_mm, short.patch_size, short.channels) == (1.0, 128, paper.channels)
    assert dataclasses.replace(short.training, max_epochs=paper.training.max_epochs,
                               val_every_epochs=1) == paper.training


def test_config_hash_is_order_independent():
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_cli_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    from physeg.cli.main import COMMANDS

    for name in COMMANDS:
        assert name in text
    for name in COMMANDS:
        with pytest.raises(SystemExit) as sub:
            cli.main([name, "--help"])
        assert sub.value.code == 0


# --------------------------------------------------------------------------- layout rules

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _package_modules() -> list:
    return sorted((REPO_ROOT / "physeg").rglob("*.py"))


def test_modules_and_functions_are_short():
    """Every module of physeg/ has at most 400 lines and every function at most 80 (def to last line)."""
    import ast

    long_modules, long_functions = [], []
    for path in _package_modules():
        text = path.read_text()
        rel = path.relative_to(REPO_ROOT)
        n_lines = len(text.splitlines())
        if n_lines > MAX_MODULE_LINES:
            long_modules.append(f"{rel}: {n_lines} lines")
        for node in ast.walk(ast.parse(text, filename=str(rel))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{rel}:{node.lineno} {node.name}(): {length} lines")
    message = (
        f"modules over {MAX_MODULE_LINES} lines:\n  " + "\n  ".join(long_modules or ["none"])
        + f"\nfunctions over {MAX_FUNCTION_LINES} lines:\n  " + "\n  ".join(long_functions or ["none"])
    )
    assert not long_modules and not long_functions, message


def test_no_reference_to_outside_design_notes():
    """The design is written in the repository's own words: no tracked text file names the outside notes file."""
    import subprocess

    needle = "DESIGN" + ".md"  # spelled in two parts so that this file does not match itself
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    offenders = []
    for name in filter(None, files.decode().split("\0")):
        path = REPO_ROOT / name
        if not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary
        text = data.decode("utf-8", errors="replace")
        offenders += [f"{name}:{i}" for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert not offenders, f"{needle} is mentioned in: " + ", ".join(offenders)
