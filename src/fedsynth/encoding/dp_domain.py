"""The shared domain under a privacy budget: count vectors on a coarse shared grid, released with Gaussian noise.

Under ``privacy: {epsilon, delta}`` no domain summary leaves a site exactly. Each site counts its rows with
:func:`dp_counts` — per model column one vector in which every row that holds the column falls in exactly one
cell (missing, a cell of :data:`DP_GRID` within the declared range, or a candidate label), so adding or removing
one patient changes each column's vector by one in one cell: L2 sensitivity 1 per column, √C over C columns. The
sites add Gaussian noise to these vectors (:mod:`fedsynth.privacy.noise`, the two-step BN's count mechanism and
trust model), the server sums them (securely or in clear) and :func:`noisy_summary` turns the noisy sums into a
summary that :func:`~fedsynth.encoding.domain.merge_summaries` merges like any other. Everything here is
post-processing of the noisy sums and costs no privacy:

* bounds are the schema's declared clinical range where it declares one; an undeclared end comes from the noisy
  histogram: the coarse grid point (:data:`~fedsynth.encoding.domain.BOUND_GRID`) beyond the noisy support
  (:func:`noisy_support`: the outermost cells of blocks whose noisy sum clears a threshold set by σ) — a grid
  point, never a site's minimum or maximum;
* quantile bins come from the noisy cells of the support (their noisy
  cumulative count, made non-decreasing from 0), mean and standard deviation from the same cells' midpoints (no
  moments are released);
* a categorical label whose noisy total is under :func:`label_release_threshold` (k plus enough noise standard
  deviations that a label held by fewer than k patients passes with probability at most 1% per column) is
  suppressed (its rows count as missing), declared or not;
* the rows holding a column are estimated once for every group of columns held by the same sites (an
  inverse-variance weighted mean of the columns' noisy totals: a binary column's total has 3 noisy cells, a
  numeric one's hundreds), so missing rates are noisy missing counts over a precise total.

Label names of a categorical column whose categories the schema does not declare come from the data, so which
names exist is itself a release: a label held by one patient names that patient. Under a budget they are chosen
by DP partition selection with Gaussian thresholding (:func:`select_labels`, :func:`label_threshold`), each site
on its own rows: a label is named only when its count at the site plus Gaussian noise of the domain's σ clears a
threshold τ set so that a label held by one patient is named with probability at most the threshold's share of
δ. Sites hold disjoint patients, so the union of the names is as private as one site's (parallel composition);
the named labels' counts then go into the noisy sums like declared ones, and a label under the release threshold
there is suppressed as before. Accounting (:func:`label_selection_budget`): the names are
``C_u`` more Gaussian uses at the domain's noise multiplier (one per column without declared categories: a
patient adds one to one label's count per column, L2 sensitivity √C_u), composed in RDP with everything else;
the threshold's failure probability :data:`LABEL_THRESHOLD_DELTA_SHARE` × δ is kept out of the δ at which the
run's RDP curve is converted, so the run stays (ε, δ)-DP in all. Sources: Desfontaines, Voss, Gipson &
Mandayam, "Differentially private partition selection", PoPETs 2022; Wilson et al., "Differentially private SQL
with bounded user contribution", PoPETs 2020; Google's differential-privacy library
(``GaussianPartitionSelection``: τ = 1 + σ Φ⁻¹(1 − δ'), δ' = 1 − (1 − δ_τ)^(1/L0), and δ = δ_noise + δ_τ).

Why a coarser grid than the exact sums' :data:`~fedsynth.encoding.domain.HIST_GRID` (two significant digits): the
noise of a quantile grows with the number of cells summed below it, so at the noise a small ε gives (σ ≈ 30 per
cell at ε = 3 over 43 columns) 90 cells per decade would bury every quantile; :data:`DP_GRID` has 24 log-spaced
cells per decade (each about 10% wide).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.cohort.schema import ColumnKind, TableSchema
from fedsynth.encoding.domain import coarse_bounds
from fedsynth.encoding.grid import grid_counts, histogram_edges, kept_labels, modes_from_histogram
from fedsynth.errors import Problem, ValidationError
from fedsynth.privacy.accounting import PrivacyBudget

#: Cells per decade of :data:`DP_GRID`.
DP_CELLS_PER_DECADE = 24
#: Family-wise rate at which :func:`noisy_support` lets a cell of pure noise pass, per column (all levels).
SUPPORT_FALSE_POSITIVE_RATE = 0.01
#: Block sizes (adjacent cells summed) at which :func:`noisy_support` looks for occupied cells.
BLOCK_SIZES = (1, 2, 4, 8, 24)


def _log_grid(per_decade: int) -> np.ndarray:
    """0 and ``per_decade`` log-spaced points per decade (two significant digits) from 1e-4 to 1e10, both signs."""
    mant = np.unique(np.round(10.0 ** (np.arange(per_decade) / per_decade), 1))
    pos = np.unique(np.round(np.concatenate([mant * 10.0**e for e in range(-4, 10)] + [np.array([1e10])]), 12))
    return np.concatenate([-pos[::-1], [0.0], pos])


#: The grid noisy domain histograms are counted on (site-independent: the same at every site without a message).
DP_GRID = _log_grid(DP_CELLS_PER_DECADE)


def dp_histogram_edges(lower: float | None, upper: float | None) -> np.ndarray:
    """Cell edges of a numeric column's noisy histogram: :data:`DP_GRID` within the declared range."""
    return histogram_edges(lower, upper, DP_GRID)


