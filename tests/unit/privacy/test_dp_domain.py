"""The shared domain and the hello under a privacy budget: the split composes as dp_accounting does, the noise is
the calibrated one, bounds never name a site's extreme, rare labels stay out, and no budget is exceeded, also
across a resumed run."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from dp_accounting import ComposedDpEvent, GaussianDpEvent, SelfComposedDpEvent
from dp_accounting.rdp import RdpAccountant
from scipy import stats

from fedsynth.cohort.schema import TableSchema
from fedsynth.encoding.domain import BOUND_GRID
from fedsynth.encoding.dp_domain import dp_counts
from fedsynth.privacy.accounting import (
    DEFAULT_ORDERS,
    PrivacyAccountant,
    PrivacyBudget,
    Release,
    calibrate_dpsgd_noise,
    rho_for_budget,
)
from fedsynth.privacy.ledger import PrivacyLedger
from fedsynth.strategies import records, secure_domain, two_step_bn
from fedsynth.strategies.checkpoint import FileCheckpoint
from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.registry import make_strategy
from fedsynth.strategies.secure_domain import noisy_domain_vector, pre_run_releases
from fedsynth.strategies.site import SiteRuntime

SMALL = ["AGE", "SEX", "HB", "PLT", "BM_BLAST", "CYTO_IPSSR", "TP53", "SF3B1", "OS_YEARS", "OS_STATUS"]


def _strategy(schema: TableSchema, budget: PrivacyBudget | None, **params: object):  # type: ignore[no-untyped-def]
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network", generator_params={"max_indegree": 1},
                             min_sites=3, params=params or None)
    strategy.privacy = budget
    return strategy


def _sites(partition, schema: TableSchema, root: Path | None = None, budget: float = math.inf) -> list[SiteRuntime]:  # type: ignore[no-untyped-def]
    out = []
    for i, s in enumerate(partition.sites):
        ledger = None if root is None else PrivacyLedger(root / s.name / "privacy_ledger.json", PrivacyBudget(budget))
        out.append(SiteRuntime(s.name, s.data, schema, seed=i, privacy_ledger=ledger,
                               state_dir=None if root is None else root / s.name / "state"))
    return out


def _without_range(schema: TableSchema, name: str) -> TableSchema:
    cols = tuple(dataclasses.replace(c, lower=None, upper=None) if c.name == name else c for c in schema.columns)
    return dataclasses.replace(schema, columns=cols)


def _seeded(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """The sites' noise from one seeded generator (in a deployment it comes from OS entropy)."""
    rng = np.random.default_rng(seed)
    monkeypatch.setattr(secure_domain, "noise_source", lambda: rng)


def test_the_runs_split_composes_as_dp_accounting_does_at_the_same_orders() -> None:
    # Setup: a two-step BN run at epsilon 3 whose hello, domain, structure and parameter phases are all used up
    budget = PrivacyBudget(3.0, 1e-5)
    hello, domain = pre_run_releases(budget, 43)
    acc = PrivacyAccountant(budget.spending(hello, domain), two_step_bn.DP_SPLIT)
    z_structure = acc.noise_multiplier("structure", two_step_bn.DP_STRUCTURE_TABLES)
    z_parameters = acc.noise_multiplier("parameters", 57)
    # Run
    acc.charge(Release("structure", z_structure, 410))
    acc.charge(Release("structure", z_structure, 190))
    acc.charge(Release("parameters", z_parameters, 57))
    ref = RdpAccountant(orders=list(DEFAULT_ORDERS))
    ref.compose(ComposedDpEvent([
        GaussianDpEvent(hello.noise_multiplier),
        SelfComposedDpEvent(GaussianDpEvent(domain.noise_multiplier), 43),
        SelfComposedDpEvent(GaussianDpEvent(z_structure), 600),
        SelfComposedDpEvent(GaussianDpEvent(z_parameters), 57),
    ]))
    # Assert: the same RDP curve and epsilon as dp_accounting, the whole budget spent, the split stated
    np.testing.assert_allclose(acc.rdp(), ref._rdp, rtol=1e-6)
    assert acc.epsilon_spent() == pytest.approx(ref.get_epsilon(1e-5), abs=1e-6)
    assert acc.epsilon_spent() == pytest.approx(3.0, rel=1e-6)
    split = acc.summary()["split"]
    assert split == {"hello": pytest.approx(secure_domain.DP_HELLO_SHARE),
                     "domain": pytest.approx(secure_domain.DP_DOMAIN_SHARE),
                     "structure": pytest.approx(0.445), "parameters": pytest.approx(0.445)}
    assert sum(split.values()) == pytest.approx(1.0, abs=1e-12)


