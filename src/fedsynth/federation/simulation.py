"""Run a strategy on Flower's simulation engine: one virtual node per site, the server in this process."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fedsynth.cohort.schema import TableSchema
from fedsynth.errors import FedsynthError
from fedsynth.federation.client_app import SiteSource, make_client_app
from fedsynth.federation.server_app import make_server_app
from fedsynth.strategies.base import OnRound, Strategy, StrategyResult
from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.site import SiteHandler, SiteRuntime

log = logging.getLogger(__name__)


def run_simulation(
    strategy: Strategy,
    sites: Sequence[tuple[str, pd.DataFrame]],
    schema: TableSchema,
    *,
    seeds: Sequence[int] | None = None,
    on_round: OnRound | None = None,
    num_cpus: int | None = None,
    workdir: str | Path | None = None,
    node_timeout: float | None = None,
    handlers: Mapping[str, SiteHandler] | None = None,
    policies: Sequence[Mapping[str, Any] | None] | None = None,
) -> StrategyResult:
    """Run ``strategy`` over ``sites`` (name, rows) with Flower's simulation engine and return its result.

    Each site's rows are written to a private temporary file that only its node reads (removed afterwards);
    the client app carries paths, not rows. ``num_cpus`` (default: all cores, at most one per site) sizes the
    Ray pool; each node gets one CPU. Flower's and Ray's own logging is quieted for the run. ``handlers``
    replaces the sites' message handlers (tests inject failures this way). ``policies``: each site's own
    disclosure policy (:class:`~fedsynth.strategies.policy.SitePolicy` fields; ``None``: the safe defaults).
    """
    from flwr.simulation import run_simulation as flwr_run_simulation

    seeds = list(seeds) if seeds is not None else list(range(len(sites)))
    if len(seeds) != len(sites):
        raise FedsynthError(f"{len(sites)} sites but {len(seeds)} seeds")
    tmp = Path(tempfile.mkdtemp(prefix="fedsynth-sites-", dir=workdir))
    flwr_logger = logging.getLogger("flwr")
    old_level = flwr_logger.level
    try:
        sources = []
        site_policies = list(policies) if policies is not None else [None] * len(sites)
        for (name, frame), seed, policy in zip(sites, seeds, site_policies):
            path = tmp / f"{name}.pkl"
            frame.to_pickle(path)
            sources.append(SiteSource(name, str(path), int(seed), policy))
        results: dict[str, Any] = {}
        server_app = make_server_app(strategy, len(sites), on_round=on_round, results=results, node_timeout=node_timeout)
        client_app = make_client_app(sources, schema.to_dict(), handlers)
        cpus = int(num_cpus or min(os.cpu_count() or 1, max(len(sites), 1)))
        backend_config: dict[str, Any] = {
            "init_args": {"num_cpus": cpus, "num_gpus": 0, "log_to_driver": False, "include_dashboard": False},
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        }
        flwr_logger.setLevel(logging.CRITICAL)
        t0 = time.perf_counter()
        flwr_run_simulation(
            server_app=server_app, client_app=client_app, num_supernodes=len(sites),
            backend_config=backend_config,  # type: ignore[arg-type]
        )
        if "result" not in results:
            raise FedsynthError("the federated run ended without a result (see the log above)")
        result: StrategyResult = results["result"]
        result.timings["simulation_total"] = time.perf_counter() - t0
        return result
    finally:
        flwr_logger.setLevel(old_level)
        shutil.rmtree(tmp, ignore_errors=True)


def run_in_process(
    strategy: Strategy,
    sites: Sequence[tuple[str, pd.DataFrame]],
    schema: TableSchema,
    *,
    seeds: Sequence[int] | None = None,
    on_round: OnRound | None = None,
) -> StrategyResult:
    """The same strategy and handlers over an in-process grid (no Flower engine, no Ray)."""
    seeds = list(seeds) if seeds is not None else list(range(len(sites)))
    grid = InProcessGrid([SiteRuntime(n, f, schema, int(s)) for (n, f), s in zip(sites, seeds)])
    t0 = time.perf_counter()
    result = strategy.start(grid, on_round=on_round)
    result.timings["in_process_total"] = time.perf_counter() - t0
    return result
