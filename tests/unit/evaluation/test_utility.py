"""TSTR: the C-index of a model trained on one real half is close to train-on-real; both Cox engines agree."""

from __future__ import annotations

import pytest

from fedsynth.evaluation.utility import tstr_analysis


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


def test_tstr_c_index_is_the_same_with_the_lifelines_engine(mds_split):
    # Setup
    schema, holdout, a, b = mds_split
    # Run
    batched = tstr_analysis(a, b, schema, holdout_data=holdout)
    lifelines = tstr_analysis(a, b, schema, holdout_data=holdout, cox_engine="lifelines")
    # Assert
    assert batched["cox_engine"] == "batched" and lifelines["cox_engine"] == "lifelines"
    for ep in ("OS", "LFS"):
        for key in ("c_index_train_real", "c_index_train_synthetic"):
            assert batched["endpoints"][ep][key] == pytest.approx(lifelines["endpoints"][ep][key], abs=1e-9)
