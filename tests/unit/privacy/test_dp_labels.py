"""Label names of categorical columns without declared categories under a budget: DP partition selection keeps a
label held by one patient out at the rate its threshold promises, names common labels, charges the sites'
ledgers, and the whole run (names, counts, hello, BN phases) composes to the configured (ε, δ) as dp_accounting
computes it independently."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dp_accounting import ComposedDpEvent, GaussianDpEvent, SelfComposedDpEvent
from dp_accounting.rdp import RdpAccountant
from scipy import stats

from fedsynth.cohort.schema import TableSchema
from fedsynth.encoding import dp_domain
from fedsynth.privacy.accounting import DEFAULT_ORDERS, PrivacyAccountant, PrivacyBudget, Release
from fedsynth.privacy.ledger import PrivacyLedger
from fedsynth.strategies import records, secure_domain, two_step_bn
from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.registry import make_strategy
from fedsynth.strategies.site import SiteRuntime

SMALL = ["AGE", "SEX", "HB", "PLT", "BM_BLAST", "CYTO_IPSSR", "TP53", "SF3B1", "OS_YEARS", "OS_STATUS"]
RARE = "Rare-X"


def _undeclared(schema: TableSchema, name: str) -> TableSchema:
    cols = tuple(dataclasses.replace(c, categories=None) if c.name == name else c for c in schema.columns)
    return dataclasses.replace(schema, columns=cols)


def _sites_with_a_rare_label(mds_partition, schema: TableSchema, root: Path | None = None) -> list[SiteRuntime]:  # type: ignore[no-untyped-def]
    """The 3 MDS sites with CYTO_IPSSR undeclared and one patient of the second site holding a label nobody else holds."""
    out = []
    for i, s in enumerate(mds_partition.sites):
        data = s.data.copy()
        if i == 1:
            data.loc[data.index[0], "CYTO_IPSSR"] = RARE
        ledger = None if root is None else PrivacyLedger(root / s.name / "privacy_ledger.json", PrivacyBudget(10.0))
        out.append(SiteRuntime(s.name, data, schema, seed=i, privacy_ledger=ledger,
                               state_dir=None if root is None else root / s.name / "state"))
    return out


def test_a_label_held_by_one_patient_is_named_at_the_rate_the_threshold_promises() -> None:
    # Setup: one column, a label held once and one held 200 times; sigma 2 and delta_tau 0.05, so that the
    # promised rate is large enough to measure: P(1 + N(0, 4) > tau) = 0.05 exactly
    from fedsynth.cohort.columns import ColumnKind, ColumnRole, ColumnSpec

    schema = TableSchema((ColumnSpec("GROUP", ColumnKind.CATEGORICAL, ColumnRole.CLINICAL),), (), "toy")
    data = pd.DataFrame({"GROUP": [RARE] + ["common"] * 200})
    tau = dp_domain.label_threshold(2.0, 0.05, 1)
    assert stats.norm.sf((tau - 1) / 2.0) == pytest.approx(0.05, rel=1e-9)
    # Run: 4,000 independent selections
    rng = np.random.default_rng(0)
    named = [dp_domain.select_labels(data, schema, ["GROUP"], noise_std=2.0, threshold=tau, random_state=rng)["GROUP"]
             for _ in range(4000)]
    # Assert: the rare label named at 5% (binomial 99.9% interval), the common one always
    n_rare = sum(RARE in names for names in named)
    lo, hi = stats.binom.ppf([0.0005, 0.9995], 4000, 0.05)
    assert lo <= n_rare <= hi
    assert all("common" in names for names in named)


def test_the_threshold_splits_delta_tau_over_a_patients_columns() -> None:
    # Setup / Run: 3 columns, each naming a one-patient label with probability delta'
    tau = dp_domain.label_threshold(5.0, 1e-3, 3)
    per_column = stats.norm.sf((tau - 1) / 5.0)
    # Assert: a patient's 3 labels named with probability 1 - (1 - delta')^3 = delta_tau (Google's adjusted delta)
    assert 1 - (1 - per_column) ** 3 == pytest.approx(1e-3, rel=1e-9)
    assert dp_domain.label_threshold(5.0, 1e-3, 1) < tau


def test_under_a_budget_a_one_patient_label_is_never_named_and_common_ones_are(mds_partition, tmp_path) -> None:
    # Setup: epsilon 3; CYTO_IPSSR without declared categories; one patient holds RARE at site 2
    schema = _undeclared(mds_partition.schema.select(SMALL), "CYTO_IPSSR")
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network", min_sites=3,
                             generator_params={"max_indegree": 1})
    strategy.privacy = PrivacyBudget(3.0, 1e-5)
    sites = _sites_with_a_rare_label(mds_partition, schema, tmp_path)
    grid = InProcessGrid(sites, keep_messages=True)
    # Run
    strategy.run_token_ = "run-a"
    secure_domain.plan_private_run(strategy, grid)
    _, dom = strategy.hello_and_domain(grid)
    # Assert: RARE in no reply any site sent, nor in the domain; the labels held by hundreds are there
    for reply in grid.received:
        if reply.metadata.message_type == secure_domain.LABELS:
            named = records.from_payload_record(reply.content["labels"])
            assert RARE not in named["CYTO_IPSSR"]
    assert RARE not in dom["CYTO_IPSSR"].categories
    # (Good and Int are held by 1,098 and 177 patients of site 1, about 6 sigma and more above the threshold)
    assert {"Good", "Int"} <= set(dom["CYTO_IPSSR"].categories)
    # ... the threshold is the one of the run's noise and delta share, stated for the manifest
    domain_release = next(r for r in strategy.privacy.spent if r.phase == "domain")
    stated = strategy.domain_privacy_["label_selection"]
    assert stated["dp_label_threshold"] == pytest.approx(
        dp_domain.label_threshold(domain_release.noise_multiplier, 1e-5 * dp_domain.LABEL_THRESHOLD_DELTA_SHARE, 1))
    assert stated["columns"] == ["CYTO_IPSSR"]


def test_names_counts_and_the_runs_phases_compose_to_the_configured_budget(mds_partition, tmp_path) -> None:
    # Setup: the same run's releases before the BN's phases, then the phases spending the rest
    schema = _undeclared(mds_partition.schema.select(SMALL), "CYTO_IPSSR")
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network", min_sites=3,
                             generator_params={"max_indegree": 1})
    strategy.privacy = PrivacyBudget(3.0, 1e-5)
    sites = _sites_with_a_rare_label(mds_partition, schema, tmp_path)
    strategy.run_token_ = "run-a"
    hello, domain = secure_domain.plan_private_run(strategy, InProcessGrid(sites))
    strategy.hello_and_domain(InProcessGrid(sites))
    acc = PrivacyAccountant(strategy.privacy, two_step_bn.DP_SPLIT)
    z_structure = acc.noise_multiplier("structure", two_step_bn.DP_STRUCTURE_TABLES)
    z_parameters = acc.noise_multiplier("parameters", 30)
    # Run
    acc.charge(Release("structure", z_structure, two_step_bn.DP_STRUCTURE_TABLES))
    acc.charge(Release("parameters", z_parameters, 30))
    n_columns = len(schema.model_columns)
    ref = RdpAccountant(orders=list(DEFAULT_ORDERS))
    ref.compose(ComposedDpEvent([
        GaussianDpEvent(hello.noise_multiplier),
        SelfComposedDpEvent(GaussianDpEvent(domain.noise_multiplier), n_columns),  # the noisy counts
        SelfComposedDpEvent(GaussianDpEvent(domain.noise_multiplier), 1),  # the names of CYTO_IPSSR
        SelfComposedDpEvent(GaussianDpEvent(z_structure), two_step_bn.DP_STRUCTURE_TABLES),
        SelfComposedDpEvent(GaussianDpEvent(z_parameters), 30),
    ]))
    # Assert: dp_accounting's epsilon at the delta left after the threshold's share is the configured 3, and
    # that delta plus the threshold's is the configured 1e-5
    delta_tau = dp_domain.label_threshold_delta(strategy.privacy)
    assert strategy.privacy.delta + delta_tau == pytest.approx(1e-5, rel=1e-12)
    assert delta_tau == pytest.approx(1e-6, rel=1e-12)
    np.testing.assert_allclose(acc.rdp(), ref._rdp, rtol=1e-6)
    assert ref.get_epsilon(strategy.privacy.delta) == pytest.approx(3.0, abs=1e-6)
    assert acc.epsilon_spent() == pytest.approx(3.0, abs=1e-6)
    assert domain.count == n_columns + 1
    # ... and each site's ledger was charged the hello, the counts and the names, no more
    want = (Release("hello", hello.noise_multiplier).rdp(DEFAULT_ORDERS)
            + Release("domain", domain.noise_multiplier, n_columns + 1).rdp(DEFAULT_ORDERS))
    for site in sites:
        np.testing.assert_allclose(site.privacy_ledger.spent_rdp(site.name), want, rtol=1e-12)


def test_a_resumed_run_gets_the_same_names_at_no_new_cost(mds_partition, tmp_path) -> None:
    # Setup: a site answers the private label query of a run, then the same query again (a resume)
    schema = _undeclared(mds_partition.schema.select(SMALL), "CYTO_IPSSR")
    site = _sites_with_a_rare_label(mds_partition, schema, tmp_path)[0]
    tau = dp_domain.label_threshold(20.0, 1e-6, 1)  # delta_tau 1e-6 of the ledger's 1e-5
    cfg = {"dp_label_threshold": tau, **secure_domain.dp_request(Release("domain", 20.0, 1), "run-a", "run-a", 1)}
    # Run
    first = secure_domain.noisy_label_names(cfg, site)
    spent = site.privacy_ledger.spent_rdp(site.name)
    again = secure_domain.noisy_label_names(cfg, site)
    # Assert
    assert first == again and math.isfinite(float(spent.sum()))
    np.testing.assert_allclose(site.privacy_ledger.spent_rdp(site.name), spent, rtol=0)
    np.testing.assert_allclose(spent, Release("domain", 20.0, 1).rdp(DEFAULT_ORDERS), rtol=1e-12)
    assert site.privacy_ledger.spent_delta(site.name) == pytest.approx(1e-6, rel=1e-9)


def test_the_site_ledger_records_the_label_thresholds_delta_as_the_manifest_states_it(mds_partition, tmp_path) -> None:
    # Setup: a private two-step BN run (epsilon 3, delta 1e-5) with CYTO_IPSSR undeclared; each site's ledger
    # allows (10, 1e-5)
    from fedsynth.privacy.accounting import epsilon_from_rdp

    schema = _undeclared(mds_partition.schema.select(SMALL), "CYTO_IPSSR")
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network", min_sites=3,
                             generator_params={"max_indegree": 1})
    strategy.privacy = PrivacyBudget(3.0, 1e-5)
    sites = _sites_with_a_rare_label(mds_partition, schema, tmp_path)
    # Run
    strategy.start(InProcessGrid(sites))
    # Assert: the manifest states the threshold's delta_tau and the delta the RDP curve is converted at; each
    # ledger holds that delta_tau beside the curve and converts at the rest, so the site's (epsilon, delta) after
    # the run is the manifest's: delta_tau + the accountant's delta = 1e-5, epsilon within the run's 3
    stated = strategy.domain_privacy_["label_selection"]
    rdp_delta = strategy.privacy_summary_["budget"]["delta"]
    assert stated["dp_label_delta"] + rdp_delta == pytest.approx(1e-5, rel=1e-12)
    for site in sites:
        ledger = site.privacy_ledger
        assert ledger.spent_delta(site.name) == pytest.approx(stated["dp_label_delta"], rel=1e-9)
        eps = ledger.epsilon_spent(site.name)
        assert eps == pytest.approx(epsilon_from_rdp(ledger.spent_rdp(site.name), rdp_delta), rel=1e-9)
        assert 0 < eps <= strategy.privacy_summary_["epsilon_spent"] * (1 + 1e-9)
        # ... the control: converted at the ledger's whole delta (the former ledger) the site would state less
        assert epsilon_from_rdp(ledger.spent_rdp(site.name), 1e-5) < eps


def test_the_manifest_states_the_domains_label_selection_and_noise_split() -> None:
    # Setup: a strategy's own privacy summary and what its private domain stated
    from types import SimpleNamespace

    from fedsynth.experiments.run import privacy_summary

    stated = {"label_selection": {"dp_label_threshold": 151.0, "dp_label_delta": 1e-6, "columns": ["X"]},
              "domain_distributed_noise": {"site_variance_share": "1/2"}}
    strategy = SimpleNamespace(privacy_summary_={"epsilon_spent": 3.0}, domain_privacy_=stated)
    # Run
    summary = privacy_summary(SimpleNamespace(privacy=SimpleNamespace(epsilon=3.0, delta=1e-5)), strategy)  # type: ignore[arg-type]
    # Assert: both in the manifest's privacy block, beside the strategy's own
    assert summary == {"epsilon_spent": 3.0, **stated}
