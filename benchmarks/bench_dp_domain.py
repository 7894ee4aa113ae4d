"""The two-step BN at one ε with and without differential privacy on the shared domain (MDS, 3 sites, 60/30/10).

- ``dp_domain``: the run as it is (:meth:`Strategy.start`): the hello's row counts and the domain's count vectors
  released with noise (1% and 10% of the run's ρ, :mod:`fedsynth.strategies.secure_domain`), the BN's structure
  and parameter phases share the remaining 89%;
- ``policy_domain``: the domain as it was before (exact summaries under each site's disclosure policy: coarse
  bounds, cells and labels of at least k rows, *outside* the budget), the BN's phases share the whole budget;
- ``exact`` (ε = ∞): no noise anywhere, the reference;
- ``secure_split_3`` and ``secure_split_2``: ``dp_domain`` with secure aggregation, each site adding σ²/3 (the
  sites' noise split over all 3 sites, ``min_sites`` 3: the calibration before dropouts were accounted for) or
  σ²/2 (``min_sites`` 2, the default: a sum that loses one site still carries σ², :mod:`fedsynth.privacy.noise`).
  With all 3 sites present the released sums carry σ² and 1.5 σ²: the fidelity cost of surviving a dropout.
- ``labels_at_k``: ``dp_domain`` with the former label rule, a declared label kept when its noisy total reaches k
  (a one-patient label then passes often at a small ε), against ``dp_domain``'s
  :func:`~fedsynth.encoding.dp_domain.label_release_threshold`: the fidelity cost of keeping labels under k out.

Each condition over ``--seeds`` seeds (the generator's seed and the sample's; the sites' noise comes from OS
entropy, as in a deployment). CSF, GSF, survival-effect fidelity of a sample the size of the training pool
(quick scores against the training pool, as ``bench_privacy.py``), and the domain's deciles of HB, PLT, AGE and
OS_YEARS beside the real ones.

Run:  .venv/bin/python benchmarks/bench_dp_domain.py [--epsilon 3] [--seeds 0,1,2] [--max-indegree 2]
        [--conditions exact,policy_domain,dp_domain] [--out benchmarks/results/dp_domain.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("FEDSYNTH_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

DELTA = 1e-5
SHOWN = ("HB", "PLT", "AGE", "OS_YEARS")


def score(part: Any, synthetic: Any, seed: int) -> dict[str, Any]:
    """CSF, GSF and survival-effect fidelity of ``synthetic`` against the training pool."""
    from fedsynth.evaluation import quick_scores
    from fedsynth.evaluation.survival_effects import survival_effects

    schema = part.schema
    synthetic = schema.coerce(synthetic[schema.model_columns])
    q = quick_scores(part.train, synthetic, schema, holdout_data=part.holdout, random_state=seed)
    eff = survival_effects(part.train[schema.model_columns], synthetic, schema, rng=np.random.default_rng(seed))
    return {"csf": q["csf"], "gsf": q["gsf"], "survival_effect_fidelity": eff.get("fidelity")}


def one_run(part: Any, condition: str, epsilon: float, seed: int, max_indegree: int) -> dict[str, Any]:
    from fedsynth.privacy.accounting import PrivacyBudget
    from fedsynth.strategies.in_process import InProcessGrid
    from fedsynth.strategies.registry import make_strategy
    from fedsynth.strategies.site import SiteRuntime

    schema = part.schema
    grid = InProcessGrid([SiteRuntime(s.name, s.data, schema, seed=seed + i) for i, s in enumerate(part.sites)])
    secure = condition.startswith("secure_split_")
    min_sites = int(condition.rsplit("_", 1)[1]) if secure else 3
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network",
                             generator_params={"max_indegree": max_indegree}, min_sites=min_sites, random_state=seed,
                             params={"secure_aggregation": True} if secure else None)
    strategy.privacy = PrivacyBudget(math.inf if condition == "exact" else epsilon, DELTA)
    from fedsynth.encoding import dp_domain

    threshold = dp_domain.label_release_threshold
    if condition == "labels_at_k":
        dp_domain.label_release_threshold = lambda noise_std, n_labels, min_count: int(min_count)  # type: ignore
    t0 = time.perf_counter()
    try:
        if condition == "policy_domain":
            # The flow before the private domain: exact summaries under the sites' policies, outside the budget.
            token = strategy._new_run_token()
            strategy._pre_run_releases = None
            sites, domain = strategy.hello_and_domain(grid)
            result = strategy.run(grid, sites, domain, on_round=None, run_token=token)
        else:
            result = strategy.start(grid)
    finally:
        dp_domain.label_release_threshold = threshold
    seconds = time.perf_counter() - t0
    summary = strategy.privacy_summary_ or {}
    deciles = {c: [round(float(b), 3) for b in result.domain[c].bins] for c in SHOWN}
    n_labels = {c: len(result.domain[c].categories) for c in schema.model_columns
                if schema[c].kind.value == "categorical"}
    return {"condition": condition, "seed": seed, "epsilon_spent": summary.get("epsilon_spent"),
            "distributed_noise": summary.get("distributed_noise"),
            "split": summary.get("split"), "seconds": round(seconds, 1), "bins": deciles,
            "categorical_labels_released": sum(n_labels.values()),
            **score(part, result.generator.sample(len(part.train), random_state=seed), seed)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epsilon", type=float, default=3.0)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--max-indegree", type=int, default=2)
    ap.add_argument("--conditions", default="exact,policy_domain,dp_domain")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "dp_domain.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)

    from fedsynth.cohort.datasets import load_cohort
    from fedsynth.cohort.partition import make_partition

    cohort = load_cohort("mds-iwgpm")
    part = make_partition(cohort.data, cohort.schema, proportions=(0.6, 0.3, 0.1), random_state=0)
    real = {c: [round(float(x), 3) for x in np.nanquantile(part.train[c].astype(float), np.linspace(0, 1, 11))]
            for c in SHOWN}
    rows = []
    for condition in args.conditions.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            row = one_run(part, condition, args.epsilon, seed, args.max_indegree)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("bins", "split")}), flush=True)
    table = {}
    for condition in args.conditions.split(","):
        mine = [r for r in rows if r["condition"] == condition]
        table[condition] = {m: {"mean": round(statistics.mean(r[m] for r in mine), 4),
                                "sd": round(statistics.stdev(r[m] for r in mine), 4) if len(mine) > 1 else None}
                            for m in ("csf", "gsf", "survival_effect_fidelity", "categorical_labels_released")}
    out = {"epsilon": args.epsilon, "delta": DELTA, "max_indegree": args.max_indegree, "seeds": args.seeds,
           "real_deciles": real, "summary": table, "runs": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
