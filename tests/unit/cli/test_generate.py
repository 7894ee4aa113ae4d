"""``fedsynth fit`` and ``fedsynth sample`` on a small CSV with the Bayesian network; bad settings exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from fedsynth.cli.generate import register

runner = CliRunner()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture(scope="module")
def csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    n = 200
    tp53 = (rng.random(n) < 0.2).astype(int)
    hb = np.round(rng.normal(10, 2, n), 1)
    hb[rng.random(n) < 0.1] = np.nan
    frame = pd.DataFrame({
        "age": rng.integers(40, 90, n),
        "hb": hb,
        "sex": rng.choice(["F", "M"], n),
        "TP53": tp53,
        "SF3B1": np.where(tp53 == 1, 0, (rng.random(n) < 0.3).astype(int)),
        "time": np.round(rng.exponential(np.where(tp53 == 1, 1.0, 4.0)) + 0.05, 2),
        "event": (rng.random(n) < 0.6).astype(int),
    })
    path = tmp_path_factory.mktemp("data") / "toy.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def fitted_dir(app: typer.Typer, csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "bn"
    result = runner.invoke(app, ["fit", str(csv), "--generator", "bayesian_network", "--set", "max_indegree=2",
                                 "--set", "equivalent_sample_size=2.5", "--seed", "3", "--n", "150", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_fit_writes_the_model_a_synthetic_cohort_and_a_report(fitted_dir: Path) -> None:
    # Assert
    import json

    assert (fitted_dir / "report.html").is_file()
    assert "scores" in json.loads((fitted_dir / "report.json").read_text())

    assert (fitted_dir / "model" / "generator.json").is_file()
    meta = json.loads((fitted_dir / "model" / "generator.json").read_text())
    assert meta["generator"] == "bayesian_network"
    assert meta["params"]["max_indegree"] == 2 and meta["params"]["equivalent_sample_size"] == 2.5
    synthetic = pd.read_csv(fitted_dir / "synthetic.csv")
    assert len(synthetic) == 150
    assert {"age", "hb", "sex", "TP53", "time", "event"} <= set(synthetic.columns)


def test_sample_under_conditions_writes_rows_that_meet_them(app: typer.Typer, fitted_dir: Path, tmp_path: Path) -> None:
    # Run
    out = tmp_path / "arm.csv"
    result = runner.invoke(app, ["sample", str(fitted_dir / "model"), "--n", "40", "--condition", "TP53=1",
                                 "--condition", "sex=F", "--condition", "sex=M", "--where", "age >= 50",
                                 "--seed", "1", "--out", str(out)])

    # Assert
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out)
    assert len(rows) == 40 and (rows["TP53"] == 1).all() and (rows["age"] >= 50).all()
    assert rows["sex"].isin(["F", "M"]).all()


def test_sample_with_the_same_seed_gives_the_same_file(app: typer.Typer, fitted_dir: Path, tmp_path: Path) -> None:
    paths = [tmp_path / "a.csv", tmp_path / "b.csv"]
    for p in paths:
        assert runner.invoke(app, ["sample", str(fitted_dir / "model"), "--n", "30", "--seed", "9", "--out", str(p)]).exit_code == 0
    assert paths[0].read_text() == paths[1].read_text()


def test_unknown_and_malformed_settings_exit_2_listing_valid_names(app: typer.Typer, csv: Path, tmp_path: Path) -> None:
    # Run
    result = runner.invoke(app, ["fit", str(csv), "--generator", "bayesian_network", "--set", "epochs=3",
                                 "--set", "nonsense", "--out", str(tmp_path / "x")])

    # Assert
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "Generator settings has 2 problems" in text
    assert "--set epochs: is not a parameter of bayesian_network; valid: score, max_indegree" in text
    assert "--set 'nonsense': is not of the form key=value" in text
    assert not (tmp_path / "x").exists()


def test_bad_setting_value_is_reported_by_the_generator(app: typer.Typer, csv: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["fit", str(csv), "--generator", "bayesian_network", "--set", "score=aic",
                                 "--no-report", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "The 'score' parameter of BayesianNetworkGenerator must be a str among {'bic', 'bdeu'}. Got 'aic' instead." in text


def test_condition_on_an_unknown_column_exits_2(app: typer.Typer, fitted_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["sample", str(fitted_dir / "model"), "--n", "5", "--condition", "FLT3=1",
                                 "--out", str(tmp_path / "c.csv")])
    assert result.exit_code == 2
    assert "--condition FLT3: no such column" in " ".join(result.output.split())


def test_every_sampling_problem_is_listed_before_any_sampling(app: typer.Typer, fitted_dir: Path, tmp_path: Path) -> None:
    # Run: a misspelled category beside a valid one, an unknown column, an unknown name in --where
    result = runner.invoke(app, ["sample", str(fitted_dir / "model"), "--n", "5", "--condition", "sex=F",
                                 "--condition", "sex=female", "--condition", "FLT3=1", "--where", "hb > 9 and blasts < 5",
                                 "--out", str(tmp_path / "c.csv")])
    # Assert
    text = " ".join(result.output.split())
    assert result.exit_code == 2
    assert "Sampling inputs has 3 problems" in text
    assert "--condition sex: sex has no category 'female'; valid: F, M" in text
    assert "--where: refers to no column 'blasts'" in text
    assert not (tmp_path / "c.csv").exists()


def test_a_where_no_sampled_row_can_meet_exits_2_before_sampling(app: typer.Typer, fitted_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["sample", str(fitted_dir / "model"), "--n", "5", "--where", "age > 500",
                                 "--out", str(tmp_path / "c.csv")])
    assert result.exit_code == 2
    assert "--where: asks for age outside the range the model samples it in" in " ".join(result.output.split())


def test_rejection_sampling_stops_at_max_tries_and_names_the_option(app: typer.Typer, fitted_dir: Path, tmp_path: Path) -> None:
    # Run: both conditions are possible alone, never together (the model never drew such a pair here)
    result = runner.invoke(app, ["sample", str(fitted_dir / "model"), "--n", "5", "--where", "age > 88 and hb > 15 and hb < 15.01",
                                 "--max-tries", "2", "--out", str(tmp_path / "c.csv")])
    # Assert
    text = " ".join(result.output.split())
    assert result.exit_code == 2
    assert "of 5 requested rows met the conditions" in text
    assert "raise --max-tries (now 2)" in text


def test_fit_on_an_eight_row_file_falls_back_to_an_unstratified_split(app: typer.Typer, csv: Path, tmp_path: Path) -> None:
    # Setup
    small = tmp_path / "small.csv"
    small.write_text("\n".join(csv.read_text().splitlines()[:9]) + "\n")
    # Run
    result = runner.invoke(app, ["fit", str(small), "--generator", "bayesian_network", "--out", str(tmp_path / "fit")])
    # Assert
    text = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert "not stratified by 'event': 8 rows are too few to hold out every event status" in text
    assert "Fitted bayesian_network on 7 training rows (1 held out)" in text
