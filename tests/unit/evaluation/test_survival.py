"""Survival pieces: KM by hand, log-rank wiring, the batched Cox engine equal to CoxPHFitter, the cached CoxPHFitter path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsynth.evaluation.cox import cox_multivariate, coxph_univariate, univariate_cox
from fedsynth.evaluation.survival import hazard_ratio_analysis, survival_analysis


def _surv(T, E, x=None, c=None):  # type: ignore[no-untyped-def]
    n = len(T)
    return pd.DataFrame({
        "x": np.asarray(x if x is not None else np.zeros(n), float),
        "c": pd.Series(c if c is not None else ["a"] * n, dtype=object),
        "g1": np.zeros(n), "g2": np.zeros(n), "T": np.asarray(T, float), "E": np.asarray(E, float),
    })


def test_kaplan_meier_curve_and_similarity_equal_hand_computed_values(tiny_schema):
    # Setup: times 1..4, events 1,0,1,1 -> S = 1 on [0,1), 3/4 on [1,3), 3/8 on [3,4)
    real = _surv([1, 2, 3, 4], [1, 0, 1, 1])
    syn = _surv([1, 2, 3, 4], [0, 0, 0, 0])  # no events: S = 1 everywhere
    # Run
    out = survival_analysis(real, syn, tiny_schema, strata=[], rng=np.random.default_rng(0))
    # Assert
    ep = out["S"]
    grid = np.linspace(0, np.quantile([1, 2, 3, 4], 0.9), 101)
    hand = np.where(grid < 1, 1.0, np.where(grid < 3, 0.75, 0.375))
    np.testing.assert_allclose(ep["overall"]["real"], hand)
    assert ep["overall"]["curve_similarity"] == pytest.approx(1 - np.mean(np.abs(hand - 1.0)))
    assert ep["overall"]["median_real"] == pytest.approx(3.0)


def test_stratum_log_rank_equals_lifelines_and_direction_agrees(tiny_schema):
    # Setup: group b dies earlier than group a, in real and synthetic
    from lifelines.statistics import logrank_test

    rng = np.random.default_rng(1)
    n = 120
    grp = np.array(["a", "b"] * (n // 2), dtype=object)
    T = rng.exponential(np.where(grp == "a", 3.0, 1.0)) + 0.01
    E = (rng.random(n) < 0.8).astype(float)
    real = _surv(T, E, c=list(grp))
    # Run
    out = survival_analysis(real, real.copy(), tiny_schema, strata=["c"], rng=np.random.default_rng(0))
    # Assert
    st = out["S"]["strata"]["c"]
    ref = logrank_test(T[grp == "a"], T[grp == "b"], E[grp == "a"], E[grp == "b"])
    assert st["logrank_p_real"] == pytest.approx(ref.p_value)
    assert st["direction_agreement"] == 1.0
    assert st["groups"]["a"]["rmst_real"] > st["groups"]["b"]["rmst_real"]


def test_batched_univariate_cox_equals_lifelines_coxphfitter_to_1e6_with_missing_values_and_ties(mds_cohort):
    # Setup: real cohort, variables with missing values (HB, ANC), a gene, an indicator; many tied times.
    # CoxPHFitter is run to a tight tolerance so that its own stopping error is below the 1e-6 compared.
    from lifelines import CoxPHFitter

    data = mds_cohort.data.iloc[:800]
    cols = ["HB", "ANC", "TP53", "AGE"]
    X = data[cols].to_numpy(float)
    # Run
    res = univariate_cox(data["OS_YEARS"].to_numpy(), data["OS_STATUS"].to_numpy(), X, penalizer=0.01)
    # Assert
    for i, c in enumerate(cols):
        frame = data[[c, "OS_YEARS", "OS_STATUS"]].dropna()
        ref = CoxPHFitter(penalizer=0.01).fit(frame, "OS_YEARS", "OS_STATUS", fit_options={"precision": 1e-12})
        assert res["coef"][i] == pytest.approx(ref.params_[c], rel=1e-6)
        assert res["se"][i] == pytest.approx(ref.standard_errors_[c], rel=1e-6)
        assert res["coef"][i] / res["se"][i] == pytest.approx(ref.summary.loc[c, "z"], rel=1e-6)
        # p (~5e-5 for HB) amplifies the 1e-7 differences of z by about z**2
        assert res["p"][i] == pytest.approx(ref.summary.loc[c, "p"], rel=1e-5)
        assert res["n"][i] == len(frame)


def test_coxph_univariate_matches_the_batched_fit_gives_nan_for_a_constant_column_and_is_cached(mds_cohort):
    # Setup: three real variables and a constant column
    data = mds_cohort.data.iloc[:400]
    X = np.column_stack([data[["HB", "TP53", "AGE"]].to_numpy(float), np.ones(len(data))])
    T, E = data["OS_YEARS"].to_numpy(), data["OS_STATUS"].to_numpy()
    # Run
    first = coxph_univariate(T, E, X)
    again = coxph_univariate(T, E, X)
    batched = univariate_cox(T, E, X)
    # Assert
    np.testing.assert_allclose(first["coef"][:3], batched["coef"][:3], rtol=1e-6)
    np.testing.assert_allclose(first["p"][:3], batched["p"][:3], rtol=1e-6)
    assert np.isnan(first["coef"][3]) and np.isnan(first["p"][3])
    for k in ("coef", "se", "p"):
        np.testing.assert_array_equal(first[k], again[k])


def test_hazard_ratio_table_says_which_estimator_made_it(tiny_schema):
    # Setup: x raises the hazard (short times for large x)
    rng = np.random.default_rng(3)
    x = rng.normal(size=200)
    T = rng.exponential(np.exp(-x)) + 0.01
    real = _surv(T, np.ones(200), x=x)
    # Run
    batched = hazard_ratio_analysis(real, real.copy(), tiny_schema, None)
    lifelines = hazard_ratio_analysis(real, real.copy(), tiny_schema, None, engine="lifelines")
    # Assert
    assert lifelines["estimator"] == "lifelines CoxPHFitter" and batched["estimator"].startswith("fedsynth batched")
    row = next(r for r in lifelines["rows"] if r["variable"] == "x")
    assert row["log_hr_real"] > 0.5 and row["significant_real"]
    assert row["log_hr_real"] == pytest.approx(next(r for r in batched["rows"] if r["variable"] == "x")["log_hr_real"], rel=1e-6)
    with pytest.raises(ValueError, match="cox_engine must be one of 'batched', 'lifelines'"):
        hazard_ratio_analysis(real, real.copy(), tiny_schema, None, engine="screen")


def test_multivariate_cox_equals_lifelines_coxphfitter_to_1e6_on_the_tstr_design(mds_cohort):
    # Setup: the TSTR covariates of the real cohort (52 columns: numbers, level indicators, genes; many ties)
    import warnings

    from lifelines import CoxPHFitter

    from fedsynth.evaluation.utility import TSTR_PENALIZER, _matrix, covariate_spec

    data = mds_cohort.data
    spec = covariate_spec(data, mds_cohort.schema)
    rows = data[data["OS_YEARS"].notna() & data["OS_STATUS"].notna()]
    X = _matrix(rows, spec, {c: float(rows[c].median()) for _, c, lv in spec if lv is None})
    X = X.loc[:, X.std() > 0]
    frame = X.reset_index(drop=True).assign(T=rows["OS_YEARS"].to_numpy(), E=rows["OS_STATUS"].to_numpy() > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = CoxPHFitter(penalizer=TSTR_PENALIZER).fit(frame, "T", "E", fit_options={"precision": 1e-12})
    # Run
    res = cox_multivariate(rows["OS_YEARS"].to_numpy(), rows["OS_STATUS"].to_numpy(), X.to_numpy(), penalizer=TSTR_PENALIZER)
    # Assert
    assert X.shape[1] > 40 and res["n"] == len(rows)
    np.testing.assert_allclose(res["coef"], ref.params_.to_numpy(), atol=1e-6)
    np.testing.assert_allclose(res["se"], ref.standard_errors_.to_numpy(), atol=1e-6)


def test_multivariate_cox_by_hand_for_one_binary_covariate_without_ties():
    # Setup: 4 rows, x = 1, 0, 1, 0, all events at times 1..4. The partial likelihood of b is
    # e^b/(2e^b+2) * 1/(e^b+2) * e^b/(e^b+1) * 1, maximised where its derivative vanishes (solved by scipy).
    from scipy.optimize import brentq

    T, E, x = np.array([1.0, 2, 3, 4]), np.ones(4), np.array([1.0, 0, 1, 0])

    def score(b: float) -> float:
        return (1 - 2 * np.exp(b) / (2 * np.exp(b) + 2)) - np.exp(b) / (np.exp(b) + 2) + (1 - np.exp(b) / (np.exp(b) + 1))

    # Run
    res = cox_multivariate(T, E, x, penalizer=0.0)
    # Assert
    assert res["coef"][0] == pytest.approx(brentq(score, -5, 5), abs=1e-8)


def test_univariate_cox_gives_nan_for_a_constant_column():
    # Setup
    T = np.array([1.0, 2.0, 3.0, 4.0])
    E = np.array([1.0, 1.0, 0.0, 1.0])
    # Run
    res = univariate_cox(T, E, np.ones((4, 1)))
    # Assert
    assert np.isnan(res["coef"][0]) and np.isnan(res["p"][0])


def test_median_is_none_when_the_curve_never_reaches_one_half():
    # Setup: one death among ten -> S never below 0.9
    from fedsynth.evaluation.survival import _km_on_grid

    T = np.arange(1.0, 11.0)
    E = np.r_[1.0, np.zeros(9)]
    # Run
    curve, median = _km_on_grid(T, E, np.array([0.0, 0.5, 1.0, 5.0]))
    # Assert
    np.testing.assert_allclose(curve, [1.0, 1.0, 0.9, 0.9])
    assert median is None


def test_logrank_is_nan_for_one_group_and_small_for_separated_groups():
    # Setup
    from fedsynth.evaluation.survival import logrank

    T = np.r_[np.arange(1.0, 21.0), np.arange(30.0, 50.0)]
    E = np.ones(40)
    g = np.array(["a"] * 20 + ["b"] * 20, dtype=object)
    # Run / Assert
    assert np.isnan(logrank(T, np.array(["a"] * 40, dtype=object), E))
    assert logrank(T, g, E) < 1e-6


def test_restricted_mean_survival_time_is_the_hand_computed_area_under_the_curve():
    # Setup: S = 1 on [0,1), 3/4 on [1,3), 3/8 from 3; horizon 3.7 -> area 1 + 0.75 * 2 + 0.375 * 0.7
    from fedsynth.evaluation.survival import _km_summary

    grid = np.linspace(0.0, 3.7, 101)
    # Run
    _, median, rmst = _km_summary(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 0.0, 1.0, 1.0]), grid)
    # Assert
    assert rmst == pytest.approx((1 + 0.75 * 2 + 0.375 * 0.7) / 3.7)
    assert median == pytest.approx(3.0)


def test_kaplan_meier_median_and_rmst_equal_lifelines_on_the_real_cohort(mds_cohort):
    # Setup: OS and LFS overall and in the TP53-mutated group (ties, censoring, a curve crossing 1/2)
    from lifelines import KaplanMeierFitter
    from lifelines.utils import restricted_mean_survival_time

    from fedsynth.evaluation.survival import _km_summary

    data = mds_cohort.data
    for dur, ev in (("OS_YEARS", "OS_STATUS"), ("LFS_YEARS", "LFS_STATUS")):
        for rows in (data, data[data["TP53"] == 1]):
            rows = rows[rows[dur].notna() & rows[ev].notna()]
            T, E = rows[dur].to_numpy(), rows[ev].to_numpy()
            grid = np.linspace(0.0, float(np.quantile(T, 0.9)), 101)
            kmf = KaplanMeierFitter().fit(T, E > 0)
            # Run
            curve, median, rmst = _km_summary(T, E, grid)
            # Assert
            np.testing.assert_allclose(curve, kmf.survival_function_at_times(grid).to_numpy(), atol=1e-12)
            assert median == pytest.approx(kmf.median_survival_time_, rel=1e-12)
            assert rmst == pytest.approx(restricted_mean_survival_time(kmf, t=grid[-1]) / grid[-1], rel=1e-10)


def test_two_and_five_group_log_rank_equal_lifelines_on_the_real_cohort(mds_cohort):
    # Setup: TP53 status (two groups, scipy's test) and IPSS-R group (five or more, lifelines' test)
    from lifelines.statistics import multivariate_logrank_test

    from fedsynth.evaluation.survival import logrank

    data = mds_cohort.data
    for col in ("TP53", "IPSSR"):
        rows = data[data[col].notna() & data["OS_YEARS"].notna()]
        g = rows[col].astype(str).to_numpy()
        T, E = rows["OS_YEARS"].to_numpy(), rows["OS_STATUS"].to_numpy()
        # Run
        p = logrank(T, g, E)
        # Assert
        ref = multivariate_logrank_test(T, g, E > 0).p_value
        assert p == pytest.approx(ref, rel=1e-6) or (p < 1e-300 and ref < 1e-300)
