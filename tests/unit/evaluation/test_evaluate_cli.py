"""`fedsynth evaluate` registered into a Typer app: writes both reports, prints a summary, rejects bad input."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from fedsynth.cli.evaluate import register

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def noop() -> None:  # a second command so that typer keeps sub-command names
        """Nothing."""

    return app


def _csvs(mds_split, tmp_path):  # type: ignore[no-untyped-def]
    schema, holdout, a, b = mds_split
    paths = {}
    for name, frame in (("real", a.iloc[:300]), ("synthetic", b.iloc[:300].drop(columns=["ID", "IPSSR"])), ("holdout", holdout.iloc[:100])):
        paths[name] = tmp_path / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    return schema, paths


def test_evaluate_with_a_named_cohort_writes_both_reports_and_json_summary(mds_split, tmp_path):
    # Setup
    _, paths = _csvs(mds_split, tmp_path)
    out = tmp_path / "out"
    # Run
    result = runner.invoke(_app(), ["evaluate", "--real", str(paths["real"]), "--synthetic", str(paths["synthetic"]),
                                    "--holdout", str(paths["holdout"]), "--cohort", "mds-iwgpm", "--out", str(out),
                                    "--seed", "3", "--format", "json"])
    # Assert
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert 0 <= summary["csf"] <= 1 and 0 <= summary["gsf"] <= 1
    assert summary["rows"] == {"real": 300, "synthetic": 300, "holdout": 100}
    assert (out / "report.json").is_file() and (out / "report.html").is_file()
    assert json.loads((out / "report.json").read_text())["info"]["random_state"] == 3


def test_evaluate_with_a_schema_file_and_the_lifelines_engine_prints_a_text_summary(mds_split, tmp_path):
    # Setup
    schema, paths = _csvs(mds_split, tmp_path)
    schema.to_yaml(tmp_path / "schema.yaml")
    # Run
    result = runner.invoke(_app(), ["evaluate", "--real", str(paths["real"]), "--synthetic", str(paths["synthetic"]),
                                    "--schema", str(tmp_path / "schema.yaml"), "--out", str(tmp_path / "o"),
                                    "--cox-engine", "lifelines"])
    # Assert
    assert result.exit_code == 0, result.output
    assert "CSF" in result.stdout and "GSF" in result.stdout and "Privacy flags" in result.stdout
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    # the time-order rule's tie shares are in the table, as in the report
    lfs_os = next(r for r in report["survival_effects"]["endpoint_rules"] if r["type"] == "time_order")
    assert "both times equal, synthetic / real" in result.stdout
    assert f"{lfs_os['tied_synthetic']:.2f} / {lfs_os['tied_real']:.2f}" in result.stdout
    assert report["info"]["implementations"]["univariate Cox"] == "lifelines CoxPHFitter"
    assert report["survival"]["hazard_ratios"]["estimator"] == "lifelines CoxPHFitter"
    # the effects lost beside both chance counts, as in the report
    sc = report["survival_effects"]["counts"]
    text = " ".join(result.stdout.split())
    assert (f"Real-significant Cox effects lost: {sc['effects_lost']} of {sc['effects']} (expected by chance: about "
            f"{sc['expected_lost_by_chance']:.1f}") in text
    assert f"{sc['expected_lost_population']:.1f} for one faithful to their population" in text


def test_evaluate_rejects_bad_input_with_exit_code_2(mds_split, tmp_path):
    # Setup
    _, paths = _csvs(mds_split, tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("AGE,HB\nold,12\n")
    base = ["evaluate", "--real", str(paths["real"]), "--out", str(tmp_path / "o")]
    # Run
    neither = runner.invoke(_app(), base + ["--synthetic", str(paths["synthetic"])])
    invalid = runner.invoke(_app(), base + ["--synthetic", str(bad), "--cohort", "mds-iwgpm"])
    # Assert
    assert neither.exit_code == 2 and "exactly one of --cohort NAME or --schema FILE" in neither.output
    assert invalid.exit_code == 2 and "not numbers" in invalid.output and "old" not in invalid.output.replace("bold", "")