def test_dpsgd_calibrated_on_a_budget_with_the_domain_spent_stays_within_it() -> None:
    # Setup: FedAvg's DP-SGD takes what the hello, the domain and the mixture leave
    budget = PrivacyBudget(2.0, 1e-5).spending(*pre_run_releases(PrivacyBudget(2.0, 1e-5), 10))
    mixture_rho = 0.05
    # Run
    z = calibrate_dpsgd_noise(budget, 0.2, 40, other_rho=mixture_rho)
    # Assert: composed independently by dp_accounting, the whole run is at most (and close to) epsilon 2
    from fedsynth.privacy.accounting import dpsgd_event, noise_multiplier_for

    ref = RdpAccountant(orders=list(DEFAULT_ORDERS))
    ref.compose(ComposedDpEvent([dpsgd_event(z, 0.2, 40), GaussianDpEvent(noise_multiplier_for(mixture_rho, 1)),
                                 *[SelfComposedDpEvent(GaussianDpEvent(r.noise_multiplier), r.count)
                                   for r in budget.spent]]))
    assert 2.0 * (1 - 1e-2) <= ref.get_epsilon(1e-5) <= 2.0 * (1 + 1e-6)


def test_releases_before_the_phases_take_exactly_their_share_of_rho() -> None:
    # Setup / Run
    budget = PrivacyBudget(3.0, 1e-5)
    hello, domain = pre_run_releases(budget, 43)
    rho = rho_for_budget(budget)
    # Assert: sensitivity 1 per column, 43 uses, noise multiplier sqrt(C / (2 rho_domain))
    assert domain.rho == pytest.approx(secure_domain.DP_DOMAIN_SHARE * rho, rel=1e-12)
    assert domain.noise_multiplier == pytest.approx(math.sqrt(43 / (2 * secure_domain.DP_DOMAIN_SHARE * rho)))
    assert hello.rho == pytest.approx(secure_domain.DP_HELLO_SHARE * rho, rel=1e-12)


@pytest.mark.parametrize("secure", [True, False])
def test_a_sites_domain_noise_has_the_calibrated_scale(mds_partition, monkeypatch, secure: bool) -> None:
    # Setup: one site's exact domain counts, and the noise the run's budget calibrates (epsilon 3, 3 sites)
    _seeded(monkeypatch, 7)
    schema = mds_partition.schema
    site = SiteRuntime("site-1", mds_partition.sites[0].data, schema)
    _, domain = pre_run_releases(PrivacyBudget(3.0, 1e-5), len(schema.model_columns))
    labels = {c: list(schema[c].categories or ("0", "1")) for c in schema.model_columns if not schema[c].is_numeric}
    cfg = {"labels": records.encode_payload(labels),
           **secure_domain.dp_request(domain, "run-a", "run-a", 3)}
    if secure:  # as the collect stage hands it on, after checking the split against a 3-site session
        from fedsynth.strategies.secagg_protocol import verified_noise_request

        cfg = verified_noise_request(cfg, threshold=3, n_sites=3)
    exact = dp_counts(site.data, schema, labels)
    # Run
    noisy = noisy_domain_vector(cfg, site, secure_aggregation=secure)
    residual = np.concatenate([(noisy[k] - exact[k]).ravel() for k in exact]).astype(float)
    # Assert: Gaussian of the site's share of sigma (rounding adds 1/12), by a chi-square CI and a KS test
    std = domain.noise_multiplier / math.sqrt(3) if secure else domain.noise_multiplier
    n = len(residual)
    ratio = residual.var() / (std**2 + 1 / 12)
    assert abs(ratio - 1) < 4 * math.sqrt(2 / n)
    assert abs(residual.mean()) < 4 * std / math.sqrt(n)
    # ... and the distribution of a rounded Gaussian: Kolmogorov-Smirnov distance to P(rint(N(0, std)) <= k),
    # under the 1% critical value 1.63 / sqrt(n)
    ks = np.arange(math.floor(-5 * std), math.ceil(5 * std) + 1)
    empirical = (residual[:, None] <= ks[None, :]).mean(axis=0)
    assert np.abs(empirical - stats.norm.cdf((ks + 0.5) / std)).max() < 1.63 / math.sqrt(n)


