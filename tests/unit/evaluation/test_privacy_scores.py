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


def _records(x, c, g1, t=None):  # type: ignore[no-untyped-def]
    """Rows of the tiny schema; a row with x and T missing has no number known (categories only)."""
    x = np.asarray(x, float)
    t = x.copy() if t is None else np.asarray(t, float)
    return pd.DataFrame({"x": x, "c": pd.Series(c, dtype=object), "g1": np.asarray(g1, float),
                         "g2": np.zeros(len(x)), "T": t, "E": np.ones(len(x))})


def _kinds_frames():  # type: ignore[no-untyped-def]
    """Training: 10 rows with numbers (all different) and 6 with none: records (a, 0) and (b, 0) twice each, (c, 1)
    and (d, 1) once. Holdout: 4 rows with numbers (none equal to a training row) and 2 with none, one equal to
    (c, 1). Hand-counted baselines: with numbers 0 of 4 holdout rows; no numbers 4 recurring training rows + 1 holdout
    row of 6 + 2 real rows = 5 / 8."""
    train = pd.concat([_records(np.arange(10.0), ["a"] * 10, [0] * 10),
                       _records([NAN] * 6, ["a", "a", "b", "b", "c", "d"], [0, 0, 0, 0, 1, 1])], ignore_index=True)
    holdout = pd.concat([_records([20.5, 21.5, 22.5, 23.5], ["a"] * 4, [0] * 4),
                         _records([NAN, NAN], ["c", "e"], [1, 0])], ignore_index=True)
    return train, holdout


@pytest.mark.parametrize("copies, flagged", [(30, False), (32, True)])
def test_copies_of_records_with_no_number_are_judged_against_real_records_own_rate(tiny_schema, copies, flagged):
    # Setup: 20 new rows with numbers; 40 with none, `copies` of them equal to the shared record (a, 0)
    train, holdout = _kinds_frames()
    synthetic = pd.concat([_records(30.0 + np.arange(20), ["a"] * 20, [0] * 20),
                           _records([NAN] * 40, ["a"] * copies + ["z"] * (40 - copies), [0] * 40)], ignore_index=True)
    # Run
    out = privacy_analysis(train, synthetic, tiny_schema, holdout_data=holdout, rng=np.random.default_rng(0))
    # Assert: b = 5 / 8; the threshold b + 2 sqrt(b (1 - b) / 40) = 0.7781 (30 / 40 = 0.75 under it, 32 / 40 over)
    sparse = out["exact_copies_by_kind"]["no_numbers"]
    assert (sparse["real_rows"], sparse["real_coinciding"]) == (8, 5)
    assert sparse["baseline"] == pytest.approx(0.625)
    assert sparse["above"] == pytest.approx(0.625 + 2 * np.sqrt(0.625 * 0.375 / 40))
    assert (sparse["synthetic_rows"], sparse["copies"], sparse["flagged"]) == (40, copies, flagged)
    assert out["exact_copies"] == pytest.approx(copies / 60)
    assert out["exact_copies_by_kind"]["with_numbers"]["copies"] == 0
    assert ("exact_copies" in out["flags"]) is flagged


def test_one_copy_of_a_patient_with_numbers_is_flagged_whatever_sparse_records_share(tiny_schema):
    # Setup: 999 synthetic rows with numbers of which one equals training row 3; no sparse synthetic rows
    train, holdout = _kinds_frames()
    synthetic = pd.concat([train.iloc[[3]], _records(100.0 + np.arange(998), ["a"] * 998, [0] * 998)],
                          ignore_index=True)
    # Run
    out = privacy_analysis(train, synthetic, tiny_schema, holdout_data=holdout, rng=np.random.default_rng(0))
    # Assert: 0.1% of rows, and the records with no number coincide at 62.5%, but this kind's baseline is 0
    kind = out["exact_copies_by_kind"]["with_numbers"]
    assert kind["baseline"] == 0.0 and kind["copies"] == 1 and kind["flagged"]
    assert "exact_copies" in out["flags"]


def test_a_patient_entered_twice_in_training_does_not_excuse_copies_of_it(tiny_schema):
    # Setup: training row 3 (with numbers) appears twice; a synthetic row copies it
    train, holdout = _kinds_frames()
    twice = pd.concat([train, train.iloc[[3]]], ignore_index=True)
    synthetic = pd.concat([train.iloc[[3]], _records(100.0 + np.arange(99), ["a"] * 99, [0] * 99)], ignore_index=True)
    # Run
    out = privacy_analysis(twice, synthetic, tiny_schema, holdout_data=holdout, rng=np.random.default_rng(0))
    # Assert: training coincidences of records with numbers are not a baseline
    assert out["exact_copies_by_kind"]["with_numbers"]["baseline"] == 0.0
    assert "exact_copies" in out["flags"]


def test_without_a_holdout_copies_are_judged_on_the_training_rows_alone(tiny_schema):
    # Setup
    train, _ = _kinds_frames()
    synthetic = _records([NAN] * 10, ["a"] * 5 + ["z"] * 5, [0] * 10)
    # Run
    out = privacy_analysis(train, synthetic, tiny_schema, rng=np.random.default_rng(0))
    # Assert: no number known: 4 of 6 training rows recur (b = 2/3); 5 of 10 copies are within it
    sparse = out["exact_copies_by_kind"]["no_numbers"]
    assert sparse["baseline"] == pytest.approx(4 / 6) and not sparse["flagged"]
    assert out["exact_copies_holdout"] is None and out["flags"] == []
    # a copy of a row with numbers is flagged from the first
    out2 = privacy_analysis(train, pd.concat([synthetic, train.iloc[[0]]], ignore_index=True), tiny_schema,
                            rng=np.random.default_rng(0))
    assert out2["flags"] == ["exact_copies"] and out2["exact_copies_by_kind"]["with_numbers"]["flagged"]
