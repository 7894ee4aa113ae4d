"""Seeded train/holdout split and site partitions (proportions, IID, by a column, Dirichlet), best and worst case."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from fedsynth.cohort.derived import DERIVATIONS
from fedsynth.cohort.io import atomic_write_text, write_csv
from fedsynth.cohort.schema import ColumnRole, TableSchema
from fedsynth.errors import Problem, ValidationError

log = logging.getLogger(__name__)

#: Partition methods.
METHODS = ("iid", "by_column", "dirichlet")

#: A site with fewer training rows than this is left out (with a note): no generator learns from one or two rows.
MIN_SITE_ROWS = 3


@dataclass(frozen=True)
class Site:
    """One simulated hospital: its rows and the columns it holds (a worst-case site lacks some).

    ``value`` is the value of the site column it was split by (``"Leeds General"`` for the site named
    ``Leeds_General``), ``None`` for proportional splits.
    """

    name: str
    data: pd.DataFrame
    lacks: tuple[str, ...] = ()
    value: str | None = None

    @property
    def n_rows(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class Partition:
    """The training pool, the holdout and the sites (whose rows together are exactly the training pool)."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    sites: tuple[Site, ...]
    schema: TableSchema
    settings: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    left_out: tuple[Site, ...] = ()
    #: Each site's own share of the holdout (:func:`split_holdout`), by site name: rows that train nothing, for
    #: the privacy figures a deployed site scores against its own rows. Empty when the holdout is too small.
    site_holdouts: Mapping[str, pd.DataFrame] = field(default_factory=dict)

    def site(self, name: str) -> Site:
        """The site called ``name``; ``KeyError`` naming the sites otherwise."""
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(f"no site {name!r}; sites: {[s.name for s in self.sites]}")

    def to_dict(self) -> dict[str, Any]:
        """Row counts and which columns each site holds — what ``partition.json`` records (no rows)."""
        data_cols = self.schema.data_columns
        return {
            "settings": dict(self.settings),
            "n_train": len(self.train),
            "n_holdout": len(self.holdout),
            "notes": list(self.notes),
            "left_out": [{"name": s.name, "n_rows": s.n_rows} for s in self.left_out],
            "sites": [
                {
                    "name": s.name,
                    **({"value": s.value} if s.value is not None else {}),
                    "n_rows": s.n_rows,
                    "share": round(s.n_rows / max(len(self.train), 1), 4),
                    "n_holdout": len(self.site_holdouts[s.name]) if s.name in self.site_holdouts else None,
                    "columns": [c for c in data_cols if c not in s.lacks],
                    "lacks": list(s.lacks),
                }
                for s in self.sites
            ],
        }

    def write(self, out_dir: str | Path) -> Path:
        """Write ``<site>.csv`` and ``<site>.holdout.csv`` per site, ``holdout.csv``, ``schema.yaml`` and
        ``partition.json`` into ``out_dir`` (atomically).

        ``<site>.holdout.csv`` is the site's share of ``holdout.csv`` (:func:`split_holdout`); beside
        ``<site>.csv`` it is the holdout ``fedsynth site start --data <site>.csv`` finds on its own.
        ``schema.yaml`` describes the written files: binary columns are 0/1 there, so it keeps no ``codes``;
        pass it with ``--schema`` to load a site file as a cohort of its own.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for s in self.sites:
            write_csv(s.data, out / f"{s.name}.csv", self.schema)
            if s.name in self.site_holdouts:
                write_csv(self.site_holdouts[s.name], out / site_holdout_file(s.name), self.schema)
        write_csv(self.holdout, out / "holdout.csv", self.schema)
        written = self.schema.without_codes()
        atomic_write_text(out / "schema.yaml", yaml.safe_dump(written.to_dict(), sort_keys=False))
        atomic_write_text(out / "partition.json", json.dumps(self.to_dict(), indent=2))
        return out / "partition.json"


def site_holdout_file(site: str) -> str:
    """The file name of a site's share of the holdout: ``<site>.holdout.csv``, beside ``<site>.csv``."""
    return f"{site}.holdout.csv"


