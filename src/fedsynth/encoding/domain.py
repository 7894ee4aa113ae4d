"""The federated domain: what every site encodes with, built from per-site summaries only.

A site computes :func:`summarize_site` on its own rows (counts, moments, a histogram on a grid every site shares
and, when asked, a small Gaussian mixture per numeric column) and releases it through :func:`release_summary`
(coarse bounds, histogram cells and category labels of at least ``k`` rows). The server merges the released
summaries with :func:`merge_summaries` into one :class:`Domain` and broadcasts it. The centralised path uses
exactly the same code on one "site" (:meth:`Domain.from_data`), so the only thing federation changes is how many
summaries are merged. Released summaries hold aggregates only: no row, no patient's value. Sums over sites
(secure aggregation) are built in :mod:`fedsynth.encoding.grid`, and their noisy release under a privacy budget in
:mod:`fedsynth.encoding.dp_domain`; both end in the same :func:`merge_summaries`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.cohort.schema import ColumnKind, TableSchema
from fedsynth.errors import Problem, ValidationError


@dataclass(frozen=True)
class Modes:
    """A one-dimensional Gaussian mixture (the per-column "modes" CTGAN's mode-specific normalisation uses)."""

    weights: tuple[float, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]

    def to_dict(self) -> dict[str, list[float]]:
        return {"weights": list(self.weights), "means": list(self.means), "stds": list(self.stds)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Sequence[float]]) -> Modes:
        return cls(tuple(map(float, d["weights"])), tuple(map(float, d["means"])), tuple(map(float, d["stds"])))


@dataclass(frozen=True)
class ColumnDomain:
    """Everything a generator needs to encode one column the same way on every site.

    ``categories`` for categorical and binary columns (binary: ``("0", "1")``); ``lower``/``upper``,
    ``bins`` (global quantile edges, strictly increasing, first = lower, last = upper), ``mean``/``std`` and
    optional ``modes`` for numeric columns. ``missing_rate`` is the pooled share of missing values and
    ``n_observed`` the number of rows that held the column (sites lacking it contribute nothing).
    """

    name: str
    kind: ColumnKind
    n_observed: int
    missing_rate: float
    categories: tuple[str, ...] = ()
    category_counts: tuple[int, ...] = ()
    lower: float = 0.0
    upper: float = 0.0
    mean: float = 0.0
    std: float = 0.0
    bins: tuple[float, ...] = ()
    modes: Modes | None = None

    @property
    def is_numeric(self) -> bool:
        return self.kind in (ColumnKind.CONTINUOUS, ColumnKind.INTEGER)

    @property
    def has_missing(self) -> bool:
        return self.missing_rate > 0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind.value,
            "n_observed": self.n_observed,
            "missing_rate": self.missing_rate,
        }
        if self.is_numeric:
            d.update(lower=self.lower, upper=self.upper, mean=self.mean, std=self.std, bins=list(self.bins))
            if self.modes is not None:
                d["modes"] = self.modes.to_dict()
        else:
            d.update(categories=list(self.categories), category_counts=list(self.category_counts))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ColumnDomain:
        return cls(
            name=d["name"],
            kind=ColumnKind(d["kind"]),
            n_observed=int(d["n_observed"]),
            missing_rate=float(d["missing_rate"]),
            categories=tuple(d.get("categories", ())),
            category_counts=tuple(int(c) for c in d.get("category_counts", ())),
            lower=float(d.get("lower", 0.0)),
            upper=float(d.get("upper", 0.0)),
            mean=float(d.get("mean", 0.0)),
            std=float(d.get("std", 0.0)),
            bins=tuple(float(b) for b in d.get("bins", ())),
            modes=Modes.from_dict(d["modes"]) if d.get("modes") else None,
        )


