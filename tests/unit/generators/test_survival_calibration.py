"""Survival calibration within strata: hand-computed piecewise-exponential medians and factors, endpoint rules kept,
strata from roles (never names), the sites' smallest released count, site sums equal to the pooled counts, and the
VAE-BGM hook (fit, sample, save/load)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from fedsynth.cohort.constraints import TimeOrder, candidate_rules, rule_holds, violation_counts
from fedsynth.cohort.schema import ColumnKind, ColumnRole, ColumnSpec, StratumSpec, SurvivalEndpoint, TableSchema
from fedsynth.encoding.domain import Domain
from fedsynth.generators.base import ConditionError
from fedsynth.generators.survival_calibration import (
    CalibrationStratum,
    SurvivalCalibration,
    calibration_strata,
    cap_time_order,
    endpoint_edges,
    fit_survival_calibration,
    follow_up_horizon,
    hazard_ratios,
    level_log_hazard_ratios,
    pooled_hazard,
    pwe_medians,
    pwe_rmst,
    stratum_codes,
    sum_survival_counts,
    survival_counts,
)
from fedsynth.generators.survival_strata import exposure

OS = SurvivalEndpoint("OS", "OS_YEARS", "OS_STATUS")
LFS = SurvivalEndpoint("LFS", "LFS_YEARS", "LFS_STATUS")


def _schema(names: dict[str, str] | None = None) -> TableSchema:
    n = {"GROUP": "GROUP", "GENE": "GENE", "RARE": "RARE", "AGE": "AGE", **(names or {})}
    cols = (
        ColumnSpec(n["AGE"], ColumnKind.INTEGER),
        ColumnSpec(n["GROUP"], ColumnKind.CATEGORICAL, categories=("a", "b")),
        ColumnSpec(n["GENE"], ColumnKind.BINARY, ColumnRole.GENOMIC),
        ColumnSpec(n["RARE"], ColumnKind.BINARY, ColumnRole.GENOMIC),
        ColumnSpec("OS_YEARS", ColumnKind.CONTINUOUS, ColumnRole.OUTCOME),
        ColumnSpec("OS_STATUS", ColumnKind.BINARY, ColumnRole.OUTCOME),
        ColumnSpec("LFS_YEARS", ColumnKind.CONTINUOUS, ColumnRole.OUTCOME),
        ColumnSpec("LFS_STATUS", ColumnKind.BINARY, ColumnRole.OUTCOME),
    )
    return TableSchema(cols, (OS, LFS), "tiny")


def _frame(n: int, seed: int, names: dict[str, str] | None = None) -> pd.DataFrame:
    n_ = {"GROUP": "GROUP", "GENE": "GENE", "RARE": "RARE", "AGE": "AGE", **(names or {})}
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b"], n)
    gene = (rng.random(n) < 0.3).astype(float)
    rare = (rng.random(n) < 0.02).astype(float)
    os_t = rng.exponential(np.where(group == "a", 4.0, 1.5) * np.where(gene == 1, 0.6, 1.0)) + 0.01
    lfs_t = os_t * np.where(rng.random(n) < 0.7, 1.0, rng.random(n))  # LFS <= OS in every row
    os_e = (rng.random(n) < 0.7).astype(float)
    lfs_e = np.maximum(os_e, (lfs_t < os_t).astype(float))  # an OS death is an LFS event
    return pd.DataFrame({n_["AGE"]: rng.integers(40, 90, n).astype(float), n_["GROUP"]: group, n_["GENE"]: gene,
                         n_["RARE"]: rare, "OS_YEARS": os_t, "OS_STATUS": os_e, "LFS_YEARS": lfs_t,
                         "LFS_STATUS": lfs_e})


def _one_stratum(
    real: pd.DataFrame, column: str, n_bins: int, schema: TableSchema | None = None
) -> tuple[TableSchema, Domain, list[CalibrationStratum], dict[str, np.ndarray]]:
    """The schema (``_schema()`` unless given), the domain of ``real`` with ``n_bins`` bins, the calibration stratum of
    ``column`` alone and its real survival counts."""
    schema = _schema() if schema is None else schema
    domain = Domain.from_data(real, schema, n_bins=n_bins)
    strata = [st for st in calibration_strata(schema, domain) if st.column == column]
    return schema, domain, strata, survival_counts(real, schema, strata, endpoint_edges(schema, domain))


def _group_shrunk(
    real: pd.DataFrame, n_bins: int
) -> tuple[TableSchema, Domain, list[CalibrationStratum], dict[str, np.ndarray], np.ndarray, pd.DataFrame]:
    """The GROUP stratum's real counts, and synthetic rows that are the real rows with every time of GROUP a halved
    and of b divided by 3 (so the hand-computed factors are 2 and 3): schema, domain, strata, counts, the factors
    per row and the synthetic rows."""
    schema, domain, strata, counts = _one_stratum(real, "GROUP", n_bins)
    shrink = np.where(real["GROUP"] == "a", 2.0, 3.0)
    synthetic = real.assign(OS_YEARS=real["OS_YEARS"] / shrink, LFS_YEARS=real["LFS_YEARS"] / shrink)
    return schema, domain, strata, counts, shrink, synthetic


def test_pwe_median_matches_a_hand_computation_and_the_exponential_median() -> None:
    # Setup: hazards 1/2 and 1/2 on [0, 1) and [1, 3); cumulative hazard 0.5 at t = 1
    # Run / Assert: ln 2 is reached at 1 + (ln 2 - 0.5) / 0.5
    got = pwe_medians(np.array([[1.0, 2.0]]), np.array([[2.0, 4.0]]), np.array([0.0, 1.0, 3.0]))
    assert got[0] == pytest.approx(1.0 + (math.log(2) - 0.5) / 0.5)
    # one interval: the exponential median ln 2 * T / d; never reached within the last edge -> NaN
    got = pwe_medians(np.array([[4.0], [1.0]]), np.array([[10.0], [1.0]]), np.array([0.0, 100.0]))
    assert got[0] == pytest.approx(math.log(2) * 10.0 / 4.0)
    got = pwe_medians(np.array([[1.0]]), np.array([[100.0]]), np.array([0.0, 10.0]))
    assert np.isnan(got[0])


def test_events_and_person_time_per_level_match_a_hand_count() -> None:
    # Setup: GROUP a has times 0.5 (event) and 2.5 (censored); b has 1.5 (event); edges 0, 1, 2, 3
    schema = _schema()
    data = pd.DataFrame({"AGE": [50.0, 60.0, 70.0], "GROUP": ["a", "a", "b"], "GENE": [0.0, 0.0, 1.0],
                         "RARE": [0.0, 0.0, 0.0], "OS_YEARS": [0.5, 2.5, 1.5], "OS_STATUS": [1.0, 0.0, 1.0],
                         "LFS_YEARS": [0.5, 2.5, 1.5], "LFS_STATUS": [1.0, 0.0, 1.0]})
    strata = calibration_strata(schema, Domain.from_data(_frame(200, 0), schema))
    edges = {"OS": np.array([0.0, 1.0, 2.0, 3.0]), "LFS": np.array([0.0, 1.0, 2.0, 3.0])}
    # Run
    got = survival_counts(data, schema, strata, edges)
    # Assert: events a = (1, 0, 0), b = (0, 1, 0); person-time a = (0.5 + 1, 1, 0.5), b = (1, 0.5, 0)
    np.testing.assert_allclose(got["n|GROUP"], [2.0, 1.0])
    np.testing.assert_allclose(got["d|OS|GROUP"], [[1, 0, 0], [0, 1, 0]])
    np.testing.assert_allclose(got["t|OS|GROUP"], [[1.5, 1.0, 0.5], [1.0, 0.5, 0.0]])


def test_calibration_finds_the_hand_computed_factor_of_each_level() -> None:
    # Setup: the synthetic rows are the real rows with every time of GROUP a halved and of b divided by 3
    real = _frame(3000, 1)
    schema, domain, strata, counts, shrink, synthetic = _group_shrunk(real, 20)
    # Run
    cal = fit_survival_calibration(synthetic, counts, schema, domain, strata, tol=1e-6, max_sweeps=200)
    # Assert: the row factors are 2 (GROUP a) and 3 (GROUP b): the rescaled rows are the real ones
    factors = np.exp(cal.row_log_factors(synthetic))
    np.testing.assert_allclose(factors, shrink, rtol=1e-3)
    back = cal.apply(synthetic, schema, domain)
    np.testing.assert_allclose(back["OS_YEARS"], real["OS_YEARS"], rtol=1e-3)


def test_endpoint_order_rules_hold_after_calibration_even_at_the_domain_bounds() -> None:
    # Setup: real rows with LFS <= OS and an OS death implying an LFS event; synthetic rows meeting the rules
    real = _frame(2000, 2)
    schema = _schema()
    schema = schema.with_rules([r for r in candidate_rules(schema) if rule_holds(real, r)])
    assert len(schema.constraints) == 2
    domain = Domain.from_data(real, schema, n_bins=10)
    strata = calibration_strata(schema, domain)
    counts = survival_counts(real, schema, strata, endpoint_edges(schema, domain))
    synthetic = _frame(4000, 3)
    synthetic["OS_YEARS"] *= np.where(synthetic["GROUP"] == "a", 0.2, 5.0)  # far off: factors reach the bounds
    synthetic["LFS_YEARS"] *= np.where(synthetic["GROUP"] == "a", 0.2, 5.0)
    # Run
    cal = fit_survival_calibration(synthetic, counts, schema, domain, strata)
    out = cal.apply(synthetic, schema, domain)
    # Assert: no rule broken; the rank order of OS kept among rows of the same levels (one factor per cell)
    assert all(v["violations"] == 0 for v in violation_counts(out, schema.constraints))
    for level, gene in [("a", 0.0), ("a", 1.0), ("b", 0.0), ("b", 1.0)]:
        m = ((synthetic["GROUP"] == level) & (synthetic["GENE"] == gene)).to_numpy()
        before, after = synthetic.loc[m, "OS_YEARS"].to_numpy(), out.loc[m, "OS_YEARS"].to_numpy()
        order = np.argsort(before, kind="stable")
        assert np.all(np.diff(after[order]) >= -1e-12)


def test_strata_come_from_roles_and_declared_strata_never_from_column_names() -> None:
    # Setup: the same table under other names, and names of the MDS cohort on columns of other roles
    plain = _schema()
    renamed = _schema({"GROUP": "XQ1", "GENE": "ZZ9", "RARE": "QQ2", "AGE": "WW"})
    misleading = TableSchema((ColumnSpec("TP53", ColumnKind.CONTINUOUS), ColumnSpec("IPSSR", ColumnKind.INTEGER),
                              ColumnSpec("OS_YEARS", ColumnKind.CONTINUOUS, ColumnRole.OUTCOME),
                              ColumnSpec("OS_STATUS", ColumnKind.BINARY, ColumnRole.OUTCOME)), (OS,), "names")
    # Run
    a = calibration_strata(plain, Domain.from_data(_frame(300, 4), plain))
    b = calibration_strata(renamed, Domain.from_data(_frame(300, 4, {"GROUP": "XQ1", "GENE": "ZZ9", "RARE": "QQ2",
                                                                      "AGE": "WW"}), renamed))
    frame = pd.DataFrame({"TP53": np.linspace(0, 1, 50), "IPSSR": np.arange(50.0), "OS_YEARS": np.linspace(1, 5, 50),
                          "OS_STATUS": np.ones(50)})
    c = calibration_strata(misleading, Domain.from_data(frame, misleading))
    # Assert: same strata by position; a numeric column is a stratum only when declared with cut points
    assert [(s.column, s.labels, s.genomic) for s in a] == [
        ("GROUP", ("a", "b"), False), ("GENE", ("0", "1"), True), ("RARE", ("0", "1"), True)]
    assert [(s.labels, s.genomic) for s in a] == [(s.labels, s.genomic) for s in b]
    assert c == []
    declared = TableSchema(plain.columns, plain.endpoints, "tiny", strata=(StratumSpec("AGE", (60.0, 70.0)),))
    d = calibration_strata(declared, Domain.from_data(_frame(300, 4), declared))
    assert d[0].column == "AGE" and d[0].bins == (60.0, 70.0) and len(d[0].labels) == 3


def test_rare_genes_and_levels_under_the_smallest_released_count_get_no_factor() -> None:
    # Setup: RARE is mutated in about 2% of rows (< 5%: not a stratum); GENE level 1 is held by 3 rows at one site
    schema = _schema()
    real = _frame(1500, 5)
    domain = Domain.from_data(real, schema, n_bins=10)
    strata = calibration_strata(schema, domain)
    edges = endpoint_edges(schema, domain)
    site = real.iloc[:40].copy()
    site["GENE"] = 0.0
    site.iloc[:3, site.columns.get_loc("GENE")] = 1.0
    # Run: in clear with k = 5 the site withholds GENE = 1 (3 rows) but releases GENE = 0 (37 rows)
    released = survival_counts(site, schema, strata, edges, min_count=5)
    # Assert
    np.testing.assert_allclose(released["n|GENE"], [37.0, 0.0])
    assert np.all(released["d|OS|GENE"][1] == 0) and np.all(released["t|OS|GENE"][1] == 0)
    # a level with fewer rows in the sum than k (here k = 50 > GENE=1's rows) gets no factor
    counts = survival_counts(real, schema, strata, edges)
    n_mut = counts["n|GENE"][1]
    synthetic = real.assign(OS_YEARS=real["OS_YEARS"] * 0.5, LFS_YEARS=real["LFS_YEARS"] * 0.5)
    cal = fit_survival_calibration(synthetic, counts, schema, domain, strata, min_count=int(n_mut) + 1)
    assert [s.column for s in cal.strata] == ["GROUP", "GENE"]  # RARE dropped by its mutation share
    assert cal.log_factors["GENE"][1] == 0.0  # no factor of its own; the shared part (x2) is the intercept's
    np.testing.assert_allclose(np.exp(cal.row_log_factors(synthetic)), 2.0, rtol=0.05)


def test_a_level_under_the_smallest_share_gets_no_factor() -> None:
    # Setup: GENE = 1 holds about 30% of the rows; its times are halved in the synthetic rows, GENE = 0's kept
    real = _frame(3000, 7)
    schema, domain, strata, counts = _one_stratum(real, "GENE", 20)
    share = counts["n|GENE"][1] / counts["n|GENE"].sum()
    shrink = np.where(real["GENE"] == 1, 2.0, 1.0)
    synthetic = real.assign(OS_YEARS=real["OS_YEARS"] / shrink, LFS_YEARS=real["LFS_YEARS"] / shrink)
    # Run: the share just above and just below GENE = 1's
    above = fit_survival_calibration(synthetic, counts, schema, domain, strata, min_share=share + 0.01)
    below = fit_survival_calibration(synthetic, counts, schema, domain, strata, min_share=share - 0.01,
                                     tol=1e-6, max_sweeps=200)
    # Assert: above its share GENE = 1 has no factor (every row keeps its time); below, its factor 2 is found
    mut = (real["GENE"] == 1).to_numpy()
    np.testing.assert_allclose(np.exp(above.row_log_factors(synthetic)), 1.0, atol=1e-9)
    np.testing.assert_allclose(np.exp(below.row_log_factors(synthetic))[mut], 2.0, rtol=1e-2)
    np.testing.assert_allclose(np.exp(below.row_log_factors(synthetic))[~mut], 1.0, rtol=1e-2)


def test_site_counts_sum_to_the_pooled_counts() -> None:
    # Setup: three sites of one table
    schema = _schema()
    real = _frame(900, 6)
    domain = Domain.from_data(real, schema, n_bins=10)
    strata, edges = calibration_strata(schema, domain), endpoint_edges(schema, domain)
    # Run
    parts = [survival_counts(real.iloc[i::3], schema, strata, edges) for i in range(3)]
    pooled = survival_counts(real, schema, strata, edges)
    summed = sum_survival_counts(parts)
    # Assert
    assert summed.keys() == pooled.keys()
    for k in pooled:
        np.testing.assert_allclose(summed[k], pooled[k], atol=1e-9)


def test_calibration_round_trips_through_a_dict() -> None:
    schema = _schema()
    real = _frame(1000, 7)
    domain = Domain.from_data(real, schema, n_bins=10)
    strata = calibration_strata(schema, domain)
    cal = fit_survival_calibration(real.assign(OS_YEARS=real["OS_YEARS"] * 0.7), survival_counts(
        real, schema, strata, endpoint_edges(schema, domain)), schema, domain, strata)
    back = SurvivalCalibration.from_dict(cal.to_dict())
    np.testing.assert_allclose(back.row_log_factors(real), cal.row_log_factors(real))


def _fedavg(secure: bool) -> tuple[object, list[object]]:
    from fedsynth.strategies.in_process import InProcessGrid
    from fedsynth.strategies.registry import make_strategy
    from fedsynth.strategies.site import SiteRuntime

    schema = _schema()
    real = _frame(600, 8)
    sites = [SiteRuntime(f"site-{i + 1}", schema.coerce(real.iloc[a:b].reset_index(drop=True)), schema, seed=i)
             for i, (a, b) in enumerate([(0, 300), (300, 480), (480, 600)])]
    strategy = make_strategy("fedavg", schema, generator="vae_bgm", rounds=1, local_epochs=2, min_sites=2,
                             random_state=0, params={"secure_aggregation": secure},
                             generator_params={"batch_size": 64, "latent_dim": 2, "hidden_dims": [16],
                                               "n_components": 2, "device": "cpu"})
    return strategy.start(InProcessGrid(sites)).generator, sites


def test_fedavg_sums_the_sites_counts_and_vae_bgm_samples_calibrated_durations(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fedsynth.generators import load_generator

    # Setup / Run: FedAvg of a tiny VAE-BGM over three sites, in clear (default policy, k = 5) and securely
    gen, sites = _fedavg(secure=False)
    secure_gen, _ = _fedavg(secure=True)
    # Assert: the server holds the sum of what each site releases (in clear with k = 5; securely the plain sums, on
    # that run's own secure domain)
    for g, k in ((gen, 5), (secure_gen, 1)):
        strata = calibration_strata(g.schema, g.domain)  # type: ignore[attr-defined]
        edges = endpoint_edges(g.schema, g.domain)  # type: ignore[attr-defined]
        expected = sum_survival_counts([survival_counts(s.data, g.schema, strata, edges, min_count=k)  # type: ignore[attr-defined]
                                        for s in sites])
        got = g.survival_counts_  # type: ignore[attr-defined]
        assert got.keys() == expected.keys()
        for key in expected:
            np.testing.assert_allclose(got[key], expected[key], atol=1e-6)
    cal = gen.survival_calibration_  # type: ignore[attr-defined]
    assert cal is not None
    assert set(cal.endpoint_factors) == {"OS", "LFS"}  # VAE-BGM's default: a factor per endpoint
    # sampling applies the factors to the rows the model draws (same draw with the step off)
    on = gen.sample(500, random_state=3)  # type: ignore[attr-defined]
    gen.set_params(survival_calibration=False)  # type: ignore[attr-defined]
    off = gen.sample(500, random_state=3)  # type: ignore[attr-defined]
    gen.set_params(survival_calibration=True)  # type: ignore[attr-defined]
    pd.testing.assert_frame_equal(on, cal.apply(off, gen.schema, gen.domain), check_dtype=False)  # type: ignore[attr-defined]
    assert not np.allclose(on["OS_YEARS"], off["OS_YEARS"], equal_nan=True)
    # the factors are saved with the model
    gen.save(tmp_path / "m")  # type: ignore[attr-defined]
    pd.testing.assert_frame_equal(load_generator(tmp_path / "m").sample(500, random_state=3), on)


def test_levels_are_read_on_the_rows_drawn_for_their_stratum_when_told() -> None:
    # Setup: rows drawn for GROUP are the real rows at a quarter of their times; rows drawn for another stratum
    # (GENE) at half: GROUP's medians must be read on its own rows only
    real = _frame(2000, 9)
    schema, domain, strata, counts = _one_stratum(real, "GROUP", 20)
    mine = real.assign(OS_YEARS=real["OS_YEARS"] / 4, LFS_YEARS=real["LFS_YEARS"] / 4)
    other = real.assign(OS_YEARS=real["OS_YEARS"] / 2, LFS_YEARS=real["LFS_YEARS"] / 2)
    synthetic = pd.concat([mine, other], ignore_index=True)
    drawn_for = np.array(["GROUP"] * len(mine) + ["GENE"] * len(other), dtype=object)
    # Run
    cal = fit_survival_calibration(synthetic, counts, schema, domain, strata, drawn_for=drawn_for, tol=1e-6,
                                   max_sweeps=200)
    pooled = fit_survival_calibration(synthetic, counts, schema, domain, strata, tol=1e-6, max_sweeps=200)
    # Assert: factor 4 (the GROUP rows become the real ones); read on every row it lies between 2 and 4
    np.testing.assert_allclose(np.exp(cal.row_log_factors(mine)), 4.0, rtol=1e-3)
    assert np.all((np.exp(pooled.row_log_factors(mine)) > 2.2) & (np.exp(pooled.row_log_factors(mine)) < 3.8))


def test_unconditioned_rows_can_be_left_unread_so_levels_match_on_their_conditioned_draws() -> None:
    # Setup: rows drawn under GROUP's levels are the real rows at a quarter of their times, the unconditioned rows
    # ("" : read for every stratum by default) at their real times
    real = _frame(2000, 9)
    schema, domain, strata, counts = _one_stratum(real, "GROUP", 20)
    mine = real.assign(OS_YEARS=real["OS_YEARS"] / 4, LFS_YEARS=real["LFS_YEARS"] / 4)
    synthetic = pd.concat([mine, real], ignore_index=True)
    drawn_for = np.array(["GROUP"] * len(mine) + [""] * len(real), dtype=object)
    # Run
    alone = fit_survival_calibration(synthetic, counts, schema, domain, strata, drawn_for=drawn_for, tol=1e-6,
                                     max_sweeps=200, read_unconditioned=False)
    both = fit_survival_calibration(synthetic, counts, schema, domain, strata, drawn_for=drawn_for, tol=1e-6,
                                    max_sweeps=200)
    # Assert: left unread, the conditioned rows get factor 4 and become the real ones (medians equal, by
    # pwe_medians on the same bins); read with them (the default), the factor lies between 1 and 4
    np.testing.assert_allclose(np.exp(alone.row_log_factors(mine)), 4.0, rtol=1e-3)
    factor = np.exp(both.row_log_factors(mine))
    assert np.all((factor > 1.3) & (factor < 3.7))
    scaled = alone.apply(mine, schema, domain)
    edges = endpoint_edges(schema, domain)
    back = survival_counts(scaled, schema, strata, edges)
    np.testing.assert_allclose(pwe_medians(back["d|OS|GROUP"], back["t|OS|GROUP"], edges["OS"]),
                               pwe_medians(counts["d|OS|GROUP"], counts["t|OS|GROUP"], edges["OS"]), rtol=1e-3)


def test_pooled_hazard_and_standardised_event_ratios_match_a_hand_computation() -> None:
    # Setup: two levels, two intervals; events a = (2, 1), b = (1, 3); person-time a = (4, 2), b = (2, 2)
    d, t = np.array([[2.0, 1.0], [1.0, 3.0]]), np.array([[4.0, 2.0], [2.0, 2.0]])
    # Run
    base = pooled_hazard(d, t)
    smr = hazard_ratios(d, t, base)
    # Assert: pooled hazard 3/6 and 4/4; expected events a = 4 * 0.5 + 2 * 1 = 4 (3 seen), b = 2 * 0.5 + 2 * 1 = 3
    np.testing.assert_allclose(base, [0.5, 1.0])
    np.testing.assert_allclose(smr, [3 / 4, 4 / 3])
    # a level without person-time expects nothing: NaN, not a division by zero
    assert np.isnan(hazard_ratios(np.array([[0.0, 0.0]]), np.array([[0.0, 0.0]]), base)[0])


def test_hazard_ratios_maximise_the_poisson_likelihood_with_the_baseline_as_offset() -> None:
    # Setup: per-interval counts of one level against a baseline hazard; the reference is the numerical maximum of
    # the Poisson log-likelihood sum_j d_j (b + log mu_j) - e^b mu_j, mu_j = person-time_j * baseline_j (scipy)
    from scipy.optimize import minimize_scalar

    d, t = np.array([[3.0, 5.0, 2.0]]), np.array([[10.0, 8.0, 6.0]])
    base = np.array([0.2, 0.4, 0.5])
    mu = t[0] * base
    # Run
    best = minimize_scalar(lambda b: -float(np.sum(d[0] * (b + np.log(mu)) - np.exp(b) * mu)),
                           bounds=(-5.0, 5.0), method="bounded", options={"xatol": 1e-10})
    # Assert: the level's hazard ratio is e^b at the maximum (10 events, 8.2 expected)
    assert hazard_ratios(d, t, base)[0] == pytest.approx(math.exp(best.x), rel=1e-6)
    assert hazard_ratios(d, t, base)[0] == pytest.approx(10.0 / 8.2)


def _long_lived(n: int, seed: int) -> pd.DataFrame:
    """GROUP a lives long (mean 40 years) under follow-up censored at 3 years: its median lies past follow-up."""
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b"], n)
    raw = rng.exponential(np.where(group == "a", 40.0, 1.5)) + 0.01
    t = np.minimum(raw, 3.0)
    e = (raw <= 3.0).astype(float)
    return pd.DataFrame({"AGE": rng.integers(40, 90, n).astype(float), "GROUP": group, "GENE": 0.0, "RARE": 0.0,
                         "OS_YEARS": t, "OS_STATUS": e, "LFS_YEARS": t, "LFS_STATUS": e})


def test_hazard_matching_finds_the_factor_of_a_level_whose_median_lies_past_follow_up() -> None:
    # Setup: GROUP a's real median is past follow-up (no median target); the synthetic rows are the real rows with
    # every time of a halved and of b divided by 3
    real = _long_lived(4000, 10)
    schema, domain, strata, counts, shrink, synthetic = _group_shrunk(real, 10)
    assert np.isnan(pwe_medians(counts["d|OS|GROUP"], counts["t|OS|GROUP"], endpoint_edges(schema, domain)["OS"])[0])
    # Run
    cal = fit_survival_calibration(synthetic, counts, schema, domain, strata, tol=1e-6, max_sweeps=200,
                                   target="hazard")
    old = fit_survival_calibration(synthetic, counts, schema, domain, strata, tol=1e-6, max_sweeps=200)
    # Assert: factors 2 (a) and 3 (b), the rescaled rows are the real ones
    np.testing.assert_allclose(np.exp(cal.row_log_factors(synthetic)), shrink, rtol=1e-3)
    np.testing.assert_allclose(cal.apply(synthetic, schema, domain)["OS_YEARS"], real["OS_YEARS"], rtol=1e-3)
    # control: matching medians gives a no target of its own, so it takes b's factor (3, not 2)
    a = (real["GROUP"] == "a").to_numpy()
    assert np.exp(old.row_log_factors(synthetic))[a].mean() == pytest.approx(3.0, rel=0.02)


def test_pwe_rmst_and_the_follow_up_horizon_match_hand_computations() -> None:
    # Setup: hazard 1/2 on [0, 1) (1 event over 2 years at risk), 0 on [1, 3), 1 on [3, 5)
    d, t, e = np.array([[1.0, 0.0, 2.0]]), np.array([[2.0, 4.0, 2.0]]), np.array([0.0, 1.0, 3.0, 5.0])
    # Run / Assert: area = (1 - e^-0.5) / 0.5 + e^-0.5 * 2 + e^-0.5 * (1 - e^-2) / 1 up to 5
    s1 = math.exp(-0.5)
    assert pwe_rmst(d, t, e, 5.0)[0] == pytest.approx((1 - s1) / 0.5 + 2 * s1 + s1 * (1 - math.exp(-2.0)))
    # cut inside the second interval: (1 - e^-0.5) / 0.5 + e^-0.5 * 1.5
    assert pwe_rmst(d, t, e, 2.5)[0] == pytest.approx((1 - s1) / 0.5 + 1.5 * s1)
    # past the last edge the curve is held flat; before a first edge above 0 it is 1
    assert pwe_rmst(d, t, e, 6.0)[0] == pytest.approx(pwe_rmst(d, t, e, 5.0)[0] + s1 * math.exp(-2.0))
    assert pwe_rmst(np.array([[0.0]]), np.array([[3.0]]), np.array([1.0, 4.0]), 3.0)[0] == pytest.approx(3.0)
    # one constant hazard: the exponential's (1 - e^{-h tau}) / h
    assert pwe_rmst(np.array([[4.0]]), np.array([[10.0]]), np.array([0.0, 100.0]), 2.0)[0] == pytest.approx(
        (1 - math.exp(-0.8)) / 0.4)
    # horizon: person-time 2, 4, 2 (of 8) per interval -> 90% (7.2) is reached in the third, which ends at 5;
    # with levels summed, and 50% (4) reached at the end of the second interval (edge 3)
    assert follow_up_horizon(t, e) == 5.0
    assert follow_up_horizon(np.array([[1.0, 2.0, 0.0], [1.0, 2.0, 2.0]]), e, share=0.5) == 3.0


def test_rmst_matching_finds_the_hand_computed_factor_of_each_level() -> None:
    # Setup: GROUP a lives past follow-up at its median (no median target); the synthetic rows are the real rows
    # with every time of a halved and of b divided by 3
    real = _long_lived(4000, 10)
    schema, domain, strata, counts, shrink, synthetic = _group_shrunk(real, 10)
    # Run
    cal = fit_survival_calibration(synthetic, counts, schema, domain, strata, tol=1e-6, max_sweeps=300,
                                   target="rmst", endpoints="each")
    # Assert: factors 2 (a) and 3 (b) for each endpoint (to 1%: a's area, cut at the horizon, moves slowly with its
    # factor, so the damped raking nears it slowly); the median target has none of its own for a
    for ep in ("OS", "LFS"):
        np.testing.assert_allclose(np.exp(cal.row_log_factors(synthetic, ep)), shrink, rtol=1e-2)
    np.testing.assert_allclose(cal.apply(synthetic, schema, domain)["OS_YEARS"], real["OS_YEARS"], rtol=1e-2)


def test_a_factor_per_endpoint_matches_each_endpoint_and_keeps_the_time_order() -> None:
    # Setup: synthetic OS is the real OS; synthetic LFS is the real LFS halved (LFS <= OS still holds), so one factor
    # for both endpoints can match neither
    real = _frame(3000, 11)
    schema = _schema()
    schema, domain, strata, counts = _one_stratum(
        real, "GROUP", 20, schema.with_rules([r for r in candidate_rules(schema) if rule_holds(real, r)]))
    synthetic = real.assign(LFS_YEARS=real["LFS_YEARS"] / 2)
    # Run
    each = fit_survival_calibration(synthetic, counts, schema, domain, strata, tol=1e-6, max_sweeps=200,
                                    target="hazard", endpoints="each")
    shared = fit_survival_calibration(synthetic, counts, schema, domain, strata, tol=1e-6, max_sweeps=200,
                                      target="hazard")
    out = each.apply(synthetic, schema, domain)
    # Assert: OS left as it is, LFS doubled back to the real one; the rule holds in every row
    np.testing.assert_allclose(np.exp(each.row_log_factors(synthetic, "OS")), 1.0, atol=1e-3)
    np.testing.assert_allclose(np.exp(each.row_log_factors(synthetic, "LFS")), 2.0, rtol=1e-3)
    np.testing.assert_allclose(out["LFS_YEARS"], real["LFS_YEARS"], rtol=1e-3)
    np.testing.assert_allclose(out["OS_YEARS"], real["OS_YEARS"], rtol=1e-3)
    assert all(v["violations"] == 0 for v in violation_counts(out, schema.constraints))
    # control: one shared factor lands between 1 and 2, so OS moves away from the real one
    f = np.exp(shared.row_log_factors(synthetic, "OS"))
    assert np.all((f > 1.1) & (f < 1.9))
    # the per-endpoint factors survive a round trip
    back = SurvivalCalibration.from_dict(each.to_dict())
    np.testing.assert_allclose(back.row_log_factors(real, "LFS"), each.row_log_factors(real, "LFS"))


def test_a_shorter_time_is_capped_at_its_longer_one_along_a_chain() -> None:
    # Setup: rules A <= B and B <= C; row 0 breaks both, row 1 none, row 2 has a missing B
    a, b, c = (SurvivalEndpoint(x, f"{x}_T", f"{x}_E") for x in "ABC")
    rules = [TimeOrder(a, b), TimeOrder(b, c)]
    times = {"A_T": np.array([5.0, 1.0, 4.0]), "B_T": np.array([4.0, 2.0, np.nan]), "C_T": np.array([3.0, 3.0, 1.0])}
    # Run
    got = cap_time_order(times, rules)
    # Assert: row 0 becomes (3, 3, 3); row 1 unchanged; a missing time caps nothing and stays missing
    np.testing.assert_allclose(got["A_T"], [3.0, 1.0, 4.0])
    np.testing.assert_allclose(got["B_T"], [3.0, 2.0, np.nan])
    np.testing.assert_allclose(got["C_T"], [3.0, 3.0, 1.0])
    assert times["A_T"][0] == 5.0  # inputs untouched


def test_a_row_whose_shorter_time_was_under_its_longer_one_moves_its_ratio_on_the_odds_scale_when_told() -> None:
    # Setup: rule A <= B. Before scaling: rows 0, 2 and 4 untied at A/B = 1/4, row 1 tied (2, 2), row 3 with a missing
    # A. After: row 0's A factor 6 against B's 1.25 (it would pass B), row 1 breaks the rule, row 2 both factors 2,
    # row 4 A's factor 1 against B's 2 (odds of 1/3 halved)
    a, b = (SurvivalEndpoint(x, f"{x}_T", f"{x}_E") for x in "AB")
    rules = [TimeOrder(a, b)]
    before = {"A_T": np.array([1.0, 2.0, 1.0, np.nan, 1.0]), "B_T": np.array([4.0, 2.0, 4.0, 3.0, 4.0])}
    after = {"A_T": np.array([6.0, 3.0, 2.0, np.nan, 1.0]), "B_T": np.array([5.0, 2.5, 8.0, 3.0, 8.0])}
    # Run
    kept = cap_time_order(after, rules, before)
    capped = cap_time_order(after, rules)
    # Assert, by hand (a'' = a' b' / (b' (1 - r) + a'), r = 1/4): row 0 30 / 9.75 = 3.0769 (odds 1/3 x 4.8 = 1.6,
    # under its B of 5); the tied row is capped (2.5); equal factors leave row 2 as scaled (16 / 8 = 2); row 4
    # 8 / 7 = 1.1429 (odds 1/6: ratio 1/7 against 1/8 scaled); a missing time stays missing; B never moves
    np.testing.assert_allclose(kept["A_T"], [30 / 9.75, 2.5, 2.0, np.nan, 8 / 7])
    np.testing.assert_allclose(kept["B_T"], after["B_T"])
    np.testing.assert_allclose(kept["A_T"][0] / (kept["B_T"][0] - kept["A_T"][0]), (1 / 3) * (6 / 1.25))
    # control: without the former times a breaking row is capped to a tie, the others keep their scaled times
    np.testing.assert_allclose(capped["A_T"], [5.0, 2.5, 2.0, np.nan, 1.0])


def test_keeping_the_order_along_a_chain_moves_longer_times_first_and_each_shorter_time_once() -> None:
    # Setup: rules A <= B and B <= C (given shorter-first), and A <= C too; before (1, 2, 4), after scaling (3, 2, 2.2)
    a, b, c = (SurvivalEndpoint(x, f"{x}_T", f"{x}_E") for x in "ABC")
    before = {"A_T": np.array([1.0]), "B_T": np.array([2.0]), "C_T": np.array([4.0])}
    after = {"A_T": np.array([3.0]), "B_T": np.array([2.0]), "C_T": np.array([2.2])}
    # Run
    got = cap_time_order(after, [TimeOrder(a, b), TimeOrder(b, c), TimeOrder(a, c)], before)
    # Assert, by hand: B against C first (r 1/2): 2 x 2.2 / (2.2 x 0.5 + 2) = 1.4194; then A against B's new time once
    # (r 1/2): 3 x 1.4194 / (1.4194 x 0.5 + 3) = 1.1479; strictly ordered, nothing tied
    b_new = 2 * 2.2 / (2.2 * 0.5 + 2)
    np.testing.assert_allclose(got["B_T"], [b_new])
    np.testing.assert_allclose(got["A_T"], [3 * b_new / (b_new * 0.5 + 3)])
    assert got["A_T"][0] < got["B_T"][0] < got["C_T"][0]
    # the order the rules are given in does not matter
    again = cap_time_order(after, [TimeOrder(b, c), TimeOrder(a, c), TimeOrder(a, b)], before)
    np.testing.assert_allclose(again["A_T"], got["A_T"])


def test_a_fit_that_keeps_the_order_adds_no_tie_and_is_fitted_on_what_it_draws() -> None:
    # Setup: 70% of the rows are tied (LFS = OS) and stay so either way; the untied rows whose LFS is under half their
    # OS have it divided by 3 in the synthetic rows, so LFS's factor lengthens every untied row and, capped, ties those
    # near their OS
    real = _frame(3000, 11)
    schema = _schema()
    schema, domain, strata, counts = _one_stratum(
        real, "GROUP", 20, schema.with_rules([r for r in candidate_rules(schema) if rule_holds(real, r)]))
    short = real["LFS_YEARS"] < real["OS_YEARS"] / 2
    synthetic = real.assign(LFS_YEARS=np.where(short, real["LFS_YEARS"] / 3, real["LFS_YEARS"]))
    tied_before = np.isclose(synthetic["LFS_YEARS"], synthetic["OS_YEARS"])
    opts = {"target": "hazard_ratio", "endpoints": "each", "keep_ties": True, "max_sweeps": 60}
    # Run
    kept = fit_survival_calibration(synthetic, counts, schema, domain, strata, keep_order=True, **opts)
    capped = fit_survival_calibration(synthetic, counts, schema, domain, strata, **opts)
    out_kept, out_capped = kept.apply(synthetic, schema, domain), capped.apply(synthetic, schema, domain)
    tied_kept = np.isclose(out_kept["LFS_YEARS"], out_kept["OS_YEARS"])
    tied_capped = np.isclose(out_capped["LFS_YEARS"], out_capped["OS_YEARS"])
    # Assert: both fits converge; no untied row becomes tied, the tied rows stay tied, the rule holds; the flag is kept
    # through a dict
    assert kept.converged and capped.converged
    assert not (tied_kept & ~tied_before).any() and tied_kept[tied_before].all()
    assert all(v["violations"] == 0 for v in violation_counts(out_kept, schema.constraints))
    back = SurvivalCalibration.from_dict(kept.to_dict())
    assert back.keep_order and not capped.keep_order
    pd.testing.assert_frame_equal(back.apply(synthetic, schema, domain), out_kept)
    # the errors the fit recorded are those of the rows it draws (a zero-sweep refit on them reads the same)
    reread = fit_survival_calibration(out_kept, counts, schema, domain, strata, keep_order=True,
                                      **{**opts, "max_sweeps": 0})
    assert reread.max_log_error == pytest.approx(kept.max_log_error, abs=1e-9)
    # control: capping ties some of the untied rows (5.9% of all rows)
    assert (tied_capped & ~tied_before).mean() > 0.04
    # a calibration saved before the flag was recorded reads as not keeping the order
    old = kept.to_dict()
    old.pop("keep_order")
    assert not SurvivalCalibration.from_dict(old).keep_order


def test_level_log_hazard_ratios_match_hand_computations_and_the_poisson_maximum() -> None:
    # Setup: one interval, level a 4 events over 10 years at risk, the rest (b, c) 3 + 3 events over 12 + 8 years
    d, t = np.array([[4.0], [3.0], [3.0]]), np.array([[10.0], [12.0], [8.0]])
    # Run / Assert: the ratio of the two constant hazards, (4 / 10) / (6 / 20)
    assert level_log_hazard_ratios(d, t)[0] == pytest.approx(math.log((4 / 10) / (6 / 20)))
    # two intervals: the maximum of the Poisson log-likelihood over the two baselines and b (scipy)
    from scipy.optimize import minimize

    d2, t2 = np.array([[3.0, 1.0], [2.0, 6.0]]), np.array([[5.0, 2.0], [6.0, 9.0]])

    def nll(x: np.ndarray) -> float:
        a, b = x[:2], x[2]
        rate = np.exp(a[None, :] + np.array([[b], [0.0]]))
        return -float(np.sum(d2 * np.log(rate) - rate * t2))

    best = minimize(nll, np.zeros(3), method="BFGS", options={"gtol": 1e-10})
    got = level_log_hazard_ratios(d2, t2)
    assert got[0] == pytest.approx(best.x[2], abs=1e-5)
    assert got[1] == pytest.approx(-best.x[2], abs=1e-5)  # two levels: b's ratio against a is the inverse
    # a level without an event has no finite estimate
    assert np.isnan(level_log_hazard_ratios(np.array([[0.0, 0.0], [2.0, 1.0]]), t2)[0])


def test_level_log_hazard_ratios_on_fine_intervals_near_the_cox_estimate_of_lifelines() -> None:
    # Setup: 3,000 rows, group a's hazard twice b's, censoring at random; 40 intervals at quantiles of the times
    from lifelines import CoxPHFitter

    rng = np.random.default_rng(21)
    a = rng.random(3000) < 0.4
    raw = rng.exponential(np.where(a, 1.0, 2.0))
    cens = rng.exponential(4.0, 3000)
    time, event = np.minimum(raw, cens), (raw <= cens).astype(float)
    edges = np.concatenate([[0.0], np.quantile(time, np.linspace(0.025, 1.0, 40))])
    edges[-1] += 1e-9
    d, t = exposure(time, event, a.astype(np.int64), 2, edges)
    # Run
    got = level_log_hazard_ratios(d, t)
    ref = CoxPHFitter().fit(pd.DataFrame({"T": time, "E": event, "a": a.astype(float)}), "T", "E").params_["a"]
    # Assert: within 0.02 of lifelines' Cox coefficient (level 1 is a), and near the true log 2
    assert got[1] == pytest.approx(ref, abs=0.02)
    assert got[1] == pytest.approx(math.log(2.0), abs=0.1)


def test_hazard_ratio_matching_gives_the_real_cox_effect_where_hazard_matching_does_not() -> None:
    # Setup: real OS exponential with GROUP a living 4 / 1.5 as long; synthetic OS drawn again as Weibull (shape 0.6)
    # with a weaker GROUP effect, so the synthetic table's hazard shape differs from the real one's
    from fedsynth.evaluation.cox import univariate_cox

    real = _frame(4000, 3)
    schema, domain, strata, counts = _one_stratum(real, "GROUP", 20)
    rng = np.random.default_rng(5)
    scale = np.where(real["GROUP"] == "a", 3.0, 2.0) * np.where(real["GENE"] == 1, 0.6, 1.0)
    os_t = scale * rng.weibull(0.6, len(real)) + 0.01
    synthetic = real.assign(OS_YEARS=os_t, LFS_YEARS=os_t, LFS_STATUS=real["OS_STATUS"])

    def cox_a(frame: pd.DataFrame) -> float:
        x = (frame["GROUP"] == "a").to_numpy(dtype=float)[:, None]
        return float(univariate_cox(frame["OS_YEARS"].to_numpy(dtype=float),
                                    frame["OS_STATUS"].to_numpy(dtype=float), x)["coef"][0])

    # Run
    cal = fit_survival_calibration(synthetic, counts, schema, domain, strata, tol=1e-6, max_sweeps=200,
                                   target="hazard_ratio", endpoints="each")
    old = fit_survival_calibration(synthetic, counts, schema, domain, strata, tol=1e-6, max_sweeps=200,
                                   target="hazard", endpoints="each")
    # Assert: converged; GROUP a's Cox log HR against b is the real one (to 0.03) and the overall observed over
    # expected events under the real pooled hazard is 1
    assert cal.max_log_error < 1e-6
    out = cal.apply(synthetic, schema, domain)
    assert cox_a(out) == pytest.approx(cox_a(real), abs=0.03)
    edges = endpoint_edges(schema, domain)["OS"]
    d, t = exposure(out["OS_YEARS"].to_numpy(dtype=float), out["OS_STATUS"].to_numpy(dtype=float),
                    stratum_codes(out, strata[0]), 2, edges)
    base = pooled_hazard(counts["d|OS|GROUP"], counts["t|OS|GROUP"])
    assert d.sum() / (t @ base).sum() == pytest.approx(1.0, abs=1e-4)
    # control: matching each level's ratio under the real baseline converges too, yet leaves the effect off by more
    # than a third
    assert old.max_log_error < 1e-6
    assert abs(cox_a(old.apply(synthetic, schema, domain)) - cox_a(real)) > 0.3


def test_hazard_ratio_matching_reads_extra_conditioned_rows_in_the_real_mix() -> None:
    # Setup: the synthetic rows are the real rows (every factor should be 1) plus 1,500 rows resampled from each GROUP
    # level and read for GROUP only (as conditioned draws are), which shifts the level mix from 1:1 towards neither
    real = _frame(3000, 12)
    schema, domain, strata, counts = _one_stratum(real, "GROUP", 20)
    rng = np.random.default_rng(3)
    extra = pd.concat([real[real["GROUP"] == g].sample(1500, replace=True, random_state=int(rng.integers(1e6)))
                       for g in ("a", "a", "b")], ignore_index=True)  # two draws for a: its share goes up
    synthetic = pd.concat([real, extra], ignore_index=True)
    drawn_for = np.array([""] * len(real) + ["GROUP"] * len(extra), dtype=object)
    # Run
    cal = fit_survival_calibration(synthetic, counts, schema, domain, strata, target="hazard_ratio",
                                   endpoints="each", drawn_for=drawn_for, tol=1e-6, max_sweeps=200)
    # Assert: every row factor within resampling noise of 1 (log factor within 0.01)
    for ep in ("OS", "LFS"):
        assert np.abs(cal.row_log_factors(real, ep)).max() < 0.01


def test_the_vae_parameter_offers_every_calibration_target() -> None:
    from typing import get_args

    from fedsynth.generators.survival_calibration import TARGETS
    from fedsynth.generators.vae_params import VAEBGMParams

    # Assert: the parameter's choices are the calibration's targets, in one order
    assert get_args(VAEBGMParams.model_fields["survival_target"].annotation) == TARGETS


def _group_scaled(
    seed: int, a: float, b: float
) -> tuple[TableSchema, Domain, list[CalibrationStratum], dict[str, np.ndarray], np.ndarray, pd.DataFrame]:
    """The GROUP stratum's real counts (3,000 rows of seed ``seed``, 20 bins) and synthetic rows that are the real
    rows with every time of GROUP a multiplied by ``a`` and of b by ``b``: schema, domain, strata, counts, the scale
    per row and the synthetic rows."""
    real = _frame(3000, seed)
    schema, domain, strata, counts = _one_stratum(real, "GROUP", 20)
    scale = np.where(real["GROUP"] == "a", a, b)
    synthetic = real.assign(OS_YEARS=real["OS_YEARS"] * scale, LFS_YEARS=real["LFS_YEARS"] * scale)
    return schema, domain, strata, counts, scale, synthetic


def test_a_fit_says_which_factors_reached_their_bound_and_where_it_stopped_short() -> None:
    # Setup: GROUP a's synthetic times are the real ones halved, b's doubled, so a needs a factor of 2 and b of 1/2
    # (log +-0.69, nothing common to move the intercept); the bound is log 1.5 (0.41)
    schema, domain, strata, counts, scale, synthetic = _group_scaled(21, 0.5, 2.0)
    # Run
    capped = fit_survival_calibration(synthetic, counts, schema, domain, strata, tol=1e-6, max_sweeps=200,
                                      target="hazard", max_log_factor=math.log(1.5))
    free = fit_survival_calibration(synthetic, counts, schema, domain, strata, tol=1e-6, max_sweeps=200,
                                    target="hazard")
    # Assert: both levels sit at +-log 1.5, the fit stops short of its tolerance (what is left of a level's error, near
    # log 2 - log 1.5 = 0.29 on a constant hazard; less here, the times doubled past the domain's bound being
    # clipped) and its notes say so in plain words
    np.testing.assert_allclose(np.abs(capped.log_factors["GROUP"]), math.log(1.5), rtol=1e-9)
    assert not capped.converged
    assert 0.1 < capped.max_log_error < math.log(2.0)
    assert capped.worst_level in ("every endpoint: GROUP=a", "every endpoint: GROUP=b")
    # a's times were too short (its error, the log factor its times lack, > 0), b's too long
    assert (capped.worst_log_error > 0) == capped.worst_level.endswith("GROUP=a")
    assert abs(capped.worst_log_error) == capped.max_log_error
    # a lengthened as far as allowed (still too short), b shortened as far as allowed (still too long)
    assert capped.limits() == [{"endpoint": "every endpoint", "lengthened": ["GROUP=a"], "shortened": ["GROUP=b"]}]
    stopped, short, long = capped.notes()
    level = capped.worst_level.partition(": ")[2]
    way = "too short" if capped.worst_log_error > 0 else "too long"
    assert stopped.startswith("The model's survival calibration stopped after 200 passes without matching every")
    assert f"read on the model's own draw, survival in {level} was still {way}" in stopped
    assert f"{math.exp(capped.max_log_error):.2f}" in stopped
    assert short == ("Survival is likely still too short for GROUP=a: the model's survival calibration already "
                     "lengthened those times by the most it allows (x1.5).")
    assert long.startswith("Survival is likely still too long for GROUP=b") and "(/1.5)" in long
    # control: with the default bound the same fit converges, nothing is at a bound and there is nothing to say
    assert free.converged and free.limits() == [] and free.notes() == []
    np.testing.assert_allclose(np.exp(free.row_log_factors(synthetic)), 1.0 / scale, rtol=1e-3)
    # what the notes read survives a round trip; a calibration saved before these fields loads with the defaults
    back = SurvivalCalibration.from_dict(capped.to_dict())
    assert back.notes() == capped.notes() and back.target == "hazard"
    added = ("target", "tol", "max_log_factor", "worst_level", "worst_log_error", "last_errors", "last_common_errors")
    legacy = SurvivalCalibration.from_dict({k: v for k, v in free.to_dict().items() if k not in added})
    assert (legacy.target, legacy.tol, legacy.max_log_factor, legacy.worst_level) == ("", 0.01, math.log(4.0), "")
    assert np.isnan(legacy.worst_log_error)
    unsigned = SurvivalCalibration.from_dict({k: v for k, v in capped.to_dict().items() if k != "worst_log_error"})
    assert f"was still off by about a factor of {math.exp(capped.max_log_error):.2f} in time" in unsigned.notes()[0]
    # without the last errors (an older save), every factor at its bound is listed
    bare = SurvivalCalibration.from_dict({k: v for k, v in capped.to_dict().items()
                                          if k not in ("last_errors", "last_common_errors")})
    assert bare.limits() == capped.limits()


def test_the_errors_a_fit_records_are_read_on_its_final_factors() -> None:
    # Setup: GROUP a's times halved and b's doubled, stopped after 3 damped passes (far from converged: each pass
    # reads a level's error before its step, so the last pass's reads are out of date once the step is taken)
    schema, domain, strata, counts, _, synthetic = _group_scaled(26, 0.5, 2.0)
    for endpoints in ("all", "each"):
        # Run: the stopped fit, and a fit with no pass at all on the rows the stopped one scales
        cal = fit_survival_calibration(synthetic, counts, schema, domain, strata, tol=1e-6, max_sweeps=3,
                                       target="hazard", endpoints=endpoints)
        reread = fit_survival_calibration(cal.apply(synthetic, schema, domain), counts, schema, domain, strata,
                                          tol=1e-6, max_sweeps=0, target="hazard", endpoints=endpoints)
        # Assert: the stopped fit's errors are those of its scaled rows (not those read before its last step, about
        # twice as large with a damping of 0.5), and it is not called converged
        assert reread.sweeps == 0 and not cal.converged
        assert cal.max_log_error == pytest.approx(reread.max_log_error, rel=1e-6)
        assert (cal.worst_level, cal.worst_log_error) == (reread.worst_level, pytest.approx(reread.worst_log_error))
        for group, errors in reread.last_errors.items():
            np.testing.assert_allclose(cal.last_errors[group]["GROUP"], errors["GROUP"], rtol=1e-6)
        # control: what the last pass read before its step (the errors after 2 passes) is well above it
        two = fit_survival_calibration(synthetic, counts, schema, domain, strata, tol=1e-6, max_sweeps=2,
                                       target="hazard", endpoints=endpoints)
        assert 0.05 < cal.max_log_error < 0.75 * two.max_log_error
    # several strata (a level's rows moved by the other strata's steps after its read) and the hazard-ratio target's
    # intercepts: every recorded error, the common ones too, is the final factors'
    real = _frame(3000, 26)
    schema = _schema()
    schema = schema.with_rules([r for r in candidate_rules(schema) if rule_holds(real, r)])
    domain = Domain.from_data(real, schema, n_bins=20)
    strata = calibration_strata(schema, domain)
    counts = survival_counts(real, schema, strata, endpoint_edges(schema, domain))
    synthetic = real.assign(OS_YEARS=real["OS_YEARS"] * np.where(real["GENE"] == 1, 2.0, 0.7),
                            LFS_YEARS=real["LFS_YEARS"] * np.where(real["GROUP"] == "a", 0.5, 0.7))
    opts = {"tol": 1e-6, "target": "hazard_ratio", "endpoints": "each", "keep_ties": True, "keep_order": True}
    cal = fit_survival_calibration(synthetic, counts, schema, domain, strata, max_sweeps=3, **opts)
    reread = fit_survival_calibration(cal.apply(synthetic, schema, domain), counts, schema, domain, strata,
                                      max_sweeps=0, **opts)
    assert len(cal.strata) >= 2 and cal.max_log_error == pytest.approx(reread.max_log_error, rel=1e-6)
    for group, errors in reread.last_errors.items():
        for column, values in errors.items():
            np.testing.assert_allclose(cal.last_errors[group][column], values, rtol=1e-6, atol=1e-12)
    for group, common in reread.last_common_errors.items():
        assert cal.last_common_errors[group] == pytest.approx(common, rel=1e-6, abs=1e-12)


def test_a_factor_at_its_bound_that_the_intercept_made_up_for_is_not_warned_about() -> None:
    # Setup: GROUP a's times halved, b's left as they are; the bound log 1.2 is under a's need (log 2), so the
    # intercept and a's factor both end at +bound and b's factor at -bound: b's net factor is 1, its survival exact
    schema, domain, strata, counts, _, synthetic = _group_scaled(24, 0.5, 1.0)
    # Run
    cal = fit_survival_calibration(synthetic, counts, schema, domain, strata, tol=1e-3, max_sweeps=200,
                                   target="hazard", max_log_factor=math.log(1.2))
    # Assert: b's own factor sits at -bound, yet its last error is about 0, so only a and every row are named
    a, b = cal.log_factors["GROUP"]
    assert b == pytest.approx(-math.log(1.2)) and a == pytest.approx(math.log(1.2))
    assert cal.intercept == pytest.approx(math.log(1.2))
    assert abs(cal.last_errors["every endpoint"]["GROUP"][1]) < 1e-3
    assert cal.limits() == [{"endpoint": "every endpoint", "lengthened": ["every row", "GROUP=a"], "shortened": []}]
    assert not any("too long" in n for n in cal.notes())
    # control: read without the last errors (as an older save is), b is named too
    legacy = SurvivalCalibration.from_dict({k: v for k, v in cal.to_dict().items() if k != "last_errors"})
    assert legacy.limits()[0]["shortened"] == ["GROUP=b"]


def test_hazard_ratio_notes_say_the_error_is_relative_to_the_rest_of_the_stratum() -> None:
    # Setup: as above (a halved, b as it is) with the hazard_ratio target and a bound of log 1.2
    schema, domain, strata, counts, _, synthetic = _group_scaled(25, 0.5, 1.0)
    # Run
    cal = fit_survival_calibration(synthetic, counts, schema, domain, strata, tol=1e-3, max_sweeps=100,
                                   target="hazard_ratio", max_log_factor=math.log(1.2))
    # Assert: the worst level's note speaks of its survival relative to the rest of its stratum
    assert not cal.converged
    assert "relative to the rest of its stratum (its times" in cal.notes()[0]


def test_an_intercept_at_its_bound_is_named_per_endpoint() -> None:
    # Setup: synthetic LFS is the real LFS at a fifth of its times in every row: with a factor per endpoint, LFS's
    # intercept needs log 5, above the bound log 4; OS is the real one
    real = _frame(3000, 22)
    schema, domain, strata, counts = _one_stratum(real, "GROUP", 20)
    synthetic = real.assign(LFS_YEARS=real["LFS_YEARS"] / 5)
    # Run
    cal = fit_survival_calibration(synthetic, counts, schema, domain, strata, max_sweeps=100, target="hazard",
                                   endpoints="each")
    # Assert: LFS's intercept is at the bound (every row), OS's is not named
    assert cal.endpoint_intercepts["LFS"] == pytest.approx(math.log(4.0))
    assert [lim["endpoint"] for lim in cal.limits()] == ["LFS"]
    assert cal.limits()[0]["lengthened"][0] == "every row" and cal.limits()[0]["shortened"] == []
    assert any(n.startswith("LFS is likely still too short for every row") and "(x4)" in n for n in cal.notes())
    assert cal.worst_level.startswith("LFS: ") and cal.worst_log_error > 0


def test_the_calibration_reads_as_many_rows_as_its_parameters_say(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedsynth.generators import make_generator
    from fedsynth.generators.registry import validate_generator_params

    # Setup: a tiny centralized VAE-BGM; every draw the calibration makes is recorded
    schema = _schema()
    real = schema.coerce(_frame(400, 23))
    gen = make_generator("vae_bgm", schema, epochs=2, batch_size=64, latent_dim=2, hidden_dims=[16],
                         n_components=2, device="cpu", calibration_rows=1_500, calibration_level_rows=120)
    gen.fit(real)
    counts = gen.survival_counts_  # type: ignore[attr-defined]
    drawn: list[tuple[str, int]] = []
    raw, conditioned = gen._sample, gen.sample
    monkeypatch.setattr(gen, "_sample", lambda n, **kw: drawn.append(("raw", n)) or raw(n, **kw))
    monkeypatch.setattr(gen, "sample", lambda n, **kw: drawn.append(("level", n)) or conditioned(n, **kw))
    # Run: the parameters' counts, then the method's own
    gen.fit_survival_calibration(counts)  # type: ignore[attr-defined]
    by_params = list(drawn)
    drawn.clear()
    gen.fit_survival_calibration(counts, rows=2_000, level_rows=130)  # type: ignore[attr-defined]
    # Assert: one unconditioned draw of calibration_rows, then level draws of calibration_level_rows each (every
    # conditioned draw goes through _sample too, at its own size); the method's arguments win over the parameters
    assert by_params[0] == ("raw", 1_500) and drawn[0] == ("raw", 2_000)
    assert {n for kind, n in by_params if kind == "level"} == {120}
    assert {n for kind, n in drawn if kind == "level"} == {130}
    assert sum(kind == "level" for kind, _ in by_params) >= 4  # GROUP a/b, GENE 0/1 at least
    # the bounds of the parameters are checked like any other's
    problems = validate_generator_params("vae_bgm", {"calibration_rows": 10, "calibration_level_rows": 5})
    assert {p.where for p in problems} == {"calibration_rows", "calibration_level_rows"}


def test_an_endpoint_capped_at_another_can_go_without_an_intercept_and_its_levels_still_match() -> None:
    # Setup: real rows with the rule LFS <= OS; the synthetic rows are the real ones with an LFS event added to 60% of
    # the rows censored with LFS = OS (their times cannot lengthen past OS) and GROUP a's LFS times halved. LFS then
    # has too many events for its person-time whatever its intercept (as VAE-BGM's draws on the MDS cohort), and
    # GROUP a's LFS effect is off.
    real = _frame(4000, 31)
    schema = _schema()
    schema, domain, strata, counts = _one_stratum(
        real, "GROUP", 20, schema.with_rules([r for r in candidate_rules(schema) if rule_holds(real, r)]))
    rng = np.random.default_rng(4)
    tied_censored = (real["LFS_YEARS"] == real["OS_YEARS"]) & (real["LFS_STATUS"] == 0)
    extra_event = tied_censored & (rng.random(len(real)) < 0.6)
    synthetic = real.assign(
        LFS_STATUS=np.where(extra_event, 1.0, real["LFS_STATUS"]),
        LFS_YEARS=np.where(real["GROUP"] == "a", real["LFS_YEARS"] / 2, real["LFS_YEARS"]))
    assert TimeOrder(LFS, OS) in schema.constraints
    edges = endpoint_edges(schema, domain)["LFS"]
    real_lhr = level_log_hazard_ratios(counts["d|LFS|GROUP"], counts["t|LFS|GROUP"])[0]

    def lfs_lhr(cal: SurvivalCalibration) -> float:
        out = cal.apply(synthetic, schema, domain)
        assert all(v["violations"] == 0 for v in violation_counts(out, schema.constraints))
        d, t = exposure(out["LFS_YEARS"].to_numpy(dtype=float), out["LFS_STATUS"].to_numpy(dtype=float),
                        stratum_codes(out, strata[0]), 2, edges)
        return float(level_log_hazard_ratios(d, t)[0])

    # Run
    free = fit_survival_calibration(synthetic, counts, schema, domain, strata, target="hazard_ratio",
                                    endpoints="each", capped_intercepts=False, max_sweeps=200, tol=1e-3)
    pushed = fit_survival_calibration(synthetic, counts, schema, domain, strata, target="hazard_ratio",
                                      endpoints="each", max_sweeps=200, tol=1e-3)
    # Assert: without an intercept LFS's stays 0 and the fit converges; GROUP a's LFS log hazard ratio against b is
    # the real one (to 0.01); OS, which had nothing to correct, keeps its times (its own intercept is still fitted)
    assert free.endpoint_intercepts["LFS"] == 0.0 and free.unfitted_intercepts == ("LFS",)
    assert free.converged
    assert any(n.startswith("LFS's overall event rate is the model's own") for n in free.notes())
    assert SurvivalCalibration.from_dict(free.to_dict()).unfitted_intercepts == ("LFS",)
    assert lfs_lhr(free) == pytest.approx(real_lhr, abs=0.01)
    assert np.abs(free.row_log_factors(synthetic, "OS")).max() < 0.01
    # control: with the intercept fitted it runs to its bound (x4) and the fit does not converge, its worst error
    # being LFS's overall one
    assert pushed.endpoint_intercepts["LFS"] == pytest.approx(math.log(4.0))
    assert not pushed.converged and pushed.worst_level == "LFS: every row" and pushed.unfitted_intercepts == ()
    # only relative targets can go without an intercept, and only with a factor per endpoint
    for target, endpoints in (("hazard", "each"), ("median", "each"), ("hazard_ratio", "all")):
        with pytest.raises(ValueError, match="capped_intercepts=False needs"):
            fit_survival_calibration(synthetic, counts, schema, domain, strata, target=target, endpoints=endpoints,
                                     capped_intercepts=False)


def test_the_vae_parameter_leaves_a_capped_endpoint_without_an_intercept() -> None:
    from fedsynth.generators import make_generator

    # Setup: a tiny centralized VAE-BGM on rows where LFS <= OS holds, the rule in its schema
    real_rows = _frame(400, 24)
    schema = _schema()
    schema = schema.with_rules([r for r in candidate_rules(schema) if rule_holds(real_rows, r)])
    real = schema.coerce(real_rows)
    opts = {"epochs": 2, "batch_size": 64, "latent_dim": 2, "hidden_dims": [16], "n_components": 2, "device": "cpu",
            "calibration_rows": 1_500, "calibration_level_rows": 120, "survival_target": "hazard_ratio"}
    # Run
    free = make_generator("vae_bgm", schema, calibration_capped_intercepts=False, **opts)
    free.fit(real)
    fitted = make_generator("vae_bgm", schema, **opts)
    fitted.fit(real)
    # Assert: LFS (capped at OS) keeps intercept 0 and is named; by default every intercept is fitted
    cal = free.survival_calibration_  # type: ignore[attr-defined]
    assert cal.unfitted_intercepts == ("LFS",) and cal.endpoint_intercepts["LFS"] == 0.0
    assert fitted.survival_calibration_.unfitted_intercepts == ()  # type: ignore[attr-defined]
    # the parameter needs the hazard-ratio target, checked with the other parameters (one problem, at its name)
    from fedsynth.generators.registry import validate_generator_params

    problems = validate_generator_params("vae_bgm", {"calibration_capped_intercepts": False})
    assert [p.where for p in problems] == ["calibration_capped_intercepts"]
    assert validate_generator_params("vae_bgm", {"calibration_capped_intercepts": False,
                                                 "survival_target": "hazard_ratio"}) == []


def test_one_factor_for_every_endpoint_keeps_each_rows_lfs_to_os_ratio_with_time_ties() -> None:
    from fedsynth.generators import make_generator
    from fedsynth.generators.registry import validate_generator_params

    # Setup: a tiny centralized VAE-BGM learning LFS = OS as a tie slot (70% of the rows are tied) under the rule
    # LFS <= OS. With a factor per endpoint a tied row follows OS's factor, so LFS's own factor moves the untied rows
    # alone: pushing a level's LFS to its target through them shrinks or stretches their LFS against their OS
    # (session 19, benchmarks/results/arms.json selection_session19: their median LFS / OS 0.57 without the
    # calibration, 0.30 with it). One factor for every endpoint moves a row's two times together.
    real_rows = _frame(600, 25)
    schema = _schema()
    schema = schema.with_rules([r for r in candidate_rules(schema) if rule_holds(real_rows, r)])
    real = schema.coerce(real_rows)
    opts = {"epochs": 3, "batch_size": 64, "latent_dim": 2, "hidden_dims": [16], "n_components": 2, "device": "cpu",
            "calibration_rows": 1_500, "calibration_level_rows": 120, "time_ties": True}

    def ratios(endpoints: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each row's LFS / OS drawn with the calibration and without it (same draw), and whether it was tied."""
        gen = make_generator("vae_bgm", schema, calibration_endpoints=endpoints, **opts)
        gen.fit(real)
        on = gen.sample(3_000, random_state=1)
        gen.set_params(survival_calibration=False)
        off = gen.sample(3_000, random_state=1)
        assert all(v["violations"] == 0 for v in violation_counts(on, schema.constraints))
        return ((on["LFS_YEARS"] / on["OS_YEARS"]).to_numpy(float), (off["LFS_YEARS"] / off["OS_YEARS"]).to_numpy(float),
                (off["LFS_YEARS"] == off["OS_YEARS"]).to_numpy())

    # Run
    shared_on, shared_off, shared_tied = ratios("all")
    each_on, each_off, each_tied = ratios("each")
    # Assert: with one factor every row keeps its ratio (to rounding; a time clipped at the domain's bound may not),
    # so the tied rows stay tied and the untied rows keep the LFS / OS the model drew
    kept = np.isclose(shared_on, shared_off, rtol=1e-9)
    assert kept.mean() > 0.99 and shared_tied.mean() > 0.3
    assert np.all(shared_on[shared_tied] == 1.0)
    # control: with a factor per endpoint the ties are kept too, but the untied rows' ratio moves
    assert np.all(each_on[each_tied] == 1.0)
    moved = ~np.isclose(each_on, each_off, rtol=1e-9)
    assert moved[~each_tied].mean() > 0.5
    # the parameter is checked with the others: a capped endpoint left without an intercept needs a factor per
    # endpoint (one problem, at its name)
    problems = validate_generator_params("vae_bgm", {"calibration_endpoints": "all", "survival_target": "hazard_ratio",
                                                     "calibration_capped_intercepts": False})
    assert [p.where for p in problems] == ["calibration_endpoints"]
    assert validate_generator_params("vae_bgm", {"calibration_endpoints": "first"}) == []


