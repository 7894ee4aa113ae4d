"""What a run is made of, before it starts: per-site seeds, its id, references, expected rounds, strata check,
the cohort partition, the strategy settings and the data fingerprint (all read from the config)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import numpy as np

from fedsynth.errors import Problem, ValidationError
from fedsynth.experiments.config import ExperimentConfig

log = logging.getLogger(__name__)


def site_seeds(seed: int, n_sites: int) -> list[int]:
    """Per-site seeds: ``numpy.random.SeedSequence(seed).spawn(n_sites)``, one 32-bit int each."""
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n_sites)]


def _run_id(config: ExperimentConfig) -> str:
    if config.output.run_id:
        return config.output.run_id
    return f"{config.name}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"


def _references(config: ExperimentConfig) -> list[str]:
    """Reference fits of a federated run (``evaluation.references``); a baseline draws none (it is one)."""
    from fedsynth.strategies.registry import STRATEGIES

    return [] if STRATEGIES[config.strategy.name].baseline else list(config.evaluation.references)


def _expected_rounds(config: ExperimentConfig, n_sites: int) -> int:
    from fedsynth.strategies.registry import uses_rounds

    name = config.strategy.name
    per_model = config.strategy.rounds if uses_rounds(name, config.generator.name) else 1
    return per_model * (n_sites if name == "local" else 1)


def _check_strata(config: ExperimentConfig, schema: Any) -> None:
    """``evaluation.strata`` must name columns of the schema (checked before any engine starts)."""
    strata = config.evaluation.strata or []
    problems = [
        Problem(f"evaluation.strata[{i}]", f"no column {name!r} in the schema", ", ".join(schema.data_columns))
        for i, name in enumerate(strata) if name not in schema.data_columns
    ]
    if problems:
        raise ValidationError(f"Config {config.name}", problems)


def load_partition(config: ExperimentConfig) -> tuple[Any, Any]:
    """The cohort and its seeded partition, as the config says."""
    from fedsynth.cohort.datasets import load
    from fedsynth.cohort.partition import make_partition
    from fedsynth.cohort.schema import TableSchema

    c = config.cohort
    schema = TableSchema.from_yaml(c.schema_file) if c.schema_file else None
    cohort = load(c.source, data_dir_=c.data_dir, schema=schema, overrides=c.schema_overrides or None)
    part = make_partition(
        cohort.data,
        cohort.schema,
        proportions=config.sites.proportions if config.sites.method != "by_column" else None,
        method=config.sites.method,
        by=config.sites.by,
        alpha=config.sites.alpha,
        holdout_fraction=config.split.holdout_fraction,
        scenario=config.scenario.name,
        missing_columns=config.scenario.missing_columns,
        random_state=config.seed,
    )
    return cohort, part


def strategy_settings(config: ExperimentConfig, *, deployed: bool = False) -> dict[str, Any]:
    """The one translation from config to a strategy's settings; ``deployed`` adds the deployment defaults
    (:func:`~fedsynth.strategies.registry.deployment_params`: secure aggregation on unless the config says
    ``secure_aggregation: false``)."""
    from fedsynth.strategies.registry import deployment_params

    s = config.strategy
    params = deployment_params(s.name, config.generator.name, s.params) if deployed else dict(s.params)
    return {
        "generator": config.generator.name,
        "generator_params": dict(config.generator.params),
        "rounds": s.rounds,
        "local_epochs": s.local_epochs,
        "min_sites": s.min_sites,
        "random_state": config.seed,
        "params": params,
    }


def data_fingerprint(config: ExperimentConfig) -> str:
    """The fingerprint of the cohort ``config`` names (what the manifest records), without partitioning it."""
    from fedsynth.cohort.datasets import load
    from fedsynth.cohort.schema import TableSchema

    c = config.cohort
    schema = TableSchema.from_yaml(c.schema_file) if c.schema_file else None
    return str(load(c.source, data_dir_=c.data_dir, schema=schema, overrides=c.schema_overrides or None).fingerprint())
