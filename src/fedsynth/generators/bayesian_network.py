"""Discrete Bayesian network generator learnt from count tables, so federated and centralised fits are identical.

The network works on the shared :class:`~fedsynth.encoding.domain.Domain`: numeric columns become the domain's
global quantile bins, categorical and binary columns the domain's categories, and a column with missing values
gets a binary missingness node ``"<col>#isna"`` beside it (see :func:`network_variables`; the "missing" state,
kept apart so that the missingness pattern is cheap to learn). Everything the learner needs from the data is a
*family count table*: the contingency table of a child and its parents in those fixed state orders. Tables from different sites therefore
have identical shapes and are simply summed, which is what makes the federated two-step protocol exact:

1. **structure** — pgmpy's :class:`~pgmpy.causal_discovery.HillClimbSearch` with pgmpy's BIC or BDeu score whose
   counts come from a :class:`CountOracle` instead of a data frame (:meth:`BayesianNetworkGenerator.learn_structure`);
2. **parameters** — CPDs from the summed counts with a BDeu (Dirichlet) prior, pgmpy's estimator logic
   (:meth:`BayesianNetworkGenerator.learn_parameters`).

A site answers count requests with :func:`family_counts` on its own rows; :class:`SummedCountOracle` sums the
replies, :class:`PooledCountOracle` answers from one table (the centralised path). Sampling is ancestral over the
discrete states, then each bin is mapped back to a value inside it from a within-bin histogram (also a summed
count table), and a value whose indicator says "missing" becomes NaN. Exact ``conditions`` are honoured exactly (see
:meth:`BayesianNetworkGenerator._sample_conditioned`).
"""

from __future__ import annotations

import json
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.cohort.io import atomic_write_text
from fedsynth.cohort.schema import ColumnKind, ColumnRole, TableSchema
from fedsynth.encoding.domain import ColumnDomain, Domain
from fedsynth.errors import FedsynthError, Problem, ValidationError
from fedsynth.generators.base import BaseGenerator

log = logging.getLogger(__name__)

#: A family: (child, parents). Count arrays have axes (child, *parents) in that order.
Family = tuple[str, tuple[str, ...]]

#: Suffix of the pseudo-variable that holds a numeric column's within-bin position (see :func:`family_counts`).
WITHIN_SUFFIX = "#within"

#: Suffix of a column's missingness indicator node (0 = observed, 1 = missing).
ISNA_SUFFIX = "#isna"

#: Precision classes of a value inside its sub-bin: whole number, 1, 2 or 3 decimals, or finer.
_N_PRECISIONS = 5

_SCORES = ("bic", "bdeu")
_FILE = "bayesian_network.json"
# Marker: exact conditional sampling would need a factor larger than allowed; rejection is used instead.
_TOO_LARGE = object()
# A family no site could count (e.g. its columns are never held together) must never be chosen; a large
# finite number keeps pgmpy's score differences free of NaN.
_NO_DATA_SCORE = -1e300


# -- state spaces ----------------------------------------------------------------------------------------


def base_column(name: str) -> str:
    """The model column a network variable belongs to (``"HB#isna"`` -> ``"HB"``)."""
    for suffix in (WITHIN_SUFFIX, ISNA_SUFFIX):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def network_variables(domain: Domain) -> list[str]:
    """The network's nodes: every model column, followed by ``"<col>#isna"`` when the column has missing values.

    A column node's states are its observed states only (quantile bins or categories); whether a value is
    missing is its own binary node. Missingness indicators are cheap to connect (two states), so the joint
    missingness pattern (e.g. blood counts missing together) is learnt instead of being averaged away.
    """
    out: list[str] = []
    for name, col in domain.columns.items():
        out.append(name)
        if col.has_missing:
            out.append(name + ISNA_SUFFIX)
    return out


def n_states(domain: Domain, name: str, *, n_sub_bins: int = 10) -> int:
    """Number of discrete states of a network variable (or of a ``#within`` pseudo-variable) in ``domain``."""
    col = domain[base_column(name)]
    if name.endswith(ISNA_SUFFIX):
        return 2
    if name.endswith(WITHIN_SUFFIX):
        return (len(col.bins) - 1) * n_sub_bins * _N_PRECISIONS
    return len(col.bins) - 1 if col.is_numeric else len(col.categories)


