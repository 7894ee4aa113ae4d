"""Two-step Bayesian network: structure from count tables summed over sites, then CPDs from summed counts.

Server flow (after the shared domain, see :mod:`fedsynth.strategies.base`):

1. *structure* — :meth:`BayesianNetworkGenerator.learn_structure` runs pgmpy's hill climbing on a
   :class:`SummedCountOracle`; every batch of families it needs becomes one ``query.counts`` message per site,
   and the replies (one count table per family) are summed. Integer tables in the domain's fixed state orders
   sum to exactly the pooled tables, so the structure equals the centralised one on the same rows and domain.
2. *parameters* — :meth:`learn_parameters` takes the network's families from the same oracle (already
   cached: every family of the final graph was scored, and the within-bin histograms came with the first
   request) and builds the CPDs (BDeu prior).

Strategy param ``count_look_ahead`` (default 1): a count request that goes out anyway also asks for the
families hill climbing will most likely need next (each variable's best next parents among those it may still
take, see :func:`~fedsynth.generators.bayesian_network.search.oracle_score`). The oracle caches tables by variable
set, so one joint table serves every family of its variables, and no family with a forbidden edge is asked for.
Whole fit on the MDS training pool (2,661 rows, 58 network variables, the pool's own domain), count requests
and cells counted: max_indegree 2: 58 requests / 143k cells with 0, 5 / 149k with 1, 4 / 234k with 2;
max_indegree 3: 94 / 189k, 8 / 214k, 8 / 338k. The federated run over 3 sites (60/30/10, merged domain) made
6 requests at max_indegree 2. The network is the same whatever the setting.

A site that fails a count request is dropped and the search restarts without it (a structure mixing counts
with and without a site would match neither), as long as ``min_sites`` remain. A site that *refuses* tables under
its policy (:class:`~fedsynth.strategies.policy.SitePolicy`: a table whose clear reply would isolate patients)
stays in: it answers nothing for those tables, which then come from the other sites (rescaled to the full row
count by the score) or, when no site sends them, fall back to the domain's marginals. One "round".

Site handler: ``query.counts`` -> the count tables of the site's own rows for the families asked for, packed in
one ``ArrayRecord`` (:func:`~fedsynth.strategies.records.pack_tables`; a family over a column the site lacks, or
whose table would isolate patients under the site's policy, is marked absent; a request whose every table would
isolate patients is refused with a scrubbed :class:`~fedsynth.strategies.policy.DisclosureRefused` reply).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import Message, RecordDict

from fedsynth.encoding.domain import Domain
from fedsynth.errors import FedsynthError
from fedsynth.strategies import records
from fedsynth.strategies.base import (
    GridLike,
    OnRound,
    RoundResult,
    SiteInfo,
    Strategy,
    StrategyResult,
    same_for_all,
    site_name,
)
from fedsynth.strategies.policy import DisclosureRefused, isolates_patients
from fedsynth.strategies.site import (
    SiteRuntime,
    conform_to_domain,
    message_config,
    site_generator,
    site_model,
    site_policy,
)

log = logging.getLogger(__name__)


def is_refusal(reason: str) -> bool:
    """Whether a site's (scrubbed) error reply is a refusal under its disclosure policy."""
    return reason.startswith(DisclosureRefused.__name__)


class _SitesDropped(Exception):
    def __init__(self, nodes: set[int]) -> None:
        super().__init__(f"{len(nodes)} sites dropped")
        self.nodes = nodes


