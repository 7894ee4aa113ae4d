"""Sampling inputs (``--condition COL=VALUE``, ``--where EXPR``) checked against a schema before any sampling."""

from __future__ import annotations

import ast
import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.cohort.schema import ColumnKind, TableSchema
from fedsynth.errors import Problem, ValidationError

_WHERE_EXAMPLE = "a pandas query over column names, e.g. \"AGE >= 65 and SEX == 'F'\""
_KEYWORDS = {"and", "or", "not", "in", "True", "False", "None", "inf", "nan"}


@dataclass(frozen=True)
class SamplingRequest:
    """Checked sampling inputs: ``conditions`` (column -> accepted values), ``where``, and notes to show.

    ``conditions`` holds labels (``str``) for categorical columns and floats for the others, the form
    ``Generator.sample(conditions=...)`` takes (one value, or a list when several are accepted).
    """

    conditions: dict[str, Any] = field(default_factory=dict)
    where: str | None = None
    notes: tuple[str, ...] = ()


def check_sampling_inputs(
    items: Sequence[str],
    where: str | None,
    schema: TableSchema,
    *,
    observed: Mapping[str, Mapping[str, int]] | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
) -> SamplingRequest:
    """Parse ``COL=VALUE`` conditions and a ``where`` expression; report every problem at once.

    Parameters
    ----------
    items : sequence of str
        ``COL=VALUE`` strings; a column given more than once accepts any of its values.
    where : str, optional
        A pandas query expression over the schema's data columns.
    schema : TableSchema
        The model's schema: columns that can be sampled are its data columns (model and derived ones).
    observed : mapping, optional
        Per categorical or binary column, how many training rows hold each label (``"0"``/``"1"`` for a
        binary column), e.g. from the model's domain. A condition on a label held by 0 training rows is
        allowed but said in ``notes``: the model has never seen such a patient, so what it draws for
        them comes from its prior, not from data.
    bounds : mapping, optional
        Per numeric column, the (lower, upper) range the model samples in (its domain). A condition, or a
        comparison that every row must meet in ``where``, outside it is refused before any sampling: no
        sampled row could meet it, and rejection sampling would only spend its tries.

    Returns
    -------
    SamplingRequest
        Conditions in the form generators take, the expression, and notes.

    Raises
    ------
    ValidationError
        Listing every malformed item, unknown column (with the closest names), value outside a column's
        categories (with the valid ones, for derived columns too), non-number for a numeric column, and a
        ``where`` that refers to unknown columns, compares a categorical column with a label it does not
        have, or cannot be evaluated.
    """
    problems: list[Problem] = []
    notes: list[str] = []
    columns = schema.data_columns
    conditions: dict[str, list[Any]] = {}
    for item in items:
        col, sep, raw = item.partition("=")
        col, value = col.strip(), raw.strip()
        if not sep or not col or not value:
            problems.append(Problem(f"--condition {item!r}", "is not of the form COL=VALUE", fix="e.g. --condition SEX=F"))
            continue
        where_ = f"--condition {col}"
        if col not in columns:
            problems.append(Problem(where_, "no such column", _valid_columns(columns), _close(col, columns)))
            continue
        spec = schema[col]
        if spec.kind is ColumnKind.CATEGORICAL:
            labels = _labels(col, schema, observed)
            if labels and value not in labels:
                problems.append(Problem(where_, f"{col} has no category {value!r}", ", ".join(labels), _close(value, labels)))
                continue
            count = (observed or {}).get(col, {}).get(value)
            if count == 0:
                notes.append(f"{col}={value} occurs in 0 training rows: rows drawn for it come from the model's prior, not from patients like them")
            conditions.setdefault(col, []).append(value)
            continue
        number = _number(value, spec.codes)
        if number is None:
            valid = "0 or 1" if spec.kind is ColumnKind.BINARY else "a number"
            article = "an" if spec.kind.value[0] in "aeiou" else "a"
            problems.append(Problem(where_, f"{col} is {article} {spec.kind.value} column and the value is not a number", valid))
            continue
        if spec.kind is ColumnKind.BINARY and number not in (0.0, 1.0):
            problems.append(Problem(where_, f"{col} is binary", "0 or 1"))
            continue
        if spec.kind is ColumnKind.BINARY:
            count = (observed or {}).get(col, {}).get(str(int(number)))
            if count == 0:
                notes.append(f"{col}={int(number)} occurs in 0 training rows: rows drawn for it come from the model's prior, not from patients like them")
        elif bounds and col in bounds:
            lo, hi = bounds[col]
            if not lo <= number <= hi:
                problems.append(Problem(where_, f"{col}={value} lies outside the range the model samples {col} in",
                                        fix="no sampled row can meet it; choose a value seen in training"))
                continue
        conditions.setdefault(col, []).append(number)
    if where is not None:
        problems += _check_where(where, schema, observed, bounds or {})
    if problems:
        raise ValidationError("Sampling inputs", problems)
    out = {c: v[0] if len(v) == 1 else v for c, v in conditions.items()}
    return SamplingRequest(out, where, tuple(notes))


def domain_limits(domain: Any) -> tuple[dict[str, dict[str, int]], dict[str, tuple[float, float]]]:
    """What a model's domain tells :func:`check_sampling_inputs`: ``observed`` (per categorical or binary column,
    training rows per label, summed over sites) and ``bounds`` (per numeric column, the range it is sampled in).

    ``domain`` is a :class:`fedsynth.encoding.Domain` or ``None`` (then both are empty).
    """
    observed: dict[str, dict[str, int]] = {}
    bounds: dict[str, tuple[float, float]] = {}
    for name, col in (getattr(domain, "columns", None) or {}).items():
        if col.categories and col.category_counts:
            observed[name] = dict(zip(col.categories, col.category_counts, strict=False))
        elif col.is_numeric and col.lower is not None and col.upper is not None:
            bounds[name] = (float(col.lower), float(col.upper))
    return observed, bounds


