"""Scaling benchmark: how cost grows from 3 to 50 sites over the same training rows.

For each generator's federated strategy (two-step BN, FedAvg CTGAN, FedAvg VAE-BGM) and each number of sites,
the same training pool is split IID into equal sites and the strategy runs over an in-process grid that
counts the serialised size (Flower's own protobuf encoding) of every message in each direction. Recorded per
setting: wall time, peak resident memory, bytes exchanged per round (down = server to sites, up = replies) by
message type, number of round trips, and quality (CSF, GSF, NNDR p5 from ``quick_scores``). The growth per
added site is the least-squares slope over the site counts. A second part runs the two-step BN through
Flower's simulation engine at the smaller site counts, to show the engine's own overhead against the same
protocol in process.

    python benchmarks/bench_scaling.py                       # everything (long on 2 CPU cores)
    python benchmarks/bench_scaling.py --generators bayesian_network --sites 3,5,10,20,50

Results: benchmarks/results/scaling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
if _SHARED.is_dir():
    os.environ.setdefault("FEDSYNTH_DATA_DIR", str(_SHARED))

RESULTS = Path(__file__).resolve().parent / "results" / "scaling.json"

SETTINGS = {
    "bayesian_network": ("two_step_bn", {"max_indegree": 2}, {}),
    "ctgan": ("fedavg", {"batch_size": 40, "pac": 10}, {"rounds": 2, "local_epochs": 1}),
    "vae_bgm": ("fedavg", {"batch_size": 64}, {"rounds": 2, "local_epochs": 1}),
}


class PeakRSS:
    """Peak resident set size of this process while the block runs (sampled every 20 ms from /proc)."""

    def __enter__(self) -> PeakRSS:
        self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def counting_grid(sites: list[Any]) -> Any:
    """An in-process grid that adds up the wire size of every message it carries."""
    from flwr.common.serde import recorddict_to_proto

    from fedsynth.strategies.in_process import InProcessGrid

    class CountingGrid(InProcessGrid):
        def __init__(self, runtimes: list[Any]) -> None:
            super().__init__(runtimes)
            self.bytes: dict[str, dict[str, int]] = defaultdict(lambda: {"down": 0, "up": 0, "messages": 0})
            self.round_trips = 0

        def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Any]:
            messages = list(messages)
            replies = super().send_and_receive(messages, timeout=timeout)
            self.round_trips += 1
            for msg, reply in zip(messages, replies):
                entry = self.bytes[msg.metadata.message_type]
                entry["down"] += recorddict_to_proto(msg.content).ByteSize()
                if reply.has_content():
                    entry["up"] += recorddict_to_proto(reply.content).ByteSize()
                entry["messages"] += 1
            return replies

    return CountingGrid(sites)


def run_one(generator: str, n_sites: int, part: Any, schema: Any, seed: int = 0) -> dict[str, Any]:
    from fedsynth.cohort.partition import partition_sites
    from fedsynth.evaluation import quick_scores
    from fedsynth.strategies.registry import make_strategy
    from fedsynth.strategies.site import SiteRuntime

    strategy_name, gen_params, strat = SETTINGS[generator]
    frames = partition_sites(part.train, schema, proportions=[1.0] * n_sites, random_state=seed)
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n_sites)]
    runtimes = [SiteRuntime(f"site-{i + 1}", f, schema, s) for i, (f, s) in enumerate(zip(frames, seeds))]
    grid = counting_grid(runtimes)
    strategy = make_strategy(
        strategy_name, schema, generator=generator, generator_params=gen_params,
        rounds=strat.get("rounds", 1), local_epochs=strat.get("local_epochs", 1), min_sites=2,
        random_state=seed,
    )
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        result = strategy.start(grid)
        wall = time.perf_counter() - t0
    synthetic = result.sample(len(part.train), random_state=seed)
    scores = quick_scores(part.train, synthetic, schema, holdout_data=part.holdout, random_state=seed)
    rounds = max(strat.get("rounds", 1), 1)
    total = {d: sum(v[d] for v in grid.bytes.values()) for d in ("down", "up")}
    return {
        "generator": generator,
        "strategy": strategy_name,
        "n_sites": n_sites,
        "wall_seconds": round(wall, 3),
        "peak_rss_mb": round(mem.peak / 2**20, 1),
        "round_trips": grid.round_trips,
        "bytes_total": total,
        "bytes_per_round": {d: total[d] / rounds for d in total},
        "bytes_by_message_type": dict(grid.bytes),
        "csf": scores.get("csf"),
        "gsf": scores.get("gsf"),
        "nndr_p5": (scores.get("nndr") or {}).get("synthetic", {}).get("p5") if isinstance(scores.get("nndr"), dict) else None,
    }


def engine_overhead(part: Any, schema: Any, site_counts: list[int]) -> list[dict[str, Any]]:
    """Two-step BN over Flower's simulation engine against the same protocol in process."""
    from fedsynth.cohort.partition import partition_sites
    from fedsynth.federation.simulation import run_in_process, run_simulation
    from fedsynth.strategies.registry import make_strategy

    rows = []
    for n in site_counts:
        frames = partition_sites(part.train, schema, proportions=[1.0] * n, random_state=0)
        sites = [(f"site-{i + 1}", f) for i, f in enumerate(frames)]
        times = {}
        for engine, runner in (("in_process", run_in_process), ("simulation", run_simulation)):
            strategy = make_strategy("two_step_bn", schema, generator="bayesian_network",
                                     generator_params={"max_indegree": 2}, rounds=1, local_epochs=1, min_sites=2,
                                     random_state=0, params={})
            t0 = time.perf_counter()
            runner(strategy, sites, schema, seeds=list(range(n)))
            times[engine] = time.perf_counter() - t0
        rows.append({"n_sites": n, **{f"{k}_seconds": round(v, 2) for k, v in times.items()},
                     "engine_overhead_seconds": round(times["simulation"] - times["in_process"], 2),
                     "ratio": round(times["simulation"] / times["in_process"], 2)})
        print(rows[-1], flush=True)
    return rows