@dataclass(frozen=True)
class Domain:
    """The shared encoding domain of all model columns of a schema.

    Build it with :meth:`from_data` (one table) or :func:`merge_summaries` (many sites). Generators take it as
    their ``domain`` argument, so weight shapes and category orders are identical on every site.
    """

    schema: TableSchema
    columns: Mapping[str, ColumnDomain] = field(default_factory=dict)
    n_rows: int = 0

    def __getitem__(self, name: str) -> ColumnDomain:
        return self.columns[name]

    @property
    def column_names(self) -> list[str]:
        return list(self.columns)

    @classmethod
    def from_data(
        cls,
        data: pd.DataFrame,
        schema: TableSchema,
        *,
        n_bins: int = 10,
        n_modes: int = 0,
        random_state: int | None = 0,
        min_count: int = 1,
    ) -> Domain:
        """The domain of one table: the same summaries-release-merge path a federation of one site takes.

        ``min_count`` is the ``k`` of :func:`release_summary`. The default 1 is for a data holder fitting a
        generator on its own table (every label it holds stays encodable; bounds are still coarse). Anything
        that is released or federated takes its domain from site summaries under each site's policy
        (``k`` = 5 by default), as the centralised baseline does through a one-site grid."""
        summary = release_summary(summarize_site(data, schema, n_modes=n_modes, random_state=random_state), schema,
                                  min_count=min_count)
        return merge_summaries([summary], schema, n_bins=n_bins, n_modes=n_modes, random_state=random_state)

    # -- encoding helpers used by every generator ------------------------------------------------
    def clip(self, data: pd.DataFrame) -> pd.DataFrame:
        """Clip numeric columns to the domain bounds and round integer columns (missing stays missing)."""
        out = data.copy()
        for name, col in self.columns.items():
            if name not in out.columns or not col.is_numeric:
                continue
            vals = out[name].to_numpy(dtype="float64", na_value=np.nan)
            lo, hi = (b if b is not None and np.isfinite(b) else None for b in (col.lower, col.upper))
            if lo is not None or hi is not None:  # as pandas' clip: a missing bound does not clip, NaN stays NaN
                vals = np.clip(vals, lo, hi)
            if col.kind is ColumnKind.INTEGER:
                vals = np.round(vals)
            out[name] = pd.Series(vals, index=out.index)
        return out

    def bin_index(self, name: str, values: pd.Series) -> pd.Series:
        """Index of each value's global bin (0 .. n_bins-1); NaN stays NaN."""
        edges = np.asarray(self.columns[name].bins)
        v = values.astype("float64").to_numpy()
        idx = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, len(edges) - 2).astype("float64")
        idx[np.isnan(v)] = np.nan
        return pd.Series(idx, index=values.index)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema.to_dict(),
            "n_rows": self.n_rows,
            "columns": [c.to_dict() for c in self.columns.values()],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Domain:
        cols = [ColumnDomain.from_dict(c) for c in d["columns"]]
        return cls(TableSchema.from_dict(d["schema"]), {c.name: c for c in cols}, int(d.get("n_rows", 0)))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Domain:
        return cls.from_dict(json.loads(Path(path).read_text()))


# -- per-site summaries --------------------------------------------------------------------------------


def _grid(digits: int) -> np.ndarray:
    """A grid shared by every site without any message: 0 and every number of ``digits`` significant digits
    between 1e-4 and 1e9, both signs (site-independent, so histograms on it sum across sites)."""
    mant = np.arange(10 ** (digits - 1), 10**digits) / 10 ** (digits - 1)
    pos = np.unique(np.round(np.concatenate([mant * 10.0**e for e in range(-4, 10)]), 12))
    return np.concatenate([-pos[::-1], [0.0], pos])


#: The shared histogram grid (two significant digits: relative resolution 1-10% at every scale).
HIST_GRID = _grid(2)
#: The coarse grid released bounds are rounded to (one significant digit).
BOUND_GRID = _grid(1)


