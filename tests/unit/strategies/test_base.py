"""Shared protocol: hello, the domain merged from released site summaries, failures, capabilities."""

from __future__ import annotations

import logging

import pytest
from flwr.app import Message, RecordDict

from fedsynth.encoding.domain import Domain
from fedsynth.errors import CapabilityError
from fedsynth.strategies import records
from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.registry import make_strategy
from fedsynth.strategies.site import SiteRuntime, all_site_handlers, release_summary


def _grid(partition, policy=None, **kwargs) -> InProcessGrid:  # type: ignore[no-untyped-def]
    extra = {} if policy is None else {"policy": policy}
    sites = [SiteRuntime(s.name, s.data, partition.schema, seed=i, **extra) for i, s in enumerate(partition.sites)]
    return InProcessGrid(sites, **kwargs)


def test_domain_from_site_summaries_matches_the_pooled_domain(mds_partition) -> None:
    # Setup
    # k = 1 at the sites and the server: every label and every non-empty histogram cell is released, so the
    # sums match the pooled domain exactly (with k = 5 each site withholds its own rare labels).
    from fedsynth.strategies.policy import SitePolicy

    schema = mds_partition.schema
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network", params={"min_category_count": 1})
    grid = _grid(mds_partition, SitePolicy(min_count=1))

    # Run
    sites = strategy.hello(grid)
    fed = strategy.build_domain(grid, sites)
    pooled = Domain.from_data(mds_partition.train, schema, min_count=1)

    # Assert
    assert [s.n_rows for s in sites] == [s.n_rows for s in mds_partition.sites]
    for name, col in pooled.columns.items():
        got = fed[name]
        assert (got.n_observed, got.missing_rate) == (col.n_observed, pytest.approx(col.missing_rate, abs=1e-12))
        if col.is_numeric:
            assert got.mean == pytest.approx(col.mean, rel=1e-9) and got.std == pytest.approx(col.std, rel=1e-9)
            # bounds are coarsened outward at each site; the min of floors is the floor of the min
            assert (got.lower, got.upper) == (col.lower, col.upper)
            real = mds_partition.train[name].dropna()
            assert got.lower <= real.min() and got.upper >= real.max()
        else:
            assert got.categories == col.categories and got.category_counts == col.category_counts


def test_rare_undeclared_labels_and_exact_extremes_do_not_leave_a_site(mds_cohort) -> None:
    # Setup
    from fedsynth.encoding.domain import summarize_site

    data = mds_cohort.data.head(300).copy()
    data.loc[data.index[0], "WHO_2016"] = "ZZ_PLANTED_LABEL"
    data.loc[data.index[1], "HB"] = 987.654321
    raw = summarize_site(data, mds_cohort.schema)

    # Run
    released = release_summary(raw, mds_cohort.schema)

    # Assert
    assert "ZZ_PLANTED_LABEL" in raw["columns"]["WHO_2016"]["counts"]
    assert "ZZ_PLANTED_LABEL" not in records.encode_payload(released)
    assert "987.654321" not in records.encode_payload(released)
    assert released["columns"]["HB"]["upper"] == 25.0  # the declared clinical range caps the coarse bound
    who = released["columns"]["WHO_2016"]
    # every label under k leaves only as missing, declared or not (the planted one among them)
    under_k = sum(c for c in raw["columns"]["WHO_2016"]["counts"].values() if c < 5)
    assert who["n_missing"] == raw["columns"]["WHO_2016"]["n_missing"] + under_k
    assert sum(who["counts"].values()) + who["n_missing"] == who["n"]


