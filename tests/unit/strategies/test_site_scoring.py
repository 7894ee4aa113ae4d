"""Scores without pooled data: each site scores a snapshot against its own rows and holdout, the server combines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from flwr.app import ConfigRecord, MetricRecord

from fedsynth.encoding.domain import Domain
from fedsynth.strategies import records
from fedsynth.strategies.exchange import SiteInfo
from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.policy import SitePolicy
from fedsynth.strategies.registry import make_strategy
from fedsynth.strategies.site import SiteRuntime
from fedsynth.strategies.site_scoring import combine, score_at_sites, site_figures

SEED = 7


def _shuffled(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """A stand-in snapshot: each column resampled on its own (marginals kept, no row copied as a whole)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({c: frame[c].to_numpy()[rng.integers(0, len(frame), n)] for c in frame.columns})


def _sites(partition, **policy):  # type: ignore[no-untyped-def]
    """The three sites of the reference partition, each with a third of the holdout as its own holdout."""
    holdouts = np.array_split(partition.holdout.reset_index(drop=True), 3)
    return [SiteRuntime(s.name, s.data, partition.schema, seed=i, holdout=h, policy=SitePolicy(**policy))
            for i, (s, h) in enumerate(zip(partition.sites, holdouts, strict=True))]


def _score(partition, sites, synthetic):  # type: ignore[no-untyped-def]
    schema = partition.schema
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network", params={"request_timeout": 5})
    grid = InProcessGrid(sites, keep_messages=True)
    infos = [SiteInfo(node, s.name, len(s.data), ()) for node, s in grid.sites.items()]
    domain = Domain.from_data(synthetic, schema)
    got = score_at_sites(strategy, grid, infos, synthetic, domain, seed=SEED, server_round=1)
    return got, grid, domain, strategy


def test_each_site_scores_the_snapshot_against_its_own_rows_and_replies_with_aggregates_only(mds_partition) -> None:
    # Setup: a snapshot and three sites with their own holdouts
    schema = mds_partition.schema
    synthetic = _shuffled(mds_partition.train[list(schema.model_columns)], 300, 1)
    sites = _sites(mds_partition)

    # Run
    got, grid, domain, _ = _score(mds_partition, sites, synthetic)

    # Assert: every site answered; site-1's figures are the evaluation's figures of the snapshot against its own
    # rows and holdout (3 significant digits, its policy's default)
    assert set(got.per_site) == {s.name for s in sites} and got.left_out == {}
    decoded = records.array_record_to_frame(records.frame_to_array_record(synthetic, domain), domain, schema)
    held = [c for c in schema.model_columns if c in sites[0].data.columns]
    direct = site_figures(sites[0].data[held], decoded[held], schema, sites[0].holdout, random_state=SEED)
    first = got.per_site[sites[0].name]
    assert first["num_examples"] == len(sites[0].data) and first["holdout_rows"] == len(sites[0].holdout)
    for name, value in direct.items():
        assert first[name] == pytest.approx(float(f"{value:.3g}"), abs=0, rel=1e-12), name
    from fedsynth.evaluation import quick_scores

    quick = quick_scores(sites[0].data[held], decoded[held], schema, holdout_data=sites[0].holdout, random_state=SEED)
    assert first["csf"] == pytest.approx(quick["csf"], rel=5e-3) and first["gsf"] == pytest.approx(quick["gsf"], rel=5e-3)
    assert {"dcr_share", "mia_auc", "exact_copies", "nndr_holdout_p5"} <= set(first)

    # Assert: what left each site is its name and one number per figure; no array, no row
    for reply in grid.received:
        assert set(reply.content.keys()) == {"info", "scores"}
        assert isinstance(reply.content["info"], ConfigRecord) and set(reply.content["info"]) == {"site-name"}
        scores = reply.content["scores"]
        assert isinstance(scores, MetricRecord) and len(scores) < 40
        assert all(isinstance(v, (int, float)) for v in scores.values())

    # Assert: combined by training rows, shaped as the simulated run's scores
    rows = {name: f["num_examples"] for name, f in got.per_site.items()}
    expected_csf = sum(rows[n] * f["csf"] for n, f in got.per_site.items()) / sum(rows.values())
    scores = got.as_scores()
    assert scores["csf"] == pytest.approx(expected_csf)
    assert scores["nndr"]["synthetic"]["p5"] == scores["nndr_p5"] and scores["nndr"]["holdout"] is not None


