"""Scores without pooled data: each site scores a synthetic snapshot against its own rows; the server combines.

In a deployment the coordinator holds no real rows, so it cannot score a round's snapshot the way a simulated
run does (against the pooled training rows and holdout). Instead:

1. the server sends the snapshot — synthetic rows only, going *to* the sites — with ``evaluate.snapshot``;
2. each site scores it against its own training rows (fidelity: CSF, GSF, column and pair fidelity, tests
   passed; privacy: NNDR) and, when it keeps a holdout of its own rows that never trained the model, against that
   holdout (NNDR baseline, DCR share, membership-inference AUC, exact copies of holdout rows) — the definitions
   of :mod:`fedsynth.evaluation` — and replies with aggregate figures only: its row counts and one number per
   figure, rounded to its policy's ``significant_digits``. No row, distance or per-column value leaves the site.
   A site with fewer than its policy's ``min_count`` rows refuses; holdout figures are left out when its
   holdout has fewer than ``min_count`` rows (a percentile over a handful of rows is one patient's value);
3. the server combines the figures over the sites that answered (:data:`FIGURES` says how, per figure): a mean
   weighted by each site's training rows, a mean weighted by its holdout rows for the holdout-based figures,
   and a sum for exact copies (an upper bound of the pooled share).

A site's holdout is a second file of its own rows, kept out of training: ``holdout-path`` in the node's config
(``fedsynth site start --holdout FILE``; by default ``<data>.holdout.csv`` beside the data file when present).
Without one, the site returns no holdout figures.

The combined figures are not the pooled ones: a nearest neighbour is searched within one site's rows, and
significance-based components (clinical-survival, gene-pair and gene-survival agreement) use each site's own
tests. The report of a deployed run says so (:func:`method_lines`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import Message, RecordDict

from fedsynth.cohort.schema import TableSchema
from fedsynth.encoding.domain import Domain
from fedsynth.strategies import records
from fedsynth.strategies.base import Strategy
from fedsynth.strategies.exchange import SiteInfo, same_for_all
from fedsynth.strategies.policy import DisclosureRefused
from fedsynth.strategies.site import SiteHandler, SiteRuntime, message_config, site_policy

log = logging.getLogger(__name__)

#: The message a site answers with its scores of a snapshot.
MESSAGE_TYPE = "evaluate.snapshot"

#: How the server combines each figure over the sites that returned it, and what it is. ``rows``: mean weighted
#: by the sites' training rows; ``holdout``: mean weighted by their holdout rows; ``sum``: summed over sites.
FIGURES: dict[str, tuple[str, str]] = {
    "csf": ("rows", "CSF of the snapshot against the site's training rows"),
    "gsf": ("rows", "GSF of the snapshot against the site's training rows"),
    "column_fidelity": ("rows", "mean column fidelity (1 - KS / 1 - TVD)"),
    "pair_fidelity": ("rows", "mean pair fidelity (correlation / contingency similarity)"),
    "tests_passed": ("rows", "share of columns whose KS / chi-square test has p >= 0.05"),
    "nndr_mean": ("rows", "NNDR of synthetic rows to the site's training rows, mean"),
    "nndr_p5": ("rows", "NNDR of synthetic rows to the site's training rows, 5th percentile"),
    "exact_copies": ("sum", "share of synthetic rows that copy a training row of the site"),
    "nndr_holdout_mean": ("holdout", "NNDR of the site's holdout rows to its training rows, mean (baseline)"),
    "nndr_holdout_p5": ("holdout", "NNDR of the site's holdout rows to its training rows, 5th percentile (baseline)"),
    "dcr_share": ("holdout", "share of synthetic rows closer to a training sample than to the site's holdout"),
    "mia_auc": ("holdout", "membership-inference AUC, the site's training rows against its holdout"),
    "exact_copies_holdout": ("holdout", "share of the site's holdout rows that copy one of its training rows"),
}

#: Prefixes of the CSF and GSF components (``csf_component.<name>``), combined like ``csf``/``gsf``.
COMPONENT_PREFIXES = {"csf_components": "csf_component.", "gsf_components": "gsf_component."}

#: What each way of combining means, as the report states it.
COMBINED_BY = {
    "rows": "mean over the sites that answered, weighted by their training rows",
    "holdout": "mean over the sites with a holdout, weighted by their holdout rows",
    "sum": "sum over the sites that answered (an upper bound of the pooled share: a synthetic row may copy rows "
           "at two sites)",
}


# -- at the site ------------------------------------------------------------------------------------------


def site_figures(
    real_data: pd.DataFrame,
    synthetic_data: pd.DataFrame,
    schema: TableSchema,
    holdout_data: pd.DataFrame | None,
    *,
    random_state: int,
) -> dict[str, float]:
    """The figures of :data:`FIGURES` (and CSF/GSF components) of one snapshot against one site's rows.

    Parameters
    ----------
    real_data : DataFrame
        The site's training rows (``schema``'s columns).
    synthetic_data : DataFrame
        The snapshot, on the same columns.
    schema : TableSchema
        The columns scored (the federation's schema restricted to the columns the site holds).
    holdout_data : DataFrame, optional
        The site's own holdout (rows that never trained the model); ``None``: no holdout figures.
    random_state : int
        Seed of the scores' sampling (the run's seed, so every site and the simulation draw alike).

    Returns
    -------
    dict of str to float
        Figure name -> value; undefined figures are left out.
    """
    from fedsynth.evaluation import quick_scores
    from fedsynth.evaluation.privacy import privacy_analysis

    scores = quick_scores(real_data, synthetic_data, schema, holdout_data=holdout_data, random_state=random_state)
    nndr = scores.get("nndr") or {}
    syn = nndr.get("synthetic") or {}
    hold = nndr.get("holdout") or {}
    out: dict[str, Any] = {
        "csf": scores.get("csf"), "gsf": scores.get("gsf"), "column_fidelity": scores.get("column_fidelity"),
        "pair_fidelity": scores.get("pair_fidelity"), "tests_passed": scores.get("tests_passed"),
        "nndr_mean": syn.get("mean"), "nndr_p5": syn.get("p5"),
        "nndr_holdout_mean": hold.get("mean"), "nndr_holdout_p5": hold.get("p5"),
    }
    for key, prefix in COMPONENT_PREFIXES.items():
        for name, value in dict(scores.get(key) or {}).items():
            out[prefix + str(name)] = value
    priv = privacy_analysis(real_data.reset_index(drop=True), synthetic_data.reset_index(drop=True), schema,
                            holdout_data=None if holdout_data is None else holdout_data.reset_index(drop=True),
                            rng=np.random.default_rng(random_state))
    out["exact_copies"] = priv.get("exact_copies")
    if holdout_data is not None:
        out.update(dcr_share=priv.get("dcr_share"), mia_auc=priv.get("mia_auc"),
                   exact_copies_holdout=priv.get("exact_copies_holdout"))
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float)) and np.isfinite(float(v))}


def _significant(x: float, digits: int) -> float:
    return float(f"{x:.{digits}g}")


def handle_snapshot(msg: Message, site: SiteRuntime) -> RecordDict:
    """``evaluate.snapshot``: the site's aggregate figures of the snapshot the message carries.

    Reply: ``info`` (the site's name) and ``scores`` (a flat metric record: ``num-examples``, ``holdout-rows``
    and one number per figure, rounded to the policy's ``significant_digits``). Refused (an error reply) when
    the site holds fewer rows than its policy's ``min_count``.
    """
    cfg = message_config(msg)
    policy = site_policy(msg, site)
    if len(site.data) < max(policy.min_count, 2):
        raise DisclosureRefused("the site holds fewer rows than its policy's min_count: it releases no scores")
    held = [c for c in site.schema.model_columns if c in site.data.columns]
    schema = site.schema if len(held) == len(site.schema.model_columns) else site.schema.select(held)
    domain = records.domain_from_text(str(cfg["domain"]))
    synthetic = records.array_record_to_frame(msg.content["rows"], domain, schema)
    holdout = site.holdout
    if holdout is not None:
        holdout = holdout[[c for c in held if c in holdout.columns]] if len(holdout) >= max(policy.min_count, 2) else None
        if holdout is not None and list(holdout.columns) != held:
            log.warning("site %s: its holdout lacks columns its rows hold; no holdout figures", site.name)
            holdout = None
    figures = site_figures(site.data[held], synthetic[held], schema, holdout, random_state=int(cfg.get("seed", 0)))
    released = {k: _significant(v, policy.significant_digits) for k, v in figures.items()}
    metrics = {"num_examples": len(site.data), "holdout_rows": 0 if holdout is None else len(holdout), **released}
    return RecordDict({
        "info": records.to_config_record({"site_name": site.name}),
        "scores": records.to_metric_record(metrics),
    })


#: Site handlers of this module (message type -> handler).
SITE_HANDLERS: dict[str, SiteHandler] = {MESSAGE_TYPE: handle_snapshot}


# -- at the server -----------------------------------------------------------------------------------------


@dataclass
class SiteScores:
    """A snapshot's figures from the sites: combined, per site, and which sites were left out and why."""

    combined: dict[str, float]
    per_site: dict[str, dict[str, float]] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)

    def as_scores(self) -> dict[str, Any]:
        """The combined figures shaped as :func:`fedsynth.evaluation.quick_scores` returns them (``csf``,
        ``gsf``, ``nndr`` with ``synthetic``/``holdout``, components ...), plus the privacy figures, the figures
        per site and the sites left out."""
        c = self.combined

        def components(prefix: str) -> dict[str, float]:
            return {k[len(prefix):]: v for k, v in c.items() if k.startswith(prefix)}

        holdout = ({"mean": c.get("nndr_holdout_mean"), "p5": c.get("nndr_holdout_p5")}
                   if "nndr_holdout_mean" in c else None)
        out: dict[str, Any] = {
            "csf": c.get("csf"), "gsf": c.get("gsf"),
            "csf_components": components(COMPONENT_PREFIXES["csf_components"]),
            "gsf_components": components(COMPONENT_PREFIXES["gsf_components"]),
            "nndr": {"synthetic": {"mean": c.get("nndr_mean"), "p5": c.get("nndr_p5")}, "holdout": holdout},
            "nndr_p5": c.get("nndr_p5"),
        }
        for key in ("column_fidelity", "pair_fidelity", "tests_passed", "dcr_share", "mia_auc", "exact_copies",
                    "exact_copies_holdout"):
            if key in c:
                out[key] = c[key]
        out["scored_at_sites"] = {site: {"rows": int(f.get("num_examples", 0)), "holdout_rows": int(f.get("holdout_rows", 0))}
                                  for site, f in self.per_site.items()}
        out["site_scores"] = self.per_site
        out["scoring_left_out"] = self.left_out
        return out


