"""Endpoint rules: one endpoint's time never exceeding another's, one endpoint's event implying another's.

Two rule types relate survival endpoints (never column names: a rule is built from the schema's endpoints):

- :class:`TimeOrder` ``(shorter, longer)``: wherever both times are known, ``shorter``'s time <= ``longer``'s
  (leukaemia-free survival ends at AML or death, so ``LFS_YEARS <= OS_YEARS``);
- :class:`EventImplies` ``(source, implied)``: wherever both events are known, ``source``'s event = 1 means
  ``implied``'s event = 1 (a death ends OS with an event and LFS with an event).

A rule is *declared* in the schema (``constraints:``) or *learnt*: :func:`candidate_rules` lists every rule the
schema's endpoints allow, each site answers :func:`site_answers` (one bool per candidate: does any of its rows
violate it? no value leaves the site) and :func:`learn_rules` keeps the candidates that hold at every site.
A row violates a rule only through its own values, so a rule holds on the pooled rows exactly when it holds at
every site: the learnt rules equal the rules of the pooled data (tested).

:func:`enforce` repairs sampled rows so that every rule holds (the generators' ``sample`` calls it through
:meth:`fedsynth.generators.base.BaseGenerator._finish`, so it holds for every generator and strategy):

1. time rules: where ``shorter``'s time exceeds ``longer``'s, both are set to their geometric mean (they meet
   in the middle on the log-time scale; each endpoint keeps its own event). A row that breaks the rule has two
   times of which at least one is wrong, and the model does not say which; moving both halfway changes each
   marginal by half as much as moving one of them all the way, and ends where 79% of real MDS rows are (LFS
   equal to OS). Measured on the default centralized fits (``benchmarks/bench_endpoint_rules.py``, sum over
   both endpoints of the KS statistic and the KM sup distance against the training rows, lower is closer):
   Bayesian network 0.176 (capping LFS at OS 0.162, raising OS to LFS 0.195), VAE-BGM 0.154 (capping 0.216,
   raising 0.156); summed over both 0.330 against 0.378 and 0.351 — each one-sided repair is the worst for one
   of the two generators. Later passes (only chains of time
   rules such as A <= B <= C need them) cap the shorter time at the longer one, which settles in a finite number
   of passes;
2. event rules: a missing implied event is set to 1 (``source``'s event stands: it is the endpoint the rule
   reads from; a death ends LFS as an event).

Rules are applied until none changes a value.

A rule says nothing about a row where one of its values is missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

RULE_TYPES = ("time_order", "event_implies")


class SurvivalEndpoint(Protocol):
    """What a rule reads of an endpoint (:class:`fedsynth.cohort.schema.SurvivalEndpoint`; the schema imports
    this module, not the other way round)."""

    @property
    def name(self) -> str: ...

    @property
    def duration_col(self) -> str: ...

    @property
    def event_col(self) -> str: ...

    @property
    def time_unit(self) -> str: ...


class HasEndpoints(Protocol):
    """A schema, as far as candidate rules are concerned."""

    @property
    def endpoints(self) -> Sequence[SurvivalEndpoint]: ...


@dataclass(frozen=True)
class TimeOrder:
    """``shorter``'s duration never exceeds ``longer``'s (rows where both are known)."""

    shorter: SurvivalEndpoint
    longer: SurvivalEndpoint

    @property
    def endpoints(self) -> tuple[SurvivalEndpoint, SurvivalEndpoint]:
        return (self.shorter, self.longer)

    def describe(self) -> str:
        return f"{self.shorter.duration_col} <= {self.longer.duration_col}"

    def to_dict(self) -> dict[str, str]:
        return {"type": "time_order", "shorter": self.shorter.name, "longer": self.longer.name}

    def violations(self, data: pd.DataFrame) -> np.ndarray:
        """Boolean mask of the rows of ``data`` that break the rule (False where a value is missing)."""
        a, b = _values(data, self.shorter.duration_col), _values(data, self.longer.duration_col)
        if a is None or b is None:
            return np.zeros(len(data), dtype=bool)
        with np.errstate(invalid="ignore"):
            return np.asarray(a > b, dtype=bool)  # NaN compares False


@dataclass(frozen=True)
class EventImplies:
    """An event in ``source`` means an event in ``implied`` (rows where both are known)."""

    source: SurvivalEndpoint
    implied: SurvivalEndpoint

    @property
    def endpoints(self) -> tuple[SurvivalEndpoint, SurvivalEndpoint]:
        return (self.source, self.implied)

    def describe(self) -> str:
        return f"{self.source.event_col} = 1 => {self.implied.event_col} = 1"

    def to_dict(self) -> dict[str, str]:
        return {"type": "event_implies", "source": self.source.name, "implied": self.implied.name}

    def violations(self, data: pd.DataFrame) -> np.ndarray:
        """Boolean mask of the rows of ``data`` that break the rule (False where a value is missing)."""
        a, b = _values(data, self.source.event_col), _values(data, self.implied.event_col)
        if a is None or b is None:
            return np.zeros(len(data), dtype=bool)
        return np.asarray((a == 1) & (b == 0), dtype=bool)


EndpointRule = TimeOrder | EventImplies


def _values(data: pd.DataFrame, col: str) -> np.ndarray | None:
    if col not in data.columns:
        return None
    return np.asarray(pd.to_numeric(data[col], errors="coerce"), dtype=float)


def rule_from_dict(raw: Any, endpoints: Sequence[SurvivalEndpoint]) -> EndpointRule:
    """Parse one rule of a schema's ``constraints:`` list.

    ``{type: time_order, shorter: LFS, longer: OS}`` or ``{type: event_implies, source: OS, implied: LFS}``,
    endpoints named as in the schema's ``endpoints``.

    Raises
    ------
    ValueError
        With what is wrong and what is valid (the schema collects it into its one error).
    """
    keys = {"time_order": ("shorter", "longer"), "event_implies": ("source", "implied")}
    if not isinstance(raw, Mapping) or raw.get("type") not in keys:
        raise ValueError(
            "a rule is a mapping with 'type' time_order (keys shorter, longer) or event_implies (keys source, "
            "implied), e.g. {type: time_order, shorter: LFS, longer: OS}"
        )
    want = keys[str(raw["type"])]
    bad = set(raw) - {"type", *want}
    if bad or any(k not in raw for k in want):
        raise ValueError(f"a {raw['type']} rule takes exactly the keys type, {', '.join(want)}")
    by_name = {ep.name: ep for ep in endpoints}
    unknown = [str(raw[k]) for k in want if str(raw[k]) not in by_name]
    if unknown:
        raise ValueError(
            f"unknown endpoint(s) {unknown}; endpoints: {', '.join(by_name) or 'none declared'}"
        )
    a, b = (by_name[str(raw[k])] for k in want)
    if a == b:
        raise ValueError("a rule relates two different endpoints")
    return TimeOrder(a, b) if raw["type"] == "time_order" else EventImplies(a, b)


def tied(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether two times are equal, elementwise: arrays of one shape ``(n,)`` in, booleans of that shape out (to a
    relative 1e-9: times read from a file or scaled by one factor); False where either is missing."""
    return np.isclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=1e-9, atol=1e-12)


