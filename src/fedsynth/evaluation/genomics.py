"""Genomic fidelity: mutation frequencies, mutations per patient, gene-pair co-occurrence and exclusivity.

Gene pairs are tested with Fisher's exact test (``scipy.stats.fisher_exact``, one call per 2x2 table, cached
per table), p-values BH-corrected with
``scipy.stats.false_discovery_control``; log odds ratios use the Haldane-Anscombe correction (0.5 added to
every cell of a 2x2 table that has a zero cell).
"""

from __future__ import annotations

from functools import lru_cache
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from fedsynth.cohort.schema import TableSchema
from fedsynth.evaluation._prep import Columns, same_size_sample

#: Genes mutated in at least this share of real patients enter the pair analysis.
PAIR_MIN_FREQ = 0.02
#: Genes mutated in at least this share of real patients enter the mutation-frequency similarity.
FREQ_MIN_FREQ = 0.01
#: BH-corrected significance level of the pair tests.
Q_LEVEL = 0.05
#: Mutations-per-patient histogram: 0, 1, ..., MAX_COUNT - 1 and "MAX_COUNT or more".
MAX_COUNT = 10


def log_odds_ratio(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """log(ad / bc) of 2x2 tables ``[[a, b], [c, d]]``; tables with a zero cell get 0.5 added to every cell."""
    a, b, c, d = (np.asarray(x, dtype=float) for x in (a, b, c, d))
    zero = (a == 0) | (b == 0) | (c == 0) | (d == 0)
    k = np.where(zero, 0.5, 0.0)
    lor: np.ndarray = np.log((a + k) * (d + k) / ((b + k) * (c + k)))
    return lor


def pair_tables(data: pd.DataFrame, genes: list[str]) -> dict[tuple[str, str], tuple[int, int, int, int]]:
    """2x2 tables (both, only first, only second, neither) of every gene pair, on rows where both are known."""
    X = data[genes].to_numpy(float)
    known = ~np.isnan(X)
    M = np.nan_to_num(X, nan=0.0)
    K = known.astype(float)
    both = M.T @ M
    first_only = M.T @ (K - M)  # first mutated, second known and not mutated
    neither = (K - M).T @ (K - M)
    out = {}
    for i, j in combinations(range(len(genes)), 2):
        out[(genes[i], genes[j])] = (int(both[i, j]), int(first_only[i, j]), int(first_only[j, i]), int(neither[i, j]))
    return out


def classify(log_or: np.ndarray, q: np.ndarray) -> list[str]:
    """'co-occurring' (q < 0.05, log OR > 0), 'mutually exclusive' (q < 0.05, log OR < 0), else 'neutral'."""
    return [
        "co-occurring" if (qq < Q_LEVEL and lo > 0) else "mutually exclusive" if (qq < Q_LEVEL and lo < 0) else "neutral"
        for lo, qq in zip(log_or, q)
    ]


@lru_cache(maxsize=65536)
def _fisher_exact(a: int, b: int, c: int, d: int) -> tuple[float, float]:
    """``scipy.stats.fisher_exact`` of ``[[a, b], [c, d]]``, cached: the real table's pairs are tested again
    at every federated round."""
    res = stats.fisher_exact([[a, b], [c, d]], alternative="two-sided")
    return float(res.statistic), float(res.pvalue)


def fisher_pairs(tables: list[tuple[int, int, int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fisher's exact odds ratio and two-sided p of each 2x2 table ``(a, b, c, d)`` = ``[[a, b], [c, d]]``
    (``scipy.stats.fisher_exact``), and the BH-corrected q-values (``scipy.stats.false_discovery_control``)."""
    if not tables:
        e = np.zeros(0)
        return e, e, e
    res = np.array([_fisher_exact(int(a), int(b), int(c), int(d)) for a, b, c, d in tables], dtype=float)
    ors, ps = res[:, 0], res[:, 1]
    qs = stats.false_discovery_control(ps, method="bh")
    return ors, ps, qs


def genomics_analysis(
    real_data: pd.DataFrame,
    synthetic_data: pd.DataFrame,
    schema: TableSchema,
    *,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Mutation frequencies, mutations per patient and gene-pair associations, real against synthetic.

    Returns
    -------
    dict
        ``available`` (False without genomic columns), ``frequency`` (per gene real/synthetic shares and the
        similarity ``1 - mean relative error`` over genes mutated in >= 1% of real patients, each error capped
        at 1), ``mutations_per_patient`` (histograms and ``1 - KS``), ``pairs`` (per pair: log OR with Haldane
        correction, Fisher p, BH q and class in real and in a same-size synthetic sample), ``class_agreement``,
        ``log_or_correlation``, ``pair_association_agreement`` (among real-significant pairs, the share whose
        synthetic log OR on the whole synthetic table has the same sign) and ``heatmap`` matrices.
    """
    cols = Columns.from_schema(schema, real_data, synthetic_data)
    genes = list(cols.genomic)
    if not genes:
        return {"available": False, "note": "the schema declares no genomic columns"}
    f_r = real_data[genes].mean(skipna=True)
    f_s = synthetic_data[genes].mean(skipna=True)
    eligible = [g for g in genes if f_r[g] >= FREQ_MIN_FREQ]
    rel = [min(abs(f_s[g] - f_r[g]) / f_r[g], 1.0) for g in eligible]
    freq_sim = 1.0 - float(np.mean(rel)) if rel else None

    n_r = real_data[genes].fillna(0).sum(axis=1).to_numpy()
    n_s = synthetic_data[genes].fillna(0).sum(axis=1).to_numpy()
    ks = stats.ks_2samp(n_r, n_s)
    bins = np.arange(MAX_COUNT + 1)

    def hist(v: np.ndarray) -> list[float]:
        c = np.bincount(np.minimum(v.astype(int), MAX_COUNT), minlength=MAX_COUNT + 1)
        shares: list[float] = (c / max(len(v), 1)).tolist()
        return shares

    pair_genes = [g for g in genes if f_r[g] >= PAIR_MIN_FREQ]
    syn_test = same_size_sample(synthetic_data, len(real_data), rng)
    tab_r = pair_tables(real_data, pair_genes)
    tab_s_full = pair_tables(synthetic_data, pair_genes)
    tab_s = tab_s_full if syn_test is synthetic_data else pair_tables(syn_test, pair_genes)
    keys = list(tab_r)
    out_pairs: list[dict[str, Any]] = []
    agreement = class_agree = lor_corr = None
    n_sig = 0
    if keys:
        tr = [tab_r[k] for k in keys]
        ts = [tab_s[k] for k in keys]
        tf = np.array([tab_s_full[k] for k in keys], dtype=float)
        lor_r = log_odds_ratio(*np.array(tr, dtype=float).T)
        lor_s_test = log_odds_ratio(*np.array(ts, dtype=float).T)
        lor_s = log_odds_ratio(*tf.T)
        _, p_r, q_r = fisher_pairs(tr)
        _, p_s, q_s = fisher_pairs(ts)
        cls_r, cls_s = classify(lor_r, q_r), classify(lor_s_test, q_s)
        sig = q_r < Q_LEVEL
        n_sig = int(sig.sum())
        if n_sig:
            agreement = float(np.mean(np.sign(lor_s[sig]) == np.sign(lor_r[sig])))
        class_agree = float(np.mean([a == b for a, b in zip(cls_r, cls_s)]))
        if len(keys) > 2 and np.std(lor_r) > 0 and np.std(lor_s) > 0:
            lor_corr = float(np.corrcoef(lor_r, lor_s)[0, 1])
        for i, (a, b) in enumerate(keys):
            out_pairs.append({
                "gene_a": a, "gene_b": b,
                "log_or_real": float(lor_r[i]), "p_real": float(p_r[i]), "q_real": float(q_r[i]), "class_real": cls_r[i],
                "log_or_synthetic": float(lor_s[i]), "p_synthetic": float(p_s[i]), "q_synthetic": float(q_s[i]),
                "class_synthetic": cls_s[i],
            })
    # heatmap matrices (symmetric, NaN on the diagonal)
    g_idx = {g: i for i, g in enumerate(pair_genes)}
    hm_r = np.full((len(pair_genes), len(pair_genes)), np.nan)
    hm_s = hm_r.copy()
    for p in out_pairs:
        i, j = g_idx[p["gene_a"]], g_idx[p["gene_b"]]
        hm_r[i, j] = hm_r[j, i] = p["log_or_real"]
        hm_s[i, j] = hm_s[j, i] = p["log_or_synthetic"]
    counts: dict[str, int] = {}
    for p in out_pairs:
        counts[f"real:{p['class_real']}"] = counts.get(f"real:{p['class_real']}", 0) + 1
        counts[f"synthetic:{p['class_synthetic']}"] = counts.get(f"synthetic:{p['class_synthetic']}", 0) + 1
    return {
        "available": True,
        "genes": genes,
        "frequency": {
            "real": {g: float(f_r[g]) for g in genes},
            "synthetic": {g: float(f_s[g]) for g in genes},
            "genes_scored": eligible,
            "similarity": freq_sim,
        },
        "mutations_per_patient": {
            "bins": [str(b) for b in bins[:-1]] + [f"{MAX_COUNT}+"],
            "real": hist(n_r),
            "synthetic": hist(n_s),
            "mean_real": float(n_r.mean()),
            "mean_synthetic": float(n_s.mean()),
            "ks_statistic": float(ks.statistic),
            "similarity": 1.0 - float(ks.statistic),
        },
        "pair_genes": pair_genes,
        "pairs": out_pairs,
        "n_pairs": len(out_pairs),
        "n_significant_real": n_sig,
        "class_counts": counts,
        "class_agreement": class_agree,
        "log_or_correlation": lor_corr,
        "pair_association_agreement": agreement,
        "n_synthetic_test_rows": len(syn_test),
        "heatmap": {"genes": pair_genes, "real": hm_r.tolist(), "synthetic": hm_s.tolist()},
    }