def test_noisy_bounds_never_equal_a_planted_site_extreme(mds_partition, monkeypatch) -> None:
    # Setup: the largest and smallest haemoglobin of the federation planted at one site; HB without a declared
    # range, so its bounds come from the noisy histogram (epsilon 50: the support reaches the planted values)
    _seeded(monkeypatch, 3)
    schema = _without_range(mds_partition.schema.select(SMALL), "HB")
    sites = _sites(mds_partition, schema)
    data = sites[2].data.copy()
    data.loc[data.index[0], "HB"] = 23.4567
    data.loc[data.index[1], "HB"] = 1.2345
    sites[2] = dataclasses.replace(sites[2], data=data)
    strategy = _strategy(schema, PrivacyBudget(50.0, 1e-5))
    # Run
    strategy.run_token_ = "run-a"
    strategy._pre_run_releases = pre_run_releases(strategy.privacy, len(schema.model_columns))
    _, dom = strategy.hello_and_domain(InProcessGrid(sites))
    # Assert: the bounds are coarse grid points; no bound, edge or moment is a planted value
    hb = dom["HB"]
    assert hb.lower in BOUND_GRID and hb.upper in BOUND_GRID
    released = [hb.lower, hb.upper, hb.mean, hb.std, *hb.bins]
    assert not any(math.isclose(v, planted, rel_tol=0, abs_tol=1e-9) for v in released for planted in (23.4567, 1.2345))
    # ... and a column with a declared range keeps exactly that range
    assert (dom["PLT"].lower, dom["PLT"].upper) == (schema["PLT"].lower, schema["PLT"].upper)


def test_a_label_under_k_across_the_federation_is_suppressed(mds_partition, monkeypatch) -> None:
    # Setup: a declared category held by one patient; epsilon large enough that the noise cannot lift it to k
    _seeded(monkeypatch, 5)
    schema = mds_partition.schema.select(SMALL)
    sites = _sites(mds_partition, schema)
    data = sites[1].data.copy()
    rare = schema["CYTO_IPSSR"].categories[0]
    data["CYTO_IPSSR"] = data["CYTO_IPSSR"].where(data["CYTO_IPSSR"] != rare, schema["CYTO_IPSSR"].categories[1])
    for s in (sites[0], sites[2]):
        s.data = s.data.assign(CYTO_IPSSR=s.data["CYTO_IPSSR"].where(s.data["CYTO_IPSSR"] != rare,
                                                                      schema["CYTO_IPSSR"].categories[1]))
    data.loc[data.index[0], "CYTO_IPSSR"] = rare
    sites[1].data = data
    strategy = _strategy(schema, PrivacyBudget(500.0, 1e-5))
    # Run
    strategy.run_token_ = "run-a"
    strategy._pre_run_releases = pre_run_releases(strategy.privacy, len(schema.model_columns))
    _, dom = strategy.hello_and_domain(InProcessGrid(sites))
    # Assert
    assert rare not in dom["CYTO_IPSSR"].categories
    assert set(dom["CYTO_IPSSR"].categories) == set(schema["CYTO_IPSSR"].categories) - {rare}


def test_the_hello_sends_a_noisy_lower_bound_charged_once_per_run(mds_partition, tmp_path) -> None:
    # Setup
    from flwr.app import Message, RecordDict

    from fedsynth.strategies.site import handle_hello

    schema = mds_partition.schema.select(SMALL)
    site = _sites(mds_partition, schema, tmp_path)[0]
    hello, _ = pre_run_releases(PrivacyBudget(3.0, 1e-5), len(schema.model_columns))

    def ask(run: str) -> int:
        cfg = records.to_config_record(secure_domain.dp_request(hello, run, run, 3))
        msg = Message(RecordDict({"config": cfg}), dst_node_id=1, message_type="query.hello")
        return int(records.from_metric_record(handle_hello(msg, site)["metrics"])["num_examples"])

    # Run
    first, again = ask("run-a"), ask("run-a")
    after_a = site.privacy_ledger.spent_rdp(site.name)
    ask("run-b")
    # Assert: a lower bound, the same figure again at no new cost, a new run charged anew
    assert first == again and 1 <= first <= len(site.data)
    np.testing.assert_allclose(after_a, Release("hello", hello.noise_multiplier).rdp(DEFAULT_ORDERS), rtol=1e-12)
    np.testing.assert_allclose(site.privacy_ledger.spent_rdp(site.name), 2 * after_a, rtol=1e-12)


