"""Two-step Bayesian network: summed site counts give exactly the centralised network (edges and CPDs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from flwr.app import Message, RecordDict

from fedsynth.strategies import records
from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.registry import make_strategy
from fedsynth.strategies.site import SiteRuntime

#: A trusted network's size cap, above the survival model's largest table (the default cap of 100,000 cells
#: withholds the widest survival families, which then come from no site and are not chosen).
TRUSTED_MAX_CELLS = 10**8

SMALL = ["AGE", "SEX", "HB", "PLT", "BM_BLAST", "CYTO_IPSSR", "TP53", "SF3B1", "ASXL1", "OS_YEARS", "OS_STATUS"]


def _site_runtimes(partition, schema, policy=None) -> list[SiteRuntime]:  # type: ignore[no-untyped-def]
    extra = {} if policy is None else {"policy": policy}
    return [SiteRuntime(s.name, s.data, schema, seed=i, **extra) for i, s in enumerate(partition.sites)]


def _assert_same_network(fed, cen) -> None:  # type: ignore[no-untyped-def]
    assert fed.edges_ == cen.edges_
    for cpd in cen.model_.get_cpds():
        other = fed.model_.get_cpds(cpd.variable)
        assert other.get_evidence() == cpd.get_evidence()
        np.testing.assert_allclose(other.values, cpd.values, rtol=0, atol=1e-9)
    # The piecewise-exponential survival model: same parents, same hazards.
    assert fed.survival_parents_ == cen.survival_parents_
    assert len(fed._survival) == len(cen._survival)
    for a, b in zip(fed._survival, cen._survival, strict=True):
        assert (a.event_parents, a.censor_parents) == (b.event_parents, b.censor_parents)
        np.testing.assert_allclose(a.event_hazard, b.event_hazard, rtol=0, atol=1e-12)
        np.testing.assert_allclose(a.censor_hazard, b.censor_hazard, rtol=0, atol=1e-12)


def test_federated_two_step_bn_equals_centralized_on_three_site_split(mds_partition) -> None:
    # Setup
    from fedsynth.generators.bayesian_network import BayesianNetworkGenerator

    # A trusted network: sites send count tables in clear even when a cell is under k. Without it (the default
    # policy) each site withholds the tables that would isolate patients, and the federated search sees
    # different counts than the pooled one; secure aggregation (sums only) is how that is to be lifted.
    from fedsynth.strategies.policy import SitePolicy

    schema = mds_partition.schema
    grid = InProcessGrid(_site_runtimes(mds_partition, schema, SitePolicy(clear_counts=True, max_cells=TRUSTED_MAX_CELLS)))
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network", generator_params={"max_indegree": 1}, min_sites=3)

    # Run
    fed = strategy.start(grid)
    # The same rows as the sites use: labels the domain left out (under k at every site) count as missing.
    from fedsynth.strategies.site import conform_to_domain

    pooled = conform_to_domain(mds_partition.train[schema.model_columns], fed.domain)
    cen = BayesianNetworkGenerator(schema, domain=fed.domain, max_indegree=1).fit(pooled)

    # Assert
    assert len(fed.generator.edges_) > 10
    _assert_same_network(fed.generator, cen)


def test_outcome_parents_keep_the_federated_network_equal_to_the_centralized_one(mds_partition) -> None:
    # Setup: outcome nodes given 2 more baseline parents each, chosen from summed counts
    from fedsynth.cohort.schema import ColumnRole
    from fedsynth.generators.bayesian_network import BayesianNetworkGenerator
    from fedsynth.strategies.policy import SitePolicy
    from fedsynth.strategies.site import conform_to_domain

    schema = mds_partition.schema
    params = {"max_indegree": 1, "outcome_parents": 2}
    # A trusted network (tables in clear), as in the equality test above.
    grid = InProcessGrid(_site_runtimes(mds_partition, schema, SitePolicy(clear_counts=True, max_cells=TRUSTED_MAX_CELLS)))
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network", generator_params=params, min_sites=3)
    # Run
    fed = strategy.start(grid)
    pooled = conform_to_domain(mds_partition.train[schema.model_columns], fed.domain)
    cen = BayesianNetworkGenerator(schema, domain=fed.domain, **params).fit(pooled)
    plain = BayesianNetworkGenerator(schema, domain=fed.domain, max_indegree=1).fit(pooled)
    # Assert: equal, and the added edges all point from a baseline column into an outcome node
    _assert_same_network(fed.generator, cen)
    added = set(cen.edges_) - set(plain.edges_)
    assert added
    assert all(schema[v.split("#")[0]].role is ColumnRole.OUTCOME and schema[u.split("#")[0]].role is not ColumnRole.OUTCOME
               and "#" not in u + v for u, v in added)


def test_summed_counts_from_mocked_replies_equal_pooled_counts(mds_partition, mock_grid) -> None:
    # Setup: each site's reply is built here from its rows; the server must sum them exactly
    from fedsynth.generators.bayesian_network import (
        BayesianNetworkGenerator,
        family_counts,
        family_from_key,
        family_key,
    )

    schema = mds_partition.schema.select(SMALL)
    sites = _site_runtimes(mds_partition, schema)
    frames = {s.name: s.data for s in sites}
    requests = []

    def counts(msg: Message, site: str) -> RecordDict:
        cfg = records.from_config_record(msg.content["config"])
        domain = records.domain_from_text(cfg["domain"])
        fams = [family_from_key(k) for k in cfg["families"]]
        requests.append(len(fams))
        got = family_counts(frames[site], domain, fams)
        return RecordDict({"counts": records.pack_tables(cfg["families"], {family_key(f): a for f, a in got.items()})})

    grid = mock_grid(sites, {"query.counts": counts})
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network", generator_params={"max_indegree": 2})

    # Run
    fed = strategy.start(grid)
    cen = BayesianNetworkGenerator(schema, domain=fed.domain, max_indegree=2).fit(mds_partition.train[SMALL])

    # Assert
    assert len(requests) >= 3 * 2  # structure + parameters, three sites each
    _assert_same_network(fed.generator, cen)


def test_site_failing_a_count_request_is_dropped_and_the_search_restarts(mds_partition, mock_grid, caplog) -> None:
    # Setup
    from fedsynth.generators.bayesian_network import (
        BayesianNetworkGenerator,
        family_counts,
        family_from_key,
        family_key,
    )

    schema = mds_partition.schema.select(SMALL)
    sites = _site_runtimes(mds_partition, schema)
    frames = {s.name: s.data for s in sites}

    def counts(msg: Message, site: str):  # type: ignore[no-untyped-def]
        if site == "site-3":
            return RuntimeError("disk full")
        cfg = records.from_config_record(msg.content["config"])
        domain = records.domain_from_text(cfg["domain"])
        got = family_counts(frames[site], domain, [family_from_key(k) for k in cfg["families"]])
        return RecordDict({"counts": records.pack_tables(cfg["families"], {family_key(f): a for f, a in got.items()})})

    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network", generator_params={"max_indegree": 1}, min_sites=2)

    # Run
    fed = strategy.start(mock_grid(sites, {"query.counts": counts}))
    pooled = pd.concat([frames["site-1"], frames["site-2"]], ignore_index=True)
    cen = BayesianNetworkGenerator(schema, domain=fed.domain, max_indegree=1).fit(pooled[SMALL])

    # Assert
    assert list(fed.left_out) == ["site-3"]
    _assert_same_network(fed.generator, cen)
    assert any("left out of query.counts" in r.getMessage() for r in caplog.records)


def test_two_step_bn_refuses_a_weight_based_generator() -> None:
    # Setup
    from fedsynth.cohort.schema import ColumnKind, ColumnSpec, TableSchema
    from fedsynth.errors import CapabilityError

    schema = TableSchema((ColumnSpec("AGE", ColumnKind.CONTINUOUS),))

    # Run / Assert
    with pytest.raises(CapabilityError) as exc:
        make_strategy("two_step_bn", schema, generator="ctgan")
    text = str(exc.value)
    assert "'two_step_bn' needs a generator with structure and parameters from summed counts" in text
    assert "Strategies that work with 'ctgan': centralized, local, fedavg, sd_sharing." in text


def test_count_look_ahead_needs_fewer_requests_for_the_same_network(mds_partition) -> None:
    # Setup: a small schema, two parents per node, counts asked for with and without look-ahead
    schema = mds_partition.schema.select(SMALL)

    def run(look_ahead: int):  # type: ignore[no-untyped-def]
        grid = InProcessGrid(_site_runtimes(mds_partition, schema), keep_messages=True)
        result = make_strategy(
            "two_step_bn", schema, generator="bayesian_network", generator_params={"max_indegree": 2},
            min_sites=3, params={"count_look_ahead": look_ahead},
        ).start(grid)
        requests = {m.metadata.group_id for m in grid.sent if m.metadata.message_type == "query.counts"}
        return result.generator, len(requests)

    # Run
    plain, n_plain = run(0)
    ahead, n_ahead = run(1)
    further, n_further = run(2)
    # Assert
    _assert_same_network(ahead, plain)
    _assert_same_network(further, plain)
    assert n_further <= n_ahead < n_plain


def test_federated_bn_with_secure_aggregation_equals_centralized(mds_partition) -> None:
    # Setup: the server sees masked count vectors only (no query.counts in clear)
    from fedsynth.generators.bayesian_network import BayesianNetworkGenerator
    from fedsynth.strategies import secure_sum

    schema = mds_partition.schema.select(SMALL)
    grid = InProcessGrid(_site_runtimes(mds_partition, schema), keep_messages=True)
    strategy = make_strategy(
        "two_step_bn", schema, generator="bayesian_network", generator_params={"max_indegree": 2}, min_sites=3,
        params={"secure_aggregation": True},
    )

    # Run
    fed = strategy.start(grid)
    cen = BayesianNetworkGenerator(schema, domain=fed.domain, max_indegree=2).fit(mds_partition.train[schema.model_columns])

    # Assert
    types = {m.metadata.message_type for m in grid.sent}
    assert "query.counts" not in types and set(secure_sum.STAGES) <= types
    assert len(fed.generator.edges_) > 5
    _assert_same_network(fed.generator, cen)


def test_secure_aggregation_with_a_site_lacking_a_column_equals_the_clear_sum(mds_partition) -> None:
    # Setup: one site lacks HB; its tables over HB travel as zeros and "present" says how many sites counted each
    schema = mds_partition.schema.select(SMALL)
    sites = _site_runtimes(mds_partition, schema)
    sites[1] = SiteRuntime(sites[1].name, sites[1].data.drop(columns=["HB"]), schema, seed=sites[1].seed)

    def run(secure: bool, domain=None):  # type: ignore[no-untyped-def]
        from fedsynth.strategies.policy import SitePolicy

        strategy = make_strategy(
            "two_step_bn", schema, generator="bayesian_network", generator_params={"max_indegree": 1}, min_sites=3,
            params={"secure_aggregation": secure},
        )
        # The clear run is a trusted network (clear counts); under the default policy its sites would withhold
        # the tables that isolate patients, which masked tables need not do.
        policy = SitePolicy(clear_counts=not secure, max_cells=TRUSTED_MAX_CELLS)
        grid = InProcessGrid([SiteRuntime(s.name, s.data, schema, seed=s.seed, policy=policy) for s in sites])
        if domain is None:
            return strategy.start(grid)
        # The secure domain comes from summed histograms, the clear one from each site's: count on the same one.
        return strategy.run(grid, strategy.hello(grid), domain, on_round=None, run_token="clear")

    # Run
    secure = run(True)
    clear = run(False, secure.domain)

    # Assert
    _assert_same_network(secure.generator, clear.generator)


def test_secure_aggregation_records_a_site_dropping_and_equals_centralized_without_it(mds_partition) -> None:
    # Setup: the last site shares its keys, then fails to send its masked counts
    from fedsynth.generators.bayesian_network import BayesianNetworkGenerator
    from fedsynth.strategies import secure_sum
    from fedsynth.strategies.site import all_site_handlers
    from fedsynth.strategies.two_step_bn import count_vectors

    schema = mds_partition.schema.select(SMALL)
    sites = _site_runtimes(mds_partition, schema)

    def failing(request, site):  # type: ignore[no-untyped-def]
        if site.name == sites[-1].name:
            raise ValueError("planted failure")
        return count_vectors(request, site)

    grid = InProcessGrid(sites, handlers={**all_site_handlers(), **secure_sum.site_handlers({"two_step_bn.counts": failing})})
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network", generator_params={"max_indegree": 1},
                             min_sites=2, params={"secure_aggregation": True})

    # Run
    fed = strategy.start(grid)

    # Assert
    assert list(fed.left_out) == [sites[-1].name] and fed.left_out[sites[-1].name].startswith("collect")
    pooled = pd.concat([s.data for s in sites[:-1]], ignore_index=True)
    cen = BayesianNetworkGenerator(schema, domain=fed.domain, max_indegree=1).fit(pooled[schema.model_columns])
    _assert_same_network(fed.generator, cen)
