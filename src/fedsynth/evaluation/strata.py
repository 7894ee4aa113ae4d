"""Survival strata of a report: which subgroups are compared, chosen from schema roles, never column names.

A report's strata are, in order and without repeating a column:

1. the strata a user names (``evaluate(..., strata=[...])``, config ``evaluation.strata``): then only those;
2. otherwise the strata the schema declares (``strata:``; for ``mds-iwgpm`` TP53, IPSS-R group, age bands
   < 60 / 60-69 / 70-79 / >= 80 and sex), followed by
3. every categorical or binary column with role ``clinical`` and every ``genomic`` column mutated in at least
   5% of the real rows.

The report's Kaplan-Meier plots and log-rank tests (:func:`fedsynth.evaluation.survival.survival_analysis`)
draw the strata a user names, else the declared ones, else the role-based defaults (:func:`plotted_strata`): one
chart per stratum and endpoint, so a schema that declares its arms' subgroups is not buried under a chart for
every gene; the strict figures' table covers every stratum of the list above.

A stratum is a column's labels (categorical, binary) or bands of a numeric column (declared cut points; a
numeric column named without cut points is cut at the real quartiles, rounded to two significant digits so no
patient's value becomes an edge).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import pandas as pd

from fedsynth.cohort.schema import ColumnKind, ColumnRole, StratumSpec, TableSchema
from fedsynth.evaluation._prep import labels, sig_round

__all__ = [
    "GENE_STRATUM_MIN_FREQ", "StratumSpec", "band_edges", "band_labels", "default_strata", "group_order",
    "plotted_strata", "resolve_strata", "stratum_labels",
]

#: Genes mutated in at least this share of real rows are default strata.
GENE_STRATUM_MIN_FREQ = 0.05


def default_strata(schema: TableSchema, real_data: pd.DataFrame) -> list[StratumSpec]:
    """The schema's declared strata, then each categorical/binary clinical column and each gene mutated in
    >= 5% of ``real_data`` (by role; see the module docstring)."""
    out = list(schema.strata)
    seen = {st.column for st in out}
    for spec in schema.columns:
        if spec.name in seen or spec.name not in real_data.columns:
            continue
        if spec.role is ColumnRole.CLINICAL and spec.kind in (ColumnKind.CATEGORICAL, ColumnKind.BINARY):
            out.append(StratumSpec(spec.name))
        elif spec.role is ColumnRole.GENOMIC:
            freq = pd.to_numeric(real_data[spec.name], errors="coerce").mean()
            if np.isfinite(freq) and freq >= GENE_STRATUM_MIN_FREQ:
                out.append(StratumSpec(spec.name))
        else:
            continue
        seen.add(spec.name)
    return out


def resolve_strata(
    schema: TableSchema, real_data: pd.DataFrame, strata: Sequence[str | StratumSpec] | None = None
) -> list[StratumSpec]:
    """The strata of a report: ``strata`` when given (names take the schema's declared bands when it declares
    the column), else :func:`default_strata`. Columns absent from ``real_data`` are left out."""
    if strata is None:
        return default_strata(schema, real_data)
    declared = {st.column: st for st in schema.strata}
    out: list[StratumSpec] = []
    for item in strata:
        st = item if isinstance(item, StratumSpec) else declared.get(str(item), StratumSpec(str(item)))
        if st.column in real_data.columns and st.column in schema and all(o.column != st.column for o in out):
            out.append(st)
    return out


def plotted_strata(
    schema: TableSchema, real_data: pd.DataFrame, strata: Sequence[str | StratumSpec] | None = None
) -> list[StratumSpec]:
    """Strata drawn as Kaplan-Meier charts: ``strata`` when given, else the schema's declared strata, else
    :func:`default_strata` (see the module docstring)."""
    if strata is None and schema.strata:
        return resolve_strata(schema, real_data, [st.column for st in schema.strata])
    return resolve_strata(schema, real_data, strata)


def band_edges(stratum: StratumSpec, schema: TableSchema, real_data: pd.DataFrame) -> tuple[float, ...] | None:
    """Cut points of a numeric stratum (declared, else real quartiles to 2 significant digits); None for a
    categorical one."""
    if not schema[stratum.column].is_numeric:
        return None
    if stratum.bins is not None:
        return tuple(float(b) for b in stratum.bins)
    v = pd.to_numeric(real_data[stratum.column], errors="coerce").dropna().to_numpy(dtype=float)
    if len(v) == 0:
        return ()
    return tuple(sorted({float(sig_round(q, 2)) for q in np.quantile(v, [0.25, 0.5, 0.75])}))


def band_labels(stratum: StratumSpec, edges: Sequence[float], kind: ColumnKind) -> list[str]:
    """Names of the bands: declared labels, else from the cut points (integers: ``<60``, ``60-69``,
    ``>=80``; continuous: ``<60``, ``60-<70``, ``>=80``)."""
    if stratum.labels is not None:
        return list(stratum.labels)
    if not edges:
        return ["all"]

    def num(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else f"{x:g}"

    whole = kind is ColumnKind.INTEGER and all(float(e).is_integer() for e in edges)
    out = [f"<{num(edges[0])}"]
    for a, b in pairwise(edges):
        out.append(f"{num(a)}-{num(b - 1)}" if whole else f"{num(a)}-<{num(b)}")
    out.append(f">={num(edges[-1])}")
    return out


def stratum_labels(
    data: pd.DataFrame, stratum: StratumSpec, schema: TableSchema, edges: tuple[float, ...] | None
) -> pd.Series:
    """Group label of each row of ``data`` (NaN where the column is missing).

    ``edges`` from :func:`band_edges` on the *real* data, so real and synthetic rows are cut at the same
    points."""
    col = data[stratum.column]
    if edges is None:
        return labels(col)
    names = band_labels(stratum, edges, schema[stratum.column].kind)
    v = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
    idx = np.searchsorted(np.asarray(edges, dtype=float), v, side="right")  # [a, b): a value equal to a cut goes up
    out = np.array([names[i] for i in np.minimum(idx, len(names) - 1)], dtype=object)
    out[~np.isfinite(v)] = np.nan
    return pd.Series(out, index=data.index, dtype="object")


def group_order(stratum: StratumSpec, schema: TableSchema, edges: tuple[float, ...] | None) -> list[str]:
    """Display order of a stratum's groups: bands in order, else the column's declared categories."""
    if edges is not None:
        return band_labels(stratum, edges, schema[stratum.column].kind)
    return list(schema[stratum.column].categories or ())
