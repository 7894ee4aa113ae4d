"""The run's privacy budget: phases, the budget split, RDP/zCDP composition and conversion to (ε, δ).

Every release of a run (a noisy count table, a batch of DP-SGD steps) is one :class:`Release`: a Gaussian
mechanism with noise multiplier ``z`` (noise standard deviation over L2 sensitivity) applied ``count`` times.
A Gaussian release is ``1 / (2 z²)``-zCDP per use, i.e. ``(α, α / (2 z²))``-RDP at every order ``α``
(Bun & Steinke 2016, Mironov 2017). Composition is the sum of the RDP curves over the releases at fixed orders
(fedsynth's own code, tested against :class:`dp_accounting.rdp.RdpAccountant`); the conversion of the composed
curve to (ε, δ) is ``dp_accounting``'s (:func:`dp_accounting.rdp.compute_epsilon`, Canonne, Kamath & Steinke
2020, Prop. 12 of Asoodeh et al.).

The budget split: the largest ρ whose zCDP curve converts to at most the budget's ε at its δ (at the same
orders) is shared over the run's phases in stated proportions; each phase calibrates its noise to its share, and
:meth:`PrivacyAccountant.charge` refuses, before anything is released, a release that would take a phase past
its share or the run past its (ε, δ). Releases made before a strategy's own phases (the hello's row counts and
the shared domain, :mod:`fedsynth.strategies.secure_domain`) travel with the budget (:attr:`PrivacyBudget.spent`):
the accountant starts with them charged at exactly what they cost and shares the rest, and the manifest's split
names every phase, those included.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedsynth.errors import FedsynthError, Problem, ValidationError

#: RDP orders used unless a caller gives others (a Gaussian-friendly grid, as in dp_accounting's default).
DEFAULT_ORDERS: tuple[float, ...] = (
    1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 14.0, 16.0, 20.0,
    24.0, 28.0, 32.0, 48.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
)

@contextmanager
def _quiet_absl() -> Iterator[None]:
    """dp_accounting logs (through absl) every fractional order it cannot evaluate for a large sampling rate;
    those orders are left out of the conversion (their ε is ``inf``), which is safe, so the warnings are hidden."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


#: Relative slack for floating-point round-off when a release exactly fills a share.
_SLACK = 1e-9


class BudgetExceededError(FedsynthError):
    """A release would take the run (or a phase, or a site's ledger) past its budget; nothing was released."""