def test_a_raising_site_is_left_out_with_a_scrubbed_reason(mds_partition, caplog) -> None:
    # Setup
    def broken(msg: Message, site: SiteRuntime) -> RecordDict:
        if site.name == "site-2":
            raise ValueError("HB value 987.654321 for patient 'ZZ_PLANTED_LABEL'")
        return all_site_handlers()["query.hello"](msg, site)

    handlers = {**all_site_handlers(), "query.hello": broken}
    grid = _grid(mds_partition, handlers=handlers, keep_messages=True)
    strategy = make_strategy("two_step_bn", mds_partition.schema, generator="bayesian_network", min_sites=2)
    caplog.set_level(logging.DEBUG)

    # Run
    sites = strategy.hello(grid)

    # Assert
    assert [s.name for s in sites] == ["site-1", "site-3"]
    errors = [m.error.reason for m in grid.received if m.has_error()]
    assert errors == ["ValueError: the site handler failed (details withheld at the site)"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "site node-2 left out of query.hello" in logged
    assert "987" not in logged and "ZZ_PLANTED_LABEL" not in logged


def test_fedavg_refuses_the_bayesian_network_and_names_compatible_strategies() -> None:
    # Setup
    from fedsynth.cohort.schema import ColumnKind, ColumnSpec, TableSchema

    schema = TableSchema((ColumnSpec("AGE", ColumnKind.CONTINUOUS),))

    # Run / Assert
    with pytest.raises(CapabilityError) as exc:
        make_strategy("fedavg", schema, generator="bayesian_network")
    assert str(exc.value) == (
        "Strategy 'fedavg' needs a generator with get_weights/set_weights/partial_fit (ctgan, vae_bgm); "
        "'bayesian_network' does not have it. Strategies that work with 'bayesian_network': "
        "centralized, local, two_step_bn, sd_sharing."
    )


def test_every_site_message_type_is_a_valid_flower_type() -> None:
    # Setup
    from flwr.app.metadata import validate_message_type

    # Run
    types = sorted(all_site_handlers())

    # Assert
    assert {"query.hello", "query.summary", "query.counts", "train.fit", "train.share"} <= set(types)
    assert all(validate_message_type(t) for t in types)


def test_a_strategy_holds_the_registry_defaults_of_the_params_that_act(mds_partition) -> None:
    # Setup / Run
    from fedsynth.strategies.registry import default_params

    schema = mds_partition.schema
    sd = make_strategy("sd_sharing", schema, generator="bayesian_network", params={"gate_mia_auc_above": 0.55})
    sd_off = make_strategy("sd_sharing", schema, generator="bayesian_network", params={"privacy_check": False})
    two_step = make_strategy("two_step_bn", schema, generator="bayesian_network")

    # Assert: given values win, defaults come from the registry, params that would not act are absent
    assert sd.params["gate_mia_auc_above"] == 0.55 and sd.params["gate_exact_copies_margin"] == 0.0
    assert sd.params["refit"] is False
    assert "gate_mia_auc_above" not in sd_off.params and sd_off.params["privacy_check"] is False
    assert two_step.params == {"min_category_count": 5, "significant_digits": 3, "node_timeout": 120.0,
                               "request_timeout": 3600.0, "count_look_ahead": 1, "secure_aggregation": False}
    assert default_params("two_step_bn", "bayesian_network") == two_step.params
    assert sd.requires is None and two_step.requires == "two_step"


def test_a_baseline_delegates_with_only_the_params_its_flow_accepts(mds_partition) -> None:
    # Setup: ctgan averages weights but has no latent mixture; the baseline's flow is FedAvg
    from fedsynth.errors import ValidationError
    from fedsynth.strategies.local import delegate

    schema = mds_partition.schema
    central = make_strategy("centralized", schema, generator="ctgan", rounds=2, params={"min_category_count": 3})

    # Run
    flow = delegate(central)

    # Assert
    assert (flow.name, flow.rounds, flow.min_sites) == ("fedavg", 2, 1)
    assert flow.params == {"min_category_count": 3, "significant_digits": 3, "node_timeout": 120.0,
                           "request_timeout": 3600.0, "secure_aggregation": False}
    with pytest.raises(ValidationError, match="acts only with a generator that has a latent mixture"):
        make_strategy("local", schema, generator="ctgan", params={"mixture_max_iter": 5})
    with pytest.raises(ValidationError, match="generator.params.epochs: is not used by 'centralized'"):
        make_strategy("centralized", schema, generator="ctgan", generator_params={"epochs": 3})

