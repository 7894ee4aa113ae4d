"""Benchmark: fedsynth's BayesianNetworkGenerator vs a plain pgmpy network on the real MDS cohort.

Both are fitted on the same 90% training split (fedsynth.cohort.partition.train_holdout_split, seed 0) in the
same process and sampled to the size of that split. fedsynth's network is the centralised path of the two-step
protocol (counts from a PooledCountOracle over the shared domain's quantile bins, missing values modelled by
indicator nodes, values placed inside their bin from within-bin histograms). The peer is what a pgmpy user would
write: rows with any missing value dropped (pgmpy's structure search rejects NaN), numeric columns cut into 10
equal-width bins, HillClimbSearch with BIC, DiscreteBayesianEstimator (BDeu, ess 5), model.simulate, and values
drawn uniformly inside the sampled bin. Also checks that a 3-site SummedCountOracle gives the same network.

Scores (same functions as benchmarks/bench_ctgan.py, so figures are comparable across generators): SDMetrics
QualityReport, gene-pair direction agreement, gene-survival agreement and the TP53 log-rank on OS, NNDR (Gower)
beside the holdout baseline, values outside the domain, and the largest per-column missing-rate error.

Timings are reported as wall seconds and as CPU seconds of this process (``time.process_time``), which stay
meaningful on a shared machine. Run (CPU, one core, about 2 minutes alone; more on a busy machine)::

    FEDSYNTH_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/bench_bayesian_network.py

Options: ``--param key=value`` (a generator hyperparameter, value parsed as JSON), ``--no-peer``, ``--seed N``,
``--out PATH``. Writes benchmarks/results/bayesian_network.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

os.environ.setdefault("FEDSYNTH_DATA_DIR", "/work/shared/data")
os.environ.setdefault("OMP_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ctgan import evaluate, nndr

from fedsynth.cohort.datasets import load_cohort
from fedsynth.cohort.derived import add_derived
from fedsynth.cohort.partition import train_holdout_split
from fedsynth.cohort.schema import ColumnKind, TableSchema

RESULTS = Path(__file__).resolve().parent / "results" / "bayesian_network.json"


def run_fedsynth(train: pd.DataFrame, schema: TableSchema, params: dict[str, Any], seed: int) -> dict[str, Any]:
    from fedsynth.generators.bayesian_network import BayesianNetworkGenerator, PooledCountOracle

    t0, c0 = time.perf_counter(), time.process_time()
    gen = BayesianNetworkGenerator(schema, **params)
    gen.fit(train)
    fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    synthetic = gen.sample(len(train), random_state=seed)
    sample_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    gen.sample(3000, random_state=seed)
    sample3000_s, sample3000_cpu = time.perf_counter() - t0, time.process_time() - c0
    oracle = PooledCountOracle(schema.select(schema.model_columns).coerce(train), gen.domain)
    gen.learn_structure(oracle)
    return {"generator": gen, "synthetic": synthetic, "fit_seconds": fit_s, "sample_seconds": sample_s,
            "sample_3000_seconds": sample3000_s, "fit_cpu_seconds": fit_cpu, "sample_3000_cpu_seconds": sample3000_cpu, "structure_requests": oracle.n_requests,
            "structure_families": oracle.n_families_fetched}


def federated_equals_pooled(train: pd.DataFrame, schema: TableSchema, gen: Any, seed: int) -> dict[str, Any]:
    """A 3-site (60/30/10) SummedCountOracle over the same rows must give the very same edges and CPDs."""
    from fedsynth.generators.bayesian_network import SummedCountOracle, family_counts

    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(train))
    cuts = [int(0.6 * len(train)), int(0.9 * len(train))]
    sites = [train.iloc[part] for part in np.split(idx, cuts)]
    domain = gen.domain

    def fetch(families: list) -> list:
        return [family_counts(s, domain, families, n_sub_bins=gen.params.n_sub_bins) for s in sites]

    oracle = SummedCountOracle(fetch)
    t0 = time.perf_counter()
    edges = gen.learn_structure(oracle)
    fed = type(gen)(schema, domain=domain, **gen.get_params()).learn_parameters(oracle, edges)
    seconds = time.perf_counter() - t0
    diff = max(float(np.max(np.abs(fed._probs[v] - gen._probs[v]))) for v in gen._probs)
    return {"same_edges": edges == gen.edges_, "max_cpd_abs_diff": diff, "round_trips": oracle.n_requests,
            "families_requested": oracle.n_families_fetched, "count_cells_per_site": oracle.n_cells_fetched,
            "seconds": round(seconds, 2)}


def run_peer(train: pd.DataFrame, schema: TableSchema, seed: int, max_indegree: int) -> dict[str, Any]:
    """Plain pgmpy: drop incomplete rows, equal-width bins, HillClimbSearch(BIC), BDeu estimator, simulate."""
    from pgmpy.causal_discovery import HillClimbSearch
    from pgmpy.models import DiscreteBayesianNetwork
    from pgmpy.parameter_estimator import DiscreteBayesianEstimator

    rng = np.random.default_rng(seed)
    t0, c0 = time.perf_counter(), time.process_time()
    complete = train.dropna().reset_index(drop=True)
    disc = pd.DataFrame(index=complete.index)
    edges_of: dict[str, np.ndarray] = {}
    for c in complete.columns:
        if schema[c].is_numeric:
            codes, edges = pd.cut(complete[c], bins=10, labels=False, retbins=True)
            edges_of[c] = edges
            disc[c] = "b" + codes.astype(int).astype(str)
        elif schema[c].kind is ColumnKind.BINARY:
            disc[c] = complete[c].astype(int).astype(str)
        else:
            disc[c] = complete[c].astype(str)
    search = HillClimbSearch(scoring_method="bic-d", max_indegree=max_indegree, return_type="dag", show_progress=False)
    dag = search.fit(disc).causal_graph_
    model = DiscreteBayesianNetwork()
    model.add_nodes_from(disc.columns)
    model.add_edges_from(dag.edges())
    est = DiscreteBayesianEstimator(prior_type="BDeu", equivalent_sample_size=5).fit(model, disc)
    model.add_cpds(*est.parameters_)
    fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    raw = model.simulate(len(train), seed=seed, show_progress=False)
    out = pd.DataFrame(index=raw.index)
    for c in complete.columns:
        if c in edges_of:
            b = raw[c].str[1:].astype(int).to_numpy()
            e = edges_of[c]
            v = e[b] + rng.random(len(b)) * (e[b + 1] - e[b])
            out[c] = np.round(v) if schema[c].kind is ColumnKind.INTEGER else v
        elif schema[c].kind is ColumnKind.BINARY:
            out[c] = raw[c].astype(float)
        else:
            out[c] = raw[c].astype(object)
    out = schema.select(schema.model_columns).coerce(out)
    synthetic = add_derived(out, schema.select(schema.data_columns))
    sample_s = time.perf_counter() - t0
    return {"synthetic": synthetic, "fit_seconds": fit_s, "sample_seconds": sample_s, "fit_cpu_seconds": fit_cpu,
            "n_complete_rows": len(complete), "n_edges": len(dag.edges())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--param", action="append", default=[], help="key=value (JSON value)")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    params: dict[str, Any] = {}
    for item in args.param:
        key, _, value = item.partition("=")
        params[key] = json.loads(value)

    cohort = load_cohort("mds-iwgpm")
    schema = cohort.schema
    train, holdout = train_holdout_split(cohort.data, schema, holdout_fraction=0.1, random_state=args.seed)
    cols = schema.model_columns
    train, holdout = train[cols], holdout[cols]

    ours = run_fedsynth(train, schema, params, args.seed)
    gen = ours["generator"]
    domain = gen.domain
    holdout_nndr = nndr(holdout, train, schema, domain)
    result: dict[str, Any] = {
        "benchmark": "bayesian_network",
        "command": "FEDSYNTH_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/bench_bayesian_network.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "data": {"cohort": cohort.name, "n_train": len(train), "n_holdout": len(holdout), "n_model_columns": len(cols),
                 "split_seed": args.seed},
        "machine": {"platform": platform.platform(), "threads": 1},
        "holdout_baseline": {"nndr": holdout_nndr},
        "fedsynth_bayesian_network": {
            "params": gen.get_params(),
            "fit_seconds": round(ours["fit_seconds"], 2),
            "sample_seconds": round(ours["sample_seconds"], 3),
            "sample_3000_seconds": round(ours["sample_3000_seconds"], 3),
            "fit_cpu_seconds": round(ours["fit_cpu_seconds"], 2),
            "sample_3000_cpu_seconds": round(ours["sample_3000_cpu_seconds"], 3),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
            "n_edges": len(gen.edges_),
            "structure_count_requests": ours["structure_requests"],
            "structure_families_counted": ours["structure_families"],
        },
    }
    mine = result["fedsynth_bayesian_network"]
    mine.update(evaluate(train, ours["synthetic"], holdout_nndr, schema, domain))
    mine["missing_rates"] = {
        c: {"real": round(float(train[c].isna().mean()), 4), "synthetic": round(float(ours["synthetic"][c].isna().mean()), 4)}
        for c in cols if train[c].isna().any()
    }
    mine["federated_3_sites_equals_pooled"] = federated_equals_pooled(train, schema, gen, args.seed)
    tp = mine["gene_survival"]
    mine["tp53_ok"] = bool(tp["tp53_synthetic"]["logrank_p"] < 1e-3 and
                           np.sign(np.log(tp["tp53_synthetic"]["hazard_ratio"])) == np.sign(np.log(tp["tp53_real"]["hazard_ratio"])))
    print(json.dumps(mine, indent=1, default=str), flush=True)
    if not args.no_peer:
        peer = run_peer(train, schema, args.seed, max_indegree=gen.params.max_indegree)
        result["pgmpy_plain"] = {
            "fit_seconds": round(peer["fit_seconds"], 2),
            "fit_cpu_seconds": round(peer["fit_cpu_seconds"], 2),
            "sample_seconds": round(peer["sample_seconds"], 3),
            "n_complete_rows_used": peer["n_complete_rows"],
            "n_edges": peer["n_edges"],
        }
        result["pgmpy_plain"].update(evaluate(train, peer["synthetic"], holdout_nndr, schema, domain))
        theirs = result["pgmpy_plain"]
        result["ratios_fedsynth_over_pgmpy"] = {
            "fit_seconds": round(mine["fit_seconds"] / theirs["fit_seconds"], 3),
            "fit_cpu_seconds": round(mine["fit_cpu_seconds"] / theirs["fit_cpu_seconds"], 3),
            "sample_seconds": round(mine["sample_seconds"] / theirs["sample_seconds"], 3),
            "quality": round(mine["quality"]["score"] / theirs["quality"]["score"], 4),
            "gene_pair_direction_agreement": round(
                mine["gene_pairs"]["direction_agreement"] / theirs["gene_pairs"]["direction_agreement"], 3
            ),
        }
        print(json.dumps({"pgmpy_plain": theirs, "ratios": result["ratios_fedsynth_over_pgmpy"]}, indent=1, default=str))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
