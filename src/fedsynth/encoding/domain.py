"""The federated domain: what every site encodes with, built from per-site summaries only.

A site computes :func:`summarize_site` on its own rows (counts, bounds, moments, a quantile sketch and, when
asked, a small Gaussian mixture per numeric column). The server merges the summaries with
:func:`merge_summaries` into one :class:`Domain` and broadcasts it. The centralised path uses exactly the same
code on one "site" (:meth:`Domain.from_data`), so the only thing federation changes is how many summaries are
merged. Summaries hold aggregates only, never a row.
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

#: Probability levels of the quantile sketch each site sends for a numeric column.
SKETCH_LEVELS = np.linspace(0.0, 1.0, 101)


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
    ) -> Domain:
        """The domain of one table: the same summaries-then-merge path a federation of one site takes."""
        summary = summarize_site(data, schema, n_modes=n_modes, random_state=random_state)
        return merge_summaries([summary], schema, n_bins=n_bins, n_modes=n_modes, random_state=random_state)

    # -- encoding helpers used by every generator ------------------------------------------------
    def clip(self, data: pd.DataFrame) -> pd.DataFrame:
        """Clip numeric columns to the domain bounds and round integer columns (missing stays missing)."""
        out = data.copy()
        for name, col in self.columns.items():
            if name not in out.columns or not col.is_numeric:
                continue
            vals = out[name].astype("float64").clip(col.lower, col.upper)
            if col.kind is ColumnKind.INTEGER:
                vals = vals.round()
            out[name] = vals
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


def summarize_site(
    data: pd.DataFrame,
    schema: TableSchema,
    *,
    n_modes: int = 0,
    random_state: int | None = 0,
) -> dict[str, Any]:
    """Summaries of one site's rows for building the shared domain. JSON-able; holds no row.

    For each model column the site holds: the row count and missing count; for categorical/binary columns the
    count of each label; for numeric columns min, max, sum, sum of squares, a quantile sketch at
    :data:`SKETCH_LEVELS` and, when ``n_modes > 0``, a Bayesian Gaussian mixture of at most ``n_modes``
    components fitted on the site's values (scikit-learn). Columns the site lacks are simply absent.

    The min and max are real values of the site; like every quantile they are aggregates, but a data steward
    who wants them coarsened can round them before they leave (they are the bounds synthetic values respect).
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
                entry.update(
                    min=float(v.min()),
                    max=float(v.max()),
                    sum=float(v.sum()),
                    sumsq=float((v**2).sum()),
                    quantiles=[float(q) for q in np.quantile(v, SKETCH_LEVELS)],
                )
                if n_modes > 0:
                    entry["modes"] = _fit_modes(v, n_modes, random_state).to_dict()
        else:
            labels = s.dropna()
            if spec.kind is ColumnKind.BINARY:
                labels = labels.astype("float64").astype(int).astype(str)
            else:
                labels = labels.astype(str)
            entry["counts"] = {str(k): int(c) for k, c in labels.value_counts().sort_index().items()}
        out["columns"][name] = entry
    return out


def _fit_modes(values: np.ndarray, n_modes: int, random_state: int | None) -> Modes:
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

    Exact where the pooled value is a sum (counts, missing rates, category union and counts, min, max, mean,
    standard deviation). Quantile bins are computed from the count-weighted mixture of the sites' piecewise
    linear CDFs — exact for one site, an approximation (within the sketch's 1% resolution) for several. The
    global mixture per numeric column is fitted (scikit-learn) to draws from the sites' mixtures, each site
    weighted by its row count — never to real values.
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
            obs = [e for e in entries if "min" in e]
            lo = min(e["min"] for e in obs)
            hi = max(e["max"] for e in obs)
            total = sum(e["sum"] for e in obs)
            totalsq = sum(e["sumsq"] for e in obs)
            mean = total / n_obs
            var = max(totalsq / n_obs - mean**2, 0.0)
            weights = np.array([int(e["n"]) - int(e["n_missing"]) for e in obs], dtype=float)
            bins = _merged_bins([np.asarray(e["quantiles"]) for e in obs], weights, n_bins, lo, hi)
            modes = None
            if n_modes > 0:
                site_modes = [Modes.from_dict(e["modes"]) for e in obs if "modes" in e]
                if site_modes:
                    modes = _merge_modes(site_modes, weights[: len(site_modes)], n_modes, lo, hi, rng)
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
                # Declared order first; labels seen at sites but not declared are a validation matter.
                cats = tuple(spec.categories) + tuple(sorted(set(counts) - set(spec.categories)))
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


def _merged_bins(
    sketches: Sequence[np.ndarray], weights: np.ndarray, n_bins: int, lo: float, hi: float
) -> list[float]:
    if hi <= lo:
        return [lo, lo + 1.0]
    grid = np.unique(np.concatenate([np.asarray(s) for s in sketches] + [np.array([lo, hi])]))
    cdf = np.zeros_like(grid)
    for sk, w in zip(sketches, weights):
        # Sketch values may repeat (ties); interp needs increasing x, so keep the last level of each value.
        xs, idx = np.unique(sk[::-1], return_index=True)
        levels = SKETCH_LEVELS[::-1][idx]
        cdf += w * np.interp(grid, xs, levels, left=0.0, right=1.0)
    cdf /= weights.sum()
    targets = np.linspace(0, 1, n_bins + 1)[1:-1]
    inner = np.interp(targets, cdf, grid)
    edges = np.unique(np.concatenate([[lo], inner, [hi]]))
    return [float(e) for e in edges]


def _merge_modes(
    site_modes: Sequence[Modes], weights: np.ndarray, n_modes: int, lo: float, hi: float, rng: np.random.Generator
) -> Modes:
    """Fit one global mixture to draws from the count-weighted mixture of the site mixtures."""
    if len(site_modes) == 1:
        return site_modes[0]
    draws = []
    total = 4000
    for m, w in zip(site_modes, weights / weights.sum()):
        k = max(int(round(total * w)), 10)
        comp = rng.choice(len(m.weights), size=k, p=np.asarray(m.weights) / sum(m.weights))
        draws.append(rng.normal(np.asarray(m.means)[comp], np.asarray(m.stds)[comp]))
    v = np.clip(np.concatenate(draws), lo, hi).reshape(-1, 1)
    return _fit_modes(v.ravel(), n_modes, int(rng.integers(2**31)))
