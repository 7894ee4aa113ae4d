"""Which real-significant survival effects FedAvg VAE-BGM loses, and whether training settings change that beyond chance.

Issue #11 asks for "no real-significant effect lost for VAE-BGM" in the survival-effect fidelity
(:mod:`fedsynth.evaluation.survival_effects`, definition unchanged here). An effect is lost when it is not
significant (Wald p >= 0.05) in a synthetic sample of the real data's size; even a perfect replicate of the
population loses an effect with probability ``Phi(1.96 - |z_real|)`` (its fresh Wald z is ~ N(z_real, 1)).

For each setting (``--variant NAME:KEY=VALUE[,KEY=VALUE]``, overrides of configs/fedavg_vae_bgm.yaml as
``fedsynth run --set`` takes them; ``base`` = the config as it is) and seed, this fits FedAvg VAE-BGM once (3 sites
60/30/10), draws ``--draws`` unconditioned synthetic tables of the training size (sample seeds 0..draws-1) and
records per draw the effects lost, and per real-significant effect: log HR and p in the real data, the replicate's
chance of losing it, the mean synthetic log HR and its loss rate over the draws. Sampling noise is what the draws
vary; fit noise is what the seeds vary.

Usage: python benchmarks/bench_vae_effects.py --seeds 1 --draws 4 --variant base: [--variant beta1:generator.params.beta=1.0]
       [--out benchmarks/results/vae_effects.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]


def _bench_arms() -> Any:
    spec = importlib.util.spec_from_file_location("bench_arms", ROOT / "benchmarks" / "bench_arms.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    from fedsynth.cohort.datasets import load
    from fedsynth.cohort.partition import make_partition
    from fedsynth.evaluation.survival_effects import survival_effects

    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--variant", action="append", default=[], help="NAME:KEY=VALUE[,KEY=VALUE] (base: for none)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vae_effects.json"))
    args = ap.parse_args()
    bench = _bench_arms()
    cohort = load("mds-iwgpm")
    out: dict[str, Any] = {"what": __doc__.split("\n\n")[0], "draws": args.draws, "runs": []}
    path = Path(args.out)
    if path.exists():
        out["runs"] = json.loads(path.read_text()).get("runs", [])
    for variant in args.variant or ["base:"]:
        name, _, sets = variant.partition(":")
        bench._FEDAVG_SETS["vae_bgm"] = [s for s in sets.split(",") if s]
        for seed in [int(s) for s in args.seeds.split(",")]:
            part = make_partition(cohort.data, cohort.schema, proportions=(0.6, 0.3, 0.1), random_state=seed)
            gen, seconds = bench._fit("vae_bgm", part, seed, {})
            per_effect: dict[str, dict[str, Any]] = {}
            draws = []
            for d in range(args.draws):
                t0 = time.perf_counter()
                syn = gen.sample(len(part.train), random_state=d)
                se = survival_effects(part.train, syn, part.schema, rng=np.random.default_rng(d))
                lost = [f"{e['endpoint']}: {e['variable']}" for e in se["effects"] if e["lost"]]
                draws.append({"sample_seed": d, "fidelity": se["fidelity"], "effects": len(se["effects"]),
                              "effects_lost": len(lost), "lost": lost, "seconds": round(time.perf_counter() - t0, 1)})
                for e in se["effects"]:
                    key = f"{e['endpoint']}: {e['variable']}"
                    z = abs(e["log_hr_real"]) / e["se_real"]
                    row = per_effect.setdefault(key, {
                        "log_hr_real": round(e["log_hr_real"], 4), "p_real": float(f"{e['p_real']:.3g}"),
                        "replicate_loss_chance": round(float(stats.norm.cdf(1.959964 - z)), 3),
                        "log_hr_synthetic": [], "p_synthetic": [], "lost": 0})
                    row["log_hr_synthetic"].append(round(e["log_hr_synthetic"], 4))
                    row["p_synthetic"].append(float(f"{e['p_synthetic']:.3g}"))
                    row["lost"] += int(e["lost"])
                print(json.dumps({"variant": name, "seed": seed, **draws[-1]}), flush=True)
            expected = sum(r["replicate_loss_chance"] for r in per_effect.values())
            ever_lost = {k: v for k, v in per_effect.items() if v["lost"] > 0}
            run = {"variant": name, "sets": bench._FEDAVG_SETS["vae_bgm"], "seed": seed, "fit_seconds": round(seconds, 1),
                   "effects_lost_per_draw": [d["effects_lost"] for d in draws],
                   "mean_lost": round(float(np.mean([d["effects_lost"] for d in draws])), 2),
                   "expected_lost_by_a_replicate": round(expected, 2),
                   "fidelity_per_draw": [round(d["fidelity"], 4) for d in draws],
                   "draws": draws, "effects_ever_lost": ever_lost}
            out["runs"].append(run)
            print(json.dumps({k: v for k, v in run.items() if k not in ("draws", "effects_ever_lost")}), flush=True)
            path.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
