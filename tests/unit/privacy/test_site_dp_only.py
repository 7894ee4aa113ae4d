"""A site whose own policy sets a finite ε releases only under differential privacy: a run without a budget
(ε = ∞) stops before anything is released, a hand-built request without the DP settings is refused for every
message type that releases something computed from the rows, and a site without a budget behaves as before."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytest
from flwr.app import Message, RecordDict

from fedsynth.errors import FedsynthError
from fedsynth.privacy.accounting import BudgetExceededError, PrivacyBudget, Release
from fedsynth.strategies import records
from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.policy import SitePolicy
from fedsynth.strategies.registry import make_strategy
from fedsynth.strategies.secagg_protocol import VECTOR_SOURCES
from fedsynth.strategies.site import COLLECT_UNDER_BUDGET, UNDER_BUDGET, SiteRuntime, all_site_handlers
from fedsynth.strategies.site_budget import site_ledger

SMALL = ["AGE", "SEX", "HB", "PLT", "BM_BLAST", "CYTO_IPSSR", "TP53", "SF3B1", "OS_YEARS", "OS_STATUS"]
BUDGETED = SitePolicy(epsilon=3.0)

#: The message types a site under a budget answers only with DP settings, and those it never answers.
NEEDS_DP = sorted(t for t, r in UNDER_BUDGET.items() if r.needs)
NEVER = sorted(t for t, r in UNDER_BUDGET.items() if r.needs is None)
COLLECT_NEEDS_DP = sorted(s for s, r in COLLECT_UNDER_BUDGET.items() if r.needs)


def _sites(partition, schema, policies: Mapping[int, SitePolicy], root=None) -> list[SiteRuntime]:  # type: ignore[no-untyped-def]
    out = []
    for i, s in enumerate(partition.sites):
        policy = policies.get(i, SitePolicy())
        ledger = site_ledger(policy, root / s.name) if root is not None else None
        out.append(SiteRuntime(s.name, s.data[SMALL], schema, seed=i, policy=policy, privacy_ledger=ledger,
                               state_dir=None if root is None else root / s.name))
    return out


def _message(message_type: str, config: Mapping[str, Any], **parts: RecordDict | Any) -> Message:
    content = RecordDict({"config": records.to_config_record(dict(config))})
    for name, record in parts.items():
        content[name] = record
    return Message(content, dst_node_id=1, message_type=message_type, group_id="by-hand")


def _dp_settings(keys: tuple[str, ...] | None) -> dict[str, float]:
    return {k: 1.0 for k in keys or ()}


def _spy_grid(site: SiteRuntime, message_type: str, reached: list[str]) -> InProcessGrid:
    """A one-site grid whose handler for ``message_type`` only records that it ran: what the site's gate lets
    through reaches it, what it refuses does not."""

    def spy(msg: Message, site: SiteRuntime) -> RecordDict:
        reached.append(msg.metadata.message_type)
        return RecordDict({"metrics": records.to_metric_record({"answered": 1})})

    return InProcessGrid([site], handlers={message_type: spy}, keep_messages=True)


# -- the table ------------------------------------------------------------------------------------------------


def test_every_message_type_and_vector_source_is_classified() -> None:
    assert set(UNDER_BUDGET) == set(all_site_handlers())
    assert set(COLLECT_UNDER_BUDGET) == set(VECTOR_SOURCES)
    # Nothing computed from the rows is answered without DP keys: the always-answered types hold keys and masks
    assert sorted(t for t, r in UNDER_BUDGET.items() if r.needs == ()) == [
        "query.privacy_budget", "query.secagg_collect", "query.secagg_setup", "query.secagg_share_keys",
        "query.secagg_unmask"]


# -- the coordinator: an ε = ∞ run stops up front -------------------------------------------------------------


@pytest.mark.parametrize(("strategy_name", "generator"), [("two_step_bn", "bayesian_network"),
                                                          ("fedavg", "vae_bgm"), ("sd_sharing", "bayesian_network")])
@pytest.mark.parametrize("privacy", [None, PrivacyBudget(math.inf)])
def test_an_unbounded_run_is_refused_up_front_by_a_site_with_a_budget(mds_partition, strategy_name, generator,
                                                                      privacy) -> None:
    # Setup: site-2's steward set epsilon 3; the run has no privacy block (or epsilon inf)
    schema = mds_partition.schema.select(SMALL)
    sites = _sites(mds_partition, schema, {1: BUDGETED})
    grid = InProcessGrid(sites, keep_messages=True)
    params = {"hidden_dims": [8], "latent_dim": 2, "n_components": 2} if generator == "vae_bgm" else {}
    strategy = make_strategy(strategy_name, schema, generator=generator, generator_params=params, min_sites=3)
    strategy.privacy = privacy
    # Run / Assert: one message naming the site and its budget, and what to set
    with pytest.raises(BudgetExceededError) as exc:
        strategy.start(grid)
    text = str(exc.value)
    assert "site-2 (epsilon 3 left)" in text and "site-1" not in text and "site-3" not in text
    assert "nothing was released" in text and "privacy: {epsilon, delta}" in text and "at most 3" in text
    # ... only the budget question went out, and every reply holds the ε left, δ, the noise floor (settings of
    # the policy) and the site's name: no count, label or statistic of any site
    assert {m.metadata.message_type for m in grid.sent} == {"query.privacy_budget"}
    for reply in grid.received:
        assert not reply.has_error()
        assert set(reply.content) == {"metrics", "info"}
        assert set(records.from_metric_record(reply.content["metrics"])) == {"epsilon_left", "delta", "min_noise_multiplier"}
        assert set(records.from_config_record(reply.content["info"])) == {"site_name"}


def test_the_cli_exits_with_code_2_and_the_message(mds_partition) -> None:
    # Setup: the CLI's error boundary around a run refused by a site's budget
    import typer

    from fedsynth.cli._common import handle_errors

    schema = mds_partition.schema.select(SMALL)
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network", min_sites=3)

    @handle_errors
    def run() -> None:
        strategy.start(InProcessGrid(_sites(mds_partition, schema, {0: BUDGETED, 2: BUDGETED})))

    # Run / Assert
    with pytest.raises(typer.Exit) as exc:
        run()
    assert exc.value.exit_code == 2


def test_a_site_without_a_budget_changes_nothing_for_an_unbounded_run(mds_partition) -> None:
    # Setup: every site at epsilon inf (the default policy)
    schema = mds_partition.schema.select(SMALL)
    grid = InProcessGrid(_sites(mds_partition, schema, {}), keep_messages=True)
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network",
                             generator_params={"max_indegree": 1}, min_sites=3)
    # Run
    result = strategy.start(grid)
    # Assert: the budget question first, then the usual exchange, exact row counts; no refusal for want of DP
    # (the policy's k still withholds tables that would isolate patients, as before)
    assert grid.sent[0].metadata.message_type == "query.privacy_budget"
    assert {"query.hello", "query.summary", "query.counts"} <= {m.metadata.message_type for m in grid.sent}
    assert not any("differential-privacy budget" in m.error.reason for m in grid.received if m.has_error())
    assert sorted(s.n_rows for s in result.sites) == sorted(len(s.data) for s in mds_partition.sites)


# -- the site: a hand-built request without DP settings -------------------------------------------------------


@pytest.mark.parametrize("message_type", NEEDS_DP)
def test_a_request_without_dp_settings_is_refused_and_with_them_answered(mds_partition, message_type) -> None:
    # Setup
    schema = mds_partition.schema.select(SMALL)
    site = _sites(mds_partition, schema, {0: BUDGETED})[0]
    reached: list[str] = []
    grid = _spy_grid(site, message_type, reached)
    keys = UNDER_BUDGET[message_type].needs
    # Run: the same instruction without, then with, the private request's keys
    plain = grid.send_and_receive([_message(message_type, {"run_token": "t"})])[0]
    private = grid.send_and_receive([_message(message_type, {"run_token": "t", **_dp_settings(keys)})])[0]
    # Assert: refused with a message an operator can act on, no handler ran; answered once the keys are there
    assert plain.has_error()
    reason = plain.error.reason
    assert reason.startswith("DisclosureRefused: this site releases only under a differential-privacy budget")
    assert message_type in reason and "Set privacy: {epsilon, delta} in the run config" in reason
    assert not private.has_error()
    assert reached == [message_type]


@pytest.mark.parametrize("message_type", NEEDS_DP)
def test_a_noise_of_zero_is_no_private_request(mds_partition, message_type) -> None:
    # Setup: the keys are there, but one of them asks for no noise (0) or an unbounded epsilon
    schema = mds_partition.schema.select(SMALL)
    site = _sites(mds_partition, schema, {0: BUDGETED})[0]
    reached: list[str] = []
    grid = _spy_grid(site, message_type, reached)
    keys = UNDER_BUDGET[message_type].needs or ()
    # Run
    zero = {**_dp_settings(keys), keys[0]: 0.0}
    inf = {**_dp_settings(keys), keys[0]: math.inf}
    got = grid.send_and_receive([_message(message_type, zero), _message(message_type, inf)])
    # Assert
    assert all(r.has_error() and "DisclosureRefused" in r.error.reason for r in got)
    assert reached == []


@pytest.mark.parametrize("message_type", NEVER)
def test_a_request_with_no_private_form_is_refused_even_with_dp_settings(mds_partition, message_type) -> None:
    # Setup: every DP key any private request carries
    schema = mds_partition.schema.select(SMALL)
    site = _sites(mds_partition, schema, {0: BUDGETED})[0]
    reached: list[str] = []
    grid = _spy_grid(site, message_type, reached)
    every_key = {k for r in UNDER_BUDGET.values() for k in r.needs or ()}
    # Run
    reply = grid.send_and_receive([_message(message_type, _dp_settings(tuple(every_key)))])[0]
    # Assert
    assert reply.has_error() and "it has no private form" in reply.error.reason
    assert reached == []


@pytest.mark.parametrize("source", sorted(COLLECT_UNDER_BUDGET))
def test_the_secure_sums_masked_vector_follows_its_sources_request(mds_partition, source) -> None:
    # Setup: the collect stage's request is what its vector source reads
    schema = mds_partition.schema.select(SMALL)
    site = _sites(mds_partition, schema, {0: BUDGETED})[0]
    reached: list[str] = []
    grid = _spy_grid(site, "query.secagg_collect", reached)
    needs = COLLECT_UNDER_BUDGET[source].needs

    def collect(request: Mapping[str, Any]) -> Message:
        return _message("query.secagg_collect", {"session": "s", "source": source},
                        request=records.to_config_record(dict(request)))

    # Run
    plain = grid.send_and_receive([collect({"labels": "{}"})])[0]
    private = grid.send_and_receive([collect({"labels": "{}", **_dp_settings(needs)})])[0]
    # Assert: a source with a private form answers its private request only; the stash (filled by a private
    # instruction) always; exact moments never
    if needs == ():
        assert not plain.has_error() and not private.has_error()
        assert reached == ["query.secagg_collect"] * 2
    elif needs is None:
        assert plain.has_error() and private.has_error() and reached == []
    else:
        assert plain.has_error() and "dp_noise_std" in plain.error.reason
        assert not private.has_error() and reached == ["query.secagg_collect"]


def test_a_private_mixture_init_with_a_warm_start_in_clear_is_refused(mds_partition) -> None:
    # Setup: DP keys, but also the previous mixture, whose E-step statistics would go back in clear
    schema = mds_partition.schema.select(SMALL)
    site = _sites(mds_partition, schema, {0: BUDGETED})[0]
    reached: list[str] = []
    grid = _spy_grid(site, "query.mixture_init", reached)
    msg = _message("query.mixture_init", _dp_settings(UNDER_BUDGET["query.mixture_init"].needs),
                   mixture=records.to_array_record({}))
    # Run
    reply = grid.send_and_receive([msg])[0]
    # Assert
    assert reply.has_error() and "mixture" in reply.error.reason and reached == []


def test_the_real_hello_answers_a_noisy_count_only(mds_partition, tmp_path) -> None:
    # Setup: the site's own handlers and ledger
    schema = mds_partition.schema.select(SMALL)
    site = _sites(mds_partition, schema, {0: BUDGETED}, root=tmp_path)[0]
    grid = InProcessGrid([site], keep_messages=True)
    private = {"dp_noise_std": 20.0, "dp_uses": 1, "run_token": "t", "dp_run": "run-a", "dp_min_sites": 1}
    # Run
    plain, noisy = grid.send_and_receive([_message("query.hello", {}), _message("query.hello", private)])
    # Assert: the plain hello is refused; the private one is charged to the ledger and answered
    assert plain.has_error() and "DisclosureRefused" in plain.error.reason
    assert not noisy.has_error()
    assert site.privacy_ledger.epsilon_spent(site.name) > 0


def test_a_site_without_a_budget_answers_the_plain_request(mds_partition) -> None:
    # Setup: the control: epsilon inf
    schema = mds_partition.schema.select(SMALL)
    site = _sites(mds_partition, schema, {})[0]
    # Run / Assert: every type reaches its handler without DP keys
    for message_type in NEEDS_DP + NEVER:
        reached: list[str] = []
        reply = _spy_grid(site, message_type, reached).send_and_receive([_message(message_type, {})])[0]
        assert not reply.has_error() and reached == [message_type]


# -- a private run against a site with a budget ---------------------------------------------------------------


@pytest.mark.parametrize("secure", [False, True])
def test_a_private_two_step_bn_run_passes_a_budgeted_sites_gate(mds_partition, tmp_path, secure) -> None:
    # Setup: every site sets epsilon 3; the run asks for 1, in clear or through the secure sum
    schema = mds_partition.schema.select(SMALL)
    sites = _sites(mds_partition, schema, {0: BUDGETED, 1: BUDGETED, 2: BUDGETED}, root=tmp_path)
    grid = InProcessGrid(sites, keep_messages=True)
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network",
                             generator_params={"max_indegree": 1}, min_sites=3,
                             params={"secure_aggregation": secure})
    strategy.privacy = PrivacyBudget(1.0, 1e-5)
    # Run
    result = strategy.start(grid)
    # Assert: no site refused a request for want of DP (k may still withhold isolating tables), and each ledger
    # holds what the run spent, within both budgets
    assert not any("differential-privacy budget" in m.error.reason for m in grid.received if m.has_error())
    if secure:
        assert "query.secagg_collect" in {m.metadata.message_type for m in grid.sent}
    assert result.generator is not None and result.domain is not None
    for s in sites:
        assert 0 < s.privacy_ledger.epsilon_spent(s.name) <= 1.0 * (1 + 1e-9)


def test_a_private_fedavg_run_with_secure_sums_passes_a_budgeted_sites_gate(mds_partition, tmp_path) -> None:
    # Setup: every site sets epsilon 3; a FedAvg VAE-BGM run asks for 1 with secure aggregation (DP-SGD weights
    # and latent-mixture statistics go through the stash and the masked sum)
    schema = mds_partition.schema.select(SMALL)
    sites = _sites(mds_partition, schema, {0: BUDGETED, 1: BUDGETED, 2: BUDGETED}, root=tmp_path)
    grid = InProcessGrid(sites, keep_messages=True)
    strategy = make_strategy("fedavg", schema, generator="vae_bgm",
                             generator_params={"hidden_dims": [8], "latent_dim": 2, "n_components": 2,
                                               "batch_size": 256, "device": "cpu"},
                             rounds=1, local_epochs=1, min_sites=3, params={"secure_aggregation": True})
    strategy.privacy = PrivacyBudget(1.0, 1e-5)
    # Run
    result = strategy.start(grid)
    # Assert: every request answered; the private instructions and their masked sums went out
    assert not any(m.has_error() for m in grid.received)
    sent = {m.metadata.message_type for m in grid.sent}
    assert {"train.fit", "query.mixture_init", "query.secagg_collect"} <= sent
    assert "query.component_counts" not in sent and "query.summary" not in sent
    assert result.generator is not None
    for s in sites:
        assert 0 < s.privacy_ledger.epsilon_spent(s.name) <= 1.0 * (1 + 1e-9)


# -- a site without a ledger file: its finite budget is enforced in memory ---------------------------------------


def test_a_site_with_a_finite_budget_and_no_ledger_file_keeps_one_in_its_node_state(mds_partition) -> None:
    # Setup / Run: site runtimes as a simulation without a state folder builds them (no ledger given)
    from fedsynth.privacy.ledger import MemoryLedger

    schema = mds_partition.schema.select(SMALL)
    budgeted, unbounded = _sites(mds_partition, schema, {0: BUDGETED})[:2]
    # Assert: the budgeted site has an in-memory ledger at its policy's budget, kept in its node state (what
    # Flower hands the next message's process); the unbounded one has none, as before
    assert isinstance(budgeted.privacy_ledger, MemoryLedger)
    assert (budgeted.privacy_ledger.budget.epsilon, budgeted.privacy_ledger.budget.delta) == (3.0, 1e-5)
    assert unbounded.privacy_ledger is None
    orders = budgeted.privacy_ledger.orders
    budgeted.privacy_ledger.record(budgeted.name, "run-a", "hello/1", Release("hello", 20.0).rdp(orders))
    again = SiteRuntime(budgeted.name, budgeted.data, schema, policy=BUDGETED, state=budgeted.state)
    spent = budgeted.privacy_ledger.epsilon_spent(budgeted.name)
    assert spent > 0 and again.privacy_ledger.epsilon_spent(budgeted.name) == pytest.approx(spent, rel=1e-12)


def test_in_simulation_without_a_state_folder_a_run_over_the_sites_budget_is_refused_by_the_site(
    mds_partition, monkeypatch
) -> None:
    # Setup: every site's policy allows epsilon 1; a coordinator that skips the budget question asks for 3
    # (the hello and the domain fit within 1; the private fit of SD-sharing does not)
    from fedsynth.federation.simulation import run_in_process
    from fedsynth.strategies import site_budget as policy_module

    schema = mds_partition.schema.select(SMALL)
    strategy = make_strategy("sd_sharing", schema, generator="bayesian_network", generator_params={"max_indegree": 1},
                             min_sites=1, params={"privacy_check": False})
    strategy.privacy = PrivacyBudget(3.0, 1e-5)
    monkeypatch.setattr(policy_module, "check_site_budgets", lambda *args, **kwargs: {})
    frames = [(s.name, s.data[SMALL]) for s in mds_partition.sites]
    # Run: the simulation's in-process path, no state folder (so no ledger file at any site)
    with pytest.raises(FedsynthError) as exc:
        run_in_process(strategy, frames, schema, policy=SitePolicy(privacy_check=False, epsilon=1.0))
    # Assert: no site trained or released rows: each refused the fit by its ledger, as a deployed site would
    assert "train.share" in str(exc.value)
    assert {s.name for s in mds_partition.sites} == {d["site"] for d in strategy.dropped
                                                      if "BudgetExceededError" in d["reason"]}