def allocate(n: int, proportions: Sequence[float]) -> list[int]:
    """Split ``n`` into integer sizes proportional to ``proportions`` (largest remainder; exact to one row)."""
    p = np.asarray(proportions, dtype=float)
    p = p / p.sum()
    raw = p * n
    sizes = np.floor(raw).astype(int)
    order = np.argsort(-(raw - sizes), kind="stable")
    sizes[order[: n - sizes.sum()]] += 1
    return [int(s) for s in sizes]


def parse_proportions(spec: str | Sequence[float]) -> list[float]:
    """``"60,30,10"`` or ``[0.6, 0.3, 0.1]`` -> proportions summing to 1; a clear error otherwise."""
    if isinstance(spec, str):
        try:
            vals = [float(x) for x in spec.replace(" ", "").split(",") if x]
        except ValueError:
            raise ValidationError(
                "Site proportions", [Problem("sites", "is not a comma-separated list of numbers", "e.g. 60,30,10")]
            ) from None
    else:
        vals = [float(x) for x in spec]
    problems = []
    if len(vals) < 1:
        problems.append(Problem("sites", "lists no site", "at least one proportion, e.g. 60,30,10"))
    if any(v <= 0 for v in vals):
        problems.append(Problem("sites", "has a proportion <= 0", "positive numbers"))
    if problems:
        raise ValidationError("Site proportions", problems)
    total = sum(vals)
    return [v / total for v in vals]


def _event_strata(data: pd.DataFrame, schema: TableSchema) -> pd.Series | None:
    if not schema.endpoints:
        return None
    ev = schema.endpoints[0].event_col
    if ev not in data.columns:
        return None
    return data[ev].astype("float64").fillna(-1).astype(int).astype(str)


