"""Differential privacy inside a site's training: DP-SGD for VAE-BGM and the Gaussian mechanism on latent-mixture
statistics.

**DP-SGD** (Abadi et al. 2016), record-level: each step draws a Poisson sample of the site's rows (each row with
probability ``q``, from the operating system's entropy so that no party holding the run's seeds knows which rows
were drawn), computes every row's gradient of its own loss (``torch.func``: ``vmap`` over ``grad`` of a
``functional_call``, the per-sample route Opacus itself uses for layers it has no hook for), and lets Opacus's
:class:`opacus.optimizers.DPOptimizer` clip each row's gradient to ``max_grad_norm``, add Gaussian noise of standard
deviation ``noise_multiplier × max_grad_norm`` to their sum (from OS entropy too: a coordinator that knew the seed
could subtract the noise), divide by the expected batch size and step the site's Adam. Opacus's own
``GradSampleModule`` is not used: its hooks see only ``forward`` calls of supported layers, while the VAE's loss
calls ``encode``/``decode`` and uses a bare parameter (``numeric_log_sigma``), for which it computes no per-sample
gradient. What was spent is dp_accounting's analysis of the Poisson-sampled Gaussian
(:class:`fedsynth.privacy.accounting.DPSGDRelease`); the noise multiplier is calibrated by dp_accounting
(:func:`fedsynth.privacy.accounting.calibrate_dpsgd_noise`).

**Latent-mixture statistics.** A site's latent codes are a function of its real rows (the DP-trained encoder's
weights are public, the rows are not), so post-processing does not cover statistics of the codes: they are
released by the Gaussian mechanism. Each code is clipped to L2 norm ``code_clip`` (``C``); adding or removing
one patient then changes a count vector by at most 1 (responsibilities sum to 1), a weighted sum by ``C`` and a
weighted sum of outer products by ``C²`` (Frobenius norm), so each of the three statistics gets Gaussian noise of
``noise_multiplier`` times its own sensitivity — three Gaussian releases per request. Scalars used only for the
EM's convergence test (``log_prob_norm``, ``resp_entropy``) are not released; the federated EM then runs a fixed
number of iterations. The server repairs the noisy sums (counts at least 1, covariances projected onto the
positive-definite cone: post-processing) before its M-step.

**A site's private fit on its own** (SD-sharing, :func:`plan_local_vae` and :func:`fit_vae_bgm_private`): the same
two mechanisms at one site, no coordinator in the loop: DP-SGD for the VAE, then the latent mixture by variational
EM on the Gaussian-noised statistics of the site's clipped codes (one initial request and :data:`MIXTURE_ITERS`
iterations, no convergence test), repaired as the server would. The mixture gets :data:`MIXTURE_SHARE` of the
budget's zCDP ρ; the DP-SGD noise multiplier is calibrated by dp_accounting so that both together convert to at most
the budget's ε at its δ. Rows sampled from the fitted model are post-processing and carry the same guarantee.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedsynth.privacy.accounting import (
    DEFAULT_ORDERS,
    DPSGDRelease,
    PrivacyAccountant,
    PrivacyBudget,
    Release,
    calibrate_dpsgd_noise,
    noise_multiplier_for,
)

log = logging.getLogger(__name__)

#: Gaussian releases per latent-mixture request (counts, weighted sums, weighted sums of outer products).
MIXTURE_RELEASES_PER_REQUEST = 3
#: Per-row gradient clipping norm of a site's private VAE-BGM fit.
MAX_GRAD_NORM = 1.0
#: L2 norm latent codes are clipped to before their mixture statistics are released.
CODE_CLIP = 4.0
#: EM iterations of a private latent mixture (each one a noisy release; no convergence test).
MIXTURE_ITERS = 5
#: Share of the budget's zCDP ρ spent on the latent-mixture statistics; DP-SGD takes what remains.
MIXTURE_SHARE = 0.15
#: Why CTGAN has no private fit in fedsynth (FedAvg and SD-sharing alike).
CTGAN_DP_NOT_SUPPORTED = (
    "CTGAN under differential privacy needs a private discriminator (DP-CTGAN, PATE-CTGAN) and category "
    "frequencies for its conditional sampler from a noisy domain; neither is built"
)


@dataclass(frozen=True)
class DPSGDSettings:
    """How a site trains with DP-SGD.

    Parameters
    ----------
    noise_multiplier : float
        Noise standard deviation over ``max_grad_norm`` (> 0).
    max_grad_norm : float
        Per-row gradient clipping norm (L2 over all parameters).
    sample_rate : float
        Poisson sampling rate ``q`` in (0, 1] (expected batch size over the site's rows).
    steps_per_epoch : int
        Steps one "epoch" takes (``ceil(1 / q)``).
    """

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps_per_epoch: int


def dpsgd_schedule(n_rows: int, batch_size: int) -> tuple[float, int]:
    """Poisson sampling rate and steps per epoch for a site of ``n_rows`` rows and a ``batch_size``.

    Returns
    -------
    (float, int)
        ``q = min(batch_size, n_rows) / n_rows`` and ``ceil(1 / q)`` (so an epoch visits every row once in
        expectation).
    """
    if n_rows < 1 or batch_size < 1:
        raise ValueError(f"n_rows and batch_size must be >= 1; got {n_rows}, {batch_size}")
    q = min(batch_size, n_rows) / n_rows
    return q, math.ceil(1.0 / q)


def dpsgd_settings_from_request(cfg: Mapping[str, Any]) -> DPSGDSettings:
    """The DP-SGD settings a coordinator's training request carries (FedAvg's ``train.fit`` under a budget):
    ``dp_noise_multiplier``, ``dp_max_grad_norm``, ``dp_sample_rate`` and ``dp_steps_per_epoch``.

    The coordinator plans the rate and the steps from the hello's noisy row count (it never learns the exact one)
    and the site trains at exactly those: the RDP of Poisson-sampled Gaussian steps depends on the rate, the
    steps and the noise multiplier only, so what the site's ledger is charged equals the coordinator's account.

    Raises
    ------
    ValueError
        A setting is missing or out of range (noise multiplier and clipping norm > 0, rate in (0, 1], steps ≥ 1):
        the site trains nothing.
    """
    try:
        z, clip = float(cfg["dp_noise_multiplier"]), float(cfg["dp_max_grad_norm"])
        q, per_epoch = float(cfg["dp_sample_rate"]), int(cfg["dp_steps_per_epoch"])
    except (KeyError, TypeError, ValueError):
        raise ValueError("a private training request needs dp_noise_multiplier, dp_max_grad_norm, dp_sample_rate "
                         "and dp_steps_per_epoch") from None
    if not (z > 0 and clip > 0 and 0 < q <= 1 and per_epoch >= 1):
        raise ValueError("a private training request's DP-SGD settings are out of range (noise multiplier and "
                         "clipping norm > 0, sample rate in (0, 1], steps per epoch >= 1)")
    return DPSGDSettings(z, clip, q, per_epoch)


def _os_generator(device: Any) -> Any:
    import torch

    gen = torch.Generator(device=device)
    gen.manual_seed(secrets.randbits(63))
    return gen


def dp_train_vae(generator: Any, enc: Any, epochs: int, settings: DPSGDSettings) -> float:
    """Train a built :class:`~fedsynth.generators.vae_bgm.VAEBGMGenerator` ``epochs`` epochs with DP-SGD.

    Called from the generator's training loop in place of its plain steps; the generator's Adam optimiser (and
    its state between rounds) is the one stepped, wrapped by Opacus's ``DPOptimizer``. Column dropout and the
    reparameterisation noise act per row, as in plain training.

    Parameters
    ----------
    generator : VAEBGMGenerator
        Built (``network_``, ``optimizer_``, ``layout_``, ``domain`` set).
    enc : Encoded
        The site's rows encoded by the generator's layout (n rows).
    epochs : int
        Epochs of ``settings.steps_per_epoch`` steps each.
    settings : DPSGDSettings
        Noise multiplier, clipping norm, sampling rate.

    Returns
    -------
    float
        Mean loss per row over the last epoch's sampled rows (``nan`` when none was sampled).
    """
    import torch
    from opacus.optimizers import DPOptimizer
    from torch import nn
    from torch.func import functional_call, grad_and_value, vmap

    from fedsynth.generators.vae_layout import absent_inputs
    from fedsynth.generators.vae_network import vae_loss

    p = generator.params
    model, dev, layout = generator.network_, generator.device_, generator.layout_
    tensors = [
        torch.as_tensor(a, device=dev)
        for a in (enc.inputs, enc.numeric, enc.numeric_mask, enc.binary, enc.binary_mask, enc.categorical,
                  enc.missing, enc.missing_mask)
    ]
    n = len(enc.inputs)
    dropout = None
    if p.column_dropout > 0:
        absent, col_dims = absent_inputs(layout, generator.domain, p.numeric_transform)
        dropout = (torch.as_tensor(absent, device=dev), torch.as_tensor(col_dims, device=dev))
    rng = generator.torch_rng_

    class _RowLoss(nn.Module):
        # functional_call needs a forward: this one is the VAE's loss on the rows it is given.
        def __init__(self) -> None:
            super().__init__()
            self.vae = model

        def forward(self, *batch: Any) -> Any:
            return vae_loss(self.vae, layout, list(batch), p.beta, rng)

    wrapper = _RowLoss()
    named: list[tuple[str, Any]] = [(k, v) for k, v in wrapper.named_parameters() if v.requires_grad]

    def row_loss(params: dict[str, Any], *row: Any) -> Any:
        return functional_call(wrapper, params, tuple(r.unsqueeze(0) for r in row))

    per_row = vmap(grad_and_value(row_loss), in_dims=(None,) + (0,) * len(tensors), randomness="different")
    expected = max(1, round(settings.sample_rate * n))
    sampler = _os_generator(dev)
    dp_opt = DPOptimizer(
        generator.optimizer_, noise_multiplier=float(settings.noise_multiplier),
        max_grad_norm=float(settings.max_grad_norm), expected_batch_size=expected, loss_reduction="mean",
        generator=_os_generator(dev),
    )
    model.train()
    last = float("nan")
    try:
        for _ in range(int(epochs)):
            total, seen = 0.0, 0
            for _ in range(settings.steps_per_epoch):
                take = torch.rand(n, generator=sampler, device=dev) < settings.sample_rate
                idx = torch.nonzero(take).flatten()
                dp_opt.zero_grad(set_to_none=True)
                if len(idx) == 0:
                    # An empty Poisson sample still takes a (noise-only) step, as the accounting assumes.
                    for _, v in named:
                        v.grad_sample = torch.zeros((1, *v.shape), device=dev, dtype=v.dtype)
                else:
                    batch = [t[idx] for t in tensors]
                    if dropout is not None:
                        hide = torch.rand((len(idx), dropout[1].shape[0]), generator=rng, device=dev)
                        dims = (hide < p.column_dropout).to(dropout[1].dtype) @ dropout[1] > 0
                        batch[0] = torch.where(dims, dropout[0], batch[0])
                    params = {k: v.detach() for k, v in named}
                    grads, losses = per_row(params, *batch)
                    for k, v in named:
                        v.grad_sample = grads[k]  # what Opacus's DPOptimizer reads
                    total += float(losses.sum())
                    seen += len(idx)
                dp_opt.step()
            last = total / seen if seen else float("nan")
            generator.epochs_trained_ += 1
    finally:
        dp_opt.zero_grad(set_to_none=True)
        for _, v in named:
            for attr in ("grad_sample", "summed_grad"):
                if hasattr(v, attr):
                    delattr(v, attr)
        model.eval()
    log.debug("VAE-BGM DP-SGD: %d epochs (z=%.3g, C=%.3g, q=%.3g); last loss per row %.4f", epochs,
              settings.noise_multiplier, settings.max_grad_norm, settings.sample_rate, last)
    return last


# -- latent-mixture statistics ---------------------------------------------------------------------------


def clip_codes(codes: np.ndarray, code_clip: float) -> np.ndarray:
    """Each code (row) scaled down to L2 norm at most ``code_clip``; shape kept."""
    x = np.asarray(codes, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x * np.minimum(1.0, code_clip / np.maximum(norms, 1e-12)))


def noisy_mixture_statistics(
    statistics: Mapping[str, np.ndarray], *, code_clip: float, noise_multiplier: float,
    random_state: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Gaussian mechanism on a site's mixture statistics computed from codes clipped to ``code_clip``.

    Parameters
    ----------
    statistics : mapping
        :func:`~fedsynth.generators.latent_mixture.mixture_init_statistics` (``n``, ``sum``, ``sum_outer``) or
        :func:`~fedsynth.generators.latent_mixture.mixture_e_step_statistics` (``nk``, ``sum_x``, ``sum_xx``, ...)
        of clipped codes.
    code_clip : float
        The clipping norm ``C`` of the codes.
    noise_multiplier : float
        ``z``: each statistic gets noise ``z`` × its L2 sensitivity (1, ``C``, ``C²``).
    random_state : numpy Generator
        Source of the noise (the caller passes one seeded from OS entropy).

    Returns
    -------
    dict of float64 arrays
        The noisy counts, sums and outer-product sums (outer products symmetrised); ``n`` of an E-step, and its
        ``log_prob_norm`` and ``resp_entropy``, are not released (set to 0).
    """
    z = float(noise_multiplier)
    c = float(code_clip)
    out: dict[str, np.ndarray] = {}

    def noisy(a: np.ndarray, sensitivity: float) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        return np.asarray(a + random_state.normal(0.0, z * sensitivity, size=a.shape))

    def sym(a: np.ndarray) -> np.ndarray:
        return np.asarray(0.5 * (a + np.swapaxes(a, -1, -2)))

    if "sum_outer" in statistics:  # init moments: n, sum, sum_outer
        out["n"] = noisy(statistics["n"], 1.0)
        out["sum"] = noisy(statistics["sum"], c)
        out["sum_outer"] = sym(noisy(statistics["sum_outer"], c * c))
    else:  # E-step statistics
        out["nk"] = noisy(statistics["nk"], 1.0)
        out["sum_x"] = noisy(statistics["sum_x"], c)
        out["sum_xx"] = sym(noisy(statistics["sum_xx"], c * c))
        out["n"] = np.asarray(0.0)
        out["log_prob_norm"] = np.asarray(0.0)
        out["resp_entropy"] = np.asarray(0.0)
    return out


