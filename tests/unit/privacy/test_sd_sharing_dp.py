"""SD-sharing under a privacy budget: the hello and the shared domain are released under the budget and each site's
generator is fitted with differential privacy on what they leave (VAE-BGM by DP-SGD and a private latent mixture,
the Bayesian network from noisy counts), so that hello, domain and fit compose to exactly the run's (ε, δ) by
dp_accounting; each ledger is charged all three and never past its budget (also when a run is resumed, with no
server checkpoint), the noise matches dp_accounting's calibration, CTGAN is refused with its reason before anything
is asked, the gate decides all or nothing without its figures leaving, and a site's extreme value appears in no
message or released row."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from dp_accounting import (
    ComposedDpEvent,
    GaussianDpEvent,
    PoissonSampledDpEvent,
    SelfComposedDpEvent,
    calibrate_dp_mechanism,
)
from dp_accounting.mechanism_calibration import ExplicitBracketInterval
from dp_accounting.rdp import RdpAccountant
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord

from fedsynth.errors import ValidationError
from fedsynth.privacy.accounting import DEFAULT_ORDERS, BudgetExceededError, PrivacyBudget, epsilon_from_rdp
from fedsynth.strategies import records, sd_sharing
from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.policy import SitePolicy
from fedsynth.strategies.registry import make_strategy
from fedsynth.strategies.site import SiteRuntime
from fedsynth.strategies.site_budget import site_ledger

SMALL = ["AGE", "SEX", "HB", "PLT", "BM_BLAST", "CYTO_IPSSR", "TP53", "SF3B1", "OS_YEARS", "OS_STATUS"]
VAE = {"hidden_dims": [16], "latent_dim": 3, "n_components": 2, "batch_size": 256, "epochs": 2, "device": "cpu"}
BN = {"max_indegree": 1}
#: A site policy whose gate is off: the release is the private model's sample, under the guarantee alone.
NO_GATE = SitePolicy(privacy_check=False)
GATE_FIGURES = ("exact_copies", "nndr_p5", "mia_auc", "dcr_share", "exact_copies_removed")


def _sites(partition: Any, schema: Any, root: Path, policy: SitePolicy = NO_GATE,
           columns: list[str] = SMALL) -> list[SiteRuntime]:
    return [SiteRuntime(s.name, s.data[columns], schema, seed=i, policy=policy, state_dir=root / s.name,
                        privacy_ledger=site_ledger(policy, root / s.name))
            for i, s in enumerate(partition.sites)]


def _strategy(schema: Any, budget: PrivacyBudget | None, generator: str, run_id: str = "run-a",
              min_sites: int = 3, **params: Any) -> Any:
    gen_params = {"vae_bgm": VAE, "bayesian_network": BN}.get(generator, {})
    params.setdefault("privacy_check", False)  # the gate is the sites' policy's to keep (see the gate tests)
    strategy = make_strategy("sd_sharing", schema, generator=generator, generator_params=gen_params,
                             min_sites=min_sites, params=params)
    strategy.privacy = budget
    strategy.privacy_run_id = run_id
    return strategy


def _before_the_fit(budget: PrivacyBudget, n_columns: int = len(SMALL)) -> list[Any]:
    """dp_accounting's events of the run's releases before the sites' fits: the hello's noisy row count (one
    Gaussian use) and the domain's count vectors (one use per model column), at the noise the run planned."""
    from fedsynth.strategies.secure_domain import pre_run_releases

    return [SelfComposedDpEvent(GaussianDpEvent(r.noise_multiplier), r.count)
            for r in pre_run_releases(budget, n_columns)]


def _vae_reference(account: dict[str, Any], budget: PrivacyBudget) -> RdpAccountant:
    """dp_accounting's own composition of what a site released in a private VAE-BGM run: the hello, the domain,
    then its fit."""
    ref = RdpAccountant(orders=list(DEFAULT_ORDERS))
    for event in _before_the_fit(budget):
        ref.compose(event)
    ref.compose(SelfComposedDpEvent(PoissonSampledDpEvent(account["sample_rate"],
                                                          GaussianDpEvent(account["noise_multiplier"])),
                                    int(account["steps"])))
    ref.compose(SelfComposedDpEvent(GaussianDpEvent(account["mixture_noise_multiplier"]),
                                    int(account["mixture_releases"])))
    return ref


