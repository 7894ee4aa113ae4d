"""Error types shared by every part of fedsynth; the CLI turns them into clean messages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class FedsynthError(Exception):
    """Base class for every error fedsynth raises on purpose (bad input, bad config, missing data)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where, what was found, what is valid, how to fix it.

    ``found`` must describe the problem without quoting a patient's value (counts, kinds, types).
    """

    where: str
    found: str
    valid: str = ""
    fix: str = ""

    def __str__(self) -> str:
        parts = [f"{self.where}: {self.found}"]
        if self.valid:
            parts.append(f"valid: {self.valid}")
        if self.fix:
            parts.append(f"fix: {self.fix}")
        return "; ".join(parts)


class ValidationError(FedsynthError, ValueError):
    """Raised once with every problem found, so a user can fix them all in one go."""

    def __init__(self, subject: str, problems: Sequence[Problem]):
        self.subject = subject
        self.problems = list(problems)
        n = len(self.problems)
        lines = [f"{subject} has {n} problem{'s' if n != 1 else ''}:"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class DataNotFoundError(FedsynthError, FileNotFoundError):
    """A cohort's files are not where fedsynth looked; the message says where to put them."""


class CapabilityError(FedsynthError, TypeError):
    """A strategy asked for a capability the chosen generator does not have."""
