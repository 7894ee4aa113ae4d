"""Table schema: column kinds and roles, survival endpoints, inference from a frame and YAML overrides."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fedsynth.errors import Problem, ValidationError

if TYPE_CHECKING:
    from fedsynth.cohort.constraints import EndpointRule


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
    """

    name: str
    kind: ColumnKind
    role: ColumnRole = ColumnRole.CLINICAL
    categories: tuple[str, ...] | None = None
    lower: float | None = None
    upper: float | None = None
    derived: str | None = None
    description: str = ""

    @property
    def is_numeric(self) -> bool:
        return self.kind in NUMERIC_KINDS

    def to_dict(self) -> dict[str, Any]:
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
        return out


@dataclass(frozen=True)
class SurvivalEndpoint:
    """A survival endpoint: a duration column and an event column (1 = event, 0 = censored)."""

    name: str
    duration_col: str
    event_col: str
    time_unit: str = "years"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "duration_col": self.duration_col,
            "event_col": self.event_col,
            "time_unit": self.time_unit,
        }


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


_COLUMN_KEYS = {"name", "kind", "role", "categories", "lower", "upper", "derived", "description"}
_ENDPOINT_KEYS = {"name", "duration_col", "event_col", "time_unit"}
_STRATUM_KEYS = {"column", "bins", "labels"}


