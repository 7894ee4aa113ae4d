"""TSTR: the multivariable Cox fit equals lifelines without ties; C-index on real halves is close to train-on-real."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsynth.evaluation.utility import cox_fit, tstr_analysis


def test_cox_fit_equals_lifelines_coxphfitter_without_tied_times():
    # Setup: continuous times (no ties, where Breslow = Efron), correlated covariates, censoring
    from lifelines import CoxPHFitter

    rng = np.random.default_rng(0)
    n = 400
    X = rng.normal(size=(n, 3))
    X[:, 2] = (X[:, 0] + rng.normal(size=n) > 0).astype(float)
    T = rng.exponential(np.exp(-(0.7 * X[:, 0] - 0.4 * X[:, 1] + 0.5 * X[:, 2])))
    E = (rng.random(n) < 0.7).astype(float)
    frame = pd.DataFrame(X, columns=["a", "b", "c"]).assign(T=T, E=E)
    # Run
    beta = cox_fit(X, T, E, penalizer=0.1)
    # Assert
    ref = CoxPHFitter(penalizer=0.1).fit(frame, "T", "E").params_.to_numpy()
    np.testing.assert_allclose(beta, ref, rtol=1e-5, atol=1e-7)


def test_tstr_on_a_real_half_is_close_to_train_on_real(mds_split):
    # Setup
    schema, holdout, a, b = mds_split
    # Run
    out = tstr_analysis(a, b, schema, holdout_data=holdout)
    # Assert
    assert out["evaluated_on"] == "holdout"
    for ep in ("OS", "LFS"):
        res = out["endpoints"][ep]
        assert 0.65 < res["c_index_train_real"] < 0.85
        assert res["ratio"] == pytest.approx(1.0, abs=0.08)