def dp_counts(data: pd.DataFrame, schema: TableSchema, labels: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]:
    """A site's count vectors for the noisy domain (``int64``, same names and shapes at every site).

    Per model column: ``<name>/missing`` (1,) — rows that hold the column with no value, or with a label outside
    ``labels[name]``; numeric ``<name>/hist`` — counts on :func:`dp_histogram_edges`; categorical and binary
    ``<name>/labels`` — the count of each of ``labels[name]``. Each row the site holds the column for is in
    exactly one of these cells (L2 sensitivity 1 per column); a column the site lacks is all zeros. No row count
    is sent: the server takes it from the column sums.

    Parameters
    ----------
    data : DataFrame
        The site's rows.
    schema : TableSchema
        The table's schema.
    labels : mapping of str to list of str
        Candidate labels per categorical or binary column (:func:`~fedsynth.encoding.grid.candidate_labels`).

    Returns
    -------
    dict of str to ndarray
    """
    counts = grid_counts(data, schema, labels, edges=dp_histogram_edges)
    out: dict[str, np.ndarray] = {}
    for name in schema.model_columns:
        out[f"{name}/missing"] = np.asarray(counts[f"{name}/n"][1:2], dtype=np.int64)
        for part in ("hist", "labels"):
            if f"{name}/{part}" in counts:
                out[f"{name}/{part}"] = counts[f"{name}/{part}"]
    return out


#: Share of the run's δ taken by label selection's threshold (the chance that a label held by one patient is
#: named); the run's RDP curve is converted to ε at the rest (:func:`label_selection_budget`).
LABEL_THRESHOLD_DELTA_SHARE = 0.1


def undeclared_categoricals(schema: TableSchema) -> list[str]:
    """The categorical model columns whose categories the schema does not declare (their labels come from the
    data, so under a budget they are chosen by :func:`select_labels`)."""
    return [c for c in schema.model_columns
            if schema[c].kind is ColumnKind.CATEGORICAL and schema[c].categories is None]


def label_selection_budget(budget: PrivacyBudget, schema: TableSchema) -> PrivacyBudget:
    """The budget the run's RDP accountant converts at: ``budget`` with δ less the label threshold's share
    (:data:`LABEL_THRESHOLD_DELTA_SHARE`) when the schema has columns without declared categories, else
    ``budget`` unchanged. The threshold's δ is :func:`label_threshold_delta` of the result."""
    if not undeclared_categoricals(schema) or budget.is_infinite:
        return budget
    return dataclasses.replace(budget, delta=budget.delta * (1.0 - LABEL_THRESHOLD_DELTA_SHARE))


def label_threshold_delta(rdp_budget: PrivacyBudget) -> float:
    """δ_τ, the threshold's share of the run's δ, from the budget :func:`label_selection_budget` returned."""
    return rdp_budget.delta * LABEL_THRESHOLD_DELTA_SHARE / (1.0 - LABEL_THRESHOLD_DELTA_SHARE)


def label_threshold(noise_std: float, threshold_delta: float, n_columns: int) -> float:
    """τ of Gaussian partition selection: a label counted by one patient only (its count 1) clears it, with
    noise of standard deviation ``noise_std``, with probability ``δ' = 1 − (1 − δ_τ)^(1/n_columns)``, so that a
    patient's ``n_columns`` labels (one per column) are named with probability at most ``threshold_delta``.

    Parameters
    ----------
    noise_std : float
        σ of the noise on each label count (the domain's noise multiplier: sensitivity 1 per column).
    threshold_delta : float
        δ_τ in (0, 1).
    n_columns : int
        Columns whose labels are selected (L0: labels one patient contributes to).

    Returns
    -------
    float
        ``1 + σ Φ⁻¹(1 − δ')`` (Google's ``GaussianPartitionSelection::CalculateThresholdFromStddev``).
    """
    from scipy.stats import norm

    per_label = -float(np.expm1(np.log1p(-threshold_delta) / max(int(n_columns), 1)))
    return 1.0 + float(noise_std) * float(norm.isf(per_label))