# -- VAE-BGM ------------------------------------------------------------------------------------------------


def test_private_vae_bgm_sharing_spends_at_every_site_what_dp_accounting_composes(mds_partition, tmp_path) -> None:
    # Setup
    from fedsynth.strategies.secure_domain import DP_DOMAIN_SHARE, DP_HELLO_SHARE

    schema = mds_partition.schema.select(SMALL)
    sites = _sites(mds_partition, schema, tmp_path)
    budget = PrivacyBudget(3.0, 1e-5)
    strategy = _strategy(schema, budget, "vae_bgm")
    # Run
    result = strategy.start(InProcessGrid(sites))
    # Assert: the rows came (as many as each site holds), the split names every phase, and every site's account
    # and ledger are dp_accounting's composition of what it released: hello, domain and its fit, to (ε, δ)
    summary = strategy.privacy_summary_
    assert len(result.synthetic) == sum(len(s.data) for s in sites)
    rest = 1 - DP_HELLO_SHARE - DP_DOMAIN_SHARE
    assert summary["split"] == {"hello": pytest.approx(DP_HELLO_SHARE), "domain": pytest.approx(DP_DOMAIN_SHARE),
                                "training": pytest.approx(0.85 * rest), "mixture": pytest.approx(0.15 * rest)}
    assert summary["gate"] == sd_sharing.GATE_UNDER_DP
    for site in sites:
        mine = summary["sites"][site.name]
        ref = _vae_reference(mine, budget)
        assert mine["epsilon_spent"] == pytest.approx(ref.get_epsilon(1e-5), rel=1e-6)
        assert mine["epsilon_spent"] <= 3.0 * (1 + 1e-9)
        assert mine["n_train_rows"] == len(site.data)  # the gate is off: every row trains
        # the site's ledger was charged exactly the composed curve, before the fit
        np.testing.assert_allclose(site.privacy_ledger.spent_rdp(site.name), ref._rdp, rtol=1e-6)
        assert site.privacy_ledger.epsilon_spent(site.name) <= 3.0 * (1 + 1e-9)
        assert site.privacy_ledger.epsilon_spent(site.name) == pytest.approx(3.0, rel=1e-3)
    assert summary["epsilon_spent"] == pytest.approx(3.0, rel=1e-3)


def test_private_vae_bgm_noise_multiplier_is_dp_accountings_calibration(mds_partition, tmp_path) -> None:
    # Setup: the calibration computed here with dp_accounting alone, for the plan each site reported and the
    # releases the run made before it
    schema = mds_partition.schema.select(SMALL)
    sites = _sites(mds_partition, schema, tmp_path)
    strategy = _strategy(schema, PrivacyBudget(2.0, 1e-5), "vae_bgm")
    # Run
    strategy.start(InProcessGrid(sites))
    # Assert
    for site in sites:
        mine = strategy.privacy_summary_["sites"][site.name]
        mixture = SelfComposedDpEvent(GaussianDpEvent(mine["mixture_noise_multiplier"]), int(mine["mixture_releases"]))
        before = _before_the_fit(PrivacyBudget(2.0, 1e-5))  # the hello and the domain, spent before the fit

        def event(z: float, mine: dict[str, Any] = mine, mixture: Any = mixture, before: Any = before) -> Any:
            sgd = PoissonSampledDpEvent(mine["sample_rate"], GaussianDpEvent(z))
            return ComposedDpEvent([*before, SelfComposedDpEvent(sgd, int(mine["steps"])), mixture])

        z = calibrate_dp_mechanism(lambda: RdpAccountant(orders=list(DEFAULT_ORDERS)), event, 2.0, 1e-5,
                                   ExplicitBracketInterval(1e-2, 1e4), tol=1e-4)
        assert mine["noise_multiplier"] == pytest.approx(z, rel=1e-6)
        q = min(VAE["batch_size"], len(site.data)) / len(site.data)
        assert mine["sample_rate"] == pytest.approx(q) and mine["steps"] == VAE["epochs"] * math.ceil(1 / q)


