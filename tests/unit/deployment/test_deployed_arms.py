"""A deployed run draws the control arms of ``evaluation.arms`` as a simulated run does, from its final model and
without a real reference (the coordinator holds no row); ``fedsynth run --federation`` hands the ServerApp the
criteria files' absolute paths and refuses a bad one before submitting anything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.deployment.credentials import Credentials
from fedsynth.experiments.config import ExperimentConfig, parse_config

ROOT = Path(__file__).resolve().parents[3]
runner = CliRunner()


def _config(tmp_path: Path, arms: list[Any]) -> ExperimentConfig:
    return parse_config({
        "name": "t",
        "cohort": {"name": "mds-iwgpm"},
        "sites": {"proportions": [60, 30, 10]},
        "generator": {"name": "bayesian_network", "params": {"max_indegree": 1}},
        "strategy": {"name": "two_step_bn", "params": {"secure_aggregation": False}},
        "evaluation": {"snapshot_rows": 100, "references": [], "final": "none", "arms": arms},
        "output": {"dir": str(tmp_path), "run_id": "run"},
        "seed": 3,
    })


def test_a_deployed_run_draws_its_arms_from_the_final_model_without_a_real_reference(tmp_path, data_dir) -> None:
    # Setup: the sites behind an in-process grid (same messages, same handlers as the SuperNodes)
    from fedsynth.deployment.flower_config import run_config
    from fedsynth.experiments.deployed import run_config_settings, run_deployed
    from fedsynth.experiments.run import load_partition, site_seeds
    from fedsynth.strategies.in_process import InProcessGrid
    from fedsynth.strategies.site import SiteRuntime

    criteria = str(ROOT / "configs" / "arms" / "lower_risk.yaml")
    config = _config(tmp_path, [{"criteria": criteria, "n": 80}])
    _, part = load_partition(config)
    grid = InProcessGrid([SiteRuntime(s.name, s.data, part.schema, seed)
                          for s, seed in zip(part.sites, site_seeds(config.seed, len(part.sites)), strict=True)])

    # Run
    result = run_deployed(grid, run_config(run_config_settings(config, part.schema, num_sites=len(part.sites))))

    # Assert: the arm's files, as `fedsynth arm RUN_DIR` writes them, from the run's model
    arm_dir = result.run_dir / "arms" / "lower_risk"
    for name in ("arm.csv", "arm.card.json", "arm_report.json", "arm_report.html"):
        assert (arm_dir / name).is_file(), name
    rows = pd.read_csv(arm_dir / "arm.csv")
    assert len(rows) == 80 and set(rows["IPSSR"].dropna()) <= {"Very-Low", "Low"}
    # ... without a real reference: the coordinator holds no eligible patient
    arm_report = json.loads((arm_dir / "arm_report.json").read_text())
    assert "reference" not in arm_report["header"]
    report = json.loads((result.run_dir / "report.json").read_text())
    [arm] = report["arms"]
    assert arm["name"] == "lower_risk" and arm["error"] is None and arm["kept"] is False
    assert "lower_risk" in (result.run_dir / "report.html").read_text()
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and "arms" in manifest["timings"]

    # Assert: the arm is the one `fedsynth arm` draws from the run directory at the run's seed
    from fedsynth.generators import load_generator

    assert np.isfinite(len(load_generator(result.run_dir / "model").sample(5, random_state=0)))
    again = runner.invoke(app, ["arm", criteria, str(result.run_dir), "--n", "80", "--seed", "3",
                                "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "again" / "arm.csv").read_bytes() == (arm_dir / "arm.csv").read_bytes()


def test_a_deployed_run_with_a_missing_criteria_file_is_refused_before_anything_trains(tmp_path, data_dir) -> None:
    from fedsynth.cohort.datasets import NAMED_COHORTS
    from fedsynth.deployment.flower_config import run_config
    from fedsynth.errors import ValidationError
    from fedsynth.experiments.deployed import run_config_settings, run_deployed
    from fedsynth.strategies.in_process import InProcessGrid

    config = _config(tmp_path, [str(tmp_path / "nope.yaml")])
    schema = NAMED_COHORTS["mds-iwgpm"].schema_factory()
    with pytest.raises(ValidationError, match="nope.yaml"):
        run_deployed(InProcessGrid([]), run_config(run_config_settings(config, schema, num_sites=3)))
    assert not (tmp_path / "run").exists()


def test_run_federation_passes_the_arms_criteria_as_absolute_paths_and_checks_them_first(
    tmp_path: Path, flwr_home: Path, creds: Credentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Setup: flwr run replaced by a stand-in that records the run config it was given
    from flwr.common.config import parse_config_args

    from fedsynth.deployment import processes
    from fedsynth.experiments.deployed import read_run_config

    submitted: list[ExperimentConfig] = []

    def fake_run(cmd: list[str], **_: object) -> tuple[int, str]:
        submitted.append(read_run_config(parse_config_args([cmd[cmd.index("--run-config") + 1]])).config)
        return 1, ""

    monkeypatch.setattr(processes, "run_foreground", fake_run)
    monkeypatch.chdir(ROOT)
    base = ["run", "configs/smoke.yaml", "--federation", "lab", "--superlink", "127.0.0.1:9093",
            "--root-cert", str(creds.ca_cert), "--out", str(tmp_path / "r")]

    # Run: a relative criteria path, then a missing one
    ok = runner.invoke(app, [*base, "--set", 'evaluation.arms=["configs/arms/lower_risk.yaml"]'])
    bad = runner.invoke(app, [*base, "--set", 'evaluation.arms=["configs/arms/nope.yaml"]'])

    # Assert: the ServerApp, started wherever the SuperLink was, gets the file this command saw
    assert len(submitted) == 1, ok.output
    assert [a.criteria for a in submitted[0].evaluation.arms] == [str(ROOT / "configs" / "arms" / "lower_risk.yaml")]
    # ... and a missing file is refused with exit code 2 before flwr run is called
    assert bad.exit_code == 2 and "nope.yaml" in bad.output and "no such file" in bad.output
