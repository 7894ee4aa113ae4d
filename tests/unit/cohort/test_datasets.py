"""The real MDS cohort: loading, documented preparation, derived columns, fetching with checksums."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsynth.cohort.datasets import (
    MDS_GENES,
    NAMED_COHORTS,
    fetch_cohort,
    git_blob_sha1,
    load,
    load_cohort,
    load_table,
)
from fedsynth.cohort.schema import ColumnRole
from fedsynth.errors import DataNotFoundError, ValidationError


def test_mds_cohort_loads_with_its_analysis_schema(mds_cohort):
    # Setup / Run
    data, schema = mds_cohort.data, mds_cohort.schema
    # Assert
    assert data.shape == (2957, 45)
    assert schema.genomic_columns == list(MDS_GENES)
    assert [e.name for e in schema.endpoints] == ["OS", "LFS"]
    assert not {"TP53mono", "TP53multi", "TET2bi", "TET2other", "IPSSM", "IPSSR_SCORE"} & set(data.columns)
    assert (data["OS_YEARS"].dropna() > 0).all()
    assert data["OS_YEARS"].isna().sum() == 146
    assert any("OS_YEARS == 0 for 45 patients" in n for n in mds_cohort.notes)
    assert data["HB"].dtype == np.float64 and data["SEX"].dtype == object


def test_recomputed_ipss_r_agrees_with_the_published_category(mds_cohort, data_dir):
    # Setup
    raw = pd.read_csv(data_dir / "mds-iwgpm-2022" / "mds_iwgpm_2022.csv", usecols=["ID", "IPSSR"])
    both = raw["IPSSR"].notna() & mds_cohort.data["IPSSR"].notna()
    # Run
    agreement = (raw.loc[both, "IPSSR"] == mds_cohort.data.loc[both, "IPSSR"]).mean()
    # Assert: where every input is known, the recomputed group is the published one
    assert both.sum() > 2500
    assert agreement == 1.0


def test_missing_cohort_says_exactly_where_to_put_which_files(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        load_cohort("mds-iwgpm", tmp_path)
    text = str(info.value)
    assert str(tmp_path / "mds-iwgpm-2022" / "mds_iwgpm_2022.csv") in text
    assert "FEDSYNTH_DATA_DIR" in text and "fedsynth fetch mds-iwgpm" in text
    assert "df_clinical.tsv" in text and "df_mut.tsv" in text


def test_unknown_cohort_lists_the_registered_ones():
    with pytest.raises(ValidationError) as info:
        load_cohort("mds-unknown")
    assert "unknown cohort 'mds-unknown'; valid: mds-iwgpm" in str(info.value)


def _source_tsvs(csv_path: Path) -> dict[str, bytes]:
    """Rebuild the two source TSVs from the shared CSV (the inverse of the documented join)."""
    rows = list(csv.reader(io.StringIO(csv_path.read_text())))
    clin, mut = io.StringIO(), io.StringIO()
    for row in rows:
        clin.write("\t".join(row[:42]) + "\n")
        mut.write("\t".join([row[0]] + row[42:]) + "\n")
    return {"df_clinical.tsv": clin.getvalue().encode(), "df_mut.tsv": mut.getvalue().encode()}


def test_fetch_checks_source_blobs_and_rebuilds_the_exact_csv_offline(data_dir, tmp_path):
    # Setup: the sources a download would bring, put where --offline reads them
    entry = NAMED_COHORTS["mds-iwgpm"]
    sources = _source_tsvs(data_dir / entry.folder / entry.filename)
    folder = tmp_path / entry.folder
    folder.mkdir()
    for name, content in sources.items():
        (folder / name).write_bytes(content)
    # Run
    path = fetch_cohort("mds-iwgpm", tmp_path, offline=True)
    # Assert: the pinned git blob ids match, and the built file has the published sha256
    for name, content in sources.items():
        assert git_blob_sha1(content) == entry.sources[name].git_blob_sha1
    assert path.read_bytes() == (data_dir / entry.folder / entry.filename).read_bytes()


def test_fetch_rejects_a_tampered_source(data_dir, tmp_path):
    entry = NAMED_COHORTS["mds-iwgpm"]
    sources = _source_tsvs(data_dir / entry.folder / entry.filename)
    folder = tmp_path / entry.folder
    folder.mkdir()
    (folder / "df_clinical.tsv").write_bytes(sources["df_clinical.tsv"].replace(b"primary", b"primarx", 1))
    (folder / "df_mut.tsv").write_bytes(sources["df_mut.tsv"])
    with pytest.raises(ValidationError) as info:
        fetch_cohort("mds-iwgpm", tmp_path, offline=True)
    assert "df_clinical.tsv: content does not match the pinned version" in str(info.value)


def test_any_csv_loads_with_an_inferred_schema(tmp_path):
    # Setup
    p = tmp_path / "trial.csv"
    p.write_text("id,age,sex,TP53,SF3B1,ASXL1,os,os_status\n1,60,F,1,0,0,2.5,1\n2,71,M,0,1,0,3.0,0\n3,55,M,0,0,1,1.2,1\n")
    # Run
    cohort = load_table(p)
    # Assert
    assert cohort.schema.genomic_columns == ["TP53", "SF3B1", "ASXL1"]
    assert cohort.schema.endpoints[0].duration_col == "os"
    assert cohort.schema["id"].role is ColumnRole.ID
    assert len(cohort.data) == 3


def test_schema_overrides_apply_to_named_cohorts(data_dir):
    cohort = load("mds-iwgpm", data_dir_=data_dir, overrides={"drop": ["MONOCYTES"]})
    assert "MONOCYTES" not in cohort.data.columns and "MONOCYTES" not in cohort.schema


def test_fingerprint_is_stable_and_changes_with_the_data(mds_cohort):
    again = type(mds_cohort)(mds_cohort.name, mds_cohort.data.copy(), mds_cohort.schema, mds_cohort.source)
    assert again.fingerprint() == mds_cohort.fingerprint()
    changed = mds_cohort.data.copy()
    changed.loc[0, "HB"] = 12.345
    assert type(mds_cohort)("x", changed, mds_cohort.schema, "").fingerprint() != mds_cohort.fingerprint()
