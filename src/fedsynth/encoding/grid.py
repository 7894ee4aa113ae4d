"""The shared domain from sums over sites: every site bins its rows on one grid known to all, so vectors sum.

Under secure aggregation no site sends its own summary: every site bins its rows on the same grid (known to all
without a message), the vectors are summed so that the server sees only the sums over sites, and disclosure
control (cells and labels of at least k rows) is applied to those sums. Two sums: counts (histograms on the full
shared grid, row and missing counts, label counts, which endpoint rules fail), then, once the bounds are known
from the summed histograms, the moments of each numeric column rescaled to [0, 1] within those bounds (so that a
fixed-point sum holds them whatever the column's scale). The output of :func:`summary_from_grid` is merged by
:func:`fedsynth.encoding.domain.merge_summaries` like one site's released summary. Under a privacy budget the
same counts are released with noise (:mod:`fedsynth.encoding.dp_domain`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.cohort.schema import ColumnKind, TableSchema
from fedsynth.encoding.domain import (
    BOUND_GRID,
    HIST_GRID,
    coarse_bounds,
    fit_modes,
    merge_small_cells,
    release_modes,
)


def histogram_edges(lower: float | None, upper: float | None, grid: np.ndarray = HIST_GRID) -> np.ndarray:
    """The cell edges every site bins a numeric column on: ``grid`` (:data:`HIST_GRID` unless another shared
    grid is given), within the schema's declared clinical range when there is one (the declared bounds are then
    the outer edges). Values outside the edges fall into the outer cells."""
    g = grid
    if lower is not None:
        g = np.concatenate([[float(lower)], g[g > float(lower)]])
    if upper is not None:
        g = np.concatenate([g[g < float(upper)], [float(upper)]])
    return g


def _labels_of(s: pd.Series, kind: ColumnKind) -> pd.Series:
    labels = s.dropna()
    if kind is ColumnKind.BINARY:
        return labels.astype("float64").astype(int).astype(str)
    return labels.astype(str)


def frequent_labels(data: pd.DataFrame, schema: TableSchema, *, min_count: int = 5) -> dict[str, list[str]]:
    """Per categorical model column the site holds, the labels it holds at least ``min_count`` times (names only,
    no count): the candidates a secure sum of label counts runs over, besides the schema's declared ones."""
    out: dict[str, list[str]] = {}
    for name in schema.model_columns:
        spec = schema[name]
        if name in data.columns and spec.kind is ColumnKind.CATEGORICAL:
            counts = _labels_of(data[name], spec.kind).value_counts()
            out[name] = sorted(str(k) for k, c in counts.items() if int(c) >= min_count)
    return out


def candidate_labels(schema: TableSchema, announced: Sequence[Mapping[str, Sequence[str]]]) -> dict[str, list[str]]:
    """Per categorical or binary model column, the labels every site counts in a secure sum: binary ``0``/``1``;
    categorical the declared categories, then the labels any site announced (:func:`frequent_labels`)."""
    out: dict[str, list[str]] = {}
    for name in schema.model_columns:
        spec = schema[name]
        if spec.kind is ColumnKind.BINARY:
            out[name] = ["0", "1"]
        elif spec.kind is ColumnKind.CATEGORICAL:
            declared = list(spec.categories or ())
            seen = {str(label) for a in announced for label in a.get(name, ())}
            out[name] = declared + sorted(seen - set(declared))
    return out


def grid_counts(
    data: pd.DataFrame,
    schema: TableSchema,
    labels: Mapping[str, Sequence[str]],
    *,
    edges: Callable[[float | None, float | None], np.ndarray] = histogram_edges,
) -> dict[str, np.ndarray]:
    """A site's count vector for the secure sum of domain summaries (``int64`` arrays, same names and shapes at
    every site).

    ``n_rows`` (1,); per model column ``<name>/n`` = (rows that hold the column, of them missing): zeros when the
    site lacks it; numeric ``<name>/hist``: counts on :func:`histogram_edges` (the whole shared grid, so every
    site's vector has the same length); categorical and binary ``<name>/labels``: the count of each of
    ``labels[name]`` (a label not among them is counted as missing, as :func:`release_summary` does). ``edges``
    gives a numeric column's cell edges from its declared range (another shared grid, e.g. the noisy domain's).
    """
    out: dict[str, np.ndarray] = {"n_rows": np.array([len(data)], dtype=np.int64)}
    for name in schema.model_columns:
        spec = schema[name]
        held = name in data.columns
        s = data[name] if held else pd.Series(dtype="float64")
        n_missing = int(s.isna().sum())
        if spec.is_numeric:
            cells = edges(spec.lower, spec.upper)
            v = s.dropna().astype("float64").to_numpy()
            out[f"{name}/hist"] = np.histogram(np.clip(v, cells[0], cells[-1]), cells)[0].astype(np.int64)
        else:
            names = list(labels.get(name, ()))
            counts = _labels_of(s, spec.kind).value_counts()
            c = np.array([int(counts.get(label, 0)) for label in names], dtype=np.int64)
            n_missing += len(s) - n_missing - int(c.sum())  # labels outside the candidates leave as missing
            out[f"{name}/labels"] = c
        out[f"{name}/n"] = np.array([len(s) if held else 0, n_missing], dtype=np.int64)
    return out


