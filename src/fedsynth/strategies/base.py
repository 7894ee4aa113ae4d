"""What every strategy shares: the site runtime, the shared-domain phase, reply handling, results, registry.

A strategy is a whole federated job over a Flower *grid* (anything with ``get_node_ids()`` and
``send_and_receive(messages)``): :meth:`Strategy.start` owns the server flow and returns a
:class:`StrategyResult`; each strategy module also holds the site handlers that answer its messages
(``SITE_HANDLERS``: message type -> handler). The same flow runs over Flower's simulation engine, a deployment,
or :class:`InProcessGrid` (the baselines and the unit tests), so "without federation" is the same code path.

Protocol phases common to all strategies:

1. ``query.hello``   -> each site's name and row count (``num-examples``) and which columns it holds;
2. ``query.summary`` -> each site's domain summary (:func:`fedsynth.encoding.summarize_site`) after the site's
   disclosure control (:func:`release_summary`); the server merges them into the shared :class:`Domain`.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd
from flwr.app import ConfigRecord, Error, Message, RecordDict

from fedsynth.cohort.schema import ColumnKind, TableSchema
from fedsynth.encoding.domain import Domain, merge_summaries, summarize_site
from fedsynth.errors import CapabilityError, FedsynthError, Problem, ValidationError
from fedsynth.strategies import records

log = logging.getLogger(__name__)

#: Error code a site uses for a handler failure (Flower's CLIENT_APP_RAISED_EXCEPTION).
SITE_ERROR_CODE = 2

#: Capabilities a strategy may require of a generator, with the strategies that work without them.
CAPABILITIES = {
    "weights": "get_weights/set_weights/partial_fit (ctgan, vae_bgm)",
    "two_step": "structure and parameters from summed counts (bayesian_network)",
}


# -- the site side ---------------------------------------------------------------------------------------


@dataclass
class SiteRuntime:
    """What a site handler sees: its own rows (never sent), schema, name, seed and persistent node state."""

    name: str
    data: pd.DataFrame
    schema: TableSchema
    seed: int = 0
    state: RecordDict = field(default_factory=RecordDict)
    #: The site's own folder for its state between rounds (resume); ``None``: kept in memory only.
    state_dir: Path | None = None


SiteHandler = Callable[[Message, SiteRuntime], RecordDict]

#: Site-side models kept between rounds of one run, keyed by (run token, site name). Module-level so it lives
#: in each simulation actor process; a miss (another actor served the site) rebuilds from the message.
_SITE_MODELS: dict[tuple[str, str], Any] = {}


def site_model(key: tuple[str, str], build: Callable[[], Any]) -> Any:
    """The site's cached model for this run, built on first use."""
    if key not in _SITE_MODELS:
        if len(_SITE_MODELS) > 64:  # old runs in a long-lived actor
            _SITE_MODELS.clear()
        _SITE_MODELS[key] = build()
    return _SITE_MODELS[key]


def handle(handler: SiteHandler, msg: Message, site: SiteRuntime) -> Message:
    """Run a site handler and wrap its answer; any failure becomes a scrubbed error reply (no data values)."""
    try:
        content = handler(msg, site)
        return Message(content, reply_to=msg)
    except Exception as exc:  # every failure must become a reply, never a traceback leaving the site
        reason = records.scrub_error(exc)
        log.warning("site %s: %s failed: %s", site.name, msg.metadata.message_type, reason)
        return Message(Error(SITE_ERROR_CODE, reason), reply_to=msg)


def message_config(msg: Message) -> dict[str, Any]:
    """The instruction's flat settings (snake_case keys)."""
    return records.from_config_record(msg.content["config"]) if "config" in msg.content else {}


def conform_to_domain(data: pd.DataFrame, domain: Domain) -> pd.DataFrame:
    """A site's rows restricted to the domain: labels the domain does not know (suppressed rare labels) become
    missing, so no generator can learn and later emit them."""
    out = data.copy()
    for name, col in domain.columns.items():
        if name in out.columns and col.kind is ColumnKind.CATEGORICAL:
            s = out[name]
            out[name] = s.where(s.isna() | s.isin(col.categories), np.nan)
    return out


def _round_sig(x: float, digits: int, how: str = "nearest") -> float:
    if x == 0 or not math.isfinite(x):
        return float(x)
    exp = math.floor(math.log10(abs(x))) - digits + 1
    scale = 10.0**exp
    q = x / scale
    n = math.floor(q) if how == "down" else math.ceil(q) if how == "up" else round(q)
    return float(round(n * scale, max(-exp, 0) + 2))


