"""Reference results: freeze a finished run, checksums, staleness, the three-column tables and banner."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from physeg.cli import main
from physeg.evaluation import claims as cl
from physeg.evaluation import seeds
from physeg.evaluation.paper_tables import paper_tables
from physeg.profiles import get_profile
from physeg.reference import compare, freeze, records, status

RUN_FILES = ("tables.csv", "per_image.csv", "per_seed_tables.csv", "claims.csv")


def fake_run(build, *, profile: str = "smoke", shift: float = 0.0):
    """A finished run's build folder: the CSVs notebooks 04/06 write, an executed page's header, timings.json.

    The numbers are the paper's tables (per seed, seed 0) moved by ``shift``; they go
    through the same library functions as a real run (across_seeds, results_csv_frame,
    evaluate_claims, write_csv_tables).
    """
    per_seed = paper_tables().drop(columns="source").assign(seed=0, n_subjects=5)
    per_seed["mean"] = per_seed["mean"] + shift
    summary = seeds.across_seeds(per_seed)
    per_image = pd.DataFrame({"subject": ["sub-23"] * 2, "model": ["Baseline"] * 2, "tissue": ["GM", "WM"],
                              "dice": [0.9, 0.8], "seed": [0, 0]})
    claims = cl.evaluate_claims(per_seed, profile=profile)
    seeds.write_csv_tables({"tables": seeds.results_csv_frame(summary), "per_image": per_image,
                            "per_seed_tables": per_seed, "claims": claims}, build / "results" / profile)
    nb = build / "notebooks"
    nb.mkdir(parents=True, exist_ok=True)
    header = {"profile": profile, "seeds": "0", "commit": "abc1234", "device": "CPU x86_64, 2 cores",
              "date_utc": "2026-11-25 18:00 UTC"}
    (nb / "04_evaluation.ipynb").write_text(json.dumps(
        {"cells": [{"cell_type": "markdown", "metadata": {"physeg_provenance": header}, "source": ""}]}))
    (build / "timings.json").write_text(json.dumps({"profile": profile, "seconds": {"04_evaluation.py": 12.5,
                                                                                    "06_claims.py": 3.0}}))
    return build


@pytest.fixture()
def frozen(tmp_path, isolated_cache):
    """A fake smoke run frozen with the CLI into ``tmp_path/results/smoke``."""
    cache, build = isolated_cache
    fake_run(build)
    cache.mkdir(parents=True, exist_ok=True)
    dest = tmp_path / "results"
    rc = main(["reference", "freeze", "--profile", "smoke", "--build", str(build), "--cache", str(cache),
               "--dest", str(dest), "--training-note", "one test GPU"])
    assert rc == 0
    return dest / "smoke"


def test_freeze_copies_results_with_provenance_and_checksums(frozen, isolated_cache):
    _, build = isolated_cache
    for name in RUN_FILES:
        assert (frozen / name).read_bytes() == (build / "results" / "smoke" / name).read_bytes()
    sums = records.read_sums(frozen)
    assert set(sums) == set(records.listed_files(frozen)) and records.PROVENANCE_FILE in sums
    assert records.verify_sums(frozen) == []
    prov = json.loads((frozen / records.PROVENANCE_FILE).read_text())
    smoke = get_profile("smoke")
    assert prov["profile"] == "smoke" and prov["profile_hash"] == records.profile_hash(smoke)
    assert prov["code_versions"] == records.code_versions()
    assert prov["run"]["commits"] == ["abc1234"] and prov["wall_time"]["notebooks_total_s"] == 15.5
    assert {"cpu_model", "cpu_cores", "torch"} <= set(prov["machine"]) and isinstance(prov["dirty"], bool)
    assert prov["training"] == {"devices": [], "note": "one test GPU"}  # the fake run has no models
    st = status.check_reference(frozen, profile=smoke, versions=records.code_versions())
    assert st.state == status.CURRENT and st.reasons == []
    assert main(["reference", "check", "--profile", "smoke", "--dest", str(frozen.parent)]) == 0


def test_altered_file_fails_the_check_naming_it(frozen, capsys):
    target = frozen / "tables.csv"
    text = target.read_text()
    target.write_text(text.replace("0.966", "0.967", 1))  # one number changed
    with pytest.raises(status.ReferenceAltered, match="tables.csv"):
        status.check_reference(frozen, profile=get_profile("smoke"), versions=records.code_versions())
    st = status.reference_status(frozen, profile=get_profile("smoke"), versions=records.code_versions())
    assert st.state == status.ALTERED and not st.usable and st.table("tables") is None
    assert "NOT shown" in compare.banner(st) and "tables.csv" in compare.banner(st)
    capsys.readouterr()
    assert main(["reference", "check", "--profile", "smoke", "--dest", str(frozen.parent)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "altered" in err and "tables.csv" in err
    target.write_text(text)  # restored: intact again
    (frozen / "extra.csv").write_text("a\n1\n")
    with pytest.raises(status.ReferenceAltered, match="unlisted.*extra.csv"):
        status.check_reference(frozen, profile=get_profile("smoke"), versions=records.code_versions())


def test_changed_profile_or_code_makes_it_stale(frozen, monkeypatch, capsys):
    smoke = get_profile("smoke")
    changed = dataclasses.replace(smoke, n_test=3)
    st = status.check_reference(frozen, profile=changed, versions=records.code_versions())
    assert st.state == status.STALE and st.usable
    assert "n_test 2 → 3" in st.reasons[0]
    assert "STALE" in compare.banner(st) and "n_test" in compare.banner(st)
    newer = {**records.code_versions(), "training": "999"}
    st = status.check_reference(frozen, profile=smoke, versions=newer)
    assert st.state == status.STALE and any("training code version" in r and "999" in r for r in st.reasons)
    st = status.check_reference(frozen, profile=None, versions=records.code_versions())
    assert st.state == status.STALE and "no longer exists" in st.reasons[0]
    monkeypatch.setitem(__import__("physeg.profiles").profiles.PROFILES, "smoke", changed)
    capsys.readouterr()
    assert main(["reference", "check", "--profile", "smoke", "--dest", str(frozen.parent)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stale" in err and "n_test" in err


def test_freeze_refuses_unfinished_foreign_and_existing(tmp_path, isolated_cache, capsys):
    cache, build = isolated_cache
    dest = tmp_path / "results"
    args = ["reference", "freeze", "--profile", "smoke", "--build", str(build), "--dest", str(dest)]

    def refused(message: str) -> None:
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err

    build.mkdir(parents=True, exist_ok=True)
    refused("does not exist: run the notebooks")
    fake_run(build)
    (build / "results" / "smoke" / "claims.csv").unlink()
    refused("claims.csv is missing")
    fake_run(build, profile="smoke")
    claims = pd.read_csv(build / "results" / "smoke" / "claims.csv").assign(profile="demo")
    claims.to_csv(build / "results" / "smoke" / "claims.csv", index=False)
    refused("from profile 'demo'")
    assert not dest.exists()  # nothing written by a refused freeze
    fake_run(build)
    assert main(args) == 0
    refused("use --force")
    foreign = dest / "smoke" / "notes.txt"
    foreign.write_text("mine")
    refused("notes.txt is not listed")
    assert foreign.read_text() == "mine"
    foreign.unlink()
    fake_run(build, shift=0.001)
    assert main([*args, "--force"]) == 0
    assert records.verify_sums(dest / "smoke") == []
    assert not any(p.name.startswith(".") for p in dest.iterdir())  # no temporary folder left
    other = tmp_path / "mine"
    other.mkdir()
    (other / "smoke").mkdir()
    (other / "smoke" / "x.csv").write_text("1\n")
    capsys.readouterr()
    assert main(["reference", "freeze", "--profile", "smoke", "--build", str(build), "--dest", str(other),
                 "--force"]) == 2
    assert "not written by physeg reference freeze" in capsys.readouterr().err
    assert (other / "smoke" / "x.csv").read_text() == "1\n"
    capsys.readouterr()
    assert main(["reference", "freeze", "--profile", "nope", "--build", str(build)]) == 2
    assert "unknown profile" in capsys.readouterr().err


def test_three_columns_this_run_reference_paper(frozen, isolated_cache):
    _, build = isolated_cache
    fake_run(build, shift=0.01)
    current = pd.read_csv(build / "results" / "smoke" / "tables.csv")
    st = status.reference_status(frozen, profile=get_profile("smoke"), versions=records.code_versions())
    table = compare.three_columns(current, st.table("tables"), paper_tables(), current_label="smoke (this run)")
    assert list(table.columns.get_level_values(0).unique()) == ["smoke (this run)", "reference", "paper"]
    cell = table.loc[("dice", "Baseline", "MPRAGE", "GM", "IoD")]
    assert cell[("paper", "mean")] == pytest.approx(0.966)
    assert cell[("reference", "mean")] == pytest.approx(0.966)
    assert cell[("smoke (this run)", "mean")] == pytest.approx(0.976)
    cov = compare.three_columns(current, st.table("tables"), paper_tables(), current_label="now", table="cov_x1000")
    assert set(cov.index.get_level_values("table")) == {"cov_x1000"}
    np.testing.assert_allclose(cov[("reference", "mean")], cov[("paper", "mean")])  # CoV back in ×10³ units
    no_ref = compare.three_columns(current, None, paper_tables(), current_label="now")
    assert no_ref[("reference", "mean")].isna().all() and no_ref[("now", "mean")].notna().all()
    claims_now = pd.read_csv(build / "results" / "smoke" / "claims.csv")
    both = compare.claims_three_columns(claims_now, st.table("claims"), current_label="now")
    assert list(both.columns) == ["claim", "statement", "now", "reference", "paper"]
    assert list(both["claim"]) == [1, 2, 3, 4, 5] and (both["reference"] != "–").all()
    assert (both["paper"].iloc[3:] == "n/a").all()  # no paper table for claims 4-5, also when read back from CSV
    assert list(compare.claims_three_columns(claims_now, None, current_label="now")["reference"]) == ["–"] * 5


def test_banner_says_where_the_reference_came_from(frozen, tmp_path):
    st = status.reference_status(frozen, profile=get_profile("smoke"), versions=records.code_versions())
    text = compare.banner(st)
    assert text.startswith("**Committed results `smoke`** (current") and "abc1234" in text and "results/smoke/" in text
    assert text.endswith("; models trained on ? (one test GPU).")
    absent = status.reference_status(tmp_path / "nothing" / "reference", profile=get_profile("reference"),
                                     versions=records.code_versions())
    assert absent.state == status.ABSENT and absent.table("tables") is None
    assert compare.banner(absent).startswith("**Reference results: none committed**")
    assert "physeg reference freeze --profile reference" in compare.banner(absent)


def test_sums_file_is_strict(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "a.csv").write_text("x\n")
    records.write_sums(folder)
    assert records.read_sums(folder) == {"a.csv": records.sha256_file(folder / "a.csv")}
    (folder / records.SUMS_FILE).write_text("0" * 64 + "  ../escape.csv\n")
    with pytest.raises(ValueError, match="leaves the destination"):
        records.read_sums(folder)
    (folder / records.SUMS_FILE).write_text("nothex  a.csv\n")
    with pytest.raises(ValueError, match="expected"):
        records.read_sums(folder)


def test_committed_reference_results_are_intact_and_current():
    """Every folder under results/ matches its SHA256SUMS and the current profile and code versions."""
    from physeg.profiles import PROFILES

    committed = status.committed_profiles()
    if not committed:
        pytest.skip("no reference results are committed under results/ yet")
    for name in committed:
        st = status.check_reference(records.RESULTS_ROOT / name, profile=PROFILES.get(name),
                                    versions=records.code_versions(PROFILES.get(name)))
        assert st.state == status.CURRENT, f"results/{name} is stale: {st.reasons}"
        # what the pages show: the same folder, profile and versions
        page = status.committed_reference(name)
        assert page.state == status.CURRENT and page.folder == records.RESULTS_ROOT / name
    assert status.committed_reference("no-such-profile").state == status.ABSENT


def test_side_by_side_columns_for_tables_the_paper_lacks():
    import pandas as pd

    from physeg.evaluation.interval_scores import coverage50_summary
    from physeg.reference import compare

    per = pd.DataFrame({"model": ["PSA"] * 4, "sequence": ["MPRAGE"] * 4, "tissue": ["GM"] * 4,
                        "distribution": ["IoD"] * 4, "param_index": range(4), "iqr_cal": [1.0, 2.0, 3.0, 2.0],
                        "covered50_cal": [1, 0, 1, 1], "covered50_raw": [0, 0, 1, 0],
                        "abs_error": [0.5, 1.0, 0.0, 0.5], "epi_median": [10.5, 9.0, 10.0, 10.5],
                        "pgs_volume_ml": [10.0] * 4})
    cov = coverage50_summary(per)
    row = cov.loc[("PSA", "MPRAGE", "GM", "IoD")]
    assert row["coverage50"] == 0.75 and row["coverage50_raw"] == 0.25 and row["iqr_ml"] == 2.0 and row["n"] == 4
    assert row["bias_ml"] == 0.0 and row["abs_error_ml"] == 0.5
    two = compare.side_by_side(cov, None, current_label="demo (this run)")
    assert list(two.columns.get_level_values(0).unique()) == ["demo (this run)"]
    both = compare.side_by_side(cov, cov.assign(coverage50=0.5), current_label="demo", values=["coverage50"])
    assert both[("demo", "coverage50")].iloc[0] == 0.75 and both[("reference", "coverage50")].iloc[0] == 0.5
    models = pd.DataFrame({"model": ["PSA", "PSA", "Baseline"], "sequence": ["SPGR"] * 3,
                           "val_dice_GM": [0.8, 0.9, 0.7], "epochs": [20, 20, 20]})
    val = compare.model_validation(models)
    assert val.loc[("PSA", "SPGR"), "val_dice_GM"] == pytest.approx(0.85)
    assert val.loc[("PSA", "SPGR"), "n_seeds"] == 2 and compare.model_validation(None) is None


def test_several_committed_runs_get_one_column_group_each_and_verdict_changes_are_named(frozen, isolated_cache):
    _, build = isolated_cache
    fake_run(build, shift=0.01)
    current = pd.read_csv(build / "results" / "smoke" / "tables.csv")
    st = status.reference_status(frozen, profile=get_profile("smoke"), versions=records.code_versions())
    runs = {"reference": st.table("tables"), "reference-long": current, "empty": None}
    table = compare.three_columns(current, runs, paper_tables(), current_label="now", table="dice")
    assert list(table.columns.get_level_values(0).unique()) == ["now", "reference", "reference-long", "empty", "paper"]
    cell = table.loc[("dice", "Baseline", "MPRAGE", "GM", "IoD")]
    assert cell[("reference", "mean")] == pytest.approx(0.966) and cell[("reference-long", "mean")] == pytest.approx(0.976)
    assert np.isnan(cell[("empty", "mean")])
    claims = pd.read_csv(build / "results" / "smoke" / "claims.csv")
    flipped = claims.assign(verdict=np.where(claims["claim"] == 2, "flipped", claims["verdict"]))
    both = compare.claims_three_columns(claims, {"reference": claims, "reference-long": flipped}, current_label="now")
    assert list(both.columns) == ["claim", "statement", "now", "reference", "reference-long", "paper"]
    changes = compare.verdict_changes({"reference": claims, "reference-long": flipped, "absent": None})
    assert len(changes) == 1 and changes[0].startswith("- Claim 2:") and "`reference-long` flipped" in changes[0]
    assert compare.verdict_changes({"reference": claims, "reference-long": claims}) == []
    assert compare.verdict_changes({"reference": claims}) == []


def test_banners_name_each_committed_run(frozen, tmp_path):
    st = status.reference_status(frozen, profile=get_profile("smoke"), versions=records.code_versions())
    absent = status.reference_status(tmp_path / "reference-long", profile=None, versions=records.code_versions())
    text = compare.banners({"smoke": st, "reference-long": absent})
    first, second = text.split("\n\n")
    assert first.startswith("**Committed results `smoke`** (current")
    assert second.startswith("**Committed results `reference-long`: none committed**")
    assert compare.committed_tables({"reference-long": absent}, "claims") == {"reference-long": None}


def test_freeze_records_the_cached_segmentation_time_a_reused_notebook_hides(isolated_cache):
    """Notebook 04 that reuses the evaluation cache runs in seconds; the freeze reads what it cost from the cache."""
    from physeg.evaluation import runs
    from physeg.paths import cache_root
    from physeg.training.orchestrate import FINISHED, model_folder

    profile = dataclasses.replace(get_profile("smoke"), seeds=(0, 1))
    assert freeze.cached_segmentation_s(profile) is None  # nothing trained, nothing cached
    for seed, wall in zip(profile.seeds, (120.5, 80.25)):
        folders = {}
        for name in profile.ablations:
            for seq in profile.sequences:
                folder = model_folder(name, profile=profile, sequence=seq, seed=seed)
                folder.mkdir(parents=True)
                (folder / FINISHED).write_text("{}")
                folders[(name, seq)] = folder
        out = runs.cache_folder("segmentation", profile, folders)
        out.mkdir(parents=True)
        (out / "meta.json").write_text(json.dumps({"wall_s": wall}))
    assert freeze.cached_segmentation_s(profile) == 200.8
    # asking for more uncertainty images does not change the segmentation cache it reads
    more = dataclasses.replace(profile, n_uncertainty_images=7, notes="other words")
    assert freeze.cached_segmentation_s(more) == 200.8
    inputs = freeze.FreezeInputs(source=cache_root(), segmentation_s=200.8)
    assert freeze.stage_times(inputs)["segmentation_evaluation_s"] == 200.8


def test_freeze_keeps_every_uncertainty_seed_and_refuses_a_partial_set(isolated_cache, tmp_path):
    """Claims 4-5 judge each training seed of the uncertainty variants: a freeze keeps them all (a ``seed``
    column) and refuses when only some seeds' samples are cached."""
    from types import SimpleNamespace

    import pandas as pd

    from physeg.evaluation import runs
    from physeg.training.orchestrate import FINISHED, model_folder

    per = pd.DataFrame({"model": ["Baseline"], "tissue": ["GM"], "iqr_cal": [1.0]})
    by_seed = {s: SimpleNamespace(per_image=per.assign(iqr_cal=1.0 + s), coverage=pd.DataFrame(),
                                  calibration=pd.DataFrame(), wall_s=10.0 * (s + 1)) for s in (0, 1)}
    assert freeze._write_uncertainty(by_seed, tmp_path) == ["uncertainty_per_image.csv"]
    written = pd.read_csv(tmp_path / "uncertainty_per_image.csv")
    assert written["seed"].tolist() == [0, 1] and written["iqr_cal"].tolist() == [1.0, 2.0]
    assert freeze.stage_times(freeze.FreezeInputs(source=tmp_path, uncertainty=by_seed))["uncertainty_samples_s"] == 30.0

    profile = dataclasses.replace(get_profile("smoke"), seeds=(0, 1), uncertainty_seeds=2)
    assert freeze.cached_uncertainty(profile) is None  # nothing cached: nothing to freeze, no error
    base = profile.uncertainty_models[0]
    folders = {}
    for v in ("Aleatoric", "Epistemic"):
        for seq in profile.sequences:
            folder = model_folder(f"{base}-{v}", profile=profile, sequence=seq, seed=0)
            folder.mkdir(parents=True)
            (folder / FINISHED).write_text("{}")
            folders[(f"{base}-{v}", seq)] = folder
    out = runs.cache_folder("uncertainty", profile, folders, n_samples=profile.n_uncertainty_samples)
    out.mkdir(parents=True)
    (out / "uncertainty_meta.json").write_text("{}")
    with pytest.raises(freeze.FreezeError, match=r"seed\(s\) \[1\] are not cached"):
        freeze.cached_uncertainty(profile)
