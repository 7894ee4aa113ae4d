"""A site's ε ledger: what every run spent on each of its datasets, in a JSON file beside the site's data.

The ledger composes RDP curves (not ε values) across runs, so many small runs are charged what they really cost.
Each entry is keyed by run and release: recording the same release of the same run again (a resumed run that
re-sends a table drawn with the same seed, which carries no new information) does not spend twice; a new key
is new spending. Writes go through a temporary file and :func:`os.replace` under an exclusive lock, so a crash
leaves the old or the new ledger, never half of one.

A release may also carry a δ of its own beside its RDP curve (label selection's threshold, DP partition
selection: the chance that a label held by one patient is named, :mod:`fedsynth.encoding.dp_domain`). Such δs
add up, and the composed curve is converted to ε at the site's δ less their sum, as the run's own accountant
converts at the run's δ less the threshold's share: the site's (ε, δ) after a run is the one its manifest states.

A site without a folder for the file (a simulation without a state folder) keeps a :class:`MemoryLedger`: the
same bookkeeping, held by the process (and by whatever store the site hands it, e.g. its node state), so that a
finite budget in its policy is enforced there as in a deployment.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
from collections.abc import Callable, Collection, Iterator, Sequence
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

    def _runs(self, dataset: str, exclude_run: str | Collection[str] | None,
              only_runs: Collection[str] | None = None) -> Iterator[dict[str, Any]]:
        runs = self._read()["datasets"].get(dataset, {})
        excluded = {exclude_run} if isinstance(exclude_run, str) else set(exclude_run or ())
        for run_id, releases in runs.items():
            if run_id not in excluded and (only_runs is None or run_id in only_runs):
                yield from releases.values()

    def spent_rdp(self, dataset: str, *, exclude_run: str | Collection[str] | None = None,
                  only_runs: Collection[str] | None = None) -> np.ndarray:
        """The composed RDP curve of every recorded release on ``dataset`` (optionally but some runs', or of
        ``only_runs`` alone)."""
        curve = np.zeros(len(self.orders))
        for entry in self._runs(dataset, exclude_run, only_runs):
            curve = curve + np.asarray(entry["rdp"], dtype=float)
        return curve

    def spent_delta(self, dataset: str, *, exclude_run: str | Collection[str] | None = None,
                    only_runs: Collection[str] | None = None) -> float:
        """The sum of the δs recorded beside the RDP curves on ``dataset`` (label selection's thresholds)."""
        return float(sum(float(entry.get("delta", 0.0)) for entry in self._runs(dataset, exclude_run, only_runs)))

    def _epsilon(self, curve: np.ndarray, delta_spent: float, delta: float | None = None) -> float:
        """ε of ``curve`` at ``delta`` (default: the site's δ) less ``delta_spent`` (``inf`` when nothing of δ is
        left)."""
        left = (self.budget.delta if delta is None else float(delta)) - delta_spent
        if left <= 0:
            return float("inf")
        return epsilon_from_rdp(curve, left, self.orders)

    def epsilon_spent(self, dataset: str, *, exclude_run: str | Collection[str] | None = None,
                      delta: float | None = None) -> float:
        """ε spent on ``dataset`` so far (optionally but some runs'), at ``delta`` (default: the site's δ) less the
        recorded δs; a run's own figure is read at the run's δ."""
        return self._epsilon(self.spent_rdp(dataset, exclude_run=exclude_run),
                             self.spent_delta(dataset, exclude_run=exclude_run), delta)

    def epsilon_of_runs(self, dataset: str, runs: Collection[str], *, delta: float | None = None) -> float:
        """ε of the releases recorded under the run ids ``runs`` alone on ``dataset`` (composed in RDP), at ``delta``
        (default: the site's δ) less their own recorded δs: what those runs cost this site, read as a run's
        manifest reads its own figure (0.0 when none of them released anything here)."""
        only = set(runs)
        if next(self._runs(dataset, None, only), None) is None:  # a zero curve still converts to a positive ε
            return 0.0
        return self._epsilon(self.spent_rdp(dataset, only_runs=only), self.spent_delta(dataset, only_runs=only), delta)

    def fits(self, dataset: str, rdp: Sequence[float] | np.ndarray, delta: float = 0.0) -> bool:
        """Whether spending ``rdp`` (and ``delta``) more on ``dataset`` stays within the site's budget."""
        after = self.spent_rdp(dataset) + np.asarray(rdp, dtype=float)
        return self._epsilon(after, self.spent_delta(dataset) + float(delta)) <= self.budget.epsilon * (1 + 1e-9)

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

    def _write(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.path)

    def record(self, dataset: str, run_id: str, key: str, rdp: Sequence[float] | np.ndarray,
               delta: float = 0.0) -> bool:
        """Charge one release to the ledger, or refuse it before it is made.

        Parameters
        ----------
        dataset, run_id, key : str
            Which records, which run, which release of the run (e.g. ``"structure/3"``).
        rdp : array-like
            The release's RDP curve at the ledger's orders.
        delta : float, default 0
            A δ the release spends beside its curve (label selection's threshold); the ledger converts at the
            site's δ less the sum of these.

        Returns
        -------
        bool
            True when newly charged; False when this (run, key) was already recorded with the same cost.

        Raises
        ------
        BudgetExceededError
            When the release would take ``dataset`` past the site's budget (nothing is written), or when the
            same (run, key) is recorded again with another cost.
        """
        curve = [float(x) for x in np.asarray(rdp, dtype=float)]
        if len(curve) != len(self.orders):
            raise ValueError("rdp must have one value per order")
        delta = float(delta)
        with self._locked():
            data = self._read()
            runs = data["datasets"].setdefault(dataset, {})
            releases = runs.setdefault(run_id, {})
            if key in releases:
                same = np.allclose(releases[key]["rdp"], curve, rtol=1e-12, atol=0) and math.isclose(
                    float(releases[key].get("delta", 0.0)), delta, rel_tol=1e-12, abs_tol=0.0)
                if same:
                    return False
                raise BudgetExceededError(
                    f"privacy ledger: release {key!r} of run {run_id!r} was recorded with another cost; "
                    "a resumed run must reuse its seeds, or use a new run id"
                )
            spent = self.spent_rdp(dataset) + np.asarray(curve)
            eps = self._epsilon(spent, self.spent_delta(dataset) + delta)
            if eps > self.budget.epsilon * (1 + 1e-9):
                raise BudgetExceededError(
                    f"privacy ledger: dataset {dataset!r} would reach epsilon {eps:.4g}, over the site's budget "
                    f"{self.budget.epsilon} at delta {self.budget.delta}; nothing was released"
                )
            releases[key] = {"rdp": curve, **({"delta": delta} if delta else {})}
            self._write(data)
        log.info("privacy ledger: %s/%s charged; dataset now at epsilon %.4g", run_id, key, eps)
        return True


class MemoryLedger(PrivacyLedger):
    """A site's ε ledger without a file: the same bookkeeping, held in memory.

    For a site whose policy sets a finite ε but which has no folder for a ledger file (a simulation without a
    state folder): its budget is enforced for as long as the ledger lives, and beyond one object when it is
    given stores to keep its text in (each a ``(load, save)`` pair; it reads the union of what they hold and
    writes to every one), e.g. one held by the process and one in the site's node state (which Flower hands to
    the next message's process). Nothing is kept across processes that share no store.

    Parameters
    ----------
    budget : PrivacyBudget
        The site's total budget per dataset.
    orders : Sequence[float]
        RDP orders.
    stores : sequence of (load, save) pairs, optional
        ``load() -> str | None`` returns the ledger's JSON text (``None``: empty), ``save(text)`` keeps it.
        Default: one store private to this object.
    """

    def __init__(self, budget: PrivacyBudget, orders: Sequence[float] = DEFAULT_ORDERS,
                 stores: Sequence[tuple[Callable[[], str | None], Callable[[str], None]]] = ()) -> None:
        super().__init__(Path("<memory>"), budget, orders)
        if not stores:
            own: dict[str, str] = {}
            stores = [(lambda: own.get("text"), lambda text: own.update(text=text))]
        self.stores = list(stores)

    def _read(self) -> dict[str, Any]:
        merged: dict[str, Any] = {"version": _VERSION, "orders": list(self.orders), "datasets": {}}
        for load, _ in self.stores:
            text = load()
            if not text:
                continue
            data = json.loads(text)
            if tuple(float(o) for o in data.get("orders", [])) != self.orders:
                raise ValueError("a privacy ledger held in memory was written at other RDP orders")
            for dataset, runs in data["datasets"].items():
                for run_id, releases in runs.items():
                    merged["datasets"].setdefault(dataset, {}).setdefault(run_id, {}).update(releases)
        return merged

    @contextmanager
    def _locked(self) -> Iterator[None]:
        yield

    def _write(self, data: dict[str, Any]) -> None:
        text = json.dumps(data)
        for _, save in self.stores:
            save(text)
