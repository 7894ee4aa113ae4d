"""The shared domain: merged site summaries equal the pooled domain where the pooled value is a sum."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedsynth.encoding.domain import Domain, merge_summaries, summarize_site
from fedsynth.errors import ValidationError


def test_merged_site_summaries_equal_the_pooled_domain(mds_partition):
    # Setup
    schema = mds_partition.schema
    summaries = [summarize_site(s.data, schema) for s in mds_partition.sites]
    # Run
    merged = merge_summaries(summaries, schema)
    pooled = Domain.from_data(mds_partition.train, schema)
    # Assert
    assert merged.n_rows == pooled.n_rows == len(mds_partition.train)
    for name in schema.model_columns:
        m, p = merged[name], pooled[name]
        assert m.n_observed == p.n_observed and m.missing_rate == pytest.approx(p.missing_rate)
        assert m.categories == p.categories and m.category_counts == p.category_counts
        assert (m.lower, m.upper) == (p.lower, p.upper)
        assert m.mean == pytest.approx(p.mean, rel=1e-12) and m.std == pytest.approx(p.std, rel=1e-9)
        # Quantile bins are a sketch merge: close to the pooled bins, not equal
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
    assert set(summary["columns"]["HB"]) >= {"min", "max", "sum", "sumsq", "quantiles", "modes"}


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
