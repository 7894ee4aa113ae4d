"""Synthetic-data sharing for any generator: sites release privacy-checked synthetic rows; the server pools them.

Server flow (after the shared domain): one ``train.share`` message per site; each site

1. splits its rows into a training part and a site-internal holdout (``site_holdout_fraction``, default 0.2);
2. fits the generator (shared domain) on the training part and samples ``share_rows`` rows (default: as many
   rows as the site holds);
3. removes exact copies of any of its rows, then runs the release gate
   (:func:`fedsynth.evaluation.gate.release_gate`: the evaluator's Gower distance over the columns it holds,
   its training part as members and its holdout as the baseline; exact copies above their baseline,
   NNDR 5th percentile below the holdout's, membership-inference AUC above 0.6 fail); only then are the rows
   sent. Thresholds: strategy params ``gate_exact_copies_margin``, ``gate_nndr_p5_margin``,
   ``gate_mia_auc_above`` (see :class:`~fedsynth.evaluation.gate.GateThresholds`).

The server pools the rows; with ``refit`` it fits one generator on the pool (the global model), otherwise the
pool itself is what snapshots sample from. A site whose check fails is left out with a scrubbed reason.

Site handler: ``train.share`` -> synthetic rows (category codes / floats) and privacy metrics.

Differential privacy (``privacy: {epsilon, delta}`` in the run config, :attr:`SDSharingStrategy.privacy`):
record-level (ε, δ) for every patient of every site, by post-processing: each site fits its generator on its own
rows with a differentially private mechanism, and the rows it samples from that model inherit the guarantee.
Before anything is released the coordinator asks each site what its ledger still allows
(:func:`~fedsynth.strategies.site_budget.check_site_budgets`). The hello (a noisy lower bound of each site's row count)
and the shared domain (noisy count vectors) are released under the budget, as for every strategy
(:mod:`fedsynth.strategies.secure_domain`); ``train.share`` carries the run's (ε, δ) and those two releases
(``dp_spent``), and each site plans its own noise from its own row count with what they leave, so that the three
compose to exactly the run's (ε, δ), and charges its ledger the whole plan before it trains.

- **VAE-BGM**: DP-SGD (Opacus's ``DPOptimizer``, per-row gradients by ``torch.func``), then the latent mixture
  from Gaussian-noised statistics of clipped codes (:func:`~fedsynth.generators._dp.plan_local_vae`,
  :func:`~fedsynth.generators._dp.fit_vae_bgm_private`); split ``training`` / ``mixture``, DP-SGD's noise
  multiplier calibrated by dp_accounting so that both convert to at most ε at δ.
- **Bayesian network**: structure search and CPDs from noisy count tables of the site's own rows (PrivBayes-style),
  the two-step BN's mechanism and split (:data:`~fedsynth.strategies.two_step_bn.DP_SPLIT`, at most
  :data:`~fedsynth.strategies.two_step_bn.DP_STRUCTURE_TABLES` tables for the structure, the final network's
  families measured afresh with the rest), Gaussian noise of L2 sensitivity 1 per table, clipped at 0.
- **CTGAN** is refused (:data:`DP_NOT_SUPPORTED`).

Noise comes from each site's OS entropy. The model works on the shared domain the message carries (built from
the sites' released summaries, never one site's raw extremes), so its rows hold no value outside it. The gate
under a budget: :data:`GATE_UNDER_DP`. A site that already answered this run (a resumed run asking again) sends
the same rows (or the same refusal) again at no new cost; a retry after a crash before the answer trains again
under the same ledger entry (nothing had left). The manifest's ``privacy`` block holds each site's plan, split and
spending.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from flwr.app import Message, RecordDict

from fedsynth.cohort.constraints import enforce
from fedsynth.cohort.derived import add_derived
from fedsynth.encoding.domain import Domain
from fedsynth.errors import FedsynthError, Problem, ValidationError
from fedsynth.generators._dp import CTGAN_DP_NOT_SUPPORTED
from fedsynth.privacy.accounting import PrivacyAccountant, PrivacyBudget, Release, json_float
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
from fedsynth.strategies.secure_domain import ledger_run_id
from fedsynth.strategies.site import (
    SiteHandler,
    SiteRuntime,
    conform_to_domain,
    load_site_state,
    message_config,
    save_site_state,
    site_generator,
    site_policy,
)

if TYPE_CHECKING:
    from fedsynth.cohort.schema import TableSchema
    from fedsynth.evaluation.gate import GateThresholds

log = logging.getLogger(__name__)


#: Generators a site can fit with differential privacy under SD-sharing.
DP_GENERATORS = frozenset({"vae_bgm", "bayesian_network"})
#: Why the other generators are refused under a privacy budget.
DP_NOT_SUPPORTED: Mapping[str, str] = {"ctgan": CTGAN_DP_NOT_SUPPORTED}

#: What the site's release gate is under a privacy budget (stated in the manifest).
GATE_UNDER_DP = (
    "the site's release gate, when the site's policy asks for it (privacy_check, which a server can switch on, "
    "never off), still decides all or nothing whether the private model's rows leave; its verdict is computed on "
    "the site's real rows and is not covered by the (epsilon, delta) guarantee (a refusal says only that the gate "
    "failed: no figure, no flagged check); its figures are not sent, and no row is removed one by one (exact "
    "copies of real rows are not filtered), so the rows that leave are exactly the private model's sample. It is "
    "kept because a coordinator could otherwise ask for a huge epsilon to skip it; a site whose own policy sets "
    "privacy_check: false releases under the guarantee alone"
)

#: The part of a site's state holding what it answered to ``train.share`` in a private run (by the run's ledger id).
DP_RELEASED = "sd-share-released"


class PrivacyCheckError(FedsynthError):
    """A site's synthetic rows did not pass its own privacy check; nothing was released."""