def coarse_bounds(lo: float, hi: float, declared_lower: float | None, declared_upper: float | None) -> tuple[float, float]:
    """Bounds that reveal no value: the coarse grid point strictly below ``lo`` and strictly above ``hi`` (0 stays
    0), then clipped to the schema's declared clinical range. Exact only when the schema declares both."""
    i_down = max(int(np.searchsorted(BOUND_GRID, lo, side="left")) - 1, 0)
    i_up = min(int(np.searchsorted(BOUND_GRID, hi, side="right")), len(BOUND_GRID) - 1)
    down = 0.0 if lo == 0 else float(BOUND_GRID[i_down])
    up = 0.0 if hi == 0 else float(BOUND_GRID[i_up])
    if declared_lower is not None:
        down = max(down, float(declared_lower))
    if declared_upper is not None:
        up = min(up, float(declared_upper))
    return down, max(up, down)


def summarize_site(
    data: pd.DataFrame,
    schema: TableSchema,
    *,
    n_modes: int = 0,
    random_state: int | None = 0,
) -> dict[str, Any]:
    """Summaries of one site's rows, *before* disclosure control (:func:`release_summary`). JSON-able; no row.

    For each model column the site holds: the row count and missing count; for categorical/binary columns the
    count of each label; for numeric columns min, max, sum, sum of squares, a histogram on the shared grid
    :data:`HIST_GRID` (``hist_edges``, ``hist_counts``: the grid cells between the coarse bounds, empty ones
    included) and, when ``n_modes > 0``, a Bayesian Gaussian mixture of at most ``n_modes`` components fitted
    on the site's values (scikit-learn). Columns the site lacks are simply absent.

    The min and max here are real values of the site: only :func:`release_summary`'s output may leave it.
    """
    out: dict[str, Any] = {"n_rows": len(data), "columns": {}}
    for name in schema.model_columns:
        if name not in data.columns:
            continue
        spec = schema[name]
        s = data[name]
        n_missing = int(s.isna().sum())
        entry: dict[str, Any] = {"kind": spec.kind.value, "n": len(s), "n_missing": n_missing}
        if spec.is_numeric:
            v = s.dropna().astype("float64").to_numpy()
            if len(v):
                lo, hi = coarse_bounds(float(v.min()), float(v.max()), spec.lower, spec.upper)
                inner = HIST_GRID[(HIST_GRID > lo) & (HIST_GRID < hi)]
                edges = np.concatenate([[lo], inner, [hi]]) if hi > lo else np.array([lo, lo])
                counts = (
                    np.histogram(np.clip(v, lo, hi), edges)[0] if hi > lo else np.array([len(v)])
                )
                entry.update(
                    min=float(v.min()),
                    max=float(v.max()),
                    lower=lo,
                    upper=hi,
                    sum=float(v.sum()),
                    sumsq=float((v**2).sum()),
                    hist_edges=[float(e) for e in edges],
                    hist_counts=[int(c) for c in counts],
                )
                if n_modes > 0:
                    entry["modes"] = fit_modes(v, n_modes, random_state).to_dict()
        else:
            labels = s.dropna()
            if spec.kind is ColumnKind.BINARY:
                labels = labels.astype("float64").astype(int).astype(str)
            else:
                labels = labels.astype(str)
            entry["counts"] = {str(k): int(c) for k, c in labels.value_counts().sort_index().items()}
        out["columns"][name] = entry
    return out


def merge_small_cells(edges: Sequence[float], counts: Sequence[int], min_count: int) -> tuple[list[float], list[int]]:
    """Merge histogram cells from the left until each holds at least ``min_count`` rows; a remainder under
    ``min_count`` joins the last cell. The outer edges stay; a histogram of fewer than ``min_count`` rows
    becomes one cell. Empty cells are absorbed into their neighbours."""
    out_edges = [float(edges[0])]
    out_counts: list[int] = []
    acc = 0
    for right, c in zip(edges[1:], counts):
        acc += int(c)
        if acc >= min_count:
            out_edges.append(float(right))
            out_counts.append(acc)
            acc = 0
    if not out_counts:
        return [float(edges[0]), float(edges[-1])], [acc]
    out_counts[-1] += acc
    out_edges[-1] = float(edges[-1])
    return out_edges, out_counts


