"""Per-component category counts of a latent mixture, summed over sites, and the component weights of a condition.

A VAE-BGM decodes every column of a row with its own noise, so rejection sampling alone keeps rows that meet a
condition such as ``TP53 = 1`` by decoding noise: many of them come from latent components of patients who do not
carry it (the TP53-mutated arm then outlives the real one by a third). The fix here is count-based and exactly
federated. At the end of training each site computes, for each of its rows, the responsibilities of the global
mixture's components (from the row's latent code, which never leaves the site) and returns, per component, the
responsibility-weighted counts of each categorical or binary column's labels (and of the derived columns'
labels it can compute), missing values counted as one more label::

    counts[col][k, j] = sum_i r_ik [x_i,col == label_j]         (j = n_labels: missing)

Sums over sites equal the pooled counts. A conditional draw then picks components by

    P(k | condition) ∝ pi_k * prod_col P(col in V_col | k),     P(col in V | k) = (c_kV + |V| / L) / (c_k + 1)

(``L`` labels including missing, one pseudo-row spread evenly), a product over the conditioned columns, and the
decoded rows are still filtered so that every returned row meets the condition exactly. Components are read with
the mixture's point estimates (``weights``, ``means``, ``covariances``), the parameters sampling draws from.

Numeric baseline columns (not outcomes, not ``baseline: false``) are counted the same way on the shared domain's
bins (``counts[col][k, b]``, missing last), so a range term such as ``AGE >= 65`` can enter the product too
(VAE-BGM's ``condition_ranges``)::

    P(lo <= col <= hi | k) = (sum_b c_kb f_b + sum_b f_b / L) / (c_k + 1)

with ``f_b`` the share of bin ``b`` inside the range: values spread evenly inside a bin (a continuous column: the
share of its length; an integer column: the share of the integers it holds), ``L`` = bins + 1.

What a site releases in clear (no secure aggregation) follows its smallest released count ``k``
(:func:`release_counts`): summed over components a column's table is the site's row count per label or bin, so a
label held by fewer than ``k`` rows is left out (as the shared domain leaves it out), a bin under ``k`` is merged
with its neighbours and the merged counts spread evenly over the merged bins (as the domain's histograms merge
cells), and a missing count under ``k`` is left out. The per-component split of a row is soft (responsibilities),
as for the label counts. Under secure aggregation the server learns only the sums and nothing is merged; under a
privacy budget the counts are not asked for.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from fedsynth.cohort.derived import DERIVATIONS
from fedsynth.cohort.schema import ColumnKind, ColumnRole, TableSchema
from fedsynth.encoding.domain import Domain

#: Column -> its labels, in count order (the missing label is the extra last count).
CountColumns = dict[str, tuple[str, ...]]
#: Numeric column -> the shared domain's bin edges (``n_bins + 1``; the missing count is the extra last count).
CountBins = dict[str, tuple[float, ...]]
#: Numeric column -> the inclusive range ``(lo, hi)`` a condition asks of it (``-inf``/``inf`` when open).
Ranges = dict[str, tuple[float, float]]


def count_columns(schema: TableSchema, domain: Domain) -> CountColumns:
    """The columns counted per component and their labels: every categorical or binary model column of the
    domain (labels ``"0"``/``"1"`` for a binary one) and every derived categorical column with declared
    categories."""
    out: CountColumns = {}
    for name, col in domain.columns.items():
        if col.kind in (ColumnKind.CATEGORICAL, ColumnKind.BINARY) and name in schema:
            out[name] = tuple(str(c) for c in col.categories)
    for name in schema.derived_columns:
        spec = schema[name]
        cats = getattr(spec, "categories", None)
        if spec.kind is ColumnKind.CATEGORICAL and cats:
            out[name] = tuple(str(c) for c in cats)
    return out


def count_bins(schema: TableSchema, domain: Domain) -> CountBins:
    """The numeric columns counted per component on the shared domain's bins, with the bin edges: every
    continuous or integer column of the domain that a control-arm criterion may name (not an outcome, not
    ``baseline: false``) and that has at least one bin."""
    after = set(schema.post_baseline_columns)
    out: CountBins = {}
    for name, col in domain.columns.items():
        if (col.is_numeric and name in schema and name not in after and schema[name].role is not ColumnRole.OUTCOME
                and len(col.bins) >= 2):
            out[name] = tuple(float(b) for b in col.bins)
    return out


def component_responsibilities(codes: np.ndarray, mixture: Mapping[str, np.ndarray]) -> np.ndarray:
    """P(k | code) under the mixture's point estimates, shape ``(n_rows, K)``; rows sum to 1.

    Parameters
    ----------
    codes : array (n_rows, d)
        Latent codes (posterior means).
    mixture : dict
        ``weights`` (K,), ``means`` (K, d), ``covariances`` (K, d, d).
    """
    from scipy.stats import multivariate_normal

    x = np.asarray(codes, dtype=np.float64)
    w = np.asarray(mixture["weights"], dtype=np.float64)
    means = np.asarray(mixture["means"], dtype=np.float64)
    covs = np.asarray(mixture["covariances"], dtype=np.float64)
    with np.errstate(divide="ignore"):
        log_w = np.log(w / w.sum())
    lg = np.column_stack(
        [multivariate_normal(means[k], covs[k], allow_singular=True).logpdf(x).reshape(len(x)) for k in range(len(w))]
    ) + log_w
    return np.asarray(np.exp(lg - logsumexp(lg, axis=1, keepdims=True)))


def component_count_statistics(
    codes: np.ndarray,
    data: pd.DataFrame,
    mixture: Mapping[str, np.ndarray],
    columns: Mapping[str, Sequence[str]],
    schema: TableSchema,
    *,
    bins: Mapping[str, Sequence[float]] | None = None,
    min_count: int = 1,
) -> dict[str, np.ndarray]:
    """Site side: per component, the responsibility-weighted counts of each counted column's labels or bins.

    Parameters
    ----------
    codes : array (n_rows, d)
        The site's latent codes, row for row with ``data`` (they never leave the site).
    data : DataFrame
        The site's rows conformed to the shared domain; derived columns are computed here from their inputs.
    mixture : dict
        The global mixture (point estimates).
    columns : mapping
        From :func:`count_columns`.
    schema : TableSchema
        The run's schema (for the derived columns' definitions).
    bins : mapping, optional
        From :func:`count_bins`: numeric columns counted per bin of the shared grid (a value outside the edges
        counts in the nearest end bin).
    min_count : int, default 1
        The site's smallest released count ``k`` in clear (:func:`release_counts`); 1 releases the counts as
        they are (secure aggregation, or a data holder fitting on its own rows).

    Returns
    -------
    dict of float64 arrays
        ``col -> (K, n_cells + 1)`` (labels or bins; the last count: missing), for each counted column the site
        holds (or, for a derived column, holds every input of); a column the site lacks, or whose every count is
        withheld, is left out, so it adds nothing to the sums.
    """
    r = component_responsibilities(codes, mixture)
    frame = data
    for name in schema.derived_columns:
        if name in columns and name not in frame.columns:
            key = schema[name].derived
            if key in DERIVATIONS and all(c in frame.columns for c in DERIVATIONS[key][1]):
                frame = frame.assign(**{name: DERIVATIONS[key][0](frame)})
    out: dict[str, np.ndarray] = {}
    for name, labels in columns.items():
        if name not in frame.columns:
            continue
        kind, missing = schema[name].kind, len(labels)
        index = {lab: j for j, lab in enumerate(labels)}
        pos = np.array([missing if pd.isna(v) else index.get(_label(v, kind), missing) for v in frame[name]],
                       dtype=np.int64)
        out[name] = release_counts(_onehot_counts(r, pos, len(labels) + 1), min_count, ordered=False)
    for name, edges in (bins or {}).items():
        if name not in frame.columns:
            continue
        e = np.asarray(edges, dtype=np.float64)
        v = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
        pos = np.clip(np.searchsorted(e, v, side="right") - 1, 0, len(e) - 2)
        pos[np.isnan(v)] = len(e) - 1
        out[name] = release_counts(_onehot_counts(r, pos, len(e)), min_count, ordered=True)
    return {k: v for k, v in out.items() if v.any()}


def _onehot_counts(r: np.ndarray, pos: np.ndarray, n_cells: int) -> np.ndarray:
    onehot = np.zeros((len(pos), n_cells))
    onehot[np.arange(len(pos)), pos] = 1.0
    return np.asarray(r.T @ onehot)


def release_counts(table: np.ndarray, min_count: int, *, ordered: bool) -> np.ndarray:
    """What a site releases in clear of one column's per-component counts under its smallest released count.

    The column sums of ``table`` (over components) are the site's row counts per cell. With ``k = min_count``:
    the missing cell (last) is zeroed when it holds 1..k-1 rows; unordered cells (labels) holding 1..k-1 rows
    are zeroed; ordered cells (bins) are merged from the left until each merged run holds at least ``k`` rows (an
    empty cell stays alone; a remainder under ``k`` joins the runs before it), and a run's counts are spread
    evenly over its cells; when all value cells hold fewer than ``k`` rows together they are zeroed.

    Parameters
    ----------
    table : array (K, n_cells + 1)
        Per component, counts per label or bin, missing last.
    min_count : int
        ``k``; 1 returns a copy of ``table``.
    ordered : bool
        Whether the value cells are bins of a numeric column (merged) or labels (withheld).

    Returns
    -------
    float64 array of the same shape
        Merged runs keep their total, so the released table sums to the rows it keeps.
    """
    out = np.array(table, dtype=np.float64, copy=True)
    k = int(min_count)
    if k <= 1:
        return out
    rows = out.sum(axis=0)
    small = (rows > 1e-9) & (rows < k - 1e-9)
    if small[-1]:
        out[:, -1] = 0.0
    if not ordered:
        out[:, :-1][:, small[:-1]] = 0.0
        return out
    runs: list[list[int]] = []
    cur: list[int] = []
    acc = 0.0
    for j, c in enumerate(rows[:-1]):
        cur.append(j)
        acc += float(c)
        if acc >= k - 1e-9 or acc <= 1e-9:
            runs.append(cur)
            cur, acc = [], 0.0
    while cur and acc < k - 1e-9 and runs:  # a remainder under k joins the runs before it
        cur = runs.pop() + cur
        acc = float(rows[cur].sum())
    if cur and acc < k - 1e-9:
        out[:, cur] = 0.0
        cur = []
    if cur:
        runs.append(cur)
    for run in runs:
        if len(run) > 1:
            out[:, run] = out[:, run].sum(axis=1, keepdims=True) / len(run)
    return out


def sum_component_counts(statistics: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Server side: the sites' counts summed column by column (a column some sites lack sums over the others)."""
    out: dict[str, np.ndarray] = {}
    for s in statistics:
        for k, v in s.items():
            a = np.asarray(v, dtype=np.float64)
            out[k] = out[k] + a if k in out else a.copy()
    return out