class SDSharingStrategy(Strategy):
    """Each site trains locally and shares checked synthetic rows; the server pools (and optionally refits).

    Strategy params: ``refit`` (bool, default false), ``privacy_check`` (default true), ``share_rows`` (rows
    per site; default: the site's row count), ``site_holdout_fraction`` (0.2), and the release gate's
    thresholds ``gate_exact_copies_margin`` (0), ``gate_nndr_p5_margin`` (two bootstrap standard errors),
    ``gate_mia_auc_above`` (0.6).

    Under a finite :attr:`privacy` budget the hello and the shared domain are noisy releases under the budget and
    each site fits its generator with differential privacy on what they leave (VAE-BGM, Bayesian network; see the
    module docstring); CTGAN is refused (:data:`DP_NOT_SUPPORTED`, :meth:`check_private_run`) before anything is
    asked.
    """

    name = "sd_sharing"
    #: The run's differential-privacy budget (``None``: plain fits); set from the config's ``privacy`` block.
    privacy: PrivacyBudget | None = None
    #: After :meth:`run` under a budget: each site's plan and spending, the split, the gate's status (manifest).
    privacy_summary_: dict[str, Any] | None = None
    #: Name the sites' ledgers record this run's spending under (stable across a resume; default: the run token).
    privacy_run_id: str | None = None

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
        t0 = time.perf_counter()
        private = self.privacy is not None and not self.privacy.is_infinite
        p = self.params
        cfg: dict[str, Any] = {
            **self.base_config(run_token, domain),
            "privacy_check": bool(p.get("privacy_check", True)),
            "site_holdout_fraction": float(p.get("site_holdout_fraction", 0.2)),
            **{k: float(v) for k, v in p.items() if k in _GATE_PARAMS and v is not None},
        }
        if private:
            assert self.privacy is not None
            # What this run already spent at every site before the fits (its hello and domain releases, planned by
            # plan_private_run and charged to each site's ledger when they left): each site plans its fit with what
            # they leave, so hello, domain and fit compose to the run's (ε, δ).
            spent = [[r.phase, float(r.noise_multiplier), int(r.count)] for r in self.privacy.spent]
            cfg.update(dp_epsilon=float(self.privacy.epsilon), dp_delta=float(self.privacy.delta),
                       dp_run=self.privacy_run_id or run_token, dp_spent=json.dumps(spent))

        if p.get("share_rows"):
            cfg["share_rows"] = int(p["share_rows"])
        # Without share_rows each site samples as many rows as it holds: its own count, which under a budget the
        # server knows only as a noisy lower bound (the hello's).
        content = same_for_all(RecordDict({"config": records.to_config_record(cfg)}))

        got = self.ask(grid, sites, "train.share", content, group_id="share")
        frames = []
        site_metrics: dict[str, dict[str, float]] = {}
        accounts: dict[str, Any] = {}
        for s in sites:
            if s.node_id not in got.ok:
                continue
            reply = got.ok[s.node_id]
            frames.append(records.array_record_to_frame(reply["rows"], domain, self.schema))
            site_metrics[s.name] = {k: float(v) for k, v in records.from_metric_record(reply["metrics"]).items()}
            if "privacy" in reply:
                accounts[s.name] = records.from_payload_record(reply["privacy"])
        if self.privacy is not None:
            self.privacy_summary_ = self._privacy_summary(accounts, self.epsilon_left_)
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

    def check_private_run(self) -> None:
        """Under a finite budget, refuse a generator without a private fit (before the hello: nothing is asked)."""
        if self.privacy is None or self.privacy.is_infinite or self.generator in DP_GENERATORS:
            return
        reason = DP_NOT_SUPPORTED.get(self.generator, "it has no differentially private fit")
        raise ValidationError("Privacy", [Problem(
            "privacy", f"is not supported for sd_sharing with generator {self.generator}: {reason}",
            ", ".join(sorted(DP_GENERATORS)), "remove privacy, or use generator vae_bgm or bayesian_network")])

    def _privacy_summary(self, accounts: Mapping[str, Any], epsilon_left: Mapping[str, float]) -> dict[str, Any]:
        """The manifest's ``privacy`` block: the budget, each releasing site's plan and spending, the split, and
        what the gate is under the budget."""
        assert self.privacy is not None
        budget = {"epsilon": self.privacy.epsilon, "delta": self.privacy.delta}
        if self.privacy.is_infinite:
            return {"budget": {"epsilon": "inf", "delta": self.privacy.delta}, "epsilon_spent": 0.0,
                    "note": "epsilon = inf: no noise, each site's generator is fitted on its exact rows"}
        first: Mapping[str, Any] = next(iter(accounts.values()), {})
        return {
            "budget": budget,
            "accountant": _ACCOUNTANT.get(self.generator, ""),
            "guarantee": "record-level (epsilon, delta) for every patient of every site, inherited by the released "
                         "rows as post-processing of each site's private fit; the run's epsilon is the largest over "
                         "sites",
            "split": first.get("split", {}),
            "split_note": _SPLIT_NOTE.get(self.generator, ""),
            "gate": GATE_UNDER_DP,
            "epsilon_spent": max((float(a.get("epsilon_spent", 0.0)) for a in accounts.values()), default=0.0),
            "sites": dict(accounts),
            "epsilon_left_before": {k: json_float(v) for k, v in epsilon_left.items()},
        }