def train_holdout_split(
    data: pd.DataFrame,
    schema: TableSchema,
    *,
    holdout_fraction: float = 0.1,
    random_state: int | None = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded split stratified by the first endpoint's event (see :func:`split_with_notes`)."""
    train, holdout, _ = split_with_notes(data, schema, holdout_fraction=holdout_fraction, random_state=random_state)
    return train, holdout


def split_with_notes(
    data: pd.DataFrame,
    schema: TableSchema,
    *,
    holdout_fraction: float = 0.1,
    random_state: int | None = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Seeded train/holdout split, stratified by the first endpoint's event when the data allow it.

    Parameters
    ----------
    data : pandas.DataFrame
        The cohort.
    schema : TableSchema
        Its schema (the first endpoint's event column is the stratum; a missing event is its own stratum).
    holdout_fraction : float
        Share of rows held out, in (0, 1); at least one row is held out and one kept.
    random_state : int, optional
        Seed.

    Returns
    -------
    train, holdout : pandas.DataFrame
        Rows re-indexed from 0.
    notes : list of str
        Set when the split could not be stratified (a stratum with one row, or fewer held-out rows than
        strata, as in small files) and fell back to a plain seeded split.

    Raises
    ------
    ValidationError
        When ``holdout_fraction`` is outside (0, 1) or the data have fewer than 2 rows.
    """
    from sklearn.model_selection import train_test_split

    if not 0 < holdout_fraction < 1:
        raise ValidationError("Split", [Problem("holdout_fraction", f"got {holdout_fraction}", "a number in (0, 1)")])
    if len(data) < 2:
        raise ValidationError("Split", [Problem("data", f"has {len(data)} row(s)", "at least 2 rows (one to train on, one to hold out)")])
    notes: list[str] = []
    strata = _event_strata(data, schema)
    n_holdout = max(1, min(len(data) - 1, int(np.ceil(holdout_fraction * len(data)))))
    if strata is not None:
        counts = strata.value_counts()
        k = len(counts)
        if counts.min() < 2 or n_holdout < k or len(data) - n_holdout < k:
            strata = None
            notes.append(
                f"the train/holdout split is not stratified by {schema.endpoints[0].event_col!r}: "
                f"{len(data)} rows are too few to hold out every event status"
            )
            log.info(notes[-1])
    train, holdout = train_test_split(data, test_size=n_holdout, random_state=random_state, stratify=strata)
    return train.reset_index(drop=True), holdout.reset_index(drop=True), notes


def partition_sites(
    train: pd.DataFrame,
    schema: TableSchema,
    *,
    proportions: Sequence[float] | None = None,
    method: str = "iid",
    by: str | None = None,
    alpha: float = 0.5,
    random_state: int | None = 0,
    site_names: Sequence[str] | None = None,
) -> list[pd.DataFrame]:
    """Split training rows over sites.

    ``iid``: shuffle, then cut into sizes given by ``proportions`` (exact to one row).
    ``by_column``: one site per distinct value of ``by`` (a centre column), in sorted order.
    ``dirichlet``: non-IID label skew over ``by``: each value's rows are spread over the sites with proportions
    drawn from Dirichlet(alpha * proportions * k) (smaller alpha = more skew); site sizes follow on average.
    Every row lands at exactly one site.
    """
    problems = []
    if method not in METHODS:
        problems.append(Problem("method", f"got {method!r}", ", ".join(METHODS)))
    if method in ("by_column", "dirichlet"):
        if by is None:
            problems.append(Problem("by", f"method {method!r} needs a column", ", ".join(train.columns)))
        elif by not in train.columns:
            problems.append(Problem("by", f"no column {by!r}", ", ".join(train.columns)))
    if method in ("iid", "dirichlet") and not proportions:
        problems.append(Problem("proportions", "are required", "e.g. 60,30,10"))
    if alpha <= 0:
        problems.append(Problem("alpha", f"got {alpha}", "a number > 0"))
    if problems:
        raise ValidationError("Site partition", problems)
    rng = np.random.default_rng(random_state)
    idx = np.arange(len(train))
    parts: list[np.ndarray]
    if method == "iid":
        assert proportions is not None
        if len(proportions) > len(train):
            raise ValidationError("Site partition", [Problem("sites", f"{len(proportions)} sites for {len(train)} rows", "at most one site per row")])
        perm = rng.permutation(idx)
        sizes = allocate(len(train), proportions)
        parts = np.split(perm, np.cumsum(sizes)[:-1])
    elif method == "by_column":
        assert by is not None
        keys = train[by].astype("object").fillna("(missing)").astype(str)
        parts = [idx[(keys == k).to_numpy()] for k in _column_keys(train, by)]
    else:
        assert proportions is not None and by is not None
        p = np.asarray(proportions, dtype=float) / sum(proportions)
        k = len(p)
        assign = np.empty(len(train), dtype=int)
        keys = train[by].astype("object").fillna("(missing)").astype(str).to_numpy()
        for value in sorted(set(keys)):
            rows = rng.permutation(idx[keys == value])
            q = rng.dirichlet(alpha * p * k)
            sizes = allocate(len(rows), [float(x) for x in q]) if len(rows) else [0] * k
            for site, chunk in enumerate(np.split(rows, np.cumsum(sizes)[:-1])):
                assign[chunk] = site
        parts = [idx[assign == s] for s in range(k)]
    return [train.iloc[np.sort(p_)].reset_index(drop=True) for p_ in parts]


def site_names_from_column(train: pd.DataFrame, by: str) -> list[str]:
    """Site names for a split by column: the column's values, in the order :func:`partition_sites` uses,
    made safe as file names (letters, digits, ``.``, ``_``, ``-``); a clash gets a numeric suffix."""
    names: list[str] = []
    for key in _column_keys(train, by):
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._") or "site"
        if base == "holdout":
            base = "site-holdout"
        name, i = base, 2
        while name in names:
            name, i = f"{base}-{i}", i + 1
        names.append(name)
    return names


def _column_keys(train: pd.DataFrame, by: str) -> list[str]:
    return sorted(train[by].astype("object").fillna("(missing)").astype(str).unique())


def split_holdout(
    holdout: pd.DataFrame,
    schema: TableSchema,
    sites: Sequence[Site],
    *,
    by: str | None = None,
    random_state: int | None = 0,
) -> dict[str, pd.DataFrame]:
    """Each site's own share of the holdout, split with :func:`partition_sites` as the training rows were.

    A deployed site scores the synthetic snapshots' privacy figures against its own holdout (rows that train
    nothing), so a simulated network's holdout is shared out over its sites: by the column ``by`` when the sites
    were split by it (each site gets the holdout rows of its own value; rows of a value no site holds go to no
    site), otherwise IID in proportion to the sites' training rows (for a proportional split, the configured
    proportions, exact to one row; a Dirichlet split's label skew is not repeated). A site that lacks columns
    lacks them in its holdout too.

    Parameters
    ----------
    holdout : pandas.DataFrame
        The held-out rows (every column).
    schema : TableSchema
        Their schema.
    sites : sequence of Site
        The sites (their ``value`` of ``by`` when split by a column; their row counts otherwise).
    by : str, optional
        The column the sites were split by (``method="by_column"``); ``None`` for proportional splits.
    random_state : int, optional
        Seed of the IID split.

    Returns
    -------
    dict of str to pandas.DataFrame
        Site name -> its holdout rows (disjoint; together at most the holdout). Empty when the holdout has fewer
        rows than there are sites.
    """
    if not sites:
        return {}
    if by is not None and all(s.value is not None for s in sites):
        parts = partition_sites(holdout, schema, method="by_column", by=by)
        by_value = dict(zip(_column_keys(holdout, by), parts, strict=True))
        frames = [by_value.get(str(s.value), holdout.iloc[:0]) for s in sites]
    elif len(holdout) < len(sites):
        return {}
    else:
        frames = partition_sites(holdout, schema, proportions=[max(s.n_rows, 1) for s in sites], method="iid",
                                 random_state=random_state)
    return {s.name: f.drop(columns=[c for c in s.lacks if c in f.columns]).reset_index(drop=True)
            for s, f in zip(sites, frames, strict=True)}


def default_worst_case(schema: TableSchema, n_sites: int) -> dict[str, list[str]]:
    """The shipped worst case: which named sites lack which columns.

    Mirrors what happens in a real network: the smallest site (the last) runs a short myeloid panel and lacks
    the less frequent half of the genes; the second site does not record monocytes or blood blasts (the two
    clinical columns most often unmeasured). With one site there is no worst case.
    """
    if n_sites < 2:
        return {}
    genes = schema.genomic_columns
    short_panel_lacks = genes[len(genes) // 2 :]
    clinical = [c for c in ("MONOCYTES", "PB_BLAST") if c in schema]
    if not clinical:
        clinical = [c for c in schema.clinical_columns if schema[c].derived is None][-2:]
    out: dict[str, list[str]] = {}
    if short_panel_lacks:
        out[f"site-{n_sites}"] = list(short_panel_lacks)
    if n_sites >= 3 and clinical:
        out["site-2"] = clinical
    elif clinical and not short_panel_lacks:
        out[f"site-{n_sites}"] = clinical
    return out


def make_partition(
    data: pd.DataFrame,
    schema: TableSchema,
    *,
    proportions: Sequence[float] | str | None = (0.6, 0.3, 0.1),
    method: str = "iid",
    by: str | None = None,
    alpha: float = 0.5,
    holdout_fraction: float = 0.1,
    scenario: str = "best",
    missing_columns: Mapping[str, Sequence[str]] | None = None,
    random_state: int | None = 0,
    min_site_rows: int = MIN_SITE_ROWS,
) -> Partition:
    """Split ``data`` into training pool and holdout, then the pool into sites, and apply the scenario.

    ``scenario="best"``: every site holds every column. ``"worst"``: the sites named in ``missing_columns``
    (default: :func:`default_worst_case`) lack those columns — they are removed from the site's frame. Derived
    columns go with their inputs: a site lacking an input of a derived column lacks that column too.
    Seeds for the split, for the sites and for each site's share of the holdout (:func:`split_holdout`,
    ``site_holdouts``) are independent children of ``random_state``.

    With ``method="by_column"`` the sites are named after the column's values (a centre column's
    ``Leeds``, ``Pavia``), made safe as file names; otherwise ``site-1``, ``site-2``, ... A site with fewer
    than ``min_site_rows`` training rows is left out (its rows leave the training pool too, so that the
    sites still hold exactly the pool) with a note; ``notes`` also says when a small file could not be split
    with stratification.
    """
    if isinstance(proportions, str):
        proportions = parse_proportions(proportions)
    elif proportions is not None:
        proportions = parse_proportions(list(proportions))
    if scenario not in ("best", "worst"):
        raise ValidationError("Scenario", [Problem("scenario", f"got {scenario!r}", "best, worst")])
    # the third child seeds the holdout's split over the sites; the first two are those of earlier versions
    split_seed, site_seed, holdout_seed = np.random.SeedSequence(random_state).spawn(3)
    train, holdout, notes = split_with_notes(
        data, schema, holdout_fraction=holdout_fraction, random_state=int(split_seed.generate_state(1)[0])
    )
    frames = partition_sites(
        train, schema, proportions=proportions, method=method, by=by, alpha=alpha,
        random_state=int(site_seed.generate_state(1)[0]),
    )
    names = [f"site-{i + 1}" for i in range(len(frames))]
    values: list[str | None] = [None] * len(frames)
    if method == "by_column" and by is not None:
        names = site_names_from_column(train, by)
        values = list(_column_keys(train, by))
    lacks: dict[str, list[str]] = {}
    if scenario == "worst":
        default = {
            names[int(k.split("-")[1]) - 1]: v for k, v in default_worst_case(schema, len(frames)).items()
        }
        lacks = {k: list(v) for k, v in (missing_columns or default).items()}
        problems = []
        for site, cols in lacks.items():
            if site not in names:
                problems.append(Problem(f"missing_columns.{site}", "no such site", ", ".join(names)))
            bad = [c for c in cols if c not in schema or schema[c].role in (ColumnRole.ID,)]
            if bad:
                problems.append(Problem(f"missing_columns.{site}", f"unknown or id columns {bad}", "model columns of the schema"))
            outcome = [c for c in cols if schema[c].role is ColumnRole.OUTCOME] if not bad else []
            if outcome:
                problems.append(Problem(f"missing_columns.{site}", f"outcome columns {outcome} cannot be lacking", "clinical or genomic columns"))
        if problems:
            raise ValidationError("Worst-case scenario", problems)
        for site, cols in lacks.items():
            for d in schema.derived_columns:
                inputs = DERIVATIONS[schema[d].derived or ""][1]
                if any(c in cols for c in inputs) and d not in cols:
                    cols.append(d)
    all_sites = [
        Site(n, f.drop(columns=[c for c in lacks.get(n, []) if c in f.columns]), tuple(lacks.get(n, [])), v)
        for n, f, v in zip(names, frames, values, strict=True)
    ]
    sites = tuple(s for s in all_sites if s.n_rows >= min_site_rows)
    left_out = tuple(s for s in all_sites if s.n_rows < min_site_rows)
    if not sites:
        raise ValidationError(
            "Site partition",
            [Problem("sites", f"every site has fewer than {min_site_rows} training rows", f"at least one site with {min_site_rows} or more", "use fewer sites or more rows")],
        )
    if left_out:
        small = ", ".join(f"{s.name} ({s.n_rows} row{'s' if s.n_rows != 1 else ''})" for s in left_out)
        notes.append(f"sites with fewer than {min_site_rows} training rows are left out: {small}")
        log.info(notes[-1])
        train = _rows_of(train, frames, all_sites, sites)
    settings = {
        "proportions": None if proportions is None else [round(p, 6) for p in proportions],
        "method": method,
        "by": by,
        "alpha": alpha if method == "dirichlet" else None,
        "holdout_fraction": holdout_fraction,
        "scenario": scenario,
        "random_state": random_state,
        "stratified": not any("not stratified" in n for n in notes),
    }
    site_holdouts = split_holdout(holdout, schema, sites, by=by if method == "by_column" else None,
                                  random_state=int(holdout_seed.generate_state(1)[0]))
    if not site_holdouts:
        notes.append(f"the holdout ({len(holdout)} rows) is too small to share over {len(sites)} sites: "
                     "no site holdout files")
        log.info(notes[-1])
    return Partition(train, holdout, sites, schema, settings, tuple(notes), left_out, site_holdouts)


def _rows_of(
    train: pd.DataFrame, frames: Sequence[pd.DataFrame], all_sites: Sequence[Site], kept: Sequence[Site]
) -> pd.DataFrame:
    """The training pool less the rows of left-out sites (full columns, in site order)."""
    keep = {s.name for s in kept}
    parts = [f for f, s in zip(frames, all_sites, strict=True) if s.name in keep]
    return pd.concat(parts, ignore_index=True)
