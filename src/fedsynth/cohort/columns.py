"""The parts of a table schema: column kinds and roles, column specs, survival endpoints, dropped columns and
declared strata, with their YAML (de)serialisation (``to_dict`` and the ``*_from_*`` readers).

:class:`~fedsynth.cohort.schema.TableSchema` assembles them and checks them together; every name here is also
importable from :mod:`fedsynth.cohort.schema`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from itertools import pairwise
from typing import Any

from fedsynth.errors import Problem


class ColumnKind(str, Enum):
    """How values of a column are stored and modelled."""

    CONTINUOUS = "continuous"
    INTEGER = "integer"
    CATEGORICAL = "categorical"
    BINARY = "binary"


class ColumnRole(str, Enum):
    """What a column means for the study."""

    CLINICAL = "clinical"
    GENOMIC = "genomic"
    OUTCOME = "outcome"
    ID = "id"
    SITE = "site"


NUMERIC_KINDS = frozenset({ColumnKind.CONTINUOUS, ColumnKind.INTEGER})

#: What ``role: ignore`` in a schema file means: the column is in the data but left out (see ``drop``).
IGNORE_ROLE = "ignore"

#: Units a survival duration may be recorded in, with their length in days (a year is 365 days and a month
#: 365/12 days, so half a day in years is 0.5/365, the correction the MDS cohort has always used).
DAYS_PER_UNIT: Mapping[str, float] = {"days": 1.0, "weeks": 7.0, "months": 365.0 / 12.0, "years": 365.0}
TIME_UNITS = tuple(DAYS_PER_UNIT)


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a table.

    Parameters
    ----------
    name : str
        Column name in the data.
    kind : ColumnKind
        ``continuous``, ``integer``, ``categorical`` or ``binary`` (0/1).
    role : ColumnRole
        ``clinical``, ``genomic``, ``outcome``, ``id`` or ``site``.
    categories : tuple of str, optional
        Allowed labels of a categorical column, in display order. ``None`` means "take them from the data".
    lower, upper : float, optional
        Declared bounds of a numeric column (inclusive). Values outside are a validation problem.
    derived : str, optional
        Name of a derivation (see :mod:`fedsynth.cohort.derived`) that recomputes this column from other
        columns. Generators never sample derived columns; they are recomputed after sampling, so they are
        always consistent with the columns they come from.
    description : str
        Free text for reports and data cards.
    baseline : bool
        ``True`` (the default) for a value known at diagnosis. ``False`` marks a column recorded after
        baseline (a treatment, a response, a date after diagnosis): it is modelled like any other column,
        but a control arm must not condition on it, and reports list it.
    codes : tuple of (str, float) pairs, optional
        How the file writes a binary column: each label (matched case-insensitively, surrounding spaces
        ignored) and the 0/1 value it stands for, e.g. ``(("yes", 1.0), ("no", 0.0))`` or, for an event
        column coded 1/2, ``(("1", 0.0), ("2", 1.0))``. In YAML a mapping ``codes: {yes: 1, no: 0}``.
        Labels are mapped before validation; a label not listed is a validation problem.
    """

    name: str
    kind: ColumnKind
    role: ColumnRole = ColumnRole.CLINICAL
    categories: tuple[str, ...] | None = None
    lower: float | None = None
    upper: float | None = None
    derived: str | None = None
    description: str = ""
    baseline: bool = True
    codes: tuple[tuple[str, float], ...] | None = None

    @property
    def is_numeric(self) -> bool:
        """Whether the column holds numbers (``continuous`` or ``integer``)."""
        return self.kind in NUMERIC_KINDS

    def to_dict(self) -> dict[str, Any]:
        """The column as a YAML-ready mapping; keys at their default are left out."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind.value, "role": self.role.value}
        if self.categories is not None:
            out["categories"] = list(self.categories)
        if self.lower is not None:
            out["lower"] = self.lower
        if self.upper is not None:
            out["upper"] = self.upper
        if self.derived is not None:
            out["derived"] = self.derived
        if self.description:
            out["description"] = self.description
        if not self.baseline:
            out["baseline"] = False
        if self.codes is not None:
            out["codes"] = {label: _whole(value) for label, value in self.codes}
        return out


@dataclass(frozen=True)
class SurvivalEndpoint:
    """A survival endpoint: a duration column and an event column (1 = event, 0 = censored).

    ``time_unit`` is the unit of the duration column: ``days``, ``weeks``, ``months`` or ``years`` (see
    :data:`TIME_UNITS`). It fixes what "half a day" is when a duration of exactly 0 is corrected on load
    (0.5 days, 0.5/7 weeks, 0.5/(365/12) months or 0.5/365 years) and labels survival curves.
    """

    name: str
    duration_col: str
    event_col: str
    time_unit: str = "years"

    @property
    def half_day(self) -> float:
        """Half a day in this endpoint's time unit: what a duration of exactly 0 becomes on load."""
        return 0.5 / DAYS_PER_UNIT[self.time_unit]

    def to_dict(self) -> dict[str, Any]:
        """The endpoint as a YAML-ready mapping."""
        return {
            "name": self.name,
            "duration_col": self.duration_col,
            "event_col": self.event_col,
            "time_unit": self.time_unit,
        }