_ACCOUNTANT = {
    "vae_bgm": "DP-SGD: dp_accounting RDP of the Poisson-sampled Gaussian (noise calibrated by dp_accounting, "
               "clipping and noise by Opacus's DPOptimizer); latent-mixture statistics: Gaussian mechanism; "
               "composition in RDP, (epsilon, delta) by dp_accounting",
    "bayesian_network": "RDP composition of Gaussian count tables (zCDP per phase), (epsilon, delta) by "
                        "dp_accounting",
}
_SPLIT_NOTE = {
    "vae_bgm": "hello (noisy row count) and domain (noisy count vectors) are charged first at their exact cost; of "
               "the rest, the mixture takes its share and training (DP-SGD) what the mixture leaves; each site's "
               "ledger is charged the hello and domain when they leave, and its whole fit before it trains",
    "bayesian_network": "hello (noisy row count) and domain (noisy count vectors) are charged first at their exact "
                        "cost; of the rest, structure: noise for at most DP_STRUCTURE_TABLES tables (the search ends "
                        "on the tables it has when they are spent); parameters: the final network's families measured "
                        "afresh; each site's ledger is charged the hello and domain when they leave, and what they "
                        "leave of the budget before it fits",
}



# -- privacy check (site side) ------------------------------------------------------------------------------


