"""Piecewise-exponential estimators on per-interval counts: events and person-time per level and interval, the
shape the sites' survival counts take (:mod:`fedsynth.generators.survival_strata`), so every estimate here reads sums
over sites and is the same federated as pooled.

- :func:`pwe_medians`, :func:`pwe_rmst`: a level's median and restricted mean survival time;
- :func:`follow_up_horizon`: the time by which most person-time is spent (an RMST's horizon);
- :func:`pooled_hazard`, :func:`hazard_ratios`: the pooled hazard and each level's observed over expected events
  under it (standardised event ratio);
- :func:`level_log_hazard_ratios`: each level's log hazard ratio against the rest of its stratum in a proportional-
  hazards model with its own baseline per interval (the count form of a univariate Cox model).

Sources: the piecewise-exponential estimator (Friedman, 1982, Ann. Statist. 10:101-113) and its Poisson form
(Laird & Olivier, 1981, JASA 76:231-240; Holford, 1980, Biometrics 36:299-305, for its equivalence with Cox's
partial likelihood as the intervals narrow).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["follow_up_horizon", "hazard_ratios", "level_log_hazard_ratios", "pooled_hazard", "pwe_medians",
           "pwe_rmst"]


def pwe_medians(events: np.ndarray, person_time: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Median survival per row of a piecewise-exponential model (hazard ``events / person-time`` per interval).

    Parameters
    ----------
    events, person_time : ndarray of shape (n_levels, n_intervals)
    edges : ndarray of shape (n_intervals + 1,)

    Returns
    -------
    ndarray of shape (n_levels,)
        The time where the cumulative hazard reaches ``ln 2``; NaN where it never does within the last edge.
    """
    ev = np.atleast_2d(np.asarray(events, dtype=np.float64))
    pt = np.atleast_2d(np.asarray(person_time, dtype=np.float64))
    hazard = np.divide(ev, pt, out=np.zeros_like(ev), where=pt > 0)
    width = np.diff(np.asarray(edges, dtype=np.float64))
    cum = np.concatenate([np.zeros((len(ev), 1)), np.cumsum(hazard * width, axis=1)], axis=1)
    out = np.full(len(ev), np.nan)
    target = math.log(2.0)
    for i in range(len(ev)):
        j = int(np.searchsorted(cum[i, 1:], target, side="left"))
        if j < len(width) and hazard[i, j] > 0:
            out[i] = edges[j] + (target - cum[i, j]) / hazard[i, j]
    return out


def pwe_rmst(events: np.ndarray, person_time: np.ndarray, edges: np.ndarray, horizon: float) -> np.ndarray:
    """Restricted mean survival time up to ``horizon`` per row of a piecewise-exponential model (hazard
    ``events / person-time`` per interval): the area under its survival curve ``S(t) = exp(-H(t))``.

    Each interval ``[a, b)`` cut at the horizon adds ``S(a) (1 - exp(-h w)) / h`` (``S(a) w`` where ``h = 0``),
    with ``w = min(b, horizon) - a``.

    Parameters
    ----------
    events, person_time : ndarray of shape (n_levels, n_intervals)
    edges : ndarray of shape (n_intervals + 1,)
    horizon : float
        Upper limit of the area (in the durations' unit); past the last edge the curve is held flat.

    Returns
    -------
    ndarray of shape (n_levels,)
        The area from 0 (the curve is 1 before the first edge) to ``horizon``.
    """
    ev = np.atleast_2d(np.asarray(events, dtype=np.float64))
    pt = np.atleast_2d(np.asarray(person_time, dtype=np.float64))
    hazard = np.divide(ev, pt, out=np.zeros_like(ev), where=pt > 0)
    e = np.asarray(edges, dtype=np.float64)
    horizon = max(0.0, float(horizon))
    width = np.clip(np.minimum(e[1:], horizon) - e[:-1], 0.0, None)
    hw = hazard * width
    start = np.exp(-np.concatenate([np.zeros((len(ev), 1)), np.cumsum(hw, axis=1)[:, :-1]], axis=1))
    area = np.where(hazard > 0, start * -np.expm1(-hw) / np.where(hazard > 0, hazard, 1.0), start * width)
    tail = max(0.0, float(horizon) - float(e[-1])) * np.exp(-hw.sum(axis=1))
    lead = min(max(float(e[0]), 0.0), float(horizon))  # before the first edge every row is alive
    out: np.ndarray = area.sum(axis=1) + tail + lead
    return out


