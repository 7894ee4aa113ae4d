"""Differential privacy on MDS, federated over 3 sites (60/30/10): ε in {1, 3, 10, ∞} × {two-step BN, VAE-BGM}, beside
a centralized DP synthesizer (MST on Private-PGM, ``mbi``) at the same ε; and the cost of secure aggregation at ε = ∞.

For each ε and method: the ε the accountant spent (for the federated runs, the largest over sites), then CSF, GSF,
survival-effect fidelity and NNDR of a sample the size of the training pool (quick scores against the training
pool, holdout as the NNDR baseline; survival-effect fidelity from :mod:`fedsynth.evaluation.survival_effects`).

- two-step BN: the generator's default hyperparameters (``--bn-params`` overrides them; piecewise-exponential
  survival model) with secure aggregation on (the deployment default): noisy count tables (zCDP) summed securely,
  each site adding its share of the noise. At ε = ∞ the network is checked against the centralized BN fitted on
  the pooled training rows over the same domain (edges, CPDs, survival parents and hazards) and the result recorded;
- VAE-BGM: FedAvg with the product's tuned settings, read from configs/fedavg_vae_bgm.yaml (``--vae-set KEY=VALUE``
  overrides it as ``fedsynth run --set`` does, e.g. ``--vae-set strategy.local_epochs=10``), secure aggregation on,
  DP-SGD at each site and the Gaussian mechanism on the latent-mixture statistics (:mod:`fedsynth.generators._dp`);
- MST (McKenna, Sheldon & Miklau 2021, the NIST 2018 winner's successor): all 1-way marginals, a maximum spanning
  tree of 2-way marginals chosen by the exponential mechanism, those 2-way marginals, Private-PGM estimation
  (``mbi``) and sampling; ρ split in thirds, zCDP converted to (ε, δ) by dp_accounting like the federated runs.
  Centralized: it sees the pooled training rows (the trusted-curator model) and its discretisation (domain bins
  and categories from those rows) is treated as public, while a federated run under a budget spends 10% of it on
  the shared domain and releases a label only above k - 1 + z sigma. ``mbi`` 2.0 samples from NumPy's global
  generator, which this bench seeds at ``--seed`` (an MST row is reproducible; the federated runs' noise comes
  from each site's OS entropy and is not). ``mbi`` is an optional bench dependency
  (``pip install 'fedsynth[bench-privacy]'``); without it the MST rows say so.
- the federated BN rows record ``domain_labels``: how many labels of the categorical columns the domain released.
- secure aggregation's cost (``--methods`` ``bn-plain``/``vae-plain``, at ε = ∞ only): each generator's ε = ∞ run
  again with secure aggregation off — the BN in a trusted network (site policy ``clear_counts``: tables sent in
  clear, nothing withheld, so the same network is learned and only the protocol differs), the VAE-BGM with weight
  updates and mixture statistics in clear — against its secure run: wall time per phase and bytes per site
  (Flower's protobuf of every instruction and reply, as benchmarks/bench_secure_sum.py counts them, whose
  synthetic-vector and short-run workloads this does not repeat).
- ``bn-clear-dp`` (not in the default methods): the two-step BN under a budget *without* secure aggregation, on
  the sites' default policy (k = 5): each site sends its noisy tables one at a time with the full noise. Its rows
  record ``tables_withheld_by_site`` (tables a site withheld under its policy, from the site handler's log),
  ``count_refusals`` and ``survival_endpoints_fitted``: before issue 13's fix a site withheld there every table
  whose exact counts isolated patients, outside the noise.

Run:  .venv/bin/python benchmarks/bench_privacy.py [--epsilons 1,3,10,inf] [--methods bn,vae,mst,bn-plain,vae-plain]
        [--seed 0] [--bn-params JSON] [--vae-set KEY=VALUE ...] [--note TEXT] [--out benchmarks/results/privacy.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("FEDSYNTH_DATA_DIR", str(ROOT.parent / "shared" / "data"))
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))

DELTA = 1e-5
#: The tuned FedAvg VAE-BGM (generator params, rounds, local epochs, strategy params); ``--vae-set`` overrides.
VAE_CONFIG = ROOT / "configs" / "fedavg_vae_bgm.yaml"
#: Score the runs without secure aggregation too (``--no-score-plain``: they are cost runs only).
SCORE_PLAIN = True


def _eps(x: float) -> float | str:
    return "inf" if math.isinf(x) else x


def score(part: Any, synthetic: Any, seed: int) -> dict[str, Any]:
    """CSF, GSF, survival-effect fidelity, NNDR and, per time-order rule, the share of rows with both times equal
    (real and synthetic) of ``synthetic`` against the training pool."""
    from fedsynth.evaluation import quick_scores
    from fedsynth.evaluation.survival_effects import survival_effects, tied_times

    schema = part.schema
    synthetic = schema.coerce(synthetic[schema.model_columns])
    q = quick_scores(part.train, synthetic, schema, holdout_data=part.holdout, random_state=seed)
    eff = survival_effects(part.train[schema.model_columns], synthetic, schema, rng=np.random.default_rng(seed))
    return {
        "csf": q["csf"], "gsf": q["gsf"], "survival_effect_fidelity": eff.get("fidelity"),
        "nndr_mean": q["nndr"]["synthetic"]["mean"], "nndr_p5": q["nndr_p5"],
        "holdout_nndr_mean": q["nndr"]["holdout"]["mean"] if q["nndr"].get("holdout") else None,
        "tied_times": tied_times(eff.get("endpoint_rules", [])),
    }


def _grid(part: Any, root: str, seed: int, *, policy: Any = None, keep: bool = False) -> Any:
    """The partition's sites on an in-process grid, as :func:`fedsynth.federation.simulation.run_in_process` builds
    it (state folder and ε ledger per site under ``root``), keeping every message when ``keep``."""
    from fedsynth.federation.simulation import private_folder
    from fedsynth.strategies.in_process import InProcessGrid
    from fedsynth.strategies.policy import SitePolicy
    from fedsynth.strategies.site import SiteRuntime
    from fedsynth.strategies.site_budget import site_ledger

    pol = policy if policy is not None else SitePolicy()
    return InProcessGrid([
        SiteRuntime(s.name, s.data, part.schema, seed + i, state_dir=private_folder(Path(root) / s.name), policy=pol,
                    privacy_ledger=site_ledger(pol, Path(root) / s.name))
        for i, s in enumerate(part.sites)], keep_messages=keep)


def _traffic(grid: Any, result: Any, seconds: float) -> dict[str, Any]:
    """Wall time (total and per phase) and bytes per site of a run on a grid that kept its messages."""
    from bench_secure_sum import _bytes_per_site

    per_site = _bytes_per_site(grid)
    return {"seconds": round(seconds, 2), "phase_seconds": {k: round(v, 2) for k, v in result.timings.items()},
            "bytes_per_site": per_site, "bytes": sum(per_site.values()),
            "messages": len(grid.sent) + len(grid.received)}


def bn_strategy(part: Any, seed: int, bn_params: dict[str, Any], secure: bool) -> Any:
    from fedsynth.strategies.registry import make_strategy

    return make_strategy("two_step_bn", part.schema, generator="bayesian_network", generator_params=bn_params,
                         min_sites=3, random_state=seed, params={"secure_aggregation": secure})


def same_network(fed: Any, cen: Any) -> dict[str, Any]:
    """Are two fitted BNs the same: edges, CPDs (largest absolute difference), survival parents and hazards."""
    out: dict[str, Any] = {"same_edges": fed.edges_ == cen.edges_}
    if out["same_edges"]:
        out["max_cpd_difference"] = max(
            float(np.max(np.abs(fed.model_.get_cpds(c.variable).values - c.values))) for c in cen.model_.get_cpds())
    fs, cs = getattr(fed, "_survival", []), getattr(cen, "_survival", [])
    out["same_survival_parents"] = (getattr(fed, "survival_parents_", None) == getattr(cen, "survival_parents_", None)
                                    and len(fs) == len(cs) and all(
        (a.event_parents, a.censor_parents) == (b.event_parents, b.censor_parents) for a, b in zip(fs, cs)))
    if out["same_survival_parents"] and fs:
        out["max_hazard_difference"] = max(
            max(float(np.max(np.abs(np.asarray(a.event_hazard) - b.event_hazard))),
                float(np.max(np.abs(np.asarray(a.censor_hazard) - b.censor_hazard)))) for a, b in zip(fs, cs))
    out["equal"] = bool(out["same_edges"] and out.get("max_cpd_difference", 1.0) <= 1e-9
                        and out["same_survival_parents"] and out.get("max_hazard_difference", 0.0) <= 1e-12)
    return out


def domain_labels(domain: Any, schema: Any) -> dict[str, Any]:
    """How many labels of the categorical columns (binary ones left out) the federated domain released, against
    the labels the schema declares: under a budget a label is released only when its noisy total clears
    k - 1 + z sigma, and its rows count as missing otherwise."""
    cats = [c for c in domain.column_names if not domain[c].is_numeric and domain[c].kind.value != "binary"]
    declared = {c: len(schema[c].categories or ()) for c in cats if c in schema}
    return {"released": sum(len(domain[c].categories) for c in cats), "declared": sum(declared.values()),
            "columns": len(cats)}


class _Withheld(logging.Handler):
    """Counts, per site, the count tables a site withheld under its policy (from the site handler's log)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.asked: dict[str, int] = {}
        self.withheld: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if "withheld %d of %d count tables" in str(record.msg) and record.args:
            name, withheld, asked = record.args  # type: ignore[misc]
            self.withheld[str(name)] = self.withheld.get(str(name), 0) + int(withheld)
            self.asked[str(name)] = self.asked.get(str(name), 0) + int(asked)


def bn_run(part: Any, epsilon: float, seed: int, bn_params: dict[str, Any], secure: bool = True,
           trusted: bool = True) -> dict[str, Any]:
    """The federated two-step BN at ``epsilon`` (secure aggregation unless ``secure`` is false: then a trusted
    network, clear counts, ε = ∞ only — or with ``trusted`` false, the sites' default policy: noisy tables sent
    one site at a time, each carrying the full noise); at ε = ∞ with secure aggregation, checked against the
    centralized BN."""
    from fedsynth.generators.bayesian_network import BayesianNetworkGenerator
    from fedsynth.privacy.accounting import PrivacyBudget
    from fedsynth.strategies.policy import SitePolicy
    from fedsynth.strategies.site import conform_to_domain

    strategy = bn_strategy(part, seed, bn_params, secure)
    strategy.privacy = PrivacyBudget(epsilon, DELTA)
    site_log, counter = logging.getLogger("fedsynth.strategies.two_step_bn"), _Withheld()
    level, propagate = site_log.level, site_log.propagate
    site_log.setLevel(logging.INFO)
    site_log.propagate = False
    site_log.addHandler(counter)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-privacy-") as root:
            grid = _grid(part, root, seed, policy=None if secure or not trusted else SitePolicy(clear_counts=True),
                         keep=math.isinf(epsilon))
            t0 = time.perf_counter()
            result = strategy.start(grid)
            seconds = time.perf_counter() - t0
    finally:
        site_log.removeHandler(counter)
        site_log.setLevel(level)
        site_log.propagate = propagate
    summary = strategy.privacy_summary_ or {}
    gen = result.generator
    method = ("two_step_bn (federated, secure aggregation)" if secure else
              "two_step_bn (federated, clear counts)" if trusted else
              "two_step_bn (federated, noisy counts in clear, default site policy)")
    row: dict[str, Any] = {
        "method": method,
        "epsilon_spent": summary.get("epsilon_spent"), "phases": summary.get("phases"), "n_edges": len(gen.edges_),
        "count_requests": result.rounds[0].get("count_requests") if result.rounds else None,
        "count_refusals": result.rounds[0].get("count_refusals") if result.rounds else None,
        "tables_withheld_by_site": {n: {"withheld": counter.withheld[n], "asked": counter.asked[n]}
                                    for n in sorted(counter.asked)},
        "survival_endpoints_fitted": len(getattr(gen, "_survival", []) or []),
        "domain_labels": domain_labels(result.domain, part.schema), "train_seconds": round(seconds, 2)}
    if math.isinf(epsilon):
        row["traffic"] = _traffic(grid, result, seconds)
        if secure:
            # The federated BN with secure aggregation and exact sums must be the centralized one on the same domain
            # (labels the domain left out count as missing, as at the sites).
            t0 = time.perf_counter()
            pooled = conform_to_domain(part.train[part.schema.model_columns], result.domain)
            cen = BayesianNetworkGenerator(part.schema, domain=result.domain, **bn_params).fit(pooled)
            row["centralized_check"] = {**same_network(gen, cen), "centralized_fit_seconds":
                                        round(time.perf_counter() - t0, 2)}
        row["_generator"] = gen
    return {**row, **score(part, gen.sample(len(part.train), random_state=seed), seed)}


def vae_settings(sets: list[str]) -> dict[str, Any]:
    """The FedAvg VAE-BGM settings of :data:`VAE_CONFIG` with ``sets`` (``KEY=VALUE``) applied."""
    from fedsynth.experiments.config import load_config

    cfg = load_config(VAE_CONFIG, sets)
    return {"config": str(VAE_CONFIG.relative_to(ROOT)), "sets": list(sets), "generator": cfg.generator.name,
            "generator_params": {**cfg.generator.params, "device": "cpu"}, "rounds": cfg.strategy.rounds,
            "local_epochs": cfg.strategy.local_epochs, "min_sites": cfg.strategy.min_sites,
            "strategy_params": dict(cfg.strategy.params)}


def vae_run(part: Any, epsilon: float, seed: int, settings: dict[str, Any], secure: bool = True) -> dict[str, Any]:
    from fedsynth.privacy.accounting import PrivacyBudget
    from fedsynth.strategies.registry import make_strategy

    strategy = make_strategy("fedavg", part.schema, generator=settings["generator"], rounds=settings["rounds"],
                             local_epochs=settings["local_epochs"], min_sites=settings["min_sites"], random_state=seed,
                             generator_params={**settings["generator_params"], "random_state": seed},
                             params={**settings["strategy_params"], "secure_aggregation": secure})
    strategy.privacy = PrivacyBudget(epsilon, DELTA)
    with tempfile.TemporaryDirectory(prefix="bench-privacy-") as root:
        grid = _grid(part, root, seed, keep=math.isinf(epsilon))
        t0 = time.perf_counter()
        result = strategy.start(grid)
        seconds = time.perf_counter() - t0
    summary = strategy.privacy_summary_ or {}
    sites = {name: {k: s.get(k) for k in ("epsilon_spent", "noise_multiplier", "sample_rate", "steps_per_round")}
             for name, s in (summary.get("sites") or {}).items()}
    row: dict[str, Any] = {
        "method": f"vae_bgm (federated, {'DP-SGD, ' if not math.isinf(epsilon) else ''}"
                  f"{'secure aggregation' if secure else 'clear'})",
        "epsilon_spent": summary.get("epsilon_spent"), "split": summary.get("split"), "sites": sites,
        "config_sets": settings["sets"], "rounds": settings["rounds"], "local_epochs": settings["local_epochs"],
        "train_seconds": round(seconds, 2),
        "phase_seconds": {k: round(v, 2) for k, v in result.timings.items() if k in ("hello", "domain", "training")},
        "round_seconds": [r["seconds"] for r in result.rounds]}
    if math.isinf(epsilon):
        row["traffic"] = _traffic(grid, result, seconds)
        row["_generator"] = result.generator
    if not secure and not SCORE_PLAIN:
        return {**row, "note": "not scored (--no-score-plain): a cost run"}
    return {**row, **score(part, result.generator.sample(len(part.train), random_state=seed), seed)}


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
    # mbi 2.0's MarkovRandomField.synthetic_data draws from NumPy's global generator and takes no seed: seed it
    # here (and put it back) so that a run is reproducible at its --seed; the 29 Nov rows were not (their CSF
    # moved by up to 0.04 between draws of the same model).
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        synth = model.synthetic_data(len(part.train))
    finally:
        np.random.set_state(state)
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


def _key(row: dict[str, Any]) -> tuple[str, str]:
    return str(row["epsilon"]), str(row["kind"])


def _print(row: dict[str, Any]) -> None:
    if "csf" in row:
        spent = row["epsilon_spent"]
        sef = row["survival_effect_fidelity"]
        print(f"eps={row['epsilon']!s:>4} {row['method']:<52} spent {'-' if spent is None else f'{spent:.4g}'}  "
              f"CSF {row['csf']:.3f}  GSF {row['gsf']:.3f}  SEF {'-' if sef is None else f'{sef:.3f}'}  "
              f"NNDR {row['nndr_mean']:.3f} (holdout {row['holdout_nndr_mean']:.3f})  {row['train_seconds']}s",
              flush=True)
    else:
        print(f"eps={row['epsilon']!s:>4} {row['method']:<52} {row['note']}", flush=True)


def secure_cost(rows: list[dict[str, Any]], generators: dict[str, Any]) -> dict[str, Any]:
    """Secure aggregation against plain at ε = ∞, per generator: wall time (total, training phase) and bytes per
    site, with their ratios (secure / plain); for the BN, whether both learned the same network."""
    by = {r["kind"]: r for r in rows if r["epsilon"] == "inf" and "traffic" in r}
    out: dict[str, Any] = {}
    tags = sorted({k.split("@", 1)[1] if "@" in k else "" for k in by})
    pairs = [(f"{name}{'@' + t if t else ''}", f"{m}{'@' + t if t else ''}", f"{m}-plain{'@' + t if t else ''}")
             for t in tags for name, m in (("two_step_bn", "bn"), ("vae_bgm", "vae"))]
    for name, secure, plain in pairs:
        if secure not in by or plain not in by:
            continue
        s, p = by[secure]["traffic"], by[plain]["traffic"]
        entry: dict[str, Any] = {
            "plain": {"method": by[plain]["method"], **p}, "secure": {"method": by[secure]["method"], **s},
            "time_ratio": round(s["seconds"] / p["seconds"], 2),
            "training_time_ratio": round(s["phase_seconds"]["training"] / p["phase_seconds"]["training"], 2)
            if "training" in s["phase_seconds"] and p["phase_seconds"].get("training") else None,
            "bytes_ratio": round(s["bytes"] / p["bytes"], 3),
            "bytes_ratio_per_site": {k: round(s["bytes_per_site"][k] / v, 3) for k, v in p["bytes_per_site"].items()},
            "scores_plain_vs_secure": {k: [by[plain].get(k), by[secure].get(k)]
                                       for k in ("csf", "gsf", "survival_effect_fidelity", "nndr_mean")},
        }
        if name.startswith("two_step_bn") and secure in generators and plain in generators:
            # Not necessarily equal: the secure domain comes from summed histograms, the clear one from each
            # site's released summary (bins differ slightly).
            entry["same_network_as_plain"] = same_network(generators[secure], generators[plain])
        out[name] = entry
    return out


def _write(out: dict[str, Any], path: Path, rows: list[dict[str, Any]], generators: dict[str, Any],
           cost: dict[str, Any], seconds: float) -> None:
    """Write the result (after every run: a partial result survives), the secure-aggregation cost recomputed
    from the runs' traffic, keeping what an earlier file knew that this process cannot (the BN network check)."""
    new = secure_cost(rows, generators)
    for name, entry in new.items():
        if "same_network_as_plain" not in entry and "same_network_as_plain" in cost.get(name, {}):
            entry["same_network_as_plain"] = cost[name]["same_network_as_plain"]
    out["secure_aggregation_cost"] = {**cost, **new}
    out["seconds"] = seconds
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=str) + "\n")


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epsilons", default="1,3,10,inf")
    ap.add_argument("--methods", default="bn,vae,mst,bn-plain,vae-plain",
                    help="bn, vae, mst; bn-plain and vae-plain (secure aggregation off) run at ε = ∞ only; "
                         "bn-clear-dp: the BN without secure aggregation on the sites' default policy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bn-params", default="{}", help="JSON overrides of the BN generator's defaults")
    ap.add_argument("--vae-set", action="append", default=[], help="KEY=VALUE override of configs/fedavg_vae_bgm.yaml")
    ap.add_argument("--tag", default="", help="appended to each run's kind as @TAG (runs of other settings)")
    ap.add_argument("--note", action="append", default=[], help="a sentence recorded in the JSON's notes")
    ap.add_argument("--resume", action="store_true", help="keep the runs already in --out and skip them")
    ap.add_argument("--merge", action="append", default=[],
                    help="a result file of this bench whose runs (and notes, settings) are kept and not rerun")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "privacy.json"))
    ap.add_argument("--no-score-plain", action="store_true", help="time the *-plain runs without scoring them")
    args = ap.parse_args()
    global SCORE_PLAIN
    SCORE_PLAIN = not args.no_score_plain
    logging.basicConfig(level=logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore")
    from fedsynth.cohort.datasets import load_cohort
    from fedsynth.cohort.partition import make_partition
    from fedsynth.generators.params import BayesianNetworkParams

    bn_params = json.loads(args.bn_params)
    settings = vae_settings(args.vae_set)
    cohort = load_cohort("mds-iwgpm")
    part = make_partition(cohort.data, cohort.schema, proportions=(0.6, 0.3, 0.1), random_state=0)
    methods = args.methods.split(",")
    out_path = Path(args.out)
    old = json.loads(out_path.read_text()) if args.resume and out_path.exists() else {}
    rows: list[dict[str, Any]] = list(old.get("runs", []))
    cost: dict[str, Any] = dict(old.get("secure_aggregation_cost", {}))
    for other in (json.loads(Path(f).read_text()) for f in args.merge):
        keys = {_key(r) for r in rows}
        rows += [r for r in other.get("runs", []) if _key(r) not in keys]
        old["notes"] = old.get("notes", []) + [n for n in other.get("notes", []) if n not in old.get("notes", [])]
        old["seconds"] = old.get("seconds", 0.0) + other.get("seconds", 0.0)
        cost.update(other.get("secure_aggregation_cost", {}))
    done = {_key(r) for r in rows}
    generators: dict[str, Any] = {}
    out: dict[str, Any] = {
        "benchmark": "privacy", "cohort": "mds-iwgpm", "sites": [0.6, 0.3, 0.1], "seed": args.seed, "delta": DELTA,
        "commit": _commit(), "notes": old.get("notes", []) + args.note,
        "bn": {"generator_params": {**BayesianNetworkParams().model_dump(), **bn_params}, "overrides": bn_params,
               "secure_aggregation": True, "site_policy": "defaults (k = 5, max_cells 100,000)"},
        "vae": {**settings, "secure_aggregation": True},
        "platform": platform.platform(), "cpus": os.cpu_count(), "runs": rows}
    # --resume keeps what the file recorded besides its runs (e.g. a run-to-run spread, the processes' load)
    out.update({k: v for k, v in old.items() if k not in out and k not in ("secure_aggregation_cost", "seconds")})
    t_all = time.perf_counter()
    for eps in [float(e) for e in args.epsilons.split(",")]:
        for method in methods:
            if method.endswith("-plain") and not math.isinf(eps):
                continue
            kind = f"{method}@{args.tag}" if args.tag else method
            if (str(_eps(eps)), kind) in done:
                continue
            if method == "bn":
                row = bn_run(part, eps, args.seed, bn_params)
            elif method == "bn-plain":
                row = bn_run(part, eps, args.seed, bn_params, secure=False)
            elif method == "bn-clear-dp":
                row = bn_run(part, eps, args.seed, bn_params, secure=False, trusted=False)
            elif method == "vae":
                row = vae_run(part, eps, args.seed, settings)
            elif method == "vae-plain":
                row = vae_run(part, eps, args.seed, settings, secure=False)
            else:
                row = mst_run(part, eps, args.seed)
            if "_generator" in row:
                generators[kind] = row.pop("_generator")
            row = {"epsilon": _eps(eps), "delta": DELTA, "seed": args.seed, "kind": kind, **row}
            rows.append(row)
            _print(row)
            _write(out, out_path, rows, generators, cost, round(time.perf_counter() - t_all, 1) + old.get("seconds", 0.0))
    _write(out, out_path, rows, generators, cost, round(time.perf_counter() - t_all, 1) + old.get("seconds", 0.0))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
