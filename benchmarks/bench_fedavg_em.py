"""How many message rounds the final latent-mixture EM of FedAvg VAE-BGM needs, and what stopping earlier costs.

Every E-step of the federated variational EM is one request to every site; in a deployment each request pays
Flower's fixed per-message costs (``benchmarks/bench_deployment.py``), so the final round's EM, which ran to
``mixture_max_iter`` = 50 under scikit-learn's criterion (absolute change of the evidence lower bound < 1e-3,
summed over all rows), was most of a deployed run's requests.

One FedAvg VAE-BGM run in process (MDS cohort, 3 sites 60/30/10, partition seed 0, site seeds 0-2, generator
defaults on CPU, ``--rounds`` x ``--local-epochs``). Its final-round EM is run for ``--max-iter`` iterations and
every iterate kept; then for each stopping rule (absolute tolerance as before, tolerance per row — the change of
the bound divided by the number of rows — and fixed caps) the EM's iterate where that rule stops is installed
(with its per-component label counts, summed over the sites' codes as ``query.component_counts`` would) and the
model is scored: CSF/GSF (:func:`fedsynth.evaluation.quick_scores`) of 2,000 sampled rows against the pooled
training rows, sample seeds 0-2 (their spread is the sampling noise the differences are read against).

Run:  PYTHONPATH=src .venv/bin/python benchmarks/bench_fedavg_em.py [--rounds 5] [--local-epochs 4]
        [--out benchmarks/results/fedavg_em.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("FEDSYNTH_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)
#: (label, kind, value): ``abs``: |change of the bound| < value; ``row``: |change| / rows < value; ``cap``: value
#: iterations.
RULES = [("abs 1e-3 (before)", "abs", 1e-3), ("per-row 1e-3", "row", 1e-3), ("per-row 5e-3", "row", 5e-3),
         ("per-row 1e-2", "row", 1e-2), ("per-row 2e-2", "row", 2e-2), ("cap 3", "cap", 3), ("cap 10", "cap", 10),
         ("cap 20", "cap", 20)]


def stop_at(bounds: list[float], n_rows: float, kind: str, value: float) -> int:
    """The iteration (1-based) where a rule stops the EM, given the bound after each M-step."""
    if kind == "cap":
        return min(int(value), len(bounds))
    previous = -float("inf")
    for it, b in enumerate(bounds, 1):
        change = abs(b - previous)
        if (change if kind == "abs" else change / n_rows) < value:
            return it
        previous = b
    return len(bounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-epochs", type=int, default=4)
    parser.add_argument("--max-iter", type=int, default=50)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fedavg_em.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import numpy as np
    import torch

    from fedsynth.cohort.datasets import load_cohort
    from fedsynth.cohort.partition import make_partition
    from fedsynth.evaluation import quick_scores
    from fedsynth.generators import latent_mixture
    from fedsynth.generators.component_counts import sum_component_counts
    from fedsynth.strategies import fedavg_server, records
    from fedsynth.strategies.in_process import InProcessGrid
    from fedsynth.strategies.registry import make_strategy
    from fedsynth.strategies.site import SiteRuntime, conform_to_domain

    torch.set_num_threads(1)
    cohort = load_cohort("mds-iwgpm")
    part = make_partition(cohort.data, cohort.schema, proportions=(0.6, 0.3, 0.1), random_state=0)
    runtimes = [SiteRuntime(s.name, s.data, part.schema, seed) for s, seed in zip(part.sites, SEEDS)]
    n_rows = float(sum(len(s.data) for s in part.sites))
    strategy = make_strategy("fedavg", part.schema, generator="vae_bgm", generator_params={"device": "cpu"},
                             rounds=args.rounds, local_epochs=args.local_epochs, min_sites=2, random_state=0)
    calls: list[dict[str, Any]] = []
    original = latent_mixture.fit_latent_mixture_federated

    def recording(e_step: Any, start: Any, *, max_iter: int = 200, tol: float = 1e-3) -> Any:
        """Every call counted; the final round's (the one with the largest cap) run to ``--max-iter``."""
        if max_iter < int(strategy.params.get("mixture_max_iter", 50)):
            params, n_iter, conv = original(e_step, start, max_iter=max_iter, tol=tol)
            calls.append({"max_iter": max_iter, "n_iter": n_iter})
            return params, n_iter, conv
        trajectory, params = [], dict(start)
        for _ in range(args.max_iter):
            params = latent_mixture.mixture_m_step(list(e_step(params)), params)
            trajectory.append(params)
        calls.append({"max_iter": max_iter, "trajectory": trajectory})
        return trajectory[-1], len(trajectory), False

    fedavg_server.fit_latent_mixture_federated = recording  # type: ignore[assignment]
    t0 = time.perf_counter()
    result = strategy.start(InProcessGrid(runtimes))
    train_s = time.perf_counter() - t0
    generator = result.generator
    trajectory = calls[-1]["trajectory"]
    bounds = [float(p["lower_bound"]) for p in trajectory]
    codes = [records.from_array_record(r.state["latent-codes"])["codes"] for r in runtimes]
    frames = [conform_to_domain(r.data, result.domain) for r in runtimes]
    pool = part.train
    rules: dict[str, Any] = {}
    for label, kind, value in RULES:
        it = stop_at(bounds, n_rows, kind, value)
        mixture = trajectory[it - 1]
        generator.set_latent_mixture(mixture)
        generator.set_component_counts(sum_component_counts(
            [generator.component_count_statistics(f, mixture, c) for f, c in zip(frames, codes)]))
        scores = []
        for seed in SEEDS:
            q = quick_scores(pool, generator.sample(2000, random_state=seed), part.schema, random_state=seed)
            scores.append({"csf": round(float(q["csf"]), 4), "gsf": round(float(q["gsf"]), 4)})
        rules[label] = {"iterations": it, "estep_requests": it - 1,  # the first E-step rides on the init reply
                        "scores": scores,
                        "csf_mean": round(float(np.mean([s["csf"] for s in scores])), 4),
                        "gsf_mean": round(float(np.mean([s["gsf"] for s in scores])), 4)}
        print(label, json.dumps(rules[label]), flush=True)
    out = {
        "benchmark": "fedavg_em",
        "setup": {"cohort": "mds-iwgpm", "sites": {s.name: s.n_rows for s in part.sites}, "rounds": args.rounds,
                  "local_epochs": args.local_epochs, "generator": "vae_bgm (defaults, cpu)", "transport": "in process",
                  "command": "PYTHONPATH=src .venv/bin/python benchmarks/bench_fedavg_em.py " + " ".join(sys.argv[1:]),
                  "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                              "load_avg": [round(x, 2) for x in os.getloadavg()]},
                  "training_s": round(train_s, 1)},
        "earlier_rounds_em_iterations": [c["n_iter"] for c in calls[:-1]],
        "final_round": {"n_rows": n_rows, "lower_bound": [round(b, 3) for b in bounds],
                        "change_per_row": [None] + [round(abs(b - a) / n_rows, 8) for a, b in itertools.pairwise(bounds)]},
        "rules": rules,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