def label_selection_delta(noise_std: float, threshold: float, n_columns: int) -> float:
    """δ_τ a threshold spends: the chance that a patient's labels (one per column, each counted by that patient
    alone) clear ``threshold`` under noise of standard deviation ``noise_std`` in at least one of ``n_columns``
    columns, ``1 − (1 − Φ̄((τ − 1)/σ))^n_columns`` — the inverse of :func:`label_threshold`, computed from what a
    site actually applied (a higher τ, e.g. the site's own k, spends less), for its ledger.

    Parameters
    ----------
    noise_std : float
        σ of the noise on each label count.
    threshold : float
        τ the site applied.
    n_columns : int
        Columns whose labels were selected (at most one label per patient in each).

    Returns
    -------
    float
        δ_τ in [0, 1].
    """
    from scipy.stats import norm

    per_label = float(norm.sf((float(threshold) - 1.0) / float(noise_std)))
    return -float(np.expm1(max(int(n_columns), 1) * np.log1p(-per_label)))


def select_labels(
    data: pd.DataFrame,
    schema: TableSchema,
    columns: Sequence[str],
    *,
    noise_std: float,
    threshold: float,
    random_state: np.random.Generator | int | None,
) -> dict[str, list[str]]:
    """A site's label names under a budget: per column of ``columns`` it holds, the labels whose count in its rows
    plus Gaussian noise of standard deviation ``noise_std`` exceeds ``threshold`` (:func:`label_threshold`),
    sorted. Only names leave (no count); a label the site does not hold is never named.

    Parameters
    ----------
    data : DataFrame
        The site's rows (one per patient).
    schema : TableSchema
        The table's schema.
    columns : sequence of str
        Categorical columns without declared categories (:func:`undeclared_categoricals`).
    noise_std, threshold : float
        σ and τ.
    random_state : Generator, int or None
        The noise's source (a site's OS entropy in a run).

    Returns
    -------
    dict of str to list of str
    """
    rng = np.random.default_rng(random_state)
    out: dict[str, list[str]] = {}
    for name in columns:
        if name not in data.columns:
            continue
        counts = data[name].dropna().astype(str).value_counts()
        noisy = counts.to_numpy(dtype=float) + rng.normal(0.0, noise_std, size=len(counts))
        out[name] = sorted(str(label) for label, x in zip(counts.index, noisy, strict=True) if x > threshold)
    return out


def support_threshold(noise_std: float, n_cells: int, min_count: int) -> float:
    """The noisy count a cell (or block of cells) needs to count as occupied: at least ``min_count``, and high
    enough that among ``n_cells`` empty ones with Gaussian noise of standard deviation ``noise_std`` one passes
    with probability at most :data:`SUPPORT_FALSE_POSITIVE_RATE` (a one-sided Bonferroni bound)."""
    from scipy.stats import norm

    z = float(norm.isf(SUPPORT_FALSE_POSITIVE_RATE / max(n_cells, 1)))
    return max(float(min_count), z * float(noise_std))


def label_release_threshold(noise_std: float, n_labels: int, min_count: int) -> int:
    """The noisy total a categorical label needs to be released from the noisy domain: high enough that a label
    held by fewer than ``min_count`` (k) patients across the federation passes with probability at most
    :data:`SUPPORT_FALSE_POSITIVE_RATE` per column (one-sided Bonferroni over the column's ``n_labels``), i.e.
    ``ceil(k - 1 + z * noise_std)`` with ``z = Φ⁻¹(1 - rate / n_labels)``, and never under k. Post-processing of
    the noisy sums: it costs no ε. The price is that a label with few more than k patients is suppressed too
    (its rows count as missing), more so at a small ε."""
    from scipy.stats import norm

    z = float(norm.isf(SUPPORT_FALSE_POSITIVE_RATE / max(int(n_labels), 1)))
    return max(int(min_count), int(np.ceil(int(min_count) - 1 + z * float(noise_std))))