def component_condition_weights(
    weights: np.ndarray,
    counts: Mapping[str, np.ndarray],
    columns: Mapping[str, Sequence[str]],
    conditions: Mapping[str, Sequence[str]],
    *,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    bins: Mapping[str, Sequence[float]] | None = None,
    integer: Sequence[str] = (),
    pseudo_count: float = 1.0,
) -> np.ndarray:
    """P(k | conditions) ∝ pi_k * prod_col P(col meets its term | k), from the summed counts; shape ``(K,)``, sums to 1.

    Parameters
    ----------
    weights : array (K,)
        The mixture weights ``pi``.
    counts : mapping
        Summed counts (:func:`component_count_statistics`).
    columns : mapping
        Label columns (:func:`count_columns`).
    conditions : mapping
        Column -> the labels it may hold (as :func:`count_columns` writes them); columns without label counts
        are left out of the product.
    ranges : mapping, optional
        Numeric column -> inclusive ``(lo, hi)`` (:func:`where_ranges`); a column without bin counts is left out.
    bins : mapping, optional
        Bin edges of the numeric columns (:func:`count_bins`).
    integer : sequence of str
        The numeric columns holding integers (their bins' shares count integers, :func:`range_shares`).
    pseudo_count : float, default 1
        One pseudo-row per component spread evenly over a column's cells (labels or bins, and missing).

    Returns
    -------
    array (K,)
        The mixture weights (normalised) when no conditioned column has counts, and when the product vanishes
        for every component.
    """
    pi = np.asarray(weights, dtype=np.float64)
    pi = pi / pi.sum()
    log_p = np.log(np.maximum(pi, 1e-300))
    used = False
    for col, values in conditions.items():
        if col not in counts or col not in columns:
            continue
        c = np.asarray(counts[col], dtype=np.float64)
        labels = list(columns[col])
        share = np.zeros(c.shape[1])
        share[[labels.index(str(v)) for v in values if str(v) in labels]] = 1.0
        log_p = log_p + np.log(np.maximum(_cell_probability(c, share, pseudo_count), 1e-300))
        used = True
    for col, (lo, hi) in (ranges or {}).items():
        if col not in counts or bins is None or col not in bins:
            continue
        c = np.asarray(counts[col], dtype=np.float64)
        share = np.append(range_shares(bins[col], lo, hi, integer=col in integer), 0.0)  # missing meets no range
        log_p = log_p + np.log(np.maximum(_cell_probability(c, share, pseudo_count), 1e-300))
        used = True
    if not used:
        return np.asarray(pi)
    out: np.ndarray = np.exp(log_p - float(logsumexp(log_p)))
    return out if bool(np.isfinite(out).all()) and float(out.sum()) > 0 else np.asarray(pi)


