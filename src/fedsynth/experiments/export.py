"""Release a synthetic cohort that explains itself: ``fedsynth export`` (CSV, data dictionary, data card, teaching kit).

An export reads a model folder or a run directory, samples ``n`` rows, scores them against the real rows the
model was trained on (a simulated run's pooled training rows and holdout, reloaded from its config; a ``fit``
folder's seeded split, reloaded from its manifest; or files the caller gives), passes them through the release
gate (:mod:`fedsynth.evaluation.gate`) and only then writes, into one folder::

    synthetic.csv             the rows, with a synthetic_id column and no real identifier
    data_dictionary.csv/.json one line per column of synthetic.csv
    card.html, card.md, card.json   the data card (what it is, how it was made, figures, uses, licence, citation)
    train.csv, test.csv       a seeded split of synthetic.csv            (purpose "teaching")
    survival_analysis.ipynb   a notebook that loads them and reproduces one survival analysis (lifelines)

The figures in the card are those of ``fedsynth evaluate --real TRAIN --synthetic synthetic.csv --holdout
HOLDOUT --seed SEED`` on the same rows: the export scores the CSV it wrote, read back the way ``evaluate`` reads
it. Reports and cards hold aggregates only; real rows are read to score and never written.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsynth._io import atomic_write_text
from fedsynth.cohort.io import write_csv
from fedsynth.cohort.schema import ColumnKind, ColumnRole, ColumnSpec, TableSchema
from fedsynth.errors import FedsynthError, Problem, ValidationError
from fedsynth.evaluation.gate import GateResult, GateThresholds, gate_from_privacy

log = logging.getLogger(__name__)

#: The identifier column every export adds (a row number; it links to no patient).
SYNTHETIC_ID = "synthetic_id"
#: Purposes an export knows (each decides which extra files are written).
PURPOSES = ("teaching",)
#: Share of the export that goes to ``test.csv`` in a teaching export.
TEST_FRACTION = 0.2


class ReleaseRefusedError(FedsynthError):
    """The release gate flagged the synthetic cohort and no reason to release it anyway was given."""


# -- where the model came from ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportSource:
    """A model folder and what surrounds it: a run directory (config, manifest, report) or a ``fit`` folder.

    ``kind`` is ``"run"`` (a run directory with ``config.yaml``), ``"fit"`` (a ``fedsynth fit`` folder with its
    ``manifest.json``) or ``"model"`` (a bare model folder: provenance from ``generator.json`` only).
    """

    kind: str
    model_dir: Path
    base_dir: Path
    manifest: Mapping[str, Any] = field(default_factory=dict)
    report: Mapping[str, Any] | None = None

    @property
    def cohort_name(self) -> str | None:
        data = self.manifest.get("data") or {}
        name = data.get("cohort")
        return str(name) if name else None


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        log.warning("%s could not be read as JSON; ignored", path.name)
        return None
    return value if isinstance(value, dict) else None


def resolve_source(path: str | Path) -> ExportSource:
    """Find the model and its provenance from ``path``: a run directory, a ``fit`` folder or a model folder.

    Raises
    ------
    ValidationError
        When ``path`` holds no saved model (a run whose strategy saved none, a wrong folder).
    """
    p = Path(path)
    if (p / "generator.json").is_file():
        model_dir, base = p, p.parent
    elif (p / "model" / "generator.json").is_file():
        model_dir, base = p / "model", p
    else:
        found = "does not exist" if not p.exists() else "holds no saved model (no generator.json, no model/generator.json)"
        raise ValidationError("Export source", [Problem(
            str(p), found, "a run directory (reports/<run-id>/), a 'fedsynth fit' output folder, or a model/ folder",
            "runs of the local baseline save one model per site (give model/<site>); sd_sharing without refit saves none",
        )])
    manifest = _read_json(base / "manifest.json") or {}
    if (base / "config.yaml").is_file():
        kind = "run"
    elif manifest.get("kind") == "fit":
        kind = "fit"
    else:
        kind, manifest = "model", {}
    report = _read_json(base / "report.json") if kind != "model" else None
    return ExportSource(kind, model_dir, base, manifest, report)


def write_fit_manifest(
    out: str | Path,
    *,
    cohort: Any,
    generator: str,
    params: Mapping[str, Any],
    seed: int,
    holdout_fraction: float,
    n_train: int,
    n_holdout: int,
    schema_file: str | Path | None = None,
    fit_seconds: float | None = None,
) -> Path:
    """Write ``manifest.json`` of a ``fedsynth fit`` folder: enough to reload its split (no rows, no values).

    ``cohort`` is the loaded :class:`fedsynth.cohort.datasets.Cohort`. A registered cohort is recorded by name,
    any other CSV by its absolute path (plus the schema file the fit used, if any).
    """
    from fedsynth._io import versions as _versions
    from fedsynth.cohort.datasets import NAMED_COHORTS

    named = cohort.name in NAMED_COHORTS
    manifest = {
        "kind": "fit",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
        "seeds": {"seed": int(seed)},
        "data": {
            "cohort": cohort.name,
            "source": None if named else str(Path(cohort.source).resolve()),
            "schema_file": None if schema_file is None else str(Path(schema_file).resolve()),
            "fingerprint": cohort.fingerprint(),
            "n_rows": len(cohort.data),
            "n_train": int(n_train),
            "n_holdout": int(n_holdout),
            "holdout_fraction": float(holdout_fraction),
        },
        "sites": [{"name": "pooled", "n_rows": int(n_train), "lacks": []}],
        "strategy": {"name": "centralized", "engine": "in process", "generator": generator,
                     "generator_params": dict(params), "rounds": 1, "random_state": int(seed)},
        "timings": {} if fit_seconds is None else {"fit": round(float(fit_seconds), 3)},
    }
    path = Path(out) / "manifest.json"
    atomic_write_text(path, json.dumps(manifest, indent=2, default=str))
    return path


def training_rows(source: ExportSource, *, data_dir: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The real training rows and holdout behind ``source``, reloaded (reports never store rows).

    A run's config is partitioned again with its seed (the pooled training rows of every site, and the
    holdout); a ``fit`` folder's cohort is split again with its seed and holdout fraction. The cohort's
    fingerprint must equal the one recorded, so that figures are never computed against other data.

    Raises
    ------
    ValidationError
        For a bare model folder (give ``--real`` and ``--holdout``), or when the data changed since training.
    """
    from fedsynth.cohort.datasets import load

    recorded = (source.manifest.get("data") or {}).get("fingerprint")
    if source.kind == "run":
        from fedsynth.experiments.config import load_config
        from fedsynth.experiments.run import load_partition

        config = load_config(source.base_dir / "config.yaml")
        if data_dir is not None:
            config = config.model_copy(update={"cohort": config.cohort.model_copy(update={"data_dir": str(data_dir)})})
        cohort, part = load_partition(config)
        train, holdout = part.train, part.holdout
    elif source.kind == "fit":
        from fedsynth.cohort.partition import train_holdout_split
        from fedsynth.cohort.schema import TableSchema as _Schema

        d = source.manifest["data"]
        schema = _Schema.from_yaml(d["schema_file"]) if d.get("schema_file") else None
        cohort = load(d.get("source") or d["cohort"], data_dir_=data_dir, schema=schema)
        train, holdout = train_holdout_split(
            cohort.data, cohort.schema, holdout_fraction=float(d["holdout_fraction"]),
            random_state=int(source.manifest["seeds"]["seed"]),
        )
    else:
        raise ValidationError("Export", [Problem(
            str(source.model_dir), "is a bare model folder: fedsynth cannot tell which real rows it was trained on",
            fix="give --real TRAIN.csv and --holdout HOLDOUT.csv (the rows it was trained on and rows it never saw)",
        )])
    if recorded and cohort.fingerprint() != recorded:
        raise ValidationError("Export", [Problem(
            f"cohort {cohort.name!r}", "differs from the data the model was trained on (fingerprint mismatch)",
            fix="point --data-dir at the original data, or give --real and --holdout",
        )])
    return train, holdout


