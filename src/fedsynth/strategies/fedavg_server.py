"""Federated averaging for weight-based generators (CTGAN, VAE-BGM), with VAE-BGM's global latent mixture: the
server side (the :class:`FedAvgStrategy`: what it asks, how it aggregates, its rounds and privacy plan).

What a site does with each FedAvg message is in :mod:`fedsynth.strategies.fedavg_site`.

Server flow (after the shared domain):

1. the server builds the global generator on the domain and takes its initial weights;
2. each round, every site receives the global weights (``train.fit``), trains ``local_epochs`` epochs on its
   own rows with :meth:`partial_fit` and returns its weights and ``num-examples``; the server averages the
   weights weighted by ``num-examples`` (sites that failed are left out of that round);
3. for a generator with a latent mixture (VAE-BGM), the server then fits the *global* mixture by federated
   variational EM: ``query.mixture_init`` (global weights in; the site computes its latent codes, keeps them in
   its node state and returns their moments) and ``query.mixture_estep`` (current mixture in, responsibility-
   weighted sufficient statistics out), M-step on the server. Codes never leave a site. From round 2 the EM
   starts from the previous round's mixture (warm start); without secure aggregation or a privacy budget it goes
   out with ``query.mixture_init`` and the sites answer the first E-step in the same reply (``estep``), one
   message round fewer per round;
4. after the last round's mixture, ``query.component_counts`` (mixture in): per component, responsibility-weighted
   counts of each categorical column's labels (:mod:`fedsynth.generators.component_counts`), summed on the
   server; conditional sampling draws components by them.

Site handlers (:mod:`fedsynth.strategies.fedavg_site`, re-exported here as :data:`SITE_HANDLERS`): ``train.fit``,
``query.mixture_init``, ``query.mixture_estep``, ``query.component_counts``, ``query.survival_counts`` (after the
last round, not under a privacy budget: the survival calibration's events and person-time per stratum level).

Differential privacy (``privacy: {epsilon, delta}`` in the run config, :attr:`FedAvgStrategy.privacy`; VAE-BGM
only): record-level (ε, δ) for every patient of every site. Before anything is released the coordinator asks each
site what its ledger still allows (:func:`~fedsynth.strategies.site_budget.check_site_budgets`). The budget is split
(:mod:`fedsynth.strategies.fedavg_dp`: ``DP_SPLIT`` and the plan, ``DPPlan``): the latent-mixture statistics
get ``DP_MIXTURE_SHARE`` of the run's zCDP ρ (the Gaussian mechanism on clipped codes,
:mod:`fedsynth.generators._dp`; one initial request and ``DP_MIXTURE_ITERS`` EM iterations, after the last round
only), and DP-SGD takes the remainder: each site's noise multiplier is
calibrated by dp_accounting for its sampling rate (batch size over the hello's noisy lower bound of its row
count) and its steps over the whole run (rounds × local epochs × steps per epoch), composed with the hello's,
the domain's and the mixture's releases, so the whole run converts to exactly ε at δ. ``train.fit`` carries the
rate and steps and the site trains at exactly those (no exact row count is needed at the server, and none leaves
the site: a site's update is weighed by the hello's noisy count). The server's accountant (one per site) charges every round before it is asked for; a site with a
ledger charges its own before it answers, and a site that already released a round of this run (a resumed run
asking for it again) sends the same weights again, at no new cost. The hello and the domain summaries are
released under this budget too (:mod:`fedsynth.strategies.secure_domain`). The spent budget goes into the
run manifest (``privacy``), per site and for the run (the largest over sites). Under a privacy budget the per-component label counts (step 4) are not asked for: they are outside the
accounting, so conditional sampling then rejects rows only.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import RecordDict

from fedsynth.encoding.domain import Domain
from fedsynth.errors import CapabilityError, Problem, ValidationError
from fedsynth.generators.base import SupportsLatentMixture, SupportsWeights
from fedsynth.generators.component_counts import sum_component_counts
from fedsynth.generators.latent_mixture import MixtureParams, fit_latent_mixture_federated
from fedsynth.privacy.accounting import (
    PrivacyAccountant,
    PrivacyBudget,
)
from fedsynth.strategies import fedavg_site, records
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
from fedsynth.strategies.fedavg_dp import (
    DP_CODE_CLIP,
    DP_GENERATORS,
    DP_MIXTURE_ITERS,
    DP_NOT_SUPPORTED,
    DP_SPLIT,
    DPPlan,
)
from fedsynth.strategies.registry import generator_accepts
from fedsynth.strategies.site import SiteHandler

log = logging.getLogger(__name__)

#: Who the round metrics belong to under secure aggregation (the row-weighted means over the sites).
SECURE_SUM_LABEL = "(secure sum)"


def weighted_average(updates: Sequence[tuple[Mapping[str, np.ndarray], float]]) -> dict[str, np.ndarray]:
    """Average named weights, each update weighted by its row count (``num-examples``); dtypes are kept."""
    if not updates:
        raise ValueError("no updates to average")
    total = float(sum(n for _, n in updates))
    if total <= 0:
        raise ValueError("row counts must sum to more than zero")
    keys = list(updates[0][0])
    out: dict[str, np.ndarray] = {}
    for k in keys:
        acc = sum(np.asarray(w[k], dtype=np.float64) * (n / total) for w, n in updates)
        out[k] = np.asarray(acc).astype(np.asarray(updates[0][0][k]).dtype)
    return out


#: ``column_dropout`` FedAvg uses when a site lacks columns and the generator's own value was not set
#: (VAE-BGM; measured on the MDS worst case, 3 sites, 5 x 60 epochs, seed 0, in process: final CSF/GSF
#: 0.959 / 0.909 with it against 0.947 / 0.861 without).
ABSENT_COLUMN_DROPOUT = 0.2


class FedAvgStrategy(Strategy):
    """FedAvg over ``rounds`` rounds of ``local_epochs`` local epochs, weighted by site row counts.

    When a site lacks columns (worst case), a generator with a ``column_dropout`` parameter left unset trains
    with :data:`ABSENT_COLUMN_DROPOUT`.

    Strategy params: ``mixture_max_iter`` (default 10) and ``mixture_tol`` (1e-2 nats per row: the EM stops when
    its evidence lower bound, summed over all rows, changes by less than that times the row count) of the
    federated latent-mixture EM; ``mixture_round_max_iter`` (default 3: the EM's cap in every round but the last, whose mixture is the
    released model's and runs to ``mixture_max_iter``; with the warm start the EM carries on where the previous
    round stopped, so the iterations are spread over the rounds instead of repeated in each — every EM iteration
    is one message round); ``mixture_every_round`` (default true: every snapshot samples from a fitted global mixture; false fits
    it after the last round only); ``mixture_warm_start`` (default true: from round 2 on, the EM starts from the
    previous round's mixture instead of a fresh initialisation — the latent space moves little between rounds,
    so it converges in fewer message rounds).
    """

    name = "fedavg"
    #: The run's differential-privacy budget (``None``: plain training); set from the config's ``privacy`` block.
    privacy: PrivacyBudget | None = None
    #: After :meth:`run` under a budget: the accountants' summary (budget, split, spent per site) for the manifest.
    privacy_summary_: dict[str, Any] | None = None
    #: Name the sites' ledgers record this run's releases under (stable across a resume; default: the run token).
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
        self._column_dropout_for_absent_columns(sites)
        generator = self.new_generator(domain, random_state=self.random_state)
        if not isinstance(generator, SupportsWeights):
            raise CapabilityError(f"FedAvg needs a generator with weight exchange; {self.generator!r} has none")
        weights = generator.initialize().get_weights()
        base = self.base_config(run_token, domain)
        every = bool(self.params.get("mixture_every_round", True))
        warm = bool(self.params.get("mixture_warm_start", True))
        plan = self._dp_plan(sites, generator)
        if plan is not None:
            base["dp_run"] = self.privacy_run_id or run_token
            every = False  # each mixture fit is a release: one, after the last round
        mixture: MixtureParams | None = None
        counts: dict[str, np.ndarray] | None = None
        survival: dict[str, np.ndarray] | None = None
        rounds: list[dict[str, Any]] = []
        left_out_all: dict[str, str] = {}
        first = 1
        resumed = self.load_checkpoint(domain)
        if resumed is not None:  # continue after the last finished round: its weights and its mixture
            meta, arrays = resumed
            weights = {k[2:]: v for k, v in arrays.items() if k.startswith("w.")}
            mixture = {k[2:]: v for k, v in arrays.items() if k.startswith("m.")} or None
            generator.set_weights(weights)
            if isinstance(generator, SupportsLatentMixture) and mixture is not None:
                generator.set_latent_mixture(mixture)
            counts = {k[2:]: v for k, v in arrays.items() if k.startswith("c.")} or None
            if counts is not None and hasattr(generator, "set_component_counts"):
                generator.set_component_counts(counts)
            survival = {k[2:]: v for k, v in arrays.items() if k.startswith("s.")} or None
            if survival is not None and hasattr(generator, "fit_survival_calibration"):
                generator.fit_survival_calibration(survival)
            rounds, left_out_all, first = list(meta["rounds"]), dict(meta["left_out"]), int(meta["step"]) + 1
        if plan is not None:
            # The rounds a resumed run finished were spent: the accountants start where the interrupted run was.
            for _ in rounds:
                for s in sites:
                    plan.charge_round(s.name)
        for server_round in range(first, int(self.rounds) + 1):
            t0 = time.perf_counter()
            secure = self._secure(sites)
            packed = records.to_array_record(weights)
            if plan is not None:
                for s in sites:  # charged before the round is asked for: a round over budget releases nothing
                    plan.charge_round(s.name)

            def content(s: SiteInfo, server_round: int = server_round, arrays: Any = packed,
                        secure: bool = secure) -> RecordDict:
                cfg: dict[str, Any] = {**base, "server_round": server_round}
                if secure:  # each site stashes its update under this tag instead of replying with it
                    cfg["secagg_tag"] = f"fit-{server_round}"
                if plan is not None:
                    cfg.update(plan.fit_settings(s))
                return RecordDict({"arrays": arrays, "config": records.to_config_record(cfg)})

            got = self.ask(grid, sites, "train.fit", content, group_id=f"round-{server_round}")
            updates = []
            site_metrics: dict[str, dict[str, float]] = {}
            if secure:
                weights, site_metrics = self._secure_average(grid, sites, got.ok, weights, server_round)
            else:
                for s in sites:
                    if s.node_id not in got.ok:
                        continue
                    reply = got.ok[s.node_id]
                    metrics = records.from_metric_record(reply["metrics"])
                    updates.append((records.from_array_record(reply["arrays"]), float(metrics["num_examples"])))
                    site_metrics[s.name] = {k: float(v) for k, v in metrics.items()}
                weights = weighted_average(updates)
            generator.set_weights(weights)  # the global model can sample from here on
            answered = [s for s in sites if s.node_id in got.ok]
            if isinstance(generator, SupportsLatentMixture) and (every or server_round == self.rounds):
                mixture = self._fit_mixture(
                    grid, answered, generator, weights, base, server_round, previous=mixture if warm else None,
                    final=server_round == self.rounds, plan=plan,
                )
                if server_round == self.rounds and hasattr(generator, "set_component_counts") and plan is None:
                    counts = self._component_counts(grid, answered, mixture, base, server_round, secure=secure)
                    generator.set_component_counts(counts)
                if server_round == self.rounds and plan is None:
                    survival = self._survival_counts(grid, answered, generator, base, server_round, secure=secure)
            left_out = {site_name(sites, n): r for n, r in got.failed.items()}
            left_out_all.update(left_out)
            rr = RoundResult(server_round, label, generator, site_metrics=site_metrics, left_out=left_out,
                             seconds=time.perf_counter() - t0)
            rounds.append(rr.summary())
            log.info("fedavg (%s): round %d done in %.2fs (%d sites)", label, server_round, rr.seconds, len(answered))
            if on_round is not None:
                on_round(rr)
            # the round is finished once its caller has recorded it: checkpoint the server's state
            self.save_checkpoint(
                domain,
                {"step": server_round, "rounds": rounds, "left_out": left_out_all},
                {**{f"w.{k}": v for k, v in weights.items()}, **{f"m.{k}": v for k, v in (mixture or {}).items()},
                 **{f"c.{k}": v for k, v in (counts or {}).items()},
                 **{f"s.{k}": v for k, v in (survival or {}).items()}},
            )
        if plan is not None:
            self.privacy_summary_ = plan.summary(self.epsilon_left_)
            if self.generator_params.get("rare_level_sampling"):
                self.privacy_summary_["rare_level_sampling"] = (
                    "not applied: DP-SGD draws each site's rows by Poisson sampling, which its accounting assumes")
            log.info("fedavg: privacy epsilon spent %.4g of %s (largest over sites)",
                     self.privacy_summary_["epsilon_spent"], plan.budget.epsilon)
        elif self.privacy is not None:
            self.privacy_summary_ = {**PrivacyAccountant(self.privacy, DP_SPLIT).summary(),
                                     "note": "epsilon = inf: no noise, exact weights and statistics"}
        return StrategyResult(self.name, generator, domain, list(sites), rounds, left_out_all)

    def check_private_run(self) -> None:
        """Under a finite budget, refuse a generator without private training (before the hello: nothing is
        asked)."""
        if self.privacy is None or self.privacy.is_infinite or self.generator in DP_GENERATORS:
            return
        reason = DP_NOT_SUPPORTED.get(self.generator, "it has no differentially private training")
        raise ValidationError("Privacy", [Problem(
            "privacy", f"is not supported for FedAvg with generator {self.generator}: {reason}",
            ", ".join(sorted(DP_GENERATORS)), "remove privacy, or use generator vae_bgm (or strategy two_step_bn)")])

    def _dp_plan(self, sites: Sequence[SiteInfo], generator: Any) -> DPPlan | None:
        """The run's DP plan (``None`` without a finite budget). The generator was checked and every site's ledger
        asked before the hello (:func:`~fedsynth.strategies.secure_domain.plan_private_run`); each site's sampling
        rate and steps come from the hello's noisy row count, and the site trains at exactly those."""
        if self.privacy is None or self.privacy.is_infinite:
            return None
        self.check_private_run()
        batch_size = int(getattr(getattr(generator, "params", None), "batch_size", 128))
        return DPPlan(self.privacy, sites, batch_size, int(self.rounds), int(self.local_epochs))

    def _column_dropout_for_absent_columns(self, sites: Sequence[SiteInfo]) -> None:
        """When a site lacks columns and the generator has ``column_dropout`` left at 0, train with
        :data:`ABSENT_COLUMN_DROPOUT` (every site hides random columns as an absent column is sent, so the
        encoder learns to place such rows among complete ones); an explicit value is kept."""
        if "column_dropout" in self.generator_params:
            return
        takes_it = generator_accepts(self.generator, "column_dropout")
        model_columns = set(self.schema.model_columns)
        lacking = [s.name for s in sites if model_columns - set(s.columns)]
        if lacking and takes_it:
            self.generator_params["column_dropout"] = ABSENT_COLUMN_DROPOUT
            log.info("fedavg: %s lack columns; training with column_dropout=%s", ", ".join(lacking),
                     ABSENT_COLUMN_DROPOUT)

    def _secure(self, sites: Sequence[SiteInfo]) -> bool:
        """Whether sums over ``sites`` go through secure aggregation (a sum over one site would be its vector)."""
        return bool(self.params.get("secure_aggregation", False)) and len(sites) >= 2

    def _secure_sum(self, grid: GridLike, sites: Sequence[SiteInfo], tag: str) -> dict[str, np.ndarray]:
        """Secure sum of what ``sites`` stashed under ``tag``; sites dropping inside the protocol are recorded."""
        from fedsynth.strategies.secure_sum import sum_stashed

        got = sum_stashed(grid, [s.node_id for s in sites], tag, timeout=float(self.params["request_timeout"]))
        for node, reason in got.dropped.items():
            self.dropped.append({"site": site_name(sites, node), "message_type": "secure sum", "round": tag,
                                 "reason": reason})
        return got.arrays

    def _secure_average(
        self,
        grid: GridLike,
        sites: Sequence[SiteInfo],
        answered: Mapping[int, RecordDict],
        weights: Mapping[str, np.ndarray],
        server_round: int,
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, float]]]:
        """FedAvg by secure aggregation: sum of ``n_i * w_i`` and of ``n_i`` over the sites, then divide.

        Each site stashed its row-count-weighted update (and losses) on ``train.fit``; the server learns the
        sums only, so its round metrics are the row-weighted mean losses over the sites (under
        :data:`SECURE_SUM_LABEL`), never one site's.
        """
        sums = self._secure_sum(grid, [s for s in sites if s.node_id in answered], f"fit-{server_round}")
        n = float(sums["n"])
        out = {}
        for k, old in weights.items():
            mean = sums[f"w.{k}"] / n
            dtype = np.asarray(old).dtype
            out[k] = (np.rint(mean) if np.issubdtype(dtype, np.integer) else mean).astype(dtype)
        metrics = {"num_examples": round(n), **{k[2:]: float(v) / n for k, v in sums.items() if k.startswith("m.")}}
        return out, {SECURE_SUM_LABEL: metrics}

    def _fit_mixture(
        self,
        grid: GridLike,
        sites: Sequence[SiteInfo],
        generator: SupportsLatentMixture,
        weights: Mapping[str, np.ndarray],
        base: Mapping[str, Any],
        server_round: int,
        *,
        previous: MixtureParams | None = None,
        final: bool = True,
        plan: DPPlan | None = None,
    ) -> MixtureParams:
        """Federated variational EM of the global latent mixture (codes stay at the sites).

        The init message is sent every time (each site re-encodes its rows under the new global weights);
        ``previous``, when given, replaces the fresh initialisation as the EM's starting point. Before the
        ``final`` round the EM stops after ``mixture_round_max_iter`` iterations. The loop itself is
        :func:`~fedsynth.generators.latent_mixture.fit_latent_mixture_federated`; every E-step is one message
        round to the sites.
        """
        secure = self._secure(sites)
        tag = {"secagg_tag": f"mixture-init-{server_round}"} if secure else {}
        dp_cfg = {} if plan is None else {"dp_mixture_noise": plan.mixture_noise, "dp_code_clip": DP_CODE_CLIP}
        cfg = records.to_config_record({**base, **dp_cfg, "server_round": server_round, **tag})

        def charge(to: Sequence[SiteInfo]) -> None:
            for s in to if plan is not None else ():
                assert plan is not None
                plan.charge_mixture(s.name)

        init = RecordDict({"arrays": records.to_array_record(weights), "config": cfg})
        charge(sites)
        # A warm start knows the EM's starting point already: in clear and without a budget the sites answer its
        # first E-step in the init reply (one message round fewer per round; the same statistics as an E-step
        # message would bring). Under secure aggregation or DP every E-step goes through its own masked or noisy
        # release, so it stays a message of its own.
        piggyback = previous is not None and not secure and plan is None
        if piggyback:
            assert previous is not None
            init["mixture"] = records.to_array_record(previous)
        got = self.ask(grid, sites, "query.mixture_init", same_for_all(init), group_id=f"mixture-init-{server_round}")
        answered = [s for s in sites if s.node_id in got.ok]
        stats: list[dict[str, np.ndarray]]
        if secure:  # the sites' moments summed: the server sees no site's
            stats = [self._secure_sum(grid, answered, f"mixture-init-{server_round}")]
        else:
            stats = [records.from_array_record(got.ok[s.node_id]["stats"]) for s in answered]
        if plan is not None:
            from fedsynth.generators._dp import repair_init_statistics

            stats = repair_init_statistics(stats)
        start = previous if previous is not None else generator.initial_latent_mixture(
            stats, random_state=self.random_state
        )
        first: list[dict[str, np.ndarray]] | None = None
        if piggyback:
            first = [records.from_array_record(got.ok[s.node_id]["estep"]) for s in answered]
        max_iter = int(self.params.get("mixture_max_iter", 50))
        if not final:
            max_iter = min(max_iter, int(self.params.get("mixture_round_max_iter", 3)))
        iteration = itertools.count(1)

        # The tolerance is per row, as the bound is a sum over every site's rows: scikit-learn's criterion on the
        # sum (1e-3 in all) kept a 2,661-row run's final EM at its cap of 50 message rounds while the bound moved
        # by ~0.01 nats per row and the model's CSF/GSF no longer did (benchmarks/results/fedavg_em.json).
        tol = float(self.params["mixture_tol"]) * sum(float(s["n"]) for s in stats)
        if plan is not None:
            max_iter, tol = DP_MIXTURE_ITERS, 0.0  # a fixed number of noisy releases, no convergence test

        def e_step(params: MixtureParams) -> list[dict[str, np.ndarray]]:
            nonlocal first
            if first is not None:  # the first E-step, answered with the init message
                done, first = first, None
                return done
            group = f"mixture-{server_round}-{next(iteration)}"
            step_cfg = cfg
            if secure:
                step_cfg = records.to_config_record(
                    {**base, **dp_cfg, "server_round": server_round, "secagg_tag": group}
                )
            msg = RecordDict({"mixture": records.to_array_record(params), "config": step_cfg})
            charge(answered)
            got = self.ask(grid, answered, "query.mixture_estep", same_for_all(msg), group_id=group)
            if secure:
                out = [self._secure_sum(grid, [s for s in answered if s.node_id in got.ok], group)]
            else:
                out = [records.from_array_record(got.ok[s.node_id]["stats"]) for s in answered if s.node_id in got.ok]
            if plan is not None:
                from fedsynth.generators._dp import repair_e_step_statistics

                return repair_e_step_statistics(out)
            return out

        params, n_iter, _ = fit_latent_mixture_federated(e_step, start, max_iter=max_iter, tol=tol)
        log.info("fedavg: global latent mixture after %d EM iterations%s", n_iter, " (warm start)" if previous else "")
        generator.set_latent_mixture(params)
        return params

    def _component_counts(
        self, grid: GridLike, sites: Sequence[SiteInfo], mixture: MixtureParams, base: Mapping[str, Any],
        server_round: int, *, secure: bool = False,
    ) -> dict[str, np.ndarray] | None:
        """The sites' per-component label counts under the final mixture, summed (``None`` when none answered);
        under secure aggregation the server learns only the sum."""
        stats = self._site_counts(grid, sites, "query.component_counts", f"counts-{server_round}", base,
                                  server_round, "stats", secure=secure,
                                  extra={"mixture": records.to_array_record(mixture)})
        return sum_component_counts(stats) if stats else None

    def _site_counts(
        self, grid: GridLike, sites: Sequence[SiteInfo], message_type: str, group: str, base: Mapping[str, Any],
        server_round: int, reply_key: str, *, secure: bool, extra: Mapping[str, Any] | None = None,
    ) -> list[dict[str, np.ndarray]]:
        """The count vectors the sites answer ``message_type`` with: each site's (its reply's ``reply_key``)
        in clear, or one secure sum over those that answered (the server learns only the sum); empty when none
        answered."""
        tag = {"secagg_tag": group} if secure else {}
        cfg = records.to_config_record({**base, "server_round": server_round, **tag})
        msg = RecordDict({**(extra or {}), "config": cfg})
        got = self.ask(grid, sites, message_type, same_for_all(msg), group_id=group)
        answered = [s for s in sites if s.node_id in got.ok]
        if secure:
            return [self._secure_sum(grid, answered, group)] if answered else []
        return [records.from_array_record(got.ok[s.node_id][reply_key]) for s in answered]

    def _survival_counts(
        self, grid: GridLike, sites: Sequence[SiteInfo], generator: Any, base: Mapping[str, Any],
        server_round: int, *, secure: bool = False,
    ) -> dict[str, np.ndarray] | None:
        """The sites' events and person-time per level of the survival calibration's strata, summed, and the
        generator's calibration fitted on them (:mod:`fedsynth.generators.survival_calibration`); ``None`` (no
        calibration) when the generator has none or no site answered. Not asked under a privacy budget: the
        counts are not noised, so the step is off there."""
        if not hasattr(generator, "fit_survival_calibration") or not generator.get_params().get(
                "survival_calibration", False):
            return None
        from fedsynth.generators.survival_strata import sum_survival_counts

        stats = self._site_counts(grid, sites, "query.survival_counts", f"survival-{server_round}", base,
                                  server_round, "survival", secure=secure)
        if not stats:
            return None
        summed = sum_survival_counts(stats)
        generator.fit_survival_calibration(summed)
        return summed


#: What a site does with each of this strategy's messages (:mod:`fedsynth.strategies.fedavg_site`), here where
#: :func:`~fedsynth.strategies.site.all_site_handlers` looks for a strategy's handlers.
SITE_HANDLERS: Mapping[str, SiteHandler] = fedavg_site.SITE_HANDLERS
