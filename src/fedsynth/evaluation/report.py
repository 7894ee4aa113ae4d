"""The evaluator's entry points: :func:`evaluate` (full report), :func:`quick_scores` (per-round snapshots),
:func:`render_rounds_html`, and the immutable :class:`EvaluationReport` with its JSON and HTML renderings.

Signatures (for the federation and experiment code)::

    evaluate(real_data, synthetic_data, schema, *, holdout_data=None, random_state=None, strata=None,
             detection=True, utility=True) -> EvaluationReport
    quick_scores(real_data, synthetic_data, schema, *, holdout_data=None, random_state=None) -> dict
        # keys: csf, gsf, csf_components, gsf_components, csf_undefined, gsf_undefined,
        #       nndr {synthetic: {mean, p5}, holdout: {mean, p5} | None}, column_fidelity, pair_fidelity, seconds
    render_rounds_html(rounds, references, final, path, *, title="Scores by round", arms=()) -> Path
        # rounds: [{"round": 1, "csf": .., "gsf": .., "nndr_p5": ..} | quick_scores(...) + {"round": n}, ...]
        # references: {"centralized": {"csf": .., "gsf": .., "nndr_p5": ..}, "site-1 alone": {...}}
        # final: an EvaluationReport embedded below the round plots, or None

All frames are in the schema's canonical dtypes (``schema.coerce``); the real data are the training pool.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from fedsynth._io import atomic_write_text, versions
from fedsynth._io import jsonable as to_jsonable
from fedsynth.cohort.schema import StratumSpec, TableSchema
from fedsynth.evaluation import cox as _cox
from fedsynth.evaluation import fidelity as _fid
from fedsynth.evaluation import genomics as _gen
from fedsynth.evaluation import privacy as _priv
from fedsynth.evaluation import survival as _surv
from fedsynth.evaluation import survival_effects as _effects
from fedsynth.evaluation import utility as _util
from fedsynth.evaluation._prep import Columns, check_inputs, spawn
from fedsynth.evaluation.scores import DEFINITIONS, compute_csf, compute_gsf

log = logging.getLogger(__name__)

REPORT_VERSION = 1


def _freeze(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return tuple(_freeze(v) for v in obj)
    return obj


def _thaw(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _thaw(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return [_thaw(v) for v in obj]
    return obj


@dataclass(frozen=True)
class EvaluationReport:
    """The result of :func:`evaluate`: JSON-able sections, read-only.

    Attributes
    ----------
    scores : mapping
        ``csf`` and ``gsf`` with ``components`` and ``undefined``.
    fidelity, genomics, survival, utility, privacy : mapping
        The sections (see the JSON written by :meth:`to_json`).
    survival_effects : mapping
        Strict survival figures, the survival-effect fidelity, its flags and endpoint-rule violations
        (:func:`fedsynth.evaluation.survival_effects.survival_effects`); empty in reports written before it.
    info : mapping
        Versions, seeds, row counts, timings and the score definitions.
    """

    scores: Mapping[str, Any]
    fidelity: Mapping[str, Any]
    genomics: Mapping[str, Any]
    survival: Mapping[str, Any]
    utility: Mapping[str, Any]
    privacy: Mapping[str, Any]
    info: Mapping[str, Any] = field(default_factory=dict)
    survival_effects: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("scores", "fidelity", "genomics", "survival", "utility", "privacy", "info", "survival_effects"):
            object.__setattr__(self, name, _freeze(to_jsonable(getattr(self, name))))

    @property
    def csf(self) -> float | None:
        value: float | None = self.scores["csf"]["value"]
        return value

    @property
    def gsf(self) -> float | None:
        value: float | None = self.scores["gsf"]["value"]
        return value

    @property
    def survival_effect_fidelity(self) -> float | None:
        value: float | None = self.survival_effects.get("fidelity")
        return value

    def to_dict(self) -> dict[str, Any]:
        """A deep, plain-Python copy (JSON-able)."""
        return {
            "scores": _thaw(self.scores), "fidelity": _thaw(self.fidelity), "genomics": _thaw(self.genomics),
            "survival": _thaw(self.survival), "utility": _thaw(self.utility), "privacy": _thaw(self.privacy),
            "info": _thaw(self.info), "survival_effects": _thaw(self.survival_effects),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationReport:
        return cls(**{k: copy.deepcopy(dict(data.get(k, {}))) for k in
                      ("scores", "fidelity", "genomics", "survival", "utility", "privacy", "info",
                       "survival_effects")})

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the report as JSON (atomically: temp file, then rename). Returns the path."""
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        return atomic_write_text(path, text)

    def to_html(self, path: str | os.PathLike[str], *, title: str = "Synthetic data evaluation") -> Path:
        """Write one standalone HTML file (inline CSS, plots as inline SVG). Returns the path."""
        from fedsynth.evaluation import _render

        return atomic_write_text(path, _render.report_html(self.to_dict(), title=title))