def grid_bounds(counts: Mapping[str, np.ndarray], schema: TableSchema) -> dict[str, tuple[float, float]]:
    """Server side: the coarse bounds of each numeric column from the summed histograms — the
    :data:`BOUND_GRID` point strictly below the lowest occupied cell's left edge and the one at or above the
    highest occupied cell's right edge (which no value in the cell reaches), within the declared range (no value,
    only grid points).
    Columns with no observed value are left out."""
    out: dict[str, tuple[float, float]] = {}
    for name in schema.model_columns:
        spec = schema[name]
        if not spec.is_numeric or f"{name}/hist" not in counts:
            continue
        hist = np.asarray(counts[f"{name}/hist"])
        occupied = np.flatnonzero(hist > 0)
        if not len(occupied):
            continue
        edges = histogram_edges(spec.lower, spec.upper)
        # Values in the highest occupied cell lie below its right edge (the grid's last edge aside, where the
        # declared range or the grid's end clips anyway): the coarse point at or above that edge bounds them.
        right = float(edges[occupied[-1] + 1])
        top = float(BOUND_GRID[min(int(np.searchsorted(BOUND_GRID, right, side="left")), len(BOUND_GRID) - 1)])
        lo, _ = coarse_bounds(float(edges[occupied[0]]), right, spec.lower, spec.upper)
        hi = top if spec.upper is None else min(top, float(spec.upper))
        out[name] = (lo, max(hi, lo))
    return out


def grid_moments(
    data: pd.DataFrame, schema: TableSchema, bounds: Mapping[str, tuple[float, float]]
) -> dict[str, np.ndarray]:
    """A site's float vector for the second secure sum: per numeric column in ``bounds``, ``<name>/moments`` =
    (sum of u, sum of u**2) with ``u = (x - lower) / (upper - lower)`` in [0, 1] (values clipped to the bounds;
    zeros when the site lacks the column). Rescaled so that the fixed-point sum holds any column's scale."""
    out: dict[str, np.ndarray] = {}
    for name, (lo, hi) in bounds.items():
        width = hi - lo if hi > lo else 1.0
        v = data[name].dropna().astype("float64").to_numpy() if name in data.columns else np.zeros(0)
        u = (np.clip(v, lo, hi) - lo) / width
        out[f"{name}/moments"] = np.array([u.sum(), (u**2).sum()], dtype=np.float64)
    return out


