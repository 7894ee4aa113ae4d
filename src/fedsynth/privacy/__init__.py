"""Differential privacy: the run's budget, its accountant (RDP/zCDP composition) and the site's ε ledger."""

from fedsynth.privacy.accounting import (
    BudgetExceededError,
    PrivacyAccountant,
    PrivacyBudget,
    Release,
)
from fedsynth.privacy.ledger import MemoryLedger, PrivacyLedger

__all__ = ["BudgetExceededError", "MemoryLedger", "PrivacyAccountant", "PrivacyBudget", "PrivacyLedger", "Release"]
