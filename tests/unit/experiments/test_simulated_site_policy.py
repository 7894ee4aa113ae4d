"""``fedsynth run`` (simulation, in process) gives every simulated site the ``site-policy.yaml`` beside the
cohort's file, as a deployed site reads the one beside its data; without one, the safe defaults."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "smoke.yaml"


def _run(tmp_path: Path, data: Path, *sets: str):  # type: ignore[no-untyped-def]
    import typer
    from typer.testing import CliRunner

    from fedsynth.cli.run import register

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps "run" a named subcommand
    args = ["run", str(CONFIG), "--out", str(tmp_path / "runs"), "--set", f"cohort.data_dir={data}",
            "--set", "strategy.engine=in_process", "--set", "evaluation.references=[]",
            "--set", "evaluation.final=none", "--set", "generator.params.max_indegree=1",
            "--set", "evaluation.snapshot_rows=100"]
    for s in sets:
        args += ["--set", s]
    return CliRunner().invoke(app, args)


@pytest.fixture()
def own_data(tmp_path, data_dir):  # type: ignore[no-untyped-def]
    """A steward's copy of the cohort folder (the policy file goes beside the cohort's file)."""
    folder = tmp_path / "data" / "mds-iwgpm-2022"
    folder.mkdir(parents=True)
    for f in (data_dir / "mds-iwgpm-2022").glob("*.csv"):
        shutil.copy(f, folder / f.name)
    return tmp_path / "data"


def test_a_run_over_the_policy_files_budget_is_refused_with_exit_2(tmp_path, own_data) -> None:
    # Setup: the steward allows epsilon 1 per dataset; the run asks for 3 (before, the file was ignored in
    # simulation and the run spent 3)
    (own_data / "mds-iwgpm-2022" / "site-policy.yaml").write_text("epsilon: 1.0\ndelta: 1.0e-5\n")
    # Run
    res = _run(tmp_path, own_data, "privacy={epsilon: 3}", "output.run_id=over")
    # Assert
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "more than its sites allow" in text and "Lower privacy.epsilon to at most 1" in text
    assert "Traceback" not in res.output


def test_a_run_within_the_policy_files_budget_runs_and_the_manifest_names_the_file(tmp_path, own_data) -> None:
    # Setup: the steward allows epsilon 5; the run spends all of it. (At epsilon 1 on this cohort every category of
    # WHO_2016 falls under the private release threshold in about one run in four -- the noise is the sites'
    # own, unseeded -- and the run rightly stops with exit 2; this test is about the policy file.)
    (own_data / "mds-iwgpm-2022" / "site-policy.yaml").write_text("epsilon: 5.0\nmin_count: 7\n")
    res = _run(tmp_path, own_data, "privacy={epsilon: 5}", "output.run_id=ok")
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "runs" / "ok" / "manifest.json").read_text())
    assert manifest["site_policy"]["file"] == "site-policy.yaml"
    assert manifest["site_policy"]["epsilon"] == 5.0 and manifest["site_policy"]["min_count"] == 7
    assert manifest["privacy"]["epsilon_spent"] == pytest.approx(5.0)


def test_without_a_policy_file_the_sites_keep_the_defaults(tmp_path, own_data) -> None:
    res = _run(tmp_path, own_data, "output.run_id=plain")
    assert res.exit_code == 0, res.output
    assert "site_policy" not in json.loads((tmp_path / "runs" / "plain" / "manifest.json").read_text())


def test_a_bad_policy_file_stops_the_run_with_every_problem(tmp_path, own_data) -> None:
    (own_data / "mds-iwgpm-2022" / "site-policy.yaml").write_text("epsilon: -1\ndelta: 2\nmin_cont: 5\n")
    res = _run(tmp_path, own_data, "output.run_id=bad")
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "epsilon" in text and "delta" in text and "min_cont" in text
    assert "Traceback" not in res.output


def test_a_private_run_that_stops_after_releases_says_what_each_site_spent(tmp_path, own_data) -> None:
    # Setup: the sites allow delta 1e-3, the run asks for epsilon 0.05 at delta 1e-5 -- far too little for any
    # category of the cohort's categorical columns to clear the private domain's release threshold, so the run
    # stops (exit 2) after the sites released their noisy row counts, label names and domain counts. Before, the
    # failed run's manifest had no privacy entry at all, as if nothing had been released.
    from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

    (own_data / "mds-iwgpm-2022" / "site-policy.yaml").write_text("delta: 1.0e-3\n")
    res = _run(tmp_path, own_data, "privacy={epsilon: 0.05}", "output.run_id=stopped")
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "raise privacy.epsilon" in " ".join(res.output.split())
    run_dir = tmp_path / "runs" / "stopped"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    privacy = manifest["privacy"]
    assert privacy["budget"] == {"epsilon": 0.05, "delta": 1e-5}
    spent = privacy["epsilon_spent_by_site"]
    assert set(spent) == {"site-1", "site-2", "site-3"}
    # Assert: each figure is the site's ledger converted at the run's delta (1e-5 less what label selection
    # recorded), by dp_accounting straight from the ledger file -- not at the sites' 1e-3, which reads lower
    for site, figure in spent.items():
        ledger = json.loads((run_dir / ".private" / "sites" / site / "privacy_ledger.json").read_text())
        releases = list(ledger["datasets"][site]["stopped"].values())
        curve = [sum(r["rdp"][i] for r in releases) for i in range(len(ledger["orders"]))]
        used = sum(float(r.get("delta", 0.0)) for r in releases)
        at_run = compute_epsilon(ledger["orders"], curve, 1e-5 - used)[0]
        at_site = compute_epsilon(ledger["orders"], curve, 1e-3 - used)[0]
        assert figure == pytest.approx(at_run, rel=1e-9)
        assert 0.0 < at_site < figure <= 0.05
