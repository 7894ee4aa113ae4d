"""The deployed ServerApp's run: the same run directory as a simulated run, scores from the sites, an audit copy.

The deployment's grid is replaced by an in-process grid of the same sites (same messages, same handlers), so the
run directory the coordinator writes can be checked against a simulated run of the same config without starting
Flower's processes (the slow loopback test in tests/unit/deployment/test_e2e.py does that).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsynth.experiments.config import ExperimentConfig, parse_config


def _config(tmp_path: Path, run_id: str, privacy: dict | None = None,  # type: ignore[type-arg]
            **strategy_params: object) -> ExperimentConfig:
    # secure_aggregation is set explicitly so that the simulated run (off by default) and the deployed one (on by
    # default) send the same messages; the deployment default itself is checked below.
    return parse_config({
        "name": "t",
        "cohort": {"name": "mds-iwgpm"},
        "sites": {"proportions": [60, 30, 10]},
        "generator": {"name": "bayesian_network", "params": {"max_indegree": 2}},
        "strategy": {"name": "two_step_bn", "engine": "in_process",
                     "params": {"secure_aggregation": False, **strategy_params}},
        "evaluation": {"snapshot_rows": 300, "references": [], "final": "none"},
        "output": {"dir": str(tmp_path), "run_id": run_id},
        "seed": 3,
        **({"privacy": privacy} if privacy else {}),
    })


def _deployed_run_config(config: ExperimentConfig, schema, num_sites: int) -> dict:  # type: ignore[no-untyped-def]
    """What the ServerApp's context.run_config holds after `fedsynth run --federation` (Flower's keys)."""
    from fedsynth.deployment.flower_config import run_config
    from fedsynth.experiments.deployed import run_config_settings

    return run_config(run_config_settings(config, schema, num_sites=num_sites))


def test_a_deployed_run_writes_the_run_directory_and_learns_the_simulated_network(tmp_path, data_dir, caplog) -> None:
    # Setup: the simulated run, and the same sites behind an in-process grid, each with a share of the holdout
    from fedsynth.experiments.deployed import run_deployed
    from fedsynth.experiments.run import load_partition, run_experiment, site_seeds
    from fedsynth.generators import load_generator
    from fedsynth.strategies.in_process import InProcessGrid
    from fedsynth.strategies.site import SiteRuntime

    simulated = run_experiment(_config(tmp_path / "sim", "run"))
    config = _config(tmp_path / "dep", "run")
    _, part = load_partition(config)
    seeds = site_seeds(config.seed, len(part.sites))
    grid = InProcessGrid([SiteRuntime(s.name, s.data, part.schema, seed, holdout=part.site_holdouts[s.name])
                          for s, seed in zip(part.sites, seeds, strict=True)])
    events: list[tuple[str, dict]] = []  # type: ignore[type-arg]

    # Run
    result = run_deployed(grid, _deployed_run_config(config, part.schema, len(part.sites)),
                          progress=lambda event, payload: events.append((event, dict(payload))))

    # Assert: the progress a user follows: the run directory first, every request as it completes, the round
    from fedsynth.deployment.progress import ProgressLog

    progress = ProgressLog(logging.getLogger("test.deployed.progress"))
    with caplog.at_level(logging.INFO, logger="test.deployed.progress"):
        for event, payload in events:
            progress(event, payload)
    lines = [r.getMessage() for r in caplog.records if r.name == "test.deployed.progress"]
    assert lines[0].endswith(f"run directory (on the coordinator): {tmp_path / 'dep' / 'run'}")
    requests = [p for e, p in events if e == "request"]
    assert [p["message_types"] for p in requests[:2]] == [["query.privacy_budget"], ["query.hello", "query.summary"]]
    assert any("counts-1 (query.counts): 3 of 3 sites answered in" in line for line in lines)
    assert any(line.startswith("fedsynth | round 1/1 scored: CSF ") and "(at 3 sites)" in line for line in lines)
    assert lines[-1].startswith("fedsynth | finished: ") and lines[-1].endswith("report.html")

    # Assert: the full run directory, where the config names it
    run_dir = tmp_path / "dep" / "run"
    assert result.run_dir == run_dir
    for name in ("config.yaml", "manifest.json", "metrics.jsonl", "report.json", "report.html", "schema.yaml",
                 "snapshots/round-001.csv", "model/generator.json"):
        assert (run_dir / name).is_file(), name
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["strategy"]["engine"] == "deployment"
    assert manifest["engine"] == "deployment" and manifest["strategy"]["secure_aggregation"] is False
    assert [s["name"] for s in manifest["sites"]] == [s.name for s in part.sites]
    assert [s["n_rows"] for s in manifest["sites"]] == [len(s.data) for s in part.sites]
    # (the small sites refuse count tables that would isolate patients: left out of those requests, by round)
    assert all(d["message_type"] == "query.counts" and d["reason"].startswith("DisclosureRefused")
               for d in manifest["dropped"])
    assert set(manifest["dropped_by_round"]) == {d["round"] for d in manifest["dropped"]}

    # Assert: the deployed network and its CPDs equal the simulated ones, so the snapshot is the same rows
    dep, sim = load_generator(run_dir / "model"), load_generator(simulated.run_dir / "model")
    assert sorted(dep.model_.edges()) == sorted(sim.model_.edges())
    for cpd in sim.model_.get_cpds():
        np.testing.assert_allclose(dep.model_.get_cpds(cpd.variable).values, cpd.values)
    assert (run_dir / "snapshots" / "round-001.csv").read_bytes() == \
        (simulated.run_dir / "snapshots" / "round-001.csv").read_bytes()

    # Assert: the round's scores come from the three sites, combined by their rows
    line = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    at_sites = line["scores"]["scored_at_sites"]
    assert sorted(at_sites) == sorted(s.name for s in part.sites)
    rows = {n: v["rows"] for n, v in at_sites.items()}
    per_site = line["scores"]["site_scores"]
    assert line["csf"] == pytest.approx(sum(rows[n] * per_site[n]["csf"] for n in rows) / sum(rows.values()))
    assert line["scores"]["mia_auc"] is not None and line["scores"]["dcr_share"] is not None
    sim_line = json.loads((simulated.run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert abs(line["csf"] - sim_line["csf"]) < 0.15  # the same snapshot, scored per site instead of pooled

    # Assert: the coordinator's audit has one line per reply received, per site, without values
    from fedsynth.deployment.audit import read_log

    for site in part.sites:
        entries = read_log(run_dir / "audit" / f"{site.name}.jsonl")
        assert {e["message_type"] for e in entries} == {"query.privacy_budget", "query.hello", "query.summary",
                                                        "query.counts", "evaluate.snapshot"}
        assert all(e["site"] == site.name for e in entries)
        assert all(e["fields"] == {} for e in entries if e["error"])  # a refusal: its scrubbed reason only
        refused = {(d["round"]) for d in manifest["dropped"] if d["site"] == site.name}
        assert {e["round"] for e in entries if e["error"]} == refused
        kinds = {f["kind"] for e in entries for f in e["fields"].values()}
        assert kinds == {"identity", "metrics", "summaries", "counts", "rule-answers"}

    # Assert: the report says how each figure was computed, that no references were run, and what was received
    html = (run_dir / "report.html").read_text()
    assert "Scores computed at the sites" in html and "not run in a deployment" in html
    assert "weighted by their training rows" in html and "What the coordinator received (audit)" in html
    report = json.loads((run_dir / "report.json").read_text())
    assert report["deployment"]["figures"]["mia_auc"]["combined"].startswith("mean over the sites with a holdout")
    assert sorted(report["deployment"]["audit"]) == sorted(s.name for s in part.sites)


def test_a_deployed_run_refuses_a_baseline_and_a_run_config_without_the_experiment(tmp_path, data_dir) -> None:
    # Setup
    from fedsynth.errors import ValidationError
    from fedsynth.experiments.deployed import run_deployed
    from fedsynth.strategies.in_process import InProcessGrid

    config = parse_config({**_config(tmp_path, "b").to_yaml_dict(),
                           "strategy": {"name": "centralized"}, "evaluation": {"references": []}})
    from fedsynth.cohort.datasets import NAMED_COHORTS

    schema = NAMED_COHORTS["mds-iwgpm"].schema_factory()

    # Run / Assert
    with pytest.raises(ValidationError, match="baseline"):
        run_deployed(InProcessGrid([]), _deployed_run_config(config, schema, 1))
    with pytest.raises(ValidationError, match="experiment"):
        run_deployed(InProcessGrid([]), {"num-sites": 1})
    assert not (tmp_path / "b").exists()


def test_the_coordinators_audit_files_every_reply_under_its_site_even_before_its_hello(tmp_path, mds_partition) -> None:
    # Setup: two sites; one exchange carries a summary request ahead of the hellos, and one site fails
    from flwr.app import ConfigRecord, Message, RecordDict

    from fedsynth.deployment.audit import read_log, summarize
    from fedsynth.experiments.deployed import AuditingGrid
    from fedsynth.strategies.in_process import InProcessGrid
    from fedsynth.strategies.site import SiteRuntime

    sites = [SiteRuntime(s.name, s.data, mds_partition.schema, seed=i) for i, s in enumerate(mds_partition.sites[:2])]
    audited = AuditingGrid(InProcessGrid(sites), tmp_path / "audit")
    empty = RecordDict({"config": ConfigRecord({})})
    msgs = [Message(empty, dst_node_id=1, message_type="query.summary", group_id="summary"),
            Message(empty, dst_node_id=2, message_type="query.nothing", group_id="x"),
            *(Message(empty, dst_node_id=n, message_type="query.hello", group_id="hello") for n in (1, 2))]

    # Run
    replies = list(audited.send_and_receive(msgs))

    # Assert: one file per site, named from its hello; the failed reply is filed too, as an error without fields
    assert len(replies) == 4 and sorted(p.name for p in (tmp_path / "audit").iterdir()) == \
        sorted(f"{s.name}.jsonl" for s in sites)
    first = read_log(tmp_path / "audit" / f"{sites[0].name}.jsonl")
    assert [e["message_type"] for e in first] == ["query.summary", "query.hello"]
    assert {f["kind"] for f in first[0]["fields"].values()} == {"summaries"}
    second = read_log(tmp_path / "audit" / f"{sites[1].name}.jsonl")
    assert second[0]["error"] and second[0]["fields"] == {}
    assert summarize(second).n_errors == 1 and audited.rows == {1: len(sites[0].data), 2: len(sites[1].data)}
    assert [s.name for s in audited.sites()] == [s.name for s in sites]


def test_a_deployed_run_sums_securely_unless_its_config_says_false(tmp_path, data_dir) -> None:
    # Setup: the same experiment with secure_aggregation left out, and set to false
    from fedsynth.cohort.datasets import load
    from fedsynth.experiments.run import build_strategy

    schema = load("mds-iwgpm").schema
    unset = _config(tmp_path, "a")
    unset = unset.model_copy(update={"strategy": unset.strategy.model_copy(update={"params": {}})})
    off = _config(tmp_path, "b")

    # Run
    deployed_default = build_strategy(unset, schema, tmp_path / "a", deployed=True)
    deployed_off = build_strategy(off, schema, tmp_path / "b", deployed=True)
    simulated = build_strategy(unset, schema, tmp_path / "c")

    # Assert: on by default in a deployment, as the config says otherwise, off by default in simulation
    assert deployed_default.params["secure_aggregation"] is True
    assert deployed_off.params["secure_aggregation"] is False
    assert simulated.params["secure_aggregation"] is False


def test_a_deployed_private_run_that_stops_records_what_each_sites_ledger_says_it_cost(tmp_path, data_dir) -> None:
    # Setup: a private run at epsilon 0.05 -- too little for any category to clear the private domain's release
    # threshold, so it stops after the sites released their noisy row counts, label names and domain counts (as
    # the simulated test in test_simulated_site_policy.py). Two sites keep a ledger file (delta 1e-3 by their own
    # policy); the third keeps none. Before, a failed deployed run's manifest had no per-site figure at all: the
    # coordinator cannot read the sites' ledgers, so it now asks each site after the run stopped.
    from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

    from fedsynth.errors import FedsynthError
    from fedsynth.experiments.deployed import run_deployed
    from fedsynth.experiments.run import load_partition, site_seeds
    from fedsynth.strategies.in_process import InProcessGrid
    from fedsynth.strategies.policy import SitePolicy
    from fedsynth.strategies.site import SiteRuntime
    from fedsynth.strategies.site_budget import site_ledger

    config = _config(tmp_path / "dep", "stopped", privacy={"epsilon": 0.05})
    _, part = load_partition(config)
    seeds = site_seeds(config.seed, len(part.sites))
    folders = {s.name: tmp_path / "sites" / s.name for s in part.sites}
    ledgers = {s.name: site_ledger(SitePolicy(delta=1e-3), folders[s.name]) for s in part.sites[:2]}
    grid = InProcessGrid([SiteRuntime(s.name, s.data, part.schema, seed, privacy_ledger=ledgers.get(s.name))
                          for s, seed in zip(part.sites, seeds, strict=True)])

    # Run
    with pytest.raises(FedsynthError):
        run_deployed(grid, _deployed_run_config(config, part.schema, len(part.sites)))

    # Assert: the manifest names the stop and gives each ledger's figure for this run at the run's delta (1e-5 less
    # what label selection recorded), computed here by dp_accounting straight from the ledger file
    manifest = json.loads((tmp_path / "dep" / "stopped" / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    privacy = manifest["privacy"]
    assert privacy["budget"] == {"epsilon": 0.05, "delta": 1e-5}
    assert privacy["status"] == "the run stopped before its end" and privacy["not_reached"] == []
    assert privacy["answered_with_error"] == 0
    spent = privacy["epsilon_spent_by_site"]
    third = part.sites[2].name
    assert spent[third] == "no ledger" and set(spent) == {s.name for s in part.sites}
    for name in ledgers:
        ledger = json.loads((folders[name] / "privacy_ledger.json").read_text())
        (releases_by_run,) = ledger["datasets"][name].values()  # this run's releases only, under its ledger id
        releases = list(releases_by_run.values())
        curve = [sum(r["rdp"][i] for r in releases) for i in range(len(ledger["orders"]))]
        used = sum(float(r.get("delta", 0.0)) for r in releases)
        assert spent[name] == pytest.approx(compute_epsilon(ledger["orders"], curve, 1e-5 - used)[0], rel=1e-9)
        assert 0.0 < spent[name] <= 0.05
    # Assert: the question is in the coordinator's audit log, as every message is
    audit_text = "\n".join(p.read_text() for p in (tmp_path / "dep" / "stopped" / "audit").rglob("*") if p.is_file())
    assert "privacy-after-stop" in audit_text


@pytest.mark.parametrize("asking", [RuntimeError("grid gone"), KeyboardInterrupt()], ids=["error", "signal"])
def test_a_failed_question_to_the_sites_keeps_the_runs_own_error(tmp_path, data_dir, monkeypatch, asking) -> None:
    # Setup: the same stopping private run, but asking the sites fails (an error, or a signal while waiting)
    from fedsynth.errors import FedsynthError
    from fedsynth.experiments.deployed import run_deployed
    from fedsynth.experiments.run import load_partition, site_seeds
    from fedsynth.strategies import site_budget
    from fedsynth.strategies.in_process import InProcessGrid
    from fedsynth.strategies.site import SiteRuntime

    def fail(*args: object, **kwargs: object) -> None:
        raise asking

    monkeypatch.setattr(site_budget, "spending_at_sites", fail)
    config = _config(tmp_path / "dep", "stopped", privacy={"epsilon": 0.05})
    _, part = load_partition(config)
    seeds = site_seeds(config.seed, len(part.sites))
    grid = InProcessGrid([SiteRuntime(s.name, s.data, part.schema, seed) for s, seed in zip(part.sites, seeds,
                                                                                             strict=True)])
    # Run / Assert: the run's own error is raised, the manifest says failed and why the sites were not asked
    with pytest.raises(FedsynthError):
        run_deployed(grid, _deployed_run_config(config, part.schema, len(part.sites)))
    manifest = json.loads((tmp_path / "dep" / "stopped" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "error" in manifest
    privacy = manifest["privacy"]
    assert privacy["epsilon_spent_by_site"] == {}
    assert privacy["not_reached"] == sorted(s.name for s in part.sites)
    assert privacy["note"].startswith("the sites could not be asked" if isinstance(asking, RuntimeError)
                                      else "interrupted while the sites were asked")


def test_a_site_answers_the_cost_of_at_most_a_few_runs_and_says_whether_it_keeps_a_ledger(tmp_path) -> None:
    # Setup: a site whose ledger holds five runs' releases, and one keeping no ledger
    from flwr.app import Message, RecordDict

    from fedsynth.privacy.accounting import PrivacyBudget
    from fedsynth.privacy.ledger import PrivacyLedger
    from fedsynth.strategies import records
    from fedsynth.strategies.site import SiteRuntime
    from fedsynth.strategies.site_budget import MAX_REPORT_RUNS, handle_privacy_budget

    ledger = PrivacyLedger(tmp_path / "privacy_ledger.json", PrivacyBudget(100.0, 1e-3))
    orders = np.asarray(ledger.orders)
    runs = [f"run-{i}" for i in range(5)]
    for r in runs:
        ledger.record("site-1", r, "x", orders / (2 * 3.0**2))
    frame = pd.DataFrame({"A": [1.0]})
    with_ledger = SiteRuntime("site-1", frame, None, privacy_ledger=ledger)  # type: ignore[arg-type]
    without = SiteRuntime("site-2", frame, None)  # type: ignore[arg-type]

    def ask(site: SiteRuntime, cfg: dict) -> dict:  # type: ignore[type-arg]
        msg = Message(RecordDict({"config": records.to_config_record(cfg)}), dst_node_id=1,
                      message_type="query.privacy_budget")
        return records.from_metric_record(handle_privacy_budget(msg, site)["metrics"])

    # Run
    many = ask(with_ledger, {"report_runs": runs, "report_delta": 1e-5})
    none = ask(without, {"report_runs": runs[:1], "report_delta": 1e-5})
    plain = ask(with_ledger, {})
    # Assert: the figure covers the first MAX_REPORT_RUNS ids only; a site without a ledger says so; the plain
    # budget question is answered as before (no extra number)
    assert MAX_REPORT_RUNS == 4
    assert many["keeps_ledger"] == 1.0
    assert many["epsilon_of_runs"] == pytest.approx(ledger.epsilon_of_runs("site-1", runs[:4], delta=1e-5))
    assert many["epsilon_of_runs"] < ledger.epsilon_of_runs("site-1", runs, delta=1e-5)
    assert none["keeps_ledger"] == 0.0 and "epsilon_of_runs" not in none
    assert "keeps_ledger" not in plain and "epsilon_of_runs" not in plain


def test_a_site_reports_the_cost_of_named_runs_from_its_ledger_alone(tmp_path) -> None:
    # Setup: a ledger holding two runs' releases (the RDP curves of two Gaussian mechanisms)
    from fedsynth.privacy.accounting import PrivacyBudget, epsilon_from_rdp
    from fedsynth.privacy.ledger import PrivacyLedger

    ledger = PrivacyLedger(tmp_path / "privacy_ledger.json", PrivacyBudget(10.0, 1e-3))
    orders = np.asarray(ledger.orders)
    a, b = orders / (2 * 4.0**2), orders / (2 * 2.0**2)  # sigma 4 and sigma 2
    ledger.record("site-1", "run-a", "x", a)
    ledger.record("site-1", "run-b", "y", b, delta=1e-6)

    # Run / Assert: one run alone, both, none, at the site's delta and at another
    assert ledger.epsilon_of_runs("site-1", ["run-a"]) == pytest.approx(epsilon_from_rdp(a, 1e-3, ledger.orders))
    assert ledger.epsilon_of_runs("site-1", ["run-b"], delta=1e-5) == pytest.approx(
        epsilon_from_rdp(b, 1e-5 - 1e-6, ledger.orders))
    assert ledger.epsilon_of_runs("site-1", ["run-a", "run-b"]) == pytest.approx(ledger.epsilon_spent("site-1"))
    assert ledger.epsilon_of_runs("site-1", ["run-c"]) == 0.0
    assert ledger.epsilon_of_runs("site-1", ["run-a"]) < ledger.epsilon_spent("site-1")