def release_summary(
    summary: Mapping[str, Any], schema: TableSchema, *, min_category_count: int = 5, significant_digits: int = 3
) -> dict[str, Any]:
    """Site-side disclosure control of a domain summary before it leaves the site.

    * bounds are coarsened outward (min down, max up) and quantile sketches and mixture modes rounded to
      ``significant_digits`` significant digits, so no single real value (an extreme or a quantile that
      lands on a row) leaves the site verbatim;
    * labels of a categorical column that the schema does not declare and that fewer than
      ``min_category_count`` rows hold are not disclosed (their rows count as missing in the domain).
    Sums, counts and moments are aggregates and stay exact.
    """
    out: dict[str, Any] = {"n_rows": int(summary["n_rows"]), "columns": {}}
    for name, entry in summary["columns"].items():
        e = dict(entry)
        if "min" in e:
            lo = _round_sig(float(e["min"]), significant_digits, "down")
            hi = _round_sig(float(e["max"]), significant_digits, "up")
            q = [min(max(_round_sig(float(v), significant_digits), lo), hi) for v in e["quantiles"]]
            q[0], q[-1] = lo, hi
            e.update(min=lo, max=hi, quantiles=list(np.maximum.accumulate(q)))
            if "modes" in e:
                m = e["modes"]
                e["modes"] = {
                    "weights": [_round_sig(float(w), significant_digits) for w in m["weights"]],
                    "means": [_round_sig(float(v), significant_digits) for v in m["means"]],
                    "stds": [max(_round_sig(float(v), significant_digits), 1e-3) for v in m["stds"]],
                }
        if "counts" in e:
            spec = schema[name]
            declared = set(spec.categories or ()) if spec.kind is ColumnKind.CATEGORICAL else {"0", "1"}
            kept = {k: int(c) for k, c in e["counts"].items() if k in declared or int(c) >= min_category_count}
            hidden = sum(int(c) for k, c in e["counts"].items() if k not in kept)
            e["counts"] = kept
            e["n_missing"] = int(e["n_missing"]) + hidden
        out["columns"][name] = e
    return out


def handle_hello(msg: Message, site: SiteRuntime) -> RecordDict:
    """``query.hello``: who the site is and how many rows it holds (nothing else)."""
    held = [c for c in site.schema.model_columns if c in site.data.columns]
    return RecordDict(
        {
            "info": records.to_config_record({"site_name": site.name, "columns": held}),
            "metrics": records.to_metric_record({"num_examples": len(site.data)}),
        }
    )


def handle_summary(msg: Message, site: SiteRuntime) -> RecordDict:
    """``query.summary``: the site's domain summary, after disclosure control."""
    cfg = message_config(msg)
    raw = summarize_site(site.data, site.schema, n_modes=int(cfg.get("n_modes", 0)), random_state=site.seed)
    released = release_summary(
        raw,
        site.schema,
        min_category_count=int(cfg.get("min_category_count", 5)),
        significant_digits=int(cfg.get("significant_digits", 3)),
    )
    return RecordDict({"summary": records.to_payload_record(released)})


#: Handlers every strategy relies on.
COMMON_HANDLERS: dict[str, SiteHandler] = {"query.hello": handle_hello, "query.summary": handle_summary}


def all_site_handlers() -> dict[str, SiteHandler]:
    """Every message type a site answers, from every registered strategy module."""
    out = dict(COMMON_HANDLERS)
    for spec in STRATEGIES.values():
        module = importlib.import_module(spec.partition(":")[0])
        out.update(getattr(module, "SITE_HANDLERS", {}))
    return out


# -- the server side -------------------------------------------------------------------------------------


class GridLike(Protocol):
    """The part of ``flwr.serverapp.Grid`` a strategy uses."""

    def get_node_ids(self) -> Iterable[int]: ...

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]: ...


@dataclass(frozen=True)
class SiteInfo:
    """What the server knows about a site: its node, name, row count and the columns it holds."""

    node_id: int
    name: str
    n_rows: int
    columns: tuple[str, ...]


@dataclass
class Replies:
    """Answers of one request: good contents by node and scrubbed failure reasons by node."""

    ok: dict[int, RecordDict]
    failed: dict[int, str]


