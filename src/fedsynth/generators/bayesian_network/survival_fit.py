"""Fitting the Bayesian network's piecewise-exponential survival model from summed counts: hazard parents chosen
greedily by a count score, hazards and modifiers per parent configuration (see :mod:`.survival`)."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import numpy as np

from fedsynth.cohort.schema import ColumnRole, TableSchema
from fedsynth.encoding.domain import Domain
from fedsynth.generators.bayesian_network.counts import (
    WITH_MISSING_SUFFIX,
    CountOracle,
    Family,
    derived_categories,
    n_states,
    variable_columns,
)
from fedsynth.generators.bayesian_network.survival import (
    EndpointModel,
    EndpointSpec,
    exposure,
    shrunk_hazards,
    split_gain,
    state_ratios,
    survival_endpoints,
)
from fedsynth.generators.params import BayesianNetworkParams

log = logging.getLogger(__name__)


def _split_gain(table: np.ndarray, edges: Sequence[float], kind: str, n_split: int, prior_rows: float) -> float:
    """:func:`~.survival.split_gain` of one hazard (``kind`` "event" or "censor") of a survival family's table
    (candidate parent last)."""
    events, censored, person_time = exposure(table, edges)
    return split_gain(events if kind == "event" else censored, person_time, n_split, prior_rows, float(table.sum()))


class SurvivalFitting(ABC):
    """The survival half of fitting :class:`~fedsynth.generators.bayesian_network.BayesianNetworkGenerator`:
    which parents each hazard gets, and the hazards and modifiers from the summed tables."""

    schema: TableSchema
    params: BayesianNetworkParams

    @abstractmethod
    def _require_domain(self) -> Domain:
        """The shared domain (the generator raises when it has none)."""

    @abstractmethod
    def _count_domain(self) -> Domain:
        """The shared domain with the whole schema, so derived columns can be counted (see the generator)."""

    def _survival_specs(self) -> list[EndpointSpec]:
        """The endpoints the piecewise-exponential model samples (none with ``survival_model='network'``)."""
        if self.params.survival_model != "piecewise_exponential":
            return []
        return survival_endpoints(self.schema, self._require_domain().column_names)

    def survival_candidates(self) -> list[str]:
        """Candidate parents of the survival hazards: ``"<col>#m"`` for every baseline clinical or genomic
        column of the domain and every derived categorical one (declared categories, inputs in the domain).

        Chosen from the schema's roles and derivations, never from column names.
        """
        domain = self._count_domain()
        roles = (ColumnRole.CLINICAL, ColumnRole.GENOMIC)
        out = [c + WITH_MISSING_SUFFIX for c in domain.column_names
               if self.schema[c].role in roles and self.schema[c].baseline]
        for c in domain.schema.derived_columns:
            spec = domain.schema[c]
            name = c + WITH_MISSING_SUFFIX
            if (spec.role in roles and spec.baseline and derived_categories(domain, name) is not None
                    and all(x in domain.columns for x in variable_columns(domain, name))):
                out.append(name)
        return out

    def learn_survival_parents(self, oracle: CountOracle) -> dict[str, dict[str, list[str]]]:
        """Parents of each endpoint's event and censoring hazards, greedily, by a score of the summed counts.

        One step adds to a hazard the candidate (:meth:`survival_candidates`) with the largest
        :func:`~.survival.split_gain` (gamma prior worth ``survival_prior_rows`` rows), while that is positive
        and fewer than ``survival_parents`` are chosen; ties go to the first candidate. After the first step,
        only candidates whose gain alone was positive are tried. Each step asks the oracle once, for
        every candidate of both hazards of the endpoint, so a federation chooses the same parents as a
        centralised fit. Returns ``{duration_col: {"event": [...], "censor": [...]}}``.
        """
        domain = self._count_domain()
        cands = self.survival_candidates()
        out: dict[str, dict[str, list[str]]] = {}
        for spec in self._survival_specs():
            tv, ev = spec.time_variable, spec.exit_variable
            edges = domain[spec.duration_col].bins
            chosen: dict[str, tuple[str, ...]] = {"event": (), "censor": ()}
            active = {k: self.params.survival_parents > 0 for k in chosen}
            # After the first step only candidates with a positive gain on their own are tried (tables grow with
            # every parent; a column that says nothing alone rarely says much given the others).
            pool = {k: list(cands) for k in chosen}
            while any(active.values()):
                fams: list[Family] = []
                for kind, parents in chosen.items():
                    if active[kind]:
                        fams += [(tv, (ev, *parents, c)) for c in pool[kind] if c not in parents]
                got = oracle.family_counts(fams)
                for kind, parents in chosen.items():
                    if not active[kind]:
                        continue
                    gains = []
                    for c in pool[kind]:
                        arr = got.get((tv, (ev, *parents, c)))
                        if c not in parents and arr is not None and float(arr.sum()) > 0:
                            n_split = n_states(domain, c)
                            gains.append((_split_gain(arr, edges, kind, n_split, self.params.survival_prior_rows), c))
                    if not parents:
                        pool[kind] = [c for g, c in gains if g > 0]
                    gains.sort(key=lambda t: -t[0])
                    if not gains or not gains[0][0] > 0:
                        active[kind] = False
                        continue
                    chosen[kind] = parents + (gains[0][1],)
                    active[kind] = len(chosen[kind]) < self.params.survival_parents
            out[spec.duration_col] = {k: list(v) for k, v in chosen.items()}
            if self.params.survival_modifiers > 0:
                fams = [(tv, (ev, *chosen[k], c)) for k in chosen for c in pool[k] if c not in chosen[k]]
                got = oracle.family_counts(fams)
                for kind, parents in chosen.items():
                    gains = []
                    for c in pool[kind]:
                        arr = got.get((tv, (ev, *parents, c)))
                        if c not in parents and arr is not None and float(arr.sum()) > 0:
                            g = _split_gain(arr, edges, kind, n_states(domain, c), self.params.survival_prior_rows)
                            gains.append((g, c))
                    gains.sort(key=lambda t: -t[0])
                    out[spec.duration_col][kind + "_modifiers"] = [
                        c for g, c in gains[: self.params.survival_modifiers] if g > 0]
            log.info("survival %s: event hazard parents %s, censoring %s", spec.duration_col,
                     out[spec.duration_col]["event"], out[spec.duration_col]["censor"])
        return out

    def _survival_families(self, parents: Mapping[str, Mapping[str, Sequence[str]]]) -> list[Family]:
        fams: list[Family] = []
        for spec in self._survival_specs():
            chosen = parents.get(spec.duration_col, {})
            for kind in ("event", "censor"):
                fams.append((spec.time_variable, (spec.exit_variable, *chosen.get(kind, ()))))
                fams += [(spec.time_variable, (spec.exit_variable, *chosen.get(kind, ()), m))
                         for m in chosen.get(kind + "_modifiers", ())]
        return fams

    def _fit_survival(
        self, got: Mapping[Family, np.ndarray], parents: Mapping[str, Mapping[str, Sequence[str]]]
    ) -> list[EndpointModel]:
        """The endpoint models from the summed tables (an endpoint whose table nobody sent is left to the network)."""
        domain = self._require_domain()
        models = []
        for spec in self._survival_specs():
            chosen = parents.get(spec.duration_col, {})
            edges = np.asarray(domain[spec.duration_col].bins, dtype=np.float64)
            hazards: dict[str, tuple[list[str], list[int], np.ndarray]] = {}
            modifiers: dict[str, list[tuple[str, tuple[float, ...]]]] = {"event": [], "censor": []}
            for kind in ("event", "censor"):
                ps = [str(p) for p in chosen.get(kind, ())]
                arr = got.get((spec.time_variable, (spec.exit_variable, *ps)))
                if arr is None or float(arr.sum()) <= 0:
                    break
                events, censored, person_time = exposure(arr, edges)
                cards = [n_states(self._count_domain(), p) for p in ps]
                counts = events if kind == "event" else censored
                hazard = shrunk_hazards(counts, person_time, cards, self.params.survival_prior_rows, float(arr.sum()))
                hazards[kind] = (ps, cards, hazard)
                for m in chosen.get(kind + "_modifiers", ()):
                    marr = got.get((spec.time_variable, (spec.exit_variable, *ps, m)))
                    if marr is None or float(marr.sum()) <= 0:
                        continue
                    mev, mce, mpt = exposure(marr, edges)
                    ratios = state_ratios(mev if kind == "event" else mce, mpt, n_states(self._count_domain(), m),
                                          hazard)
                    modifiers[kind].append((str(m), tuple(float(x) for x in ratios)))
            if len(hazards) < 2:
                log.warning("survival %s: no counts; its times come from the network", spec.duration_col)
                continue
            (pe, ce, he), (pc, cc, hc) = hazards["event"], hazards["censor"]
            models.append(EndpointModel(spec, edges, pe, ce, he, pc, cc, hc,
                                        tuple(modifiers["event"]), tuple(modifiers["censor"])))
        return models
