"""SD-sharing under a privacy budget on MDS, 3 sites (60/30/10): each site's generator fitted with differential
privacy (VAE-BGM: DP-SGD and a private latent mixture; Bayesian network: noisy count tables) against the same
strategy at ε = ∞, with the same scores as ``bench_privacy.py`` (CSF, GSF, survival-effect fidelity, NNDR of the
pooled rows against the training pool).

Each site runs with the default site policy (k = 5, release gate on), in process. The DP noise comes from the
operating system's entropy, so a private run is not reproducible from its seed (by design: a coordinator that
knew the seed could subtract the noise).

Run:  .venv/bin/python benchmarks/bench_sd_sharing_dp.py [--epsilons 3,inf] [--methods bn,vae] [--seed 0]
        [--vae-epochs 6] [--max-indegree 2] [--out benchmarks/results/sd_sharing_dp.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_privacy import DELTA, VAE_PARAMS, _eps, score  # the benchmarks folder is not a package


def sd_run(part: Any, generator: str, epsilon: float, seed: int, *, vae_epochs: int, max_indegree: int) -> dict[str, Any]:
    """One SD-sharing run at ``epsilon`` (``inf``: plain fits), pooled rows scored against the training pool."""
    from fedsynth.privacy.accounting import PrivacyBudget
    from fedsynth.strategies.in_process import InProcessGrid
    from fedsynth.strategies.policy import SitePolicy
    from fedsynth.strategies.registry import make_strategy
    from fedsynth.strategies.site import SiteRuntime
    from fedsynth.strategies.site_budget import site_ledger

    schema = part.schema
    params = ({**VAE_PARAMS, "epochs": vae_epochs} if generator == "vae_bgm" else {"max_indegree": max_indegree})
    strategy = make_strategy("sd_sharing", schema, generator=generator, generator_params=params, min_sites=1,
                             random_state=seed)
    strategy.privacy = PrivacyBudget(epsilon, DELTA)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-sd-dp-") as root:
        policy = SitePolicy()
        sites = [SiteRuntime(s.name, s.data, schema, seed=seed + i, policy=policy,
                             privacy_ledger=site_ledger(policy, Path(root) / s.name))
                 for i, s in enumerate(part.sites)]
        result = strategy.start(InProcessGrid(sites))
    seconds = time.perf_counter() - t0
    summary = strategy.privacy_summary_ or {}
    keep = ("epsilon_spent", "ledger_charged_epsilon", "n_train_rows", "noise_multiplier", "sample_rate", "steps",
            "mixture_noise_multiplier", "structure_noise_multiplier", "structure_tables",
            "parameters_noise_multiplier", "parameters_tables", "n_edges")
    sites_summary = {name: {k: s[k] for k in keep if k in s} for name, s in (summary.get("sites") or {}).items()}
    return {"method": f"sd_sharing {generator}", "epsilon_spent": summary.get("epsilon_spent"),
            "split": summary.get("split"), "sites": sites_summary, "left_out": dict(result.left_out),
            "n_rows": len(result.synthetic), "train_seconds": round(seconds, 2),
            **score(part, result.synthetic, seed)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epsilons", default="3,inf")
    ap.add_argument("--methods", default="bn,vae")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-indegree", type=int, default=2)
    ap.add_argument("--vae-epochs", type=int, default=6)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sd_sharing_dp.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore")
    from fedsynth.cohort.datasets import load_cohort
    from fedsynth.cohort.partition import make_partition

    cohort = load_cohort("mds-iwgpm")
    part = make_partition(cohort.data, cohort.schema, proportions=(0.6, 0.3, 0.1), random_state=0)
    generators = {"bn": "bayesian_network", "vae": "vae_bgm"}
    rows = []
    t_all = time.perf_counter()
    for method in args.methods.split(","):
        for eps in [float(e) for e in args.epsilons.split(",")]:
            row = {"epsilon": _eps(eps), "delta": DELTA, "seed": args.seed,
                   **sd_run(part, generators[method], eps, args.seed, vae_epochs=args.vae_epochs,
                            max_indegree=args.max_indegree)}
            rows.append(row)
            sef = row["survival_effect_fidelity"]
            spent = row["epsilon_spent"] if row["epsilon_spent"] is not None else float("nan")
            print(f"eps={row['epsilon']!s:>4} {row['method']:<28} spent {spent:.4g}  CSF {row['csf']:.3f}  "
                  f"GSF {row['gsf']:.3f}  SEF {'-' if sef is None else f'{sef:.3f}'}  NNDR {row['nndr_mean']:.3f}"
                  f" (holdout {row['holdout_nndr_mean']:.3f})  rows {row['n_rows']}  left out {sorted(row['left_out'])}"
                  f"  {row['train_seconds']}s", flush=True)
    out = {"benchmark": "sd_sharing_dp", "cohort": "mds-iwgpm", "sites": [0.6, 0.3, 0.1], "delta": DELTA,
           "max_indegree": args.max_indegree, "vae": {"params": VAE_PARAMS, "epochs": args.vae_epochs},
           "platform": platform.platform(), "seconds": round(time.perf_counter() - t_all, 1),
           "note": "DP noise from OS entropy: private runs are not reproducible from the seed", "runs": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