def release_summary(
    summary: Mapping[str, Any], schema: TableSchema, *, min_count: int = 5, significant_digits: int = 3
) -> dict[str, Any]:
    """Disclosure control of a site summary: what of :func:`summarize_site`'s output may leave the site.

    * numeric bounds are the coarse bounds (:func:`coarse_bounds`: one significant digit, strictly outward,
      within the declared clinical range); the real min and max are dropped;
    * the histogram on the shared grid has its cells under ``min_count`` merged with their neighbours, so
      every released cell holds at least ``min_count`` rows and no cell edge is a patient's value;
    * sums (for the mean and standard deviation) leave only when at least ``min_count`` values were observed;
    * mixture modes carried by fewer than ``min_count`` rows are dropped and the rest rounded to
      ``significant_digits`` significant digits;
    * a category label held by fewer than ``min_count`` rows of the site is not released, declared in the
      schema or not; its rows count as missing (binary columns keep 0/1, which name nobody).

    Parameters
    ----------
    summary : mapping
        Output of :func:`summarize_site`.
    schema : TableSchema
        The table's schema (declared categories and kinds).
    min_count : int
        ``k``, the smallest count released (the site policy's ``min_count``).
    significant_digits : int
        Rounding of mixture modes.

    Returns
    -------
    dict
        The released summary (JSON-able), the input of :func:`merge_summaries`.
    """
    out: dict[str, Any] = {"n_rows": int(summary["n_rows"]), "columns": {}}
    for name, entry in summary["columns"].items():
        e = {k: v for k, v in entry.items() if k not in ("min", "max", "quantiles")}
        if "hist_edges" in e:
            n_obs = int(entry["n"]) - int(entry["n_missing"])
            edges, counts = merge_small_cells(e["hist_edges"], e["hist_counts"], min_count)
            e.update(hist_edges=edges, hist_counts=counts)
            if n_obs < min_count:
                e.pop("sum", None)
                e.pop("sumsq", None)
            if "modes" in e:
                e["modes"] = release_modes(e["modes"], n_obs, min_count, significant_digits)
        if "counts" in e and schema[name].kind is ColumnKind.CATEGORICAL:
            kept = {k: int(c) for k, c in e["counts"].items() if int(c) >= min_count}
            hidden = sum(int(c) for k, c in e["counts"].items() if k not in kept)
            e["counts"] = kept
            e["n_missing"] = int(e["n_missing"]) + hidden
        out["columns"][name] = e
    return out


def _round_sig(x: float, digits: int) -> float:
    if x == 0 or not np.isfinite(x):
        return float(x)
    return float(f"{x:.{digits - 1}e}")


def release_modes(m: Mapping[str, Sequence[float]], n_obs: int, min_count: int, digits: int) -> dict[str, list[float]]:
    """Mixture modes as they are released: components carried by fewer than ``min_count`` of ``n_obs`` rows
    dropped (the heaviest is kept when none is), weights renormalised, every number rounded to ``digits``
    significant digits (standard deviations at least 1e-3)."""
    w = np.asarray(m["weights"], dtype=float)
    keep = w * n_obs >= min_count
    if not keep.any():
        keep = w == w.max()
    w = w[keep] / w[keep].sum()
    return {
        "weights": [_round_sig(float(x), digits) for x in w],
        "means": [_round_sig(float(x), digits) for x in np.asarray(m["means"], dtype=float)[keep]],
        "stds": [max(_round_sig(float(x), digits), 1e-3) for x in np.asarray(m["stds"], dtype=float)[keep]],
    }


