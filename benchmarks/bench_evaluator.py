"""Benchmark: fedsynth's full evaluation report against SDMetrics' QualityReport on the real MDS cohort.

Times, in one process, (1) ``evaluate`` + ``to_json`` + ``to_html`` on the training pool (90% of the cohort,
~2,661 rows) against a same-size "synthetic" table (a bootstrap resample of the pool with continuous values
perturbed by 5% of their standard deviation), (2) ``quick_scores`` on the same pair and (3) SDMetrics'
``sdmetrics.reports.single_table.QualityReport`` with metadata built from the schema. The evaluator's caches
(``CoxPHFitter`` results and Fisher tests, keyed on hashes of the data) are cleared before every timed
``evaluate`` and ``quick_scores``, so each figure is a cold run; (4) ``evaluate`` of a second synthetic table
against the same real pool right after the first (real-data fits then come from the cache: the usual case of an
experiment scoring several synthetic tables against one training pool); (5) once, ``evaluate`` with
``cox_engine="lifelines"`` (every Cox model a lifelines ``CoxPHFitter``), with the largest difference of any
score between the two engines. Writes
``benchmarks/results/evaluator.json``. The report files go to a temporary folder (they are not kept).

Run: ``FEDSYNTH_DATA_DIR=/path/to/data python benchmarks/bench_evaluator.py [--repeat N]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results" / "evaluator.json"


def _pair(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, object]:
    from fedsynth.cohort.datasets import load_cohort
    from fedsynth.cohort.schema import ColumnKind

    cohort = load_cohort("mds-iwgpm")
    data, schema = cohort.data, cohort.schema
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(data))
    n_h = len(data) // 10
    holdout, pool = data.iloc[np.sort(idx[:n_h])], data.iloc[np.sort(idx[n_h:])]
    syn = pool.iloc[rng.integers(0, len(pool), len(pool))].reset_index(drop=True)
    syn = syn[schema.data_columns].copy()
    for c in schema.data_columns:
        if schema[c].kind is ColumnKind.CONTINUOUS:
            sd = float(pool[c].std())
            syn[c] = (syn[c] + rng.normal(0, 0.05 * sd, len(syn))).clip(lower=schema[c].lower)
    return pool, syn, holdout, schema


def _clear_caches() -> None:
    from fedsynth.evaluation import cox, genomics

    cox._COX_CACHE.clear()
    genomics._fisher_exact.cache_clear()


def _second_synthetic(pool: pd.DataFrame, syn: pd.DataFrame, schema: object, seed: int = 1) -> pd.DataFrame:
    """Another synthetic table made the same way as ``_pair``'s, from the same pool."""
    from fedsynth.cohort.schema import ColumnKind

    rng = np.random.default_rng(seed)
    out = pool.iloc[rng.integers(0, len(pool), len(pool))].reset_index(drop=True)[list(syn.columns)].copy()
    for c in schema.data_columns:  # type: ignore[attr-defined]
        if schema[c].kind is ColumnKind.CONTINUOUS:  # type: ignore[index]
            sd = float(pool[c].std())
            out[c] = (out[c] + rng.normal(0, 0.05 * sd, len(out))).clip(lower=schema[c].lower)  # type: ignore[index]
    return out


def _largest_score_difference(a: object, b: object) -> float:
    """Largest absolute difference between two reports' CSF, GSF, their components, hazard-ratio rows and TSTR."""
    da, db = a.to_dict(), b.to_dict()  # type: ignore[attr-defined]
    diffs = [abs(da["scores"][k]["value"] - db["scores"][k]["value"]) for k in ("csf", "gsf")]
    for k in ("csf", "gsf"):
        for name, comp in da["scores"][k]["components"].items():
            v, w = comp["value"], db["scores"][k]["components"][name]["value"]
            if v is not None and w is not None:
                diffs.append(abs(v - w))
    for ra, rb in zip(da["survival"]["hazard_ratios"]["rows"], db["survival"]["hazard_ratios"]["rows"]):
        for key in ("log_hr_real", "log_hr_synthetic"):
            if ra[key] is not None and rb[key] is not None and np.isfinite(ra[key]) and np.isfinite(rb[key]):
                diffs.append(abs(ra[key] - rb[key]))
    for ep, v in da["utility"]["endpoints"].items():
        for key in ("c_index_train_real", "c_index_train_synthetic"):
            if v[key] is not None:
                diffs.append(abs(v[key] - db["utility"]["endpoints"][ep][key]))
    return float(max(diffs))


