"""Gower distances, NNDR and exact copies on hand-made rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsynth.evaluation.privacy import gower_matrix, nndr, privacy_analysis

NAN = np.nan


def _rows(x, c, g1):  # type: ignore[no-untyped-def]
    n = len(x)
    return pd.DataFrame({"x": np.asarray(x, float), "c": pd.Series(c, dtype=object), "g1": np.asarray(g1, float),
                         "g2": np.zeros(n), "T": np.ones(n), "E": np.ones(n)})


def test_gower_distance_equals_hand_computed_values_with_missing(tiny_schema):
    # Setup: real x in [0, 10] (range 10); six columns, four of them equal in every row below
    real = _rows([0, 10], ["a", "b"], [0, 1])
    query = _rows([5, NAN, NAN], ["a", "a", NAN], [0, 0, 1])
    # Run
    D = gower_matrix(real, query, tiny_schema).T  # ranges from the real rows
    # Assert: row 0 vs real 0: x .5, c 0, g1 0 -> .5/6; vs real 1: .5 + 1 + 1 -> 2.5/6
    assert D[0, 0] == pytest.approx(0.5 / 6)
    assert D[0, 1] == pytest.approx(2.5 / 6)
    # missing x vs a value = 1
    assert D[1, 0] == pytest.approx(1 / 6)
    # missing category vs a label = 1; missing x vs a value = 1; g1 equal to real row 1 -> 2/6
    assert D[2, 1] == pytest.approx(2 / 6)


def test_gower_counts_missing_against_missing_as_equal(tiny_schema):
    # Setup
    a = _rows([NAN, 1], [NAN, "a"], [0, 0])
    # Run
    D = gower_matrix(a, a, tiny_schema)
    # Assert
    assert D[0, 0] == 0.0 and D[1, 1] == 0.0


def test_nndr_is_zero_for_copies_and_the_distance_ratio_otherwise():
    assert nndr(np.array([0.0, 0.25]), np.array([0.0, 0.75])).tolist() == pytest.approx([0.0, 1 / 3])


def test_a_copy_of_the_training_rows_is_flagged_by_every_privacy_figure(mds_split):
    # Setup
    schema, holdout, a, _ = mds_split
    # Run
    out = privacy_analysis(a, a.copy(), schema, holdout_data=holdout, rng=np.random.default_rng(0))
    # Assert
    assert out["nndr"]["synthetic"]["p5"] == 0.0
    assert out["nndr"]["synthetic"]["mean"] == 0.0
    assert out["exact_copies"] == 1.0
    assert out["mia_auc"] > 0.9
    assert out["dcr_share"] > out["thresholds"]["dcr_share_above"]
    assert set(out["flags"]) == {"nndr_mean", "nndr_p5", "dcr_share", "mia_auc", "exact_copies"}