def test_plan_local_vae_mixture_share_is_fifteen_percent_of_the_budgets_rho() -> None:
    # Setup
    from fedsynth.generators._dp import plan_local_vae
    from fedsynth.privacy.accounting import rho_for_budget

    budget = PrivacyBudget(1.0, 1e-6)
    # Run
    plan = plan_local_vae(budget, 500, 100, 3)
    # Assert: 18 Gaussian releases spend 0.15 rho: 18 / (2 z^2) = 0.15 rho
    assert plan.mixture_releases == 18 and plan.steps == 15
    assert 18 / (2 * plan.mixture_noise**2) == pytest.approx(0.15 * rho_for_budget(budget), rel=1e-12)
    assert epsilon_from_rdp(plan.rdp(DEFAULT_ORDERS), 1e-6) <= 1.0 * (1 + 1e-9)
    with pytest.raises(ValueError, match="finite budget"):
        plan_local_vae(PrivacyBudget(math.inf), 500, 100, 3)


# -- Bayesian network ---------------------------------------------------------------------------------------


def test_private_bn_sharing_spends_its_noisy_tables_within_the_budget_and_charges_the_ledger_the_run(
    mds_partition, tmp_path
) -> None:
    # Setup
    from fedsynth.strategies.secure_domain import DP_DOMAIN_SHARE, DP_HELLO_SHARE
    from fedsynth.strategies.two_step_bn import DP_STRUCTURE_TABLES

    schema = mds_partition.schema.select(SMALL)
    sites = _sites(mds_partition, schema, tmp_path)
    budget = PrivacyBudget(3.0, 1e-5)
    strategy = _strategy(schema, budget, "bayesian_network")
    # Run
    result = strategy.start(InProcessGrid(sites))
    # Assert
    summary = strategy.privacy_summary_
    half = (1 - DP_HELLO_SHARE - DP_DOMAIN_SHARE) / 2
    assert len(result.synthetic) > 0
    assert summary["split"] == {"hello": pytest.approx(DP_HELLO_SHARE), "domain": pytest.approx(DP_DOMAIN_SHARE),
                                "structure": pytest.approx(half), "parameters": pytest.approx(half)}
    for site in sites:
        mine = summary["sites"][site.name]
        # what the run released, composed by dp_accounting: the hello, the domain, and the fit's Gaussian count
        # tables of L2 sensitivity 1
        ref = RdpAccountant(orders=list(DEFAULT_ORDERS))
        for event in _before_the_fit(budget):
            ref.compose(event)
        ref.compose(SelfComposedDpEvent(GaussianDpEvent(mine["structure_noise_multiplier"]), mine["structure_tables"]))
        ref.compose(SelfComposedDpEvent(GaussianDpEvent(mine["parameters_noise_multiplier"]), mine["parameters_tables"]))
        assert mine["epsilon_spent"] == pytest.approx(ref.get_epsilon(1e-5), rel=1e-6)
        assert 0 < mine["structure_tables"] <= DP_STRUCTURE_TABLES and mine["parameters_tables"] > 0
        # the ledger holds the hello, the domain and the whole plan (both phases' full shares), which is the run's
        # epsilon and no more
        planned = RdpAccountant(orders=list(DEFAULT_ORDERS))
        for event in _before_the_fit(budget):
            planned.compose(event)
        planned.compose(SelfComposedDpEvent(GaussianDpEvent(mine["structure_noise_multiplier"]), DP_STRUCTURE_TABLES))
        planned.compose(SelfComposedDpEvent(GaussianDpEvent(mine["parameters_noise_multiplier"]),
                                            mine["parameters_tables"]))
        np.testing.assert_allclose(site.privacy_ledger.spent_rdp(site.name), planned._rdp, rtol=1e-6)
        assert site.privacy_ledger.epsilon_spent(site.name) == pytest.approx(3.0, rel=1e-6)
        assert site.privacy_ledger.epsilon_spent(site.name) <= 3.0 * (1 + 1e-9)
        assert mine["epsilon_spent"] <= site.privacy_ledger.epsilon_spent(site.name) * (1 + 1e-9)


