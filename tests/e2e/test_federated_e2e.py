"""End to end through Flower's simulation engine: every strategy, 3 sites, 1-2 rounds, best and worst case."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow

TINY = {
    "bayesian_network": {"max_indegree": 1},
    "ctgan": {"batch_size": 200, "generator_dim": [32, 32], "discriminator_dim": [32, 32], "embedding_dim": 16,
              "n_modes": 3},
    "vae_bgm": {"hidden_dims": [32], "latent_dim": 4, "n_components": 3},
}
#: A generator's own fit (SD-sharing's sites) trains ``epochs``; weight averaging trains rounds x local epochs.
FIT_ONCE = {"ctgan": {"epochs": 1}, "vae_bgm": {"epochs": 1}, "bayesian_network": {}}


def _partition(mds_cohort, scenario: str):  # type: ignore[no-untyped-def]
    from fedsynth.cohort.partition import make_partition

    return make_partition(mds_cohort.data, mds_cohort.schema, proportions=(0.6, 0.3, 0.1), scenario=scenario,
                          random_state=0)


@pytest.mark.parametrize(
    "scenario, strategy_name, generator, params",
    [
        ("best", "two_step_bn", "bayesian_network", {}),
        ("best", "fedavg", "vae_bgm", {"mixture_max_iter": 10}),
        ("worst", "two_step_bn", "bayesian_network", {}),
        ("worst", "fedavg", "ctgan", {}),
        ("worst", "fedavg", "vae_bgm", {"mixture_max_iter": 10}),
        ("worst", "sd_sharing", "bayesian_network", {"refit": True}),
        ("worst", "sd_sharing", "vae_bgm", {"refit": False}),
        ("worst", "local", "bayesian_network", {}),
    ],
)
def test_strategy_runs_on_the_simulation_engine(mds_cohort, scenario, strategy_name, generator, params) -> None:
    # Setup
    from fedsynth.federation.simulation import run_simulation
    from fedsynth.strategies.registry import make_strategy

    part = _partition(mds_cohort, scenario)
    schema = part.schema
    gen_params = {**TINY[generator], **(FIT_ONCE[generator] if strategy_name == "sd_sharing" else {})}
    strategy = make_strategy(strategy_name, schema, generator=generator, generator_params=gen_params, rounds=2,
                             local_epochs=1, min_sites=2, params=params)
    rounds = []

    # Run
    result = run_simulation(strategy, [(s.name, s.data) for s in part.sites], schema, on_round=rounds.append)

    # Assert
    assert rounds, "no round was reported"
    assert not result.left_out
    synthetic = rounds[-1].sample(200, random_state=0)
    assert list(synthetic.columns) == schema.data_columns
    assert len(synthetic) == 200
    # worst case: the global model still outputs the columns some sites lack
    lacking = [c for s in part.sites for c in s.lacks]
    for c in lacking:
        assert c in synthetic.columns
    if strategy_name == "fedavg":
        assert [r.server_round for r in rounds] == [1, 2]
        assert all(m["num_examples"] > 0 for m in rounds[-1].site_metrics.values())
    if strategy_name == "local":
        assert sorted({r.label for r in rounds}) == ["site-1", "site-2", "site-3"]


def test_centralized_baseline_runs_without_federation(mds_cohort) -> None:
    # Setup
    from fedsynth.strategies.centralized import run_centralized

    part = _partition(mds_cohort, "best")

    # Run
    result = run_centralized(part.train, part.schema, generator="ctgan", generator_params=TINY["ctgan"], rounds=2)

    # Assert
    assert [r["round"] for r in result.rounds] == [1, 2]
    assert len(result.sample(50, random_state=0)) == 50


def test_fedsynth_run_on_the_simulation_engine_writes_a_complete_run(tmp_path, data_dir) -> None:
    # Setup
    from fedsynth.experiments.config import parse_config
    from fedsynth.experiments.run import run_experiment
    from fedsynth.generators import load_generator

    config = parse_config({
        "name": "e2e",
        "cohort": {"name": "mds-iwgpm"},
        "scenario": {"name": "worst"},
        "generator": {"name": "vae_bgm", "params": TINY["vae_bgm"]},
        "strategy": {"name": "fedavg", "rounds": 2, "params": {"mixture_max_iter": 10}},
        "evaluation": {"snapshot_rows": 300, "references": ["centralized", "local"], "final": "lite"},
        "output": {"dir": str(tmp_path), "run_id": "e2e"},
    })

    # Run
    result = run_experiment(config)

    # Assert
    run_dir = tmp_path / "e2e"
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines if x["kind"] == "round"] == [1, 2]
    assert {x["label"] for x in lines if x["kind"] == "reference"} == {"centralized", "site-1", "site-2", "site-3"}
    assert (run_dir / "snapshots" / "round-002.csv").is_file()
    assert json.loads((run_dir / "manifest.json").read_text())["strategy"]["engine"] == "simulation"
    assert len(load_generator(run_dir / "model").sample(10, random_state=0)) == 10
    assert result.report_html.is_file()
    assert np.isfinite(result.final_scores["csf"])
