"""Eligibility criteria of a control arm (inclusion and exclusion) read from YAML into sampling inputs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.cohort.schema import ColumnKind, TableSchema
from fedsynth.errors import Problem, ValidationError

_PARTS = ("categories", "ranges", "expressions")
_TOP = ("name", "description", "inclusion", "exclusion")
_EXAMPLE = "see configs/arms/high_risk_tp53_wt.yaml"


@dataclass(frozen=True)
class CriteriaSet:
    """One side of the criteria (inclusion or exclusion).

    ``categories`` maps a column to the labels (or 0/1 codes) it must hold; ``ranges`` maps a numeric column to
    inclusive ``(min, max)`` bounds, either of which may be ``None``; ``expressions`` are pandas queries.
    """

    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    expressions: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.categories or self.ranges or self.expressions)

    def columns(self, schema: TableSchema) -> set[str]:
        """Every schema column the set names (in expressions: as a whole word or in backticks)."""
        named = set(self.categories) | set(self.ranges)
        for expr in self.expressions:
            named |= {c for c in schema.data_columns if re.search(rf"(?<![\w`]){re.escape(c)}(?![\w`])|`{re.escape(c)}`", expr)}
        return named


@dataclass(frozen=True)
class ArmCriteria:
    """Eligibility criteria: every arm row meets all of ``inclusion`` and none of ``exclusion``'s items."""

    name: str
    inclusion: CriteriaSet
    exclusion: CriteriaSet
    description: str = ""

    def condition_items(self) -> list[str]:
        """Inclusion category sets as ``COL=VALUE`` items (what ``sample --condition`` takes): generators that
        condition exactly (the Bayesian network) put them as evidence instead of rejecting rows."""
        return [f"{col}={v}" for col, values in self.inclusion.categories.items() for v in values]

    def where(self, schema: TableSchema) -> str | None:
        """Ranges and expressions of the inclusion, and every exclusion item negated, as one pandas query.

        A missing value meets no inclusion range and no exclusion item: an unknown age is not ``>= 65``, and an
        unknown age is not excluded by ``AGE < 18``.
        """
        parts = [_range_expr(c, lo, hi) for c, (lo, hi) in self.inclusion.ranges.items()]
        parts += [f"({e})" for e in self.inclusion.expressions]
        for col, values in self.exclusion.categories.items():
            parts.append(f"not ({_isin_expr(col, values, schema)})")
        parts += [f"not ({_range_expr(c, lo, hi)})" for c, (lo, hi) in self.exclusion.ranges.items()]
        parts += [f"not ({e})" for e in self.exclusion.expressions]
        return " and ".join(parts) if parts else None

    def query(self, schema: TableSchema) -> str | None:
        """Every item, inclusion category sets included, as one pandas query (``None`` when there is none).

        The same rules as :meth:`where`: a missing value meets no inclusion item and triggers no exclusion item.
        """
        parts = [f"({_isin_expr(col, values, schema)})" for col, values in self.inclusion.categories.items()]
        rest = self.where(schema)
        return " and ".join([*parts, *([rest] if rest else [])]) or None

    def eligible(self, data: pd.DataFrame, schema: TableSchema) -> np.ndarray:
        """Which rows of ``data`` meet the criteria (e.g. the real eligible patients a synthetic arm is judged
        against).

        Parameters
        ----------
        data : DataFrame
            Rows in the schema's column names (derived columns included where criteria name them).
        schema : TableSchema

        Returns
        -------
        ndarray of bool, shape (n_rows,)
        """
        q = self.query(schema)
        return np.ones(len(data), dtype=bool) if q is None else data.eval(q).to_numpy(dtype=bool)

    def to_dict(self) -> dict[str, Any]:
        """The criteria as written in a report (JSON-able)."""
        def side(s: CriteriaSet) -> dict[str, Any]:
            return {"categories": {c: list(v) for c, v in s.categories.items()},
                    "ranges": {c: {"min": lo, "max": hi} for c, (lo, hi) in s.ranges.items()},
                    "expressions": list(s.expressions)}

        return {"name": self.name, "description": self.description, "inclusion": side(self.inclusion),
                "exclusion": side(self.exclusion)}


def _q(col: str) -> str:
    return f"`{col}`"


def _range_expr(col: str, lo: float | None, hi: float | None) -> str:
    bits = ([f"{_q(col)} >= {lo!r}"] if lo is not None else []) + ([f"{_q(col)} <= {hi!r}"] if hi is not None else [])
    return " and ".join(bits) if bits else f"{_q(col)} == {_q(col)}"


def _isin_expr(col: str, values: tuple[str, ...], schema: TableSchema) -> str:
    if col in schema and schema[col].kind is ColumnKind.CATEGORICAL:
        listed = ", ".join(repr(v) for v in values)
    else:
        listed = ", ".join(str(float(v)) for v in values)
    return f"{_q(col)} in [{listed}]"