def test_budget_is_never_exceeded_across_a_resumed_run(mds_partition, tmp_path) -> None:
    # Setup: every site allows exactly the run's epsilon; the run stops after its domain and first count request
    schema = mds_partition.schema.select(SMALL)
    budget = PrivacyBudget(1.0, 1e-5)

    class Stop(Exception):
        pass

    calls = {"n": 0}
    original = two_step_bn.TwoStepBNStrategy.ask

    def ask_then_stop(self, grid, sites, message_type, content, **kw):  # type: ignore[no-untyped-def]
        if message_type == "query.counts":
            calls["n"] += 1
            if calls["n"] == 2:
                raise Stop
        return original(self, grid, sites, message_type, content, **kw)

    first = _strategy(schema, budget)
    first.checkpoint = FileCheckpoint(tmp_path / "checkpoint")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(two_step_bn.TwoStepBNStrategy, "ask", ask_then_stop)
        with pytest.raises(Stop):
            first.start(InProcessGrid(_sites(mds_partition, schema, tmp_path / "sites", budget=1.0)))
    checkpointed = FileCheckpoint(tmp_path / "checkpoint").load()
    assert checkpointed is not None
    # Run: the same run resumed by a fresh strategy; the sites keep their folders and ledgers
    resumed = _strategy(schema, budget)
    resumed.checkpoint = FileCheckpoint(tmp_path / "checkpoint")
    sites = _sites(mds_partition, schema, tmp_path / "sites", budget=1.0)
    result = resumed.start(InProcessGrid(sites))
    # Assert: the resumed run got the same noisy domain (its checkpoint accepted it), spent at most its budget by
    # the server's account and by every site's own ledger, and the hello and the domain were charged once
    from fedsynth.strategies.base import _domain_hash

    assert _domain_hash(result.domain) == checkpointed[0]["domain"]
    summary = resumed.privacy_summary_
    assert 0 < summary["epsilon_spent"] <= 1.0 * (1 + 1e-9)
    assert summary["phases"]["domain"]["releases"] == len(schema.model_columns)
    for site in sites:
        ledger = site.privacy_ledger
        assert ledger.epsilon_spent(site.name) <= 1.0 * (1 + 1e-9)
        entries = ledger._read()["datasets"][site.name]
        keys = [k for run in entries.values() for k in run]
        assert sum(k.startswith("hello/") for k in keys) == 1 and sum(k.startswith("domain/") for k in keys) == 1
    assert result.generator is not None and len(result.generator.sample(50, random_state=0)) == 50


def test_a_private_domain_in_clear_has_every_column_and_only_declared_rules(mds_partition) -> None:
    # Setup / Run: without secure aggregation every site sends its noisy vector (full sigma) in clear
    schema = mds_partition.schema.select(SMALL)
    strategy = _strategy(schema, PrivacyBudget(3.0, 1e-5))
    strategy.run_token_ = "run-a"
    strategy._pre_run_releases = pre_run_releases(strategy.privacy, len(schema.model_columns))
    sites, dom = strategy.hello_and_domain(InProcessGrid(_sites(mds_partition, schema)))
    # Assert: every column, bins inside the declared ranges, the hello's counts are noisy lower bounds
    assert dom.column_names == schema.model_columns
    for name in ("AGE", "HB", "PLT", "BM_BLAST", "OS_YEARS"):
        col = dom[name]
        assert (col.lower, col.upper) == (schema[name].lower, schema[name].upper)
        assert list(col.bins) == sorted(col.bins) and col.bins[0] == col.lower and col.bins[-1] == col.upper
    assert strategy.learnt_rules == []
    assert all(s.n_rows <= len(p.data) for s, p in zip(sites, mds_partition.sites, strict=True))
    assert set(dom["SEX"].categories) == {"F", "M"}


def test_the_label_release_threshold_is_hand_computed_and_never_under_k() -> None:
    from fedsynth.encoding.dp_domain import label_release_threshold

    # z = Phi^-1(1 - 0.01 / 10) = 3.0902; 5 - 1 + 3.0902 * 16 = 53.44 -> 54
    assert label_release_threshold(16.0, 10, 5) == 54
    # z = Phi^-1(1 - 0.01 / 3) = 2.7131; 4 + 2.7131 * 16 = 47.41 -> 48
    assert label_release_threshold(16.0, 3, 5) == 48
    assert label_release_threshold(0.1, 10, 5) == 5