@dataclass(frozen=True)
class DroppedColumn:
    """A column of the data that the schema leaves out, and why (``drop:`` in a schema file)."""

    name: str
    reason: str = ""

    def to_dict(self) -> dict[str, str]:
        """``{"name": ..., "reason": ...}`` (reason left out when empty)."""
        return {"name": self.name, "reason": self.reason} if self.reason else {"name": self.name}


COLUMN_KEYS = {
    "name", "kind", "role", "categories", "lower", "upper", "derived", "description", "baseline", "codes",
}
_ENDPOINT_KEYS = {"name", "duration_col", "event_col", "time_unit"}
_STRATUM_KEYS = {"column", "bins", "labels"}


@dataclass(frozen=True)
class StratumSpec:
    """A survival stratum declared in the schema: a column's categories, or bands of a numeric column.

    Parameters
    ----------
    column : str
        The column whose values define the groups.
    bins : tuple of float, optional
        Inner cut points of a numeric column, increasing; groups are left-closed bands ``[a, b)`` with an open
        first and last band (``bins=(60, 70, 80)``: < 60, 60-69, 70-79, >= 80). ``None`` for categorical and
        binary columns (one group per label).
    labels : tuple of str, optional
        Names of the bands (``len(bins) + 1``); default from the cut points.
    """

    column: str
    bins: tuple[float, ...] | None = None
    labels: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any] | str:
        if self.bins is None and self.labels is None:
            return self.column
        out: dict[str, Any] = {"column": self.column}
        if self.bins is not None:
            out["bins"] = list(self.bins)
        if self.labels is not None:
            out["labels"] = list(self.labels)
        return out




def strata_problems(strata: Iterable[StratumSpec], index: Mapping[str, ColumnSpec]) -> list[Problem]:
    """Problems of declared strata against the columns: unknown column, bins on a non-numeric column or not
    increasing, labels that do not match the bands."""
    problems = []
    for st in strata:
        spec = index.get(st.column)
        if spec is None:
            problems.append(Problem(f"stratum {st.column!r}", "refers to an unknown column"))
            continue
        if st.bins is not None:
            if not spec.is_numeric:
                problems.append(Problem(f"stratum {st.column!r}", f"has bins but the column is {spec.kind.value}",
                                        "bins only on continuous or integer columns"))
            elif not st.bins or any(b <= a for a, b in pairwise(st.bins)):
                problems.append(Problem(f"stratum {st.column!r}", "bins are not strictly increasing",
                                        "increasing cut points, e.g. [60, 70, 80]"))
        n_groups = None if st.bins is None else len(st.bins) + 1
        if st.labels is not None and n_groups != len(st.labels):
            problems.append(Problem(f"stratum {st.column!r}", f"has {len(st.labels)} labels",
                                    f"{n_groups} labels (one per band)" if n_groups else "labels only with bins"))
    return problems


def strata_from_list(raw: Any, problems: list[Problem]) -> tuple[StratumSpec, ...]:
    """Strata from YAML (a column name, or a mapping ``{column, bins, labels}``); problems are appended."""
    out = []
    if raw is not None and not isinstance(raw, (list, tuple)):
        problems.append(Problem("strata", f"is a {type(raw).__name__}", "a list of column names or mappings"))
        return ()
    for i, item in enumerate(raw or []):
        if isinstance(item, str):
            out.append(StratumSpec(item))
            continue
        if not isinstance(item, Mapping) or "column" not in item or set(item) - _STRATUM_KEYS:
            problems.append(Problem(f"strata[{i}]", "is neither a column name nor a mapping with 'column'",
                                    "a name, or {column: AGE, bins: [60, 70, 80], labels: [...]}"))
            continue
        try:
            bins = None if item.get("bins") is None else tuple(float(b) for b in item["bins"])
        except (TypeError, ValueError):
            problems.append(Problem(f"strata[{i}]", "bins are not numbers", "a list of cut points"))
            continue
        labels = None if item.get("labels") is None else tuple(str(v) for v in item["labels"])
        out.append(StratumSpec(str(item["column"]), bins, labels))
    return tuple(out)



