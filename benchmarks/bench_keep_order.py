"""VAE-BGM's survival calibration with and without ``calibration_keep_order`` on the same fits (session 23's rule).

With a factor per endpoint (the unconditioned draws of ``configs/fedavg_vae_bgm.yaml``), a row whose LFS ends before
its OS is either scaled and capped at OS, a tie (``S``, the setting before session 23), or keeps LFS under OS, its
LFS / OS ratio moved on the odds scale by the ratio of its factors (``K``, ``calibration_keep_order: true``). Per seed
(3 sites 60/30/10 as bench_arms.py, the same FedAvg fit, cached with ``--fits-dir``), per variant, read as bench_arms
reads them: the survival-effect fidelity and the effects lost on 10 n unconditioned rows (random_state = seed) and
on 100 n (seed + 1); median errors over 15%, tie-share flags and endpoint-rule violations of the 10 n reading; and on
20,000 rows (seed + 7) the share of rows whose two times are equal and the median LFS / OS of the others, against the
training rows'. ``arm_factors_unchanged``: the factors of draws under a condition (control arms) are K's as S's (one
factor moves both times there, so nothing is capped). The fit is made with ``calibration_keep_order: false`` (the
config's other settings as they are); ``S`` reads its own calibration, ``K`` refits both calibration sets with
keep_order on the counts the federation summed (a cached fit made with keep_order, by bench_arms.py since session 23,
is refitted without it for ``S``).

Usage: python benchmarks/bench_keep_order.py [--seeds 43,44,45] [--variants S,K] [--fits-dir DIR] [--out FILE]
Writes benchmarks/results/keep_order.json (or --out): one row per seed and variant, rows of seeds and variants not
measured in this call kept from the file already there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_arms

from fedsynth.cohort.datasets import load
from fedsynth.cohort.partition import make_partition
from fedsynth.evaluation.survival_effects import EFFECT_ROWS_FACTOR, survival_effects

TIE_ROWS = 20_000


def _ties(df: Any, shorter: str, longer: str) -> dict[str, float]:
    """Share of rows whose two times are equal, and the median shorter / longer time of the other rows."""
    untied = (df[shorter] != df[longer]).to_numpy()
    ratio = (df[shorter] / df[longer]).to_numpy(dtype=float)[untied]
    return {"tie_share": round(float(1 - untied.mean()), 4), "untied_ratio_median": round(float(np.nanmedian(ratio)), 3)}


def reading(seed: int, variant: str, fits_dir: str | None) -> dict[str, Any]:
    """One row: seed ``seed``'s fit read with variant ``"S"`` (the calibration without keep_order) or ``"K"``."""
    t0 = time.time()
    cohort = load("mds-iwgpm")
    part = make_partition(cohort.data, cohort.schema, proportions=(0.6, 0.3, 0.1), random_state=seed)
    schema, train = part.schema, part.train
    # The fit as bench_arms makes it, without keep_order (S); K refits the calibration on the same counts.
    bench_arms._FEDAVG_SETS["vae_bgm"] = ["generator.params.calibration_keep_order=false"]
    gen, _ = bench_arms._cached_fit("vae_bgm", part, seed, {}, fits_dir)
    arm_before = {k: v.copy() for k, v in gen.survival_calibration_.log_factors.items()}
    gen.set_params(calibration_keep_order=variant == "K")
    if gen.unconditioned_set().keep_order != (variant == "K"):  # K, or a cached fit made with keep_order (S)
        gen.fit_survival_calibration(gen.survival_counts_)
    assert gen.unconditioned_set().keep_order == (variant == "K")
    arm_unchanged = all(np.array_equal(arm_before[k], v) for k, v in gen.survival_calibration_.log_factors.items())
    own = gen.unconditioned_set()
    syn = gen.sample(EFFECT_ROWS_FACTOR * len(train), random_state=seed)
    se = survival_effects(train, syn, schema, rng=np.random.default_rng(seed))
    big = gen.sample(100 * len(train), random_state=seed + 1)
    low = survival_effects(train, big, schema, rng=np.random.default_rng(seed), effect_rows_factor=100)
    rule = next(r for r in schema.constraints if hasattr(r, "shorter"))
    shorter, longer = rule.shorter.duration_col, rule.longer.duration_col
    tie_rows = gen.sample(TIE_ROWS, random_state=seed + 7)
    return {"seed": seed, "variant": variant, "fidelity_10n": round(se["fidelity"], 4),
            "curves_10n": round(se["parts"]["curves"], 4), "effects_10n": round(se["parts"]["effects"], 4),
            "effects_lost_10n": se["counts"]["effects_lost"], "lost_10n": bench_arms._lost(se["effects"]),
            "fidelity_100n": round(low["fidelity"], 4), "effects_lost_100n": low["counts"]["effects_lost"],
            "lost_100n": bench_arms._lost(low["effects"]),
            "median_errors_over_15pct": se["counts"]["median_errors_over_15pct"],
            "tie_shares_off": se["counts"]["tie_shares_off"],
            "rule_violations": se["counts"]["rule_violations_synthetic"], "flags_10n": len(se["flags"]),
            "unconditioned_max_log_error": round(own.max_log_error, 4), "unconditioned_worst_level": own.worst_level,
            "arm_factors_unchanged": bool(arm_unchanged), "time_rule": f"{shorter} <= {longer}",
            "ties_real": _ties(train, shorter, longer), "ties_synthetic": _ties(tie_rows, shorter, longer),
            "seconds": round(time.time() - t0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="43,44,45")
    ap.add_argument("--variants", default="S,K")
    ap.add_argument("--fits-dir", default=None, help="cache of fits (bench_arms.py's --fits-dir)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "keep_order.json"))
    args = ap.parse_args()
    out_path = Path(args.out)
    kept = json.loads(out_path.read_text()) if out_path.exists() else {}
    rows = kept.get("rows", [])
    for seed in [int(s) for s in args.seeds.split(",")]:
        for variant in args.variants.split(","):
            row = reading(seed, variant, args.fits_dir)
            print(json.dumps(row), flush=True)
            rows = [r for r in rows if (r["seed"], r["variant"]) != (seed, variant)] + [row]
            out_path.write_text(json.dumps({**kept, "rows": sorted(rows, key=lambda r: (r["seed"], r["variant"]))},
                                           indent=2))


if __name__ == "__main__":
    main()