@dataclass
class RoundResult:
    """One finished round, handed to the caller's ``on_round`` callback.

    ``generator`` is the global model after the round (``None`` when the strategy has none, e.g. SD-sharing
    without refit; then ``synthetic`` holds the pooled synthetic rows). ``label`` is ``"federated"``,
    ``"centralized"`` or a site name (local baseline).
    """

    server_round: int
    label: str
    generator: Any | None
    synthetic: pd.DataFrame | None = None
    site_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def sample(self, n_samples: int, *, random_state: int | None = None) -> pd.DataFrame:
        """A synthetic cohort of ``n_samples`` rows from this round's model (or pooled rows)."""
        if self.generator is not None:
            return self.generator.sample(int(n_samples), random_state=random_state)
        if self.synthetic is None or len(self.synthetic) == 0:
            raise FedsynthError(f"round {self.server_round} ({self.label}) has nothing to sample from")
        rng = np.random.default_rng(random_state)
        idx = rng.choice(len(self.synthetic), size=int(n_samples), replace=len(self.synthetic) < n_samples)
        return self.synthetic.iloc[idx].reset_index(drop=True)

    def summary(self) -> dict[str, Any]:
        return {
            "round": self.server_round,
            "label": self.label,
            "seconds": round(self.seconds, 4),
            "site_metrics": self.site_metrics,
            "left_out": self.left_out,
        }


@dataclass
class StrategyResult:
    """What a strategy's run leaves: the global model, the domain, per-round summaries and site facts."""

    strategy: str
    generator: Any | None
    domain: Domain | None
    sites: list[SiteInfo]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)
    site_models: dict[str, Any] = field(default_factory=dict)
    synthetic: pd.DataFrame | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def sample(self, n_samples: int, *, random_state: int | None = None) -> pd.DataFrame:
        return RoundResult(0, self.strategy, self.generator, self.synthetic).sample(n_samples, random_state=random_state)


OnRound = Callable[[RoundResult], None]