def _whole(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value



def _enum(value: Any, enum: type[Enum], what: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        valid = ", ".join(str(e.value) for e in enum)
        raise ValueError(f"{what} must be one of {valid}; got {value!r}") from None


def spec_from_dict(raw: Mapping[str, Any]) -> ColumnSpec:
    """A column spec from its YAML mapping (the inverse of :meth:`ColumnSpec.to_dict`).

    Raises
    ------
    ValueError
        A key missing or unknown, a kind/role/time unit not among the valid ones, codes or baseline malformed;
        the message names the key (never a value of the data), the caller collects it as a :class:`Problem`.
    """
    if not isinstance(raw, Mapping) or "name" not in raw or "kind" not in raw:
        raise ValueError("a column needs at least 'name' and 'kind'")
    bad = set(raw) - COLUMN_KEYS
    if bad:
        raise ValueError(f"unknown key(s) {sorted(bad)}; valid: {', '.join(sorted(COLUMN_KEYS))}")
    cats = raw.get("categories")
    codes = raw.get("codes")
    if codes is not None and not isinstance(codes, Mapping):
        raise ValueError("codes must be a mapping of labels to 0 or 1, e.g. {yes: 1, no: 0}")
    code_pairs = None
    if codes is not None:
        try:
            code_pairs = tuple((str(k), float(v)) for k, v in codes.items())
        except (TypeError, ValueError):
            raise ValueError("codes must map each label to a number (0 or 1)") from None
    baseline = raw.get("baseline", True)
    if baseline is not True and baseline is not False:
        raise ValueError(f"baseline must be true or false; got {baseline!r}")
    return ColumnSpec(
        name=str(raw["name"]),
        kind=_enum(raw["kind"], ColumnKind, "kind"),
        role=_enum(raw.get("role", "clinical"), ColumnRole, "role"),
        categories=None if cats is None else tuple(str(c) for c in cats),
        lower=None if raw.get("lower") is None else float(raw["lower"]),
        upper=None if raw.get("upper") is None else float(raw["upper"]),
        derived=raw.get("derived"),
        description=str(raw.get("description", "")),
        baseline=baseline,
        codes=code_pairs,
    )


def dropped_from_raw(raw: Any) -> DroppedColumn:
    """An entry of ``drop``: a column name or ``{name, reason}``; ``ValueError`` for anything else."""
    if isinstance(raw, str):
        return DroppedColumn(raw)
    if isinstance(raw, Mapping) and "name" in raw and set(raw) <= {"name", "reason"}:
        return DroppedColumn(str(raw["name"]), str(raw.get("reason", "")))
    raise ValueError("an entry of 'drop' is a column name or a mapping with 'name' (and 'reason')")


def endpoint_from_dict(raw: Mapping[str, Any]) -> SurvivalEndpoint:
    """A survival endpoint from ``{name, duration_col, event_col[, time_unit]}``; ``ValueError`` when malformed."""
    if not isinstance(raw, Mapping):
        # ValueError, like every other malformed entry: the caller collects it as one problem among all
        raise ValueError("an endpoint must be a mapping with name, duration_col, event_col")  # noqa: TRY004
    missing = {"name", "duration_col", "event_col"} - set(raw)
    bad = set(raw) - _ENDPOINT_KEYS
    if missing or bad:
        raise ValueError(
            f"endpoint keys: missing {sorted(missing)}, unknown {sorted(bad)}; "
            f"valid: {', '.join(sorted(_ENDPOINT_KEYS))}"
        )
    unit = str(raw.get("time_unit", "years"))
    if unit not in DAYS_PER_UNIT:
        raise ValueError(f"time_unit must be one of {', '.join(TIME_UNITS)}; got {unit!r}")
    return SurvivalEndpoint(str(raw["name"]), str(raw["duration_col"]), str(raw["event_col"]), unit)