@dataclass(frozen=True)
class PrivacyBudget:
    """A run's (or a site's) differential-privacy budget.

    Parameters
    ----------
    epsilon : float
        ε > 0; ``math.inf`` means no differential privacy (exact releases).
    delta : float
        δ in (0, 1), e.g. 1e-5; a common choice is below 1 / number of records.

    Raises
    ------
    ValidationError
        When ε ≤ 0 or δ is outside (0, 1).
    """

    epsilon: float
    delta: float = 1e-5
    #: Gaussian releases of the run already made before the phases this budget is handed to (the hello's row
    #: counts and the shared domain, :meth:`spending`): an accountant built on the budget starts with them
    #: charged and shares only what they leave among its own phases; DP-SGD calibration composes them in.
    spent: tuple[Release, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if not (self.epsilon > 0):
            problems.append(Problem("privacy.epsilon", f"is {self.epsilon}", "a number > 0 (or leave privacy out)"))
        if not (0 < self.delta < 1):
            problems.append(Problem("privacy.delta", f"is {self.delta}", "a number in (0, 1), e.g. 1e-5"))
        if problems:
            raise ValidationError("Privacy budget", problems)

    @property
    def is_infinite(self) -> bool:
        """True when ε = ∞ (no noise is added; releases are exact)."""
        return math.isinf(self.epsilon)

    @property
    def spent_rho(self) -> float:
        """zCDP ρ of the releases already made (:attr:`spent`)."""
        return float(sum(r.rho for r in self.spent))

    def spending(self, *releases: Release) -> PrivacyBudget:
        """The same (ε, δ) with ``releases`` recorded as already made (see :attr:`spent`)."""
        return dataclasses.replace(self, spent=(*self.spent, *releases))

    def fresh(self) -> PrivacyBudget:
        """The same (ε, δ) with nothing spent."""
        return PrivacyBudget(self.epsilon, self.delta)


@dataclass(frozen=True)
class Release:
    """One Gaussian mechanism used ``count`` times in a phase.

    Parameters
    ----------
    phase : str
        The run phase it belongs to (e.g. ``"structure"``, ``"parameters"``).
    noise_multiplier : float
        ``z = σ / Δ₂``: the noise standard deviation over the L2 sensitivity of one use (``inf``: no release
        cost, e.g. a query answered from already-noisy tables).
    count : int
        How many uses (e.g. count tables released with this noise).
    """

    phase: str
    noise_multiplier: float
    count: int = 1

    @property
    def rho(self) -> float:
        """zCDP ρ of the whole release: ``count / (2 z²)``."""
        if math.isinf(self.noise_multiplier):
            return 0.0
        return self.count / (2.0 * self.noise_multiplier**2)

    def rdp(self, orders: Sequence[float]) -> np.ndarray:
        """RDP ε(α) of the release at each order: ``α ρ`` (shape ``(len(orders),)``)."""
        return np.asarray(orders, dtype=float) * self.rho


@dataclass(frozen=True)
class DPSGDRelease:
    """DP-SGD at one site: ``steps`` noisy gradient steps on Poisson-sampled batches (Abadi et al. 2016).

    The RDP curve is dp_accounting's analysis of the Poisson-sampled Gaussian mechanism (Mironov, Talwar &
    Zhang 2019), read from a :class:`dp_accounting.rdp.RdpAccountant` that composed exactly this event. At
    integer orders it equals Opacus's (:func:`opacus.accountants.analysis.rdp.compute_rdp`); at fractional
    orders Opacus's older series gives smaller, less safe values, so dp_accounting's is used. Record-level: the
    neighbouring datasets differ by one patient of the site.

    Parameters
    ----------
    phase : str
        The run phase (e.g. ``"training"``).
    noise_multiplier : float
        Gradient noise standard deviation over the per-sample clipping norm.
    sample_rate : float
        Expected batch size over the site's rows, in (0, 1].
    steps : int
        Optimiser steps taken.
    """

    phase: str
    noise_multiplier: float
    sample_rate: float
    steps: int

    @property
    def count(self) -> int:
        return self.steps

    def rdp(self, orders: Sequence[float]) -> np.ndarray:
        """RDP ε(α) of the whole training at each order (shape ``(len(orders),)``)."""
        from dp_accounting.rdp import RdpAccountant

        acc = RdpAccountant(orders=list(orders))
        with _quiet_absl():
            acc.compose(dpsgd_event(self.noise_multiplier, self.sample_rate, self.steps))
        # dp_accounting exposes the curve only through this attribute (its get_epsilon converts it).
        return np.asarray(acc._rdp, dtype=float)

    def rho_at(self, orders: Sequence[float]) -> float:
        """The smallest ρ with ε(α) ≤ α ρ at every order: the release's share of a phase's zCDP budget."""
        curve = self.rdp(orders)
        finite = np.isfinite(curve)
        return float(np.max(curve[finite] / np.asarray(orders, dtype=float)[finite]))


def larger_per_phase(*accounts: Sequence[Release]) -> tuple[Release, ...]:
    """Per phase, the releases of whichever account spent the most ρ in it (the first on a tie), in order of
    first appearance: what a site plans with when it has its own record of a run's releases beside the
    coordinator's (an account that under-reports a phase cannot lower what is counted for it).

    Parameters
    ----------
    *accounts : sequence of Release
        Each a list of releases of the same run (e.g. the coordinator's statement, then the site's own record).

    Returns
    -------
    tuple of Release
    """
    phases: list[str] = []
    for account in accounts:
        phases += [r.phase for r in account if r.phase not in phases]
    out: list[Release] = []
    for phase in phases:
        groups = [[r for r in account if r.phase == phase] for account in accounts]
        out += max(groups, key=lambda g: sum(r.rho for r in g))  # max keeps the first of equal ones
    return tuple(out)


def epsilon_from_rdp(rdp: Sequence[float] | np.ndarray, delta: float, orders: Sequence[float] = DEFAULT_ORDERS) -> float:
    """(ε, δ)-DP ε of a composed RDP curve (conversion by :func:`dp_accounting.rdp.compute_epsilon`)."""
    from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

    curve = np.asarray(rdp, dtype=float)
    if not np.any(curve > 0):
        return 0.0
    eps, _ = compute_epsilon(list(orders), list(curve), delta)
    return float(eps)


def rho_for_budget(budget: PrivacyBudget, orders: Sequence[float] = DEFAULT_ORDERS) -> float:
    """The largest zCDP ρ whose RDP curve ``α ρ`` converts to at most ``budget.epsilon`` at ``budget.delta``.

    Found by bisection (the converted ε grows with ρ); ``inf`` for an infinite budget. The closed form
    ``ε = ρ + 2 sqrt(ρ log(1/δ))`` (Bun & Steinke, Prop. 1.3) is a looser bound and gives a smaller ρ.
    """
    if budget.is_infinite:
        return math.inf
    grid = np.asarray(orders, dtype=float)
    lo, hi = 0.0, max(1.0, budget.epsilon)
    while epsilon_from_rdp(grid * hi, budget.delta, orders) <= budget.epsilon:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if epsilon_from_rdp(grid * mid, budget.delta, orders) <= budget.epsilon:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return lo


def noise_multiplier_for(rho: float, count: int) -> float:
    """Noise multiplier ``z`` so that ``count`` Gaussian uses spend exactly ``rho``: ``sqrt(count / (2 ρ))``."""
    if math.isinf(rho):
        return 0.0
    if rho <= 0 or count < 1:
        raise ValueError(f"rho must be > 0 and count >= 1; got rho={rho}, count={count}")
    return math.sqrt(count / (2.0 * rho))


def dpsgd_event(noise_multiplier: float, sample_rate: float, steps: int) -> Any:
    """dp_accounting's event for ``steps`` DP-SGD steps: a Poisson-sampled Gaussian mechanism, self-composed."""
    from dp_accounting import GaussianDpEvent, PoissonSampledDpEvent, SelfComposedDpEvent

    return SelfComposedDpEvent(PoissonSampledDpEvent(sample_rate, GaussianDpEvent(noise_multiplier)), steps)


def calibrate_dpsgd_noise(
    budget: PrivacyBudget,
    sample_rate: float,
    steps: int,
    *,
    other_rho: float = 0.0,
    orders: Sequence[float] = DEFAULT_ORDERS,
) -> float:
    """The smallest DP-SGD noise multiplier whose training, composed with ``other_rho`` of Gaussian releases,
    stays within ``budget``.

    Calibration is dp_accounting's (:func:`dp_accounting.calibrate_dp_mechanism`, bisection on the noise
    multiplier with an :class:`~dp_accounting.rdp.RdpAccountant` at ``orders``): the event is ``steps``
    Poisson-sampled Gaussian steps composed with one Gaussian mechanism of zCDP ``other_rho`` (the run's
    other phases, e.g. the latent-mixture statistics), so the whole run converts to at most ``budget.epsilon``
    at ``budget.delta``.

    Parameters
    ----------
    budget : PrivacyBudget
        The run's (ε, δ); ``inf`` gives 0 (no noise).
    sample_rate : float
        Expected batch size over the site's rows, in (0, 1].
    steps : int
        DP-SGD steps over the whole run (rounds × local epochs × steps per epoch).
    other_rho : float
        zCDP ρ of the run's other releases on the same rows (0: none), besides ``budget.spent`` (always
        composed in).
    orders : Sequence[float]
        RDP orders of the accountant.

    Returns
    -------
    float
        The noise multiplier (noise standard deviation over the clipping norm).

    Raises
    ------
    BudgetExceededError
        When ``other_rho`` alone spends the budget (no noise level is enough).
    """
    from dp_accounting import ComposedDpEvent, GaussianDpEvent, calibrate_dp_mechanism
    from dp_accounting.mechanism_calibration import ExplicitBracketInterval
    from dp_accounting.rdp import RdpAccountant

    if budget.is_infinite:
        return 0.0
    other_rho = other_rho + budget.spent_rho  # the releases made before this phase (hello, domain)
    grid = np.asarray(orders, dtype=float)
    if other_rho > 0 and epsilon_from_rdp(grid * other_rho, budget.delta, orders) >= budget.epsilon:
        raise BudgetExceededError(
            f"privacy: the run's other releases alone spend epsilon {budget.epsilon}; nothing is left for training"
        )
    others = [GaussianDpEvent(noise_multiplier_for(other_rho, 1))] if other_rho > 0 else []

    def event(z: float) -> Any:
        return ComposedDpEvent([dpsgd_event(z, sample_rate, steps), *others])

    with _quiet_absl():
        z = calibrate_dp_mechanism(
            lambda: RdpAccountant(orders=list(orders)), event, budget.epsilon, budget.delta,
            ExplicitBracketInterval(1e-2, 1e4), tol=1e-4,
        )
    return float(z)


@dataclass
class PrivacyAccountant:
    """A run's accountant: the budget split over phases, every release charged before it is made.

    Parameters
    ----------
    budget : PrivacyBudget
        The run's (ε, δ).
    split : Mapping[str, float]
        Phase name -> share of the run's ρ (normalised to sum 1).
    orders : Sequence[float]
        RDP orders for composition and conversion.
    prior_rdp : array-like, optional
        RDP already spent on the same records (a resumed run, or earlier runs from a site's ledger); it counts
        against the run's (ε, δ) but not against any phase's share.
    remainder_phase : str, optional
        A DP-SGD phase whose share is what the other phases leave of the run's (ε, δ) (its noise is calibrated
        with them, :func:`calibrate_dpsgd_noise`): its releases are held to the run's budget, not to a share.

    Attributes
    ----------
    rho_total_ : float
        The run's ρ (see :func:`rho_for_budget`).
    allocation_ : dict[str, float]
        Each phase's ρ.
    releases_ : list[Release]
        What was charged, in order.
    """

    budget: PrivacyBudget
    split: Mapping[str, float]
    orders: Sequence[float] = DEFAULT_ORDERS
    prior_rdp: Sequence[float] | np.ndarray | None = None
    remainder_phase: str | None = None
    rho_total_: float = field(init=False)
    allocation_: dict[str, float] = field(init=False)
    releases_: list[Release | DPSGDRelease] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if not self.split or any(w <= 0 for w in self.split.values()):
            raise ValueError("split needs at least one phase, every share > 0")
        overlap = {r.phase for r in self.budget.spent} & set(self.split)
        if overlap:
            raise ValueError(f"phases {sorted(overlap)} are both in the split and already spent")
        total = float(sum(self.split.values()))
        self.rho_total_ = rho_for_budget(self.budget, self.orders)
        # The releases made before this accountant's phases (the budget's ``spent``) take exactly what they cost;
        # the split shares what they leave.
        before: dict[str, float] = {}
        for r in self.budget.spent:
            before[r.phase] = before.get(r.phase, 0.0) + r.rho
        rest = self.rho_total_ - sum(before.values())
        if not self.budget.is_infinite and rest <= 0:
            raise BudgetExceededError(
                f"privacy: the releases before the run's phases ({', '.join(before)}) spend the whole budget "
                f"(epsilon {self.budget.epsilon}); nothing is left"
            )
        self.allocation_ = {**before, **{p: rest * w / total for p, w in self.split.items()}}
        self.releases_ = list(self.budget.spent)
        if self.prior_rdp is not None and len(self.prior_rdp) != len(self.orders):
            raise ValueError("prior_rdp must have one value per order")

    def noise_multiplier(self, phase: str, count: int) -> float:
        """The noise multiplier that spends ``phase``'s whole share over ``count`` uses (0 when ε = ∞)."""
        return noise_multiplier_for(self.allocation_[phase], count)

    def uses_left(self, phase: str, noise_multiplier: float) -> int:
        """How many more uses of a Gaussian release with ``noise_multiplier`` fit in ``phase``'s share."""
        if self.budget.is_infinite:
            return 2**62
        per_use = Release(phase, noise_multiplier).rho
        left = self.allocation_[phase] - self.rho_spent(phase)
        return max(0, math.floor(left / per_use * (1 + _SLACK)))

    def rdp(self) -> np.ndarray:
        """The composed RDP curve: prior plus the sum over every charged release (shape ``(len(orders),)``)."""
        curve = np.zeros(len(self.orders)) if self.prior_rdp is None else np.asarray(self.prior_rdp, dtype=float)
        for r in self.releases_:
            curve = curve + r.rdp(self.orders)
        return curve

    def _rho(self, release: Release | DPSGDRelease) -> float:
        return release.rho if isinstance(release, Release) else release.rho_at(self.orders)

    def rho_spent(self, phase: str) -> float:
        """ρ charged to ``phase`` (a DP-SGD release counts as its smallest dominating ρ at the orders, a loose
        figure: see the phase's ``epsilon_alone`` in :meth:`summary`)."""
        return float(sum(self._rho(r) for r in self.releases_ if r.phase == phase))

    def epsilon_spent(self) -> float:
        """ε of everything composed so far at the budget's δ."""
        return epsilon_from_rdp(self.rdp(), self.budget.delta, self.orders)

    def charge(self, release: Release | DPSGDRelease) -> None:
        """Record ``release`` if it fits; otherwise raise before it is made.

        Raises
        ------
        BudgetExceededError
            When the release would take its phase past its share, or the run past its (ε, δ); nothing is
            recorded.
        KeyError
            When the release's phase is not in the split.
        """
        if self.budget.is_infinite:
            self.releases_.append(release)
            return
        allowed = self.allocation_[release.phase]
        if release.phase == self.remainder_phase and isinstance(release, DPSGDRelease):
            after, over = 0.0, False  # held to the run's (epsilon, delta) below
        elif isinstance(release, Release):
            after = self.rho_spent(release.phase) + release.rho
            over = after > allowed * (1 + _SLACK)
        else:
            # A sampled Gaussian is not ρ-zCDP for any useful ρ: its phase must stay within the ε its share of ρ
            # converts to (the same test as the ρ one for Gaussian releases, which the ε is monotone in).
            orders = np.asarray(self.orders, dtype=float)
            phase_curve = sum((r.rdp(self.orders) for r in self.releases_ if r.phase == release.phase),
                              np.zeros(len(self.orders)))
            after = epsilon_from_rdp(phase_curve + release.rdp(self.orders), self.budget.delta, self.orders)
            over = after > epsilon_from_rdp(orders * allowed, self.budget.delta, self.orders) * (1 + _SLACK)
        if over:
            raise BudgetExceededError(
                f"privacy: phase {release.phase!r} would spend {after:.6g} (rho, or epsilon for DP-SGD), more than its share "
                f"{allowed:.6g} of the budget (epsilon {self.budget.epsilon}, delta {self.budget.delta}); "
                "nothing was released. Raise privacy.epsilon or ask for fewer releases."
            )
        eps = epsilon_from_rdp(self.rdp() + release.rdp(self.orders), self.budget.delta, self.orders)
        if eps > self.budget.epsilon * (1 + _SLACK):
            raise BudgetExceededError(
                f"privacy: this release would bring the spent epsilon to {eps:.4g}, over the budget "
                f"{self.budget.epsilon} at delta {self.budget.delta}; nothing was released."
            )
        self.releases_.append(release)

    def split_shares(self) -> dict[str, float]:
        """Each phase's share of the run's ρ, the releases made before the phases (``budget.spent``) included;
        the shares sum to 1."""
        if math.isinf(self.rho_total_) or self.rho_total_ <= 0:
            before = {r.phase for r in self.budget.spent}
            total = float(sum(self.split.values()))
            return {**{p: 0.0 for p in before}, **{p: float(w) / total for p, w in self.split.items()}}
        return {p: float(rho) / self.rho_total_ for p, rho in self.allocation_.items()}

    def summary(self) -> dict[str, Any]:
        """JSON-able account for the manifest and the report: budget, split, spent per phase, orders."""
        phases: dict[str, Any] = {}
        for p, rho in self.allocation_.items():
            spent = self.rho_spent(p)
            curve = sum((r.rdp(self.orders) for r in self.releases_ if r.phase == p), np.zeros(len(self.orders)))
            phases[p] = {
                "rho_allocated": json_float(rho),
                "rho_spent": spent,
                "epsilon_alone": epsilon_from_rdp(curve, self.budget.delta, self.orders),
                "releases": sum(r.count for r in self.releases_ if r.phase == p),
            }
        return {
            "budget": {"epsilon": json_float(self.budget.epsilon), "delta": self.budget.delta},
            "accountant": "RDP composition of Gaussian releases (fedsynth), (epsilon, delta) by dp_accounting",
            "orders": list(self.orders),
            "split": self.split_shares(),
            "phases": phases,
            "epsilon_spent": self.epsilon_spent(),
        }


def json_float(x: float) -> float | str:
    """``x`` as a manifest writes a privacy figure: the string ``"inf"`` for an infinite one (JSON has no infinity),
    else the float."""
    return "inf" if math.isinf(x) else float(x)
