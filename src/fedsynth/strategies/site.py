"""The site runtime: what a site handler sees, its disclosure rules, and the handlers every strategy relies on.

A site answers each message type with a handler (``SITE_HANDLERS`` in each strategy module: message type ->
handler). :func:`handle` wraps a handler so that any failure becomes a scrubbed error reply and no traceback
or data value leaves the site. Common to all strategies:

1. ``query.hello``   -> the site's name and row count (``num-examples``) and which columns it holds;
2. ``query.summary`` -> the site's domain summary (:func:`fedsynth.encoding.summarize_site`) after the site's
   disclosure control (:func:`release_summary`); the server merges them into the shared :class:`Domain`.

Every handler applies the site's own :class:`~fedsynth.strategies.policy.SitePolicy` (:func:`site_policy`): the
settings a message carries can tighten it, never loosen it.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

from fedsynth.cohort.schema import ColumnKind, TableSchema
from fedsynth.encoding.domain import Domain, summarize_site
from fedsynth.encoding.domain import release_summary as _release
from fedsynth.strategies import records
from fedsynth.strategies.policy import DisclosureRefused, SitePolicy
from fedsynth.strategies.registry import STRATEGIES, build_generator
from fedsynth.strategies.site_budget import PRIVACY_BUDGET_MESSAGE, handle_privacy_budget

log = logging.getLogger(__name__)

#: Error code a site uses for a handler failure (Flower's CLIENT_APP_RAISED_EXCEPTION).
SITE_ERROR_CODE = 2


@dataclass
class SiteRuntime:
    """What a site handler sees: its own rows (never sent), schema, name, seed, persistent node state and its
    own disclosure policy (:class:`~fedsynth.strategies.policy.SitePolicy`; safe defaults unless the site's
    configuration gives one)."""

    name: str
    data: pd.DataFrame
    schema: TableSchema
    seed: int = 0
    state: RecordDict = field(default_factory=RecordDict)
    policy: SitePolicy = field(default_factory=SitePolicy)
    #: The site's own ε ledger (:class:`fedsynth.privacy.PrivacyLedger`, keyed by the site's name): noisy
    #: releases are charged to it before they are made, and refused past the site's budget. ``None`` under a
    #: policy with a finite ε: an in-memory ledger kept in the node state (:func:`memory_ledger`), so that the
    #: budget is enforced without a ledger file too; ``None`` under ε = ∞: no ledger.
    privacy_ledger: Any = None
    #: The site's own folder for its state between rounds (resume); ``None``: kept in memory only.
    state_dir: Path | None = None
    #: The site's own holdout: rows that never train a model, for the privacy figures of the snapshots it scores
    #: (:mod:`fedsynth.strategies.site_scoring`); ``None``: the site keeps none.
    holdout: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        if self.privacy_ledger is None and not math.isinf(self.policy.epsilon):
            self.privacy_ledger = memory_ledger(self.policy, self.state)


#: Key of the in-memory ledger's text in a site's node state.
MEMORY_LEDGER_KEY = "privacy-ledger"


def memory_ledger(policy: SitePolicy, state: RecordDict) -> Any:
    """A site's ε ledger without a file (:class:`~fedsynth.privacy.ledger.MemoryLedger`), limited by its policy's
    budget and kept in its node ``state`` (Flower's ``context.state``, handed to every message's process of the
    run): a simulation without a state folder enforces a site's finite ε as a deployment does. What it records
    lasts as long as the node state (one run in a simulation); give the site a state folder to keep it across
    runs."""
    from fedsynth.privacy.accounting import PrivacyBudget
    from fedsynth.privacy.ledger import MemoryLedger

    def load() -> str | None:
        record = state.get(MEMORY_LEDGER_KEY)
        return str(record["json"]) if isinstance(record, ConfigRecord) else None

    def save(text: str) -> None:
        state[MEMORY_LEDGER_KEY] = ConfigRecord({"json": text})

    return MemoryLedger(PrivacyBudget(policy.epsilon, policy.delta), stores=[(load, save)])


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


# -- a site's own state between messages -------------------------------------------------------------------
#
# In a deployment every message runs in a fresh ClientApp process: what a site must carry from one message to
# the next (optimiser moments, random generator states, noisy tables already released) lives in the node's
# ``context.state`` (:attr:`SiteRuntime.state`, which Flower hands back to the next process), and with a
# ``state_dir`` also in the site's own folder, per run and step, so that a restarted node or a resumed run finds
# it. The per-process caches (:func:`site_model`) only spare rebuilding it within one process.


def site_state_folder(site: SiteRuntime, run_token: str, part: str) -> Path | None:
    """The site's folder for ``part`` of its state in run ``run_token`` (``None`` without a ``state_dir``)."""
    if site.state_dir is None:
        return None
    return site.state_dir / _safe_name(run_token) / _safe_name(part)


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:80] or "_"


