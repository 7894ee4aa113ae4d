"""The Bayesian network generator: the two steps (structure from summed counts, then CPDs) and persistence."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsynth._io import atomic_write_text
from fedsynth.cohort.schema import ColumnRole
from fedsynth.encoding.domain import Domain
from fedsynth.errors import FedsynthError, Problem, ValidationError
from fedsynth.generators.base import BaseGenerator
from fedsynth.generators.bayesian_network.counts import (
    ISNA_SUFFIX,
    N_PRECISIONS,
    WITH_MISSING_SUFFIX,
    WITHIN_SUFFIX,
    CountOracle,
    DictCountOracle,
    Family,
    PooledCountOracle,
    base_column,
    derived_categories,
    family_counts,
    n_states,
    network_variables,
    variable_columns,
)
from fedsynth.generators.bayesian_network.sampling import NetworkSampling
from fedsynth.generators.bayesian_network.search import hill_climb_class, oracle_score
from fedsynth.generators.bayesian_network.survival import EndpointModel
from fedsynth.generators.bayesian_network.survival_fit import SurvivalFitting
from fedsynth.generators.model_folder import read_model_json
from fedsynth.generators.params import BayesianNetworkParams

log = logging.getLogger(__name__)

#: File written by :meth:`BayesianNetworkGenerator.save` beside ``generator.json``.
MODEL_FILE = "bayesian_network.json"


def _log_likelihood(arr: np.ndarray | None, n_rows: float) -> float:
    """Maximised log-likelihood of a family's (child states, parent configurations) count table, rescaled to
    ``n_rows`` rows (a parent with missing values is counted on fewer rows, which must not favour it)."""
    if arr is None or float(arr.sum()) <= 0:
        return -math.inf
    table = arr.reshape(arr.shape[0], -1).astype(np.float64)
    table *= n_rows / table.sum()
    cond = table.sum(axis=0)
    nz = table > 0
    return float(np.sum(table[nz] * np.log((table / np.where(cond > 0, cond, 1.0))[nz])))


def _bic(arr: np.ndarray | None, n_rows: float) -> float:
    """BIC of a family's count table (:func:`_log_likelihood` minus half log n per free parameter)."""
    if arr is None or n_rows <= 0:
        return -math.inf
    r = int(arr.shape[0])
    q = int(arr.size) // max(r, 1)
    return _log_likelihood(arr, n_rows) - 0.5 * math.log(n_rows) * q * (r - 1)


