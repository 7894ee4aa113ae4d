"""A synthetic control arm: training patients who met the criteria, rows drawn under them, and the arm report."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from fedsynth.cohort.conditions import SamplingRequest
from fedsynth.cohort.criteria import ArmCriteria
from fedsynth.cohort.schema import ColumnKind, TableSchema
from fedsynth.errors import FedsynthError, Problem, ValidationError

log = logging.getLogger(__name__)

#: Counts below this are shown as "< 5": the sites' smallest released count (the default of the site policy).
SMALLEST_RELEASED_COUNT = 5

#: Fewer training patients than this meeting the criteria earns a warning: the model has seen too few of them
#: for its rows to describe them rather than its smoothing.
TINY_STRATUM = 20

#: Default wall-clock bound of rejection sampling, in seconds.
DEFAULT_MAX_SECONDS = 120.0

#: How an arm's rows are drawn: ``balanced`` (the default) takes them from a pool of
#: :data:`BALANCED_POOL_FACTOR` times as many draws by systematic sampling along an endpoint; ``independent`` draws
#: them one by one.
ArmDraw = Literal["balanced", "independent"]
ARM_DRAWS: tuple[str, ...] = get_args(ArmDraw)

#: Pool rows per arm row of a balanced arm.
BALANCED_POOL_FACTOR = 10


@dataclass(frozen=True)
class TrainingCount:
    """How many training patients met the criteria, as far as the model's kept counts can tell.

    ``value`` is None when no kept count answers the criteria; ``shown`` is what may be printed (``"< 5"`` for
    counts under :data:`SMALLEST_RELEASED_COUNT`, ``"not known"``); ``source`` says where it came from.
    """

    value: int | None
    shown: str
    source: str
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, without the exact value when it is under the smallest released count."""
        shown_value = self.value if self.value is not None and self.value >= SMALLEST_RELEASED_COUNT else None
        return {"value": shown_value, "shown": self.shown, "source": self.source, "warnings": list(self.warnings)}


def training_count(criteria: ArmCriteria, schema: TableSchema, domain: Any) -> TrainingCount:
    """Training patients who met ``criteria``, from the counts the model kept at training.

    The shared domain keeps, per categorical and binary column, how many training rows held each label
    (summed over sites). Those answer criteria that name one such column only, through category sets
    (included labels, minus excluded ones). Anything else (two columns, ranges, expressions, a derived
    column) needs a joint count that no generator keeps — the Bayesian network's saved tables are
    probabilities smoothed by its prior, not counts — and the answer is "not known".

    Parameters
    ----------
    criteria : ArmCriteria
    schema : TableSchema
    domain : Domain or None
        The model's domain (``generator.domain``).

    Returns
    -------
    TrainingCount
        With a warning when the count is 0 (empty stratum) or under :data:`TINY_STRATUM`.
    """
    inc, exc = criteria.inclusion, criteria.exclusion
    named = set(inc.categories) | set(exc.categories)
    simple = not (inc.ranges or exc.ranges or inc.expressions or exc.expressions) and len(named) == 1
    columns = getattr(domain, "columns", None) or {}
    col = next(iter(named)) if simple else None
    if col is None or col not in columns or not columns[col].category_counts \
            or schema[col].kind not in (ColumnKind.CATEGORICAL, ColumnKind.BINARY):
        why = ("the criteria combine several columns, ranges or expressions, and no generator keeps joint counts "
               "(the Bayesian network's tables are smoothed probabilities, not counts)") if not simple else \
              "the model kept no label counts of that column: it is derived, or outside the domain"
        return TrainingCount(None, "not known", why)
    cd = columns[col]
    counts = dict(zip(cd.categories, cd.category_counts, strict=False))
    included = inc.categories.get(col)
    total = sum(counts[k] for k in (included if included is not None else counts) if k in counts)
    total -= sum(counts.get(k, 0) for k in exc.categories.get(col, ()) if included is None or k in included)
    shown = f"< {SMALLEST_RELEASED_COUNT}" if total < SMALLEST_RELEASED_COUNT else str(total)
    warnings: list[str] = []
    if total == 0:
        warnings.append("no training patient met the criteria: the arm's rows come from the model's prior, "
                        "not from patients like them")
    elif total < TINY_STRATUM:
        warnings.append(f"fewer than {TINY_STRATUM} training patients met the criteria ({shown}): the arm "
                        "describes the model's smoothing as much as those patients")
    return TrainingCount(total, shown, "the shared domain's label counts (summed over sites at training)",
                         tuple(warnings))


