"""Schema inference from a raw table: kinds, roles, survival pairs, codes, genes, ids and what is left out, with notes."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from fedsynth.cohort.missing import normalise_missing
from fedsynth.cohort.schema import (
    ColumnKind,
    ColumnRole,
    ColumnSpec,
    DroppedColumn,
    SurvivalEndpoint,
    TableSchema,
)

log = logging.getLogger(__name__)

#: Two-label vocabularies read as binary, label -> 0/1 (matched case-insensitively). The value 1 is the event,
#: the finding or "yes"; the README lists them.
BINARY_VOCABULARIES: tuple[dict[str, float], ...] = (
    {"true": 1.0, "false": 0.0},
    {"t": 1.0, "f": 0.0},
    {"yes": 1.0, "no": 0.0},
    {"y": 1.0, "n": 0.0},
    {"dead": 1.0, "deceased": 1.0, "died": 1.0, "death": 1.0, "alive": 0.0, "living": 0.0},
    {"event": 1.0, "censored": 0.0},
    {"positive": 1.0, "negative": 0.0},
    {"pos": 1.0, "neg": 0.0},
    {"present": 1.0, "absent": 0.0},
    {"mutated": 1.0, "mutant": 1.0, "mut": 1.0, "wildtype": 0.0, "wild-type": 0.0, "wild type": 0.0, "wt": 0.0},
)

# Name pieces, on names lower-cased with separators removed ("OS_YEARS" -> "osyears").
_EVENT_SUFFIXES = ("status", "stat", "event", "evt", "censor", "censored", "cens", "cnsr", "ind", "indicator",
                   "flag", "e", "dead", "death", "died")
_CENSOR_SUFFIXES = ("censor", "censored", "cens", "cnsr")
_UNIT_WORDS = {
    "years": "years", "year": "years", "yrs": "years", "yr": "years", "y": "years",
    "months": "months", "month": "months", "mos": "months", "mo": "months", "m": "months",
    "weeks": "weeks", "week": "weeks", "wks": "weeks", "wk": "weeks", "w": "weeks",
    "days": "days", "day": "days", "d": "days",
}
_DURATION_RE = re.compile(
    r"^(?:time|duration|dur|surv|survival|t|fu|to)*"
    r"(?P<unit>years|year|yrs|yr|y|months|month|mos|mo|m|weeks|week|wks|wk|w|days|day|d)?$"
)
_GENERIC_STEMS = ("", "fu", "surv", "survival", "overall")
_ID_NAMES = {"id", "patientid", "sampleid", "subjectid", "recordid", "pid", "patient", "subject", "caseid",
             "recordnumber", "recordno", "record", "mrn", "usubjid", "subjid", "patid", "patno", "patientno"}
_SITE_NAMES = {"site", "centre", "center", "hospital", "institution", "clinic", "studysite", "trialsite"}
_SEX_NAMES = {"sex", "gender"}
_GENE_AFFIX = re.compile(
    r"^(?:mut|mutation|mutated)[_.\-](?P<g>.+)$|^(?P<h>.+?)[_.\-](?:mut|mutation|mutated|mutant)$", re.IGNORECASE
)
_GENE_SYMBOL = re.compile(r"^[A-Za-z][A-Za-z0-9]{1,9}(?:_[A-Za-z0-9]{2,5})?$")
# Post-baseline guesses: long stems matched anywhere in the normalised name, short words as whole tokens.
_POST_STEMS = ("treat", "therap", "transplant", "chemo", "response", "relapse", "progress", "remission",
               "azacitidin", "decitabin", "lenalidomid", "venetoclax", "induction", "salvage", "aftertherapy")
_POST_TOKENS = {"tx", "rx", "hma", "sct", "hsct", "bmt", "allo", "aza", "dose", "regimen", "drug", "resp",
                "post", "after"}


@dataclass(frozen=True)
class Inference:
    """An inferred schema and every guess behind it, in words (``notes``), for the CLI's text and JSON."""

    schema: TableSchema
    notes: tuple[str, ...] = ()