def _psd(cov: np.ndarray, floor: float) -> np.ndarray:
    w, v = np.linalg.eigh(0.5 * (cov + cov.T))
    return np.asarray((v * np.maximum(w, floor)) @ v.T)


def repair_init_statistics(stats: Sequence[Mapping[str, np.ndarray]], *, floor: float = 1e-3) -> list[dict[str, np.ndarray]]:
    """Server side: the summed noisy moments as one consistent set (count at least 2, covariance positive
    definite); post-processing of the noisy releases."""
    n = max(2.0, float(sum(float(s["n"]) for s in stats)))
    s1 = np.sum([np.asarray(s["sum"], dtype=np.float64) for s in stats], axis=0)
    s2 = np.sum([np.asarray(s["sum_outer"], dtype=np.float64) for s in stats], axis=0)
    mean = s1 / n
    cov = _psd((s2 - n * np.outer(mean, mean)) / (n - 1), floor)
    return [{"n": np.asarray(n), "sum": s1, "sum_outer": cov * (n - 1) + n * np.outer(mean, mean)}]


def repair_e_step_statistics(stats: Sequence[Mapping[str, np.ndarray]], *, floor: float = 1e-3) -> list[dict[str, np.ndarray]]:
    """Server side: the summed noisy E-step statistics as one consistent set (each component's count at least 1,
    its covariance positive definite); post-processing of the noisy releases."""
    nk = np.maximum(np.sum([np.asarray(s["nk"], dtype=np.float64) for s in stats], axis=0), 1.0)
    sx = np.sum([np.asarray(s["sum_x"], dtype=np.float64) for s in stats], axis=0)
    sxx = np.sum([np.asarray(s["sum_xx"], dtype=np.float64) for s in stats], axis=0)
    xk = sx / nk[:, None]
    fixed = np.stack([
        nk[k] * (_psd(sxx[k] / nk[k] - np.outer(xk[k], xk[k]), floor) + np.outer(xk[k], xk[k]))
        for k in range(len(nk))
    ])
    return [{"n": np.asarray(float(nk.sum())), "nk": nk, "sum_x": sx, "sum_xx": fixed,
             "log_prob_norm": np.asarray(0.0), "resp_entropy": np.asarray(0.0)}]


