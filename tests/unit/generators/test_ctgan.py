"""Tests of CTGANGenerator: contract, determinism, weight exchange, continuation, persistence, worst case."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from fedsynth.cohort.schema import ColumnKind, ColumnRole, ColumnSpec, SurvivalEndpoint, TableSchema
from fedsynth.encoding.domain import Domain, merge_summaries, summarize_site
from fedsynth.errors import ValidationError
from fedsynth.generators import SupportsWeights, load_generator, make_generator
from fedsynth.generators.ctgan import CTGANGenerator

# Tiny networks and batches keep every test well under a second of training on one core.
FAST: dict[str, Any] = {
    "epochs": 2,
    "batch_size": 20,
    "pac": 2,
    "embedding_dim": 8,
    "generator_dim": (16,),
    "discriminator_dim": (16,),
    "random_state": 0,
    "device": "cpu",
}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _schema() -> TableSchema:
    cols = (
        ColumnSpec("AGE", ColumnKind.INTEGER),
        ColumnSpec("HB", ColumnKind.CONTINUOUS),
        ColumnSpec("SEX", ColumnKind.CATEGORICAL, categories=("F", "M")),
        ColumnSpec("WHO", ColumnKind.CATEGORICAL, categories=("A", "B", "C")),
        ColumnSpec("G1", ColumnKind.BINARY, ColumnRole.GENOMIC),
        ColumnSpec("G2", ColumnKind.BINARY, ColumnRole.GENOMIC),
        ColumnSpec("OS_YEARS", ColumnKind.CONTINUOUS, ColumnRole.OUTCOME),
        ColumnSpec("OS_STATUS", ColumnKind.BINARY, ColumnRole.OUTCOME),
    )
    return TableSchema(cols, (SurvivalEndpoint("OS", "OS_YEARS", "OS_STATUS"),), "toy")


def _frame(n: int, seed: int, hb_missing: float = 0.2, who_missing: float = 0.1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    hb = rng.normal(10, 2, n)
    hb[rng.random(n) < hb_missing] = np.nan
    who = rng.choice(np.array(["A", "B", "C"], dtype=object), n, p=[0.5, 0.3, 0.2])
    who[rng.random(n) < who_missing] = np.nan
    g1 = (rng.random(n) < 0.3).astype(float)
    return pd.DataFrame({
        "AGE": rng.integers(40, 90, n).astype(float),
        "HB": hb,
        "SEX": rng.choice(np.array(["F", "M"], dtype=object), n),
        "WHO": who,
        "G1": g1,
        "G2": np.where(g1 == 1, 0.0, (rng.random(n) < 0.4).astype(float)),
        "OS_YEARS": rng.exponential(3.0, n) + 0.01,
        "OS_STATUS": (rng.random(n) < 0.6).astype(float),
    })


@pytest.fixture(scope="module")
def schema() -> TableSchema:
    return _schema()


@pytest.fixture(scope="module")
def domain(schema: TableSchema) -> Domain:
    # Built the federated way, from two sites' summaries (no pooled rows).
    summaries = [summarize_site(_frame(120, s), schema, n_modes=3) for s in (1, 2)]
    return merge_summaries(summaries, schema, n_modes=3)


@pytest.fixture(scope="module")
def fitted(schema: TableSchema, domain: Domain) -> CTGANGenerator:
    return CTGANGenerator(schema, domain=domain, **FAST).fit(_frame(120, 1))


def _weights_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_fit_returns_self_and_sample_has_schema_columns_and_dtypes(schema: TableSchema, domain: Domain) -> None:
    # Setup
    gen = CTGANGenerator(schema, domain=domain, **FAST)

    # Run
    out = gen.fit(_frame(120, 1))
    sample = gen.sample(37, random_state=3)

    # Assert
    assert out is gen
    assert isinstance(gen, SupportsWeights)
    assert list(sample.columns) == schema.data_columns
    assert len(sample) == 37
    for c in ("AGE", "HB", "G1", "OS_YEARS", "OS_STATUS"):
        assert sample[c].dtype == np.float64
    assert sample["SEX"].dtype == object and set(sample["SEX"].dropna()) <= {"F", "M"}
    assert set(sample["G1"].dropna()) <= {0.0, 1.0}
    assert (sample["OS_YEARS"].dropna() > 0).all()
    assert sample["AGE"].dropna().between(domain["AGE"].lower, domain["AGE"].upper).all()


def test_registry_builds_ctgan_and_get_params_rebuilds_it(schema: TableSchema) -> None:
    # Setup
    gen = make_generator("ctgan", schema, epochs=7, generator_dim=[32, 32], conditional_columns=["WHO"])

    # Run
    rebuilt = CTGANGenerator(schema, **gen.get_params())

    # Assert
    assert isinstance(gen, CTGANGenerator)
    assert rebuilt.get_params() == gen.get_params()
    assert gen.get_params()["generator_dim"] == [32, 32]
    assert gen._domain_options()["n_modes"] == 10


def test_same_seed_gives_same_rows(fitted: CTGANGenerator) -> None:
    # Setup / Run
    a = fitted.sample(50, random_state=11)
    b = fitted.sample(50, random_state=11)
    c = fitted.sample(50, random_state=12)

    # Assert
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_same_random_state_gives_same_trained_model(schema: TableSchema, domain: Domain) -> None:
    # Setup
    data = _frame(120, 1)

    # Run
    a = CTGANGenerator(schema, domain=domain, **FAST).fit(data)
    b = CTGANGenerator(schema, domain=domain, **FAST).fit(data)

    # Assert
    assert _weights_equal(a.get_weights(), b.get_weights())


def test_sampling_leaves_weights_unchanged(fitted: CTGANGenerator) -> None:
    # Setup
    before = fitted.get_weights()

    # Run
    fitted.sample(64, random_state=0)

    # Assert
    assert _weights_equal(before, fitted.get_weights())


def test_partial_fit_continues_training_without_reinitialising(schema: TableSchema, domain: Domain) -> None:
    # Setup
    data = _frame(120, 1)
    gen = CTGANGenerator(schema, domain=domain, **{**FAST, "epochs": 1}).fit(data)
    after_fit = gen.get_weights()
    steps_before = max(s["step"].item() for s in gen.optimizer_g_.state.values())

    # Run
    gen.partial_fit(data, epochs=1)

    # Assert: weights moved, the optimiser kept counting, and the result equals one uninterrupted 2-epoch fit
    # (a continuation), not a fresh 1-epoch model.
    after_partial = gen.get_weights()
    steps_after = max(s["step"].item() for s in gen.optimizer_g_.state.values())
    assert not _weights_equal(after_fit, after_partial)
    assert steps_after == 2 * steps_before
    straight = CTGANGenerator(schema, domain=domain, **{**FAST, "epochs": 2}).fit(data)
    assert _weights_equal(after_partial, straight.get_weights())
    assert gen.epochs_trained_ == 2


def test_weights_from_two_sites_have_same_keys_and_shapes(schema: TableSchema, domain: Domain) -> None:
    # Setup: two sites with different rows (and different local category frequencies), one shared domain
    site_a = CTGANGenerator(schema, domain=domain, **FAST)
    site_b = CTGANGenerator(schema, domain=domain, **FAST)

    # Run
    wa = site_a.partial_fit(_frame(120, 1), epochs=1).get_weights()
    wb = site_b.partial_fit(_frame(60, 2, hb_missing=0.5), epochs=1).get_weights()

    # Assert
    assert list(wa) == list(wb)
    assert all(k.startswith(("generator.", "discriminator.")) for k in wa)
    assert all(wa[k].shape == wb[k].shape and wa[k].dtype == np.float32 for k in wa)


def test_set_weights_round_trip_gives_same_weights_and_samples(fitted: CTGANGenerator, schema: TableSchema,
                                                              domain: Domain) -> None:
    # Setup: a server-side model that has never seen data
    server = CTGANGenerator(schema, domain=domain, **FAST)

    # Run
    server.set_weights(fitted.get_weights())

    # Assert
    assert _weights_equal(server.get_weights(), fitted.get_weights())
    pd.testing.assert_frame_equal(server.sample(40, random_state=5), fitted.sample(40, random_state=5))


def test_set_weights_lists_every_mismatch(fitted: CTGANGenerator, schema: TableSchema, domain: Domain) -> None:
    # Setup
    weights = fitted.get_weights()
    first, second = list(weights)[:2]
    weights[first] = np.zeros((3, 3), dtype=np.float32)
    del weights[second]
    weights["generator.extra"] = np.zeros(1, dtype=np.float32)
    other = CTGANGenerator(schema, domain=domain, **FAST)

    # Run
    with pytest.raises(ValidationError) as err:
        other.set_weights(weights)

    # Assert
    msg = str(err.value)
    assert "3 problems" in msg
    assert f"weight {first!r}: has shape (3, 3)" in msg
    assert f"weight {second!r}: missing" in msg
    assert "weight 'generator.extra': not a weight of this model" in msg


def test_save_load_round_trip_gives_same_samples(fitted: CTGANGenerator, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Setup
    fitted.save(tmp_path / "model")

    # Run
    loaded = load_generator(tmp_path / "model")

    # Assert
    assert isinstance(loaded, CTGANGenerator)
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "ctgan_layout.json", "ctgan_weights.npz", "generator.json",
    ]
    pd.testing.assert_frame_equal(loaded.sample(60, random_state=9), fitted.sample(60, random_state=9))


def test_missing_rates_are_reproduced_on_a_toy(schema: TableSchema) -> None:
    # Setup: HB (numeric, not in the conditional vector) 30% missing, WHO (conditional) 15% missing
    data = _frame(400, 4, hb_missing=0.3, who_missing=0.15)
    gen = CTGANGenerator(schema, **{**FAST, "n_modes": 3})

    # Run
    sample = gen.fit(data).sample(2000, random_state=0)

    # Assert: within 2 points of the training data (the domain's pooled rate); complete columns stay complete
    for col in ("HB", "WHO"):
        assert abs(sample[col].isna().mean() - data[col].isna().mean()) < 0.02, col
    assert sample[["AGE", "SEX", "G1", "OS_YEARS"]].notna().all().all()


def test_invalid_parameters_are_all_listed(schema: TableSchema) -> None:
    # Setup
    gen = CTGANGenerator(schema, epochs=0, batch_size=15, pac=4, generator_lr=-1.0, conditional_columns="some",
                         generator_dim=())

    # Run
    with pytest.raises(ValidationError) as err:
        gen.fit(_frame(50, 1))

    # Assert
    msg = str(err.value)
    assert msg.startswith("CTGANGenerator hyperparameters has 6 problems:")
    assert "The 'epochs' parameter of CTGANGenerator must be an int in the range [1, inf). Got 0 instead." in msg
    assert "The 'batch_size' parameter of CTGANGenerator must be an even int. Got 15 instead." in msg
    assert "The 'batch_size' parameter of CTGANGenerator must be a multiple of pac (4). Got 15 instead." in msg
    assert "The 'generator_lr' parameter of CTGANGenerator must be a float in the range (0, inf). Got -1.0" in msg
    assert "The 'conditional_columns' parameter of CTGANGenerator must be a str among" in msg
    assert "The 'generator_dim' parameter of CTGANGenerator must be a non-empty list of ints" in msg


def test_site_lacking_a_column_trains_and_outputs_every_column(schema: TableSchema, domain: Domain) -> None:
    # Setup: a worst-case site without HB and WHO (one numeric, one conditional categorical)
    site = _frame(80, 3).drop(columns=["HB", "WHO"])
    gen = CTGANGenerator(schema, domain=domain, **FAST)
    reference = CTGANGenerator(schema, domain=domain, **FAST).partial_fit(_frame(80, 3), epochs=1)

    # Run
    gen.partial_fit(site, epochs=1)
    sample = gen.sample(30, random_state=0)

    # Assert: full layout, same keys and shapes as a complete site, and every column sampled
    weights, ref = gen.get_weights(), reference.get_weights()
    assert list(weights) == list(ref) and all(weights[k].shape == ref[k].shape for k in ref)
    assert list(sample.columns) == schema.data_columns
    assert sample["WHO"].dropna().isin(["A", "B", "C"]).all()
    assert sample["HB"].notna().any()


def test_site_lacking_every_conditional_column_still_trains(schema: TableSchema, domain: Domain) -> None:
    # Setup: "auto" conditions on WHO and OS_STATUS; this site holds neither
    site = _frame(60, 5).drop(columns=["WHO", "OS_STATUS"])
    gen = CTGANGenerator(schema, domain=domain, **FAST)

    # Run
    gen.partial_fit(site, epochs=1)
    sample = gen.sample(20, random_state=0)

    # Assert
    assert gen.cond_dim_ > 0
    assert list(sample.columns) == schema.data_columns
    assert set(sample["OS_STATUS"].dropna()) <= {0.0, 1.0}
