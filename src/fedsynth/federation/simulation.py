"""Run a strategy on Flower's simulation engine: one virtual node per site, the server in this process.

Site rows reach the nodes through a private folder (mode 0700): each site's model columns only (no
identifiers), as Parquet when pyarrow is installed and CSV otherwise — never a pickle. The rows are removed
on every exit path; each site keeps its state between rounds in its own folder beside them (``sites/<name>/``),
which a resumed run reads. A stop event (set by the caller's signal handler, or on any exit) ends the server's
waits within a poll interval, so Ctrl-C and SIGTERM never leave a thread polling for replies.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedsynth.cohort.schema import TableSchema
from fedsynth.errors import FedsynthError
from fedsynth.federation.client_app import SiteSource, make_client_app
from fedsynth.federation.polling import PollingGrid, RunStopped
from fedsynth.strategies.base import Strategy
from fedsynth.strategies.exchange import OnRound, StrategyResult
from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.policy import SitePolicy
from fedsynth.strategies.site import SiteHandler, SiteRuntime
from fedsynth.strategies.site_budget import site_ledger

__all__ = ["PollingGrid", "RunStopped", "StoppableGrid", "private_folder", "run_in_process", "run_simulation",
           "write_site_rows"]

log = logging.getLogger(__name__)

#: Seconds a stopped run waits for the server thread to finish the round it is recording.
SERVER_JOIN_TIMEOUT = 20.0


def private_folder(path: str | Path) -> Path:
    """``path`` created (with parents) and set to mode 0700: readable by this user only."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


def write_site_rows(folder: Path, name: str, frame: pd.DataFrame, schema: TableSchema) -> Path:
    """One site's model columns (never identifiers) in ``folder``: Parquet with pyarrow, else CSV; mode 0600."""
    columns = [c for c in schema.model_columns if c in frame.columns]
    parquet = importlib.util.find_spec("pyarrow") is not None
    path = folder / f"{name}.{'parquet' if parquet else 'csv'}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        if parquet:
            frame[columns].to_parquet(fh, index=False)
        else:
            frame[columns].to_csv(fh, index=False)
    return path


#: The simulation's grid: Flower's, with fast polling and waits that end when the run is stopped.
StoppableGrid = PollingGrid


