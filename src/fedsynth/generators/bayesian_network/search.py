"""Structure search of the Bayesian network: pgmpy's BIC/BDeu scores and hill climbing over a count oracle."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.generators.bayesian_network.counts import CountOracle, Family

# A family no site could count (e.g. its columns are never held together) must never be chosen; a large
# finite number keeps pgmpy's score differences free of NaN.
_NO_DATA_SCORE = -1e300


def oracle_score(
    kind: str,
    oracle: CountOracle,
    cards: Mapping[str, int],
    max_indegree: int,
    ess: float,
    forbidden: Iterable[tuple[str, str]] = (),
) -> Any:
    """A pgmpy BIC or BDeu score whose state counts come from ``oracle``.

    pgmpy's scores read counts from a data frame; here a two-row dummy frame only carries the variable names and
    state spaces, and ``_local_score`` takes the family table from the oracle. On a cache miss the oracle is asked,
    in one request, for the family's whole neighbourhood (each other variable added as a parent, each parent
    removed), which is exactly what hill climbing evaluates next — so a federated search needs about one round
    trip per accepted edge change rather than one per candidate. Families whose new parent is ``forbidden``
    (``(parent, child)`` pairs hill climbing may not add, so never scores) are not asked for.

    Look-ahead (``oracle.look_ahead`` > 0, remote oracles): when a request has to go out anyway, it also asks
    for the neighbourhoods of each variable's ``look_ahead`` best next parents, scored on tables already
    cached, among the parents it may take now (not forbidden, not a descendant: that edge would close a cycle).
    Hill climbing's next accepted change is usually one of those, so later steps find their tables cached:
    fewer round trips (each costs at least Flower's message latency, seconds on a deployment) for a few more
    counts per request. The tables, and so the learnt network, are the same.
    """
    from pgmpy.structure_score import BIC, BDeu

    variables = list(cards)
    banned: dict[str, set[str]] = {}
    for parent, child in forbidden:
        banned.setdefault(child, set()).add(parent)
    dummy = pd.DataFrame({v: np.zeros(2, dtype=np.int64) for v in variables})
    state_names = {v: list(range(cards[v])) for v in variables}
    singles = oracle.family_counts([(v, ()) for v in variables])
    n_rows = max((float(a.sum()) for a in singles.values()), default=0.0)

    class _Mixin:
        #: Local scores by (variable, sorted parents): tables never change during a search, and a family's
        #: score does not depend on its parents' order.
        _scores: dict[tuple[str, tuple[str, ...]], float]
        #: Each variable's parents when its neighbourhood was last made sure to be cached.
        _ready: dict[str, tuple[str, ...]]
        #: The local score of a (child states, parent configurations) count table: BIC or BDeu, defined by
        #: each score class below (pgmpy's classes are untyped, so the mixin declares what it calls).
        _score_table: Callable[[np.ndarray], float]
        def _local_score(self, variable: str, parents: tuple[str, ...]) -> float:
            """The family's score from its (cached) count table; overrides pgmpy's, which reads a data frame."""
            key = (variable, tuple(sorted(parents)))
            if key not in self._scores:
                table = self._table(variable, parents)
                self._scores[key] = _NO_DATA_SCORE if table is None else self._score_table(table)
            return self._scores[key]

        def prefetch_model(self, model: Any) -> None:
            """Fetch, in one request, every family one edge change away from the current graph (and, when that
            needs a request, the look-ahead families).

            Only variables whose parents changed since the last call are looked at: the others' neighbourhoods
            are already cached (a step changes one or two families, so this is ~2 neighbourhoods, not all)."""
            fams: list[Family] = []
            current = {v: tuple(model.get_parents(v)) for v in variables}
            for v in variables:
                if self._ready.get(v) != current[v]:
                    fams += neighbourhood((v, current[v]), variables, max_indegree, banned)
            if oracle.look_ahead > 0 and not all(oracle.is_cached(f) for f in fams):
                fams += self._look_ahead(current, model)
            oracle.fetch_missing(fams)
            self._ready = current

        def _look_ahead(self, current: Mapping[str, tuple[str, ...]], model: Any) -> list[Family]:
            import networkx as nx

            out: list[Family] = []
            for v, parents in current.items():
                if len(parents) >= max_indegree or not oracle.is_cached((v, parents)):
                    continue
                base = self._local_score(v, parents)
                gains = []
                # Adding w -> v is illegal while w descends from v (a cycle): such w are not ranked.
                skip = nx.descendants(model, v) | banned.get(v, set()) | set(parents) | {v}
                for w in variables:
                    fam = (v, parents + (w,))
                    if w not in skip and oracle.is_cached(fam):
                        gains.append((self._local_score(v, fam[1]) - base, w))
                gains.sort(key=lambda t: (-t[0], t[1]))
                for gain, w in gains[: oracle.look_ahead]:
                    if gain > 0:
                        out += neighbourhood((v, parents + (w,)), variables, max_indegree, banned)
            return out

        def _table(self, variable: str, parents: tuple[str, ...]) -> np.ndarray | None:
            fam = (variable, tuple(parents))
            if not oracle.is_cached(fam):
                oracle.family_counts(neighbourhood(fam, variables, max_indegree, banned))
            arr = oracle.family_counts([fam]).get(fam)
            if arr is None:
                return None
            table = arr.reshape(arr.shape[0], -1).astype(np.float64)
            total = table.sum()
            if total <= 0:
                return None
            if total != n_rows:
                # Worst case (a site lacks a parent): rescale to the full row count so that families counted
                # on fewer rows are not favoured by their smaller log-likelihood.
                table *= n_rows / total
            return table

    class OracleBIC(_Mixin, BIC):  # type: ignore[misc]  # pgmpy is untyped
        def _score_table(self, table: np.ndarray) -> float:
            r, q = table.shape
            cond = table.sum(axis=0)
            ll = float(np.sum(table[table > 0] * np.log((table / np.where(cond > 0, cond, 1.0))[table > 0])))
            return float(ll - 0.5 * math.log(n_rows) * q * (r - 1))

    class OracleBDeu(_Mixin, BDeu):  # type: ignore[misc]  # pgmpy is untyped
        def _score_table(self, table: np.ndarray) -> float:
            from scipy.special import gammaln

            r, q = table.shape
            alpha = self.equivalent_sample_size / q
            beta = self.equivalent_sample_size / (q * r)
            return float(
                np.sum(gammaln(table + beta)) - np.sum(gammaln(table.sum(axis=0) + alpha))
                + q * math.lgamma(alpha) - q * r * math.lgamma(beta)
            )

    score: Any = (
        OracleBIC(dummy, state_names=state_names) if kind == "bic"
        else OracleBDeu(dummy, equivalent_sample_size=ess, state_names=state_names)
    )
    score._scores = {}
    score._ready = {}
    return score


def neighbourhood(
    family: Family, variables: Sequence[str], max_indegree: int, banned: Mapping[str, set[str]] | None = None
) -> list[Family]:
    """``family`` and every family one edge change away: each allowed parent added, each parent removed.

    ``banned`` maps a child to the parents it may never have (forbidden edges): hill climbing never scores
    those families, so they are not asked for.
    """
    child, parents = family
    fams = [family]
    never = banned.get(child, set()) if banned else set()
    if len(parents) < max_indegree:
        fams += [(child, parents + (v,)) for v in variables if v != child and v not in parents and v not in never]
    fams += [(child, tuple(p for p in parents if p != x)) for x in parents]
    return fams


def hill_climb_class() -> type:
    from pgmpy.causal_discovery import HillClimbSearch

    class DeterministicHillClimbSearch(HillClimbSearch):  # type: ignore[misc]  # pgmpy is untyped
        """pgmpy's hill climbing with candidate operations in a fixed order.

        pgmpy enumerates candidate edges from a ``set``, whose order follows string hashing and so changes
        between processes; with exactly tied score changes (BIC's gain of X->Y equals Y->X) the chosen edge
        would depend on the process. Sorting the candidates makes the result a function of the counts alone.
        """

        def _legal_operations_dag(self, model: Any, scoring_method: Any, *args: Any, **kwargs: Any) -> Any:
            if hasattr(scoring_method, "prefetch_model"):
                scoring_method.prefetch_model(model)
            ops = super()._legal_operations_dag(model, scoring_method, *args, **kwargs)
            return iter(sorted(ops, key=lambda t: t[0]))

    return DeterministicHillClimbSearch

