"""Gene-level scores: hand-computed frequencies, odds ratios and Fisher p-values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fedsynth.evaluation.genomics import classify, fisher_pairs, genomics_analysis, log_odds_ratio, pair_tables


def _genes(g1, g2):  # type: ignore[no-untyped-def]
    n = len(g1)
    return pd.DataFrame({
        "x": np.zeros(n), "c": pd.Series(["a"] * n, dtype=object), "g1": np.asarray(g1, float), "g2": np.asarray(g2, float),
        "T": np.arange(1.0, n + 1), "E": np.ones(n),
    })


def test_fisher_pairs_give_hand_computed_p_values_and_bh_q_values():
    # Setup: [[3, 0], [0, 4]]: only the observed table is as unlikely as itself -> p = 1 / C(7, 3) = 1/35;
    # [[1, 1], [1, 1]]: every table at least as likely -> p = 1
    tables = [(3, 0, 0, 4), (1, 1, 1, 1)]
    # Run
    ors, ps, qs = fisher_pairs(tables)
    # Assert
    assert ps[0] == pytest.approx(1 / 35)
    assert ps[1] == pytest.approx(1.0)
    assert ors[0] == np.inf and ors[1] == pytest.approx(1.0)
    np.testing.assert_allclose(qs, [2 / 35, 1.0])  # BH: p_(1) * 2 / 1, p_(2) * 2 / 2


def test_log_odds_ratio_adds_half_only_to_tables_with_a_zero_cell():
    # Setup / Run
    plain = log_odds_ratio(np.array([2]), np.array([3]), np.array([4]), np.array([5]))
    haldane = log_odds_ratio(np.array([0]), np.array([3]), np.array([4]), np.array([5]))
    # Assert
    assert plain[0] == pytest.approx(math.log(2 * 5 / (3 * 4)))
    assert haldane[0] == pytest.approx(math.log(0.5 * 5.5 / (3.5 * 4.5)))


def test_pair_tables_count_rows_where_both_genes_are_known():
    # Setup: (g1, g2) = (1,1), (1,0), (0,1), (0,0), (0,0), (1, NaN)
    data = _genes([1, 1, 0, 0, 0, 1], [1, 0, 1, 0, 0, np.nan])
    # Run
    tab = pair_tables(data, ["g1", "g2"])
    # Assert
    assert tab[("g1", "g2")] == (1, 1, 1, 2)


def test_classes_follow_q_value_and_sign():
    assert classify(np.array([1.0, -1.0, 1.0]), np.array([0.01, 0.01, 0.2])) == [
        "co-occurring", "mutually exclusive", "neutral"]


def test_mutation_frequency_similarity_is_one_minus_mean_relative_error(tiny_schema):
    # Setup: real g1 .5, g2 .25; synthetic g1 .25, g2 .25 -> relative errors .5 and 0 -> 0.75
    real = _genes([1, 1, 0, 0], [1, 0, 0, 0])
    syn = _genes([1, 0, 0, 0], [0, 1, 0, 0])
    # Run
    out = genomics_analysis(real, syn, tiny_schema, rng=np.random.default_rng(0))
    # Assert
    assert out["frequency"]["similarity"] == pytest.approx(0.75)
    # mutations per patient: real (2,1,0,0), synthetic (1,1,0,0): KS = 0.25
    assert out["mutations_per_patient"]["similarity"] == pytest.approx(0.75)
    assert out["n_pairs"] == 1
