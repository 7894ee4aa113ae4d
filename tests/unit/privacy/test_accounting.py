"""Composition, budget split and conversion, checked against dp_accounting computed independently."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting import GaussianDpEvent, SelfComposedDpEvent, ZCDpEvent
from dp_accounting.rdp import RdpAccountant

from fedsynth.errors import ValidationError
from fedsynth.privacy.accounting import (
    DEFAULT_ORDERS,
    BudgetExceededError,
    PrivacyAccountant,
    PrivacyBudget,
    Release,
    noise_multiplier_for,
    rho_for_budget,
)


def _reference(releases: list[tuple[float, int]], delta: float) -> tuple[np.ndarray, float]:
    acc = RdpAccountant(orders=list(DEFAULT_ORDERS))
    for z, count in releases:
        acc.compose(SelfComposedDpEvent(GaussianDpEvent(z), count))
    return np.asarray(acc._rdp), acc.get_epsilon(delta)


def test_composition_across_phases_matches_dp_accounting() -> None:
    # Setup: three phases, Gaussian releases of different noise and counts
    acc = PrivacyAccountant(PrivacyBudget(10.0, 1e-5), {"domain": 1, "structure": 2, "parameters": 1})
    plan = [("domain", 40.0, 3), ("structure", 25.0, 17), ("parameters", 12.5, 4), ("structure", 60.0, 1)]
    # Run
    for phase, z, count in plan:
        acc.charge(Release(phase, z, count))
    ref_rdp, ref_eps = _reference([(z, c) for _, z, c in plan], 1e-5)
    # Assert
    np.testing.assert_allclose(acc.rdp(), ref_rdp, rtol=1e-6, atol=0)
    assert acc.epsilon_spent() == pytest.approx(ref_eps, rel=1e-6)


def test_gaussian_release_rho_is_count_over_two_z_squared() -> None:
    # By hand: z = 5, 8 uses -> rho = 8 / 50 = 0.16; RDP at order 4 is 0.64
    r = Release("structure", 5.0, 8)
    assert r.rho == pytest.approx(0.16)
    assert r.rdp([4.0])[0] == pytest.approx(0.64)


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 3.0, 10.0])
def test_budget_rho_converts_back_to_epsilon_under_dp_accounting(epsilon: float) -> None:
    # Run
    rho = rho_for_budget(PrivacyBudget(epsilon, 1e-5))
    acc = RdpAccountant(orders=list(DEFAULT_ORDERS))
    acc.compose(ZCDpEvent(rho))
    acc_more = RdpAccountant(orders=list(DEFAULT_ORDERS))
    acc_more.compose(ZCDpEvent(rho * 1.001))
    # Assert: rho fills the budget and a little more would not fit
    assert acc.get_epsilon(1e-5) == pytest.approx(epsilon, rel=1e-6)
    assert acc_more.get_epsilon(1e-5) > epsilon
    # the zCDP closed form is looser, so our rho is at least its rho
    closed = (math.sqrt(math.log(1e5) + epsilon) - math.sqrt(math.log(1e5))) ** 2
    assert rho >= closed


def test_split_phases_filled_exactly_spend_the_whole_budget() -> None:
    # Setup
    budget = PrivacyBudget(1.0, 1e-5)
    acc = PrivacyAccountant(budget, {"structure": 3, "parameters": 1})
    # Run: each phase calibrates its noise to its share over its own number of tables
    z_s, z_p = acc.noise_multiplier("structure", 120), acc.noise_multiplier("parameters", 58)
    acc.charge(Release("structure", z_s, 120))
    acc.charge(Release("parameters", z_p, 58))
    _, ref_eps = _reference([(z_s, 120), (z_p, 58)], 1e-5)
    # Assert
    assert acc.rho_spent("structure") == pytest.approx(0.75 * acc.rho_total_, rel=1e-9)
    assert ref_eps == pytest.approx(1.0, rel=1e-6)
    assert acc.epsilon_spent() == pytest.approx(ref_eps, rel=1e-6)


def test_release_past_a_phase_share_is_refused_before_it_is_recorded() -> None:
    # Setup
    acc = PrivacyAccountant(PrivacyBudget(1.0, 1e-5), {"structure": 1, "parameters": 1})
    z = acc.noise_multiplier("structure", 10)
    acc.charge(Release("structure", z, 10))
    # Run / Assert
    with pytest.raises(BudgetExceededError, match="structure"):
        acc.charge(Release("structure", z, 1))
    assert sum(r.count for r in acc.releases_) == 10
    assert acc.epsilon_spent() <= 1.0


def test_prior_spending_counts_against_the_run_budget() -> None:
    # Setup: a resumed run whose earlier part already spent most of the budget
    budget = PrivacyBudget(1.0, 1e-5)
    prior = np.asarray(DEFAULT_ORDERS) * rho_for_budget(budget) * 0.9
    acc = PrivacyAccountant(budget, {"structure": 1}, prior_rdp=prior)
    # Run / Assert: half the run's share no longer fits
    with pytest.raises(BudgetExceededError, match="over the budget"):
        acc.charge(Release("structure", noise_multiplier_for(acc.rho_total_ * 0.5, 1), 1))
    acc.charge(Release("structure", noise_multiplier_for(acc.rho_total_ * 0.09, 1), 1))
    _, ref_eps = _reference([(noise_multiplier_for(acc.rho_total_ * 0.9, 1), 1),
                             (noise_multiplier_for(acc.rho_total_ * 0.09, 1), 1)], 1e-5)
    assert acc.epsilon_spent() == pytest.approx(ref_eps, rel=1e-6)
    assert acc.epsilon_spent() <= 1.0


def test_infinite_budget_adds_no_noise_and_spends_nothing() -> None:
    acc = PrivacyAccountant(PrivacyBudget(math.inf), {"structure": 1})
    assert acc.noise_multiplier("structure", 100) == 0.0
    assert acc.summary()["budget"]["epsilon"] == "inf"


def test_bad_budget_lists_every_problem() -> None:
    with pytest.raises(ValidationError) as err:
        PrivacyBudget(0.0, 2.0)
    assert str(err.value) == (
        "Privacy budget has 2 problems:\n"
        "  - privacy.epsilon: is 0.0; valid: a number > 0 (or leave privacy out)\n"
        "  - privacy.delta: is 2.0; valid: a number in (0, 1), e.g. 1e-5"
    )


def test_summary_states_split_and_spending_per_phase() -> None:
    acc = PrivacyAccountant(PrivacyBudget(3.0, 1e-6), {"structure": 1, "parameters": 1})
    acc.charge(Release("parameters", acc.noise_multiplier("parameters", 4), 4))
    s = acc.summary()
    assert s["split"] == {"structure": 0.5, "parameters": 0.5}
    assert s["phases"]["structure"]["rho_spent"] == 0.0
    assert s["phases"]["parameters"]["releases"] == 4
    assert s["epsilon_spent"] < 3.0
    assert s["orders"] == list(DEFAULT_ORDERS)


def test_uses_left_counts_what_still_fits_in_a_phase() -> None:
    acc = PrivacyAccountant(PrivacyBudget(1.0, 1e-5), {"structure": 1})
    z = acc.noise_multiplier("structure", 10)
    acc.charge(Release("structure", z, 7))
    assert acc.uses_left("structure", z) == 3
    acc.charge(Release("structure", z, 3))
    assert acc.uses_left("structure", z) == 0


def test_dpsgd_release_matches_dp_accounting_poisson_sampled_gaussian() -> None:
    # Setup: a site with 800 rows, batches of 64 expected, 5 epochs of steps, z = 1.1; plus one count table
    from dp_accounting import PoissonSampledDpEvent

    from fedsynth.privacy.accounting import DPSGDRelease

    q, z, steps = 64 / 800, 1.1, 5 * 800 // 64
    acc = PrivacyAccountant(PrivacyBudget(10.0, 1e-5), {"training": 9, "mixture": 1})
    # Run
    acc.charge(DPSGDRelease("training", z, q, steps))
    acc.charge(Release("mixture", 30.0, 2))
    ref = RdpAccountant(orders=list(DEFAULT_ORDERS))
    ref.compose(SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(z)), steps))
    ref.compose(SelfComposedDpEvent(GaussianDpEvent(30.0), 2))
    # Assert
    np.testing.assert_allclose(acc.rdp(), ref._rdp, rtol=1e-6)
    assert acc.epsilon_spent() == pytest.approx(ref.get_epsilon(1e-5), rel=1e-6)
    # ... and Opacus's own analysis of the same DP-SGD agrees at the integer orders
    from opacus.accountants.analysis.rdp import compute_rdp

    ints = [o for o in DEFAULT_ORDERS if float(o).is_integer()]
    mine = DPSGDRelease("training", z, q, steps).rdp(DEFAULT_ORDERS)[[DEFAULT_ORDERS.index(o) for o in ints]]
    np.testing.assert_allclose(mine, compute_rdp(q=q, noise_multiplier=z, steps=steps, orders=ints), rtol=1e-6)
    eps_training = acc.summary()["phases"]["training"]["epsilon_alone"]
    assert 0 < eps_training < 10.0
    assert math.isfinite(acc.rho_spent("training"))


def test_dpsgd_past_its_phase_share_is_refused() -> None:
    from fedsynth.privacy.accounting import DPSGDRelease

    acc = PrivacyAccountant(PrivacyBudget(1.0, 1e-5), {"training": 1, "mixture": 1})
    with pytest.raises(BudgetExceededError, match="training"):
        acc.charge(DPSGDRelease("training", 0.8, 0.1, 1000))
    assert acc.releases_ == []