def follow_up_horizon(person_time: np.ndarray, edges: np.ndarray, share: float = 0.9) -> float:
    """The edge by which ``share`` of all person-time is spent (from the summed counts: the follow-up horizon of
    an RMST, near the evaluator's real 90th percentile of follow-up).

    Parameters
    ----------
    person_time : ndarray of shape (n_levels, n_intervals)
        Any stratum's person-time (its levels together hold every row's).
    edges : ndarray of shape (n_intervals + 1,)
    share : float, default 0.9

    Returns
    -------
    float
        The first edge whose cumulative person-time reaches ``share`` of the total (the last edge if none).
    """
    pt = np.atleast_2d(np.asarray(person_time, dtype=np.float64)).sum(axis=0)
    cum = np.cumsum(pt)
    if cum[-1] <= 0:
        return float(edges[-1])
    j = int(np.searchsorted(cum, share * cum[-1], side="left"))
    return float(edges[min(j + 1, len(edges) - 1)])


def pooled_hazard(events: np.ndarray, person_time: np.ndarray) -> np.ndarray:
    """The piecewise-exponential hazard of all levels together: ``sum events / sum person-time`` per interval.

    Parameters
    ----------
    events, person_time : ndarray of shape (n_levels, n_intervals)

    Returns
    -------
    ndarray of shape (n_intervals,)
        Events per unit of person-time (0 where an interval has no person-time).
    """
    d = np.atleast_2d(np.asarray(events, dtype=np.float64)).sum(axis=0)
    t = np.atleast_2d(np.asarray(person_time, dtype=np.float64)).sum(axis=0)
    out: np.ndarray = np.divide(d, t, out=np.zeros_like(d), where=t > 0)
    return out


def hazard_ratios(events: np.ndarray, person_time: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """Each level's observed over expected events under a baseline piecewise-exponential hazard (its standardised
    event ratio, the maximum-likelihood hazard ratio of a Poisson model with the level as its only covariate and
    the baseline's expected events as offset).

    Parameters
    ----------
    events, person_time : ndarray of shape (n_levels, n_intervals)
    baseline : ndarray of shape (n_intervals,)
        Hazard per interval (:func:`pooled_hazard` of the real counts).

    Returns
    -------
    ndarray of shape (n_levels,)
        ``sum_j events[l, j] / sum_j person_time[l, j] * baseline[j]``; NaN where a level expects no event.
    """
    ev = np.atleast_2d(np.asarray(events, dtype=np.float64)).sum(axis=1)
    expected = np.atleast_2d(np.asarray(person_time, dtype=np.float64)) @ np.asarray(baseline, dtype=np.float64)
    out: np.ndarray = np.divide(ev, expected, out=np.full_like(ev, np.nan), where=expected > 0)
    return out


def level_log_hazard_ratios(events: np.ndarray, person_time: np.ndarray, *, bound: float = 10.0) -> np.ndarray:
    """Each level's log hazard ratio against the rest of its stratum (the other levels together), by maximum
    likelihood in a piecewise-exponential proportional-hazards model with a baseline hazard per interval.

    For level ``l`` the model is ``hazard_j = exp(a_j + b [row in l])``; profiling out the baselines
    (``exp(a_j) = D_j / (R_j + e^b L_j)``, ``D_j`` all events of interval ``j``, ``L_j`` and ``R_j`` the level's and the
    rest's person-time) leaves one score equation in ``b``, ``sum_j d_lj = sum_j D_j e^b L_j / (R_j + e^b L_j)``,
    decreasing in ``b`` and solved by Brent's method (scipy ``brentq``). With one interval ``b`` is
    ``log((d_l / L) / (d_r / R))``; as the intervals narrow it nears the Cox estimate of the level's indicator (Holford,
    1980; Laird & Olivier, 1981), which the evaluator's univariate Cox effects read.

    Parameters
    ----------
    events, person_time : ndarray of shape (n_levels, n_intervals)
        Every row of the stratum with a known level counts in one level.
    bound : float, default 10
        ``|b|`` searched up to this.

    Returns
    -------
    ndarray of shape (n_levels,)
        ``b`` per level; NaN where the level or the rest has no event or no person-time (no finite estimate), or
        where the root lies beyond ``+/- bound``.
    """
    from scipy.optimize import brentq

    ev = np.atleast_2d(np.asarray(events, dtype=np.float64))
    pt = np.atleast_2d(np.asarray(person_time, dtype=np.float64))
    d_all, t_all = ev.sum(axis=0), pt.sum(axis=0)
    out = np.full(len(ev), np.nan)
    for i in range(len(ev)):
        d_l, t_l = ev[i], pt[i]
        t_r, d_r = t_all - t_l, d_all - d_l
        if d_l.sum() <= 0 or d_r.sum() <= 0 or t_l.sum() <= 0 or t_r.sum() <= 0:
            continue

        def score(b: float, d_l: np.ndarray = d_l, t_l: np.ndarray = t_l, t_r: np.ndarray = t_r) -> float:
            share = np.exp(b) * t_l
            den = t_r + share
            return float(d_l.sum() - np.sum(np.divide(d_all * share, den, out=np.zeros_like(den), where=den > 0)))

        lo, hi = -float(bound), float(bound)
        if score(lo) * score(hi) < 0:
            out[i] = brentq(score, lo, hi, xtol=1e-10)
    return out