def state_labels(domain: Domain, name: str) -> list[str]:
    """Human-readable labels of a variable's states, in the fixed order count tables use."""
    if name.endswith(ISNA_SUFFIX):
        return ["observed", "missing"]
    col = domain[name]
    if col.is_numeric:
        edges = col.bins
        last = len(edges) - 2
        return [f"[{edges[i]:.6g}, {edges[i + 1]:.6g}{']' if i == last else ')'}" for i in range(len(edges) - 1)]
    return list(col.categories)


def _precision_class(values: np.ndarray) -> np.ndarray:
    """0..3 = the fewest decimals that write the value exactly (up to float noise); 4 = more than three."""
    out = np.full(values.shape, _N_PRECISIONS - 1, dtype=np.int64)
    for d in range(_N_PRECISIONS - 2, -1, -1):
        scaled = values * 10.0**d
        exact = np.abs(scaled - np.round(scaled)) < 1e-6 * np.maximum(1.0, np.abs(scaled))
        out = np.where(exact, d, out)
    return out


def _encode_column(domain: Domain, name: str, values: pd.Series, n_sub_bins: int) -> np.ndarray:
    """Integer state codes of one variable; -1 marks a row without a state (missing, or a label outside the
    domain), which is left out of every count that involves the variable."""
    if name.endswith(ISNA_SUFFIX):
        return values.isna().to_numpy().astype(np.int64)
    col = domain[base_column(name)]
    missing = values.isna().to_numpy()
    if col.is_numeric:
        v = values.astype("float64").to_numpy()
        codes = np.where(missing, 0, domain.bin_index(col.name, values).to_numpy()).astype(np.int64)
        if name.endswith(WITHIN_SUFFIX):
            edges = np.asarray(col.bins)
            v = np.nan_to_num(v)
            left = edges[codes]
            width = edges[codes + 1] - left
            pos = np.where(width > 0, (v - left) / np.where(width > 0, width, 1.0), 0.0) * n_sub_bins
            sub = np.clip(np.floor(pos), 0, n_sub_bins - 1).astype(np.int64)
            codes = (codes * n_sub_bins + sub) * _N_PRECISIONS + _precision_class(v)
    else:
        labels = values[~missing]
        if col.kind is ColumnKind.BINARY:
            as_str = labels.astype("float64").round().astype(int).astype(str)
        else:
            as_str = labels.astype(str)
        lookup = {c: i for i, c in enumerate(col.categories)}
        codes = np.full(len(values), -1, dtype=np.int64)
        codes[~missing] = as_str.map(lookup).fillna(-1).astype(np.int64).to_numpy()
    return np.where(missing, -1, codes)


def family_counts(
    data: pd.DataFrame,
    domain: Domain,
    families: Iterable[Family],
    *,
    n_sub_bins: int = 10,
) -> dict[Family, np.ndarray]:
    """Contingency counts of each family over one table's rows (what a site runs on its own data).

    Parameters
    ----------
    data : DataFrame
        Rows in the schema's canonical dtypes (a site's own data). Columns the table lacks are allowed.
    domain : Domain
        The shared domain; it fixes every state order, so tables from different sites have identical shapes.
    families : iterable of (child, parents)
        Families to count. A child named ``"<col>#within"`` (numeric columns only) counts the finer
        within-bin position: the bin is cut into ``n_sub_bins`` equal-width sub-bins ``s`` and the state is
        ``(bin * n_sub_bins + s) * 5 + p``, where ``p`` is the value's precision (0-3 decimals, or 4 = finer).
        Sampling draws a value uniformly in the sub-bin and rounds it to the drawn precision, so point masses
        (0 % blasts, whole-number counts) and the data's number of decimals are reproduced.
    n_sub_bins : int
        Sub-bins per bin of a ``#within`` variable.

    Returns
    -------
    dict
        Family -> ``int64`` array of shape ``(n_states(child), *n_states(parent) ...)``. A family that involves
        a column ``data`` lacks is omitted (the caller sums what it gets). Rows whose value has no state in the
        domain (a label outside it) are left out of that family's table.
    """
    return _count_families(data, domain, families, n_sub_bins, {})


