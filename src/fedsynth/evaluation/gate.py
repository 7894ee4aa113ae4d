"""The release gate: one decision, from the evaluator's privacy figures, whether a synthetic cohort may leave.

The same code decides at a site before SD-sharing sends its rows (:mod:`fedsynth.strategies.sd_sharing`) and
before ``fedsynth export`` writes a released cohort. Its figures are those of
:func:`fedsynth.evaluation.privacy.privacy_analysis` (Gower distance, ranges of the real training rows), so the
gate and every report agree on what "too close" means. A cohort is flagged when

- **exact copies**: its share of rows equal to a training row (or equal up to rounding) is above the holdout's own
  share (a new real patient equal to a training row) plus ``exact_copies_margin``; copies of a record with no number
  known that several training rows share are set apart on both sides
  (:func:`fedsynth.evaluation.privacy.exact_copy_figures`);
- **NNDR 5th percentile**: the 5th percentile of its nearest/second-nearest distance ratio is below the
  holdout's, less ``nndr_p5_margin`` (by default two bootstrap standard errors of the holdout figure, the
  evaluator's tolerance: a perfect generator would otherwise be flagged about half the time);
- **membership inference**: the distance attacker's ROC AUC is above ``mia_auc_above`` (0.6).

Thresholds are a small frozen dataclass, so a site policy can override them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.cohort.schema import TableSchema
from fedsynth.errors import Problem, ValidationError

#: Names of the figures the gate checks, in the order it reports them.
GATE_FIGURES = ("exact_copies", "nndr_p5", "mia_auc")


@dataclass(frozen=True)
class GateThresholds:
    """When the release gate flags a synthetic cohort.

    Parameters
    ----------
    exact_copies_margin : float, default 0.0
        Flag when the share of synthetic rows equal to a training row exceeds the holdout's own share by more
        than this (a share, 0-1; module docstring).
    nndr_p5_margin : float or None, default None
        Flag when the synthetic NNDR 5th percentile is below the holdout's minus this margin. ``None`` uses two
        bootstrap standard errors of the holdout's 5th percentile (the evaluator's tolerance).
    mia_auc_above : float, default 0.6
        Flag when the membership-inference ROC AUC is above this value (0.5 = the attacker cannot tell).
    """

    exact_copies_margin: float = 0.0
    nndr_p5_margin: float | None = None
    mia_auc_above: float = 0.6

    def __post_init__(self) -> None:
        problems = []
        if not 0.0 <= self.exact_copies_margin <= 1.0:
            problems.append(Problem("exact_copies_margin", "is outside [0, 1]", "a share between 0 and 1"))
        if self.nndr_p5_margin is not None and not 0.0 <= self.nndr_p5_margin <= 1.0:
            problems.append(Problem("nndr_p5_margin", "is outside [0, 1]", "a ratio margin between 0 and 1, or null"))
        if not 0.5 <= self.mia_auc_above <= 1.0:
            problems.append(Problem("mia_auc_above", "is outside [0.5, 1]", "an AUC between 0.5 and 1"))
        if problems:
            raise ValidationError("Release gate thresholds", problems)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> GateThresholds:
        """Thresholds from a mapping (a site policy, strategy params); unknown keys are all reported at once."""
        known = {"exact_copies_margin", "nndr_p5_margin", "mia_auc_above"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValidationError(
                "Release gate thresholds",
                [Problem(k, "is not a gate threshold", ", ".join(sorted(known))) for k in unknown],
            )
        kwargs: dict[str, Any] = {}
        for k, v in values.items():
            kwargs[k] = None if v is None else float(v)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateFlag:
    """One figure that failed the gate: its value, the limit it crossed, and a sentence for people."""

    figure: str
    value: float
    limit: float
    message: str


@dataclass(frozen=True)
class GateResult:
    """The gate's decision with the figures it read.

    ``passed`` is true when no figure is flagged. ``figures`` holds each checked figure beside its baseline;
    ``missing`` names figures the gate could not read (no holdout), which count as flagged: a cohort whose
    privacy cannot be checked is not released silently.
    """

    passed: bool
    flags: tuple[GateFlag, ...]
    figures: dict[str, float | None]
    thresholds: GateThresholds
    missing: tuple[str, ...] = field(default_factory=tuple)

    @property
    def flagged(self) -> list[str]:
        """Names of the flagged figures (missing ones included)."""
        return [f.figure for f in self.flags]

    def explain(self) -> str:
        """One line per flag, for error messages and data cards."""
        return "; ".join(f.message for f in self.flags) if self.flags else "no figure flagged"

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "flags": [asdict(f) for f in self.flags],
            "figures": dict(self.figures),
            "thresholds": self.thresholds.to_dict(),
            "missing": list(self.missing),
        }


def _num(value: Any) -> float | None:
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _exact_copies_flag(privacy: Mapping[str, Any], copies: float, copies_hold: float,
                       margin: float) -> GateFlag | None:
    """The exact-copies flag: the share of synthetic rows copying a training row against the holdout's, copies of
    shared records with no number known set apart on both sides when the section has them (module docstring)."""
    pad = f" + {100 * margin:.2f}%" if margin else ""
    judged, judged_hold = _num(privacy.get("exact_copies_judged")), _num(privacy.get("exact_copies_holdout_judged"))
    if judged is None or judged_hold is None:
        judged, judged_hold, apart = copies, copies_hold, ""
    else:
        apart = " (copies of records with no number known that several training rows share set apart)"
    if judged <= judged_hold + margin:
        return None
    return GateFlag("exact_copies", judged, judged_hold + margin,
                    f"exact copies of training rows {100 * judged:.2f}% of rows, above the holdout's own "
                    f"{100 * judged_hold:.2f}%{pad}{apart}")


def gate_from_privacy(privacy: Mapping[str, Any], thresholds: GateThresholds | None = None) -> GateResult:
    """Apply the gate to a privacy section already computed (``report["privacy"]`` or ``privacy_analysis``).

    Parameters
    ----------
    privacy : mapping
        The output of :func:`fedsynth.evaluation.privacy.privacy_analysis` (with a holdout, not ``quick``):
        ``exact_copies``, ``exact_copies_holdout``, ``exact_copies_judged`` and ``exact_copies_holdout_judged``
        (optional), ``nndr`` (``synthetic``/``holdout`` ``p5``), ``mia_auc`` and ``thresholds["nndr_p5_below"]``
        (the holdout p5 less two bootstrap standard errors).
    thresholds : GateThresholds, optional
        Defaults to :class:`GateThresholds()`.

    Returns
    -------
    GateResult
        A figure that is absent (no holdout was given) is reported in ``missing`` and flagged.
    """
    th = thresholds or GateThresholds()
    nndr = privacy.get("nndr") or {}
    syn_p5 = _num((nndr.get("synthetic") or {}).get("p5"))
    hold_p5 = _num((nndr.get("holdout") or {}).get("p5"))
    copies = _num(privacy.get("exact_copies"))
    copies_hold = _num(privacy.get("exact_copies_holdout"))
    auc = _num(privacy.get("mia_auc"))
    if th.nndr_p5_margin is None:
        p5_limit = _num((privacy.get("thresholds") or {}).get("nndr_p5_below"))
    else:
        p5_limit = None if hold_p5 is None else hold_p5 - th.nndr_p5_margin
    figures: dict[str, float | None] = {
        "exact_copies": copies, "exact_copies_holdout": copies_hold,
        "exact_copies_judged": _num(privacy.get("exact_copies_judged")),
        "exact_copies_holdout_judged": _num(privacy.get("exact_copies_holdout_judged")), "nndr_p5": syn_p5,
        "nndr_p5_holdout": hold_p5, "mia_auc": auc,
    }
    flags: list[GateFlag] = []
    missing: list[str] = []
    if copies is None or copies_hold is None:
        missing.append("exact_copies")
    else:
        copy_flag = _exact_copies_flag(privacy, copies, copies_hold, th.exact_copies_margin)
        if copy_flag is not None:
            flags.append(copy_flag)
    if syn_p5 is None or p5_limit is None:
        missing.append("nndr_p5")
    elif syn_p5 < p5_limit:
        flags.append(GateFlag(
            "nndr_p5", syn_p5, p5_limit,
            f"NNDR 5th percentile {syn_p5:.3f}, below the holdout's {hold_p5:.3f} (limit {p5_limit:.3f})",
        ))
    if auc is None:
        missing.append("mia_auc")
    elif auc > th.mia_auc_above:
        flags.append(GateFlag(
            "mia_auc", auc, th.mia_auc_above,
            f"membership-inference AUC {auc:.3f}, above {th.mia_auc_above:.2f}",
        ))
    for name in missing:
        flags.append(GateFlag(name, math.nan, math.nan, f"{name} could not be computed (no holdout rows)"))
    order = {n: i for i, n in enumerate(GATE_FIGURES)}
    flags.sort(key=lambda f: order.get(f.figure, len(order)))
    return GateResult(not flags, tuple(flags), figures, th, tuple(missing))


def release_gate(
    real_data: pd.DataFrame,
    synthetic_data: pd.DataFrame,
    schema: TableSchema,
    *,
    holdout_data: pd.DataFrame,
    thresholds: GateThresholds | None = None,
    random_state: int | np.random.Generator | None = None,
) -> tuple[GateResult, dict[str, Any]]:
    """Compute the privacy figures of ``synthetic_data`` and apply the gate.

    Parameters
    ----------
    real_data : DataFrame, shape (n_real, n_columns)
        The rows the generator was trained on (canonical dtypes, see :meth:`TableSchema.coerce`).
    synthetic_data : DataFrame, shape (n_synthetic, n_columns)
        The rows to release.
    schema : TableSchema
        Columns compared (Gower over its data columns present in the frames).
    holdout_data : DataFrame, shape (n_holdout, n_columns)
        Real rows not trained on: the baseline of every figure.
    thresholds : GateThresholds, optional
    random_state : int or Generator, optional
        Seeds the training sample of the DCR share and the bootstrap of the NNDR tolerance.

    Returns
    -------
    (GateResult, dict)
        The decision and the full privacy section it was read from.
    """
    from fedsynth.evaluation.privacy import privacy_analysis

    rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)
    privacy = privacy_analysis(real_data, synthetic_data, schema, holdout_data=holdout_data, rng=rng)
    return gate_from_privacy(privacy, thresholds), privacy
