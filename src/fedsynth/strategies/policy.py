"""A site's own disclosure policy: what may leave the hospital, set by the hospital, never loosened by a server.

A :class:`SitePolicy` comes from the site's own configuration — node config keys (``policy-min-count`` …), a
policy YAML beside its data (``site-policy.yaml`` in the data file's folder, or the file named by
``policy-path``) — or, when none is given, the safe defaults below. A server's message carries the settings
*it* asks for (``min_category_count``, ``privacy_check``, ``gate_mia_auc_above`` …); :meth:`SitePolicy.effective`
combines them with the policy so that a message can ask for *less* disclosure, never more: a server that sends
``privacy_check=False`` or ``min_category_count=1`` gets the site's policy.

What "isolates patients" means (issue 13, item 0) is :func:`isolates_patients`: a table the site would send in
clear isolates patients when it has a non-empty cell under ``k`` or more cells than ``rows / k``. That test reads
the exact counts, so it applies to clear requests only: under a privacy budget (a request carrying
``dp_noise_std``) no decision about what to send may depend on the rows outside the noise, or one patient could
decide whether a table leaves. A private request is instead checked on its settings alone
(:func:`check_noise_floor`: a noise multiplier under the site's ``min_noise_multiplier`` is refused before
anything is counted) and on table sizes (:func:`over_size_cap`: cells, never rows).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsynth.errors import FedsynthError, Problem, ValidationError

#: File name of a site's policy when it lies beside the site's data file.
POLICY_FILENAME = "site-policy.yaml"

#: Prefix of the node config keys that set a policy field (``policy-min-count = 10``).
NODE_CONFIG_PREFIX = "policy_"


class DisclosureRefused(FedsynthError):
    """A site refused a query because its clear reply would isolate patients (no value is named)."""


class NoiseFloorRefused(DisclosureRefused):
    """A site refused a private request as a whole: its noise multiplier is under the site's
    ``min_noise_multiplier`` (decided on the request's settings, before anything is counted).

    Unlike a plain :class:`DisclosureRefused` (the site stays in and answers nothing for that query), a
    coordinator treats it as the site failing the request: the site leaves the run with this reason, since every
    further request at that noise would be refused too."""


@dataclass(frozen=True)
class SitePolicy:
    """The disclosure settings of one site (one hospital).

    Parameters
    ----------
    min_count : int, default 5
        ``k``: the smallest cell or category count the site releases in clear. Category labels held by fewer
        rows are not disclosed; numeric histograms merge cells under ``k`` with their neighbours; a count table
        with a non-empty cell under ``k`` is refused (:func:`isolates_patients`).
    max_cells : int, default 100000
        The largest count table (cells) the site answers at all, whatever its row count.
    clear_counts : bool, default False
        ``True`` for a *trusted* network: count tables are sent in clear even when they isolate patients (the
        size cap still holds). Secure aggregation (sums only) is the planned way to lift the refusals without
        trusting the coordinator.
    significant_digits : int, default 3
        Significant digits of released mixture modes and moments (fewer is coarser).
    allow_synthetic_rows : bool, default True
        Whether synthetic rows (SD-sharing) may leave the site at all.
    privacy_check : bool, default True
        Whether synthetic rows must pass the site's gate before they leave.
    gate_exact_copies_margin : float, default 0.0
        Release gate (:class:`~fedsynth.evaluation.gate.GateThresholds`): the share of exact copies allowed
        above the holdout's own.
    gate_nndr_p5_margin : float or None, default None
        Release gate: NNDR 5th-percentile margin below the holdout's (``None``: two bootstrap standard errors).
    gate_mia_auc_above : float, default 0.6
        Release gate: the largest membership-inference AUC released.
    max_share_rows : int or None, default None
        The most synthetic rows the site sends per request (``None``: as many rows as it holds).
    epsilon : float, default inf
        The site's differential-privacy budget per dataset, across runs: the limit of its ε ledger
        (:func:`site_ledger`). Every noisy release (count tables, DP-SGD rounds, latent-mixture statistics) is
        charged to the ledger before it leaves, and refused past it; a coordinator learns what is left
        (``query.privacy_budget``) and refuses a run that asks for more.
    delta : float, default 1e-5
        The δ at which the ledger converts its composed RDP curve to ε.
    min_noise_multiplier : float, default 1.0
        The smallest noise multiplier ``z`` (Gaussian noise standard deviation per unit of L2 sensitivity; for a
        count table, the standard deviation of each cell of the released sum) the site accepts on a private
        request (``dp_noise_std``). A request asking for less is refused as a whole before any count is made
        (:func:`check_noise_floor`). It replaces, data-independently, the exact-count check a private request
        cannot use: under it a private request answers every table it can count. A site with a finite
        ``epsilon`` is also bounded by its ledger.

    Raises
    ------
    ValidationError
        Every out-of-range field at once (see :meth:`problems`).
    """

    min_count: int = 5
    max_cells: int = 100_000
    clear_counts: bool = False
    significant_digits: int = 3
    allow_synthetic_rows: bool = True
    privacy_check: bool = True
    gate_exact_copies_margin: float = 0.0
    gate_nndr_p5_margin: float | None = None
    gate_mia_auc_above: float = 0.6
    max_share_rows: int | None = None
    epsilon: float = math.inf
    delta: float = 1e-5
    min_noise_multiplier: float = 1.0

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValidationError("The site policy", problems)

    def problems(self) -> list[Problem]:
        """Every field outside its valid range (values of settings, never of patients)."""
        out = []

        def bad(name: str, valid: str) -> None:
            out.append(Problem(name, f"got {getattr(self, name)!r}", valid))

        if not _is_int(self.min_count) or self.min_count < 1:
            bad("min_count", "an int in the range [1, inf)")
        if not _is_int(self.max_cells) or self.max_cells < 1:
            bad("max_cells", "an int in the range [1, inf)")
        if not _is_int(self.significant_digits) or self.significant_digits < 1:
            bad("significant_digits", "an int in the range [1, inf)")
        if not isinstance(self.gate_exact_copies_margin, (int, float)) or not 0.0 <= self.gate_exact_copies_margin <= 1.0:
            bad("gate_exact_copies_margin", "a float in the range [0, 1]")
        if self.gate_nndr_p5_margin is not None and (
            not isinstance(self.gate_nndr_p5_margin, (int, float)) or not 0.0 <= self.gate_nndr_p5_margin <= 1.0
        ):
            bad("gate_nndr_p5_margin", "null or a float in the range [0, 1]")
        if not isinstance(self.gate_mia_auc_above, (int, float)) or not 0.5 <= self.gate_mia_auc_above <= 1.0:
            bad("gate_mia_auc_above", "a float in the range [0.5, 1]")
        if self.max_share_rows is not None and (not _is_int(self.max_share_rows) or self.max_share_rows < 1):
            bad("max_share_rows", "null or an int in the range [1, inf)")
        if not isinstance(self.epsilon, (int, float)) or not self.epsilon > 0:
            bad("epsilon", "a float in the range (0, inf]")
        if not isinstance(self.delta, (int, float)) or not 0 < self.delta < 1:
            bad("delta", "a float in the range (0, 1)")
        if not _is_number(self.min_noise_multiplier) or not 0 < self.min_noise_multiplier < math.inf:
            bad("min_noise_multiplier", "a float in the range (0, inf)")
        for name in ("clear_counts", "allow_synthetic_rows", "privacy_check"):
            if not isinstance(getattr(self, name), bool):
                bad(name, "true or false")
        return out

    # -- building a policy ---------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, source: str = "site policy") -> SitePolicy:
        """A policy from snake_case keys (unknown keys are an error that lists the valid ones)."""
        names = {f.name for f in dataclasses.fields(cls)}
        # Unknown keys and bad values are listed together, so one edit of the file fixes them all.
        problems = [Problem(k, "unknown setting", ", ".join(sorted(names)), "remove or rename it")
                    for k in sorted(set(values) - names)]
        kwargs: dict[str, Any] = {}
        for k, v in values.items():
            if k not in names:
                continue
            if k == "epsilon" and isinstance(v, str) and v.strip().lower() in ("inf", "infinity", ".inf"):
                v = math.inf
            kwargs[k] = v
        try:
            policy = cls(**kwargs)
        except ValidationError as exc:
            problems += exc.problems
        if problems:
            raise ValidationError(f"The {source}", problems)
        return policy

    @classmethod
    def from_file(cls, path: str | Path) -> SitePolicy:
        """A policy from a YAML file (a mapping of the fields above; a missing field keeps its default)."""
        import yaml

        p = Path(path)
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValidationError(
                "The site policy file", [Problem(p.name, f"could not be read ({type(exc).__name__})",
                                                 "a YAML mapping of policy settings")]
            ) from None
        if not isinstance(raw, Mapping):
            raise ValidationError("The site policy file", [Problem(p.name, "is not a mapping", "key: value lines")])
        return cls.from_mapping({str(k): v for k, v in raw.items()}, source=f"site policy file {p.name!r}")

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any], data_path: str | None = None) -> SitePolicy:
        """The site's policy from its node config (snake_case keys), layered as
        defaults < the policy file (``policy_path``, else ``site-policy.yaml`` beside ``data_path``) <
        ``policy_<field>`` keys of the node config."""
        base: dict[str, Any] = {}
        path = node_config.get("policy_path")
        if path is None and data_path is not None:
            beside = Path(data_path).parent / POLICY_FILENAME
            path = str(beside) if beside.is_file() else None
        if path is not None:
            base = dataclasses.asdict(cls.from_file(str(path)))
        for key, value in node_config.items():
            if key.startswith(NODE_CONFIG_PREFIX) and key != "policy_path":
                base[key[len(NODE_CONFIG_PREFIX):]] = value
        return cls.from_mapping(base, source="site policy (node config)") if base else cls()

    def to_dict(self) -> dict[str, Any]:
        """The policy as a plain mapping (for the site's own log and tests)."""
        return dataclasses.asdict(self)

    def gate_thresholds(self) -> dict[str, Any]:
        """The release gate's thresholds (:class:`~fedsynth.evaluation.gate.GateThresholds` fields)."""
        return {
            "exact_copies_margin": self.gate_exact_copies_margin,
            "nndr_p5_margin": self.gate_nndr_p5_margin,
            "mia_auc_above": self.gate_mia_auc_above,
        }

    # -- what a message may ask for -----------------------------------------------------------------
    def effective(self, requested: Mapping[str, Any]) -> SitePolicy:
        """The settings this site applies to a message that asks for ``requested`` (snake_case keys).

        Every field takes the stricter of the site's value and the request's: a request may raise ``k``,
        lower the gate's DCR share or the rows shared, switch the gate on or synthetic rows off — never the
        reverse. Request keys: ``min_category_count`` (-> ``min_count``), ``significant_digits``,
        ``privacy_check``, ``gate_exact_copies_margin``, ``gate_nndr_p5_margin``, ``gate_mia_auc_above``,
        ``share_rows`` (-> ``max_share_rows``), ``allow_synthetic_rows``, ``clear_counts``, ``max_cells``,
        ``epsilon``, ``min_noise_multiplier`` (a request may ask for more noise, never less); others are
        ignored.
        """
        r = requested
        out: dict[str, Any] = self.to_dict()
        if "min_category_count" in r:
            out["min_count"] = max(self.min_count, int(r["min_category_count"]))
        if "min_count" in r:
            out["min_count"] = max(out["min_count"], int(r["min_count"]))
        if "significant_digits" in r:
            out["significant_digits"] = max(1, min(self.significant_digits, int(r["significant_digits"])))
        if "max_cells" in r:
            out["max_cells"] = max(1, min(self.max_cells, int(r["max_cells"])))
        if "privacy_check" in r:
            out["privacy_check"] = self.privacy_check or bool(r["privacy_check"])
        if "allow_synthetic_rows" in r:
            out["allow_synthetic_rows"] = self.allow_synthetic_rows and bool(r["allow_synthetic_rows"])
        if "clear_counts" in r:
            out["clear_counts"] = self.clear_counts and bool(r["clear_counts"])
        if r.get("gate_exact_copies_margin") is not None:
            out["gate_exact_copies_margin"] = min(self.gate_exact_copies_margin,
                                                  max(0.0, float(r["gate_exact_copies_margin"])))
        if r.get("gate_nndr_p5_margin") is not None and self.gate_nndr_p5_margin is not None:
            # A smaller margin flags more. The site's own ``None`` (two bootstrap standard errors, known only
            # at the gate) cannot be compared with a number, so a request does not replace it.
            out["gate_nndr_p5_margin"] = min(self.gate_nndr_p5_margin, max(0.0, float(r["gate_nndr_p5_margin"])))
        if r.get("gate_mia_auc_above") is not None:
            out["gate_mia_auc_above"] = min(self.gate_mia_auc_above, max(0.5, float(r["gate_mia_auc_above"])))
        if r.get("share_rows"):
            asked = max(1, int(r["share_rows"]))
            out["max_share_rows"] = asked if self.max_share_rows is None else min(self.max_share_rows, asked)
        if "epsilon" in r:
            out["epsilon"] = min(self.epsilon, float(r["epsilon"]))
        if r.get("min_noise_multiplier") is not None:
            out["min_noise_multiplier"] = max(self.min_noise_multiplier, float(r["min_noise_multiplier"]))
        return SitePolicy(**out)


def isolates_patients(table: np.ndarray, n_rows: int, policy: SitePolicy) -> bool:
    """Whether sending ``table`` in clear would isolate patients under ``policy``.

    A table isolates patients when it has a non-empty cell under ``k`` (``policy.min_count``) or more cells
    than ``n_rows / k`` (then most rows sit in cells of their own, whatever the counts say). Under a trusted
    network (``policy.clear_counts``) only the size cap ``policy.max_cells`` applies.
    """
    cells = int(np.asarray(table).size)
    if cells > policy.max_cells:
        return True
    if policy.clear_counts:
        return False
    k = policy.min_count
    arr = np.asarray(table)
    if bool(((arr > 0) & (arr < k)).any()):
        return True
    return cells > n_rows / k


def over_size_cap(table: np.ndarray, policy: SitePolicy) -> bool:
    """Whether ``table`` has more cells than the site answers at all (``policy.max_cells``).

    The one withholding rule of a private request: it reads the table's shape (fixed by the shared domain and
    the family asked for), never its counts or the site's row count, so it is the same for neighbouring
    datasets and needs no share of the privacy budget.
    """
    return int(np.asarray(table).size) > policy.max_cells


def check_noise_floor(noise_multiplier: float, policy: SitePolicy) -> None:
    """Refuse a private request whose noise multiplier is under the site's ``min_noise_multiplier``.

    Called before any count is made: the decision reads the request's setting and the site's policy only.

    Parameters
    ----------
    noise_multiplier : float
        ``z`` of the request (its ``dp_noise_std``): the noise standard deviation per unit of L2 sensitivity
        that the released sum carries.
    policy : SitePolicy
        The site's policy, tightened by the request (:meth:`SitePolicy.effective`).

    Raises
    ------
    NoiseFloorRefused
        ``z`` is not a positive finite number, or is under ``policy.min_noise_multiplier``; the message names the
        setting to change, no value of the site (a site's error text is scrubbed of numbers anyway).
    """
    z = float(noise_multiplier) if _is_number(noise_multiplier) else math.nan
    if math.isfinite(z) and z >= policy.min_noise_multiplier:
        return
    raise NoiseFloorRefused(
        # No apostrophes: a site's error text is scrubbed of quoted spans on its way to the coordinator.
        "refused: the noise multiplier of the request (dp_noise_std) is below min_noise_multiplier in the policy of "
        "this site; nothing was counted or released. Lower privacy.epsilon in the run config (more noise), or ask "
        "the site to lower min_noise_multiplier in its policy"
    )


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


#: The policy of the baselines' data holders (centralized: the pooled rows; local: a site alone). Their tables
#: never leave the process that holds the rows, so nothing is disclosed and counts are used in clear; the shared
#: domain is built by the same rules as in a federated run, so the references stay comparable.
BASELINE_POLICY = SitePolicy(clear_counts=True)


# -- the site's ε ledger ---------------------------------------------------------------------------------

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

    The figure covers the releases a site's ledger holds under the run's directory name and its current token; a
    count table an earlier try charged under another token (a two-step BN resumed without a checkpoint) is only in
    the site's ledger file.
    """
    from flwr.app import RecordDict

    from fedsynth.strategies import records
    from fedsynth.strategies.exchange import SiteInfo
    from fedsynth.strategies.secure_domain import dp_run_id

    runs = sorted({str(r) for r in (getattr(strategy, "run_token_", ""), dp_run_id(strategy)) if r})
    cfg = records.to_config_record({"report_runs": runs, "report_delta": float(delta)})
    probe = [SiteInfo(n, f"node-{n}", 0, ()) for n in sorted(int(n) for n in grid.get_node_ids())]
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
    runs = sorted({str(r) for r in (getattr(strategy, "run_token_", ""), getattr(strategy, "privacy_run_id", None),
                                    run_id) if r})
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