def _seed_repr(random_state: Any) -> Any:
    if random_state is None or isinstance(random_state, (int, np.integer)):
        return None if random_state is None else int(random_state)
    return type(random_state).__name__


def evaluate(
    real_data: pd.DataFrame,
    synthetic_data: pd.DataFrame,
    schema: TableSchema,
    *,
    holdout_data: pd.DataFrame | None = None,
    random_state: int | np.random.Generator | None = None,
    strata: Sequence[str | StratumSpec] | None = None,
    detection: bool = True,
    utility: bool = True,
    cox_engine: str = "batched",
    effects_data: pd.DataFrame | None = None,
) -> EvaluationReport:
    """Score a synthetic table against the real training pool (SAFE-style: fidelity, utility, privacy).

    Parameters
    ----------
    real_data : DataFrame
        The real training pool, in the schema's canonical dtypes.
    synthetic_data : DataFrame
        The synthetic table (same columns; extra columns are ignored).
    schema : TableSchema
        Kinds, roles and survival endpoints.
    holdout_data : DataFrame, optional
        Real rows not used for training: baselines of the privacy figures and test set of TSTR.
    random_state : int or numpy Generator, optional
        Seed of every random choice (samples, classifier, bootstrap).
    strata : sequence of str or StratumSpec, optional
        Columns to stratify survival by (a numeric column declared with bands in the schema keeps its bands).
        Default: the schema's declared strata, then every categorical clinical column and every gene mutated in
        >= 5% of real rows (:func:`fedsynth.evaluation.strata.default_strata`).
    detection, utility : bool
        Compute the detection AUC and the TSTR C-index (the two slowest parts).
    cox_engine : {"batched", "lifelines"}
        How the Cox models (univariate hazard ratios, TSTR) are fitted: fedsynth's batched Newton-Raphson on
        ``CoxPHFitter``'s objective (default; ~0.1 s for a report's ~240 models) or one lifelines
        ``CoxPHFitter`` per model (~10 s). They agree to 1e-6.
    effects_data : DataFrame, optional
        A larger synthetic table from the same model for the strict survival figures only
        (:func:`fedsynth.evaluation.survival_effects.survival_effects`: curves, endpoint rules, and Cox effects read
        at the real size from up to :data:`~fedsynth.evaluation.survival_effects.EFFECT_ROWS_FACTOR` times the real
        rows, so one draw's luck decides less). Default: ``synthetic_data``. ``fedsynth run`` passes
        ``EFFECT_ROWS_FACTOR`` times the training rows drawn from the final model (the report's section says so).

    Returns
    -------
    EvaluationReport
    """
    _cox.check_cox_engine(cox_engine)
    real_data, synthetic_data, holdout_data = _prepare(real_data, synthetic_data, holdout_data, schema)
    check_inputs(real_data, synthetic_data, schema, holdout_data)
    if effects_data is not None:
        effects_data = _prepare(real_data, effects_data, None, schema)[1]
        check_inputs(real_data, effects_data, schema, None)
    with _single_thread():
        return _evaluate(
            real_data, synthetic_data, schema, holdout_data, random_state, strata, detection, utility, cox_engine,
            effects_data,
        )