# -- the data dictionary -----------------------------------------------------------------------------------------


def split_description(spec: ColumnSpec, time_unit: str | None = None) -> tuple[str, str]:
    """``(meaning, unit)`` of a column from its description.

    Convention of :attr:`ColumnSpec.description` for numeric columns: ``"<meaning>, <unit>"``, optionally
    followed by a note in parentheses (``"white blood cells, x10^9/L (truncated at 13 by inclusion)"`` gives
    ``("white blood cells (truncated at 13 by inclusion)", "x10^9/L")``). Categorical and binary columns have no
    unit. A survival duration takes its endpoint's ``time_unit`` whatever its description says.
    """
    text = spec.description.strip()
    unit = ""
    meaning = text
    if spec.is_numeric and ", " in text:
        head, _, tail = text.rpartition(", ")
        note = ""
        if " (" in tail and tail.endswith(")"):
            tail, _, rest = tail.partition(" (")
            note = f" ({rest}"
        meaning, unit = head + note, tail
    if time_unit:
        unit = time_unit
    return meaning, unit


def data_dictionary(data: pd.DataFrame, schema: TableSchema) -> list[dict[str, Any]]:
    """One entry per column of ``data`` (an export): column, meaning, unit, kind, role, categories, missing rate.

    Parameters
    ----------
    data : DataFrame, shape (n_rows, n_columns)
        The exported table (``synthetic_id`` first, then the schema's data columns).
    schema : TableSchema
        The schema the generator was trained with: meanings and units come from its column descriptions and
        its endpoints' ``time_unit``.

    Returns
    -------
    list of dict
        ``missing_rate`` is the share of missing values in ``data`` (0-1); ``categories`` lists the labels of a
        categorical column (the schema's, else those in the data) and ``["0", "1"]`` for a binary one.
    """
    durations = {ep.duration_col: ep for ep in schema.endpoints}
    events = {ep.event_col: ep for ep in schema.endpoints}
    out: list[dict[str, Any]] = []
    for col in data.columns:
        if col == SYNTHETIC_ID:
            out.append({"column": col, "meaning": "row number of this synthetic file; it identifies no patient",
                        "unit": "", "kind": "identifier", "role": "id", "categories": None, "missing_rate": 0.0,
                        "endpoint": None, "derived": None})
            continue
        spec = schema[col]
        ep = durations.get(col)
        meaning, unit = split_description(spec, ep.time_unit if ep is not None else None)
        if spec.kind is ColumnKind.CATEGORICAL:
            cats: list[str] | None = list(spec.categories) if spec.categories else sorted(
                str(v) for v in data[col].dropna().unique())
        elif spec.kind is ColumnKind.BINARY:
            cats = ["0", "1"]
        else:
            cats = None
        endpoint = None
        if ep is not None:
            endpoint = f"{ep.name} time"
        elif col in events:
            endpoint = f"{events[col].name} event"
        out.append({
            "column": col, "meaning": meaning or "(no description in the schema)", "unit": unit,
            "kind": spec.kind.value, "role": spec.role.value, "categories": cats,
            "missing_rate": float(data[col].isna().mean()) if len(data) else 0.0,
            "endpoint": endpoint, "derived": spec.derived,
        })
    return out


