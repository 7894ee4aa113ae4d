"""Utility: train-on-synthetic, test-on-real (TSTR) C-index of a Cox model, beside train-on-real.

A Cox model (``CoxPHFitter``'s objective: Efron ties, penalizer 0.1; fitted by
:func:`~fedsynth.evaluation.cox.cox_multivariate` or, with ``cox_engine="lifelines"``, by ``CoxPHFitter``
itself; the two agree to 1e-6) on a fixed covariate set chosen from the schema:
numeric clinical columns (median-imputed with the training table's medians), indicators of categorical
clinical levels held by >= 1% of real rows (most frequent level as reference) and genes mutated in >= 2% of
real patients. Derived columns are left out (they are functions of the others). Harrell's C
(``lifelines.utils.concordance_index``) on the holdout when given, else on the real training pool (then the
train-on-real figure is in-sample and optimistic).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.cohort.schema import ColumnKind, TableSchema
from fedsynth.evaluation._prep import Columns, labels
from fedsynth.evaluation.cox import GENE_MIN_FREQ, LEVEL_MIN_FREQ, check_cox_engine, cox_multivariate

log = logging.getLogger(__name__)

TSTR_PENALIZER = 0.1


def covariate_spec(real_data: pd.DataFrame, schema: TableSchema) -> list[tuple[str, str, Any]]:
    """``(name, column, level)`` of the covariates, chosen on the real data."""
    cols = Columns.from_schema(schema, real_data)
    spec: list[tuple[str, str, Any]] = []
    for c in cols.clinical:
        cs = schema[c]
        if cs.derived is not None:
            continue
        if cs.kind is ColumnKind.CATEGORICAL:
            vc = labels(real_data[c]).value_counts()
            vc = vc[vc >= max(5, LEVEL_MIN_FREQ * len(real_data))]
            spec += [(f"{c}={lv}", c, lv) for lv in sorted(vc.index[1:])]
        else:
            spec.append((c, c, None))
    for g in cols.genomic:
        if real_data[g].mean() >= GENE_MIN_FREQ:
            spec.append((g, g, None))
    return spec


def _matrix(data: pd.DataFrame, spec: list[tuple[str, str, Any]], medians: dict[str, float]) -> pd.DataFrame:
    out = {}
    cache: dict[str, pd.Series] = {}
    for name, c, level in spec:
        if level is None:
            out[name] = data[c].astype(float).fillna(medians[c]).to_numpy()
        else:
            lab = cache.setdefault(c, labels(data[c]))
            out[name] = (lab == level).astype(float).to_numpy()
    return pd.DataFrame(out, index=data.index)


def cox_fit(X: pd.DataFrame, durations: np.ndarray, events: np.ndarray, *, penalizer: float = TSTR_PENALIZER) -> Any:
    """lifelines ``CoxPHFitter`` (``penalizer``) fitted on the covariates ``X`` (one column each)."""
    from lifelines import CoxPHFitter

    frame = X.reset_index(drop=True).assign(
        __T=np.asarray(durations, dtype=float), __E=np.asarray(events, dtype=float) > 0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CoxPHFitter(penalizer=penalizer).fit(frame, "__T", "__E")


def _cindex(
    train: pd.DataFrame, test: pd.DataFrame, spec: list[tuple[str, str, Any]], dur: str, ev: str, engine: str
) -> float | None:
    from lifelines.utils import concordance_index

    train = train[train[dur].notna() & train[ev].notna() & (train[dur] > 0)]
    test = test[test[dur].notna() & test[ev].notna() & (test[dur] > 0)]
    if len(train) < 10 or len(test) < 10 or train[ev].sum() < 2 or test[ev].sum() < 1:
        return None
    medians = {c: float(train[c].median()) if train[c].notna().any() else 0.0 for _, c, lv in spec if lv is None}
    Xtr = _matrix(train, spec, medians)
    Xtr = Xtr.loc[:, Xtr.std() > 0]
    Xte = _matrix(test, spec, medians)[Xtr.columns]
    from lifelines.exceptions import ConvergenceError

    try:
        if engine == "lifelines":
            cph = cox_fit(Xtr, train[dur].to_numpy(), train[ev].to_numpy())
            risk = cph.predict_log_partial_hazard(Xte.reset_index(drop=True)).to_numpy()
        else:
            fit = cox_multivariate(train[dur].to_numpy(), train[ev].to_numpy(), Xtr.to_numpy(), penalizer=TSTR_PENALIZER)
            risk = Xte.to_numpy() @ fit["coef"]  # the log partial hazard up to a constant: same ranks
    except (ConvergenceError, np.linalg.LinAlgError):
        log.warning("TSTR Cox model could not be fitted (did not converge)")
        return None
    return float(concordance_index(test[dur].to_numpy(), -risk, test[ev].to_numpy()))


def tstr_analysis(
    real_data: pd.DataFrame,
    synthetic_data: pd.DataFrame,
    schema: TableSchema,
    *,
    holdout_data: pd.DataFrame | None = None,
    cox_engine: str = "batched",
) -> dict[str, Any]:
    """C-index of Cox models trained on synthetic and on real data, evaluated on holdout (else real).

    ``cox_engine``: ``"batched"`` or ``"lifelines"`` (see :mod:`fedsynth.evaluation.cox`).

    Returns
    -------
    dict
        ``evaluated_on``, ``covariates`` (names), and per endpoint ``c_index_train_real``,
        ``c_index_train_synthetic`` and ``ratio`` (synthetic / real).
    """
    from threadpoolctl import threadpool_limits

    check_cox_engine(cox_engine)
    with threadpool_limits(1):  # small matrices: multi-threaded BLAS only spins on a shared machine
        return _tstr(real_data, synthetic_data, schema, holdout_data, cox_engine)


def _tstr(
    real_data: pd.DataFrame,
    synthetic_data: pd.DataFrame,
    schema: TableSchema,
    holdout_data: pd.DataFrame | None,
    engine: str,
) -> dict[str, Any]:
    spec = covariate_spec(real_data, schema)
    test = holdout_data if holdout_data is not None else real_data
    out: dict[str, Any] = {
        "evaluated_on": "holdout" if holdout_data is not None else "real (training pool; train-on-real is in-sample)",
        "covariates": [s[0] for s in spec],
        "penalizer": TSTR_PENALIZER,
        "cox_engine": engine,
        "endpoints": {},
    }
    if not spec:
        out["note"] = "no covariates"
        return out
    for ep in schema.endpoints:
        if any(c not in d.columns for d in (real_data, synthetic_data, test) for c in (ep.duration_col, ep.event_col)):
            continue
        trtr = _cindex(real_data, test, spec, ep.duration_col, ep.event_col, engine)
        tstr = _cindex(synthetic_data, test, spec, ep.duration_col, ep.event_col, engine)
        out["endpoints"][ep.name] = {
            "c_index_train_real": trtr,
            "c_index_train_synthetic": tstr,
            "ratio": (tstr / trtr) if (trtr and tstr is not None) else None,
        }
    return out

