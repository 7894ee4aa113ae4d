"""Table schema: the ordered columns with their endpoints, dropped columns, strata and endpoint rules, checked
together; YAML overrides and (de)serialisation of the whole table.

The parts (:class:`ColumnKind`, :class:`ColumnRole`, :class:`ColumnSpec`, :class:`SurvivalEndpoint`,
:class:`DroppedColumn`, :class:`StratumSpec`) live in :mod:`fedsynth.cohort.columns` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.cohort.columns import (
    COLUMN_KEYS,
    DAYS_PER_UNIT,
    IGNORE_ROLE,
    NUMERIC_KINDS,
    TIME_UNITS,
    ColumnKind,
    ColumnRole,
    ColumnSpec,
    DroppedColumn,
    StratumSpec,
    SurvivalEndpoint,
    dropped_from_raw,
    endpoint_from_dict,
    spec_from_dict,
    strata_from_list,
    strata_problems,
)
from fedsynth.cohort.constraints import EndpointRule, rule_from_dict
from fedsynth.cohort.missing import normalise_missing
from fedsynth.errors import Problem, ValidationError

__all__ = [
    "DAYS_PER_UNIT",
    "IGNORE_ROLE",
    "NUMERIC_KINDS",
    "TIME_UNITS",
    "ColumnKind",
    "ColumnRole",
    "ColumnSpec",
    "DroppedColumn",
    "StratumSpec",
    "SurvivalEndpoint",
    "TableSchema",
]

_SCHEMA_KEYS = ("name", "columns", "endpoints", "drop", "strata", "constraints")


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
    dropped: tuple[DroppedColumn, ...] = ()
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
        for ep in self.endpoints:
            if ep.time_unit not in DAYS_PER_UNIT:
                problems.append(
                    Problem(f"endpoint {ep.name!r}", f"time_unit {ep.time_unit!r}", valid=", ".join(TIME_UNITS))
                )
        both = sorted({d.name for d in self.dropped} & set(self._index))
        if both:
            problems.append(
                Problem("schema", f"columns {both} are both declared and dropped", fix="keep one of the two")
            )
        if sum(c.role is ColumnRole.ID for c in self.columns) > 1:
            problems.append(Problem("schema", "more than one column has role 'id'", valid="at most one"))
        problems += self._strata_and_rule_problems()
        if problems:
            raise ValidationError(f"Schema {self.name!r}", problems)

    def _strata_and_rule_problems(self) -> list[Problem]:
        problems = strata_problems(self.strata, self._index)
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
        """Every declared column, in schema order."""
        return [c.name for c in self.columns]

    def names(self, *, role: ColumnRole | None = None, kind: ColumnKind | None = None) -> list[str]:
        """Column names filtered by role and/or kind, in schema order."""
        return [
            c.name
            for c in self.columns
            if (role is None or c.role is role) and (kind is None or c.kind is kind)
        ]

    @property
    def dropped_names(self) -> list[str]:
        """Columns of the data the schema leaves out on purpose (``drop:``)."""
        return [d.name for d in self.dropped]

    @property
    def post_baseline_columns(self) -> list[str]:
        """Columns flagged ``baseline: false`` (recorded after diagnosis; never a control-arm criterion)."""
        return [c.name for c in self.columns if not c.baseline]

    @property
    def id_column(self) -> str | None:
        """The identifier column, if any."""
        ids = self.names(role=ColumnRole.ID)
        return ids[0] if ids else None

    @property
    def clinical_columns(self) -> list[str]:
        """Columns with role ``clinical``."""
        return self.names(role=ColumnRole.CLINICAL)

    @property
    def genomic_columns(self) -> list[str]:
        """Columns with role ``genomic``."""
        return self.names(role=ColumnRole.GENOMIC)

    @property
    def outcome_columns(self) -> list[str]:
        """Columns with role ``outcome``."""
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
        """Columns recomputed by a derivation instead of sampled."""
        return [c.name for c in self.columns if c.derived is not None]

    @property
    def data_columns(self) -> list[str]:
        """Model columns plus derived columns: what a synthetic table holds (no ids, no sites)."""
        return [c.name for c in self.columns if c.role not in (ColumnRole.ID, ColumnRole.SITE)]

    def endpoint(self, name: str) -> SurvivalEndpoint:
        """The endpoint called ``name``; ``KeyError`` naming the endpoints otherwise."""
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
        return replace(self, columns=cols, endpoints=eps, **self._kept_strata_and_rules(keep, eps))

    def _kept_strata_and_rules(self, columns: Iterable[str], endpoints: tuple[SurvivalEndpoint, ...]) -> dict[str, Any]:
        """Strata whose column and rules whose endpoints remain (for schemas that lose columns)."""
        keep = set(columns)
        return {"strata": tuple(st for st in self.strata if st.column in keep),
                "constraints": tuple(r for r in self.constraints if all(ep in endpoints for ep in r.endpoints))}

    def without(self, dropped: Iterable[DroppedColumn]) -> TableSchema:
        """A schema where the given columns move from the declared ones to ``dropped`` (with their reasons);
        endpoints that lose a column go too."""
        gone = {d.name: d for d in dropped if d.name in self._index}
        if not gone:
            return self
        cols = tuple(c for c in self.columns if c.name not in gone)
        eps = tuple(e for e in self.endpoints if e.duration_col not in gone and e.event_col not in gone)
        return replace(self, columns=cols, endpoints=eps, dropped=self.dropped + tuple(gone.values()),
                       **self._kept_strata_and_rules((c.name for c in cols), eps))

    def without_codes(self) -> TableSchema:
        """The schema of files fedsynth writes: binary columns are 0/1 there, so no column keeps ``codes``."""
        return replace(self, columns=tuple(replace(c, codes=None) for c in self.columns))

    def without_derived(self) -> TableSchema:
        """The schema without derived columns (model columns and the id)."""
        return self.select(self.model_columns + [n for n in self.names(role=ColumnRole.ID)])

    def with_columns(self, specs: Iterable[ColumnSpec]) -> TableSchema:
        """A schema where the given specs replace the ones of the same name (others unchanged)."""
        new = {s.name: s for s in specs}
        return replace(self, columns=tuple(new.get(c.name, c) for c in self.columns))

    def with_rules(self, rules: Iterable[EndpointRule]) -> TableSchema:
        """A schema with ``rules`` added to its constraints (declared rules first, no duplicates): how rules
        learnt from the sites' answers (:func:`fedsynth.cohort.constraints.learn_rules`) enter a run's schema."""
        merged = list(self.constraints)
        for r in rules:
            if r not in merged:
                merged.append(r)
        return replace(self, constraints=tuple(merged))

    def with_overrides(self, overrides: Mapping[str, Any]) -> TableSchema:
        """Apply YAML-style overrides.

        Parameters
        ----------
        overrides : mapping
            May hold ``name``, ``columns`` (a mapping of column name to the keys to change, or ``null`` to drop
            the column; ``role: ignore`` drops it too), ``drop`` (a list of names, or of ``{name, reason}``),
            ``endpoints`` (a list that replaces the inferred endpoints), ``strata`` and ``constraints`` (lists
            that replace the declared ones; see :meth:`from_dict`).

        Returns
        -------
        TableSchema
            The new schema; dropped columns are kept in ``dropped`` so that data holding them still loads.

        Raises
        ------
        ValidationError
            Listing every problem at once (unknown keys, unknown columns, bad kinds or roles).
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
        dropped = {d.name: d for d in self.dropped}

        def drop(name: str, reason: str) -> None:
            del cols[name]
            order.remove(name)
            dropped[name] = DroppedColumn(name, reason)

        for entry in overrides.get("drop", []) or []:
            try:
                gone = dropped_from_raw(entry)
            except ValueError as exc:
                problems.append(Problem("drop", str(exc)))
                continue
            if gone.name not in cols:
                if gone.name not in dropped:
                    problems.append(Problem(f"drop {gone.name!r}", "no such column", valid=", ".join(order)))
            else:
                drop(gone.name, gone.reason or "dropped by the schema overrides")
        for name, changes in (overrides.get("columns") or {}).items():
            if changes is None or (isinstance(changes, Mapping) and changes.get("role") == IGNORE_ROLE):
                if name in cols:
                    drop(name, "dropped by the schema overrides")
                continue
            if not isinstance(changes, Mapping):
                problems.append(Problem(f"column {name!r}", "override must be a mapping of keys to values"))
                continue
            bad = set(changes) - COLUMN_KEYS
            if bad:
                problems.append(
                    Problem(
                        f"column {name!r}",
                        f"unknown key(s) {sorted(bad)}",
                        valid=", ".join(sorted(COLUMN_KEYS - {'name'})),
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
                    spec = spec_from_dict({"name": name, **changes})
                    order.append(name)
                    dropped.pop(name, None)
                else:
                    spec = spec_from_dict({**base.to_dict(), **changes})
            except ValueError as exc:
                problems.append(Problem(f"column {name!r}", str(exc)))
                continue
            cols[name] = spec
        endpoints = self.endpoints
        if "endpoints" in overrides:
            try:
                endpoints = tuple(endpoint_from_dict(e) for e in overrides["endpoints"] or [])
            except ValueError as exc:
                problems.append(Problem("endpoints", str(exc)))
        # Drop endpoints whose columns were removed.
        endpoints = tuple(e for e in endpoints if e.duration_col in cols and e.event_col in cols)
        strata, rules = self.strata, self.constraints
        if "strata" in overrides:
            strata = strata_from_list(overrides["strata"], problems)
        if "constraints" in overrides:
            rules = _rules_from_list(overrides["constraints"], endpoints, problems)
        if problems:
            raise ValidationError("Schema overrides", problems)
        return replace(
            self,
            columns=tuple(cols[n] for n in order),
            endpoints=endpoints,
            name=str(overrides.get("name", self.name)),
            dropped=tuple(dropped.values()),
            strata=tuple(st for st in strata if st.column in cols),
            constraints=tuple(r for r in rules if all(ep in endpoints for ep in r.endpoints)),
        )

    # -- dtypes -------------------------------------------------------------------------------------
    def coerce(self, data: pd.DataFrame) -> pd.DataFrame:
        """Return the schema's columns of ``data`` in canonical dtypes (see the class docstring).

        Call :func:`fedsynth.cohort.validation.conform` (or ``validate_frame``) first on untrusted data: this
        method assumes values already fit their kinds.
        """
        out = {}
        for spec in self.columns:
            if spec.name not in data.columns:
                continue
            col = data[spec.name]
            if col.dtype == object:
                col = normalise_missing(col)
            if spec.kind in (ColumnKind.CATEGORICAL,) or spec.role is ColumnRole.ID:
                out[spec.name] = _as_label(col)
            else:
                out[spec.name] = pd.to_numeric(col, errors="coerce").astype("float64")
        return pd.DataFrame(out, index=data.index)

    # -- serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The schema as a YAML-ready mapping: ``name``, ``columns``, ``endpoints`` and, when any, ``drop``,
        ``strata`` and ``constraints``."""
        out: dict[str, Any] = {
            "name": self.name,
            "columns": [c.to_dict() for c in self.columns],
            "endpoints": [e.to_dict() for e in self.endpoints],
        }
        if self.dropped:
            out["drop"] = [d.to_dict() for d in self.dropped]
        if self.strata:
            out["strata"] = [st.to_dict() for st in self.strata]
        if self.constraints:
            out["constraints"] = [r.to_dict() for r in self.constraints]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TableSchema:
        """Read a schema mapping (as :meth:`to_dict` writes it); every problem in one :class:`ValidationError`.

        A column entry with ``role: ignore`` is read as a dropped column, like an entry of ``drop``. Optional
        ``strata`` (column names, or ``{column, bins, labels}`` for bands of a numeric column) and ``constraints``
        (endpoint rules: ``{type: time_order, shorter: LFS, longer: OS}``, ``{type: event_implies, source: OS,
        implied: LFS}``; see :mod:`fedsynth.cohort.constraints`).
        """
        problems: list[Problem] = []
        if not isinstance(data, Mapping):
            raise ValidationError("Schema", [Problem("schema", f"is a {type(data).__name__}", "a mapping of keys")])
        unknown = set(data) - set(_SCHEMA_KEYS)
        if unknown:
            problems.append(Problem("schema", f"unknown key(s) {sorted(unknown)}", valid=", ".join(_SCHEMA_KEYS)))
        cols = []
        dropped: list[DroppedColumn] = []
        for i, raw in enumerate(data.get("columns") or []):
            if isinstance(raw, Mapping) and raw.get("role") == IGNORE_ROLE and "name" in raw:
                dropped.append(DroppedColumn(str(raw["name"]), str(raw.get("description", "role: ignore"))))
                continue
            try:
                cols.append(spec_from_dict(raw))
            except ValueError as exc:
                problems.append(Problem(f"columns[{i}]", str(exc)))
        eps = []
        for i, raw in enumerate(data.get("endpoints") or []):
            try:
                eps.append(endpoint_from_dict(raw))
            except ValueError as exc:
                problems.append(Problem(f"endpoints[{i}]", str(exc)))
        for i, raw in enumerate(data.get("drop") or []):
            try:
                dropped.append(dropped_from_raw(raw))
            except ValueError as exc:
                problems.append(Problem(f"drop[{i}]", str(exc)))
        if not cols and not problems:
            problems.append(Problem("schema", "declares no columns", valid="a list under 'columns'"))
        strata = strata_from_list(data.get("strata"), problems)
        rules = _rules_from_list(data.get("constraints"), tuple(eps), problems)
        if problems:
            raise ValidationError("Schema", problems + strata_problems(strata, {c.name: c for c in cols}))
        return cls(tuple(cols), tuple(eps), str(data.get("name", "custom")), tuple(dropped), strata, rules)

    def to_yaml(self, path: str | Path) -> None:
        """Write the schema as YAML (see :meth:`to_dict`)."""
        import yaml

        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: str | Path) -> TableSchema:
        """Read a schema YAML; a missing file or invalid YAML is a :class:`ValidationError`, not a traceback."""
        import yaml

        p = Path(path)
        if not p.is_file():
            raise ValidationError("Schema", [Problem(f"file {p.name!r}", "does not exist", fix=f"check the path {str(p)!r}")])
        try:
            raw = yaml.safe_load(p.read_text())
        except yaml.YAMLError:
            raise ValidationError("Schema", [Problem(f"file {p.name!r}", "is not valid YAML")]) from None
        return cls.from_dict(raw or {})
def _rules_from_list(
    raw: Any, endpoints: tuple[SurvivalEndpoint, ...], problems: list[Problem]
) -> tuple[EndpointRule, ...]:
    """Endpoint rules from YAML (see :func:`fedsynth.cohort.constraints.rule_from_dict`)."""
    if not raw:
        return ()
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

def _label(v: Any) -> Any:
    """One value as a label: str (a whole float without '.0'), missing as NaN."""
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
        return np.nan
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _as_label(col: pd.Series) -> pd.Series:
    """Labels as str (whole floats shown without '.0'), missing as NaN.

    Each distinct value is formatted once (a column holds few labels and a sampled table many rows), unless the
    column mixes booleans with numbers or other kinds, whose distinct values pandas would merge (``True == 1``):
    those are formatted value by value."""
    kind = pd.api.types.infer_dtype(col, skipna=True)
    if kind not in ("string", "floating", "integer", "mixed-integer-float", "empty"):
        return col.map(_label).astype("object")
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    labels = np.array([_label(u) for u in uniques] + [np.nan], dtype=object)
    return pd.Series(labels[codes], index=col.index, dtype="object")