@dataclass(frozen=True)
class TableSchema:
    """Ordered columns plus survival endpoints; the contract between data, generators and the evaluator.

    Canonical dtypes of a frame that conforms to a schema (see :meth:`coerce`): ``continuous``, ``integer``
    and ``binary`` columns are ``float64`` (NaN = missing; integers hold whole numbers, binaries 0/1), and
    ``categorical`` and ``id`` columns are ``object`` holding ``str`` or NaN. One numeric dtype keeps every
    downstream library (lifelines, scikit-learn, torch) free of pandas' nullable types.
    """

    columns: tuple[ColumnSpec, ...]
    endpoints: tuple[SurvivalEndpoint, ...] = ()
    name: str = "custom"
    #: Survival strata the evaluator always reports (besides its role-based defaults), see :class:`StratumSpec`.
    strata: tuple[StratumSpec, ...] = ()
    #: Endpoint rules every sampled row satisfies (:mod:`fedsynth.cohort.constraints`).
    constraints: tuple[EndpointRule, ...] = ()
    _index: Mapping[str, ColumnSpec] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {c.name: c for c in self.columns})
        problems = []
        if len(self._index) != len(self.columns):
            seen: set[str] = set()
            for c in self.columns:
                if c.name in seen:
                    problems.append(Problem(f"column {c.name!r}", "declared more than once"))
                seen.add(c.name)
        for ep in self.endpoints:
            for col, want in ((ep.duration_col, NUMERIC_KINDS), (ep.event_col, {ColumnKind.BINARY})):
                spec = self._index.get(col)
                if spec is None:
                    problems.append(Problem(f"endpoint {ep.name!r}", f"refers to unknown column {col!r}"))
                elif spec.kind not in want:
                    problems.append(
                        Problem(
                            f"endpoint {ep.name!r}",
                            f"column {col!r} is {spec.kind.value}",
                            valid=" or ".join(sorted(k.value for k in want)),
                        )
                    )
        if sum(c.role is ColumnRole.ID for c in self.columns) > 1:
            problems.append(Problem("schema", "more than one column has role 'id'", valid="at most one"))
        problems += self._strata_and_rule_problems()
        if problems:
            raise ValidationError(f"Schema {self.name!r}", problems)

    def _strata_and_rule_problems(self) -> list[Problem]:
        problems = _strata_problems(self.strata, self._index)
        for rule in self.constraints:
            for ep in rule.endpoints:
                if ep not in self.endpoints:
                    problems.append(Problem(f"constraint {rule.describe()!r}", f"refers to endpoint {ep.name!r}, "
                                            "which the schema does not declare",
                                            ", ".join(e.name for e in self.endpoints) or "no endpoints"))
        return problems

    # -- look-ups -----------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> ColumnSpec:
        return self._index[name]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __len__(self) -> int:
        return len(self.columns)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def names(self, *, role: ColumnRole | None = None, kind: ColumnKind | None = None) -> list[str]:
        """Column names filtered by role and/or kind, in schema order."""
        return [
            c.name
            for c in self.columns
            if (role is None or c.role is role) and (kind is None or c.kind is kind)
        ]

    @property
    def id_column(self) -> str | None:
        ids = self.names(role=ColumnRole.ID)
        return ids[0] if ids else None

    @property
    def clinical_columns(self) -> list[str]:
        return self.names(role=ColumnRole.CLINICAL)

    @property
    def genomic_columns(self) -> list[str]:
        return self.names(role=ColumnRole.GENOMIC)

    @property
    def outcome_columns(self) -> list[str]:
        return self.names(role=ColumnRole.OUTCOME)

    @property
    def model_columns(self) -> list[str]:
        """Columns a generator learns and samples: everything but ids, sites and derived columns."""
        return [
            c.name
            for c in self.columns
            if c.role not in (ColumnRole.ID, ColumnRole.SITE) and c.derived is None
        ]

    @property
    def derived_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.derived is not None]

    @property
    def data_columns(self) -> list[str]:
        """Model columns plus derived columns: what a synthetic table holds (no ids, no sites)."""
        return [c.name for c in self.columns if c.role not in (ColumnRole.ID, ColumnRole.SITE)]

    def endpoint(self, name: str) -> SurvivalEndpoint:
        for ep in self.endpoints:
            if ep.name == name:
                return ep
        raise KeyError(f"no endpoint {name!r}; endpoints: {[e.name for e in self.endpoints]}")

    # -- derived schemas ----------------------------------------------------------------------------
    def select(self, names: Iterable[str]) -> TableSchema:
        """A schema restricted to ``names`` (endpoints kept only when both of their columns are kept)."""
        keep = set(names)
        cols = tuple(c for c in self.columns if c.name in keep)
        eps = tuple(e for e in self.endpoints if e.duration_col in keep and e.event_col in keep)
        strata = tuple(st for st in self.strata if st.column in keep)
        rules = tuple(r for r in self.constraints if all(ep in eps for ep in r.endpoints))
        return TableSchema(cols, eps, self.name, strata, rules)

    def without_derived(self) -> TableSchema:
        return self.select(self.model_columns + [n for n in self.names(role=ColumnRole.ID)])

    def with_columns(self, specs: Iterable[ColumnSpec]) -> TableSchema:
        """A schema where the given specs replace the ones of the same name (others unchanged)."""
        new = {s.name: s for s in specs}
        return TableSchema(
            tuple(new.get(c.name, c) for c in self.columns), self.endpoints, self.name, self.strata, self.constraints
        )

    def with_overrides(self, overrides: Mapping[str, Any]) -> TableSchema:
        """Apply YAML-style overrides.

        ``overrides`` may hold ``name``, ``columns`` (a mapping of column name to the keys to change, or
        ``null`` to drop the column), ``drop`` (a list of names), ``endpoints`` (a list that replaces the
        inferred endpoints), ``strata`` and ``constraints`` (lists that replace the declared ones; see
        :meth:`from_dict`). Every problem is reported at once.
        """
        problems: list[Problem] = []
        unknown_top = set(overrides) - {"name", "columns", "drop", "endpoints", "strata", "constraints"}
        for key in sorted(unknown_top):
            problems.append(
                Problem(f"schema override {key!r}", "unknown key",
                        valid="name, columns, drop, endpoints, strata, constraints")
            )
        cols = {c.name: c for c in self.columns}
        order = [c.name for c in self.columns]
        for name in overrides.get("drop", []) or []:
            if name not in cols:
                problems.append(Problem(f"drop {name!r}", "no such column", valid=", ".join(order)))
            else:
                del cols[name]
                order.remove(name)
        for name, changes in (overrides.get("columns") or {}).items():
            if changes is None:
                if name in cols:
                    del cols[name]
                    order.remove(name)
                continue
            if not isinstance(changes, Mapping):
                problems.append(Problem(f"column {name!r}", "override must be a mapping of keys to values"))
                continue
            bad = set(changes) - _COLUMN_KEYS
            if bad:
                problems.append(
                    Problem(
                        f"column {name!r}",
                        f"unknown key(s) {sorted(bad)}",
                        valid=", ".join(sorted(_COLUMN_KEYS - {'name'})),
                    )
                )
                continue
            base = cols.get(name)
            try:
                if base is None:
                    if "kind" not in changes:
                        problems.append(
                            Problem(f"column {name!r}", "is not in the data and the override gives no 'kind'")
                        )
                        continue
                    spec = _spec_from_dict({"name": name, **changes})
                    order.append(name)
                else:
                    spec = _spec_from_dict({**base.to_dict(), **changes})
            except ValueError as exc:
                problems.append(Problem(f"column {name!r}", str(exc)))
                continue
            cols[name] = spec
        endpoints = self.endpoints
        if "endpoints" in overrides:
            try:
                endpoints = tuple(_endpoint_from_dict(e) for e in overrides["endpoints"] or [])
            except ValueError as exc:
                problems.append(Problem("endpoints", str(exc)))
        if problems:
            raise ValidationError("Schema overrides", problems)
        # Drop endpoints whose columns were removed.
        endpoints = tuple(e for e in endpoints if e.duration_col in cols and e.event_col in cols)
        strata, rules = self.strata, self.constraints
        if "strata" in overrides:
            strata = _strata_from_list(overrides["strata"], problems)
        if "constraints" in overrides:
            rules = _rules_from_list(overrides["constraints"], endpoints, problems)
        if problems:
            raise ValidationError("Schema overrides", problems)
        strata = tuple(st for st in strata if st.column in cols)
        rules = tuple(r for r in rules if all(ep in endpoints for ep in r.endpoints))
        return TableSchema(tuple(cols[n] for n in order), endpoints, overrides.get("name", self.name), strata, rules)

    # -- dtypes -------------------------------------------------------------------------------------
    def coerce(self, data: pd.DataFrame) -> pd.DataFrame:
        """Return the schema's columns of ``data`` in canonical dtypes (see the class docstring).

        Call :func:`fedsynth.cohort.validation.validate_frame` first on untrusted data: this method assumes
        values already fit their kinds.
        """
        out = {}
        for spec in self.columns:
            if spec.name not in data.columns:
                continue
            col = data[spec.name]
            if col.dtype == object:
                from fedsynth.cohort.validation import normalise_missing

                col = normalise_missing(col)
            if spec.kind in (ColumnKind.CATEGORICAL,) or spec.role is ColumnRole.ID:
                out[spec.name] = _as_label(col)
            else:
                out[spec.name] = pd.to_numeric(col, errors="coerce").astype("float64")
        return pd.DataFrame(out, index=data.index)

    # -- serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "columns": [c.to_dict() for c in self.columns],
            "endpoints": [e.to_dict() for e in self.endpoints],
        }
        if self.strata:
            out["strata"] = [st.to_dict() for st in self.strata]
        if self.constraints:
            out["constraints"] = [r.to_dict() for r in self.constraints]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TableSchema:
        """A schema from its dict form (YAML): ``name``, ``columns``, ``endpoints`` and, optionally, ``strata``
        (column names, or ``{column, bins, labels}`` for bands of a numeric column) and ``constraints`` (endpoint
        rules: ``{type: time_order, shorter: LFS, longer: OS}``, ``{type: event_implies, source: OS, implied:
        LFS}``; see :mod:`fedsynth.cohort.constraints`). Every problem is reported at once."""
        problems: list[Problem] = []
        unknown = set(data) - {"name", "columns", "endpoints", "strata", "constraints"}
        if unknown:
            problems.append(
                Problem("schema", f"unknown key(s) {sorted(unknown)}",
                        valid="name, columns, endpoints, strata, constraints")
            )
        cols = []
        for i, raw in enumerate(data.get("columns") or []):
            try:
                cols.append(_spec_from_dict(raw))
            except ValueError as exc:
                problems.append(Problem(f"columns[{i}]", str(exc)))
        eps = []
        for i, raw in enumerate(data.get("endpoints") or []):
            try:
                eps.append(_endpoint_from_dict(raw))
            except ValueError as exc:
                problems.append(Problem(f"endpoints[{i}]", str(exc)))
        if not cols and not problems:
            problems.append(Problem("schema", "declares no columns", valid="a list under 'columns'"))
        strata = _strata_from_list(data.get("strata"), problems)
        rules = _rules_from_list(data.get("constraints"), tuple(eps), problems)
        if problems:
            raise ValidationError("Schema", problems + _strata_problems(strata, {c.name: c for c in cols}))
        return cls(tuple(cols), tuple(eps), str(data.get("name", "custom")), strata, rules)

    def to_yaml(self, path: str | Path) -> None:
        import yaml

        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: str | Path) -> TableSchema:
        import yaml

        return cls.from_dict(yaml.safe_load(Path(path).read_text()) or {})


