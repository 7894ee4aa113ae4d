"""Piecewise-exponential survival per parent configuration, fitted from count tables (so it stays federated).

The network's discrete time bins cannot carry survival *given* prognostic factors: hill climbing links a time
bin to few parents, often another outcome, so survival inside the strata users sample (a risk group, a gene's
mutation status) comes out close to the overall curve. This module models each survival endpoint (a
``duration_col``/``event_col`` pair of the schema) on its own:

* **Time axis.** The duration's shared domain bins are the hazard's intervals ``[e_k, e_{k+1})``; the count
  variable ``"<duration>#t"`` places a time in its bin and one of :data:`~.counts.TIME_SUB_BINS` equal sub-bins.
* **Counts.** One table per endpoint and parent set: ``("<duration>#t", (exit, *parents))``, where ``exit`` is
  the event column (0 censored, 1 event) or, for an endpoint whose time never exceeds a longer one's (a
  :class:`~fedsynth.cohort.constraints.TimeOrder` rule of the schema), its exit variable (0 censored before
  the longer time, 1 event before it, 2 reached it; :func:`~.counts.exit_variable`), and parents are
  ``"<col>#m"`` variables (a baseline column's states, or a derived categorical column computed from its
  inputs at the site, plus "missing"). It is a plain count table, so sites' tables sum to the pooled one.
* **Events and person-time** per interval and configuration follow from the table (:func:`exposure`): an
  event in interval k counts there; a row whose time lies in a later interval adds the interval's width to
  its person-time, a row ending inside it the distance to its sub-bin's midpoint. Hazards are
  ``events / person-time``, each shrunk towards the configuration's hazard without its last parent times
  the last parent's hazard ratio (the root is not shrunk): ``(d + w θ λ_coarser) / (T + w)`` with ``w =
  prior_rows`` times the mean person-time per row in that interval (:func:`shrunk_hazards`).
* **Parents** are chosen greedily among the baseline clinical and genomic columns and derived categorical
  columns, one at a time: the one with the largest log Bayes factor for giving its states their own hazard
  ratio within each current configuration (:func:`split_gain`, gamma-Poisson), as long as that is positive,
  separately for the event and the censoring hazard. Up to ``survival_modifiers`` further candidates whose
  gain given those parents is positive become *modifiers*: one hazard ratio per state against the parents'
  hazards (:func:`state_ratios`), multiplied in; each ratio is estimated given the parents only (not the
  other modifiers: the tables stay one parent wider), so modifiers correlated with each other overlap
  (:func:`select_parents` in the generator; one count request per step for every candidate at once).
* **Sampling** (:func:`draw_piecewise_exponential`): an event time and a censoring time per row from the two
  hazards of its configuration; the observed time is their minimum (the last edge when neither happens
  within the follow-up the domain covers, censored). For an endpoint bounded by a longer one, the two
  hazards are those of ending *before* the longer time; a row that does not is given the longer time, and
  its event when the schema says that the longer event implies this one (else censored), so the time rule
  holds by construction.

Source of the method: the piecewise-exponential (Poisson) model of survival, e.g. Friedman (1982), Ann.
Statist. 10:101-113; hazards by ``events / person-time`` per interval and stratum.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedsynth.cohort.constraints import EventImplies, TimeOrder
from fedsynth.cohort.schema import TableSchema
from fedsynth.generators.bayesian_network.counts import (
    TIME_SUB_BINS,
    TIME_SUFFIX,
    exit_variable,
)


@dataclass(frozen=True)
class EndpointSpec:
    """One endpoint as the survival model sees it: its columns and, if bounded, the longer endpoint's."""

    duration_col: str
    event_col: str
    longer_duration_col: str | None = None
    longer_event_col: str | None = None
    #: Whether the longer endpoint's event implies this one's (a schema ``event_implies`` rule).
    longer_event_implies: bool = False

    @property
    def time_variable(self) -> str:
        return self.duration_col + TIME_SUFFIX

    @property
    def exit_variable(self) -> str:
        if self.longer_duration_col is None:
            return self.event_col
        return exit_variable(self.event_col, self.duration_col, self.longer_duration_col)

    def to_dict(self) -> dict[str, Any]:
        return {"duration_col": self.duration_col, "event_col": self.event_col,
                "longer_duration_col": self.longer_duration_col, "longer_event_col": self.longer_event_col,
                "longer_event_implies": self.longer_event_implies}