def draw_arm(
    gen: Any,
    request: SamplingRequest,
    n_samples: int,
    *,
    random_state: int,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    include_post_baseline: bool = False,
    draw: str = "balanced",
    endpoint: str | None = None,
) -> pd.DataFrame:
    """Draw the arm: ``n_samples`` rows that meet ``request``, within ``max_seconds`` of sampling.

    Generators that condition exactly (the Bayesian network, on category sets) do; the rest is rejection
    sampling, bounded in time. Columns recorded after baseline are left out unless ``include_post_baseline``.

    With ``draw="balanced"`` the generator draws :data:`BALANCED_POOL_FACTOR` ``* n_samples`` rows under the
    criteria and the arm is taken from them by :func:`balanced_rows` along ``endpoint`` (default: the schema's
    first endpoint), so that its survival curve follows the model's own with less of one draw's noise; with
    ``"independent"`` the arm is ``n_samples`` draws.

    Raises
    ------
    FedsynthError
        When the time bound (or the batch bound) passes before enough rows met the criteria, with the
        acceptance rate reached; or when ``draw`` or ``endpoint`` is not one the model knows.
    """
    from fedsynth.generators import ConditionError

    how = describe_draw(gen.schema, n_samples, draw, endpoint)  # checks both; no endpoint: drawn independent
    balanced = how["method"] == "balanced"
    rows = how["pool_rows"] if balanced else n_samples
    try:
        arm = gen.sample(rows, random_state=random_state, conditions=request.conditions or None,
                         where=request.where, max_tries=10_000, max_seconds=max_seconds)
    except ConditionError as exc:
        hint = (f" This arm is balanced: the model was asked for {rows:,} rows ({BALANCED_POOL_FACTOR} x {n_samples:,})"
                f" to take {n_samples:,} from; give it more time (--max-seconds) or draw the arm independent "
                "(--draw independent).") if balanced else ""
        raise FedsynthError(f"Arm sampling stopped: {exc}{hint}") from None
    if balanced:
        ep = next(e for e in gen.schema.endpoints if e.name == how["endpoint"])
        arm = balanced_rows(arm, n_samples, duration_col=ep.duration_col, event_col=ep.event_col,
                            rng=np.random.default_rng(random_state))
    if not include_post_baseline:
        arm = arm.drop(columns=[c for c in gen.schema.post_baseline_columns if c in arm.columns])
    return arm


def check_draw(schema: TableSchema, draw: str, endpoint: str | None = None) -> None:
    """Check a draw method and the endpoint a balanced arm follows, before anything is drawn.

    Parameters
    ----------
    schema : TableSchema
        The model's schema (its endpoints).
    draw : str
        One of :data:`ARM_DRAWS`.
    endpoint : str, optional
        The endpoint a balanced arm follows (``fedsynth arm --along``); None for the schema's first.

    Raises
    ------
    ValidationError
        Listing every problem at once: a method not in :data:`ARM_DRAWS`, an endpoint the schema does not
        declare, an endpoint given for an independent draw.
    """
    problems = []
    if draw not in ARM_DRAWS:
        problems.append(Problem("--draw", f"{draw!r} is not a draw method", " or ".join(ARM_DRAWS)))
    names = [ep.name for ep in schema.endpoints]
    if endpoint is not None and endpoint not in names:
        problems.append(Problem("--along", f"{endpoint!r} is not an endpoint of the model's schema",
                                ", ".join(names) or "none: the schema declares no endpoint"))
    elif endpoint is not None and draw == "independent":
        problems.append(Problem("--along", "applies to balanced draws only, and the draw is independent",
                                fix="drop --along, or draw balanced"))
    if problems:
        raise ValidationError("Arm draw", problems)