def how_combined(figure: str) -> str:
    """``rows``, ``holdout`` or ``sum``: how :func:`combine` combines ``figure``."""
    if figure in FIGURES:
        return FIGURES[figure][0]
    return "rows"  # CSF/GSF components, like CSF and GSF


def combine(per_site: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Combine the sites' figures (:data:`FIGURES`): weighted means by training or holdout rows, or sums.

    A figure is combined over the sites that returned it; a site's weight is its ``num_examples`` (training
    rows) or ``holdout_rows``.
    """
    names = sorted({k for f in per_site.values() for k in f if k not in ("num_examples", "holdout_rows")})
    out: dict[str, float] = {}
    for name in names:
        how = how_combined(name)
        have = [f for f in per_site.values() if name in f]
        if how == "sum":
            out[name] = float(sum(f[name] for f in have))
            continue
        weight_key = "holdout_rows" if how == "holdout" else "num_examples"
        weights = np.array([float(f.get(weight_key, 0)) for f in have])
        if weights.sum() <= 0:
            continue
        out[name] = float(np.dot(weights, [f[name] for f in have]) / weights.sum())
    return out


def score_at_sites(
    strategy: Strategy,
    grid: Any,
    sites: Sequence[SiteInfo],
    synthetic: pd.DataFrame,
    domain: Domain,
    *,
    seed: int,
    server_round: int,
) -> SiteScores:
    """Send the snapshot ``synthetic`` to ``sites`` and combine the figures they return.

    The request goes through :meth:`Strategy.ask` (the strategy's ``request_timeout``; a silent or failing site
    is left out of the scores and recorded among the strategy's dropped sites); it never fails the run: with no
    answer at all, the combined figures are empty.
    """
    cfg = records.to_config_record({"domain": records.domain_to_text(domain), "seed": int(seed),
                                    "min_category_count": int(strategy.params["min_category_count"]),
                                    "significant_digits": int(strategy.params["significant_digits"])})
    content = RecordDict({"config": cfg, "rows": records.frame_to_array_record(synthetic, domain)})
    got = strategy.ask(grid, sites, MESSAGE_TYPE, same_for_all(content), group_id=f"score-{server_round:03d}",
                       min_sites=0)
    per_site: dict[str, dict[str, float]] = {}
    for s in sites:
        if s.node_id in got.ok:
            reply = got.ok[s.node_id]
            name = str(records.from_config_record(reply["info"]).get("site_name", s.name))
            per_site[name] = {k: float(v) for k, v in records.from_metric_record(reply["scores"]).items()}
    left_out = {next((s.name for s in sites if s.node_id == node), str(node)): reason
                for node, reason in got.failed.items()}
    return SiteScores(combine(per_site), per_site, left_out)


def method_lines() -> list[list[str]]:
    """One row per figure: its name, what it is, how the sites' values were combined (for the report)."""
    rows = [[name, what, COMBINED_BY[how]] for name, (how, what) in FIGURES.items()]
    rows.append(["csf_component.* / gsf_component.*", "the components of CSF and GSF, each at the site",
                 COMBINED_BY["rows"]])
    return rows

