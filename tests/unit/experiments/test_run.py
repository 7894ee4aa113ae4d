"""One run -> one run directory: artefacts, manifest, per-round records, atomic writes, no planted value."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _overrides import with_overrides

from fedsynth.experiments.config import parse_config

PLANTED_HB = 987.654321
PLANTED_LABEL = "ZZ_PLANTED_LABEL"


def _config(tmp_path: Path, **over):  # type: ignore[no-untyped-def]
    raw = {
        "name": "t",
        "cohort": {"name": "mds-iwgpm"},
        "sites": {"proportions": [60, 30, 10]},
        "generator": {"name": "bayesian_network", "params": {"max_indegree": 1}},
        "strategy": {"name": "two_step_bn", "rounds": 1, "engine": "in_process"},
        "evaluation": {"snapshot_rows": 300, "references": ["centralized"], "final": "lite"},
        "output": {"dir": str(tmp_path), "run_id": "run-1"},
        "seed": 3,
    }
    return parse_config(with_overrides(raw, over))


@pytest.fixture()
def planted(monkeypatch, mds_cohort):  # type: ignore[no-untyped-def]
    """Runs see a partition whose smallest site holds a planted HB value and a planted label."""
    from fedsynth.cohort.partition import Site, make_partition
    from fedsynth.experiments import run as run_mod

    def load_partition(config):  # type: ignore[no-untyped-def]
        part = make_partition(mds_cohort.data, mds_cohort.schema, proportions=(0.6, 0.3, 0.1), random_state=config.seed)
        data = part.sites[2].data.copy()
        data.loc[data.index[4], "HB"] = PLANTED_HB
        data.loc[data.index[9], "WHO_2016"] = PLANTED_LABEL
        sites = (*part.sites[:2], Site("site-3", data, part.sites[2].lacks))
        return mds_cohort, type(part)(part.train, part.holdout, sites, part.schema, part.settings)

    monkeypatch.setattr(run_mod, "load_partition", load_partition)


def test_run_writes_the_run_directory_and_keeps_the_planted_value_out(tmp_path, planted) -> None:
    # Setup
    from fedsynth.experiments.run import run_experiment, site_seeds
    from fedsynth.generators import load_generator

    config = _config(tmp_path)
    events: list[str] = []

    # Run
    result = run_experiment(config, progress=lambda event, payload: events.append(event))

    # Assert: layout
    run_dir = tmp_path / "run-1"
    assert result.run_dir == run_dir
    names = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    assert {"config.yaml", "manifest.json", "metrics.jsonl", "report.json", "report.html",
            "snapshots/round-001.csv", "model/generator.json"} <= set(names)
    assert not [n for n in names if ".tmp" in n]
    # manifest: seeds from SeedSequence, fingerprint, per-site rows, timings
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert list(manifest["seeds"]["site_seeds"].values()) == site_seeds(3, 3)
    assert len(manifest["data"]["fingerprint"]) == 64
    assert [s["n_rows"] for s in manifest["sites"]] == [1597, 798, 266]
    assert manifest["timings"]["total"] > 0
    # metrics: the federated round plus the centralized reference, with CSF/GSF/NNDR and components
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(x["kind"], x["label"]) for x in lines] == [("round", "federated"), ("reference", "centralized")]
    assert all(0 <= x["csf"] <= 1 and 0 <= x["gsf"] <= 1 and x["nndr"] is not None for x in lines)
    assert "csf_components" in lines[0]["components"]
    assert events[0] == "start" and events[-1] == "done" and "round" in events
    # the model loads and samples (what `fedsynth sample` does)
    model = load_generator(run_dir / "model")
    assert len(model.sample(20, random_state=0)) == 20
    snapshot = pd.read_csv(run_dir / "snapshots" / "round-001.csv")
    assert len(snapshot) == 300
    # the strict survival figures read 10 x the training rows drawn from the final model, the rest the snapshot
    final = json.loads((run_dir / "report.json").read_text())["final"]["evaluation"]
    assert final["survival_effects"]["counts"]["synthetic_rows_for_effects"] == 10 * 2661
    assert "the evaluated table has 300" in final["survival_effects"]["sample"]
    assert final["genomics"]["n_synthetic_test_rows"] == 300
    # the planted value is in no artefact
    for path in run_dir.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="ignore")
            assert PLANTED_LABEL not in text and "987.654321" not in text and "987.6543" not in text, path
    assert not np.isclose(snapshot["HB"].astype(float), PLANTED_HB, atol=1e-6).any()


def test_a_run_killed_mid_way_keeps_its_finished_rounds(tmp_path, planted, monkeypatch) -> None:
    # Setup
    from fedsynth.experiments import run as run_mod
    from fedsynth.experiments.run import run_experiment

    monkeypatch.setattr(run_mod, "score_snapshot", lambda *a, **k: {"csf": 0.5, "gsf": 0.5, "nndr": None})

    config = _config(
        tmp_path,
        **{
            "generator.name": "vae_bgm",
            "generator.params": {"hidden_dims": [16], "latent_dim": 2, "n_components": 2, "batch_size": 256},
            "strategy.name": "fedavg",
            "strategy.rounds": 3,
            "strategy.params": {"mixture_max_iter": 5},
            "evaluation.references": [],
            "evaluation.final": "none",
            "evaluation.snapshot_rows": 100,
        },
    )

    def progress(event: str, payload) -> None:  # type: ignore[no-untyped-def]
        if event == "round" and payload["round"] == 2:
            raise KeyboardInterrupt

    # Run
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, progress=progress)

    # Assert
    run_dir = tmp_path / "run-1"
    assert sorted(p.name for p in (run_dir / "snapshots").iterdir()) == ["round-001.csv", "round-002.csv"]
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [1, 2]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert (manifest["status"], manifest["last_round"], manifest["checkpoint_step"]) == ("interrupted", 2, 1)
    # the sites' rows never touched the run directory (in process), and the lock is free again
    from fedsynth.experiments.run_state import RunLock, run_state

    assert not (run_dir / ".private" / "rows").exists()
    assert not RunLock(run_dir).held_elsewhere() and run_state(run_dir) == "interrupted"


def test_a_failed_run_records_failed_with_scrubbed_error_text(tmp_path, planted, monkeypatch) -> None:
    # Setup: the scorer fails with a message that holds a patient's value
    from fedsynth.experiments import run as run_mod
    from fedsynth.experiments.run import run_experiment

    def boom(*a, **k):  # type: ignore[no-untyped-def]
        raise ValueError("HB 987.654321 of 'ZZ_PLANTED_LABEL' overflowed")

    monkeypatch.setattr(run_mod, "score_snapshot", boom)

    # Run
    with pytest.raises(ValueError):
        run_experiment(_config(tmp_path))

    # Assert
    manifest = json.loads((tmp_path / "run-1" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"].startswith("ValueError")
    assert "987.6" not in manifest["error"] and PLANTED_LABEL not in manifest["error"]


def test_fedsynth_run_command_writes_a_run_and_prints_the_report_path(tmp_path, data_dir) -> None:
    # Setup
    import typer
    from typer.testing import CliRunner

    from fedsynth.cli.run import register

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps "run" a named subcommand
    config = Path(__file__).resolve().parents[3] / "configs" / "smoke.yaml"

    # Run
    res = CliRunner().invoke(
        app,
        ["run", str(config), "--out", str(tmp_path), "--set", "strategy.engine=in_process", "--set", "evaluation.references=[]", "--set", "evaluation.final=none",
         "--set", "generator.params.max_indegree=1", "--set", "output.run_id=cli", "--set", "evaluation.snapshot_rows=100"],
    )

    # Assert
    assert res.exit_code == 0, res.output
    assert f"Report: {tmp_path / 'cli' / 'report.html'}" in res.output.replace("\n", "")
    assert (tmp_path / "cli" / "snapshots" / "round-001.csv").is_file()


def test_fedsynth_run_reports_a_bad_config_cleanly(tmp_path) -> None:
    # Setup
    import typer
    from typer.testing import CliRunner

    from fedsynth.cli.run import register

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    bad = tmp_path / "bad.yaml"
    bad.write_text("cohort: {name: mds-iwgpm}\ngenerator: {name: ctgan}\nstrategy: {name: two_step_bn}\n")

    # Run
    res = CliRunner().invoke(app, ["run", str(bad)])

    # Assert
    assert res.exit_code == 2
    assert "two_step_bn" in res.output and "Traceback" not in res.output


def test_a_failing_reference_is_recorded_and_the_run_still_finishes(tmp_path, planted, monkeypatch) -> None:
    # Setup: the centralized reference fails (as VAE-BGM did on a 6-row site with no deaths), with a value in its text
    from fedsynth.experiments.run import run_experiment
    from fedsynth.strategies import centralized

    def boom(*a, **k):  # type: ignore[no-untyped-def]
        raise np.linalg.LinAlgError("covariance not positive definite at HB 987.654321")

    monkeypatch.setattr(centralized, "run_centralized", boom)

    # Run
    result = run_experiment(_config(tmp_path, **{"evaluation.final": "none"}))

    # Assert: the run is finished with its model and report; the failure is named, without the value
    manifest = json.loads((tmp_path / "run-1" / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert set(manifest["failed_references"]) == {"centralized"}
    assert manifest["failed_references"]["centralized"].startswith("LinAlgError") and "987.6" not in json.dumps(manifest)
    assert (result.run_dir / "model").is_dir() and (result.run_dir / "report.html").is_file()
