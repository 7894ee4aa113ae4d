"""Survival calibration within prognostic strata: sampled durations rescaled so each stratum level's median survival
(or hazard) matches the real one, from events and person-time summed over sites.

Generators that do not model survival by counts (VAE-BGM) reproduce the overall survival curve well but bias it
inside strata: rare protective levels are pulled towards the mean (a VAE's decoder shares its capacity), and a
control arm sampled in a risk group lives too long or too short. This post-step corrects it the way an
accelerated-failure-time model would. Each sampled row's durations are multiplied by

    f(row) = exp(sum_s b_s[level_s(row)])

a product of one factor per level of each prognostic stratum ``s`` (a missing level has none): one factor for every
endpoint of the row (a time-order rule such as LFS <= OS keeps holding; the times are then clipped to the domain's
bounds, a monotone map, so the order still holds), or one per endpoint (``endpoints="each"``, below; a shorter
endpoint is then capped at its longer one). Inside a level the rank order of an endpoint's times is kept.

**Strata** (:func:`calibration_strata`; from schema roles, never from column names): the schema's declared
``strata:`` (categories, or bands of a numeric column at its declared cut points), then every baseline categorical
or binary column with role ``clinical`` (a derived one, such as a risk group, by its declared categories) and
every ``genomic`` column mutated (label ``"1"``) in at least 5% of the real rows (the share read from the summed
counts). Outcome and post-baseline columns are never strata.

**Real side** (:func:`survival_counts`, at each site): per endpoint, stratum and level, the events and the
person-time in each interval of the duration's shared domain bins, and the level's row count. They are sums, so
sites' answers add up to the pooled ones (:func:`sum_survival_counts`): the same count route as the Bayesian
network's piecewise-exponential survival. In clear a site withholds a level held by 1 to ``k - 1`` of its rows
(``k``, its smallest released count); a level with fewer than ``max(k, min_rows)`` rows in the sum gets no factor.

**Fit** (:func:`fit_survival_calibration`): on a large unconditioned sample of the generator, each level is
compared with the real one under a piecewise-exponential model (hazard = events / person-time per interval, the
same estimator on both sides; :mod:`fedsynth.generators.pwe_counts`), by one of four targets:

- ``target="median"``: the level's median (:func:`pwe_medians`); the error is ``log(real / synthetic median)``.
  Undefined for a level whose median lies past follow-up, and read where the curve may be flat;
- ``target="hazard"``: the level's observed over expected events under the real pooled hazard of the stratum
  (:func:`pooled_hazard`, :func:`hazard_ratios`: the level's hazard ratio in a Poisson model with the baseline's
  expected events as offset, Laird & Olivier, 1981); the error is ``log(synthetic / real ratio)`` (times scaled by
  ``f`` divide a constant hazard by ``f``). It uses every event of the level and is defined whatever its median;
- ``target="rmst"``: the level's restricted mean survival time (:func:`pwe_rmst`, the area under its curve) up to
  the endpoint's follow-up horizon (:func:`follow_up_horizon`: the edge by which 90% of the real person-time is
  spent, near the evaluator's 90th percentile of follow-up); the error is ``log(real / synthetic RMST)`` (times
  scaled by ``f`` scale the area by about ``f`` while it stays under the horizon). It reads the whole curve up to
  the horizon, so a level whose median sits where its curve drops steeply (a small level's late deaths) is not
  matched on that one point while its early years stay wrong.
- ``target="hazard_ratio"``: the level's log hazard ratio against the rest of its stratum in a piecewise-exponential
  proportional-hazards model, the real one from the summed counts and the synthetic one from the synthetic rows,
  each with its own baseline hazard per interval (:func:`level_log_hazard_ratios`: the count form of the
  univariate Cox effect of the level's indicator that the evaluator reads); the error is ``log(synthetic / real
  hazard ratio)``. These errors are relative, so the intercept matches instead the overall observed over expected
  events of the stratum's rows under the real pooled hazard (1 on the real side). The "hazard" target compares
  both sides under the *real* baseline: when the synthetic table's overall hazard is off, a level can match its
  ratio there while its effect against the rest of the synthetic table stays off.

The factors of one stratum at a time are moved by a damped step ``b += damping * mean over endpoints of the
error`` (the part common to the levels going to the intercept; with ``target="hazard_ratio"`` the intercept matches
the overall observed over expected events instead, and both it and each level's "rest" are read with each level's
rows weighted by its real share over its share of the rows read, since the rows read hold extra draws conditioned
on each level) (iterative raking, as iterative proportional fitting moves one margin at a time), sweeping the strata until
every level is within ``tol`` on the log scale or ``max_sweeps`` is reached. Factors are bounded by
``max_log_factor``. With the hazard target a converged fit gives each level the real standardised event ratio
(its hazard ratio against the real baseline; on the real side the maximum-likelihood estimate of a Poisson model
with the level's expected events as offset). Strata overlap (a risk group and its inputs), so the factors can
offset one another, and strata whose levels are all off in one direction pull the shared intercept against each
other: a fit may stop at ``max_sweeps`` without converging (``max_log_error`` says how far).

**Endpoints**: one factor for every endpoint of a row (``endpoints="all"``, the mean of their errors; or
``"first"``, the primary endpoint's), or a factor per endpoint (``"each"``). A model whose endpoints are off in
opposite directions (LFS too short against OS: with one factor OS is pushed as far too long as LFS stays too
short) needs the latter; each duration is then scaled by its own factor and a time-order rule's shorter endpoint
is capped at its longer one (:func:`cap_time_order`), so the rules still hold.

Under a finite privacy budget the counts would be a further release; FedAvg does not ask for them then, and the
step is off (no factor).

Source of the method: the accelerated-failure-time model (e.g. Kalbfleisch & Prentice, *The Statistical Analysis
of Failure Time Data*, 2002, ch. 2.3), raking (Deming & Stephan, 1940), the piecewise-exponential estimator
(Friedman, 1982, Ann. Statist. 10:101-113) and its Poisson form (Laird & Olivier, 1981, JASA 76:231-240).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from fedsynth.cohort.constraints import TimeOrder
from fedsynth.cohort.schema import TableSchema
from fedsynth.encoding.domain import Domain
from fedsynth.generators.pwe_counts import (  # the estimators live there; re-exported here
    follow_up_horizon,
    hazard_ratios,
    level_log_hazard_ratios,
    pooled_hazard,
    pwe_medians,
    pwe_rmst,
)
from fedsynth.generators.survival_factors import (  # the fitted factors live there; re-exported here
    SurvivalCalibration,
    cap_time_order,
    order_times,
)
from fedsynth.generators.survival_strata import (  # the strata and counts live there; re-exported here
    GENE_MIN_FREQ,
    SEP,
    CalibrationStratum,
    calibration_strata,
    endpoint_edges,
    exposure,
    stratum_codes,
    sum_survival_counts,
    survival_counts,
)

log = logging.getLogger(__name__)

__all__ = [
    "GENE_MIN_FREQ", "TARGETS", "CalibrationStratum", "SurvivalCalibration", "calibration_strata", "cap_time_order",
    "endpoint_edges",
    "fit_survival_calibration", "follow_up_horizon", "hazard_ratios", "level_log_hazard_ratios", "pooled_hazard",
    "pwe_medians", "pwe_rmst", "stratum_codes", "sum_survival_counts", "survival_counts",
]

#: What a level's factor can match (:func:`fit_survival_calibration`'s ``target``).
TARGETS = ("median", "hazard", "rmst", "hazard_ratio")


def _gene_kept(st: CalibrationStratum, counts: Mapping[str, np.ndarray], min_freq: float) -> bool:
    n = counts.get(f"n{SEP}{st.column}")
    if not st.genomic:
        return True
    if n is None or n.sum() <= 0 or "1" not in st.labels:
        return False
    return bool(n[st.labels.index("1")] / n.sum() >= min_freq)


@dataclass
class _Worst:
    """The largest ``|log error|`` of a pass so far, where it was and its sign (a fit's running record)."""

    value: float = float("nan")
    at: str = ""
    signed: float = float("nan")


def fit_survival_calibration(
    synthetic_data: pd.DataFrame,
    counts: Mapping[str, np.ndarray],
    schema: TableSchema,
    domain: Domain,
    strata: Sequence[CalibrationStratum],
    *,
    min_rows: int = 20,
    min_count: int = 5,
    damping: float = 0.5,
    max_sweeps: int = 40,
    tol: float = 0.01,
    max_log_factor: float = math.log(4.0),
    endpoints: str = "all",
    gene_min_freq: float = GENE_MIN_FREQ,
    drawn_for: np.ndarray | None = None,
    read_unconditioned: bool = True,
    target: str = "median",
    min_share: float = 0.0,
    keep_ties: bool = False,
    capped_intercepts: bool = True,
    keep_order: bool = False,
) -> SurvivalCalibration:
    """Per-level factors on synthetic durations so that each level's median or hazard matches the real one
    (damped raking).

    Parameters
    ----------
    synthetic_data : DataFrame
        An unconditioned sample of the generator, finished (derived columns present), without calibration.
    counts : dict
        The real :func:`survival_counts`, summed over sites.
    schema, domain
        The run's schema and shared domain (endpoints, duration bounds).
    strata : sequence of CalibrationStratum
        :func:`calibration_strata`; genomic ones under :data:`GENE_MIN_FREQ` in ``counts`` are dropped.
    min_rows : int, default 20
        Fewest real rows (and synthetic rows) a level's factor is fitted on.
    min_count : int, default 5
        The sites' smallest released count: a level with fewer real rows in the sum gets no factor.
    damping : float, default 0.5
        Share of each level's log median error corrected per sweep.
    max_sweeps : int, default 40
    tol : float, default 0.01
        Stop when every calibrated level's ``|log error|`` (the target's, e.g. ``|log(real / synthetic median)|``)
        is below it, read during a pass and again on the final factors.
    max_log_factor : float, default log 4
        Bound on each level's ``|log factor|``.
    endpoints : {"all", "first", "each"}, default "all"
        Whose errors a level's factor corrects: the mean over every endpoint of the schema, or only the schema's
        first endpoint (its primary one), one factor moving every endpoint of a row (so when a model's endpoints
        are off in opposite directions only one of them can be matched); or ``"each"``: a factor per endpoint,
        fitted on its own errors, a time-order rule's shorter endpoint capped at its longer one.
    gene_min_freq : float, default :data:`GENE_MIN_FREQ`
        Smallest mutation share of a genomic stratum (in the summed real counts).
    drawn_for : ndarray of str, shape (n_rows,), optional
        Per synthetic row, the stratum column it was drawn for (a conditional draw on one of its levels, the way
        control arms are drawn); a stratum's medians are then read on its own rows only ("" : a row of an
        unconditioned draw, read for every stratum). ``None``: every row is read for every stratum.
    read_unconditioned : bool, default True
        With ``drawn_for``, whether the unconditioned rows are read too; False reads each level on the rows drawn
        under its stratum's levels alone (factors for conditioned draws only, as control arms are drawn). The
        unconditioned rows are still scaled by every factor.
    min_share : float, default 0
        Smallest share of the stratum's real rows (in the summed counts) a level's factor is fitted on: a rarer
        level gets none (its survival is the model's; its median, read on few rows, may mislead the factor).
    target : {"median", "hazard", "rmst", "hazard_ratio"}, default "median"
        What a level matches: its piecewise-exponential median, its observed over expected events under the
        real pooled hazard, its restricted mean survival time up to the endpoint's follow-up horizon, or its log
        hazard ratio against the rest of its stratum (module docstring).
    keep_ties : bool, default False
        With ``endpoints="each"``, rows whose two endpoint times are equal stay equal when scaled (the time a tie
        overwrites takes the other's scaled time, :func:`~fedsynth.cohort.constraints.tie_pairs`), in the fit and
        in :meth:`SurvivalCalibration.apply`.
    capped_intercepts : bool, default True
        Whether an endpoint that a time-order rule caps at another endpoint of the fit (the rule's shorter one: LFS
        under LFS <= OS) gets an intercept. Lengthening its times cannot go past the cap, so when the model draws
        more of its events than the real rows hold, its overall event ratio is out of reach: the intercept runs to
        ``max_log_factor`` and, its rows held at the cap, its levels' factors stop answering (on the MDS cohort
        LFS's intercept reached log 4 and several of its levels' factors their bounds). ``False`` leaves such an
        intercept at 0 (the endpoint's overall rate stays the model's own; its levels still match their hazard
        ratios against the rest of their stratum) and leaves its overall error out of the convergence test. Only
        with ``target="hazard_ratio"`` (whose level targets are relative, so no intercept is needed to meet them)
        and ``endpoints="each"`` (with one factor for every endpoint nothing is capped).
    keep_order : bool, default False
        With ``endpoints="each"``, a row whose shorter time (a time-order rule's: LFS under LFS <= OS) was strictly
        under its longer one stays so: the ratio of the two moves on the odds scale by the ratio of their factors
        instead of being scaled and capped to a tie (:func:`~fedsynth.generators.survival_factors.cap_time_order`
        with ``before``), in the fit and in :meth:`SurvivalCalibration.apply`. Without it the cap turned 2.5-4.0% of
        VAE-BGM's unconditioned rows into ties on the MDS cohort (session 23, ``selection_session23`` in
        ``benchmarks/results/arms.json``).

    Returns
    -------
    SurvivalCalibration
    """
    edges = endpoint_edges(schema, domain)
    kept = [st for st in strata if _gene_kept(st, counts, gene_min_freq) and f"n{SEP}{st.column}" in counts
            and st.column in synthetic_data.columns]
    eps = [ep for ep in schema.endpoints if ep.name in edges and ep.duration_col in synthetic_data.columns
           and ep.event_col in synthetic_data.columns]
    if endpoints not in ("all", "first", "each"):
        raise ValueError(f"endpoints must be 'all', 'first' or 'each'; got {endpoints!r}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}; got {target!r}")
    if not capped_intercepts and (target != "hazard_ratio" or endpoints != "each"):
        raise ValueError("capped_intercepts=False needs target='hazard_ratio' and endpoints='each'; got "
                         f"target={target!r}, endpoints={endpoints!r}")
    # Groups of endpoints that share one factor: (the endpoints whose errors move it, the endpoints it scales).
    if endpoints == "each":
        groups = [([i], [i]) for i in range(len(eps))]
    elif endpoints == "first":
        first = [i for i, ep in enumerate(eps) if schema.endpoints and ep.name == schema.endpoints[0].name]
        groups = [(first, list(range(len(eps))))]
    else:
        groups = [(list(range(len(eps))), list(range(len(eps))))]
    floor_rows = max(int(min_rows), int(min_count))
    real_med: dict[str, np.ndarray] = {}  # column -> (n_endpoints, n_levels), NaN where no target
    real_smr: dict[str, np.ndarray] = {}  # column -> (n_endpoints, n_levels) observed / expected events, real
    baseline: dict[str, list[np.ndarray]] = {}  # column -> per endpoint the real pooled hazard per interval
    real_rmst: dict[str, np.ndarray] = {}  # column -> (n_endpoints, n_levels) RMST up to the endpoint's horizon
    real_lhr: dict[str, np.ndarray] = {}  # column -> (n_endpoints, n_levels) log HR of each level against the rest
    horizons: dict[int, float] = {}  # endpoint index -> real follow-up horizon (first stratum with counts)
    codes: dict[str, np.ndarray] = {}  # each row's level (the factor it takes)
    read: dict[str, np.ndarray] = {}  # the level a row is read for in the stratum's medians (-1: not read)
    for st in kept:
        n_real = counts[f"n{SEP}{st.column}"]
        floor = max(floor_rows, float(min_share) * float(np.sum(n_real)))
        rows, smrs, bases, areas, lhrs = [], [], [], [], []
        for k, ep in enumerate(eps):
            d, t = counts.get(f"d{SEP}{ep.name}{SEP}{st.column}"), counts.get(f"t{SEP}{ep.name}{SEP}{st.column}")
            n_int = len(edges[ep.name]) - 1
            nan = np.full(len(st.labels), np.nan)
            if d is None or t is None:
                med, smr, area, base, lhr = nan, nan, nan, np.zeros(n_int), nan
            else:
                horizons.setdefault(k, follow_up_horizon(t, edges[ep.name]))
                med, base = pwe_medians(d, t, edges[ep.name]), pooled_hazard(d, t)
                smr, area = hazard_ratios(d, t, base), pwe_rmst(d, t, edges[ep.name], horizons[k])
                lhr = level_log_hazard_ratios(d, t) if target == "hazard_ratio" else nan
            rows.append(np.where(n_real >= floor, med, np.nan))
            smrs.append(np.where(n_real >= floor, smr, np.nan))
            areas.append(np.where(n_real >= floor, area, np.nan))
            lhrs.append(np.where(n_real >= floor, lhr, np.nan))
            bases.append(base)
        real_med[st.column] = np.array(rows).reshape(len(eps), len(st.labels))
        real_smr[st.column] = np.array(smrs).reshape(len(eps), len(st.labels))
        real_rmst[st.column] = np.array(areas).reshape(len(eps), len(st.labels))
        real_lhr[st.column] = np.array(lhrs).reshape(len(eps), len(st.labels))
        baseline[st.column] = bases
        codes[st.column] = stratum_codes(synthetic_data, st)
        if drawn_for is not None:
            mine = (np.asarray(drawn_for) == st.column) | ((np.asarray(drawn_for) == "") & read_unconditioned)
            read[st.column] = np.where(mine, codes[st.column], -1)
        else:
            read[st.column] = codes[st.column]
    times = [pd.to_numeric(synthetic_data[ep.duration_col], errors="coerce").to_numpy(dtype=np.float64)
             for ep in eps]
    events = [pd.to_numeric(synthetic_data[ep.event_col], errors="coerce").to_numpy(dtype=np.float64)
              for ep in eps]
    bounds = [(domain[ep.duration_col].lower, domain[ep.duration_col].upper) for ep in eps]
    factors = [{st.column: np.zeros(len(st.labels)) for st in kept} for _ in groups]
    intercepts = [0.0 for _ in groups]
    row_of = [np.zeros(len(synthetic_data)) for _ in groups]  # each group's row log factor
    group_of = {i: g for g, (_, scaled) in enumerate(groups) for i in scaled}
    names = {ep.name for ep in eps}
    capped = {r.shorter.name for r in schema.constraints if isinstance(r, TimeOrder) and r.longer.name in names}
    # Groups whose intercept stays 0: an endpoint capped at another (capped_intercepts=False, checked above to come
    # with a factor per endpoint).
    fixed = {g for g, (_, scaled) in enumerate(groups)
             if not capped_intercepts and all(eps[i].name in capped for i in scaled)}

    def scaled_times() -> list[np.ndarray]:
        out = {eps[i].duration_col: np.clip(times[i] * np.exp(row_of[group_of[i]]), *bounds[i])
               for i in range(len(eps))}
        if endpoints == "each":  # a factor per endpoint: back under the time-order rules, as the draw does
            out = order_times({ep.duration_col: times[i] for i, ep in enumerate(eps)}, out, schema,
                              {ep.duration_col: bounds[i] for i, ep in enumerate(eps)}, keep_order=keep_order,
                              keep_ties=keep_ties)
        return [out[ep.duration_col] for ep in eps]

    def level_errors(i: int, ev: np.ndarray, pt: np.ndarray, st: CalibrationStratum, n_syn: np.ndarray,
                     w: np.ndarray) -> np.ndarray:
        """log(real / synthetic) of endpoint ``i`` per level of ``st`` (NaN: no target): the factor its times lack,
        from the synthetic events and person-time ``ev``, ``pt`` (n_levels, n_intervals); ``w``: :func:`mix_weights`
        (read by the hazard_ratio target only)."""
        if target == "hazard_ratio":
            syn, real = level_log_hazard_ratios(ev * w[:, None], pt * w[:, None]), real_lhr[st.column][i]
            ok = np.isfinite(real) & np.isfinite(syn) & (n_syn >= min_rows)
            return np.where(ok, syn - real, np.nan)
        if target == "hazard":
            syn, real = hazard_ratios(ev, pt, baseline[st.column][i]), real_smr[st.column][i]
            ok = np.isfinite(real) & np.isfinite(syn) & (syn > 0) & (real > 0) & (n_syn >= min_rows)
            return np.where(ok, np.log(np.where(ok, syn, 1.0) / np.where(ok, real, 1.0)), np.nan)
        if target == "rmst":
            syn, real = pwe_rmst(ev, pt, edges[eps[i].name], horizons.get(i, float(edges[eps[i].name][-1]))), real_rmst[st.column][i]
            ok = np.isfinite(real) & np.isfinite(syn) & (syn > 0) & (real > 0) & (n_syn >= min_rows)
            return np.where(ok, np.log(np.where(ok, real, 1.0) / np.where(ok, syn, 1.0)), np.nan)
        syn, real = pwe_medians(ev, pt, edges[eps[i].name]), real_med[st.column][i]
        ok = np.isfinite(real) & np.isfinite(syn) & (syn > 0) & (n_syn >= min_rows)
        return np.where(ok, np.log(np.where(ok, real, 1.0) / np.where(ok, syn, 1.0)), np.nan)

    def overall_error(i: int, ev: np.ndarray, pt: np.ndarray, st: CalibrationStratum, w: np.ndarray) -> float:
        """log(observed / expected) events of endpoint ``i`` over the stratum's rows (``ev``, ``pt`` weighted by
        ``w``) under the real pooled hazard (NaN: none expected): with ``target="hazard_ratio"`` the intercept's
        error, the levels' errors being relative."""
        seen = float((ev * w[:, None]).sum())
        expected = float(((pt * w[:, None]) @ baseline[st.column][i]).sum())
        return math.log(seen / expected) if seen > 0 and expected > 0 else float("nan")

    def mix_weights(st: CalibrationStratum, n_syn: np.ndarray) -> np.ndarray:
        """Per level, its real share over its share of the rows read (0 where it has none): the rows read hold extra
        draws conditioned on each level, so a level's "rest" and the overall ratio are read in the real mix."""
        n_real = counts[f"n{SEP}{st.column}"].astype(np.float64)
        syn_share = n_syn / max(float(n_syn.sum()), 1.0)
        real_share = n_real / max(float(n_real.sum()), 1.0)
        return np.divide(real_share, syn_share, out=np.zeros_like(real_share), where=syn_share > 0)

    def group_name(g: int) -> str:  # the key of the group's factors (endpoint_factors' keys with "each")
        return eps[groups[g][1][0]].name if endpoints == "each" else "every endpoint"

    def read_stratum(st: CalibrationStratum, t_now: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, float,
                                                                                  float]]:
        """Per group, on the times ``t_now``: each level's signed error (the step its factor takes), which levels
        have one, the part common to the levels (weighted by their rows read) and the intercept's error (the
        common part, or with ``target="hazard_ratio"`` the overall observed over expected events; NaN: none)."""
        r, n_lev = read[st.column], len(st.labels)
        n_syn = np.bincount(r[r >= 0], minlength=n_lev)
        expo = [exposure(t_now[i], events[i], r, n_lev, edges[ep.name]) for i, ep in enumerate(eps)]
        w = mix_weights(st, n_syn) if target == "hazard_ratio" else np.ones(n_lev)
        out = []
        for fitted_on, _ in groups:
            err = np.array([level_errors(i, *expo[i], st, n_syn, w) for i in fitted_on]).reshape(len(fitted_on), n_lev)
            fin = np.isfinite(err)
            have = fin.any(axis=0)
            step = np.where(fin, err, 0.0).sum(axis=0) / np.maximum(fin.sum(axis=0), 1)
            # The part common to the stratum's levels is a shift of every row (the intercept), so a stratum's factors
            # stay centred and cannot drift against another's (strata overlap: a risk group and its inputs), which
            # would move the rows of levels without a factor.
            common = float(np.average(step[have], weights=n_syn[have])) if have.any() else 0.0
            shift = common
            if target == "hazard_ratio":  # relative errors: the intercept matches the overall event ratio
                overall = [e for e in (overall_error(i, *expo[i], st, w) for i in fitted_on) if math.isfinite(e)]
                shift = float(np.mean(overall)) if overall else float("nan")
            out.append((step, have, common, shift))
        return out

    state = _Worst()
    last_err: list[dict[str, np.ndarray]] = [{} for _ in groups]  # each level's signed error at the last read
    commons: list[list[float]] = [[] for _ in groups]  # the errors every row shared at the last read, per stratum

    def note(g: int, st: CalibrationStratum, step: np.ndarray, have: np.ndarray, shift: float) -> None:
        """Record a group's errors on a stratum: the largest so far in this pass, the last errors, the common one."""
        if have.any() and float(np.abs(step[have]).max()) > state.value:
            j = int(np.argmax(np.where(have, np.abs(step), -1.0)))
            state.value, state.at, state.signed = (float(np.abs(step[j])), f"{group_name(g)}: {st.column}={st.labels[j]}",
                                                   float(step[j]))
        if target == "hazard_ratio" and math.isfinite(shift) and abs(shift) > state.value and g not in fixed:
            state.value, state.at, state.signed = abs(shift), f"{group_name(g)}: every row", shift  # log(synth / real)
        last_err[g][st.column] = np.where(have, step, np.nan)
        commons[g].append(shift if math.isfinite(shift) else 0.0)

    def new_pass() -> None:
        state.value, state.at, state.signed = 0.0, "", float("nan")
        for c in commons:
            c.clear()

    def read_final() -> None:
        """Read every stratum once more on the current factors (a pass reads each stratum while the others' steps
        still move its rows, so a level read early in it may have moved since): the figures the fit records."""
        new_pass()
        final_times = scaled_times()
        for st in kept:
            for g, (step, have, _, shift) in enumerate(read_stratum(st, final_times)):
                note(g, st, step, have, shift)

    sweeps = 0
    for sweeps in range(1, int(max_sweeps) + 1):
        new_pass()
        for st in kept:
            for g, (step, have, common, shift) in enumerate(read_stratum(st, scaled_times())):
                note(g, st, step, have, shift)
                shift = shift if math.isfinite(shift) else 0.0
                old_intercept = intercepts[g]
                if g not in fixed:
                    intercepts[g] = float(np.clip(intercepts[g] + damping * shift, -max_log_factor, max_log_factor))
                old = factors[g][st.column]
                factors[g][st.column] = np.clip(old + damping * np.where(have, step - common, 0.0),
                                                -max_log_factor, max_log_factor)
                # Only this stratum's factors and the intercept moved: each row's log factor moves by their change.
                co = codes[st.column]
                moved = factors[g][st.column] - old
                row_of[g] = row_of[g] + (intercepts[g] - old_intercept) + np.where(co >= 0, moved[np.maximum(co, 0)],
                                                                                    0.0)
        log.debug("survival calibration sweep %d: largest log error %.4g at %s", sweeps, state.value, state.at)
        if state.value < tol:
            read_final()  # what the pass read may have moved since: the fit stops only if the final factors agree
            if state.value < tol:
                break
    else:
        read_final()  # the loop ran out (or no sweep was asked for): the figures recorded are the final factors'
    worst, worst_at, signed = state.value, state.at, state.signed
    if endpoints == "each":
        cal = SurvivalCalibration(tuple(kept), {st.column: np.zeros(len(st.labels)) for st in kept}, 0.0, sweeps,
                                  worst, {eps[g].name: factors[g] for g in range(len(groups))},
                                  {eps[g].name: intercepts[g] for g in range(len(groups))}, keep_ties)
    else:
        cal = SurvivalCalibration(tuple(kept), factors[0], intercepts[0], sweeps, worst)
    return replace(cal, target=target, keep_order=bool(keep_order) and endpoints == "each", tol=float(tol), max_log_factor=float(max_log_factor), worst_level=worst_at,
                   worst_log_error=signed, last_errors={group_name(g): last_err[g] for g in range(len(groups))},
                   last_common_errors={group_name(g): float(np.mean(c)) if c else 0.0 for g, c in enumerate(commons)},
                   unfitted_intercepts=tuple(group_name(g) for g in sorted(fixed)))