#: Strategy params that set the release gate's thresholds (prefix ``gate_`` + a GateThresholds field).
_GATE_PARAMS = ("gate_exact_copies_margin", "gate_nndr_p5_margin", "gate_mia_auc_above")


def site_gate_thresholds(cfg: Mapping[str, Any]) -> GateThresholds:
    """The release gate's thresholds from a message config (defaults where a param was not set)."""
    from fedsynth.evaluation.gate import GateThresholds  # the evaluation package is heavy: not at a node's start

    return GateThresholds.from_mapping({k[len("gate_"):]: cfg[k] for k in _GATE_PARAMS if k in cfg})


def _drop_exact_copies(synthetic: pd.DataFrame, real: pd.DataFrame, schema: TableSchema) -> pd.DataFrame:
    """``synthetic`` without the rows that copy a row of ``real``, by the release gate's own definition
    (:func:`fedsynth.evaluation.privacy.copied_rows`: equal, or equal up to rounding), so that what the gate would
    count is removed rather than the whole answer refused."""
    from fedsynth.evaluation.privacy import copied_rows

    return synthetic[~copied_rows(real, synthetic, schema)].reset_index(drop=True)


def handle_share(msg: Message, site: SiteRuntime) -> RecordDict:
    """``train.share``: fit locally, sample, drop exact copies, check privacy, then (only then) release rows.

    Under a privacy budget (the message carries ``dp_epsilon``): the fit is private (:func:`_fit_private`, the
    site's ledger charged first), no row is removed one by one and the gate, when the site's policy asks for it,
    decides all or nothing without its figures leaving (:data:`GATE_UNDER_DP`); what was answered is kept, so a
    resumed run asking again gets the same answer at no new cost.
    """
    cfg = message_config(msg)
    # The gate's settings are the site's policy, tightened (never loosened) by what the message asks for.
    policy = site_policy(msg, site)
    if not policy.allow_synthetic_rows:
        raise PrivacyCheckError("the site's policy does not let synthetic rows leave; nothing was released")
    budget = _message_budget(cfg, site)
    if budget is not None and (again := _released_share(site, cfg)) is not None:
        return again
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
    account = None
    if budget is None:
        generator.fit(train)
    else:
        account = _fit_private(generator, train.reset_index(drop=True), site, cfg, budget)
    n_rows = int(policy.max_share_rows or len(data))
    synthetic = generator.sample(n_rows, random_state=int(rng.integers(2**31)))
    synthetic = synthetic[[c for c in site.schema.model_columns if c in synthetic.columns]]
    metrics: dict[str, Any] = {"num_examples": len(data)}
    if budget is None:
        before = len(synthetic)
        synthetic = _drop_exact_copies(synthetic, data, site.schema.select(held))
        metrics["exact_copies_removed"] = before - len(synthetic)
    if check:
        from fedsynth.evaluation.gate import GateThresholds, release_gate

        gate, privacy = release_gate(train, synthetic, site.schema.select(held), holdout_data=holdout,
                                     thresholds=GateThresholds.from_mapping(policy.gate_thresholds()), random_state=rng)
        if budget is None:
            metrics.update({k: v for k, v in gate.figures.items() if v is not None})
            metrics["dcr_share"] = privacy["dcr_share"]
        if not gate.passed:
            if budget is not None:
                # One verdict per run: a resumed run asking again gets the same refusal, not a second draw.
                log.info("site %s: private rows failed the release gate (%s)", site.name, ", ".join(gate.flagged))
                _save_share(site, cfg, None, {}, account)
                raise PrivacyCheckError(_GATE_REFUSED_DP)
            # Figure names only: the values stay at the site.
            raise PrivacyCheckError(
                "synthetic rows failed the site's release gate (" + ", ".join(gate.flagged) + "); nothing was released"
            )
    if len(synthetic) == 0:
        raise PrivacyCheckError("no synthetic row was left after removing exact copies")
    metrics["n_synthetic"] = len(synthetic)
    rows = records.frame_to_array_record(synthetic, domain)
    if account is not None:
        metrics["dp_epsilon_spent"] = float(account["epsilon_spent"])
        _save_share(site, cfg, rows, metrics, account)
        return RecordDict({"rows": rows, "metrics": records.to_metric_record(metrics),
                           "privacy": records.to_payload_record(account)})
    return RecordDict({"rows": rows, "metrics": records.to_metric_record(metrics)})


