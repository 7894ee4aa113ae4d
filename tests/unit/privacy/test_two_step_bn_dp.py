"""Two-step BN under a privacy budget: ε = ∞ equals the centralized network; ε = 1 differs, samples valid rows,
never spends past its budget, and a search that would stops before releasing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedsynth.privacy.accounting import PrivacyBudget
from fedsynth.strategies import two_step_bn
from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.registry import make_strategy
from fedsynth.strategies.site import SiteRuntime

SMALL = ["AGE", "SEX", "HB", "PLT", "BM_BLAST", "CYTO_IPSSR", "TP53", "SF3B1", "ASXL1", "OS_YEARS", "OS_STATUS"]


def _grid(partition, schema, **kwargs) -> InProcessGrid:  # type: ignore[no-untyped-def]
    return InProcessGrid([SiteRuntime(s.name, s.data, schema, seed=i) for i, s in enumerate(partition.sites)], **kwargs)


def _label(v: object) -> str:
    """A category as text (binary columns come back as 0.0/1.0)."""
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _strategy(schema, privacy: PrivacyBudget | None):  # type: ignore[no-untyped-def]
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network",
                             generator_params={"max_indegree": 1}, min_sites=3)
    strategy.privacy = privacy
    return strategy


def test_infinite_epsilon_leaves_the_federated_bn_equal_to_the_centralized_one(mds_partition) -> None:
    # Setup
    from fedsynth.generators.bayesian_network import BayesianNetworkGenerator

    schema = mds_partition.schema.select(SMALL)
    # Run
    from fedsynth.strategies.policy import SitePolicy
    from fedsynth.strategies.site import conform_to_domain

    strategy = _strategy(schema, PrivacyBudget(math.inf))
    # Clear exact counts need a trusted network (site policy clear_counts): under the default policy each site
    # withholds the tables that would isolate patients.
    trusted = SitePolicy(clear_counts=True)
    fed = strategy.start(InProcessGrid([SiteRuntime(s.name, s.data, schema, seed=i, policy=trusted)
                                        for i, s in enumerate(mds_partition.sites)]))
    pooled = conform_to_domain(mds_partition.train[schema.model_columns], fed.domain)
    cen = BayesianNetworkGenerator(schema, domain=fed.domain, max_indegree=1).fit(pooled)
    # Assert
    assert fed.generator.edges_ == cen.edges_
    for cpd in cen.model_.get_cpds():
        np.testing.assert_allclose(fed.generator.model_.get_cpds(cpd.variable).values, cpd.values, atol=1e-9)
    assert strategy.privacy_summary_["epsilon_spent"] == 0.0


def test_epsilon_one_changes_the_network_within_budget_and_samples_valid_rows(mds_partition) -> None:
    # Setup
    from fedsynth.generators.bayesian_network import BayesianNetworkGenerator

    schema = mds_partition.schema.select(SMALL)
    strategy = _strategy(schema, PrivacyBudget(1.0, 1e-5))
    # Run
    fed = strategy.start(_grid(mds_partition, schema))
    cen = BayesianNetworkGenerator(schema, domain=fed.domain, max_indegree=1).fit(mds_partition.train[schema.model_columns])
    rows = fed.generator.sample(500, random_state=0)
    # Assert: the noisy network differs from the exact one (edges or CPD values)
    assert fed.generator.edges_ != cen.edges_ or any(
        not np.allclose(fed.generator.model_.get_cpds(c.variable).values, c.values) for c in cen.model_.get_cpds())
    # ... the budget holds and the parameter phase used its whole share
    summary = strategy.privacy_summary_
    assert 0 < summary["epsilon_spent"] <= 1.0 + 1e-9
    params = summary["phases"]["parameters"]
    assert params["rho_spent"] == pytest.approx(params["rho_allocated"], rel=1e-9)
    assert summary["phases"]["structure"]["rho_spent"] <= summary["phases"]["structure"]["rho_allocated"] * (1 + 1e-9)
    # ... and the rows are valid: every column, in the domain
    assert len(rows) == 500
    assert list(rows.columns) == list(cen.sample(5, random_state=0).columns)
    for name in schema.model_columns:
        col = fed.domain[name]
        values = rows[name].dropna()
        if col.is_numeric:
            assert values.between(col.bins[0], col.bins[-1]).all(), name
        else:
            assert {_label(v) for v in values} <= {_label(c) for c in col.categories}, name


def test_structure_search_ends_on_its_tables_when_its_budget_is_spent(mds_partition, monkeypatch, caplog) -> None:
    # Setup: room for only 40 structure tables, fewer than the search would ask for
    import logging

    monkeypatch.setattr(two_step_bn, "DP_STRUCTURE_TABLES", 40)
    schema = mds_partition.schema.select(SMALL)
    grid = _grid(mds_partition, schema, keep_messages=True)
    strategy = _strategy(schema, PrivacyBudget(1.0, 1e-5))
    # Run
    with caplog.at_level(logging.INFO, logger=two_step_bn.log.name):
        result = strategy.start(grid)
    # Assert: the spent budget is a warning once per run (it was repeated at every later search step)
    spent = [r for r in caplog.records if "structure budget spent" in r.getMessage()]
    assert len(spent) >= 2 and [r.levelno for r in spent].count(logging.WARNING) == 1
    # Assert: each site was asked for at most 40 structure tables plus one parameter request; budget held
    asked = [m for m in grid.sent if m.metadata.message_type == "query.counts"]
    per_site = len(asked) // 3
    families = [len(m.content["config"]["families"]) for m in asked[::3]]
    assert sum(families[: per_site - 1]) == 40
    summary = strategy.privacy_summary_
    assert summary["phases"]["structure"]["releases"] == 40
    assert summary["epsilon_spent"] <= 1.0 + 1e-9
    assert result.generator.sample(50, random_state=0).shape[0] == 50


def test_site_noise_share_under_secure_aggregation_and_in_clear() -> None:
    # By hand: sigma 6 over 4 sites -> each adds sd 3 when only the sum is seen, 6 when its table is seen alone
    assert two_step_bn.site_noise_std(6.0, 4, secure_aggregation=True) == pytest.approx(3.0)
    assert two_step_bn.site_noise_std(6.0, 4, secure_aggregation=False) == 6.0


def test_count_noise_has_the_asked_spread_and_keeps_shapes() -> None:
    # Setup
    tables = {"a|": np.full((200, 100), 50, dtype=np.int64), "b|a": np.zeros((3, 2), dtype=np.int64)}
    # Run
    noisy = two_step_bn.add_count_noise(tables, 4.0, random_state=0)
    # Assert: rounded Gaussian noise, sd sqrt(16 + 1/12), mean 0; negative cells kept for unbiased sums
    noise = noisy["a|"] - 50
    assert noisy["b|a"].shape == (3, 2) and noisy["a|"].dtype == np.int64
    assert abs(noise.mean()) < 0.1
    assert noise.std() == pytest.approx(math.sqrt(16 + 1 / 12), rel=0.03)


def test_sites_ledgers_stop_a_second_run_before_their_budget_is_exceeded(mds_partition, tmp_path) -> None:
    # Setup: every site allows epsilon 1.3 in all; each run asks for at most epsilon 1
    from fedsynth.errors import FedsynthError
    from fedsynth.privacy.ledger import PrivacyLedger

    schema = mds_partition.schema.select(SMALL)
    ledgers = [PrivacyLedger(tmp_path / s.name / "privacy_ledger.json", PrivacyBudget(1.3, 1e-5))
               for s in mds_partition.sites]

    def grid() -> InProcessGrid:
        return InProcessGrid([SiteRuntime(s.name, s.data, schema, seed=i, privacy_ledger=ledgers[i])
                              for i, s in enumerate(mds_partition.sites)])

    # Run: runs follow one another until the sites refuse one part-way
    spent: list[list[float]] = []
    refused = False
    for _ in range(6):
        try:
            _strategy(schema, PrivacyBudget(1.0, 1e-5)).start(grid())
        except FedsynthError as exc:
            # the sites that refused are left out until fewer than min_sites remain
            # the coordinator asks every site what it has left and stops the run before any table is asked for
            assert "more than its sites allow" in str(exc) and "nothing was released" in str(exc)
            refused = True
            break
        finally:
            spent.append([led.epsilon_spent(s.name) for led, s in zip(ledgers, mds_partition.sites, strict=True)])
    # Assert: the first run fit, a later one was stopped, no site ever passed its budget
    assert 0 < min(spent[0]) and len(spent) >= 2
    assert refused and spent[-1] == spent[-2]
    assert max(max(row) for row in spent) <= 1.3 + 1e-9


def test_a_private_runs_count_tables_are_charged_under_its_ledger_id_with_its_hello(mds_partition, tmp_path) -> None:
    # Setup: a private run whose ledger id is its run directory's name (as fedsynth run sets it), over sites with
    # ledgers. Before, the count tables were charged under the run's token and the hello and domain under the
    # directory's name: two entries per run, and a resumed try's tables under a token nobody asks about.
    from fedsynth.privacy.ledger import PrivacyLedger

    schema = mds_partition.schema.select(SMALL)
    ledgers = [PrivacyLedger(tmp_path / s.name / "privacy_ledger.json", PrivacyBudget(5.0, 1e-5))
               for s in mds_partition.sites]
    grid = InProcessGrid([SiteRuntime(s.name, s.data, schema, seed=i, privacy_ledger=ledgers[i])
                          for i, s in enumerate(mds_partition.sites)])
    strategy = _strategy(schema, PrivacyBudget(1.0, 1e-5))
    strategy.privacy_run_id = "run-dir"  # type: ignore[attr-defined]
    # Run
    strategy.start(grid)
    # Assert: every site holds one run, the directory's name, with its hello, domain and count tables in it
    for led, s in zip(ledgers, mds_partition.sites, strict=True):
        runs = led._read()["datasets"][s.name]
        assert list(runs) == ["run-dir"]
        phases = {key.split("/")[0] for key in runs["run-dir"]}
        assert "counts" in phases and len(phases) >= 2
        assert led.epsilon_of_runs(s.name, ["run-dir"]) == pytest.approx(led.epsilon_spent(s.name))


def test_a_coordinator_asking_for_noiseless_counts_is_refused_by_a_site_with_a_ledger(
    mds_partition, tmp_path, monkeypatch
) -> None:
    # Setup: a curious coordinator sends noise multiplier ~0 (as if epsilon were huge) and skips the budget check
    from fedsynth.errors import FedsynthError
    from fedsynth.privacy.ledger import PrivacyLedger
    from fedsynth.strategies import site_budget

    monkeypatch.setattr(site_budget, "check_site_budgets", lambda *args, **kwargs: {})

    schema = mds_partition.schema.select(SMALL)
    ledgers = [PrivacyLedger(tmp_path / s.name / "privacy_ledger.json", PrivacyBudget(1.0, 1e-5))
               for s in mds_partition.sites]
    grid = InProcessGrid([SiteRuntime(s.name, s.data, schema, seed=i, privacy_ledger=ledgers[i])
                          for i, s in enumerate(mds_partition.sites)])
    # Run / Assert: every site refuses; nothing is charged
    with pytest.raises(FedsynthError):
        _strategy(schema, PrivacyBudget(1e6, 1e-5)).start(grid)
    assert all(led.epsilon_spent(s.name) == 0.0 for led, s in zip(ledgers, mds_partition.sites, strict=True))


def test_noisy_counts_by_secure_aggregation_stay_within_budget_and_sample(mds_partition) -> None:
    # Setup: the same run with the tables summed by secure aggregation (each site adds sigma^2 / min_sites)
    schema = mds_partition.schema.select(SMALL)
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network", generator_params={"max_indegree": 1},
                             min_sites=3, params={"secure_aggregation": True})
    strategy.privacy = PrivacyBudget(1.0, 1e-5)
    # Run
    result = strategy.start(_grid(mds_partition, schema))
    # Assert
    assert 0 < strategy.privacy_summary_["epsilon_spent"] <= 1.0 + 1e-9
    assert strategy.privacy_summary_["distributed_noise"]["site_variance_share"] == "1/3"
    assert len(result.generator.sample(100, random_state=0)) == 100
    from fedsynth.generators.bayesian_network import BayesianNetworkGenerator

    cen = BayesianNetworkGenerator(schema, domain=result.domain, max_indegree=1).fit(
        mds_partition.train[schema.model_columns])
    assert result.generator.edges_ != cen.edges_ or any(
        not np.allclose(result.generator.model_.get_cpds(c.variable).values, c.values) for c in cen.model_.get_cpds())