def fit_modes(values: np.ndarray, n_modes: int, random_state: int | None) -> Modes:
    """A Bayesian Gaussian mixture of at most ``n_modes`` components fitted to ``values`` (shape ``(n,)``;
    scikit-learn's ``BayesianGaussianMixture``, Dirichlet-process prior); components under 0.5% weight dropped."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    v = values.reshape(-1, 1)
    distinct = np.unique(v)
    k = int(min(n_modes, len(distinct)))
    if k <= 1 or np.std(v) == 0:
        return Modes((1.0,), (float(v.mean()),), (float(max(v.std(), 1e-3)),))
    with warnings.catch_warnings():
        # A mixture that has not fully converged still gives usable modes for normalisation.
        warnings.simplefilter("ignore", ConvergenceWarning)
        bgm = _bgm(k, random_state).fit(v)
    keep = bgm.weights_ > 0.005
    w = bgm.weights_[keep] / bgm.weights_[keep].sum()
    means = bgm.means_[keep, 0]
    stds = np.sqrt(bgm.covariances_[keep, 0, 0])
    return Modes(tuple(map(float, w)), tuple(map(float, means)), tuple(map(float, np.maximum(stds, 1e-3))))


def _bgm(k: int, random_state: int | None) -> Any:
    from sklearn.mixture import BayesianGaussianMixture

    return BayesianGaussianMixture(
        n_components=k,
        weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=0.001,
        max_iter=200,
        n_init=1,
        random_state=random_state,
    )


# -- the server's merge --------------------------------------------------------------------------------


def merge_summaries(
    summaries: Sequence[Mapping[str, Any]],
    schema: TableSchema,
    *,
    n_bins: int = 10,
    n_modes: int = 0,
    random_state: int | None = 0,
) -> Domain:
    """Merge site summaries into one domain.

    ``summaries`` are *released* summaries (:func:`release_summary`). Exact where the pooled value is a sum
    (counts, missing rates, category union and counts, mean, standard deviation). Bounds are the widest of the
    sites' coarse bounds. Quantile bins come from the sum of the sites' histograms on the shared grid, linear
    inside each released cell (every cell holds at least ``k`` rows of one site). The global mixture per numeric
    column is fitted (scikit-learn) to draws from the sites' mixtures, each site weighted by its row count —
    never to real values.
    """
    problems: list[Problem] = []
    rng = np.random.default_rng(random_state)
    columns: dict[str, ColumnDomain] = {}
    for name in schema.model_columns:
        spec = schema[name]
        entries = [s["columns"][name] for s in summaries if name in s.get("columns", {})]
        if not entries:
            problems.append(Problem(f"column {name!r}", "no site holds this column", fix="drop it from the schema"))
            continue
        n = sum(int(e["n"]) for e in entries)
        n_missing = sum(int(e["n_missing"]) for e in entries)
        n_obs = n - n_missing
        missing_rate = n_missing / n if n else 0.0
        if n_obs == 0:
            problems.append(Problem(f"column {name!r}", "every value is missing at every site"))
            continue
        if spec.is_numeric:
            obs = [e for e in entries if "hist_edges" in e]
            lo = min(float(e["lower"]) for e in obs)
            hi = max(float(e["upper"]) for e in obs)
            mean, var = _merged_moments(obs)
            weights = np.array([sum(e["hist_counts"]) for e in obs], dtype=float)
            bins = _merged_bins(obs, weights, n_bins, lo, hi)
            modes = None
            if n_modes > 0:
                with_modes = [(Modes.from_dict(e["modes"]), w) for e, w in zip(obs, weights) if "modes" in e]
                if with_modes:
                    modes = _merge_modes([m for m, _ in with_modes], np.array([w for _, w in with_modes]),
                                         n_modes, lo, hi, rng)
            columns[name] = ColumnDomain(
                name, spec.kind, n_obs, missing_rate, lower=float(lo), upper=float(hi), mean=float(mean),
                std=float(np.sqrt(var)), bins=tuple(bins), modes=modes,
            )
        else:
            counts: dict[str, int] = {}
            for e in entries:
                for k, c in e.get("counts", {}).items():
                    counts[k] = counts.get(k, 0) + int(c)
            if spec.kind is ColumnKind.BINARY:
                cats: tuple[str, ...] = ("0", "1")
            elif spec.categories is not None:
                # Declared order first; labels seen at sites but not declared are a validation matter. A label
                # no site released (each site withholds labels under its k) is not part of the domain, declared
                # or not: no generator can then emit it.
                declared = tuple(c for c in spec.categories if counts.get(c, 0) > 0)
                cats = declared + tuple(sorted(set(counts) - set(spec.categories)))
            else:
                cats = tuple(sorted(counts))
            columns[name] = ColumnDomain(
                name, spec.kind, n_obs, missing_rate, categories=cats,
                category_counts=tuple(counts.get(c, 0) for c in cats),
            )
    if problems:
        raise ValidationError("The shared domain", problems)
    n_rows = sum(int(s.get("n_rows", 0)) for s in summaries)
    return Domain(schema.select(schema.model_columns), columns, n_rows)


def _merged_moments(entries: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    """Pooled mean and variance: exact from the sites' sums; a site that withheld its sums (fewer than k values)
    contributes its histogram's cell midpoints instead."""
    n = total = totalsq = 0.0
    for e in entries:
        if "sum" in e:
            n += float(sum(e["hist_counts"]))
            total += float(e["sum"])
            totalsq += float(e["sumsq"])
        else:
            edges = np.asarray(e["hist_edges"], dtype=float)
            mid = (edges[:-1] + edges[1:]) / 2
            c = np.asarray(e["hist_counts"], dtype=float)
            n += float(c.sum())
            total += float((c * mid).sum())
            totalsq += float((c * mid**2).sum())
    mean = total / n if n else 0.0
    return mean, max(totalsq / n - mean**2, 0.0) if n else 0.0


