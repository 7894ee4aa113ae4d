"""Benchmark: how each way of repairing LFS > OS changes the sampled endpoints, and the real-data noise floor of the
survival-effect fidelity.

For each saved centralized model given (``fedsynth fit ... --out DIR`` writes ``DIR/model``), draws as many rows
as the training pool (seed 0) *without* the schema's endpoint rules, counts the rows that break each rule, then
repairs the time order three ways (each followed by the event rule: an OS death made an LFS event) and compares
each endpoint with the real training pool:

- ``meet`` (what ``fedsynth.cohort.constraints.enforce`` does): both times set to their geometric mean;
- ``cap_shorter``: LFS set to OS;
- ``raise_longer``: OS set to LFS;

by the KS statistic of each duration column and the Kaplan-Meier sup distance of each endpoint up to the real
90th percentile of follow-up, and their sum over both endpoints (``total``, lower is closer). It also scores two random halves of the real training pool against each other
(``survival_effects``, three splits): what sampling noise alone costs the survival-effect fidelity.

Run: ``FEDSYNTH_DATA_DIR=/path/to/data python benchmarks/bench_endpoint_rules.py /tmp/bn/model /tmp/vae/model``
Writes ``benchmarks/results/endpoint_rules.json``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

RESULTS = Path(__file__).resolve().parent / "results" / "endpoint_rules.json"


def _one_sided(data: pd.DataFrame, rules: tuple, move: str) -> pd.DataFrame:  # type: ignore[type-arg]
    """Make the times agree by moving one of them (``"shorter"`` down or ``"longer"`` up), then the event rules."""
    from fedsynth.cohort.constraints import EventImplies, TimeOrder, enforce

    out = data.copy()
    for r in rules:
        if isinstance(r, TimeOrder):
            bad = r.violations(out)
            src, dst = ((r.longer, r.shorter) if move == "shorter" else (r.shorter, r.longer))
            out.loc[bad, dst.duration_col] = out.loc[bad, src.duration_col].to_numpy()
    return enforce(out, [r for r in rules if isinstance(r, EventImplies)])


def _compare(real: pd.DataFrame, syn: pd.DataFrame, schema) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from fedsynth.evaluation.survival_effects import km_distance

    out: dict[str, float] = {}
    for ep in schema.endpoints:
        r = real[[ep.duration_col, ep.event_col]].dropna()
        s = syn[[ep.duration_col, ep.event_col]].dropna()
        horizon = float(np.quantile(r[ep.duration_col], 0.9))
        out[f"{ep.name} KS"] = float(stats.ks_2samp(r[ep.duration_col], s[ep.duration_col]).statistic)
        out[f"{ep.name} KM sup distance"] = km_distance(r[ep.duration_col].to_numpy(), r[ep.event_col].to_numpy(),
                                                        s[ep.duration_col].to_numpy(), s[ep.event_col].to_numpy(),
                                                        horizon)
    out["total"] = sum(out.values())
    return out


def main() -> None:
    from fedsynth.cohort.constraints import enforce, violation_counts
    from fedsynth.cohort.datasets import load_cohort
    from fedsynth.cohort.partition import train_holdout_split
    from fedsynth.evaluation.survival_effects import survival_effects
    from fedsynth.generators import load_generator

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", type=Path)
    args = parser.parse_args()
    cohort = load_cohort("mds-iwgpm")
    train, _ = train_holdout_split(cohort.data, cohort.schema, holdout_fraction=0.1, random_state=0)
    result: dict[str, object] = {"training_rows": len(train), "models": {}}
    for path in args.models:
        gen = load_generator(path)
        rules = gen.schema.constraints or cohort.schema.constraints
        gen.schema = replace(gen.schema, constraints=())
        raw = gen.sample(len(train), random_state=0)
        entry = {
            "violations_before_repair": {c["rule"]: c["violations"] for c in violation_counts(raw, rules)},
            "checked": {c["rule"]: c["checked"] for c in violation_counts(raw, rules)},
            "no_repair": _compare(train, raw, cohort.schema),
            "meet": _compare(train, enforce(raw, rules), cohort.schema),
            "cap_shorter": _compare(train, _one_sided(raw, rules, "shorter"), cohort.schema),
            "raise_longer": _compare(train, _one_sided(raw, rules, "longer"), cohort.schema),
        }
        result["models"][f"{gen.name} ({path})"] = entry  # type: ignore[index]
        print(gen.name, json.dumps(entry, indent=1))
    floor = []
    for seed in range(3):
        idx = np.random.default_rng(seed).permutation(len(train))
        half = len(train) // 2
        a, b = train.iloc[np.sort(idx[:half])], train.iloc[np.sort(idx[half:])]
        se = survival_effects(a, b, cohort.schema, rng=np.random.default_rng(seed))
        floor.append({"seed": seed, "fidelity": se["fidelity"], "curves_part": se["parts"]["curves"],
                      "effects_part": se["parts"]["effects"], **se["counts"]})
        print("real half vs real half", floor[-1])
    result["real_halves"] = floor
    RESULTS.write_text(json.dumps(result, indent=1))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
