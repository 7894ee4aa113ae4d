"""Baseline ``centralized``: the generator trained on the pooled training rows (the upper bound).

Same code path as the federation, without it: the pooled rows are one site of an in-process grid
(:func:`run_centralized`), the domain comes from that site's summary, and the generator's own flow runs over it
(two-step counts, FedAvg with one participant = plain training for ``rounds`` x ``local_epochs`` epochs, or a
fit whose rows are returned). Per-round snapshots therefore line up with the federated rounds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from fedsynth.cohort.schema import TableSchema
from fedsynth.encoding.domain import Domain
from fedsynth.errors import FedsynthError
from fedsynth.strategies.base import Strategy
from fedsynth.strategies.exchange import GridLike, OnRound, SiteInfo, StrategyResult
from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.local import delegate
from fedsynth.strategies.policy import BASELINE_POLICY
from fedsynth.strategies.site import SiteHandler, SiteRuntime


class CentralizedStrategy(Strategy):
    """The generator's flow over one pooled site (see :func:`run_centralized`)."""

    name = "centralized"

    def run(
        self,
        grid: GridLike,
        sites: Sequence[SiteInfo],
        domain: Domain,
        *,
        on_round: OnRound | None,
        run_token: str,
        label: str = "centralized",
    ) -> StrategyResult:
        if len(sites) != 1:
            raise FedsynthError(
                f"centralized trains on pooled rows: it runs over one pooled site, got {len(sites)}; "
                "use fedsynth.strategies.centralized.run_centralized(train, schema, ...)"
            )
        res = delegate(self).run(grid, sites, domain, on_round=on_round, run_token=run_token, label="centralized")
        res.strategy = self.name
        return res


def run_centralized(
    train: pd.DataFrame,
    schema: TableSchema,
    *,
    on_round: OnRound | None = None,
    seed: int = 0,
    **settings: Any,
) -> StrategyResult:
    """Train on the pooled ``train`` rows in this process (no Flower); ``settings`` as for any strategy."""
    # The pooled rows' holder discloses to no one (the reference runs in this process): clear counts.
    grid = InProcessGrid([SiteRuntime("pooled", train, schema, seed, policy=BASELINE_POLICY)])
    return CentralizedStrategy(schema, **settings).start(grid, on_round=on_round)


SITE_HANDLERS: Mapping[str, SiteHandler] = {}