def growth(rows: list[dict[str, Any]], key: str) -> float | None:
    xs = np.array([r["n_sites"] for r in rows], dtype=float)
    ys = np.array([_get(r, key) for r in rows], dtype=float)
    if len(xs) < 2 or np.isnan(ys).any():
        return None
    return float(np.polyfit(xs, ys, 1)[0])


def _get(row: dict[str, Any], key: str) -> float:
    value: Any = row
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return float("nan") if value is None else float(value)


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generators", default="bayesian_network,ctgan,vae_bgm")
    parser.add_argument("--sites", default="3,5,10,20,50")
    parser.add_argument("--engine-sites", default="3,5,10", help="site counts for the Flower engine comparison ('' to skip)")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--update", action="store_true",
                        help="keep the output file's rows of the generators not run now (and its engine part if skipped)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from fedsynth.cohort.datasets import load_cohort
    from fedsynth.cohort.partition import make_partition

    cohort = load_cohort("mds-iwgpm")
    part = make_partition(cohort.data, cohort.schema, proportions=[1.0], random_state=0)
    schema = cohort.schema
    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "n_train": len(part.train),
        "settings": {g: {"strategy": s, "generator_params": p, **r} for g, (s, p, r) in SETTINGS.items()},
        "runs": [],
        "growth_per_added_site": {},
    }
    for generator in [g for g in args.generators.split(",") if g]:
        rows = []
        for n in [int(x) for x in args.sites.split(",") if x]:
            row = run_one(generator, n, part, schema)
            rows.append(row)
            results["runs"].append(row)
            print({k: row[k] for k in ("generator", "n_sites", "wall_seconds", "peak_rss_mb", "round_trips", "bytes_per_round", "csf", "gsf")}, flush=True)
        results["growth_per_added_site"][generator] = {
            "wall_seconds": growth(rows, "wall_seconds"),
            "peak_rss_mb": growth(rows, "peak_rss_mb"),
            "bytes_per_round_up": growth(rows, "bytes_per_round.up"),
            "bytes_per_round_down": growth(rows, "bytes_per_round.down"),
            "round_trips": growth(rows, "round_trips"),
        }
    if args.engine_sites:
        results["flower_engine"] = engine_overhead(part, schema, [int(x) for x in args.engine_sites.split(",")])
    out = Path(args.out)
    if args.update and out.is_file():
        # Rows of generators not re-run now stay, marked with where they came from.
        old = json.loads(out.read_text())
        ran = set(results["growth_per_added_site"])
        kept = [{**r, "measured": r.get("measured", "earlier run")} for r in old.get("runs", []) if r["generator"] not in ran]
        results["runs"] = kept + results["runs"]
        results["growth_per_added_site"] = {**{g: v for g, v in old.get("growth_per_added_site", {}).items()
                                               if g not in ran}, **results["growth_per_added_site"]}
        results["settings"] = {**old.get("settings", {}), **{g: results["settings"][g] for g in ran}}
        if "flower_engine" not in results and "flower_engine" in old:
            results["flower_engine"] = old["flower_engine"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    print(f"written {out}")


if __name__ == "__main__":
    main()