def duration_pairs(schema: HasEndpoints) -> list[tuple[str, str]]:
    """Every pair of distinct endpoint duration columns, ``(earlier, later)`` in the schema's endpoint order."""
    durations = list(dict.fromkeys(ep.duration_col for ep in schema.endpoints))
    return [(a, b) for i, a in enumerate(durations) for b in durations[i + 1:]]


def tie_pairs(schema: HasEndpoints) -> list[tuple[str, str]]:
    """:func:`duration_pairs` as ``(the time a tie overwrites, the time it copies)``: a time-order rule's shorter
    duration takes its longer one's (so the rule keeps holding); without a rule between them, the later endpoint in
    the schema's order takes the earlier's."""
    rules = [r for r in getattr(schema, "constraints", ()) if isinstance(r, TimeOrder)]
    out = []
    for a, b in duration_pairs(schema):
        rule = next((r for r in rules if {r.shorter.duration_col, r.longer.duration_col} == {a, b}), None)
        out.append((rule.shorter.duration_col, rule.longer.duration_col) if rule is not None else (b, a))
    return out


def retie(before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray],
          pairs: Sequence[tuple[str, str]]) -> dict[str, np.ndarray]:
    """``after`` with, for each pair ``(a, b)``, ``a``'s time set to ``b``'s in the rows where the two were equal in
    ``before`` (a tied row stays tied when its times are rescaled endpoint by endpoint).

    Parameters
    ----------
    before, after : dict of str to ndarray of shape (n,)
        Duration column -> times before and after a change (NaN: missing).
    pairs : sequence of (str, str)
        :func:`tie_pairs`; a pair whose durations are not in both acts on nothing.

    Returns
    -------
    dict of str to ndarray
        New arrays (the inputs are not changed).
    """
    out = {k: np.array(v, dtype=np.float64, copy=True) for k, v in after.items()}
    for a, b in pairs:
        if a in before and b in before and a in out and b in out:
            tie = tied(before[a], before[b])
            out[a][tie] = out[b][tie]
    return out


def candidate_rules(schema: HasEndpoints) -> list[EndpointRule]:
    """Every rule the schema's endpoints allow, in a fixed order (what each site is asked about).

    For each ordered pair of different endpoints: a :class:`TimeOrder` when both are measured in the same time
    unit, and an :class:`EventImplies`. Built from the declared endpoints only, never from column names.
    """
    out: list[EndpointRule] = []
    for a in schema.endpoints:
        for b in schema.endpoints:
            if a == b:
                continue
            if a.time_unit == b.time_unit:
                out.append(TimeOrder(a, b))
            out.append(EventImplies(a, b))
    return out