def survival_endpoints(schema: TableSchema, columns: Sequence[str]) -> list[EndpointSpec]:
    """The schema's endpoints whose two columns are among ``columns``, in sampling order (a longer endpoint
    before the ones it bounds).

    An endpoint is bounded by the first (in the schema's order) :class:`TimeOrder` rule that names it as the
    shorter one and whose longer endpoint is modelled too; rules come from the schema, never from names.
    """
    have = set(columns)
    eps = [ep for ep in schema.endpoints if ep.duration_col in have and ep.event_col in have]
    specs: dict[str, EndpointSpec] = {}
    for ep in eps:
        longer = next((r.longer for r in schema.constraints
                       if isinstance(r, TimeOrder) and r.shorter == ep and r.longer in eps), None)
        if longer is None:
            specs[ep.name] = EndpointSpec(ep.duration_col, ep.event_col)
            continue
        implies = any(isinstance(r, EventImplies) and r.source == longer and r.implied == ep
                      for r in schema.constraints)
        specs[ep.name] = EndpointSpec(ep.duration_col, ep.event_col, longer.duration_col, longer.event_col, implies)
    order: list[EndpointSpec] = []
    placed: set[str] = set()
    pending = list(specs.values())
    while pending:
        ready = [s for s in pending if s.longer_duration_col is None or s.longer_duration_col in placed]
        if not ready:  # a cycle of time rules (each time equals the others): model the rest unbounded
            ready = [EndpointSpec(s.duration_col, s.event_col) for s in pending]
            pending = []
        else:
            pending = [s for s in pending if s not in ready]
        order += ready
        placed |= {s.duration_col for s in ready}
    return order