def test_the_vae_parameter_keeps_untied_rows_untied_and_leaves_one_factor_draws_alone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fedsynth.generators import load_generator, make_generator
    from fedsynth.generators.registry import validate_generator_params

    # Setup: the tiny centralized VAE-BGM above (LFS = OS a tie slot, a factor per endpoint), with and without
    # calibration_keep_order
    real_rows = _frame(600, 25)
    schema = _schema()
    schema = schema.with_rules([r for r in candidate_rules(schema) if rule_holds(real_rows, r)])
    real = schema.coerce(real_rows)
    opts = {"epochs": 3, "batch_size": 64, "latent_dim": 2, "hidden_dims": [16], "n_components": 2, "device": "cpu",
            "calibration_rows": 1_500, "calibration_level_rows": 120, "time_ties": True, "calibration_endpoints": "each"}

    def draw(**params: object) -> tuple[object, pd.DataFrame, pd.DataFrame]:
        gen = make_generator("vae_bgm", schema, **opts, **params)
        gen.fit(real)
        on = gen.sample(3_000, random_state=1)
        gen.set_params(survival_calibration=False)
        off = gen.sample(3_000, random_state=1)
        gen.set_params(survival_calibration=True)
        return gen, on, off

    # Run
    gen, on, off = draw(calibration_keep_order=True)
    _, on_capped, off_capped = draw()
    # Assert: the fit keeps the order; no row the model drew untied comes out tied, and the rule holds
    assert gen.survival_calibration_.keep_order  # type: ignore[attr-defined]
    untied = (off["LFS_YEARS"] < off["OS_YEARS"]).to_numpy()
    assert untied.mean() > 0.1
    assert (on["LFS_YEARS"] < on["OS_YEARS"]).to_numpy()[untied].all()
    assert all(v["violations"] == 0 for v in violation_counts(on, schema.constraints))
    # a saved model draws the same rows
    gen.save(tmp_path / "model")  # type: ignore[attr-defined]
    back = load_generator(tmp_path / "model")
    pd.testing.assert_frame_equal(back.sample(3_000, random_state=1), on)
    # control: without it some untied rows are capped to ties
    untied_c = (off_capped["LFS_YEARS"] < off_capped["OS_YEARS"]).to_numpy()
    assert not (on_capped["LFS_YEARS"] < on_capped["OS_YEARS"]).to_numpy()[untied_c].all()
    # draws under a condition with one factor for both endpoints (the tuned setting's arms) are the same with it or
    # without it, and their set does not record it; the unconditioned set does
    arms = {"calibration_unconditioned": True, "calibration_conditioned_endpoints": "all"}
    drawn = []
    for keep in (True, False):
        gen_arms = make_generator("vae_bgm", schema, **opts, **arms, calibration_keep_order=keep)
        gen_arms.fit(real)
        gen_arms.fit_survival_calibration(gen_arms.survival_counts_)  # type: ignore[attr-defined]
        assert not gen_arms.survival_calibration_.keep_order  # type: ignore[attr-defined]
        assert gen_arms.unconditioned_calibration_.keep_order is keep  # type: ignore[attr-defined]
        drawn.append(gen_arms.sample(500, random_state=2, conditions={"GROUP": "a"}))
    pd.testing.assert_frame_equal(drawn[0], drawn[1])
    # a setting with no factor per endpoint anywhere has nothing to keep: refused, at its name
    problems = validate_generator_params("vae_bgm", {"calibration_endpoints": "all", "calibration_keep_order": True})
    assert [p.where for p in problems] == ["calibration_keep_order"]
    assert validate_generator_params("vae_bgm", {"calibration_keep_order": True, **arms}) == []


