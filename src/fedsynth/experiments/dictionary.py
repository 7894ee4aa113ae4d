"""The data dictionary of an export: one line per released column (meaning, unit, kind, role, categories,
missing rate), read from the schema's descriptions; written by :func:`fedsynth.experiments.export.export_cohort`."""

from __future__ import annotations

from typing import Any

import pandas as pd

from fedsynth.cohort.schema import ColumnKind, ColumnSpec, TableSchema

#: The identifier column every export adds (a row number; it links to no patient).
SYNTHETIC_ID = "synthetic_id"


def split_description(spec: ColumnSpec, time_unit: str | None = None) -> tuple[str, str]:
    """``(meaning, unit)`` of a column from its description.

    Convention of :attr:`ColumnSpec.description` for numeric columns: ``"<meaning>, <unit>"``, optionally
    followed by a note in parentheses (``"white blood cells, x10^9/L (truncated at 13 by inclusion)"`` gives
    ``("white blood cells (truncated at 13 by inclusion)", "x10^9/L")``). Categorical and binary columns have no
    unit. A survival duration takes its endpoint's ``time_unit`` whatever its description says.
    """
    text = spec.description.strip()
    unit = ""
    meaning = text
    if spec.is_numeric and ", " in text:
        head, _, tail = text.rpartition(", ")
        note = ""
        if " (" in tail and tail.endswith(")"):
            tail, _, rest = tail.partition(" (")
            note = f" ({rest}"
        meaning, unit = head + note, tail
    if time_unit:
        unit = time_unit
    return meaning, unit


def data_dictionary(data: pd.DataFrame, schema: TableSchema) -> list[dict[str, Any]]:
    """One entry per column of ``data`` (an export): column, meaning, unit, kind, role, categories, missing rate.

    Parameters
    ----------
    data : DataFrame, shape (n_rows, n_columns)
        The exported table (``synthetic_id`` first, then the schema's data columns).
    schema : TableSchema
        The schema the generator was trained with: meanings and units come from its column descriptions and
        its endpoints' ``time_unit``.

    Returns
    -------
    list of dict
        ``missing_rate`` is the share of missing values in ``data`` (0-1); ``categories`` lists the labels of a
        categorical column (the schema's, else those in the data) and ``["0", "1"]`` for a binary one.
    """
    durations = {ep.duration_col: ep for ep in schema.endpoints}
    events = {ep.event_col: ep for ep in schema.endpoints}
    out: list[dict[str, Any]] = []
    for col in data.columns:
        if col == SYNTHETIC_ID:
            out.append({"column": col, "meaning": "row number of this synthetic file; it identifies no patient",
                        "unit": "", "kind": "identifier", "role": "id", "categories": None, "missing_rate": 0.0,
                        "endpoint": None, "derived": None})
            continue
        spec = schema[col]
        ep = durations.get(col)
        meaning, unit = split_description(spec, ep.time_unit if ep is not None else None)
        if spec.kind is ColumnKind.CATEGORICAL:
            cats: list[str] | None = list(spec.categories) if spec.categories else sorted(
                str(v) for v in data[col].dropna().unique())
        elif spec.kind is ColumnKind.BINARY:
            cats = ["0", "1"]
        else:
            cats = None
        if spec.codes and cats is not None:  # what the source file wrote: "1 = Dead", "0 = Alive"
            written: dict[str, list[str]] = {}
            for label, value in spec.codes:
                written.setdefault(f"{value:g}", []).append(label)
            cats = [f"{c} = {' / '.join(written[c])}" if c in written else c for c in cats]
        endpoint = None
        if ep is not None:
            endpoint = f"{ep.name} time"
            meaning = meaning or f"{ep.name}: time from baseline to the event or to the last follow-up"
        elif col in events:
            endpoint = f"{events[col].name} event"
            meaning = meaning or f"{events[col].name}: 1 = the event happened, 0 = censored (no event by last follow-up)"
        elif spec.role.value == "genomic" and spec.kind is ColumnKind.BINARY:
            meaning = meaning or f"mutation status of {col}: 1 = mutated, 0 = not mutated"
        out.append({
            "column": col, "meaning": meaning or "(no description in the schema)", "unit": unit,
            "kind": spec.kind.value, "role": spec.role.value, "categories": cats,
            "missing_rate": float(data[col].isna().mean()) if len(data) else 0.0,
            "endpoint": endpoint, "derived": spec.derived,
        })
    return out
