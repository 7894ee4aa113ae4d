"""How often issue #11's arm criteria fail by chance alone: arms drawn from the real eligible patients themselves.

Each of bench_arms.py's three arms at each seed (3 sites 60/30/10, the real eligible *training* patients as the
reference, n = 300 synthetic patients) is judged by two criteria: median OS within 15% of the reference's, and
log-rank p >= 0.05 against it. Two oracle "generators" show how often a generator with no bias would still miss:

- ``copy``: the arm is ``n`` rows drawn with replacement from the reference itself (a generator that returns its
  training patients): only the arm's own draw varies;
- ``population``: the arm is ``n`` rows and the reference ``n_real`` rows, each drawn with replacement from the
  real eligible patients, independently (a generator that draws from the patients' population exactly, judged
  against a reference that is itself one sample of that population — the bootstrap stands in for the
  population).

Each oracle is drawn twice: as ``n`` independent draws, and ``_balanced`` as ``fedsynth arm`` draws by default
(``n`` rows taken from ``10 n`` draws by systematic sampling along OS, :func:`fedsynth.experiments.arm.balanced_rows`).

Per arm and seed: the share of the ``--draws`` draws meeting both criteria, each criterion's share, and the median
relative error's 5th-95th percentile. ``all_arms_met`` is the product of the shares over every arm and seed: the
probability of meeting all of them at once (independent draws per arm), and ``all_but_one_or_more_met`` the
probability of missing at most one. The copies' log-rank pass rate is above
the nominal 95% because their rows are the reference's own. Every figure comes from
:func:`fedsynth.evaluation.arm.arm_report`, as bench_arms.py reads it.

The ``effects`` part does the same for "no real-significant effect lost", per seed: the evaluator's
``expected_lost_by_chance`` (a generator reproducing these patients' effects exactly) and
``expected_lost_population`` (one faithful to their population: the real estimates' own noise counted) at the
readings bench_arms uses (10 n and 100 n synthetic rows), and ``bootstrap_copy_lost``: the effects lost by 10 n
rows drawn with replacement from the training rows themselves, read by the evaluator as any synthetic table.

The ``effect_draws`` part repeats that reading ``--effect-draws`` times per seed at the evaluator's own 10 n, for
two oracles: ``copy`` (the real training rows as the reference; 10 n rows drawn with replacement from them as the
synthetic table: a generator that reproduces these patients, up to its draw's noise) and ``population`` (the
reference itself drawn with replacement from the training rows, n rows, and the synthetic table drawn
independently, 10 n rows: a generator exact for the patients' population, judged against one sample of it; the
bootstrap stands in for the population). Per seed and oracle: the law of the number of real-significant effects
lost (a histogram), its mean beside the evaluator's analytic figure, and the probability that none is lost;
``none_lost_at_seeds_0_1_2`` multiplies seeds 0, 1 and 2's probabilities (each seed's draws come from a stream of their own). With ``bench_arms.py``'s VAE-BGM rows in ``arms.json`` (the shipped setting), each seed's
count of effects VAE-BGM lost at 10 n and the probability that the oracle loses as many or more. A third oracle,
``population_limit`` (``--effect-oracles``), is the population oracle read without any draw's noise: the reference
drawn as for ``population`` and, as the synthetic table, the training rows themselves (the population of the
bootstrap) read at the real size, the limit of bench_arms.py's 100 n reading (``low_noise``); it is compared with
VAE-BGM's 100 n count, and its analytic mean is ``expected_lost_population`` at ``m / n`` -> infinity. VAE-BGM's counts
come from ``arms.json``, else from the shipped variant's rows of ``keep_order.json`` (seeds 43-45).

Usage: python benchmarks/bench_arm_chance.py [--seeds 0,1,2] [--n 300] [--draws 200] [--parts arms,effects]
       [--effect-draws 100] [--effect-oracles copy,population] [--out FILE]
       (--parts effect_draws for the repeated effects reading; --effect-oracles population_limit for its limit)
Writes benchmarks/results/arm_chance.json (or --out); a part not run is kept from the file already there.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("high_risk_tp53_wt", "tp53_mutated", "lower_risk")
#: The oracles: a copy and a population draw, each drawn independently (as n draws) or balanced (fedsynth arm's
#: default: n rows taken from 10 n draws by systematic sampling along OS).
ORACLES = ("copy", "population", "copy_balanced", "population_balanced")
#: The log-rank criterion of issue #11 (the median one is the evaluator's MEDIAN_FLAG, 15%).
ALPHA = 0.05


def judge(arm: Any, reference: Any, schema: Any) -> tuple[float, float]:
    """The arm's OS median relative error against the reference (inf when either median is undefined) and the
    log-rank p, as arm_report gives them."""
    from fedsynth.evaluation.arm import arm_report

    comparison = arm_report(arm, schema, reference=reference)["endpoints"]["OS"]["comparison"]
    err = comparison["median_relative_error"]
    return (math.inf if err is None else float(err)), float(comparison["logrank_p"])


def summarise(met: list[float]) -> dict[str, Any]:
    """How many arms an oracle meets, from each arm's share of draws that met it (arms independent): the expected
    count, the probability of meeting all of them and of meeting all but one or more (the Poisson-binomial law of
    the count, by convolution)."""
    law = np.array([1.0])
    for q in met:
        law = np.convolve(law, [1.0 - q, q])
    return {"arms": len(met), "expected_arms_met": round(float(sum(met)), 2), "all_arms_met": round(float(law[-1]), 3),
            "all_but_one_or_more_met": round(float(law[-2:].sum()), 3)}


def main() -> None:
    from fedsynth.cohort.datasets import load

    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--parts", default="arms,effects")
    ap.add_argument("--effect-draws", type=int, default=100)
    ap.add_argument("--effect-oracles", default="copy,population",
                    help=f"oracles of the effect_draws part, of {', '.join(EFFECT_ORACLES)}")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "arm_chance.json"))
    args = ap.parse_args()
    cohort = load("mds-iwgpm")
    parts = args.parts.split(",")
    old = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    out: dict[str, Any] = {"arms": old.get("arms"), "effects": old.get("effects"),
                           "effect_draws": old.get("effect_draws")}
    if "effects" in parts:
        out["effects"] = effects_part(cohort, [int(s) for s in args.seeds.split(",")])
    if "effect_draws" in parts:
        out["effect_draws"] = effect_draws_part(cohort, [int(s) for s in args.seeds.split(",")], args.effect_draws,
                                                old.get("effect_draws"), args.effect_oracles.split(","))
    if "arms" in parts:
        out["arms"] = arms_part(cohort, args)
    Path(args.out).write_text(json.dumps(out, indent=2))


def effects_part(cohort: Any, seeds: list[int]) -> dict[str, Any]:
    """Per seed: the effects a copy and a population-faithful generator would lose at 10 n and 100 n rows."""
    from fedsynth.cohort.partition import make_partition
    from fedsynth.evaluation.survival_effects import (
        expected_lost_by_chance,
        expected_lost_population,
        survival_effects,
    )

    rows = []
    t0 = time.perf_counter()
    for seed in seeds:
        part = make_partition(cohort.data, cohort.schema, proportions=(0.6, 0.3, 0.1), random_state=seed)
        train = part.train
        copy = train.iloc[np.random.default_rng(seed).integers(len(train), size=10 * len(train))]
        se = survival_effects(train, copy.reset_index(drop=True), part.schema, rng=np.random.default_rng(seed))
        eff = se["effects"]
        at100 = [{**e, "rows_ratio": 100.0} for e in eff]
        row = {"seed": seed, "effects": len(eff),
               "real_p_from_0_01_to_0_05": sum(1 for e in eff if 0.01 <= e["p_real"] < 0.05),
               "at_10n": {"expected_lost_by_chance": expected_lost_by_chance(eff),
                          "expected_lost_population": expected_lost_population(eff),
                          "bootstrap_copy_lost": se["counts"]["effects_lost"]},
               "at_100n": {"expected_lost_by_chance": expected_lost_by_chance(at100),
                           "expected_lost_population": expected_lost_population(at100)}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"rows": rows, "seconds": round(time.perf_counter() - t0, 1),
            "command": f"OMP_NUM_THREADS=1 python benchmarks/bench_arm_chance.py --parts effects --seeds "
                       f"{','.join(map(str, seeds))}"}


#: Oracles of the effect_draws part (module docstring).
EFFECT_ORACLES = ("copy", "population", "population_limit")


def vae_bgm_lost(seed: int, reading: str = "10n") -> int | None:
    """Effects lost by bench_arms.py's VAE-BGM at ``seed`` on its 10 n or 100 n (``low_noise``) reading: the shipped
    setting's row of ``arms.json``, else the shipped variant's row of ``keep_order.json`` (None when neither has one)."""
    results = ROOT / "benchmarks" / "results"
    path = results / "arms.json"
    if not path.exists():
        return None
    # The shipped setting's row carries no variant (absent, or {} when drawn beside variants); the others carry the
    # variant's options.
    rows = [f for f in json.loads(path.read_text()).get("fidelity", [])
            if f.get("generator") == "vae_bgm" and f.get("seed") == seed and not f.get("calibration_variant")]
    if len(rows) > 1:
        raise SystemExit(f"arms.json holds {len(rows)} shipped VAE-BGM fidelity rows for seed {seed}; expected one")
    if rows:
        row = rows[0] if reading == "10n" else rows[0].get("low_noise") or {}
        return None if row.get("effects_lost") is None else int(row["effects_lost"])
    kept = results / "keep_order.json"
    shipped = [r for r in json.loads(kept.read_text())["rows"] if r["seed"] == seed and r["variant"] == "K"] if (
        kept.exists()) else []
    return int(shipped[0][f"effects_lost_{reading}"]) if shipped else None


def effect_draws_part(cohort: Any, seeds: list[int], draws: int, old: dict[str, Any] | None,
                      oracles: list[str]) -> dict[str, Any]:
    """Per seed and oracle: the law of the effects lost over ``draws`` draws (module docstring). Rows of seeds and
    oracles not rerun are kept from ``old``."""
    from fedsynth.cohort.partition import make_partition
    from fedsynth.evaluation.survival_effects import EFFECT_ROWS_FACTOR, expected_lost_population, survival_effects

    unknown = sorted(set(oracles) - set(EFFECT_ORACLES))
    if unknown:
        raise SystemExit(f"unknown oracles {unknown}; known: {', '.join(EFFECT_ORACLES)}")
    rows = [r for r in (old or {}).get("rows", []) if r["seed"] not in seeds or r["oracle"] not in oracles]
    t0 = time.perf_counter()
    for seed in seeds:
        part = make_partition(cohort.data, cohort.schema, proportions=(0.6, 0.3, 0.1), random_state=seed)
        train, n = part.train.reset_index(drop=True), len(part.train)
        for oracle in oracles:
            rng = np.random.default_rng([seed, 11, EFFECT_ORACLES.index(oracle)])
            limit = oracle == "population_limit"
            lost, analytic = [], []
            for _ in range(draws):
                real = train if oracle == "copy" else train.iloc[rng.integers(n, size=n)].reset_index(drop=True)
                # The limit reads the population itself at the real size (factor 1: the whole table, SE as fitted).
                syn = train if limit else train.iloc[rng.integers(n, size=EFFECT_ROWS_FACTOR * n)].reset_index(drop=True)
                se = survival_effects(real, syn, part.schema, rng=rng, effect_rows_factor=1 if limit else EFFECT_ROWS_FACTOR)
                lost.append(int(se["counts"]["effects_lost"]))
                analytic.append(expected_lost_population([{**e, "rows_ratio": 1e12} for e in se["effects"]])
                                if limit else float(se["counts"]["expected_lost_by_chance" if oracle == "copy"
                                                                 else "expected_lost_population"]))
            law = np.bincount(lost)
            reading = "100n" if limit else "10n"
            observed = vae_bgm_lost(seed, reading)
            row: dict[str, Any] = {
                "seed": seed, "oracle": oracle, "draws": draws, "rows_factor": "limit" if limit else EFFECT_ROWS_FACTOR,
                "lost_histogram": {str(k): int(c) for k, c in enumerate(law) if c},
                "mean_lost": round(float(np.mean(lost)), 3),
                "analytic_mean": round(float(np.mean(analytic)), 3),
                "p_none_lost": round(float(np.mean(np.asarray(lost) == 0)), 3),
                "vae_bgm_reading": reading, "vae_bgm_lost": observed,
                "p_at_least_vae_bgm": (None if observed is None
                                       else round(float(np.mean(np.asarray(lost) >= observed)), 3))}
            rows.append(row)
            print(json.dumps(row), flush=True)
    rows.sort(key=lambda r: (r["seed"], EFFECT_ORACLES.index(r["oracle"])))
    every = {o: round(float(np.prod([r["p_none_lost"] for r in rows if r["oracle"] == o and r["seed"] in (0, 1, 2)])), 4)
             for o in EFFECT_ORACLES if any(r["oracle"] == o for r in rows)}
    command = (f"OMP_NUM_THREADS=1 python benchmarks/bench_arm_chance.py --parts effect_draws --seeds "
               f"{','.join(map(str, seeds))} --effect-draws {draws} --effect-oracles {','.join(oracles)}")
    # Each call's command and seconds, the kept rows' calls first.
    calls = (old or {}).get("calls") or ([{"command": old["command"], "seconds": old["seconds"]}] if old else [])
    return {"seeds": sorted({r["seed"] for r in rows}), "rows": rows, "none_lost_at_seeds_0_1_2": every,
            "calls": [*calls, {"command": command, "seconds": round(time.perf_counter() - t0, 1)}]}


def arms_part(cohort: Any, args: Any) -> dict[str, Any]:
    """Per seed and arm: how often the copy and population oracles meet the arm criteria."""
    from fedsynth.cohort.criteria import read_criteria
    from fedsynth.cohort.partition import make_partition
    from fedsynth.evaluation.survival_effects import MEDIAN_FLAG
    from fedsynth.experiments.arm import BALANCED_POOL_FACTOR, balanced_rows

    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for seed in [int(s) for s in args.seeds.split(",")]:
        part = make_partition(cohort.data, cohort.schema, proportions=(0.6, 0.3, 0.1), random_state=seed)
        schema, train = part.schema, part.train
        ep = next(e for e in schema.endpoints if e.name == "OS")
        for arm_name in ARMS:
            crit = read_criteria(ROOT / "configs" / "arms" / f"{arm_name}.yaml", schema)
            mask = crit.eligible(train, schema)
            ref = train[mask].reset_index(drop=True)
            for oracle in ORACLES:
                balanced = oracle.endswith("_balanced")
                rng = np.random.default_rng([seed, ARMS.index(arm_name), ORACLES.index(oracle) % 2]
                                            + ([1] if balanced else []))
                errs, ps = [], []
                for _ in range(args.draws):
                    if balanced:  # fedsynth arm's default: n of BALANCED_POOL_FACTOR * n draws, along OS
                        pool = ref.iloc[rng.integers(len(ref), size=BALANCED_POOL_FACTOR * args.n)]
                        arm = balanced_rows(pool, args.n, duration_col=ep.duration_col, event_col=ep.event_col,
                                            rng=rng)
                    else:
                        arm = ref.iloc[rng.integers(len(ref), size=args.n)].reset_index(drop=True)
                    judged = ref if oracle.startswith("copy") else (
                        ref.iloc[rng.integers(len(ref), size=len(ref))].reset_index(drop=True))
                    err, p = judge(arm, judged, schema)
                    errs.append(err)
                    ps.append(p)
                e, pv = np.asarray(errs), np.asarray(ps)
                row = {"seed": seed, "arm": arm_name, "oracle": oracle, "n_real": int(mask.sum()), "n": args.n,
                       "draws": args.draws, "met": float(((e <= MEDIAN_FLAG) & (pv >= ALPHA)).mean()),
                       "median_within_15pct": float((e <= MEDIAN_FLAG).mean()),
                       "logrank_p_at_least_0_05": float((pv >= ALPHA).mean()),
                       "median_relative_error_p5_p95": [round(float(np.quantile(e, 0.05)), 4),
                                                        round(float(np.quantile(e, 0.95)), 4)]}
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = {o: summarise([r["met"] for r in rows if r["oracle"] == o]) for o in ORACLES}
    print(json.dumps(summary))
    return {"criteria": {"median_relative_error_at_most": MEDIAN_FLAG, "logrank_p_at_least": ALPHA},
            "seeds": args.seeds, "n": args.n, "draws": args.draws, "summary": summary, "rows": rows,
            "seconds": round(time.perf_counter() - t0, 1),
            "command": f"OMP_NUM_THREADS=1 python benchmarks/bench_arm_chance.py --parts arms --seeds {args.seeds} "
                       f"--n {args.n} --draws {args.draws}"}


if __name__ == "__main__":
    main()