def _count_families(
    data: pd.DataFrame,
    domain: Domain,
    families: Iterable[Family],
    n_sub_bins: int,
    cache: dict[str, tuple[np.ndarray, int]],
) -> dict[Family, np.ndarray]:
    # A row without a state (code -1) is counted in an extra state ``card`` that is sliced off afterwards: one
    # bincount per family, no masks. ``cache`` keeps each variable's codes across calls; combined codes of a
    # family's first two variables are kept for this call (a request's families share them).
    def codes(name: str) -> tuple[np.ndarray, int]:
        if name not in cache:
            card = n_states(domain, name, n_sub_bins=n_sub_bins)
            raw = _encode_column(domain, name, data[base_column(name)], n_sub_bins)
            cache[name] = (np.where(raw < 0, card, raw), card)
        return cache[name]

    pairs: dict[tuple[str, ...], np.ndarray] = {}
    out: dict[Family, np.ndarray] = {}
    for child, parents in families:
        fam = (child, tuple(parents))
        names = (child, *fam[1])
        if any(base_column(n) not in data.columns or base_column(n) not in domain.columns for n in names):
            continue
        got = [codes(n) for n in names]
        cards = tuple(c for _, c in got)
        ext = tuple(c + 1 for c in cards)
        if len(names) == 1:
            flat = got[0][0]
        else:
            if names[:2] not in pairs:
                pairs[names[:2]] = got[0][0] * ext[1] + got[1][0]
            flat = pairs[names[:2]]
            for (c, _), e in zip(got[2:], ext[2:], strict=True):
                flat = flat * e + c
        table = np.bincount(flat, minlength=math.prod(ext)).reshape(ext)
        out[fam] = np.ascontiguousarray(table[tuple(slice(0, c) for c in cards)], dtype=np.int64)
    return out


# -- count oracles ---------------------------------------------------------------------------------------


def family_key(family: Family) -> str:
    """A string key for a family (for message records): ``"child|p1,p2"``."""
    child, parents = family
    return f"{child}|{','.join(parents)}"


def family_from_key(key: str) -> Family:
    """Inverse of :func:`family_key`."""
    child, _, rest = key.partition("|")
    return child, tuple(p for p in rest.split(",") if p)


class CountOracle(ABC):
    """Answers family count requests, caching every table; subclasses say where the counts come from.

    Tables are cached by their *variable set*: ``(Y, (A, B))``, ``(A, (B, Y))`` and ``(B, (A, Y))`` are one
    joint table with its axes in another order, so they cost one request and one table. The source is asked
    for each set as its canonical family (the names sorted: the first is the child, see :meth:`_canonical`);
    the returned array's axes follow the order asked for. ``n_requests`` counts the round trips made to the
    underlying source (one per call of :meth:`_fetch`), ``n_families_fetched`` and ``n_cells_fetched`` what
    they carried (per site, for a federation).
    """

    #: How many best next parents per variable a request that goes out anyway also asks ahead for (see
    #: :func:`_oracle_score`); 0 for a local table, where a request costs nothing.
    look_ahead = 0

    def __init__(self) -> None:
        self._cache: dict[Family, np.ndarray | None] = {}
        self.n_requests = 0
        self.n_families_fetched = 0
        self.n_cells_fetched = 0

    @staticmethod
    def _canonical(family: Family) -> Family:
        """The family that stands for ``family``'s variable set: its names sorted, the first one as child."""
        names = sorted((family[0], *family[1]))
        return names[0], tuple(names[1:])

    @staticmethod
    def _reorder(arr: np.ndarray, have: Family, want: Family) -> np.ndarray:
        """``arr``, a table with axes in ``have``'s order, with its axes in ``want``'s order (same variables)."""
        if have == want:
            return arr
        axes: list[str | None] = [have[0], *have[1]]
        order = []
        for n in (want[0], *want[1]):
            i = axes.index(n)
            axes[i] = None  # a repeated name takes its next axis
            order.append(i)
        return np.transpose(arr, order)

    def is_cached(self, family: Family) -> bool:
        """Whether the family's table (or the knowledge that nobody holds it) is already known."""
        return self._canonical(family) in self._cache

    def fetch_missing(self, families: Iterable[Family]) -> None:
        """Fetch every variable set among ``families`` that is not cached yet, in a single request (or none)."""
        todo: list[Family] = []
        seen: set[Family] = set()
        for fam in families:
            key = self._canonical(fam)
            if key not in self._cache and key not in seen:
                todo.append(key)
                seen.add(key)
        if todo:
            got = self._fetch(todo)
            self.n_requests += 1
            self.n_families_fetched += len(todo)
            for key in todo:
                arr = got.get(key)
                self._cache[key] = None if arr is None else np.asarray(arr)
                self.n_cells_fetched += 0 if arr is None else int(np.asarray(arr).size)

    def family_counts(self, families: Iterable[Family]) -> dict[Family, np.ndarray]:
        """Counts of each family, fetching every uncached variable set in a single request.

        Families no source could count are left out of the result.
        """
        wanted = [(f[0], tuple(f[1])) for f in families]
        self.fetch_missing(wanted)
        out: dict[Family, np.ndarray] = {}
        for fam in wanted:
            key = self._canonical(fam)
            arr = self._cache[key]
            if arr is not None:
                out[fam] = self._reorder(arr, key, fam)
        return out

    @abstractmethod
    def _fetch(self, families: Sequence[Family]) -> Mapping[Family, np.ndarray]:
        """Counts of ``families`` (canonical keys) from the source; families nobody holds may be omitted."""


