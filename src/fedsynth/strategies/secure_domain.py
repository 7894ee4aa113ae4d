"""The shared domain by secure aggregation: the server learns the sums over sites of the domain summaries, never
one site's.

Under ``secure_aggregation`` :meth:`Strategy.build_domain <fedsynth.strategies.base.Strategy.build_domain>` sends
no ``query.summary`` (each site's own histogram, moments and label counts); instead:

1. ``query.secure_labels`` — each site names, per categorical column, the labels it holds at least ``k`` times
   under its own policy (names, no count; a label rarer than ``k`` at every site is never named);
2. a secure sum of counts (source ``domain.histograms``): per column the rows and missing values, per numeric
   column a histogram on the grid every site shares (:func:`~fedsynth.encoding.grid.histogram_edges`), per
   categorical column the count of each declared or named label, and per candidate endpoint rule whether it
   fails at the site — all exact integers modulo ``2**32``;
3. the server takes coarse bounds from the summed histograms (:func:`~fedsynth.encoding.grid.grid_bounds`);
4. a secure sum in fixed point (source ``domain.moments``) of each numeric column's sum and sum of squares,
   rescaled to [0, 1] within those bounds;
5. the server applies disclosure control to the sums (cells and labels of at least ``k`` rows,
   :func:`~fedsynth.encoding.grid.summary_from_grid`) and merges the result like one site's summary.

What the server sees: label names some site holds ``k`` times, and sums over sites. A label held by fewer than
``k`` patients across the federation is not in the domain (declared or not); no bound or quantile edge is a
patient's value (bounds are coarse grid points, quantile edges are interpolated inside cells of at least ``k``).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import Message, RecordDict

from fedsynth.cohort.constraints import EndpointRule
from fedsynth.encoding import dp_domain
from fedsynth.encoding.dp_domain import dp_counts, noisy_summary
from fedsynth.encoding.grid import (
    candidate_labels,
    frequent_labels,
    grid_bounds,
    grid_counts,
    grid_moments,
    summary_from_grid,
)
from fedsynth.errors import FedsynthError
from fedsynth.privacy.accounting import PrivacyBudget, Release, noise_multiplier_for, rho_for_budget
from fedsynth.privacy.noise import add_count_noise, noise_calibration, noise_shares, site_noise_std
from fedsynth.strategies import records
from fedsynth.strategies.exchange import GridLike, SiteInfo, same_for_all, site_name
from fedsynth.strategies.site import (
    SiteHandler,
    SiteRuntime,
    load_site_state,
    message_config,
    save_site_state,
    site_policy,
)

if TYPE_CHECKING:
    from fedsynth.strategies.base import Strategy

log = logging.getLogger(__name__)

#: Message type of step 1 (label names a site holds at least k times).
LABELS = "query.secure_labels"


def handle_labels(msg: Message, site: SiteRuntime) -> RecordDict:
    """``query.secure_labels``: per categorical column, the labels the site holds at least ``k`` times (its own
    policy's ``min_count``, tightened by the message, never loosened) — names only; under a budget
    (``dp_label_threshold`` in the message) the names DP partition selection keeps (:func:`noisy_label_names`)."""
    cfg, policy = message_config(msg), site_policy(msg, site)
    if "dp_label_threshold" in cfg:  # under a budget: DP partition selection (names only, see noisy_label_names)
        return RecordDict({"labels": records.to_payload_record(noisy_label_names(cfg, site, policy.min_count))})
    return RecordDict({"labels": records.to_payload_record(frequent_labels(site.data, site.schema,
                                                                             min_count=policy.min_count))})


def histogram_vector(request: Mapping[str, Any], site: SiteRuntime) -> dict[str, np.ndarray]:
    """Vector source ``domain.histograms``: :func:`~fedsynth.encoding.grid.grid_counts` of the site's rows over
    the request's candidate labels, and ``rules/fail`` (1 where a candidate endpoint rule fails on a row here);
    under a privacy budget (``dp_noise_std`` in the request) the site's noisy vector (:func:`noisy_domain_vector`)."""
    from fedsynth.cohort.constraints import rule_from_dict, site_answers

    if "dp_noise_std" in request:
        return noisy_domain_vector(request, site, secure_aggregation=True)

    labels = records.decode_payload(str(request["labels"]))
    out = grid_counts(site.data, site.schema, labels)
    raw_rules = records.decode_payload(str(request.get("candidate_rules", "[]")))
    if raw_rules:
        rules = [rule_from_dict(r, site.schema.endpoints) for r in raw_rules]
        out["rules/fail"] = np.array([0 if ok else 1 for ok in site_answers(site.data, rules)], dtype=np.int64)
    return out


def moment_vector(request: Mapping[str, Any], site: SiteRuntime) -> dict[str, np.ndarray]:
    """Vector source ``domain.moments``: :func:`~fedsynth.encoding.grid.grid_moments` within the request's bounds."""
    bounds = {str(k): (float(v[0]), float(v[1])) for k, v in records.decode_payload(str(request["bounds"])).items()}
    return grid_moments(site.data, site.schema, bounds)


def secure_summary(
    strategy: Strategy,
    grid: GridLike,
    sites: Sequence[SiteInfo],
    candidates: Sequence[EndpointRule],
    *,
    n_modes: int,
) -> tuple[dict[str, Any], list[list[bool]]]:
    """Steps 1-5 (see the module): the summed, disclosure-controlled summary, and the endpoint-rule answers as one
    reply (a rule holds when it fails at no site in the sum).

    Raises
    ------
    FedsynthError
        Fewer sites than the strategy's ``min_sites`` answer step 1, or fewer than the secure sum's threshold
        remain in a sum.
    """
    from fedsynth.strategies.secure_sum import FLOAT_FRACTION_BITS, float_clipping_range, secure_sum

    params = strategy.params
    k = int(params["min_category_count"])
    timeout = float(params["request_timeout"])
    cfg = records.to_config_record({"min_category_count": k, "significant_digits": int(params["significant_digits"])})
    got = strategy.ask(grid, sites, LABELS, lambda s: RecordDict({"config": cfg}), group_id="summary-labels")
    answered = [s for s in sites if s.node_id in got.ok]
    labels = candidate_labels(strategy.schema, [records.from_payload_record(got.ok[s.node_id]["labels"])
                                                for s in answered])
    request = {"labels": records.encode_payload(labels),
               "candidate_rules": records.encode_payload([r.to_dict() for r in candidates])}
    bits = 32 if sum(s.n_rows for s in answered) < 2**31 else 64
    counts = secure_sum(grid, [s.node_id for s in answered], request, source="domain.histograms",
                        modulus_bits=bits, timeout=timeout)
    _record_dropped(strategy, sites, counts.dropped, "summary-counts")
    bounds = grid_bounds(counts.arrays, strategy.schema)
    clip = float_clipping_range(len(counts.included))
    moments = secure_sum(grid, counts.included, {"bounds": records.encode_payload({c: list(b) for c, b in bounds.items()})},
                         source="domain.moments", fraction_bits=FLOAT_FRACTION_BITS, clipping_range=clip,
                         timeout=timeout)
    _record_dropped(strategy, sites, moments.dropped, "summary-moments")
    if moments.dropped:  # the moments must come from the sites in the counts
        raise FedsynthError("secure domain: a site dropped between the summed counts and the summed moments")
    summary = summary_from_grid(
        counts.arrays, moments.arrays, bounds, labels, strategy.schema, min_count=k,
        significant_digits=int(params["significant_digits"]), n_modes=n_modes, random_state=strategy.random_state,
    )
    answers = [[int(x) == 0 for x in counts.arrays["rules/fail"]]] if "rules/fail" in counts.arrays else []
    log.info("secure domain: summaries of %d sites summed", len(counts.included))
    return summary, answers


def _record_dropped(strategy: Strategy, sites: Sequence[SiteInfo], dropped: Mapping[int, str], step: str) -> None:
    for node, reason in dropped.items():
        strategy.dropped.append({"site": site_name(sites, node), "message_type": "secure sum", "round": step,
                                 "reason": reason})


# -- under a privacy budget: the hello's row count and the domain, released with noise ---------------------------
#
# Under ``privacy: {epsilon, delta}`` with a finite ε, :meth:`Strategy.start <fedsynth.strategies.base.Strategy.
# start>` spends two Gaussian releases before the strategy's own phases, and hands the strategy a budget that
# records them (:meth:`PrivacyBudget.spending <fedsynth.privacy.accounting.PrivacyBudget.spending>`), so its
# accountant composes them with everything else and states the split in the manifest:
#
# * ``hello`` (:data:`DP_HELLO_SHARE` of the run's ρ): each site's row count, sensitivity 1, sent in clear with
#   the full σ and shifted down by :data:`HELLO_MARGIN` σ, so that the coordinator's figure is a lower bound
#   with probability 0.9987. Every strategy's hello is noised: FedAvg's DP-SGD plan takes each site's sampling
#   rate and steps from this figure and the site trains at exactly that rate and those steps (they travel in
#   ``train.fit``), so the accounting holds whatever the site's true count; FedAvg also weighs a site's update by
#   this figure, and SD-sharing's sites sample as many rows as they hold unless the run asks for a number.
# * ``domain`` (:data:`DP_DOMAIN_SHARE`): per model column one count vector of sensitivity 1
#   (:func:`~fedsynth.encoding.dp_domain.dp_counts`), C columns -> C Gaussian uses at one noise multiplier; the
#   noise is the two-step BN's (:mod:`fedsynth.privacy.noise`): σ²/min_sites per site under secure aggregation,
#   the full σ² per site in clear. Endpoint rules are the schema's declared ones only (whether a candidate rule
#   holds at every row is not a noisy count). Label names of categorical columns without declared categories
#   come from ``query.secure_labels`` under DP partition selection (:func:`noisy_label_names`,
#   :mod:`fedsynth.encoding.dp_domain`): one more use per such column at the domain's noise multiplier, and the
#   threshold's δ kept out of the δ the run's RDP curve is converted at (:func:`~fedsynth.encoding.dp_domain.
#   label_selection_budget`).
#
# A site charges each release to its own ledger (at the noise the message asks for) before it answers, keeps
# what it released in its state, and sends it again unchanged, at no new cost, when a resumed run asks again.

#: Share of the run's zCDP ρ spent on the sites' row counts in the hello.
DP_HELLO_SHARE = 0.01
#: Share of the run's zCDP ρ spent on the shared domain's count vectors.
DP_DOMAIN_SHARE = 0.10
#: How many noise standard deviations a released row count is shifted down (a high-probability lower bound).
HELLO_MARGIN = 3.0
#: Message type of the noisy domain counts in clear (without secure aggregation).
NOISY_COUNTS = "query.noisy_domain_counts"
#: Parts of a site's state (:func:`~fedsynth.strategies.site.save_site_state`) holding what it released.
_HELLO_RELEASED, _DOMAIN_RELEASED = "dp-hello-released", "dp-domain-released"
_LABELS_RELEASED = "dp-labels-released"


def noise_source() -> np.random.Generator:
    """Where a site's noise comes from: the operating system's entropy (a seed the coordinator knew would let it
    subtract the noise). One function, so that a test can fix it."""
    return np.random.default_rng()


def pre_run_releases(budget: PrivacyBudget, n_columns: int) -> tuple[Release, ...]:
    """The hello's and the domain's Gaussian releases for ``budget``, in that order: their noise multipliers spend
    exactly :data:`DP_HELLO_SHARE` and :data:`DP_DOMAIN_SHARE` of the run's ρ
    (:func:`~fedsynth.privacy.accounting.rho_for_budget`); the domain's release counts one use per model column.

    Raises
    ------
    ValueError
        For an infinite budget (nothing is noised then).
    """
    if budget.is_infinite:
        raise ValueError("an infinite budget releases exact summaries; there is nothing to calibrate")
    rho = rho_for_budget(budget.fresh())
    return (Release("hello", noise_multiplier_for(DP_HELLO_SHARE * rho, 1), 1),
            Release("domain", noise_multiplier_for(DP_DOMAIN_SHARE * rho, n_columns), n_columns))


def plan_private_run(strategy: Strategy, grid: GridLike) -> tuple[Release, ...] | None:
    """Coordinator side, before the hello: the releases a run under a finite budget makes before its own phases
    (``None`` without one), once every site has said its ledger allows the run
    (:func:`~fedsynth.strategies.site_budget.check_site_budgets`, before anything is released). They are set on the
    strategy (``_pre_run_releases``, which the hello and the domain read) and recorded in its budget
    (``strategy.privacy = budget.spending(...)``), so that the accountant of its own phases composes them.

    Every strategy's hello and domain are released under the budget: the strategy's own phases (the two-step
    BN's tables, FedAvg's DP-SGD, each SD-sharing site's private fit) plan with what these two leave. What every
    site's ledger allowed is kept in ``strategy.epsilon_left_`` (for the manifest).

    Raises
    ------
    ValidationError
        The strategy cannot run under a budget (:meth:`Strategy.check_private_run
        <fedsynth.strategies.base.Strategy.check_private_run>`, e.g. CTGAN); nothing was asked.
    BudgetExceededError
        A site's ledger has less left than the run asks for.
    """
    strategy._pre_run_releases = None
    strategy.epsilon_left_ = {}
    budget = strategy.privacy.fresh() if strategy.privacy is not None else None
    if budget is None or budget.is_infinite:
        return None
    from fedsynth.strategies.site_budget import check_site_budgets

    strategy.check_private_run()
    strategy.epsilon_left_ = check_site_budgets(strategy, grid, strategy._hello_request(grid).sites, budget)
    budget = dp_domain.label_selection_budget(budget, strategy.schema)  # the label threshold's share of delta
    n_uses = len(strategy.schema.model_columns) + len(dp_domain.undeclared_categoricals(strategy.schema))
    releases = pre_run_releases(budget, n_uses)
    strategy._pre_run_releases = releases
    strategy.privacy = budget.spending(*releases)
    return releases


def _release_of(strategy: Strategy, phase: str) -> Release | None:
    return next((r for r in strategy._pre_run_releases or () if r.phase == phase), None)


def dp_run_id(strategy: Strategy) -> str:
    """The id the sites' ledgers record the run's releases under: its run directory's name, else its token."""
    return str(getattr(strategy, "privacy_run_id", None) or strategy.run_token_)


def hello_settings(strategy: Strategy, n_sites: int) -> dict[str, Any]:
    """What the hello carries: the noise of the row counts under a budget that noises them, else nothing."""
    hello = _release_of(strategy, "hello")
    return {} if hello is None else dp_request(hello, strategy.run_token_, dp_run_id(strategy), n_sites)


def dp_request(release: Release, run_token: str, dp_run: str, min_sites: int) -> dict[str, Any]:
    """The settings a private hello or domain request carries (noise multiplier, run ids, and the fewest sites a
    secure sum may finish with, :func:`~fedsynth.privacy.noise.noise_shares`)."""
    return {"dp_noise_std": float(release.noise_multiplier), "dp_uses": int(release.count), "run_token": run_token,
            "dp_run": dp_run, "dp_min_sites": int(min_sites)}


def _charge(site: SiteRuntime, cfg: Mapping[str, Any], release: Release, delta: float = 0.0) -> None:
    """Charge ``release`` (and a ``delta`` it spends beside its RDP curve: label selection's threshold) to the
    site's ledger (if it keeps one) under the run's id; refused past its budget."""
    if site.privacy_ledger is None:
        return
    ledger = site.privacy_ledger
    ledger.record(site.name, ledger_run_id(cfg), f"{release.phase}/{uuid.uuid4().hex}", release.rdp(ledger.orders),
                  delta=delta)


def ledger_run_id(cfg: Mapping[str, Any]) -> str:
    """Site side: the id a request's run is known by in the site's ledger and its kept releases, from the request's
    settings: the run's ledger id (``dp_run``, its run directory's name, :func:`dp_run_id`: stable when the run is
    resumed by a strategy that kept no checkpoint, as SD-sharing's), else the run token. Every strategy charges and
    keeps its releases under it."""
    return str(cfg.get("dp_run") or cfg["run_token"])


def _released(site: SiteRuntime, cfg: Mapping[str, Any], part: str, std: float) -> dict[str, np.ndarray] | None:
    found = load_site_state(site, ledger_run_id(cfg), part, 0)
    if found is None or float(found[0].get("std", -1.0)) != std:
        return None
    return found[1]


def noisy_row_count(cfg: Mapping[str, Any], site: SiteRuntime) -> int:
    """Site side of a private hello: the site's row count plus Gaussian noise of the full σ (it is seen alone),
    shifted down by :data:`HELLO_MARGIN` σ, rounded, at least 1 — charged to the site's ledger first, and the
    same figure again when the run asks again."""
    z = float(cfg["dp_noise_std"])
    again = _released(site, cfg, _HELLO_RELEASED, z)
    if again is not None:
        return int(again["n"][0])
    _charge(site, cfg, Release("hello", z, 1))
    noisy = add_count_noise({"n": np.array([len(site.data)])}, z, random_state=noise_source())["n"]
    n = np.maximum(np.rint(noisy - HELLO_MARGIN * z), 1).astype(np.int64)
    save_site_state(site, ledger_run_id(cfg), _HELLO_RELEASED, 0, {"std": z, "release": ["hello", z, 1]}, {"n": n})
    return int(n[0])


def noisy_domain_vector(cfg: Mapping[str, Any], site: SiteRuntime, *, secure_aggregation: bool) -> dict[str, np.ndarray]:
    """Site side of a private domain: :func:`~fedsynth.encoding.dp_domain.dp_counts` of the site's rows over the
    request's labels plus the site's share of the noise (:func:`~fedsynth.privacy.noise.site_noise_std`, from
    the path it answers on; on the masked path the split the collect stage verified,
    :func:`~fedsynth.strategies.secagg_protocol.masked_noise_std`), charged to its ledger first; the same vector
    again when the run asks again."""
    from fedsynth.strategies.secagg_protocol import masked_noise_std

    z = float(cfg["dp_noise_std"])
    std = masked_noise_std(cfg) if secure_aggregation else site_noise_std(z, 1, secure_aggregation=False)
    again = _released(site, cfg, _DOMAIN_RELEASED, std)
    if again is not None:
        return again
    labels = records.decode_payload(str(cfg["labels"]))
    counts = dp_counts(site.data, site.schema, labels)
    _charge(site, cfg, Release("domain", z, int(cfg["dp_uses"])))
    noisy = add_count_noise(counts, std, random_state=noise_source())
    save_site_state(site, ledger_run_id(cfg), _DOMAIN_RELEASED, 0,
                    {"std": std, "release": ["domain", z, int(cfg["dp_uses"])]}, noisy)
    return noisy


def _label_selection(strategy: Strategy, release: Release, columns: Sequence[str]) -> dict[str, Any]:
    """The threshold a site's label names must clear under the run's budget (:func:`~fedsynth.encoding.dp_domain.
    label_threshold` at the domain's noise multiplier and the threshold's share of δ)."""
    if not columns or strategy.privacy is None:
        return {}
    delta = dp_domain.label_threshold_delta(strategy.privacy)
    return {"dp_label_threshold": dp_domain.label_threshold(release.noise_multiplier, delta, len(columns)),
            "dp_label_delta": delta}


def noisy_label_names(cfg: Mapping[str, Any], site: SiteRuntime, min_count: int = 0) -> dict[str, list[str]]:
    """Site side of a private ``query.secure_labels``: per categorical column without declared categories, the
    labels whose count here plus Gaussian noise of the full σ (the names are seen alone) clears the message's
    threshold, or the site's ``min_count`` when higher (a higher threshold only lowers the chance of naming a rare
    label; :func:`~fedsynth.encoding.dp_domain.select_labels`) — charged to the site's ledger first, the same
    names again when the run asks again."""
    z, tau = float(cfg["dp_noise_std"]), max(float(cfg["dp_label_threshold"]), float(min_count))
    found = load_site_state(site, ledger_run_id(cfg), _LABELS_RELEASED, 0)
    if found is not None and found[0].get("std") == z and found[0].get("threshold") == tau:
        return {str(c): [str(x) for x in names] for c, names in found[0]["labels"].items()}
    # The threshold's delta, from the threshold the site applies (not from the message's statement): the chance
    # that a patient's one-patient labels are named, over the columns the schema leaves undeclared.
    columns = dp_domain.undeclared_categoricals(site.schema)
    delta_tau = dp_domain.label_selection_delta(z, tau, len(columns)) if columns else 0.0
    _charge(site, cfg, Release("domain", z, int(cfg["dp_uses"])), delta=delta_tau)
    names = dp_domain.select_labels(site.data, site.schema, columns, noise_std=z, threshold=tau, random_state=noise_source())
    save_site_state(site, ledger_run_id(cfg), _LABELS_RELEASED, 0,
                    {"std": z, "threshold": tau, "labels": names, "release": ["domain", z, int(cfg["dp_uses"])]},
                    {"n": np.array([sum(len(v) for v in names.values())], dtype=np.int64)})
    return names


def site_releases(site: SiteRuntime, cfg: Mapping[str, Any]) -> list[Release]:
    """What this site itself released before a run's own phases, from its own state (never from a message): the
    hello's noisy row count, the domain's noisy count vector and the label names, as the
    :class:`~fedsynth.privacy.accounting.Release` each was charged at (the label names are ``domain`` uses, as in
    the coordinator's plan). Keyed by the run's ledger id (``dp_run``, else ``run_token``); empty when the site
    released nothing under it."""
    out: list[Release] = []
    for part in (_HELLO_RELEASED, _DOMAIN_RELEASED, _LABELS_RELEASED):
        found = load_site_state(site, ledger_run_id(cfg), part, 0)
        if found is not None and "release" in found[0]:
            phase, z, count = found[0]["release"]
            out.append(Release(str(phase), float(z), int(count)))
    return out


def handle_noisy_counts(msg: Message, site: SiteRuntime) -> RecordDict:
    """``query.noisy_domain_counts``: the site's noisy domain vector in clear (full σ: it is seen alone)."""
    return RecordDict({"counts": records.to_array_record(
        noisy_domain_vector(message_config(msg), site, secure_aggregation=False))})


def private_summary(strategy: Strategy, grid: GridLike, sites: Sequence[SiteInfo]) -> dict[str, Any]:
    """The domain summary from noisy sums over ``sites`` at the run's ``domain`` release (secure aggregation when
    the strategy's ``secure_aggregation`` is on and two sites or more answer, else each site's noisy vector in
    clear), ready for :func:`~fedsynth.encoding.domain.merge_summaries`.

    Raises
    ------
    FedsynthError
        Fewer sites than the strategy's ``min_sites`` answer, or no ``domain`` release is planned.
    """
    release = _release_of(strategy, "domain")
    if release is None:
        raise FedsynthError("private domain: the run plans no domain release (no finite privacy budget)")
    dp_run, n_modes = dp_run_id(strategy), strategy.domain_options()["n_modes"]
    params = strategy.params
    k = int(params["min_category_count"])
    schema = strategy.schema
    undeclared = dp_domain.undeclared_categoricals(schema)
    announced: list[Any] = []
    answered = list(sites)
    n_counts = len(schema.model_columns)
    selection = _label_selection(strategy, release, undeclared)
    if undeclared:  # label names only where the schema declares none, by DP partition selection
        cfg = records.to_config_record({"min_category_count": k, **selection,
                                        **dp_request(dataclasses.replace(release, count=len(undeclared)),
                                                     strategy.run_token_, dp_run, 1)})
        got = strategy.ask(grid, sites, LABELS, lambda s: RecordDict({"config": cfg}), group_id="summary-labels")
        answered = [s for s in sites if s.node_id in got.ok]
        announced = [records.from_payload_record(got.ok[s.node_id]["labels"]) for s in answered]
    labels = candidate_labels(schema, announced)
    for c in schema.model_columns:  # declared categories only where the schema declares them
        if schema[c].categories is not None and c in labels:
            labels[c] = list(schema[c].categories or ())
    shares = noise_shares(len(answered), strategy.min_sites)
    request = {"labels": records.encode_payload(labels),
               **dp_request(dataclasses.replace(release, count=n_counts), strategy.run_token_, dp_run, shares)}
    if bool(params.get("secure_aggregation")) and len(answered) >= 2:
        from fedsynth.strategies.secure_sum import secure_sum

        got_sum = secure_sum(grid, [s.node_id for s in answered], request, source="domain.histograms",
                             modulus_bits=32, timeout=float(params["request_timeout"]), min_sites=shares)
        _record_dropped(strategy, sites, got_sum.dropped, "summary-noisy-counts")
        summed = got_sum.arrays
        in_sum = [s for s in answered if s.node_id in set(got_sum.included)]
        # Each site added sigma**2 / shares and at least `shares` sites are in the sum: it carries >= sigma**2.
        noise_std = release.noise_multiplier * float(np.sqrt(len(in_sum) / shares))
    else:
        content = RecordDict({"config": records.to_config_record(request)})
        got = strategy.ask(grid, answered, NOISY_COUNTS, same_for_all(content), group_id="summary-noisy-counts")
        vectors = [records.from_array_record(got.ok[s.node_id]["counts"]) for s in answered if s.node_id in got.ok]
        summed = {key: np.sum([v[key] for v in vectors], axis=0) for key in vectors[0]}
        in_sum = [s for s in answered if s.node_id in got.ok]
        noise_std = release.noise_multiplier * float(np.sqrt(len(in_sum)))  # each site added the full sigma**2
    holders = {c: [s.name for s in in_sum if c in s.columns] for c in schema.model_columns}
    strategy.domain_privacy_ = {"domain_distributed_noise": noise_calibration(
        len(answered), strategy.min_sites, secure_aggregation=bool(params.get("secure_aggregation")) and len(answered) >= 2),
        **({"label_selection": {**selection, "columns": undeclared, "named": {c: len(labels[c]) for c in undeclared}}}
           if undeclared else {})}
    log.info("private domain: noisy counts of %d sites summed (noise multiplier %.4g, %d uses)", len(in_sum),
             release.noise_multiplier, release.count)
    return noisy_summary(summed, labels, schema, holders=holders, noise_std=noise_std, min_count=k,
                         significant_digits=int(params["significant_digits"]), n_modes=n_modes,
                         random_state=strategy.random_state)


#: The message a site answers for the private domain in clear (the secure path runs through secure_sum's stages).
SITE_HANDLERS: Mapping[str, SiteHandler] = {NOISY_COUNTS: handle_noisy_counts}