# -- resume and the site's budget -----------------------------------------------------------------------------


@pytest.mark.parametrize("generator", [pytest.param("bayesian_network", marks=pytest.mark.slow), "vae_bgm"])
def test_resumed_private_run_gets_the_same_rows_and_never_spends_twice(mds_partition, tmp_path, generator) -> None:
    # Setup: a site budget of 5; the run asks for 3
    schema = mds_partition.schema.select(SMALL)
    policy = SitePolicy(privacy_check=False, epsilon=5.0)
    first = _strategy(schema, PrivacyBudget(3.0, 1e-5), generator)
    first_rows = first.start(InProcessGrid(_sites(mds_partition, schema, tmp_path, policy))).synthetic
    spent = {s.name: site_ledger(policy, tmp_path / s.name).spent_rdp(s.name) for s in mds_partition.sites}
    # Run: the same run asked again (fresh processes: new site runtimes on the same folders)
    again = _strategy(schema, PrivacyBudget(3.0, 1e-5), generator)
    again_rows = again.start(InProcessGrid(_sites(mds_partition, schema, tmp_path, policy))).synthetic
    # Assert: the same rows, no new spending, the account unchanged
    pd.testing.assert_frame_equal(first_rows, again_rows)
    for s in mds_partition.sites:
        ledger = site_ledger(policy, tmp_path / s.name)
        np.testing.assert_array_equal(ledger.spent_rdp(s.name), spent[s.name])
        assert ledger.epsilon_spent(s.name) <= 5.0
    assert again.privacy_summary_["sites"] == first.privacy_summary_["sites"]
    # ... while a new run asking 3 more is refused before any row is asked for (5 - 3 < 3)
    grid = InProcessGrid(_sites(mds_partition, schema, tmp_path, policy), keep_messages=True)
    with pytest.raises(BudgetExceededError, match="nothing was released"):
        _strategy(schema, PrivacyBudget(3.0, 1e-5), generator, run_id="run-b").start(grid)
    assert "train.share" not in {m.metadata.message_type for m in grid.sent}


def test_a_site_whose_ledger_is_short_refuses_the_fit_before_training(mds_partition, tmp_path, monkeypatch) -> None:
    # Setup: a coordinator that skips the budget check; site-2's ledger allows 1, the run asks 3 (its hello and
    # domain cost 0.89 of it)
    from fedsynth.strategies import site_budget

    schema = mds_partition.schema.select(SMALL)
    sites = _sites(mds_partition, schema, tmp_path)
    tight = SitePolicy(privacy_check=False, epsilon=1.0)
    sites[1] = SiteRuntime(sites[1].name, sites[1].data, schema, seed=1, policy=tight, state_dir=tmp_path / "s2",
                           privacy_ledger=site_ledger(tight, tmp_path / "s2"))
    budget = PrivacyBudget(3.0, 1e-5)
    strategy = _strategy(schema, budget, "bayesian_network", min_sites=1)
    monkeypatch.setattr(site_budget, "check_site_budgets", lambda *args, **kwargs: {})
    # Run
    result = strategy.start(InProcessGrid(sites))
    # Assert: that site is left out by its ledger and spent nothing on a fit (its ledger holds the hello and the
    # domain only); the others released
    assert "BudgetExceededError" in result.left_out[sites[1].name]
    before = RdpAccountant(orders=list(DEFAULT_ORDERS))
    for event in _before_the_fit(budget):
        before.compose(event)
    np.testing.assert_allclose(sites[1].privacy_ledger.spent_rdp(sites[1].name), before._rdp, rtol=1e-12)
    assert set(strategy.privacy_summary_["sites"]) == {sites[0].name, sites[2].name}