def test_unconditioned_draws_can_take_factors_fitted_on_unconditioned_rows_alone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fedsynth.generators import load_generator, make_generator

    # Setup: a tiny fitted VAE-BGM whose calibration is refitted with levels drawn as conditions (as after FedAvg),
    # with calibration_unconditioned on, and the same model with it off
    schema = _schema()
    real = schema.coerce(_frame(400, 25))
    opts = {"epochs": 2, "batch_size": 64, "latent_dim": 2, "hidden_dims": [16], "n_components": 2, "device": "cpu",
            "calibration_rows": 1_500, "calibration_level_rows": 120, "survival_target": "hazard_ratio"}
    gen = make_generator("vae_bgm", schema, calibration_unconditioned=True, **opts)
    gen.fit(real)
    # a centralized fit reads unconditioned rows only: one set of factors serves every draw
    assert gen.unconditioned_calibration_ is None  # type: ignore[attr-defined]
    counts = gen.survival_counts_  # type: ignore[attr-defined]
    # Run
    gen.fit_survival_calibration(counts)  # type: ignore[attr-defined]
    mixed, alone = gen.survival_calibration_, gen.unconditioned_calibration_  # type: ignore[attr-defined]
    # Assert: the second set equals a fit on the model's unconditioned rows alone, and differs from the first
    gen.set_params(survival_calibration=False)  # type: ignore[attr-defined]
    rows = gen._finish(gen._sample(1_500, rng=np.random.default_rng(gen.params.random_state)))  # type: ignore[attr-defined]
    direct = fit_survival_calibration(rows, counts, schema, gen.domain, calibration_strata(schema, gen.domain),  # type: ignore[attr-defined]
                                      min_count=5, endpoints="each", target="hazard_ratio")
    assert alone is not None and alone.to_dict() == direct.to_dict()
    assert alone.to_dict()["endpoint_factors"] != mixed.to_dict()["endpoint_factors"]
    # unconditioned draws take the second set, draws under a condition the first (same rows with the step off)
    off = gen.sample(500, random_state=3)  # type: ignore[attr-defined]
    off_arm = gen.sample(200, random_state=4, conditions={"GROUP": "a"})  # type: ignore[attr-defined]
    gen.set_params(survival_calibration=True)  # type: ignore[attr-defined]
    on = gen.sample(500, random_state=3)  # type: ignore[attr-defined]
    on_arm = gen.sample(200, random_state=4, conditions={"GROUP": "a"})  # type: ignore[attr-defined]
    pd.testing.assert_frame_equal(on, alone.apply(off, schema, gen.domain), check_dtype=False)  # type: ignore[attr-defined]
    pd.testing.assert_frame_equal(on_arm, mixed.apply(off_arm, schema, gen.domain), check_dtype=False)  # type: ignore[attr-defined]
    assert not np.allclose(on["OS_YEARS"], mixed.apply(off, schema, gen.domain)["OS_YEARS"])  # type: ignore[attr-defined]
    # a condition given as a where expression is a condition too; a failed conditioned draw leaves no flag behind
    off_where = gen.sample(100, random_state=5, where="AGE >= 0")  # type: ignore[attr-defined]
    with pytest.raises(ConditionError):
        gen.sample(100, random_state=6, where="AGE < -1", max_tries=2)  # type: ignore[attr-defined]
    gen.set_params(survival_calibration=False)  # type: ignore[attr-defined]
    raw_where = gen.sample(100, random_state=5, where="AGE >= 0")  # type: ignore[attr-defined]
    gen.set_params(survival_calibration=True)  # type: ignore[attr-defined]
    pd.testing.assert_frame_equal(off_where, mixed.apply(raw_where, schema, gen.domain), check_dtype=False)  # type: ignore[attr-defined]
    pd.testing.assert_frame_equal(gen.sample(500, random_state=3), on)  # type: ignore[attr-defined]
    # each draw's warnings come from its own set; without a side said, both, each named
    assert gen.survival_notes(under_condition=True) == mixed.notes()  # type: ignore[attr-defined]
    assert gen.survival_notes(under_condition=False) == alone.notes()  # type: ignore[attr-defined]
    assert gen.survival_notes() == [*(f"Draws under a condition (control arms): {n}" for n in mixed.notes()),  # type: ignore[attr-defined]
                                    *(f"Draws without a condition: {n}" for n in alone.notes())]
    # both sets are saved with the model; a folder saved before the second set existed still loads (one set)
    gen.save(tmp_path / "m")  # type: ignore[attr-defined]
    back = load_generator(tmp_path / "m")
    pd.testing.assert_frame_equal(back.sample(500, random_state=3), on)
    pd.testing.assert_frame_equal(back.sample(200, random_state=4, conditions={"GROUP": "a"}), on_arm)
    state_file = next(p for p in (tmp_path / "m").iterdir() if p.suffix == ".json" and "unconditioned_calibration"
                      in p.read_text())
    state = json.loads(state_file.read_text())
    del state["unconditioned_calibration"]
    state_file.write_text(json.dumps(state))
    older = load_generator(tmp_path / "m")
    assert older.unconditioned_calibration_ is None  # type: ignore[attr-defined]
    pd.testing.assert_frame_equal(older.sample(500, random_state=3), mixed.apply(off, schema, gen.domain),  # type: ignore[attr-defined]
                                  check_dtype=False)
    # turned off on a fitted model, the parameter takes the second set out of use
    gen.set_params(calibration_unconditioned=False)  # type: ignore[attr-defined]
    pd.testing.assert_frame_equal(gen.sample(500, random_state=3), mixed.apply(off, schema, gen.domain),  # type: ignore[attr-defined]
                                  check_dtype=False)
    assert gen.survival_notes() == mixed.notes()  # type: ignore[attr-defined]
    # the unconditioned set's genes: those mutated in 5% of the real rows by default, down to the parameter's share
    # (RARE: 0.75% of these rows)
    assert "RARE" not in {st.column for st in alone.strata} | {st.column for st in mixed.strata}
    rare = make_generator("vae_bgm", schema, calibration_unconditioned=True,
                          calibration_unconditioned_gene_min_freq=0.005, **opts)
    rare.fit(real)
    rare.fit_survival_calibration(counts)  # type: ignore[attr-defined]
    assert "RARE" in {st.column for st in rare.unconditioned_calibration_.strata}  # type: ignore[attr-defined]
    assert "RARE" not in {st.column for st in rare.survival_calibration_.strata}  # type: ignore[attr-defined]
    # control: with the parameter off (the default) there is one set
    plain = make_generator("vae_bgm", schema, **opts)
    plain.fit(real)
    plain.fit_survival_calibration(counts)  # type: ignore[attr-defined]
    assert plain.unconditioned_calibration_ is None  # type: ignore[attr-defined]
    # the gene share acts only with the parameter on: said at its name otherwise
    from fedsynth.generators.registry import validate_generator_params

    assert [p.where for p in validate_generator_params("vae_bgm", {"calibration_unconditioned_gene_min_freq": 0.02})
            ] == ["calibration_unconditioned_gene_min_freq"]
    assert validate_generator_params("vae_bgm", {"calibration_unconditioned_gene_min_freq": 0.02,
                                                 "calibration_unconditioned": True}) == []


