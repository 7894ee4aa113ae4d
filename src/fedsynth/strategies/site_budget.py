"""A site's ε ledger as the federation sees it: the ledger a site keeps (:func:`site_ledger`), what it still allows
(:func:`epsilon_left`), the site's answer to the coordinator's budget question (:func:`handle_privacy_budget`),
and the coordinator's two uses of that question: before a run spends anything (:func:`check_site_budgets`) and after a
private run stopped part-way (:func:`spending_at_sites`). The ledger itself is :mod:`fedsynth.privacy.ledger`; the
rest of a site's disclosure policy is :mod:`fedsynth.strategies.policy`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fedsynth.strategies.policy import SitePolicy

#: Name of the message a coordinator sends to learn what each site's ledger still allows.
PRIVACY_BUDGET_MESSAGE = "query.privacy_budget"


def site_ledger(policy: SitePolicy, folder: str | Path | None) -> Any:
    """The site's ε ledger (:class:`~fedsynth.privacy.ledger.PrivacyLedger`), limited by its policy's budget.

    Parameters
    ----------
    policy : SitePolicy
        The site's own policy: ``epsilon`` and ``delta`` are the ledger's per-dataset limit.
    folder : path or None
        Where the ledger file lives: in a deployment the folder of the site's data file, in simulation the
        site's private state folder. ``None``: no ledger (nothing is kept across runs).

    Returns
    -------
    PrivacyLedger or None
    """
    if folder is None:
        return None
    from fedsynth.privacy.accounting import PrivacyBudget
    from fedsynth.privacy.ledger import LEDGER_FILE, PrivacyLedger

    return PrivacyLedger(Path(folder) / LEDGER_FILE, PrivacyBudget(policy.epsilon, policy.delta))


def epsilon_left(policy: SitePolicy, ledger: Any, dataset: str, *, exclude_runs: Any = ()) -> tuple[float, float]:
    """What the site can still spend on ``dataset`` and at which δ: its ledger's budget (built from the policy,
    :func:`site_ledger`) less what the ledger has recorded; the policy's budget when it keeps no ledger
    (``inf``: unlimited). The ledger composes in RDP, so a new run costs it at most its own ε more (basic
    composition bounds the RDP one): a run asking for no more than this is not refused for lack of budget. What
    the runs ``exclude_runs`` spent is not counted (the asking run's own releases so far: its hello and domain,
    or what it spent before it was resumed)."""
    budget = ledger.budget if ledger is not None else None
    epsilon = float(budget.epsilon) if budget is not None else policy.epsilon
    delta = float(budget.delta) if budget is not None else policy.delta
    if math.isinf(epsilon):
        return math.inf, delta
    spent = float(ledger.epsilon_spent(dataset, exclude_run=list(exclude_runs))) if ledger is not None else 0.0
    return max(0.0, epsilon - spent), delta


#: The most run ids a coordinator may ask a site to report the cost of (a run's token and its ledger id, and room
#: for a resumed run's): a site does not answer for a list of other studies' runs.
MAX_REPORT_RUNS = 4


def _run_ids(strategy: Any, *more: str | None) -> list[str]:
    """The ids the sites' ledgers know the strategy's run by: its token, its ledger id (the run directory's name,
    ``privacy_run_id``) and ``more``."""
    return sorted({str(r) for r in (getattr(strategy, "run_token_", ""), getattr(strategy, "privacy_run_id", None),
                                    *more) if r})


def handle_privacy_budget(msg: Any, site: Any) -> Any:
    """``query.privacy_budget``: the ε this site still has for its dataset and its δ (two numbers, no data); asked
    with ``report_runs`` (at most :data:`MAX_REPORT_RUNS` run ids) after a run stopped, also whether it keeps a
    ledger and, if so, what those runs cost it (``epsilon_of_runs``, at ``report_delta``)."""
    from flwr.app import RecordDict

    from fedsynth.strategies import records

    cfg = records.from_config_record(msg.content["config"]) if "config" in msg.content else {}
    left, delta = epsilon_left(site.policy, site.privacy_ledger, site.name,
                               exclude_runs=[str(r) for r in cfg.get("runs", [])])
    metrics = {"epsilon_left": -1.0 if math.isinf(left) else left, "delta": delta,
               "min_noise_multiplier": float(site.policy.min_noise_multiplier)}
    report = [str(r) for r in cfg.get("report_runs", [])][:MAX_REPORT_RUNS]
    if report:
        metrics["keeps_ledger"] = float(site.privacy_ledger is not None)
    if report and site.privacy_ledger is not None:
        # What the asking run cost this site (after it stopped), at the run's delta: one number, no data.
        at = float(cfg["report_delta"]) if "report_delta" in cfg else None
        spent = float(site.privacy_ledger.epsilon_of_runs(site.name, report, delta=at))
        metrics["epsilon_of_runs"] = -1.0 if math.isinf(spent) else spent
    return RecordDict({"metrics": records.to_metric_record(metrics),
                       "info": records.to_config_record({"site_name": site.name})})


def spending_at_sites(strategy: Any, grid: Any, delta: float, *, timeout: float = 30.0) -> dict[str, Any]:
    """Coordinator side, after a private run stopped before its end: ask every node still on the grid what the run
    cost its site (``query.privacy_budget`` with the run's ledger ids; the site reads its own ledger, at ``delta``,
    the run's δ).

    Parameters
    ----------
    strategy : Strategy
        The stopped run's strategy (its :meth:`ask`, its ledger ids, ``epsilon_left_`` from before the run).
    grid : Grid
        The run's grid.
    delta : float
        The run's δ.
    timeout : float, default 30
        Seconds to wait for the answers (the run has already stopped; an unreachable site is named, not waited on).

    Returns
    -------
    dict
        ``epsilon_spent_by_site`` (site name -> ε; ``"no ledger"`` for a site that says it keeps none, ``"not
        reported"`` for one whose answer lacks the figure, e.g. an older fedsynth), ``not_reached`` (the sites of the
        budget check before the run that gave no answer now: their own ledgers hold their figure) and
        ``answered_with_error`` (how many nodes answered with an error instead).

    The figure covers the releases a site's ledger holds under the run's ledger id (its directory's name, under
    which every strategy's releases are charged) and its current token.
    """
    from flwr.app import RecordDict

    from fedsynth.strategies import records

    runs = _run_ids(strategy)
    cfg = records.to_config_record({"report_runs": runs, "report_delta": float(delta)})
    probe = strategy._hello_request(grid).sites  # every node on the grid, as the budget check before the run asks
    previous = strategy.params["request_timeout"]
    strategy.params["request_timeout"] = min(float(previous), timeout)
    try:
        got = strategy.ask(grid, probe, PRIVACY_BUDGET_MESSAGE, lambda s: RecordDict({"config": cfg}),
                           group_id="privacy-after-stop", min_sites=0)
    finally:
        strategy.params["request_timeout"] = previous
    spent: dict[str, float | str] = {}
    errors = len(got.failed)
    for reply in got.ok.values():
        if "info" not in reply or "metrics" not in reply:  # each reply alone: one bad answer loses no other
            errors += 1
            continue
        name = str(records.from_config_record(reply["info"])["site_name"])
        m = records.from_metric_record(reply["metrics"])
        if "epsilon_of_runs" in m:
            spent[name] = "inf" if float(m["epsilon_of_runs"]) < 0 else float(m["epsilon_of_runs"])
        else:
            spent[name] = "no ledger" if m.get("keeps_ledger") == 0.0 else "not reported"
    asked_before = sorted(getattr(strategy, "epsilon_left_", {}) or {})
    return {"epsilon_spent_by_site": dict(sorted(spent.items())),
            "not_reached": [n for n in asked_before if n not in spent], "answered_with_error": errors}


def check_site_budgets(strategy: Any, grid: Any, sites: Any, budget: Any, *, run_id: str | None = None) -> dict[str, float]:
    """Coordinator side, before a run spends anything: ask every site what its ledger still allows and refuse
    a run whose ε is more than the smallest (or whose δ is larger than a site's).

    Parameters
    ----------
    strategy : Strategy
        The running strategy (its :meth:`ask` sends the query).
    grid, sites
        The Flower grid and the sites of the run.
    budget : PrivacyBudget
        The run's (ε, δ); ``ε = inf`` (a run without a ``privacy:`` block) is refused by every site whose policy
        sets a finite budget (it releases only under differential privacy).
    run_id : str, optional
        The id the sites' ledgers record this run under: a resumed run's own spending is not counted against it.

    Returns
    -------
    dict
        Site name -> ε left (``inf``: unlimited) for the manifest. The largest ``min_noise_multiplier`` the sites
        state is set on ``strategy.noise_floor_`` (0 when none states one): a strategy that asks for count tables
        adds at least that much noise, so no site's floor refuses a request part-way through the run.

    Raises
    ------
    BudgetExceededError
        Naming every site that has less than the run asks for; nothing was released.
    """
    from flwr.app import ConfigRecord, RecordDict

    from fedsynth.privacy.accounting import BudgetExceededError
    from fedsynth.strategies import records

    # The run's own releases so far (its hello and domain, or its spending before a resume) are not held against
    # it: its ids as the sites' ledgers record them.
    runs = _run_ids(strategy, run_id)
    cfg = records.to_config_record({"runs": runs}) if runs else ConfigRecord({})
    got = strategy.ask(grid, sites, PRIVACY_BUDGET_MESSAGE, lambda s: RecordDict({"config": cfg}),
                       group_id="privacy-budget")
    left: dict[str, float] = {}
    deltas: dict[str, float] = {}
    short: list[str] = []
    floors: list[float] = []
    short_eps: list[float] = []
    short_delta: list[float] = []
    for s in sites:
        if s.node_id not in got.ok:
            continue
        m = records.from_metric_record(got.ok[s.node_id]["metrics"])
        # The site's own name (asked before the hello, the server knows only its node)
        name = str(records.from_config_record(got.ok[s.node_id]["info"])["site_name"]) if "info" in got.ok[s.node_id] \
            else s.name
        eps = math.inf if float(m["epsilon_left"]) < 0 else float(m["epsilon_left"])
        left[name], deltas[name] = eps, float(m["delta"])
        floors.append(float(m.get("min_noise_multiplier", 0.0)))
        if math.isinf(budget.epsilon):
            continue
        if budget.epsilon > eps * (1 + 1e-9):
            short.append(f"{name} has epsilon {eps:.4g} left")
            short_eps.append(eps)
        if budget.delta > float(m["delta"]) * (1 + 1e-9):
            short.append(f"{name} allows delta {float(m['delta']):.3g}")
            short_delta.append(float(m["delta"]))
    strategy.noise_floor_ = max(floors, default=0.0)
    bounded = sorted(n for n, e in left.items() if not math.isinf(e))
    if math.isinf(budget.epsilon) and bounded:
        raise BudgetExceededError(
            "privacy: the run has no privacy block (no differential privacy: exact releases), but "
            f"{', '.join(f'{n} (epsilon {left[n]:.4g} left)' for n in bounded)} release only under "
            "differential privacy (their own policy); nothing was released. Set privacy: {epsilon, delta} in the "
            f"run config with epsilon at most {min(left[n] for n in bounded):.4g} and delta at most "
            f"{min(deltas[n] for n in bounded):.3g}, or run without those sites."
        )
    if short:
        # The fix names the setting that is over: epsilon, delta or both.
        fixes = ([f"privacy.epsilon to at most {min(short_eps):.4g}"] if short_eps else []) + \
            ([f"privacy.delta to at most {min(short_delta):.3g}"] if short_delta else [])
        raise BudgetExceededError(
            f"privacy: the run asks for epsilon {budget.epsilon:g} at delta {budget.delta:g}, more than its sites "
            f"allow ({'; '.join(short)}); nothing was released. Lower {' and '.join(fixes)}, or run without "
            "those sites."
        )
    return left