def noisy_support(hist: np.ndarray, noise_std: float, min_count: int) -> tuple[int, int]:
    """The first and last cell of a noisy histogram's support: the outermost cells of any block of 1, 2, 4, 8 or
    24 adjacent cells whose noisy sum clears :func:`support_threshold` at its level (a block of ``b`` cells
    carries noise ``noise_std * sqrt(b)``; coarse blocks find spread-out values that no single cell shows, fine
    ones sharpen the ends). When nothing clears any level, the most counted cell.

    Returns
    -------
    (int, int)
        Indices of the first and last occupied cell (inclusive).
    """
    first, last = len(hist), -1
    for b in BLOCK_SIZES:
        n_blocks = -(-len(hist) // b)
        sums = np.add.reduceat(hist, np.arange(0, len(hist), b)) if len(hist) else np.zeros(0)
        tau = support_threshold(noise_std * float(np.sqrt(b)), n_blocks * len(BLOCK_SIZES), min_count)
        hit = np.flatnonzero(sums >= tau)
        if len(hit):
            first = min(first, int(hit[0]) * b)
            last = max(last, min(int(hit[-1]) * b + b, len(hist)) - 1)
    if last < 0:
        i = int(np.argmax(hist))
        return i, i
    return first, last


def _numeric_entry(
    hist: np.ndarray, lower: float | None, upper: float | None, noise_std: float, min_count: int
) -> dict[str, Any]:
    """Bounds and cells of one numeric column from its noisy histogram (see the module)."""
    edges = dp_histogram_edges(lower, upper)
    i0, i1 = noisy_support(hist, noise_std, min_count)
    left, right = float(edges[i0]), float(edges[i1 + 1])
    lo, hi = coarse_bounds(left, right, lower, upper)
    lo = float(lower) if lower is not None else min(lo, left)
    hi = float(upper) if upper is not None else max(hi, right)
    # Cells from the noisy cumulative count, made non-decreasing from 0: clipping each cell at 0 instead would
    # pile the positive half of every sparse cell's noise into the distribution (hundreds of rows over a decade).
    cum = np.maximum.accumulate(np.clip(np.cumsum(hist[i0 : i1 + 1]), 0, None))
    cells = np.diff(np.concatenate([[0.0], np.rint(cum)])).astype(np.int64)
    if cells.sum() == 0:
        cells[int(np.argmax(hist[i0 : i1 + 1]))] = 1
    cell_edges = [float(e) for e in edges[i0 : i1 + 2]]
    counts = [int(c) for c in cells]
    # Empty cells out to the bounds, so that the first and last edges are the bounds (merge_summaries' layout).
    if lo < cell_edges[0]:
        cell_edges, counts = [lo, *cell_edges], [0, *counts]
    if hi > cell_edges[-1]:
        cell_edges, counts = [*cell_edges, hi], [*counts, 0]
    return {"lower": lo, "upper": hi, "hist_edges": cell_edges, "hist_counts": counts}


def _rows_holding(
    summed: Mapping[str, np.ndarray], schema: TableSchema, holders: Mapping[str, Collection[str]]
) -> dict[str, float]:
    """Per column, the rows that hold it: one estimate per group of columns held by the same sites, the
    inverse-variance weighted mean of the group's noisy column totals (a total over m cells has variance m σ²)."""
    groups: dict[frozenset[str], list[tuple[float, int]]] = {}
    for name in schema.model_columns:
        if not holders.get(name):
            continue
        parts = [np.asarray(summed[key], dtype=float) for key in (f"{name}/missing", f"{name}/hist", f"{name}/labels")
                 if key in summed]
        groups.setdefault(frozenset(holders[name]), []).append((float(sum(p.sum() for p in parts)),
                                                               sum(p.size for p in parts)))
    estimate = {g: max(0.0, sum(t / m for t, m in totals) / sum(1.0 / m for _, m in totals))
                for g, totals in groups.items()}
    return {name: estimate[frozenset(holders[name])] for name in schema.model_columns if holders.get(name)}


def _keep_observed(entry: dict[str, Any], n: int, observed: int, missing: int) -> tuple[int, int]:
    """Set ``entry``'s rows and missing count so that its ``observed`` released values (histogram cells, kept
    labels) stay observed whatever the noise on the other cells: ``n = max(n, observed)``, ``n_missing =
    min(missing, n - observed)``. A noisy missing count at or over the rows would otherwise read as "every value is
    missing" (merge_summaries' words), which the data need not say. Returns the new ``(n, n_missing)``."""
    entry["n"] = n = max(n, observed)
    entry["n_missing"] = missing = min(missing, n - observed)
    return n, missing


def noisy_summary(
    summed: Mapping[str, np.ndarray],
    labels: Mapping[str, Sequence[str]],
    schema: TableSchema,
    *,
    holders: Mapping[str, Collection[str]],
    noise_std: float,
    min_count: int = 5,
    significant_digits: int = 3,
    n_modes: int = 0,
    random_state: int | None = 0,
) -> dict[str, Any]:
    """Server side: the noisy sums of :func:`dp_counts` as one summary (the input of
    :func:`~fedsynth.encoding.domain.merge_summaries`); post-processing only (see the module).

    Parameters
    ----------
    summed : mapping of str to ndarray
        The sum over sites of the sites' noisy :func:`dp_counts` vectors.
    labels : mapping of str to list of str
        The candidate labels the vectors were counted over.
    schema : TableSchema
        The table's schema (declared ranges and categories).
    holders : mapping of str to collection of str
        Per column, the sites that hold it (from the sites' hello); a column no site holds is left out.
    noise_std : float
        σ the sums carry per cell (for the support threshold).
    min_count : int
        ``k``: a categorical label needs a noisy total of :func:`label_release_threshold` (at least k) to be
        released; the least a histogram cell or a missing count needs to count as non-empty.
    significant_digits, n_modes, random_state
        Rounding, number and seed of mixture modes fitted to draws from the noisy histogram (``n_modes > 0``).

    Returns
    -------
    dict
        ``{"n_rows": ..., "columns": {...}}`` in :func:`~fedsynth.encoding.domain.release_summary`'s layout,
        without sums (mean and standard deviation then come from the cells' midpoints).

    Raises
    ------
    ValidationError
        A categorical column none of whose labels cleared the release threshold (every such column listed, with
        the threshold in patients and the settings that would change it; no count is named).
    """
    rng = np.random.default_rng(random_state)
    rows = _rows_holding(summed, schema, holders)
    # A noisy missing count is taken as 0 unless it clears the bar one cell of pure noise passes 1% of the time.
    floor = support_threshold(noise_std, 1, min_count)
    columns: dict[str, Any] = {}
    silenced: list[Problem] = []
    for name, n in ((c, round(r)) for c, r in rows.items()):
        spec = schema[name]
        noisy_missing = float(np.asarray(summed[f"{name}/missing"]).sum())
        missing = int(np.clip(np.rint(noisy_missing), 0, n)) if noisy_missing >= floor else 0
        entry: dict[str, Any] = {"kind": spec.kind.value, "n": n, "n_missing": missing}
        if spec.is_numeric:
            hist = np.asarray(summed[f"{name}/hist"], dtype=float)
            entry.update(_numeric_entry(hist, spec.lower, spec.upper, noise_std, min_count))
            n, missing = _keep_observed(entry, n, int(sum(entry["hist_counts"])), missing)
            if n_modes > 0:
                entry["modes"] = modes_from_histogram(entry["hist_edges"], entry["hist_counts"], max(n - missing, 1),
                                                      n_modes, rng, min_count=min_count,
                                                      significant_digits=significant_digits, random_state=random_state)
        else:
            c = np.asarray(summed[f"{name}/labels"], dtype=float)
            names = list(labels.get(name, ()))
            threshold = label_release_threshold(noise_std, len(names), min_count)
            kept = kept_labels(names, c, spec.kind, threshold)
            # Not "every value is missing" (merge_summaries' words for a column with no values): here no category
            # came through the budget's thresholds, figures of σ and k alone (no patient's value).
            if spec.kind is ColumnKind.CATEGORICAL and not names:
                silenced.append(Problem(
                    f"column {name!r}", "no site named a category of it in the private label selection (a category "
                    "needs a noisy count over the selection's threshold at one site at this budget; or the column "
                    "holds no value at any site)",
                    fix="raise privacy.epsilon, declare the column's categories in the schema, or leave the column "
                        "out of the model (its role in the schema)"))
            elif names and not kept:
                silenced.append(Problem(
                    f"column {name!r}", f"no category cleared the private domain's release threshold (a category "
                    f"needs a noisy total of about {threshold:.0f} patients over the sites at this budget)",
                    fix="raise privacy.epsilon, or leave the column out of the model (its role in the schema)"))
            entry["counts"] = kept
            # Suppressed labels' rows count as missing, as a site's own release does.
            released = sum(kept.values())
            suppressed = int(np.clip(np.rint(c), 0, None).sum()) - released
            _keep_observed(entry, n, released, missing + max(suppressed, 0))
        columns[name] = entry
    if silenced:
        raise ValidationError("The private domain", silenced)
    sizes = [int(e["n"]) for e in columns.values()]
    return {"n_rows": max(sizes) if sizes else 0, "columns": columns}
