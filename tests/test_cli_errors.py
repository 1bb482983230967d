"""One error convention for every command: usage errors exit 2 with one line ``physeg <command>: error: ...``."""

from __future__ import annotations

import argparse

import pytest

from physeg.cli import build_parser, main
from physeg.cli.errors import RuntimeFailure, UsageError, run_cli, usage_errors

COMMANDS = ("paper", "data", "pgs", "simulate", "segment", "train")


def assert_usage_error(capsys, argv: list[str], command: str, message: str) -> str:
    """``main(argv)`` exits 2 and prints exactly one error line that contains ``message``."""
    rc = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"physeg {command}: error: ") and message in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------- run_cli itself
def test_run_cli_maps_exceptions_to_codes_and_one_line(capsys):
    def usage():
        raise UsageError("bad flag\nsecond line")

    def failure():
        raise RuntimeFailure("the work failed")

    def bug():
        raise KeyError("missing key")

    assert run_cli("x", lambda: None) == 0
    assert run_cli("x", usage) == 2
    assert capsys.readouterr().err == "physeg x: error: bad flag second line\n"
    assert run_cli("x", failure) == 1
    assert capsys.readouterr().err == "physeg x: error: the work failed\n"
    assert run_cli("x", bug) == 1
    assert capsys.readouterr().err == "physeg x: error: KeyError: missing key\n"


def test_usage_errors_converts_library_errors():
    with pytest.raises(UsageError, match="^no such profile$"):
        with usage_errors():
            raise KeyError("no such profile")
    with pytest.raises(OSError):  # not listed: stays what it is (a failure, exit 1)
        with usage_errors(ValueError):
            raise OSError("disk full")


# --------------------------------------------------------------------------- each command
def test_every_command_help_has_examples(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(COMMANDS) <= set(sub.choices)
    for name in COMMANDS:
        text = sub.choices[name].format_help()
        assert "examples:" in text and f"physeg {name}" in text, name


def test_data_unknown_profile(capsys):
    assert_usage_error(capsys, ["data", "verify", "--profile", "nope"], "data verify", "unknown profile 'nope'")


def test_data_build_unknown_profile(capsys):
    assert_usage_error(capsys, ["data", "build", "--profile", "nope"], "data build", "unknown profile")


def test_pgs_missing_maps(capsys, tmp_path):
    assert_usage_error(capsys, ["pgs", "--output", str(tmp_path / "o")], "pgs", "give the maps")
    assert not (tmp_path / "o").exists()


def test_pgs_bids_without_subject(capsys, tmp_path):
    assert_usage_error(capsys, ["pgs", "--bids", str(tmp_path), "--output", str(tmp_path / "o")], "pgs",
                       "--bids needs --subject")


def test_simulate_missing_parameter(capsys, tmp_path):
    assert_usage_error(capsys, ["simulate", "--sequence", "SPGR", "-o", str(tmp_path / "o")], "simulate",
                       "SPGR needs --tr --te --fa")


def test_train_unknown_profile_from_environment(capsys, monkeypatch):
    monkeypatch.setenv("PHYSEG_PROFILE", "nope")
    assert_usage_error(capsys, ["train"], "train", "unknown profile 'nope'")


def test_train_cuda_unavailable(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert_usage_error(capsys, ["train", "--profile", "smoke", "--device", "cuda"], "train", "CUDA is not available")


def test_paper_missing_notebooks_folder(capsys, tmp_path):
    assert_usage_error(capsys, ["paper", "--profile", "smoke", "--notebooks", str(tmp_path / "none")], "paper",
                       "does not exist")


def test_paper_empty_notebooks_folder_keeps_earlier_results(capsys, tmp_path, isolated_cache):
    _, build = isolated_cache
    earlier = build / "notebooks" / "00_overview.ipynb"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("{}")
    (tmp_path / "nb").mkdir()
    assert_usage_error(capsys, ["paper", "--profile", "smoke", "--notebooks", str(tmp_path / "nb")], "paper",
                       "no numbered notebooks")
    assert earlier.read_text() == "{}"


def test_paper_only_matches_nothing(capsys, tmp_path):
    (tmp_path / "00_a.py").write_text("")
    assert_usage_error(capsys, ["paper", "--profile", "smoke", "--notebooks", str(tmp_path), "--only", "07"],
                       "paper", "matches none")


def test_paper_full_run_refuses_foreign_files_in_build_folder(capsys, tmp_path, isolated_cache):
    _, build = isolated_cache
    mine = build / "notebooks" / "thesis.docx"
    mine.parent.mkdir(parents=True)
    mine.write_text("precious")
    (tmp_path / "00_a.py").write_text("")
    assert_usage_error(capsys, ["paper", "--profile", "smoke", "--notebooks", str(tmp_path), "--no-site"],
                       "paper", "thesis.docx")
    assert mine.read_text() == "precious"


def test_segment_not_a_model_folder(capsys, tmp_path):
    assert_usage_error(capsys, ["segment", str(tmp_path / "none.nii.gz"), "--ti", "0.9", "--model", str(tmp_path),
                                "-o", str(tmp_path / "o")], "segment", "not a physeg model folder")


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["pgs", "--pd", "x.nii.gz"])  # --output is required
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines() == ["physeg pgs: error: the following arguments are required: --output/-o "
                                        "(see physeg pgs --help)"]


def test_an_invalid_choice_is_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--models", "Nope"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(lines) == 1
    assert lines[0].startswith("physeg train: error: argument --models: invalid choice: 'Nope'")


def test_train_negative_workers(capsys):
    assert_usage_error(capsys, ["train", "--profile", "smoke", "--workers", "-1"], "train", "--workers must be >= 0")


def test_train_unknown_augmentation_arm(capsys):
    assert_usage_error(capsys, ["train", "--profile", "smoke", "--device", "cpu", "--augmentation", "nope"], "train",
                       "unknown augmentation arm(s) ['nope']")


def test_arm_jobs_are_phys_strat_aug_per_sequence_and_arm_with_the_first_seed():
    from physeg.profiles import get_profile
    from physeg.training.orchestrate import arm_jobs

    prof = get_profile("reference-long")
    jobs = arm_jobs(prof, ["physics"])
    assert [(j.model, j.sequence, j.seed, j.augmentation) for j in jobs] == [
        ("Phys-Strat-Aug", "MPRAGE", 0, "physics"), ("Phys-Strat-Aug", "SPGR", 0, "physics")]
    assert len(arm_jobs(prof)) == 2 * len(prof.sequences)


def test_train_all_seeds_with_a_subset_is_a_usage_error(capsys):
    assert_usage_error(capsys, ["train", "--profile", "smoke", "--device", "cpu", "--all-seeds", "--seed", "1"],
                       "train", "--all-seeds trains every model, sequence and seed")