def infer_schema(data: pd.DataFrame, *, name: str = "custom", max_categories: int = 50) -> TableSchema:
    """Infer a schema from a frame (see :func:`infer`, which also returns the notes)."""
    return infer(data, name=name, max_categories=max_categories).schema


def infer(data: pd.DataFrame, *, name: str = "custom", max_categories: int = 50) -> Inference:
    """Infer a schema from a raw frame and say what was guessed.

    Parameters
    ----------
    data : pandas.DataFrame
        The table as read (text cells, as :func:`~fedsynth.cohort.validation.read_csv_checked` gives, or
        already typed). Missing tokens (``""``, ``NA``, ...) are missing.
    name : str
        Name of the schema.
    max_categories : int
        Text columns with more distinct labels are free text and are left out.

    Returns
    -------
    Inference
        ``schema`` declares every column it can model and lists every other column under ``dropped`` with the
        reason, so that the unedited schema loads the same file again; ``notes`` says every guess.

    Notes
    -----
    Rules, by column name (lower-cased, separators removed) and values, never by a particular cohort's names:

    - **Survival pairs**: an event column (0/1, 1/2 coded as R's ``survival`` does, 2 = event, or a two-label
      vocabulary such as dead/alive) named ``<stem><suffix>`` with a suffix such as ``_status``, ``STAT``,
      ``_event``, ``_censor`` (read as 1 = censored, so the event is its complement) pairs with a number
      column named ``<stem>`` (bare endpoint name), ``<stem>_time``, ``<stem>_days``, ``<stem>_months``, ...;
      ``time``/``event`` and ``futime``/``fustat`` pair with an empty stem. The unit comes from the name, else
      from the size of the values (median <= 10: years, <= 120: months, else days; said in a note).
    - **Binary columns** are 0/1, a two-label vocabulary (TRUE/FALSE, yes/no, dead/alive, positive/negative,
      mutated/wild type; :data:`BINARY_VOCABULARIES`) or 1/2; the mapping is recorded as ``codes``.
    - **Genes**: binary columns named like a gene symbol (upper case, or lower case with a digit) or with a
      ``mut_``/``_mut`` affix, when at least three exist (a panel); binary columns with symbol-like names
      between the panel's first and last gene join it.
    - **Sex** (``sex``, ``gender``) is categorical whatever its coding (1/2 is a label, not a number).
    - **Ids**: id-like names; otherwise a complete column with a distinct value in every row (at least 5
      rows) of text, or of whole numbers that increase or fill a range of at most twice the row count (a
      record number). A second identifier is left out.
    - **Sites**: ``site``, ``centre``, ``hospital``, ... (with an optional ``_id``/``_name``).
    - **Left out, with a note**: constant or all-missing columns, dates, free text.
    - **Post-baseline** (``baseline: false``): names about treatment, transplant, response, relapse,
      progression; edit the flag if a guess is wrong.
    """
    frame = pd.DataFrame({c: normalise_missing(data[c]) for c in data.columns}, index=data.index)
    notes: list[str] = []
    dropped: list[DroppedColumn] = []
    n_rows = len(frame)
    norms = {c: _norm(c) for c in frame.columns}

    # Binary readings first: survival and genes both need them.
    binary: dict[str, tuple[tuple[str, float], ...] | None] = {}
    for col in frame.columns:
        if norms[col] in _SEX_NAMES:
            continue
        is_binary, codes = _binary_reading(frame[col])
        if is_binary:
            binary[col] = codes
    endpoints, event_codes = _find_endpoints(frame, norms, binary, notes)
    outcome = {c for e in endpoints for c in (e.duration_col, e.event_col)}

    specs: dict[str, ColumnSpec] = {}
    id_col: str | None = None
    for col in frame.columns:
        s = frame[col].dropna()
        norm = norms[col]
        if col in outcome:
            if any(e.event_col == col for e in endpoints):
                specs[col] = ColumnSpec(col, ColumnKind.BINARY, ColumnRole.OUTCOME, codes=event_codes.get(col))
            else:
                specs[col] = ColumnSpec(col, ColumnKind.CONTINUOUS, ColumnRole.OUTCOME, lower=0.0)
            continue
        if s.empty:
            dropped.append(DroppedColumn(col, "every value is missing"))
            continue
        if _is_id_name(norm) or _looks_like_record_number(frame[col], n_rows):
            if id_col is None:
                id_col = col
                specs[col] = ColumnSpec(col, ColumnKind.CATEGORICAL, ColumnRole.ID)
                if not _is_id_name(norm):
                    notes.append(f"{col!r} holds a distinct value in every row: read as the identifier (not modelled)")
            else:
                dropped.append(DroppedColumn(col, f"a second identifier (the first is {id_col!r})"))
            continue
        if _is_site_name(norm):
            specs[col] = ColumnSpec(col, ColumnKind.CATEGORICAL, ColumnRole.SITE)
            continue
        if s.astype(str).str.strip().nunique() == 1:
            dropped.append(DroppedColumn(col, "constant (one value in every row)"))
            continue
        if norm in _SEX_NAMES:
            labels = _labels(s)
            specs[col] = ColumnSpec(col, ColumnKind.CATEGORICAL, categories=labels)
            if _is_numeric(s):
                notes.append(f"{col!r} is coded with numbers: read as categories {list(labels)}, not as a quantity")
            continue
        if col in binary:
            specs[col] = ColumnSpec(col, ColumnKind.BINARY, codes=binary[col])
            continue
        if _is_numeric(s):
            vals = pd.to_numeric(s, errors="coerce")
            finite = vals[np.isfinite(vals)]
            whole = bool(len(finite)) and bool(np.all(np.mod(finite, 1) == 0))
            specs[col] = ColumnSpec(col, ColumnKind.INTEGER if whole else ColumnKind.CONTINUOUS)
            continue
        if _looks_like_dates(s):
            dropped.append(DroppedColumn(col, "a date (not modelled; derive a duration from it to use it)"))
            continue
        labels = _labels(s)
        if len(labels) > max_categories:
            dropped.append(DroppedColumn(col, f"free text ({len(labels)} distinct labels, more than {max_categories})"))
            continue
        specs[col] = ColumnSpec(col, ColumnKind.CATEGORICAL, categories=labels)

    genes = _gene_panel(list(frame.columns), specs)
    for col in genes:
        specs[col] = ColumnSpec(col, ColumnKind.BINARY, ColumnRole.GENOMIC, codes=specs[col].codes)
    if genes:
        notes.append(f"{len(genes)} binary columns read as a gene panel (role genomic): {genes}")
    coded = [c for c, sp in specs.items() if sp.codes is not None and c not in event_codes]
    for col in coded:
        mapping = ", ".join(f"{k} -> {v:g}" for k, v in specs[col].codes or ())
        notes.append(f"{col!r} read as binary: {mapping} (edit 'codes' in the schema if the meaning is the other way)")
    post = [c for c, sp in specs.items() if sp.role in (ColumnRole.CLINICAL, ColumnRole.GENOMIC) and _post_baseline(c)]
    for col in post:
        specs[col] = replace(specs[col], baseline=False)
    if post:
        notes.append(
            f"guessed as recorded after baseline (baseline: false; never a control-arm criterion): {post}; "
            "set baseline: true in the schema for any measured at diagnosis, or drop them"
        )
    for d in dropped:
        if _post_baseline(d.name) and d.reason.startswith("a date"):
            notes.append(f"left out {d.name!r}: {d.reason}; it looks recorded after baseline")
        else:
            notes.append(f"left out {d.name!r}: {d.reason}")
    ordered = tuple(specs[c] for c in frame.columns if c in specs)
    schema = TableSchema(ordered, tuple(endpoints), name, tuple(dropped))
    for note in notes:
        log.info("schema inference: %s", note)
    return Inference(schema, tuple(notes))