#: A private run's gate refusal: no figure and no flagged check (their values are outside the guarantee).
_GATE_REFUSED_DP = "rows of the private model failed the release gate of this site; nothing was released"


# -- differential privacy (site side) --------------------------------------------------------------------


def _message_budget(cfg: Mapping[str, Any], site: SiteRuntime) -> PrivacyBudget | None:
    """The run's (ε, δ) a private ``train.share`` carries, with the releases the run already made at the site
    (hello, domain) recorded as spent; ``None`` for a plain one.

    What was spent is, per phase, the larger of the coordinator's statement (``dp_spent``) and the site's own
    record of what it released under the run's id (:func:`~fedsynth.strategies.secure_domain.site_releases`), so
    a coordinator that under-reports the hello or the domain gets no extra budget for the fit."""
    if "dp_epsilon" not in cfg:
        return None
    from fedsynth.privacy.accounting import Release, larger_per_phase
    from fedsynth.strategies.secure_domain import site_releases

    claimed = [Release(str(phase), float(z), int(count))
               for phase, z, count in json.loads(str(cfg.get("dp_spent", "[]")))]
    spent = larger_per_phase(claimed, site_releases(site, cfg))
    return PrivacyBudget(float(cfg["dp_epsilon"]), float(cfg["dp_delta"])).spending(*spent)


def _save_share(site: SiteRuntime, cfg: Mapping[str, Any], rows: Any, metrics: Mapping[str, Any],
                account: Mapping[str, Any] | None) -> None:
    """Keep what the site answered in this private run (its rows, or ``None`` for the gate's refusal)."""
    arrays = {} if rows is None else records.from_array_record(rows)
    save_site_state(site, ledger_run_id(cfg), DP_RELEASED, 0,
                    {"released": rows is not None, "metrics": dict(metrics), "account": dict(account or {})}, arrays)


def _released_share(site: SiteRuntime, cfg: Mapping[str, Any]) -> RecordDict | None:
    """What the site already answered in this private run (a resumed run asking again), or ``None``: the same
    rows, or the same refusal. Sending them again adds no information and costs nothing; fitting again would."""
    found = load_site_state(site, ledger_run_id(cfg), DP_RELEASED, 0)
    if found is None:
        return None
    meta, arrays = found
    if not meta.get("released"):
        raise PrivacyCheckError(_GATE_REFUSED_DP)
    return RecordDict({"rows": records.to_array_record(arrays), "metrics": records.to_metric_record(meta["metrics"]),
                       "privacy": records.to_payload_record(meta["account"])})


def _charge_plan(site: SiteRuntime, cfg: Mapping[str, Any], rdp: Callable[[Sequence[float]], np.ndarray]) -> float:
    """Charge the site's ledger the whole private fit before it starts (refused past the site's budget); the
    same fit of the same run retried after a crash is not charged twice. Returns the ε the ledger was charged
    (``nan`` without a ledger)."""
    ledger = site.privacy_ledger
    if ledger is None:
        return float("nan")
    from fedsynth.privacy.accounting import epsilon_from_rdp

    curve = np.asarray(rdp(ledger.orders), dtype=float)
    ledger.record(site.name, ledger_run_id(cfg), f"sd_sharing/{cfg['generator']}", curve)
    return epsilon_from_rdp(curve, ledger.budget.delta, ledger.orders)