# -- a site's private fit on its own (SD-sharing) ---------------------------------------------------------


@dataclass(frozen=True)
class LocalVAEPlan:
    """How one site fits VAE-BGM on its own rows within a budget: DP-SGD, then a private latent mixture.

    Parameters
    ----------
    budget : PrivacyBudget
        The (ε, δ) the whole fit spends.
    dpsgd : DPSGDSettings
        DP-SGD noise multiplier (calibrated by dp_accounting), clipping norm, sampling rate, steps per epoch.
    epochs : int
        DP-SGD epochs (``epochs × dpsgd.steps_per_epoch`` steps in all).
    mixture_noise : float
        Noise multiplier of each Gaussian release of the mixture's statistics.
    code_clip : float
        L2 clipping norm of the latent codes.
    mixture_iters : int
        EM iterations after the initial request.
    mixture_share : float
        Share of the budget's zCDP ρ the mixture's releases were given.
    """

    budget: PrivacyBudget
    dpsgd: DPSGDSettings
    epochs: int
    mixture_noise: float
    code_clip: float
    mixture_iters: int
    mixture_share: float = MIXTURE_SHARE

    @property
    def steps(self) -> int:
        """DP-SGD steps of the whole fit."""
        return int(self.epochs) * int(self.dpsgd.steps_per_epoch)

    @property
    def mixture_releases(self) -> int:
        """Gaussian releases of the mixture: three per request, ``1 + mixture_iters`` requests."""
        return MIXTURE_RELEASES_PER_REQUEST * (1 + int(self.mixture_iters))

    @property
    def split(self) -> dict[str, float]:
        """The budget split (``training`` is the remainder phase)."""
        share = self.mixture_share
        return {"training": 1.0 - share, "mixture": share}

    def releases(self) -> list[Release | DPSGDRelease]:
        """What the fit releases inside the site: the DP-SGD training and the mixture's Gaussian releases."""
        return [
            DPSGDRelease("training", self.dpsgd.noise_multiplier, self.dpsgd.sample_rate, self.steps),
            Release("mixture", self.mixture_noise, self.mixture_releases),
        ]

    def accountant(self, orders: Sequence[float] = DEFAULT_ORDERS) -> PrivacyAccountant:
        """An accountant with the whole fit charged (raises :class:`BudgetExceededError` if it did not fit)."""
        acc = PrivacyAccountant(self.budget, self.split, orders=orders, remainder_phase="training")
        for r in self.releases():
            acc.charge(r)
        return acc

    def rdp(self, orders: Sequence[float] = DEFAULT_ORDERS) -> np.ndarray:
        """The fit's composed RDP curve at ``orders`` (what a site's ledger is charged)."""
        return np.asarray(sum((r.rdp(orders) for r in self.releases()), np.zeros(len(orders))), dtype=float)

    def to_dict(self) -> dict[str, Any]:
        """The plan's settings, JSON-able (for the manifest)."""
        return {
            "noise_multiplier": self.dpsgd.noise_multiplier, "max_grad_norm": self.dpsgd.max_grad_norm,
            "sample_rate": self.dpsgd.sample_rate, "steps": self.steps, "epochs": int(self.epochs),
            "mixture_noise_multiplier": self.mixture_noise, "mixture_releases": self.mixture_releases,
            "code_clip": self.code_clip, "mixture_iterations": int(self.mixture_iters),
        }


