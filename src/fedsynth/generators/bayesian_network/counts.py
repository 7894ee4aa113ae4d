"""Count tables of the Bayesian network: states of every variable in the shared domain, family counts, oracles.

A site answers count requests with :func:`family_counts` on its own rows; :class:`SummedCountOracle` sums the
replies, :class:`PooledCountOracle` answers from one table (the centralised path). Every state order is fixed by the
shared domain, so tables from different sites have identical shapes and their sum is the pooled table exactly.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.cohort.schema import ColumnKind
from fedsynth.encoding.domain import Domain
from fedsynth.errors import Problem, ValidationError

#: A family: (child, parents). Count arrays have axes (child, *parents) in that order.
Family = tuple[str, tuple[str, ...]]

#: Suffix of the pseudo-variable that holds a numeric column's within-bin position (see :func:`family_counts`).
WITHIN_SUFFIX = "#within"

#: Suffix of a column's missingness indicator node (0 = observed, 1 = missing).
ISNA_SUFFIX = "#isna"

#: Precision classes of a value inside its sub-bin: whole number, 1, 2 or 3 decimals, or finer.
N_PRECISIONS = 5

#: Suffix of a survival time's position on the survival model's grid: the time's bin and one of
#: :data:`TIME_SUB_BINS` equal-width sub-bins (person-time per interval is computed from these counts).
TIME_SUFFIX = "#t"

#: Sub-bins per bin of a ``#t`` variable.
TIME_SUB_BINS = 5

#: Suffix of a column's states plus one last state "missing" (a survival model's parent: every row counts).
WITH_MISSING_SUFFIX = "#m"

#: Marker of an endpoint's exit variable relative to a longer endpoint: ``"<event>#exit:<duration>:<longer>"``
#: has the states 0 = censored before the longer endpoint's time, 1 = event before it, 2 = time reached it.
EXIT_MARK = "#exit:"


# -- state spaces ----------------------------------------------------------------------------------------


def base_column(name: str) -> str:
    """The column a network variable belongs to (``"HB#isna"`` -> ``"HB"``)."""
    if EXIT_MARK in name:
        return name.split(EXIT_MARK, 1)[0]
    for suffix in (WITHIN_SUFFIX, ISNA_SUFFIX, TIME_SUFFIX, WITH_MISSING_SUFFIX):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def exit_variable(event_col: str, duration_col: str, longer_duration_col: str) -> str:
    """Name of an endpoint's exit variable relative to a longer endpoint's time (see :data:`EXIT_MARK`)."""
    return f"{event_col}{EXIT_MARK}{duration_col}:{longer_duration_col}"


def variable_columns(domain: Domain, name: str) -> list[str]:
    """The data columns a variable's states are computed from.

    A derived column (``"<derived>#m"``) reads its derivation's inputs; an exit variable reads its event, its
    duration and the longer endpoint's duration; every other variable reads its base column. A table can count
    a family only when it holds every column its variables read.
    """
    from fedsynth.cohort.derived import DERIVATIONS

    if EXIT_MARK in name:
        event, rest = name.split(EXIT_MARK, 1)
        return [event, *rest.split(":", 1)]
    col = base_column(name)
    if col not in domain.columns and col in domain.schema and domain.schema[col].derived in DERIVATIONS:
        return list(DERIVATIONS[str(domain.schema[col].derived)][1])
    return [col]


def derived_categories(domain: Domain, name: str) -> tuple[str, ...] | None:
    """The declared categories of a derived categorical column of the domain's schema (``None`` otherwise)."""
    col = base_column(name)
    if col in domain.columns or col not in domain.schema:
        return None
    spec = domain.schema[col]
    if spec.derived is None or spec.kind is not ColumnKind.CATEGORICAL or not spec.categories:
        return None
    return tuple(spec.categories)


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
    if EXIT_MARK in name:
        return 3
    if name.endswith(WITH_MISSING_SUFFIX):
        cats = derived_categories(domain, name)
        if cats is not None:
            return len(cats) + 1
        return n_states(domain, base_column(name), n_sub_bins=n_sub_bins) + 1
    col = domain[base_column(name)]
    if name.endswith(ISNA_SUFFIX):
        return 2
    if name.endswith(TIME_SUFFIX):
        return (len(col.bins) - 1) * TIME_SUB_BINS
    if name.endswith(WITHIN_SUFFIX):
        return (len(col.bins) - 1) * n_sub_bins * N_PRECISIONS
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
    out = np.full(values.shape, N_PRECISIONS - 1, dtype=np.int64)
    for d in range(N_PRECISIONS - 2, -1, -1):
        scaled = values * 10.0**d
        exact = np.abs(scaled - np.round(scaled)) < 1e-6 * np.maximum(1.0, np.abs(scaled))
        out = np.where(exact, d, out)
    return out


