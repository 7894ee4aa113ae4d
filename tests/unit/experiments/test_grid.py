"""The grid: expansion into runs, resuming finished runs, aggregation over seeds, the summary files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedsynth.errors import ValidationError
from fedsynth.experiments.grid import GridConfig, load_grid_config, plan, run_grid, summarize
from fedsynth.experiments.grid_report import render_summary_html

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def _grid(**extra) -> GridConfig:
    raw = {
        "name": "t",
        "base": {"cohort": {"name": "mds-iwgpm"}},
        "generators": [{"name": "bayesian_network", "strategies": ["two_step_bn"]}],
        "layouts": {"3-sites": [60, 30, 10]},
        "scenarios": ["best", "worst"],
        "seeds": [0, 1],
    }
    raw.update(extra)
    return GridConfig.model_validate(raw)


def test_plan_expands_the_product_and_runs_centralized_once_per_seed():
    runs = plan(_grid())
    slugs = [r.slug for r in runs]
    # two_step_bn and local per scenario and seed (2 x 2 x 2 = 8), centralized once per seed (2)
    assert len(runs) == 10
    assert "bayesian_network-centralized-pooled-seed0" in slugs
    assert "bayesian_network-two_step_bn-3-sites-worst-seed1" in slugs
    fed = next(r for r in runs if r.strategy == "two_step_bn")
    assert fed.config.evaluation.references == []
    assert fed.config.output.run_id == fed.slug


def test_plan_reports_incompatible_cells_at_once():
    bad = _grid(generators=[{"name": "bayesian_network", "strategies": ["fedavg"]}], seeds=[0])
    with pytest.raises(ValidationError) as info:
        plan(bad)
    assert "needs a generator with get_weights/set_weights/partial_fit (ctgan, vae_bgm)" in str(info.value)


def test_shipped_grid_configs_plan():
    smoke = plan(load_grid_config(CONFIGS / "grid-smoke.yaml"))
    full = plan(load_grid_config(CONFIGS / "grid-genomed4all.yaml"))
    assert len(smoke) == 7
    assert {r.generator for r in full} == {"bayesian_network", "ctgan", "vae_bgm"}
    assert {r.layout for r in full} == {"3-sites", "5-sites", "pooled"}


def test_grid_config_typos_are_named(tmp_path):
    p = tmp_path / "g.yaml"
    p.write_text("name: x\nbase: {cohort: {name: mds-iwgpm}}\ngenerators: []\nseed: [0]\n")
    with pytest.raises(ValidationError, match="seed: unknown key.*did you mean 'seeds'"):
        load_grid_config(p)


@pytest.fixture(autouse=True)
def _fixed_fingerprint(monkeypatch):
    """The grid hashes each run's data fingerprint; these tests fake the runs, so the data need not be read."""
    import fedsynth.experiments.run as run_mod

    monkeypatch.setattr(run_mod, "data_fingerprint", lambda config: "fp")