class PooledCountOracle(CountOracle):
    """Counts from one table: the centralised path (or one site answering for itself)."""

    def __init__(self, data: pd.DataFrame, domain: Domain, *, n_sub_bins: int = 10) -> None:
        super().__init__()
        self.data = data
        self.domain = domain
        self.n_sub_bins = n_sub_bins
        self._codes: dict[str, tuple[np.ndarray, int]] = {}

    def _fetch(self, families: Sequence[Family]) -> Mapping[Family, np.ndarray]:
        return _count_families(self.data, self.domain, families, self.n_sub_bins, self._codes)


class SummedCountOracle(CountOracle):
    """Counts summed over sites: ``fetch(families)`` returns one count dict per site (e.g. via Flower messages).

    Reply keys may be families or their :func:`family_key` strings. A family missing from a site's reply
    (the site lacks one of its columns) simply contributes nothing.
    Because the tables are integer counts in fixed state orders, the sum equals the pooled table exactly.
    """

    def __init__(self, fetch: Callable[[list[Family]], Sequence[Mapping[Family, Any]]], *, look_ahead: int = 1) -> None:
        super().__init__()
        self.fetch = fetch
        self.look_ahead = look_ahead

    def _fetch(self, families: Sequence[Family]) -> Mapping[Family, np.ndarray]:
        replies = self.fetch(list(families))
        total: dict[Family, np.ndarray] = {}
        problems: list[Problem] = []
        for i, reply in enumerate(replies):
            for raw_key, arr in reply.items():
                fam = family_from_key(raw_key) if isinstance(raw_key, str) else (raw_key[0], tuple(raw_key[1]))
                key = self._canonical(fam)
                a = self._reorder(np.asarray(arr), fam, key)
                if key in total and total[key].shape != a.shape:
                    # Sites encoded with different domains: summing would be meaningless.
                    problems.append(Problem(f"reply {i}, family {family_key(fam)}", f"has shape {a.shape}",
                                            f"shape {total[key].shape} like the other sites",
                                            "give every site the same shared domain and generator parameters"))
                    continue
                total[key] = total[key] + a if key in total else a.astype(np.int64, copy=True)
        if problems:
            raise ValidationError("Site count replies", problems)
        # Noisy (differentially private) sums can go negative: clipping at 0 after summing is post-processing
        # and costs no privacy; exact counts are never negative, so it changes nothing for them.
        return {k: np.clip(v, 0, None) for k, v in total.items()}