class TwoStepBNStrategy(Strategy):
    """Federated two-step Bayesian network (structure and parameters from summed site counts)."""

    name = "two_step_bn"

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
        from fedsynth.generators.bayesian_network import SummedCountOracle, family_from_key, family_key

        t0 = time.perf_counter()
        active = list(sites)
        left_out: dict[str, str] = {}
        cfg = self.base_config(run_token, domain)
        while True:
            generator = self.new_generator(domain)
            n_requests = 0
            n_refusals = [0]

            def fetch(
                families: list[tuple[str, tuple[str, ...]]],
                active: list[SiteInfo] = active,
                n_refusals: list[int] = n_refusals,
            ) -> list[dict[Any, np.ndarray]]:
                nonlocal n_requests
                n_requests += 1
                keys = [family_key(f) for f in families]
                if self.params.get("secure_aggregation", False):
                    return [self._secure_counts(grid, active, {**cfg, "families": keys}, left_out)]
                content = RecordDict({"config": records.to_config_record({**cfg, "families": keys})})
                got = self.ask(grid, active, "query.counts", same_for_all(content), group_id=f"counts-{n_requests}",
                               min_sites=0)
                # A site that refuses a query under its policy answers nothing for it (like a site lacking the
                # columns); any other failure drops the site.
                failed = {n: r for n, r in got.failed.items() if not is_refusal(r)}
                n_refusals[0] += len(got.failed) - len(failed)
                if failed:
                    for node, reason in failed.items():
                        left_out[site_name(active, node)] = reason
                    raise _SitesDropped(set(failed))
                return [
                    {family_from_key(k): v for k, v in records.unpack_tables(got.ok[s.node_id]["counts"], keys).items()}
                    for s in active
                    if s.node_id in got.ok
                ]

            oracle = SummedCountOracle(fetch, look_ahead=int(self.params.get("count_look_ahead", 1)))
            try:
                edges = generator.learn_structure(oracle)
                generator.learn_parameters(oracle, edges)
                break
            except _SitesDropped as exc:
                active = [s for s in active if s.node_id not in exc.nodes]
                if len(active) < min(self.min_sites, len(sites)):
                    raise FedsynthError(
                        f"two_step_bn: only {len(active)} sites left; strategy.min_sites is {self.min_sites}"
                    ) from None
                log.warning("two_step_bn: restarting the structure search with %d sites", len(active))
        seconds = time.perf_counter() - t0
        log.info("two_step_bn (%s): %d edges from %d count requests in %.2fs", label, len(edges), oracle.n_requests, seconds)
        site_metrics = {s.name: {"num_examples": float(s.n_rows)} for s in active}
        result_round = RoundResult(1, label, generator, site_metrics=site_metrics, left_out=dict(left_out), seconds=seconds)
        if on_round is not None:
            on_round(result_round)
        return StrategyResult(
            strategy=self.name,
            generator=generator,
            domain=domain,
            sites=list(sites),
            rounds=[{**result_round.summary(), "n_edges": len(edges), "count_requests": oracle.n_requests,
                     "count_refusals": n_refusals[0]}],
            left_out=left_out,
        )


    def _secure_counts(
        self, grid: GridLike, active: Sequence[SiteInfo], request: dict[str, Any], left_out: dict[str, str]
    ) -> dict[Any, np.ndarray]:
        """The count tables summed over ``active`` by secure aggregation: the server never sees one site's table.

        A family no site could count (its ``present`` sum is 0) is left out, as in the clear path; a site that
        drops is recorded and the search restarts without it.
        """
        from fedsynth.generators.bayesian_network import family_from_key
        from fedsynth.strategies.secure_sum import secure_sum

        # Counts are exact modulo 2**32 while every summed cell stays under 2**31 (the rows of all sites).
        bits = 32 if sum(s.n_rows for s in active) < 2**31 else 64
        got = secure_sum(grid, [s.node_id for s in active], request, source="two_step_bn.counts", modulus_bits=bits)
        if got.dropped:
            for node, reason in got.dropped.items():
                left_out[site_name(active, node)] = reason
            raise _SitesDropped(set(got.dropped))
        present = got.arrays["present"]
        keys = [str(k) for k in request["families"]]
        return {family_from_key(k): got.arrays[k] for i, k in enumerate(keys) if present[i] > 0}


# -- site side -------------------------------------------------------------------------------------------


def handle_counts(msg: Message, site: SiteRuntime) -> RecordDict:
    """``query.counts``: family count tables of the site's own rows in the shared domain (counts only)."""
    from fedsynth.generators.bayesian_network import family_from_key, family_key

    cfg = message_config(msg)

    def build() -> Any:
        # One oracle over the site's own rows per run: the rows are coerced and conformed once.
        domain = records.domain_from_text(str(cfg["domain"]))
        return site_generator(cfg, site, domain).make_oracle(conform_to_domain(site.data, domain))

    oracle = site_model((str(cfg["run_token"]) + ":bn", site.name), build)
    keys = [str(k) for k in cfg.get("families", [])]
    counts = oracle.family_counts([family_from_key(k) for k in keys])
    # The site's policy: a table whose clear reply would isolate patients is withheld (marked absent, like a
    # column the site lacks); a request whose every table would is refused outright.
    policy = site_policy(msg, site)
    safe = {family_key(f): a for f, a in counts.items() if not isolates_patients(a, len(site.data), policy)}
    if counts and not safe:
        raise DisclosureRefused(
            f"refused: every one of the {len(counts)} count tables asked for would isolate patients "
            "(a cell under the site's minimum count, or more cells than rows / minimum count)"
        )
    if len(safe) < len(counts):
        log.info("site %s: withheld %d of %d count tables (site policy)", site.name, len(counts) - len(safe), len(counts))
    return RecordDict({"counts": records.pack_tables(keys, safe)})


def count_vectors(request: Mapping[str, Any], site: SiteRuntime) -> dict[str, np.ndarray]:
    """Vector source ``two_step_bn.counts`` of secure aggregation: every family asked for, by key, as a table.

    A family over a column the site lacks is a table of zeros of the shape the shared domain gives it (every site
    must send the same shapes), and ``present`` (one 0/1 per family, in request order) is summed with the tables,
    so the server learns how many sites counted each family, never which.
    """
    from fedsynth.generators.bayesian_network import base_column, family_from_key, family_key, n_states

    cfg = dict(request)
    domain = records.domain_from_text(str(cfg["domain"]))
    oracle = site_model(
        (str(cfg["run_token"]) + ":bn", site.name),
        lambda: site_generator(cfg, site, domain).make_oracle(conform_to_domain(site.data, domain)),
    )
    keys = [str(k) for k in cfg.get("families", [])]
    families = [family_from_key(k) for k in keys]
    counts = {family_key(f): a for f, a in oracle.family_counts(families).items()}
    out: dict[str, np.ndarray] = {"present": np.array([k in counts for k in keys], dtype=np.int64)}
    for key, (child, parents) in zip(keys, families, strict=True):
        if key in counts:
            out[key] = np.asarray(counts[key], dtype=np.int64)
        elif all(base_column(n) in oracle.domain.columns for n in (child, *parents)):
            shape = tuple(n_states(oracle.domain, n, n_sub_bins=oracle.n_sub_bins) for n in (child, *parents))
            out[key] = np.zeros(shape, dtype=np.int64)
        else:
            out[key] = np.zeros(0, dtype=np.int64)
    return out


SITE_HANDLERS: Mapping[str, Any] = {"query.counts": handle_counts}
