"""TSTR: the C-index of a model trained on one real half is close to train-on-real."""

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
