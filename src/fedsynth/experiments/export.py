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

import pandas as pd

from fedsynth._io import atomic_write_text
from fedsynth.cohort.io import write_csv
from fedsynth.cohort.schema import ColumnRole, TableSchema
from fedsynth.errors import FedsynthError, Problem, ValidationError
from fedsynth.evaluation.gate import GateResult, GateThresholds, gate_from_privacy
from fedsynth.experiments.dictionary import SYNTHETIC_ID, data_dictionary, split_description
from fedsynth.experiments.teaching import (
    TEST_FRACTION,
    TeachingAnalysis,
    choose_analysis,
    teaching_notebook,
    teaching_split,
)

__all__ = [
    "PURPOSES",
    "SYNTHETIC_ID",
    "TEST_FRACTION",
    "ExportResult",
    "ExportSource",
    "ReleaseRefusedError",
    "TeachingAnalysis",
    "choose_analysis",
    "data_dictionary",
    "export_cohort",
    "for_release",
    "read_release",
    "resolve_source",
    "split_description",
    "teaching_notebook",
    "teaching_split",
    "training_rows",
    "write_fit_manifest",
]

log = logging.getLogger(__name__)

#: Purposes an export knows (each decides which extra files are written).
PURPOSES = ("teaching",)


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


# -- the released table ----------------------------------------------------------------------------------------


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
    from fedsynth.generators import load_generator

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
