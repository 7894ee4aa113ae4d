"""The control-arm report: Kaplan-Meier per endpoint, and against a reference arm log-rank, hazard ratio and balance."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.cohort.schema import ColumnKind, ColumnRole, TableSchema
from fedsynth.evaluation.survival import logrank

#: Absolute standardised mean difference above which a covariate is flagged as imbalanced (Austin 2009).
SMD_FLAG = 0.1

#: Points of the time axis at which numbers at risk are given.
N_RISK_TICKS = 6


def _num(v: Any) -> float | None:
    return float(v) if v is not None and np.isfinite(float(v)) else None


def km_curve(durations: np.ndarray, events: np.ndarray, ticks: Sequence[float]) -> dict[str, Any]:
    """Kaplan-Meier estimate with its 95% confidence band, median and numbers at risk.

    Parameters
    ----------
    durations, events : ndarray of shape (n,)
        Times (any unit) and events (1 = event, 0 = censored); rows with a missing value are left out.
    ticks : sequence of float
        Times at which the numbers at risk (rows with a duration >= t) are counted.

    Returns
    -------
    dict
        ``n``, ``events``, ``times``/``survival``/``lower``/``upper`` (step curve from time 0; the band is
        lifelines' exponential Greenwood interval), ``median`` and its 95% CI ``median_lower``/``median_upper``
        (None when the curve, or the band's bound, never reaches 1/2), ``at_risk`` (``[tick, count]`` pairs).
    """
    from lifelines import KaplanMeierFitter
    from lifelines.utils import median_survival_times

    T = np.asarray(durations, dtype=float)
    E = np.asarray(events, dtype=float)
    keep = np.isfinite(T) & np.isfinite(E)
    T, E = T[keep], E[keep]
    out: dict[str, Any] = {"n": len(T), "events": int((E > 0).sum()),
                           "at_risk": [[float(t), int((T >= t).sum())] for t in ticks]}
    if len(T) == 0:
        return {**out, "times": [], "survival": [], "lower": [], "upper": [], "median": None,
                "median_lower": None, "median_upper": None}
    kmf = KaplanMeierFitter().fit(T, E > 0)
    ci = kmf.confidence_interval_survival_function_
    sf = kmf.survival_function_.iloc[:, 0]
    med_ci = median_survival_times(ci)
    return {
        **out,
        "times": [float(t) for t in sf.index],
        "survival": [float(v) for v in sf.to_numpy()],
        "lower": [float(v) for v in ci.iloc[:, 0].fillna(1.0).to_numpy()],
        "upper": [float(v) for v in ci.iloc[:, 1].fillna(1.0).to_numpy()],
        "median": _num(kmf.median_survival_time_),
        "median_lower": _num(med_ci.iloc[0, 0]),
        "median_upper": _num(med_ci.iloc[0, 1]),
    }


def arm_hazard_ratio(
    arm_durations: np.ndarray, arm_events: np.ndarray, ref_durations: np.ndarray, ref_events: np.ndarray
) -> dict[str, float | None]:
    """Hazard ratio of the arm against the reference: lifelines' ``CoxPHFitter`` on an arm indicator.

    Returns
    -------
    dict
        ``hr`` (> 1: the arm's patients die sooner), ``hr_lower``/``hr_upper`` (95% CI), ``p`` (Wald) and the
        two-group log-rank ``logrank_p``; all None when either group has no event.
    """
    from lifelines import CoxPHFitter

    frame = pd.DataFrame({
        "T": np.r_[np.asarray(arm_durations, float), np.asarray(ref_durations, float)],
        "E": np.r_[np.asarray(arm_events, float), np.asarray(ref_events, float)],
        "arm": np.r_[np.ones(len(arm_durations)), np.zeros(len(ref_durations))],
    }).dropna()
    none: dict[str, float | None] = {"hr": None, "hr_lower": None, "hr_upper": None, "p": None, "logrank_p": None}
    if frame.groupby("arm")["E"].sum().min() <= 0 or frame["arm"].nunique() < 2:
        return none
    row = CoxPHFitter().fit(frame, "T", "E").summary.loc["arm"]
    return {"hr": _num(row["exp(coef)"]), "hr_lower": _num(row["exp(coef) lower 95%"]),
            "hr_upper": _num(row["exp(coef) upper 95%"]), "p": _num(row["p"]),
            "logrank_p": _num(logrank(frame["T"].to_numpy(), frame["arm"].to_numpy(), frame["E"].to_numpy()))}


def standardized_mean_differences(
    arm: pd.DataFrame, reference: pd.DataFrame, schema: TableSchema, columns: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Covariate balance table: the standardised mean difference of each covariate between the arm and the reference.

    ``(mean_arm - mean_ref) / sqrt((var_arm + var_ref) / 2)`` (Austin 2009): for a numeric column the sample
    variances; for a binary column and for each level of a categorical column (as a 0/1 indicator) ``p (1 - p)``.
    Missing values are left out per column. ``columns`` default: the schema's clinical and genomic data columns
    that both tables hold.

    Returns
    -------
    list of dict
        ``column``, ``level`` (None unless categorical), ``arm``/``reference`` (mean or share), ``smd`` (None when
        both variances are 0 and the means equal or a side has no value) and ``flag`` (``|smd| > SMD_FLAG``).
    """
    if columns is None:
        columns = [c.name for c in schema.columns
                   if c.role in (ColumnRole.CLINICAL, ColumnRole.GENOMIC) and c.name in arm and c.name in reference]
    rows: list[dict[str, Any]] = []
    for col in columns:
        spec = schema[col]
        a, r = arm[col].dropna(), reference[col].dropna()
        if spec.kind is ColumnKind.CATEGORICAL:
            levels = list(spec.categories or sorted(set(a.astype(str)) | set(r.astype(str))))
            for level in levels:
                pa = float((a.astype(str) == level).mean()) if len(a) else math.nan
                pr = float((r.astype(str) == level).mean()) if len(r) else math.nan
                rows.append(_smd_row(col, level, pa, pr, pa * (1 - pa), pr * (1 - pr)))
        elif spec.kind is ColumnKind.BINARY:
            pa = float(a.astype(float).mean()) if len(a) else math.nan
            pr = float(r.astype(float).mean()) if len(r) else math.nan
            rows.append(_smd_row(col, None, pa, pr, pa * (1 - pa), pr * (1 - pr)))
        else:
            ma = float(a.astype(float).mean()) if len(a) else math.nan
            mr = float(r.astype(float).mean()) if len(r) else math.nan
            va = float(a.astype(float).var(ddof=1)) if len(a) > 1 else math.nan
            vr = float(r.astype(float).var(ddof=1)) if len(r) > 1 else math.nan
            rows.append(_smd_row(col, None, ma, mr, va, vr))
    return rows


def _smd_row(col: str, level: str | None, ma: float, mr: float, va: float, vr: float) -> dict[str, Any]:
    pooled = math.sqrt((va + vr) / 2) if math.isfinite(va) and math.isfinite(vr) else math.nan
    if not (math.isfinite(ma) and math.isfinite(mr)) or not math.isfinite(pooled):
        smd = None
    elif pooled == 0:
        smd = 0.0 if ma == mr else None
    else:
        smd = (ma - mr) / pooled
    return {"column": col, "level": level, "arm": _num(ma), "reference": _num(mr), "smd": smd,
            "flag": smd is not None and abs(smd) > SMD_FLAG}


def _ticks(horizon: float) -> list[float]:
    if not math.isfinite(horizon) or horizon <= 0:
        return [0.0]
    return [float(t) for t in np.round(np.linspace(0.0, horizon, N_RISK_TICKS), 2)]


def arm_report(
    arm: pd.DataFrame,
    schema: TableSchema,
    *,
    reference: pd.DataFrame | None = None,
    header: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON-able arm report: per endpoint the arm's KM curve, median and numbers at risk; with a reference,
    its curve too, the log-rank p, the hazard ratio with its 95% CI and the median difference; and the balance
    table of covariates.

    Parameters
    ----------
    arm : DataFrame
        The synthetic arm's rows.
    schema : TableSchema
        Its schema (endpoints, column kinds and roles).
    reference : DataFrame, optional
        The real eligible patients, or a trial's own arm, in the same columns (those it lacks are left out).
    header : mapping, optional
        What the report states first (criteria, model, counts, notes); copied as is.

    Returns
    -------
    dict
        ``header``, ``n_arm``, ``n_reference``, ``endpoints`` (per name: ``time_unit``, ``arm``, ``reference``,
        ``comparison`` with ``hr``, ``hr_lower``, ``hr_upper``, ``p``, ``logrank_p``, ``median_difference``) and
        ``balance``. Aggregates only: no row of either table.
    """
    endpoints: dict[str, Any] = {}
    for ep in schema.endpoints:
        if ep.duration_col not in arm or ep.event_col not in arm:
            continue
        has_ref = reference is not None and ep.duration_col in reference and ep.event_col in reference
        horizon = float(np.nanmax(arm[ep.duration_col].to_numpy(float))) if arm[ep.duration_col].notna().any() else math.nan
        if has_ref:
            assert reference is not None
            ref_max = reference[ep.duration_col].to_numpy(float)
            if np.isfinite(ref_max).any():
                horizon = min(horizon, float(np.nanmax(ref_max))) if math.isfinite(horizon) else float(np.nanmax(ref_max))
        ticks = _ticks(horizon)
        entry: dict[str, Any] = {"time_unit": ep.time_unit,
                                 "arm": km_curve(arm[ep.duration_col].to_numpy(float), arm[ep.event_col].to_numpy(float), ticks)}
        if has_ref:
            assert reference is not None
            rT, rE = reference[ep.duration_col].to_numpy(float), reference[ep.event_col].to_numpy(float)
            entry["reference"] = km_curve(rT, rE, ticks)
            comp: dict[str, Any] = dict(arm_hazard_ratio(arm[ep.duration_col].to_numpy(float),
                                                         arm[ep.event_col].to_numpy(float), rT, rE))
            ma, mr = entry["arm"]["median"], entry["reference"]["median"]
            comp["median_difference"] = None if ma is None or mr is None else ma - mr
            comp["median_relative_error"] = None if ma is None or mr is None or mr == 0 else abs(ma - mr) / mr
            entry["comparison"] = comp
        endpoints[ep.name] = entry
    return {
        "header": dict(header or {}),
        "n_arm": len(arm),
        "n_reference": None if reference is None else len(reference),
        "endpoints": endpoints,
        "balance": standardized_mean_differences(arm, reference, schema) if reference is not None else [],
        "smd_flag": SMD_FLAG,
    }


def arm_plots(report: Mapping[str, Any]) -> dict[str, str]:
    """Per endpoint, the Kaplan-Meier curves of the arm (and of its reference) with 95% bands, as inline SVG.

    The reference is labelled by the header's ``reference.short`` when the report has one, else "reference".
    """
    from fedsynth.evaluation import charts

    about = report.get("header", {}).get("reference")
    ref_label = str(about.get("short", "reference")) if isinstance(about, Mapping) else "reference"
    plots = {}
    for name, entry in report["endpoints"].items():
        curves = {"synthetic arm": entry["arm"]}
        if "reference" in entry:
            curves[ref_label] = entry["reference"]
        plots[name] = charts.figure_svg(charts.km_band_figure(name, curves, time_unit=entry["time_unit"]))
    return plots


def arm_html(report: Mapping[str, Any], *, title: str) -> str:
    """The arm report as one standalone HTML page (inline SVG charts from :mod:`.charts`)."""
    from fedsynth.evaluation._render import _env

    html: str = _env().get_template("arm.html.j2").render(r=report, plots=arm_plots(report), title=title)
    return html
