"""The shared domain by secure aggregation: the server learns the sums over sites of the domain summaries, never
one site's.

Under ``secure_aggregation`` :meth:`Strategy.build_domain <fedsynth.strategies.base.Strategy.build_domain>` sends
no ``query.summary`` (each site's own histogram, moments and label counts); instead:

1. ``query.secure_labels`` — each site names, per categorical column, the labels it holds at least ``k`` times
   under its own policy (names, no count; a label rarer than ``k`` at every site is never named);
2. a secure sum of counts (source ``domain.histograms``): per column the rows and missing values, per numeric
   column a histogram on the grid every site shares (:func:`~fedsynth.encoding.domain.histogram_edges`), per
   categorical column the count of each declared or named label, and per candidate endpoint rule whether it
   fails at the site — all exact integers modulo ``2**32``;
3. the server takes coarse bounds from the summed histograms (:func:`~fedsynth.encoding.domain.grid_bounds`);
4. a secure sum in fixed point (source ``domain.moments``) of each numeric column's sum and sum of squares,
   rescaled to [0, 1] within those bounds;
5. the server applies disclosure control to the sums (cells and labels of at least ``k`` rows,
   :func:`~fedsynth.encoding.domain.summary_from_grid`) and merges the result like one site's summary.

What the server sees: label names some site holds ``k`` times, and sums over sites. A label held by fewer than
``k`` patients across the federation is not in the domain (declared or not); no bound or quantile edge is a
patient's value (bounds are coarse grid points, quantile edges are interpolated inside cells of at least ``k``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import Message, RecordDict

from fedsynth.cohort.constraints import EndpointRule
from fedsynth.encoding.domain import (
    candidate_labels,
    frequent_labels,
    grid_bounds,
    grid_counts,
    grid_moments,
    summary_from_grid,
)
from fedsynth.errors import FedsynthError
from fedsynth.strategies import records
from fedsynth.strategies.site import SiteRuntime, site_policy

if TYPE_CHECKING:
    from fedsynth.strategies.base import GridLike, SiteInfo, Strategy

log = logging.getLogger(__name__)

#: Message type of step 1 (label names a site holds at least k times).
LABELS = "query.secure_labels"


def handle_labels(msg: Message, site: SiteRuntime) -> RecordDict:
    """``query.secure_labels``: per categorical column, the labels the site holds at least ``k`` times (its own
    policy's ``min_count``, tightened by the message, never loosened) — names only."""
    policy = site_policy(msg, site)
    return RecordDict({"labels": records.to_payload_record(frequent_labels(site.data, site.schema,
                                                                             min_count=policy.min_count))})


def histogram_vector(request: Mapping[str, Any], site: SiteRuntime) -> dict[str, np.ndarray]:
    """Vector source ``domain.histograms``: :func:`~fedsynth.encoding.domain.grid_counts` of the site's rows over
    the request's candidate labels, and ``rules/fail`` (1 where a candidate endpoint rule fails on a row here)."""
    from fedsynth.cohort.constraints import rule_from_dict, site_answers

    labels = records.decode_payload(str(request["labels"]))
    out = grid_counts(site.data, site.schema, labels)
    raw_rules = records.decode_payload(str(request.get("candidate_rules", "[]")))
    if raw_rules:
        rules = [rule_from_dict(r, site.schema.endpoints) for r in raw_rules]
        out["rules/fail"] = np.array([0 if ok else 1 for ok in site_answers(site.data, rules)], dtype=np.int64)
    return out


def moment_vector(request: Mapping[str, Any], site: SiteRuntime) -> dict[str, np.ndarray]:
    """Vector source ``domain.moments``: :func:`~fedsynth.encoding.domain.grid_moments` within the request's bounds."""
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
    from fedsynth.strategies.base import site_name

    for node, reason in dropped.items():
        strategy.dropped.append({"site": site_name(sites, node), "message_type": "secure sum", "round": step,
                                 "reason": reason})
