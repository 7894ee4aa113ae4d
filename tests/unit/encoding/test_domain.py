"""The shared domain: merged site summaries equal the pooled domain where the pooled value is a sum."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedsynth.encoding.domain import (
    HIST_GRID,
    Domain,
    coarse_bounds,
    merge_small_cells,
    merge_summaries,
    release_summary,
    summarize_site,
)
from fedsynth.errors import ValidationError


def test_merged_site_summaries_equal_the_pooled_domain(mds_partition):
    # Setup: k = 1 releases every label and every non-empty cell, so sums must match exactly
    schema = mds_partition.schema
    summaries = [release_summary(summarize_site(s.data, schema), schema, min_count=1) for s in mds_partition.sites]
    # Run
    merged = merge_summaries(summaries, schema)
    pooled = Domain.from_data(mds_partition.train, schema, min_count=1)
    # Assert
    assert merged.n_rows == pooled.n_rows == len(mds_partition.train)
    for name in schema.model_columns:
        m, p = merged[name], pooled[name]
        assert m.n_observed == p.n_observed and m.missing_rate == pytest.approx(p.missing_rate)
        assert m.categories == p.categories and m.category_counts == p.category_counts
        assert (m.lower, m.upper) == (p.lower, p.upper)
        assert m.mean == pytest.approx(p.mean, rel=1e-12) and m.std == pytest.approx(p.std, rel=1e-9)
        # Quantile bins come from summed histograms on the shared grid: close to the pooled bins, not equal
        if m.is_numeric and len(m.bins) == len(p.bins):
            spread = p.upper - p.lower
            assert np.max(np.abs(np.subtract(m.bins, p.bins))) <= 0.05 * spread


def test_a_site_lacking_a_column_contributes_nothing_for_it(mds_partition):
    schema = mds_partition.schema
    sites = [s.data for s in mds_partition.sites]
    sites[2] = sites[2].drop(columns=["TP53"])
    merged = merge_summaries([summarize_site(d, schema) for d in sites], schema)
    assert merged["TP53"].n_observed == len(sites[0]) + len(sites[1])
    assert merged["HB"].n_observed == mds_partition.train["HB"].notna().sum()


def test_summaries_hold_no_rows_and_are_json(mds_partition):
    summary = summarize_site(mds_partition.sites[0].data, mds_partition.schema, n_modes=3)
    text = json.dumps(summary)
    assert "I-H-" not in text and "ID" not in summary["columns"]
    assert set(summary["columns"]["HB"]) >= {"min", "max", "sum", "sumsq", "hist_edges", "hist_counts", "modes"}
    released = release_summary(summary, mds_partition.schema)
    assert not {"min", "max", "quantiles"} & set(released["columns"]["HB"])


def test_a_column_no_site_holds_is_an_error(mds_partition):
    schema = mds_partition.schema
    sites = [s.data.drop(columns=["HB"]) for s in mds_partition.sites]
    with pytest.raises(ValidationError, match="column 'HB': no site holds this column"):
        merge_summaries([summarize_site(d, schema) for d in sites], schema)


def test_domain_round_trips_through_json_and_bins_values(mds_partition, tmp_path):
    dom = Domain.from_data(mds_partition.train, mds_partition.schema, n_modes=2)
    dom.save(tmp_path / "d.json")
    again = Domain.load(tmp_path / "d.json")
    assert again.to_dict() == dom.to_dict()
    idx = dom.bin_index("HB", mds_partition.train["HB"])
    assert idx.min() == 0 and idx.max() == len(dom["HB"].bins) - 2
    assert idx.isna().sum() == mds_partition.train["HB"].isna().sum()


def test_coarse_bounds_round_strictly_outward_to_one_significant_digit_within_the_declared_range():
    # Hand-worked: 4.0 is on the coarse grid, so the bound goes one step further down; 16.6 -> 20; 0 stays 0
    assert coarse_bounds(4.0, 16.6, None, None) == (3.0, 20.0)
    assert coarse_bounds(0.0, 19.731, 0.0, 25.0) == (0.0, 20.0)
    assert coarse_bounds(12.0, 100.0, 0.0, 120.0) == (10.0, 120.0)  # 200 clipped to the declared 120
    assert coarse_bounds(-0.35, 0.0123, None, None) == (-0.4, 0.02)


def test_small_histogram_cells_merge_with_their_neighbours_until_each_holds_k():
    # Setup: counts 1, 0, 6, 2, 3, 1 over edges 0..6 with k = 5
    edges, counts = [0, 1, 2, 3, 4, 5, 6], [1, 0, 6, 2, 3, 1]
    # Run
    got = merge_small_cells(edges, counts, 5)
    # Assert: 1+0+6 = 7 closes at 3; 2+3 = 5 closes at 5; the remainder 1 joins that last cell, now [3, 6]
    assert got == ([0.0, 3.0, 6.0], [7, 6])
    assert merge_small_cells([0, 1, 2], [1, 2], 5) == ([0.0, 2.0], [3])


def test_a_sites_extreme_value_leaves_only_as_a_coarse_bound_and_no_cell_is_under_k(mds_cohort):
    # Setup: the largest haemoglobin of a 138-row site is a unique number
    schema = mds_cohort.schema
    data = mds_cohort.data.head(138).copy()
    data.loc[data.index[3], "HB"] = 19.731
    # Run
    released = release_summary(summarize_site(data, schema, n_modes=3), schema, min_count=5)
    # Assert
    text = json.dumps(released)
    assert "19.731" not in text and "19.73" not in text
    hb = released["columns"]["HB"]
    assert hb["upper"] == 20.0 and hb["lower"] < data["HB"].min() and hb["lower"] in (1, 2, 3, 4, 5, 6, 7, 8, 9)
    assert min(hb["hist_counts"]) >= 5 and sum(hb["hist_counts"]) == data["HB"].notna().sum()
    inner = np.asarray(hb["hist_edges"][1:-1])
    assert np.isin(inner, HIST_GRID).all()  # every inner edge is a point of the shared grid, not a value
    for name, entry in released["columns"].items():
        if "hist_counts" in entry:
            assert min(entry["hist_counts"]) >= 5 or len(entry["hist_counts"]) == 1, name


def test_a_category_under_k_is_not_released_even_when_the_schema_declares_it(mds_cohort):
    # Setup: 'aCML' is a declared WHO_2016 label; two patients hold it here
    schema = mds_cohort.schema
    data = mds_cohort.data.head(400).copy()
    data = data[data["WHO_2016"] != "aCML"].copy()
    data.loc[data.index[:2], "WHO_2016"] = "aCML"
    # Run
    released = release_summary(summarize_site(data, schema), schema, min_count=5)
    domain = merge_summaries([released], schema)
    # Assert
    who = released["columns"]["WHO_2016"]
    assert "aCML" not in who["counts"] and min(who["counts"].values()) >= 5
    assert who["n_missing"] == data["WHO_2016"].isna().sum() + 2 + sum(
        c for c in data["WHO_2016"].value_counts() if c < 5) - 2 * (data["WHO_2016"].value_counts().get("aCML", 0) < 5)
    assert "aCML" not in domain["WHO_2016"].categories


def test_quantile_bins_from_summed_histograms_track_the_pooled_quantiles(mds_partition):
    # Setup: three sites' released histograms (k = 5) against the pooled data's own quantiles
    schema = mds_partition.schema
    summaries = [release_summary(summarize_site(s.data, schema), schema) for s in mds_partition.sites]
    # Run
    merged = merge_summaries(summaries, schema, n_bins=10)
    # Assert: each inner edge within 3 percentile points of the pooled quantile it stands for
    for name in ("HB", "PLT", "AGE", "OS_YEARS"):
        v = mds_partition.train[name].dropna().to_numpy(dtype=float)
        edges = np.asarray(merged[name].bins)
        # HB and AGE are recorded at 0.1 and 1 unit: many ties, so an edge stands for a range of levels
        sv = np.sort(v)
        levels = (np.searchsorted(sv, edges[1:-1], "left") + np.searchsorted(sv, edges[1:-1], "right")) / 2 / len(v)
        assert np.max(np.abs(levels - np.linspace(0.1, 0.9, 9)[: len(levels)])) < 0.03, name
