"""Strict survival figures per endpoint and stratum, the survival-effect fidelity, and endpoint-rule violations.

CSF and GSF ask whether prognostic factors keep their *direction*; a synthetic control arm needs more: the
survival of each subgroup a user samples, and the size of each effect. This module measures that, beside
CSF/GSF (whose definitions and values are unchanged).

Figures
-------
Per endpoint, for all patients and for each group of each stratum (:mod:`fedsynth.evaluation.strata`; a group
needs >= 10 real rows with the endpoint known), with Kaplan-Meier curves of the real rows and of the *whole*
synthetic table (point estimates: a larger table only makes them less noisy):

- **median error** ``|m_syn - m_real| / m_real``; the median is the first time the KM curve is <= 1/2
  (lifelines' ``median_survival_time_``). Undefined when the real curve never reaches 1/2; 1 when only the
  synthetic one never does;
- **RMST error** ``|r_syn - r_real| / r_real``, with ``r`` the restricted mean survival time (area under the KM
  curve) up to the horizon ``tau`` = the real 90th percentile of the endpoint's follow-up (all patients; the
  same horizon as CSF's curve similarity, so every group of an endpoint is cut at the same time);
- **KM distance** ``sup_{0 <= t <= tau} |S_real(t) - S_syn(t)|`` (exact: both curves are steps, so the
  supremum is reached at 0 or at an event time of either curve).

For each covariate with a significant univariate Cox effect in the real data (the same models and choice as
CSF/GSF: numeric columns as they are, one indicator per categorical level, genes mutated in >= 2%; BH q < 0.05
within clinical variables and within genes over all endpoints), fitted again on the synthetic table and read **at
the real data's size** ``n`` (so sample size neither helps nor hurts):

- the synthetic fit uses up to ``EFFECT_ROWS_FACTOR * n`` synthetic rows (a sample without replacement when the
  table is larger, the whole table otherwise), and its Wald standard error is rescaled to the real fit's size,
  ``se_n = se_m * sqrt(m / n)`` with ``m`` and ``n`` the rows the synthetic and the real fit used (the Wald SE of
  a Cox coefficient shrinks as one over the square root of the rows drawn from one distribution, Tsiatis, 1981,
  Ann. Statist. 9:93-108; the penalty, scaled by the rows, keeps that exact). ``z = beta_syn / se_n`` is then what
  a synthetic sample of the real data's size would show, with less of one draw's chance: a draw of ``m`` rows
  scatters ``z`` by ``sqrt(n / m)`` around it, so with ``m = n`` (a synthetic table of the real size, as a run's
  snapshot is by default) an effect with real ``|z|`` near 1.96 is lost half the time even by a generator that
  reproduced it exactly; ``m = 10 n`` narrows the scatter to 0.32 (a borderline effect is still lost about half
  the time; one at ``|z| = 2.5`` almost never). A smaller table (``m < n``) is read at the real size too, with a
  wider scatter. For a rare level the rescaled SE is the large-sample one, somewhat narrower than a real
  ``n``-row fit would give;
- **log-HR difference** ``beta_syn - beta_real``;
- **CI covers**: whether the synthetic Wald 95% interval at the real size ``beta_syn +/- 1.96 se_n`` contains
  ``beta_real``;
- **effect lost**: the synthetic effect is not significant at the real size (Wald p >= 0.05, from ``z``) or has
  the other sign.
- **size ratio** ``beta_syn / beta_real`` and **SE ratio** ``se_n / se_real``: the two reasons ``z`` can fall,
  since ``z_syn / z_real = size ratio / SE ratio``. A size ratio under 1 is an effect the model shrank; an SE
  ratio above 1 is a table that holds less information on the covariate at the real size than the real data (for
  a level: fewer of its rows, or fewer events among them), so an effect can be lost at its full size. Both are
  given with each lost effect's flag ("size ratio 0.81, SE ratio 1.02").

``counts.expected_lost_by_chance`` is how many effects a generator that reproduced every real effect exactly
would still lose to the synthetic rows' sampling noise alone: ``sum Phi((1.96 - |z_real|) * sqrt(m / n))``
(:func:`expected_lost_by_chance`; with ``m = n`` about what a fresh real sample of the same size would lose).
``counts.expected_lost_population`` is how many a generator faithful to the patients' population rather than to
these patients would lose: ``sum Phi((1.96 - |z_real|) / sqrt(1 + n / m))`` (:func:`expected_lost_population`;
the real estimate's own sampling error counts too and does not shrink with ``m``: an effect at real p = 0.01 is
lost 27% of the time at ``m = 100 n``, against about 0% by a generator reproducing it exactly).

Survival-effect fidelity
------------------------
One figure in [0, 1], 1 for a perfect copy of the real data::

    q_group  = 1 - mean(min(1, median error), min(1, RMST error), KM distance)   (undefined terms left out;
                                                                                 0 for a group the synthetic
                                                                                 table lacks: < 2 rows)
    q_effect = ( [CI covers] + [not lost] + (1 - min(1, |beta_syn - beta_real| / |beta_real|)) ) / 3
    curves   = mean of q_group over every (endpoint, group), "all patients" included
    effects  = mean of q_effect over every real-significant (endpoint, covariate)
    fidelity = mean(curves, effects)      (curves alone when no effect is significant in the real data)

Why this shape: each term is an error a trial statistician reads directly (a median off by 40%, an RMST off by
a year, a curve off by 0.2 somewhere) and is capped at 1, so one absurd group cannot outweigh the others;
medians alone miss curves that cross before or after 1/2, so RMST (the area) and the sup distance (the worst
point) sit beside them. Effects are judged three ways because each catches what the others miss: the
coverage and the loss are the yes/no questions an analysis of the synthetic data would answer wrongly, and the
relative log-HR error credits an effect that kept most of its size. Subgroup survival and effect sizes weigh
the same: they are the two ways a synthetic arm misleads (wrong prognosis inside the criteria, or a wrong
adjustment for a factor). Every group and every effect counts once, so the figure is the average arm's and
the average effect's fidelity.

Flags (listed like privacy flags): every real-significant effect lost; every median error above 15%
(:data:`MEDIAN_FLAG`); every endpoint rule a synthetic row breaks; every time-order rule whose share of rows with
both times equal is off by more than 0.10 (:data:`TIE_FLAG`; LFS ending with OS in 79% of real rows and 38% of a
model's rows is a model that draws the two times apart).

Endpoint rules (:mod:`fedsynth.cohort.constraints`): the schema's rules and the candidate rules that hold in
every real row, each with its number of violating synthetic rows (expected 0) and real rows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from fedsynth.cohort.constraints import TimeOrder, candidate_rules, rule_holds, tied, violation_counts
from fedsynth.cohort.schema import TableSchema
from fedsynth.evaluation._prep import Columns, mean_or_none, same_size_sample, sig_round
from fedsynth.evaluation.cox import check_cox_engine, cox_design, coxph_univariate, design_matrix, univariate_cox
from fedsynth.evaluation.strata import StratumSpec, band_edges, group_order, resolve_strata, stratum_labels
from fedsynth.evaluation.survival import MIN_GROUP, Q_LEVEL, kaplan_meier

log = logging.getLogger(__name__)

#: Median errors above this share are flagged.
MEDIAN_FLAG = 0.15
#: A time-order rule whose share of rows with both times equal differs between synthetic and real by more than this
#: is flagged.
TIE_FLAG = 0.10
#: Significance level of an effect inside the synthetic sample ("effect lost" when p >= this).
SYNTHETIC_ALPHA = 0.05
#: Two-sided 95% normal quantile of the Wald intervals.
Z95 = float(stats.norm.ppf(0.975))
#: The Cox effects are fitted on up to this many times the real data's rows of synthetic rows (module docstring).
EFFECT_ROWS_FACTOR = 10


# -- figures on one pair of samples -------------------------------------------------------------------------


def km_steps(durations: np.ndarray, events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier steps: the distinct event times and the survival just after each (scipy ``ecdf``).

    Parameters
    ----------
    durations, events : ndarray of shape (n,)
        Follow-up times (> 0) and events (1 = event, 0 = censored), no missing values.

    Returns
    -------
    times, survival : ndarray of shape (k,)
        Empty when there is no event (the curve stays at 1).
    """
    E = np.asarray(events, dtype=float) > 0
    if not E.any():
        return np.zeros(0), np.zeros(0)
    sf = kaplan_meier(np.asarray(durations, dtype=float), E).sf
    return np.asarray(sf.quantiles, dtype=float), np.asarray(sf.probabilities, dtype=float)


