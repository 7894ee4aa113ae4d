"""Synthetic-data sharing for any generator: sites release privacy-checked synthetic rows; the server pools them.

Server flow (after the shared domain): one ``train.share`` message per site; each site

1. splits its rows into a training part and a site-internal holdout (``site_holdout_fraction``, default 0.2);
2. fits the generator (shared domain) on the training part and samples ``share_rows`` rows (default: as many
   rows as the site holds);
3. removes exact copies of any of its rows, then runs the release gate
   (:func:`fedsynth.evaluation.gate.release_gate`: the evaluator's Gower distance over the columns it holds,
   its training part as members and its holdout as the baseline; exact copies above the holdout's own rate,
   NNDR 5th percentile below the holdout's, membership-inference AUC above 0.6 fail); only then are the rows
   sent. Thresholds: strategy params ``gate_exact_copies_margin``, ``gate_nndr_p5_margin``,
   ``gate_mia_auc_above`` (see :class:`~fedsynth.evaluation.gate.GateThresholds`).

The server pools the rows; with ``refit`` it fits one generator on the pool (the global model), otherwise the
pool itself is what snapshots sample from. A site whose check fails is left out with a scrubbed reason.

Site handler: ``train.share`` -> synthetic rows (category codes / floats) and privacy metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from flwr.app import Message, RecordDict

from fedsynth.cohort.constraints import enforce
from fedsynth.cohort.derived import add_derived
from fedsynth.encoding.domain import Domain
from fedsynth.errors import FedsynthError, Problem, ValidationError
from fedsynth.strategies import records
from fedsynth.strategies.base import GridLike, OnRound, RoundResult, SiteInfo, Strategy, StrategyResult, site_name
from fedsynth.strategies.site import (
    SiteHandler,
    SiteRuntime,
    conform_to_domain,
    message_config,
    site_generator,
    site_policy,
)

if TYPE_CHECKING:
    from fedsynth.evaluation.gate import GateThresholds

log = logging.getLogger(__name__)


#: Why SD-sharing refuses a privacy budget: the released rows would carry no guarantee.
DP_NOT_SUPPORTED = (
    "a site's local generator is not fitted with differential privacy (VAE-BGM's local fit puts a mixture on raw "
    "latent codes, the Bayesian network's uses exact counts, and the release gate decides on the real rows), so "
    "its released rows would carry no guarantee"
)


class PrivacyCheckError(FedsynthError):
    """A site's synthetic rows did not pass its own privacy check; nothing was released."""


class SDSharingStrategy(Strategy):
    """Each site trains locally and shares checked synthetic rows; the server pools (and optionally refits).

    Strategy params: ``refit`` (bool, default false), ``privacy_check`` (default true), ``share_rows`` (rows
    per site; default: the site's row count), ``site_holdout_fraction`` (0.2), and the release gate's
    thresholds ``gate_exact_copies_margin`` (0), ``gate_nndr_p5_margin`` (two bootstrap standard errors),
    ``gate_mia_auc_above`` (0.6).

    Differential privacy is not supported (:data:`DP_NOT_SUPPORTED`): a finite :attr:`privacy` budget is refused
    before any site is asked for rows.
    """

    name = "sd_sharing"
    #: The run's differential-privacy budget; only ``None`` or ε = ∞ is accepted (see :data:`DP_NOT_SUPPORTED`).
    privacy: Any = None

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
        if self.privacy is not None and not self.privacy.is_infinite:
            raise ValidationError("Privacy", [Problem("privacy", f"is not supported with strategy sd_sharing: "
                                                      f"{DP_NOT_SUPPORTED}", "two_step_bn, or fedavg with vae_bgm",
                                                      "remove privacy, or change the strategy")])
        t0 = time.perf_counter()
        p = self.params
        cfg = {
            **self.base_config(run_token, domain),
            "privacy_check": bool(p.get("privacy_check", True)),
            "site_holdout_fraction": float(p.get("site_holdout_fraction", 0.2)),
            **{k: float(v) for k, v in p.items() if k in _GATE_PARAMS and v is not None},
        }

        def content(s: SiteInfo) -> RecordDict:
            n = int(p.get("share_rows") or s.n_rows)
            return RecordDict({"config": records.to_config_record({**cfg, "share_rows": n})})

        got = self.ask(grid, sites, "train.share", content, group_id="share")
        frames = []
        site_metrics: dict[str, dict[str, float]] = {}
        for s in sites:
            if s.node_id not in got.ok:
                continue
            reply = got.ok[s.node_id]
            frames.append(records.array_record_to_frame(reply["rows"], domain, self.schema))
            site_metrics[s.name] = {k: float(v) for k, v in records.from_metric_record(reply["metrics"]).items()}
        pooled = pd.concat(frames, ignore_index=True)
        pooled = self.schema.select(self.schema.model_columns).coerce(pooled)
        # Sites sampled under their own schema; the rules learnt from every site's answers hold in the pool too.
        floors = {ep.duration_col: domain[ep.duration_col].lower for ep in self.schema.endpoints
                  if ep.duration_col in domain.columns}
        pooled = enforce(pooled, self.schema.constraints, floors=floors)
        pooled = add_derived(pooled, self.schema.select(self.schema.data_columns)).reset_index(drop=True)
        generator = None
        if bool(p.get("refit", False)):
            generator = self.new_generator(domain, random_state=self.random_state)
            generator.fit(pooled[[c for c in self.schema.model_columns if c in pooled.columns]])
        left_out = {site_name(sites, n): r for n, r in got.failed.items()}
        rr = RoundResult(1, label, generator, synthetic=pooled, site_metrics=site_metrics, left_out=left_out,
                         seconds=time.perf_counter() - t0)
        log.info("sd_sharing (%s): pooled %d synthetic rows from %d sites", label, len(pooled), len(frames))
        if on_round is not None:
            on_round(rr)
        return StrategyResult(self.name, generator, domain, list(sites), [rr.summary()], left_out, synthetic=pooled)