def _merged_bins(
    entries: Sequence[Mapping[str, Any]], weights: np.ndarray, n_bins: int, lo: float, hi: float
) -> list[float]:
    """Quantile edges of the summed site histograms (shared grid, linear within each released cell)."""
    if hi <= lo:
        return [lo, lo + 1.0]
    grid = np.unique(np.concatenate([np.asarray(e["hist_edges"], dtype=float) for e in entries] + [np.array([lo, hi])]))
    cdf = np.zeros_like(grid)
    for e in entries:
        edges = np.asarray(e["hist_edges"], dtype=float)
        cum = np.concatenate([[0.0], np.cumsum(np.asarray(e["hist_counts"], dtype=float))])
        if edges[-1] <= edges[0]:  # every value equal: a step at that value
            cdf += np.where(grid >= edges[0], cum[-1], 0.0)
        else:
            cdf += np.interp(grid, edges, cum, left=0.0, right=cum[-1])
    cdf /= max(float(weights.sum()), 1.0)
    # np.interp needs increasing x: keep the first grid point of each cdf level.
    levels, first = np.unique(cdf, return_index=True)
    targets = np.linspace(0, 1, n_bins + 1)[1:-1]
    inner = np.interp(targets, levels, grid[first]) if len(levels) > 1 else np.array([])
    edges_out = np.unique(np.concatenate([[lo], inner, [hi]]))
    return [float(x) for x in edges_out]


def _merge_modes(
    site_modes: Sequence[Modes], weights: np.ndarray, n_modes: int, lo: float, hi: float, rng: np.random.Generator
) -> Modes:
    """Fit one global mixture to draws from the count-weighted mixture of the site mixtures."""
    if len(site_modes) == 1:
        return site_modes[0]
    draws = []
    total = 4000
    for m, w in zip(site_modes, weights / weights.sum()):
        k = max(round(total * w), 10)
        comp = rng.choice(len(m.weights), size=k, p=np.asarray(m.weights) / sum(m.weights))
        draws.append(rng.normal(np.asarray(m.means)[comp], np.asarray(m.stds)[comp]))
    v = np.clip(np.concatenate(draws), lo, hi).reshape(-1, 1)
    return fit_modes(v.ravel(), n_modes, int(rng.integers(2**31)))
