"""FedAvg VAE-BGM under a privacy budget: the run spends at most its budget at every site, the sites' own ledgers
compose to the server's account, a resumed run never spends twice, a run asking more than a site has left stops
before releasing anything, and CTGAN is refused with its reason (SD-sharing under a budget:
test_sd_sharing_dp.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from dp_accounting import GaussianDpEvent, PoissonSampledDpEvent, SelfComposedDpEvent
from dp_accounting.rdp import RdpAccountant

from fedsynth.errors import ValidationError
from fedsynth.privacy.accounting import DEFAULT_ORDERS, BudgetExceededError, PrivacyBudget
from fedsynth.privacy.ledger import LEDGER_FILE
from fedsynth.strategies import fedavg_dp, fedavg_server
from fedsynth.strategies.checkpoint import FileCheckpoint
from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.policy import SitePolicy
from fedsynth.strategies.registry import make_strategy
from fedsynth.strategies.site import SiteRuntime
from fedsynth.strategies.site_budget import site_ledger

SMALL = ["AGE", "SEX", "HB", "PLT", "BM_BLAST", "CYTO_IPSSR", "TP53", "SF3B1", "OS_YEARS", "OS_STATUS"]
PARAMS = {"hidden_dims": [16], "latent_dim": 3, "n_components": 2, "batch_size": 256, "device": "cpu"}


def _sites(partition, schema, root: Path, policy: SitePolicy | None = None) -> list[SiteRuntime]:  # type: ignore[no-untyped-def]
    policy = policy or SitePolicy()
    return [SiteRuntime(s.name, s.data[SMALL], schema, seed=i, policy=policy, state_dir=root / s.name,
                        privacy_ledger=site_ledger(policy, root / s.name))
            for i, s in enumerate(partition.sites)]


def _strategy(schema, budget: PrivacyBudget | None, generator: str = "vae_bgm", rounds: int = 2, **params):  # type: ignore[no-untyped-def]
    strategy = make_strategy("fedavg", schema, generator=generator,
                             generator_params=PARAMS if generator == "vae_bgm" else {},
                             rounds=rounds, local_epochs=1, min_sites=3, params=params or None)
    strategy.privacy = budget
    strategy.privacy_run_id = "run-a"
    return strategy


def _reference(site_plan: dict, mixture_noise: float, mixture_releases: int, rounds: int,
               budget: PrivacyBudget) -> RdpAccountant:
    """dp_accounting's composition of one site's releases: the hello's noisy row count, the domain's count vectors
    (one use per model column), DP-SGD and the latent-mixture statistics."""
    from fedsynth.strategies.secure_domain import pre_run_releases

    ref = RdpAccountant(orders=list(DEFAULT_ORDERS))
    for release in pre_run_releases(budget, len(SMALL)):
        ref.compose(SelfComposedDpEvent(GaussianDpEvent(release.noise_multiplier), release.count))
    event = PoissonSampledDpEvent(site_plan["sample_rate"], GaussianDpEvent(site_plan["noise_multiplier"]))
    ref.compose(SelfComposedDpEvent(event, int(site_plan["steps_per_round"]) * rounds))
    ref.compose(SelfComposedDpEvent(GaussianDpEvent(mixture_noise), mixture_releases))
    return ref


def test_private_run_spends_its_budget_at_every_site_as_dp_accounting_composes_it(mds_partition, tmp_path) -> None:
    # Setup
    schema = mds_partition.schema.select(SMALL)
    strategy = _strategy(schema, PrivacyBudget(3.0, 1e-5))
    sites = _sites(mds_partition, schema, tmp_path)
    # Run
    result = strategy.start(InProcessGrid(sites))
    rows = result.generator.sample(300, random_state=0)
    # Assert: every site's account equals dp_accounting's composition of what it released, at the same orders
    summary = strategy.privacy_summary_
    from fedsynth.strategies.secure_domain import DP_DOMAIN_SHARE, DP_HELLO_SHARE

    rest = 1 - DP_DOMAIN_SHARE - DP_HELLO_SHARE
    assert summary["split"] == {"hello": pytest.approx(DP_HELLO_SHARE), "domain": pytest.approx(DP_DOMAIN_SHARE),
                                "training": pytest.approx(0.85 * rest), "mixture": pytest.approx(0.15 * rest)}
    for site in sites:
        mine = summary["sites"][site.name]
        ref = _reference(mine, summary["mixture_noise_multiplier"], 3 * (1 + fedavg_dp.DP_MIXTURE_ITERS), 2,
                         PrivacyBudget(3.0, 1e-5))
        assert mine["epsilon_spent"] == pytest.approx(ref.get_epsilon(1e-5), rel=1e-6)
        assert mine["epsilon_spent"] <= 3.0 * (1 + 1e-9)
        # ... and the site's own ledger, charged at the site before each release, holds the same curve
        np.testing.assert_allclose(site.privacy_ledger.spent_rdp(site.name), ref._rdp, rtol=1e-6)
    assert summary["epsilon_spent"] == pytest.approx(3.0, rel=1e-3)
    assert len(rows) == 300 and list(rows.columns) == schema.model_columns


def test_resumed_run_never_spends_twice_nor_past_its_budget(mds_partition, tmp_path) -> None:
    # Setup: the run is interrupted after round 2 was trained and released but before it was checkpointed
    schema = mds_partition.schema.select(SMALL)
    budget = PrivacyBudget(2.0, 1e-5)
    sites = _sites(mds_partition, schema, tmp_path / "sites")

    class Stop(Exception):
        pass

    def stop_at_2(rr) -> None:  # type: ignore[no-untyped-def]
        if rr.server_round == 2:
            raise Stop

    first = _strategy(schema, budget, rounds=3)
    first.checkpoint = FileCheckpoint(tmp_path / "checkpoint")
    with pytest.raises(Stop):
        first.start(InProcessGrid(sites), on_round=stop_at_2)
    # Run: the same run resumed in a fresh strategy (new process), the sites keep their folders and ledgers
    resumed = _strategy(schema, budget, rounds=3)
    resumed.checkpoint = FileCheckpoint(tmp_path / "checkpoint")
    resumed.start(InProcessGrid(_sites(mds_partition, schema, tmp_path / "sites")))
    # Assert: each ledger holds every round once, and exactly what an uninterrupted run's plan composes
    summary = resumed.privacy_summary_
    for site in sites:
        mine = summary["sites"][site.name]
        ref = _reference(mine, summary["mixture_noise_multiplier"], 3 * (1 + fedavg_dp.DP_MIXTURE_ITERS), 3,
                         budget)
        ledger = site_ledger(SitePolicy(), tmp_path / "sites" / site.name)
        np.testing.assert_allclose(ledger.spent_rdp(site.name), ref._rdp, rtol=1e-6)
        assert ledger.epsilon_spent(site.name) <= 2.0 * (1 + 1e-9)
        assert mine["epsilon_spent"] == pytest.approx(ref.get_epsilon(1e-5), rel=1e-6)


def test_run_asking_more_than_a_site_has_left_stops_before_releasing(mds_partition, tmp_path) -> None:
    # Setup: one site's policy allows epsilon 1 in all; the run asks for 3
    schema = mds_partition.schema.select(SMALL)
    sites = _sites(mds_partition, schema, tmp_path)
    tight = SitePolicy(epsilon=1.0)
    sites[1] = SiteRuntime(sites[1].name, sites[1].data, schema, seed=1, policy=tight,
                           state_dir=tmp_path / sites[1].name, privacy_ledger=site_ledger(tight, tmp_path / sites[1].name))
    grid = InProcessGrid(sites, keep_messages=True)
    # Run / Assert: one message naming the site and what it has; nothing was trained or charged
    with pytest.raises(BudgetExceededError, match=rf"\({sites[1].name} has epsilon 1 left\); nothing was released"):
        _strategy(schema, PrivacyBudget(3.0, 1e-5)).start(grid)
    assert not any((tmp_path / s.name / LEDGER_FILE).exists() for s in sites)
    # ... the budget question is the first message: not even the hello's noisy row count went out
    assert {m.metadata.message_type for m in grid.sent} == {"query.privacy_budget"}


def test_sites_ledger_refuses_a_coordinator_asking_for_too_little_noise(mds_partition, tmp_path) -> None:
    # Setup: a coordinator whose plan claims ε 1 but sends noise for ε 50
    schema = mds_partition.schema.select(SMALL)
    policy = SitePolicy(epsilon=1.0)
    sites = _sites(mds_partition, schema, tmp_path, policy)
    strategy = _strategy(schema, PrivacyBudget(1.0, 1e-5))
    real = fedavg_server.DPPlan

    class Cheating(real):  # type: ignore[misc, valid-type]
        def __init__(self, budget, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(PrivacyBudget(50.0, budget.delta), *args, **kwargs)
            self.budget = budget

        def charge_round(self, site: str) -> None:
            pass

    fedavg_server.DPPlan = Cheating  # type: ignore[misc]
    try:
        with pytest.raises(Exception, match="only 0 of 3 sites answered train.fit"):
            strategy.start(InProcessGrid(sites))
    finally:
        fedavg_server.DPPlan = real  # type: ignore[misc]
    # ... each ledger holds the hello's and the domain's releases (made before training) and nothing of the refused
    # training
    from fedsynth.strategies.secure_domain import pre_run_releases

    hello, domain = pre_run_releases(PrivacyBudget(1.0, 1e-5), len(SMALL))
    for s in sites:
        np.testing.assert_allclose(s.privacy_ledger.spent_rdp(s.name),
                                   hello.rdp(DEFAULT_ORDERS) + domain.rdp(DEFAULT_ORDERS), rtol=1e-12)


def test_fedavg_ctgan_under_a_budget_is_refused_with_the_reason_before_anything_is_asked(mds_partition) -> None:
    schema = mds_partition.schema.select(SMALL)
    strategy = _strategy(schema, PrivacyBudget(3.0), generator="ctgan")
    grid = InProcessGrid([SiteRuntime(s.name, s.data[SMALL], schema, seed=i) for i, s in enumerate(mds_partition.sites)],
                         keep_messages=True)
    with pytest.raises(ValidationError, match="private discriminator"):
        strategy.start(grid)
    assert grid.sent == []


def test_infinite_budget_trains_without_noise_and_spends_nothing(mds_partition, tmp_path) -> None:
    schema = mds_partition.schema.select(SMALL)
    strategy = _strategy(schema, PrivacyBudget(math.inf), rounds=1)
    sites = _sites(mds_partition, schema, tmp_path)
    strategy.start(InProcessGrid(sites))
    assert strategy.privacy_summary_["epsilon_spent"] == 0.0
    assert all(s.privacy_ledger.epsilon_spent(s.name) == 0.0 for s in sites)


@pytest.mark.parametrize("secure", [False, True])
def test_under_a_budget_no_exact_row_count_leaves_a_site_and_each_trains_at_the_plans_rate(
    mds_partition, tmp_path, monkeypatch, secure: bool
) -> None:
    # Setup: every reply recorded; the sites' DP-SGD settings recorded as they train; the sites' count noise seeded
    # (in a deployment it comes from OS entropy)
    from fedsynth.generators import _dp
    from fedsynth.strategies import records, secure_domain

    rng = np.random.default_rng(7)
    monkeypatch.setattr(secure_domain, "noise_source", lambda: rng)

    schema = mds_partition.schema.select(SMALL)
    sites = _sites(mds_partition, schema, tmp_path)
    exact = {len(s.data) for s in sites}
    trained: list[tuple[float, int]] = []
    real_train = _dp.dp_train_vae

    def recording(generator, enc, epochs, settings):  # type: ignore[no-untyped-def]
        trained.append((settings.sample_rate, settings.steps_per_epoch))
        return real_train(generator, enc, epochs, settings)

    monkeypatch.setattr(_dp, "dp_train_vae", recording)
    strategy = _strategy(schema, PrivacyBudget(3.0, 1e-5), rounds=1, secure_aggregation=secure)
    grid = InProcessGrid(sites, keep_messages=True)
    # Run
    strategy.start(grid)
    # Assert: no reply's figures (hello, training replies) hold a site's exact row count; the mixture statistics
    # are Gaussian releases of their own
    from fedsynth.strategies.secagg_protocol import COLLECT

    assert (COLLECT in {m.metadata.message_type for m in grid.sent}) is secure  # the path asked for was taken
    for reply in grid.received:
        assert not reply.has_error()
        if "metrics" in reply.content:
            figures = {round(float(v)) for v in records.from_metric_record(reply.content["metrics"]).values()}
            assert not exact & figures, reply.metadata.message_type
    hello = {str(records.from_config_record(r.content["info"])["site_name"]):
             int(records.from_metric_record(r.content["metrics"])["num_examples"])
             for m, r in zip(grid.sent, grid.received) if m.metadata.message_type == "query.hello"}
    assert all(1 <= hello[s.name] < len(s.data) for s in sites)  # a lower bound (3 sigma below, w.p. 0.9987)
    # ... each site trained at the plan's rate and steps (planned on the noisy count), which its ledger was charged
    plans = strategy.privacy_summary_["sites"]
    assert sorted(trained) == sorted((p["sample_rate"], p["steps_per_epoch"]) for p in plans.values())
    for s in sites:
        q, per_epoch = _dp.dpsgd_schedule(hello[s.name], PARAMS["batch_size"])
        assert plans[s.name]["sample_rate"] == pytest.approx(q) and plans[s.name]["steps_per_epoch"] == per_epoch
        ref = _reference(plans[s.name], strategy.privacy_summary_["mixture_noise_multiplier"],
                         3 * (1 + fedavg_dp.DP_MIXTURE_ITERS), 1, PrivacyBudget(3.0, 1e-5))
        np.testing.assert_allclose(s.privacy_ledger.spent_rdp(s.name), ref._rdp, rtol=1e-6)
        assert plans[s.name]["epsilon_spent"] == pytest.approx(ref.get_epsilon(1e-5), rel=1e-6)
    assert strategy.privacy_summary_["epsilon_spent"] == pytest.approx(3.0, rel=1e-3)


def test_rare_level_sampling_is_not_applied_under_dp_sgd_and_the_summary_says_so(
    mds_partition, tmp_path, monkeypatch
) -> None:
    # Setup: the tuned setting's rare_level_sampling under a budget; any call of its row sampler fails the run
    from fedsynth.generators import vae_bgm

    class SamplerCalled(Exception):
        pass

    def no_call(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise SamplerCalled("training-by-sampling used")

    monkeypatch.setattr(vae_bgm, "sample_by_level", no_call)
    schema = mds_partition.schema.select(SMALL)
    strategy = _strategy(schema, PrivacyBudget(3.0, 1e-5), rounds=1)
    strategy.generator_params["rare_level_sampling"] = True
    sites = _sites(mds_partition, schema, tmp_path)
    # Run
    strategy.start(InProcessGrid(sites))
    # Assert: trained with DP-SGD's own Poisson sampling (the budget spent), and the manifest's summary says why
    # the setting was left out
    assert strategy.privacy_summary_["epsilon_spent"] == pytest.approx(3.0, rel=1e-6)
    assert "not applied" in strategy.privacy_summary_["rare_level_sampling"]
    # Control: without a budget the same setting does call the sampler
    plain = _strategy(schema, None, rounds=1)
    plain.generator_params["rare_level_sampling"] = True
    with pytest.raises(Exception, match="sites answered train.fit"):
        plain.start(InProcessGrid(_sites(mds_partition, schema, tmp_path / "plain")))
    # (a site's error leaves scrubbed: its type, not its text)
    assert plain.dropped and all(d["reason"].startswith("SamplerCalled") for d in plain.dropped)
