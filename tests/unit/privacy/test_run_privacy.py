"""The ε a run spent reaches its manifest, its report (report.json and a visible line in report.html's privacy
section) and every export's data card; a run over a site's budget stops with one message before releasing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedsynth.experiments.config import parse_config
from fedsynth.experiments.run import _dp_statement


def _fedavg_manifest() -> dict:
    return {"privacy": {"budget": {"epsilon": 3.0, "delta": 1e-5}, "epsilon_spent": 2.9999,
                        "accountant": "DP-SGD: dp_accounting", "split": {"training": 0.85, "mixture": 0.15}}}


def test_dp_statement_names_spent_epsilon_budget_and_accountant() -> None:
    text = _dp_statement(_fedavg_manifest())
    assert text == ("differential privacy: (epsilon, delta) = (3, 1e-05) spent of a budget of epsilon 3 "
                    "(accountant: DP-SGD: dp_accounting)")
    assert _dp_statement({"privacy": {"budget": None, "note": "no privacy block"}}) is None


def test_card_provenance_carries_the_runs_epsilon() -> None:
    from fedsynth.experiments.card import _epsilon_statement

    sentence, spent = _epsilon_statement(_fedavg_manifest())
    assert spent == 2.9999 and "spent of a budget of epsilon 3" in sentence


@pytest.mark.slow
def test_private_fedavg_run_states_its_epsilon_in_manifest_report_and_export(tmp_path: Path) -> None:
    # Setup: a short private FedAvg VAE-BGM run
    from fedsynth.experiments.export import export_cohort, resolve_source
    from fedsynth.experiments.run import run_experiment

    config = parse_config({
        "name": "dp", "cohort": {"name": "mds-iwgpm"}, "sites": {"proportions": [60, 30, 10]},
        "generator": {"name": "vae_bgm", "params": {"hidden_dims": [32], "latent_dim": 4, "n_components": 2,
                                                    "batch_size": 256, "device": "cpu"}},
        "strategy": {"name": "fedavg", "rounds": 1, "local_epochs": 1, "engine": "in_process"},
        "evaluation": {"snapshot_rows": 300, "references": [], "final": "lite"},
        "output": {"dir": str(tmp_path), "run_id": "dp-1"}, "seed": 0,
        "privacy": {"epsilon": 3.0, "delta": 1e-5},
    })
    # Run
    run_experiment(config)
    run_dir = tmp_path / "dp-1"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    # Assert: manifest, report.json, report.html
    priv = manifest["privacy"]
    assert 0 < priv["epsilon_spent"] <= 3.0 * (1 + 1e-9)
    assert set(priv["split"]) == {"hello", "domain", "training", "mixture"} and len(priv["sites"]) == 3
    report = json.loads((run_dir / "report.json").read_text())
    assert report["differential_privacy"]["epsilon_spent"] == priv["epsilon_spent"]
    html = (run_dir / "report.html").read_text()
    assert "Differential privacy: (epsilon, delta) = (" in html and "spent of a budget of epsilon 3" in html
    # the sentence's first letter goes up, the rest keeps its case (Jinja's capitalize lowered "RDP", "Gaussian")
    assert "(accountant: DP-SGD: dp_accounting RDP of the Poisson-sampled Gaussian" in html
    # ... and the export's data card
    out = tmp_path / "export"
    result = export_cohort(resolve_source(run_dir), n_samples=200, out_dir=out, allow_flagged="test of the card")
    assert result.card["made"]["epsilon"] == priv["epsilon_spent"]
    assert "spent of a budget of epsilon 3" in (out / "card.md").read_text()
    assert "(accountant: DP-SGD: dp_accounting RDP of the Poisson-sampled Gaussian" in (out / "card.md").read_text()
    assert "(accountant: DP-SGD: dp_accounting RDP of the Poisson-sampled Gaussian" in (out / "card.html").read_text()