def rule_holds(data: pd.DataFrame, rule: EndpointRule) -> bool:
    """Whether no row of ``data`` breaks ``rule``: the one bool a site reports per candidate rule.

    True also when no row can be checked (a value missing in every row, or the site lacks a column): such a
    site has no row that contradicts the rule, exactly as those rows contribute nothing to the pooled check.
    """
    return not bool(rule.violations(data).any())


def site_answers(data: pd.DataFrame, candidates: Sequence[EndpointRule]) -> list[bool]:
    """A site's reply to the candidate rules: one bool per candidate, in order (no value leaves the site)."""
    return [rule_holds(data, r) for r in candidates]


def learn_rules(candidates: Sequence[EndpointRule], answers: Iterable[Sequence[bool]]) -> list[EndpointRule]:
    """The candidates that hold at every site.

    Parameters
    ----------
    candidates : sequence of rules
        What the sites were asked (:func:`candidate_rules`).
    answers : iterable of sequences of bool
        One reply per site (:func:`site_answers`), aligned with ``candidates``.

    Returns
    -------
    list of rules
        Equal to ``[r for r in candidates if rule_holds(pooled_rows, r)]``.

    Raises
    ------
    ValueError
        When a reply does not hold one bool per candidate, or there is no reply.
    """
    keep = np.ones(len(candidates), dtype=bool)
    n = 0
    for i, reply in enumerate(answers):
        if len(reply) != len(candidates):
            raise ValueError(f"site reply {i} holds {len(reply)} answers; expected {len(candidates)}, one per rule")
        keep &= np.asarray(reply, dtype=bool)
        n += 1
    if n == 0:
        raise ValueError("no site answered; rules are learnt from at least one site's answers")
    return [r for r, k in zip(candidates, keep) if k]


def violation_counts(data: pd.DataFrame, rules: Sequence[EndpointRule]) -> list[dict[str, Any]]:
    """Per rule: ``rule`` (text), ``type``, ``violations`` (rows breaking it) and ``checked`` (rows where all
    of its values are known) in ``data``."""
    out = []
    for r in rules:
        cols = [(ep.duration_col if isinstance(r, TimeOrder) else ep.event_col) for ep in r.endpoints]
        checked = int(data[cols].notna().all(axis=1).sum()) if all(c in data.columns for c in cols) else 0
        out.append({"rule": r.describe(), **r.to_dict(), "violations": int(r.violations(data).sum()),
                    "checked": checked})
    return out


def enforce(
    data: pd.DataFrame,
    rules: Sequence[EndpointRule],
    *,
    floors: Mapping[str, float] | None = None,
    max_passes: int = 10,
) -> pd.DataFrame:
    """A copy of ``data`` in which every row satisfies every rule (the repair is in the module docstring).

    Parameters
    ----------
    data : DataFrame
        Rows in the schema's canonical dtypes (durations and events float64, NaN = missing).
    rules : sequence of rules
        Rules whose columns ``data`` lacks are skipped.
    floors : mapping of str to float, optional
        Lowest allowed value per duration column (a generator's domain bound). A repaired time below the
        shorter endpoint's floor is set to the floor, in both columns (rows whose longer time lies under the
        shorter endpoint's lowest value, e.g. OS events at time zero).
    max_passes : int
        Passes over the rules before giving up (each pass only lowers times or raises events, so a consistent
        set of rules settles in at most as many passes as rules).

    Returns
    -------
    DataFrame
        Same index and columns; only the repaired cells change.

    Raises
    ------
    RuntimeError
        When the rules still disagree after ``max_passes`` (a contradictory rule set).
    """
    out = data.copy()
    if not rules or out.empty:
        return out
    times = [r for r in rules if isinstance(r, TimeOrder)]
    events = [r for r in rules if isinstance(r, EventImplies)]
    for n_pass in range(max_passes):
        changed = False
        for t in times:
            bad = t.violations(out)
            if bad.any():
                changed = True
                longer = out.loc[bad, t.longer.duration_col].to_numpy(dtype=float)
                shorter = out.loc[bad, t.shorter.duration_col].to_numpy(dtype=float)
                # First pass: meet in the middle (log scale); later passes (chains only): cap, which terminates.
                meet = np.sqrt(np.maximum(longer, 0.0) * shorter) if n_pass == 0 else longer
                floor = (floors or {}).get(t.shorter.duration_col)
                if floor is not None:
                    meet = np.maximum(meet, floor)
                out.loc[bad, t.longer.duration_col] = np.maximum(longer, meet)
                out.loc[bad, t.shorter.duration_col] = meet
        for e in events:
            bad = e.violations(out)
            if bad.any():
                changed = True
                out.loc[bad, e.implied.event_col] = 1.0
        if not changed:
            return out
    raise RuntimeError(f"endpoint rules still violated after {max_passes} passes; are they contradictory? "
                       + "; ".join(r.describe() for r in rules))
