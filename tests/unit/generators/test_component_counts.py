"""Per-component label and bin counts of VAE-BGM's latent mixture: hand-computed P(k | condition) with category and
range terms, what a site releases under its smallest released count, site sums equal the pooled counts, the FedAvg
hook, and conditional draws that meet the conditions exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from fedsynth.cohort.schema import ColumnKind, ColumnSpec, TableSchema
from fedsynth.encoding.domain import Domain
from fedsynth.generators import load_generator
from fedsynth.generators.component_counts import (
    component_condition_weights,
    component_count_statistics,
    component_responsibilities,
    count_bins,
    count_columns,
    range_shares,
    release_counts,
    sum_component_counts,
    where_categories,
    where_ranges,
)
from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.policy import SitePolicy
from fedsynth.strategies.registry import make_strategy
from fedsynth.strategies.site import SiteRuntime

SCHEMA = TableSchema(
    (
        ColumnSpec("AGE", ColumnKind.CONTINUOUS),
        ColumnSpec("SEX", ColumnKind.CATEGORICAL, categories=("F", "M")),
        ColumnSpec("MUT", ColumnKind.BINARY),
    )
)
COLUMNS = {"SEX": ("F", "M"), "MUT": ("0", "1")}
MIXTURE_1D = {
    "weights": np.array([0.75, 0.25]),
    "means": np.array([[-1.0], [2.0]]),
    "covariances": np.array([[[1.0]], [[4.0]]]),
}


def test_condition_weights_match_a_hand_computation() -> None:
    # Setup: three components; SEX counts (F, M, missing) and MUT counts (0, 1, missing) per component
    weights = np.array([0.5, 0.3, 0.2])
    counts = {
        "SEX": np.array([[8.0, 2.0, 0.0], [1.0, 9.0, 0.0], [5.0, 4.0, 1.0]]),
        "MUT": np.array([[10.0, 0.0, 0.0], [5.0, 5.0, 0.0], [2.0, 8.0, 0.0]]),
    }
    # Run / Assert: one column, no pseudo-count: P(F | k) = .8, .1, .5 -> .4, .03, .1 over .53
    got = component_condition_weights(weights, counts, COLUMNS, {"SEX": ["F"]}, pseudo_count=0.0)
    np.testing.assert_allclose(got, np.array([0.4, 0.03, 0.1]) / 0.53)
    # two columns multiply: P(F|k) P(MUT=1|k) = .8*0, .1*.5, .5*.8 -> 0, .015, .08 over .095
    got = component_condition_weights(weights, counts, COLUMNS, {"SEX": ["F"], "MUT": ["1"]}, pseudo_count=0.0)
    np.testing.assert_allclose(got, np.array([0.0, 0.015, 0.08]) / 0.095, atol=1e-12)
    # a set of labels adds them; the pseudo-row spreads one count over the 3 labels (F, M, missing)
    got = component_condition_weights(weights, counts, COLUMNS, {"SEX": ["F", "M"]})
    p = np.array([(10 + 2 / 3) / 11, (10 + 2 / 3) / 11, (9 + 2 / 3) / 11])
    np.testing.assert_allclose(got, weights * p / (weights * p).sum())
    # no counted column conditioned (a numeric one): the mixture weights themselves
    np.testing.assert_allclose(component_condition_weights(weights, counts, COLUMNS, {"AGE": ["70"]}), weights)


def test_range_terms_weigh_components_by_their_bin_counts_by_hand() -> None:
    # Setup: two components; X counted on bins [0, 10), [10, 20] (+ missing): component 0 holds 6, 2 (2 missing),
    # component 1 holds 1, 8 (1 missing)
    weights = np.array([0.5, 0.5])
    counts = {"X": np.array([[6.0, 2.0, 2.0], [1.0, 8.0, 1.0]])}
    bins = {"X": (0.0, 10.0, 20.0)}
    # Run / Assert: X >= 15 takes half of the second bin and no missing row: P = 1/10, 4/10 -> .2, .8
    got = component_condition_weights(weights, counts, {}, {}, ranges={"X": (15.0, np.inf)}, bins=bins,
                                      pseudo_count=0.0)
    np.testing.assert_allclose(got, [0.2, 0.8])
    # one pseudo-row spread over the 3 cells adds 0.5 / 3 of a row inside the range
    got = component_condition_weights(weights, counts, {}, {}, ranges={"X": (15.0, np.inf)}, bins=bins)
    p = np.array([1 + 0.5 / 3, 4 + 0.5 / 3]) / 11
    np.testing.assert_allclose(got, p / p.sum())
    # a range and a category multiply; a range on a column without bin counts is left out
    both = component_condition_weights(weights, {**counts, "MUT": np.array([[5.0, 5.0, 0.0], [9.0, 1.0, 0.0]])},
                                       {"MUT": ("0", "1")}, {"MUT": ["1"]}, ranges={"X": (15.0, np.inf), "Y": (0, 1)},
                                       bins=bins, pseudo_count=0.0)
    np.testing.assert_allclose(both, np.array([0.1 * 0.5, 0.4 * 0.1]) / 0.09)


def test_range_shares_of_continuous_and_integer_bins_by_hand() -> None:
    # continuous: the share of each bin's length inside [15, inf)
    np.testing.assert_allclose(range_shares([0.0, 10.0, 20.0, 40.0], 15.0, np.inf), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(range_shares([0.0, 10.0, 20.0, 40.0], 5.0, 30.0), [0.5, 1.0, 0.5])
    # integer: [60, 63.5) holds 60..63, [63.5, 70) holds 64..69, [70, 80] holds 70..80; AGE >= 65 takes 0, 5 of 6, all
    np.testing.assert_allclose(range_shares([60.0, 63.5, 70.0, 80.0], 65.0, np.inf, integer=True), [0.0, 5 / 6, 1.0])
    # a bin with no integer inside it gets 0, not a division by zero
    np.testing.assert_allclose(range_shares([60.0, 60.2, 60.8, 62.0], 61.0, 61.0, integer=True), [0.0, 0.0, 0.5])


def test_where_ranges_reads_conjunctive_bounds_only() -> None:
    schema = TableSchema((ColumnSpec("AGE", ColumnKind.INTEGER), ColumnSpec("HB", ColumnKind.CONTINUOUS),
                          ColumnSpec("SEX", ColumnKind.CATEGORICAL, categories=("F", "M"))))
    bins = {"AGE": (18.0, 100.0), "HB": (0.0, 20.0)}
    inf = np.inf
    assert where_ranges("`AGE` >= 65 and SEX == 'F'", bins, schema) == {"AGE": (65.0, inf)}
    assert where_ranges("18 <= AGE < 65", bins, schema) == {"AGE": (18.0, 64.0)}
    assert where_ranges("AGE > 64.5", bins, schema) == {"AGE": (65.0, inf)}
    assert where_ranges("AGE == 70", bins, schema) == {"AGE": (70.0, 70.0)}
    assert where_ranges("(HB < 10) & (8 < HB)", bins, schema) == {"HB": (8.0, 10.0)}
    assert where_ranges("AGE >= 60 and AGE >= 65 and AGE <= 90.0", bins, schema) == {"AGE": (65.0, 90.0)}
    assert where_ranges("AGE >= 65 or HB < 3", bins, schema) == {}
    assert where_ranges("not (AGE >= 80) and SEX == 'M'", bins, schema) == {}
    assert where_ranges("AGE >= HB", bins, schema) == {}
    assert where_ranges("AGE >=", bins, schema) == {}


def test_release_withholds_small_labels_and_merges_small_bins_by_hand() -> None:
    # Setup: two components holding a quarter and three quarters of every cell
    def split(cells: list[float]) -> np.ndarray:
        return np.vstack([np.array(cells) * 0.25, np.array(cells) * 0.75])

    # labels: "B" held by 2 rows and the missing cell by 1 row are withheld at k = 5; "A" (7 rows) is released
    np.testing.assert_allclose(release_counts(split([7, 2, 1]), 5, ordered=False), split([7, 0, 0]))
    # bins 6 | 2 0 3 | 4 1 (missing 2): runs merged from the left until >= 5, spread evenly; missing withheld
    np.testing.assert_allclose(release_counts(split([6, 2, 0, 3, 4, 1, 2]), 5, ordered=True),
                               split([6, 5 / 3, 5 / 3, 5 / 3, 2.5, 2.5, 0]))
    # a remainder under k joins the run before it; an empty bin alone stays alone; all bins under k: withheld
    np.testing.assert_allclose(release_counts(split([6, 2, 0]), 5, ordered=True), split([4, 4, 0]))
    np.testing.assert_allclose(release_counts(split([0, 6, 0]), 5, ordered=True), split([0, 6, 0]))
    np.testing.assert_allclose(release_counts(split([1, 2, 9]), 5, ordered=True), split([0, 0, 9]))
    # k = 1 (secure aggregation): as computed
    np.testing.assert_allclose(release_counts(split([1, 2, 1]), 1, ordered=True), split([1, 2, 1]))


def test_count_bins_reads_kinds_and_roles_not_names() -> None:
    from fedsynth.cohort.schema import ColumnRole

    schema = TableSchema((ColumnSpec("AGE", ColumnKind.CONTINUOUS),
                          ColumnSpec("DOSE", ColumnKind.CONTINUOUS, baseline=False),
                          ColumnSpec("T", ColumnKind.CONTINUOUS, role=ColumnRole.OUTCOME),
                          ColumnSpec("SEX", ColumnKind.CATEGORICAL, categories=("F", "M"))))
    rng = np.random.default_rng(0)
    frame = schema.coerce(pd.DataFrame({"AGE": rng.normal(60, 5, 60), "DOSE": rng.random(60), "T": rng.random(60) + 1,
                                        "SEX": rng.choice(["F", "M"], 60)}))
    domain = Domain.from_data(frame, schema, n_bins=4)
    assert list(count_bins(schema, domain)) == ["AGE"]
    assert count_bins(schema, domain)["AGE"] == domain["AGE"].bins


def test_responsibilities_match_bayes_rule_by_hand() -> None:
    x = np.array([[0.0], [1.5]])
    a = 0.75 * norm.pdf(x[:, 0], -1.0, 1.0)
    b = 0.25 * norm.pdf(x[:, 0], 2.0, 2.0)
    r = component_responsibilities(x, MIXTURE_1D)
    np.testing.assert_allclose(r, np.column_stack([a, b]) / (a + b)[:, None])


def _site_rows(n: int, rng: np.random.Generator) -> tuple[np.ndarray, pd.DataFrame]:
    codes = rng.normal(0, 2, (n, 1))
    sex = np.where(rng.random(n) < 0.5, "F", "M").astype(object)
    sex[rng.random(n) < 0.1] = np.nan
    frame = SCHEMA.coerce(pd.DataFrame({"AGE": rng.normal(60, 5, n), "SEX": sex,
                                        "MUT": (rng.random(n) < 0.3).astype(float)}))
    return codes, frame


def test_site_counts_sum_to_the_pooled_counts() -> None:
    # Setup: three sites; the third lacks MUT
    rng = np.random.default_rng(0)
    sites = [_site_rows(n, rng) for n in (50, 30, 20)]
    sites[2] = (sites[2][0], sites[2][1].drop(columns=["MUT"]))
    # Run
    bins = {"AGE": (40.0, 55.0, 60.0, 65.0, 80.0)}
    per_site = [component_count_statistics(c, d, MIXTURE_1D, COLUMNS, SCHEMA, bins=bins) for c, d in sites]
    summed = sum_component_counts(per_site)
    pooled_all = component_count_statistics(
        np.vstack([c for c, _ in sites]), pd.concat([d for _, d in sites]), MIXTURE_1D, COLUMNS, SCHEMA, bins=bins
    )
    pooled_mut = component_count_statistics(
        np.vstack([c for c, _ in sites[:2]]), pd.concat([d for _, d in sites[:2]]), MIXTURE_1D, COLUMNS, SCHEMA
    )
    # Assert: equal to the pooled counts; a lacking site adds nothing to its column; every row counted once
    assert "MUT" not in per_site[2]
    np.testing.assert_allclose(summed["SEX"], pooled_all["SEX"])
    np.testing.assert_allclose(summed["AGE"], pooled_all["AGE"])
    assert summed["AGE"].sum() == pytest.approx(100)
    np.testing.assert_allclose(summed["MUT"], pooled_mut["MUT"])
    assert summed["SEX"].sum() == pytest.approx(100)
    assert summed["SEX"][:, 2].sum() == pytest.approx(sum(d["SEX"].isna().sum() for _, d in sites))


def test_count_columns_reads_kinds_not_names() -> None:
    _, frame = _site_rows(40, np.random.default_rng(1))
    domain = Domain.from_data(frame, SCHEMA)
    assert count_columns(SCHEMA, domain) == {"SEX": ("F", "M"), "MUT": ("0", "1")}


def test_where_categories_reads_conjunctive_equalities_only() -> None:
    assert where_categories("`SEX` == 'F' and AGE >= 65", COLUMNS, SCHEMA) == {"SEX": ["F"]}
    assert where_categories("(MUT in [1]) & (SEX == 'M')", COLUMNS, SCHEMA) == {"MUT": ["1"], "SEX": ["M"]}
    assert where_categories("1 == MUT", COLUMNS, SCHEMA) == {"MUT": ["1"]}
    assert where_categories("SEX == 'F' or MUT == 1", COLUMNS, SCHEMA) == {}
    assert where_categories("SEX != 'F'", COLUMNS, SCHEMA) == {}
    assert where_categories("AGE >", COLUMNS, SCHEMA) == {}


def _fedavg_sites() -> list[SiteRuntime]:
    rng = np.random.default_rng(3)
    out = []
    for i, n in enumerate((120, 80, 60)):
        # two kinds of patient: MUT carriers are older; the latent space can separate them
        mut = (rng.random(n) < 0.3).astype(float)
        frame = pd.DataFrame({"AGE": rng.normal(55 + 20 * mut, 3), "SEX": rng.choice(["F", "M"], n), "MUT": mut})
        out.append(SiteRuntime(f"site-{i + 1}", SCHEMA.coerce(frame), SCHEMA, seed=i))
    return out


@pytest.fixture(scope="module")
def federated() -> tuple[object, list[SiteRuntime]]:
    sites = _fedavg_sites()
    strategy = make_strategy(
        "fedavg", SCHEMA, generator="vae_bgm", rounds=2, local_epochs=3, min_sites=2, random_state=0,
        generator_params={"batch_size": 32, "latent_dim": 2, "hidden_dims": [16], "n_components": 3},
    )
    return strategy.start(InProcessGrid(sites)).generator, sites


def test_fedavg_collects_the_pooled_counts_under_the_final_mixture(federated) -> None:  # type: ignore[no-untyped-def]
    gen, sites = federated
    mix = gen.get_latent_mixture()
    # pooled reference: every site's codes under the final global weights, counted in one place
    codes = np.vstack([gen.latent_codes(s.data) for s in sites])
    pooled = component_count_statistics(codes, pd.concat([s.data for s in sites]), mix, gen.count_columns(), SCHEMA,
                                        bins=gen.count_bins())
    # in clear each site (default policy, k = 5) releases its AGE bins merged into runs of >= 5 patients
    released_age = sum(release_counts(component_count_statistics(gen.latent_codes(s.data), s.data, mix, {}, SCHEMA,
                                                                 bins=gen.count_bins())["AGE"], 5, ordered=True)
                       for s in sites)
    counts = gen.get_component_counts()
    # Assert: labels (every one held by >= 5 patients at each site) are the pooled counts; AGE is what the sites
    # released, with the pooled per-component totals
    assert set(counts) == {"SEX", "MUT", "AGE"}
    for col in ("SEX", "MUT"):
        np.testing.assert_allclose(counts[col], pooled[col], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(counts["AGE"], released_age, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(counts["AGE"].sum(axis=1), pooled["AGE"].sum(axis=1), rtol=1e-6)
    assert not np.allclose(counts["AGE"], pooled["AGE"], atol=1e-3)  # some site held a bin of fewer than 5


def test_trusted_sites_send_their_counts_as_computed() -> None:
    # Setup: the same network, every site trusted (clear_counts: no merging in clear)
    from dataclasses import replace

    sites = [replace(s, policy=SitePolicy(clear_counts=True)) for s in _fedavg_sites()]
    strategy = make_strategy("fedavg", SCHEMA, generator="vae_bgm", rounds=1, local_epochs=1, min_sites=2,
                             random_state=0, generator_params={"batch_size": 32, "latent_dim": 2, "hidden_dims": [16],
                                                               "n_components": 3})
    # Run
    gen = strategy.start(InProcessGrid(sites)).generator
    # Assert: every column, AGE's bins included, is the pooled count
    codes = np.vstack([gen.latent_codes(s.data) for s in sites])
    pooled = component_count_statistics(codes, pd.concat([s.data for s in sites]), gen.get_latent_mixture(),
                                        gen.count_columns(), SCHEMA, bins=gen.count_bins())
    counts = gen.get_component_counts()
    assert set(counts) == {"SEX", "MUT", "AGE"}
    for col in counts:
        np.testing.assert_allclose(counts[col], pooled[col], rtol=1e-6, atol=1e-6)


def test_age_range_weights_lean_to_the_older_carriers(federated) -> None:  # type: ignore[no-untyped-def]
    # Setup: in the fixture's sites MUT carriers are 20 years older (55 vs 75, sd 3)
    gen, _ = federated
    counts, pi = gen.get_component_counts(), gen.get_latent_mixture()["weights"]
    share = counts["MUT"][:, 1] / counts["MUT"].sum(axis=1)
    # by default (condition_ranges=False) a range is left to rejection
    assert gen.condition_weights(None, "AGE >= 70") is None
    gen.set_params(condition_ranges=True)
    try:
        # Run
        old = gen.condition_weights(None, "AGE >= 70")
        young = gen.condition_weights(None, "`AGE` < 60")
        # Assert: an age range alone moves the weights to the carriers' components, and away from them
        assert np.dot(old, share) > np.dot(pi / pi.sum(), share) > np.dot(young, share)
        assert gen.condition_weights(None, "AGE >= 70 or MUT == 1") is None  # nothing readable: plain weights
        rows = gen.sample(30, random_state=2, where="AGE >= 70 and MUT == 1")
        assert len(rows) == 30 and (rows["AGE"] >= 70).all() and (rows["MUT"] == 1).all()
    finally:
        gen.set_params(condition_ranges=False)


def test_conditional_draws_meet_the_conditions_exactly(federated, tmp_path) -> None:  # type: ignore[no-untyped-def]
    gen, _ = federated
    # Run: conditions, a where with a category term and a range, and the same after a save/load round trip
    a = gen.sample(40, random_state=0, conditions={"MUT": 1}, where="SEX == 'F' and AGE >= 60")
    gen.save(tmp_path / "m")
    loaded = load_generator(tmp_path / "m")
    b = loaded.sample(40, random_state=0, where="MUT == 1 and `SEX` in ['M']")
    # Assert
    assert len(a) == 40 and (a["MUT"] == 1).all() and (a["SEX"] == "F").all() and (a["AGE"] >= 60).all()
    assert len(b) == 40 and (b["MUT"] == 1).all() and (b["SEX"] == "M").all()
    for col, c in gen.get_component_counts().items():
        np.testing.assert_allclose(loaded.get_component_counts()[col], c)


def test_component_weights_follow_the_condition(federated) -> None:  # type: ignore[no-untyped-def]
    gen, _ = federated
    counts, mix = gen.get_component_counts(), gen.get_latent_mixture()
    w1 = component_condition_weights(mix["weights"], counts, gen.count_columns(), {"MUT": ["1"]})
    w0 = component_condition_weights(mix["weights"], counts, gen.count_columns(), {"MUT": ["0"]})
    # P(MUT = 1 | k) per component from the counts: the MUT = 1 weights lean to the components richer in carriers
    share = counts["MUT"][:, 1] / counts["MUT"].sum(axis=1)
    assert np.dot(w1, share) > np.dot(mix["weights"] / mix["weights"].sum(), share) > np.dot(w0, share)
    # a new mixture drops counts kept for the old one
    gen2 = type(gen)(SCHEMA, domain=gen.domain, latent_dim=2, hidden_dims=[16], n_components=3)
    gen2.set_component_counts(counts)
    gen2.set_latent_mixture(mix)
    assert gen2.get_component_counts() is None


@pytest.mark.parametrize("mode", ["stratified", "proposal", "off"])
def test_every_mode_meets_the_conditions_exactly(federated, mode) -> None:  # type: ignore[no-untyped-def]
    gen, _ = federated
    gen.set_params(condition_components=mode)
    try:
        rows = gen.sample(30, random_state=1, conditions={"SEX": ["M"]}, where="MUT == 1")
    finally:
        gen.set_params(condition_components="stratified")
    assert len(rows) == 30 and (rows["SEX"] == "M").all() and (rows["MUT"] == 1).all()


def test_stratified_shares_follow_the_component_weights(federated, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Setup: record which component each stratified batch is drawn from
    gen, _ = federated
    seen: list[int] = []
    original = type(gen)._sample

    def spy(self, n_samples, *, rng):  # type: ignore[no-untyped-def]
        seen.append(int(np.argmax(self._proposal_)))
        return original(self, n_samples, rng=rng)

    monkeypatch.setattr(type(gen), "_sample", spy)
    w = component_condition_weights(gen.get_latent_mixture()["weights"], gen.get_component_counts(),
                                    gen.count_columns(), {"MUT": ["1"]})
    # Run: the allocation is the multinomial draw of the same seed
    gen.sample(200, random_state=5, conditions={"MUT": 1})
    alloc = np.random.default_rng(5).multinomial(200, w / w.sum())
    # Assert: exactly the components given a share are drawn from, each at least once
    assert set(seen) == set(np.flatnonzero(alloc).tolist())


def test_stratified_draw_fails_clearly_when_no_row_can_meet_the_conditions(federated) -> None:  # type: ignore[no-untyped-def]
    from fedsynth.generators.base import ConditionError

    gen, _ = federated
    with pytest.raises(ConditionError, match="latent component"):
        gen.sample(10, random_state=0, conditions={"MUT": 1}, where="AGE < -1000", max_tries=2)
