"""Named cohorts (the public IWG-PM MDS cohort) and loading of any CSV with an inferred or given schema."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fedsynth.cohort.constraints import EventImplies, TimeOrder
from fedsynth.cohort.derived import IPSSR_CATEGORIES
from fedsynth.cohort.inference import infer
from fedsynth.cohort.schema import ColumnKind, ColumnRole, ColumnSpec, StratumSpec, SurvivalEndpoint, TableSchema
from fedsynth.cohort.validation import conform, read_csv_checked
from fedsynth.errors import DataNotFoundError, Problem, ValidationError

log = logging.getLogger(__name__)

#: Environment variable naming the folder that holds cohort folders (e.g. ``mds-iwgpm-2022/``).
DATA_DIR_ENV = "FEDSYNTH_DATA_DIR"


@dataclass(frozen=True)
class Cohort:
    """A loaded table with its schema and where it came from."""

    name: str
    data: pd.DataFrame
    schema: TableSchema
    source: str
    notes: tuple[str, ...] = ()
    citation: str = ""
    licence: str = ""

    def fingerprint(self) -> str:
        """sha256 of the canonical table (column names + values), for manifests; reveals nothing of the rows."""
        h = hashlib.sha256()
        h.update(",".join(self.data.columns).encode())
        h.update(pd.util.hash_pandas_object(self.data, index=False).to_numpy().tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class RemoteFile:
    """A source file at a pinned commit, with the git blob id that identifies its exact bytes."""

    url: str
    git_blob_sha1: str
    size: int


@dataclass(frozen=True)
class NamedCohort:
    """A registered public cohort: where its files live, how to fetch them, and its analysis schema."""

    name: str
    folder: str
    filename: str
    sha256: str
    sources: Mapping[str, RemoteFile]
    build: Callable[[Mapping[str, bytes]], bytes]
    schema_factory: Callable[[], TableSchema]
    prepare: Callable[[pd.DataFrame], tuple[pd.DataFrame, list[str]]]
    citation: str = ""
    licence: str = ""
    description: str = ""
    #: SPDX-style short name and URL of the licence (data cards carry them beside ``licence``).
    licence_id: str = ""
    licence_url: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


# -- the IWG-PM MDS cohort --------------------------------------------------------------------------------

_MDS_COMMIT = "0d40d6dd58c06dac8d1dfdeb51c665297d01779a"
_MDS_RAW = f"https://raw.githubusercontent.com/papaemmelab/IPSSMstudy/{_MDS_COMMIT}/data"

#: Genes mutated in >= 2% of the 2,957 patients (TET2bi/TET2other/TP53mono/TP53multi are sub-splits of TET2
#: and TP53 and are left out, so they can never be sampled inconsistently with their parent gene).
MDS_GENES = (
    "TET2", "ASXL1", "SF3B1", "DNMT3A", "SRSF2", "RUNX1", "TP53", "STAG2", "U2AF1", "EZH2", "ZRSR2", "BCOR",
    "CBL", "IDH2", "NRAS", "CUX1", "NF1", "SETBP1", "PHF6", "DDX41", "KRAS", "IDH1", "JAK2", "MLL_PTD",
    "ETNK1", "ETV6", "MPL",
)

#: Half a day in years: OS_YEARS == 0 (45 patients, time-zero events) is set to this on load, by the rule every
#: cohort follows (:func:`fedsynth.cohort.validation.conform`).
MDS_TIME_ZERO = 0.5 / 365.0


def mds_schema() -> TableSchema:
    """Analysis schema of the IWG-PM MDS cohort (see the README's data section for every choice)."""
    c, i, k, b = ColumnKind.CONTINUOUS, ColumnKind.INTEGER, ColumnKind.CATEGORICAL, ColumnKind.BINARY
    cl, ge, out = ColumnRole.CLINICAL, ColumnRole.GENOMIC, ColumnRole.OUTCOME
    cols = [
        ColumnSpec("ID", k, ColumnRole.ID, description="patient/sample identifier"),
        ColumnSpec("AGE", i, cl, lower=0, upper=120, description="age at sampling, years"),
        ColumnSpec("SEX", k, cl, categories=("F", "M"), description="sex: F = female, M = male"),
        ColumnSpec("MDS_TYPE", k, cl, categories=("primary", "s_t_MDS"), description="MDS type: primary, or secondary/therapy-related (s_t_MDS)"),
        ColumnSpec("WHO_2016", k, cl, categories=(
            "MDS-SLD", "MDS-MLD", "MDS-SLD/MLD", "MDS-RS-SLD", "MDS-RS-MLD", "MDS-RS-SLD/MLD", "MDS-del5q",
            "MDS-EB1", "MDS-EB2", "MDS-U", "CMML", "MDS/MPN-RS-T", "MDS/MPN-U", "aCML", "other"),
            description="diagnosis by the WHO 2016 classification of myeloid neoplasms"),
        ColumnSpec("CYTO_IPSSR", k, cl, categories=("Very-Good", "Good", "Int", "Poor", "Very-Poor"),
                   description="cytogenetic risk group of the revised International Prognostic Scoring System (IPSS-R)"),
        ColumnSpec("HB", c, cl, lower=0, description="haemoglobin, g/dL"),
        ColumnSpec("PLT", c, cl, lower=0, description="platelets, x10^9/L"),
        ColumnSpec("ANC", c, cl, lower=0, description="absolute neutrophil count, x10^9/L"),
        ColumnSpec("WBC", c, cl, lower=0, description="white blood cells, x10^9/L (truncated at 13 by inclusion)"),
        ColumnSpec("MONOCYTES", c, cl, lower=0, description="monocytes, x10^9/L"),
        ColumnSpec("BM_BLAST", c, cl, lower=0, upper=100, description="blasts in the bone marrow, % of nucleated cells"),
        ColumnSpec("PB_BLAST", c, cl, lower=0, upper=100, description="blasts in the peripheral blood, % of white cells"),
        ColumnSpec("IPSSR", k, cl, categories=IPSSR_CATEGORIES, derived="ipss_r_category",
                   description="IPSS-R risk group, recomputed from CYTO_IPSSR, BM_BLAST, HB, PLT, ANC"),
    ]
    cols += [ColumnSpec(g, b, ge, description=f"{g} gene: 1 = mutated (somatic mutation found), 0 = not mutated") for g in MDS_GENES]
    cols += [
        ColumnSpec("OS_YEARS", c, out, lower=0, description="overall survival: time from sampling to death or last follow-up, years"),
        ColumnSpec("OS_STATUS", b, out, description="overall survival event: 1 = died, 0 = alive at last follow-up (censored)"),
        ColumnSpec("LFS_YEARS", c, out, lower=0, description="leukaemia-free survival: time from sampling to AML, death or last follow-up, years"),
        ColumnSpec("LFS_STATUS", b, out, description="leukaemia-free survival event: 1 = AML or died, 0 = neither at last follow-up (censored)"),
    ]
    cols = [_with_range(col, MDS_DECLARED_RANGES.get(col.name)) for col in cols]
    os_, lfs = SurvivalEndpoint("OS", "OS_YEARS", "OS_STATUS"), SurvivalEndpoint("LFS", "LFS_YEARS", "LFS_STATUS")
    # The subgroups control arms are drawn from, always reported by the evaluator.
    strata = (StratumSpec("TP53"), StratumSpec("IPSSR"), StratumSpec("AGE", bins=(60, 70, 80)), StratumSpec("SEX"))
    # LFS ends at AML or death, so it never outlasts OS, and a death is an LFS event (both hold in every row).
    rules = (TimeOrder(lfs, os_), EventImplies(os_, lfs))
    return TableSchema(tuple(cols), (os_, lfs), "mds-iwgpm", strata=strata, constraints=rules)


#: Declared plausible ranges (lower, upper) of the MDS cohort's numeric columns, from clinical knowledge, not
#: from the data: wide enough for any adult patient (haemoglobin in g/dL, counts in x10^9/L, blasts in %,
#: follow-up in years). They bound every site's released domain bounds (issue 13: a site's real extremes never
#: leave it) and clip synthetic values; they are not the cohort's inclusion criteria.
MDS_DECLARED_RANGES: dict[str, tuple[float, float]] = {
    "AGE": (0, 120),
    "HB": (0, 25),
    "PLT": (0, 3000),
    "ANC": (0, 100),
    "WBC": (0, 500),
    "MONOCYTES": (0, 200),
    "BM_BLAST": (0, 100),
    "PB_BLAST": (0, 100),
    "OS_YEARS": (0, 50),
    "LFS_YEARS": (0, 50),
}


def _with_range(col: ColumnSpec, bounds: tuple[float, float] | None) -> ColumnSpec:
    import dataclasses

    if bounds is None:
        return col
    return dataclasses.replace(col, lower=float(bounds[0]), upper=float(bounds[1]))


def _mds_prepare(raw: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    # Time-zero durations are not handled here: the one rule for every cohort lives in validation.conform.
    notes: list[str] = []
    df = raw.copy()
    for col in ("AGE",):
        df[col] = pd.to_numeric(df[col], errors="coerce").round().astype(str).where(df[col].notna())
    return df, notes


def _mds_build(files: Mapping[str, bytes]) -> bytes:
    """Join df_clinical.tsv and df_mut.tsv row by row on ID into the CSV described in PROVENANCE.md."""
    clin = list(csv.reader(io.StringIO(files["df_clinical.tsv"].decode()), delimiter="\t"))
    mut = list(csv.reader(io.StringIO(files["df_mut.tsv"].decode()), delimiter="\t"))
    if len(clin) != len(mut) or any(a[0] != b[0] for a, b in zip(clin, mut)):
        raise ValidationError("Downloaded MDS files", [Problem("ID", "the two files do not list the same ids in the same order")])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    for a, b in zip(clin, mut):
        writer.writerow(a + b[1:])
    return buf.getvalue().encode()


NAMED_COHORTS: dict[str, NamedCohort] = {
    "mds-iwgpm": NamedCohort(
        name="mds-iwgpm",
        folder="mds-iwgpm-2022",
        filename="mds_iwgpm_2022.csv",
        sha256="e7f5708548867adb4955890f9e7ff16b401f3f88aeb26dfe1f9aab33c1c74f2d",
        sources={
            "df_clinical.tsv": RemoteFile(f"{_MDS_RAW}/df_clinical.tsv", "720f321d80f96a66eec236f1174e1bf67a9cb5e2", 734_103),
            "df_mut.tsv": RemoteFile(f"{_MDS_RAW}/df_mut.tsv", "3a6333757dfb69f2f65194ece85f9cf99faf3c21", 831_683),
        },
        build=_mds_build,
        schema_factory=mds_schema,
        prepare=_mds_prepare,
        citation=(
            "Bernard E, Tuechler H, Greenberg PL, et al. Molecular International Prognostic Scoring System for "
            "Myelodysplastic Syndromes. NEJM Evidence 2022;1(7):EVIDoa2200008. doi:10.1056/EVIDoa2200008. "
            "Data: papaemmelab/IPSSMstudy; cBioPortal study mds_iwg_2022."
        ),
        licence=(
            "Treated as ODbL-1.0 (cBioPortal's licence for the same study); credit the source and keep derived "
            "data sets, synthetic cohorts included, open under ODbL. Confirm terms with the data owners before "
            "publishing the files."
        ),
        description="IWG-PM myelodysplastic syndromes cohort (IPSS-M derivation): 2,957 patients, clinical, 130 gene mutations, OS/LFS in years",
        licence_id="ODbL-1.0",
        licence_url="https://opendatacommons.org/licenses/odbl/1-0/",
    )
}


def git_blob_sha1(content: bytes) -> str:
    """The git object id of ``content`` (how a git host identifies a file's exact bytes)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def data_dir(explicit: str | Path | None = None) -> Path:
    """The data folder: ``explicit`` (``--data-dir``), else ``$FEDSYNTH_DATA_DIR``, else ``~/.cache/fedsynth/data``."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "fedsynth" / "data"


def cohort_path(name: str, data_dir_: str | Path | None = None) -> Path:
    entry = _named(name)
    return data_dir(data_dir_) / entry.folder / entry.filename


def _named(name: str) -> NamedCohort:
    if name not in NAMED_COHORTS:
        raise ValidationError("Cohort", [Problem("name", f"unknown cohort {name!r}", ", ".join(sorted(NAMED_COHORTS)), "or give a CSV file path instead")])
    return NAMED_COHORTS[name]


def _missing_message(entry: NamedCohort, path: Path) -> str:
    return (
        f"The cohort {entry.name!r} was not found at {path}.\n"
        f"fedsynth looks in the data folder given by --data-dir, else ${DATA_DIR_ENV}, else ~/.cache/fedsynth/data.\n"
        f"Provide it in one of these ways:\n"
        f"  1. point the setting at a folder that holds {entry.folder}/{entry.filename}, e.g.\n"
        f"       export {DATA_DIR_ENV}=/path/to/data   (with /path/to/data/{entry.folder}/{entry.filename})\n"
        f"  2. with internet: fedsynth fetch {entry.name} [--data-dir DIR]  (downloads "
        + " and ".join(entry.sources)
        + f" at a pinned commit, checks them, and writes {entry.filename}, sha256 {entry.sha256[:12]}...)\n"
        f"  3. offline: download "
        + ", ".join(f"{f.url}" for f in entry.sources.values())
        + f" on another machine, copy them into {path.parent}/ and run fedsynth fetch {entry.name} --offline"
    )


def fetch_cohort(
    name: str, data_dir_: str | Path | None = None, *, offline: bool = False, timeout: float = 60.0
) -> Path:
    """Download (or, with ``offline``, read from the target folder) a named cohort's source files, check
    their git blob ids, build the CSV and check its sha256. Returns the CSV path; an existing CSV with the
    right checksum is kept."""
    entry = _named(name)
    target = cohort_path(name, data_dir_)
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == entry.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    problems = []
    for fname, remote in entry.sources.items():
        local = target.parent / fname
        try:
            if offline or local.is_file():
                content = local.read_bytes()
            else:
                with urllib.request.urlopen(remote.url, timeout=timeout) as resp:
                    content = resp.read()
        except OSError as exc:
            raise DataNotFoundError(_missing_message(entry, target) + f"\n(fetching {fname} failed: {exc})") from None
        if git_blob_sha1(content) != remote.git_blob_sha1:
            problems.append(Problem(fname, "content does not match the pinned version", f"git blob {remote.git_blob_sha1}", "delete it and fetch again"))
        files[fname] = content
    if problems:
        raise ValidationError("Fetched files", problems)
    built = entry.build(files)
    digest = hashlib.sha256(built).hexdigest()
    if digest != entry.sha256:
        raise ValidationError("Built cohort file", [Problem(entry.filename, f"sha256 {digest}", entry.sha256)])
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(built)
    tmp.replace(target)
    return target


def load_cohort(name: str, data_dir_: str | Path | None = None, *, schema: TableSchema | None = None) -> Cohort:
    """Load a named cohort: read the CSV, apply the cohort's documented preparation, keep the analysis
    schema's columns, recompute derived columns, validate and coerce to canonical dtypes."""
    entry = _named(name)
    path = cohort_path(name, data_dir_)
    if not path.is_file():
        raise DataNotFoundError(_missing_message(entry, path))
    raw = read_csv_checked(path)
    schema = schema or entry.schema_factory()
    prepared, notes = entry.prepare(raw)
    keep = [c for c in schema.column_names if c in prepared.columns and schema[c].derived is None]
    done = conform(prepared[keep], schema, subject=f"Cohort {name!r}")
    return Cohort(name, done.data, done.schema, str(path), tuple(notes) + done.notes, entry.citation, entry.licence)


def load_table(
    path: str | Path,
    *,
    schema: TableSchema | None = None,
    name: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Cohort:
    """Load any CSV with ``schema`` (or one inferred from the file), ``overrides`` applied.

    Parameters
    ----------
    path : str or Path
        A comma-separated file with a header row.
    schema : TableSchema, optional
        The schema to conform to; inferred when absent (see :func:`fedsynth.cohort.inference.infer`).
    name : str, optional
        The cohort's name (default: the file's stem).
    overrides : mapping, optional
        Schema overrides (:meth:`TableSchema.with_overrides`).

    Returns
    -------
    Cohort
        The table in canonical dtypes, its schema, and ``notes`` listing every guess and change (inferred
        kinds and roles, columns left out and why, time-zero corrections).

    Raises
    ------
    ValidationError
        Listing every problem of the file against the schema.
    """
    p = Path(path)
    raw = read_csv_checked(p)
    notes: tuple[str, ...] = ()
    given = schema is not None
    if schema is None:
        inferred = infer(raw, name=name or p.stem)
        schema, notes = inferred.schema, inferred.notes
    if overrides:
        schema = schema.with_overrides(overrides)
    done = conform(raw, schema, subject=f"File {p.name!r}", say_dropped=given or bool(overrides))
    return Cohort(name or p.stem, done.data, done.schema, str(path), notes + done.notes)


def load(source: str | Path, *, data_dir_: str | Path | None = None, schema: TableSchema | None = None,
         overrides: Mapping[str, Any] | None = None) -> Cohort:
    """Load ``source``: a registered cohort name or a CSV path; apply schema ``overrides`` when given."""
    src = str(source)
    if src in NAMED_COHORTS:
        base = schema or NAMED_COHORTS[src].schema_factory()
        if overrides:
            base = base.with_overrides(overrides)
        return load_cohort(src, data_dir_, schema=base)
    return load_table(src, schema=schema, overrides=overrides)


def summary_frame(cohort: Cohort) -> pd.DataFrame:
    """Per-column summary (kind, role, missing %, distinct, range or top labels) — aggregates only."""
    rows = []
    for spec in cohort.schema.columns:
        s = cohort.data[spec.name] if spec.name in cohort.data.columns else pd.Series(dtype=float)
        row: dict[str, Any] = {
            "column": spec.name,
            "kind": spec.kind.value,
            "role": spec.role.value,
            "missing_pct": round(100 * float(s.isna().mean()), 1) if len(s) else 100.0,
            "distinct": int(s.nunique()),
        }
        if spec.role is ColumnRole.ID:
            row["summary"] = "identifier (not modelled)"
        elif spec.is_numeric:
            v = s.dropna()
            row["summary"] = f"median {v.median():.3g}, IQR {v.quantile(.25):.3g}-{v.quantile(.75):.3g}" if len(v) else ""
        elif spec.kind is ColumnKind.BINARY:
            row["summary"] = f"{100 * float(s.mean()):.1f}% = 1" if s.notna().any() else ""
        else:
            vc = s.value_counts(normalize=True).head(3)
            row["summary"] = ", ".join(f"{k} {100 * v:.0f}%" for k, v in vc.items())
        if spec.derived:
            row["summary"] = f"derived ({spec.derived}); " + row["summary"]
        rows.append(row)
    return pd.DataFrame(rows)