# -- helpers --------------------------------------------------------------------------------------------


def _norm(col: object) -> str:
    return re.sub(r"[^a-z0-9]", "", str(col).lower())


def _tokens(col: str) -> list[str]:
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", col)
    return [t for t in re.split(r"[^a-z0-9]+", spaced.lower()) if t]


def _is_id_name(norm: str) -> bool:
    return norm in _ID_NAMES


def _is_site_name(norm: str) -> bool:
    for suffix in ("id", "name", "code", ""):
        if suffix and norm.endswith(suffix) and norm[: -len(suffix)] in _SITE_NAMES:
            return True
    return norm in _SITE_NAMES


def _is_numeric(s: pd.Series) -> bool:
    nonnull = s.dropna()
    if nonnull.empty:
        return False
    return bool(pd.to_numeric(nonnull, errors="coerce").notna().all())


def _labels(s: pd.Series) -> tuple[str, ...]:
    def fmt(v: object) -> str:
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return str(int(v))
        return str(v).strip()

    return tuple(sorted({fmt(v) for v in s.dropna()}))


def _binary_reading(s: pd.Series) -> tuple[bool, tuple[tuple[str, float], ...] | None]:
    """Whether ``s`` is binary, and its codes (``None`` for a plain 0/1 column)."""
    nonnull = s.dropna()
    if nonnull.empty:
        return False, None
    num = pd.to_numeric(nonnull, errors="coerce")
    if num.notna().all():
        values = set(np.unique(num.to_numpy(dtype="float64")).tolist())
        if values <= {0.0, 1.0}:
            return True, None
        if values == {1.0, 2.0}:
            return True, (("1", 0.0), ("2", 1.0))
        return False, None
    labels = {str(v).strip().lower() for v in nonnull}
    if len(labels) > 2:
        return False, None
    for vocab in BINARY_VOCABULARIES:
        if labels <= set(vocab) and len({vocab[x] for x in labels}) == len(labels):
            originals = sorted({str(v).strip() for v in nonnull}, key=lambda x: -vocab[x.lower()])
            return True, tuple((label, vocab[label.lower()]) for label in originals)
    return False, None