def describe_draw(schema: TableSchema, n_samples: int, draw: str, endpoint: str | None = None) -> dict[str, Any]:
    """How :func:`draw_arm` drew an arm, as its report and data card state it.

    Parameters
    ----------
    schema : TableSchema
        The model's schema.
    n_samples : int
        Rows in the arm.
    draw, endpoint : str
        As :func:`draw_arm` took them (checked by :func:`check_draw`).

    Returns
    -------
    dict
        ``method``, ``pool_rows`` (None when independent), ``endpoint`` (the one a balanced arm follows, else None)
        and ``about`` (one sentence). A schema without endpoints is drawn independent, and described so.

    Raises
    ------
    ValidationError
        As :func:`check_draw`.
    """
    check_draw(schema, draw, endpoint)
    names = [ep.name for ep in schema.endpoints]
    if draw != "balanced" or not names:
        return {"method": "independent", "pool_rows": None, "endpoint": None,
                "about": f"Independent draw: {n_samples:,} draws of the model under the criteria."}
    name = endpoint or names[0]
    pool = BALANCED_POOL_FACTOR * n_samples
    return {"method": "balanced", "pool_rows": pool, "endpoint": name,
            "about": f"Balanced draw: {n_samples:,} of {pool:,} draws of the model under the criteria, taken by "
                     f"systematic sampling along {name} (ordered by event, then time), so that its {name} curve "
                     "follows the model's own with less of one draw's noise. Other endpoints and the covariates "
                     "keep that noise, and the model's own bias stays: read the arm as the model's estimate for "
                     "the eligible patients."}


def balanced_rows(
    pool: pd.DataFrame, n: int, *, duration_col: str, event_col: str, rng: np.random.Generator
) -> pd.DataFrame:
    """``n`` rows of ``pool`` by systematic sampling along one endpoint, in random order.

    The pool is ordered by event, then duration (within each event value, rows without a duration last; rows
    without an event after all others), and ``n`` rows are taken at the interval ``len(pool) / n`` from a random
    start below it (positions ``floor(start + i * len(pool) / n)``, ``start`` a whole number): systematic sampling
    from an ordered list, which stratifies implicitly on the ordering (Cochran, *Sampling Techniques*, 3rd ed.,
    1977, ch. 8). The arm's share of events is the pool's within about 1 / n, and its event and censoring times
    follow the pool's quantiles, so its Kaplan-Meier curve and median follow the pool's (the model's, for a pool of
    many draws) more closely than ``n`` independent draws would. Only this endpoint is balanced: other endpoints and
    the covariates keep one draw's noise. It lessens the draw's noise, not a model's bias. Rows are returned
    shuffled, with a fresh index.

    Parameters
    ----------
    pool : DataFrame
        At least ``n`` rows; its size need not be a multiple of ``n``.
    n : int
        Rows wanted, >= 1.
    duration_col, event_col : str
        The endpoint's columns in ``pool``.
    rng : numpy Generator
        Picks the start and the returned order.

    Raises
    ------
    ValueError
        When ``n`` < 1 or ``pool`` holds fewer than ``n`` rows.
    """
    if n < 1:
        raise ValueError(f"a balanced draw needs n >= 1 (got {n})")
    if len(pool) < n:
        raise ValueError(f"a balanced draw of {n} rows needs at least as many pool rows (got {len(pool)})")
    interval = len(pool) / n
    start = int(rng.integers(int(interval)))
    positions = np.floor(start + np.arange(n) * interval).astype(int)
    ordered = pool.sort_values([event_col, duration_col], kind="stable", na_position="last")
    taken = ordered.iloc[positions]
    return taken.iloc[rng.permutation(n)].reset_index(drop=True)


def read_reference(path: str | Path, schema: TableSchema) -> pd.DataFrame:
    """The reference arm: a CSV of real eligible patients or a trial's arm, in the schema's column names and
    dtypes (columns it lacks are simply absent). Used as given: the criteria are not applied to it.

    Raises
    ------
    ValidationError
        When the file cannot be read, or holds none of the schema's endpoints.
    """
    p = Path(path)
    try:
        raw = pd.read_csv(p)
    except (OSError, ValueError) as exc:
        raise ValidationError("Reference file", [Problem(str(p), f"cannot be read as CSV ({type(exc).__name__})",
                                                        fix="give a CSV with a header row")]) from None
    present = [c for c in schema.data_columns if c in raw.columns]
    if not any(ep.duration_col in raw.columns and ep.event_col in raw.columns for ep in schema.endpoints):
        needed = ", ".join(f"{ep.duration_col}+{ep.event_col}" for ep in schema.endpoints)
        raise ValidationError("Reference file", [Problem(str(p), "holds no survival endpoint of the model", needed)])
    return schema.select(present).coerce(raw[present])