def save_site_state(
    site: SiteRuntime,
    run_token: str,
    part: str,
    step: int,
    meta: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
) -> None:
    """Keep ``part`` of the site's state after ``step`` (a round, a request) of run ``run_token``.

    Into the node's ``context.state`` (records ``<part>.meta`` and ``<part>.arrays``; only the latest step) and,
    with a ``state_dir``, into ``<state_dir>/<run>/<part>/`` (:class:`~fedsynth.strategies.checkpoint.
    SiteStateStore`: the two latest steps, JSON and ``.npz``, no pickle).

    Parameters
    ----------
    meta : mapping
        JSON-able settings.
    arrays : mapping of str to ndarray
        Named numeric arrays.
    """
    import json

    site.state[f"{part}.meta"] = ConfigRecord({"run": run_token, "step": int(step), "json": json.dumps(dict(meta))})
    site.state[f"{part}.arrays"] = records.to_array_record(arrays)
    folder = site_state_folder(site, run_token, part)
    if folder is not None and site.state_dir is not None:
        from fedsynth.strategies.checkpoint import SiteStateStore

        if not site.state_dir.is_dir():  # the site's own folder: readable by the node's user only
            site.state_dir.mkdir(parents=True, exist_ok=True)
            site.state_dir.chmod(0o700)
        SiteStateStore(folder).save(step, meta, arrays)


def load_site_state(
    site: SiteRuntime, run_token: str, part: str, step: int
) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """``(meta, arrays)`` of ``part`` after ``step`` of run ``run_token``: from the node's ``context.state`` when it
    holds that step, else from the site's folder; ``None`` when neither has it."""
    import json

    meta_key, arrays_key = f"{part}.meta", f"{part}.arrays"
    if meta_key in site.state and arrays_key in site.state:
        rec = site.state[meta_key]
        if isinstance(rec, ConfigRecord) and rec.get("run") == run_token and rec.get("step") == int(step):
            return dict(json.loads(str(rec["json"]))), records.from_array_record(site.state[arrays_key])
    folder = site_state_folder(site, run_token, part)
    if folder is None:
        return None
    from fedsynth.strategies.checkpoint import SiteStateStore

    return SiteStateStore(folder).load(step)


# -- what a site under a finite ε budget answers ----------------------------------------------------------
#
# A site whose own policy sets a finite ε releases nothing computed from its rows except under differential
# privacy: a request without the settings of a private request (a coordinator running at ε = ∞, or one that
# leaves the keys out) asks for looser settings than the site's policy, and gets the site's policy: a refusal.
# What the private form of each message carries is the key its handler branches on; that the noise it asks for
# fits the site's budget is the site's ε ledger's business (it charges every noisy release before it leaves; a
# site with a finite ε always has one, in memory when it has no folder for the file, SiteRuntime.__post_init__).


@dataclass(frozen=True)
class UnderBudget:
    """What a site under a finite ε budget needs before it answers one message type.

    ``needs`` ``None``: refused (the message has no private form); ``()``: answered (nothing computed from the
    rows leaves); otherwise every key named must be in the message's settings (``config``, or for the secure
    sum's masked vector the ``request`` its vector source reads). ``forbids``: content parts that, beside a
    private answer, would release something in clear."""

    needs: tuple[str, ...] | None
    why: str
    forbids: tuple[str, ...] = ()


_ANSWERED = ()
_DP_NOISE = ("dp_noise_std",)
_DP_MIXTURE = ("dp_mixture_noise", "dp_code_clip")

