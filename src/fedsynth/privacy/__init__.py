"""Differential privacy: the run's budget, its accountant (RDP/zCDP composition) and the site's ε ledger."""

from fedsynth.privacy.accounting import (
    BudgetExceededError,
    PrivacyAccountant,
    PrivacyBudget,
    Release,
)
from fedsynth.privacy.ledger import PrivacyLedger

__all__ = ["BudgetExceededError", "PrivacyAccountant", "PrivacyBudget", "PrivacyLedger", "Release"]
