"""A value planted at one site appears in no message to the server, no log line and no pooled synthetic row."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord

from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.registry import make_strategy
from fedsynth.strategies.site import SiteRuntime

PLANTED_HB = 987.654321
PLANTED_LABEL = "ZZ_PLANTED_LABEL"
COLUMNS = ["AGE", "SEX", "WHO_2016", "HB", "PLT", "BM_BLAST", "TP53", "SF3B1", "OS_YEARS", "OS_STATUS"]


def planted_sites(partition, columns=COLUMNS) -> tuple[Any, list[SiteRuntime]]:  # type: ignore[no-untyped-def]
    """Sites of ``partition`` with the marker planted in one row of the smallest site."""
    schema = partition.schema.select(columns)
    sites = []
    for i, s in enumerate(partition.sites):
        data = s.data.copy()
        if s.name == "site-3":
            data.loc[data.index[5], "HB"] = PLANTED_HB
            data.loc[data.index[7], "WHO_2016"] = PLANTED_LABEL
        sites.append(SiteRuntime(s.name, data, schema, seed=i))
    return schema, sites


def leaks_in_text(text: str) -> list[str]:
    return [m for m in (PLANTED_LABEL, "987.654321", "987.65432", "987.6543") if m in text]


def leaks_in_message(msg: Message) -> list[str]:
    """Every place the marker could hide in a Flower message: error text, configs, metrics, arrays."""
    found: list[str] = []
    if msg.has_error():
        return leaks_in_text(str(msg.error.reason))
    for key, rec in msg.content.items():
        if isinstance(rec, (ConfigRecord, MetricRecord)):
            found += leaks_in_text(repr(dict(rec)))
        elif isinstance(rec, ArrayRecord):
            for name, arr in rec.items():
                found += leaks_in_text(name)
                values = arr.numpy()
                if values.dtype.kind in "fiu" and np.isclose(values.astype(float), PLANTED_HB, rtol=0, atol=1e-6).any():
                    found.append(f"{key}.{name} holds the planted number")
                if values.dtype.kind in "US" and (values.astype(str) == PLANTED_LABEL).any():
                    found.append(f"{key}.{name} holds the planted label")
    return found


def frame_leaks(frame: pd.DataFrame) -> list[str]:
    found = []
    for c in frame.columns:
        s = frame[c]
        if s.dtype == object and (s == PLANTED_LABEL).any() or s.dtype != object and np.isclose(s.astype(float), PLANTED_HB, rtol=0, atol=1e-6).any():
            found.append(c)
    return found


@pytest.mark.parametrize(
    "strategy_name, generator, params",
    [
        ("two_step_bn", "bayesian_network", {}),
        ("sd_sharing", "bayesian_network", {"refit": True, "gate_mia_auc_above": 1.0, "gate_nndr_p5_margin": 1.0, "gate_exact_copies_margin": 1.0}),
        ("fedavg", "fake_weights", {}),
    ],
)
def test_planted_value_appears_in_no_message_log_or_pooled_row(
    mds_partition, fake_generators, caplog, strategy_name, generator, params
) -> None:
    # Setup
    schema, sites = planted_sites(mds_partition)
    assert (sites[2].data["HB"] == PLANTED_HB).sum() == 1
    grid = InProcessGrid(sites, keep_messages=True)
    gen_params = {"max_indegree": 1} if generator == "bayesian_network" else {}
    strategy = make_strategy(strategy_name, schema, generator=generator, generator_params=gen_params, rounds=2,
                             min_sites=3, params=params)
    caplog.set_level(logging.DEBUG)

    # Run
    result = strategy.start(grid)

    # Assert
    replies = [m for m in grid.received]
    assert replies and not any(m.has_error() for m in replies)
    leaks = {f"{m.metadata.message_type}": leaks_in_message(m) for m in grid.sent + replies}
    assert {k: v for k, v in leaks.items() if v} == {}
    assert leaks_in_text("\n".join(r.getMessage() for r in caplog.records)) == []
    assert frame_leaks(result.sample(2000, random_state=0)) == []
    if result.synthetic is not None:
        assert frame_leaks(result.synthetic) == []
    assert PLANTED_LABEL not in result.domain["WHO_2016"].categories