class _DictCountOracle(CountOracle):
    """Counts handed over as one mapping (for :meth:`BayesianNetworkGenerator.fit_from_counts`)."""

    def __init__(self, counts: Mapping[Family, Any]) -> None:
        super().__init__()
        self._given = {}
        for f, a in counts.items():
            fam = (f[0], tuple(f[1]))
            key = self._canonical(fam)
            self._given[key] = self._reorder(np.asarray(a), fam, key)

    def _fetch(self, families: Sequence[Family]) -> Mapping[Family, np.ndarray]:
        return {f: self._given[f] for f in families if f in self._given}


# -- pgmpy scores over an oracle -------------------------------------------------------------------------


def _oracle_score(
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
        #: Provided by the score classes below (OracleBIC, OracleBDeu), which put this mixin first.
        _local_score: Callable[[str, tuple[str, ...]], float]

        def prefetch_model(self, model: Any) -> None:
            """Fetch, in one request, every family one edge change away from the current graph (and, when that
            needs a request, the look-ahead families).

            Only variables whose parents changed since the last call are looked at: the others' neighbourhoods
            are already cached (a step changes one or two families, so this is ~2 neighbourhoods, not all)."""
            fams: list[Family] = []
            current = {v: tuple(model.get_parents(v)) for v in variables}
            for v in variables:
                if self._ready.get(v) != current[v]:
                    fams += _neighbourhood((v, current[v]), variables, max_indegree, banned)
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
                        out += _neighbourhood((v, parents + (w,)), variables, max_indegree, banned)
            return out

        def _table(self, variable: str, parents: tuple[str, ...]) -> np.ndarray | None:
            fam = (variable, tuple(parents))
            if not oracle.is_cached(fam):
                oracle.family_counts(_neighbourhood(fam, variables, max_indegree, banned))
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

    class OracleBIC(_Mixin, BIC):
        def _local_score(self, variable: str, parents: tuple[str, ...]) -> float:
            key = (variable, tuple(sorted(parents)))
            if key not in self._scores:
                self._scores[key] = self._bic(variable, parents)
            return self._scores[key]

        def _bic(self, variable: str, parents: tuple[str, ...]) -> float:
            table = self._table(variable, parents)
            if table is None:
                return _NO_DATA_SCORE
            r, q = table.shape
            cond = table.sum(axis=0)
            ll = float(np.sum(table[table > 0] * np.log((table / np.where(cond > 0, cond, 1.0))[table > 0])))
            return ll - 0.5 * math.log(n_rows) * q * (r - 1)

    class OracleBDeu(_Mixin, BDeu):
        def _local_score(self, variable: str, parents: tuple[str, ...]) -> float:
            key = (variable, tuple(sorted(parents)))
            if key not in self._scores:
                self._scores[key] = self._bdeu(variable, parents)
            return self._scores[key]

        def _bdeu(self, variable: str, parents: tuple[str, ...]) -> float:
            from scipy.special import gammaln

            table = self._table(variable, parents)
            if table is None:
                return _NO_DATA_SCORE
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


def _neighbourhood(
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


def _hill_climb_class() -> type:
    from pgmpy.causal_discovery import HillClimbSearch

    class DeterministicHillClimbSearch(HillClimbSearch):
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


# -- the generator ---------------------------------------------------------------------------------------


class BayesianNetworkGenerator(BaseGenerator):
    """Discrete Bayesian network over the shared domain, learnt from (summable) count tables.

    ``fit(data)`` runs both steps on a :class:`PooledCountOracle`. A federation calls the same two steps on a
    :class:`SummedCountOracle` whose ``fetch`` asks every site for :meth:`count_statistics`; on the same rows the
    result is identical (same edges, same CPDs, same samples for the same seed)::

        gen = BayesianNetworkGenerator(schema, domain=shared_domain, **params)
        oracle = SummedCountOracle(fetch)          # fetch(families) -> [site_reply, ...]
        gen.learn_parameters(oracle, gen.learn_structure(oracle))

    Parameters
    ----------
    schema : TableSchema
        The table's schema.
    domain : Domain, optional
        The shared domain (a federation passes the merged one); built from the data by ``fit`` otherwise.
    score : {"bic", "bdeu"}
        pgmpy structure score used by hill climbing.
    max_indegree : int
        Most parents a node may have.
    equivalent_sample_size : float
        BDeu prior strength for the CPDs (and for the BDeu score).
    n_bins : int
        Quantile bins per numeric column when this generator builds its own domain.
    n_sub_bins : int
        Equal-width sub-bins per bin used to place sampled values inside their bin; with each sub-bin the
        values' precision (whole, 1-3 decimals, finer) is counted, so point masses such as 0 % blasts and
        whole-number counts come back exact.
    outcomes_last : bool
        When true, outcome columns may not be parents of clinical or genomic columns (outcomes come after
        baseline). This keeps conditioning on baseline variables cheap and exact and makes the graph readable.
    max_iter : int
        Most hill-climbing steps.

    Attributes
    ----------
    edges_ : list of (parent, child)
        The learnt structure over :func:`network_variables` (columns and ``#isna`` indicators).
    model_ : pgmpy.models.DiscreteBayesianNetwork
        The fitted network; states are integer codes (see :func:`state_labels`).
    """

    name = "bayesian_network"

    def __init__(
        self,
        schema: TableSchema,
        *,
        domain: Domain | None = None,
        score: str = "bic",
        max_indegree: int = 3,
        equivalent_sample_size: float = 1.0,
        n_bins: int = 10,
        n_sub_bins: int = 10,
        outcomes_last: bool = True,
        max_iter: int = 1000,
    ) -> None:
        super().__init__(
            schema,
            domain=domain,
            score=score,
            max_indegree=max_indegree,
            equivalent_sample_size=equivalent_sample_size,
            n_bins=n_bins,
            n_sub_bins=n_sub_bins,
            outcomes_last=outcomes_last,
            max_iter=max_iter,
        )
        # Constructors only store (sklearn); fit, learn_structure and learn_parameters validate.
        self.score = score
        self.max_indegree = max_indegree
        self.equivalent_sample_size = equivalent_sample_size
        self.n_bins = n_bins
        self.n_sub_bins = n_sub_bins
        self.outcomes_last = outcomes_last
        self.max_iter = max_iter

    def _check_params(self) -> None:
        """Every bad hyperparameter, listed at once (sklearn's wording)."""
        name = type(self).__name__
        problems = []

        def bad(param: str, value: Any, valid: str) -> None:
            problems.append(Problem(f"The {param!r} parameter of {name}", f"got {value!r}", valid))

        def is_int(v: Any) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        if self.score not in _SCORES:
            bad("score", self.score, "must be one of " + ", ".join(repr(s) for s in _SCORES))
        if not is_int(self.max_indegree) or self.max_indegree < 0:
            bad("max_indegree", self.max_indegree, "must be an int in the range [0, inf)")
        ess = self.equivalent_sample_size
        if not isinstance(ess, (int, float, np.number)) or isinstance(ess, bool) or not ess > 0:
            bad("equivalent_sample_size", ess, "must be a float in the range (0, inf)")
        if not is_int(self.n_bins) or self.n_bins < 1:
            bad("n_bins", self.n_bins, "must be an int in the range [1, inf)")
        if not is_int(self.n_sub_bins) or self.n_sub_bins < 1:
            bad("n_sub_bins", self.n_sub_bins, "must be an int in the range [1, inf)")
        if not isinstance(self.outcomes_last, bool):
            bad("outcomes_last", self.outcomes_last, "must be a bool")
        if not is_int(self.max_iter) or self.max_iter < 0:
            bad("max_iter", self.max_iter, "must be an int in the range [0, inf)")
        if problems:
            raise ValidationError(f"{name} hyperparameters", problems)

    def _domain_options(self) -> dict[str, Any]:
        self._check_params()  # before the base class builds a domain with these settings
        return {"n_bins": self.n_bins}

    # -- the two steps ---------------------------------------------------------------------------------
    def _require_domain(self) -> Domain:
        if self.domain is None:
            raise FedsynthError(
                f"{type(self).__name__} has no domain; pass the shared domain to the constructor "
                "(or call fit(data), which builds one)"
            )
        return self.domain

    def _cards(self) -> dict[str, int]:
        domain = self._require_domain()
        return {v: n_states(domain, v) for v in network_variables(domain)}

    def forbidden_edges(self) -> set[tuple[str, str]]:
        """Edges the structure search may not add.

        * A column and its own missingness indicator are never linked (the value of a missing entry is unknown).
        * A column with missing values may not be a parent of any indicator: its counts cover only the rows
          where it is observed, which would understate missingness that co-occurs with its own. Indicators
          therefore depend on other indicators and on fully observed columns, so missing rates stay exact.
        * When ``outcomes_last``, outcome columns (and their indicators) may not be parents of clinical or
          genomic ones.
        """
        domain = self._require_domain()
        variables = network_variables(domain)
        indicators = [v for v in variables if v.endswith(ISNA_SUFFIX)]
        partial = [base_column(v) for v in indicators]
        forbidden = {(x, m) for x in partial for m in indicators}
        forbidden |= {(m, base_column(m)) for m in indicators}
        if self.outcomes_last:
            is_outcome = {v: self.schema[base_column(v)].role is ColumnRole.OUTCOME for v in variables}
            forbidden |= {(o, b) for o in variables if is_outcome[o] for b in variables if not is_outcome[b]}
        return forbidden

    def learn_structure(self, oracle: CountOracle) -> list[tuple[str, str]]:
        """Step 1: hill-climbing structure search whose score reads counts from ``oracle``.

        The first request asks for every family with zero or one (allowed) parent at once (and for the
        within-bin histograms step 2 needs); after that a
        request goes out only when hill climbing needs a table not yet fetched, and it also carries the
        families the oracle's look-ahead expects next (see :func:`_oracle_score`). Returns the edges
        ``(parent, child)`` sorted; the same counts always give the same edges.
        """
        from pgmpy.causal_discovery import ExpertKnowledge

        self._check_params()
        cards = self._cards()
        variables = list(cards)
        if self.max_indegree == 0 or len(variables) < 2:
            return []
        forbidden = self.forbidden_edges()
        # The within-bin histograms do not depend on the structure; asking for them now saves step 2 a request.
        domain = self._require_domain()
        oracle.family_counts(
            [(v, ()) for v in variables]
            + [(v, (u,)) for v in variables for u in variables if u != v and (u, v) not in forbidden]
            + [(c + WITHIN_SUFFIX, ()) for c in domain.column_names if domain[c].is_numeric]
        )
        score = _oracle_score(
            self.score, oracle, cards, self.max_indegree, float(self.equivalent_sample_size), forbidden
        )
        search = _hill_climb_class()(
            scoring_method=score,
            max_indegree=self.max_indegree,
            expert_knowledge=ExpertKnowledge(forbidden_edges=forbidden),
            return_type="dag",
            max_iter=self.max_iter,
            show_progress=False,
        )
        dummy = pd.DataFrame({v: np.arange(2, dtype=np.int64) % cards[v] for v in variables})
        search.fit(dummy)
        edges = sorted((str(u), str(v)) for u, v in search.causal_graph_.edges())
        log.info("structure: %d edges after %d count requests", len(edges), oracle.n_requests)
        return edges

    def learn_parameters(self, oracle: CountOracle, edges: Sequence[tuple[str, str]]) -> BayesianNetworkGenerator:
        """Step 2: CPDs from ``oracle``'s counts with a BDeu prior, plus the within-bin histograms.

        One request asks for every family of the network and every numeric column's ``#within`` table that
        the oracle has not cached (after :meth:`learn_structure` on the same oracle: none). A family nobody
        could count falls back to the child's marginal from the domain. Returns ``self``, fitted.
        """
        from pgmpy.factors.discrete import TabularCPD
        from pgmpy.models import DiscreteBayesianNetwork
        from pgmpy.parameter_estimator import DiscreteBayesianEstimator

        self._check_params()
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
        got = oracle.family_counts(list(families.values()) + [(c + WITHIN_SUFFIX, ()) for c in numeric])
        cpds = []
        for v in variables:
            pseudo, parents, parent_cards, card = DiscreteBayesianEstimator._resolve_pseudo_counts(
                model, state_names, v, "BDeu", float(self.equivalent_sample_size), None
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
            table = np.zeros((n_bins, self.n_sub_bins * _N_PRECISIONS))
            if arr is not None:
                table = arr.reshape(n_bins, self.n_sub_bins * _N_PRECISIONS).astype(np.float64)
            within[c] = table
        self._set_model(model, edges, within)
        self.fitted_ = True
        return self

    def _marginal_fallback(self, v: str, parent_cards: Sequence[int]) -> np.ndarray:
        """Counts for a family nobody could count: the child's marginal from the domain, for every parent state."""
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
        return self.learn_parameters(_DictCountOracle(counts), edges)

    def count_statistics(self, data: pd.DataFrame, families: Iterable[Family]) -> dict[Family, np.ndarray]:
        """What a site sends: :func:`family_counts` of its own rows in this generator's domain."""
        domain = self._require_domain()
        present = [c for c in self.schema.model_columns if c in data.columns]
        coerced = self.schema.select(present).coerce(data)
        return family_counts(coerced, domain, families, n_sub_bins=self.n_sub_bins)

    def make_oracle(self, data: pd.DataFrame) -> PooledCountOracle:
        """A :class:`PooledCountOracle` over ``data`` in this generator's domain (the centralised path)."""
        present = [c for c in self.schema.model_columns if c in data.columns]
        coerced = self.schema.select(present).coerce(data)
        return PooledCountOracle(coerced, self._require_domain(), n_sub_bins=self.n_sub_bins)

    def _fit(self, data: pd.DataFrame) -> None:
        self._check_params()
        oracle = PooledCountOracle(data, self._require_domain(), n_sub_bins=self.n_sub_bins)
        edges = self.learn_structure(oracle)
        self.learn_parameters(oracle, edges)

    # -- internal model state --------------------------------------------------------------------------
    def _set_model(self, model: Any, edges: Sequence[tuple[str, str]], within: Mapping[str, np.ndarray]) -> None:
        import networkx as nx

        domain = self._require_domain()
        self.model_ = model
        self.edges_ = sorted((str(u), str(v)) for u, v in edges)
        order = {c: i for i, c in enumerate(network_variables(domain))}
        self._order = list(nx.lexicographical_topological_sort(model, key=lambda n: f"{order[n]:06d}"))
        self._parents = {v: list(model.get_cpds(v).variables[1:]) for v in self._order}
        self._probs = {v: np.asarray(model.get_cpds(v).get_values(), dtype=np.float64).T for v in self._order}
        self._pcards = {v: [self._cards_cache(p) for p in self._parents[v]] for v in self._order}
        self._within = {c: np.asarray(t, dtype=np.float64) for c, t in within.items()}

    def _cards_cache(self, v: str) -> int:
        return n_states(self._require_domain(), v)

    # -- sampling --------------------------------------------------------------------------------------
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
        return pd.DataFrame(out)

    def _values_in_bins(self, name: str, col: ColumnDomain, bins: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A value inside each sampled bin from the bin's within-bin histogram: a sub-bin and a precision are
        drawn, then a uniform value in the sub-bin is rounded to that precision."""
        edges = np.asarray(col.bins)
        k, n_prec = self.n_sub_bins, _N_PRECISIONS
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
        return values

    def _sample(self, n_samples: int, *, rng: np.random.Generator) -> pd.DataFrame:
        return self._decode(self._forward_codes(n_samples, rng), rng)

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
        }
        atomic_write_text(folder / _FILE, json.dumps(state))

    def _load(self, folder: Path) -> None:
        from pgmpy.factors.discrete import TabularCPD
        from pgmpy.models import DiscreteBayesianNetwork

        path = folder / _FILE
        if not path.is_file():
            raise FedsynthError(f"{folder} is not a saved {type(self).__name__}: it has no {_FILE}")
        state = json.loads(path.read_text())
        cards = self._cards()
        model = DiscreteBayesianNetwork()
        model.add_nodes_from(list(cards))
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