def _as_label(col: pd.Series) -> pd.Series:
    """Labels as str (whole floats shown without '.0'), missing as NaN."""

    def fmt(v: Any) -> Any:
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            return np.nan
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return str(int(v))
        return str(v)

    return col.map(fmt).astype("object")


def _enum(value: Any, enum: type[Enum], what: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        valid = ", ".join(e.value for e in enum)
        raise ValueError(f"{what} must be one of {valid}; got {value!r}") from None


def _spec_from_dict(raw: Mapping[str, Any]) -> ColumnSpec:
    if not isinstance(raw, Mapping) or "name" not in raw or "kind" not in raw:
        raise ValueError("a column needs at least 'name' and 'kind'")
    bad = set(raw) - _COLUMN_KEYS
    if bad:
        raise ValueError(f"unknown key(s) {sorted(bad)}; valid: {', '.join(sorted(_COLUMN_KEYS))}")
    cats = raw.get("categories")
    return ColumnSpec(
        name=str(raw["name"]),
        kind=_enum(raw["kind"], ColumnKind, "kind"),
        role=_enum(raw.get("role", "clinical"), ColumnRole, "role"),
        categories=None if cats is None else tuple(str(c) for c in cats),
        lower=None if raw.get("lower") is None else float(raw["lower"]),
        upper=None if raw.get("upper") is None else float(raw["upper"]),
        derived=raw.get("derived"),
        description=str(raw.get("description", "")),
    )


def _endpoint_from_dict(raw: Mapping[str, Any]) -> SurvivalEndpoint:
    if not isinstance(raw, Mapping):
        raise ValueError("an endpoint must be a mapping with name, duration_col, event_col")
    missing = {"name", "duration_col", "event_col"} - set(raw)
    bad = set(raw) - _ENDPOINT_KEYS
    if missing or bad:
        raise ValueError(
            f"endpoint keys: missing {sorted(missing)}, unknown {sorted(bad)}; "
            f"valid: {', '.join(sorted(_ENDPOINT_KEYS))}"
        )
    return SurvivalEndpoint(
        str(raw["name"]), str(raw["duration_col"]), str(raw["event_col"]), str(raw.get("time_unit", "years"))
    )


def _strata_problems(strata: Iterable[StratumSpec], index: Mapping[str, ColumnSpec]) -> list[Problem]:
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


def _strata_from_list(raw: Any, problems: list[Problem]) -> tuple[StratumSpec, ...]:
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


def _rules_from_list(
    raw: Any, endpoints: tuple[SurvivalEndpoint, ...], problems: list[Problem]
) -> tuple[EndpointRule, ...]:
    """Endpoint rules from YAML (see :func:`fedsynth.cohort.constraints.rule_from_dict`)."""
    if not raw:
        return ()
    from fedsynth.cohort.constraints import rule_from_dict

    if not isinstance(raw, (list, tuple)):
        problems.append(Problem("constraints", f"is a {type(raw).__name__}", "a list of rules"))
        return ()
    out = []
    for i, item in enumerate(raw):
        try:
            out.append(rule_from_dict(item, endpoints))
        except ValueError as exc:
            problems.append(Problem(f"constraints[{i}]", str(exc)))
    return tuple(out)


# -- inference ------------------------------------------------------------------------------------

# (duration pattern, event pattern) pairs; {p} is the endpoint prefix captured from the duration name.
_SURVIVAL_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"^(?P<p>.+?)[_\.]?(?:years|yrs|months|days|time|duration|dur|t)$", "{p}_status|{p}status|{p}_event|{p}event|{p}_e|{p}.status"),
    (r"^(?P<p>os|pfs|efs|lfs|dfs|rfs|amlt|ttp)$", "{p}_status|{p}status|{p}_event|{p}_e|{p}.status"),
    (r"^(?P<p>)(?:time|duration|survival_time|futime)$", "event|status|fustat|dead|death"),
)
_ID_NAMES = re.compile(r"^(id|patient_?id|sample_?id|subject_?id|record_?id|pid)$", re.IGNORECASE)
_SITE_NAMES = re.compile(r"^(site|centre|center|hospital|institution)(_?id)?$", re.IGNORECASE)
_GENE_NAME = re.compile(r"^[A-Z][A-Z0-9]{1,9}(_[A-Z0-9]{2,5})?$")


