"""``fedsynth export``: the released CSV, its dictionary and card, the gate, the teaching notebook, the short card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from fedsynth.cohort.schema import ColumnKind, ColumnRole, ColumnSpec, SurvivalEndpoint, TableSchema

runner = CliRunner()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    from fedsynth.cli import evaluate, export, generate

    app = typer.Typer()
    for module in (evaluate, export, generate):
        module.register(app)
    return app


@pytest.fixture(scope="module")
def fitted(mds_cohort, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """A Bayesian network fitted on the MDS cohort's seeded split, saved as ``fedsynth fit`` saves it, with the
    split written as files (what a user would give as --real/--holdout)."""
    from fedsynth.cohort.io import write_csv
    from fedsynth.cohort.partition import train_holdout_split
    from fedsynth.experiments.export import write_fit_manifest
    from fedsynth.generators import make_generator

    out = tmp_path_factory.mktemp("fit") / "bn"
    schema = mds_cohort.schema
    train, holdout = train_holdout_split(mds_cohort.data, schema, holdout_fraction=0.1, random_state=0)
    gen = make_generator("bayesian_network", schema, max_indegree=2)
    gen.fit(train[schema.model_columns])
    gen.save(out / "model")
    write_fit_manifest(out, cohort=mds_cohort, generator="bayesian_network", params={"max_indegree": 2}, seed=0,
                       holdout_fraction=0.1, n_train=len(train), n_holdout=len(holdout))
    data = schema.data_columns
    write_csv(train[data], out / "train_real.csv", schema)
    write_csv(holdout[data], out / "holdout_real.csv", schema)
    return {"dir": out, "train": train, "holdout": holdout, "schema": schema}


@pytest.fixture(scope="module")
def exported(app: typer.Typer, fitted: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "teaching"
    d = fitted["dir"]
    result = runner.invoke(app, ["export", str(d), "--purpose", "teaching", "--n", "800", "--seed", "4",
                                 "--real", str(d / "train_real.csv"), "--holdout", str(d / "holdout_real.csv"),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_dictionary_lists_every_column_of_the_csv(exported: Path, mds_cohort) -> None:  # type: ignore[no-untyped-def]
    # Setup
    csv = pd.read_csv(exported / "synthetic.csv")
    dictionary = json.loads((exported / "data_dictionary.json").read_text())
    # Assert: one entry per column, in order, and no real identifier
    assert [d["column"] for d in dictionary] == list(csv.columns)
    assert csv.columns[0] == "synthetic_id" and csv["synthetic_id"].is_unique
    assert mds_cohort.schema.id_column not in csv.columns
    assert pd.read_csv(exported / "data_dictionary.csv")["column"].tolist() == list(csv.columns)
    # Complete for mds-iwgpm: every column has a meaning, every numeric column a unit
    for d in dictionary:
        assert d["meaning"] and not d["meaning"].startswith("(no description"), d["column"]
        if d["kind"] in ("continuous", "integer"):
            assert d["unit"], d["column"]
    by_name = {d["column"]: d for d in dictionary}
    assert by_name["OS_YEARS"]["unit"] == "years" and by_name["OS_YEARS"]["endpoint"] == "OS time"
    assert by_name["WBC"]["unit"] == "x10^9/L" and "truncated" in by_name["WBC"]["meaning"]
    assert by_name["MONOCYTES"]["missing_rate"] == pytest.approx(csv["MONOCYTES"].isna().mean())


def test_card_licence_and_attribution_equal_the_source_cohorts(exported: Path) -> None:
    from fedsynth.cohort.datasets import NAMED_COHORTS

    # Setup
    card = json.loads((exported / "card.json").read_text())
    entry = NAMED_COHORTS["mds-iwgpm"]
    # Assert
    assert card["licence"]["licence"] == entry.licence
    assert card["licence"]["licence_id"] == "ODbL-1.0"
    assert card["licence"]["attribution"] == entry.citation
    assert entry.citation in card["cite"]
    html = (exported / "card.html").read_text()
    assert "ODbL-1.0" in html and "NEJM Evidence 2022" in html
    assert card["statement"] == "SYNTHETIC DATA — NOT REAL PATIENTS" and card["statement"] in html
    assert "no differential privacy" in card["made"]["differential_privacy"]


def test_licence_of_an_unknown_cohort_is_the_one_given_or_unknown() -> None:
    from fedsynth.errors import Problem
    from fedsynth.experiments.card import UNKNOWN_LICENCE, source_licence

    # Run
    given = source_licence("my_cohort", licence="CC-BY-4.0", attribution="St Elsewhere Hospital")
    unknown = source_licence("my_cohort")
    problems: list[Problem] = []
    source_licence("mds-iwgpm", licence="CC0", problems=problems)
    # Assert
    assert given["licence"] == "CC-BY-4.0" and given["attribution"] == "St Elsewhere Hospital"
    assert unknown["licence"] == UNKNOWN_LICENCE and unknown["attribution"].startswith("unknown")
    assert len(problems) == 1 and "fixed" in problems[0].found


def test_card_figures_equal_fedsynth_evaluate_on_the_same_files(
    app: typer.Typer, exported: Path, fitted: dict[str, Any], tmp_path: Path
) -> None:
    # Setup
    d = fitted["dir"]
    card = json.loads((exported / "card.json").read_text())
    # Run
    result = runner.invoke(app, ["evaluate", "--real", str(d / "train_real.csv"), "--synthetic",
                                 str(exported / "synthetic.csv"), "--holdout", str(d / "holdout_real.csv"),
                                 "--cohort", "mds-iwgpm", "--seed", "4", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rep = json.loads((tmp_path / "report.json").read_text())
    # Assert: exactly the same numbers
    pv = rep["privacy"]
    assert card["fidelity"]["csf"] == rep["scores"]["csf"]["value"]
    assert card["fidelity"]["gsf"] == rep["scores"]["gsf"]["value"]
    assert card["privacy"]["nndr_p5"] == pv["nndr"]["synthetic"]["p5"]
    assert card["privacy"]["nndr_p5_holdout"] == pv["nndr"]["holdout"]["p5"]
    assert card["privacy"]["dcr_share"] == pv["dcr_share"]
    assert card["privacy"]["mia_auc"] == pv["mia_auc"]
    assert card["privacy"]["exact_copies"] == pv["exact_copies"]


class _CopyingModel:
    """A 'generator' that releases the training rows themselves: the control the gate must refuse."""

    def __init__(self, real, schema) -> None:  # type: ignore[no-untyped-def]
        self.real, self.schema, self.name = real, schema, "bayesian_network"

    def sample(self, n_samples: int, *, random_state: int) -> pd.DataFrame:
        return self.real.iloc[:n_samples].reset_index(drop=True)

    def get_params(self) -> dict[str, Any]:
        return {}


def test_gate_refuses_a_copy_of_the_training_rows_and_releases_it_with_a_recorded_reason(
    app: typer.Typer, fitted: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fedsynth.generators

    # Setup
    d = fitted["dir"]
    train = pd.read_csv(d / "train_real.csv")
    copier = _CopyingModel(fitted["schema"].coerce(train), fitted["schema"])
    monkeypatch.setattr(fedsynth.generators, "load_generator", lambda path: copier)
    # the whole training pool, so that every member is found by the attacker
    args = ["export", str(d), "--n", str(len(train)), "--real", str(d / "train_real.csv"), "--holdout", str(d / "holdout_real.csv")]
    # Run: refused
    refused = runner.invoke(app, [*args, "--out", str(tmp_path / "refused")])
    # Assert
    assert refused.exit_code == 2
    assert "Traceback" not in refused.output
    message = " ".join(refused.output.split())
    for figure in ("exact copies", "NNDR 5th percentile", "membership-inference AUC", "--allow-flagged"):
        assert figure in message, message
    assert not (tmp_path / "refused").exists()
    # Run: released with a reason
    reason = "classroom demo of what a leaking generator looks like"
    allowed = runner.invoke(app, [*args, "--out", str(tmp_path / "allowed"), "--allow-flagged", reason])
    # Assert
    assert allowed.exit_code == 0, allowed.output
    card = json.loads((tmp_path / "allowed" / "card.json").read_text())
    assert card["privacy"]["released_despite_flags"] == reason
    assert [f["figure"] for f in card["privacy"]["gate"]["flags"]] == ["exact_copies", "nndr_p5", "mia_auc"]
    assert reason in (tmp_path / "allowed" / "card.html").read_text()
    assert reason in (tmp_path / "allowed" / "card.md").read_text()


def test_teaching_notebook_runs_and_reproduces_the_survival_analysis(exported: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    # Setup
    nb = nbformat.read(str(exported / "survival_analysis.ipynb"), as_version=4)
    card = json.loads((exported / "card.json").read_text())
    # Run
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(exported)}}).execute()
    # Assert
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "log-rank test: p =" in text and "concordance on the test rows:" in text
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the Kaplan-Meier plot was drawn
    assert card["teaching"]["group_col"] in "".join(c.source for c in nb.cells)
    train, test = pd.read_csv(exported / "train.csv"), pd.read_csv(exported / "test.csv")
    assert len(train) + len(test) == 800 and len(test) == 160
    assert set(train["synthetic_id"]).isdisjoint(test["synthetic_id"])


def test_teaching_split_is_seeded() -> None:
    from fedsynth.experiments.export import teaching_split

    frame = pd.DataFrame({"x": range(50)})
    a_train, a_test = teaching_split(frame, random_state=1)
    _, b_test = teaching_split(frame, random_state=1)
    assert a_test.equals(b_test) and len(a_test) == 10 and len(a_train) == 40
    assert not teaching_split(frame, random_state=2)[1].equals(a_test)


def _toy(names: dict[str, str]) -> tuple[pd.DataFrame, TableSchema]:
    """Two candidate 0/1 columns: 'strong' splits survival, 'weak' does not (names given by the caller)."""
    rng = np.random.default_rng(0)
    n = 400
    strong = (rng.random(n) < 0.3).astype(float)
    weak = (rng.random(n) < 0.4).astype(float)
    time = rng.exponential(np.where(strong == 1, 1.0, 5.0)) + 0.01
    frame = pd.DataFrame({names["weak"]: weak, names["strong"]: strong, names["age"]: rng.normal(60, 10, n),
                          names["t"]: time, names["e"]: (rng.random(n) < 0.8).astype(float)})
    k, r = ColumnKind, ColumnRole
    schema = TableSchema((
        ColumnSpec(names["weak"], k.BINARY, r.GENOMIC), ColumnSpec(names["strong"], k.BINARY, r.GENOMIC),
        ColumnSpec(names["age"], k.CONTINUOUS, r.CLINICAL, description="age, years"),
        ColumnSpec(names["t"], k.CONTINUOUS, r.OUTCOME), ColumnSpec(names["e"], k.BINARY, r.OUTCOME),
    ), (SurvivalEndpoint("OS", names["t"], names["e"], "months"),), "toy")
    return frame, schema


def test_teaching_analysis_is_chosen_by_role_and_data_not_by_name() -> None:
    from fedsynth.experiments.export import choose_analysis

    # Setup: the same data under plain and under random names
    plain = {"weak": "GENE_A", "strong": "GENE_B", "age": "AGE", "t": "OS_TIME", "e": "OS_EVENT"}
    random = {"weak": "q8x", "strong": "zz1", "age": "k0", "t": "w2", "e": "p9"}
    # Run
    a = choose_analysis(*_toy(plain))
    b = choose_analysis(*_toy(random))
    # Assert
    assert a is not None and b is not None
    assert (a.group_col, b.group_col) == ("GENE_B", "zz1")
    assert a.covariates == ("AGE",) and b.covariates == ("k0",) and a.time_unit == "months"
    assert a.logrank_p == pytest.approx(b.logrank_p)


def test_dictionary_on_a_small_table_by_hand() -> None:
    from fedsynth.experiments.export import data_dictionary, for_release

    # Setup
    frame, schema = _toy({"weak": "G1", "strong": "G2", "age": "AGE", "t": "T", "e": "E"})
    frame.loc[:99, "AGE"] = np.nan  # 100 of 400 missing
    # Run
    d = {e["column"]: e for e in data_dictionary(for_release(frame, schema), schema)}
    # Assert
    assert list(d) == ["synthetic_id", "G1", "G2", "AGE", "T", "E"]
    assert d["AGE"]["missing_rate"] == 0.25 and (d["AGE"]["meaning"], d["AGE"]["unit"]) == ("age", "years")
    assert d["T"]["unit"] == "months" and d["E"]["endpoint"] == "OS event" and d["G1"]["categories"] == ["0", "1"]


def test_sample_writes_a_short_card_with_provenance_and_licence(app: typer.Typer, fitted: dict[str, Any],
                                                                 tmp_path: Path) -> None:
    from fedsynth.cohort.datasets import NAMED_COHORTS

    # Run
    result = runner.invoke(app, ["sample", str(fitted["dir"] / "model"), "--n", "50", "--seed", "2",
                                 "--condition", "TP53=1", "--out", str(tmp_path / "arm.csv")])
    # Assert
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "arm.card.json").read_text())
    assert card["form"] == "short" and card["statement"].startswith("SYNTHETIC")
    assert card["licence"]["licence"] == NAMED_COHORTS["mds-iwgpm"].licence
    assert card["made"]["generator"] == "bayesian_network" and card["made"]["n_train"] == len(fitted["train"])
    assert card["sample"] == {"seed": 2, "conditions": {"TP53": 1.0}, "where": None}


def test_export_from_a_bare_model_without_real_rows_says_what_to_give(app: typer.Typer, fitted: dict[str, Any],
                                                                       tmp_path: Path) -> None:
    import shutil

    # Setup: the model folder alone, away from its fit folder's manifest
    bare = tmp_path / "model"
    shutil.copytree(fitted["dir"] / "model", bare)
    # Run
    result = runner.invoke(app, ["export", str(bare), "--n", "100", "--out", str(tmp_path / "x")])
    # Assert
    assert result.exit_code == 2 and "--real" in result.output and "Traceback" not in result.output


def _fake_run(fitted: dict[str, Any], mds_cohort, folder: Path, fingerprint: str) -> Path:  # type: ignore[no-untyped-def]
    import shutil

    import yaml

    run = folder / "smoke-run"
    shutil.copytree(fitted["dir"] / "model", run / "model")
    config = yaml.safe_load((Path(__file__).resolve().parents[3] / "configs" / "smoke.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "manifest.json").write_text(json.dumps({
        "run_id": "smoke-run", "data": {"cohort": "mds-iwgpm", "fingerprint": fingerprint},
        "strategy": {"name": "two_step_bn", "rounds": 1}, "seeds": {"seed": 0}, "sites": [],
    }))
    return run


def test_a_run_directory_reloads_its_pooled_training_rows_and_holdout(fitted: dict[str, Any], mds_cohort,  # type: ignore[no-untyped-def]
                                                                     tmp_path: Path) -> None:
    from fedsynth.errors import ValidationError
    from fedsynth.experiments.config import load_config
    from fedsynth.experiments.export import resolve_source, training_rows
    from fedsynth.experiments.run import load_partition

    # Setup
    run = _fake_run(fitted, mds_cohort, tmp_path, mds_cohort.fingerprint())
    _, part = load_partition(load_config(run / "config.yaml"))
    # Run
    source = resolve_source(run)
    train, holdout = training_rows(source)
    # Assert: the sites' rows pooled, and the holdout, as the run had them
    assert source.kind == "run" and source.model_dir == run / "model"
    pd.testing.assert_frame_equal(train, part.train)
    pd.testing.assert_frame_equal(holdout, part.holdout)
    assert sum(s.n_rows for s in part.sites) == len(train)
    # Run: data that changed since the run is refused
    other = _fake_run(fitted, mds_cohort, tmp_path / "other", "0" * 64)
    with pytest.raises(ValidationError, match="fingerprint mismatch"):
        training_rows(resolve_source(other))


def test_the_models_survival_warnings_are_known_limitations_of_the_card(
    app: typer.Typer, fitted: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedsynth.generators.base import BaseGenerator

    # Setup: the network says nothing of its survival (control: the card exported above); here it is made to
    note = "LFS is likely still too short for every row: the model's survival calibration already lengthened them."
    monkeypatch.setattr(BaseGenerator, "survival_notes", lambda self: [note])
    d = fitted["dir"]
    # Run
    result = runner.invoke(app, ["export", str(d), "--purpose", "teaching", "--n", "300", "--seed", "4",
                                 "--real", str(d / "train_real.csv"), "--holdout", str(d / "holdout_real.csv"),
                                 "--out", str(tmp_path / "t")])
    # Assert: the card lists it among its known limitations, in JSON, Markdown and HTML
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "t" / "card.json").read_text())
    assert card["fidelity"]["limitations"][-1] == note
    assert note in (tmp_path / "t" / "card.md").read_text()
    assert "lengthened them." in (tmp_path / "t" / "card.html").read_text()


def test_a_network_card_has_no_survival_warning(exported: Path) -> None:
    card = json.loads((exported / "card.json").read_text())
    assert not any("survival calibration" in lim for lim in card["fidelity"]["limitations"])