def _splits(norm: str, suffixes: Iterable[str]) -> list[str]:
    return [norm[: len(norm) - len(sfx)] for sfx in suffixes if norm.endswith(sfx)]


def _duration_stems(norm: str) -> dict[str, str | None]:
    """Every (stem -> unit) reading of a duration name: ``osmonths`` -> {"osmonths": None, "os": "months", ...}."""
    out: dict[str, str | None] = {}
    for i in range(len(norm) + 1):
        m = _DURATION_RE.match(norm[i:])
        if m:
            unit = m.group("unit")
            out.setdefault(_canon(norm[:i]), _UNIT_WORDS[unit] if unit else None)
    return out


def _canon(stem: str) -> str:
    """Generic stems (``""``, ``fu``, ``surv``, ``survival``, ``overall``) are one and the same."""
    return "" if stem in _GENERIC_STEMS else stem


def _find_endpoints(
    frame: pd.DataFrame,
    norms: dict[str, str],
    binary: dict[str, tuple[tuple[str, float], ...] | None],
    notes: list[str],
) -> tuple[list[SurvivalEndpoint], dict[str, tuple[tuple[str, float], ...] | None]]:
    numeric = [c for c in frame.columns if c not in binary and _is_numeric(frame[c])]
    durations = {c: _duration_stems(norms[c]) for c in numeric}
    endpoints: list[SurvivalEndpoint] = []
    codes: dict[str, tuple[tuple[str, float], ...] | None] = {}
    used: set[str] = set()
    for ev in frame.columns:
        if ev not in binary or ev in used:
            continue
        for sfx in sorted(_EVENT_SUFFIXES, key=len, reverse=True):
            if not norms[ev].endswith(sfx):
                continue
            stem = _canon(norms[ev][: len(norms[ev]) - len(sfx)])
            match = next((d for d in numeric if d not in used and d != ev and stem in durations[d]), None)
            if match is None:
                continue
            unit = durations[match][stem]
            ep_codes = binary[ev]
            if sfx in _CENSOR_SUFFIXES and ep_codes is None:
                ep_codes = (("0", 1.0), ("1", 0.0))
                notes.append(f"{ev!r} read as a censoring flag (1 = censored): the event is its complement; "
                             "edit its 'codes' if 1 means the event")
            elif ep_codes is not None:
                mapping = ", ".join(f"{k} -> {v:g}" for k, v in ep_codes)
                notes.append(f"event column {ev!r} read as {mapping} (1 = event)")
            if unit is None:
                unit = _guess_unit(frame[match])
                notes.append(f"time unit of {match!r} not in its name: guessed as {unit} from the size of its "
                             "values; set time_unit in the schema if wrong")
            label = str(stem).upper() if stem not in _GENERIC_STEMS else "survival"
            taken = {e.name for e in endpoints}
            while label in taken:
                label += "_2"
            endpoints.append(SurvivalEndpoint(label, match, ev, unit))
            codes[ev] = ep_codes
            used.update({match, ev})
            break
    if endpoints:
        found = ", ".join(f"{e.name} ({e.duration_col} in {e.time_unit}, {e.event_col})" for e in endpoints)
        notes.insert(0, f"survival endpoints: {found}")
    return endpoints, codes


