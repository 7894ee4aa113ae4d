"""Validation of data against a schema: every problem collected, one error raised, no patient value echoed."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.cohort.derived import DERIVATIONS, add_derived, check_derivations
from fedsynth.cohort.missing import NA_VALUES, normalise_missing
from fedsynth.cohort.schema import ColumnKind, ColumnRole, DroppedColumn, TableSchema
from fedsynth.errors import Problem, ValidationError

__all__ = [
    "NA_VALUES", "Conformed", "apply_codes", "check_frame", "conform", "normalise_missing", "read_csv_checked",
    "validate_frame",
]

#: Largest magnitude a value may have: generators compute in float32 (torch), so larger values overflow.
FLOAT32_MAX = float(np.finfo(np.float32).max)


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
    problems: list[Problem] = []
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


def validate_frame(
    data: pd.DataFrame,
    schema: TableSchema,
    *,
    allow_extra: bool = False,
    allow_missing_columns: bool = False,
    check_unusable: bool = True,
) -> list[Problem]:
    """Every problem of ``data`` against ``schema``; an empty list means the data conforms.

    Checks: missing and unexpected columns, values that do not fit a column's kind, values that are not
    finite or lie beyond the float32 range (+-3.4e38, where generators compute), declared bounds, categories
    outside the declared ones, all-missing and constant columns, duplicate ids, survival durations <= 0 or
    missing while the event is known, events outside {0, 1}. Columns the schema drops (``drop:``) may be
    present. Messages give counts and kinds of values, never the values themselves.

    Parameters
    ----------
    data : pandas.DataFrame
        The table, as text (read by :func:`read_csv_checked`) or typed; binary columns with ``codes`` must
        already be mapped (:func:`apply_codes`).
    schema : TableSchema
        What the table must hold.
    allow_extra, allow_missing_columns : bool
        Accept columns the schema does not declare, or declared columns absent from ``data``.
    check_unusable : bool
        Report constant and all-missing columns (off when scoring a file, where a rare mutation may be
        absent from a small holdout).

    Returns
    -------
    list of Problem
        Empty when ``data`` conforms.
    """
    problems: list[Problem] = list(check_derivations(schema))
    if len(data) == 0:
        return problems + [Problem("data", "has no rows", "at least one row")]
    expected = schema.column_names
    missing = [c for c in expected if c not in data.columns and schema[c].derived is None]
    if missing and not allow_missing_columns:
        problems.append(Problem("data", f"lacks {len(missing)} column(s) of the schema: {missing}", fix="add them or drop them from the schema"))
    extra = [c for c in data.columns if c not in schema and c not in schema.dropped_names]
    if extra and not allow_extra:
        problems.append(Problem("data", f"has {len(extra)} column(s) the schema does not declare: {extra}", fix="remove them, add them to the schema, or list them under 'drop:' in the schema"))
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
            if check_unusable:
                problems.append(Problem(where, "every value is missing", fix="drop the column from the schema"))
            continue
        if spec.kind in (ColumnKind.CONTINUOUS, ColumnKind.INTEGER, ColumnKind.BINARY):
            num = pd.to_numeric(nonnull, errors="coerce")
            bad = int(num.isna().sum())
            if bad:
                problems.append(Problem(where, f"{bad} value(s) are not numbers", _valid_text(spec.kind)))
            num = num.dropna().astype("float64")
            infinite = int((~np.isfinite(num)).sum())
            if infinite:
                problems.append(Problem(where, f"{infinite} value(s) are infinite", "finite numbers", "replace them with a number or leave them missing"))
            huge = int((np.isfinite(num) & (num.abs() > FLOAT32_MAX)).sum())
            if huge:
                problems.append(Problem(where, f"{huge} value(s) are beyond the float32 range", f"numbers within +-{FLOAT32_MAX:.3g}", "check the units of the column"))
            num = num[np.isfinite(num) & (num.abs() <= FLOAT32_MAX)]
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
            if check_unusable and len(num) and num.nunique() == 1 and spec.role is not ColumnRole.OUTCOME:
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
            if check_unusable and labels.nunique() == 1:
                problems.append(Problem(where, "is constant (one label in every row)", "at least two distinct labels", "drop the column: it carries no information"))
    for ep in schema.endpoints:
        if ep.duration_col not in data.columns or ep.event_col not in data.columns:
            continue
        d = pd.to_numeric(normalise_missing(data[ep.duration_col]), errors="coerce")
        d = d.where(np.isfinite(d.astype("float64")) | d.isna())
        e = pd.to_numeric(normalise_missing(data[ep.event_col]), errors="coerce")
        where = f"endpoint {ep.name!r}"
        nonpos = int((d <= 0).sum())
        if nonpos:
            problems.append(Problem(where, f"{nonpos} duration(s) in {ep.duration_col!r} are <= 0", "durations > 0", "durations of exactly 0 are set to half a day on load; fix or drop rows with negative durations"))
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


def apply_codes(
    data: pd.DataFrame, schema: TableSchema, *, canonical_01: bool = False
) -> tuple[pd.DataFrame, list[Problem]]:
    """Map the labels of binary columns with ``codes`` (``yes``/``no``, ``dead``/``alive``, 1/2) to 0/1.

    Labels match case-insensitively, surrounding spaces ignored. A column already in fedsynth's 0/1 (a file
    fedsynth wrote: a site file, a holdout, a synthetic cohort) is left as it is when its values show it:
    numbers where the codes are words, or a 0 where the codes are 1/2. Only codes that swap 0 and 1 (a
    censoring flag read as its complement) cannot be told from the values; ``canonical_01=True`` says the
    file is fedsynth's own (as ``evaluate`` assumes).

    Returns
    -------
    data : pandas.DataFrame
        The mapped copy.
    problems : list of Problem
        One per column with labels its codes do not list (a count, never the labels).
    """
    out = data.copy()
    problems: list[Problem] = []
    for spec in schema.columns:
        if spec.codes is None or spec.name not in out.columns:
            continue
        codes = {_code_key(label): value for label, value in spec.codes}
        s = normalise_missing(out[spec.name])
        keys = s.map(_code_key)
        nonnull = keys.dropna()
        as_numbers = pd.to_numeric(nonnull, errors="coerce")
        is_01 = bool(as_numbers.notna().all() and as_numbers.isin([0.0, 1.0]).all())
        numeric_codes = all(_is_number(k) for k in codes)
        if is_01 and (canonical_01 or not numeric_codes or not set(codes) <= {"0", "1"} and (as_numbers == 0).any()):
            continue
        if nonnull.isin(list(codes)).all():
            out[spec.name] = keys.map(codes).astype("float64")
            continue
        unknown = ~nonnull.isin(list(codes))
        problems.append(
            Problem(
                f"column {spec.name!r}",
                f"{int(unknown.sum())} value(s) in {nonnull[unknown].nunique()} label(s) not listed in its codes",
                ", ".join(label for label, _ in spec.codes),
                "add the labels to the column's 'codes' in the schema",
            )
        )
    return out, problems


def _code_key(v: Any) -> Any:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return np.nan
    if isinstance(v, (int, float, np.integer, np.floating)) and float(v).is_integer():
        return str(int(v))
    text = str(v).strip().lower()
    if _is_number(text) and float(text).is_integer() and np.isfinite(float(text)):
        return str(int(float(text)))
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Conformed:
    """A table brought to its schema: canonical dtypes, derived columns added, and what was changed, in words."""

    data: pd.DataFrame
    schema: TableSchema
    notes: tuple[str, ...] = ()


def conform(
    data: pd.DataFrame,
    schema: TableSchema,
    *,
    subject: str = "The data",
    unusable: str = "drop",
    allow_missing_columns: bool = False,
    say_dropped: bool = True,
    canonical_01: bool = False,
) -> Conformed:
    """Validate ``data`` against ``schema`` and return it in canonical dtypes, with every decision said.

    The one path by which every command loads a table (a named cohort, a CSV, the files given to
    ``evaluate``). In order:

    1. columns the schema drops (``drop:``, ``role: ignore``) are removed;
    2. coded binary columns are mapped to 0/1 (:func:`apply_codes`);
    3. with ``unusable="drop"``, clinical and genomic columns that are constant or all missing are left out of
       the schema (they cannot be modelled) with a note, and an endpoint whose duration or event is all
       missing is left out with both columns; only a column a derived column needs cannot be left out;
    4. **time zero**: a duration of exactly 0 becomes half a day in the endpoint's ``time_unit``
       (:attr:`~fedsynth.cohort.schema.SurvivalEndpoint.half_day`), with a note and a count; negative
       durations stay errors;
    5. every remaining problem is raised at once (:func:`validate_frame`);
    6. values are coerced and derived columns recomputed.

    Parameters
    ----------
    data : pandas.DataFrame
        The raw table (text cells or typed).
    schema : TableSchema
        The schema to conform to.
    subject : str
        How the error message names the table, e.g. ``"File 'trial.csv'"``.
    unusable : {"drop", "report", "keep"}
        What to do with constant and all-missing columns: leave them out with a note (loading a cohort to
        train on), report them as problems, or keep them silently (scoring a synthetic or holdout file
        against a fixed schema, where a rare mutation may well be absent).
    allow_missing_columns : bool
        Accept declared columns absent from ``data``.
    say_dropped : bool
        Add a note naming the columns removed because the schema drops them (off when the schema was just
        inferred and its notes already say why).
    canonical_01 : bool
        The file is one fedsynth wrote (0/1 in binary columns whatever their codes; see :func:`apply_codes`).

    Returns
    -------
    Conformed
        The coerced table, the schema it conforms to (``schema`` less what was left out) and the notes.

    Raises
    ------
    ValidationError
        Listing every problem, with counts and never a patient's value.
    """
    notes: list[str] = []
    as_told = [c for c in schema.dropped_names if c in data.columns]
    if as_told and say_dropped:
        notes.append(f"left out as the schema's drop list says: {as_told}")
    table = data.drop(columns=as_told)
    table, problems = apply_codes(table, schema, canonical_01=canonical_01)
    if unusable == "drop":
        schema, unusable_notes, unusable_problems = _leave_out_unusable(table, schema)
        notes += unusable_notes
        problems += unusable_problems
        table = table.drop(columns=[c for c in schema.dropped_names if c in table.columns])
    for ep in schema.endpoints:
        if ep.duration_col not in table.columns:
            continue
        d = pd.to_numeric(normalise_missing(table[ep.duration_col]), errors="coerce")
        zero = d == 0
        n_zero = int(zero.sum())
        if n_zero:
            table[ep.duration_col] = table[ep.duration_col].astype("object").where(~zero, ep.half_day)
            notes.append(
                f"{ep.duration_col} == 0 for {n_zero} patients (time-zero events) set to half a day "
                f"({ep.half_day:.6f} {ep.time_unit})"
            )
    problems += validate_frame(
        table, schema, allow_missing_columns=allow_missing_columns, check_unusable=unusable == "report"
    )
    if problems:
        raise ValidationError(f"{subject} (schema {schema.name!r})", problems)
    coerced = add_derived(schema.coerce(table), schema)
    return Conformed(coerced, schema, tuple(notes))


def _leave_out_unusable(data: pd.DataFrame, schema: TableSchema) -> tuple[TableSchema, list[str], list[Problem]]:
    needed = {c: d for d in schema.derived_columns for c in DERIVATIONS.get(schema[d].derived or "", (None, ()))[1]}
    gone: list[DroppedColumn] = []
    problems: list[Problem] = []
    for spec in schema.columns:
        if spec.name not in data.columns or spec.derived is not None:
            continue
        if spec.role not in (ColumnRole.CLINICAL, ColumnRole.GENOMIC, ColumnRole.OUTCOME):
            continue
        s = normalise_missing(data[spec.name]).dropna()
        if s.empty:
            reason = "every value is missing"
        elif spec.role is not ColumnRole.OUTCOME and s.astype(str).str.strip().nunique() == 1:
            reason = "constant (one value in every row)"
        else:
            continue
        if spec.name in needed:
            problems.append(Problem(f"column {spec.name!r}", f"is {reason.split(' (')[0]}, but derived column {needed[spec.name]!r} needs it", fix=f"drop {needed[spec.name]!r} too"))
            continue
        gone.append(DroppedColumn(spec.name, reason))
    names = {g.name for g in gone}
    for ep in schema.endpoints:
        if (ep.duration_col in names) != (ep.event_col in names):
            partner = ep.event_col if ep.duration_col in names else ep.duration_col
            gone.append(DroppedColumn(partner, f"its endpoint {ep.name!r} was left out"))
    notes = [f"left out {g.name!r}: {g.reason}" for g in gone]
    lost = [ep.name for ep in schema.endpoints if ep.duration_col in names or ep.event_col in names]
    if lost:
        notes.append(f"endpoints left out (a column is all missing): {lost}")
    out = schema.without(gone)
    if not out.model_columns:
        problems.append(Problem("data", "no column is left to model", "at least one column with two or more distinct values"))
    return out, notes, problems
