"""Benchmark: the cost of secure aggregation (fedsynth.strategies.secure_sum) against plain summing, in one process.

Three sites on an in-process grid (the same handlers a Flower node runs; no network, so wall time is the
protocol's computation: key agreement, Shamir shares, Fernet, ChaCha20 masks, serialization not included) and
bytes = the serialized size (Flower's protobuf, ``message_to_proto(...).ByteSize()``) of every instruction and
reply. Three workloads:

* ``counts``: a BN-sized integer vector per site (200,000 Poisson(1) counts, seeded), plain = each site sends its
  counts as int32 (as ``query.counts`` packs them) and the server adds; secure = ``modulus_bits=32`` (uint32 on
  the wire), exact;
* ``weights``: a VAE-sized float vector per site: the shapes of a VAE-BGM's weights on the MDS cohort's domain
  (default hyperparameters), values N(0, 0.1) float32, seeded; plain = float32 arrays (as FedAvg sends them);
  secure = fixed point as FedAvg sums, ``modulus_bits=64``, 32 fractional bits (uint64 on the wire); max relative error reported;
* each secure workload again with one site dropping after sharing keys (the server rebuilds its mask key);
* ``two_step_bn``: the whole federated two-step BN on MDS (3 sites 60/30/10, max_indegree 2), clear count
  replies (default site policy: isolating tables withheld) vs ``secure_aggregation: true`` (domain summaries and
  count tables summed securely); the secure network must be identical to the clear count flow's on the same
  domain in a trusted network (``clear_counts``, nothing withheld);
* ``fedavg_vae_bgm``: the whole federated VAE-BGM on MDS (FedAvg, 2 rounds x 2 local epochs, latent-mixture EM
  capped at 10 iterations), clear vs ``secure_aggregation: true`` (domain, weight updates and mixture statistics
  summed securely): wall time per phase, bytes per site, and the largest relative weight difference against the
  clear flow on the same domain. ``--only-fedavg`` reruns this one alone and updates its entry;
* ``domain_fidelity`` (``--only-fidelity``, not in the default run): CSF, GSF and survival-effect fidelity of the
  two-step BN and VAE-BGM on the clear domain vs the domain from securely summed histograms.

Each timing is the median of ``--repeats`` runs (default 3). Run (CPU, a few minutes alone)::

    FEDSYNTH_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/bench_secure_sum.py

Writes benchmarks/results/secure_sum.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("FEDSYNTH_DATA_DIR", "/work/shared/data")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

from flwr.app import Message, RecordDict
from flwr.common.serde import message_to_proto

from fedsynth.strategies import records
from fedsynth.strategies import secure_sum as ss
from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.site import SiteRuntime

RESULTS = Path(__file__).resolve().parent / "results" / "secure_sum.json"
N_SITES = 3
PLAIN = "query.plain_vector"


def _bytes(grid: InProcessGrid) -> int:
    return sum(int(message_to_proto(m).ByteSize()) for m in (*grid.sent, *grid.received))


def _vectors(kind: str, shapes: Mapping[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1000 + seed)
    if kind == "counts":
        return {k: rng.poisson(1.0, size=s).astype(np.int64) for k, s in shapes.items()}
    return {k: rng.normal(0.0, 0.1, size=s).astype(np.float32) for k, s in shapes.items()}


def _grid(kind: str, shapes: Mapping[str, tuple[int, ...]]) -> InProcessGrid:
    sites = [SiteRuntime(f"site-{i}", None, None, seed=i) for i in range(N_SITES)]  # type: ignore[arg-type]

    def source(request: Mapping[str, Any], site: SiteRuntime) -> dict[str, np.ndarray]:
        return _vectors(kind, shapes, site.seed)

    def plain(msg: Message, site: SiteRuntime) -> RecordDict:
        v = source({}, site)
        wire = {k: a.astype(np.int32) if kind == "counts" else a for k, a in v.items()}
        return RecordDict({"arrays": records.to_array_record(wire)})

    handlers = {**ss.site_handlers({"bench": source}), PLAIN: plain}
    return InProcessGrid(sites, handlers=handlers, keep_messages=True)


class _DropAfterKeys(InProcessGrid):
    """The last site stops answering once it has shared its keys."""

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        last = max(self.sites)
        return [
            r for r in super().send_and_receive(messages, timeout=timeout)
            if not (r.metadata.src_node_id == last and r.metadata.message_type in (ss.COLLECT, ss.UNMASK))
        ]


def _plain_sum(grid: InProcessGrid) -> dict[str, np.ndarray]:
    msgs = [Message(RecordDict({}), dst_node_id=n, message_type=PLAIN, group_id="plain") for n in grid.get_node_ids()]
    total: dict[str, np.ndarray] = {}
    for r in grid.send_and_receive(msgs):
        for k, a in records.from_array_record(r.content["arrays"]).items():
            total[k] = total[k] + a.astype(np.float64 if a.dtype.kind == "f" else np.int64) if k in total else (
                a.astype(np.float64 if a.dtype.kind == "f" else np.int64))
    return total


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def vector_workload(kind: str, shapes: Mapping[str, tuple[int, ...]], repeats: int) -> dict[str, Any]:
    # Floats as FedAvg sums them: FLOAT_FRACTION_BITS in 64-bit words, clipping range float_clipping_range.
    fraction_bits = None if kind == "counts" else ss.FLOAT_FRACTION_BITS
    clip = ss.float_clipping_range(N_SITES)
    bits = 32 if kind == "counts" else 64
    out: dict[str, Any] = {"entries_per_site": int(sum(int(np.prod(s)) for s in shapes.values())),
                           "arrays": len(shapes), "modulus_bits": bits, "fraction_bits": fraction_bits}
    grid = _grid(kind, shapes)
    plain_s, plain = _timed(lambda: _plain_sum(grid), repeats)
    plain_bytes = _bytes(grid) // repeats
    grid = _grid(kind, shapes)
    secure_s, secure = _timed(
        lambda: ss.secure_sum(grid, grid.get_node_ids(), {}, source="bench", modulus_bits=bits,
                              fraction_bits=fraction_bits, clipping_range=clip), repeats)
    secure_bytes = _bytes(grid) // repeats
    base = _grid(kind, shapes)
    drop = _DropAfterKeys(list(base.sites.values()), handlers=base.handlers, keep_messages=True)
    drop_s, dropped = _timed(
        lambda: ss.secure_sum(drop, drop.get_node_ids(), {}, source="bench", modulus_bits=bits,
                              fraction_bits=fraction_bits, clipping_range=clip, threshold=2), repeats)
    drop_bytes = _bytes(drop) // repeats
    survivors = {k: sum(_vectors(kind, shapes, s).get(k).astype(np.float64 if kind != "counts" else np.int64)  # type: ignore[union-attr]
                        for s in range(N_SITES - 1)) for k in shapes}
    if kind == "counts":
        exact = all(np.array_equal(secure.arrays[k], plain[k]) for k in plain)
        exact_drop = all(np.array_equal(dropped.arrays[k], survivors[k]) for k in plain)
        out.update(secure_equals_plain=exact, dropout_sum_equals_survivors=exact_drop)
    else:
        rel = max(float(np.max(np.abs(secure.arrays[k] - plain[k]) / np.maximum(np.abs(plain[k]), 1e-300)))
                  for k in plain)
        rel_drop = max(float(np.max(np.abs(dropped.arrays[k] - survivors[k]) / np.maximum(np.abs(survivors[k]), 1e-300)))
                       for k in plain)
        out.update(max_relative_error=rel, dropout_max_relative_error=rel_drop)
    out.update(
        plain_seconds=round(plain_s, 4), secure_seconds=round(secure_s, 4), secure_dropout_seconds=round(drop_s, 4),
        plain_bytes=plain_bytes, secure_bytes=secure_bytes, secure_dropout_bytes=drop_bytes,
        time_ratio=round(secure_s / plain_s, 2), bytes_ratio=round(secure_bytes / plain_bytes, 3),
        dropout_time_ratio=round(drop_s / plain_s, 2), dropped=list(dropped.dropped.values()),
    )
    return out


def vae_shapes() -> tuple[dict[str, tuple[int, ...]], Any, Any]:
    """The VAE-BGM's weight shapes on MDS (domain merged from the 3 sites' summaries), and the partition."""
    from fedsynth.cohort.datasets import load_cohort
    from fedsynth.cohort.partition import make_partition
    from fedsynth.strategies.registry import build_generator, make_strategy

    cohort = load_cohort("mds-iwgpm")
    part = make_partition(cohort.data, cohort.schema, proportions=(0.6, 0.3, 0.1), random_state=0)
    grid = InProcessGrid([SiteRuntime(s.name, s.data, cohort.schema, seed=i) for i, s in enumerate(part.sites)])
    strategy = make_strategy("fedavg", cohort.schema, generator="vae_bgm")
    domain = strategy.build_domain(grid, strategy.hello(grid))
    gen = build_generator("vae_bgm", cohort.schema, domain, {}, 0)
    if hasattr(gen, "initialize"):  # as FedAvg's server does before taking the initial weights
        gen.initialize()
    return {k: tuple(np.asarray(v).shape) for k, v in gen.get_weights().items()}, part, cohort.schema


def bn_workload(part: Any, schema: Any) -> dict[str, Any]:
    from fedsynth.strategies.registry import make_strategy

    out: dict[str, Any] = {"generator_params": {"max_indegree": 2}}
    nets = {}
    for label, secure in (("plain", False), ("secure", True)):
        grid = InProcessGrid([SiteRuntime(s.name, s.data, schema, seed=i) for i, s in enumerate(part.sites)],
                             keep_messages=True)
        strategy = make_strategy("two_step_bn", schema, generator="bayesian_network",
                                 generator_params={"max_indegree": 2}, min_sites=3,
                                 params={"secure_aggregation": secure})
        t0 = time.perf_counter()
        result = strategy.start(grid)
        out[f"{label}_seconds"] = round(time.perf_counter() - t0, 3)
        out[f"{label}_count_phase_seconds"] = round(result.timings["training"], 3)
        out[f"{label}_bytes"] = _bytes(grid)
        out[f"{label}_messages"] = len(grid.sent) + len(grid.received)
        out[f"{label}_count_requests"] = result.rounds[0]["count_requests"]
        nets[label] = result.generator
        domain = result.domain
    # The secure run's domain comes from summed histograms (bins differ slightly from the clear one's): the clear
    # count flow on that same domain, in a trusted network (clear_counts: no table withheld), must give the same
    # network.
    from fedsynth.strategies.policy import SitePolicy

    same = make_strategy("two_step_bn", schema, generator="bayesian_network", generator_params={"max_indegree": 2},
                         min_sites=3)
    grid = InProcessGrid([SiteRuntime(s.name, s.data, schema, seed=i, policy=SitePolicy(clear_counts=True))
                          for i, s in enumerate(part.sites)])
    nets["plain"] = same.run(grid, same.hello(grid), domain, on_round=None, run_token="bench-bn-clear").generator
    out["same_edges"] = nets["plain"].edges_ == nets["secure"].edges_
    out["max_cpd_difference"] = max(
        float(np.max(np.abs(nets["secure"].model_.get_cpds(c.variable).values - c.values)))
        for c in nets["plain"].model_.get_cpds()
    ) if out["same_edges"] else None
    out["time_ratio"] = round(out["secure_seconds"] / out["plain_seconds"], 2)
    out["count_phase_time_ratio"] = round(out["secure_count_phase_seconds"] / out["plain_count_phase_seconds"], 2)
    out["bytes_ratio"] = round(out["secure_bytes"] / out["plain_bytes"], 3)
    return out


def _bytes_per_site(grid: InProcessGrid) -> dict[str, int]:
    """Bytes of the instructions to and the replies from each site (Flower's protobuf)."""
    out = {s.name: 0 for s in grid.sites.values()}
    for m in grid.sent:
        out[grid.sites[m.metadata.dst_node_id].name] += int(message_to_proto(m).ByteSize())
    for m in grid.received:
        out[grid.sites[m.metadata.src_node_id].name] += int(message_to_proto(m).ByteSize())
    return out


#: FedAvg VAE-BGM with short settings (the generator's defaults otherwise).
FEDAVG_SETTINGS: dict[str, Any] = {"rounds": 2, "local_epochs": 2, "params": {"mixture_max_iter": 10}}


def fedavg_workload(part: Any, schema: Any) -> dict[str, Any]:
    """Whole federated VAE-BGM runs (FedAvg + federated latent-mixture EM), clear vs ``secure_aggregation: true``:
    wall time per phase, bytes per site, and the secure model against the clear one trained on the same domain."""
    from fedsynth.strategies.registry import make_strategy

    def strategy(secure: bool) -> Any:
        return make_strategy("fedavg", schema, generator="vae_bgm", rounds=FEDAVG_SETTINGS["rounds"],
                             local_epochs=FEDAVG_SETTINGS["local_epochs"], min_sites=3, random_state=0,
                             params={**FEDAVG_SETTINGS["params"], "secure_aggregation": secure})

    def sites() -> list[SiteRuntime]:
        return [SiteRuntime(s.name, s.data, schema, seed=i) for i, s in enumerate(part.sites)]

    out: dict[str, Any] = {"settings": FEDAVG_SETTINGS, "site_rows": {s.name: len(s.data) for s in part.sites}}
    results = {}
    for label, secure in (("plain", False), ("secure", True)):
        grid = InProcessGrid(sites(), keep_messages=True)
        t0 = time.perf_counter()
        result = strategy(secure).start(grid)
        out[f"{label}_seconds"] = round(time.perf_counter() - t0, 3)
        out[f"{label}_phase_seconds"] = {k: round(v, 3) for k, v in result.timings.items()}
        per_site = _bytes_per_site(grid)
        out[f"{label}_bytes_per_site"] = per_site
        out[f"{label}_bytes"] = sum(per_site.values())
        out[f"{label}_messages"] = len(grid.sent) + len(grid.received)
        results[label] = result
    # The clear flow on the secure run's domain (its bins come from summed histograms): the same model expected.
    same = strategy(False)
    grid = InProcessGrid(sites())
    clear = same.run(grid, same.hello(grid), results["secure"].domain, on_round=None, run_token="bench-clear")
    got, want = results["secure"].generator.get_weights(), clear.generator.get_weights()
    out["max_relative_weight_difference"] = max(
        float(np.max(np.abs(got[k].astype(np.float64) - want[k]) / np.maximum(np.abs(want[k]), 1e-12))) for k in want)
    out["time_ratio"] = round(out["secure_seconds"] / out["plain_seconds"], 2)
    out["training_time_ratio"] = round(out["secure_phase_seconds"]["training"] / out["plain_phase_seconds"]["training"], 2)
    out["bytes_ratio"] = round(out["secure_bytes"] / out["plain_bytes"], 3)
    out["bytes_ratio_per_site"] = {k: round(out["secure_bytes_per_site"][k] / v, 3)
                                   for k, v in out["plain_bytes_per_site"].items()}
    return out


def fidelity_workload(part: Any, schema: Any) -> dict[str, Any]:
    """Does the domain built from securely summed histograms stay good? Two-step BN (max_indegree 2) and VAE-BGM
    (FedAvg, :data:`FEDAVG_SETTINGS`) on the clear domain (each site's released summary) and on the secure one
    (summed histograms); the BN's clear run is a trusted network (``clear_counts``: no table withheld), so the
    domain is the only difference. CSF, GSF (``quick_scores``) and the survival-effect fidelity of a synthetic
    cohort of the training pool's size (seed 0), against the training pool."""
    from fedsynth.evaluation.report import quick_scores
    from fedsynth.evaluation.survival_effects import survival_effects
    from fedsynth.strategies.policy import SitePolicy
    from fedsynth.strategies.registry import make_strategy

    runs = {
        "two_step_bn": {"name": "two_step_bn", "generator": "bayesian_network", "generator_params": {"max_indegree": 2},
                            "params": {}},
        "vae_bgm": {"name": "fedavg", "generator": "vae_bgm", "generator_params": {}, "rounds": FEDAVG_SETTINGS["rounds"],
                        "local_epochs": FEDAVG_SETTINGS["local_epochs"], "params": dict(FEDAVG_SETTINGS["params"])},
    }
    real = part.train
    out: dict[str, Any] = {}
    for label, run in runs.items():
        out[label] = {}
        for domain_kind, secure in (("clear_domain", False), ("secure_domain", True)):
            settings = {k: v for k, v in run.items() if k != "name"}
            settings["params"] = {**settings["params"], "secure_aggregation": secure}
            strategy = make_strategy(str(run["name"]), schema, min_sites=3, random_state=0, **settings)
            grid = InProcessGrid([SiteRuntime(s.name, s.data, schema, seed=i, policy=SitePolicy(clear_counts=True))
                                  for i, s in enumerate(part.sites)])
            result = strategy.start(grid)
            synthetic = result.generator.sample(len(real), random_state=0)
            scores = quick_scores(real, synthetic, schema, random_state=0)
            effects = survival_effects(real, synthetic, schema, rng=np.random.default_rng(0))
            out[label][domain_kind] = {"csf": round(scores["csf"], 4), "gsf": round(scores["gsf"], 4),
                                       "survival_effect_fidelity": round(effects["fidelity"], 4)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--count-entries", type=int, default=200_000)
    parser.add_argument("--no-bn", action="store_true", help="skip the whole federated two-step BN")
    parser.add_argument("--no-fedavg", action="store_true", help="skip the whole federated VAE-BGM")
    parser.add_argument("--only-fedavg", action="store_true",
                        help="run the federated VAE-BGM only and update its entry in --out")
    parser.add_argument("--only-fidelity", action="store_true",
                        help="measure CSF/GSF/survival-effect fidelity on the clear vs the secure domain only and "
                             "update its entry (domain_fidelity) in --out")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    shapes, part, schema = vae_shapes()
    if args.only_fidelity:
        result = json.loads(args.out.read_text()) if args.out.exists() else {"benchmark": "secure_sum"}
        result["domain_fidelity"] = fidelity_workload(part, schema)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["domain_fidelity"], indent=2))
        return
    if args.only_fedavg:
        result = json.loads(args.out.read_text()) if args.out.exists() else {"benchmark": "secure_sum"}
        result["fedavg_vae_bgm"] = fedavg_workload(part, schema)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["fedavg_vae_bgm"], indent=2))
        return
    result = {
        "benchmark": "secure_sum",
        "sites": N_SITES,
        "repeats": args.repeats,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "counts": vector_workload("counts", {"counts": (args.count_entries,)}, args.repeats),
        "weights": vector_workload("weights", shapes, args.repeats),
    }
    if not args.no_bn:
        result["two_step_bn"] = bn_workload(part, schema)
    if not args.no_fedavg:
        result["fedavg_vae_bgm"] = fedavg_workload(part, schema)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