def test_draws_under_a_condition_can_move_both_endpoints_with_one_factor_while_unconditioned_draws_keep_one_each(
) -> None:
    from fedsynth.generators import make_generator
    from fedsynth.generators.registry import validate_generator_params

    # Setup: a tiny fitted VAE-BGM with LFS = OS ties and a set of factors for unconditioned draws, its calibration
    # refitted with levels drawn as conditions (as after FedAvg)
    real_rows = _frame(400, 27)
    schema = _schema()
    schema = schema.with_rules([r for r in candidate_rules(schema) if rule_holds(real_rows, r)])
    real = schema.coerce(real_rows)
    gen = make_generator("vae_bgm", schema, epochs=2, batch_size=64, latent_dim=2, hidden_dims=[16], n_components=2,
                         device="cpu", calibration_rows=1_500, calibration_level_rows=120, time_ties=True,
                         calibration_unconditioned=True)
    gen.fit(real)
    counts = gen.survival_counts_  # type: ignore[attr-defined]
    gen.fit_survival_calibration(counts)  # type: ignore[attr-defined]
    unconditioned = gen.unconditioned_calibration_.to_dict()  # type: ignore[attr-defined]
    # Run: the arms' set with one factor for every endpoint
    gen.set_params(calibration_conditioned_endpoints="all")  # type: ignore[attr-defined]
    gen.fit_survival_calibration(counts)  # type: ignore[attr-defined]
    arms, own = gen.survival_calibration_, gen.unconditioned_calibration_  # type: ignore[attr-defined]
    # Assert: in the arms' set a row's LFS and OS take one factor; the unconditioned set is unchanged, a factor per
    # endpoint (they differ somewhere)
    np.testing.assert_array_equal(arms.row_log_factors(real, "LFS"), arms.row_log_factors(real, "OS"))
    assert own.to_dict() == unconditioned
    assert not np.allclose(own.row_log_factors(real, "LFS"), own.row_log_factors(real, "OS"))
    # an endpoints argument given to the fit sets both sets, the parameter's too
    gen.fit_survival_calibration(counts, endpoints="each")  # type: ignore[attr-defined]
    each = gen.survival_calibration_  # type: ignore[attr-defined]
    assert not np.allclose(each.row_log_factors(real, "LFS"), each.row_log_factors(real, "OS"))
    # the parameter needs calibration_unconditioned (without it one set serves every draw)
    problems = validate_generator_params("vae_bgm", {"calibration_conditioned_endpoints": "all"})
    assert [p.where for p in problems] == ["calibration_conditioned_endpoints"]
    assert validate_generator_params("vae_bgm", {"calibration_conditioned_endpoints": "all",
                                                 "calibration_unconditioned": True}) == []