def plan_local_vae(
    budget: PrivacyBudget,
    n_rows: int,
    batch_size: int,
    epochs: int,
    *,
    max_grad_norm: float = MAX_GRAD_NORM,
    code_clip: float = CODE_CLIP,
    mixture_iters: int = MIXTURE_ITERS,
    mixture_share: float = MIXTURE_SHARE,
    orders: Sequence[float] = DEFAULT_ORDERS,
) -> LocalVAEPlan:
    """The plan of a site's private VAE-BGM fit on ``n_rows`` rows within ``budget``.

    The mixture's releases get ``mixture_share`` of the budget's zCDP ρ (:class:`PrivacyAccountant`'s split);
    DP-SGD's noise multiplier is :func:`~fedsynth.privacy.accounting.calibrate_dpsgd_noise` for the Poisson
    sampling rate ``min(batch_size, n_rows) / n_rows`` and ``epochs × ceil(1 / q)`` steps, composed with the
    mixture's releases, so that the whole fit converts to at most ``budget.epsilon`` at ``budget.delta``.

    Raises
    ------
    ValueError
        When ``budget`` is infinite (a non-private fit needs no plan) or ``n_rows``/``batch_size`` < 1.
    BudgetExceededError
        When the mixture's share alone spends the budget.
    """
    if budget.is_infinite:
        raise ValueError("plan_local_vae needs a finite budget")
    split = {"training": 1.0 - mixture_share, "mixture": mixture_share}
    probe = PrivacyAccountant(budget, split, orders=orders, remainder_phase="training")
    rho_mix = probe.allocation_["mixture"]
    releases = MIXTURE_RELEASES_PER_REQUEST * (1 + int(mixture_iters))
    q, per_epoch = dpsgd_schedule(n_rows, batch_size)
    z = calibrate_dpsgd_noise(budget, q, int(epochs) * per_epoch, other_rho=rho_mix, orders=orders)
    return LocalVAEPlan(budget, DPSGDSettings(z, float(max_grad_norm), q, per_epoch), int(epochs),
                        noise_multiplier_for(rho_mix, releases), float(code_clip), int(mixture_iters),
                        mixture_share=float(mixture_share))