def _cell_probability(c: np.ndarray, share: np.ndarray, pseudo_count: float) -> np.ndarray:
    """Per component ``(sum_j c_kj s_j + pseudo * sum_j s_j / L) / (c_k + pseudo)``, ``L`` cells."""
    return np.asarray((c @ share + pseudo_count * share.sum() / c.shape[1]) / (c.sum(axis=1) + pseudo_count))


def range_shares(edges: Sequence[float], lo: float, hi: float, *, integer: bool = False) -> np.ndarray:
    """The share of each bin inside the inclusive range ``[lo, hi]``, values spread evenly inside a bin.

    Bins are ``[e_b, e_b+1)``, the last one closed (as :meth:`~fedsynth.encoding.domain.Domain.bin_index` assigns
    values). A continuous column: the share of the bin's length; an integer column: the share of the integers
    the bin holds (0 for a bin that holds none).

    Parameters
    ----------
    edges : sequence of float
        Strictly increasing bin edges, ``n_bins + 1`` of them.
    lo, hi : float
        Inclusive bounds (``-inf``/``inf`` when open).
    integer : bool, default False

    Returns
    -------
    float64 array (n_bins,)
        Values in [0, 1].
    """
    e = np.asarray(edges, dtype=np.float64)
    left, right = e[:-1], e[1:]
    if integer:
        first = np.ceil(left)
        last = np.ceil(right) - 1.0
        last[-1] = np.floor(right[-1])
        held = np.maximum(last - first + 1.0, 0.0)
        inside = np.maximum(np.minimum(last, np.floor(hi)) - np.maximum(first, np.ceil(lo)) + 1.0, 0.0)
        return np.asarray(np.divide(inside, held, out=np.zeros_like(held), where=held > 0))
    inside = np.maximum(np.minimum(right, hi) - np.maximum(left, lo), 0.0)
    return np.asarray(inside / (right - left))


