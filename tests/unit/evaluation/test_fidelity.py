"""Column and pair fidelity on hand-made tables equal hand-computed values (and SDMetrics where they overlap)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsynth.evaluation.fidelity import column_fidelity, detection_auc, pair_fidelity

NAN = np.nan


def _frame(x, c, g1=None, g2=None, T=None, E=None):  # type: ignore[no-untyped-def]
    n = len(x)
    return pd.DataFrame({
        "x": np.asarray(x, float), "c": pd.Series(c, dtype=object),
        "g1": np.asarray(g1 if g1 is not None else [0.0] * n, float), "g2": np.asarray(g2 if g2 is not None else [0.0] * n, float),
        "T": np.asarray(T if T is not None else np.arange(1, n + 1), float), "E": np.asarray(E if E is not None else [1.0] * n, float),
    })


def test_column_similarity_is_one_minus_ks_and_one_minus_tvd_with_missing_as_a_state(tiny_schema):
    # Setup: x real {1,2,3,4,NaN} vs synthetic {1,2,3,10,NaN}: KS = 0.25.
    # c real (a, a, b, NaN, b) -> a .4, b .4, missing .2; synthetic (a, b, b, b, b) -> a .2, b .8: TVD = .4
    real = _frame([1, 2, 3, 4, NAN], ["a", "a", "b", NAN, "b"])
    syn = _frame([1, 2, 3, 10, NAN], ["a", "b", "b", "b", "b"])
    # Run
    out = column_fidelity(real, syn, tiny_schema)
    # Assert
    assert out["columns"]["x"]["similarity"] == pytest.approx(0.75)
    assert out["columns"]["x"]["missing_similarity"] == pytest.approx(1.0)
    assert out["columns"]["c"]["similarity"] == pytest.approx(0.6)
    assert out["columns"]["c"]["missing_real"] == pytest.approx(0.2)
    assert out["columns"]["c"]["missing_similarity"] == pytest.approx(0.8)
    assert out["columns"]["x"]["test"] == "ks" and out["columns"]["c"]["test"] == "chi2"
    p_values = [e["p_value"] for e in out["columns"].values()]
    assert out["tests_passed"] == pytest.approx(np.mean([p >= 0.05 for p in p_values]))


def test_column_similarity_equals_sdmetrics_when_nothing_is_missing(tiny_schema):
    # Setup
    from sdmetrics.single_column import KSComplement, TVComplement

    rng = np.random.default_rng(3)
    real = _frame(rng.normal(size=200), rng.choice(["a", "b", "c"], 200).tolist())
    syn = _frame(rng.normal(0.3, 1.2, size=150), rng.choice(["a", "b", "c"], 150, p=[0.5, 0.3, 0.2]).tolist())
    # Run
    out = column_fidelity(real, syn, tiny_schema)
    # Assert
    assert out["columns"]["x"]["similarity"] == pytest.approx(KSComplement.compute(real["x"], syn["x"]))
    assert out["columns"]["c"]["similarity"] == pytest.approx(TVComplement.compute(real["c"], syn["c"]))


def test_pair_fidelity_is_correlation_and_contingency_similarity(tiny_schema):
    # Setup: x and T perfectly concordant in real (rho 1), discordant in synthetic (rho -1) -> similarity 0.
    # g1/g2 joint real: (1,1) x2, (0,0) x2 -> shares .5/.5; synthetic (1,0) x2, (0,1) x2 -> TVD 1 -> 0.
    real = _frame([1, 2, 3, 4], ["a", "a", "b", "b"], g1=[1, 1, 0, 0], g2=[1, 1, 0, 0], T=[1, 2, 3, 4])
    syn = _frame([1, 2, 3, 4], ["a", "a", "b", "b"], g1=[1, 1, 0, 0], g2=[0, 0, 1, 1], T=[4, 3, 2, 1])
    # Run
    out = pair_fidelity(real, syn, tiny_schema)
    pairs = {(a, b): (t, s) for a, b, t, s in out["pairs"]}
    # Assert
    assert pairs[("x", "T")] == ("correlation", pytest.approx(0.0))
    assert pairs[("g1", "g2")] == ("contingency", pytest.approx(0.0))
    assert pairs[("c", "g1")] == ("contingency", pytest.approx(1.0))
    assert out["n_pairs"] == 15


def test_detection_auc_is_near_half_for_rows_from_one_distribution(tiny_schema):
    # Setup
    rng = np.random.default_rng(0)
    make = lambda n: _frame(rng.normal(size=n), rng.choice(["a", "b"], n).tolist(), g1=rng.integers(0, 2, n))
    # Run
    out = detection_auc(make(400), make(400), tiny_schema, random_state=0)
    # Assert
    assert 0.4 < out["auc"] < 0.6
