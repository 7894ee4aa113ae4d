"""Validation of data against a schema: every problem collected, one error raised, no patient value echoed."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd

from fedsynth.cohort.derived import check_derivations
from fedsynth.cohort.schema import ColumnKind, ColumnRole, TableSchema
from fedsynth.errors import Problem, ValidationError

#: Tokens read as missing (pandas' defaults plus the empty string).
NA_VALUES = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "#N/A", "."]


def read_csv_checked(path: str | Path) -> pd.DataFrame:
    """Read a CSV file as text, with clear errors for a missing, empty, binary or non-CSV file.

    Every cell is read as a string (missing tokens as NaN) so that types are judged by the schema, not
    guessed by the parser.
    """
    p = Path(path)
    where = f"file {p.name!r}"
    if not p.exists():
        raise ValidationError("Input", [Problem(where, "does not exist", fix=f"check the path {str(p)!r}")])
    if p.is_dir():
        raise ValidationError("Input", [Problem(where, "is a folder", "a CSV file")])
    raw = p.read_bytes()
    if not raw.strip():
        raise ValidationError("Input", [Problem(where, "is empty", "a CSV file with a header row and data rows")])
    if b"\x00" in raw[:4096]:
        raise ValidationError("Input", [Problem(where, "is a binary file, not text", "a comma-separated text file")])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError("Input", [Problem(where, "is not UTF-8 text", "a UTF-8 encoded CSV file")]) from None
    problems = []
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, na_values=NA_VALUES, keep_default_na=False)
    except (pd.errors.ParserError, csv.Error) as exc:
        line = ""
        msg = str(exc)
        if "line" in msg:
            # pandas says e.g. "Expected 5 fields in line 7, saw 6": keep the structure, not the content.
            line = " (" + msg.split(".")[0].strip() + ")"
        raise ValidationError(
            "Input", [Problem(where, f"could not be parsed as CSV{line}", "one header row, the same number of fields in every row, comma-separated")]
        ) from None
    except pd.errors.EmptyDataError:
        raise ValidationError("Input", [Problem(where, "has no columns", "a CSV file with a header row")]) from None
    if df.shape[1] == 1 and len(text.splitlines()) > 1 and any(sep in text.splitlines()[0] for sep in ("\t", ";", "|")):
        problems.append(Problem(where, "has a single column; the header looks tab-, semicolon- or pipe-separated", "comma-separated values", "save the file as CSV with commas"))
    if len(df) == 0:
        problems.append(Problem(where, "has a header but no data rows", "at least one data row"))
    unnamed = [c for c in df.columns if str(c).startswith("Unnamed:")]
    if unnamed:
        problems.append(Problem(where, f"has {len(unnamed)} column(s) with an empty header", "a name for every column"))
    dupes = [c for c in df.columns if "." in str(c) and str(c).rsplit(".", 1)[0] in df.columns and str(c).rsplit(".", 1)[1].isdigit()]
    if dupes:
        problems.append(Problem(where, f"repeats column names {sorted({d.rsplit('.', 1)[0] for d in dupes})}", "unique column names"))
    if problems:
        raise ValidationError("Input", problems)
    return df


def normalise_missing(values: pd.Series) -> pd.Series:
    """Text missing tokens (``""``, ``NA``, ...; see :data:`NA_VALUES`) as NaN; other values unchanged."""
    if values.dtype != object:
        return values
    stripped = values.map(lambda v: v.strip() if isinstance(v, str) else v)
    return values.mask(stripped.isin(NA_VALUES))


def validate_frame(
    data: pd.DataFrame, schema: TableSchema, *, allow_extra: bool = False, allow_missing_columns: bool = False
) -> list[Problem]:
    """Every problem of ``data`` against ``schema``; an empty list means the data conforms.

    Checks: missing and unexpected columns, values that do not fit a column's kind, declared bounds,
    categories outside the declared ones, all-missing and constant columns, duplicate ids, survival
    durations <= 0 or missing while the event is known, events outside {0, 1}. Messages give counts and
    kinds of values, never the values themselves.
    """
    problems: list[Problem] = list(check_derivations(schema))
    if len(data) == 0:
        return problems + [Problem("data", "has no rows", "at least one row")]
    expected = schema.column_names
    missing = [c for c in expected if c not in data.columns and schema[c].derived is None]
    if missing and not allow_missing_columns:
        problems.append(Problem("data", f"lacks {len(missing)} column(s) of the schema: {missing}", fix="add them or drop them from the schema"))
    extra = [c for c in data.columns if c not in schema]
    if extra and not allow_extra:
        problems.append(Problem("data", f"has {len(extra)} column(s) the schema does not declare: {extra}", fix="remove them, or add them to the schema"))
    for spec in schema.columns:
        if spec.name not in data.columns or spec.derived is not None:
            continue
        where = f"column {spec.name!r}"
        s = normalise_missing(data[spec.name])
        nonnull = s.dropna()
        if spec.role is ColumnRole.ID:
            dup = int(nonnull.duplicated().sum())
            if dup:
                problems.append(Problem(where, f"{dup} duplicate id(s)", "one row per patient"))
            if len(nonnull) < len(s):
                problems.append(Problem(where, f"{len(s) - len(nonnull)} row(s) without an id", "an id in every row"))
            continue
        if nonnull.empty:
            problems.append(Problem(where, "every value is missing", fix="drop the column from the schema"))
            continue
        if spec.kind in (ColumnKind.CONTINUOUS, ColumnKind.INTEGER, ColumnKind.BINARY):
            num = pd.to_numeric(nonnull, errors="coerce")
            bad = int(num.isna().sum())
            if bad:
                problems.append(Problem(where, f"{bad} value(s) are not numbers", _valid_text(spec.kind)))
            num = num.dropna().astype("float64")
            if spec.kind is ColumnKind.INTEGER:
                frac = int((np.mod(num, 1) != 0).sum())
                if frac:
                    problems.append(Problem(where, f"{frac} value(s) are not whole numbers", "whole numbers", "declare the column 'continuous'"))
            if spec.kind is ColumnKind.BINARY:
                off = int((~num.isin([0.0, 1.0])).sum())
                if off:
                    problems.append(Problem(where, f"{off} value(s) are neither 0 nor 1", "0 or 1 (or missing)"))
            if spec.lower is not None and (num < spec.lower).any():
                problems.append(Problem(where, f"{int((num < spec.lower).sum())} value(s) below the declared lower bound", f">= {spec.lower:g}"))
            if spec.upper is not None and (num > spec.upper).any():
                problems.append(Problem(where, f"{int((num > spec.upper).sum())} value(s) above the declared upper bound", f"<= {spec.upper:g}"))
            if len(num) and num.nunique() == 1 and spec.role is not ColumnRole.OUTCOME:
                problems.append(Problem(where, "is constant (one value in every row)", "at least two distinct values", "drop the column: it carries no information"))
        else:
            labels = nonnull.astype(str)
            if spec.categories is not None:
                unknown = ~labels.isin(spec.categories)
                if unknown.any():
                    problems.append(
                        Problem(
                            where,
                            f"{int(unknown.sum())} value(s) in {labels[unknown].nunique()} label(s) outside the declared categories",
                            ", ".join(spec.categories),
                            "fix the labels or add them to the schema's categories",
                        )
                    )
            if labels.nunique() == 1:
                problems.append(Problem(where, "is constant (one label in every row)", "at least two distinct labels", "drop the column: it carries no information"))
    for ep in schema.endpoints:
        if ep.duration_col not in data.columns or ep.event_col not in data.columns:
            continue
        d = pd.to_numeric(normalise_missing(data[ep.duration_col]), errors="coerce")
        e = pd.to_numeric(normalise_missing(data[ep.event_col]), errors="coerce")
        where = f"endpoint {ep.name!r}"
        nonpos = int((d <= 0).sum())
        if nonpos:
            problems.append(Problem(where, f"{nonpos} duration(s) in {ep.duration_col!r} are <= 0", "durations > 0", "use a small positive time (e.g. half a day) for time-zero events, or drop those rows"))
        gap = int((d.isna() & e.notna()).sum())
        if gap:
            problems.append(Problem(where, f"{gap} row(s) have an event in {ep.event_col!r} but no duration in {ep.duration_col!r}", "a duration wherever the event is known"))
        gap2 = int((d.notna() & e.isna()).sum())
        if gap2:
            problems.append(Problem(where, f"{gap2} row(s) have a duration but no event status", "an event (0/1) wherever the duration is known"))
    return problems


def _valid_text(kind: ColumnKind) -> str:
    return {
        ColumnKind.CONTINUOUS: "numbers (missing as empty or NA)",
        ColumnKind.INTEGER: "whole numbers (missing as empty or NA)",
        ColumnKind.BINARY: "0 or 1 (missing as empty or NA)",
    }.get(kind, "")


def check_frame(data: pd.DataFrame, schema: TableSchema, *, subject: str = "The data", **kwargs: bool) -> None:
    """Raise one :class:`ValidationError` listing every problem of ``data`` against ``schema``."""
    problems = validate_frame(data, schema, **kwargs)
    if problems:
        raise ValidationError(f"{subject} (schema {schema.name!r})", problems)
