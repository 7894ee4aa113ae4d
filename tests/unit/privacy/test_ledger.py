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