def fit_vae_bgm_private(generator: Any, data: Any, plan: LocalVAEPlan) -> Any:
    """Fit a :class:`~fedsynth.generators.vae_bgm.VAEBGMGenerator` (domain set, not yet trained) on ``data`` as
    ``plan`` says: DP-SGD, then the latent mixture from Gaussian-noised statistics of the clipped codes.

    The noise (gradients, Poisson sampling, mixture statistics) comes from the operating system's entropy, never
    from the generator's seed. Per-component label counts (conditional sampling) are not computed: they would be
    a release outside the plan, so conditional draws reject rows only.

    Parameters
    ----------
    generator : VAEBGMGenerator
        Built with the shared domain.
    data : DataFrame
        The site's training rows (n rows).
    plan : LocalVAEPlan
        From :func:`plan_local_vae` for ``len(data)`` rows.

    Returns
    -------
    VAEBGMGenerator
        ``generator``, fitted, with its private latent mixture installed.
    """
    from fedsynth.generators.latent_mixture import (
        fit_latent_mixture_federated,
        mixture_e_step_statistics,
        mixture_init_statistics,
    )

    generator.dp_sgd_ = plan.dpsgd
    try:
        generator.partial_fit(data, epochs=plan.epochs)
    finally:
        generator.dp_sgd_ = None
    codes = clip_codes(generator.latent_codes(data), plan.code_clip)
    rng = np.random.default_rng()  # OS entropy: whoever knows the run's seeds cannot subtract the noise

    def noisy(stats: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return noisy_mixture_statistics(stats, code_clip=plan.code_clip, noise_multiplier=plan.mixture_noise,
                                        random_state=rng)

    start = generator.initial_latent_mixture(repair_init_statistics([noisy(mixture_init_statistics(codes))]),
                                             random_state=generator.params.random_state)
    params, _, _ = fit_latent_mixture_federated(
        lambda p: repair_e_step_statistics([noisy(mixture_e_step_statistics(codes, p))]), start,
        max_iter=plan.mixture_iters, tol=0.0,  # a fixed number of noisy releases, no convergence test
    )
    generator.set_latent_mixture(params)
    log.info("VAE-BGM private fit: %d DP-SGD steps (z=%.3g, q=%.3g), mixture after %d noisy EM iterations",
             plan.steps, plan.dpsgd.noise_multiplier, plan.dpsgd.sample_rate, plan.mixture_iters)
    return generator
