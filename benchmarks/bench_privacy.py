"""Differential privacy on MDS, federated over 3 sites (60/30/10): ε in {1, 3, 10, ∞} × {two-step BN, VAE-BGM}, beside
a centralized DP synthesizer (MST on Private-PGM, ``mbi``) at the same ε.

For each ε and method: the ε the accountant spent (for the federated runs, the largest over sites), then CSF, GSF,
survival-effect fidelity and NNDR of a sample the size of the training pool (quick scores against the training
pool, holdout as the NNDR baseline; survival-effect fidelity from :mod:`fedsynth.evaluation.survival_effects`).

- two-step BN: noisy count tables (zCDP), in process (:class:`~fedsynth.strategies.in_process.InProcessGrid`);
- VAE-BGM: FedAvg with DP-SGD at each site and the Gaussian mechanism on the latent-mixture statistics
  (:mod:`fedsynth.generators._dp`), short settings (``--vae-rounds`` × ``--vae-epochs``, hidden 64-64, latent 8);
- MST (McKenna, Sheldon & Miklau 2021, the NIST 2018 winner's successor): all 1-way marginals, a maximum spanning
  tree of 2-way marginals chosen by the exponential mechanism, those 2-way marginals, Private-PGM estimation
  (``mbi``) and sampling; ρ split in thirds, zCDP converted to (ε, δ) by dp_accounting like the federated runs.
  Centralized: it sees the pooled training rows (the trusted-curator model). The discretisation (domain bins and
  categories) is treated as public for every method, as the federated runs' domain is (it is released under the
  sites' disclosure policies, not the budget). ``mbi`` is an optional bench dependency
  (``pip install 'fedsynth[bench-privacy]'``); without it the MST rows say so.

Run:  .venv/bin/python benchmarks/bench_privacy.py [--epsilons 1,3,10,inf] [--methods bn,vae,mst] [--seed 0]
        [--vae-rounds 2] [--vae-epochs 3] [--out benchmarks/results/privacy.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("FEDSYNTH_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

DELTA = 1e-5
VAE_PARAMS = {"hidden_dims": [64, 64], "latent_dim": 8, "n_components": 4, "batch_size": 256, "device": "cpu"}


def _eps(x: float) -> float | str:
    return "inf" if math.isinf(x) else x


def score(part: Any, synthetic: Any, seed: int) -> dict[str, Any]:
    """CSF, GSF, survival-effect fidelity and NNDR of ``synthetic`` against the training pool."""
    from fedsynth.evaluation import quick_scores
    from fedsynth.evaluation.survival_effects import survival_effects

    schema = part.schema
    synthetic = schema.coerce(synthetic[schema.model_columns])
    q = quick_scores(part.train, synthetic, schema, holdout_data=part.holdout, random_state=seed)
    eff = survival_effects(part.train[schema.model_columns], synthetic, schema, rng=np.random.default_rng(seed))
    return {
        "csf": q["csf"], "gsf": q["gsf"], "survival_effect_fidelity": eff.get("fidelity"),
        "nndr_mean": q["nndr"]["synthetic"]["mean"], "nndr_p5": q["nndr_p5"],
        "holdout_nndr_mean": q["nndr"]["holdout"]["mean"] if q["nndr"].get("holdout") else None,
    }


def bn_run(part: Any, epsilon: float, seed: int, max_indegree: int) -> dict[str, Any]:
    from fedsynth.privacy.accounting import PrivacyBudget
    from fedsynth.strategies.in_process import InProcessGrid
    from fedsynth.strategies.registry import make_strategy
    from fedsynth.strategies.site import SiteRuntime

    schema = part.schema
    grid = InProcessGrid([SiteRuntime(s.name, s.data, schema, seed=seed + i) for i, s in enumerate(part.sites)])
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network",
                             generator_params={"max_indegree": max_indegree}, min_sites=3, random_state=seed)
    strategy.privacy = PrivacyBudget(epsilon, DELTA)
    t0 = time.perf_counter()
    result = strategy.start(grid)
    seconds = time.perf_counter() - t0
    summary = strategy.privacy_summary_ or {}
    return {"method": "two_step_bn (federated)", "epsilon_spent": summary.get("epsilon_spent"),
            "phases": summary.get("phases"), "n_edges": len(result.generator.edges_), "train_seconds": round(seconds, 2),
            **score(part, result.generator.sample(len(part.train), random_state=seed), seed)}


def vae_run(part: Any, epsilon: float, seed: int, rounds: int, epochs: int) -> dict[str, Any]:
    from fedsynth.federation.simulation import run_in_process
    from fedsynth.privacy.accounting import PrivacyBudget
    from fedsynth.strategies.registry import make_strategy

    schema = part.schema
    strategy = make_strategy("fedavg", schema, generator="vae_bgm", generator_params=VAE_PARAMS, rounds=rounds,
                             local_epochs=epochs, min_sites=3, random_state=seed,
                             params={"mixture_max_iter": 30})
    strategy.privacy = PrivacyBudget(epsilon, DELTA)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-privacy-") as root:
        result = run_in_process(strategy, [(s.name, s.data) for s in part.sites], schema,
                                seeds=[seed + i for i in range(len(part.sites))], state_root=root)
    seconds = time.perf_counter() - t0
    summary = strategy.privacy_summary_ or {}
    sites = {name: {k: s.get(k) for k in ("epsilon_spent", "noise_multiplier", "sample_rate", "steps_per_round")}
             for name, s in (summary.get("sites") or {}).items()}
    return {"method": "vae_bgm (federated, DP-SGD)", "epsilon_spent": summary.get("epsilon_spent"),
            "split": summary.get("split"), "sites": sites, "rounds": rounds, "local_epochs": epochs,
            "train_seconds": round(seconds, 2),
            **score(part, result.generator.sample(len(part.train), random_state=seed), seed)}


# -- centralized MST on Private-PGM (mbi) ------------------------------------------------------------------


def _discretise(part: Any, n_bins: int) -> tuple[Any, dict[str, np.ndarray], dict[str, int]]:
    """The pooled training rows as integer codes over a public domain: numeric columns by the domain's bins,
    categories by label, a missing value as one more state."""
    from fedsynth.encoding.domain import Domain

    schema = part.schema
    data = part.train[schema.model_columns]
    domain = Domain.from_data(data, schema, n_bins=n_bins)
    codes: dict[str, np.ndarray] = {}
    sizes: dict[str, int] = {}
    for name in domain.column_names:
        col = domain[name]
        values = data[name]
        missing = values.isna().to_numpy()
        if col.is_numeric:
            k = len(col.bins) - 1
            c = np.where(missing, 0, domain.bin_index(name, values).fillna(0).to_numpy()).astype(np.int64)
        else:
            k = len(col.categories)
            labels = values.astype("float64").round().astype("Int64").astype(str) if col.kind.value == "binary" \
                else values.astype(str)
            lookup = {v: i for i, v in enumerate(col.categories)}
            c = labels.map(lookup).fillna(0).to_numpy().astype(np.int64)
        codes[name] = np.where(missing, k, c)
        sizes[name] = k + 1  # the last state is "missing"
    return domain, codes, sizes


def _undiscretise(domain: Any, codes: dict[str, np.ndarray], rng: np.random.Generator) -> Any:
    import pandas as pd

    out: dict[str, Any] = {}
    for name in domain.column_names:
        col = domain[name]
        c = np.asarray(codes[name])
        if col.is_numeric:
            edges = np.asarray(col.bins)
            k = len(edges) - 1
            b = np.minimum(c, k - 1)
            values = edges[b] + rng.random(len(c)) * (edges[b + 1] - edges[b])
            if col.kind.value == "integer":
                values = np.round(values)
            values = values.astype(np.float64)
            values[c == k] = np.nan
        else:
            k = len(col.categories)
            cats = np.asarray([float(x) for x in col.categories]) if col.kind.value == "binary" else \
                np.asarray(col.categories, dtype=object)
            values = cats[np.minimum(c, k - 1)].astype(object if cats.dtype == object else np.float64)
            values[c == k] = np.nan
        out[name] = values
    return pd.DataFrame(out)


def mst_synthesize(part: Any, epsilon: float, seed: int, n_bins: int = 10, iters: int = 500) -> tuple[Any, float]:
    """MST at (ε, δ): returns the synthetic rows and the ε its ρ converts to (dp_accounting)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import mbi
    from mbi.estimation import MirrorDescent

    from fedsynth.privacy.accounting import DEFAULT_ORDERS, PrivacyBudget, epsilon_from_rdp, rho_for_budget

    rng = np.random.default_rng(seed)
    domain, codes, sizes = _discretise(part, n_bins)
    names = list(sizes)
    mdom = mbi.Domain(names, [sizes[c] for c in names])
    data = mbi.Dataset(codes, mdom)
    rho = rho_for_budget(PrivacyBudget(epsilon, DELTA))
    # MST's split: a third each for the 1-way marginals, the tree selection and the 2-way marginals. Each
    # measurement step weights its k marginals by 1/sqrt(k) (L2 sensitivity 1 in all): rho/3 = 1/(2 sigma^2).
    sigma = math.sqrt(3.0 / (2.0 * rho))

    def measure(cliques: list[tuple[str, ...]]) -> list[Any]:
        w = 1.0 / math.sqrt(len(cliques))
        out = []
        for cl in cliques:
            x = np.asarray(data.project(cl).datavector())
            y = w * x + rng.normal(0.0, sigma, size=x.shape)
            out.append(mbi.LinearMeasurement(y / w, cl, stddev=sigma / w))
        return out

    one_way = measure([(c,) for c in names])
    # The 1-way model is the product of the (noisy, projected to counts) 1-way marginals, so its 2-way marginals
    # are outer products (post-processing; MST fits it with Private-PGM, which gives the same up to its
    # projection, at a jax compilation per pair).
    n = len(part.train)
    p1 = {m.clique[0]: np.maximum(np.asarray(m.noisy_measurement), 0.0) for m in one_way}
    p1 = {c: v / v.sum() if v.sum() > 0 else np.full(len(v), 1.0 / len(v)) for c, v in p1.items()}
    # Tree selection: Kruskal over pairs, each edge by the exponential mechanism on the L1 error of the 1-way
    # model's 2-way marginal (sensitivity 1); each of the d-1 draws gets rho/3/(d-1) = eps_i^2 / 8 zCDP.
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    counts = {c: codes[c] for c in names}

    def joint(a: str, b: str) -> np.ndarray:
        return np.bincount(counts[a] * sizes[b] + counts[b], minlength=sizes[a] * sizes[b]).astype(float)

    err = {(a, b): float(np.abs(joint(a, b) - n * np.outer(p1[a], p1[b]).ravel()).sum()) for a, b in pairs}
    eps_i = math.sqrt(8.0 * (rho / 3.0) / (len(names) - 1))
    parent = {c: c for c in names}

    def find(c: str) -> str:
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    chosen: list[tuple[str, ...]] = []
    while len(chosen) < len(names) - 1:
        candidates = [p for p in pairs if find(p[0]) != find(p[1])]
        scores = np.asarray([err[p] for p in candidates])
        # exponential mechanism (Gumbel-max): argmax of eps/2 * score + Gumbel noise, sensitivity 1
        pick = candidates[int(np.argmax(eps_i / 2.0 * scores + rng.gumbel(size=len(scores))))]
        chosen.append(pick)
        parent[find(pick[0])] = find(pick[1])
    two_way = measure(chosen)
    model = MirrorDescent().estimate(mdom, one_way + two_way, iters=iters)
    synth = model.synthetic_data(len(part.train))
    rows = _undiscretise(domain, {c: np.asarray(synth.data[c]) for c in names}, rng)
    spent = epsilon_from_rdp(np.asarray(DEFAULT_ORDERS) * rho, DELTA)
    return rows, spent