def test_a_coordinator_that_under_reports_the_hello_and_domain_gets_no_extra_budget_for_the_fit(
    mds_partition, tmp_path
) -> None:
    # Setup: the same private BN run twice, the second by a coordinator that sends dp_spent = [] after its
    # private hello and domain (as if they had cost nothing, so that each site would plan its fit with all of 3)
    schema = mds_partition.schema.select(SMALL)
    budget = PrivacyBudget(3.0, 1e-5)
    honest_sites = _sites(mds_partition, schema, tmp_path / "honest")[2:]  # the smallest site: a quick fit
    lying_sites = _sites(mds_partition, schema, tmp_path / "lying")[2:]
    honest = _strategy(schema, budget, "bayesian_network", min_sites=1)
    lying = _strategy(schema, budget, "bayesian_network", min_sites=1)
    run = lying.run

    def under_reporting_run(*args: Any, **kwargs: Any) -> Any:
        lying.privacy = lying.privacy.fresh()  # what train.share's dp_spent is built from
        return run(*args, **kwargs)

    lying.run = under_reporting_run
    grid = InProcessGrid(lying_sites, keep_messages=True)
    # Run
    honest.start(InProcessGrid(honest_sites))
    lying.start(grid)
    # Assert: the coordinator did send an empty dp_spent, and every site planned its fit from its own record of
    # the hello and domain: the same structure noise and split as in the honest run (the parameter phase's noise
    # depends on the network found), and its ledger holds the run's 3 and no more
    shares = [records.from_config_record(m.content["config"]) for m in grid.sent
              if m.metadata.message_type == "train.share"]
    assert shares and all(c["dp_spent"] == "[]" for c in shares)
    for h, site in zip(honest_sites, lying_sites, strict=True):
        want, got = honest.privacy_summary_["sites"][h.name], lying.privacy_summary_["sites"][site.name]
        assert got["structure_noise_multiplier"] == pytest.approx(want["structure_noise_multiplier"], rel=1e-12)
        assert got["split"] == pytest.approx(want["split"], rel=1e-12)
        assert site.privacy_ledger.epsilon_spent(site.name) <= 3.0 * (1 + 1e-9)
        assert site.privacy_ledger.epsilon_spent(site.name) == pytest.approx(
            h.privacy_ledger.epsilon_spent(h.name), rel=1e-9)


def test_the_site_plans_with_the_larger_of_its_record_and_the_coordinators_per_phase(mds_partition) -> None:
    # Setup: a site that released a hello and a domain under run-a; the coordinator over-states the domain
    from fedsynth.privacy.accounting import Release
    from fedsynth.strategies import secure_domain

    schema = mds_partition.schema.select(SMALL)
    site = SiteRuntime("site-1", mds_partition.sites[0].data[SMALL], schema)
    hello, domain = secure_domain.pre_run_releases(PrivacyBudget(3.0, 1e-5), len(SMALL))
    secure_domain.noisy_row_count(secure_domain.dp_request(hello, "tok", "run-a", 3), site)
    labels = {c: list(schema[c].categories or ("0", "1")) for c in schema.model_columns if not schema[c].is_numeric}
    secure_domain.noisy_domain_vector({"labels": records.encode_payload(labels),
                                       **secure_domain.dp_request(domain, "tok", "run-a", 3)}, site,
                                      secure_aggregation=False)
    more = Release("domain", domain.noise_multiplier / 2, domain.count)

    def plan(dp_spent: list[Release], run: str = "run-a") -> Any:
        cfg = {"dp_epsilon": 3.0, "dp_delta": 1e-5, "dp_run": run, "run_token": "tok",
               "dp_spent": json.dumps([[r.phase, r.noise_multiplier, r.count] for r in dp_spent])}
        return sd_sharing._message_budget(cfg, site)

    # Run / Assert: its own record when the coordinator says less, the coordinator's when it says more
    assert plan([]).spent_rho == pytest.approx(hello.rho + domain.rho, rel=1e-12)
    assert plan([hello, more]).spent_rho == pytest.approx(hello.rho + more.rho, rel=1e-12)
    assert plan([hello, domain]).spent == (hello, domain)
    # ... and under another run's id the site has no record: the coordinator's statement stands
    assert plan([], run="run-b").spent == ()