class Checkpoint(Protocol):
    """Where a server keeps a strategy's state between steps (see :class:`fedsynth.strategies.checkpoint.FileCheckpoint`)."""

    def save(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None: ...

    def load(self) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None: ...


def same_for_all(content: RecordDict) -> Callable[[SiteInfo], RecordDict]:
    """The content builder for an instruction that is identical for every site."""

    def build(site: SiteInfo) -> RecordDict:
        return content

    return build


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
        Federated rounds (strategies with a fixed number of phases ignore it).
    local_epochs : int
        Epochs each site trains per round (weight-based generators).
    min_sites : int
        A request fails when fewer sites answer.
    random_state : int
        Seed of server-side randomness (initial weights, mixture initialisation, pooled refits).
    params : dict, optional
        Strategy-specific settings (see each strategy), plus ``min_category_count`` and ``significant_digits``
        of the sites' disclosure control and ``node_timeout`` (seconds to wait for the sites to register).
    """

    #: Registry key.
    name: ClassVar[str] = ""
    #: Capability the generator must have (a key of :data:`CAPABILITIES`), or ``None``.
    requires: ClassVar[str | None] = None
    #: Where the server checkpoints its state after every finished step (a round; for the two-step BN an
    #: answered count request); a strategy that finds a checkpoint there at :meth:`start` resumes from it.
    checkpoint: Checkpoint | None = None

    def __init__(
        self,
        schema: TableSchema,
        *,
        generator: str = "bayesian_network",
        generator_params: Mapping[str, Any] | None = None,
        rounds: int = 1,
        local_epochs: int = 1,
        min_sites: int = 1,
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
        self.params = dict(params or {})
        self._check()

    # -- validation ------------------------------------------------------------------------------------
    def _check(self) -> None:
        problems = []
        for key in ("rounds", "local_epochs", "min_sites"):
            v = getattr(self, key)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                problems.append(Problem(key, f"got {v!r}", "an int in the range [1, inf)"))
        if problems:
            raise ValidationError(f"Settings of {type(self).__name__}", problems)
        check_capability(self.name, self.generator)

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

        Raises :class:`FedsynthError` when fewer than ``min_sites`` (default: the strategy's) answered.
        """
        by_node = {s.node_id: s for s in sites}
        msgs = [
            Message(content(s), dst_node_id=s.node_id, message_type=message_type, group_id=group_id) for s in sites
        ]
        replies = list(grid.send_and_receive(msgs))
        ok: dict[int, RecordDict] = {}
        failed: dict[int, str] = {}
        for r in replies:
            node = r.metadata.src_node_id
            if r.has_error():
                failed[node] = records.scrub_text(r.error.reason or f"error code {r.error.code}")
            else:
                ok[node] = r.content
        for node in by_node:
            if node not in ok and node not in failed:
                failed[node] = "no reply"
        for node, reason in failed.items():
            name = by_node[node].name if node in by_node else str(node)
            log.warning("%s: site %s left out of %s (%s): %s", self.name, name, message_type, group_id, reason)
        need = self.min_sites if min_sites is None else min_sites
        need = min(need, len(sites))
        if len(ok) < need:
            raise FedsynthError(
                f"{self.name}: only {len(ok)} of {len(sites)} sites answered {message_type} ({group_id}); "
                f"the strategy needs at least {need} (strategy.min_sites)"
            )
        return Replies(ok, failed)

    def hello(self, grid: GridLike) -> list[SiteInfo]:
        """Phase 0: learn each node's site name, row count and columns."""
        nodes = sorted(int(n) for n in grid.get_node_ids())
        probe = [SiteInfo(n, f"node-{n}", 0, ()) for n in nodes]
        got = self.ask(grid, probe, "query.hello", lambda s: RecordDict({"config": ConfigRecord({})}), group_id="hello")
        sites = []
        for node in nodes:
            if node not in got.ok:
                continue
            info = records.from_config_record(got.ok[node]["info"])
            metrics = records.from_metric_record(got.ok[node]["metrics"])
            sites.append(SiteInfo(node, str(info["site_name"]), int(metrics["num_examples"]), tuple(info["columns"])))
        return sorted(sites, key=lambda s: s.name)

    def build_domain(self, grid: GridLike, sites: Sequence[SiteInfo]) -> Domain:
        """Phase 1: sites send released summaries; the server merges them into the shared domain."""
        opts = self.domain_options()
        cfg = records.to_config_record(
            {
                "n_modes": opts["n_modes"],
                "min_category_count": int(self.params.get("min_category_count", 5)),
                "significant_digits": int(self.params.get("significant_digits", 3)),
            }
        )
        got = self.ask(grid, sites, "query.summary", lambda s: RecordDict({"config": cfg}), group_id="summary")
        summaries = [records.from_payload_record(got.ok[s.node_id]["summary"]) for s in sites if s.node_id in got.ok]
        return merge_summaries(
            summaries, self.schema, n_bins=opts["n_bins"], n_modes=opts["n_modes"], random_state=self.random_state
        )

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
            {**meta, "strategy": self.name, "domain": _domain_hash(domain), "rng": rng_meta},
            {**arrays, **rng_arrays},
        )

    def start(self, grid: GridLike, *, on_round: OnRound | None = None) -> StrategyResult:
        """Run the whole job over ``grid``; ``on_round`` is called after every finished round."""
        t0 = time.perf_counter()
        sites = self.hello(grid)
        t1 = time.perf_counter()
        domain = self.build_domain(grid, sites)
        t2 = time.perf_counter()
        result = self.run(grid, sites, domain, on_round=on_round, run_token=uuid.uuid4().hex)
        result.timings.update(hello=t1 - t0, domain=t2 - t1, training=time.perf_counter() - t2)
        return result

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


def generator_accepts(name: str, param: str) -> bool:
    """Whether the registered generator ``name`` takes the constructor parameter ``param``."""
    from fedsynth.generators import generator_class

    return param in inspect.signature(generator_class(name).__init__).parameters


def build_generator(
    name: str, schema: TableSchema, domain: Domain | None, params: Mapping[str, Any], random_state: int | None = None
) -> Any:
    """Build a generator on ``domain``; ``random_state`` is passed when the generator takes one."""
    from fedsynth.generators import generator_class

    cls = generator_class(name)
    kwargs = dict(params)
    if random_state is not None and generator_accepts(name, "random_state"):
        kwargs.setdefault("random_state", int(random_state))
    return cls(schema, domain=domain, **kwargs)


def site_generator(cfg: Mapping[str, Any], site: SiteRuntime, domain: Domain) -> Any:
    """The generator a site trains, built from the instruction's settings and the site's own seed."""
    params = dict(records.decode_payload(str(cfg.get("generator_params", "{}"))))
    params.pop("random_state", None)
    return build_generator(str(cfg["generator"]), site.schema, domain, params, site.seed)


# -- capabilities ------------------------------------------------------------------------------------------


def generator_capabilities(generator: str) -> set[str]:
    """Capabilities of a registered generator (read from its class, imported on use)."""
    from fedsynth.generators import generator_class

    cls = generator_class(generator)
    caps = set()
    if all(callable(getattr(cls, m, None)) for m in ("get_weights", "set_weights", "partial_fit")):
        caps.add("weights")
    if all(callable(getattr(cls, m, None)) for m in ("learn_structure", "learn_parameters", "count_statistics")):
        caps.add("two_step")
    return caps


