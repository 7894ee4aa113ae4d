"""The server side every strategy shares: the :class:`Strategy` ABC (the values it exchanges with its grid, sites,
requests, replies and results, are in :mod:`fedsynth.strategies.exchange`).

A strategy is a whole federated job over a Flower *grid* (anything with ``get_node_ids()`` and
``send_and_receive(messages)``): :meth:`Strategy.start` owns the server flow and returns a
:class:`StrategyResult`; each strategy module also holds the site handlers that answer its messages
(``SITE_HANDLERS``, see :mod:`fedsynth.strategies.site`). The same flow runs over Flower's simulation engine, a
deployment, or :class:`~fedsynth.strategies.in_process.InProcessGrid` (the baselines and the unit tests), so
"without federation" is the same code path. Which strategies exist, what each needs and accepts, lives in
:mod:`fedsynth.strategies.registry`.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from flwr.app import Message, RecordDict

from fedsynth.cohort.constraints import EndpointRule
from fedsynth.cohort.schema import TableSchema
from fedsynth.encoding.domain import Domain, merge_summaries
from fedsynth.errors import FedsynthError, Problem, ValidationError
from fedsynth.privacy.accounting import PrivacyBudget, Release
from fedsynth.strategies import records
from fedsynth.strategies.exchange import (
    Checkpoint,
    GridLike,
    OnRound,
    Replies,
    Request,
    SiteInfo,
    StrategyResult,
)
from fedsynth.strategies.registry import (
    DEFAULT_LOCAL_EPOCHS,
    DEFAULT_MIN_SITES,
    DEFAULT_ROUNDS,
    STRATEGIES,
    build_generator,
    check_capability,
    default_params,
    settings_problems,
)
from fedsynth.strategies.secure_domain import hello_settings, plan_private_run, private_summary

log = logging.getLogger(__name__)


class Strategy(ABC):
    """A federated job: the server flow in :meth:`start`, the site handlers in the module's ``SITE_HANDLERS``.

    Parameters
    ----------
    schema : TableSchema
        The table's schema (every site encodes with the domain merged from its summaries).
    generator : str
        Registry name of the generator (``bayesian_network``, ``ctgan``, ``vae_bgm``).
    generator_params : dict, optional
        Hyperparameters of the generator, identical on every site and on the server.
    rounds : int
        Federated rounds of weight averaging (strategies with a fixed sequence of phases run one round).
    local_epochs : int
        Epochs each site trains per round (weight-based generators).
    min_sites : int
        A request fails when fewer sites answer.
    random_state : int
        Seed of server-side randomness (initial weights, mixture initialisation, pooled refits).
    params : dict, optional
        Strategy-specific settings (:data:`~fedsynth.strategies.registry.STRATEGIES`), plus ``min_category_count``
        and ``significant_digits`` of the sites' disclosure control and ``node_timeout`` (seconds the server waits
        for the sites' nodes to register). A key the strategy does not accept with this generator, or that would
        not act, is an error.

    Raises
    ------
    ValidationError
        Every problem of the settings at once (see :func:`~fedsynth.strategies.registry.settings_problems`).
    CapabilityError
        The generator lacks the capability the strategy needs; the message names the compatible strategies.
    """

    #: Registry key (:data:`fedsynth.strategies.registry.STRATEGIES` holds what the strategy needs and accepts).
    name: ClassVar[str] = ""
    #: Where the server checkpoints its state after every finished step (a round; for the two-step BN an
    #: answered count request); a strategy that finds a checkpoint there at :meth:`start` resumes from it.
    checkpoint: Checkpoint | None = None
    #: The token of the run in progress (set by :meth:`start`; kept in the checkpoint, reused on resume).
    run_token_: str = ""
    #: The run's DP budget (``None``: none); after the hello and domain, with their releases (:mod:`.secure_domain`).
    privacy: PrivacyBudget | None = None
    _pre_run_releases: tuple[Release, ...] | None = None
    #: What the private domain states for the manifest's ``privacy`` (its distributed noise, label selection).
    domain_privacy_: dict[str, Any] | None = None

    def __init__(
        self,
        schema: TableSchema,
        *,
        generator: str = "bayesian_network",
        generator_params: Mapping[str, Any] | None = None,
        rounds: int = DEFAULT_ROUNDS,
        local_epochs: int = DEFAULT_LOCAL_EPOCHS,
        min_sites: int = DEFAULT_MIN_SITES,
        random_state: int = 0,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.schema = schema
        self.generator = generator
        self.generator_params = dict(generator_params or {})
        self.rounds = rounds
        self.local_epochs = local_epochs
        self.min_sites = min_sites
        self.random_state = random_state
        #: Endpoint rules learnt from the sites' answers in the domain phase (also added to ``schema``).
        self.learnt_rules: list[EndpointRule] = []
        self._check(dict(params or {}))
        #: The given params over the registry's defaults (every key the strategy accepts with this generator).
        self.params = {**default_params(self.name, generator, params), **dict(params or {})}
        #: Under a finite budget: site name -> the ε its ledger had left before the run (manifest; set by
        #: :func:`~fedsynth.strategies.secure_domain.plan_private_run`).
        self.epsilon_left_: dict[str, float] = {}
        #: Sites left out of a request during :meth:`start` (copied into the result's ``dropped``).
        self.dropped: list[dict[str, str]] = []
        #: Per message type, requests sent (``requests:<type>``) and seconds waited for their replies
        #: (``wait_s:<type>``) during :meth:`start` (copied into the result's ``timings``).
        self.request_timings: dict[str, float] = {}

    @property
    def requires(self) -> str | None:
        """Capability the generator must have (a key of :data:`~fedsynth.strategies.registry.CAPABILITIES`)."""
        return STRATEGIES[self.name].requires

    # -- validation ------------------------------------------------------------------------------------
    def _check(self, params: Mapping[str, Any]) -> None:
        """Every problem of the settings at once: counts, the generator's capability, then the registry's rules."""
        problems = []
        for key in ("rounds", "local_epochs", "min_sites"):
            v = getattr(self, key)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                problems.append(Problem(key, f"got {v!r}", "an int in the range [1, inf)"))
        if problems:
            raise ValidationError(f"Settings of {type(self).__name__}", problems)
        check_capability(self.name, self.generator)
        problems = settings_problems(self.name, self.generator, params=params, generator_params=self.generator_params)
        if problems:
            raise ValidationError(f"Settings of {type(self).__name__}", problems)

    def check_private_run(self) -> None:
        """Raise :class:`~fedsynth.errors.ValidationError` when this strategy cannot run under :attr:`privacy`
        (e.g. a generator without a private mechanism); called before anything is released. Default: it can."""

    # -- helpers every flow uses ---------------------------------------------------------------------
    def new_generator(self, domain: Domain, *, random_state: int | None = None) -> Any:
        """A generator of the configured kind on ``domain`` (server side)."""
        return build_generator(self.generator, self.schema, domain, self.generator_params, random_state)

    def domain_options(self) -> dict[str, Any]:
        """``n_bins``/``n_modes`` the generator wants its domain built with."""
        probe = build_generator(self.generator, self.schema, None, self.generator_params)
        opts = dict(probe._domain_options())
        return {"n_bins": int(opts.get("n_bins", 10)), "n_modes": int(opts.get("n_modes", 0))}

    def base_config(self, run_token: str, domain: Domain | None = None) -> dict[str, Any]:
        """Settings every instruction of this run carries."""
        cfg: dict[str, Any] = {
            "run_token": run_token,
            "generator": self.generator,
            "generator_params": records.encode_payload(self.generator_params),
            "local_epochs": int(self.local_epochs),
        }
        if domain is not None:
            cfg["domain"] = records.domain_to_text(domain)
        return cfg

    def ask(
        self,
        grid: GridLike,
        sites: Sequence[SiteInfo],
        message_type: str,
        content: Callable[[SiteInfo], RecordDict],
        *,
        group_id: str,
        min_sites: int | None = None,
    ) -> Replies:
        """Send one instruction per site, collect the replies; failures are logged and left out.

        Waits at most ``params["request_timeout"]`` seconds; a site that has not answered by then is left out of
        this request and recorded in :attr:`dropped`. Raises :class:`FedsynthError` when fewer than
        ``min_sites`` (default: the strategy's) answered.
        """
        return self.ask_together(grid, [Request(sites, message_type, content, group_id, min_sites)])[0]

    def ask_together(self, grid: GridLike, requests: Sequence[Request]) -> list[Replies]:
        """Send several requests that do not depend on one another at once; their replies, in order.

        Each node answers its queued messages one after the other, right away: in a deployment, a request queued
        behind another costs no wait for the node's next look for work (Flower's SuperNode looks every 3 s when
        it found none). Failures, timeouts and ``min_sites`` as in :meth:`ask`, per request. The requests must
        not write the same node state either: the simulation engine may run two messages of one node at once.
        """
        msgs = [
            [Message(r.content(s), dst_node_id=s.node_id, message_type=r.message_type, group_id=r.group_id)
             for s in r.sites]
            for r in requests
        ]
        timeout = float(self.params["request_timeout"])
        t0 = time.perf_counter()
        replies = list(grid.send_and_receive([m for batch in msgs for m in batch], timeout=timeout))
        # Where a run's time goes: requests (sequential round trips) and the seconds waited for them, per type.
        waited = time.perf_counter() - t0
        for r in requests:
            t = self.request_timings
            t[f"requests:{r.message_type}"] = t.get(f"requests:{r.message_type}", 0) + 1
            t[f"wait_s:{r.message_type}"] = t.get(f"wait_s:{r.message_type}", 0.0) + waited / len(requests)
        # A reply is matched to the instruction it answers: Flower's SuperLink answers for an unreachable node
        # itself (an error reply whose source is the SuperLink), so the source id alone can name the wrong node.
        # Without message ids (a grid that does not push through Flower), a reply's type names its request.
        where = {m.metadata.message_id: (i, m.metadata.dst_node_id)
                 for i, batch in enumerate(msgs) for m in batch if m.metadata.message_id}
        by_type = {r.message_type: i for i, r in reversed(list(enumerate(requests)))}
        ok: list[dict[int, RecordDict]] = [{} for _ in requests]
        failed: list[dict[int, str]] = [{} for _ in requests]
        for reply in replies:
            i, node = where.get(reply.metadata.reply_to_message_id,
                                (by_type.get(reply.metadata.message_type, 0), reply.metadata.src_node_id))
            if reply.has_error():
                failed[i][node] = records.scrub_text(reply.error.reason or f"error code {reply.error.code}")
            else:
                ok[i][node] = reply.content
        out = []
        for i, r in enumerate(requests):
            by_node = {s.node_id: s for s in r.sites}
            for node in by_node:
                if node not in ok[i] and node not in failed[i]:
                    failed[i][node] = f"no reply within {timeout:g} s"
            for node, reason in failed[i].items():
                name = by_node[node].name if node in by_node else str(node)
                self.dropped.append({"site": name, "message_type": r.message_type, "round": r.group_id,
                                     "reason": reason})
                log.warning("%s: site %s left out of %s (%s): %s", self.name, name, r.message_type, r.group_id,
                            reason)
            need = min(self.min_sites if r.min_sites is None else r.min_sites, len(r.sites))
            if len(ok[i]) < need:
                raise FedsynthError(
                    f"{self.name}: only {len(ok[i])} of {len(r.sites)} sites answered {r.message_type} "
                    f"({r.group_id}); the strategy needs at least {need} (strategy.min_sites)"
                )
            out.append(Replies(ok[i], failed[i]))
        return out

    def _hello_request(self, grid: GridLike) -> Request:
        nodes = sorted(int(n) for n in grid.get_node_ids())
        probe = [SiteInfo(n, f"node-{n}", 0, ()) for n in nodes]
        cfg = records.to_config_record(hello_settings(self, len(probe)))  # a noisy row count under a budget
        return Request(probe, "query.hello", lambda s: RecordDict({"config": cfg}), "hello")

    @staticmethod
    def _sites_from_hello(request: Request, got: Replies) -> list[SiteInfo]:
        sites = []
        for node in (s.node_id for s in request.sites):
            if node not in got.ok:
                continue
            info = records.from_config_record(got.ok[node]["info"])
            metrics = records.from_metric_record(got.ok[node]["metrics"])
            sites.append(SiteInfo(node, str(info["site_name"]), int(metrics["num_examples"]), tuple(info["columns"])))
        return sorted(sites, key=lambda s: s.name)

    def hello(self, grid: GridLike) -> list[SiteInfo]:
        """Phase 0: learn each node's site name, row count and columns."""
        request = self._hello_request(grid)
        return self._sites_from_hello(request, self.ask_together(grid, [request])[0])

    def _summary_request(self, sites: Sequence[SiteInfo]) -> Request:
        from fedsynth.cohort.constraints import candidate_rules

        opts = self.domain_options()
        cfg = records.to_config_record(
            {
                "n_modes": opts["n_modes"],
                "min_category_count": int(self.params["min_category_count"]),
                "significant_digits": int(self.params["significant_digits"]),
                "candidate_rules": records.encode_payload([r.to_dict() for r in candidate_rules(self.schema)]),
            }
        )
        return Request(sites, "query.summary", lambda s: RecordDict({"config": cfg}), "summary")

    def _secure_domain_wanted(self, sites: Sequence[SiteInfo]) -> bool:
        return bool(self.params.get("secure_aggregation")) and len(sites) >= 2

    def _secure_domain(self, grid: GridLike, sites: Sequence[SiteInfo]) -> Domain:
        """The shared domain from sums over the sites (:mod:`fedsynth.strategies.secure_domain`): the server
        learns no site's summary."""
        from fedsynth.cohort.constraints import candidate_rules
        from fedsynth.strategies.secure_domain import secure_summary

        opts = self.domain_options()
        summary, answers = secure_summary(self, grid, sites, candidate_rules(self.schema), n_modes=opts["n_modes"])
        return self._merge_domain([summary], answers)

    def _domain_from_summaries(self, sites: Sequence[SiteInfo], got: Replies) -> Domain:
        summaries = [records.from_payload_record(got.ok[s.node_id]["summary"]) for s in sites if s.node_id in got.ok]
        answers = [list(records.from_payload_record(got.ok[s.node_id]["rules"])) for s in sites
                   if s.node_id in got.ok and "rules" in got.ok[s.node_id]]
        return self._merge_domain(summaries, answers)

    def _merge_domain(self, summaries: Sequence[Mapping[str, Any]], answers: Sequence[Sequence[Any]]) -> Domain:
        from fedsynth.cohort.constraints import candidate_rules, learn_rules

        opts = self.domain_options()
        candidates = candidate_rules(self.schema)
        if candidates and answers:
            self.learnt_rules = learn_rules(candidates, answers)
            self.schema = self.schema.with_rules(self.learnt_rules)
        return merge_summaries(
            summaries, self.schema, n_bins=opts["n_bins"], n_modes=opts["n_modes"], random_state=self.random_state
        )

    def build_domain(self, grid: GridLike, sites: Sequence[SiteInfo]) -> Domain:
        """Phase 1: sites send released summaries; the server merges them into the shared domain.

        In the same message each site answers, per candidate endpoint rule of the schema (``LFS <= OS``, an OS
        death is an LFS event, ...), only whether it holds on every one of its rows; the rules that hold at
        every answering site are added to ``self.schema`` (``with_rules``), so every generator the strategy
        builds enforces them in the rows it samples, and ``learnt_rules`` keeps them.
        """
        if self._pre_run_releases is not None:  # a finite privacy budget: noisy sums, declared rules only
            return self._merge_domain([private_summary(self, grid, sites)], [])
        if self._secure_domain_wanted(sites):  # the server learns sums over sites only
            return self._secure_domain(grid, sites)
        return self._domain_from_summaries(sites, self.ask_together(grid, [self._summary_request(sites)])[0])

    def hello_and_domain(self, grid: GridLike) -> tuple[list[SiteInfo], Domain]:
        """Phases 0 and 1 in one exchange (:meth:`ask_together`): the summary request does not depend on the
        hello replies, so both go to every node at once; only the summaries of sites that said hello are merged.
        The same sites and domain as :meth:`hello` then :meth:`build_domain`, one round trip fewer."""
        hello = self._hello_request(grid)
        if self._pre_run_releases is not None or self._secure_domain_wanted(hello.sites):  # exchanges after hello
            sites = self._sites_from_hello(hello, self.ask_together(grid, [hello])[0])
            return sites, self.build_domain(grid, sites)
        got_hello, got_summary = self.ask_together(grid, [hello, self._summary_request(hello.sites)])
        sites = self._sites_from_hello(hello, got_hello)
        return sites, self._domain_from_summaries(sites, got_summary)

    def load_checkpoint(self, domain: Domain) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """This strategy's checkpoint (``None`` when there is none); global RNG states are restored from it.

        Raises :class:`FedsynthError` when the checkpoint belongs to another strategy or another shared
        domain (the sites' data changed since it was written).
        """
        found = self.checkpoint.load() if self.checkpoint is not None else None
        if found is None:
            return None
        meta, arrays = found
        if meta.get("strategy") != self.name or meta.get("domain") != _domain_hash(domain):
            raise FedsynthError(
                f"{self.name}: the checkpoint was written by {meta.get('strategy')!r} on another shared domain; "
                "it cannot be resumed (start the run afresh)"
            )
        _set_rng_states(meta.get("rng", {}), arrays)
        log.info("%s: resuming from the checkpoint of step %s", self.name, meta.get("step"))
        return meta, {k: v for k, v in arrays.items() if not k.startswith("rng.")}

    def save_checkpoint(self, domain: Domain, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        """Checkpoint ``meta`` (JSON-able, with its ``step``) and ``arrays``, with the global RNG states."""
        if self.checkpoint is None:
            return
        rng_meta, rng_arrays = _rng_states()
        self.checkpoint.save(
            {**meta, "strategy": self.name, "domain": _domain_hash(domain), "rng": rng_meta,
             "run_token": self.run_token_},
            {**arrays, **rng_arrays},
        )

    def start(self, grid: GridLike, *, on_round: OnRound | None = None) -> StrategyResult:
        """Run the whole job over ``grid``; ``on_round`` is called after every finished round.

        First every site says what its ε ledger allows (:func:`~fedsynth.strategies.site_budget.check_site_budgets`):
        a run under a finite budget asks for no more than that, and a run without one (ε = ∞) stops with
        :class:`~fedsynth.privacy.accounting.BudgetExceededError` when a site's own policy sets a finite ε — in
        both cases before anything is released.
        """
        t0 = time.perf_counter()
        self.dropped = []
        self.request_timings = {}
        run_token = self._new_run_token()  # before the hello: the sites keep what they release under it
        plan_private_run(self, grid)  # under a finite budget: the hello's and the domain's releases
        if self._pre_run_releases is None:  # exact releases: refused up front by a site whose policy sets an ε
            from fedsynth.strategies.site_budget import check_site_budgets

            check_site_budgets(self, grid, self._hello_request(grid).sites, PrivacyBudget(math.inf))
        sites, domain = self.hello_and_domain(grid)
        t1 = t2 = time.perf_counter()
        result = self.run(grid, sites, domain, on_round=on_round, run_token=run_token)
        result.dropped = list(self.dropped)
        result.timings.update(hello=t1 - t0, domain=t2 - t1, training=time.perf_counter() - t2)
        result.timings.update(self.request_timings)
        return result

    def _new_run_token(self) -> str:
        """The token every instruction of this run carries: the interrupted run's (read from its checkpoint) when
        resuming, so that each site finds its own state of that run (:func:`~fedsynth.strategies.site.
        load_site_state`); a fresh one otherwise."""
        found = self.checkpoint.load() if self.checkpoint is not None else None
        token = found[0].get("run_token") if found is not None else None
        self.run_token_ = str(token) if token else uuid.uuid4().hex
        return self.run_token_

    @abstractmethod
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
        """The strategy's own phases, after the shared domain is known."""


def _domain_hash(domain: Domain) -> str:
    import hashlib

    return hashlib.sha256(records.domain_to_text(domain).encode()).hexdigest()


def _rng_states() -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """numpy's and (when loaded) torch's global random states, as JSON-able settings and arrays."""
    import sys

    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    meta: dict[str, Any] = {"numpy": [kind, int(pos), int(has_gauss), float(cached)]}
    arrays = {"rng.numpy": np.asarray(keys)}
    if "torch" in sys.modules:
        arrays["rng.torch"] = sys.modules["torch"].get_rng_state().numpy().copy()
    return meta, arrays


def _set_rng_states(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
    if "numpy" in meta and "rng.numpy" in arrays:
        kind, pos, has_gauss, cached = meta["numpy"]
        np.random.set_state((str(kind), np.asarray(arrays["rng.numpy"], dtype=np.uint32), int(pos), int(has_gauss),
                             float(cached)))
    if "rng.torch" in arrays:
        import torch

        torch.set_rng_state(torch.from_numpy(np.ascontiguousarray(arrays["rng.torch"], dtype=np.uint8)))