#: Every message type a site answers (:func:`all_site_handlers`), classified: the ONE table the site consults
#: when its policy sets a finite ε (:func:`check_private_request`). A type missing here is refused (fail closed).
UNDER_BUDGET: dict[str, UnderBudget] = {
    "query.privacy_budget": UnderBudget(_ANSWERED, "the ε its ledger has left and its δ (after a run stopped, "
                                                   "what that run's releases cost it): no row enters it"),
    "query.secagg_setup": UnderBudget(_ANSWERED, "fresh public keys"),
    "query.secagg_share_keys": UnderBudget(_ANSWERED, "encrypted Shamir shares of the site's own mask secrets"),
    "query.secagg_unmask": UnderBudget(_ANSWERED, "mask shares; what they unmask is the masked vector, "
                                                  "whose request passed this table at the collect stage"),
    "query.secagg_collect": UnderBudget(_ANSWERED, "the site's masked vector: decided per vector source on the "
                                                   "request it carries (COLLECT_UNDER_BUDGET)"),
    "query.hello": UnderBudget(_DP_NOISE, "the row count: a noisy lower bound under dp_noise_std, else exact"),
    "query.summary": UnderBudget(None, "the site's own domain summary has no private form (a private run builds "
                                       "the domain from noisy counts, query.noisy_domain_counts)"),
    "query.secure_labels": UnderBudget(("dp_label_threshold", "dp_noise_std"),
                                       "label names: DP partition selection under dp_label_threshold"),
    "query.noisy_domain_counts": UnderBudget(_DP_NOISE, "the site's domain count vector with Gaussian noise"),
    "query.counts": UnderBudget(_DP_NOISE, "the two-step BN's family count tables with Gaussian noise"),
    "train.fit": UnderBudget(("dp_noise_multiplier",), "FedAvg weights trained by DP-SGD"),
    "query.mixture_init": UnderBudget(_DP_MIXTURE, "latent-mixture statistics of clipped codes with noise",
                                      forbids=("mixture",)),  # a warm start's E-step goes back in clear
    "query.mixture_estep": UnderBudget(_DP_MIXTURE, "latent-mixture statistics of clipped codes with noise"),
    "query.component_counts": UnderBudget(None, "per-component label counts have no private form (a private "
                                                "FedAvg run does not ask for them)"),
    "query.survival_counts": UnderBudget(None, "events and person-time per calibration stratum have no private "
                                               "form (a private FedAvg run does not ask for them)"),
    "train.share": UnderBudget(("dp_epsilon",), "synthetic rows of a generator fitted with DP at the site"),
    "evaluate.snapshot": UnderBudget(None, "scores against the site's rows are outside any ε (a chosen snapshot "
                                           "probes them: exact copies, distances, membership)"),
}

#: The secure sum's masked vector under a finite site budget, per vector source (its ``request``): the DP
#: request's keys, as for the message that would carry the same vector in clear. ``stash`` is what a private
#: instruction (``train.fit``, ``query.mixture_*``, themselves checked above) left for the sum: already noised.
COLLECT_UNDER_BUDGET: dict[str, UnderBudget] = {
    "domain.histograms": UnderBudget(_DP_NOISE, "the domain's count vector with Gaussian noise"),
    "two_step_bn.counts": UnderBudget(_DP_NOISE, "the two-step BN's count tables with Gaussian noise"),
    "domain.moments": UnderBudget(None, "exact sums and sums of squares (a private run does not ask for them)"),
    "stash": UnderBudget(_ANSWERED, "what a private instruction already noised"),
}


def check_private_request(msg: Message, site: SiteRuntime) -> None:
    """Refuse ``msg`` when the site's policy sets a finite ε and the message is not a private request
    (:data:`UNDER_BUDGET`); nothing to do under ``ε = inf``.

    Raises
    ------
    DisclosureRefused
        Naming the message type and what it lacks, never a value; the coordinator's operator is told to set
        ``privacy: {epsilon, delta}`` in the run config.
    """
    if math.isinf(site.policy.epsilon):
        return
    mtype = msg.metadata.message_type
    rule, cfg = UNDER_BUDGET.get(mtype), message_config(msg)
    if mtype == "query.secagg_collect":
        rule = COLLECT_UNDER_BUDGET.get(str(cfg.get("source", "")))
        cfg = records.from_config_record(msg.content["request"]) if "request" in msg.content else {}
    if rule is None or rule.needs is None:
        lacks = "it has no private form"
    elif missing := [k for k in rule.needs if not _positive(cfg.get(k))]:
        lacks = f"it lacks {', '.join(missing)} (a positive finite number each)"
    elif extra := [k for k in rule.forbids if k in msg.content]:
        lacks = f"it carries {', '.join(extra)}, whose answer would leave in clear"
    else:
        return
    raise DisclosureRefused(
        "this site releases only under a differential-privacy budget (its own policy sets a finite epsilon): "
        f"{mtype} refused, {lacks}; nothing was released. Set privacy: {{epsilon, delta}} in the run config, at "
        "most what the site has left (query.privacy_budget)"
    )


