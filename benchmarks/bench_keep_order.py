"""VAE-BGM's survival calibration with and without ``calibration_keep_order`` on the same fits (session 23's rule).

With a factor per endpoint (the unconditioned draws of ``configs/fedavg_vae_bgm.yaml``), a row whose LFS ends before
its OS is either scaled and capped at OS, a tie (``S``, the setting before session 23), or keeps LFS under OS, its
LFS / OS ratio moved on the odds scale by the ratio of its factors (``K``, ``calibration_keep_order: true``). Per seed
(3 sites 60/30/10 as bench_arms.py, the same FedAvg fit, cached with ``--fits-dir``), per variant, read as bench_arms
reads them: the survival-effect fidelity and the effects lost on 10 n unconditioned rows (random_state = seed) and
on 100 n (seed + 1); median errors over 15%, tie-share flags and endpoint-rule violations of the 10 n reading; and on
20,000 rows (seed + 7) the evaluator's tie share per time-order rule (``tied_times``: rows with both times known whose
two times are equal) and the median LFS / OS of the other rows (``untied_ratio_median``), real and synthetic.
``--ties-only`` refreshes those two on rows already written. ``arm_factors_unchanged``: the factors of draws under a condition (control arms) are K's as S's (one
factor moves both times there, so nothing is capped). The fit is made with ``calibration_keep_order: false`` (the
config's other settings as they are); ``S`` reads its own calibration, ``K`` refits both calibration sets with
keep_order on the counts the federation summed (a cached fit made with keep_order, by bench_arms.py since session 23,
is refitted without it for ``S``).

Usage: python benchmarks/bench_keep_order.py [--seeds 43,44,45] [--variants S,K] [--fits-dir DIR] [--out FILE]
       [--ties-only]
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

from fedsynth.cohort.constraints import TimeOrder, tied
from fedsynth.cohort.datasets import load
from fedsynth.cohort.partition import make_partition
from fedsynth.evaluation.survival_effects import (
    EFFECT_ROWS_FACTOR,
    endpoint_rule_report,
    survival_effects,
    tied_times,
)

TIE_ROWS = 20_000


def _untied_ratio_median(df: Any, rule: TimeOrder) -> float:
    """Median shorter / longer time of the rows with both times known and not tied (:func:`tied`)."""
    a = df[rule.shorter.duration_col].to_numpy(dtype=float)
    b = df[rule.longer.duration_col].to_numpy(dtype=float)
    apart = ~np.isnan(a) & ~np.isnan(b) & ~tied(a, b)
    return round(float(np.median(a[apart] / b[apart])), 3)


def tie_figures(train: Any, synthetic: Any, schema: Any) -> dict[str, Any]:
    """The evaluator's tie shares per time-order rule (:func:`tied_times`: rows with both times known) and the median
    shorter / longer time of the untied rows, real and synthetic."""
    rules = [r for r in schema.constraints if isinstance(r, TimeOrder)]
    return {"tied_times": tied_times(endpoint_rule_report(train, synthetic, schema)),
            "untied_ratio_median": {f"{r.shorter.duration_col} <= {r.longer.duration_col}": {
                "real": _untied_ratio_median(train, r), "synthetic": _untied_ratio_median(synthetic, r)}
                for r in rules}}


def _fitted(seed: int, variant: str, fits_dir: str | None) -> tuple[Any, Any, Any, bool]:
    """Seed ``seed``'s partition, schema and fit with variant ``"S"`` (the calibration without keep_order) or ``"K"``,
    and whether the factors of draws under a condition are those of the fit as made."""
    cohort = load("mds-iwgpm")
    part = make_partition(cohort.data, cohort.schema, proportions=(0.6, 0.3, 0.1), random_state=seed)
    # The fit as bench_arms makes it, without keep_order (S); K refits the calibration on the same counts.
    bench_arms._FEDAVG_SETS["vae_bgm"] = ["generator.params.calibration_keep_order=false"]
    gen, _ = bench_arms._cached_fit("vae_bgm", part, seed, {}, fits_dir)
    arm_before = {k: v.copy() for k, v in gen.survival_calibration_.log_factors.items()}
    gen.set_params(calibration_keep_order=variant == "K")
    if gen.unconditioned_set().keep_order != (variant == "K"):  # K, or a cached fit made with keep_order (S)
        gen.fit_survival_calibration(gen.survival_counts_)
    assert gen.unconditioned_set().keep_order == (variant == "K")
    arm_unchanged = all(np.array_equal(arm_before[k], v) for k, v in gen.survival_calibration_.log_factors.items())
    return part.train, part.schema, gen, arm_unchanged


def ties_only(seed: int, variant: str, fits_dir: str | None) -> dict[str, Any]:
    """:func:`tie_figures` of the 20,000 rows :func:`reading` draws for ties (seed + 7), without the effects."""
    train, schema, gen, _ = _fitted(seed, variant, fits_dir)
    return tie_figures(train, gen.sample(TIE_ROWS, random_state=seed + 7), schema)


def reading(seed: int, variant: str, fits_dir: str | None) -> dict[str, Any]:
    """One row: seed ``seed``'s fit read with variant ``"S"`` (the calibration without keep_order) or ``"K"``."""
    t0 = time.time()
    train, schema, gen, arm_unchanged = _fitted(seed, variant, fits_dir)
    own = gen.unconditioned_set()
    syn = gen.sample(EFFECT_ROWS_FACTOR * len(train), random_state=seed)
    se = survival_effects(train, syn, schema, rng=np.random.default_rng(seed))
    big = gen.sample(100 * len(train), random_state=seed + 1)
    low = survival_effects(train, big, schema, rng=np.random.default_rng(seed), effect_rows_factor=100)
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
            "arm_factors_unchanged": bool(arm_unchanged), **tie_figures(train, tie_rows, schema),
            "seconds": round(time.time() - t0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="43,44,45")
    ap.add_argument("--variants", default="S,K")
    ap.add_argument("--fits-dir", default=None, help="cache of fits (bench_arms.py's --fits-dir)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "keep_order.json"))
    ap.add_argument("--ties-only", action="store_true",
                    help="refresh only the tie figures of the rows already in --out (no effects read)")
    args = ap.parse_args()
    out_path = Path(args.out)
    kept = json.loads(out_path.read_text()) if out_path.exists() else {}
    rows = kept.get("rows", [])
    for seed in [int(s) for s in args.seeds.split(",")]:
        for variant in args.variants.split(","):
            if args.ties_only:
                old = next(r for r in rows if (r["seed"], r["variant"]) == (seed, variant))
                row = {**old, **ties_only(seed, variant, args.fits_dir)}
            else:
                row = reading(seed, variant, args.fits_dir)
            print(json.dumps(row), flush=True)
            rows = [r for r in rows if (r["seed"], r["variant"]) != (seed, variant)] + [row]
            out_path.write_text(json.dumps({**kept, "rows": sorted(rows, key=lambda r: (r["seed"], r["variant"]))},
                                           indent=2))


if __name__ == "__main__":
    main()
