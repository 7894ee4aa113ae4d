"""Benchmark: fedsynth's CTGANGenerator vs SDV's CTGANSynthesizer (defaults) on the real MDS cohort.

Both are trained on the same 90% training split in the same process and sampled to the size of that split;
each is judged on the structure the design cares about (DESIGN.md section 5): gene-pair association direction
agreement (Fisher, BH q < 0.05 in the real data), gene-survival direction agreement (univariate Cox on OS),
the TP53 effect on OS (log-rank p and hazard-ratio direction), SDMetrics Quality, NNDR 5th percentile beside
the holdout baseline, values outside the domain and missing-rate errors. Writes benchmarks/results/ctgan.json.

Run (CPU, about 10-15 minutes)::

    FEDSYNTH_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/bench_ctgan.py

Options: ``--epochs N`` (fedsynth CTGAN epochs), ``--param key=value`` (any other hyperparameter, value
parsed as JSON), ``--no-sdv`` (skip the SDV baseline), ``--out PATH``, ``--seed N``, ``--threads N``.
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
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

os.environ.setdefault("FEDSYNTH_DATA_DIR", "/work/shared/data")

from fedsynth.cohort.datasets import load_cohort
from fedsynth.cohort.partition import train_holdout_split
from fedsynth.cohort.schema import ColumnKind, ColumnRole, TableSchema
from fedsynth.encoding.domain import Domain

RESULTS = Path(__file__).resolve().parent / "results" / "ctgan.json"


# -- scores -------------------------------------------------------------------------------------------


def _log_or(a: np.ndarray, b: np.ndarray) -> float:
    """Log odds ratio of co-mutation with a Haldane 0.5 correction."""
    n11 = np.sum((a == 1) & (b == 1)) + 0.5
    n10 = np.sum((a == 1) & (b == 0)) + 0.5
    n01 = np.sum((a == 0) & (b == 1)) + 0.5
    n00 = np.sum((a == 0) & (b == 0)) + 0.5
    return float(np.log(n11 * n00 / (n10 * n01)))


def gene_pair_agreement(real: pd.DataFrame, synthetic: pd.DataFrame, genes: list[str]) -> dict[str, Any]:
    """Among gene pairs significant in the real data (Fisher, BH q < 0.05, genes mutated in >= 2%), the share
    whose synthetic log odds ratio has the same sign; plus the correlation of log odds ratios over all pairs."""
    from scipy.stats import false_discovery_control, fisher_exact, pearsonr

    genes = [g for g in genes if real[g].mean() >= 0.02]
    pairs = list(combinations(genes, 2))
    pvals, real_lor, syn_lor = [], [], []
    for g1, g2 in pairs:
        a, b = real[g1].to_numpy(), real[g2].to_numpy()
        table = [[np.sum((a == 1) & (b == 1)), np.sum((a == 1) & (b == 0))],
                 [np.sum((a == 0) & (b == 1)), np.sum((a == 0) & (b == 0))]]
        pvals.append(fisher_exact(table)[1])
        real_lor.append(_log_or(a, b))
        syn_lor.append(_log_or(synthetic[g1].to_numpy(), synthetic[g2].to_numpy()))
    q = false_discovery_control(np.asarray(pvals))
    sig = q < 0.05
    rl, sl = np.asarray(real_lor), np.asarray(syn_lor)
    agree = np.sign(rl[sig]) == np.sign(sl[sig])
    return {
        "n_genes": len(genes),
        "n_pairs": len(pairs),
        "n_significant_real": int(sig.sum()),
        "direction_agreement": float(agree.mean()) if sig.any() else float("nan"),
        "log_or_correlation": float(pearsonr(rl, sl)[0]),
    }


def _cox(data: pd.DataFrame, covariate: str, duration_col: str, event_col: str) -> tuple[float, float]:
    """Univariate Cox hazard ratio and p-value (lifelines)."""
    from lifelines import CoxPHFitter

    df = data[[duration_col, event_col, covariate]].dropna().astype(float)
    df = df[df[duration_col] > 0]
    if df[covariate].nunique() < 2:
        return float("nan"), float("nan")
    cph = CoxPHFitter().fit(df, duration_col=duration_col, event_col=event_col)
    return float(np.exp(cph.params_[covariate])), float(cph.summary.loc[covariate, "p"])


def gene_survival(real: pd.DataFrame, synthetic: pd.DataFrame, genes: list[str], schema: TableSchema) -> dict[str, Any]:
    """Gene-survival agreement on OS and the TP53 effect (log-rank and Cox) in real and synthetic data."""
    from lifelines.statistics import logrank_test

    ep = schema.endpoint("OS")
    sig, agree = [], []
    for g in genes:
        if real[g].mean() < 0.01:
            continue
        hr, p = _cox(real, g, ep.duration_col, ep.event_col)
        if not p < 0.05:
            continue
        hr_s, _ = _cox(synthetic, g, ep.duration_col, ep.event_col)
        sig.append(g)
        agree.append(bool(np.isfinite(hr_s) and np.sign(np.log(hr_s)) == np.sign(np.log(hr))))

    def tp53(df: pd.DataFrame) -> dict[str, float]:
        d = df[[ep.duration_col, ep.event_col, "TP53"]].dropna()
        mut, wt = d[d["TP53"] == 1], d[d["TP53"] == 0]
        lr = logrank_test(mut[ep.duration_col], wt[ep.duration_col], mut[ep.event_col], wt[ep.event_col])
        hr, _ = _cox(df, "TP53", ep.duration_col, ep.event_col)
        return {"logrank_p": float(lr.p_value), "hazard_ratio": hr, "n_mutated": len(mut)}

    return {
        "n_significant_real": len(sig),
        "direction_agreement": float(np.mean(agree)) if agree else float("nan"),
        "tp53_real": tp53(real),
        "tp53_synthetic": tp53(synthetic),
    }


def sdmetrics_quality(real: pd.DataFrame, synthetic: pd.DataFrame, schema: TableSchema) -> dict[str, float]:
    from sdmetrics.reports.single_table import QualityReport

    cols = {
        c: {"sdtype": "numerical" if schema[c].is_numeric else "categorical"} for c in real.columns
    }
    report = QualityReport()
    report.generate(real, synthetic[real.columns], {"columns": cols}, verbose=False)
    props = report.get_properties()
    return {"score": float(report.get_score()), **{str(r["Property"]): float(r["Score"]) for _, r in props.iterrows()}}


def _gower_parts(frame: pd.DataFrame, schema: TableSchema, domain: Domain) -> tuple[np.ndarray, np.ndarray]:
    num = [c for c in frame.columns if schema[c].is_numeric]
    cat = [c for c in frame.columns if not schema[c].is_numeric]
    x = np.column_stack([
        (frame[c].to_numpy(float) - domain[c].lower) / max(domain[c].upper - domain[c].lower, 1e-12) for c in num
    ])
    codes = []
    for c in cat:
        s = frame[c].astype("object").where(frame[c].notna(), "<NA>").astype(str)
        codes.append(s.to_numpy())
    return x, np.column_stack(codes)


def nndr(query: pd.DataFrame, train: pd.DataFrame, schema: TableSchema, domain: Domain) -> dict[str, float]:
    """Nearest-neighbour distance ratio with Gower distance (numeric: range-normalised |diff|, one missing = 1,
    both missing = 0; categorical: mismatch, missing is a state)."""
    qx, qc = _gower_parts(query, schema, domain)
    tx, tc = _gower_parts(train, schema, domain)
    # categorical codes as ints over the union of labels
    cat_codes_q = np.empty(qc.shape, dtype=np.int32)
    cat_codes_t = np.empty(tc.shape, dtype=np.int32)
    for j in range(qc.shape[1]):
        labels = {v: i for i, v in enumerate(np.unique(np.concatenate([qc[:, j], tc[:, j]])))}
        cat_codes_q[:, j] = [labels[v] for v in qc[:, j]]
        cat_codes_t[:, j] = [labels[v] for v in tc[:, j]]
    n_cols = qx.shape[1] + qc.shape[1]
    ratios, d1s = [], []
    for s in range(0, len(qx), 256):
        a = qx[s : s + 256, None, :]
        b = tx[None, :, :]
        d = np.abs(a - b)
        na_a, na_b = np.isnan(a), np.isnan(b)
        d = np.where(na_a & na_b, 0.0, np.where(na_a | na_b, 1.0, d))
        total = d.sum(axis=2) + (cat_codes_q[s : s + 256, None, :] != cat_codes_t[None, :, :]).sum(axis=2)
        total /= n_cols
        two = np.partition(total, 1, axis=1)[:, :2]
        d1s.append(two[:, 0])
        ratios.append(np.where(two[:, 1] > 0, two[:, 0] / np.where(two[:, 1] > 0, two[:, 1], 1.0), 0.0))
    r = np.concatenate(ratios)
    d1 = np.concatenate(d1s)
    return {"mean": float(r.mean()), "p5": float(np.quantile(r, 0.05)), "exact_copies": int((d1 == 0).sum())}


def out_of_domain(synthetic: pd.DataFrame, domain: Domain) -> int:
    bad = 0
    for name, col in domain.columns.items():
        s = synthetic[name].dropna()
        if col.is_numeric:
            bad += int(((s < col.lower - 1e-9) | (s > col.upper + 1e-9)).sum())
        elif col.kind is ColumnKind.BINARY:
            bad += int((~s.isin([0.0, 1.0])).sum())
        else:
            bad += int((~s.astype(str).isin(col.categories)).sum())
    return bad


def evaluate(real: pd.DataFrame, synthetic: pd.DataFrame, holdout_nndr: dict[str, float], schema: TableSchema,
             domain: Domain) -> dict[str, Any]:
    genes = schema.names(role=ColumnRole.GENOMIC)
    cols = list(real.columns)
    t0 = time.perf_counter()
    out: dict[str, Any] = {
        "gene_pairs": gene_pair_agreement(real, synthetic, genes),
        "gene_survival": gene_survival(real, synthetic, genes, schema),
        "quality": sdmetrics_quality(real, synthetic, schema),
        "nndr": nndr(synthetic[cols], real, schema, domain),
        "out_of_domain_values": out_of_domain(synthetic, domain),
        "missing_rate_max_abs_diff": float((real.isna().mean() - synthetic[cols].isna().mean()).abs().max()),
    }
    out["nndr"]["p5_no_worse_than_holdout"] = bool(out["nndr"]["p5"] >= holdout_nndr["p5"] - 1e-12)
    out["eval_seconds"] = round(time.perf_counter() - t0, 1)
    return out


# -- runs -----------------------------------------------------------------------------------------------


def run_fedsynth(
    train: pd.DataFrame, schema: TableSchema, params: dict[str, Any], seed: int
) -> tuple[pd.DataFrame, float, Domain, float]:
    from fedsynth.generators.ctgan import CTGANGenerator

    t0 = time.perf_counter()
    gen = CTGANGenerator(schema, random_state=seed, **params)
    gen.fit(train)
    fit_s = time.perf_counter() - t0
    assert gen.domain is not None
    synthetic = gen.sample(len(train), random_state=seed)
    # The same model without missing-rate calibration: how well the learnt missing state alone does.
    gen.set_params(calibrate_missing=False)
    uncalibrated = gen.sample(len(train), random_state=seed)
    gen.set_params(calibrate_missing=True)
    cols = list(train.columns)
    miss = float((train.isna().mean() - uncalibrated[cols].isna().mean()).abs().max())
    return synthetic, fit_s, gen.domain, miss


def run_sdv(train: pd.DataFrame, schema: TableSchema, seed: int, epochs: int | None = None) -> tuple[pd.DataFrame, float]:
    import torch
    from sdv.metadata import Metadata
    from sdv.single_table import CTGANSynthesizer

    cols = {c: {"sdtype": "numerical" if schema[c].is_numeric else "categorical"} for c in train.columns}
    metadata = Metadata.load_from_dict({"METADATA_SPEC_VERSION": "V1", "tables": {"cohort": {"columns": cols}}})
    np.random.seed(seed)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    # SDV's defaults (300 epochs, batch 500, pac 10, lr 2e-4, log frequency); epochs only for smoke checks.
    synth = CTGANSynthesizer(metadata) if epochs is None else CTGANSynthesizer(metadata, epochs=epochs)
    synth.fit({"cohort": train})  # SDV 2.0 takes and returns {table name: frame}
    fit_s = time.perf_counter() - t0
    synthetic = synth.sample(len(train))
    if isinstance(synthetic, dict):
        synthetic = synthetic["cohort"]
    return schema.select(list(train.columns)).coerce(synthetic), fit_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--param", action="append", default=[], help="key=value (JSON value)")
    parser.add_argument("--no-sdv", action="store_true")
    parser.add_argument("--sdv-epochs", type=int, default=None, help="smoke checks only; default: SDV's own")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)
    params: dict[str, Any] = {}
    if args.epochs is not None:
        params["epochs"] = args.epochs
    for item in args.param:
        key, _, value = item.partition("=")
        params[key] = json.loads(value)

    cohort = load_cohort("mds-iwgpm")
    schema = cohort.schema
    data = cohort.data
    train, holdout = train_holdout_split(data, schema, holdout_fraction=0.1, random_state=args.seed)
    cols = schema.model_columns
    train, holdout = train[cols], holdout[cols]

    synthetic, fit_s, domain, miss_uncalibrated = run_fedsynth(train, schema, params, args.seed)
    holdout_nndr = nndr(holdout, train, schema, domain)
    real_tp53 = None
    result: dict[str, Any] = {
        "benchmark": "ctgan",
        "command": "FEDSYNTH_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/bench_ctgan.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "data": {"cohort": cohort.name, "n_train": len(train), "n_holdout": len(holdout), "n_model_columns": len(cols),
                 "split_seed": args.seed},
        "machine": {"platform": platform.platform(), "torch_threads": args.threads,
                    "device": "cuda" if torch.cuda.is_available() else "cpu"},
        "holdout_baseline": {"nndr": holdout_nndr},
        "fedsynth_ctgan": {"params": params, "fit_seconds": round(fit_s, 1)},
    }
    result["fedsynth_ctgan"].update(evaluate(train, synthetic, holdout_nndr, schema, domain))
    result["fedsynth_ctgan"]["missing_rate_max_abs_diff_uncalibrated"] = miss_uncalibrated
    real_tp53 = result["fedsynth_ctgan"]["gene_survival"]["tp53_real"]
    result["real_reference"] = {"tp53": real_tp53}
    print(json.dumps(result["fedsynth_ctgan"], indent=1), flush=True)
    if not args.no_sdv:
        sdv_synthetic, sdv_fit_s = run_sdv(train, schema, args.seed, args.sdv_epochs)
        result["sdv_ctgan_default"] = {"epochs": args.sdv_epochs or 300, "fit_seconds": round(sdv_fit_s, 1)}
        result["sdv_ctgan_default"].update(evaluate(train, sdv_synthetic, holdout_nndr, schema, domain))
        ours, sdv = result["fedsynth_ctgan"], result["sdv_ctgan_default"]
        result["ratios_fedsynth_over_sdv"] = {
            "fit_seconds": round(ours["fit_seconds"] / sdv["fit_seconds"], 3),
            "quality": round(ours["quality"]["score"] / sdv["quality"]["score"], 3),
            "gene_pair_direction_agreement": round(
                ours["gene_pairs"]["direction_agreement"] / sdv["gene_pairs"]["direction_agreement"], 3
            ),
        }
        print(json.dumps(result["sdv_ctgan_default"], indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