def exposure(table: np.ndarray, edges: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Events, censorings and person-time per parent configuration and interval, from one count table.

    Parameters
    ----------
    table : ndarray of shape (n_intervals * TIME_SUB_BINS, n_exit, *parent_cards)
        Counts of the family ``("<duration>#t", (exit, *parents))``; ``n_exit`` is 2 (censored, event) or 3
        (censored before, event before, reached the longer time).
    edges : sequence of float, length n_intervals + 1
        The intervals' edges (the duration's domain bins), in the time unit.

    Returns
    -------
    events, censored, person_time : ndarray of shape (n_configs, n_intervals)
        ``n_configs`` is the product of the parent cards (1 without parents), in C order. A row ending in
        sub-bin ``s`` of interval ``k`` is taken to end at the sub-bin's midpoint.
    """
    e = np.asarray(edges, dtype=np.float64)
    k = len(e) - 1
    arr = np.asarray(table, dtype=np.float64)
    n_exit = arr.shape[1]
    cube = arr.reshape(k, TIME_SUB_BINS, n_exit, -1)  # (interval, sub-bin, exit, config)
    events = cube[:, :, 1, :].sum(axis=1).T
    censored = cube[:, :, 0, :].sum(axis=1).T
    ending = cube.sum(axis=2)  # (interval, sub-bin, config): rows whose time lies there
    width = np.diff(e)
    per_interval = ending.sum(axis=1)  # (interval, config)
    later = per_interval[::-1].cumsum(axis=0)[::-1] - per_interval  # rows ending after interval k
    inside = np.einsum("ksq,s->kq", ending, (np.arange(TIME_SUB_BINS) + 0.5) / TIME_SUB_BINS)
    person_time = (later * width[:, None] + inside * width[:, None]).T
    return events, censored, person_time


def pwe_log_likelihood(events: np.ndarray, person_time: np.ndarray) -> float:
    """Maximised Poisson log-likelihood of a piecewise-exponential model: ``sum d log(d / T) - d`` (terms
    without events contribute 0; the constant ``sum d log T`` of each row's own exposure is left out)."""
    d = np.asarray(events, dtype=np.float64)
    t = np.asarray(person_time, dtype=np.float64)
    ok = (d > 0) & (t > 0)
    return float(np.sum(d[ok] * np.log(d[ok] / t[ok])) - np.sum(d[ok]))


def pwe_log_marginal(
    counts: np.ndarray, person_time: np.ndarray, prior_hazard: np.ndarray, prior_time: np.ndarray
) -> float:
    """Log marginal likelihood of a piecewise-exponential model with a gamma prior on every hazard.

    Each configuration's hazard in interval k has the prior Gamma(shape ``prior_time[k] * prior_hazard[k]``,
    rate ``prior_time[k]``): mean ``prior_hazard[k]``, worth ``prior_time[k]`` person-time. With ``d`` exits
    over ``T`` person-time a cell contributes ``a log b - lgamma(a) + lgamma(a + d) - (a + d) log(b + T)``
    (the Poisson-gamma marginal; each row's own exposure term is the same for every model and left out).
    Like BDeu for a discrete family, the score needs no penalty: a parent whose configurations hold too few
    rows to move their hazards away from the prior does not raise it.

    Parameters
    ----------
    counts, person_time : ndarray of shape (n_configs, n_intervals)
    prior_hazard : ndarray of shape (n_intervals,) or (n_configs, n_intervals)
    prior_time : ndarray of shape (n_intervals,)

    Returns
    -------
    float
    """
    from scipy.special import gammaln

    d = np.asarray(counts, dtype=np.float64)
    t = np.asarray(person_time, dtype=np.float64)
    b = np.broadcast_to(np.asarray(prior_time, dtype=np.float64), d.shape).copy()
    a = b * np.broadcast_to(np.asarray(prior_hazard, dtype=np.float64), d.shape)
    ok = (a > 0) & (b > 0)
    a, b, d, t = a[ok], b[ok], d[ok], t[ok]
    return float(np.sum(a * np.log(b) - gammaln(a) + gammaln(a + d) - (a + d) * np.log(b + t)))


#: Shape (in events) of the gamma prior on a parent state's hazard ratio: Gamma(a, a), mean 1.
RATIO_PRIOR_EVENTS = 1.0


def _ratio_log_bayes_factor(observed: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Log Bayes factor of "the hazard is ``θ`` times the expected one, ``θ ~ Gamma(a, a)``" against ``θ = 1``,
    for ``observed`` exits where ``expected`` were expected (Poisson): ``a log a - lgamma(a) + lgamma(a + D)
    - (a + D) log(a + E) + E`` with ``a`` = :data:`RATIO_PRIOR_EVENTS` (0 where nothing was expected)."""
    from scipy.special import gammaln

    a = RATIO_PRIOR_EVENTS
    d = np.asarray(observed, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    out = a * math.log(a) - math.lgamma(a) + gammaln(a + d) - (a + d) * np.log(a + e) + e
    return np.where(e > 0, out, 0.0)


def split_gain(counts: np.ndarray, person_time: np.ndarray, n_split: int, prior_rows: float, n_rows: float) -> float:
    """Log Bayes factor for giving each state of one more parent its own hazard ratio, in every configuration.

    Parameters
    ----------
    counts, person_time : ndarray of shape (n_configs * n_split, n_intervals)
        Exits and person-time per configuration of (current parents, candidate), candidate last (C order).
    n_split : int
        The candidate's number of states.
    prior_rows : float
        Strength of the shrinkage of the current configurations' hazards (see :func:`shrunk_hazards`).
    n_rows : float
        Rows the table counts.

    Returns
    -------
    float
        With ``λ_jk`` the current configuration j's hazard in interval k (shrunk towards the parentless one),
        the rows in candidate state c expect ``E_c = sum_jk λ_jk T_jck`` exits and have ``D_c``; the gain is
        the sum over c of the log Bayes factor of a hazard ratio ``θ_c ~ Gamma(a, a)`` against none
        (:data:`RATIO_PRIOR_EVENTS`). One ratio per state, across configurations and intervals (a
        proportional-hazards effect adjusted for the current parents): a prognostic factor is detected
        without paying for a hazard per configuration and interval. Positive when the states' exits differ
        from what the current model expects by more than chance.
    """
    d = np.asarray(counts, dtype=np.float64)
    t = np.asarray(person_time, dtype=np.float64)
    k = d.shape[1]
    d3, t3 = d.reshape(-1, n_split, k), t.reshape(-1, n_split, k)
    current = shrunk_hazards(d3.sum(axis=1), t3.sum(axis=1), [d3.shape[0]], prior_rows, n_rows)  # (configs, k)
    expected = np.einsum("jck,jk->c", t3, current)
    return float(_ratio_log_bayes_factor(d3.sum(axis=(0, 2)), expected).sum())


def shrunk_hazards(
    counts: np.ndarray, person_time: np.ndarray, parent_cards: Sequence[int], prior_rows: float, n_rows: float
) -> np.ndarray:
    """Hazards per configuration and interval, each shrunk towards its configuration without the last parent.

    Parameters
    ----------
    counts, person_time : ndarray of shape (n_configs, n_intervals)
        Exits of the kind modelled (events or censorings) and person-time (:func:`exposure`).
    parent_cards : sequence of int
        Cards of the parents, in the table's order (``n_configs`` is their product).
    prior_rows : float
        Prior strength in rows: the prior weighs ``prior_rows`` times the mean person-time per row of the
        interval (a gamma prior whose mean is the coarser configuration's hazard).
    n_rows : float
        Rows the table counts (the mean person-time per row is the interval's total over ``n_rows``).

    Returns
    -------
    ndarray of shape (n_configs, n_intervals)
        ``(d + w θ λ_coarser) / (T + w)``, where ``θ`` is the state's hazard ratio against the coarser
        configuration over all intervals: posterior mean under Gamma(a, a / θ_state), ``θ_state`` being the
        state's ratio over all configurations (itself under Gamma(a, a), :data:`RATIO_PRIOR_EVENTS`); a
        sparse configuration keeps the state's proportional effect. The parentless hazard is ``d / T`` (0 where
        nobody is at risk).
    """
    d = np.asarray(counts, dtype=np.float64)
    t = np.asarray(person_time, dtype=np.float64)
    cards = [int(c) for c in parent_cards]
    k = d.shape[1]
    d_full = d.reshape(*cards, k)
    t_full = t.reshape(*cards, k)
    weight = prior_rows * t.sum(axis=0) / max(float(n_rows), 1.0)

    def level(m: int) -> np.ndarray:
        axes = tuple(range(m, len(cards)))
        dm = d_full.sum(axis=axes) if axes else d_full
        tm = t_full.sum(axis=axes) if axes else t_full
        if m == 0:
            return np.divide(dm, tm, out=np.zeros_like(dm), where=tm > 0)
        coarser = level(m - 1)[..., None, :]
        # Each state of the last parent first gets a hazard ratio against the coarser configuration (posterior
        # mean of θ ~ Gamma(a, a)); a sparse cell then shrinks towards the coarser hazard times that ratio.
        a = RATIO_PRIOR_EVENTS
        expected = (tm * coarser).sum(axis=-1)  # (*cards[:m]): per configuration and state of the last parent
        observed = dm.sum(axis=-1)
        others = tuple(range(m - 1))
        overall = (a + observed.sum(axis=others)) / (a + expected.sum(axis=others))  # the state's ratio overall
        ratio = (a + observed) / (a / overall + expected)  # per configuration, shrunk towards the overall ratio
        prior = np.broadcast_to(coarser * ratio[..., None], dm.shape)
        den = tm + weight
        return np.where(den > 0, (dm + weight * prior) / np.where(den > 0, den, 1.0), prior)

    return level(len(cards)).reshape(-1, k)


@dataclass
class EndpointModel:
    """A fitted survival endpoint: hazards of the event and of censoring per parent configuration."""

    spec: EndpointSpec
    edges: np.ndarray
    event_parents: list[str]
    event_cards: list[int]
    event_hazard: np.ndarray  # (configs, intervals)
    censor_parents: list[str]
    censor_cards: list[int]
    censor_hazard: np.ndarray
    #: Modifiers of each hazard: a column and one hazard ratio per state (see :func:`state_ratios`).
    event_modifiers: tuple[tuple[str, tuple[float, ...]], ...] = ()
    censor_modifiers: tuple[tuple[str, tuple[float, ...]], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict(), "edges": self.edges.tolist(),
                "event_parents": self.event_parents, "event_cards": self.event_cards,
                "event_hazard": self.event_hazard.tolist(), "censor_parents": self.censor_parents,
                "censor_cards": self.censor_cards, "censor_hazard": self.censor_hazard.tolist(),
                "event_modifiers": [[m, list(r)] for m, r in self.event_modifiers],
                "censor_modifiers": [[m, list(r)] for m, r in self.censor_modifiers]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EndpointModel:
        def mods(raw: Any) -> tuple[tuple[str, tuple[float, ...]], ...]:
            return tuple((str(m), tuple(float(x) for x in r)) for m, r in raw or [])

        return cls(EndpointSpec(**d["spec"]), np.asarray(d["edges"], dtype=np.float64),
                   [str(p) for p in d["event_parents"]], [int(c) for c in d["event_cards"]],
                   np.asarray(d["event_hazard"], dtype=np.float64), [str(p) for p in d["censor_parents"]],
                   [int(c) for c in d["censor_cards"]], np.asarray(d["censor_hazard"], dtype=np.float64),
                   mods(d.get("event_modifiers")), mods(d.get("censor_modifiers")))


def state_ratios(counts: np.ndarray, person_time: np.ndarray, n_split: int, hazard: np.ndarray) -> np.ndarray:
    """Hazard ratio of each state of a modifier against fitted hazards of the current configurations.

    Parameters
    ----------
    counts, person_time : ndarray of shape (n_configs * n_split, n_intervals)
        Exits and person-time per configuration of (parents, modifier), modifier last (C order).
    n_split : int
        The modifier's number of states.
    hazard : ndarray of shape (n_configs, n_intervals)
        The parents' fitted hazards.

    Returns
    -------
    ndarray of shape (n_split,)
        ``(a + D_s) / (a + E_s)``: observed exits over those the parents' hazards expect for the rows in state
        s (posterior mean under Gamma(a, a), :data:`RATIO_PRIOR_EVENTS`).
    """
    d = np.asarray(counts, dtype=np.float64)
    t = np.asarray(person_time, dtype=np.float64)
    k = d.shape[1]
    d3, t3 = d.reshape(-1, n_split, k), t.reshape(-1, n_split, k)
    expected = np.einsum("jsk,jk->s", t3, np.asarray(hazard, dtype=np.float64))
    return np.asarray((RATIO_PRIOR_EVENTS + d3.sum(axis=(0, 2))) / (RATIO_PRIOR_EVENTS + expected))


def draw_piecewise_exponential(
    hazard: np.ndarray, edges: Sequence[float] | np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One time per row from a piecewise-constant hazard (``inf`` when none happens before the last edge).

    Parameters
    ----------
    hazard : ndarray of shape (n_rows, n_intervals)
        Each row's hazard per interval, per time unit.
    edges : sequence of float, length n_intervals + 1
        Interval edges; the hazard is 0 before the first.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of shape (n_rows,)
        By inversion: an Exp(1) draw ``u`` is located on the cumulative hazard ``H``, ``t = e_k + (u - H(e_k))
        / λ_k`` in the interval where ``H`` reaches ``u``.
    """
    e = np.asarray(edges, dtype=np.float64)
    lam = np.asarray(hazard, dtype=np.float64)
    n, k = lam.shape
    cum = np.concatenate([np.zeros((n, 1)), np.cumsum(lam * np.diff(e)[None, :], axis=1)], axis=1)
    u = np.asarray(rng.exponential(size=n), dtype=np.float64)
    idx = (cum[:, 1:] < u[:, None]).sum(axis=1)  # interval where H reaches u; k = never
    out = np.full(n, np.inf)
    inside = idx < k
    rows = np.flatnonzero(inside)
    j = idx[inside]
    out[rows] = e[j] + (u[rows] - cum[rows, j]) / lam[rows, j]
    return out


def config_index(codes: Sequence[np.ndarray], cards: Sequence[int], n_rows: int) -> np.ndarray:
    """Row-wise flat configuration index (C order) of parent state codes; zeros without parents."""
    if not codes:
        return np.zeros(n_rows, dtype=np.int64)
    return np.asarray(np.ravel_multi_index(tuple(np.asarray(c, dtype=np.int64) for c in codes), tuple(cards)))


def median_calibration(configs: np.ndarray, ratios: np.ndarray, n_configs: int, min_rows: int = 20) -> np.ndarray:
    """Per parent configuration, the factor ``c`` on its hazard under which rows with modifier products ``ratios``
    still reach survival one half together where the configuration's own hazard does.

    A configuration's hazard is its patients' pooled hazard; each modifier's ratios are estimated against it on
    their own, so the product of several correlated modifiers (adverse genes that co-occur) adds hazard instead of
    redistributing it, and every stratum's survival comes out short. With cumulative hazard ``H`` of the
    configuration, a row's survival is ``exp(-c * ratio * H)``; ``c`` solves ``mean(exp(-c * ratio * ln 2)) = 1/2``
    over the rows of the configuration (``c = 1 / ratio`` when all rows share one ratio). Solved by bisection on
    ``log c``; a configuration with fewer than ``min_rows`` rows takes the factor of all rows together.

    Parameters
    ----------
    configs : ndarray of int, shape (n_rows,)
        Each row's parent configuration (:func:`config_index`).
    ratios : ndarray of float, shape (n_rows,)
        Each row's product of modifier hazard ratios (> 0).
    n_configs : int
        Number of configurations of the hazard.
    min_rows : int
        Fewest rows a configuration's own factor is solved on.

    Returns
    -------
    ndarray of float, shape (n_configs,)
    """
    configs = np.asarray(configs, dtype=np.int64)
    ratios = np.asarray(ratios, dtype=np.float64)
    n = len(configs)
    groups = np.concatenate([configs, np.full(n, n_configs)])  # group n_configs: every row
    r = np.concatenate([ratios, ratios]) * math.log(2.0)
    size = np.bincount(groups, minlength=n_configs + 1).astype(np.float64)
    lo, hi = np.full(n_configs + 1, -30.0), np.full(n_configs + 1, 30.0)
    for _ in range(80):
        mid = (lo + hi) / 2
        surv = np.bincount(groups, weights=np.exp(-np.exp(mid[groups]) * r), minlength=n_configs + 1)
        above = surv > 0.5 * size  # survival still above one half: the factor may grow
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    factor = np.exp((lo + hi) / 2)
    return np.asarray(np.where(size[:n_configs] >= min_rows, factor[:n_configs], factor[n_configs]))