def compatible_strategies(generator: str) -> list[str]:
    """Strategies that can run with ``generator``."""
    caps = generator_capabilities(generator)
    out = []
    for name in STRATEGIES:
        req = REQUIRES.get(name)
        if req is None or req in caps:
            out.append(name)
    return out


def check_capability(strategy: str, generator: str) -> None:
    """Raise :class:`CapabilityError` naming the compatible strategies when ``generator`` cannot run ``strategy``."""
    req = REQUIRES.get(strategy)
    if req is None:
        return
    if req not in generator_capabilities(generator):
        ok = ", ".join(compatible_strategies(generator))
        raise CapabilityError(
            f"Strategy {strategy!r} needs a generator with {CAPABILITIES[req]}; {generator!r} does not have it. "
            f"Strategies that work with {generator!r}: {ok}."
        )


# -- registry ------------------------------------------------------------------------------------------------

#: Registered strategies: name -> "module:Class" (imported on use).
STRATEGIES: dict[str, str] = {
    "centralized": "fedsynth.strategies.centralized:CentralizedStrategy",
    "local": "fedsynth.strategies.local:LocalStrategy",
    "fedavg": "fedsynth.strategies.fedavg:FedAvgStrategy",
    "two_step_bn": "fedsynth.strategies.two_step_bn:TwoStepBNStrategy",
    "sd_sharing": "fedsynth.strategies.sd_sharing:SDSharingStrategy",
}

#: Capability each strategy needs (kept here so checking does not import every strategy).
REQUIRES: dict[str, str | None] = {
    "centralized": None,
    "local": None,
    "fedavg": "weights",
    "two_step_bn": "two_step",
    "sd_sharing": None,
}


def strategy_class(name: str) -> type[Strategy]:
    if name not in STRATEGIES:
        raise ValidationError("Strategy", [Problem("name", f"unknown strategy {name!r}", ", ".join(STRATEGIES))])
    module, _, cls = STRATEGIES[name].partition(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


def make_strategy(name: str, schema: TableSchema, **settings: Any) -> Strategy:
    """Build a strategy by registry name (capability checked)."""
    return strategy_class(name)(schema, **settings)


def flow_for(generator: str) -> str:
    """The federated flow a baseline runs for ``generator``: two-step counts, weights, or fit-once."""
    caps = generator_capabilities(generator)
    if "two_step" in caps:
        return "two_step_bn"
    if "weights" in caps:
        return "fedavg"
    return "fit_once"


# -- in-process grid (baselines, tests) --------------------------------------------------------------------


class InProcessGrid:
    """A grid whose sites live in this process: messages go straight to the site handlers.

    Same messages, same handlers, same replies as over Flower — only the transport differs. ``sent`` and
    ``received`` keep every message, for tests that inspect what left a site.
    """

    def __init__(
        self,
        sites: Sequence[SiteRuntime],
        handlers: Mapping[str, SiteHandler] | None = None,
        *,
        keep_messages: bool = False,
    ) -> None:
        self.sites = {i + 1: s for i, s in enumerate(sites)}
        self.handlers = dict(handlers) if handlers is not None else all_site_handlers()
        self.keep_messages = keep_messages
        self.sent: list[Message] = []
        self.received: list[Message] = []
        _ensure_task_identity()

    def get_node_ids(self) -> list[int]:
        return list(self.sites)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        out = []
        for msg in messages:
            site = self.sites[msg.metadata.dst_node_id]
            handler = self.handlers.get(msg.metadata.message_type)
            if handler is None:
                reply = Message(Error(SITE_ERROR_CODE, f"no handler for {msg.metadata.message_type}"), reply_to=msg)
            else:
                reply = handle(handler, msg, site)
            if self.keep_messages:
                self.sent.append(msg)
                self.received.append(reply)
            out.append(reply)
        return out


def _ensure_task_identity() -> None:
    """Flower stamps instructions with the process's task identity, which only its engines set; an in-process
    grid sets a neutral one (run 0, the SuperLink's node id) when none is set yet."""
    from flwr.supercore.task_identity import TaskIdentity

    try:
        _ = TaskIdentity.run_id
    except RuntimeError:
        from flwr.common.constant import SUPERLINK_NODE_ID

        TaskIdentity.task_id = 1
        TaskIdentity.run_id = 0
        TaskIdentity.node_id = SUPERLINK_NODE_ID