def _survival_at(times: np.ndarray, surv: np.ndarray, t: np.ndarray) -> np.ndarray:
    i = np.searchsorted(times, t, side="right") - 1
    return np.where(i >= 0, surv[np.maximum(i, 0)] if len(surv) else 1.0, 1.0)


def median_survival(durations: np.ndarray, events: np.ndarray) -> float | None:
    """First time the Kaplan-Meier curve is at or below 1/2 (lifelines' ``median_survival_time_``); None if
    it never is."""
    return _median(*km_steps(durations, events))


def rmst(durations: np.ndarray, events: np.ndarray, horizon: float) -> float:
    """Restricted mean survival time up to ``horizon``: the area under the Kaplan-Meier curve on
    ``[0, horizon]``, in the time unit of ``durations`` (lifelines ``restricted_mean_survival_time``)."""
    return _rmst(*km_steps(durations, events), horizon)


def km_distance(
    durations_a: np.ndarray, events_a: np.ndarray, durations_b: np.ndarray, events_b: np.ndarray, horizon: float
) -> float:
    """``sup |S_a(t) - S_b(t)|`` over ``0 <= t <= horizon`` of two Kaplan-Meier curves (exact: the curves are
    right-continuous steps, so the supremum is reached at 0 or at an event time of either curve)."""
    return _sup_distance(km_steps(durations_a, events_a), km_steps(durations_b, events_b), horizon)


