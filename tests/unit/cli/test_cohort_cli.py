"""The data commands as a newcomer meets them: describe, partition, config validate, cohorts; bad input exits 2."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == ["holdout.csv"] + [f"site-{i}.csv" for i in range(1, 6)]


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
