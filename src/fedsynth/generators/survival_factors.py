"""The fitted survival calibration: per-level log factors on sampled durations, applied to rows and stating their
limits (:class:`SurvivalCalibration`, fitted by :func:`fedsynth.generators.survival_calibration.
fit_survival_calibration`, whose module docstring gives the method), and the cap of a shorter endpoint at its
longer one (:func:`cap_time_order`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.cohort.constraints import TimeOrder, enforce, retie, tie_pairs
from fedsynth.cohort.schema import TableSchema
from fedsynth.encoding.domain import Domain
from fedsynth.generators.survival_strata import CalibrationStratum, stratum_codes

__all__ = ["SurvivalCalibration", "cap_time_order", "order_times"]


@dataclass
class SurvivalCalibration:
    """Fitted per-level log factors on sampled durations (:func:`fit_survival_calibration`).

    Attributes
    ----------
    strata : tuple of CalibrationStratum
        The strata kept (genomic ones past the mutation share).
    log_factors : dict of str to ndarray
        Column -> ``(n_levels,)`` log factors (0 for a level without one), shared by every endpoint without factors
        of its own.
    intercept : float
        Log factor of every row (the part common to a stratum's levels).
    sweeps : int
        Raking sweeps run.
    max_log_error : float
        The largest ``|log error|`` over the calibrated levels (and, with ``target="hazard_ratio"``, the fitted
        intercepts), read on the final factors after the last sweep.
    endpoint_factors : dict of str to dict, optional
        Endpoint name -> its own column -> log factors (``endpoints="each"``); an endpoint not in it takes
        ``log_factors``.
    endpoint_intercepts : dict of str to float, optional
        Endpoint name -> its own intercept (with ``endpoint_factors``).
    keep_ties : bool
        With a factor per endpoint, a row whose two endpoint times were equal stays so (:func:`~fedsynth.cohort.
        constraints.retie` along :func:`~fedsynth.cohort.constraints.tie_pairs`).
    target : str
        What each level matched (:data:`TARGETS`; ``""`` for a calibration saved before it was recorded).
    tol : float
        The fit's tolerance on ``|log error|``: below it on the final factors, the fit converged.
    max_log_factor : float
        The bound on each factor's ``|log factor|`` (intercepts included).
    worst_level : str
        Where the largest ``|log error|`` on the final factors was: ``"ENDPOINT: COLUMN=LABEL"`` (``"ENDPOINT: every
        row"`` for an intercept's; the endpoint reads ``"every endpoint"`` when one factor moves them all).
    worst_log_error : float
        That error with its sign: the log of the factor the level's times lacked (> 0: its survival too short).
    last_errors : dict of str to dict
        Per factor group (endpoint name, or ``"every endpoint"``), column -> each level's signed log error (NaN: no
        target) read on the final factors: the factor its times still lack. Empty for a calibration saved before it
        was recorded; one saved before 2026-12-02 holds the errors each stratum read before its step in the last
        pass, later moved by the other strata's steps.
    last_common_errors : dict of str to float
        Per factor group, the mean over strata of the error every row shares on the final factors (what would move
        the intercept).
    unfitted_intercepts : tuple of str
        Endpoints whose intercept was left at 0 (capped at another endpoint, ``capped_intercepts=False``): their
        overall event rate is the model's own.
    keep_order : bool
        With a factor per endpoint, a row whose shorter time was strictly under its longer one stays so: the ratio
        of the two moves on the odds scale instead of being scaled and capped to a tie (:func:`cap_time_order` with
        ``before``). False for a calibration saved before it was recorded.
    """

    strata: tuple[CalibrationStratum, ...]
    log_factors: dict[str, np.ndarray]
    intercept: float = 0.0
    sweeps: int = 0
    max_log_error: float = float("nan")
    endpoint_factors: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    endpoint_intercepts: dict[str, float] = field(default_factory=dict)
    keep_ties: bool = False
    target: str = "median"
    tol: float = 0.01
    max_log_factor: float = math.log(4.0)
    worst_level: str = ""
    worst_log_error: float = float("nan")
    last_errors: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    last_common_errors: dict[str, float] = field(default_factory=dict)
    unfitted_intercepts: tuple[str, ...] = ()
    keep_order: bool = False

    @property
    def converged(self) -> bool:
        """Whether every calibrated level was within ``tol`` of its target on the final factors."""
        return bool(np.isfinite(self.max_log_error) and self.max_log_error < self.tol)

    def limits(self) -> list[dict[str, Any]]:
        """Per endpoint (``"every endpoint"`` when one factor moves them all), the factors that reached
        ``max_log_factor`` while their error still pointed past it: ``{"endpoint", "lengthened", "shortened"}``, each
        a list of ``"every row"`` (the intercept) and levels as ``COLUMN=LABEL``; only endpoints with at least one.
        A factor at its upper bound whose level's times still lacked more than ``tol`` on the final factors is
        "lengthened" (its survival is likely still too short); at its lower bound, "shortened". A factor at its
        bound that the intercept made up for (its last error within ``tol`` or the other way) is not listed. A
        calibration saved before the last errors were recorded lists every factor at its bound."""
        groups = ([(e, f, self.endpoint_intercepts.get(e, 0.0)) for e, f in self.endpoint_factors.items()]
                  if self.endpoint_factors else [("every endpoint", self.log_factors, self.intercept)])
        out = []
        for name, factors, intercept in groups:
            errors, common = self.last_errors.get(name), self.last_common_errors.get(name)
            named: list[tuple[str, float, float]] = [("every row", intercept, np.nan if common is None else common)]
            for st in self.strata:
                errs = errors.get(st.column) if errors is not None else None
                for j, (label, b) in enumerate(zip(st.labels, factors.get(st.column, ()), strict=False)):
                    named.append((f"{st.column}={label}", b, np.nan if errs is None or j >= len(errs) else errs[j]))
            up = [n for n, b, err in named if self._past_bound(b, err, 1, errors is not None)]
            down = [n for n, b, err in named if self._past_bound(b, err, -1, errors is not None)]
            if up or down:
                out.append({"endpoint": name, "lengthened": up, "shortened": down})
        return out

    def _past_bound(self, log_factor: float, error: float, sign: int, known: bool) -> bool:
        """Whether a factor sits at its bound on side ``sign`` with its level's last error still pointing past it
        (without recorded errors: at its bound)."""
        at_bound = sign * log_factor >= self.max_log_factor - 1e-9
        return bool(at_bound and (not known or (np.isfinite(error) and sign * error > self.tol)))

    def notes(self) -> list[str]:
        """What someone drawing from the model should know, as facts in plain words (no advice: the caller knows
        whether a reference is at hand): a fit that stopped short of its tolerance (where, which way and by about
        what factor of time, as read after its last pass on the model's own draw), factors at their bound whose
        levels still pointed past it (:meth:`limits`) and each endpoint whose intercept was left at 0; empty when
        none. With ``target="hazard_ratio"`` a level's error is relative to the rest of its stratum, and the notes
        say so."""
        out = []
        relative = " relative to the rest of its stratum" if self.target == "hazard_ratio" else ""
        if not self.converged and np.isfinite(self.max_log_error):
            endpoint, _, level = self.worst_level.partition(": ")
            subject = (f"{endpoint} in {level}" if endpoint != "every endpoint" else f"survival in {level}") if level \
                else "one of its levels"
            f = math.exp(self.max_log_error)
            way = ("" if not np.isfinite(self.worst_log_error) else
                   f" was still too short{relative} (its times lacked a factor of about {f:.2f})"
                   if self.worst_log_error > 0 else
                   f" was still too long{relative} (its times were about {f:.2f} times too long)")
            out.append(f"The model's survival calibration stopped after {self.sweeps} passes without matching every "
                       f"prognostic level: after its last pass, read on the model's own draw, {subject}"
                       f"{way or f' was still off by about a factor of {f:.2f} in time'}; other levels by less.")
        bound = math.exp(self.max_log_factor)
        for lim in self.limits():
            what = "Survival" if lim["endpoint"] == "every endpoint" else lim["endpoint"]
            for key, word, op, likely in (("lengthened", "lengthened", "x", "too short"),
                                          ("shortened", "shortened", "/", "too long")):
                names = list(lim[key])
                if not names:
                    continue
                levels = [n for n in names if n != "every row"]
                shown = ", ".join(levels[:6]) + (f" and {len(levels) - 6} more" if len(levels) > 6 else "")
                if len(levels) < len(names):  # the intercept too: every row, and the levels on top of it
                    shown = "every row" + (f", and more so for {shown}" if shown else "")
                rel = relative if levels and len(levels) == len(names) else ""
                out.append(f"{what} is likely still {likely}{rel} for {shown}: the model's survival calibration "
                           f"already {word} those times by the most it allows ({op}{bound:.3g}).")
        for name in self.unfitted_intercepts:
            out.append(f"{name}'s overall event rate is the model's own: its times are capped at another endpoint's, "
                       f"so the survival calibration matched only its levels{relative}.")
        return out

    def row_log_factors(self, data: pd.DataFrame, endpoint: str | None = None) -> np.ndarray:
        """Each row's log factor: the sum of its levels' (shape ``(n_rows,)``; a missing level adds 0), for
        ``endpoint``'s duration (its own factors where it has some, else the shared ones)."""
        own = endpoint is not None and endpoint in self.endpoint_factors
        factors = self.endpoint_factors[endpoint] if own and endpoint is not None else self.log_factors
        total = np.full(len(data), self.endpoint_intercepts.get(endpoint, 0.0) if own and endpoint is not None
                        else self.intercept)
        for st in self.strata:
            if st.column not in data.columns:
                continue
            codes = stratum_codes(data, st)
            b = factors[st.column]
            total += np.where(codes >= 0, b[np.maximum(codes, 0)], 0.0)
        return total

    def apply(self, data: pd.DataFrame, schema: TableSchema, domain: Domain) -> pd.DataFrame:
        """``data`` with every endpoint's duration multiplied by the row's factor, clipped to the domain's bounds.

        With one factor for all endpoints of a row a monotone clip keeps every time-order rule that held; with a
        factor per endpoint, a shorter endpoint's time is capped at its longer one's (:func:`cap_time_order`), or
        with ``keep_order`` a row whose shorter time was under its longer one has their ratio moved on the odds
        scale instead (then clipped to the domain again); with ``keep_ties`` a tied row stays tied.
        """
        logs = {ep.name: self.row_log_factors(data, ep.name) for ep in schema.endpoints}
        return _scaled(data, schema, domain, logs, keep_ties=self.keep_ties, keep_order=self.keep_order)

    def to_dict(self) -> dict[str, Any]:
        return {"strata": [st.to_dict() for st in self.strata],
                "log_factors": {k: v.tolist() for k, v in self.log_factors.items()}, "intercept": self.intercept,
                "sweeps": self.sweeps, "max_log_error": self.max_log_error,
                "endpoint_factors": {e: {k: v.tolist() for k, v in f.items()}
                                     for e, f in self.endpoint_factors.items()},
                "endpoint_intercepts": dict(self.endpoint_intercepts), "keep_ties": self.keep_ties,
                "target": self.target, "tol": self.tol, "max_log_factor": self.max_log_factor,
                "worst_level": self.worst_level, "worst_log_error": self.worst_log_error,
                "last_errors": {g: {k: [None if not np.isfinite(x) else float(x) for x in v] for k, v in e.items()}
                                for g, e in self.last_errors.items()},
                "last_common_errors": dict(self.last_common_errors),
                "unfitted_intercepts": list(self.unfitted_intercepts), "keep_order": self.keep_order}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SurvivalCalibration:
        return cls(tuple(CalibrationStratum.from_dict(s) for s in d["strata"]),
                   {k: np.asarray(v, dtype=np.float64) for k, v in d["log_factors"].items()},
                   float(d.get("intercept", 0.0)), int(d.get("sweeps", 0)), float(d.get("max_log_error", float("nan"))),
                   {str(e): {k: np.asarray(v, dtype=np.float64) for k, v in f.items()}
                    for e, f in d.get("endpoint_factors", {}).items()},
                   {str(e): float(v) for e, v in d.get("endpoint_intercepts", {}).items()},
                   bool(d.get("keep_ties", False)), str(d.get("target", "")), float(d.get("tol", 0.01)),
                   float(d.get("max_log_factor", math.log(4.0))), str(d.get("worst_level", "")),
                   float(d.get("worst_log_error", float("nan"))),
                   {str(g): {k: np.array([np.nan if x is None else x for x in v], dtype=np.float64)
                             for k, v in e.items()} for g, e in d.get("last_errors", {}).items()},
                   {str(g): float(v) for g, v in d.get("last_common_errors", {}).items()},
                   tuple(str(e) for e in d.get("unfitted_intercepts", ())), bool(d.get("keep_order", False)))


def cap_time_order(times: Mapping[str, np.ndarray], rules: Sequence[Any],
                   before: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Times with each time-order rule's shorter endpoint capped at its longer one (``min``), passes until none
    moves (at most one per rule: a chain ``A <= B <= C`` settles from its end).

    Parameters
    ----------
    times : dict of str to ndarray
        Duration column -> times (NaN: missing, left as it is).
    rules : sequence
        The schema's constraints; only :class:`~fedsynth.cohort.constraints.TimeOrder` ones act.
    before : dict of str to ndarray, optional
        The times before they were rescaled (same keys and shapes). Given, a row whose shorter time ``a`` was
        strictly under its longer one ``b`` stays so: its ratio ``r = a / b`` (in (0, 1)) moves on the odds scale,
        ``r' / (1 - r') = g r / (1 - r)`` with ``g`` the ratio of the two times' factors (``a'`` and ``b'`` the
        rescaled times, ``g = (a' / a) / (b' / b)``), so ``a'' = a' b' / (b' (1 - r) + a')``: the plain rescaling
        while ``a' / b'`` (``g r``) is small, never reaching ``b'``, monotone in ``g``, equal to ``a'`` when both
        factors are equal. Rules are taken longer times first (along a chain ``A <= B <= C``, ``B`` moves against
        ``C`` before ``A`` against ``B``'s new time; a rule the chain implies, ``A <= C``, is not used for it), and
        each shorter time moves once, against its nearest longer one; a rule still broken after that, and rows that
        were tied or had no order, are capped as without it.

    Returns
    -------
    dict of str to ndarray
        New arrays (the inputs are not changed).
    """
    out = {k: np.array(v, dtype=np.float64, copy=True) for k, v in times.items()}
    order = [r for r in rules if isinstance(r, TimeOrder) and r.shorter.duration_col in out
             and r.longer.duration_col in out]
    if before is not None:
        for r in _longer_first(order):
            a0, b0 = before.get(r.shorter.duration_col), before.get(r.longer.duration_col)
            if a0 is None or b0 is None:
                continue
            a, b = out[r.shorter.duration_col], out[r.longer.duration_col]
            with np.errstate(invalid="ignore", divide="ignore"):
                under = (a0 < b0) & (b0 > 0) & (a0 >= 0) & np.isfinite(a) & np.isfinite(b) & (b > 0)
                ratio = np.where(under, a0 / np.where(under, b0, 1.0), 0.0)
                a[under] = a[under] * b[under] / (b[under] * (1.0 - ratio[under]) + a[under])
    for _ in range(len(order)):
        moved = False
        for r in order:
            a, b = out[r.shorter.duration_col], out[r.longer.duration_col]
            with np.errstate(invalid="ignore"):
                over = a > b
            if over.any():
                a[over] = b[over]
                moved = True
        if not moved:
            break
    return out


def _longer_first(rules: Sequence[TimeOrder]) -> list[TimeOrder]:
    """One rule per shorter endpoint, its nearest longer one (``A <= C`` beside ``A <= B`` and ``B <= C`` is left
    out), ordered so that a longer endpoint's own rule comes first (``B <= C`` before ``A <= B``;
    :class:`graphlib.TopologicalSorter`); rules in a cycle keep their given order."""
    pairs = {(r.shorter.duration_col, r.longer.duration_col) for r in rules}
    nearest: dict[str, TimeOrder] = {}
    for r in rules:
        a, b = r.shorter.duration_col, r.longer.duration_col
        implied = any((a, m) in pairs and (m, b) in pairs for m in {p[1] for p in pairs} - {b})
        if not implied:
            nearest.setdefault(a, r)
    try:
        order = list(TopologicalSorter({a: {r.longer.duration_col} for a, r in nearest.items()}).static_order())
    except CycleError:
        return list(nearest.values())
    return [nearest[c] for c in order if c in nearest]


def order_times(before: Mapping[str, np.ndarray], scaled: Mapping[str, np.ndarray], schema: TableSchema,
                bounds: Mapping[str, tuple[float, float]], *, keep_order: bool = False,
                keep_ties: bool = False) -> dict[str, np.ndarray]:
    """Rescaled endpoint times put back under the schema's time-order rules, as the calibration draws them (its fit
    reads them the same way): each shorter time capped at its longer one (:func:`cap_time_order`), or with
    ``keep_order`` a row whose shorter time was under its longer one in ``before`` keeps it so (the odds step, then
    clipped to ``bounds`` and capped again); with ``keep_ties`` rows tied in ``before`` tied again
    (:func:`~fedsynth.cohort.constraints.retie`).

    Parameters
    ----------
    before, scaled : dict of str to ndarray of shape (n,)
        Duration column -> times before and after the factors (``scaled`` already clipped to ``bounds``).
    schema : TableSchema
        Its constraints and endpoints (the rules and the tie pairs).
    bounds : dict of str to (float, float)
        Duration column -> the domain's (lower, upper) bounds; a column without one is not clipped.

    Returns
    -------
    dict of str to ndarray
        New arrays (the inputs are not changed).
    """
    out = cap_time_order(scaled, schema.constraints, before if keep_order else None)
    if keep_order:  # a time moved on the odds scale may fall under its domain's lower bound: clipped, capped again
        out = cap_time_order({c: np.clip(v, *bounds[c]) if c in bounds else v for c, v in out.items()},
                             schema.constraints)
    if keep_ties:
        out = retie(before, out, tie_pairs(schema))
    return out


def _scaled(data: pd.DataFrame, schema: TableSchema, domain: Domain,
            log_factor: Mapping[str, np.ndarray], *, keep_ties: bool = False, keep_order: bool = False) -> pd.DataFrame:
    out = data.copy()
    times: dict[str, np.ndarray] = {}
    before: dict[str, np.ndarray] = {}
    for ep in schema.endpoints:
        if ep.duration_col not in out.columns:
            continue
        v = pd.to_numeric(out[ep.duration_col], errors="coerce").to_numpy(dtype=np.float64)
        before[ep.duration_col] = v
        v = v * np.exp(log_factor[ep.name])
        if ep.duration_col in domain.columns:
            v = np.clip(v, domain[ep.duration_col].lower, domain[ep.duration_col].upper)
        times[ep.duration_col] = v
    bounds = {c: (domain[c].lower, domain[c].upper) for c in times if c in domain.columns}
    times = order_times(before, times, schema, bounds, keep_order=keep_order, keep_ties=keep_ties)
    for col, v in times.items():
        out[col] = v
    # Durations of different endpoints may have different domain bounds, so a clip can reorder two equal times
    # at a bound: the schema's endpoint rules are enforced again (as every generator's _finish does).
    floors = {ep.duration_col: domain[ep.duration_col].lower for ep in schema.endpoints
              if ep.duration_col in domain.columns}
    return enforce(out, schema.constraints, floors=floors)