def _fake_run(calls: list[str]):
    def run_experiment(config, *, out_dir, progress=None, engine=None, resume=False):
        from fedsynth.experiments.run_state import run_identity

        calls.append(config.output.run_id)
        run_dir = Path(out_dir) / config.output.run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        csf = 0.9 + 0.01 * config.seed
        evaluation = {
            "scores": {"csf": {"value": csf}, "gsf": {"value": 0.8}},
            "utility": {"endpoints": {"OS": {"c_index_train_synthetic": 0.7, "c_index_train_real": 0.75}}},
            "privacy": {"nndr": {"synthetic": {"p5": 0.3}, "holdout": {"p5": 0.2}}, "dcr_share": 0.5, "mia_auc": 0.51},
            "survival": {"OS": {"strata": {"TP53": {"logrank_p_real": 1e-40, "logrank_p_synthetic": 1e-20}}}},
        }
        report = {"rounds": [{"round": 1, "label": config.strategy.name, "csf": csf, "gsf": 0.8, "nndr": 0.3}],
                  "final": {"evaluation": evaluation}}
        (run_dir / "report.json").write_text(json.dumps(report))
        manifest = {"status": "finished", "timings": {"total": 1.0}, "identity": run_identity(config, "fp")}
        (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return run_experiment


def test_run_grid_aggregates_over_seeds_and_reuses_finished_runs(tmp_path, monkeypatch):
    # Setup
    calls: list[str] = []
    import fedsynth.experiments.run as run_mod

    monkeypatch.setattr(run_mod, "run_experiment", _fake_run(calls))
    grid = _grid(scenarios=["best"])
    # Run
    result = run_grid(grid, tmp_path)
    first = len(calls)
    again = run_grid(grid, tmp_path)
    # Assert
    assert first == 6 and len(calls) == first  # second pass reused every finished run
    summary = json.loads(result.summary_json.read_text())
    row = next(r for r in summary["table"] if r["strategy"] == "two_step_bn")
    assert row["csf"]["mean"] == pytest.approx(0.905) and row["csf"]["n"] == 2
    assert row["csf"]["sd"] == pytest.approx(0.00707, abs=1e-4)
    assert row["nndr_ok"] is True
    assert row["tstr_cindex"]["mean"] == pytest.approx(0.7)
    assert summary["survival_consistency"][0]["real_p"] == 1e-40
    html = again.summary_html.read_text()
    assert "<table>" in html and "<svg" in html and "<img" not in html and "two_step_bn" in html


def test_a_failed_run_is_recorded_and_the_others_finish(tmp_path, monkeypatch):
    calls: list[str] = []
    import fedsynth.experiments.run as run_mod

    good = _fake_run(calls)

    def flaky(config, **kw):
        if config.strategy.name == "local":
            raise RuntimeError("site exploded")
        return good(config, **kw)

    monkeypatch.setattr(run_mod, "run_experiment", flaky)
    result = run_grid(_grid(scenarios=["best"], seeds=[0]), tmp_path)
    summary = json.loads(result.summary_json.read_text())
    assert summary["n_failed"] == 1 and summary["failed"][0]["slug"].startswith("bayesian_network-local")
    assert {r["strategy"] for r in summary["table"]} == {"two_step_bn", "centralized"}


def test_summary_reference_lines_and_site_alone_use_each_cohorts_last_round():
    # Setup: a two-round local run (two sites) and a two-round federated run, one seed
    grid = _grid(scenarios=["best"])
    rounds_local = [
        {"round": 1, "label": "site-1", "csf": 0.5, "gsf": 0.4}, {"round": 2, "label": "site-1", "csf": 0.8, "gsf": 0.7},
        {"round": 1, "label": "site-2", "csf": 0.3, "gsf": 0.2}, {"round": 2, "label": "site-2", "csf": 0.6, "gsf": 0.5},
    ]
    base = {"status": "finished", "generator": "bayesian_network", "layout": "3-sites", "scenario": "best", "seed": 0}
    records = [
        {**base, "slug": "l", "strategy": "local", "rounds": rounds_local},
        {**base, "slug": "f", "strategy": "two_step_bn",
         "rounds": [{"round": 1, "label": "federated", "csf": 0.7, "gsf": 0.6},
                    {"round": 2, "label": "federated", "csf": 0.9, "gsf": 0.85}]},
    ]
    # Run
    summary = summarize(records, grid)
    # Assert
    refs = summary["references"]["bayesian_network"]
    assert refs["site-1 (3-sites, best)"]["csf"] == 0.8 and refs["site-2 (3-sites, best)"]["gsf"] == 0.5
    alone = {r["cohort"]: (r["csf"]["mean"], r["gsf"]["mean"]) for r in summary["site_alone"]}
    assert alone == {"site-1": (0.8, 0.7), "site-2": (0.6, 0.5), "two_step_bn": (0.9, 0.85)}
    html = render_summary_html(summary)
    assert "Federated against each site alone" in html and "site-2" in html


def test_a_changed_grid_config_reruns_exactly_the_changed_runs_and_says_why(tmp_path, monkeypatch):
    # Setup: a finished grid with two generators
    calls: list[str] = []
    import fedsynth.experiments.run as run_mod

    monkeypatch.setattr(run_mod, "run_experiment", _fake_run(calls))
    gens = [{"name": "bayesian_network", "params": {"max_indegree": 1}, "strategies": ["two_step_bn"]},
            {"name": "vae_bgm", "strategies": ["fedavg"]}]
    run_grid(_grid(scenarios=["best"], seeds=[0], generators=gens, baselines=False), tmp_path)
    assert len(calls) == 2
    calls.clear()
    gens[0]["params"] = {"max_indegree": 3}
    events: list[tuple[str, dict]] = []

    # Run: max_indegree 1 -> 3 for the Bayesian network only
    run_grid(_grid(scenarios=["best"], seeds=[0], generators=gens, baselines=False), tmp_path,
             progress=lambda e, p: events.append((e, dict(p))))

    # Assert
    assert calls == ["bayesian_network-two_step_bn-3-sites-best-seed0"]
    why = {p["slug"]: (e, p["reason"]) for e, p in events if e in ("run", "reused")}
    assert why["bayesian_network-two_step_bn-3-sites-best-seed0"] == ("run", "rerun: generator.params.max_indegree: 1 -> 3")
    assert why["vae_bgm-fedavg-3-sites-best-seed0"][0] == "reused"


def test_grid_resumes_an_interrupted_run_and_reruns_one_made_with_other_data(tmp_path, monkeypatch):
    # Setup: one run interrupted (same identity), one finished on other data
    import fedsynth.experiments.run as run_mod
    from fedsynth.experiments.grid import reuse_decision
    from fedsynth.experiments.run_state import run_identity

    run = plan(_grid(scenarios=["best"], seeds=[0], baselines=False))[0]
    identity = run_identity(run.config, "fp")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "manifest.json").write_text(json.dumps({"status": "interrupted", "identity": identity}))
    (b / "manifest.json").write_text(json.dumps({"status": "finished", "identity": {**identity, "data_fingerprint": "x"}}))
    (b / "report.json").write_text("{}")

    # Run / Assert
    assert reuse_decision(a, identity) == ("resume", "interrupted: resumed from its last checkpoint")
    assert reuse_decision(b, identity) == ("run", "rerun: the data changed (another fingerprint)")
    assert reuse_decision(tmp_path / "none", identity) == ("run", "not run yet")
    assert run_mod.run_hash(identity) != run_mod.run_hash({**identity, "fedsynth": "9.9"})


