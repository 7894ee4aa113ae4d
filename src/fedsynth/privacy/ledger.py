"""A site's ε ledger: what every run spent on each of its datasets, in a JSON file beside the site's data.

The ledger composes RDP curves (not ε values) across runs, so many small runs are charged what they really cost.
Each entry is keyed by run and release: recording the same release of the same run again (a resumed run that
re-sends a table drawn with the same seed, which carries no new information) does not spend twice; a new key
is new spending. Writes go through a temporary file and :func:`os.replace` under an exclusive lock, so a crash
leaves the old or the new ledger, never half of one.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from fedsynth.privacy.accounting import DEFAULT_ORDERS, BudgetExceededError, PrivacyBudget, epsilon_from_rdp

log = logging.getLogger(__name__)

#: File name of the ledger in a site's data folder.
LEDGER_FILE = "privacy_ledger.json"
_VERSION = 1


class PrivacyLedger:
    """The ε ledger of one site, per dataset, across runs.

    Parameters
    ----------
    path : str or Path
        The ledger file (by convention ``<site data folder>/privacy_ledger.json``); created on first write.
    budget : PrivacyBudget
        The site's total budget per dataset (its own policy, never the server's).
    orders : Sequence[float]
        RDP orders; a ledger written with other orders is refused.
    """

    def __init__(self, path: str | Path, budget: PrivacyBudget, orders: Sequence[float] = DEFAULT_ORDERS) -> None:
        self.path = Path(path)
        self.budget = budget
        self.orders = tuple(float(o) for o in orders)

    # -- reading -------------------------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"version": _VERSION, "orders": list(self.orders), "datasets": {}}
        data: dict[str, Any] = json.loads(self.path.read_text())
        if tuple(float(o) for o in data.get("orders", [])) != self.orders:
            raise ValueError(f"privacy ledger {self.path.name} was written at other RDP orders")
        return data

    def spent_rdp(self, dataset: str, *, exclude_run: str | Collection[str] | None = None) -> np.ndarray:
        """The composed RDP curve of every recorded release on ``dataset`` (optionally but some runs')."""
        runs = self._read()["datasets"].get(dataset, {})
        excluded = {exclude_run} if isinstance(exclude_run, str) else set(exclude_run or ())
        curve = np.zeros(len(self.orders))
        for run_id, releases in runs.items():
            if run_id in excluded:
                continue
            for entry in releases.values():
                curve = curve + np.asarray(entry["rdp"], dtype=float)
        return curve

    def epsilon_spent(self, dataset: str, *, exclude_run: str | Collection[str] | None = None) -> float:
        """ε spent on ``dataset`` so far (optionally but some runs'), at the site's δ."""
        return epsilon_from_rdp(self.spent_rdp(dataset, exclude_run=exclude_run), self.budget.delta, self.orders)

    def fits(self, dataset: str, rdp: Sequence[float] | np.ndarray) -> bool:
        """Whether spending ``rdp`` more on ``dataset`` stays within the site's budget."""
        after = self.spent_rdp(dataset) + np.asarray(rdp, dtype=float)
        return epsilon_from_rdp(after, self.budget.delta, self.orders) <= self.budget.epsilon * (1 + 1e-9)

    # -- writing -------------------------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def record(self, dataset: str, run_id: str, key: str, rdp: Sequence[float] | np.ndarray) -> bool:
        """Charge one release to the ledger, or refuse it before it is made.

        Parameters
        ----------
        dataset, run_id, key : str
            Which records, which run, which release of the run (e.g. ``"structure/3"``).
        rdp : array-like
            The release's RDP curve at the ledger's orders.

        Returns
        -------
        bool
            True when newly charged; False when this (run, key) was already recorded with the same curve.

        Raises
        ------
        BudgetExceededError
            When the release would take ``dataset`` past the site's budget (nothing is written), or when the
            same (run, key) is recorded again with another curve.
        """
        curve = [float(x) for x in np.asarray(rdp, dtype=float)]
        if len(curve) != len(self.orders):
            raise ValueError("rdp must have one value per order")
        with self._locked():
            data = self._read()
            runs = data["datasets"].setdefault(dataset, {})
            releases = runs.setdefault(run_id, {})
            if key in releases:
                if np.allclose(releases[key]["rdp"], curve, rtol=1e-12, atol=0):
                    return False
                raise BudgetExceededError(
                    f"privacy ledger: release {key!r} of run {run_id!r} was recorded with another cost; "
                    "a resumed run must reuse its seeds, or use a new run id"
                )
            spent = self.spent_rdp(dataset) + np.asarray(curve)
            eps = epsilon_from_rdp(spent, self.budget.delta, self.orders)
            if eps > self.budget.epsilon * (1 + 1e-9):
                raise BudgetExceededError(
                    f"privacy ledger: dataset {dataset!r} would reach epsilon {eps:.4g}, over the site's budget "
                    f"{self.budget.epsilon} at delta {self.budget.delta}; nothing was released"
                )
            releases[key] = {"rdp": curve}
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, self.path)
        log.info("privacy ledger: %s/%s charged; dataset now at epsilon %.4g", run_id, key, eps)
        return True
