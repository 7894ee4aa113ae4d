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
