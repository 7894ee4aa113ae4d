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
from fedsynth.cohort.schema import ColumnKind, TableSchema
from fedsynth.encoding.domain import Domain

#: Column -> its labels, in count order (the missing label is the extra last count).
CountColumns = dict[str, tuple[str, ...]]


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
) -> dict[str, np.ndarray]:
    """Site side: per component, the responsibility-weighted counts of each counted column's labels.

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

    Returns
    -------
    dict of float64 arrays
        ``col -> (K, n_labels + 1)`` (the last count: missing), for each counted column the site holds (or, for a
        derived column, holds every input of); a column the site lacks is left out, so it adds nothing to the sums.
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
        onehot = np.zeros((len(pos), len(labels) + 1))
        onehot[np.arange(len(pos)), pos] = 1.0
        out[name] = r.T @ onehot
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
    pseudo_count: float = 1.0,
) -> np.ndarray:
    """P(k | conditions) ∝ pi_k * prod_col P(col in V_col | k), from the summed counts; shape ``(K,)``, sums to 1.

    ``conditions`` maps a column to the labels it may hold (as :func:`count_columns` writes them). Columns
    without counts (numeric ones, or ones no site held) are left out of the product. Returns the mixture weights
    (normalised) when no conditioned column has counts, and when the product vanishes for every component.
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
        idx = [labels.index(str(v)) for v in values if str(v) in labels]
        n_labels = c.shape[1]
        p = (c[:, idx].sum(axis=1) + pseudo_count * len(idx) / n_labels) / (c.sum(axis=1) + pseudo_count)
        log_p = log_p + np.log(np.maximum(p, 1e-300))
        used = True
    if not used:
        return np.asarray(pi)
    out: np.ndarray = np.exp(log_p - float(logsumexp(log_p)))
    return out if bool(np.isfinite(out).all()) and float(out.sum()) > 0 else np.asarray(pi)


_BACKQUOTED = re.compile(r"`([^`]*)`")


def where_categories(where: str | None, columns: Mapping[str, Sequence[str]], schema: TableSchema) -> dict[str, list[str]]:
    """The category conditions a ``where`` expression implies, as far as they can be read: the terms of a
    top-level conjunction (``and`` or ``&``) of the form ``COL == value``, ``value == COL`` or ``COL in [values]``
    on a counted column. Anything else (ranges, ``or``, negations) gives nothing here; rejection still applies
    the whole expression to every row."""
    if not where:
        return {}
    names: dict[str, str] = {}

    def _name(m: re.Match[str]) -> str:
        key = f"_bq{len(names)}_"
        names[key] = m.group(1)
        return key

    try:
        tree = ast.parse(_BACKQUOTED.sub(_name, where), mode="eval").body
    except SyntaxError:
        return {}
    terms: list[ast.expr] = []

    def _flatten(node: ast.expr) -> None:
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
            for v in node.values:
                _flatten(v)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitAnd):
            _flatten(node.left)
            _flatten(node.right)
        else:
            terms.append(node)

    _flatten(tree)
    out: dict[str, list[str]] = {}
    for t in terms:
        if not (isinstance(t, ast.Compare) and len(t.ops) == 1):
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


def _label(value: Any, kind: ColumnKind) -> str:
    if kind is ColumnKind.BINARY:
        return str(int(float(value)))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
