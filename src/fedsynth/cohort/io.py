"""Atomic writes of tables and text: a failed or interrupted write never leaves a half-written artefact."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fedsynth._io import atomic_write_text
from fedsynth.cohort.schema import ColumnKind, TableSchema

__all__ = ["atomic_write_text", "for_export", "write_csv"]


def for_export(data: pd.DataFrame, schema: TableSchema | None = None) -> pd.DataFrame:
    """A copy for people and other tools: integer and 0/1 columns as whole numbers (``1``, not ``1.0``).

    Without a schema, float columns that hold only whole numbers are written as whole numbers.
    """
    out = data.copy()
    for name in out.columns:
        col = out[name]
        if col.dtype.kind != "f":
            continue
        if schema is not None and name in schema:
            whole = schema[name].kind in (ColumnKind.INTEGER, ColumnKind.BINARY)
        else:
            observed = col.dropna()
            whole = len(observed) > 0 and bool((observed % 1 == 0).all())
        if whole:
            out[name] = col.round().astype("Int64")
    return out


def write_csv(data: pd.DataFrame, path: str | Path, schema: TableSchema | None = None) -> None:
    """Write ``data`` as CSV atomically, whole-number columns without a trailing ``.0``."""
    atomic_write_text(path, for_export(data, schema).to_csv(index=False))