def test_a_declared_label_under_k_passes_the_noisy_domain_at_the_promised_rate() -> None:
    # Setup: one declared categorical column, labels held by 1, 300 and 200 patients; sigma 16 per cell (about
    # epsilon 3 on the MDS domain); 2,000 independent noisy releases
    from fedsynth.cohort.schema import ColumnKind, ColumnSpec
    from fedsynth.encoding.dp_domain import noisy_summary
    from fedsynth.encoding.grid import kept_labels

    schema = TableSchema((ColumnSpec("C", ColumnKind.CATEGORICAL, categories=("rare", "x", "y")),), ())
    labels = {"C": ["rare", "x", "y"]}
    rng = np.random.default_rng(0)
    sigma, n = 16.0, 2000
    kept_rare = kept_common = old_rule_rare = 0
    # Run
    for _ in range(n):
        noisy = np.array([1.0, 300.0, 200.0]) + rng.normal(0.0, sigma, 3)
        summed = {"C/labels": noisy, "C/missing": np.array([rng.normal(0.0, sigma)])}
        out = noisy_summary(summed, labels, schema, holders={"C": ["A", "B"]}, noise_std=sigma, min_count=5)
        counts = out["columns"]["C"]["counts"]
        kept_rare += "rare" in counts
        kept_common += {"x", "y"} <= set(counts)
        old_rule_rare += "rare" in kept_labels(["rare", "x", "y"], noisy, ColumnKind.CATEGORICAL, 5)
    # Assert: threshold 48 -> P(1 + N(0, 16^2) rounds to >= 48) = P(Z >= 46.5 / 16) = 0.0018 (3.7 expected);
    # a 99.9% binomial bound; the common labels always pass; the former rule (noisy total >= k) let the
    # one-patient label through about 40% of the time
    p = float(stats.norm.sf(46.5 / sigma))
    assert kept_rare <= stats.binom.ppf(0.999, n, p)
    assert kept_common == n
    assert old_rule_rare / n > 0.3


def test_a_column_whose_every_label_falls_under_the_release_threshold_is_named_with_the_fix() -> None:
    # Setup: two declared categorical columns; under sigma 16 (threshold 48 patients for 3 labels) every label of
    # "B" (held by 10, 12 and 9 patients) falls under it, "A" keeps its common labels. Before, such a run failed
    # later with "column 'B': every value is missing at every site", which was not what had happened.
    from fedsynth.cohort.schema import ColumnKind, ColumnSpec
    from fedsynth.encoding.dp_domain import label_release_threshold, noisy_summary
    from fedsynth.errors import ValidationError

    schema = TableSchema((ColumnSpec("A", ColumnKind.CATEGORICAL, categories=("a", "b", "c")),
                          ColumnSpec("B", ColumnKind.CATEGORICAL, categories=("x", "y", "z"))), ())
    labels = {"A": ["a", "b", "c"], "B": ["x", "y", "z"]}
    summed = {"A/labels": np.array([300.0, 200.0, 100.0]), "A/missing": np.array([0.0]),
              "B/labels": np.array([10.0, 12.0, 9.0]), "B/missing": np.array([0.0])}
    assert label_release_threshold(16.0, 3, 5) == 48
    # Run / Assert: one problem, for B only, with the threshold and the settings to change; no count of B named
    with pytest.raises(ValidationError) as err:
        noisy_summary(summed, labels, schema, holders={"A": ["s"], "B": ["s"]}, noise_std=16.0, min_count=5)
    text = str(err.value)
    assert "column 'B': no category cleared the private domain's release threshold" in text
    assert "about 48 patients" in text and "raise privacy.epsilon" in text
    assert "column 'A'" not in text and "10" not in text and "12" not in text
    # Control: with less noise both columns are released
    out = noisy_summary(summed, labels, schema, holders={"A": ["s"], "B": ["s"]}, noise_std=1.0, min_count=5)
    assert set(out["columns"]["B"]["counts"]) == {"x", "y", "z"}


