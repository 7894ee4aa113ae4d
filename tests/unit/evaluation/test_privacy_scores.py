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


def _real_frames():  # type: ignore[no-untyped-def]
    """Training: 10 rows with numbers, all different; 5 with none: record (a, 0) twice, (b, 1), (c, 1), (d, 0) once
    each. Holdout: 2 rows with numbers (x = 20.5; x = 4, equal to training row 4: one patient in both files?) and one
    with none, (c, 1). Records with no number that two real rows hold: (a, 0) and (c, 1)."""
    train = pd.concat([_records(np.arange(10.0), ["a"] * 10, [0] * 10),
                       _records([NAN] * 5, ["a", "a", "b", "c", "d"], [0, 0, 1, 1, 0])], ignore_index=True)
    holdout = pd.concat([_records([20.5, 4.0], ["a", "a"], [0, 0]), _records([NAN], ["c"], [1])], ignore_index=True)
    return train, holdout


def _synthetic(records):  # type: ignore[no-untyped-def]
    """40 rows: ``records`` (a frame) first, then new rows with numbers no real row has."""
    fill = _records(100.0 + np.arange(40 - len(records)), ["a"] * (40 - len(records)), [0] * (40 - len(records)))
    return pd.concat([records, fill], ignore_index=True)


def test_copies_of_records_several_real_patients_hold_are_reported_not_flagged(tiny_schema):
    # Setup: 3 copies of (a, 0) (two training rows), 2 of (c, 1) (a training and a holdout row)
    train, holdout = _real_frames()
    shared = pd.concat([train.iloc[[10, 10, 11, 13, 13]]], ignore_index=True)
    # Run
    out = privacy_analysis(train, _synthetic(shared), tiny_schema, holdout_data=holdout, rng=np.random.default_rng(0))
    # Assert: hand-counted; 5 of 40 rows copy a record two real rows hold; none copies one patient's own
    c = out["exact_copies_counts"]
    assert (c["copies"], c["copies_shared"], c["copies_one_patient"]) == (5, 5, 0)
    assert c["shared_training_rows"] == 3 and c["likely_duplicated_training_rows"] == 0  # rows 10, 11, 13
    assert out["exact_copies"] == pytest.approx(5 / 40) and out["exact_copies_shared"] == pytest.approx(5 / 40)
    assert out["exact_copies_one_patient"] == 0.0 and "exact_copies" not in out["flags"]


@pytest.mark.parametrize("row", [3, 12, 14])  # with numbers; (b, 1) and (d, 0): no number, one patient each
def test_one_copy_of_a_record_one_patient_holds_is_flagged(tiny_schema, row):
    # Setup: 3 copies of records several real rows hold, and one of a record only training row `row` holds
    train, holdout = _real_frames()
    synthetic = _synthetic(train.iloc[[10, 10, 13, row]].reset_index(drop=True))
    # Run
    out = privacy_analysis(train, synthetic, tiny_schema, holdout_data=holdout, rng=np.random.default_rng(0))
    # Assert
    assert out["exact_copies_counts"]["copies_one_patient"] == 1
    assert out["exact_copies_one_patient"] == pytest.approx(1 / 40) and "exact_copies" in out["flags"]


def test_a_patient_entered_twice_in_training_is_still_one_patient(tiny_schema):
    # Setup: training row 3 (with numbers) appears twice; a synthetic row copies it
    train, holdout = _real_frames()
    twice = pd.concat([train, train.iloc[[3]]], ignore_index=True)
    # Run
    out = privacy_analysis(twice, _synthetic(train.iloc[[3]]), tiny_schema, holdout_data=holdout,
                           rng=np.random.default_rng(0))
    # Assert: two equal training rows with a number known are one patient's record, not a shared one
    assert out["exact_copies_counts"]["likely_duplicated_training_rows"] == 2
    assert out["exact_copies_counts"]["copies_one_patient"] == 1 and "exact_copies" in out["flags"]


def test_a_record_with_numbers_in_both_training_and_holdout_is_one_patients(tiny_schema):
    # Setup: training row 4 (x = 4) is in the holdout too: the same patient in both files, most likely
    train, holdout = _real_frames()
    # Run
    out = privacy_analysis(train, _synthetic(train.iloc[[4]]), tiny_schema, holdout_data=holdout,
                           rng=np.random.default_rng(0))
    # Assert
    assert out["exact_copies_counts"]["copies_one_patient"] == 1 and "exact_copies" in out["flags"]


@pytest.mark.parametrize("rounding", ["float32", "6 significant digits"])
def test_a_copy_equal_up_to_rounding_is_still_a_copy(tiny_schema, rounding):
    # Setup: training rows 7 (x = T = 7) and 3 with x and T nudged as float32 storage or a 6-digit CSV would
    train, holdout = _real_frames()
    train = train.copy()
    train.loc[:9, "x"] = train.loc[:9, "x"] + 0.1234567891
    train["T"] = train["x"]
    near = train.iloc[[7, 3]].copy()
    for col in ("x", "T"):
        near[col] = (near[col].astype(np.float32).astype(float) if rounding == "float32"
                     else near[col].map(lambda v: float(f"{v:.6g}")))
    assert (near["x"] != train.iloc[[7, 3]]["x"]).all()  # not bit-equal
    # Run
    out = privacy_analysis(train, _synthetic(near.reset_index(drop=True)), tiny_schema, holdout_data=holdout,
                           rng=np.random.default_rng(0))
    # Assert
    assert out["exact_copies_counts"]["copies_one_patient"] == 2 and "exact_copies" in out["flags"]


def test_a_zero_written_as_minus_zero_is_still_a_copy(tiny_schema):
    # Setup: training row 0 has x = 0 and T = 0; the synthetic row writes both as -0.0
    train, holdout = _real_frames()
    copy = train.iloc[[0]].copy()
    copy["x"], copy["T"] = -0.0, -0.0
    # Run
    out = privacy_analysis(train, _synthetic(copy.reset_index(drop=True)), tiny_schema, holdout_data=holdout,
                           rng=np.random.default_rng(0))
    # Assert
    assert out["exact_copies_counts"]["copies_one_patient"] == 1 and "exact_copies" in out["flags"]


def test_without_a_holdout_records_are_shared_only_among_training_rows(tiny_schema):
    # Setup: (c, 1) is held by one training row alone when the holdout is not given
    train, _ = _real_frames()
    # Run
    shared = privacy_analysis(train, _synthetic(train.iloc[[10]]), tiny_schema, rng=np.random.default_rng(0))
    alone = privacy_analysis(train, _synthetic(train.iloc[[13]]), tiny_schema, rng=np.random.default_rng(0))
    # Assert
    assert shared["exact_copies_holdout"] is None and shared["flags"] == []
    assert alone["flags"] == ["exact_copies"] and alone["exact_copies_counts"]["copies_one_patient"] == 1
