"""Sampling from the fitted Bayesian network: ancestral draws, values inside bins, exact conditioning."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.cohort.schema import ColumnKind
from fedsynth.encoding.domain import ColumnDomain, Domain
from fedsynth.generators.bayesian_network.counts import (
    ISNA_SUFFIX,
    N_PRECISIONS,
    base_column,
    derived_categories,
    n_states,
)
from fedsynth.generators.bayesian_network.survival import (
    EndpointModel,
    config_index,
    draw_piecewise_exponential,
    median_calibration,
)

#: Rows the network draws to calibrate the survival modifiers (:meth:`NetworkSampling._calibrated`), with a fixed
#: seed: the calibration is then a function of the summed counts alone, so a federation gets the same hazards.
CALIBRATION_ROWS = 20_000

# Marker: exact conditional sampling would need a factor larger than allowed; rejection is used instead.
_TOO_LARGE = object()


class NetworkSampling(ABC):
    """The sampling half of :class:`~fedsynth.generators.bayesian_network.BayesianNetworkGenerator`.

    :meth:`_set_model` turns a fitted pgmpy network into arrays (topological order, parents, CPD tables,
    within-bin histograms); the other methods draw from them with a NumPy ``Generator``, so ``random_state``
    is honoured.
    """

    model_: Any
    edges_: list[tuple[str, str]]
    _order: list[str]
    _parents: dict[str, list[str]]
    _probs: dict[str, np.ndarray]
    _pcards: dict[str, list[int]]
    _within: dict[str, np.ndarray]
    #: Survival endpoints sampled by the piecewise-exponential model (empty: the network samples them).
    _survival: list[EndpointModel]

    @abstractmethod
    def _require_domain(self) -> Domain:
        """The shared domain the network was fitted on (the generator raises when it has none)."""

    @abstractmethod
    def _count_domain(self) -> Domain:
        """The domain whose schema names the derived columns survival parents may be (see the generator)."""

    @abstractmethod
    def _network_variables(self) -> list[str]:
        """The network's nodes in their fixed order (the domain's variables, then any derived nodes)."""

    @abstractmethod
    def _sub_bins(self) -> int:
        """Sub-bins per numeric bin of the within-bin histograms (the generator's ``n_sub_bins``)."""

    def _sample(self, n_samples: int, *, rng: np.random.Generator) -> pd.DataFrame:
        return self._decode(self._forward_codes(n_samples, rng), rng)

    def _set_model(self, model: Any, edges: Sequence[tuple[str, str]], within: Mapping[str, np.ndarray]) -> None:
        import networkx as nx

        self.model_ = model
        self.edges_ = sorted((str(u), str(v)) for u, v in edges)
        order = {c: i for i, c in enumerate(self._network_variables())}
        self._order = list(nx.lexicographical_topological_sort(model, key=lambda n: f"{order[n]:06d}"))
        self._parents = {v: list(model.get_cpds(v).variables[1:]) for v in self._order}
        self._probs = {v: np.asarray(model.get_cpds(v).get_values(), dtype=np.float64).T for v in self._order}
        self._pcards = {v: [self._cards_cache(p) for p in self._parents[v]] for v in self._order}
        self._within = {c: np.asarray(t, dtype=np.float64) for c, t in within.items()}

    def _cards_cache(self, v: str) -> int:
        return n_states(self._count_domain(), v)

    def _forward_codes(
        self, n_samples: int, rng: np.random.Generator, fixed: Mapping[str, np.ndarray] | None = None
    ) -> dict[str, np.ndarray]:
        """Ancestral sampling of state codes (pgmpy's CPDs, NumPy's Generator so ``random_state`` is honoured)."""
        fixed = fixed or {}
        codes: dict[str, np.ndarray] = {}
        for v in self._order:
            if v in fixed:
                codes[v] = np.asarray(fixed[v], dtype=np.int64)
                continue
            probs = self._probs[v]  # (parent configurations, states)
            if self._parents[v]:
                idx = np.ravel_multi_index(tuple(codes[p] for p in self._parents[v]), self._pcards[v])
                p = probs[idx]
            else:
                p = np.broadcast_to(probs[0], (n_samples, probs.shape[1]))
            cum = np.cumsum(p, axis=1)
            u = rng.random(n_samples)[:, None] * cum[:, -1:]
            codes[v] = np.minimum((cum <= u).sum(axis=1), p.shape[1] - 1).astype(np.int64)
        return codes

    def _decode(self, codes: Mapping[str, np.ndarray], rng: np.random.Generator) -> pd.DataFrame:
        domain = self._require_domain()
        out: dict[str, Any] = {}
        for name in domain.column_names:
            col = domain[name]
            c = codes[name]
            if col.is_numeric:
                values = self._values_in_bins(name, col, c, rng)
            elif col.kind is ColumnKind.BINARY:
                values = np.asarray([float(x) for x in col.categories])[c]
            else:
                values = np.asarray(col.categories, dtype=object)[c]
            isna = codes.get(name + ISNA_SUFFIX)
            if isna is not None:
                values = values.astype(object) if values.dtype == object else values.astype(np.float64)
                values[isna == 1] = np.nan
            out[name] = values
        frame = pd.DataFrame(out)
        if getattr(self, "_survival", None):
            self._draw_survival(frame, codes, rng)
        return frame

    def _parent_codes(self, name: str, frame: pd.DataFrame, codes: Mapping[str, np.ndarray]) -> np.ndarray:
        """States of a survival parent ``"<col>#m"`` for sampled rows: the network's code, or "missing" (the
        last state) where the row's value is missing; a derived column is computed from the decoded values."""
        domain = self._count_domain()
        card = n_states(domain, name)
        cats = derived_categories(domain, name)
        if cats is not None:
            from fedsynth.cohort.derived import DERIVATIONS

            func = DERIVATIONS[str(domain.schema[base_column(name)].derived)][0]
            lookup = {c: i for i, c in enumerate(cats)}
            values = func(frame)
            return np.asarray([lookup.get(str(x), card - 1) if pd.notna(x) else card - 1 for x in values], dtype=np.int64)
        col = base_column(name)
        out = np.asarray(codes[col], dtype=np.int64).copy()
        isna = codes.get(col + ISNA_SUFFIX)
        if isna is not None:
            out[np.asarray(isna) == 1] = card - 1
        return out

    def _calibrated(self, models: Sequence[EndpointModel]) -> list[EndpointModel]:
        """``models`` with each hazard that has modifiers rescaled per parent configuration by
        :func:`~.survival.median_calibration`, over :data:`CALIBRATION_ROWS` rows drawn from the fitted network
        (fixed seed; call with ``self._survival`` empty, so that the draw is the network's own)."""
        import dataclasses

        if not any(m.event_modifiers or m.censor_modifiers for m in models):
            return list(models)
        rng = np.random.default_rng(0)
        codes = self._forward_codes(CALIBRATION_ROWS, rng)
        frame = self._decode(codes, rng)
        cache: dict[str, np.ndarray] = {}

        def pcodes(name: str) -> np.ndarray:
            if name not in cache:
                cache[name] = self._parent_codes(name, frame, codes)
            return cache[name]

        out = []
        for m in models:
            hazards = {}
            for kind, parents, cards, hazard, modifiers in (
                ("event_hazard", m.event_parents, m.event_cards, m.event_hazard, m.event_modifiers),
                ("censor_hazard", m.censor_parents, m.censor_cards, m.censor_hazard, m.censor_modifiers),
            ):
                if modifiers:
                    ratio = np.ones(CALIBRATION_ROWS)
                    for name, ratios in modifiers:
                        ratio = ratio * np.asarray(ratios)[pcodes(name)]
                    q = config_index([pcodes(p) for p in parents], cards, CALIBRATION_ROWS)
                    hazard = hazard * median_calibration(q, ratio, hazard.shape[0])[:, None]
                hazards[kind] = hazard
            out.append(dataclasses.replace(m, event_hazard=hazards["event_hazard"],
                                           censor_hazard=hazards["censor_hazard"]))
        return out

    def _draw_survival(self, frame: pd.DataFrame, codes: Mapping[str, np.ndarray], rng: np.random.Generator) -> None:
        """Replace each modelled endpoint's time and event (in place, rows where the network drew a time) by
        draws from its piecewise-exponential hazards (see :mod:`~.survival`).

        Event and censoring times are drawn per row; the earlier is observed (neither before the last edge:
        censored there). An endpoint bounded by a longer one ends at the longer time when neither of its own
        exits comes first, with the longer event if that implies its own (else censored).
        """
        n = len(frame)
        cache: dict[str, np.ndarray] = {}

        def pcodes(names: list[str]) -> list[np.ndarray]:
            for p in names:
                if p not in cache:
                    cache[p] = self._parent_codes(p, frame, codes)
            return [cache[p] for p in names]

        for m in self._survival:
            sp = m.spec
            qe = config_index(pcodes(m.event_parents), m.event_cards, n)
            qc = config_index(pcodes(m.censor_parents), m.censor_cards, n)
            event_hazard, censor_hazard = m.event_hazard[qe], m.censor_hazard[qc]
            for name, ratios in m.event_modifiers:
                event_hazard = event_hazard * np.asarray(ratios)[pcodes([name])[0]][:, None]
            for name, ratios in m.censor_modifiers:
                censor_hazard = censor_hazard * np.asarray(ratios)[pcodes([name])[0]][:, None]
            t_event = draw_piecewise_exponential(event_hazard, m.edges, rng)
            t_censor = draw_piecewise_exponential(censor_hazard, m.edges, rng)
            time = np.minimum(t_event, t_censor)
            event = (t_event <= t_censor) & np.isfinite(t_event)
            never = ~np.isfinite(time)
            time[never] = m.edges[-1]
            if sp.longer_duration_col is not None and sp.longer_event_col is not None:
                longer = pd.to_numeric(frame[sp.longer_duration_col], errors="coerce").to_numpy(dtype=np.float64)
                longer_event = pd.to_numeric(frame[sp.longer_event_col], errors="coerce").to_numpy(dtype=np.float64)
                with np.errstate(invalid="ignore"):
                    reached = ~np.isnan(longer) & (time >= longer)
                time = np.where(reached, longer, time)
                implied = (longer_event == 1) if sp.longer_event_implies else np.zeros(n, dtype=bool)
                event = np.where(reached, implied, event)
            observed = frame[sp.duration_col].notna().to_numpy()
            frame[sp.duration_col] = np.where(observed, time, np.nan)
            frame[sp.event_col] = np.where(observed, event.astype(np.float64), np.nan)

    def _values_in_bins(self, name: str, col: ColumnDomain, bins: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A value inside each sampled bin from the bin's within-bin histogram: a sub-bin and a precision are
        drawn, then a uniform value in the sub-bin is rounded to that precision."""
        edges = np.asarray(col.bins)
        k, n_prec = self._sub_bins(), N_PRECISIONS
        table = self._within.get(name)
        if table is None or table.shape != (len(edges) - 1, k * n_prec):  # pragma: no cover - defensive
            table = np.zeros((len(edges) - 1, k * n_prec))
        # A light prior on unrounded values in every sub-bin keeps a bin usable when it holds no counts.
        prior = np.zeros(n_prec)
        prior[-1] = 0.01
        weights = table + np.tile(prior, k)[None, :]
        cum = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
        u = rng.random(len(bins))
        state = np.minimum((cum[bins] <= u[:, None]).sum(axis=1), k * n_prec - 1)
        sub, precision = state // n_prec, state % n_prec
        left = edges[bins]
        width = (edges[bins + 1] - left) / k
        values = left + (sub + rng.random(len(bins))) * width
        for d in range(n_prec - 1):
            chosen = precision == d
            values[chosen] = np.round(values[chosen], d)
        return np.asarray(values)

    def _sample_conditioned(
        self, n_samples: int, conditions: Mapping[str, list[Any]], *, rng: np.random.Generator
    ) -> pd.DataFrame:
        """Exact sampling under ``conditions`` on the discrete states.

        The conditioned columns and their ancestors form an ancestral set A; given A, every other column
        depends only on its parents, so P(rest | A, evidence) = P(rest | A). A is drawn exactly from
        P(A | evidence) by bucket elimination (:meth:`_draw_ancestral`), the rest by ancestral sampling. In the
        rare case of a too large bucket, rows are drawn ancestrally and rejected on the discrete states (also
        exact, but slow for rare conditions).
        A numeric condition allows the bins of its values; the sampled value is then set to one of the given
        values in the sampled bin, so every row meets the condition exactly.
        """
        import networkx as nx

        domain = self._require_domain()
        allowed: dict[str, np.ndarray] = {}
        numeric_values: dict[str, np.ndarray] = {}
        for col, values in conditions.items():
            if col not in domain.columns:
                continue
            cd = domain[col]
            if cd.is_numeric:
                vals = np.asarray([float(v) for v in values], dtype=np.float64)
                vals = vals[~np.isnan(vals)]
                numeric_values[col] = vals
                allowed[col] = np.unique(domain.bin_index(col, pd.Series(vals)).to_numpy().astype(np.int64))
            else:
                lookup = {c: i for i, c in enumerate(cd.categories)}
                allowed[col] = np.asarray(sorted({lookup[str(v)] for v in values if str(v) in lookup}), dtype=np.int64)
        for col in list(allowed):
            if col + ISNA_SUFFIX in self._probs:  # a value was asked for, so the column is observed
                allowed[col + ISNA_SUFFIX] = np.array([0], dtype=np.int64)
        if not allowed:
            return self._sample(n_samples, rng=rng)
        ancestral = set(allowed)
        for c in allowed:
            ancestral |= nx.ancestors(self.model_, c)
        anc = [v for v in self._order if v in ancestral]
        fixed = self._draw_ancestral(anc, allowed, n_samples, rng)
        if fixed is _TOO_LARGE:
            codes = self._reject_codes(allowed, n_samples, rng)
        else:
            codes = self._forward_codes(n_samples, rng, fixed=fixed) if fixed is not None else None
        if codes is None:  # the conditions have probability zero under the model
            return self._sample(n_samples, rng=rng)
        out = self._decode(codes, rng)
        for col, vals in numeric_values.items():
            bins = domain.bin_index(col, pd.Series(vals)).to_numpy()
            drawn = codes[col]
            chosen = out[col].to_numpy(copy=True)
            for b in np.unique(drawn):
                rows = np.flatnonzero(drawn == b)
                cand = vals[bins == b]
                if len(cand):
                    chosen[rows] = rng.choice(cand, size=len(rows))
            out[col] = chosen
        return out

    def _draw_ancestral(
        self, anc: Sequence[str], allowed: Mapping[str, np.ndarray], n_samples: int, rng: np.random.Generator,
        max_factor: int = 4_000_000,
    ) -> Any:
        """Exact draws of the ancestral set ``anc`` given the allowed states, by bucket elimination.

        The CPDs of ``anc`` (an ancestral set, so they mention no other variable) and an indicator of the allowed
        states are the factors. Variables are eliminated one at a time (greedy smallest product first), keeping
        each bucket's product; then they are sampled in reverse elimination order, each from its bucket
        product indexed at the already-sampled variables. That is exact sampling from P(anc | conditions).
        Returns None when the conditions have probability zero, ``_TOO_LARGE`` when a bucket would exceed
        ``max_factor`` cells.
        """
        card = {v: self._probs[v].shape[1] for v in anc}
        factors: list[tuple[tuple[str, ...], np.ndarray]] = []
        for v in anc:
            cpd = self.model_.get_cpds(v)
            values = np.asarray(cpd.get_values(), dtype=np.float64).reshape([card[v]] + self._pcards[v])
            factors.append(((v, *self._parents[v]), values))
        for col, states in allowed.items():
            mask = np.zeros(card[col])
            mask[states] = 1.0
            factors.append(((col,), mask))
        remaining = list(anc)
        buckets: list[tuple[str, tuple[str, ...], np.ndarray]] = []
        def bucket_size(v: str, factors: list[tuple[tuple[str, ...], np.ndarray]]) -> float:
            scope = {x for vars_, _ in factors if v in vars_ for x in vars_}
            return float(np.prod([card[x] for x in scope]))

        while remaining:
            sizes = {v: bucket_size(v, factors) for v in remaining}
            var = min(remaining, key=lambda v: (sizes[v], anc.index(v)))
            if sizes[var] > max_factor:
                return _TOO_LARGE
            remaining.remove(var)
            inside = [(vs, f) for vs, f in factors if var in vs]
            factors = [(vs, f) for vs, f in factors if var not in vs]
            scope = tuple(dict.fromkeys(x for vs, _ in inside for x in vs))
            label = {x: i for i, x in enumerate(scope)}
            operands: list[Any] = []
            for vs, f in inside:
                operands += [f, [label[x] for x in vs]]
            product = np.einsum(*operands, [label[x] for x in scope]) if operands else np.ones(card[var])
            buckets.append((var, scope, product))
            message = product.sum(axis=scope.index(var))
            total = message.sum()
            if not total > 0:
                return None
            factors.append((tuple(x for x in scope if x != var), message / total))
        drawn: dict[str, np.ndarray] = {}
        for var, scope, product in reversed(buckets):
            moved = np.moveaxis(product, scope.index(var), -1)
            others = tuple(drawn[x] for x in scope if x != var)
            table = moved[others] if others else np.broadcast_to(moved, (n_samples, card[var]))
            cum = np.cumsum(table, axis=1)
            if not np.all(cum[:, -1] > 0):
                return None
            u = rng.random(n_samples)[:, None] * cum[:, -1:]
            drawn[var] = np.minimum((cum <= u).sum(axis=1), card[var] - 1).astype(np.int64)
        return drawn

    def _reject_codes(
        self, allowed: Mapping[str, np.ndarray], n_samples: int, rng: np.random.Generator, max_draws: int = 2_000_000
    ) -> dict[str, np.ndarray] | None:
        kept: list[dict[str, np.ndarray]] = []
        n_kept = n_drawn = 0
        batch = max(n_samples, 1000)
        while n_kept < n_samples and n_drawn < max_draws:
            codes = self._forward_codes(batch, rng)
            ok = np.ones(batch, dtype=bool)
            for col, states in allowed.items():
                ok &= np.isin(codes[col], states)
            kept.append({v: c[ok] for v, c in codes.items()})
            n_kept += int(ok.sum())
            n_drawn += batch
            rate = max(n_kept / n_drawn, 1e-4)
            batch = int(min(max((n_samples - n_kept) / rate * 1.2, 1000), 500_000))
        if n_kept == 0:
            return None
        merged = {v: np.concatenate([k[v] for k in kept]) for v in kept[0]}
        if n_kept < n_samples:  # the base class's rejection loop asks again for the rest
            return merged
        return {v: c[:n_samples] for v, c in merged.items()}

