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


def _coinciding_records():  # type: ignore[no-untyped-def]
    """10 training rows of which rows 0 and 1 are one record two patients share, and 5 holdout rows of which one
    equals training row 5 (hand-counted: training 2 / 10, holdout 1 / 5, pooled 3 / 15 = 0.2)."""
    x = [0.0, 0.0, 1, 2, 3, 4, 5, 6, 7, 8]
    train = _rows(x, ["a"] * 10, [0] * 10)
    holdout = _rows([4.0, 10.5, 11.5, 12.5, 13.5], ["a"] * 5, [0] * 5)
    return train, holdout


@pytest.mark.parametrize("copies, flagged", [(1, False), (4, False), (5, True)])
def test_exact_copies_are_judged_against_real_records_own_rate_of_coinciding(tiny_schema, copies, flagged):
    # Setup: 20 synthetic rows, `copies` of them equal to the shared training record, the rest new values
    train, holdout = _coinciding_records()
    synthetic = _rows([0.0] * copies + [20.0 + i for i in range(20 - copies)], ["a"] * 20, [0] * 20)
    # Run
    out = privacy_analysis(train, synthetic, tiny_schema, holdout_data=holdout, rng=np.random.default_rng(0))
    # Assert: hand-counted shares; flagged only above the pooled rate (0.2: 4 of 20 is not above it)
    assert out["exact_copies"] == pytest.approx(copies / 20)
    assert out["exact_copies_training"] == pytest.approx(0.2)
    assert out["exact_copies_holdout"] == pytest.approx(0.2)
    assert out["exact_copies_baseline"] == pytest.approx(3 / 15)
    assert out["thresholds"]["exact_copies_above"] == pytest.approx(0.2)
    assert ("exact_copies" in out["flags"]) is flagged


def test_exact_copies_baseline_without_a_holdout_is_the_training_rows_own_rate(tiny_schema):
    # Setup
    train, _ = _coinciding_records()
    synthetic = _rows([0.0] * 5 + [20.0 + i for i in range(15)], ["a"] * 20, [0] * 20)
    # Run
    out = privacy_analysis(train, synthetic, tiny_schema, rng=np.random.default_rng(0))
    # Assert: 2 of 10 training rows share a record; 5 of 20 synthetic rows copy one
    assert out["exact_copies_holdout"] is None
    assert out["exact_copies_baseline"] == pytest.approx(0.2)
    assert out["flags"] == ["exact_copies"] and "training rows alone" in out["note"]


def test_exact_copies_of_distinct_training_records_have_a_zero_baseline(tiny_schema):
    # Setup: no two training rows equal and no holdout row equal to one: any copy is above the baseline
    train = _rows(list(range(10)), ["a"] * 10, [0] * 10)
    holdout = _rows([10.5, 11.5, 12.5], ["a"] * 3, [0] * 3)
    synthetic = _rows([3.0] + [20.0 + i for i in range(19)], ["a"] * 20, [0] * 20)
    # Run
    out = privacy_analysis(train, synthetic, tiny_schema, holdout_data=holdout, rng=np.random.default_rng(0))
    # Assert
    assert out["exact_copies_baseline"] == 0.0 and out["exact_copies"] == pytest.approx(0.05)
    assert "exact_copies" in out["flags"]