def _fit_private(generator: Any, train: pd.DataFrame, site: SiteRuntime, cfg: Mapping[str, Any],
                 budget: PrivacyBudget) -> dict[str, Any]:
    """Fit ``generator`` on ``train`` with differential privacy within ``budget``, after charging the site's
    ledger; returns the site's account (plan, split, spending) for the manifest.

    Raises
    ------
    PrivacyCheckError
        For a generator without a private fit (a coordinator must not get a plain fit by asking for it).
    BudgetExceededError
        When the site's ledger does not allow the fit (nothing was trained).
    """
    name = str(cfg["generator"])
    if name == "vae_bgm":
        from fedsynth.generators._dp import fit_vae_bgm_private, plan_local_vae

        plan = plan_local_vae(budget, len(train), int(generator.params.batch_size), int(generator.params.epochs))
        charged = _charge_plan(site, cfg, plan.rdp)
        fit_vae_bgm_private(generator, train, plan)
        accountant = plan.accountant()
        details: dict[str, Any] = plan.to_dict()
    elif name == "bayesian_network":
        from fedsynth.strategies.two_step_bn import DP_SPLIT

        accountant = PrivacyAccountant(budget, DP_SPLIT)
        rho = accountant.rho_total_ - budget.spent_rho  # the hello and domain were charged when they were sent
        charged = _charge_plan(site, cfg, lambda orders: np.asarray(orders, dtype=float) * rho)
        details = _fit_bn_private(generator, train, accountant)
    else:
        raise PrivacyCheckError(f"generator {name} has no differentially private fit at this site; nothing was "
                                "released")
    summary = accountant.summary()
    return {"generator": name, **details, **summary, "n_train_rows": len(train),
            "ledger_charged_epsilon": charged}


def _fit_bn_private(generator: Any, train: pd.DataFrame, accountant: PrivacyAccountant) -> dict[str, Any]:
    """The Bayesian network from noisy count tables of the site's own rows (the two-step BN's mechanism at one
    site): hill climbing on noisy tables while the structure phase's share lasts, then every family of the final
    network measured afresh with the parameter phase's share. Noise from OS entropy; sums clipped at 0 by the
    oracle (post-processing). Returns the noise multipliers and table counts."""
    from fedsynth.generators.bayesian_network import Family, SummedCountOracle, family_key
    from fedsynth.privacy.noise import add_count_noise
    from fedsynth.strategies.two_step_bn import DP_STRUCTURE_TABLES

    exact = generator.make_oracle(train)  # exact counts: they never leave this function
    rng = np.random.default_rng()  # OS entropy: whoever knows the run's seeds cannot subtract the noise
    used = {"structure": 0, "parameters": 0}
    noise = {"structure": accountant.noise_multiplier("structure", DP_STRUCTURE_TABLES), "parameters": 0.0}

    def fetch(families: list[Family], phase: str) -> list[dict[Family, np.ndarray]]:
        z = noise["structure"] if phase == "structure" else accountant.noise_multiplier(phase, len(families))
        if phase == "structure":
            room = accountant.uses_left(phase, z)
            if room < len(families):
                log.warning("private BN: structure budget spent; %d of %d families not measured",
                            len(families) - room, len(families))
                families = families[:room]
        else:
            noise["parameters"] = z
        if not families:
            return [{}]
        accountant.charge(Release(phase, z, len(families)))  # before the tables are drawn
        used[phase] += len(families)
        tables = exact.family_counts(families)
        noisy = add_count_noise({family_key(f): a for f, a in tables.items()}, z, random_state=rng)
        return [{f: noisy[family_key(f)] for f in tables}]

    edges = generator.learn_structure(SummedCountOracle(lambda f: fetch(f, "structure"), look_ahead=0))
    generator.learn_parameters(SummedCountOracle(lambda f: fetch(f, "parameters"), look_ahead=0), edges)
    return {"structure_noise_multiplier": noise["structure"], "structure_tables": used["structure"],
            "structure_tables_max": DP_STRUCTURE_TABLES, "parameters_noise_multiplier": noise["parameters"],
            "parameters_tables": used["parameters"], "n_edges": len(edges)}


SITE_HANDLERS: Mapping[str, SiteHandler] = {"train.share": handle_share}