def for_release(synthetic: pd.DataFrame, schema: TableSchema) -> pd.DataFrame:
    """The released table: ``synthetic_id`` first, then the schema's data columns; id and site columns dropped."""
    keep = [c for c in schema.data_columns if c in synthetic.columns
            and schema[c].role not in (ColumnRole.ID, ColumnRole.SITE)]
    width = max(len(str(len(synthetic))), 4)
    out = synthetic[keep].reset_index(drop=True)
    out.insert(0, SYNTHETIC_ID, [f"S{i + 1:0{width}d}" for i in range(len(out))])
    return out


def read_release(path: Path, schema: TableSchema) -> pd.DataFrame:
    """Read a released CSV back the way ``fedsynth evaluate`` reads its inputs (data columns through
    :func:`~fedsynth.cohort.validation.conform`, unusable columns kept, 0/1 canonical), so that the card's
    figures are those of ``evaluate`` on this file."""
    from fedsynth.cohort.validation import conform, read_csv_checked

    data_schema = schema.select(schema.data_columns)
    raw = read_csv_checked(path)
    keep = [c for c in raw.columns if c in data_schema and data_schema[c].derived is None]
    done = conform(raw[keep], data_schema, subject=f"file {path.name!r}", unusable="keep", canonical_01=True)
    return done.data


# -- the teaching kit ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TeachingAnalysis:
    """The survival analysis the teaching notebook reproduces, chosen from the schema and the export."""

    endpoint: str
    duration_col: str
    event_col: str
    time_unit: str
    group_col: str
    group_meaning: str
    covariates: tuple[str, ...]
    logrank_p: float


