"""Baseline ``local``: each site trains alone (on the shared domain); every model is scored on the whole pool.

Server flow: the shared domain from all sites' summaries (so a site lacking columns still outputs every
column), then, for each site in turn, the generator's own flow restricted to that one site — the two-step
network from that site's counts, FedAvg with one participant (plain local training, same rounds and epochs),
or a local fit whose synthetic rows are returned (generators with neither capability). Rounds are reported
with the site's name as label. This is an evaluation device: in a real network a site would score its own model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fedsynth.encoding.domain import Domain
from fedsynth.strategies.base import Strategy
from fedsynth.strategies.exchange import GridLike, OnRound, SiteInfo, StrategyResult
from fedsynth.strategies.registry import BASELINE_FIXED, effective_flow, flow_for, strategy_class
from fedsynth.strategies.site import SiteHandler


def delegate(strategy: Strategy) -> Strategy:
    """The flow a baseline runs for its generator (:func:`~fedsynth.strategies.registry.effective_flow`), with
    the same settings (and, for the fit-once flow, :data:`~fedsynth.strategies.registry.BASELINE_FIXED`)."""
    flow = effective_flow(strategy.name, strategy.generator)
    params = dict(strategy.params)
    if params.get("secure_aggregation"):
        # One data holder: there is no other party to sum with, and its counts never leave its process.
        params["secure_aggregation"] = False
    if flow_for(strategy.generator) == "fit_once":
        params.update(BASELINE_FIXED)
    return strategy_class(flow)(
        strategy.schema,
        generator=strategy.generator,
        generator_params=strategy.generator_params,
        rounds=strategy.rounds,
        local_epochs=strategy.local_epochs,
        min_sites=1,
        random_state=strategy.random_state,
        params=params,
    )


class LocalStrategy(Strategy):
    """Each site alone, one after another; ``site_models`` holds each site's model."""

    name = "local"

    def run(
        self,
        grid: GridLike,
        sites: Sequence[SiteInfo],
        domain: Domain,
        *,
        on_round: OnRound | None,
        run_token: str,
        label: str = "federated",
    ) -> StrategyResult:
        flow = delegate(self)
        out = StrategyResult(self.name, None, domain, list(sites))
        for s in sites:
            res = flow.run(grid, [s], domain, on_round=on_round, run_token=f"{run_token}-{s.name}", label=s.name)
            out.site_models[s.name] = res.generator if res.generator is not None else res.synthetic
            out.rounds.extend(res.rounds)
            out.left_out.update(res.left_out)
        if sites:
            largest = max(sites, key=lambda s: s.n_rows)
            model = out.site_models.get(largest.name)
            out.generator = model if not hasattr(model, "columns") else None
        return out


SITE_HANDLERS: Mapping[str, SiteHandler] = {}