def encode_variable(domain: Domain, name: str, data: pd.DataFrame, n_sub_bins: int = 10) -> np.ndarray:
    """Integer state codes of one variable over ``data``'s rows; -1 marks a row without a state (missing, or a
    label outside the domain), which is left out of every count that involves the variable.

    Besides the network's variables: ``"<duration>#t"`` (time bin and sub-bin), ``"<col>#m"`` (the column's
    states, or a derived categorical column's declared categories computed from its inputs, plus "missing" as
    the last state) and exit variables (:func:`exit_variable`).
    """
    if EXIT_MARK in name:
        event_col, duration_col, longer_col = variable_columns(domain, name)
        event = pd.to_numeric(data[event_col], errors="coerce").to_numpy(dtype=np.float64)
        time = pd.to_numeric(data[duration_col], errors="coerce").to_numpy(dtype=np.float64)
        longer = pd.to_numeric(data[longer_col], errors="coerce").to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            reached = time >= longer
        codes = np.where(reached, 2, np.where(event == 1, 1, 0)).astype(np.int64)
        return np.where(np.isnan(event) | np.isnan(time) | np.isnan(longer), -1, codes)
    if name.endswith(WITH_MISSING_SUFFIX):
        card = n_states(domain, name, n_sub_bins=n_sub_bins)
        cats = derived_categories(domain, name)
        if cats is not None:
            from fedsynth.cohort.derived import DERIVATIONS

            func = DERIVATIONS[str(domain.schema[base_column(name)].derived)][0]
            values = func(data)
            lookup = {c: i for i, c in enumerate(cats)}
            codes = values.map(lambda x: lookup.get(str(x), card - 1) if pd.notna(x) else card - 1)
            return np.asarray(codes.to_numpy(), dtype=np.int64)
        raw = _encode_column(domain, base_column(name), data[base_column(name)], n_sub_bins)
        return np.where(raw < 0, card - 1, raw)
    return _encode_column(domain, name, data[base_column(name)], n_sub_bins)


def _encode_column(domain: Domain, name: str, values: pd.Series, n_sub_bins: int) -> np.ndarray:
    """Integer state codes of one variable that reads one column (see :func:`encode_variable`)."""
    if name.endswith(ISNA_SUFFIX):
        return np.asarray(values.isna().to_numpy(), dtype=np.int64)
    col = domain[base_column(name)]
    missing = values.isna().to_numpy()
    if col.is_numeric:
        v = values.astype("float64").to_numpy()
        codes = np.where(missing, 0, domain.bin_index(col.name, values).to_numpy()).astype(np.int64)
        if name.endswith(TIME_SUFFIX):
            edges = np.asarray(col.bins)
            v = np.nan_to_num(v)
            left = edges[codes]
            width = edges[codes + 1] - left
            pos = np.where(width > 0, (v - left) / np.where(width > 0, width, 1.0), 0.0) * TIME_SUB_BINS
            codes = codes * TIME_SUB_BINS + np.clip(np.floor(pos), 0, TIME_SUB_BINS - 1).astype(np.int64)
        elif name.endswith(WITHIN_SUFFIX):
            edges = np.asarray(col.bins)
            v = np.nan_to_num(v)
            left = edges[codes]
            width = edges[codes + 1] - left
            pos = np.where(width > 0, (v - left) / np.where(width > 0, width, 1.0), 0.0) * n_sub_bins
            sub = np.clip(np.floor(pos), 0, n_sub_bins - 1).astype(np.int64)
            codes = (codes * n_sub_bins + sub) * N_PRECISIONS + _precision_class(v)
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
            raw = encode_variable(domain, name, data, n_sub_bins)
            cache[name] = (np.where(raw < 0, card, raw), card)
        return cache[name]

    pairs: dict[tuple[str, ...], np.ndarray] = {}
    out: dict[Family, np.ndarray] = {}
    for child, parents in families:
        fam = (child, tuple(parents))
        names = (child, *fam[1])
        if any(not _countable(domain, data, n) for n in names):
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


def _countable(domain: Domain, data: pd.DataFrame, name: str) -> bool:
    """Whether ``data`` holds every column ``name`` reads and the domain gives it states."""
    cols = variable_columns(domain, name)
    if any(c not in data.columns or c not in domain.columns for c in cols):
        return False
    return base_column(name) in domain.columns or derived_categories(domain, name) is not None


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


class DictCountOracle(CountOracle):
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

