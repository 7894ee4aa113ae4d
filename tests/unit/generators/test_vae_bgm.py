"""Unit tests of the VAE-BGM generator: contract, weights, federated latent mixture, persistence, worst case."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsynth.cohort.schema import ColumnKind, ColumnRole, ColumnSpec, SurvivalEndpoint, TableSchema
from fedsynth.encoding.domain import Domain
from fedsynth.errors import ValidationError
from fedsynth.generators import SupportsWeights, load_generator, make_generator
from fedsynth.generators.latent_mixture import (
    fit_latent_mixture_federated,
    init_latent_mixture,
    mixture_e_step_statistics,
    mixture_init_statistics,
    mixture_log_likelihood,
    mixture_m_step,
)
from fedsynth.generators.vae_bgm import VAEBGMGenerator

TINY = {"epochs": 3, "batch_size": 64, "latent_dim": 4, "hidden_dims": (16,), "n_components": 3, "device": "cpu"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _schema() -> TableSchema:
    cols = (
        ColumnSpec("AGE", ColumnKind.INTEGER, lower=18, upper=95),
        ColumnSpec("HB", ColumnKind.CONTINUOUS),
        ColumnSpec("SEX", ColumnKind.CATEGORICAL, categories=("F", "M")),
        ColumnSpec("RISK", ColumnKind.CATEGORICAL, categories=("low", "mid", "high")),
        ColumnSpec("TP53", ColumnKind.BINARY, ColumnRole.GENOMIC),
        ColumnSpec("SF3B1", ColumnKind.BINARY, ColumnRole.GENOMIC),
        ColumnSpec("OS_YEARS", ColumnKind.CONTINUOUS, ColumnRole.OUTCOME),
        ColumnSpec("OS_STATUS", ColumnKind.BINARY, ColumnRole.OUTCOME),
    )
    return TableSchema(cols, (SurvivalEndpoint("OS", "OS_YEARS", "OS_STATUS"),), "tiny")


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tp53 = (rng.random(n) < 0.2).astype(float)
    hb = rng.normal(10, 1.5, n) - tp53
    hb[rng.random(n) < 0.25] = np.nan
    os_years = rng.exponential(3.0, n) / (1 + 2 * tp53) + 0.01
    status = (rng.random(n) < 0.6).astype(float)
    miss_os = rng.random(n) < 0.1
    os_years[miss_os] = np.nan
    status[miss_os] = np.nan
    risk = np.where(tp53 == 1, "high", rng.choice(["low", "mid"], n)).astype(object)
    return pd.DataFrame(
        {
            "AGE": rng.integers(30, 90, n).astype(float),
            "HB": hb,
            "SEX": rng.choice(["F", "M"], n).astype(object),
            "RISK": risk,
            "TP53": tp53,
            "SF3B1": (rng.random(n) < 0.3).astype(float),
            "OS_YEARS": os_years,
            "OS_STATUS": status,
        }
    )


def _fitted(n: int = 200, seed: int = 0, **params: object) -> VAEBGMGenerator:
    return VAEBGMGenerator(_schema(), **{**TINY, **params}).fit(_frame(n, seed))


def test_fit_returns_self_and_sample_has_rows_columns_and_dtypes() -> None:
    # Setup
    schema = _schema()
    gen = VAEBGMGenerator(schema, **TINY)

    # Run
    fitted = gen.fit(_frame(200, 0))
    out = fitted.sample(57, random_state=3)

    # Assert
    assert fitted is gen
    assert isinstance(gen, SupportsWeights)
    assert len(out) == 57
    assert list(out.columns) == schema.data_columns
    assert all(out[c].dtype == np.float64 for c in ("AGE", "HB", "TP53", "OS_YEARS", "OS_STATUS"))
    assert out["SEX"].dtype == object and set(out["SEX"].dropna()) <= {"F", "M"}
    assert set(out["TP53"].dropna()) <= {0.0, 1.0}
    assert (out["OS_YEARS"].dropna() > 0).all()
    assert ((out["AGE"].dropna() % 1) == 0).all()


def test_registry_builds_the_generator_and_get_params_rebuilds_it() -> None:
    # Setup
    gen = make_generator("vae_bgm", _schema(), **TINY)

    # Run
    clone = VAEBGMGenerator(_schema(), **gen.get_params())

    # Assert
    assert isinstance(gen, VAEBGMGenerator)
    assert clone.get_params() == gen.get_params()
    assert clone.get_params()["hidden_dims"] == [16]


def test_same_seed_gives_same_rows_and_another_seed_differs() -> None:
    # Setup
    gen = _fitted()

    # Run
    a = gen.sample(80, random_state=11)
    b = gen.sample(80, random_state=11)
    c = gen.sample(80, random_state=12)

    # Assert
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_same_random_state_gives_the_same_fitted_model() -> None:
    # Setup / Run
    a = _fitted(random_state=5).sample(50, random_state=0)
    b = _fitted(random_state=5).sample(50, random_state=0)

    # Assert
    pd.testing.assert_frame_equal(a, b)


def test_partial_fit_continues_training_without_reinitialising() -> None:
    # Setup: two passes of 2 + 1 epochs must equal one pass of 3 epochs (same weights, optimiser, batch order).
    data = _frame(150, 1)
    domain = Domain.from_data(data, _schema(), n_bins=20)
    split = VAEBGMGenerator(_schema(), domain=domain, **TINY)
    whole = VAEBGMGenerator(_schema(), domain=domain, **TINY)
    initial = split.get_weights()

    # Run
    split.partial_fit(data, epochs=2)
    after_two = split.get_weights()
    split.partial_fit(data, epochs=1)
    whole.partial_fit(data, epochs=3)

    # Assert
    assert split.epochs_trained_ == 3
    assert any(not np.array_equal(initial[k], after_two[k]) for k in initial)
    for k, v in whole.get_weights().items():
        np.testing.assert_allclose(split.get_weights()[k], v, rtol=0, atol=1e-6)
    assert split.sample(20, random_state=0).shape[0] == 20  # samples from the prior until a mixture is set


def test_weights_from_two_sites_with_the_same_domain_have_identical_keys_and_shapes() -> None:
    # Setup
    pooled = _frame(300, 2)
    domain = Domain.from_data(pooled, _schema(), n_bins=20)
    site_a = VAEBGMGenerator(_schema(), domain=domain, **TINY)
    site_b = VAEBGMGenerator(_schema(), domain=domain, **TINY)

    # Run
    site_a.partial_fit(pooled.iloc[:200], epochs=1)
    site_b.partial_fit(pooled.iloc[200:].drop(columns=["HB"]), epochs=1)  # a worst-case site
    wa, wb = site_a.get_weights(), site_b.get_weights()

    # Assert
    assert list(wa) == list(wb)
    assert all(wa[k].shape == wb[k].shape and wa[k].dtype == np.float32 for k in wa)
    assert any(not np.array_equal(wa[k], wb[k]) for k in wa)


def test_set_weights_round_trip_and_mismatch_lists_every_problem() -> None:
    # Setup
    source = _fitted(seed=3)
    target = VAEBGMGenerator(_schema(), domain=source.domain, **{**TINY, "random_state": 9})
    weights = source.get_weights()

    # Run
    target.set_weights(weights)
    bad = dict(weights)
    first = next(iter(bad))
    del bad[first]
    bad["unknown.weight"] = np.zeros(3, np.float32)
    bad["dec_out.bias"] = np.zeros(1, np.float32)
    with pytest.raises(ValidationError) as err:
        target.set_weights(bad)

    # Assert
    for k, v in target.get_weights().items():
        np.testing.assert_array_equal(v, weights[k])
    msg = str(err.value)
    assert "3 problems" in msg
    assert first in msg and "unknown.weight" in msg and "dec_out.bias" in msg


def test_federated_em_over_three_sites_equals_pooled_em_from_the_same_init() -> None:
    # Setup: latent-like codes from three clusters, split unevenly over three sites.
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 1.0], [0.0, 5.0, -2.0]])
    codes = np.concatenate(
        [c + rng.normal(size=(n, 3)) * s for c, n, s in zip(centres, (300, 200, 100), (1.0, 0.5, 0.8))]
    )
    codes = codes[rng.permutation(len(codes))]
    sites = [codes[:360], codes[360:540], codes[540:]]
    init_sites = init_latent_mixture([mixture_init_statistics(s) for s in sites], n_components=6, random_state=1)
    init_pooled = init_latent_mixture([mixture_init_statistics(codes)], n_components=6, random_state=1)

    # Run
    fed, fed_iter, _ = fit_latent_mixture_federated(
        lambda p: [mixture_e_step_statistics(s, p) for s in sites], init_sites, max_iter=300
    )
    pooled, pooled_iter, converged = fit_latent_mixture_federated(
        lambda p: [mixture_e_step_statistics(codes, p)], init_pooled, max_iter=300
    )
    from sklearn.mixture import BayesianGaussianMixture

    sk = BayesianGaussianMixture(
        n_components=6, weight_concentration_prior_type="dirichlet_process", max_iter=300, random_state=0
    ).fit(codes)

    # Assert
    assert converged and fed_iter == pooled_iter
    for k in init_pooled:
        np.testing.assert_allclose(init_sites[k], init_pooled[k], rtol=0, atol=1e-8)
    for k in ("weights", "means", "covariances", "weight_concentration_a", "mean_precision", "degrees_of_freedom"):
        np.testing.assert_allclose(fed[k], pooled[k], rtol=0, atol=1e-8)
    assert abs(mixture_log_likelihood(codes, fed) - sk.score(codes)) < 0.05


def test_generator_mixture_statistics_api_matches_pooled_codes_and_installs_the_mixture() -> None:
    # Setup
    gen = _fitted(n=240, seed=4)
    data = _frame(240, 4)
    sites = [data.iloc[:150], data.iloc[150:210], data.iloc[210:]]

    # Run
    init = init_latent_mixture([gen.init_mixture_statistics(s) for s in sites], n_components=3, random_state=0)
    params = init
    for _ in range(5):
        params = mixture_m_step([gen.mixture_e_step_statistics(s, params) for s in sites], params)
    pooled = init_latent_mixture([mixture_init_statistics(gen.latent_codes(data))], n_components=3, random_state=0)
    for _ in range(5):
        pooled = mixture_m_step([mixture_e_step_statistics(gen.latent_codes(data), pooled)], pooled)
    gen.set_latent_mixture(params)

    # Assert
    np.testing.assert_allclose(params["means"], pooled["means"], rtol=0, atol=1e-8)
    np.testing.assert_array_equal(gen.get_latent_mixture()["weights"], params["weights"])
    assert "weights" not in gen.get_weights()
    assert len(gen.sample(30, random_state=0)) == 30
    with pytest.raises(ValidationError, match="means"):
        gen.set_latent_mixture({**params, "means": np.zeros((3, 7))})


def test_save_load_round_trip_gives_identical_samples(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Setup
    gen = _fitted(seed=5)

    # Run
    gen.save(tmp_path / "model")
    loaded = load_generator(tmp_path / "model")

    # Assert
    assert isinstance(loaded, VAEBGMGenerator)
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "generator.json",
        "vae_bgm.json",
        "vae_weights.npz",
    ]
    pd.testing.assert_frame_equal(gen.sample(60, random_state=7), loaded.sample(60, random_state=7))


def test_missing_rates_are_reproduced_roughly() -> None:
    # Setup
    data = _frame(400, 6)
    gen = VAEBGMGenerator(_schema(), **{**TINY, "epochs": 60, "lr": 3e-3})

    # Run
    out = gen.fit(data).sample(2000, random_state=0)

    # Assert
    for col in ("HB", "OS_YEARS", "OS_STATUS"):
        assert abs(out[col].isna().mean() - data[col].isna().mean()) < 0.06, col
    assert out["AGE"].isna().mean() == 0.0  # never missing in the data: no indicator, never missing out


def test_invalid_parameters_are_all_listed_in_sklearn_wording() -> None:
    # Setup
    gen = VAEBGMGenerator(
        _schema(), epochs=0, lr=-1.0, hidden_dims=(), sampling="best", device="tpu", column_dropout=1.5
    )

    # Run
    with pytest.raises(ValidationError) as err:
        gen.fit(_frame(50, 0))

    # Assert
    msg = str(err.value)
    assert "6 problems" in msg
    assert "The 'epochs' parameter of VAEBGMGenerator must be an int in the range [1, inf). Got 0 instead." in msg
    assert "The 'lr' parameter of VAEBGMGenerator must be a float in the range (0, inf). Got -1.0 instead." in msg
    assert "'hidden_dims' parameter" in msg and "'sampling' parameter" in msg and "'device' parameter" in msg
    assert "The 'column_dropout' parameter of VAEBGMGenerator must be a float in the range [0, 1)" in msg


def test_worst_case_site_lacking_a_column_gives_no_gradient_for_it_and_still_outputs_it() -> None:
    # Setup
    pooled = _frame(300, 7)
    domain = Domain.from_data(pooled, _schema(), n_bins=20)
    gen = VAEBGMGenerator(_schema(), domain=domain, **{**TINY, "weight_decay": 0.0})
    before = gen.get_weights()
    hb = next(c for c in gen.layout_.columns if c.name == "HB")
    # Output rows of the decoder that belong to HB: its mean and its missing indicator.
    lay = gen.layout_
    miss_row = lay.n_numeric + lay.n_binary + lay.n_cat_total + hb.missing_index

    # Run
    gen.fit(pooled.drop(columns=["HB"]))
    after = gen.get_weights()
    out = gen.sample(100, random_state=0)

    # Assert
    for row in (hb.index, miss_row):
        np.testing.assert_array_equal(after["dec_out.weight"][row], before["dec_out.weight"][row])
        assert after["dec_out.bias"][row] == before["dec_out.bias"][row]
    assert after["numeric_log_sigma"][hb.index] == before["numeric_log_sigma"][hb.index]
    assert not np.array_equal(after["dec_out.weight"], before["dec_out.weight"])
    assert "HB" in out.columns and out["HB"].notna().any()


def test_column_dropout_trains_deterministically_and_still_samples_every_column() -> None:
    # Setup
    data = _frame(150, 8)

    # Run
    a = _fitted(n=150, seed=8, column_dropout=0.3).sample(40, random_state=2)
    b = _fitted(n=150, seed=8, column_dropout=0.3).sample(40, random_state=2)
    plain = _fitted(n=150, seed=8).sample(40, random_state=2)

    # Assert
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(plain)
    assert list(a.columns) == list(data.columns)


# -- training-by-sampling (rare_level_sampling) ---------------------------------------------------------------


def _encoded_with_levels():  # type: ignore[no-untyped-def]
    """An encoded table of 100 rows: a categorical column with levels held by 1, 9 and 90 rows (the last row
    missing instead), a binary column missing at a site that lacks it for 50 rows, and a one-level column."""
    from fedsynth.generators.vae_layout import Encoded

    n = 100
    cat = np.full((n, 2), 0, dtype=np.int64)
    cat[:1, 0], cat[1:10, 0], cat[10:99, 0], cat[99, 0] = 0, 1, 2, -1
    binary = np.zeros((n, 1), np.float32)
    binary[:20, 0] = 1.0
    mask = np.ones((n, 1), np.float32)
    mask[50:, 0] = 0.0  # a site without the column: no level
    z = np.zeros((n, 0), np.float32)
    return Encoded(np.zeros((n, 3), np.float32), z, z, binary, mask, cat, z, z)


def test_level_rows_weighs_each_level_by_its_log_count_and_skips_missing_and_one_level_columns() -> None:
    from fedsynth.generators.vae_layout import level_rows

    levels = level_rows(_encoded_with_levels())
    # Assert: the one-level categorical column is skipped; the first has counts 1, 9, 89 (row 99 missing); the
    # binary column counts 20 ones and 30 zeros among the 50 rows that hold it
    assert len(levels) == 2
    (w_cat, rows_cat), (w_bin, rows_bin) = levels
    np.testing.assert_allclose(w_cat, np.log1p([1, 9, 89]) / np.log1p([1, 9, 89]).sum())
    assert [len(r) for r in rows_cat] == [1, 9, 89] and 99 not in np.concatenate(rows_cat)
    np.testing.assert_allclose(w_bin, np.log1p([30, 20]) / np.log1p([30, 20]).sum())
    assert set(np.concatenate(rows_bin)) == set(range(50))


def test_sample_by_level_draws_a_rare_level_at_its_log_count_share() -> None:
    # Setup: 20,000 draws over the two columns of _encoded_with_levels
    from fedsynth.generators.vae_layout import level_rows, sample_by_level

    levels = level_rows(_encoded_with_levels())
    # Run
    rows = sample_by_level(levels, 20_000, np.random.default_rng(0))
    # Assert: row 0 is the categorical level held once (column picked half the time, level by its log weight) and
    # one of the binary column's 20 ones: P = 0.5 * log 2 / (log 2 + log 10 + log 90)
    # + 0.5 * log 21 / (log 31 + log 21) / 20 = 0.0462 + 0.0118 = 0.058, against 0.01 for uniform rows; 99.9% bound
    p = 0.5 * np.log(2) / np.log1p([1, 9, 89]).sum() + 0.5 * np.log(21) / np.log1p([30, 20]).sum() / 20
    share = float(np.mean(rows == 0))
    assert abs(share - p) < 3.3 * np.sqrt(p * (1 - p) / len(rows))
    assert share > 0.03
    # ... and row 99 (missing in the categorical column, and past the 50 rows that hold the binary one) never
    assert rows.min() >= 0 and rows.max() < 100 and not np.any(rows == 99)


def test_rare_level_sampling_trains_reproducibly_and_differently_from_plain_epochs() -> None:
    # Setup / Run: the same seed twice with training-by-sampling, once without
    a = _fitted(rare_level_sampling=True)
    b = _fitted(rare_level_sampling=True)
    plain = _fitted()
    # Assert
    wa, wb, wp = a.get_weights(), b.get_weights(), plain.get_weights()
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert any(not np.array_equal(wa[k], wp[k]) for k in wa)
    assert len(a.sample(50, random_state=1)) == 50