def _median(times: np.ndarray, surv: np.ndarray) -> float | None:
    below = np.flatnonzero(surv <= 0.5)
    return float(times[below[0]]) if below.size else None


def _rmst(times: np.ndarray, surv: np.ndarray, horizon: float) -> float:
    inside = times < horizon
    knots = np.r_[0.0, times[inside], horizon]
    levels = np.r_[1.0, surv[inside]]
    return float(np.sum(levels * np.diff(knots)))


def _sup_distance(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], horizon: float) -> float:
    (ta, sa), (tb, sb) = a, b
    pts = np.unique(np.r_[0.0, ta[ta <= horizon], tb[tb <= horizon]])
    return float(np.max(np.abs(_survival_at(ta, sa, pts) - _survival_at(tb, sb, pts))))


def relative_error(synthetic: float | None, real: float | None) -> float | None:
    """``|synthetic - real| / |real|``; None when ``real`` is None or 0; 1 when only ``synthetic`` is None (a
    median the synthetic curve never reaches)."""
    if real is None or real == 0 or not np.isfinite(real):
        return None
    if synthetic is None or not np.isfinite(synthetic):
        return 1.0
    return abs(synthetic - real) / abs(real)


def group_score(median_error: float | None, rmst_error: float | None, distance: float | None) -> float:
    """``q_group = 1 - mean(min(1, median error), min(1, RMST error), KM distance)`` over the defined terms
    (see the module docstring); 0 when none is defined (a group the synthetic table lacks)."""
    terms = [min(1.0, e) for e in (median_error, rmst_error) if e is not None] + (
        [distance] if distance is not None else [])
    return 1.0 - float(np.mean(terms)) if terms else 0.0


def effect_score(log_hr_real: float, log_hr_synthetic: float, covers: bool, lost: bool) -> float:
    """``q_effect = ([covers] + [not lost] + 1 - min(1, |b_syn - b_real| / |b_real|)) / 3`` (module docstring);
    a synthetic estimate that could not be fitted counts as the largest difference."""
    size = 1.0 - min(1.0, abs(log_hr_synthetic - log_hr_real) / abs(log_hr_real)) if np.isfinite(log_hr_synthetic) else 0.0
    return (float(covers) + float(not lost) + size) / 3.0