def summary_from_grid(
    counts: Mapping[str, np.ndarray],
    moments: Mapping[str, np.ndarray],
    bounds: Mapping[str, tuple[float, float]],
    labels: Mapping[str, Sequence[str]],
    schema: TableSchema,
    *,
    min_count: int = 5,
    significant_digits: int = 3,
    n_modes: int = 0,
    random_state: int | None = 0,
) -> dict[str, Any]:
    """Server side: the sums over sites as one released summary (the input of :func:`merge_summaries`).

    The same disclosure control as :func:`release_summary`, applied to the sums: histogram cells within the
    bounds merged until each holds ``min_count`` rows (:func:`merge_small_cells`), labels under ``min_count``
    across the federation counted as missing (declared or not), sums only from ``min_count`` values. Mixture
    modes (``n_modes > 0``) are fitted to draws from the merged histogram (uniform within each cell, seeded by
    ``random_state``) — never to a value — and released like a site's (:func:`release_modes`).

    Parameters
    ----------
    counts, moments : mapping of str to ndarray
        The summed :func:`grid_counts` and :func:`grid_moments` vectors.
    bounds : mapping of str to (float, float)
        :func:`grid_bounds` of ``counts``.
    labels : mapping of str to list of str
        The candidate labels the counts were taken over (:func:`candidate_labels`).
    schema : TableSchema
        The table's schema.
    min_count, significant_digits, n_modes, random_state
        As for :func:`release_summary` and :func:`summarize_site`.

    Returns
    -------
    dict
        ``{"n_rows": ..., "columns": {...}}`` in :func:`release_summary`'s layout.
    """
    out: dict[str, Any] = {"n_rows": int(np.asarray(counts["n_rows"]).sum()), "columns": {}}
    rng = np.random.default_rng(random_state)
    for name in schema.model_columns:
        spec = schema[name]
        n, n_missing = (int(x) for x in np.asarray(counts[f"{name}/n"]))
        if n == 0:
            continue  # no site holds the column
        entry: dict[str, Any] = {"kind": spec.kind.value, "n": n, "n_missing": n_missing}
        if spec.is_numeric and name in bounds:
            lo, hi = bounds[name]
            edges = histogram_edges(spec.lower, spec.upper)
            hist = np.asarray(counts[f"{name}/hist"], dtype=np.int64)
            n_obs = int(hist.sum())
            # occupied cells lie inside [lo, hi], and lo and hi are grid points: the cells from lo to hi
            i0 = int(np.searchsorted(edges, lo, side="left"))
            i1 = int(np.searchsorted(edges, hi, side="left"))
            cell_edges = edges[i0 : i1 + 1]
            cell_counts = hist[i0:i1]
            if len(cell_edges) < 2 or cell_edges[0] != lo or cell_edges[-1] != hi:
                cell_edges, cell_counts = np.array([lo, hi]), np.array([n_obs])
            merged_edges, merged_counts = merge_small_cells(
                [float(x) for x in cell_edges], [int(x) for x in cell_counts], min_count
            )
            entry.update(lower=lo, upper=hi, hist_edges=merged_edges, hist_counts=merged_counts)
            if n_obs >= min_count:
                su, su2 = (float(x) for x in np.asarray(moments[f"{name}/moments"]))
                w = hi - lo if hi > lo else 1.0
                entry.update(sum=n_obs * lo + w * su, sumsq=n_obs * lo**2 + 2 * lo * w * su + w**2 * su2)
            if n_modes > 0:
                entry["modes"] = modes_from_histogram(merged_edges, merged_counts, n_obs, n_modes, rng, min_count=min_count,
                                                      significant_digits=significant_digits, random_state=random_state)
        elif not spec.is_numeric:
            c = np.asarray(counts[f"{name}/labels"], dtype=np.int64)
            kept = kept_labels(list(labels.get(name, ())), c, spec.kind, min_count)
            entry["counts"] = kept
            entry["n_missing"] = n - sum(kept.values())
        out["columns"][name] = entry
    return out


def kept_labels(names: Sequence[str], counts: Sequence[float] | np.ndarray, kind: ColumnKind, min_count: int) -> dict[str, int]:
    """The labels a summed count vector releases, with their counts: binary labels (``0``/``1`` name nobody) when
    non-empty, categorical labels only when counted at least ``min_count`` times across the federation (declared
    or not); the others' rows count as missing."""
    out: dict[str, int] = {}
    for label, x in zip(names, counts):
        c = int(np.rint(float(x)))
        if c > 0 and (kind is ColumnKind.BINARY or c >= min_count):
            out[str(label)] = c
    return out


def modes_from_histogram(
    edges: Sequence[float],
    counts: Sequence[float],
    n_obs: int,
    n_modes: int,
    rng: np.random.Generator,
    *,
    min_count: int,
    significant_digits: int,
    random_state: int | None,
) -> dict[str, list[float]]:
    """Released mixture modes of a summed histogram: :func:`~fedsynth.encoding.domain.fit_modes` on 4,000 draws
    (a cell by its count, then uniform within it) — never on a value — released by
    :func:`~fedsynth.encoding.domain.release_modes`."""
    e = np.asarray(edges, dtype=float)
    c = np.clip(np.asarray(counts, dtype=float), 0.0, None)
    p = c / c.sum() if c.sum() > 0 else np.full(len(c), 1.0 / len(c))
    cell = rng.choice(len(c), size=4000, p=p)
    draws = rng.uniform(e[cell], e[cell + 1])
    modes = fit_modes(draws, n_modes, random_state)
    return release_modes(modes.to_dict(), n_obs, min_count, significant_digits)