def _positive(value: Any) -> bool:
    """Whether a DP setting is a positive finite number (a noise of 0 or inf ε is no privacy)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(float(value)) and float(value) > 0


def handle(handler: SiteHandler, msg: Message, site: SiteRuntime) -> Message:
    """Run a site handler and wrap its answer; any failure becomes a scrubbed error reply (no data values).

    Under a finite ε in the site's policy, a message that is not a private request is refused before its
    handler runs (:func:`check_private_request`)."""
    try:
        check_private_request(msg, site)
        content = handler(msg, site)
        return Message(content, reply_to=msg)
    except Exception as exc:  # noqa: BLE001 - every failure must become a reply, never a traceback leaving the site
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
    """Site-side disclosure control of a domain summary before it leaves the site
    (:func:`fedsynth.encoding.domain.release_summary` with ``k = min_category_count``): coarse bounds, histogram
    cells and category labels of at least ``k`` rows, rounded mixture modes."""
    return _release(summary, schema, min_count=min_category_count, significant_digits=significant_digits)


def site_policy(msg: Message, site: SiteRuntime) -> SitePolicy:
    """The settings the site applies to ``msg``: its own policy, tightened (never loosened) by the message."""
    return site.policy.effective(message_config(msg))


def handle_hello(msg: Message, site: SiteRuntime) -> RecordDict:
    """``query.hello``: who the site is and how many rows it holds (nothing else); under a privacy budget
    (``dp_noise_std`` in the message) a noisy lower bound of the row count
    (:func:`~fedsynth.strategies.secure_domain.noisy_row_count`)."""
    held = [c for c in site.schema.model_columns if c in site.data.columns]
    cfg = message_config(msg)
    if "dp_noise_std" in cfg:
        from fedsynth.strategies.secure_domain import noisy_row_count

        n_rows = noisy_row_count(cfg, site)
    else:
        n_rows = len(site.data)
    return RecordDict(
        {
            "info": records.to_config_record({"site_name": site.name, "columns": held}),
            "metrics": records.to_metric_record({"num_examples": n_rows}),
        }
    )


def handle_summary(msg: Message, site: SiteRuntime) -> RecordDict:
    """``query.summary``: the site's domain summary, after disclosure control under the site's policy (a
    message may raise ``min_category_count`` or lower ``significant_digits``, never the reverse)."""
    cfg = message_config(msg)
    policy = site_policy(msg, site)
    raw = summarize_site(site.data, site.schema, n_modes=int(cfg.get("n_modes", 0)), random_state=site.seed)
    released = release_summary(
        raw, site.schema, min_category_count=policy.min_count, significant_digits=policy.significant_digits
    )
    reply: dict[str, ArrayRecord | MetricRecord | ConfigRecord] = {"summary": records.to_payload_record(released)}
    if cfg.get("candidate_rules"):
        # Endpoint rules: one bool per candidate (does it hold on every row here?), never a value or a count.
        from fedsynth.cohort.constraints import rule_from_dict, site_answers

        raw_rules = records.decode_payload(str(cfg["candidate_rules"]))
        rules = [rule_from_dict(r, site.schema.endpoints) for r in raw_rules]
        reply["rules"] = records.to_payload_record(site_answers(site.data, rules))
    return RecordDict(reply)


#: Handlers every strategy relies on.
COMMON_HANDLERS: dict[str, SiteHandler] = {"query.hello": handle_hello, "query.summary": handle_summary,
                                           PRIVACY_BUDGET_MESSAGE: handle_privacy_budget}


def all_site_handlers() -> dict[str, SiteHandler]:
    """Every message type a site answers, from every registered strategy module."""
    out = dict(COMMON_HANDLERS)
    # Secure aggregation's stages (fedsynth.strategies.secure_sum) serve every strategy that sums over sites.
    out.update(importlib.import_module("fedsynth.strategies.secure_sum").SITE_HANDLERS)
    out.update(importlib.import_module("fedsynth.strategies.site_scoring").SITE_HANDLERS)  # a deployment's scores
    out.update(importlib.import_module("fedsynth.strategies.secure_domain").SITE_HANDLERS)  # the private domain
    for spec in STRATEGIES.values():  # the site's modules only: a fresh ClientApp process per message pays them
        module = importlib.import_module(spec.site_handlers_module)
        out.update(getattr(module, "SITE_HANDLERS", {}))
    return out


def site_generator(cfg: Mapping[str, Any], site: SiteRuntime, domain: Domain) -> Any:
    """The generator a site trains, built from the instruction's settings and the site's own seed."""
    params = dict(records.decode_payload(str(cfg.get("generator_params", "{}"))))
    params.pop("random_state", None)
    return build_generator(str(cfg["generator"]), site.schema, domain, params, site.seed)
