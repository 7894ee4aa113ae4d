"""One real run on Flower's simulation engine: two-step BN over three site nodes, one of which fails."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from flwr.app import Message, RecordDict

COLUMNS = ["AGE", "SEX", "WHO_2016", "HB", "PLT", "BM_BLAST", "TP53", "SF3B1", "ASXL1", "OS_YEARS", "OS_STATUS"]


def failing_counts(msg: Message, site) -> RecordDict:  # type: ignore[no-untyped-def]
    """site-3 fails every count request with a message that holds data values."""
    from fedsynth.strategies.two_step_bn import handle_counts

    if site.name == "site-3":
        raise ValueError("HB 987.654321 of patient 'ZZ_PLANTED_LABEL' is out of range")
    return handle_counts(msg, site)


def test_two_step_bn_over_flower_simulation_leaves_a_failing_site_out(mds_partition, caplog) -> None:
    # Setup
    from fedsynth.federation.simulation import run_simulation
    from fedsynth.generators.bayesian_network import BayesianNetworkGenerator
    from fedsynth.strategies.registry import make_strategy
    from fedsynth.strategies.site import all_site_handlers

    schema = mds_partition.schema.select(COLUMNS)
    sites = [(s.name, s.data[COLUMNS]) for s in mds_partition.sites]
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network",
                             generator_params={"max_indegree": 2}, min_sites=2)
    handlers = {**all_site_handlers(), "query.counts": failing_counts}
    rounds = []
    caplog.set_level(logging.INFO)

    # Run
    # A trusted network (clear counts): under the default site policy each site withholds the count tables that
    # would isolate patients, and the federated network is no longer the pooled one.
    trusted = [{"clear_counts": True}] * 3
    result = run_simulation(strategy, sites, schema, seeds=[1, 2, 3], on_round=rounds.append, handlers=handlers,
                            policies=trusted)

    # Assert: the run went on without site-3, and equals the centralised network on sites 1 and 2
    from fedsynth.strategies.site import conform_to_domain

    assert [s.name for s in result.sites] == ["site-1", "site-2", "site-3"]
    assert list(result.left_out) == ["site-3"] and result.left_out["site-3"].startswith("ValueError")
    pooled = conform_to_domain(pd.concat([sites[0][1], sites[1][1]], ignore_index=True), result.domain)
    cen = BayesianNetworkGenerator(schema, domain=result.domain, max_indegree=2).fit(pooled)
    assert result.generator.edges_ == cen.edges_
    for cpd in cen.model_.get_cpds():
        np.testing.assert_allclose(result.generator.model_.get_cpds(cpd.variable).values, cpd.values, atol=1e-9)
    assert [r.server_round for r in rounds] == [1] and rounds[0].left_out == result.left_out
    # no data value reached the server's log
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "left out of query.counts" in logged
    assert "987" not in logged and "ZZ_PLANTED_LABEL" not in logged
    assert "simulation_total" in result.timings


def failing_count_vectors(request, site):  # type: ignore[no-untyped-def]
    """site-3 fails to compute its count vector after it shared its keys (a dropout at the collect stage)."""
    from fedsynth.strategies.two_step_bn import count_vectors

    if site.name == "site-3":
        raise ValueError("HB 987.654321 of patient 'ZZ_PLANTED_LABEL' is out of range")
    return count_vectors(request, site)


@pytest.mark.slow
def test_secure_two_step_bn_over_flower_simulation_keeps_protocol_state_in_context(mds_partition) -> None:
    # Setup: each stage of secure aggregation may run in another simulation actor: its keys live in context.state
    from fedsynth.federation.simulation import run_simulation
    from fedsynth.generators.bayesian_network import BayesianNetworkGenerator
    from fedsynth.strategies import secure_sum
    from fedsynth.strategies.registry import make_strategy
    from fedsynth.strategies.site import all_site_handlers

    schema = mds_partition.schema.select(COLUMNS)
    sites = [(s.name, s.data[COLUMNS]) for s in mds_partition.sites]
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network",
                             generator_params={"max_indegree": 2}, min_sites=2, params={"secure_aggregation": True})
    handlers = {**all_site_handlers(), **secure_sum.site_handlers({"two_step_bn.counts": failing_count_vectors})}

    # Run
    result = run_simulation(strategy, sites, schema, seeds=[1, 2, 3], handlers=handlers)

    # Assert: site-3 dropped at the collect stage and is left out; the rest equals the centralised network
    from fedsynth.strategies.site import conform_to_domain

    assert list(result.left_out) == ["site-3"] and result.left_out["site-3"].startswith("collect: ValueError")
    # the sites' rows as they count them: labels the domain left out (under k at every site) are missing
    pooled = conform_to_domain(pd.concat([sites[0][1], sites[1][1]], ignore_index=True), result.domain)
    cen = BayesianNetworkGenerator(schema, domain=result.domain, max_indegree=2).fit(pooled)
    assert result.generator.edges_ == cen.edges_
    for cpd in cen.model_.get_cpds():
        np.testing.assert_allclose(result.generator.model_.get_cpds(cpd.variable).values, cpd.values, atol=1e-9)
    assert "987" not in str(result.left_out) and "ZZ_PLANTED_LABEL" not in str(result.left_out)
