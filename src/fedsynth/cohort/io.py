"""Atomic writes of tables and text: a failed or interrupted write never leaves a half-written artefact."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fedsynth.cohort.schema import ColumnKind, TableSchema


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(target)


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
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    for_export(data, schema).to_csv(tmp, index=False)
    tmp.replace(target)
