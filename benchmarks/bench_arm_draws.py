"""How closely a control arm follows its model: independent draws against balanced ones, model only.

For each of bench_arms.py's three arms, a reference median is read from a large draw of the model under the
criteria (``--truth-rows``, 30,000); then ``--repeats`` times a pool of 10 n rows is drawn under the criteria and
three arms of n = 300 are taken from it:

- ``independent``: n rows of the pool at random (n independent draws);
- ``balanced``: ``fedsynth arm``'s default (:func:`fedsynth.experiments.arm.balanced_rows`: systematic sampling
  along OS, the pool ordered by event, then time);
- ``balanced_time_first``: the same with the pool ordered by time, then event (the order tried first; kept as
  the comparison that chose the shipped order).

Per arm: the root mean square of log(arm median / reference median), the share of arms within 15% of the
reference median, and each balanced order's RMS as a ratio of the independent one. No real patient is read: the
figures say how much of one draw's noise an arm carries, not how far the model is from the patients.

Usage: python benchmarks/bench_arm_draws.py [--generator vae_bgm|bn] [--seeds 13,16,19] [--fits-dir DIR]
       [--repeats 20] [--truth-rows 30000] [--out FILE]
``--fits-dir`` reuses (or saves) the fits of bench_arms.py's ``--fits-dir``; without it each seed is fitted
(federated, 3 sites 60/30/10, as bench_arms.py). Writes benchmarks/results/arm_draws_model_only.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("high_risk_tp53_wt", "tp53_mutated", "lower_risk")
ORDERS = ("independent", "balanced", "balanced_time_first")


def _median(df: Any, duration: str, event: str) -> float:
    from lifelines import KaplanMeierFitter

    df = df[df[duration].notna() & df[event].notna()]
    return float(KaplanMeierFitter().fit(df[duration], df[event]).median_survival_time_)


def main() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_arms import BN_PARAMS, _cached_fit

    from fedsynth.cohort.conditions import check_sampling_inputs
    from fedsynth.cohort.criteria import read_criteria
    from fedsynth.cohort.datasets import load
    from fedsynth.cohort.partition import make_partition
    from fedsynth.experiments.arm import BALANCED_POOL_FACTOR, balanced_rows

    ap = argparse.ArgumentParser()
    ap.add_argument("--generator", default="vae_bgm")
    ap.add_argument("--seeds", default="13,16,19")
    ap.add_argument("--fits-dir", default=None)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--truth-rows", type=int, default=30_000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "arm_draws_model_only.json"))
    args = ap.parse_args()
    cohort = load("mds-iwgpm")
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for seed in [int(s) for s in args.seeds.split(",")]:
        part = make_partition(cohort.data, cohort.schema, proportions=(0.6, 0.3, 0.1), random_state=seed)
        gen, _ = _cached_fit(args.generator, part, seed, BN_PARAMS, args.fits_dir)
        ep = next(e for e in part.schema.endpoints if e.name == "OS")
        d, e = ep.duration_col, ep.event_col
        for arm_name in ARMS:
            crit = read_criteria(ROOT / "configs" / "arms" / f"{arm_name}.yaml", part.schema)
            req = check_sampling_inputs(crit.condition_items(), crit.where(part.schema), part.schema)
            kw = {"conditions": req.conditions or None, "where": req.where, "max_tries": 10_000, "max_seconds": 600}
            truth = _median(gen.sample(args.truth_rows, random_state=10_000 + seed, **kw), d, e)
            logs: dict[str, list[float]] = {k: [] for k in ORDERS}
            for r in range(args.repeats):
                pool = gen.sample(BALANCED_POOL_FACTOR * args.n, random_state=1000 * seed + r, **kw)
                arms = {
                    "independent": pool.sample(args.n, random_state=r),
                    "balanced": balanced_rows(pool, args.n, duration_col=d, event_col=e,
                                              rng=np.random.default_rng([seed, r])),
                    # the same sampling with the two sort keys swapped: ordered by time, then event
                    "balanced_time_first": balanced_rows(pool, args.n, duration_col=e, event_col=d,
                                                         rng=np.random.default_rng([seed, r])),
                }
                for k, arm in arms.items():
                    logs[k].append(math.log(_median(arm, d, e) / truth))
            row: dict[str, Any] = {"generator": args.generator, "seed": seed, "arm": arm_name,
                                   "model_median": round(truth, 4)}
            for k, v in logs.items():
                a = np.abs(np.asarray(v))
                row[k] = {"rms_log": round(float(np.sqrt((a ** 2).mean())), 4),
                          "within_15pct": float((a <= math.log(1.15)).mean())}
            for k in ORDERS[1:]:
                row[f"{k}_rms_ratio"] = round(row[k]["rms_log"] / row["independent"]["rms_log"], 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {k: {"rms_log_range": [min(r[k]["rms_log"] for r in rows), max(r[k]["rms_log"] for r in rows)],
                   "mean_within_15pct": round(float(np.mean([r[k]["within_15pct"] for r in rows])), 3)}
               for k in ORDERS}
    out = {"generator": args.generator, "seeds": args.seeds, "n": args.n, "pool_factor": BALANCED_POOL_FACTOR,
           "repeats": args.repeats, "truth_rows": args.truth_rows, "summary": summary, "rows": rows,
           "seconds": round(time.perf_counter() - t0, 1),
           "command": f"OMP_NUM_THREADS=1 python benchmarks/bench_arm_draws.py --generator {args.generator} "
                      f"--seeds {args.seeds} --fits-dir FITS --repeats {args.repeats}"}
    path = Path(args.out)
    old = json.loads(path.read_text()) if path.exists() else {}
    runs = {k: v for k, v in old.get("runs", {}).items() if k != args.generator}
    runs[args.generator] = out
    path.write_text(json.dumps({"runs": runs}, indent=2))


if __name__ == "__main__":
    main()