def _init_ray(num_cpus: int) -> None:
    """Start Ray as Flower would, then put back this process's SIGTERM handler (``ray.init`` replaces it with
    one that exits mid-run, which ended runs with a crash dump instead of a clean stop)."""
    import ray

    if ray.is_initialized():
        return
    pythonpath = os.pathsep.join([*sys.path, *([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])])
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    ray.init(num_cpus=num_cpus, num_gpus=0, log_to_driver=False, include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    if main and previous is not None:
        signal.signal(signal.SIGTERM, previous)


def run_simulation(
    strategy: Strategy,
    sites: Sequence[tuple[str, pd.DataFrame]],
    schema: TableSchema,
    *,
    seeds: Sequence[int] | None = None,
    on_round: OnRound | None = None,
    num_cpus: int | None = None,
    private_dir: str | Path | None = None,
    stop: threading.Event | None = None,
    node_timeout: float | None = None,
    handlers: Mapping[str, SiteHandler] | None = None,
    policies: Sequence[Mapping[str, Any] | None] | None = None,
) -> StrategyResult:
    """Run ``strategy`` over ``sites`` (name, rows) with Flower's simulation engine and return its result.

    Parameters
    ----------
    private_dir : path, optional
        The run's private folder (mode 0700): ``rows/`` holds each site's rows while the engine runs and is
        removed on every exit path; ``sites/<name>/`` holds each site's state between rounds and is kept (a
        resumed run reads it). Default: a temporary folder removed afterwards.
    stop : threading.Event, optional
        Set it (e.g. from a signal handler) to end the server's waits; it is set on every exit.
    node_timeout : float, optional
        Seconds to wait for the sites' nodes (default: the strategy's ``node_timeout`` parameter).
    num_cpus : int, optional
        Size of the Ray pool (default: all cores, at most one per site); each node gets one CPU.
    handlers : mapping, optional
        Replaces the sites' message handlers (tests inject failures this way).
    policies : sequence of mappings, optional
        Each site's own disclosure policy (:class:`~fedsynth.strategies.policy.SitePolicy` fields; ``None``: the
        safe defaults).

    Raises
    ------
    FedsynthError
        When the engine ends without a result; :class:`RunStopped` when ``stop`` ended it.
    """
    from flwr.simulation import run_simulation as flwr_run_simulation

    seeds = list(seeds) if seeds is not None else list(range(len(sites)))
    if len(seeds) != len(sites):
        raise FedsynthError(f"{len(sites)} sites but {len(seeds)} seeds")
    own_folder = private_dir is None
    root = private_folder(private_dir if private_dir is not None else tempfile.mkdtemp(prefix="fedsynth-private-"))
    rows_dir = private_folder(root / "rows")
    stop = stop if stop is not None else threading.Event()
    timeout = float(strategy.params["node_timeout"]) if node_timeout is None else float(node_timeout)
    results: dict[str, Any] = {}
    flwr_logger = logging.getLogger("flwr")
    old_level = flwr_logger.level
    try:
        sources = []
        site_policies = list(policies) if policies is not None else [None] * len(sites)
        for (name, frame), seed, policy in zip(sites, seeds, site_policies):
            path = write_site_rows(rows_dir, name, frame, schema)
            sources.append(SiteSource(name, str(path), int(seed), str(private_folder(root / "sites" / name)),
                                      policy=policy))
        server_app = ServerApp()

        @server_app.main()
        def main(grid: Grid, context: Context) -> None:
            results["thread"] = threading.current_thread()
            stoppable = StoppableGrid(grid, stop)
            stoppable.wait_for_nodes(len(sites), timeout=timeout)
            results["result"] = strategy.start(stoppable, on_round=on_round)

        client_app = make_client_app(sources, schema.to_dict(), handlers)
        cpus = int(num_cpus or min(os.cpu_count() or 1, max(len(sites), 1)))
        backend_config: dict[str, Any] = {
            "init_args": {"num_cpus": cpus, "num_gpus": 0, "log_to_driver": False, "include_dashboard": False},
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        }
        flwr_logger.setLevel(logging.CRITICAL)
        _init_ray(cpus)
        t0 = time.perf_counter()
        flwr_run_simulation(
            server_app=server_app, client_app=client_app, num_supernodes=len(sites),
            backend_config=backend_config,
        )
        if "result" not in results:
            raise FedsynthError("the federated run ended without a result (see the log above)")
        result: StrategyResult = results["result"]
        result.timings["simulation_total"] = time.perf_counter() - t0
        return result
    finally:
        stop.set()
        # The server thread ends at its next look at the stop event (after recording a round it is scoring),
        # so the caller sees every finished round and no thread outlives the run.
        t_stop = time.perf_counter()
        server = results.get("thread")
        if isinstance(server, threading.Thread) and server is not threading.current_thread():
            server.join(timeout=SERVER_JOIN_TIMEOUT)
        t_joined = time.perf_counter()
        flwr_logger.setLevel(old_level)
        _shutdown_ray()
        log.info("simulation ended: server thread joined in %.1fs, Ray shut down in %.1fs",
                 t_joined - t_stop, time.perf_counter() - t_joined)
        shutil.rmtree(rows_dir, ignore_errors=True)
        if own_folder:
            shutil.rmtree(root, ignore_errors=True)


def _shutdown_ray() -> None:
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def run_in_process(
    strategy: Strategy,
    sites: Sequence[tuple[str, pd.DataFrame]],
    schema: TableSchema,
    *,
    seeds: Sequence[int] | None = None,
    on_round: OnRound | None = None,
    state_root: str | Path | None = None,
    policy: SitePolicy | None = None,
) -> StrategyResult:
    """The same strategy and handlers over an in-process grid (no Flower engine, no Ray).

    ``state_root``: the folder under which each site keeps its state between rounds (``<root>/<name>/``), as in
    simulation; default: memory only. ``policy``: every site's disclosure policy (default: the safe defaults).
    """
    seeds = list(seeds) if seeds is not None else list(range(len(sites)))
    root = Path(state_root) if state_root is not None else None
    site_policy = policy if policy is not None else SitePolicy()
    grid = InProcessGrid([
        SiteRuntime(n, f, schema, int(s), state_dir=private_folder(root / n) if root is not None else None,
                    policy=site_policy,
                    privacy_ledger=site_ledger(site_policy, root / n if root is not None else None))
        for (n, f), s in zip(sites, seeds)
    ])
    t0 = time.perf_counter()
    result = strategy.start(grid, on_round=on_round)
    result.timings["in_process_total"] = time.perf_counter() - t0
    return result