def choose_analysis(data: pd.DataFrame, schema: TableSchema, *, min_share: float = 0.05,
                    min_events: int = 10) -> TeachingAnalysis | None:
    """Pick the binary column whose groups differ most in survival (smallest log-rank p) on ``data``.

    Candidates are binary columns that are not an endpoint's event: genes (role ``genomic``) first, clinical
    binaries only when no gene qualifies. A candidate needs each group to hold ``min_share`` of the rows with a
    known value and ``min_events`` events. The Cox model adds up to two numeric clinical columns (not derived)
    that are missing in at most 10% of rows, in schema order. Chosen by role and data, never by column name.
    Returns ``None`` when the schema has no endpoint or no binary column qualifies.
    """
    from lifelines.statistics import logrank_test

    eps = [ep for ep in schema.endpoints if ep.duration_col in data.columns and ep.event_col in data.columns]
    if not eps:
        return None
    ep = eps[0]
    events = {e.event_col for e in schema.endpoints}
    binaries = [c for c in schema.data_columns if c in data.columns and schema[c].kind is ColumnKind.BINARY
                and c not in events]
    genes = [c for c in binaries if schema[c].role is ColumnRole.GENOMIC]
    clinical = [c for c in binaries if schema[c].role is ColumnRole.CLINICAL]
    best: tuple[float, str] | None = None
    for pool in (genes, clinical):
        for col in pool:
            rows = data[[ep.duration_col, ep.event_col, col]].dropna()
            g = rows[col] == 1
            if min(g.mean(), 1 - g.mean()) < min_share or min(rows.loc[g, ep.event_col].sum(),
                                                               rows.loc[~g, ep.event_col].sum()) < min_events:
                continue
            res = logrank_test(rows.loc[g, ep.duration_col], rows.loc[~g, ep.duration_col],
                               rows.loc[g, ep.event_col], rows.loc[~g, ep.event_col])
            p = float(res.p_value)
            if best is None or p < best[0]:
                best = (p, col)
        if best is not None:
            break
    if best is None:
        return None
    covs = [c for c in schema.clinical_columns if c in data.columns and schema[c].is_numeric
            and schema[c].derived is None and data[c].isna().mean() <= 0.10][:2]
    meaning, _ = split_description(schema[best[1]])
    return TeachingAnalysis(ep.name, ep.duration_col, ep.event_col, ep.time_unit, best[1], meaning or best[1],
                            tuple(covs), best[0])


def teaching_notebook(analysis: TeachingAnalysis | None, *, train_csv: str = "train.csv",
                      test_csv: str = "test.csv") -> Any:
    """A short Jupyter notebook (nbformat v4) that loads the split and reproduces one survival analysis:
    Kaplan-Meier curves by ``analysis.group_col`` with a log-rank test, then a Cox model (lifelines)."""
    import importlib

    # nbformat ships no type hints: one Any handle keeps the calls below strict-clean.
    nbv4: Any = importlib.import_module("nbformat.v4")
    new_code_cell, new_markdown_cell, new_notebook = nbv4.new_code_cell, nbv4.new_markdown_cell, nbv4.new_notebook

    cells = [new_markdown_cell(
        "# A survival analysis on a synthetic cohort\n\n"
        "**Every patient in these files is synthetic — none is a real person.** The rows were drawn from a model "
        "trained on a real cohort; they keep its patterns (see the data card, `card.html`), not its patients.\n\n"
        f"`{train_csv}` and `{test_csv}` are a fixed random split of `synthetic.csv`: fit on the first, check on "
        "the second."
    ), new_code_cell(
        "import pandas as pd\n"
        "import matplotlib.pyplot as plt\n"
        "from lifelines import CoxPHFitter, KaplanMeierFitter\n"
        "from lifelines.statistics import logrank_test\n\n"
        f"train = pd.read_csv({train_csv!r})\n"
        f"test = pd.read_csv({test_csv!r})\n"
        "print(len(train), 'training rows,', len(test), 'test rows')\n"
        "train.head()"
    )]
    if analysis is None:
        cells.append(new_markdown_cell(
            "This cohort has no survival endpoint with a binary column that splits it into two groups with "
            "enough events, so no survival analysis is set up here. Explore the columns with "
            "`train.describe()` and the data dictionary."))
        return new_notebook(cells=cells)
    a = analysis
    cells += [new_markdown_cell(
        f"## Kaplan-Meier curves: {a.endpoint} by {a.group_col}\n\n"
        f"`{a.duration_col}` is the time ({a.time_unit}) and `{a.event_col}` says whether the event happened "
        f"(1) or the patient was censored (0). `{a.group_col}`: {a.group_meaning}. Rows with a missing value "
        "in these columns are left out."
    ), new_code_cell(
        f"time, event, group = {a.duration_col!r}, {a.event_col!r}, {a.group_col!r}\n"
        "km_rows = train[[time, event, group]].dropna()\n"
        "fig, ax = plt.subplots(figsize=(7, 4.5))\n"
        "for value, rows in km_rows.groupby(group):\n"
        "    KaplanMeierFitter().fit(rows[time], rows[event], label=f'{group} = {int(value)} (n={len(rows)})')"
        ".plot_survival_function(ax=ax)\n"
        f"ax.set_xlabel('time ({a.time_unit})')\n"
        "ax.set_ylabel('share without the event')\n"
        "plt.show()\n"
        "one, zero = km_rows[km_rows[group] == 1], km_rows[km_rows[group] == 0]\n"
        "result = logrank_test(one[time], zero[time], one[event], zero[event])\n"
        "print(f'log-rank test: p = {result.p_value:.2g}')"
    ), new_markdown_cell(
        "## A Cox proportional-hazards model\n\n"
        f"The hazard ratio of `{a.group_col}`"
        + (f", adjusted for {', '.join(f'`{c}`' for c in a.covariates)}" if a.covariates else "")
        + ". A hazard ratio above 1 means the event comes sooner. The concordance index on the test rows "
        "says how well the model ranks patients it was not fitted on (0.5 = chance)."
    ), new_code_cell(
        f"columns = [time, event, group] + {list(a.covariates)!r}\n"
        "cox = CoxPHFitter()\n"
        "cox.fit(train[columns].dropna(), duration_col=time, event_col=event)\n"
        "cox.print_summary(decimals=3)\n"
        "print('concordance on the test rows:', round(cox.score(test[columns].dropna(), "
        "scoring_method='concordance_index'), 3))"
    ), new_markdown_cell(
        "## To discuss\n\n"
        "- Is the effect of the group as strong here as in the published analysis of the real cohort? "
        "The data card lists the effects this synthetic cohort is known to distort.\n"
        "- Why can't a conclusion drawn from synthetic patients replace one drawn from real patients?"
    )]
    return new_notebook(cells=cells)


