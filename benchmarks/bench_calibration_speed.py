"""Speed of the survival calibration's exposure count: per level and interval, events and person-time.

The calibration's raking (``fedsynth.generators.survival_calibration``) reads every stratum's events and person-time
at every pass, on every synthetic row it draws (200,000 plus 5,000 per level in the tuned FedAvg setting of
VAE-BGM), so this count sets most of its time. Two peers, side by side in one process on the same rows:

- ``dense``: the former count, a (rows x intervals) matrix of the time each row spends in each interval, summed per
  level through a one-hot product (kept here as the reference);
- ``binned``: :func:`fedsynth.generators.survival_strata.exposure`, which bins each row once: per level, the rows
  ending past an interval times its width, plus the time spent in it by the rows ending in it.

Both on the MDS cohort's OS times and events (the training rows of seed 0, resampled with replacement to
``--rows``), the levels of its IPSS-R group, and the shared domain's OS bins. Reported: seconds per call (median of
``--repeats``), the ratio dense / binned, and the largest difference between the two (events exactly, person-time
relative to its largest cell); and the whole calibration fit (``fit_survival_calibration``, target
``hazard_ratio``, a factor per endpoint, all 40 passes) on those rows as synthetic rows against the training rows'
counts, with either count patched in. The shared domain has 20 intervals per duration, as VAE-BGM's FedAvg fits
have. The raking also updates each row's factor by the one stratum that moved (formerly summed over every stratum at
every step); that is in both fits here, so the ratio is the count's share of the speed-up alone.

Usage: python benchmarks/bench_calibration_speed.py [--rows 500000] [--repeats 5] [--out FILE]
Writes benchmarks/results/calibration_speed.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "calibration_speed.json"


def dense_exposure(times: np.ndarray, events: np.ndarray, codes: np.ndarray, n_levels: int,
                   edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The former count: the time each row spends in each interval as a (rows, intervals) matrix."""
    ok = (codes >= 0) & np.isfinite(times) & np.isfinite(events)
    t, e, c = np.clip(times[ok], edges[0], edges[-1]), events[ok] > 0.5, codes[ok]
    width = np.diff(edges)
    spent = np.clip(t[:, None] - edges[None, :-1], 0.0, width[None, :])
    onehot = np.zeros((len(c), n_levels))
    onehot[np.arange(len(c)), c] = 1.0
    idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, len(width) - 1)
    ev = np.zeros((n_levels, len(width)))
    np.add.at(ev, (c[e], idx[e]), 1.0)
    return ev, onehot.T @ spent


def _seconds(fn: Any, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    import fedsynth.generators.survival_calibration as sc
    from fedsynth.cohort.datasets import load
    from fedsynth.cohort.partition import make_partition
    from fedsynth.encoding.domain import Domain
    from fedsynth.generators.survival_strata import (
        calibration_strata,
        endpoint_edges,
        exposure,
        stratum_codes,
        survival_counts,
    )

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    cohort = load("mds-iwgpm")
    part = make_partition(cohort.data, cohort.schema, proportions=(0.6, 0.3, 0.1), random_state=0)
    schema, train = part.schema, part.train
    domain = Domain.from_data(train, schema, n_bins=20)  # 20 intervals per duration, as VAE-BGM's FedAvg fits have
    strata = calibration_strata(schema, domain)
    edges = endpoint_edges(schema, domain)
    rows = train.sample(args.rows, replace=True, random_state=0).reset_index(drop=True)
    ep = schema.endpoints[0]
    st = next(s for s in strata if not s.genomic and s.bins is None and len(s.labels) > 2)
    t = rows[ep.duration_col].to_numpy(dtype=np.float64)
    e = rows[ep.event_col].to_numpy(dtype=np.float64)
    codes = stratum_codes(rows, st)
    n_lev, ed = len(st.labels), edges[ep.name]
    a, b = dense_exposure(t, e, codes, n_lev, ed), exposure(t, e, codes, n_lev, ed)
    count = {"endpoint": ep.name, "stratum": st.column, "levels": n_lev, "intervals": len(ed) - 1, "rows": len(t),
             "dense_s": _seconds(lambda: dense_exposure(t, e, codes, n_lev, ed), args.repeats),
             "binned_s": _seconds(lambda: exposure(t, e, codes, n_lev, ed), args.repeats),
             "events_max_abs_difference": float(np.abs(a[0] - b[0]).max()),
             "person_time_max_rel_difference": float(np.abs(a[1] - b[1]).max() / np.abs(a[1]).max())}
    count["ratio_dense_over_binned"] = count["dense_s"] / count["binned_s"]
    print(json.dumps(count), flush=True)
    counts = survival_counts(train, schema, strata, edges)
    fits: dict[str, Any] = {}
    factors = {}
    for name, fn in (("dense", dense_exposure), ("binned", exposure)):
        sc.exposure = fn  # type: ignore[assignment]  # the raking's own reference to the count
        t0 = time.perf_counter()
        cal = sc.fit_survival_calibration(rows, counts, schema, domain, strata, target="hazard_ratio",
                                          endpoints="each", max_sweeps=40, tol=0.0)  # every pass, as on the fits
        fits[f"{name}_s"] = time.perf_counter() - t0
        factors[name] = cal
        print(name, round(fits[f"{name}_s"], 1), "s", flush=True)
    sc.exposure = exposure  # type: ignore[assignment]
    fits["ratio_dense_over_binned"] = fits["dense_s"] / fits["binned_s"]
    fits["sweeps"] = factors["binned"].sweeps
    fits["factors_max_abs_difference"] = max(
        float(np.abs(factors["dense"].endpoint_factors[g][c] - v).max())
        for g, f in factors["binned"].endpoint_factors.items() for c, v in f.items())
    fits["note"] = ("the training rows resampled as synthetic rows against their own counts (factors near 0): the "
                    "fit's cost, not its result; each fit once, all 40 passes (tol 0)")
    out = {"benchmark": "survival calibration exposure count, dense against binned (same rows, one process)",
           "cohort": "mds-iwgpm, training rows of seed 0 (3 sites 60/30/10)", "count": count, "calibration_fit": fits,
           "command": f"python benchmarks/bench_calibration_speed.py --rows {args.rows} --repeats {args.repeats}"}
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(fits), flush=True)


if __name__ == "__main__":
    main()