def _valid_columns(columns: Sequence[str]) -> str:
    shown = ", ".join(columns[:40])
    return shown + (f", ... ({len(columns)} columns)" if len(columns) > 40 else "")


def _close(value: str, options: Sequence[str]) -> str:
    lowered = {o.lower().replace("-", " ").replace("_", " "): o for o in options}
    key = value.lower().replace("-", " ").replace("_", " ")
    if key in lowered:
        return f"did you mean {lowered[key]!r}?"
    close = difflib.get_close_matches(value, list(options), n=1)
    return f"did you mean {close[0]!r}?" if close else ""


def _labels(col: str, schema: TableSchema, observed: Mapping[str, Mapping[str, int]] | None) -> list[str]:
    declared = list(schema[col].categories or ())
    seen = [k for k in (observed or {}).get(col, {}) if k not in declared]
    return declared + seen


def _number(value: str, codes: tuple[tuple[str, float], ...] | None) -> float | None:
    for label, code in codes or ():
        if value.strip().lower() == label.strip().lower():
            return code
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _check_where(
    where: str,
    schema: TableSchema,
    observed: Mapping[str, Mapping[str, int]] | None,
    bounds: Mapping[str, tuple[float, float]],
) -> list[Problem]:
    columns = schema.data_columns
    if not where.strip():
        return [Problem("--where", "is empty", _WHERE_EXAMPLE)]
    # Column names that are not Python identifiers are written `like this` in pandas queries.
    quoted: dict[str, str] = {}

    def unquote(m: re.Match[str]) -> str:
        key = f"__col{len(quoted)}__"
        quoted[key] = m.group(1)
        return key

    text = re.sub(r"`([^`]*)`", unquote, where)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return [Problem("--where", "is not a valid expression", _WHERE_EXAMPLE)]
    problems: list[Problem] = []
    names = [quoted.get(n.id, n.id) for n in ast.walk(tree) if isinstance(n, ast.Name)]
    unknown = [n for n in dict.fromkeys(names) if n not in columns and n not in _KEYWORDS]
    for name in unknown:
        problems.append(Problem("--where", f"refers to no column {name!r}", _valid_columns(columns), _close(name, columns)))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        cols = [quoted.get(s.id, s.id) for s in sides if isinstance(s, ast.Name)]
        literals = [s.value for s in sides if isinstance(s, ast.Constant) and isinstance(s.value, str)]
        for s in sides:
            if isinstance(s, (ast.List, ast.Tuple, ast.Set)):
                literals += [e.value for e in s.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        for col in cols:
            if col not in columns or schema[col].kind is not ColumnKind.CATEGORICAL:
                continue
            labels = _labels(col, schema, observed)
            for lit in literals:
                if labels and lit not in labels:
                    problems.append(Problem("--where", f"compares {col} with {lit!r}, which is not one of its categories", ", ".join(labels), _close(lit, labels)))
    for node in _conjuncts(tree.body):
        out_of_range = _impossible(node, quoted, bounds)
        if out_of_range is not None:
            problems.append(Problem("--where", f"asks for {out_of_range} outside the range the model samples it in",
                                    fix="no sampled row can meet it; loosen the expression"))
    if problems:
        return problems
    try:
        _empty_frame(schema).eval(where)
    except Exception as exc:  # noqa: BLE001 - pandas raises many types for a bad expression
        return [Problem("--where", f"could not be evaluated ({type(exc).__name__})", _WHERE_EXAMPLE)]
    return []


def _conjuncts(node: ast.expr) -> list[ast.expr]:
    """The parts every row must meet: the expression itself, or the operands of its top-level ``and``."""
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
        return [part for value in node.values for part in _conjuncts(value)]
    return [node]


_FLIP: dict[type[ast.cmpop], type[ast.cmpop]] = {ast.Gt: ast.Lt, ast.Lt: ast.Gt, ast.GtE: ast.LtE, ast.LtE: ast.GtE,
                                                 ast.Eq: ast.Eq}


def _impossible(node: ast.expr, quoted: Mapping[str, str], bounds: Mapping[str, tuple[float, float]]) -> str | None:
    """The column of a ``col OP number`` comparison no value in ``bounds[col]`` meets, else ``None``."""
    if not isinstance(node, ast.Compare) or len(node.ops) != 1:
        return None
    left, op, right = node.left, node.ops[0], node.comparators[0]
    if isinstance(left, ast.Constant) and isinstance(right, ast.Name) and type(op) in _FLIP:
        left, right, op = right, left, _FLIP[type(op)]()
    if not (isinstance(left, ast.Name) and isinstance(right, ast.Constant)):
        return None
    value = right.value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    col = quoted.get(left.id, left.id)
    if col not in bounds:
        return None
    lo, hi = bounds[col]
    c = float(value)
    impossible = {
        ast.Gt: c >= hi, ast.GtE: c > hi, ast.Lt: c <= lo, ast.LtE: c < lo, ast.Eq: not lo <= c <= hi,
    }.get(type(op), False)
    return col if impossible else None


def _empty_frame(schema: TableSchema) -> pd.DataFrame:
    data: dict[str, Any] = {}
    for name in schema.data_columns:
        kind = schema[name].kind
        data[name] = pd.Series(dtype=object) if kind is ColumnKind.CATEGORICAL else pd.Series(dtype=np.float64)
    return pd.DataFrame(data)