def _guess_unit(s: pd.Series) -> str:
    vals = pd.to_numeric(s.dropna(), errors="coerce")
    vals = vals[np.isfinite(vals)]
    median = float(vals.median()) if len(vals) else 0.0
    if median <= 10:
        return "years"
    if median <= 120:
        return "months"
    return "days"


def _looks_like_record_number(s: pd.Series, n_rows: int) -> bool:
    nonnull = s.dropna()
    if n_rows < 5 or len(nonnull) != n_rows or nonnull.astype(str).str.strip().nunique() != n_rows:
        return False
    num = pd.to_numeric(nonnull, errors="coerce")
    if num.isna().all():
        text = nonnull.astype(str).str.strip()
        # text ids (P001, 2019-0042-A) are single short tokens; dates and free text are not ids
        return not _looks_like_dates(nonnull) and bool(text.str.len().max() <= 40) and not text.str.contains(r"\s").any()
    if num.isna().any() or not np.all(np.isfinite(num)) or not np.all(np.mod(num, 1) == 0):
        return False
    increasing = bool(num.is_monotonic_increasing)
    compact = float(num.max() - num.min()) + 1 <= 2 * n_rows
    return increasing or compact


def _looks_like_dates(s: pd.Series) -> bool:
    text = s.dropna().astype(str).str.strip()
    # a date has a day, a month and a year: at least 6 characters ("1-2" or "3/4" are ranges or ratios)
    if text.empty or not text.str.contains(r"\d").all() or not text.str.contains(r"[-/.]").all():
        return False
    if int(text.str.len().min()) < 6:
        return False
    if pd.to_numeric(text, errors="coerce").notna().all():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(text, errors="coerce", format="mixed")
    return float(parsed.notna().mean()) >= 0.9


def _gene_symbol(col: str) -> tuple[str, bool]:
    """The gene part of a column name and whether an affix (``mut_``, ``_mut``) marked it."""
    m = _GENE_AFFIX.match(col)
    if m:
        return (m.group("g") or m.group("h")), True
    return col, False


def _gene_panel(columns: list[str], specs: dict[str, ColumnSpec]) -> list[str]:
    candidates = [c for c in columns if c in specs and specs[c].kind is ColumnKind.BINARY
                  and specs[c].role is ColumnRole.CLINICAL]
    strong: list[str] = []
    for col in candidates:
        symbol, affixed = _gene_symbol(col)
        if not _GENE_SYMBOL.match(symbol):
            continue
        if affixed or symbol == symbol.upper() or any(ch.isdigit() for ch in symbol):
            strong.append(col)
    if len(strong) < 3:
        return []
    first, last = columns.index(strong[0]), columns.index(strong[-1])
    panel = set(strong)
    for col in candidates:
        if first < columns.index(col) < last and _GENE_SYMBOL.match(_gene_symbol(col)[0]):
            panel.add(col)
    return [c for c in columns if c in panel]


def _post_baseline(col: str) -> bool:
    norm = _norm(col)
    return any(stem in norm for stem in _POST_STEMS) or any(t in _POST_TOKENS for t in _tokens(col))