class BayesianNetworkGenerator(SurvivalFitting, NetworkSampling, BaseGenerator[BayesianNetworkParams]):
    """Discrete Bayesian network over the shared domain, learnt from (summable) count tables.

    ``fit(data)`` runs both steps on a :class:`PooledCountOracle`. A federation calls the same two steps on a
    :class:`SummedCountOracle` whose ``fetch`` asks every site for :meth:`count_statistics`; on the same rows the
    result is identical (same edges, same CPDs, same samples for the same seed)::

        gen = BayesianNetworkGenerator(schema, domain=shared_domain, **params)
        oracle = SummedCountOracle(fetch)          # fetch(families) -> [site_reply, ...]
        gen.learn_parameters(oracle, gen.learn_structure(oracle))

    Attributes
    ----------
    edges_ : list of (parent, child)
        The learnt structure over :func:`network_variables` (columns and ``#isna`` indicators).
    model_ : pgmpy.models.DiscreteBayesianNetwork
        The fitted network; states are integer codes (see :func:`state_labels`).
    """

    name = "bayesian_network"
    Params = BayesianNetworkParams
    model_files = (MODEL_FILE,)

    def _domain_options(self) -> dict[str, Any]:
        return {"n_bins": self.params.n_bins}  # checks every parameter before a domain is built with them

    def _sub_bins(self) -> int:
        return self.params.n_sub_bins

    # -- the two steps ---------------------------------------------------------------------------------
    def _require_domain(self) -> Domain:
        if self.domain is None:
            raise FedsynthError(
                f"{type(self).__name__} has no domain; pass the shared domain to the constructor "
                "(or call fit(data), which builds one)"
            )
        return self.domain

    def _count_domain(self) -> Domain:
        """The shared domain with this generator's whole schema: the domain keeps only model columns, but a
        survival parent may be a derived column, computed at the site from its inputs (states: its declared
        categories). Used for counting and for the survival model's states; the domain itself is unchanged."""
        domain = self._require_domain()
        if not self.schema.derived_columns:
            return domain
        return dataclasses.replace(domain, schema=self.schema.select(self.schema.data_columns))

    def _network_variables(self) -> list[str]:
        """The network's nodes: :func:`network_variables` of the domain, then, with ``derived_nodes``, the
        :meth:`derived_nodes`."""
        variables = network_variables(self._require_domain())
        return variables + self.derived_nodes() if self.params.derived_nodes else variables

    def derived_nodes(self) -> list[str]:
        """``"<col>#m"`` for every derived categorical column of the schema whose derivation's inputs are all in
        the domain (states: its declared categories, then "missing"; counted at the sites from the inputs).

        Chosen from the schema's derivations, never from column names. As network nodes (``derived_nodes``) they
        may be parents of their inputs, never their children (:meth:`forbidden_edges`).
        """
        domain = self._count_domain()
        return [c + WITH_MISSING_SUFFIX for c in domain.schema.derived_columns
                if derived_categories(domain, c + WITH_MISSING_SUFFIX) is not None
                and all(x in domain.columns for x in variable_columns(domain, c + WITH_MISSING_SUFFIX))]

    def _cards(self) -> dict[str, int]:
        domain = self._count_domain()
        return {v: n_states(domain, v) for v in self._network_variables()}

    def forbidden_edges(self) -> set[tuple[str, str]]:
        """Edges the structure search may not add.

        * A column and its own missingness indicator are never linked (the value of a missing entry is unknown).
        * A column with missing values may not be a parent of any indicator: its counts cover only the rows
          where it is observed, which would understate missingness that co-occurs with its own. Indicators
          therefore depend on other indicators and on fully observed columns, so missing rates stay exact.
        * When ``outcomes_last``, outcome columns (and their indicators) may not be parents of clinical or
          genomic ones.
        * A derived node (:meth:`derived_nodes`) has none of its inputs (nor their indicators) as a parent: it is
          a function of them, so as their child it would be a leaf no sampled value reads; as their parent it
          carries the dependence of the inputs' joint values on the rest of the network.
        """
        domain = self._count_domain()
        variables = self._network_variables()
        indicators = [v for v in variables if v.endswith(ISNA_SUFFIX)]
        partial = [base_column(v) for v in indicators]
        forbidden = {(x, m) for x in partial for m in indicators}
        forbidden |= {(m, base_column(m)) for m in indicators}
        if self.params.outcomes_last:
            is_outcome = {v: self.schema[base_column(v)].role is ColumnRole.OUTCOME for v in variables}
            forbidden |= {(o, b) for o in variables if is_outcome[o] for b in variables if not is_outcome[b]}
        for d in (v for v in variables if derived_categories(domain, v) is not None):
            inputs = set(variable_columns(domain, d))
            forbidden |= {(v, d) for v in variables if base_column(v) in inputs}
        return forbidden

    def learn_structure(self, oracle: CountOracle) -> list[tuple[str, str]]:
        """Step 1: hill-climbing structure search whose score reads counts from ``oracle``.

        The first request asks for every family with zero or one (allowed) parent at once (and for the
        within-bin histograms step 2 needs); after that a
        request goes out only when hill climbing needs a table not yet fetched, and it also carries the
        families the oracle's look-ahead expects next (see :func:`~fedsynth.generators.bayesian_network.search.oracle_score`). Returns the edges
        ``(parent, child)`` sorted; the same counts always give the same edges.
        """
        from pgmpy.causal_discovery import ExpertKnowledge

        cards = self._cards()
        variables = list(cards)
        if self.params.max_indegree == 0 or len(variables) < 2:
            self.survival_parents_ = self.learn_survival_parents(oracle)
            return []
        forbidden = self.forbidden_edges()
        # The within-bin histograms do not depend on the structure; asking for them now saves step 2 a request.
        domain = self._require_domain()
        oracle.family_counts(
            [(v, ()) for v in variables]
            + [(v, (u,)) for v in variables for u in variables if u != v and (u, v) not in forbidden]
            + [(c + WITHIN_SUFFIX, ()) for c in domain.column_names if domain[c].is_numeric]
        )
        score = oracle_score(
            self.params.score, oracle, cards, self.params.max_indegree, self.params.equivalent_sample_size, forbidden
        )
        search = hill_climb_class()(
            scoring_method=score,
            max_indegree=self.params.max_indegree,
            expert_knowledge=ExpertKnowledge(forbidden_edges=forbidden),
            return_type="dag",
            max_iter=self.params.max_iter,
            show_progress=False,
        )
        dummy = pd.DataFrame({v: np.arange(2, dtype=np.int64) % cards[v] for v in variables})
        search.fit(dummy)
        edges = sorted((str(u), str(v)) for u, v in search.causal_graph_.edges())
        if self.params.outcome_parents > 0:
            edges = self._add_outcome_parents(oracle, edges, forbidden)
        if self.params.derived_input_parents > 0:
            edges = self._add_derived_input_parents(oracle, edges, forbidden)
        # After the network's search, so that under a privacy budget the search's tables come first.
        self.survival_parents_ = self.learn_survival_parents(oracle)
        log.info("structure: %d edges after %d count requests", len(edges), oracle.n_requests)
        return edges

    def _add_derived_input_parents(
        self, oracle: CountOracle, edges: list[tuple[str, str]], forbidden: set[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """Give each input of a derived column ``derived_input_parents`` more parents among that derivation's
        other inputs, one at a time, each the one with the best family BIC on the summed counts (added even
        where the search's penalty refused it; no cycle, no forbidden edge, at most ``max_indegree`` parents).

        A derived column (a risk score) is a function of its inputs' *joint* values: inputs the search left
        unlinked make the derived value's distribution, and its relation to the inputs' other parents (a gene
        that shifts the whole score), too flat. Only counts are read, so a federation adds the same edges.
        """
        from fedsynth.cohort.derived import DERIVATIONS

        domain = self._require_domain()
        groups = []
        for c in self.schema.derived_columns:
            key = self.schema[c].derived
            if key in DERIVATIONS:
                inputs = [x for x in DERIVATIONS[str(key)][1] if x in domain.columns]
                if len(inputs) > 1:
                    groups.append(inputs)
        for inputs in groups:
            edges = self._add_parents(oracle, edges, forbidden, inputs, inputs, self.params.derived_input_parents,
                                      max_parents=self.params.max_indegree)
        return edges

    def _add_parents(
        self, oracle: CountOracle, edges: list[tuple[str, str]], forbidden: set[tuple[str, str]],
        targets: Sequence[str], candidates: Sequence[str], n_more: int, max_parents: int | None = None,
    ) -> list[tuple[str, str]]:
        """``n_more`` parents for each of ``targets`` from ``candidates``, by best family BIC (see
        :meth:`_add_derived_input_parents`); one oracle request per added edge."""
        import networkx as nx

        cards = self._cards()
        graph = nx.DiGraph()
        graph.add_nodes_from(cards)
        graph.add_edges_from(edges)
        for v in targets:
            for _ in range(n_more):
                parents = tuple(sorted(graph.predecessors(v)))
                if max_parents is not None and len(parents) >= max_parents:
                    break
                below = nx.descendants(graph, v)
                cands = [w for w in candidates
                         if w != v and w not in parents and (w, v) not in forbidden and w not in below]
                fams = [(v, ()), (v, parents)] + [(v, parents + (w,)) for w in cands]
                got = oracle.family_counts(fams)
                single = got.get((v, ()))
                n_rows = float(single.sum()) if single is not None else 0.0
                base = _bic(got.get((v, parents)), n_rows)
                gains = [(_bic(got.get(f), n_rows) - base, w) for f, w in zip(fams[2:], cands, strict=True)]
                gains = sorted((g for g in gains if math.isfinite(g[0])), key=lambda t: (-t[0], t[1]))
                if not gains:
                    break
                graph.add_edge(gains[0][1], v)
        return sorted((str(u), str(v)) for u, v in graph.edges())

    def _add_outcome_parents(
        self, oracle: CountOracle, edges: list[tuple[str, str]], forbidden: set[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """Give each outcome node ``outcome_parents`` more baseline parents, one at a time: the one whose family
        BIC (from the counts) is highest, even when it is below the current family's — the search stopped there.

        Only counts are read (one oracle request per added edge, for every candidate at once), so a federation
        adds the same edges as a centralized fit. Candidates are clinical and genomic variables (not
        indicators) whose edge is allowed and closes no cycle; ties go to the first name.
        """
        cards = self._cards()
        is_outcome = {v: self.schema[base_column(v)].role is ColumnRole.OUTCOME for v in cards}
        baseline = [v for v in cards if not is_outcome[v] and not v.endswith(ISNA_SUFFIX)]
        outcomes = [v for v in cards if is_outcome[v] and not v.endswith(ISNA_SUFFIX)]
        return self._add_parents(oracle, edges, forbidden, outcomes, baseline, self.params.outcome_parents)

    def learn_parameters(self, oracle: CountOracle, edges: Sequence[tuple[str, str]]) -> BayesianNetworkGenerator:
        """Step 2: CPDs from ``oracle``'s counts with a BDeu prior, plus the within-bin histograms.

        One request asks for every family of the network and every numeric column's ``#within`` table that
        the oracle has not cached (after :meth:`learn_structure` on the same oracle: none). A family nobody
        could count falls back to the child's marginal from the domain. Returns ``self``, fitted.
        """
        from pgmpy.factors.discrete import TabularCPD
        from pgmpy.models import DiscreteBayesianNetwork
        from pgmpy.parameter_estimator import DiscreteBayesianEstimator

        domain = self._require_domain()
        cards = self._cards()
        variables = list(cards)
        edges = [(str(u), str(v)) for u, v in edges]
        problems = [Problem(f"edge {e}", "names a column outside the domain", ", ".join(variables))
                    for e in edges if e[0] not in cards or e[1] not in cards]
        if problems:
            raise ValidationError("The network structure", problems)
        model = DiscreteBayesianNetwork()
        model.add_nodes_from(variables)
        model.add_edges_from(edges)
        state_names = {v: list(range(cards[v])) for v in variables}
        families = {v: (v, tuple(sorted(model.get_parents(v)))) for v in variables}
        numeric = [c for c in domain.column_names if domain[c].is_numeric]
        survival_parents = getattr(self, "survival_parents_", None)
        if survival_parents is None:
            survival_parents = self.survival_parents_ = self.learn_survival_parents(oracle)
        got = oracle.family_counts(list(families.values()) + [(c + WITHIN_SUFFIX, ()) for c in numeric]
                                   + self._survival_families(survival_parents))
        cpds = []
        for v in variables:
            pseudo, parents, parent_cards, card = DiscreteBayesianEstimator._resolve_pseudo_counts(
                model, state_names, v, "BDeu", self.params.equivalent_sample_size, None
            )
            arr = got.get(families[v])
            if arr is None:
                arr = self._marginal_fallback(v, parent_cards)
            counts = arr.reshape(card, -1).astype(np.float64)
            cpd = TabularCPD(
                v, card, counts + pseudo, evidence=parents or None, evidence_card=parent_cards or None,
                state_names={x: state_names[x] for x in [v, *parents]},
            )
            cpd.normalize()
            cpds.append(cpd)
        model.add_cpds(*cpds)
        model.check_model()
        within = {}
        for c in numeric:
            arr = got.get((c + WITHIN_SUFFIX, ()))
            n_bins = len(domain[c].bins) - 1
            table = np.zeros((n_bins, self.params.n_sub_bins * N_PRECISIONS))
            if arr is not None:
                table = arr.reshape(n_bins, self.params.n_sub_bins * N_PRECISIONS).astype(np.float64)
            within[c] = table
        self._set_model(model, edges, within)
        self._survival = []
        self._survival = self._calibrated(self._fit_survival(got, survival_parents))
        self.fitted_ = True
        return self

    def _marginal_fallback(self, v: str, parent_cards: Sequence[int]) -> np.ndarray:
        """Counts for a family nobody could count: the child's marginal from the domain, for every parent state."""
        cats = derived_categories(self._count_domain(), v)
        if cats is not None:  # a derived node: uniform over its categories and "missing"
            q = int(np.prod(parent_cards)) if parent_cards else 1
            return np.full((len(cats) + 1, q), 1.0 / q)
        col = self._require_domain()[base_column(v)]
        if v.endswith(ISNA_SUFFIX):
            base = np.array([1.0 - col.missing_rate, col.missing_rate]) * max(col.n_observed, 1)
        elif col.is_numeric:
            base = np.full(len(col.bins) - 1, col.n_observed / max(len(col.bins) - 1, 1))
        else:
            base = np.asarray(col.category_counts, dtype=np.float64)
        q = int(np.prod(parent_cards)) if parent_cards else 1
        return np.repeat(base[:, None], q, axis=1) / q

    def fit_from_counts(
        self, counts: Mapping[Family, Any], edges: Sequence[tuple[str, str]] | None = None
    ) -> BayesianNetworkGenerator:
        """Parameters from already summed counts (``edges`` default: the learnt ``edges_``). Returns ``self``."""
        if edges is None:
            edges = getattr(self, "edges_", None)
            if edges is None:
                raise FedsynthError("fit_from_counts needs edges: call learn_structure first or pass edges")
        return self.learn_parameters(DictCountOracle(counts), edges)

    def count_statistics(self, data: pd.DataFrame, families: Iterable[Family]) -> dict[Family, np.ndarray]:
        """What a site sends: :func:`family_counts` of its own rows in this generator's domain."""
        domain = self._count_domain()
        present = [c for c in self.schema.model_columns if c in data.columns]
        coerced = self.schema.select(present).coerce(data)
        return family_counts(coerced, domain, families, n_sub_bins=self.params.n_sub_bins)

    def make_oracle(self, data: pd.DataFrame) -> PooledCountOracle:
        """A :class:`PooledCountOracle` over ``data`` in this generator's domain (the centralised path)."""
        present = [c for c in self.schema.model_columns if c in data.columns]
        coerced = self.schema.select(present).coerce(data)
        return PooledCountOracle(coerced, self._count_domain(), n_sub_bins=self.params.n_sub_bins)

    def _fit(self, data: pd.DataFrame) -> None:
        oracle = PooledCountOracle(data, self._count_domain(), n_sub_bins=self.params.n_sub_bins)
        edges = self.learn_structure(oracle)
        self.learn_parameters(oracle, edges)


    # -- persistence -----------------------------------------------------------------------------------
    def _save(self, folder: Path) -> None:
        cpds = []
        for v in self._order:
            cpds.append({"variable": v, "parents": self._parents[v], "values": self._probs[v].T.tolist()})
        state = {
            "format": 1,
            "edges": [list(e) for e in self.edges_],
            "cpds": cpds,
            "within": {c: t.tolist() for c, t in self._within.items()},
            "survival": [m.to_dict() for m in self._survival],
        }
        atomic_write_text(folder / MODEL_FILE, json.dumps(state))

    def _load(self, folder: Path) -> None:
        from pgmpy.factors.discrete import TabularCPD
        from pgmpy.models import DiscreteBayesianNetwork

        state = read_model_json(folder, MODEL_FILE)
        cards = self._cards()
        model = DiscreteBayesianNetwork()
        # The saved CPDs name the nodes (a model saved before derived nodes existed has none of them).
        model.add_nodes_from([str(entry["variable"]) for entry in state["cpds"]])
        model.add_edges_from([tuple(e) for e in state["edges"]])
        cpds = []
        for entry in state["cpds"]:
            v, parents = entry["variable"], list(entry["parents"])
            cpds.append(TabularCPD(
                v, cards[v], np.asarray(entry["values"], dtype=np.float64),
                evidence=parents or None, evidence_card=[cards[p] for p in parents] or None,
                state_names={x: list(range(cards[x])) for x in [v, *parents]},
            ))
        model.add_cpds(*cpds)
        model.check_model()
        self._set_model(model, [tuple(e) for e in state["edges"]], {c: np.asarray(t) for c, t in state["within"].items()})
        # Models saved before the survival model existed sample survival from the network.
        self._survival = [EndpointModel.from_dict(m) for m in state.get("survival", [])]