# -- what is refused -------------------------------------------------------------------------------------------


def test_private_ctgan_sharing_is_refused_with_the_reason_before_any_row_is_asked_for(mds_partition) -> None:
    schema = mds_partition.schema.select(SMALL)
    grid = InProcessGrid([SiteRuntime(s.name, s.data[SMALL], schema, seed=i) for i, s in enumerate(mds_partition.sites)],
                         keep_messages=True)
    with pytest.raises(ValidationError) as err:
        _strategy(schema, PrivacyBudget(3.0), "ctgan").start(grid)
    assert ("privacy: is not supported for sd_sharing with generator ctgan: CTGAN under differential privacy needs "
            "a private discriminator (DP-CTGAN, PATE-CTGAN)") in str(err.value)
    assert grid.sent == []  # refused before the hello: nothing was asked, nothing spent


def test_a_site_asked_for_a_private_fit_of_a_generator_without_one_refuses(mds_partition, tmp_path) -> None:
    # Setup: a coordinator that skips its own check and asks for private CTGAN rows
    schema = mds_partition.schema.select(SMALL)
    budget = PrivacyBudget(3.0)
    strategy = _strategy(schema, budget, "ctgan", min_sites=1)
    strategy.check_private_run = lambda: None  # type: ignore[method-assign]
    sites = _sites(mds_partition, schema, tmp_path)
    grid = InProcessGrid(sites, keep_messages=True)
    # Run / Assert: no site trains a plain CTGAN; nothing is spent on a fit (the ledgers hold the hello and domain)
    with pytest.raises(Exception, match="only 0 of 3 sites answered train.share"):
        strategy.start(grid)
    replies = [r for m, r in zip(grid.sent, grid.received) if m.metadata.message_type == "train.share"]
    assert len(replies) == 3 and all("no differentially private fit" in r.error.reason for r in replies)
    before = RdpAccountant(orders=list(DEFAULT_ORDERS))
    for event in _before_the_fit(budget):
        before.compose(event)
    for s in sites:
        np.testing.assert_allclose(s.privacy_ledger.spent_rdp(s.name), before._rdp, rtol=1e-12)


# -- the gate under a budget -----------------------------------------------------------------------------------


