"""Project-level consistency: dependency lists, profiles, CLI help."""

from __future__ import annotations

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
    assert set(PROFILES) == {"smoke", "demo", "paper"}
    monkeypatch.setenv("PHYSEG_PROFILE", "smoke")
    assert get_profile().name == "smoke"
    monkeypatch.delenv("PHYSEG_PROFILE")
    assert get_profile().name == "demo"
    with pytest.raises(ValueError, match="smoke"):
        get_profile("nope")
    paper = get_profile("paper")
    assert (paper.patch_size, paper.training.batch_size, paper.training.learning_rate, paper.training.patience) == (128, 4, 1e-4, 7)
    assert paper.channels == (30, 60, 120, 240, 480)


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
