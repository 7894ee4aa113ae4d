"""Tests of BayesianNetworkGenerator: counts that sum, federated = pooled, exact conditioning, missingness, persistence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsynth.cohort.schema import ColumnKind, ColumnRole, ColumnSpec, SurvivalEndpoint, TableSchema
from fedsynth.encoding.domain import Domain, merge_summaries, summarize_site
from fedsynth.errors import ValidationError
from fedsynth.generators import load_generator, make_generator
from fedsynth.generators.bayesian_network import (
    ISNA_SUFFIX,
    WITHIN_SUFFIX,
    BayesianNetworkGenerator,
    PooledCountOracle,
    SummedCountOracle,
    family_counts,
    family_from_key,
    family_key,
    network_variables,
)


def _schema() -> TableSchema:
    cols = (
        ColumnSpec("AGE", ColumnKind.INTEGER),
        ColumnSpec("HB", ColumnKind.CONTINUOUS),
        ColumnSpec("WBC", ColumnKind.CONTINUOUS),
        ColumnSpec("BLAST", ColumnKind.CONTINUOUS),
        ColumnSpec("SEX", ColumnKind.CATEGORICAL, categories=("F", "M")),
        ColumnSpec("WHO", ColumnKind.CATEGORICAL, categories=("A", "B", "C")),
        ColumnSpec("G1", ColumnKind.BINARY, ColumnRole.GENOMIC),
        ColumnSpec("G2", ColumnKind.BINARY, ColumnRole.GENOMIC),
        ColumnSpec("OS_YEARS", ColumnKind.CONTINUOUS, ColumnRole.OUTCOME),
        ColumnSpec("OS_STATUS", ColumnKind.BINARY, ColumnRole.OUTCOME),
    )
    return TableSchema(cols, (SurvivalEndpoint("OS", "OS_YEARS", "OS_STATUS"),), "toy")


def _frame(n: int, seed: int) -> pd.DataFrame:
    """Dependent columns: G1 -> G2 (exclusive), G1 -> WHO, HB and WBC missing together, 40% of BLAST exactly 0."""
    rng = np.random.default_rng(seed)
    g1 = (rng.random(n) < 0.3).astype(float)
    g2 = np.where(g1 == 1, 0.0, (rng.random(n) < 0.4).astype(float))
    who = np.where(g1 == 1, rng.choice(np.array(["B", "C"], dtype=object), n),
                   rng.choice(np.array(["A", "B"], dtype=object), n, p=[0.8, 0.2])).astype(object)
    who[rng.random(n) < 0.1] = np.nan
    hb = rng.normal(10, 2, n) - 2 * g1
    wbc = rng.lognormal(1.0, 0.5, n)
    absent = rng.random(n) < 0.2
    hb[absent] = np.nan
    wbc[absent | (rng.random(n) < 0.05)] = np.nan
    blast = np.where(rng.random(n) < 0.4, 0.0, rng.uniform(0.5, 20, n))
    os_years = rng.exponential(np.where(g1 == 1, 1.0, 4.0)) + 0.01
    return pd.DataFrame({
        "AGE": rng.integers(40, 90, n).astype(float),
        "HB": hb,
        "WBC": wbc,
        "BLAST": blast,
        "SEX": rng.choice(np.array(["F", "M"], dtype=object), n),
        "WHO": who,
        "G1": g1,
        "G2": g2,
        "OS_YEARS": os_years,
        "OS_STATUS": (rng.random(n) < 0.6).astype(float),
    })


@pytest.fixture(scope="module")
def schema() -> TableSchema:
    return _schema()


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return _frame(600, 1)


@pytest.fixture(scope="module")
def domain(schema: TableSchema, data: pd.DataFrame) -> Domain:
    return Domain.from_data(data, schema, n_bins=6)


@pytest.fixture(scope="module")
def fitted(schema: TableSchema, domain: Domain, data: pd.DataFrame) -> BayesianNetworkGenerator:
    return BayesianNetworkGenerator(schema, domain=domain, max_indegree=2).fit(data)


def _three_sites(data: pd.DataFrame, seed: int = 0) -> list[pd.DataFrame]:
    idx = np.random.default_rng(seed).permutation(len(data))
    return [data.iloc[part].reset_index(drop=True) for part in np.split(idx, [int(0.6 * len(data)), int(0.9 * len(data))])]


def _summed_oracle(sites: list[pd.DataFrame], domain: Domain, calls: list[int] | None = None) -> SummedCountOracle:
    def fetch(families):  # type: ignore[no-untyped-def]
        if calls is not None:
            calls.append(len(families))
        return [family_counts(s, domain, families) for s in sites]

    return SummedCountOracle(fetch)


def _assert_same_network(a: BayesianNetworkGenerator, b: BayesianNetworkGenerator) -> None:
    assert a.edges_ == b.edges_
    assert a._probs.keys() == b._probs.keys()
    for v in a._probs:
        np.testing.assert_allclose(a._probs[v], b._probs[v], rtol=0, atol=1e-9, err_msg=v)
    for c in a._within:
        np.testing.assert_array_equal(a._within[c], b._within[c])


# -- contract --------------------------------------------------------------------------------------------


def test_fit_returns_self_and_sample_has_schema_columns_and_dtypes(schema: TableSchema, data: pd.DataFrame) -> None:
    # Setup
    gen = make_generator("bayesian_network", schema, max_indegree=2)

    # Run
    returned = gen.fit(data)
    out = gen.sample(250, random_state=0)

    # Assert
    assert returned is gen
    assert len(out) == 250
    assert list(out.columns) == schema.data_columns
    for spec in schema.columns:
        assert out[spec.name].dtype == (object if spec.kind is ColumnKind.CATEGORICAL else np.float64), spec.name
    assert gen.domain is not None
    for name, col in gen.domain.columns.items():
        if col.is_numeric:
            assert out[name].dropna().between(col.lower, col.upper).all(), name
    assert (out["AGE"].dropna() % 1 == 0).all()
    assert (out["OS_YEARS"] > 0).all()


def test_same_seed_gives_same_rows_and_another_seed_other_rows(fitted: BayesianNetworkGenerator) -> None:
    a, b, c = (fitted.sample(100, random_state=s) for s in (7, 7, 8))
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_same_data_gives_same_edges_in_a_new_generator(schema: TableSchema, domain: Domain, data: pd.DataFrame,
                                                       fitted: BayesianNetworkGenerator) -> None:
    again = BayesianNetworkGenerator(schema, domain=domain, max_indegree=2).fit(data)
    _assert_same_network(again, fitted)


def test_structure_captures_the_planted_dependencies(fitted: BayesianNetworkGenerator) -> None:
    adjacent = {frozenset(e) for e in fitted.edges_}
    assert frozenset({"G1", "G2"}) in adjacent
    assert frozenset({"HB#isna", "WBC#isna"}) in adjacent
    # outcomes come last: no outcome (or outcome indicator) is a parent of a baseline variable
    outcome = {"OS_YEARS", "OS_STATUS"}
    assert not [(u, v) for u, v in fitted.edges_ if u.split("#")[0] in outcome and v.split("#")[0] not in outcome]


# -- counts and oracles ----------------------------------------------------------------------------------


def test_counts_of_two_halves_sum_to_counts_of_the_whole(domain: Domain, data: pd.DataFrame) -> None:
    # Setup
    families = [("G2", ("G1",)), ("HB", ("WHO", "SEX")), ("HB#isna", ("WBC#isna",)), ("AGE", ()),
                ("BLAST" + WITHIN_SUFFIX, ()), ("OS_STATUS", ("G1", "HB", "WHO"))]
    first, second = data.iloc[:250], data.iloc[250:]

    # Run
    whole = family_counts(data, domain, families)
    a, b = family_counts(first, domain, families), family_counts(second, domain, families)

    # Assert: identical shapes on every "site", and exact sums
    assert set(whole) == set(families)
    for fam in families:
        assert a[fam].shape == b[fam].shape == whole[fam].shape
        np.testing.assert_array_equal(a[fam] + b[fam], whole[fam])
    assert whole[("AGE", ())].sum() == data["AGE"].notna().sum()
    assert whole[("HB#isna", ("WBC#isna",))].sum() == len(data)
    assert whole[("G2", ("G1",))][1, 1] == 0  # G1 and G2 never together


def test_family_counts_equal_a_row_by_row_crosstab_on_the_real_cohort(mds_cohort) -> None:  # type: ignore[no-untyped-def]
    # Setup: families over columns with missing values, numeric bins, categories and indicators; the reference
    # counts are pandas crosstabs of the domain's states over the rows where every member has a state
    schema = mds_cohort.schema
    real = schema.coerce(mds_cohort.data.iloc[:900].reset_index(drop=True))
    domain = Domain.from_data(real, schema, n_bins=6)
    families = [("HB", ("CYTO_IPSSR", "SF3B1")), ("PLT#isna", ("HB#isna",)), ("OS_STATUS", ("BM_BLAST", "TP53")),
                ("SEX", ()), ("CYTO_IPSSR", ("ANC",))]

    def states(name: str) -> pd.Series:
        if name.endswith(ISNA_SUFFIX):
            return real[name[: -len(ISNA_SUFFIX)]].isna().astype(float)
        col = domain[name]
        if col.is_numeric:
            return domain.bin_index(name, real[name])
        labels = real[name].map(lambda v: v if pd.isna(v) else str(int(v)) if isinstance(v, float) else str(v))
        return labels.map({c: i for i, c in enumerate(col.categories)})

    # Run
    got = family_counts(real, domain, families)

    # Assert
    for child, parents in families:
        names = [child, *parents]
        frame = pd.DataFrame({n: states(n) for n in names}).dropna().astype(int)
        want = np.zeros(got[(child, parents)].shape, dtype=np.int64)
        for idx, n in frame.value_counts().items():
            want[idx if isinstance(idx, tuple) else (idx,)] = n
        np.testing.assert_array_equal(got[(child, parents)], want, err_msg=str((child, parents)))
        assert want.sum() > 100


def test_family_counts_omit_families_over_a_column_the_site_lacks(domain: Domain, data: pd.DataFrame) -> None:
    out = family_counts(data.drop(columns=["HB"]), domain, [("HB", ()), ("G1", ("HB#isna",)), ("G1", ())])
    assert list(out) == [("G1", ())]


def test_oracle_caches_and_answers_any_parent_order(domain: Domain, data: pd.DataFrame) -> None:
    # Setup
    calls: list[int] = []
    oracle = _summed_oracle(_three_sites(data), domain, calls)

    # Run
    ab = oracle.family_counts([("OS_STATUS", ("G1", "WHO"))])[("OS_STATUS", ("G1", "WHO"))]
    ba = oracle.family_counts([("OS_STATUS", ("WHO", "G1"))])[("OS_STATUS", ("WHO", "G1"))]

    # Assert
    assert calls == [1]
    np.testing.assert_array_equal(ab, np.transpose(ba, (0, 2, 1)))
    np.testing.assert_array_equal(ab, family_counts(data, domain, [("OS_STATUS", ("G1", "WHO"))])[("OS_STATUS", ("G1", "WHO"))])


def test_oracle_serves_every_family_of_one_variable_set_from_one_table(domain: Domain, data: pd.DataFrame) -> None:
    # Setup: three families over the same three variables, each child in turn
    calls: list[int] = []
    oracle = _summed_oracle(_three_sites(data), domain, calls)
    fams = [("OS_STATUS", ("G1", "WHO")), ("G1", ("WHO", "OS_STATUS")), ("WHO", ("OS_STATUS", "G1"))]

    # Run
    first = oracle.family_counts(fams[:1])
    rest = oracle.family_counts(fams[1:])

    # Assert: one request carrying one table; each family equals its own count on the pooled rows
    assert calls == [1]
    assert oracle.n_families_fetched == 1
    direct = family_counts(data, domain, fams)
    for fam in fams:
        np.testing.assert_array_equal({**first, **rest}[fam], direct[fam])


def test_oracle_reorders_a_family_that_repeats_a_name(domain: Domain, data: pd.DataFrame) -> None:
    oracle = _summed_oracle(_three_sites(data), domain)
    got = oracle.family_counts([("SEX", ("G1", "G1"))])[("SEX", ("G1", "G1"))]
    np.testing.assert_array_equal(got, family_counts(data, domain, [("SEX", ("G1", "G1"))])[("SEX", ("G1", "G1"))])


def test_structure_search_asks_for_no_family_with_a_forbidden_edge(schema: TableSchema, domain: Domain,
                                                                    data: pd.DataFrame) -> None:
    # Setup: record every family the summed oracle fetches
    asked: list[tuple[str, tuple[str, ...]]] = []
    oracle = _summed_oracle(_three_sites(data), domain)
    fetch = oracle.fetch
    oracle.fetch = lambda fams: (asked.extend(fams), fetch(fams))[1]  # type: ignore[method-assign]
    gen = BayesianNetworkGenerator(schema, domain=domain, max_indegree=2)
    forbidden = gen.forbidden_edges()

    # Run
    gen.learn_structure(oracle)

    # Assert: a variable set is fetched only if some family of it is allowed (hill climbing could score it)
    assert forbidden and asked
    for fam in asked:
        names = [fam[0], *fam[1]]
        assert any(all((p, child) not in forbidden for p in names if p != child) for child in names), fam


def test_family_keys_round_trip() -> None:
    for fam in [("A", ()), ("A", ("B",)), ("HB#isna", ("WBC#isna", "G1"))]:
        assert family_from_key(family_key(fam)) == fam


def test_summed_oracle_over_three_sites_learns_the_pooled_network_on_a_toy(
    schema: TableSchema, domain: Domain, data: pd.DataFrame, fitted: BayesianNetworkGenerator
) -> None:
    # Setup
    calls: list[int] = []
    oracle = _summed_oracle(_three_sites(data), domain, calls)
    gen = BayesianNetworkGenerator(schema, domain=domain, max_indegree=2)

    # Run
    edges = gen.learn_structure(oracle)
    gen.learn_parameters(oracle, edges)

    # Assert: same network, and the search needed about one round trip per step, not one per candidate
    _assert_same_network(gen, fitted)
    assert len(calls) <= 2 * len(edges) + 3
    pd.testing.assert_frame_equal(gen.sample(50, random_state=2), fitted.sample(50, random_state=2))


@pytest.mark.parametrize("score", ["bic", "bdeu"])
def test_summed_oracle_over_three_sites_learns_the_pooled_network_on_the_real_cohort(mds_cohort, score: str) -> None:  # type: ignore[no-untyped-def]
    # Setup: 700 real rows of 22 columns (clinical, 9 genes, OS), the domain merged from the three sites'
    # summaries as a federation builds it
    full = mds_cohort.schema
    schema = full.select(full.model_columns[:20] + ["OS_YEARS", "OS_STATUS"])
    real = schema.coerce(mds_cohort.data.iloc[:700].reset_index(drop=True))
    sites = _three_sites(real, seed=1)
    domain = merge_summaries([summarize_site(s, schema) for s in sites], schema, n_bins=5)
    params = {"max_indegree": 2, "score": score}

    # Run
    pooled = BayesianNetworkGenerator(schema, domain=domain, **params).fit(real)
    fed = BayesianNetworkGenerator(schema, domain=domain, **params)
    oracle = _summed_oracle(sites, domain)
    fed.learn_parameters(oracle, fed.learn_structure(oracle))

    # Assert
    assert len(pooled.edges_) > 10
    _assert_same_network(fed, pooled)


def test_site_lacking_a_column_still_gives_a_model_over_every_column(schema: TableSchema, domain: Domain,
                                                                       data: pd.DataFrame) -> None:
    # Setup: the third site has no HB and no WHO
    sites = _three_sites(data)
    sites[2] = sites[2].drop(columns=["HB", "WHO"])
    oracle = _summed_oracle(sites, domain)
    gen = BayesianNetworkGenerator(schema, domain=domain, max_indegree=2)

    # Run
    gen.learn_parameters(oracle, gen.learn_structure(oracle))
    out = gen.sample(400, random_state=0)

    # Assert
    assert set(network_variables(domain)) == set(gen._probs)
    assert list(out.columns) == schema.data_columns
    assert out["HB"].notna().mean() > 0.6 and out["WHO"].dropna().isin(["A", "B", "C"]).all()
    assert abs(out["HB"].isna().mean() - sites[0]["HB"].isna().mean()) < 0.1


def test_fit_on_a_frame_without_a_column_uses_the_domain_for_it(schema: TableSchema, domain: Domain,
                                                               data: pd.DataFrame) -> None:
    gen = BayesianNetworkGenerator(schema, domain=domain, max_indegree=1).fit(data.drop(columns=["WHO"]))
    out = gen.sample(300, random_state=0)
    assert out["WHO"].dropna().isin(["A", "B", "C"]).all() and out["WHO"].notna().any()


# -- sampling --------------------------------------------------------------------------------------------


def test_missing_rates_and_their_pattern_are_reproduced(fitted: BayesianNetworkGenerator, data: pd.DataFrame) -> None:
    out = fitted.sample(4000, random_state=0)
    for col in ("HB", "WBC", "WHO"):
        assert abs(out[col].isna().mean() - data[col].isna().mean()) < 0.02, col
    both = (out["HB"].isna() & out["WBC"].isna()).mean()
    assert abs(both - (data["HB"].isna() & data["WBC"].isna()).mean()) < 0.03
    assert out[["AGE", "SEX", "G1"]].notna().all().all()


def test_point_masses_inside_a_bin_are_kept(fitted: BayesianNetworkGenerator, data: pd.DataFrame) -> None:
    out = fitted.sample(3000, random_state=1)
    assert abs((out["BLAST"] == 0).mean() - (data["BLAST"] == 0).mean()) < 0.03


def test_exact_conditions_are_honoured(fitted: BayesianNetworkGenerator) -> None:
    # Run
    out = fitted.sample(200, random_state=3, conditions={"G1": 1, "WHO": ["B", "C"], "AGE": [60, 70]})
    rare = fitted.sample(50, random_state=3, conditions={"G1": 1, "G2": 1})  # never seen together in the data
    with_where = fitted.sample(40, random_state=3, conditions={"SEX": "F"}, where="HB < 9")

    # Assert
    assert len(out) == 200 and (out["G1"] == 1).all() and out["WHO"].isin(["B", "C"]).all()
    assert out["AGE"].isin([60.0, 70.0]).all() and set(out["AGE"]) == {60.0, 70.0}
    assert len(rare) == 50 and ((rare["G1"] == 1) & (rare["G2"] == 1)).all()
    assert (with_where["SEX"] == "F").all() and (with_where["HB"] < 9).all()


def test_conditional_sampling_follows_the_exact_posterior(fitted: BayesianNetworkGenerator) -> None:
    # Setup: exact posteriors from pgmpy's variable elimination on the fitted network (states are codes)
    from pgmpy.inference import VariableElimination

    infer = VariableElimination(fitted.model_)
    cases = [
        ({"WHO": "C"}, {"WHO": 2, "WHO#isna": 0}),
        ({"G2": 1, "SEX": "F"}, {"G2": 1, "SEX": 0}),
        ({"OS_STATUS": 1, "G1": 0}, {"OS_STATUS": 1, "G1": 0}),
    ]
    for conditions, evidence in cases:
        exact_g1 = float(infer.query(["G1"], evidence={k: v for k, v in evidence.items() if k != "G1"},
                                     show_progress=False).values[1]) if "G1" not in evidence else 0.0
        exact_hb_missing = float(infer.query(["HB#isna"], evidence=evidence, show_progress=False).values[1])

        # Run
        out = fitted.sample(5000, random_state=5, conditions=conditions)

        # Assert
        assert abs(out["G1"].mean() - exact_g1) < 0.025, conditions
        assert abs(out["HB"].isna().mean() - exact_hb_missing) < 0.025, conditions


def test_conditions_lift_the_effect_on_survival(fitted: BayesianNetworkGenerator) -> None:
    mutated = fitted.sample(1500, random_state=0, conditions={"G1": 1})
    wild = fitted.sample(1500, random_state=0, conditions={"G1": 0})
    assert mutated["OS_YEARS"].median() < wild["OS_YEARS"].median()


# -- persistence and parameters --------------------------------------------------------------------------


def test_save_load_round_trip_gives_the_same_samples(fitted: BayesianNetworkGenerator, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Run
    fitted.save(tmp_path / "model")
    again = load_generator(tmp_path / "model")

    # Assert
    assert isinstance(again, BayesianNetworkGenerator)
    assert again.edges_ == fitted.edges_
    pd.testing.assert_frame_equal(again.sample(120, random_state=4), fitted.sample(120, random_state=4))
    pd.testing.assert_frame_equal(
        again.sample(30, random_state=4, conditions={"G1": 1}), fitted.sample(30, random_state=4, conditions={"G1": 1})
    )
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["bayesian_network.json", "generator.json"]


def test_fit_from_counts_equals_fit(schema: TableSchema, domain: Domain, data: pd.DataFrame,
                                    fitted: BayesianNetworkGenerator) -> None:
    # Setup: the counts a server would hold after summing the sites' replies
    gen = BayesianNetworkGenerator(schema, domain=domain, max_indegree=2)
    families = [(v, tuple(sorted(fitted.model_.get_parents(v)))) for v in network_variables(domain)]
    families += [(c + WITHIN_SUFFIX, ()) for c in ("AGE", "HB", "WBC", "BLAST", "OS_YEARS")]
    counts = PooledCountOracle(data, domain).family_counts(families)

    # Run
    gen.fit_from_counts(counts, fitted.edges_)

    # Assert
    _assert_same_network(gen, fitted)


def test_invalid_parameters_are_all_listed(schema: TableSchema, data: pd.DataFrame) -> None:
    # Setup
    gen = BayesianNetworkGenerator(schema, score="aic", max_indegree=-1, equivalent_sample_size=0, n_bins=0)

    # Run
    with pytest.raises(ValidationError) as err:
        gen.fit(data)

    # Assert
    msg = str(err.value)
    assert msg.startswith("BayesianNetworkGenerator hyperparameters has 4 problems:")
    assert "The 'score' parameter of BayesianNetworkGenerator must be a str among {'bic', 'bdeu'}. Got 'aic' instead." in msg
    assert "The 'max_indegree' parameter of BayesianNetworkGenerator must be an int in the range [0, inf). Got -1 instead." in msg
    assert ("The 'equivalent_sample_size' parameter of BayesianNetworkGenerator must be a float in the range (0, inf). "
            "Got 0 instead.") in msg
    assert "The 'n_bins' parameter of BayesianNetworkGenerator must be an int in the range [1, inf). Got 0 instead." in msg


def test_indicator_nodes_exist_only_for_columns_with_missing_values(domain: Domain) -> None:
    variables = network_variables(domain)
    assert {v for v in variables if v.endswith(ISNA_SUFFIX)} == {"HB#isna", "WBC#isna", "WHO#isna"}


def test_summed_oracle_accepts_string_keys_and_rejects_mismatched_shapes(domain: Domain, data: pd.DataFrame) -> None:
    # Setup
    fam = ("G2", ("G1", "SEX"))
    sites = _three_sites(data)
    replies = [{family_key(f): a for f, a in family_counts(s, domain, [fam]).items()} for s in sites]
    bad = [{fam: np.zeros((2, 2, 3), dtype=np.int64)}, {fam: np.zeros((2, 2, 2), dtype=np.int64)}]

    # Run
    summed = SummedCountOracle(lambda families: replies).family_counts([fam])[fam]
    with pytest.raises(ValidationError) as err:
        SummedCountOracle(lambda families: bad).family_counts([fam])

    # Assert
    np.testing.assert_array_equal(summed, family_counts(data, domain, [fam])[fam])
    assert "reply 1, family G2|G1,SEX: has shape (2, 2, 2)" in str(err.value)