def test_under_a_budget_the_gate_decides_all_or_nothing_and_its_figures_stay_at_the_site(
    mds_partition, tmp_path, monkeypatch
) -> None:
    # Setup: the sites' policy keeps the gate on; the server asks to switch it off (it cannot); the gate fails at
    # site-2 only
    from fedsynth.evaluation import gate as gate_mod

    real_gate = gate_mod.release_gate
    calls: list[int] = []
    n2 = len(mds_partition.sites[1].data)
    failing = n2 - max(round(n2 * 0.2), 2)  # site-2's training part

    def gate(train: pd.DataFrame, synthetic: pd.DataFrame, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(train))
        verdict, figures = real_gate(train, synthetic, *args, **kwargs)
        if len(train) == failing:
            flag = gate_mod.GateFlag("mia_auc", 0.9, 0.6, "membership inference AUC 0.9 above 0.6")
            verdict = gate_mod.GateResult(False, (flag,), verdict.figures, verdict.thresholds)
        return verdict, figures

    open_gate = SitePolicy(gate_mia_auc_above=1.0, gate_nndr_p5_margin=1.0, gate_exact_copies_margin=1.0)
    monkeypatch.setattr(gate_mod, "release_gate", gate)
    schema = mds_partition.schema.select(SMALL)
    sites = _sites(mds_partition, schema, tmp_path, open_gate)
    grid = InProcessGrid(sites, keep_messages=True)
    strategy = _strategy(schema, PrivacyBudget(3.0), "bayesian_network", min_sites=1, privacy_check=False)
    # Run
    result = strategy.start(grid)
    # Assert: every site's gate ran on its training part (the holdout kept aside)
    assert len(calls) == 3
    assert failing in calls and {strategy.privacy_summary_["sites"][s.name]["n_train_rows"]
                                 for s in (sites[0], sites[2])} == set(calls) - {failing}
    # the failing site released nothing and said only that the gate failed; its spending stays on its ledger
    shares = [(m, r) for m, r in zip(grid.sent, grid.received) if m.metadata.message_type == "train.share"]
    failed = [r for _, r in shares if r.has_error()]
    assert len(failed) == 1 and sites[1].name in result.left_out
    assert sd_sharing._GATE_REFUSED_DP in failed[0].error.reason and "mia_auc" not in failed[0].error.reason
    assert sites[1].privacy_ledger.epsilon_spent(sites[1].name) == pytest.approx(3.0, rel=1e-6)
    # the others sent rows unfiltered (as many as they hold) and no gate figure
    for _, reply in shares:
        if reply.has_error():
            continue
        metrics = records.from_metric_record(reply.content["metrics"])
        assert not set(GATE_FIGURES) & set(metrics)
        assert metrics["n_synthetic"] == metrics["num_examples"]
    # a resumed run gets the same refusal without a second draw (the gate is not asked again)
    again = _strategy(schema, PrivacyBudget(3.0), "bayesian_network", min_sites=1)
    again_result = again.start(InProcessGrid(_sites(mds_partition, schema, tmp_path, open_gate)))
    assert len(calls) == 3 and sites[1].name in again_result.left_out


def test_a_clear_run_still_removes_exact_copies_and_sends_the_gate_figures(mds_partition, tmp_path) -> None:
    # Setup: the same sites without a budget
    schema = mds_partition.schema.select(SMALL)
    open_gate = SitePolicy(gate_mia_auc_above=1.0, gate_nndr_p5_margin=1.0, gate_exact_copies_margin=1.0)
    grid = InProcessGrid(_sites(mds_partition, schema, tmp_path, open_gate), keep_messages=True)
    # Run
    _strategy(schema, None, "bayesian_network").start(grid)
    # Assert
    for m, r in zip(grid.sent, grid.received):
        if m.metadata.message_type == "train.share":
            metrics = records.from_metric_record(r.content["metrics"])
            assert {"dcr_share", "exact_copies_removed"} <= set(metrics) and "privacy" not in r.content


def test_infinite_budget_shares_plain_fits_and_spends_nothing(mds_partition, tmp_path) -> None:
    schema = mds_partition.schema.select(SMALL)
    sites = _sites(mds_partition, schema, tmp_path)
    strategy = _strategy(schema, PrivacyBudget(math.inf), "bayesian_network")
    strategy.start(InProcessGrid(sites))
    assert strategy.privacy_summary_["epsilon_spent"] == 0.0
    assert all(s.privacy_ledger.epsilon_spent(s.name) == 0.0 for s in sites)


# -- a site's extreme value and a one-patient category ---------------------------------------------------------

EXTREME_HB = 19.731  # inside the declared clinical range, above every real haemoglobin of the cohort
ONE_PATIENT_LABEL = "aCML"  # a label the schema declares
WITH_WHO = [*SMALL, "WHO_2016"]


def _planted_sites(partition: Any, schema: Any, root: Path) -> list[SiteRuntime]:
    sites = _sites(partition, schema, root, columns=WITH_WHO)
    for s in sites:
        s.data = s.data.copy()
        s.data.loc[s.data["WHO_2016"] == ONE_PATIENT_LABEL, "WHO_2016"] = "other"
    small = sites[2].data
    small.loc[small.index[5], "HB"] = EXTREME_HB
    small.loc[small.index[7], "WHO_2016"] = ONE_PATIENT_LABEL
    return sites