def test_snapshot_logrank_reads_endpoint_and_stratum_from_the_report(tmp_path):
    # Setup: a cohort with no MDS names: endpoint PFS in months, stratum ARM (three arms), one snapshot
    import numpy as np
    import pandas as pd
    from lifelines.statistics import multivariate_logrank_test

    from fedsynth.cohort.schema import ColumnKind, ColumnRole, ColumnSpec, SurvivalEndpoint, TableSchema
    from fedsynth.experiments.grid import snapshot_logrank

    rng = np.random.default_rng(0)
    arm = rng.choice(["a", "b", "c"], size=90)
    frame = pd.DataFrame({"PFS_MONTHS": rng.exponential(np.where(arm == "a", 5.0, 12.0)) + 0.1,
                          "PFS_EVENT": rng.integers(0, 2, size=90), "ARM": arm})
    (tmp_path / "snapshots").mkdir()
    frame.to_csv(tmp_path / "snapshots" / "round-002.csv", index=False)
    schema = TableSchema(
        (ColumnSpec("PFS_MONTHS", ColumnKind.CONTINUOUS, role=ColumnRole.OUTCOME),
         ColumnSpec("PFS_EVENT", ColumnKind.BINARY, role=ColumnRole.OUTCOME),
         ColumnSpec("ARM", ColumnKind.CATEGORICAL, categories=("a", "b", "c"))),
        endpoints=(SurvivalEndpoint("PFS", "PFS_MONTHS", "PFS_EVENT", "months"),),
    )
    report = {"rounds": [{"round": 2, "label": "federated", "snapshot": "snapshots/round-002.csv"}],
              "final": {"evaluation": {"info": {"schema": schema.to_dict()},
                                       "survival": {"strata_columns": ["ARM"]}}}}

    # Run
    out = snapshot_logrank(tmp_path, report)

    # Assert: lifelines' k-group log-rank on the same rows
    expected = multivariate_logrank_test(frame["PFS_MONTHS"], frame["ARM"], frame["PFS_EVENT"]).p_value
    assert out == [{"cohort": "federated", "stratum": "ARM", "n": 90, "p": pytest.approx(expected, rel=1e-6)}]
    # no endpoint or no stratum in the report: nothing to test, no guessed column names
    assert snapshot_logrank(tmp_path, {**report, "final": {"evaluation": {}}}) == []


def test_strategy_params_reach_the_planned_runs_of_that_strategy_only() -> None:
    # Setup
    from fedsynth.errors import ValidationError as FedsynthValidationError
    from fedsynth.experiments.grid import GridConfig, plan

    raw = {
        "base": {"cohort": {"name": "mds-iwgpm"}},
        "generators": [{"name": "bayesian_network", "strategies": ["two_step_bn", "sd_sharing"],
                        "strategy_params": {"two_step_bn": {"secure_aggregation": True}}}],
        "layouts": {"3-sites": [60, 30, 10]}, "scenarios": ["best"], "seeds": [0],
    }

    # Run
    runs = plan(GridConfig.model_validate(raw))

    # Assert: the two-step BN run carries the param; SD-sharing and the baselines do not
    by_strategy = {r.strategy: r.config.strategy.params for r in runs}
    assert by_strategy["two_step_bn"].get("secure_aggregation") is True
    assert "secure_aggregation" not in by_strategy["sd_sharing"] and "secure_aggregation" not in by_strategy["centralized"]
    # ... and params for a strategy the generator does not list are refused
    bad = {**raw, "generators": [{**raw["generators"][0], "strategy_params": {"fedavg": {"x": 1}}}]}
    with pytest.raises((ValueError, FedsynthValidationError)):
        GridConfig.model_validate(bad)
