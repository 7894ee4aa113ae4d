"""The same checks over every registered generator (sklearn's estimator checks, RDT's subclass test)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsynth.cohort.schema import ColumnKind
from fedsynth.cohort.validation import validate_frame
from fedsynth.encoding.domain import Domain
from fedsynth.generators import GENERATORS, SupportsWeights, load_generator, make_generator

#: Small settings so each generator fits a few hundred rows in seconds; quality is the benchmarks' job.
FAST_PARAMS: dict[str, dict] = {
    "bayesian_network": {"max_indegree": 2},
    "ctgan": {"epochs": 1, "batch_size": 100, "pac": 10},
    "vae_bgm": {"epochs": 2, "batch_size": 64},
}


@pytest.fixture(scope="module")
def small(mds_partition):
    """Two small 'sites' from the real training pool and a domain built from both (as a federation would)."""
    train = mds_partition.train.iloc[:400].reset_index(drop=True)
    schema = mds_partition.schema
    opts = {"n_modes": 5}
    domain = Domain.from_data(train, schema, **opts)
    return schema, domain, train.iloc[:200].reset_index(drop=True), train.iloc[200:].reset_index(drop=True), train


@pytest.fixture(scope="module", params=sorted(GENERATORS))
def fitted(request, small):
    schema, domain, _, _, train = small
    gen = make_generator(request.param, schema, domain=domain, **FAST_PARAMS[request.param])
    returned = gen.fit(train)
    return request.param, gen, returned


def test_fit_returns_self(fitted):
    _, gen, returned = fitted
    assert returned is gen


def test_sample_has_the_schemas_columns_dtypes_and_respects_the_domain(fitted, small):
    # Setup
    schema, domain, *_ = small
    _, gen, _ = fitted
    # Run
    out = gen.sample(300, random_state=1)
    # Assert
    assert len(out) == 300
    assert list(out.columns) == schema.data_columns
    for name in schema.data_columns:
        spec = schema[name]
        expected = object if spec.kind is ColumnKind.CATEGORICAL else np.float64
        assert out[name].dtype == expected, name
        if name not in domain.columns:
            continue
        col = domain[name]
        values = out[name].dropna()
        if col.is_numeric:
            assert values.between(col.lower, col.upper).all(), name
        else:
            labels = values.astype(int).astype(str) if spec.kind is ColumnKind.BINARY else values
            assert set(labels) <= set(col.categories), name
    for ep in schema.endpoints:
        assert (out[ep.duration_col].dropna() > 0).all()
        assert set(out[ep.event_col].dropna().unique()) <= {0.0, 1.0}
        assert (out[ep.duration_col].isna() == out[ep.event_col].isna()).all(), ep.name


def test_an_endpoint_sampled_half_missing_becomes_missing_as_a_whole(fitted, small):
    # Setup: a raw sample where one row has an event but no time and another a time but no event (a network
    # samples each column's missingness on its own)
    schema, *_ = small
    _, gen, _ = fitted
    raw = gen.sample(4, random_state=2)[schema.model_columns].copy()
    ep = schema.endpoints[0]
    raw[ep.duration_col] = [1.5, np.nan, 2.0, 3.0]
    raw[ep.event_col] = [1.0, 1.0, np.nan, 0.0]
    # Run
    out = gen._finish(raw)
    # Assert
    assert out[ep.duration_col].isna().tolist() == [False, True, True, False]
    assert out[ep.event_col].isna().tolist() == [False, True, True, False]
    assert not [p for p in validate_frame(out, schema) if p.where.startswith("endpoint")]


def test_same_seed_same_rows_other_seed_other_rows(fitted):
    _, gen, _ = fitted
    a, b, c = gen.sample(100, random_state=7), gen.sample(100, random_state=7), gen.sample(100, random_state=8)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_conditions_and_where_are_honoured(fitted):
    _, gen, _ = fitted
    out = gen.sample(50, random_state=3, conditions={"SEX": "F", "TP53": [0, 1]}, where="AGE >= 60")
    assert len(out) == 50
    assert (out["SEX"] == "F").all() and (out["AGE"] >= 60).all()


def test_save_and_load_round_trip_gives_the_same_samples(fitted, tmp_path):
    _, gen, _ = fitted
    gen.save(tmp_path / "model")
    again = load_generator(tmp_path / "model")
    pd.testing.assert_frame_equal(gen.sample(80, random_state=5), again.sample(80, random_state=5))
    assert not list((tmp_path / "model").glob("*.pkl")) and not list((tmp_path / "model").glob("*.pickle"))


def test_get_params_rebuilds_an_equivalent_generator(fitted, small):
    name, gen, _ = fitted
    schema, domain, *_ = small
    twin = make_generator(name, schema, domain=domain, **gen.get_params())
    assert twin.get_params() == gen.get_params()


@pytest.mark.parametrize("name", sorted(n for n in GENERATORS if n != "bayesian_network"))
def test_weights_from_two_sites_have_the_same_keys_and_shapes(name, small):
    # Setup: two different sites encode with the same shared domain
    schema, domain, site_a, site_b, _ = small
    a = make_generator(name, schema, domain=domain, **FAST_PARAMS[name]).fit(site_a)
    b = make_generator(name, schema, domain=domain, **FAST_PARAMS[name]).fit(site_b)
    assert isinstance(a, SupportsWeights)
    # Run
    wa, wb = a.get_weights(), b.get_weights()
    # Assert
    assert wa.keys() == wb.keys()
    assert all(wa[k].shape == wb[k].shape for k in wa)
    assert any(not np.array_equal(wa[k], wb[k]) for k in wa)
    # set_weights then get_weights is the identity
    b.set_weights(wa)
    assert all(np.array_equal(b.get_weights()[k], wa[k]) for k in wa)


def test_every_sampled_row_satisfies_the_schemas_endpoint_rules(fitted, small):
    # Setup: the MDS schema declares LFS <= OS and "an OS death is an LFS event"
    from fedsynth.cohort.constraints import violation_counts

    schema, *_ = small
    _, gen, _ = fitted
    # Run
    out = gen.sample(500, random_state=2)
    conditioned = gen.sample(50, random_state=3, conditions={"TP53": 1})
    # Assert
    assert len(schema.constraints) == 2
    for frame in (out, conditioned):
        assert [c["violations"] for c in violation_counts(frame, schema.constraints)] == [0, 0]


def test_each_generator_offers_the_protocols_its_strategies_type_against(fitted):
    # Setup
    from fedsynth.generators import SupportsLatentMixture, SupportsTwoStep

    name, gen, _ = fitted
    # Run / Assert: FedAvg needs SupportsWeights (and a latent mixture when there is one), the two-step BN
    # SupportsTwoStep; a generator offers exactly the capabilities it has
    offers = {p.__name__ for p in (SupportsWeights, SupportsLatentMixture, SupportsTwoStep) if isinstance(gen, p)}
    assert offers == {
        "bayesian_network": {"SupportsTwoStep"},
        "ctgan": {"SupportsWeights"},
        "vae_bgm": {"SupportsWeights", "SupportsLatentMixture"},
    }[name]
