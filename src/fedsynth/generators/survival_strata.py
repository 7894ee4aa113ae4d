"""Prognostic strata and the federated survival counts behind the survival calibration
(:mod:`fedsynth.generators.survival_calibration`).

Which strata (:func:`calibration_strata`, from schema roles, never from column names), each row's level
(:func:`stratum_codes`), and at each site the events and person-time per interval of each endpoint's shared domain
bins, per level (:func:`survival_counts`): sums, so the sites' answers add up to the pooled ones
(:func:`sum_survival_counts`). The strata's rules and the counts' layout are described in the calibration's module
docstring.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.cohort.derived import DERIVATIONS
from fedsynth.cohort.schema import ColumnKind, ColumnRole, TableSchema
from fedsynth.encoding.domain import Domain

__all__ = [
    "GENE_MIN_FREQ", "SEP", "CalibrationStratum", "calibration_strata", "endpoint_edges", "exposure",
    "stratum_codes", "sum_survival_counts", "survival_counts",
]

#: A genomic column is a stratum when at least this share of the real rows carry it (label "1").
GENE_MIN_FREQ = 0.05
#: Key separator of the count arrays (``n|<column>``, ``d|<endpoint>|<column>``, ``t|<endpoint>|<column>``).
SEP = "|"


@dataclass(frozen=True)
class CalibrationStratum:
    """One stratum of the calibration: a column's labels, or bands of a numeric column.

    Parameters
    ----------
    column : str
        The column whose values define the levels.
    labels : tuple of str
        The levels (a categorical or binary column's labels, or the bands' names).
    bins : tuple of float, optional
        Inner cut points of a numeric column (bands ``[a, b)``, open first and last); ``None`` for labels.
    genomic : bool
        Whether the column has role ``genomic`` (kept only when mutated in >= :data:`GENE_MIN_FREQ` of real rows).
    """

    column: str
    labels: tuple[str, ...]
    bins: tuple[float, ...] | None = None
    genomic: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "labels": list(self.labels),
                "bins": None if self.bins is None else list(self.bins), "genomic": self.genomic}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CalibrationStratum:
        bins = d.get("bins")
        return cls(str(d["column"]), tuple(str(x) for x in d["labels"]),
                   None if bins is None else tuple(float(b) for b in bins), bool(d.get("genomic", False)))


def _labels_of(name: str, schema: TableSchema, domain: Domain) -> tuple[str, ...] | None:
    spec = schema[name]
    if spec.kind is ColumnKind.BINARY:
        return ("0", "1")
    if spec.kind is ColumnKind.CATEGORICAL:
        if name in domain.columns and domain[name].categories:
            return tuple(str(c) for c in domain[name].categories)
        cats = getattr(spec, "categories", None)
        return tuple(str(c) for c in cats) if cats else None
    return None


def _band_names(bins: Sequence[float]) -> tuple[str, ...]:
    def num(x: float) -> str:
        return f"{x:g}"

    inner = [f"[{num(a)}, {num(b)})" for a, b in pairwise(bins)]
    return (f"<{num(bins[0])}", *inner, f">={num(bins[-1])}")


def calibration_strata(schema: TableSchema, domain: Domain) -> list[CalibrationStratum]:
    """The strata whose levels get a factor, from the schema's declared strata and its roles (module docstring).

    Parameters
    ----------
    schema : TableSchema
        The run's schema (declared ``strata``, roles, derived columns).
    domain : Domain
        The shared domain (a model column's labels).

    Returns
    -------
    list of CalibrationStratum
        Declared strata first, then the role-based ones, each column once; genomic ones still to be filtered by
        their mutation share (:func:`fit_survival_calibration` does, from the summed counts).
    """
    after = set(schema.post_baseline_columns)
    usable = {n for n in schema.data_columns if n not in after and schema[n].role is not ColumnRole.OUTCOME
              and (n in domain.columns or schema[n].derived is not None)}
    out: list[CalibrationStratum] = []
    seen: set[str] = set()
    for st in schema.strata:
        if st.column not in usable or st.column in seen:
            continue
        spec = schema[st.column]
        if spec.is_numeric:
            if not st.bins:
                continue
            bins = tuple(float(b) for b in st.bins)
            names = tuple(st.labels) if st.labels else _band_names(bins)
            out.append(CalibrationStratum(st.column, names, bins))
        else:
            labs = _labels_of(st.column, schema, domain)
            if labs is None:
                continue
            out.append(CalibrationStratum(st.column, labs, genomic=spec.role is ColumnRole.GENOMIC))
        seen.add(st.column)
    for spec in schema.columns:
        if spec.name in seen or spec.name not in usable:
            continue
        clinical = spec.role is ColumnRole.CLINICAL and spec.kind in (ColumnKind.CATEGORICAL, ColumnKind.BINARY)
        genomic = spec.role is ColumnRole.GENOMIC and spec.kind is ColumnKind.BINARY
        if not (clinical or genomic):
            continue
        labs = _labels_of(spec.name, schema, domain)
        if labs is None:
            continue
        out.append(CalibrationStratum(spec.name, labs, genomic=genomic))
        seen.add(spec.name)
    return out


def endpoint_edges(schema: TableSchema, domain: Domain) -> dict[str, np.ndarray]:
    """Endpoint name -> the interval edges of its duration: the shared domain's bins (``n_intervals + 1``)."""
    out: dict[str, np.ndarray] = {}
    for ep in schema.endpoints:
        if ep.duration_col in domain.columns and len(domain[ep.duration_col].bins) >= 2:
            out[ep.name] = np.asarray(domain[ep.duration_col].bins, dtype=np.float64)
    return out


def stratum_codes(data: pd.DataFrame, stratum: CalibrationStratum) -> np.ndarray:
    """Each row's level index in ``stratum`` (int64, ``-1`` where the value is missing or not a level)."""
    col = data[stratum.column]
    if stratum.bins is not None:
        v = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
        idx = np.searchsorted(np.asarray(stratum.bins), v, side="right").astype(np.int64)
        return np.where(np.isfinite(v), idx, -1)
    index = {lab: j for j, lab in enumerate(stratum.labels)}
    vals = col.to_numpy()
    out = np.full(len(vals), -1, dtype=np.int64)
    for j, v in enumerate(vals):
        if pd.isna(v):
            continue
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            v = int(v)
        out[j] = index.get(str(v), -1)
    return out


def _with_derived(data: pd.DataFrame, schema: TableSchema, strata: Sequence[CalibrationStratum]) -> pd.DataFrame:
    """``data`` with each derived stratum column computed from its inputs where absent (a site holds inputs)."""
    frame = data
    for st in strata:
        key = schema[st.column].derived
        if st.column not in frame.columns and key in DERIVATIONS and all(
                c in frame.columns for c in DERIVATIONS[key][1]):
            frame = frame.assign(**{st.column: DERIVATIONS[key][0](frame)})
    return frame


def exposure(times: np.ndarray, events: np.ndarray, codes: np.ndarray, n_levels: int,
              edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Events and person-time per level and interval, each ``(n_levels, n_intervals)``; rows with code -1 or a
    missing time or event are left out. A time past the last edge is counted at the last edge."""
    ok = (codes >= 0) & np.isfinite(times) & np.isfinite(events)
    t, e, c = np.clip(times[ok], edges[0], edges[-1]), events[ok] > 0.5, codes[ok]
    width = np.diff(edges)
    n_int = len(width)
    idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, n_int - 1)
    # A row spends each interval before its own whole and its own up to its time: per level, the rows that end past
    # interval j times its width, plus the time spent in j by the rows that end in it (O(rows), not rows x intervals).
    cell = c * n_int + idx
    ending = np.bincount(cell, minlength=n_levels * n_int).reshape(n_levels, n_int)
    partial = np.bincount(cell, weights=t - edges[idx], minlength=n_levels * n_int).reshape(n_levels, n_int)
    past = np.cumsum(ending[:, ::-1], axis=1)[:, ::-1] - ending  # rows ending in a later interval
    person_time = past * width[None, :] + partial
    ev = np.bincount(cell[e], minlength=n_levels * n_int).reshape(n_levels, n_int).astype(np.float64)
    return ev, person_time


def survival_counts(data: pd.DataFrame, schema: TableSchema, strata: Sequence[CalibrationStratum],
                    edges: Mapping[str, np.ndarray], *, min_count: int = 1) -> dict[str, np.ndarray]:
    """Site side: per stratum, level row counts, and per endpoint events and person-time per interval and level.

    Parameters
    ----------
    data : DataFrame
        The site's rows (derived stratum columns are computed from their inputs when absent; a column the site
        lacks adds nothing).
    schema : TableSchema
        The run's schema (endpoints, derivations).
    strata : sequence of CalibrationStratum
        From :func:`calibration_strata`.
    edges : dict
        Endpoint name -> interval edges (:func:`endpoint_edges`), in the endpoint's time unit.
    min_count : int, default 1
        The site's smallest released count ``k`` when the counts leave in clear: a level held by 1 to ``k - 1``
        rows is withheld (all its arrays zero); 1 under secure aggregation.

    Returns
    -------
    dict of float64 arrays
        ``n|<column>`` (n_levels,), ``d|<endpoint>|<column>`` and ``t|<endpoint>|<column>`` (n_levels,
        n_intervals): events and person-time (time unit of the endpoint). Sums over sites are the pooled ones.
    """
    frame = _with_derived(data, schema, strata)
    eps = [ep for ep in schema.endpoints if ep.name in edges and ep.duration_col in frame.columns
           and ep.event_col in frame.columns]
    out: dict[str, np.ndarray] = {}
    for st in strata:
        if st.column not in frame.columns:
            continue
        codes = stratum_codes(frame, st)
        n_lev = len(st.labels)
        n = np.bincount(codes[codes >= 0], minlength=n_lev).astype(np.float64)
        withheld = (n > 0) & (n < int(min_count))
        out[f"n{SEP}{st.column}"] = np.where(withheld, 0.0, n)
        for ep in eps:
            t = pd.to_numeric(frame[ep.duration_col], errors="coerce").to_numpy(dtype=np.float64)
            e = pd.to_numeric(frame[ep.event_col], errors="coerce").to_numpy(dtype=np.float64)
            ev, pt = exposure(t, e, codes, n_lev, edges[ep.name])
            ev[withheld], pt[withheld] = 0.0, 0.0
            out[f"d{SEP}{ep.name}{SEP}{st.column}"] = ev
            out[f"t{SEP}{ep.name}{SEP}{st.column}"] = pt
    return out


def sum_survival_counts(stats: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Key-wise sum of the sites' :func:`survival_counts` (a key a site lacks adds nothing): the same sum as the
    component counts' (:func:`~fedsynth.generators.component_counts.sum_component_counts`)."""
    from fedsynth.generators.component_counts import sum_component_counts

    return sum_component_counts(stats)