def test_a_copy_of_one_sites_rows_is_flagged_by_that_sites_privacy_figures(mds_partition) -> None:
    # Setup: the "snapshot" is site-2's own rows (a control that must fail)
    schema = mds_partition.schema
    sites = _sites(mds_partition)
    copy = sites[1].data[list(schema.model_columns)].reset_index(drop=True)

    # Run
    got, *_ = _score(mds_partition, sites, copy)

    # Assert: at site-2 every synthetic row is an exact copy and membership is easy to infer; elsewhere not
    own, other = got.per_site[sites[1].name], got.per_site[sites[0].name]
    assert own["exact_copies"] == 1.0 and own["nndr_p5"] == 0.0
    assert own["mia_auc"] > 0.9 and own["dcr_share"] > 0.5  # DCR: against a training sample of the holdout's size
    assert other["exact_copies"] < 0.05
    # combined exact copies is a sum over sites: it never hides one site's copies
    assert got.combined["exact_copies"] >= 1.0


def test_the_sites_figures_are_combined_by_training_rows_holdout_rows_or_summed() -> None:
    # Setup: two sites, hand-picked figures
    per_site = {
        "A": {"num_examples": 30, "holdout_rows": 10, "csf": 0.5, "gsf_component.x": 0.2, "mia_auc": 0.6,
              "exact_copies": 0.1},
        "B": {"num_examples": 10, "holdout_rows": 30, "csf": 0.9, "gsf_component.x": 0.6, "mia_auc": 0.5,
              "exact_copies": 0.2},
        "C": {"num_examples": 60, "holdout_rows": 0, "csf": 0.7},  # no holdout: no holdout figures
    }

    # Run
    out = combine(per_site)

    # Assert: (30*0.5 + 10*0.9 + 60*0.7) / 100; (10*0.6 + 30*0.5) / 40; 0.1 + 0.2; (30*0.2 + 10*0.6) / 40
    assert out["csf"] == pytest.approx(0.66)
    assert out["mia_auc"] == pytest.approx(0.525)
    assert out["exact_copies"] == pytest.approx(0.3)
    assert out["gsf_component.x"] == pytest.approx(0.3)
    assert "num_examples" not in out


def test_a_site_refuses_under_its_policys_min_count_and_drops_a_holdout_too_small(mds_partition) -> None:
    # Setup: site-3 holds 4 rows (policy k = 5); site-1's holdout holds 3 rows
    schema = mds_partition.schema
    sites = _sites(mds_partition)
    sites[2] = SiteRuntime(sites[2].name, sites[2].data.iloc[:4], schema, seed=2, holdout=sites[2].holdout)
    sites[0] = SiteRuntime(sites[0].name, sites[0].data, schema, seed=0, holdout=sites[0].holdout.iloc[:3])
    synthetic = _shuffled(mds_partition.train[list(schema.model_columns)], 200, 2)

    # Run
    got, *_ = _score(mds_partition, sites, synthetic)

    # Assert: site-3 is left out with a scrubbed reason; site-1 scores without its holdout
    assert set(got.left_out) == {sites[2].name} and "DisclosureRefused" in got.left_out[sites[2].name]
    assert sites[2].name not in got.per_site
    first = got.per_site[sites[0].name]
    assert first["holdout_rows"] == 0 and "mia_auc" not in first and "dcr_share" not in first
    assert "csf" in first and "exact_copies" in first