def read_criteria(path: str | Path, schema: TableSchema) -> ArmCriteria:
    """Read eligibility criteria from a YAML file and check their shape against ``schema``.

    The file holds ``name``, an optional ``description``, and ``inclusion`` and ``exclusion`` mappings, each
    with any of ``categories`` (column -> list of labels, or 0/1 for a binary column), ``ranges`` (column ->
    ``{min, max}``, inclusive, either may be left out) and ``expressions`` (a list of pandas queries, the
    language of ``fedsynth sample --where``). Example: ``configs/arms/high_risk_tp53_wt.yaml``.

    Parameters
    ----------
    path : str or Path
        The YAML file.
    schema : TableSchema
        The model's schema. Column names, labels and expressions are checked later, with the model's
        training counts, by :func:`fedsynth.cohort.conditions.check_sampling_inputs`; here: the file's shape,
        numeric bounds, and that no criterion names a column recorded after baseline (``baseline: false``).

    Returns
    -------
    ArmCriteria

    Raises
    ------
    ValidationError
        Listing every problem of the file at once.
    """
    import yaml

    where = f"Criteria file {Path(path).name}"
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ValidationError(where, [Problem("file", f"cannot be read ({type(exc).__name__})", fix="check the path")]) from None
    except yaml.YAMLError:
        raise ValidationError(where, [Problem("file", "is not valid YAML", fix=_EXAMPLE)]) from None
    problems: list[Problem] = []
    if not isinstance(raw, Mapping):
        raise ValidationError(where, [Problem("file", "is not a mapping", "name, description, inclusion, exclusion", _EXAMPLE)])
    for key in raw:
        if key not in _TOP:
            problems.append(Problem(str(key), "is not a criteria key", ", ".join(_TOP)))
    inclusion = _side(raw.get("inclusion"), "inclusion", problems)
    exclusion = _side(raw.get("exclusion"), "exclusion", problems)
    if inclusion.empty and exclusion.empty and not problems:
        problems.append(Problem("inclusion/exclusion", "no criterion given", fix=_EXAMPLE))
    post = set(schema.post_baseline_columns)
    for label, side in (("inclusion", inclusion), ("exclusion", exclusion)):
        for col in sorted(side.columns(schema) & post):
            problems.append(Problem(f"{label}: {col}", "is recorded after baseline (baseline: false in the schema)",
                                    fix="eligibility can only use what is known at inclusion; drop this criterion"))
    if problems:
        raise ValidationError(where, problems)
    return ArmCriteria(str(raw.get("name") or Path(path).stem), inclusion, exclusion, str(raw.get("description") or ""))


def _side(raw: Any, label: str, problems: list[Problem]) -> CriteriaSet:
    if raw is None:
        return CriteriaSet()
    if not isinstance(raw, Mapping):
        problems.append(Problem(label, f"is a {type(raw).__name__}", "a mapping with categories, ranges, expressions"))
        return CriteriaSet()
    for key in raw:
        if key not in _PARTS:
            problems.append(Problem(f"{label}.{key}", "is not a criteria part", ", ".join(_PARTS)))
    categories: dict[str, tuple[str, ...]] = {}
    for col, values in (raw.get("categories") or {}).items():
        vals = values if isinstance(values, list) else [values]
        if not vals or any(isinstance(v, (list, dict)) or v is None for v in vals):
            problems.append(Problem(f"{label}.categories.{col}", "is not a list of labels", fix="e.g. [High, Very-High]"))
            continue
        categories[str(col)] = tuple(str(int(v)) if isinstance(v, bool) else str(v) for v in vals)
    ranges: dict[str, tuple[float | None, float | None]] = {}
    for col, bounds in (raw.get("ranges") or {}).items():
        if not isinstance(bounds, Mapping) or not set(bounds) <= {"min", "max"} or not bounds:
            problems.append(Problem(f"{label}.ranges.{col}", "is not a mapping with min and/or max", fix="e.g. {min: 65}"))
            continue
        lo, hi = bounds.get("min"), bounds.get("max")
        if any(b is not None and (isinstance(b, bool) or not isinstance(b, (int, float))) for b in (lo, hi)):
            problems.append(Problem(f"{label}.ranges.{col}", "has a bound that is not a number", fix="e.g. {min: 65}"))
            continue
        if lo is not None and hi is not None and lo > hi:
            problems.append(Problem(f"{label}.ranges.{col}", "has min above max", fix="swap them"))
            continue
        ranges[str(col)] = (None if lo is None else float(lo), None if hi is None else float(hi))
    exprs = raw.get("expressions") or []
    if isinstance(exprs, str):
        exprs = [exprs]
    if not isinstance(exprs, list) or not all(isinstance(e, str) and e.strip() for e in exprs):
        problems.append(Problem(f"{label}.expressions", "is not a list of expressions", fix='e.g. ["HB < 10"]'))
        exprs = []
    return CriteriaSet(categories, ranges, tuple(exprs))