def _holds_extreme(msg: Any) -> bool:
    if msg.has_error():
        return "19.73" in str(msg.error.reason)
    for rec in msg.content.values():
        if isinstance(rec, (ConfigRecord, MetricRecord)) and "19.73" in repr(dict(rec)):
            return True
        if isinstance(rec, ArrayRecord):
            for arr in rec.values():
                v = arr.numpy()
                if v.dtype.kind in "fiu" and np.isclose(v.astype(float), EXTREME_HB, rtol=0, atol=1e-6).any():
                    return True
    return False


@pytest.mark.parametrize("generator", [pytest.param("bayesian_network", marks=pytest.mark.slow), "vae_bgm"])
def test_a_planted_extreme_appears_in_no_message_and_rows_keep_to_the_private_domain(
    mds_partition, tmp_path, generator
) -> None:
    # Setup
    schema = mds_partition.schema.select(WITH_WHO)
    sites = _planted_sites(mds_partition, schema, tmp_path)
    assert sites[2].data["HB"].max() == EXTREME_HB > max(s.data["HB"].max() for s in sites[:2])
    grid = InProcessGrid(sites, keep_messages=True)
    # Run
    result = _strategy(schema, PrivacyBudget(3.0), generator).start(grid)
    # Assert: the shared domain (released under the budget) has no site's extreme as a bound; no released row
    # and no message holds it; every released label is one of the domain's
    assert result.domain["HB"].upper != EXTREME_HB
    rows = result.synthetic
    assert len(rows) > 0 and set(rows["WHO_2016"].dropna()) <= set(result.domain["WHO_2016"].categories)
    assert not np.isclose(rows["HB"].astype(float), EXTREME_HB, rtol=0, atol=1e-6).any()
    assert [m.metadata.message_type for m in grid.sent + grid.received if _holds_extreme(m)] == []


def test_a_one_patient_category_is_not_in_the_private_domain_nor_in_released_rows(
    mds_partition, tmp_path, monkeypatch
) -> None:
    # Setup: a declared WHO label held by one patient at the smallest site; the sites' noise from one seeded
    # generator (OS entropy in a deployment), so that the run is the same at every call
    from fedsynth.strategies import secure_domain

    rng = np.random.default_rng(11)
    monkeypatch.setattr(secure_domain, "noise_source", lambda: rng)
    schema = mds_partition.schema.select(WITH_WHO)
    sites = _planted_sites(mds_partition, schema, tmp_path)
    # Run
    result = _strategy(schema, PrivacyBudget(3.0), "vae_bgm").start(InProcessGrid(sites))
    # Assert: the label's noisy total stays under the release threshold (k - 1 plus z sigma), so it is neither in
    # the domain nor in any released row; the common labels are
    assert ONE_PATIENT_LABEL not in result.domain["WHO_2016"].categories
    assert len(result.domain["WHO_2016"].categories) >= 3
    assert (result.synthetic["WHO_2016"] != ONE_PATIENT_LABEL).all()


def test_epsilon_left_for_a_resumed_run_leaves_out_that_runs_own_spending(tmp_path) -> None:
    # Setup: a site budget of 5; run-a spent a Gaussian of zCDP rho 0.05, run-b another
    from fedsynth.privacy.accounting import Release
    from fedsynth.strategies.site_budget import epsilon_left

    policy = SitePolicy(epsilon=5.0)
    ledger = site_ledger(policy, tmp_path)
    curve = Release("x", math.sqrt(1 / (2 * 0.05))).rdp(ledger.orders)
    ledger.record("site", "run-a", "k", curve)
    ledger.record("site", "run-b", "k", curve)
    # Run
    left_all, _ = epsilon_left(policy, ledger, "site")
    left_a, _ = epsilon_left(policy, ledger, "site", exclude_runs=["run-a"])
    # Assert: hand-composed: rho 0.1 for both runs, 0.05 without run-a's, converted by dp_accounting
    assert left_all == pytest.approx(5.0 - epsilon_from_rdp(2 * curve, 1e-5, ledger.orders), rel=1e-12)
    assert left_a == pytest.approx(5.0 - epsilon_from_rdp(curve, 1e-5, ledger.orders), rel=1e-12)
    assert left_a > left_all
