"""Endpoint rules learnt federatedly in the domain phase: equal to the rules on pooled rows, in the run's schema."""

from __future__ import annotations

import pandas as pd

from fedsynth.cohort.constraints import candidate_rules, learn_rules, site_answers
from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.registry import make_strategy
from fedsynth.strategies.site import SiteRuntime


def _run(partition, sites_data):  # type: ignore[no-untyped-def]
    schema = partition.schema
    grid = InProcessGrid([SiteRuntime(s.name, d, schema, seed=i) for i, (s, d) in enumerate(zip(partition.sites, sites_data, strict=True))])
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network",
                             generator_params={"max_indegree": 0}, min_sites=3)
    return strategy, strategy.start(grid)


def test_rules_learnt_from_site_answers_equal_the_rules_on_pooled_rows(mds_partition) -> None:  # type: ignore[no-untyped-def]
    # Setup
    schema = mds_partition.schema
    candidates = candidate_rules(schema)
    pooled = pd.concat([s.data for s in mds_partition.sites])
    on_pooled = learn_rules(candidates, [site_answers(pooled, candidates)])
    # Run
    strategy, result = _run(mds_partition, [s.data for s in mds_partition.sites])
    # Assert
    assert strategy.learnt_rules == on_pooled
    assert on_pooled  # LFS <= OS and an OS death is an LFS event hold on the real cohort
    assert all(r in strategy.schema.constraints for r in on_pooled)
    assert all(r in result.generator.schema.constraints for r in on_pooled)
    sampled = result.generator.sample(500, random_state=0)
    assert not any(r.violations(sampled).any() for r in on_pooled)


def test_a_rule_one_site_breaks_is_not_learnt(mds_partition) -> None:  # type: ignore[no-untyped-def]
    # Setup: the smallest site holds one row whose LFS outlasts OS (a control that must drop the rule)
    schema = mds_partition.schema
    lfs_le_os = next(r for r in candidate_rules(schema) if r.to_dict() == {"type": "time_order", "shorter": "LFS", "longer": "OS"})
    data = [s.data.copy() for s in mds_partition.sites]
    ep = {e.name: e for e in schema.endpoints}
    row = data[2].index[data[2][[ep["OS"].duration_col, ep["LFS"].duration_col]].notna().all(axis=1)][0]
    data[2].loc[row, ep["LFS"].duration_col] = data[2].loc[row, ep["OS"].duration_col] + 1.0
    # Run
    strategy, _ = _run(mds_partition, data)
    # Assert
    assert lfs_le_os not in strategy.learnt_rules
    assert strategy.learnt_rules == learn_rules(candidate_rules(schema), [site_answers(d, candidate_rules(schema)) for d in data])
