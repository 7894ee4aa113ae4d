"""A run's control arms (``evaluation.arms``): drawn from its final model by the code ``fedsynth arm`` runs, judged
against the real eligible training patients, and written to ``<run>/arms/<name>/``."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fedsynth.cohort.conditions import check_sampling_inputs, domain_limits
from fedsynth.cohort.criteria import ArmCriteria, read_criteria
from fedsynth.cohort.schema import TableSchema
from fedsynth.errors import FedsynthError, Problem, ValidationError
from fedsynth.experiments.arm import SMALLEST_RELEASED_COUNT
from fedsynth.experiments.config import ArmConfig, ExperimentConfig

log = logging.getLogger(__name__)

#: What a run's arms are judged against, as each arm report and report.html say it.
REFERENCE_LABEL = "real eligible training patients"
REFERENCE_SOURCE = ("the training rows that meet the criteria, pooled over the sites; only a simulated run holds "
                    "them (a deployed coordinator sees no row)")

#: The files of an arm folder (what ``fedsynth arm --out`` writes); an arm is finished when all are there.
ARM_FILES = {"csv": "arm.csv", "card": "arm.card.json", "json": "arm_report.json", "html": "arm_report.html"}

#: ``progress(event, payload)``, as :data:`fedsynth.experiments.run.Progress`.
Progress = Callable[[str, Mapping[str, Any]], None]


@dataclass(frozen=True)
class PlannedArm:
    """An entry of ``evaluation.arms`` whose criteria file was read and checked against the run's schema."""

    config: ArmConfig
    criteria: ArmCriteria

    @property
    def name(self) -> str:
        return self.config.name


def plan_arms(config: ExperimentConfig, schema: TableSchema) -> list[PlannedArm]:
    """Read every criteria file of ``evaluation.arms`` and check it against ``schema``, before anything trains.

    Parameters
    ----------
    config : ExperimentConfig
    schema : TableSchema
        The cohort's schema (derived columns included).

    Returns
    -------
    list of PlannedArm
        In the config's order; empty when the config names no arm.

    Raises
    ------
    ValidationError
        Listing every problem of every arm at once: a missing or unreadable file, a malformed one, a criterion on
        a column recorded after baseline, an unknown column or label, an expression that does not parse (the
        checks of ``fedsynth arm``; those that need the trained model's counts come when the arm is drawn).
    """
    problems: list[Problem] = []
    planned: list[PlannedArm] = []
    for i, arm in enumerate(config.evaluation.arms):
        where = f"evaluation.arms[{i}] ({arm.criteria})"
        if not Path(arm.criteria).is_file():
            problems.append(Problem(where, "no such file", "an eligibility-criteria YAML",
                                    "paths are relative to the working directory; examples are in configs/arms/"))
            continue
        try:
            criteria = read_criteria(arm.criteria, schema)
            check_sampling_inputs(criteria.condition_items(), criteria.where(schema), schema)
        except ValidationError as exc:
            problems += [Problem(f"{where} {p.where}", p.found, p.valid, p.fix) for p in exc.problems]
            continue
        planned.append(PlannedArm(arm, criteria))
    if problems:
        raise ValidationError(f"Control arms (evaluation.arms) of config {config.name}", problems)
    return planned


def model_digest(model_dir: Path) -> str:
    """sha256 over the model folder's files (names and bytes): the same digest means the same model."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
        h.update(str(path.relative_to(model_dir)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def draw_run_arms(
    planned: Sequence[PlannedArm],
    run_dir: str | Path,
    *,
    real_data: pd.DataFrame | None,
    random_state: int,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Draw each planned arm from ``<run_dir>/model`` and write ``<run_dir>/arms/<name>/``.

    Each arm is what ``fedsynth arm CRITERIA <run_dir> --n N --seed random_state --draw DRAW --reference
    ELIGIBLE.csv`` gives: the same model, request, rows and report, in the same files (:data:`ARM_FILES`). An arm a
    previous attempt of this run finished — same criteria, patients, seed, draw method and model — is kept as it
    is, so a resumed run draws only the arms it lacks; an arm written before draw methods existed (fedsynth before
    balanced draws) is drawn again, balanced unless the config says ``draw: independent``. An arm that cannot be
    drawn (its time bound passed, no model was saved) is reported with its error and does not cost the run.

    Parameters
    ----------
    planned : sequence of PlannedArm
        From :func:`plan_arms`.
    run_dir : path
        The run directory (its ``model/`` is read).
    real_data : DataFrame or None
        The real training rows. The reference of an arm is those that meet its criteria
        (:data:`REFERENCE_SOURCE`); fewer than :data:`~fedsynth.experiments.arm.SMALLEST_RELEASED_COUNT`
        of them are not shown (their curve would show single patients). ``None``: no reference.
    random_state : int
        The seed of every arm (the run's seed).
    progress : callable, optional
        Receives a ``"phase"`` event per arm drawn.

    Returns
    -------
    list of dict
        Per arm: ``name``, ``criteria_file``, ``n``, ``dir`` and ``files`` (relative to ``run_dir``), ``kept``
        (finished by an earlier attempt), ``error`` (None, or why it was not drawn) and ``report`` (the arm
        report, :func:`fedsynth.evaluation.arm.arm_report`; None on error). Aggregates only.
    """
    from fedsynth.strategies.records import scrub_error

    run_dir = Path(run_dir)
    model_dir = run_dir / "model"
    digest = model_digest(model_dir) if model_dir.is_dir() else None
    emit: Progress = progress or (lambda event, payload: None)
    out: list[dict[str, Any]] = []
    gen: Any = None
    for arm in planned:
        folder = run_dir / "arms" / arm.name
        entry: dict[str, Any] = {
            "name": arm.name, "title": arm.criteria.name, "criteria_file": arm.config.criteria, "n": arm.config.n,
            "dir": str(folder.relative_to(run_dir)),
            "files": {k: str((folder / f).relative_to(run_dir)) for k, f in ARM_FILES.items()},
            "kept": False, "error": None, "report": None,
        }
        out.append(entry)
        if digest is None:
            entry["error"] = "the run saved no global model to draw an arm from"
            continue
        key = {"criteria_file": arm.config.criteria, "n": arm.config.n, "seed": random_state, "model_sha256": digest,
               "draw": arm.config.draw}
        kept = _finished(folder, key, arm.criteria)
        if kept is not None:
            log.info("control arm %s: kept from an earlier attempt of this run", arm.name)
            entry.update(kept=True, report=kept)
            continue
        emit("phase", {"phase": f"control arm: {arm.name}"})
        try:
            if gen is None:
                from fedsynth.generators import load_generator

                gen = load_generator(model_dir)
            entry["report"] = _draw(arm, gen, folder, model_dir, key, real_data, random_state)
        except FedsynthError as exc:  # said on purpose (time bound, checks against the model): no data in it
            entry["error"] = str(exc)
            log.warning("control arm %s was not drawn: %s", arm.name, entry["error"])
        except Exception as exc:  # noqa: BLE001 - an arm is a comparison drawn after training: it must not cost the run
            entry["error"] = scrub_error(exc)
            log.warning("control arm %s was not drawn: %s", arm.name, entry["error"])
    return out


