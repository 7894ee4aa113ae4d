"""Fixtures of the evaluator tests: a tiny hand-made schema, and the real cohort split into holdout, A and B."""

from __future__ import annotations

import numpy as np
import pytest

from fedsynth.cohort.schema import ColumnKind, ColumnRole, ColumnSpec, SurvivalEndpoint, TableSchema


@pytest.fixture(scope="session")
def tiny_schema() -> TableSchema:
    k = ColumnKind
    return TableSchema(
        (
            ColumnSpec("x", k.CONTINUOUS, ColumnRole.CLINICAL),
            ColumnSpec("c", k.CATEGORICAL, ColumnRole.CLINICAL),
            ColumnSpec("g1", k.BINARY, ColumnRole.GENOMIC),
            ColumnSpec("g2", k.BINARY, ColumnRole.GENOMIC),
            ColumnSpec("T", k.CONTINUOUS, ColumnRole.OUTCOME),
            ColumnSpec("E", k.BINARY, ColumnRole.OUTCOME),
        ),
        (SurvivalEndpoint("S", "T", "E"),),
        "tiny",
    )


@pytest.fixture(scope="session")
def mds_split(mds_cohort):  # type: ignore[no-untyped-def]
    """(schema, holdout 10%, half A, half B of the remaining rows), seed 0."""
    data = mds_cohort.data
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(data))
    n_h = len(data) // 10
    holdout = data.iloc[np.sort(idx[:n_h])]
    rest = idx[n_h:]
    half = len(rest) // 2
    a = data.iloc[np.sort(rest[:half])]
    b = data.iloc[np.sort(rest[half:])]
    return mds_cohort.schema, holdout, a, b