def mst_run(part: Any, epsilon: float, seed: int) -> dict[str, Any]:
    if math.isinf(epsilon):
        return {"method": "MST (centralized, mbi)", "note": "no noise at epsilon = inf: not run"}
    try:
        import mbi  # noqa: F401
    except ImportError as exc:
        return {"method": "MST (centralized, mbi)", "note": f"not run: {exc} (pip install 'fedsynth[bench-privacy]')"}
    t0 = time.perf_counter()
    rows, spent = mst_synthesize(part, epsilon, seed)
    seconds = time.perf_counter() - t0
    return {"method": "MST (centralized, mbi)", "epsilon_spent": spent, "train_seconds": round(seconds, 2),
            **score(part, rows, seed)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epsilons", default="1,3,10,inf")
    ap.add_argument("--methods", default="bn,vae,mst")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-indegree", type=int, default=2)
    ap.add_argument("--vae-rounds", type=int, default=2)
    ap.add_argument("--vae-epochs", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "privacy.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore")
    from fedsynth.cohort.datasets import load_cohort
    from fedsynth.cohort.partition import make_partition

    cohort = load_cohort("mds-iwgpm")
    part = make_partition(cohort.data, cohort.schema, proportions=(0.6, 0.3, 0.1), random_state=0)
    methods = args.methods.split(",")
    rows = []
    t_all = time.perf_counter()
    for eps in [float(e) for e in args.epsilons.split(",")]:
        for method in methods:
            if method == "bn":
                row = bn_run(part, eps, args.seed, args.max_indegree)
            elif method == "vae":
                row = vae_run(part, eps, args.seed, args.vae_rounds, args.vae_epochs)
            else:
                row = mst_run(part, eps, args.seed)
            row = {"epsilon": _eps(eps), "delta": DELTA, "seed": args.seed, **row}
            rows.append(row)
            if "csf" in row:
                spent = row["epsilon_spent"]
                sef = row["survival_effect_fidelity"]
                print(f"eps={row['epsilon']!s:>4} {row['method']:<30} spent {spent:.4g}  CSF {row['csf']:.3f}  "
                      f"GSF {row['gsf']:.3f}  SEF {'-' if sef is None else f'{sef:.3f}'}  NNDR {row['nndr_mean']:.3f}"
                      f" (holdout {row['holdout_nndr_mean']:.3f})  {row['train_seconds']}s", flush=True)
            else:
                print(f"eps={row['epsilon']!s:>4} {row['method']:<30} {row['note']}", flush=True)
    out = {"benchmark": "privacy", "cohort": "mds-iwgpm", "sites": [0.6, 0.3, 0.1], "delta": DELTA,
           "max_indegree": args.max_indegree, "vae": {"params": VAE_PARAMS, "rounds": args.vae_rounds,
                                                      "local_epochs": args.vae_epochs},
           "platform": platform.platform(), "seconds": round(time.perf_counter() - t_all, 1), "runs": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