def write_arm(
    out: str | Path,
    arm: pd.DataFrame,
    schema: TableSchema,
    *,
    model_dir: str | Path,
    criteria: ArmCriteria,
    request: SamplingRequest,
    count: TrainingCount,
    random_state: int,
    reference: pd.DataFrame | None = None,
    notes: list[str] | None = None,
    header: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``arm.csv``, its short data card, ``arm_report.json`` and ``arm_report.html`` into ``out``.

    ``header`` adds to what the report states first (e.g. ``reference``: what the reference patients are).

    Returns
    -------
    dict
        ``csv``, ``card``, ``json``, ``html``: the paths written.
    """
    from fedsynth._io import atomic_write_text
    from fedsynth.cohort.io import write_csv
    from fedsynth.evaluation.arm import arm_html, arm_report
    from fedsynth.experiments.card import write_short_card

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / "arm.csv"
    write_csv(arm, csv, schema.select([c for c in schema.data_columns if c in arm.columns]))
    card = write_short_card(csv, model_dir, n_samples=len(arm), random_state=random_state,
                            conditions=request.conditions, where=request.where, draw=(header or {}).get("draw"))
    left_out = [c for c in schema.post_baseline_columns if c not in arm.columns]
    stated: dict[str, Any] = {
        "criteria": criteria.to_dict(), "where": request.where, "conditions": dict(request.conditions),
        "training_count": count.to_dict(), "warnings": [*count.warnings, *(notes or [])],
        "model": str(model_dir), "seed": random_state, "left_out": left_out, **(header or {}),
    }
    ref = reference.drop(columns=[c for c in left_out if c in reference.columns]) if reference is not None else None
    report = arm_report(arm, schema, reference=ref, header=stated)
    paths = {"csv": csv, "card": card, "json": folder / "arm_report.json", "html": folder / "arm_report.html"}
    atomic_write_text(paths["json"], json.dumps(report, indent=2, default=str))
    atomic_write_text(paths["html"], arm_html(report, title=f"Control arm: {criteria.name}"))
    return paths


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """How the arm was drawn (when the report says), then one line per endpoint for the console: the arm's
    median and how many of its rows have the endpoint known (when not all); with a reference, its median, the
    median difference (its relative size, said when over :data:`~fedsynth.evaluation.survival_effects.MEDIAN_FLAG`),
    the HR with its reading and the log-rank p (said when under 0.05), as the HTML report flags them."""
    from fedsynth.evaluation.survival_effects import MEDIAN_FLAG

    draw = report.get("header", {}).get("draw")
    lines = [str(draw["about"])] if isinstance(draw, Mapping) and draw.get("about") else []
    n_arm = report.get("n_arm")
    for name, ep in report["endpoints"].items():
        m, n = ep["arm"]["median"], ep["arm"].get("n")
        known = f" ({n} of {n_arm} rows with {name} known)" if n is not None and n_arm and n < n_arm else ""
        line = f"{name}: arm median {_f(m)} {ep['time_unit']}{known}"
        if "reference" in ep:
            c = ep["comparison"]
            rel = c.get("median_relative_error")
            diff = "" if c.get("median_difference") is None or rel is None else (
                f", difference {c['median_difference']:+.2f} ({rel:.1%}"
                f"{f', over {MEDIAN_FLAG:.0%}' if rel > MEDIAN_FLAG else ''})")
            differ = ": the curves differ" if c["logrank_p"] is not None and c["logrank_p"] < 0.05 else ""
            line += (f", reference median {_f(ep['reference']['median'])}{diff}; HR {_f(c['hr'])} "
                     f"({_f(c['hr_lower'])}-{_f(c['hr_upper'])}; > 1: events sooner in the arm), "
                     f"log-rank p {_p(c['logrank_p'])}{differ}")
        lines.append(line)
    return lines


def _f(v: Any) -> str:
    return "not reached" if v is None else f"{v:.2f}"


def _p(v: Any) -> str:
    return "n/a" if v is None else (f"{v:.2g}" if v >= 1e-3 else "<0.001")
