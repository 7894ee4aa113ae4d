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
one ``ArrayRecord`` (:func:`~fedsynth.strategies.records.pack_tables`; a family over a column the site lacks is
marked absent). In clear, a table that would isolate patients under the site's policy
(:func:`~fedsynth.strategies.policy.isolates_patients`, read on the exact counts) is marked absent too, and a
request whose every table would is refused with a scrubbed :class:`~fedsynth.strategies.policy.DisclosureRefused`
reply. Under a privacy budget nothing is withheld on the counts (that choice would read the rows outside the
noise: one patient could decide whether a table leaves): the site answers every table it can count, noisy, except
tables over its ``max_cells`` (a shape, not a count); a request whose noise multiplier is under the site's
``min_noise_multiplier`` is refused as a whole before anything is counted
(:class:`~fedsynth.strategies.policy.NoiseFloorRefused`; the coordinator drops the site with that reason).

Differential privacy (``privacy: {epsilon, delta}`` in the run config, :attr:`TwoStepBNStrategy.privacy`): every
count table is a Gaussian mechanism of L2 sensitivity 1 (adding or removing one patient changes one cell by
one). What the hello's row counts and the shared domain leave of the budget (:mod:`fedsynth.strategies.
secure_domain`) is split :data:`DP_SPLIT` between the two phases (zCDP/RDP, :mod:`fedsynth.privacy.accounting`):
the structure phase calibrates one noise level for at most :data:`DP_STRUCTURE_TABLES` tables, charged per
request before it goes out; once they are spent, families not yet counted stay unknown (a family without counts
is never chosen), so hill climbing ends on the tables it has rather than exceed the budget; the parameter phase re-measures the final network's families in one request with the rest of the budget (PrivBayes
and AIM likewise measure the chosen marginals afresh). The server sums the noisy tables and clips the sum at 0
(post-processing). The spent budget goes into the run manifest (``privacy``).

Trust model. Each site draws its noise from its own OS entropy, never from a seed the coordinator knows (it
could subtract it). With ``secure_aggregation`` on (the coordinator learns only the sum over sites, see
:mod:`fedsynth.strategies.secure_sum`) each site adds variance σ²/min_sites and the secure sum fails with fewer
than ``min_sites`` sites, so that the released sum carries at least σ² whichever party is curious, also when a
site drops after sharing and the sum is recovered without it (:mod:`fedsynth.privacy.noise`; the manifest's
``privacy.distributed_noise`` states it). With it off each site adds the full σ²: every table a site sends in
clear then carries the guarantee on its own, and the sum carries n_sites·σ² (accounted as σ², a conservative
bound). The site chooses its share from the path it answers on, and on the masked path takes the message's
``dp_min_sites`` only once it is at most its secure-sum session's threshold (checked at the collect stage,
:func:`~fedsynth.strategies.secagg_protocol.verified_noise_request`). With
ε = ∞ (no privacy block) no noise is added and the federated network equals the
centralized one. Every site refuses a noise multiplier under its policy's ``min_noise_multiplier`` (default 1), whatever its
budget. A site with a ledger (:attr:`SiteRuntime.privacy_ledger
<fedsynth.strategies.site.SiteRuntime.privacy_ledger>`) also charges its own budget at the noise level the message
asks for, before answering, so a coordinator asking for too little noise for what it has left is refused; a table already released
in the run is sent again unchanged, at no new cost. A site with a finite ε always has a ledger (in memory
when it has no folder for the file); a site at ε = ∞ keeps none and follows the message's noise level.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import Message, RecordDict

from fedsynth.encoding.domain import Domain
from fedsynth.errors import FedsynthError
from fedsynth.privacy.accounting import PrivacyAccountant, PrivacyBudget, Release
from fedsynth.privacy.noise import add_count_noise, noise_calibration, noise_shares, site_noise_std
from fedsynth.strategies import records
from fedsynth.strategies.base import Strategy
from fedsynth.strategies.exchange import (
    GridLike,
    OnRound,
    RoundResult,
    SiteInfo,
    StrategyResult,
    same_for_all,
    site_name,
)
from fedsynth.strategies.policy import DisclosureRefused, check_noise_floor, isolates_patients, over_size_cap
from fedsynth.strategies.secure_domain import dp_run_id, ledger_run_id
from fedsynth.strategies.site import (
    SiteHandler,
    SiteRuntime,
    conform_to_domain,
    load_site_state,
    message_config,
    save_site_state,
    site_generator,
    site_model,
    site_policy,
)

log = logging.getLogger(__name__)

#: Share of the run's zCDP budget per phase (structure search, then the final network's CPDs).
DP_SPLIT: Mapping[str, float] = {"structure": 0.5, "parameters": 0.5}
#: Most count tables the structure phase may release; its noise is calibrated to this many.
DP_STRUCTURE_TABLES = 600
#: Owner of the tables in a checkpoint's request history under secure aggregation (only the sum is known).
_SECURE_SUM = "(secure sum)"


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
    #: The run's differential-privacy budget (``None``: exact counts); set from the config's ``privacy`` block.
    privacy: PrivacyBudget | None = None
    #: After :meth:`run`: the accountant's summary (budget, split, spent per phase, orders) for the manifest.
    privacy_summary_: dict[str, Any] | None = None

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
        accountant = None
        if self.privacy is not None and not self.privacy.is_infinite:
            from fedsynth.strategies.site_budget import check_site_budgets

            # Every site's ledger must still allow the run's budget, before any noisy table is asked for.
            check_site_budgets(self, grid, sites, self.privacy)
            accountant = PrivacyAccountant(self.privacy, DP_SPLIT)
            # The sites' ledgers record the tables under the run's ledger id, as its hello and domain: one entry per
            # run, whatever token a resumed try carries.
            cfg["dp_run"] = dp_run_id(self)
        # Answered count requests since the search (re)started: (keys, tables by site name). Checkpointed after
        # every answer; a resumed search asks the same requests in the same order (hill climbing is
        # deterministic) and gets them from here instead of from the sites.
        history: list[tuple[list[str], dict[str, dict[str, np.ndarray]]]] = []
        resumed = self.load_checkpoint(domain)
        if resumed is not None:
            meta, arrays = resumed
            active = [s for s in sites if s.name in set(meta["active"])]
            left_out = dict(meta["left_out"])
            history = _decode_history(meta, arrays)
        budget_spent_said: list[bool] = []
        floor_said: list[bool] = []
        while True:
            generator = self.new_generator(domain)
            n_requests = 0
            n_refusals = [0]

            def fetch(
                families: list[tuple[str, tuple[str, ...]]],
                active: list[SiteInfo] = active,
                n_refusals: list[int] = n_refusals,
                phase: str = "structure",
            ) -> list[dict[Any, np.ndarray]]:
                nonlocal n_requests
                n_requests += 1
                keys = [family_key(f) for f in families]
                extra: dict[str, Any] = {}
                if accountant is not None:
                    n_tables = DP_STRUCTURE_TABLES if phase == "structure" else len(keys)
                    z = accountant.noise_multiplier(phase, n_tables)
                    floor = float(getattr(self, "noise_floor_", 0.0))
                    if z < floor:
                        # A site's policy accepts no less noise: asking for less would only get the site refused
                        # part-way (after earlier releases were charged). More noise spends less of the budget.
                        log.log(logging.INFO if floor_said else logging.WARNING,
                                "two_step_bn: %s tables at the sites' min_noise_multiplier %.4g instead of %.4g; "
                                "the run spends less than its epsilon", phase, floor, z)
                        floor_said.append(True)
                        z = floor
                    if phase == "structure":
                        # Out of structure budget: the families left out stay unknown (never chosen), so the
                        # search ends on the tables it has.
                        room = accountant.uses_left(phase, z)
                        if room < len(keys):
                            # Once per run as a warning (the search asks again at every step once spent).
                            log.log(logging.INFO if budget_spent_said else logging.WARNING,
                                    "two_step_bn: structure budget spent; %d of %d families not asked for",
                                    len(keys) - room, len(keys))
                            budget_spent_said.append(True)
                            keys = keys[:room]
                            if not keys:
                                return [{} for _ in active]
                    # Charged before the request goes out: a request over budget releases nothing. A replayed
                    # request (resume) is charged again, so the accountant ends where the interrupted run was.
                    accountant.charge(Release(phase, z, len(keys)))
                    extra = {"dp_noise_std": z, "dp_min_sites": noise_shares(len(active), self.min_sites)}
                secure = bool(self.params.get("secure_aggregation", False))
                # Whose tables the history holds: each site's, or under secure aggregation only their sum.
                owners = [_SECURE_SUM] if secure else [s.name for s in active]
                i = n_requests - 1
                if i < len(history) and history[i][0] == keys and set(history[i][1]) <= set(owners):
                    tables = history[i][1]
                else:
                    del history[i:]
                    request = {**cfg, **extra, "families": keys}
                    if secure:
                        tables = {_SECURE_SUM: self._secure_counts(grid, active, request, left_out)}
                    else:
                        content = RecordDict({"config": records.to_config_record(request)})
                        got = self.ask(grid, active, "query.counts", same_for_all(content),
                                       group_id=f"counts-{n_requests}", min_sites=0)
                        # A site that refuses a query under its policy answers nothing for it (like a site lacking
                        # the columns); any other failure drops the site.
                        failed = {n: r for n, r in got.failed.items() if not is_refusal(r)}
                        n_refusals[0] += len(got.failed) - len(failed)
                        if failed:
                            for node, reason in failed.items():
                                left_out[site_name(active, node)] = reason
                            raise _SitesDropped(set(failed))
                        tables = {s.name: records.unpack_tables(got.ok[s.node_id]["counts"], keys)
                                  for s in active if s.node_id in got.ok}
                    history.append((keys, tables))
                    self.save_checkpoint(domain, *_encode_history(history, owners, [s.name for s in active], left_out))
                return [{family_from_key(k): v for k, v in tables[owner].items()} for owner in owners if tables.get(owner)]

            oracle = SummedCountOracle(fetch, look_ahead=int(self.params.get("count_look_ahead", 1)))
            try:
                edges = generator.learn_structure(oracle)
                param_oracle = oracle
                if accountant is not None:
                    # Fresh noisy tables for the final families, with the parameter phase's share.
                    param_oracle = SummedCountOracle(lambda f: fetch(f, phase="parameters"), look_ahead=0)
                generator.learn_parameters(param_oracle, edges)
                break
            except _SitesDropped as exc:
                history.clear()
                active = [s for s in active if s.node_id not in exc.nodes]
                if len(active) < min(self.min_sites, len(sites)):
                    why = "; ".join(f"{n}: {r}" for n, r in sorted(left_out.items()))
                    raise FedsynthError(
                        f"two_step_bn: only {len(active)} sites left; strategy.min_sites is {self.min_sites}"
                        + (f" (left out: {why})" if why else "")
                    ) from None
                log.warning("two_step_bn: restarting the structure search with %d sites", len(active))
        seconds = time.perf_counter() - t0
        if self.privacy is not None:
            self.privacy_summary_ = (accountant.summary() if accountant is not None
                                     else PrivacyAccountant(self.privacy, DP_SPLIT).summary())
            if accountant is not None:
                self.privacy_summary_["distributed_noise"] = noise_calibration(
                    len(sites), self.min_sites, secure_aggregation=bool(self.params.get("secure_aggregation")))
            log.info("two_step_bn: privacy epsilon spent %.4g of %s", self.privacy_summary_["epsilon_spent"],
                     self.privacy.epsilon)
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
    ) -> dict[str, np.ndarray]:
        """The count tables (by family key) summed over ``active`` by secure aggregation.

        The server never sees one site's table.

        A family no site could count (its ``present`` sum is 0) is left out, as in the clear path; a site that
        drops is recorded and the search restarts without it.
        """
        from fedsynth.strategies.secure_sum import secure_sum

        # Counts are exact modulo 2**32 while every summed cell stays under 2**31 (the rows of all sites).
        bits = 32 if sum(s.n_rows for s in active) < 2**31 else 64
        got = secure_sum(grid, [s.node_id for s in active], request, source="two_step_bn.counts", modulus_bits=bits,
                         min_sites=int(request.get("dp_min_sites", 0)))
        if got.dropped:
            for node, reason in got.dropped.items():
                left_out[site_name(active, node)] = reason
            raise _SitesDropped(set(got.dropped))
        present = got.arrays["present"]
        keys = [str(k) for k in request["families"]]
        return {k: got.arrays[k] for i, k in enumerate(keys) if present[i] > 0}


# -- site side -------------------------------------------------------------------------------------------


def handle_counts(msg: Message, site: SiteRuntime) -> RecordDict:
    """``query.counts``: family count tables of the site's own rows in the shared domain (counts only)."""
    from fedsynth.generators.bayesian_network import family_from_key, family_key

    cfg = message_config(msg)
    policy = site_policy(msg, site)
    private = "dp_noise_std" in cfg
    if private:
        # Decided on the request and the policy alone, before anything is counted.
        check_noise_floor(cfg["dp_noise_std"], policy)

    def build() -> Any:
        # One oracle over the site's own rows per run and process: the rows are coerced and conformed once. It is
        # not site state: its tables are a function of the rows and the domain (which every message carries), so
        # a fresh process (a deployment) rebuilds it and counts the same.
        domain = records.domain_from_text(str(cfg["domain"]))
        return site_generator(cfg, site, domain).make_oracle(conform_to_domain(site.data, domain))

    oracle = site_model((str(cfg["run_token"]) + ":bn", site.name), build)
    keys = [str(k) for k in cfg.get("families", [])]
    counts = oracle.family_counts([family_from_key(k) for k in keys])
    if private:
        # Under a budget the noise protects every table, and no choice of what to send may read the exact counts
        # (or the row count): one patient would decide whether a table leaves. Only the size cap stays: it reads
        # a table's shape, which the shared domain fixes.
        tables = {family_key(f): a for f, a in counts.items() if not over_size_cap(a, policy)}
        what = "has more cells than the site answers (its max_cells)"
    else:
        # In clear, a table whose exact counts would isolate patients is withheld (marked absent, like a column
        # the site lacks).
        tables = {family_key(f): a for f, a in counts.items() if not isolates_patients(a, len(site.data), policy)}
        what = "would isolate patients (a cell under the site's minimum count, or more cells than rows / minimum count)"
    if counts and not tables:
        raise DisclosureRefused(f"refused: every one of the {len(counts)} count tables asked for {what}")
    if len(tables) < len(counts):
        log.info("site %s: withheld %d of %d count tables (site policy)", site.name, len(counts) - len(tables),
                 len(counts))
    if private:
        noisy = _noisy_tables(cfg, site, tables, secure_aggregation=False)
        return RecordDict({"counts": records.pack_tables(keys, noisy, signed=True)})
    return RecordDict({"counts": records.pack_tables(keys, tables)})


def _noisy_tables(
    cfg: Mapping[str, Any], site: SiteRuntime, tables: Mapping[str, np.ndarray], *, secure_aggregation: bool
) -> dict[str, np.ndarray]:
    """The site's tables with its share of the Gaussian noise, charged to its ledger first (if it has one).

    The site decides its share from the path it answers on: in clear (its table is seen alone) the full σ², by
    secure aggregation (only the sum is seen) σ²/min_sites (:func:`~fedsynth.privacy.noise.noise_shares`), with
    the split the collect stage checked against its session
    (:func:`~fedsynth.strategies.secagg_protocol.masked_noise_std`), never the message's alone.
    """
    from fedsynth.strategies.secagg_protocol import masked_noise_std

    z = float(cfg["dp_noise_std"])
    std = masked_noise_std(cfg) if secure_aggregation else site_noise_std(z, 1, secure_aggregation=False)
    # Tables already released in this run are sent again as they were (no new noise, no new cost). They are
    # the site's state: kept in the node's context.state (each message may run in a fresh process) and folder.
    token = str(cfg["run_token"])
    sent = _released_tables(site, token)
    new = [k for k in tables if (k, std) not in sent]
    if new and site.privacy_ledger is not None:
        # The site charges its own ledger at the noise the released sum carries, whatever the coordinator
        # says it has spent; a noise level too low for what the site has left is refused here.
        ledger = site.privacy_ledger
        cost = Release("counts", z, len(new)).rdp(ledger.orders)
        ledger.record(site.name, ledger_run_id(cfg), f"counts/{uuid.uuid4().hex}", cost)
    # Noise from the site's own OS entropy: a seed the coordinator knows would let it subtract the noise.
    fresh = add_count_noise({k: tables[k] for k in new}, std, random_state=np.random.default_rng())
    if fresh:
        sent.update({(k, std): a for k, a in fresh.items()})
        order = list(sent)
        save_site_state(site, token, DP_RELEASED, 0, {"tables": [[k, s] for k, s in order]},
                        {f"t{i}": sent[ks] for i, ks in enumerate(order)})
    return {k: sent[(k, std)] for k in tables}


#: The part of a site's state (:func:`~fedsynth.strategies.site.save_site_state`) holding the noisy count tables
#: it has released in a run, by family key and noise level.
DP_RELEASED = "bn-dp-released"


def _released_tables(site: SiteRuntime, run_token: str) -> dict[tuple[str, float], np.ndarray]:
    """The noisy tables the site has released in run ``run_token`` (its node state, else its folder)."""
    found = load_site_state(site, run_token, DP_RELEASED, 0)
    if found is None:
        return {}
    meta, arrays = found
    return {(str(k), float(std)): np.asarray(arrays[f"t{i}"]) for i, (k, std) in enumerate(meta["tables"])}


def count_vectors(request: Mapping[str, Any], site: SiteRuntime) -> dict[str, np.ndarray]:
    """Vector source ``two_step_bn.counts`` of secure aggregation: every family asked for, by key, as a table.

    A family over a column the site lacks is a table of zeros of the shape the shared domain gives it (every site
    must send the same shapes), and ``present`` (one 0/1 per family, in request order) is summed with the tables,
    so the server learns how many sites counted each family, never which.
    """
    from fedsynth.generators.bayesian_network import base_column, family_from_key, family_key, n_states
    from fedsynth.generators.bayesian_network.counts import derived_categories

    cfg = dict(request)
    if "dp_noise_std" in cfg:
        # As on the clear path: a noise multiplier under the site's floor is refused before anything is counted.
        check_noise_floor(cfg["dp_noise_std"], site.policy.effective(cfg))
    domain = records.domain_from_text(str(cfg["domain"]))
    oracle = site_model(
        (str(cfg["run_token"]) + ":bn", site.name),
        lambda: site_generator(cfg, site, domain).make_oracle(conform_to_domain(site.data, domain)),
    )
    keys = [str(k) for k in cfg.get("families", [])]
    families = [family_from_key(k) for k in keys]
    counts = {family_key(f): a for f, a in oracle.family_counts(families).items()}
    out: dict[str, np.ndarray] = {"present": np.array([k in counts for k in keys], dtype=np.int64)}
    if "dp_noise_std" in cfg:
        counts = _noisy_tables(cfg, site, counts, secure_aggregation=True)
    for key, (child, parents) in zip(keys, families, strict=True):
        if key in counts:
            out[key] = np.asarray(counts[key], dtype=np.int64)
        elif all(base_column(n) in oracle.domain.columns or derived_categories(oracle.domain, n) is not None
                 for n in (child, *parents)):
            shape = tuple(n_states(oracle.domain, n, n_sub_bins=oracle.n_sub_bins) for n in (child, *parents))
            out[key] = np.zeros(shape, dtype=np.int64)
        else:
            out[key] = np.zeros(0, dtype=np.int64)
    return out


SITE_HANDLERS: Mapping[str, SiteHandler] = {"query.counts": handle_counts}


def _encode_history(
    history: Sequence[tuple[list[str], Mapping[str, Mapping[str, np.ndarray]]]],
    names: list[str],
    active: list[str],
    left_out: Mapping[str, str],
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The answered requests as checkpoint settings and arrays ``<request>.<owner>.<table>``.

    ``names`` are the tables' owners (the active sites, or ``_SECURE_SUM`` under secure aggregation, where the
    server never held one site's table), ``active`` the sites still in the search.
    """
    arrays: dict[str, np.ndarray] = {}
    for i, (keys, tables) in enumerate(history):
        for j, name in enumerate(names):
            for m, key in enumerate(keys):
                if key in tables.get(name, {}):
                    arrays[f"{i}.{j}.{m}"] = tables[name][key]
    meta = {"step": len(history), "active": active, "owners": names, "left_out": dict(left_out),
            "requests": [k for k, _ in history]}
    return meta, arrays


def _decode_history(
    meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
) -> list[tuple[list[str], dict[str, dict[str, np.ndarray]]]]:
    names = [str(n) for n in meta.get("owners", meta["active"])]
    out: list[tuple[list[str], dict[str, dict[str, np.ndarray]]]] = [
        ([str(k) for k in keys], {n: {} for n in names}) for keys in meta["requests"]
    ]
    for name, table in arrays.items():
        i, j, m = (int(x) for x in name.split("."))
        keys, tables = out[i]
        tables[names[j]][keys[m]] = np.asarray(table, dtype=np.int64)
    return out
