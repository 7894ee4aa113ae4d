"""Partitions on the real cohort: exact sizes, disjoint sites, union = training pool, seeds reproducible."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fedsynth.cohort.partition import allocate, make_partition, parse_proportions, partition_sites
from fedsynth.cohort.schema import ColumnKind, ColumnRole, ColumnSpec, SurvivalEndpoint, TableSchema
from fedsynth.errors import ValidationError


def _ids(frame: pd.DataFrame) -> set[str]:
    return set(frame["ID"])


@pytest.mark.parametrize("proportions", [(0.6, 0.3, 0.1), (0.45, 0.2, 0.15, 0.1, 0.1), (1, 1, 1, 1, 1, 1, 1)])
def test_sites_are_disjoint_cover_the_training_pool_and_have_exact_sizes(mds_cohort, proportions):
    # Run
    part = make_partition(mds_cohort.data, mds_cohort.schema, proportions=proportions, random_state=3)
    # Assert
    n_train = len(part.train)
    assert n_train + len(part.holdout) == len(mds_cohort.data)
    assert len(part.holdout) == round(0.1 * len(mds_cohort.data))
    site_ids = [_ids(s.data) for s in part.sites]
    assert sum(len(s) for s in site_ids) == n_train
    assert set().union(*site_ids) == _ids(part.train)
    assert not _ids(part.train) & _ids(part.holdout)
    expected = np.asarray(proportions) / sum(proportions) * n_train
    assert all(abs(s.n_rows - e) < 1 for s, e in zip(part.sites, expected))


def test_holdout_is_stratified_by_event(mds_cohort):
    part = make_partition(mds_cohort.data, mds_cohort.schema, random_state=0)
    rate = lambda f: f["OS_STATUS"].mean()
    assert abs(rate(part.holdout) - rate(part.train)) < 0.01


def test_same_seed_same_partition_other_seed_other_partition(mds_cohort):
    a = make_partition(mds_cohort.data, mds_cohort.schema, random_state=7)
    b = make_partition(mds_cohort.data, mds_cohort.schema, random_state=7)
    c = make_partition(mds_cohort.data, mds_cohort.schema, random_state=8)
    assert [list(s.data["ID"]) for s in a.sites] == [list(s.data["ID"]) for s in b.sites]
    assert _ids(a.sites[0].data) != _ids(c.sites[0].data)


def test_worst_case_sites_lack_the_named_columns_and_derived_ones_follow(mds_cohort):
    # Run
    part = make_partition(
        mds_cohort.data, mds_cohort.schema, scenario="worst",
        missing_columns={"site-2": ["HB"], "site-3": ["TP53", "SF3B1"]}, random_state=0,
    )
    # Assert
    assert "HB" not in part.site("site-2").data.columns
    assert "IPSSR" not in part.site("site-2").data.columns  # derived from HB
    assert {"TP53", "SF3B1"}.isdisjoint(part.site("site-3").data.columns)
    assert set(mds_cohort.data.columns) == set(part.site("site-1").data.columns)
    info = part.to_dict()
    assert info["sites"][1]["lacks"] == ["HB", "IPSSR"]


def test_default_worst_case_is_shipped(mds_cohort):
    part = make_partition(mds_cohort.data, mds_cohort.schema, scenario="worst", random_state=0)
    lacks = {s.name: s.lacks for s in part.sites}
    assert lacks["site-1"] == ()
    assert "MONOCYTES" in lacks["site-2"]
    assert len(lacks["site-3"]) == len(mds_cohort.schema.genomic_columns) - len(mds_cohort.schema.genomic_columns) // 2


def test_worst_case_errors_list_every_problem(mds_cohort):
    with pytest.raises(ValidationError) as info:
        make_partition(
            mds_cohort.data, mds_cohort.schema, scenario="worst",
            missing_columns={"site-9": ["HB"], "site-2": ["NOPE"], "site-3": ["OS_YEARS"]},
        )
    text = str(info.value)
    assert "3 problems" in text and "site-9" in text and "NOPE" in text and "outcome columns" in text


def test_by_column_and_dirichlet_partitions_keep_every_row_once(mds_cohort):
    train = mds_cohort.data
    by = partition_sites(train, mds_cohort.schema, method="by_column", by="SEX")
    assert sorted(len(f) for f in by) == sorted(train["SEX"].value_counts().tolist())
    dirich = partition_sites(train, mds_cohort.schema, proportions=[0.5, 0.3, 0.2], method="dirichlet", by="WHO_2016", alpha=0.3, random_state=1)
    assert sum(len(f) for f in dirich) == len(train)
    assert set().union(*(set(f["ID"]) for f in dirich)) == set(train["ID"])
    # non-IID: the share of the most common class differs between sites
    shares = [f["WHO_2016"].value_counts(normalize=True).get("MDS-MLD", 0) for f in dirich]
    assert max(shares) - min(shares) > 0.05


def test_allocate_and_parse_proportions():
    assert allocate(10, [0.6, 0.3, 0.1]) == [6, 3, 1]
    assert sum(allocate(2661, [45, 20, 15, 10, 10])) == 2661
    assert parse_proportions("60,30,10") == pytest.approx([0.6, 0.3, 0.1])
    with pytest.raises(ValidationError, match="comma-separated list of numbers"):
        parse_proportions("60;30")
    with pytest.raises(ValidationError, match="proportion <= 0"):
        parse_proportions("60,0")


def test_partition_writes_site_files_and_a_json_without_rows(mds_cohort, tmp_path):
    part = make_partition(mds_cohort.data, mds_cohort.schema, random_state=0)
    path = part.write(tmp_path)
    info = json.loads(path.read_text())
    assert [s["n_rows"] for s in info["sites"]] == [s.n_rows for s in part.sites]
    assert len(pd.read_csv(tmp_path / "site-1.csv")) == part.sites[0].n_rows
    assert len(pd.read_csv(tmp_path / "holdout.csv")) == len(part.holdout)
    assert "I-H-" not in path.read_text()


# -- small files and sites named after a column -----------------------------------------------------------



def _small(n: int = 8) -> tuple[pd.DataFrame, TableSchema]:
    schema = TableSchema(
        (
            ColumnSpec("centre", ColumnKind.CATEGORICAL, ColumnRole.SITE),
            ColumnSpec("x", ColumnKind.CONTINUOUS),
            ColumnSpec("t", ColumnKind.CONTINUOUS, ColumnRole.OUTCOME),
            ColumnSpec("e", ColumnKind.BINARY, ColumnRole.OUTCOME),
        ),
        (SurvivalEndpoint("OS", "t", "e"),),
    )
    data = pd.DataFrame({
        "centre": (["St Olav's", "Pavia", "Pavia", "Lyon"] * n)[:n],
        "x": np.arange(n, dtype=float),
        "t": np.arange(1, n + 1, dtype=float),
        "e": ([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0] * n)[:n],
    })
    return data, schema


def test_an_eight_row_file_splits_unstratified_with_a_note():
    # Setup: 8 rows, 2 event strata, 1 held-out row: a stratified split is impossible
    data, schema = _small(8)
    # Run
    part = make_partition(data, schema, proportions=(1.0,), random_state=0)
    # Assert
    assert (len(part.train), len(part.holdout)) == (7, 1)
    assert part.notes == ("the train/holdout split is not stratified by 'e': 8 rows are too few to hold out every event status",)
    assert part.settings["stratified"] is False


def test_sites_split_by_a_column_are_named_after_its_values_in_partition_json(tmp_path):
    # Setup
    data, schema = _small(40)
    # Run
    part = make_partition(data, schema, proportions=None, method="by_column", by="centre", random_state=0)
    info = json.loads(part.write(tmp_path).read_text())
    # Assert
    assert [(s["name"], s["value"]) for s in info["sites"]] == [("Lyon", "Lyon"), ("Pavia", "Pavia"), ("St_Olav_s", "St Olav's")]
    assert {p.name for p in tmp_path.iterdir()} >= {"Lyon.csv", "Pavia.csv", "holdout.csv", "schema.yaml"}


def test_sites_under_three_rows_are_left_out_with_a_note_and_leave_the_pool():
    # Setup: 12 rows over 3 centres; after the holdout one centre keeps at most 2 rows
    data, schema = _small(12)
    data["centre"] = ["A"] * 5 + ["B"] * 5 + ["C"] * 2
    # Run
    part = make_partition(data, schema, proportions=None, method="by_column", by="centre", random_state=0)
    # Assert
    assert [s.name for s in part.left_out] == ["C"]
    assert [s.name for s in part.sites] == ["A", "B"]
    assert len(part.train) == sum(s.n_rows for s in part.sites)
    assert any(n.startswith("sites with fewer than 3 training rows are left out: C (") for n in part.notes)


def test_every_site_too_small_is_one_clear_error():
    data, schema = _small(8)
    with pytest.raises(ValidationError) as info:
        make_partition(data, schema, proportions=(1, 1, 1, 1, 1, 1, 1), random_state=0)
    assert "every site has fewer than 3 training rows" in str(info.value)


# -- each site's own holdout ------------------------------------------------------------------------------


def test_each_site_holds_a_disjoint_share_of_the_holdout_in_the_configured_proportions(mds_cohort, tmp_path):
    # Run
    part = make_partition(mds_cohort.data, mds_cohort.schema, proportions=(0.6, 0.3, 0.1), random_state=3)
    part.write(tmp_path)
    # Assert: 296 held-out rows shared 60/30/10 by largest remainder (177.6, 88.8, 29.6 -> 178, 89, 29)
    assert len(part.holdout) == 296
    assert [len(part.site_holdouts[s.name]) for s in part.sites] == [178, 89, 29]
    # the shares are disjoint, together the whole holdout, and share no row with any site's training file
    files = {s.name: pd.read_csv(tmp_path / f"{s.name}.holdout.csv") for s in part.sites}
    held = [_ids(f) for f in files.values()]
    assert sum(len(h) for h in held) == len(part.holdout) and set().union(*held) == _ids(part.holdout)
    trained = set().union(*(_ids(pd.read_csv(tmp_path / f"{s.name}.csv")) for s in part.sites))
    assert not trained & set().union(*held)
    info = json.loads((tmp_path / "partition.json").read_text())
    assert [s["n_holdout"] for s in info["sites"]] == [178, 89, 29]


def test_site_holdouts_are_reproducible_at_a_seed_and_leave_the_sites_rows_as_they_were(mds_cohort):
    # Run
    a = make_partition(mds_cohort.data, mds_cohort.schema, random_state=7)
    b = make_partition(mds_cohort.data, mds_cohort.schema, random_state=7)
    c = make_partition(mds_cohort.data, mds_cohort.schema, random_state=8)
    # Assert: the same seed gives the same shares; another seed other shares
    assert {k: list(v["ID"]) for k, v in a.site_holdouts.items()} == {k: list(v["ID"]) for k, v in b.site_holdouts.items()}
    assert _ids(a.site_holdouts["site-1"]) != _ids(c.site_holdouts["site-1"])
    # the holdout's split over the sites takes a seed of its own: the split and the sites are those that
    # the first two children of the seed give, as before site holdouts existed
    from fedsynth.cohort.partition import partition_sites, split_with_notes

    split_seed, site_seed = np.random.SeedSequence(7).spawn(2)
    train, holdout, _ = split_with_notes(mds_cohort.data, mds_cohort.schema, random_state=int(split_seed.generate_state(1)[0]))
    frames = partition_sites(train, mds_cohort.schema, proportions=[0.6, 0.3, 0.1], random_state=int(site_seed.generate_state(1)[0]))
    assert [list(f["ID"]) for f in frames] == [list(s.data["ID"]) for s in a.sites]
    assert list(holdout["ID"]) == list(a.holdout["ID"])


def test_site_holdouts_of_a_split_by_column_follow_the_column_and_worst_case_sites_lack_their_columns(mds_cohort):
    # Run
    by = make_partition(mds_cohort.data, mds_cohort.schema, proportions=None, method="by_column", by="SEX", random_state=0)
    worst = make_partition(mds_cohort.data, mds_cohort.schema, scenario="worst",
                           missing_columns={"site-3": ["TP53"]}, random_state=0)
    # Assert: each centre's holdout is the held-out rows of its own value
    for s in by.sites:
        expected = by.holdout[by.holdout["SEX"].astype(str) == s.value]
        assert _ids(by.site_holdouts[s.name]) == _ids(expected) and len(expected) > 0
    assert "TP53" not in worst.site_holdouts["site-3"].columns
    assert list(worst.site_holdouts["site-3"].columns) == list(worst.site("site-3").data.columns)


def test_a_holdout_smaller_than_the_sites_gives_no_site_holdouts_and_says_so():
    # Setup: 8 rows, one held out, two sites
    data, schema = _small(8)
    # Run
    part = make_partition(data, schema, proportions=(1, 1), random_state=0)
    # Assert
    assert part.site_holdouts == {}
    assert "the holdout (1 rows) is too small to share over 2 sites: no site holdout files" in part.notes