def _prepare(
    real_data: pd.DataFrame, synthetic_data: pd.DataFrame, holdout_data: pd.DataFrame | None, schema: TableSchema
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """Fresh 0..n-1 indexes (a bootstrap sample may repeat labels) and derived columns recomputed where a frame
    lacks them but has their inputs (generators do not sample derived columns)."""
    from fedsynth.cohort.derived import DERIVATIONS, add_derived

    def prep(frame: Any) -> Any:
        if not isinstance(frame, pd.DataFrame):
            return frame
        frame = frame.reset_index(drop=True)
        missing = [c for c in schema.derived_columns if c not in frame.columns]
        if missing and all(
            schema[c].derived in DERIVATIONS and all(i in frame.columns for i in DERIVATIONS[schema[c].derived][1])  # type: ignore[index]
            for c in missing
        ):
            frame = add_derived(frame, schema)
        return frame

    return prep(real_data), prep(synthetic_data), None if holdout_data is None else prep(holdout_data)


def _single_thread() -> Any:
    """BLAS and OpenMP limited to one thread: the matrices here are small, and on a shared machine
    multi-threaded BLAS spins (measured: a 2,500 x 50 Cox fit 0.05 s on one thread, 1.7 s on two busy cores)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


def _evaluate(
    real_data: pd.DataFrame,
    synthetic_data: pd.DataFrame,
    schema: TableSchema,
    holdout_data: pd.DataFrame | None,
    random_state: int | np.random.Generator | None,
    strata: Sequence[str | StratumSpec] | None,
    detection: bool,
    utility: bool,
    cox_engine: str,
    effects_data: pd.DataFrame | None = None,
) -> EvaluationReport:
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    rngs = spawn(random_state, 5)
    cols = Columns.from_schema(schema, real_data, synthetic_data)

    def timed(name: str, fn: Any, *a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        res = fn(*a, **k)
        timings[name] = round(time.perf_counter() - t, 3)
        return res

    fid = timed("column_fidelity", _fid.column_fidelity, real_data, synthetic_data, schema)
    fid["pairs"] = timed("pair_fidelity", _fid.pair_fidelity, real_data, synthetic_data, schema)
    fid["detection"] = (
        timed("detection", _fid.detection_auc, real_data, synthetic_data, schema, random_state=rngs[0])
        if detection else None
    )
    gen = timed("genomics", _gen.genomics_analysis, real_data, synthetic_data, schema, rng=rngs[1])
    surv = timed("survival", _surv.survival_analysis, real_data, synthetic_data, schema, strata=strata, rng=rngs[2],
                 cox_engine=cox_engine)
    util = (
        timed("utility", _util.tstr_analysis, real_data, synthetic_data, schema, holdout_data=holdout_data,
              cox_engine=cox_engine)
        if utility else {"note": "not computed (utility=False)"}
    )
    priv = timed("privacy", _priv.privacy_analysis, real_data, synthetic_data, schema,
                 holdout_data=holdout_data, rng=rngs[3])
    effects = timed("survival_effects", _effects.survival_effects, real_data,
                    synthetic_data if effects_data is None else effects_data, schema, strata=strata, rng=rngs[4],
                    cox_engine=cox_engine)
    if effects_data is not None:  # the section says where its rows come from
        effects["sample"] = (f"A synthetic table of {len(effects_data)} rows from the same model, drawn for these figures "
                             f"(the evaluated table has {len(synthetic_data)}). {effects['sample']}")
    csf = compute_csf(fid, surv, list(cols.clinical))
    gsf = compute_gsf(gen, surv)
    timings["total"] = round(time.perf_counter() - t0, 3)
    info = {
        "report_version": REPORT_VERSION,
        "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "schema": schema.name,
        "versions": versions(("fedsynth", "numpy", "pandas", "scipy", "scikit-learn", "lifelines", "sdmetrics", "jinja2")),
        "random_state": _seed_repr(random_state),
        "rows": {"real": len(real_data), "synthetic": len(synthetic_data),
                 "holdout": None if holdout_data is None else len(holdout_data)},
        "columns": {"data": list(cols.data), "clinical": list(cols.clinical), "genomic": list(cols.genomic),
                    "outcome": list(cols.outcome)},
        "endpoints": [ep.to_dict() for ep in schema.endpoints],
        "timings_s": timings,
        "definitions": DEFINITIONS,
        "implementations": {
            "column similarity": "scipy.stats.ks_2samp (= SDMetrics KSComplement) and SDMetrics TVComplement on "
                                 "category codes (missing = one more category); scipy chi2_contingency",
            "pairs": "pandas Spearman correlation; contingency similarity in vectorised numpy (SDMetrics "
                     "ContingencySimilarity ~7 ms per pair, too slow for ~1,000 pairs every round)",
            "Kaplan-Meier / log-rank": "scipy.stats.ecdf (censored data) / scipy.stats.logrank (2 groups), lifelines multivariate_logrank_test (3+)",
            "univariate Cox": _cox.COX_ENGINES[cox_engine],
            "TSTR": f"{_cox.COX_ENGINES[cox_engine]} + lifelines concordance_index",
            "Fisher's exact test": "scipy.stats.fisher_exact per table, scipy.stats.false_discovery_control (BH)",
            "detection": "scikit-learn HistGradientBoostingClassifier",
            "strict survival figures": "Kaplan-Meier by scipy.stats.ecdf; medians, RMST (area under the step "
                                       "curve) and the sup distance are tested equal to lifelines "
                                       "(median_survival_time_, restricted_mean_survival_time); Cox effects: "
                                       + _cox.COX_ENGINES[cox_engine],
            "Gower": "numpy, chunked",
            "plots": "matplotlib figures (fedsynth.evaluation.charts) inlined as SVG (no script, no network)",
        },
    }
    log.info("evaluation finished in %.1f s (CSF %s, GSF %s, survival-effect fidelity %s)", timings["total"],
             csf["value"], gsf["value"], effects["fidelity"])
    return EvaluationReport(
        scores={"csf": csf, "gsf": gsf},
        fidelity=fid, genomics=gen, survival=surv, utility=util, privacy=priv, info=info,
        survival_effects=effects,
    )


def quick_scores(
    real_data: pd.DataFrame,
    synthetic_data: pd.DataFrame,
    schema: TableSchema,
    *,
    holdout_data: pd.DataFrame | None = None,
    random_state: int | np.random.Generator | None = None,
) -> dict[str, Any]:
    """CSF, GSF (with components), NNDR and column/pair fidelity, fast enough for every federated round.

    The same definitions as :func:`evaluate` (no detection AUC, TSTR, strata, DCR or membership inference).

    Returns
    -------
    dict
        ``csf``, ``gsf``, ``csf_components`` and ``gsf_components`` (name -> value or None),
        ``csf_undefined``, ``gsf_undefined``, ``nndr`` (``synthetic`` and ``holdout``: ``mean``, ``p5``;
        holdout None without a holdout), ``nndr_p5``, ``column_fidelity``, ``tests_passed``,
        ``pair_fidelity``, ``seconds``.
    """
    real_data, synthetic_data, holdout_data = _prepare(real_data, synthetic_data, holdout_data, schema)
    check_inputs(real_data, synthetic_data, schema, holdout_data)
    with _single_thread():
        return _quick_scores(real_data, synthetic_data, schema, holdout_data, random_state)


def _quick_scores(
    real_data: pd.DataFrame,
    synthetic_data: pd.DataFrame,
    schema: TableSchema,
    holdout_data: pd.DataFrame | None,
    random_state: int | np.random.Generator | None,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    rngs = spawn(random_state, 5)
    cols = Columns.from_schema(schema, real_data, synthetic_data)
    fid = _fid.column_fidelity(real_data, synthetic_data, schema, with_distributions=False)
    fid["pairs"] = _fid.pair_fidelity(real_data, synthetic_data, schema)
    gen = _gen.genomics_analysis(real_data, synthetic_data, schema, rng=rngs[1])
    surv = _surv.survival_analysis(real_data, synthetic_data, schema, rng=rngs[2], curves_only=True)
    # p-values inside the synthetic data are not needed for the scores
    surv["hazard_ratios"] = _surv.hazard_ratio_analysis(real_data, synthetic_data, schema, None, engine="batched")
    priv = _priv.privacy_analysis(real_data, synthetic_data, schema, holdout_data=holdout_data, rng=rngs[3], quick=True)
    csf = compute_csf(fid, surv, list(cols.clinical))
    gsf = compute_gsf(gen, surv)
    out = {
        "csf": csf["value"],
        "gsf": gsf["value"],
        "csf_components": {k: v["value"] for k, v in csf["components"].items()},
        "gsf_components": {k: v["value"] for k, v in gsf["components"].items()},
        "csf_undefined": csf["undefined"],
        "gsf_undefined": gsf["undefined"],
        "nndr": priv["nndr"],
        "nndr_p5": priv["nndr"]["synthetic"]["p5"],
        "column_fidelity": fid["mean_similarity"],
        "tests_passed": fid["tests_passed"],
        "pair_fidelity": fid["pairs"]["mean_similarity"],
        "seconds": round(time.perf_counter() - t0, 3),
    }
    scores: dict[str, Any] = to_jsonable(out)
    return scores


def render_rounds_html(
    rounds: list[dict[str, Any]],
    references: dict[str, dict[str, Any]],
    final: EvaluationReport | Mapping[str, Any] | None,
    path: str | os.PathLike[str],
    *,
    title: str = "Scores by round",
    arms: Sequence[Mapping[str, Any]] = (),
    sections: Sequence[Mapping[str, Any]] = (),
    facts: Sequence[tuple[str, str]] = (),
    scored_at_sites: bool = False,
) -> Path:
    """Write a standalone HTML page: CSF, GSF and NNDR p5 by round (with reference lines when there are
    references), the control arms, then the final report.

    Parameters
    ----------
    rounds : list of dict
        One dict per round with ``round`` (int) and ``csf``, ``gsf``, ``nndr_p5`` (as :func:`quick_scores`
        returns them; ``nndr_p5`` may also be read from ``nndr.synthetic.p5``).
    references : dict of str to dict
        Horizontal reference lines by label (e.g. ``"centralized"``, ``"site-1 alone"``), each with any of
        ``csf``, ``gsf``, ``nndr_p5``.
    final : EvaluationReport, its ``to_dict()``, or None
        The full evaluation of the final synthetic table, embedded below.
    path : path
        Where to write the file.
    title : str
        Page title.
    arms : sequence of dict, optional
        Control arms drawn from the final model, each with ``name``, ``title``, ``criteria_file``, ``files``
        (links relative to the page), ``kept``, ``error`` and ``report`` (:func:`fedsynth.evaluation.arm.arm_report`),
        as :func:`fedsynth.experiments.run_arms.draw_run_arms` gives them; shown before the final report.
    sections : sequence of dict
        Extra parts shown below the scores by round, each with ``title``, ``paragraphs`` (list of str),
        ``columns`` and ``rows`` (a table of aggregates); e.g. how a deployment's figures were computed.
    facts : sequence of (str, str)
        The run's facts listed under the title (label, text), e.g. ``("secure aggregation", "on")``.
    scored_at_sites : bool
        The rounds were scored at the sites against their own rows and combined by row counts (a deployment),
        not against pooled rows; the page says which.
    """
    from fedsynth.evaluation import _render

    html = _render.rounds_html(
        to_jsonable(rounds), to_jsonable(references),
        None if final is None else (final.to_dict() if isinstance(final, EvaluationReport) else _thaw(final)),
        title=title, arms=to_jsonable(list(arms)), sections=to_jsonable(list(sections)),
        facts=[(str(k), str(v)) for k, v in facts], scored_at_sites=scored_at_sites,
    )
    return atomic_write_text(path, html)
