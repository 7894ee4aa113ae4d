"""Survival pieces against references: KM by hand and lifelines, log-rank from lifelines, Cox equal to CoxPHFitter."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsynth.evaluation.survival import survival_analysis, univariate_cox


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


def test_univariate_cox_equals_lifelines_coxphfitter_with_missing_values_and_ties(mds_cohort):
    # Setup: real cohort, variables with missing values (HB, ANC), a gene, an indicator; many tied times.
    from lifelines import CoxPHFitter

    data = mds_cohort.data.iloc[:800]
    cols = ["HB", "ANC", "TP53", "AGE"]
    X = data[cols].to_numpy(float)
    # Run
    res = univariate_cox(data["OS_YEARS"].to_numpy(), data["OS_STATUS"].to_numpy(), X, penalizer=0.01)
    # Assert
    for i, c in enumerate(cols):
        frame = data[[c, "OS_YEARS", "OS_STATUS"]].dropna()
        ref = CoxPHFitter(penalizer=0.01).fit(frame, "OS_YEARS", "OS_STATUS")
        assert res["coef"][i] == pytest.approx(ref.params_[c], rel=1e-4)
        assert res["se"][i] == pytest.approx(ref.standard_errors_[c], rel=1e-4)
        assert res["p"][i] == pytest.approx(ref.summary.loc[c, "p"], rel=1e-3)
        assert res["n"][i] == len(frame)


def test_univariate_cox_gives_nan_for_a_constant_column():
    # Setup
    T = np.array([1.0, 2.0, 3.0, 4.0])
    E = np.array([1.0, 1.0, 0.0, 1.0])
    # Run
    res = univariate_cox(T, E, np.ones((4, 1)))
    # Assert
    assert np.isnan(res["coef"][0]) and np.isnan(res["p"][0])


def test_kaplan_meier_and_median_equal_lifelines_with_ties(mds_cohort):
    # Setup: OS of 600 patients (tied times, censoring)
    from lifelines import KaplanMeierFitter

    from fedsynth.evaluation.survival import _km_on_grid

    d = mds_cohort.data.iloc[:600][["OS_YEARS", "OS_STATUS"]].dropna()
    grid = np.linspace(0, 8, 57)
    # Run
    curve, median = _km_on_grid(d["OS_YEARS"].to_numpy(), d["OS_STATUS"].to_numpy(), grid)
    # Assert
    kmf = KaplanMeierFitter().fit(d["OS_YEARS"], d["OS_STATUS"])
    np.testing.assert_allclose(curve, kmf.survival_function_at_times(grid).to_numpy(), atol=1e-12)
    assert median == pytest.approx(kmf.median_survival_time_)


def test_logrank_equals_lifelines_for_two_and_five_groups(mds_cohort):
    # Setup
    from lifelines.statistics import multivariate_logrank_test

    from fedsynth.evaluation.survival import logrank

    d = mds_cohort.data[["OS_YEARS", "OS_STATUS", "TP53", "IPSSR"]].dropna()
    for col in ("TP53", "IPSSR"):
        # Run
        p = logrank(d["OS_YEARS"].to_numpy(), d[col].to_numpy(), d["OS_STATUS"].to_numpy())
        # Assert
        ref = multivariate_logrank_test(d["OS_YEARS"], d[col], d["OS_STATUS"]).p_value
        assert p == pytest.approx(ref, rel=1e-6, abs=1e-300)
    sub = d.iloc[:150]
    p = logrank(sub["OS_YEARS"].to_numpy(), sub["IPSSR"].to_numpy(), sub["OS_STATUS"].to_numpy())
    assert p == pytest.approx(multivariate_logrank_test(sub["OS_YEARS"], sub["IPSSR"], sub["OS_STATUS"]).p_value, rel=1e-6)