_BACKQUOTED = re.compile(r"`([^`]*)`")


def _conjunction(where: str | None) -> tuple[list[ast.Compare], dict[str, str]]:
    """The comparisons at the top level of a conjunction (``and`` or ``&``) in ``where``, and the names that
    stand for its backquoted column names; anything else (``or``, negations, calls) is left out."""
    if not where:
        return [], {}
    names: dict[str, str] = {}

    def _name(m: re.Match[str]) -> str:
        key = f"_bq{len(names)}_"
        names[key] = m.group(1)
        return key

    try:
        tree = ast.parse(_BACKQUOTED.sub(_name, where), mode="eval").body
    except SyntaxError:
        return [], {}
    terms: list[ast.Compare] = []

    def _flatten(node: ast.expr) -> None:
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
            for v in node.values:
                _flatten(v)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitAnd):
            _flatten(node.left)
            _flatten(node.right)
        elif isinstance(node, ast.Compare):
            terms.append(node)

    _flatten(tree)
    return terms, names


def where_categories(where: str | None, columns: Mapping[str, Sequence[str]], schema: TableSchema) -> dict[str, list[str]]:
    """The category conditions a ``where`` expression implies, as far as they can be read: the terms of a
    top-level conjunction (``and`` or ``&``) of the form ``COL == value``, ``value == COL`` or ``COL in [values]``
    on a counted column. Anything else (ranges, ``or``, negations) gives nothing here; rejection still applies
    the whole expression to every row."""
    terms, names = _conjunction(where)
    out: dict[str, list[str]] = {}
    for t in terms:
        if len(t.ops) != 1:
            continue
        left, op, right = t.left, t.ops[0], t.comparators[0]
        if isinstance(op, ast.Eq) and isinstance(left, ast.Constant) and isinstance(right, ast.Name):
            left, right = right, left
        if not isinstance(left, ast.Name) or not isinstance(op, (ast.Eq, ast.In)):
            continue
        col = names.get(left.id, left.id)
        if col not in columns:
            continue
        try:
            value: Any = ast.literal_eval(right)
        except ValueError:
            continue
        values = list(value) if isinstance(op, ast.In) and isinstance(value, (list, tuple, set)) else [value]
        if isinstance(op, ast.In) and not isinstance(value, (list, tuple, set)):
            continue
        try:
            labels = [_label(v, schema[col].kind) for v in values]
        except (TypeError, ValueError):
            continue
        out[col] = [lab for lab in labels if lab in out[col]] if col in out else labels
    return out