def arm_summaries(arms: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The entries of :func:`draw_run_arms` for ``report.json``: every figure, without the curves' points (they
    are in each arm's own ``arm_report.json``)."""
    points = ("times", "survival", "lower", "upper")
    out = []
    for entry in arms:
        report = entry.get("report")
        if report is not None:
            endpoints = {
                name: {k: ({kk: vv for kk, vv in v.items() if kk not in points} if k in ("arm", "reference") else v)
                       for k, v in ep.items()}
                for name, ep in report["endpoints"].items()
            }
            report = {**report, "endpoints": endpoints}
        out.append({**entry, "report": report})
    return out


def _finished(folder: Path, key: Mapping[str, Any], criteria: ArmCriteria) -> dict[str, Any] | None:
    """The arm report of ``folder`` when an earlier attempt finished it with the same ``key`` and criteria."""
    if not all((folder / f).is_file() for f in ARM_FILES.values()):
        return None
    try:
        report = json.loads((folder / ARM_FILES["json"]).read_text())
    except (OSError, ValueError):
        return None
    header = report.get("header", {}) if isinstance(report, dict) else {}
    same = header.get("run_arm") == dict(key) and header.get("criteria") == criteria.to_dict()
    return report if same else None


def _draw(
    arm: PlannedArm,
    gen: Any,
    folder: Path,
    model_dir: Path,
    key: Mapping[str, Any],
    real_data: pd.DataFrame | None,
    random_state: int,
) -> dict[str, Any]:
    from fedsynth.experiments.arm import describe_draw, draw_arm, training_count, write_arm
    from fedsynth.generators import survival_notes

    schema: TableSchema = gen.schema
    domain = getattr(gen, "domain", None)
    observed, bounds = domain_limits(domain)
    request = check_sampling_inputs(arm.criteria.condition_items(), arm.criteria.where(schema), schema,
                                    observed=observed, bounds=bounds)
    count = training_count(arm.criteria, schema, domain)
    rows = draw_arm(gen, request, arm.config.n, random_state=random_state, max_seconds=arm.config.max_seconds,
                    draw=arm.config.draw)
    reference, about, notes = None, None, [*request.notes, *survival_notes(gen, under_condition=True)]
    if real_data is not None:
        eligible = real_data[arm.criteria.eligible(real_data, schema)]
        small = len(eligible) < SMALLEST_RELEASED_COUNT
        about = {"label": REFERENCE_LABEL, "short": "real eligible", "source": REFERENCE_SOURCE,
                 "n": f"< {SMALLEST_RELEASED_COUNT}" if small else len(eligible)}
        if small:
            notes.append(f"fewer than {SMALLEST_RELEASED_COUNT} real training patients met the criteria: no "
                         "comparison is shown (their curve would show single patients)")
        else:
            reference = eligible
    shutil.rmtree(folder, ignore_errors=True)  # what an interrupted attempt left: redrawn whole
    header = {"run_arm": dict(key), "draw": describe_draw(schema, arm.config.n, arm.config.draw),
              **({"reference": about} if about is not None else {})}
    paths = write_arm(folder, rows, schema, model_dir=model_dir, criteria=arm.criteria, request=request,
                      count=count, random_state=random_state, reference=reference, notes=notes, header=header)
    report: dict[str, Any] = json.loads(paths["json"].read_text())
    return report
