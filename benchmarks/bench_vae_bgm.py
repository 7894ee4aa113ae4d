"""Benchmark: centralised VAE-BGM on the real MDS cohort, side by side with SDV's TVAESynthesizer (defaults).

90% training split (seed 0) vs a synthetic sample of the same size. Writes benchmarks/results/vae_bgm.json:
fit and sample times, SDMetrics QualityReport, TP53 log-rank on OS (p and direction), out-of-range values,
per-column missing-rate gaps, NNDR (Gower) against the holdout baseline, gene-pair association agreement,
and the VAE-BGM / TVAE ratios. Then the same scores for a simulated federation (60/30/10 sites, domain merged
from site summaries, 30 FedAvg rounds x 10 local epochs, global latent mixture by federated EM): best case,
worst case, and worst case with column_dropout=0.2. Scores use the real training pool; the federated runs use
make_partition's own split (seed 0). Run on demand (about 6-8 minutes on one idle core):

    FEDSYNTH_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/bench_vae_bgm.py
    .venv/bin/python benchmarks/bench_vae_bgm.py --no-peer --no-federated --epochs 100   # exploration, not written
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

os.environ.setdefault("FEDSYNTH_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

RESULTS = Path(__file__).resolve().parent / "results" / "vae_bgm.json"


# -- scores (self-contained until fedsynth.evaluation offers them) --------------------------------------


def quality_report(real: pd.DataFrame, synthetic: pd.DataFrame, schema: Any) -> dict[str, float]:
    from sdmetrics.reports.single_table import QualityReport

    cols = {}
    for name in real.columns:
        spec = schema[name]
        cols[name] = {"sdtype": "numerical"} if spec.is_numeric else {"sdtype": "categorical"}
    report = QualityReport()
    report.generate(real, synthetic[real.columns], {"columns": cols}, verbose=False)
    props = report.get_properties()
    out = {"score": float(report.get_score())}
    for _, row in props.iterrows():
        out[str(row["Property"])] = float(row["Score"])
    shapes = report.get_details("Column Shapes").sort_values("Score").head(5)
    out["lowest_column_shapes"] = {str(r["Column"]): round(float(r["Score"]), 4) for _, r in shapes.iterrows()}
    return out


def tp53_logrank(data: pd.DataFrame) -> dict[str, float]:
    from lifelines import CoxPHFitter
    from lifelines.statistics import logrank_test

    d = data[["OS_YEARS", "OS_STATUS", "TP53"]].dropna()
    d = d[d["OS_YEARS"] > 0]
    mut = d["TP53"] == 1
    res = logrank_test(
        d.loc[mut, "OS_YEARS"], d.loc[~mut, "OS_YEARS"], d.loc[mut, "OS_STATUS"], d.loc[~mut, "OS_STATUS"]
    )
    cox = CoxPHFitter().fit(d, "OS_YEARS", "OS_STATUS")
    return {"p": float(res.p_value), "log_hr": float(cox.params_["TP53"]), "n_mutated": int(mut.sum())}


def out_of_range(synthetic: pd.DataFrame, domain: Any) -> int:
    bad = 0
    for name, col in domain.columns.items():
        s = synthetic[name].dropna()
        if col.is_numeric:
            bad += int(((s < col.lower) | (s > col.upper)).sum())
        else:
            labels = s.astype("float64").astype(int).astype(str) if col.kind.value == "binary" else s.astype(str)
            bad += int((~labels.isin(col.categories)).sum())
    return bad


def missing_gaps(real: pd.DataFrame, synthetic: pd.DataFrame) -> dict[str, float]:
    return {c: float(abs(real[c].isna().mean() - synthetic[c].isna().mean())) for c in real.columns}


def gower_nn(query: pd.DataFrame, reference: pd.DataFrame, schema: Any, *, chunk: int = 256) -> np.ndarray:
    """Distances to the nearest and second-nearest reference rows (Gower: numeric range-normalised |diff|,
    categorical mismatch, missing vs present = 1, both missing = 0; averaged over columns)."""
    num = [c for c in reference.columns if schema[c].is_numeric]
    cat = [c for c in reference.columns if not schema[c].is_numeric]
    rn = reference[num].to_numpy(dtype=float)
    qn = query[num].to_numpy(dtype=float)
    rng_ = np.nanmax(rn, axis=0) - np.nanmin(rn, axis=0)
    rng_[rng_ == 0] = 1.0
    rn, qn = rn / rng_, qn / rng_
    codes = {
        c: {v: i for i, v in enumerate(pd.concat([reference[c], query[c]]).dropna().astype(str).unique())} for c in cat
    }
    rc = (
        np.stack([reference[c].map(lambda v, m=codes[c]: m.get(str(v), -1) if pd.notna(v) else -1) for c in cat], 1)
        if cat
        else None
    )
    qc = (
        np.stack([query[c].map(lambda v, m=codes[c]: m.get(str(v), -1) if pd.notna(v) else -1) for c in cat], 1)
        if cat
        else None
    )
    p = len(num) + len(cat)
    out = np.empty((len(query), 2))
    for s in range(0, len(query), chunk):
        q = qn[s : s + chunk]
        diff = np.abs(q[:, None, :] - rn[None, :, :])
        qnan, rnan = np.isnan(q)[:, None, :], np.isnan(rn)[None, :, :]
        diff = np.where(qnan & rnan, 0.0, np.where(qnan | rnan, 1.0, diff))
        dist = diff.sum(2)
        if rc is not None:
            dist += (qc[s : s + chunk, None, :] != rc[None, :, :]).sum(2)
        dist /= p
        part = np.partition(dist, 1, axis=1)[:, :2]
        out[s : s + chunk] = part
    return out


def nndr(query: pd.DataFrame, reference: pd.DataFrame, schema: Any) -> dict[str, float]:
    d = gower_nn(query, reference, schema)
    ratio = np.where(d[:, 1] > 0, d[:, 0] / np.maximum(d[:, 1], 1e-12), 0.0)
    return {
        "mean": float(ratio.mean()),
        "p05": float(np.quantile(ratio, 0.05)),
        "exact_copies": int((d[:, 0] == 0).sum()),
    }


def _bh(p: np.ndarray) -> np.ndarray:
    n = len(p)
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return out


def _gene_pairs(real: pd.DataFrame, synthetic: pd.DataFrame, genes: list[str]) -> dict[str, float]:
    from scipy.stats import fisher_exact

    keep = [g for g in genes if real[g].mean() >= 0.02]
    pairs, ps = [], []
    for i, a in enumerate(keep):
        for b in keep[i + 1 :]:
            t = pd.crosstab(real[a] == 1, real[b] == 1).reindex(
                index=[False, True], columns=[False, True], fill_value=0
            )
            _, p = fisher_exact(t.to_numpy())
            pairs.append((a, b))
            ps.append(p)
    q = _bh(np.asarray(ps))
    sig = [pr for pr, qq in zip(pairs, q) if qq < 0.05]

    def lor(d: pd.DataFrame, a: str, b: str) -> float:
        x, y = d[a] == 1, d[b] == 1
        n11, n10, n01, n00 = (x & y).sum(), (x & ~y).sum(), (~x & y).sum(), (~x & ~y).sum()
        return float(np.log((n11 + 0.5) * (n00 + 0.5) / ((n10 + 0.5) * (n01 + 0.5))))

    agree = [np.sign(lor(real, a, b)) == np.sign(lor(synthetic, a, b)) for a, b in sig]
    return {
        "n_genes": len(keep),
        "n_pairs": len(pairs),
        "n_significant": len(sig),
        "agreement": float(np.mean(agree)) if agree else float("nan"),
    }


def score(
    real: pd.DataFrame,
    synthetic: pd.DataFrame,
    holdout: pd.DataFrame,
    schema: Any,
    domain: Any,
    holdout_nndr: dict[str, float],
) -> dict[str, Any]:
    cols = schema.data_columns
    gaps = missing_gaps(real[cols], synthetic[cols])
    syn_nndr = nndr(synthetic[cols], real[cols], schema)
    tp = tp53_logrank(synthetic)
    real_tp = tp53_logrank(real)
    return {
        "quality_report": quality_report(real[cols], synthetic[cols], schema),
        "tp53_os_logrank": {**tp, "same_direction_as_real": bool(np.sign(tp["log_hr"]) == np.sign(real_tp["log_hr"]))},
        "out_of_range_values": out_of_range(synthetic, domain),
        "missing_rate_gap_max": max(gaps.values()),
        "missing_rate_gaps": {k: round(v, 4) for k, v in gaps.items() if v > 0.005},
        "nndr": syn_nndr,
        "nndr_p05_not_worse_than_holdout": bool(syn_nndr["p05"] >= holdout_nndr["p05"]),
        "gene_pairs": _gene_pairs(real, synthetic, schema.genomic_columns),
    }


# -- runs ---------------------------------------------------------------------------------------------


def run_vae_bgm(
    train: pd.DataFrame, schema: Any, params: dict[str, Any], n: int
) -> tuple[pd.DataFrame, dict[str, float], Any]:
    from fedsynth.generators.vae_bgm import VAEBGMGenerator

    gen = VAEBGMGenerator(schema, **params)
    t0, c0 = time.perf_counter(), time.process_time()
    gen.fit(train[schema.model_columns])
    t1, c1 = time.perf_counter(), time.process_time()
    syn = gen.sample(n, random_state=1)
    t2, c2 = time.perf_counter(), time.process_time()
    return syn, {"fit_s": t1 - t0, "sample_s": t2 - t1, "fit_cpu_s": c1 - c0, "sample_cpu_s": c2 - c1}, gen


def run_tvae(train: pd.DataFrame, schema: Any, n: int) -> tuple[pd.DataFrame, dict[str, float]]:
    from sdv.metadata import Metadata
    from sdv.single_table import TVAESynthesizer

    from fedsynth.cohort.derived import add_derived

    cols = schema.model_columns
    meta = Metadata.load_from_dict(
        {
            "tables": {
                "table": {
                    "columns": {
                        c: ({"sdtype": "numerical"} if schema[c].is_numeric else {"sdtype": "categorical"})
                        for c in cols
                    }
                }
            }
        }
    )
    synth = TVAESynthesizer(meta, enable_gpu=False)
    t0, c0 = time.perf_counter(), time.process_time()
    synth.fit({"table": train[cols]})  # SDV 2.0 takes and returns {table name: frame}
    t1, c1 = time.perf_counter(), time.process_time()
    out = synth.sample(n)
    syn = out["table"] if isinstance(out, dict) else out
    t2, c2 = time.perf_counter(), time.process_time()
    syn = schema.select(cols).coerce(syn)
    syn = add_derived(syn, schema.select(schema.data_columns))
    return syn, {"fit_s": t1 - t0, "sample_s": t2 - t1, "fit_cpu_s": c1 - c0, "sample_cpu_s": c2 - c1}


def run_federated(cohort: Any, params: dict[str, Any], scenario: str, rounds: int, local_epochs: int) -> dict[str, Any]:
    """FedAvg of the VAE (row-count weighted) over the 60/30/10 partition, then the federated EM latent mixture.

    Simulated in one process with exactly the hooks a Flower strategy calls: the domain is merged from site
    summaries, sites exchange only weights and mixture statistics.
    """
    from fedsynth.cohort.partition import make_partition
    from fedsynth.encoding.domain import merge_summaries, summarize_site
    from fedsynth.generators.latent_mixture import fit_latent_mixture_federated
    from fedsynth.generators.vae_bgm import VAEBGMGenerator

    schema = cohort.schema
    part = make_partition(cohort.data, schema, proportions=(0.6, 0.3, 0.1), scenario=scenario, random_state=0)
    model_cols = schema.model_columns
    frames = [s.data[[c for c in model_cols if c in s.data.columns]] for s in part.sites]
    domain = merge_summaries([summarize_site(f, schema) for f in frames], schema, n_bins=20)
    p = {**params, "epochs": local_epochs}
    server = VAEBGMGenerator(schema, domain=domain, **p)
    sites = [VAEBGMGenerator(schema, domain=domain, **p) for _ in frames]
    n_rows = np.array([len(f) for f in frames], dtype=float)
    t0 = time.perf_counter()
    global_w = server.get_weights()
    for _ in range(rounds):
        replies = []
        for gen, f in zip(sites, frames):
            gen.set_weights(global_w)
            gen.partial_fit(f, epochs=local_epochs)
            replies.append(gen.get_weights())
        global_w = {
            k: sum(w * r[k] for w, r in zip(n_rows / n_rows.sum(), replies)).astype(np.float32) for k in global_w
        }
    for gen in sites:
        gen.set_weights(global_w)
    server.set_weights(global_w)
    t1 = time.perf_counter()
    init = server.initial_latent_mixture([g.init_mixture_statistics(f) for g, f in zip(sites, frames)], random_state=0)
    mixture, n_iter, converged = fit_latent_mixture_federated(
        lambda prm: [g.mixture_e_step_statistics(f, prm) for g, f in zip(sites, frames)],
        init,
        max_iter=server.params.mixture_max_iter,
    )
    server.set_latent_mixture(mixture)
    t2 = time.perf_counter()
    n = len(part.train)
    syn = server.sample(n, random_state=1)
    cols = schema.data_columns
    holdout_nndr = nndr(part.holdout[cols], part.train[cols], schema)
    ref_domain = _train_domain(part.train, schema)
    return {
        "scenario": scenario,
        "column_dropout": server.column_dropout,
        "sites": part.to_dict()["sites"],
        "rounds": rounds,
        "local_epochs": local_epochs,
        "fedavg_s": t1 - t0,
        "federated_em_s": t2 - t1,
        "em_iterations": n_iter,
        "em_converged": converged,
        "mixture_components_used": int((mixture["weights"] > 0.01).sum()),
        "holdout_nndr": holdout_nndr,
        "real_tp53_os_logrank": tp53_logrank(part.train),
        **score(part.train, syn, part.holdout, schema, ref_domain, holdout_nndr),
    }


def _train_domain(train: pd.DataFrame, schema: Any) -> Any:
    from fedsynth.encoding.domain import Domain

    return Domain.from_data(train[schema.model_columns], schema, n_bins=20)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-peer", action="store_true", help="skip TVAE (exploration; results are not written)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--params", default="{}", help="extra VAE-BGM params as JSON")
    ap.add_argument("--no-federated", action="store_true", help="skip the simulated federated runs")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--local-epochs", type=int, default=10)
    ap.add_argument("--out", default=None, help="write results here (default benchmarks/results/vae_bgm.json)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)  # BLAS too: one core, as the quality bar's timing asks
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    from fedsynth.cohort.datasets import load_cohort
    from fedsynth.cohort.partition import train_holdout_split
    from fedsynth.encoding.domain import Domain

    cohort = load_cohort("mds-iwgpm")
    schema = cohort.schema
    train, holdout = train_holdout_split(cohort.data, schema, holdout_fraction=0.1, random_state=0)
    n = len(train)
    params: dict[str, Any] = json.loads(args.params)
    if args.epochs is not None:
        params["epochs"] = args.epochs
    cols = schema.data_columns
    holdout_nndr = nndr(holdout[cols], train[cols], schema)
    # Scores judge ranges against the training pool's own domain (what the VAE-BGM builds when it fits).
    ref_domain = Domain.from_data(train[schema.model_columns], schema, n_bins=20)

    result: dict[str, Any] = {
        "benchmark": "vae_bgm centralised vs SDV TVAESynthesizer (defaults)",
        "cohort": "mds-iwgpm",
        "n_train": n,
        "n_holdout": len(holdout),
        "n_synthetic": n,
        "split": "train_holdout_split(holdout_fraction=0.1, random_state=0)",
        "load_average_at_start": list(os.getloadavg()),
        "timing_note": "wall times (fit_s) depend on machine load; fit_cpu_s is this process's CPU time "
        "(torch and BLAS limited to one thread), the fairer comparison on a shared machine",
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": 1,
            "cpu": platform.processor() or platform.machine(),
        },
        "real": {
            "tp53_os_logrank": tp53_logrank(train),
            "holdout_nndr": holdout_nndr,
            "gene_pairs_self": _gene_pairs(train, train, schema.genomic_columns),
        },
    }
    syn, times, gen = run_vae_bgm(train, schema, params, n)
    result["vae_bgm"] = {
        "params": gen.get_params(),
        **times,
        "mixture_components_used": int((gen.latent_mixture_["weights"] > 0.01).sum()),
        **score(train, syn, holdout, schema, ref_domain, holdout_nndr),
    }
    if not args.no_peer:
        tsyn, ttimes = run_tvae(train, schema, n)
        result["tvae"] = {**ttimes, **score(train, tsyn, holdout, schema, ref_domain, holdout_nndr)}
        v, t = result["vae_bgm"], result["tvae"]
        result["ratios_vae_bgm_over_tvae"] = {
            "fit_time_wall": v["fit_s"] / t["fit_s"],
            "fit_time_cpu": v["fit_cpu_s"] / t["fit_cpu_s"],
            "quality_score": v["quality_report"]["score"] / t["quality_report"]["score"],
            "gene_pair_agreement": v["gene_pairs"]["agreement"] / t["gene_pairs"]["agreement"]
            if t["gene_pairs"]["agreement"]
            else float("nan"),
        }
    if not args.no_federated:
        result["federated"] = [
            run_federated(cohort, params, sc, args.rounds, args.local_epochs) for sc in ("best", "worst")
        ]
        # The worst case again with column dropout (the encoder learns to place rows with absent columns).
        result["federated"].append(
            run_federated(cohort, {**params, "column_dropout": 0.2}, "worst", args.rounds, args.local_epochs)
        )
    v = result["vae_bgm"]
    result["vae_bgm_quality_bar"] = {
        "quality_report_ge_0.90": v["quality_report"]["score"] >= 0.90,
        "tp53_p_lt_0.001_same_direction": v["tp53_os_logrank"]["p"] < 1e-3
        and v["tp53_os_logrank"]["same_direction_as_real"],
        "no_value_out_of_range": v["out_of_range_values"] == 0,
        "missing_rates_within_2_points": v["missing_rate_gap_max"] <= 0.02,
        "nndr_p05_not_worse_than_holdout": v["nndr_p05_not_worse_than_holdout"],
        "gene_pair_agreement": v["gene_pairs"]["agreement"],
    }
    text = json.dumps(result, indent=1, default=float)
    print(text)
    if args.out or not args.no_peer:
        out = Path(args.out) if args.out else RESULTS
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
