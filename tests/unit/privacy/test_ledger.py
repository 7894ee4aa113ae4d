"""The site's ε ledger: composition across runs (vs dp_accounting), never over budget, resume-safe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dp_accounting import GaussianDpEvent
from dp_accounting.rdp import RdpAccountant

from fedsynth.privacy.accounting import DEFAULT_ORDERS, BudgetExceededError, PrivacyAccountant, PrivacyBudget, Release
from fedsynth.privacy.ledger import LEDGER_FILE, PrivacyLedger


def _curve(z: float) -> np.ndarray:
    return Release("x", z).rdp(DEFAULT_ORDERS)


def test_ledger_composes_runs_like_dp_accounting(tmp_path: Path) -> None:
    # Setup
    ledger = PrivacyLedger(tmp_path / LEDGER_FILE, PrivacyBudget(5.0, 1e-5))
    # Run: two runs, three releases
    ledger.record("mds", "run-a", "structure/1", _curve(10.0))
    ledger.record("mds", "run-a", "parameters/1", _curve(7.0))
    ledger.record("mds", "run-b", "structure/1", _curve(4.0))
    ref = RdpAccountant(orders=list(DEFAULT_ORDERS))
    for z in (10.0, 7.0, 4.0):
        ref.compose(GaussianDpEvent(z))
    # Assert
    np.testing.assert_allclose(ledger.spent_rdp("mds"), ref._rdp, rtol=1e-6)
    assert ledger.epsilon_spent("mds") == pytest.approx(ref.get_epsilon(1e-5), rel=1e-6)
    assert ledger.epsilon_spent("other") == 0.0


def test_resumed_run_does_not_spend_twice_for_the_same_release(tmp_path: Path) -> None:
    # Setup
    path = tmp_path / LEDGER_FILE
    first = PrivacyLedger(path, PrivacyBudget(2.0, 1e-5))
    assert first.record("mds", "run-a", "structure/1", _curve(8.0))
    before = first.epsilon_spent("mds")
    # Run: a new process (fresh object) resumes the run and re-sends the same release
    resumed = PrivacyLedger(path, PrivacyBudget(2.0, 1e-5))
    again = resumed.record("mds", "run-a", "structure/1", _curve(8.0))
    # Assert
    assert again is False
    assert resumed.epsilon_spent("mds") == pytest.approx(before, rel=1e-12)
    with pytest.raises(BudgetExceededError, match="another cost"):
        resumed.record("mds", "run-a", "structure/1", _curve(4.0))


def test_budget_is_never_exceeded_across_runs_and_resumes(tmp_path: Path) -> None:
    # Setup: each run asks for a third of the site's budget, split over two phases
    path = tmp_path / LEDGER_FILE
    site_budget = PrivacyBudget(1.0, 1e-5)
    charged = 0
    refused = 0
    # Run: runs keep coming, each resumed once (re-recording its releases), until the ledger refuses
    for i in range(10):
        run = PrivacyAccountant(PrivacyBudget(1.0 / 3, 1e-5), {"structure": 1, "parameters": 1})
        releases = [("structure/1", run.noise_multiplier("structure", 1)),
                    ("parameters/1", run.noise_multiplier("parameters", 1))]
        for attempt in range(2):
            ledger = PrivacyLedger(path, site_budget)
            for key, z in releases:
                try:
                    charged += ledger.record("mds", f"run-{i}", key, _curve(z))
                except BudgetExceededError:
                    refused += 1
                assert ledger.epsilon_spent("mds") <= 1.0 + 1e-9
    # Assert: some runs fit (composition under RDP beats adding ε: more than 3 runs' worth), then refusals
    assert charged >= 6
    assert refused > 0
    assert PrivacyLedger(path, site_budget).epsilon_spent("mds") <= 1.0 + 1e-9


def test_refused_release_leaves_the_file_unchanged(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    ledger = PrivacyLedger(path, PrivacyBudget(0.5, 1e-5))
    ledger.record("mds", "run-a", "s/1", _curve(20.0))
    text = path.read_text()
    with pytest.raises(BudgetExceededError, match="over the site's budget"):
        ledger.record("mds", "run-b", "s/1", _curve(0.5))
    assert path.read_text() == text


def test_a_release_with_a_delta_of_its_own_is_converted_at_the_delta_left(tmp_path: Path) -> None:
    # Setup: a site budget (5, 1e-5); label selection spends delta_tau 1e-6 beside its Gaussian use
    ledger = PrivacyLedger(tmp_path / LEDGER_FILE, PrivacyBudget(5.0, 1e-5))
    ref = RdpAccountant(orders=list(DEFAULT_ORDERS))
    ref.compose(GaussianDpEvent(10.0))
    ref.compose(GaussianDpEvent(7.0))
    # Run
    ledger.record("mds", "run-a", "domain/1", _curve(10.0), delta=1e-6)
    ledger.record("mds", "run-a", "structure/1", _curve(7.0))
    # Assert: dp_accounting's epsilon at the 9e-6 left, not at 1e-5
    assert ledger.spent_delta("mds") == pytest.approx(1e-6, rel=1e-12)
    assert ledger.epsilon_spent("mds") == pytest.approx(ref.get_epsilon(9e-6), rel=1e-6)
    assert ledger.epsilon_spent("mds") > ref.get_epsilon(1e-5)
    assert ledger.spent_delta("mds", exclude_run="run-a") == 0.0
    # ... the same release again is free, with another delta it is another cost; a delta past the site's is refused
    assert ledger.record("mds", "run-a", "domain/1", _curve(10.0), delta=1e-6) is False
    with pytest.raises(BudgetExceededError, match="another cost"):
        ledger.record("mds", "run-a", "domain/1", _curve(10.0), delta=2e-6)
    with pytest.raises(BudgetExceededError, match="nothing was released"):
        ledger.record("mds", "run-b", "domain/1", _curve(1e6), delta=9e-6)
    assert not ledger.fits("mds", _curve(1e6), delta=9e-6) and ledger.fits("mds", _curve(1e6), delta=1e-6)


def test_a_memory_ledger_keeps_the_same_books_in_every_store_it_is_given() -> None:
    # Setup: two stores (a process's and a node state's), and a ledger file's twin for the same releases
    from fedsynth.privacy.ledger import MemoryLedger

    a: dict[str, str] = {}
    b: dict[str, str] = {}
    stores = [(lambda: a.get("t"), lambda t: a.update(t=t)), (lambda: b.get("t"), lambda t: b.update(t=t))]
    ledger = MemoryLedger(PrivacyBudget(1.0, 1e-5), stores=stores)
    # Run
    ledger.record("mds", "run-a", "hello/1", _curve(20.0))
    only_b = MemoryLedger(PrivacyBudget(1.0, 1e-5), stores=stores[1:])
    # Assert: both stores hold the release; a ledger reading one of them sees it, and refuses past the budget
    assert ledger.epsilon_spent("mds") > 0.0
    assert only_b.epsilon_spent("mds") == pytest.approx(ledger.epsilon_spent("mds"), rel=1e-12)
    with pytest.raises(BudgetExceededError):
        only_b.record("mds", "run-a", "structure/1", _curve(0.5))
    assert MemoryLedger(PrivacyBudget(1.0, 1e-5)).epsilon_spent("mds") == 0.0
