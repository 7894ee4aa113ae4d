"""Shared helpers of the evaluator: column groups, category codes, same-size samples and JSON-safe values."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedsynth.cohort.schema import ColumnKind, ColumnRole, TableSchema
from fedsynth.errors import Problem, ValidationError

#: Category labels seen in fewer real rows than this are pooled into :data:`RARE_LABEL` in every report, so
#: that a label unique to one patient can never appear in an artefact.
MIN_CELL = 5
RARE_LABEL = "(rare labels)"
MISSING_LABEL = "(missing)"


@dataclass(frozen=True)
class Columns:
    """The schema's data columns present in both frames, grouped the way the scores need them."""

    data: tuple[str, ...]
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]  # categorical and binary kinds (compared as labels)
    clinical: tuple[str, ...]
    genomic: tuple[str, ...]
    outcome: tuple[str, ...]

    @classmethod
    def from_schema(cls, schema: TableSchema, *frames: pd.DataFrame) -> Columns:
        present = [c for c in schema.data_columns if all(c in f.columns for f in frames)]
        num = tuple(c for c in present if schema[c].kind in (ColumnKind.CONTINUOUS, ColumnKind.INTEGER))
        cat = tuple(c for c in present if schema[c].kind in (ColumnKind.CATEGORICAL, ColumnKind.BINARY))

        def role(r: ColumnRole) -> tuple[str, ...]:
            return tuple(c for c in present if schema[c].role is r)

        return cls(tuple(present), num, cat, role(ColumnRole.CLINICAL), role(ColumnRole.GENOMIC), role(ColumnRole.OUTCOME))


def check_inputs(
    real_data: pd.DataFrame,
    synthetic_data: pd.DataFrame,
    schema: TableSchema,
    holdout_data: pd.DataFrame | None = None,
) -> None:
    """Raise one :class:`ValidationError` listing every structural problem of the frames to score."""
    problems: list[Problem] = []
    frames = {"real_data": real_data, "synthetic_data": synthetic_data}
    if holdout_data is not None:
        frames["holdout_data"] = holdout_data
    for name, frame in frames.items():
        if not isinstance(frame, pd.DataFrame):
            problems.append(Problem(name, f"is a {type(frame).__name__}", "a pandas DataFrame"))
            continue
        if len(frame) < 2:
            problems.append(Problem(name, f"has {len(frame)} row(s)", "at least 2 rows"))
        missing = [c for c in schema.data_columns if c not in frame.columns]
        if missing:
            problems.append(Problem(name, f"lacks {len(missing)} data column(s) of the schema: {missing}",
                                    fix="score frames that hold every data column of the schema"))
        bad_dtype = [
            c for c in schema.data_columns
            if c in frame.columns and schema[c].kind is not ColumnKind.CATEGORICAL
            and not pd.api.types.is_numeric_dtype(frame[c])
        ]
        if bad_dtype:
            problems.append(Problem(name, f"numeric column(s) not stored as numbers: {bad_dtype}",
                                    "canonical dtypes (float64)", "pass frames through schema.coerce(...)"))
    if problems:
        raise ValidationError("Evaluation input", problems)


def labels(series: pd.Series) -> pd.Series:
    """Values of a categorical or binary column as str labels (binary 0/1 floats as '0'/'1'); NaN stays NaN."""
    vals = series.to_numpy()
    out = np.full(len(vals), np.nan, dtype=object)
    if pd.api.types.is_numeric_dtype(series):
        num = vals.astype(float)
        for u in np.unique(num[np.isfinite(num)]):
            out[num == u] = str(int(u)) if float(u).is_integer() else str(u)
        return pd.Series(out, index=series.index, dtype="object")
    mask = pd.isna(vals)
    present = vals[~mask]
    if all(isinstance(v, str) for v in pd.unique(present)):
        out[~mask] = present
    else:
        out[~mask] = [str(int(v)) if isinstance(v, (float, np.floating)) and float(v).is_integer() else str(v)
                      for v in present]
    return pd.Series(out, index=series.index, dtype="object")


def category_codes(real: pd.Series, *others: pd.Series) -> tuple[list[str], list[np.ndarray]]:
    """Integer codes over the union of labels (sorted), with the missing state as the last code."""
    lab = [labels(real)] + [labels(o) for o in others]
    union = sorted(set().union(*(set(s.dropna().unique()) for s in lab)))
    miss = len(union)
    codes = []
    for s in lab:
        cd = pd.Categorical(s, categories=union).codes.astype(np.int64)
        cd[cd < 0] = miss
        codes.append(cd)
    return union, codes


def numeric_bins(real: pd.Series, n_bins: int = 10) -> np.ndarray:
    """Inner edges of (at most) ``n_bins`` quantile bins of the real observed values."""
    v = real.dropna().to_numpy(dtype=float)
    if len(v) == 0:
        return np.array([], dtype=float)
    qs = np.quantile(v, np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.unique(qs)


def bin_codes(series: pd.Series, edges: np.ndarray) -> np.ndarray:
    """Bin index of each value (0..len(edges)); missing gets its own last code len(edges) + 1."""
    v = series.to_numpy(dtype=float)
    codes: np.ndarray = np.searchsorted(edges, v, side="right").astype(np.int64)
    codes[np.isnan(v)] = len(edges) + 1
    return codes


def same_size_sample(
    synthetic_data: pd.DataFrame, n: int, rng: np.random.Generator, factor: int = 1
) -> pd.DataFrame:
    """Rows of ``synthetic_data`` for tests of significance: a sample without replacement of ``factor`` times the
    real data's size ``n`` when the synthetic table is larger, else the whole table."""
    if len(synthetic_data) <= factor * n:
        return synthetic_data
    idx = rng.choice(len(synthetic_data), size=factor * n, replace=False)
    return synthetic_data.iloc[np.sort(idx)]


def spawn(random_state: int | np.random.Generator | None, n: int) -> list[np.random.Generator]:
    """``n`` independent generators from one seed (so each part of the report is reproducible alone)."""
    if isinstance(random_state, np.random.Generator):
        seeds = random_state.integers(0, 2**63 - 1, size=n)
        return [np.random.default_rng(int(s)) for s in seeds]
    return [np.random.default_rng(s) for s in np.random.SeedSequence(random_state).spawn(n)]


def sig_round(x: float, sig: int = 4) -> float:
    """``x`` rounded to ``sig`` significant digits (used for every value derived from single real values)."""
    if x is None or not math.isfinite(x) or x == 0:
        return x
    return round(x, sig - 1 - math.floor(math.log10(abs(x))))


def nice_edges(real_values: np.ndarray, n_bins: int = 20) -> np.ndarray:
    """Histogram edges from the real 1st and 99th percentiles, rounded outward to 2 significant digits,
    so no single patient's value becomes an edge."""
    v = real_values[np.isfinite(real_values)]
    if len(v) == 0:
        return np.linspace(0.0, 1.0, n_bins + 1)
    lo, hi = np.quantile(v, [0.01, 0.99])
    span = hi - lo
    if span <= 0:
        span = abs(hi) if hi != 0 else 1.0
    step = 10 ** math.floor(math.log10(span)) / 10
    lo_r = math.floor(lo / step) * step
    hi_r = math.ceil(hi / step) * step
    if hi_r <= lo_r:
        hi_r = lo_r + step
    return np.array([sig_round(e, 6) for e in np.linspace(lo_r, hi_r, n_bins + 1)])


def mean_or_none(values: Sequence[float]) -> float | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(vals)) if vals else None
