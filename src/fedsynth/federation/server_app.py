"""ServerApp wiring: wait for the sites' nodes, run the strategy, hand every finished round to the caller's callback.

The ServerApp a deployment runs lives with the experiments (:mod:`fedsynth.experiments.deployed`), since it
writes run directories; this module keeps the generic pieces it and the simulation use.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, MutableMapping
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedsynth.cohort.schema import TableSchema
from fedsynth.errors import FedsynthError, ValidationError
from fedsynth.strategies import records
from fedsynth.strategies.base import Strategy
from fedsynth.strategies.exchange import OnRound
from fedsynth.strategies.registry import (
    DEFAULT_LOCAL_EPOCHS,
    DEFAULT_MIN_SITES,
    DEFAULT_ROUNDS,
    deployment_params,
    make_strategy,
    settings_problems,
)

log = logging.getLogger(__name__)


def wait_for_nodes(grid: Grid, n_nodes: int, *, timeout: float = 120.0) -> list[int]:
    """Node ids once ``n_nodes`` have registered (nodes register after the server starts)."""
    t0 = time.monotonic()
    while len(ids := list(grid.get_node_ids())) < n_nodes:
        if time.monotonic() - t0 > timeout:
            raise FedsynthError(f"only {len(ids)} of {n_nodes} site nodes connected within {timeout:.0f}s")
        time.sleep(0.05)
    return sorted(ids)


def make_server_app(
    strategy: Strategy,
    n_nodes: int,
    *,
    on_round: OnRound | None = None,
    results: MutableMapping[str, Any] | None = None,
    node_timeout: float | None = None,
) -> ServerApp:
    """A ServerApp that runs ``strategy`` over the grid once ``n_nodes`` nodes are up.

    The strategy's :class:`~fedsynth.strategies.exchange.StrategyResult` is stored in ``results["result"]``
    (the server runs in the caller's process, so the caller sees it). ``node_timeout`` (seconds to wait for
    the nodes) defaults to the strategy's ``node_timeout`` parameter.
    """
    app = ServerApp()
    sink = results if results is not None else {}
    timeout = float(strategy.params["node_timeout"]) if node_timeout is None else float(node_timeout)

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        wait_for_nodes(grid, n_nodes, timeout=timeout)
        sink["result"] = strategy.start(grid, on_round=on_round)

    return app


def strategy_from_run_config(run_config: Mapping[str, Any]) -> tuple[Strategy, int]:
    """The strategy and the number of site nodes a deployment's run config asks for.

    Keys (kebab-case, as Flower run configs are written): ``strategy``, ``generator``, ``generator-params``
    (JSON), ``rounds``, ``local-epochs``, ``min-sites``, ``seed``, ``schema-path``, ``num-sites``,
    ``strategy-params`` (JSON). Defaults are the registry's (:mod:`fedsynth.strategies.registry`); every
    setting is checked against it before the strategy is built, with every problem in one
    :class:`~fedsynth.errors.ValidationError`.
    """
    cfg = {records.snake(str(k)): v for k, v in run_config.items()}
    name = str(cfg.get("strategy", "two_step_bn"))
    generator = str(cfg.get("generator", "bayesian_network"))
    generator_params = records.decode_payload(str(cfg.get("generator_params", "{}")))
    params = deployment_params(name, generator, records.decode_payload(str(cfg.get("strategy_params", "{}"))))
    rounds = int(cfg["rounds"]) if "rounds" in cfg else None
    local_epochs = int(cfg["local_epochs"]) if "local_epochs" in cfg else None
    problems = settings_problems(name, generator, params=params, generator_params=generator_params, rounds=rounds,
                                 local_epochs=local_epochs, where="strategy", generator_where="generator")
    if problems:
        raise ValidationError("Run config", problems)
    schema = TableSchema.from_yaml(str(cfg["schema_path"]))
    strategy = make_strategy(
        name,
        schema,
        generator=generator,
        generator_params=generator_params,
        rounds=DEFAULT_ROUNDS if rounds is None else rounds,
        local_epochs=DEFAULT_LOCAL_EPOCHS if local_epochs is None else local_epochs,
        min_sites=int(cfg.get("min_sites", DEFAULT_MIN_SITES)),
        random_state=int(cfg.get("seed", 0)),
        params=params,
    )
    return strategy, int(cfg.get("num_sites", strategy.min_sites))