#: A comparison operator, flipped (``65 <= AGE`` is ``AGE >= 65``).
_FLIP: dict[type[ast.cmpop], type[ast.cmpop]] = {ast.Lt: ast.Gt, ast.LtE: ast.GtE, ast.Gt: ast.Lt, ast.GtE: ast.LtE,
                                                 ast.Eq: ast.Eq}


def where_ranges(where: str | None, bins: Mapping[str, Sequence[float]], schema: TableSchema) -> Ranges:
    """The ranges a ``where`` expression asks of counted numeric columns, as inclusive ``(lo, hi)``.

    Read from the comparisons of a top-level conjunction (``and`` or ``&``) between a column with bin counts and
    a number: ``COL >= v``, ``v < COL``, ``COL == v``, chains such as ``18 <= COL < 65``; several terms on one
    column intersect. On an integer column strict bounds become inclusive ones (``AGE > 64.5`` is
    ``AGE >= 65``); on a continuous column ``<`` reads as ``<=`` (one point weighs nothing). Anything else gives
    nothing here (rejection still applies the whole expression to every row).

    Parameters
    ----------
    where : str or None
        A pandas query, as ``sample``'s ``where``.
    bins : mapping
        The counted numeric columns (:func:`count_bins`).
    schema : TableSchema

    Returns
    -------
    dict
        Column -> ``(lo, hi)``; ``-inf``/``inf`` when open.
    """
    terms, names = _conjunction(where)
    out: Ranges = {}
    for t in terms:
        operands = [t.left, *t.comparators]
        for left, op, right in zip(operands, t.ops, operands[1:]):
            opt: type[ast.cmpop] = type(op)
            if isinstance(left, ast.Constant) and isinstance(right, ast.Name) and opt in _FLIP:
                left, right, opt = right, left, _FLIP[opt]
            if not isinstance(left, ast.Name) or opt not in _FLIP:
                continue
            col = names.get(left.id, left.id)
            try:
                value = ast.literal_eval(right)
            except (ValueError, TypeError, SyntaxError):
                continue
            if col not in bins or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            integer = schema[col].kind is ColumnKind.INTEGER
            v = float(value)
            lo, hi = -np.inf, np.inf
            if opt in (ast.Gt, ast.GtE, ast.Eq):
                lo = (np.floor(v) + 1.0 if opt is ast.Gt else np.ceil(v)) if integer else v
            if opt in (ast.Lt, ast.LtE, ast.Eq):
                hi = (np.ceil(v) - 1.0 if opt is ast.Lt else np.floor(v)) if integer else v
            old = out.get(col, (-np.inf, np.inf))
            out[col] = (max(old[0], float(lo)), min(old[1], float(hi)))
    return out


def _label(value: Any, kind: ColumnKind) -> str:
    if kind is ColumnKind.BINARY:
        return str(int(float(value)))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