# -- privacy check (site side) ------------------------------------------------------------------------------


#: Strategy params that set the release gate's thresholds (prefix ``gate_`` + a GateThresholds field).
_GATE_PARAMS = ("gate_exact_copies_margin", "gate_nndr_p5_margin", "gate_mia_auc_above")


def site_gate_thresholds(cfg: Mapping[str, Any]) -> GateThresholds:
    """The release gate's thresholds from a message config (defaults where a param was not set)."""
    from fedsynth.evaluation.gate import GateThresholds  # the evaluation package is heavy: not at a node's start

    return GateThresholds.from_mapping({k[len("gate_"):]: cfg[k] for k in _GATE_PARAMS if k in cfg})


def _drop_exact_copies(synthetic: pd.DataFrame, real: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    def keys(frame: pd.DataFrame) -> pd.Series:
        return frame[list(columns)].astype("object").where(frame[list(columns)].notna(), "<NA>").astype(str).agg("|".join, axis=1)

    real_keys = set(keys(real))
    mask = ~keys(synthetic).isin(real_keys).to_numpy()
    return synthetic[mask].reset_index(drop=True)


def handle_share(msg: Message, site: SiteRuntime) -> RecordDict:
    """``train.share``: fit locally, sample, drop exact copies, check privacy, then (only then) release rows."""
    cfg = message_config(msg)
    # The gate's settings are the site's policy, tightened (never loosened) by what the message asks for.
    policy = site_policy(msg, site)
    if not policy.allow_synthetic_rows:
        raise PrivacyCheckError("the site's policy does not let synthetic rows leave; nothing was released")
    domain = records.domain_from_text(str(cfg["domain"]))
    data = conform_to_domain(site.data, domain).reset_index(drop=True)
    rng = np.random.default_rng(site.seed)
    check = policy.privacy_check
    held = [c for c in site.schema.model_columns if c in data.columns and c in domain.columns]
    if check:
        n_hold = max(round(len(data) * float(cfg.get("site_holdout_fraction", 0.2))), 2)
        perm = rng.permutation(len(data))
        holdout, train = data.iloc[perm[:n_hold]], data.iloc[perm[n_hold:]]
    else:
        holdout, train = data.iloc[:0], data
    generator = site_generator(cfg, site, domain)
    generator.fit(train)
    n_rows = int(policy.max_share_rows or len(data))
    synthetic = generator.sample(n_rows, random_state=int(rng.integers(2**31)))
    synthetic = synthetic[[c for c in site.schema.model_columns if c in synthetic.columns]]
    before = len(synthetic)
    synthetic = _drop_exact_copies(synthetic, data, held)
    metrics: dict[str, Any] = {"num_examples": len(data), "exact_copies_removed": before - len(synthetic)}
    if check:
        from fedsynth.evaluation.gate import GateThresholds, release_gate

        gate, privacy = release_gate(train, synthetic, site.schema.select(held), holdout_data=holdout,
                                     thresholds=GateThresholds.from_mapping(policy.gate_thresholds()), random_state=rng)
        metrics.update({k: v for k, v in gate.figures.items() if v is not None})
        metrics["dcr_share"] = privacy["dcr_share"]
        if not gate.passed:
            # Figure names only: the values stay at the site.
            raise PrivacyCheckError(
                "synthetic rows failed the site's release gate (" + ", ".join(gate.flagged) + "); nothing was released"
            )
    if len(synthetic) == 0:
        raise PrivacyCheckError("no synthetic row was left after removing exact copies")
    metrics["n_synthetic"] = len(synthetic)
    return RecordDict(
        {"rows": records.frame_to_array_record(synthetic, domain), "metrics": records.to_metric_record(metrics)}
    )


SITE_HANDLERS: Mapping[str, SiteHandler] = {"train.share": handle_share}
