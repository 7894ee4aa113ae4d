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
    each. Holdout: 2 rows with numbers (x = 20.5; x = 4, equal to training row 4) and one with none, (c, 1). The one
    record with no number known that several training rows share: (a, 0) (rows 10 and 11)."""
    train = pd.concat([_records(np.arange(10.0), ["a"] * 10, [0] * 10),
                       _records([NAN] * 5, ["a", "a", "b", "c", "d"], [0, 0, 1, 1, 0])], ignore_index=True)
    holdout = pd.concat([_records([20.5, 4.0], ["a", "a"], [0, 0]), _records([NAN], ["c"], [1])], ignore_index=True)
    return train, holdout


def _synthetic(records, n=40):  # type: ignore[no-untyped-def]
    """``n`` rows: ``records`` (a frame) first, then new rows with numbers no real row has."""
    k = n - len(records)
    return pd.concat([records, _records(100.0 + np.arange(k), ["a"] * k, [0] * k)], ignore_index=True)


def test_copies_of_a_shared_record_with_no_number_are_set_apart_on_both_sides(tiny_schema):
    # Setup: 4 of 40 synthetic rows copy (a, 0), which training rows 10 and 11 share
    train, holdout = _real_frames()
    # Run
    out = privacy_analysis(train, _synthetic(train.iloc[[10, 10, 11, 10]]), tiny_schema, holdout_data=holdout,
                           rng=np.random.default_rng(0))
    # Assert: hand-counted. Holdout: 2 of 3 rows copy a training row (x = 4; (c, 1), held by one training row only)
    c = out["exact_copies_counts"]
    assert (c["copies"], c["copies_shared"], c["holdout_copies"], c["holdout_copies_shared"]) == (4, 4, 2, 0)
    assert c["shared_training_rows"] == 2
    assert out["exact_copies"] == pytest.approx(0.1) and out["exact_copies_judged"] == 0.0
    assert out["exact_copies_holdout_judged"] == pytest.approx(2 / 3) and "exact_copies" not in out["flags"]


@pytest.mark.parametrize("row", [3, 12, 13])  # a row with numbers; (b, 1) and (c, 1): no number, one training row
def test_copies_of_any_other_record_are_judged_against_the_holdouts_share(tiny_schema, row):
    # Setup: the holdout shares nothing with training here; 3 copies of (a, 0) set apart, 1 copy of training row `row`
    train, _ = _real_frames()
    holdout = _records([20.5, 21.5, 22.5], ["a"] * 3, [0] * 3)
    synthetic = _synthetic(train.iloc[[10, 10, 11, row]].reset_index(drop=True))
    # Run
    out = privacy_analysis(train, synthetic, tiny_schema, holdout_data=holdout, rng=np.random.default_rng(0))
    # Assert: 1 of 40 judged against 0 of 3
    assert out["exact_copies_judged"] == pytest.approx(1 / 40) and out["exact_copies_holdout_judged"] == 0.0
    assert "exact_copies" in out["flags"]


def test_in_a_narrow_table_copies_are_judged_by_how_often_real_patients_coincide(tiny_schema):
    # Setup: few distinct records (x in 0-3, c in a/b): real rows coincide often, numbers known or not
    rng = np.random.default_rng(1)
    def narrow(n):  # type: ignore[no-untyped-def]
        return _records(rng.integers(0, 4, n).astype(float), list(rng.choice(["a", "b"], n)), [0] * n)
    train, holdout, fresh = narrow(200), narrow(50), narrow(100)
    # Run: new real patients as the synthetic table
    honest = privacy_analysis(train, fresh, tiny_schema, holdout_data=holdout, rng=np.random.default_rng(0))
    # Assert: records with a number known coincide here, so they are judged, not set apart; new patients equal
    # training rows as often as the holdout's do (both 100%), so they are not flagged
    assert honest["exact_copies_counts"]["copies_shared"] == 0
    assert honest["exact_copies_holdout_judged"] == 1.0 and honest["exact_copies_judged"] == 1.0
    assert "exact_copies" not in honest["flags"]


def test_a_copy_equal_up_to_rounding_is_still_a_copy(tiny_schema):
    # Setup: training rows 7 and 3 with x and T nudged as float32 storage or a 6-digit CSV would
    train, _ = _real_frames()
    holdout = _records([20.5, 21.5, 22.5], ["a"] * 3, [0] * 3)
    train = train.copy()
    train.loc[:9, "x"] = train.loc[:9, "x"] + 0.1234567891
    train["T"] = train["x"]
    near = train.iloc[[7, 3]].copy()
    near["x"] = near["x"].astype(np.float32).astype(float)
    near["T"] = near["T"].map(lambda v: float(f"{v:.6g}"))
    assert (near["x"] != train.iloc[[7, 3]]["x"]).all() and (near["T"] != train.iloc[[7, 3]]["T"]).all()
    # Run
    out = privacy_analysis(train, _synthetic(near.reset_index(drop=True)), tiny_schema, holdout_data=holdout,
                           rng=np.random.default_rng(0))
    # Assert
    assert out["exact_copies_counts"]["copies"] == 2 and "exact_copies" in out["flags"]


def test_a_zero_written_as_minus_zero_is_still_a_copy(tiny_schema):
    # Setup: training row 0 has x = 0 and T = 0; the synthetic row writes both as -0.0
    train, _ = _real_frames()
    holdout = _records([20.5, 21.5, 22.5], ["a"] * 3, [0] * 3)
    copy = train.iloc[[0]].copy()
    copy["x"], copy["T"] = -0.0, -0.0
    # Run
    out = privacy_analysis(train, _synthetic(copy.reset_index(drop=True)), tiny_schema, holdout_data=holdout,
                           rng=np.random.default_rng(0))
    # Assert
    assert out["exact_copies_counts"]["copies"] == 1 and "exact_copies" in out["flags"]


def test_without_a_holdout_shared_records_with_no_number_are_still_set_apart(tiny_schema):
    # Setup
    train, _ = _real_frames()
    # Run
    shared = privacy_analysis(train, _synthetic(train.iloc[[10]]), tiny_schema, rng=np.random.default_rng(0))
    alone = privacy_analysis(train, _synthetic(train.iloc[[13]]), tiny_schema, rng=np.random.default_rng(0))
    # Assert
    assert shared["exact_copies_holdout"] is None and shared["flags"] == []
    assert alone["flags"] == ["exact_copies"] and alone["exact_copies_judged"] == pytest.approx(1 / 40)