def fidelity(group_scores: Sequence[float], effect_scores: Sequence[float]) -> dict[str, float | None]:
    """The survival-effect fidelity from its parts: ``curves`` (mean group score), ``effects`` (mean effect
    score; None without a real-significant effect) and ``value`` (their mean over the defined parts)."""
    curves = mean_or_none(group_scores)
    effects = mean_or_none(effect_scores)
    return {"value": mean_or_none([v for v in (curves, effects) if v is not None]), "curves": curves,
            "effects": effects}


# -- the section of a report ------------------------------------------------------------------------------


def _endpoint_frame(data: pd.DataFrame, dur: str, ev: str) -> pd.DataFrame:
    d = data[[dur, ev]].dropna()
    return d[d[dur] > 0]


def _group_row(
    stratum: str, group: str, r: pd.DataFrame, s: pd.DataFrame, dur: str, ev: str, horizon: float
) -> dict[str, Any]:
    row: dict[str, Any] = {"stratum": stratum, "group": group, "n_real": len(r), "n_synthetic": len(s)}
    km_r = km_steps(r[dur].to_numpy(float), r[ev].to_numpy(float))
    med_r, rm_r = _median(*km_r), _rmst(*km_r, horizon)
    row.update(median_real=None if med_r is None else sig_round(med_r, 3), rmst_real=sig_round(rm_r, 3))
    if len(s) < 2:
        row.update(median_synthetic=None, rmst_synthetic=None, median_error=None, rmst_error=None,
                   km_distance=None, score=0.0, note="absent from the synthetic data (fewer than 2 rows)")
        return row
    km_s = km_steps(s[dur].to_numpy(float), s[ev].to_numpy(float))
    med_s, rm_s = _median(*km_s), _rmst(*km_s, horizon)
    med_err, rm_err = relative_error(med_s, med_r), relative_error(rm_s, rm_r)
    dist = _sup_distance(km_r, km_s, horizon)
    row.update(median_synthetic=None if med_s is None else sig_round(med_s, 3), rmst_synthetic=sig_round(rm_s, 3),
               median_error=med_err, rmst_error=rm_err, km_distance=dist, score=group_score(med_err, rm_err, dist))
    if med_r is None:
        row["note"] = "median not reached in the real data"
    elif med_s is None:
        row["note"] = "median not reached in the synthetic data"
    return row


def _group_rows(
    real_data: pd.DataFrame, synthetic_data: pd.DataFrame, schema: TableSchema, specs: Sequence[StratumSpec],
    dur: str, ev: str, horizon: float,
) -> list[dict[str, Any]]:
    r = _endpoint_frame(real_data, dur, ev)
    s = _endpoint_frame(synthetic_data, dur, ev)
    rows = [_group_row("all", "all patients", r, s, dur, ev, horizon)]
    for st in specs:
        edges = band_edges(st, schema, real_data)
        lab_r = stratum_labels(real_data.loc[r.index], st, schema, edges)
        lab_s = stratum_labels(synthetic_data.loc[s.index], st, schema, edges)
        counts = lab_r.value_counts()
        rank = {g: i for i, g in enumerate(group_order(st, schema, edges))}
        groups = sorted((g for g in counts.index if counts[g] >= MIN_GROUP), key=lambda g: (rank.get(g, len(rank)), g))
        for g in groups:
            rows.append(_group_row(st.column, str(g), r[(lab_r == g).to_numpy()], s[(lab_s == g).to_numpy()],
                                   dur, ev, horizon))
    return rows


