"""The privacy plan of a private FedAvg run (VAE-BGM): the budget split between DP-SGD and the latent-mixture
statistics, each site's DP-SGD schedule and calibrated noise, and the server's accountant per site.

The server flow that uses it is :class:`~fedsynth.strategies.fedavg_server.FedAvgStrategy` (its module docstring
describes the guarantee); the site's side of DP-SGD is :mod:`fedsynth.generators._dp`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fedsynth.generators import _dp
from fedsynth.privacy.accounting import (
    DPSGDRelease,
    PrivacyAccountant,
    PrivacyBudget,
    Release,
    json_float,
    noise_multiplier_for,
)
from fedsynth.strategies.exchange import SiteInfo

__all__ = ["DP_CODE_CLIP", "DP_GENERATORS", "DP_MAX_GRAD_NORM", "DP_MIXTURE_ITERS", "DP_MIXTURE_SHARE",
           "DP_NOT_SUPPORTED", "DP_SPLIT", "DPPlan"]


# The DP-SGD settings and the CTGAN reason are the ones a site's private fit uses (fedsynth.generators._dp), so
# FedAvg and SD-sharing cannot drift apart.
#: Share of the run's zCDP budget spent on the latent-mixture statistics; DP-SGD takes what remains.
DP_MIXTURE_SHARE = _dp.MIXTURE_SHARE
#: The budget split of a private FedAvg run (``training`` is the remainder phase, see
#: :class:`~fedsynth.privacy.accounting.PrivacyAccountant`).
DP_SPLIT: Mapping[str, float] = {"training": 1.0 - DP_MIXTURE_SHARE, "mixture": DP_MIXTURE_SHARE}
#: Per-row gradient clipping norm of DP-SGD.
DP_MAX_GRAD_NORM = _dp.MAX_GRAD_NORM
#: L2 norm latent codes are clipped to before their mixture statistics are released.
DP_CODE_CLIP = _dp.CODE_CLIP
#: Federated EM iterations of the private latent mixture (each one a noisy release; no convergence test).
DP_MIXTURE_ITERS = _dp.MIXTURE_ITERS
#: Generators FedAvg can train under a privacy budget, and why the others cannot.
DP_GENERATORS = frozenset({"vae_bgm"})
DP_NOT_SUPPORTED = {"ctgan": _dp.CTGAN_DP_NOT_SUPPORTED}


class DPPlan:
    """A private FedAvg run's plan: per site its sampling rate, steps per round, noise multiplier and accountant."""

    def __init__(self, budget: PrivacyBudget, sites: Sequence[SiteInfo], batch_size: int, rounds: int,
                 local_epochs: int) -> None:
        """Each site's plan is :func:`~fedsynth.generators._dp.plan_local_vae`'s for all the run's epochs (``rounds ×
        local_epochs``) on the hello's row count: the same split, schedule and noise calibration as a site's private
        fit alone, so FedAvg and SD-sharing cannot drift apart."""
        from fedsynth.generators._dp import plan_local_vae

        self.budget = budget
        probe = PrivacyAccountant(budget, DP_SPLIT, remainder_phase="training")
        self.sites: dict[str, dict[str, float]] = {}
        self.accountants: dict[str, PrivacyAccountant] = {}
        self.mixture_releases = _dp.MIXTURE_RELEASES_PER_REQUEST * (1 + DP_MIXTURE_ITERS)
        self.mixture_noise = noise_multiplier_for(probe.allocation_["mixture"], self.mixture_releases)
        for s in sites:
            # s.n_rows is the hello's noisy lower bound: the rate is at least the true one (larger batches), and
            # the site samples at this rate and takes these steps, so the accounting does not depend on its count.
            plan = plan_local_vae(budget, s.n_rows, batch_size, int(local_epochs) * int(rounds),
                                  mixture_iters=DP_MIXTURE_ITERS, mixture_share=DP_MIXTURE_SHARE, orders=probe.orders)
            per_epoch = int(plan.dpsgd.steps_per_epoch)
            self.sites[s.name] = {"sample_rate": plan.dpsgd.sample_rate, "steps_per_epoch": per_epoch,
                                  "steps_per_round": int(local_epochs) * per_epoch,
                                  "noise_multiplier": plan.dpsgd.noise_multiplier}
            self.accountants[s.name] = PrivacyAccountant(budget, DP_SPLIT, remainder_phase="training")

    def fit_settings(self, site: SiteInfo) -> dict[str, Any]:
        """What ``train.fit`` carries to ``site`` under the plan: the DP-SGD noise multiplier, clipping norm,
        Poisson sampling rate and steps per epoch the site trains at (its ledger is charged exactly these), and
        the weight of its update — the hello's noisy row count, so that no exact count leaves the site."""
        p = self.sites[site.name]
        return {"dp_noise_multiplier": p["noise_multiplier"], "dp_max_grad_norm": DP_MAX_GRAD_NORM,
                "dp_sample_rate": p["sample_rate"], "dp_steps_per_epoch": int(p["steps_per_epoch"]),
                "dp_weight": int(site.n_rows)}

    def charge_round(self, site: str) -> None:
        p = self.sites[site]
        self.accountants[site].charge(
            DPSGDRelease("training", p["noise_multiplier"], p["sample_rate"], int(p["steps_per_round"])))

    def charge_mixture(self, site: str) -> None:
        from fedsynth.generators._dp import MIXTURE_RELEASES_PER_REQUEST

        self.accountants[site].charge(Release("mixture", self.mixture_noise, MIXTURE_RELEASES_PER_REQUEST))

    def summary(self, epsilon_left: Mapping[str, float]) -> dict[str, Any]:
        per_site = {name: {**acc.summary(), **self.sites[name]} for name, acc in self.accountants.items()}
        spent = max((v["epsilon_spent"] for v in per_site.values()), default=0.0)
        first = next(iter(per_site.values()), {})
        return {
            "budget": {"epsilon": self.budget.epsilon, "delta": self.budget.delta},
            "accountant": "DP-SGD: dp_accounting RDP of the Poisson-sampled Gaussian (noise calibrated by "
                          "dp_accounting, clipping and noise by Opacus's DPOptimizer); latent-mixture statistics: "
                          "Gaussian mechanism; composition in RDP, (epsilon, delta) by dp_accounting",
            "guarantee": "record-level (epsilon, delta) for every patient of every site; the run's epsilon is the "
                         "largest over sites",
            "split": first.get("split", dict(DP_SPLIT)),
            "split_note": "the hello (noisy row counts) and the domain (noisy count vectors) are charged first at "
                          "their exact cost; training (DP-SGD) takes what the mixture phase leaves of the rest; each "
                          "site's sampling rate and steps are planned on the hello's noisy count and the site trains "
                          "at exactly those",
            "orders": first.get("orders"),
            "max_grad_norm": DP_MAX_GRAD_NORM, "code_clip": DP_CODE_CLIP, "mixture_iterations": DP_MIXTURE_ITERS,
            "mixture_noise_multiplier": self.mixture_noise,
            "epsilon_spent": spent,
            "sites": per_site,
            "epsilon_left_before": {k: json_float(v) for k, v in epsilon_left.items()},
        }