def test_noise_on_the_other_cells_never_hides_a_released_category() -> None:
    # Setup: B (binary) and C (categorical) are held by the same sites, so their rows are one estimate, pulled
    # down by B's small total to about 1,409; C keeps "a" (60) and its noisy missing count (2,000) is over that
    # estimate. Before, C's missing count was clipped to the rows (n_missing == n), and merge_summaries then
    # stopped the run with "every value is missing at every site" though "a" was released.
    from fedsynth.cohort.schema import ColumnKind, ColumnSpec
    from fedsynth.encoding.domain import merge_summaries
    from fedsynth.encoding.dp_domain import label_release_threshold, noisy_summary

    schema = TableSchema((ColumnSpec("B", ColumnKind.BINARY),
                          ColumnSpec("C", ColumnKind.CATEGORICAL, categories=("a", "b", "c", "d"))), ())
    labels = {"B": ["0", "1"], "C": ["a", "b", "c", "d"]}
    summed = {"B/labels": np.array([500.0, 500.0]), "B/missing": np.array([0.0]),
              "C/labels": np.array([60.0, 10.0, 10.0, 10.0]), "C/missing": np.array([2000.0])}
    assert 10 < label_release_threshold(4.0, 4, 5) < 60
    # Run
    out = noisy_summary(summed, labels, schema, holders={"B": ["s"], "C": ["s"]}, noise_std=4.0, min_count=5)
    # Assert: "a"'s 60 rows stay observed, the rest of the rows are missing; the merge takes the summary
    c = out["columns"]["C"]
    assert c["counts"] == {"a": 60}
    assert c["n"] - c["n_missing"] == 60 and c["n_missing"] > 0
    domain = merge_summaries([out], schema)
    assert domain["C"].categories == ("a",)


def test_a_column_no_site_named_a_category_of_is_named_with_the_fix() -> None:
    # Setup: C's categories are not declared and no site's label selection named one (every row then counts as
    # missing). Before, the run stopped with "every value is missing at every site", which was not what happened.
    from fedsynth.cohort.schema import ColumnKind, ColumnSpec
    from fedsynth.encoding.dp_domain import noisy_summary
    from fedsynth.errors import ValidationError

    schema = TableSchema((ColumnSpec("C", ColumnKind.CATEGORICAL), ColumnSpec("D", ColumnKind.CATEGORICAL)), ())
    summed = {"C/labels": np.zeros(0), "C/missing": np.array([900.0]),
              "D/labels": np.array([500.0, 400.0]), "D/missing": np.array([0.0])}
    # Run / Assert: C named, with what to change; D not
    with pytest.raises(ValidationError) as err:
        noisy_summary(summed, {"C": [], "D": ["x", "y"]}, schema, holders={"C": ["s"], "D": ["s"]}, noise_std=4.0,
                      min_count=5)
    text = " ".join(str(err.value).split())
    assert "column 'C': no site named a category of it in the private label selection" in text
    assert "declare the column's categories in the schema" in text and "column 'D'" not in text
    assert "every value is missing" not in text and "900" not in text


def test_a_numeric_columns_noisy_missing_count_over_its_rows_keeps_its_histogram_observed() -> None:
    # Setup: X and Y held by the same sites; Y's noisy missing count is over the rows estimated for both. Before,
    # Y read as all missing and the run stopped with "every value is missing at every site".
    from fedsynth.cohort.schema import ColumnKind, ColumnSpec
    from fedsynth.encoding.domain import merge_summaries
    from fedsynth.encoding.dp_domain import dp_histogram_edges, noisy_summary

    schema = TableSchema((ColumnSpec("X", ColumnKind.BINARY),
                          ColumnSpec("Y", ColumnKind.CONTINUOUS, lower=0.0, upper=100.0)), ())
    cells = len(dp_histogram_edges(0.0, 100.0)) - 1
    hist = np.zeros(cells)
    hist[cells // 2] = 30.0
    summed = {"X/labels": np.array([100.0, 100.0]), "X/missing": np.array([0.0]),
              "Y/hist": hist, "Y/missing": np.array([5000.0])}
    # Run
    out = noisy_summary(summed, {"X": ["0", "1"]}, schema, holders={"X": ["s"], "Y": ["s"]}, noise_std=1.0,
                        min_count=5)
    # Assert: the histogram's 30 values stay observed, the rest of the rows are missing; the merge takes it
    y = out["columns"]["Y"]
    assert sum(y["hist_counts"]) == 30
    assert y["n"] - y["n_missing"] == 30 and y["n_missing"] > 0
    assert merge_summaries([out], schema)["Y"].missing_rate < 1.0