def _effect_rows(
    real_data: pd.DataFrame, syn_test: pd.DataFrame, schema: TableSchema, cols: Columns, engine: str
) -> list[dict[str, Any]]:
    """The real-significant effects, the synthetic ones read at the real data's size (module docstring)."""
    fit = coxph_univariate if engine == "lifelines" else univariate_cox
    families = {"clinical": cox_design(real_data, schema, cols.clinical),
                "genomic": cox_design(real_data, schema, cols.genomic)}
    rows: list[dict[str, Any]] = []
    for fam, design in families.items():
        if not design:
            continue
        fam_rows: list[dict[str, Any]] = []
        for ep in schema.endpoints:
            if ep.duration_col not in cols.data or ep.event_col not in cols.data:
                continue
            fits = [fit(f[ep.duration_col].to_numpy(float), f[ep.event_col].to_numpy(float), design_matrix(f, design))
                    for f in (real_data, syn_test)]
            for i, (name, _, _) in enumerate(design):
                # Read at the real fit's size: the rows each fit used (the covariate and endpoint known).
                n_r, n_s = float(fits[0]["n"][i]), float(fits[1]["n"][i])
                ratio = n_s / n_r if n_r > 0 and n_s > 0 else float("nan")
                b_s, se_n = float(fits[1]["coef"][i]), float(fits[1]["se"][i]) * math.sqrt(ratio)
                p_n = float(2 * stats.norm.sf(abs(b_s) / se_n)) if np.isfinite(se_n) and se_n > 0 else float("nan")
                fam_rows.append({"endpoint": ep.name, "family": fam, "variable": name,
                                 "log_hr_real": float(fits[0]["coef"][i]), "se_real": float(fits[0]["se"][i]),
                                 "p_real": float(fits[0]["p"][i]), "log_hr_synthetic": b_s,
                                 "se_synthetic": se_n, "p_synthetic": p_n, "rows_ratio": ratio})
        p = np.array([r["p_real"] for r in fam_rows], dtype=float)
        q = np.full_like(p, np.nan)
        fin = np.isfinite(p)
        if fin.any():
            q[fin] = stats.false_discovery_control(p[fin], method="bh")
        for row, qq in zip(fam_rows, q):
            if not qq < Q_LEVEL:
                continue
            b_r, b_s, se_s, p_s = row["log_hr_real"], row["log_hr_synthetic"], row["se_synthetic"], row["p_synthetic"]
            fitted = bool(np.isfinite(b_s) and np.isfinite(se_s))
            lo, hi = (b_s - Z95 * se_s, b_s + Z95 * se_s) if fitted else (float("nan"), float("nan"))
            covers = bool(fitted and lo <= b_r <= hi)
            lost = not (fitted and np.isfinite(p_s) and p_s < SYNTHETIC_ALPHA and np.sign(b_s) == np.sign(b_r))
            se_r = row["se_real"]
            row.update(q_real=float(qq), ci_synthetic=[lo, hi], log_hr_difference=b_s - b_r, ci_covers_real=covers,
                       lost=lost, score=effect_score(b_r, b_s, covers, lost),
                       size_ratio=b_s / b_r if fitted and b_r != 0 else float("nan"),
                       se_ratio=se_s / se_r if fitted and np.isfinite(se_r) and se_r > 0 else float("nan"))
            rows.append(row)
    return rows


def expected_lost_by_chance(effects: Sequence[Mapping[str, Any]]) -> float:
    """Effects a generator that reproduced every real effect exactly would still lose to sampling noise.

    Such a generator's ``z`` at the real size is ``N(z_real, n / m)`` over draws of ``m`` synthetic rows (the SE
    rescaled as in the module docstring), and an effect is lost when it is not significant or has the other sign,
    i.e. when ``z < 1.96`` on the real effect's side; so the expectation is ``sum Phi((1.96 - |z_real|) * sqrt(m /
    n))`` over the real-significant effects. It takes the real estimates as the truth: what a generator faithful
    to the population would lose is :func:`expected_lost_population`.

    Parameters
    ----------
    effects : sequence of mapping
        Rows of :func:`survival_effects`' ``effects``: ``p_real`` (``|z_real| = Phi^-1(1 - p_real / 2)``) and
        ``rows_ratio`` (``m / n`` of the effect's two fits; 1 when absent: one same-size draw). Rows with either
        undefined are left out.

    Returns
    -------
    float
        The expected count, rounded to 0.01.
    """
    z, r = _real_z_and_ratio(effects)
    return round(float(stats.norm.cdf((Z95 - z) * np.sqrt(r)).sum()), 2)


