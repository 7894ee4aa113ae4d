"""The ClientApp's wiring: which site a node is, and that every strategy's message types are registered."""

from __future__ import annotations

import pandas as pd
import pytest
from flwr.app import Context, RecordDict

from fedsynth.cohort.schema import ColumnKind, ColumnSpec, TableSchema
from fedsynth.federation.client_app import SiteSource, make_client_app, site_runtime

SCHEMA = TableSchema((ColumnSpec("AGE", ColumnKind.CONTINUOUS), ColumnSpec("SEX", ColumnKind.CATEGORICAL, categories=("F", "M"))))


def _context(node_config: dict) -> Context:  # type: ignore[type-arg]
    return Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={})


def test_simulated_node_reads_the_site_named_by_its_partition_id(tmp_path) -> None:
    # Setup
    frames = [pd.DataFrame({"AGE": [50.0 + i, 60.0], "SEX": ["F", "M"], "EXTRA": [1, 2]}) for i in range(2)]
    sources = []
    for i, f in enumerate(frames):
        f.to_csv(tmp_path / f"s{i}.csv", index=False)
        sources.append(SiteSource(f"site-{i + 1}", str(tmp_path / f"s{i}.csv"), seed=10 + i))

    # Run
    site = site_runtime(_context({"partition-id": 1, "num-partitions": 2}), sources, SCHEMA.to_dict())

    # Assert
    assert (site.name, site.seed) == ("site-2", 11)
    assert list(site.data.columns) == ["AGE", "SEX"] and site.data["AGE"].tolist() == [51.0, 60.0]


def test_deployed_node_reads_the_site_named_in_its_node_config(tmp_path) -> None:
    # Setup
    pd.DataFrame({"AGE": [40.0], "SEX": ["M"]}).to_csv(tmp_path / "rows.csv", index=False)
    SCHEMA.to_yaml(tmp_path / "schema.yaml")
    cfg = {"data-path": str(tmp_path / "rows.csv"), "schema-path": str(tmp_path / "schema.yaml"),
           "site-name": "hospital-a", "seed": 5}

    # Run
    site = site_runtime(_context(cfg), (), None)

    # Assert
    assert (site.name, site.seed, len(site.data)) == ("hospital-a", 5, 1)


def test_deployed_node_refuses_a_pickle_named_in_its_node_config(tmp_path) -> None:
    # Setup: a pickle would run code when read; a node reads CSV or Parquet only
    import pytest

    from fedsynth.errors import FedsynthError

    pd.DataFrame({"AGE": [40.0], "SEX": ["M"]}).to_pickle(tmp_path / "rows.pkl")
    SCHEMA.to_yaml(tmp_path / "schema.yaml")
    cfg = {"data-path": str(tmp_path / "rows.pkl"), "schema-path": str(tmp_path / "schema.yaml"), "site-name": "h"}

    # Run / Assert
    with pytest.raises(FedsynthError, match="CSV or Parquet"):
        site_runtime(_context(cfg), (), None)


def test_client_app_registers_every_strategy_message_type() -> None:
    # Run
    app = make_client_app([], SCHEMA.to_dict())

    # Assert
    registered = set(app._registered_funcs)  # what Flower dispatches on
    assert {"query.hello", "query.summary", "query.counts", "train.fit", "train.share",
            "query.mixture_init", "query.mixture_estep"} <= registered


def test_deployment_run_config_becomes_the_strategy(tmp_path) -> None:
    # Setup
    from fedsynth.federation.server_app import strategy_from_run_config

    SCHEMA.to_yaml(tmp_path / "schema.yaml")
    run_config = {"strategy": "sd_sharing", "generator": "bayesian_network", "generator-params": '{"max_indegree":1}',
                  "min-sites": 2, "num-sites": 3, "seed": 4, "schema-path": str(tmp_path / "schema.yaml"),
                  "strategy-params": '{"refit":true, "node_timeout": 30}'}

    # Run
    strategy, n_nodes = strategy_from_run_config(run_config)

    # Assert: given settings over the registry's defaults
    assert (strategy.name, strategy.generator, strategy.min_sites, n_nodes) == ("sd_sharing", "bayesian_network", 2, 3)
    assert strategy.generator_params == {"max_indegree": 1}
    assert strategy.params["refit"] is True and strategy.params["node_timeout"] == 30
    assert strategy.params["privacy_check"] is True and strategy.params["gate_mia_auc_above"] == 0.6


def test_deployment_run_config_lists_every_problem_before_building(tmp_path) -> None:
    # Setup: a rounds count the fixed-phase strategy would ignore, a misspelt and a mistyped strategy param,
    # an unknown generator param
    from fedsynth.errors import ValidationError
    from fedsynth.federation.server_app import strategy_from_run_config

    SCHEMA.to_yaml(tmp_path / "schema.yaml")
    run_config = {"strategy": "sd_sharing", "generator": "bayesian_network", "rounds": 4,
                  "generator-params": '{"max_indegre":1}', "schema-path": str(tmp_path / "schema.yaml"),
                  "strategy-params": '{"refitt":true, "gate_mia_auc_above": "high"}'}

    # Run
    with pytest.raises(ValidationError) as info:
        strategy_from_run_config(run_config)

    # Assert
    text = str(info.value)
    assert "Run config has 4 problems" in text
    assert "strategy.rounds: is 4, but 'sd_sharing' with 'bayesian_network' runs a fixed sequence" in text
    assert "strategy.params.refitt: is not a parameter of 'sd_sharing'" in text and "did you mean 'refit'?" in text
    assert "strategy.params.gate_mia_auc_above: got 'high' (str); valid: a float in the range [0.5, 1]" in text
    assert "generator.params.max_indegre: unknown parameter of 'bayesian_network'" in text