def test_draws_under_a_condition_can_take_their_own_target_read_on_their_own_rows() -> None:
    from fedsynth.generators import make_generator
    from fedsynth.generators.registry import validate_generator_params

    # Setup: a tiny fitted VAE-BGM with a set of factors for unconditioned draws, its calibration refitted with
    # levels drawn as conditions (as after FedAvg)
    schema = _schema()
    real = schema.coerce(_frame(400, 26))
    opts = {"epochs": 2, "batch_size": 64, "latent_dim": 2, "hidden_dims": [16], "n_components": 2, "device": "cpu",
            "calibration_rows": 1_500, "calibration_level_rows": 120, "survival_target": "hazard_ratio",
            "calibration_unconditioned": True}
    gen = make_generator("vae_bgm", schema, **opts)
    gen.fit(real)
    counts = gen.survival_counts_  # type: ignore[attr-defined]
    gen.fit_survival_calibration(counts)  # type: ignore[attr-defined]
    shared = gen.survival_calibration_.to_dict()  # type: ignore[attr-defined]
    unconditioned = gen.unconditioned_calibration_.to_dict()  # type: ignore[attr-defined]
    # Run: the arms' set with a median target read on the rows drawn under each level alone
    gen.set_params(calibration_conditioned_target="median", calibration_conditioned_rows_only=True)  # type: ignore[attr-defined]
    gen.fit_survival_calibration(counts)  # type: ignore[attr-defined]
    own = gen.survival_calibration_.to_dict()  # type: ignore[attr-defined]
    # Assert: the unconditioned draws' set is unchanged; the arms' set is the one those options give
    assert gen.unconditioned_calibration_.to_dict() == unconditioned  # type: ignore[attr-defined]
    assert own != shared
    # a target given to the fit sets both sets, the parameter's too
    gen.fit_survival_calibration(counts, target="hazard")  # type: ignore[attr-defined]
    both_hazard = gen.survival_calibration_.to_dict()  # type: ignore[attr-defined]
    gen.set_params(calibration_conditioned_target=None, calibration_conditioned_rows_only=False)  # type: ignore[attr-defined]
    gen.fit_survival_calibration(counts, target="hazard", read_unconditioned=False)  # type: ignore[attr-defined]
    assert gen.survival_calibration_.to_dict() == both_hazard  # type: ignore[attr-defined]
    gen.fit_survival_calibration(counts, target="median", read_unconditioned=False)  # type: ignore[attr-defined]
    assert gen.survival_calibration_.to_dict() == own  # type: ignore[attr-defined]
    # a centralized fit keeps one set, whatever the parameters say
    central = make_generator("vae_bgm", schema, calibration_conditioned_target="median",
                             calibration_conditioned_rows_only=True, **opts)
    central.fit(real)
    plain = make_generator("vae_bgm", schema, **opts)
    plain.fit(real)
    assert central.unconditioned_calibration_ is None  # type: ignore[attr-defined]
    assert central.survival_calibration_.to_dict() == plain.survival_calibration_.to_dict()  # type: ignore[attr-defined]
    # the two parameters need calibration_unconditioned (without it one set serves every draw)
    problems = validate_generator_params("vae_bgm", {"calibration_conditioned_target": "median",
                                                     "calibration_conditioned_rows_only": True})
    assert [p.where for p in problems] == ["calibration_conditioned_target", "calibration_conditioned_rows_only"]
    assert validate_generator_params("vae_bgm", {"calibration_conditioned_target": "median",
                                                 "calibration_conditioned_rows_only": True,
                                                 "calibration_unconditioned": True}) == []
    # without an intercept for a capped endpoint, only the relative target is allowed there too
    capped = validate_generator_params("vae_bgm", {"calibration_conditioned_target": "median",
                                                   "calibration_unconditioned": True, "survival_target": "hazard_ratio",
                                                   "calibration_capped_intercepts": False})
    assert [p.where for p in capped] == ["calibration_conditioned_target"]