def _real_z_and_ratio(effects: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """``|z_real|`` and ``m / n`` of the effects where both are defined (``rows_ratio`` 1 when absent)."""
    p = np.array([e["p_real"] for e in effects], dtype=float)
    r = np.array([e.get("rows_ratio", 1.0) for e in effects], dtype=float)
    ok = np.isfinite(p) & np.isfinite(r) & (r > 0)
    return stats.norm.isf(p[ok] / 2), r[ok]


def expected_lost_population(effects: Sequence[Mapping[str, Any]]) -> float:
    """Effects a generator faithful to the patients' *population* (not to these patients) would be expected to lose.

    The real ``z_real`` is itself one sample's estimate: with a flat prior on the true effect, the true ``z`` at the
    real size is ``N(z_real, 1)`` given the data (the replication probability of Goodman, 1992, Stat. Med.
    11:875-879). A generator that draws from the population reads ``z ~ N(z_true, n / m)`` over ``m`` synthetic
    rows, so over both ``z ~ N(z_real, 1 + n / m)``, and the expectation is
    ``sum Phi((1.96 - |z_real|) / sqrt(1 + n / m))``. The real estimate's own noise does not shrink with ``m``: an
    effect at real p = 0.01 is lost 27% of the time at 100 n rows by such a generator, against about 0% by one that
    reproduces the real estimate exactly (:func:`expected_lost_by_chance`, never above this count); a generator
    that loses far fewer than this reproduces these patients' estimates (or exaggerates effects). Under a flat prior
    selecting effects by their real significance changes nothing; with most true effects near 0 (as among the ~90
    covariates and levels tested on the MDS cohort) the selected ``|z_real|`` overstate them, and this count is then
    a floor.

    Parameters
    ----------
    effects : sequence of mapping
        As for :func:`expected_lost_by_chance` (``p_real``, ``rows_ratio``).

    Returns
    -------
    float
        The expected count, rounded to 0.01.
    """
    z, r = _real_z_and_ratio(effects)
    return round(float(stats.norm.cdf((Z95 - z) / np.sqrt(1.0 + 1.0 / r)).sum()), 2)


def endpoint_rule_report(
    real_data: pd.DataFrame, synthetic_data: pd.DataFrame, schema: TableSchema
) -> list[dict[str, Any]]:
    """Violations per endpoint rule: the schema's rules (``source`` "schema") and the candidate rules that hold
    in every real row (``source`` "real data"), with violating synthetic rows (expected 0) and real rows; for a
    time-order rule also ``tied_real`` and ``tied_synthetic``, the share of rows with both times known whose two times
    are equal (a patient whose LFS ends with their OS: a rule can hold in every row while the model draws the two
    times apart far more often than patients have them; None for other rules), and ``tied_flagged`` when they differ
    by more than :data:`TIE_FLAG`."""
    rules = list(schema.constraints)
    sources = ["schema"] * len(rules)
    for r in candidate_rules(schema):
        if r not in rules and rule_holds(real_data, r):
            rules.append(r)
            sources.append("real data")
    syn = violation_counts(synthetic_data, rules)
    real = violation_counts(real_data, rules)
    out = [
        {"rule": s["rule"], "type": s["type"], "source": src, "violations_synthetic": s["violations"],
         "checked_synthetic": s["checked"], "share_synthetic": s["violations"] / s["checked"] if s["checked"] else None,
         "violations_real": rr["violations"], "tied_real": _tied_share(real_data, rule),
         "tied_synthetic": _tied_share(synthetic_data, rule)}
        for s, rr, src, rule in zip(syn, real, sources, rules)
    ]
    for row in out:
        row["tied_flagged"] = tie_gap(row) > TIE_FLAG
    return out


def tied_times(rules: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Rule -> ``{"real": tied_real, "synthetic": tied_synthetic}`` for each time-order rule of an
    :func:`endpoint_rule_report` (the benchmarks' record of ties)."""
    return {r["rule"]: {"real": r["tied_real"], "synthetic": r["tied_synthetic"]}
            for r in rules if r.get("tied_real") is not None}


def _tied_share(data: pd.DataFrame, rule: Any) -> float | None:
    """Share of the rows with both of a time-order rule's times known whose two times are equal (None: another kind
    of rule, or no such row)."""
    if not isinstance(rule, TimeOrder):
        return None
    a, b = rule.shorter.duration_col, rule.longer.duration_col
    if a not in data.columns or b not in data.columns:
        return None
    ta = pd.to_numeric(data[a], errors="coerce").to_numpy(dtype=np.float64)
    tb = pd.to_numeric(data[b], errors="coerce").to_numpy(dtype=np.float64)
    both = ~np.isnan(ta) & ~np.isnan(tb)
    return sig_round(float(tied(ta[both], tb[both]).mean()), 3) if both.any() else None


def _finite(x: Any) -> bool:
    """Whether ``x`` is a finite number (not None, NaN or a missing key's default)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _flags(endpoints: dict[str, Any], effects: list[dict[str, Any]], rules: list[dict[str, Any]]) -> list[str]:
    """The flags, endpoint rules first (few, and each about every row), then lost effects, then group medians."""
    flags = []
    for r in rules:
        if r["violations_synthetic"]:
            flags.append(f"endpoint rule {r['rule']}: broken by {r['violations_synthetic']} synthetic rows")
        if r["tied_flagged"]:
            flags.append(f"endpoint rule {r['rule']}: both times equal in {100 * r['tied_synthetic']:.0f}% of "
                         f"synthetic rows vs {100 * r['tied_real']:.0f}% of real rows")
    for e in effects:
        if e["lost"]:
            size, se = e.get("size_ratio"), e.get("se_ratio")  # absent or None in a report of an older version
            why = (f"; size ratio {size:.2f}, SE ratio {se:.2f}" if _finite(size) and _finite(se) else "")
            flags.append(f"{e['endpoint']}, {e['variable']}: effect lost (log HR {e['log_hr_real']:.3g} real, "
                         f"{e['log_hr_synthetic']:.3g} synthetic, p {e['p_synthetic']:.2g}{why})")
    for name, ep in endpoints.items():
        for g in ep["groups"]:
            where = f"{name}, {'all patients' if g['stratum'] == 'all' else g['stratum'] + ' = ' + g['group']}"
            if g.get("note", "").startswith("absent"):
                flags.append(f"{where}: group absent from the synthetic data")
            elif g["median_error"] is not None and g["median_error"] > MEDIAN_FLAG:
                syn = "not reached" if g["median_synthetic"] is None else f"{g['median_synthetic']:g}"
                flags.append(f"{where}: median {syn} synthetic vs {g['median_real']:g} real "
                             f"(error {100 * g['median_error']:.1f}% > {100 * MEDIAN_FLAG:.0f}%)")
    return flags


def tie_gap(rule_row: Mapping[str, Any]) -> float:
    """``|tied_synthetic - tied_real|`` of an :func:`endpoint_rule_report` row (0 where either is None)."""
    a, b = rule_row.get("tied_synthetic"), rule_row.get("tied_real")
    return 0.0 if a is None or b is None else abs(float(a) - float(b))


def survival_effects(
    real_data: pd.DataFrame,
    synthetic_data: pd.DataFrame,
    schema: TableSchema,
    *,
    strata: Sequence[str | StratumSpec] | None = None,
    rng: np.random.Generator,
    cox_engine: str = "batched",
    effect_rows_factor: int = EFFECT_ROWS_FACTOR,
) -> dict[str, Any]:
    """Strict survival figures, the survival-effect fidelity, its flags and endpoint-rule violations.

    Parameters
    ----------
    real_data, synthetic_data : DataFrame
        The real training pool and the synthetic table, in the schema's canonical dtypes.
    schema : TableSchema
        Endpoints, roles, declared strata and endpoint rules.
    strata : sequence of str or StratumSpec, optional
        Strata to use instead of the defaults (:func:`fedsynth.evaluation.strata.resolve_strata`).
    rng : numpy Generator
        Draws the synthetic rows for the Cox effects (up to ``effect_rows_factor`` times the real data's).
    cox_engine : {"batched", "lifelines"}
        How the univariate Cox models are fitted (equal to 1e-6).
    effect_rows_factor : int, default :data:`EFFECT_ROWS_FACTOR`
        Most synthetic rows the Cox effects are fitted on, as a multiple of the real rows (module docstring: a
        larger table reads each effect at the real size with less of one draw's chance; the benchmarks' low-noise
        reading uses 100).

    Returns
    -------
    dict
        ``fidelity`` (value in [0, 1] or None), ``parts`` (``curves``, ``effects``), ``endpoints`` (per endpoint
        ``horizon`` and ``groups``: stratum, group, n, medians, RMSTs, errors, ``km_distance``, ``score``),
        ``effects`` (real-significant Cox effects with log-HR difference, synthetic 95% CI, ``ci_covers_real``,
        ``lost``, ``size_ratio``, ``se_ratio``, ``score``), ``flags`` (list of str), ``endpoint_rules`` (per rule: violations in synthetic and
        real rows), ``strata`` (the stratum columns used), ``counts``.
    """
    check_cox_engine(cox_engine)
    cols = Columns.from_schema(schema, real_data, synthetic_data)
    specs = [st for st in resolve_strata(schema, real_data, strata) if st.column in cols.data]
    endpoints: dict[str, Any] = {}
    for ep in schema.endpoints:
        if ep.duration_col not in cols.data or ep.event_col not in cols.data:
            continue
        r = _endpoint_frame(real_data, ep.duration_col, ep.event_col)
        if len(r) < 2 or len(_endpoint_frame(synthetic_data, ep.duration_col, ep.event_col)) < 2:
            continue
        horizon = float(np.quantile(r[ep.duration_col], 0.9))
        endpoints[ep.name] = {
            "horizon": sig_round(horizon, 3), "time_unit": ep.time_unit,
            "groups": _group_rows(real_data, synthetic_data, schema, specs, ep.duration_col, ep.event_col, horizon),
        }
    syn_test = same_size_sample(synthetic_data, len(real_data), rng, factor=int(effect_rows_factor))
    effects = _effect_rows(real_data, syn_test, schema, cols, cox_engine) if endpoints else []
    rules = endpoint_rule_report(real_data, synthetic_data, schema)
    groups = [g for ep in endpoints.values() for g in ep["groups"]]
    fid = fidelity([g["score"] for g in groups], [e["score"] for e in effects])
    return {
        "fidelity": fid["value"],
        "parts": {"curves": fid["curves"], "effects": fid["effects"]},
        "endpoints": endpoints,
        "effects": effects,
        "flags": _flags(endpoints, effects, rules),
        "endpoint_rules": rules,
        "strata": [st.column for st in specs],
        "counts": {"groups": len(groups), "effects": len(effects), "effects_lost": sum(e["lost"] for e in effects),
                   "expected_lost_by_chance": expected_lost_by_chance(effects),
                   "expected_lost_population": expected_lost_population(effects),
                   "synthetic_rows_for_effects": len(syn_test),
                   "median_errors_over_15pct": sum(1 for g in groups if (g["median_error"] or 0) > MEDIAN_FLAG),
                   "rule_violations_synthetic": sum(r["violations_synthetic"] for r in rules),
                   "tie_shares_off": sum(bool(r["tied_flagged"]) for r in rules)},
        "sample": (f"KM figures and endpoint rules: all {len(synthetic_data)} synthetic rows given; Cox effects: "
                   f"{len(syn_test)} of them ({len(syn_test) / len(real_data):.3g} x the real rows), read at the real "
                   "data's size"),
    }