def infer_schema(
    data: pd.DataFrame,
    *,
    name: str = "custom",
    max_categories: int = 50,
) -> TableSchema:
    """Infer a schema from a frame.

    Rules, in order: id-like names (``ID``, ``patient_id``) become ``id``; site-like names (``site``,
    ``centre``) become ``site``; survival pairs are recognised from common namings (``OS_YEARS``/``OS_STATUS``,
    ``os``/``os_status``, ``time``/``event``) and become ``outcome``; 0/1 columns whose names look like gene
    symbols (upper case, e.g. ``TP53``, ``MLL_PTD``) become ``genomic`` binaries when at least three such
    columns exist (a gene panel); other 0/1 columns are clinical binaries; numbers are ``integer`` when every
    value is whole, else ``continuous``; text with at most ``max_categories`` labels is ``categorical``.
    Free text with more labels is left out (it cannot be modelled) and listed in a log message.
    """
    import logging

    log = logging.getLogger(__name__)
    lowered = {c.lower(): c for c in data.columns}
    endpoints: list[SurvivalEndpoint] = []
    used: set[str] = set()
    for col in data.columns:
        if col in used:
            continue
        for dur_pat, ev_pats in _SURVIVAL_PATTERNS:
            m = re.match(dur_pat, col, flags=re.IGNORECASE)
            if not m:
                continue
            p = m.group("p").lower().rstrip("_.")
            for cand in ev_pats.split("|"):
                ev = lowered.get(cand.format(p=p).lower())
                if ev is not None and ev != col and ev not in used and _is_binary(data[ev]) and _is_numeric(data[col]):
                    ep_name = (m.group("p").rstrip("_.") or "survival").upper() if p else "survival"
                    endpoints.append(SurvivalEndpoint(ep_name, col, ev, _unit_from_name(col)))
                    used.update({col, ev})
                    break
            if col in used:
                break
    outcome_cols = {c for e in endpoints for c in (e.duration_col, e.event_col)}
    gene_like = [
        c for c in data.columns if c not in outcome_cols and _GENE_NAME.match(str(c)) and _is_binary(data[c])
    ]
    genes = set(gene_like) if len(gene_like) >= 3 else set()
    specs: list[ColumnSpec] = []
    skipped: list[str] = []
    for col in data.columns:
        s = data[col]
        if col in outcome_cols:
            kind = ColumnKind.BINARY if any(e.event_col == col for e in endpoints) else ColumnKind.CONTINUOUS
            specs.append(ColumnSpec(col, kind, ColumnRole.OUTCOME, lower=0.0 if kind is ColumnKind.CONTINUOUS else None))
        elif _ID_NAMES.match(str(col)):
            specs.append(ColumnSpec(col, ColumnKind.CATEGORICAL, ColumnRole.ID))
        elif _SITE_NAMES.match(str(col)):
            specs.append(ColumnSpec(col, ColumnKind.CATEGORICAL, ColumnRole.SITE))
        elif col in genes:
            specs.append(ColumnSpec(col, ColumnKind.BINARY, ColumnRole.GENOMIC))
        elif _is_binary(s):
            specs.append(ColumnSpec(col, ColumnKind.BINARY, ColumnRole.CLINICAL))
        elif _is_numeric(s):
            vals = pd.to_numeric(s, errors="coerce").dropna()
            whole = bool(len(vals)) and bool(np.all(np.mod(vals, 1) == 0))
            specs.append(ColumnSpec(col, ColumnKind.INTEGER if whole else ColumnKind.CONTINUOUS))
        else:
            labels = s.dropna().astype(str).unique()
            if len(labels) <= max_categories:
                specs.append(ColumnSpec(col, ColumnKind.CATEGORICAL, categories=tuple(sorted(labels))))
            else:
                skipped.append(col)
    if skipped:
        log.info("left out free-text columns with more than %d labels: %s", max_categories, skipped)
    return TableSchema(tuple(specs), tuple(endpoints), name)


def _unit_from_name(col: str) -> str:
    low = col.lower()
    for unit in ("days", "months", "years"):
        if unit in low:
            return unit
    return "unknown"


def _is_numeric(s: pd.Series) -> bool:
    nonnull = s.dropna()
    if nonnull.empty:
        return False
    return bool(pd.to_numeric(nonnull, errors="coerce").notna().all())


def _is_binary(s: pd.Series) -> bool:
    nonnull = pd.to_numeric(s.dropna(), errors="coerce")
    if nonnull.empty or nonnull.isna().any():
        return False
    return set(np.unique(nonnull.to_numpy())) <= {0, 1}


def updated(spec: ColumnSpec, **changes: Any) -> ColumnSpec:
    """A copy of ``spec`` with ``changes`` applied (dataclasses.replace with a friendlier name)."""
    return replace(spec, **changes)
