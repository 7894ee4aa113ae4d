"""The data commands as a newcomer meets them: describe, partition, config validate, cohorts; bad input exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from fedsynth.cli import app

runner = CliRunner()
CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def test_describe_named_cohort_as_json(data_dir):
    result = runner.invoke(app, ["describe", "--cohort", "mds-iwgpm", "--data-dir", str(data_dir), "--format", "json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["n_rows"] == 2957
    assert {c["column"] for c in info["columns"]} >= {"TP53", "OS_YEARS", "IPSSR"}
    assert "I-H-" not in result.stdout  # aggregates only, no ids


def test_describe_a_csv_and_write_its_inferred_schema(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("time,event,age,TP53,SF3B1,ASXL1\n1.5,1,60,1,0,0\n2.0,0,70,0,1,1\n0.7,1,65,0,0,1\n")
    out = tmp_path / "schema.yaml"
    result = runner.invoke(app, ["describe", str(p), "--schema-out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Survival endpoints: survival (time, event" in result.stdout
    assert "genomic" in out.read_text()


def test_malformed_csv_exits_2_with_an_actionable_message(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("a,b\n1,2\n3,4,5\n")
    result = runner.invoke(app, ["describe", str(p)])
    assert result.exit_code == 2
    assert "could not be parsed as CSV" in result.output
    assert "Traceback" not in result.output


def test_describe_needs_exactly_one_input():
    result = runner.invoke(app, ["describe"])
    assert result.exit_code == 2
    assert "give exactly one of --cohort NAME or a DATA.csv path" in result.output


def test_partition_writes_sites_holdout_and_json(data_dir, tmp_path):
    result = runner.invoke(
        app,
        ["partition", "--cohort", "mds-iwgpm", "--data-dir", str(data_dir), "--sites", "45,20,15,10,10",
         "--scenario", "worst", "--seed", "4", "--out", str(tmp_path), "--format", "json"],
    )
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "partition.json").read_text())
    assert [s["name"] for s in info["sites"]] == [f"site-{i}" for i in range(1, 6)]
    assert sum(s["n_rows"] for s in info["sites"]) == info["n_train"] == 2661
    assert info["sites"][4]["lacks"]
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == ["holdout.csv"] + [
        f for i in range(1, 6) for f in (f"site-{i}.csv", f"site-{i}.holdout.csv")]
    # each site's holdout lacks what its training file lacks (the worst-case short panel at site-5)
    assert list(pd.read_csv(tmp_path / "site-5.holdout.csv").columns) == list(pd.read_csv(tmp_path / "site-5.csv").columns)


def test_partition_rejects_bad_sites_cleanly(data_dir, tmp_path):
    result = runner.invoke(app, ["partition", "--cohort", "mds-iwgpm", "--data-dir", str(data_dir), "--sites", "60;40", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a comma-separated list of numbers" in result.output


def test_config_validate_accepts_the_smoke_config_and_names_a_typo(tmp_path):
    ok = runner.invoke(app, ["config", "validate", str(CONFIGS / "smoke.yaml")])
    assert ok.exit_code == 0, ok.output
    assert "is valid" in ok.stdout
    typo = tmp_path / "typo.yaml"
    typo.write_text("cohort: {name: mds-iwgpm}\nstrategy: {name: two_step_bn, round: 3}\n")
    bad = runner.invoke(app, ["config", "validate", str(typo)])
    assert bad.exit_code == 2
    assert "strategy.round: unknown key" in bad.output and "did you mean 'rounds'?" in bad.output


def test_cohorts_lists_the_mds_cohort_with_its_licence():
    result = runner.invoke(app, ["cohorts", "--format", "json"])
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert rows[0]["name"] == "mds-iwgpm" and "ODbL" in rows[0]["licence"]


def _odd_cohort(path: Path, n: int = 60) -> Path:
    """A made-up cohort with names nobody here chose: days, yes/no, mut_ prefix, a centre column."""
    rows = ["rec,centre,dx_date,Age,Gender,country,mut_TP53,mut_SF3B1,mut_asxl1,mut_FLT3,transfused,remarks,OS_DAYS,OS_STAT"]
    for i in range(n):
        rows.append(
            f"{100 + i},{['Leeds', 'Pavia', 'Lyon'][i % 3]},2020-01-{1 + i % 28:02d},{40 + (i * 7) % 45},{1 + i % 2},UK,"
            f"{int(i % 5 == 0)},{int(i % 3 == 1)},{int(i % 4 == 2)},0,{['yes', 'no'][i % 2]},note number {i},"
            f"{0 if i < 2 else 30 + (i * 37) % 900},{['dead', 'alive'][i % 3 == 0]}"
        )
    path.write_text("\n".join(rows) + "\n")
    return path


def test_describe_an_odd_cohort_lists_every_guess_and_writes_a_schema_that_loads_it_again(tmp_path):
    # Setup
    data = _odd_cohort(tmp_path / "odd.csv")
    schema = tmp_path / "schema.yaml"
    # Run
    result = runner.invoke(app, ["describe", str(data), "--schema-out", str(schema), "--format", "json"])
    again = runner.invoke(app, ["describe", str(data), "--schema", str(schema), "--format", "json"])
    # Assert
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    notes = "\n".join(info["notes"])
    assert "survival endpoints: OS (OS_DAYS in days, OS_STAT)" in notes
    assert "left out 'country': constant (one value in every row)" in notes
    assert "left out 'mut_FLT3': constant (one value in every row)" in notes
    assert "left out 'dx_date': a date" in notes
    assert "left out 'remarks': free text" in notes
    assert "'Gender' is coded with numbers: read as categories ['1', '2']" in notes
    assert "OS_DAYS == 0 for 2 patients (time-zero events) set to half a day (0.500000 days)" in notes
    roles = {c["name"]: c["role"] for c in info["schema"]["columns"]}
    assert roles["rec"] == "id" and roles["centre"] == "site" and roles["mut_TP53"] == "genomic"
    assert again.exit_code == 0, again.output


def test_partition_by_a_centre_column_names_sites_after_it(tmp_path):
    data = _odd_cohort(tmp_path / "odd.csv")
    result = runner.invoke(app, ["partition", str(data), "--by", "centre", "--out", str(tmp_path / "sites"), "--format", "json"])
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "sites" / "partition.json").read_text())
    assert [s["name"] for s in info["sites"]] == ["Leeds", "Lyon", "Pavia"]
    assert sorted(p.name for p in (tmp_path / "sites").glob("*.csv")) == [
        "Leeds.csv", "Leeds.holdout.csv", "Lyon.csv", "Lyon.holdout.csv", "Pavia.csv", "Pavia.holdout.csv", "holdout.csv"]


def test_partition_of_an_eight_row_file_exits_0_with_notes(tmp_path):
    data = _odd_cohort(tmp_path / "odd.csv", n=8)
    result = runner.invoke(app, ["partition", str(data), "--sites", "50,50", "--out", str(tmp_path / "s"), "--format", "json"])
    assert result.exit_code == 0, result.output
    notes = json.loads(result.stdout)["notes"]
    assert any("not stratified by 'OS_STAT'" in n for n in notes)


def test_evaluate_applies_the_time_zero_rule_to_a_csv_cut_from_the_cohort(tmp_path):
    # Setup: the partition's files (0/1, days) with durations of exactly 0 in the real file
    data = _odd_cohort(tmp_path / "odd.csv", n=90)
    assert runner.invoke(app, ["partition", str(data), "--sites", "100", "--out", str(tmp_path / "s")]).exit_code == 0
    real = tmp_path / "s" / "site-1.csv"
    text = real.read_text().splitlines()
    header = text[0].split(",")
    first = text[1].split(",")
    first[header.index("OS_DAYS")] = "0"
    real.write_text("\n".join([text[0], ",".join(first), *text[2:]]) + "\n")
    # Run
    result = runner.invoke(app, ["evaluate", "--real", str(real), "--synthetic", str(tmp_path / "s" / "holdout.csv"),
                                 "--schema", str(tmp_path / "s" / "schema.yaml"), "--out", str(tmp_path / "e"), "--format", "json"])
    # Assert
    assert result.exit_code == 0, result.output
    assert "OS_DAYS == 0 for 1 patients (time-zero events) set to half a day (0.500000 days)" in " ".join(result.output.split())


def test_run_on_an_odd_cohort_says_what_it_decided_and_records_it(tmp_path):
    # Setup: the odd CSV, a federated run by its centre column on the in-process engine
    data = _odd_cohort(tmp_path / "odd.csv", n=90)
    config = tmp_path / "run.yaml"
    config.write_text(
        f"name: odd\ncohort: {{path: {data}}}\nsites: {{by: centre}}\n"
        "generator: {name: bayesian_network, params: {max_indegree: 1}}\n"
        "strategy: {name: two_step_bn, engine: in_process, params: {secure_aggregation: true}}\n"
        "evaluation: {snapshot_rows: 60, references: [], final: none}\n"
        f"output: {{dir: {tmp_path / 'runs'}, run_id: odd}}\n"
    )
    # Run
    result = runner.invoke(app, ["run", str(config)])
    # Assert: the guesses are printed before the run and kept in the manifest
    assert result.exit_code == 0, result.output
    assert "note: " in result.output and "left out 'country': constant" in result.output
    manifest = json.loads((tmp_path / "runs" / "odd" / "manifest.json").read_text())
    assert any("left out 'remarks': free text" in n for n in manifest["notes"])
    assert {s["name"] for s in manifest["sites"]} == {"Leeds", "Pavia", "Lyon"}