def _sdmetrics_metadata(schema: object) -> dict:
    from fedsynth.cohort.schema import ColumnKind

    cols = {}
    for c in schema.data_columns:  # type: ignore[attr-defined]
        kind = schema[c].kind  # type: ignore[index]
        cols[c] = {"sdtype": "numerical" if kind in (ColumnKind.CONTINUOUS, ColumnKind.INTEGER) else "categorical"}
    return {"columns": cols}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=1, help="Repeat each timing and keep the fastest.")
    args = parser.parse_args()
    os.environ.setdefault("FEDSYNTH_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    from fedsynth.evaluation import evaluate, quick_scores

    pool, syn, holdout, schema = _pair()
    real = pool[schema.data_columns]  # type: ignore[attr-defined]
    times_full, times_quick, times_sdm, cpu_sdm = [], [], [], []
    report = None
    for _ in range(args.repeat):
        _clear_caches()
        with tempfile.TemporaryDirectory() as tmp:
            c0 = time.process_time()
            t0 = time.perf_counter()
            report = evaluate(pool, syn, schema, holdout_data=holdout, random_state=0)
            t1 = time.perf_counter()
            c1 = time.process_time()
            report.to_json(Path(tmp) / "report.json")
            t2 = time.perf_counter()
            report.to_html(Path(tmp) / "report.html")
            t3 = time.perf_counter()
        times_full.append({"evaluate": t1 - t0, "to_json": t2 - t1, "to_html": t3 - t2, "total": t3 - t0,
                           "evaluate_cpu": c1 - c0, "parts": dict(report.info["timings_s"])})
        _clear_caches()
        t0 = time.perf_counter()
        quick = quick_scores(pool, syn, schema, holdout_data=holdout, random_state=0)
        times_quick.append(time.perf_counter() - t0)
    # A second synthetic table against the same real pool, right after a cold evaluate of the first.
    syn2 = _second_synthetic(pool, syn, schema)
    _clear_caches()
    evaluate(pool, syn, schema, holdout_data=holdout, random_state=0)
    c0 = time.process_time()
    t0 = time.perf_counter()
    report2 = evaluate(pool, syn2, schema, holdout_data=holdout, random_state=0)
    time_second = time.perf_counter() - t0
    cpu_second = time.process_time() - c0
    # The same report with every Cox model fitted by lifelines' CoxPHFitter.
    _clear_caches()
    c0 = time.process_time()
    t0 = time.perf_counter()
    report_ll = evaluate(pool, syn, schema, holdout_data=holdout, random_state=0, cox_engine="lifelines")
    time_ll, cpu_ll = time.perf_counter() - t0, time.process_time() - c0
    ll_diff = _largest_score_difference(report, report_ll)
    from sdmetrics.reports.single_table import QualityReport

    metadata = _sdmetrics_metadata(schema)
    sdm_score = None
    for _ in range(args.repeat):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qr = QualityReport()
            c0 = time.process_time()
            t0 = time.perf_counter()
            qr.generate(real, syn, metadata, verbose=False)
            times_sdm.append(time.perf_counter() - t0)
            cpu_sdm.append(time.process_time() - c0)
            sdm_score = float(qr.get_score())
    best = min(times_full, key=lambda t: t["total"])
    sdm = min(times_sdm)
    assert report is not None
    import importlib.metadata as md

    result = {
        "benchmark": "evaluator",
        "rows": {"real": len(pool), "synthetic": len(syn), "holdout": len(holdout), "columns": len(schema.data_columns)},  # type: ignore[attr-defined]
        "synthetic_table": "bootstrap resample of the training pool, continuous columns + N(0, (0.05 sd)^2), clipped at lower bounds",
        "fedsynth_full_report_s": {k: round(v, 3) for k, v in best.items() if k not in ("parts", "evaluate_cpu")},
        "fedsynth_evaluate_parts_s": best["parts"],
        "cpu_s_note": "process CPU seconds (one thread), less sensitive than wall time to other users of the machine",
        "fedsynth_evaluate_cpu_s": round(best["evaluate_cpu"], 3),
        "sdmetrics_quality_report_cpu_s": round(min(cpu_sdm), 3),
        "fedsynth_evaluate_second_synthetic_same_real_s": round(time_second, 3),
        "fedsynth_evaluate_second_synthetic_same_real_cpu_s": round(cpu_second, 3),
        "fedsynth_evaluate_second_synthetic_parts_s": dict(report2.info["timings_s"]),
        "fedsynth_quick_scores_s": round(min(times_quick), 3),
        "sdmetrics_quality_report_s": round(sdm, 3),
        "ratio_sdmetrics_over_fedsynth": round(sdm / best["total"], 3),
        "cox_engine": "batched (default)",
        "lifelines_engine": {
            "evaluate_s": round(time_ll, 3), "evaluate_cpu_s": round(cpu_ll, 3),
            "parts_s": dict(report_ll.info["timings_s"]),
            "largest_difference_of_any_score_vs_batched": ll_diff,
            "note": "cox_engine='lifelines': one CoxPHFitter per univariate model (~240) and per TSTR model (4)",
        },
        "fedsynth_faster": best["total"] < sdm,
        "under_30s": best["total"] < 30.0,
        "quick_under_3s": min(times_quick) < 3.0,
        "scores": {"csf": report.csf, "gsf": report.gsf, "quick_csf": quick["csf"], "quick_gsf": quick["gsf"],
                   "sdmetrics_quality_score": sdm_score},
        "repeat": args.repeat,
        "machine": {"cpus": os.cpu_count(), "load_average_1m_at_end": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(), "platform": platform.platform()},
        "versions": {p: md.version(p) for p in ("numpy", "pandas", "scipy", "scikit-learn", "lifelines", "sdmetrics", "matplotlib")},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