def teaching_split(data: pd.DataFrame, *, random_state: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded train/test split of an export (``TEST_FRACTION`` of the rows to test, row order kept)."""
    rng = np.random.default_rng(random_state)
    n_test = round(len(data) * TEST_FRACTION)
    test_idx = np.sort(rng.permutation(len(data))[:n_test])
    mask = np.zeros(len(data), dtype=bool)
    mask[test_idx] = True
    return data.loc[~mask].reset_index(drop=True), data.loc[mask].reset_index(drop=True)


# -- the export --------------------------------------------------------------------------------------------------


@dataclass
class ExportResult:
    """What an export wrote and the gate's decision."""

    out_dir: Path
    files: dict[str, Path]
    gate: GateResult
    card: dict[str, Any]


def export_cohort(
    source: ExportSource,
    *,
    n_samples: int,
    out_dir: str | Path,
    purpose: str = "teaching",
    random_state: int = 0,
    real_data: pd.DataFrame | None = None,
    holdout_data: pd.DataFrame | None = None,
    real_files: Sequence[str] | None = None,
    thresholds: GateThresholds | None = None,
    allow_flagged: str | None = None,
    licence: str | None = None,
    attribution: str | None = None,
    data_dir: str | Path | None = None,
) -> ExportResult:
    """Sample, score, gate and write a released synthetic cohort (see the module docstring for the files).

    Parameters
    ----------
    source : ExportSource
        From :func:`resolve_source`.
    n_samples : int
        Rows to release (>= 10).
    out_dir : path
        Folder to write; created. Files are written only when the gate passes (or is overridden).
    purpose : {"teaching"}
    random_state : int
        Seeds the sample, the evaluation (as ``fedsynth evaluate --seed``) and the teaching split.
    real_data, holdout_data : DataFrame, optional
        The real rows trained on and rows never seen (both or neither); default: reloaded by
        :func:`training_rows`.
    real_files : sequence of str, optional
        Names of the files ``real_data``/``holdout_data`` came from, for the card.
    thresholds : GateThresholds, optional
    allow_flagged : str, optional
        Release a flagged cohort anyway; this reason is written in the card.
    licence, attribution : str, optional
        Licence and attribution of a source cohort fedsynth does not know (a registered cohort carries its own).
    data_dir : path, optional
        Where named cohorts live, when reloading the training rows.

    Raises
    ------
    ReleaseRefusedError
        When the gate flags the cohort and ``allow_flagged`` is not given; nothing is written.
    ValidationError
        For bad arguments (all listed at once).
    """
    from fedsynth.evaluation import evaluate
    from fedsynth.experiments import card as card_mod
    from fedsynth.generators.base import load_generator

    problems = []
    if purpose not in PURPOSES:
        problems.append(Problem("purpose", f"is {purpose!r}", ", ".join(PURPOSES)))
    if n_samples < 10:
        problems.append(Problem("n", f"is {n_samples}", "at least 10 rows"))
    if (real_data is None) != (holdout_data is None):
        problems.append(Problem("real data", "only one of the training rows and the holdout was given",
                                fix="give both --real and --holdout, or neither"))
    if allow_flagged is not None and not allow_flagged.strip():
        problems.append(Problem("--allow-flagged", "is empty", fix="say why this cohort may be released anyway"))
    licence_info = card_mod.source_licence(_cohort_name(source, None), licence=licence, attribution=attribution,
                                           problems=problems)
    if problems:
        raise ValidationError("Export", problems)

    gen = load_generator(source.model_dir)
    schema = gen.schema
    if real_data is None or holdout_data is None:
        real_data, holdout_data = training_rows(source, data_dir=data_dir)
        real_origin = f"reloaded from the {'run' if source.kind == 'run' else 'fit'}'s configuration and seed"
    else:
        real_origin = "given as files: " + ", ".join(real_files or ["(frames)"])
    out = Path(out_dir)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = out / ".export.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        synthetic = for_release(gen.sample(n_samples, random_state=random_state), schema)
        write_csv(synthetic, staging / "synthetic.csv", schema)
        scored = read_release(staging / "synthetic.csv", schema)
        report = evaluate(real_data, scored, schema, holdout_data=holdout_data, random_state=random_state)
        rep = report.to_dict()
        gate = gate_from_privacy(rep["privacy"], thresholds)
        if not gate.passed and allow_flagged is None:
            raise ReleaseRefusedError(
                "The synthetic cohort failed the release gate, so nothing was written: " + gate.explain() + ".\n"
                "Draw again with another --seed, retrain the model, or, if you have a reason to release it "
                "anyway, pass --allow-flagged \"REASON\" (the reason is printed in the data card)."
            )
        dictionary = data_dictionary(synthetic, schema)
        files = {"synthetic": out / "synthetic.csv", "dictionary_csv": out / "data_dictionary.csv",
                 "dictionary_json": out / "data_dictionary.json", "card_json": out / "card.json",
                 "card_md": out / "card.md", "card_html": out / "card.html"}
        analysis = None
        if purpose == "teaching":
            train, test = teaching_split(synthetic, random_state=random_state)
            write_csv(train, staging / "train.csv", schema)
            write_csv(test, staging / "test.csv", schema)
            analysis = choose_analysis(train, schema)
            import importlib

            nbformat: Any = importlib.import_module("nbformat")
            nbformat.write(teaching_notebook(analysis), str(staging / "survival_analysis.ipynb"))
            files.update(train=out / "train.csv", test=out / "test.csv", notebook=out / "survival_analysis.ipynb")
        card = card_mod.build_card(
            source, gen, rep, gate, dictionary, licence_info, n_samples=len(synthetic), purpose=purpose,
            random_state=random_state, allow_flagged=allow_flagged, real_origin=real_origin,
            analysis=analysis, files={k: v.name for k, v in files.items()},
        )
        pd.DataFrame([{**d, "categories": "" if not d["categories"] else "; ".join(d["categories"])}
                      for d in dictionary]).to_csv(staging / "data_dictionary.csv", index=False)
        atomic_write_text(staging / "data_dictionary.json", json.dumps(dictionary, indent=2))
        atomic_write_text(staging / "card.json", json.dumps(card, indent=2, default=str))
        atomic_write_text(staging / "card.md", card_mod.render_markdown(card))
        atomic_write_text(staging / "card.html", card_mod.render_html(card))
        for path in files.values():
            (staging / path.name).replace(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(out.iterdir()):
            out.rmdir()  # a refused export leaves no trace
    log.info("exported %d synthetic rows to %s (gate %s)", len(synthetic), out,
             "passed" if gate.passed else "flagged, released with a reason")
    return ExportResult(out, files, gate, card)


def _cohort_name(source: ExportSource, schema: TableSchema | None) -> str | None:
    if source.cohort_name:
        return source.cohort_name
    meta = _read_json(source.model_dir / "generator.json") or {}
    name = (meta.get("schema") or {}).get("name")
    return str(name) if name else (schema.name if schema is not None else None)
