"""The one implementation of writing a run directory, shared by the simulated and the deployed run.

:class:`RunDirectory` holds a run directory while one process writes it: the lock, the signal handlers, the
manifest (and what becomes of it when the run fails or is interrupted), ``config.yaml``, every finished round's
snapshot and its line in ``metrics.jsonl``, the model, ``report.json`` and ``report.html``. What differs between
the engines is handed in: how a snapshot is scored (against pooled rows in simulation, at the sites in a
deployment), what the manifest says about the data and the sites, and the report's extra sections. The layout
is described in :mod:`fedsynth.experiments.run`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from fedsynth._io import atomic_write_text, versions, write_json
from fedsynth.cohort.io import write_csv
from fedsynth.cohort.schema import TableSchema
from fedsynth.errors import Problem, ValidationError
from fedsynth.experiments.config import ExperimentConfig
from fedsynth.experiments.run_state import (
    _ARTEFACTS,
    RunInterrupted,
    RunLock,
    _install_signal_handlers,
    _MetricsLog,
    _restore_signal_handlers,
    identity_changes,
    read_manifest,
    run_hash,
)

log = logging.getLogger(__name__)

#: ``progress(event, payload)``: events ``"start"``, ``"round"``, ``"reference"``, ``"phase"``, ``"done"``.
Progress = Callable[[str, Mapping[str, Any]], None]

#: ``score(synthetic, round_result) -> scores``: the figures of one snapshot, shaped as
#: :func:`fedsynth.evaluation.quick_scores` returns them (``csf``, ``gsf``, ``nndr`` ...; extra keys are kept).
Scorer = Callable[[pd.DataFrame, Any], dict[str, Any]]

#: Keys of the scores kept as "components" in metrics.jsonl.
COMPONENTS = ("csf_components", "gsf_components", "column_fidelity", "pair_fidelity", "tests_passed")


@dataclass
class RunResult:
    """Where a run wrote its artefacts and its headline figures."""

    run_id: str
    run_dir: Path
    report_html: Path
    final_scores: dict[str, Any]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    references: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def headline(scores: Mapping[str, Any]) -> dict[str, Any]:
    """CSF, GSF, NNDR mean and 5th percentile of a snapshot's scores (``None`` where missing)."""
    nndr = scores.get("nndr")
    p5 = scores.get("nndr_p5")
    if isinstance(nndr, Mapping):
        syn = nndr.get("synthetic", nndr)
        nndr = syn.get("mean") if isinstance(syn, Mapping) else None
        if p5 is None and isinstance(syn, Mapping):
            p5 = syn.get("p5")
    return {"csf": scores.get("csf"), "gsf": scores.get("gsf"), "nndr": nndr, "nndr_p5": p5}


@dataclass
class ReportSection:
    """An extra part of ``report.html`` (a deployment's scoring methods, its audit): a title, paragraphs and a
    table of aggregates (never rows)."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "paragraphs": list(self.paragraphs), "columns": list(self.columns),
                "rows": [list(r) for r in self.rows]}


class RunDirectory:
    """A run directory while this process writes it (see :func:`write_run` for the lock and the failure path).

    Parameters
    ----------
    run_id : str
        The run's id (the folder's name).
    path : Path
        The run directory, ``<out>/<run_id>``.
    progress : callable, optional
        Receives the run's progress events (the CLI draws them).
    """

    def __init__(self, run_id: str, path: Path, *, progress: Progress | None = None) -> None:
        self.run_id = run_id
        self.path = Path(path)
        self.emit: Progress = progress or (lambda event, payload: None)
        self.stop = threading.Event()
        self.manifest: dict[str, Any] = {}
        self.rounds: list[dict[str, Any]] = []
        self.references: list[dict[str, Any]] = []
        self.timings: dict[str, float] = {}
        self.last_snapshot: dict[str, Any] = {}
        self.t_start = time.perf_counter()
        self._metrics: _MetricsLog | None = None
        self._config: ExperimentConfig | None = None
        self._schema: TableSchema | None = None
        self._n_default: Callable[[], int] = lambda: 0

    # -- start ----------------------------------------------------------------------------------------
    def begin(
        self,
        config: ExperimentConfig,
        schema: TableSchema,
        identity: Mapping[str, Any],
        facts: Mapping[str, Any],
        *,
        resume: bool,
        expected_rounds: int,
    ) -> int | None:
        """Start (or resume) the run: ``config.yaml``, a ``running`` manifest, and the ``start`` event.

        ``facts`` are the engine's manifest entries (seeds, data, sites, strategy, notes, sites left out).
        With ``resume`` and a checkpoint of the same run, the finished rounds are kept and the checkpoint's step
        is returned; otherwise a previous run's artefacts are removed and ``None`` is returned.

        Raises
        ------
        ValidationError
            ``resume`` finds a run made with another config, other data or another fedsynth version.
        """
        self._config, self._schema = config, schema
        before = read_manifest(self.path)
        if before is not None and before.get("status") == "running":  # nobody holds the lock: its process is gone
            log.warning("run %s was found running with no process behind it: interrupted (process gone)", self.run_id)
            before.update(status="interrupted", note="interrupted (process gone)")
            write_json(self.path / "manifest.json", before)
        resumed_from: int | None = None
        if resume and before is not None:
            changes = identity_changes(before.get("identity"), identity)
            if changes:
                raise ValidationError(
                    f"Resume of {self.path}",
                    [Problem("run", change, "the config, data and fedsynth version the run was made with",
                             "resume with the same config, or start the run afresh without --resume")
                     for change in changes],
                )
            resumed_from = checkpoint_step(self.path)
        metric_lines: list[str] = []
        if resumed_from is None:
            clear_run_dir(self.path)
        else:
            shutil.rmtree(self.path / ".private" / "rows", ignore_errors=True)  # left by a SIGKILL
            metric_lines, kept_rounds, self.last_snapshot = _resume_records(self.path, schema)
            self.rounds.extend(kept_rounds)
        (self.path / "snapshots").mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(config.to_yaml_dict(), sort_keys=False))
        self.manifest.update({
            "run_id": self.run_id,
            "status": "running",
            "pid": os.getpid(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "versions": versions(),
            **facts,
            "identity": dict(identity),
            "run_hash": run_hash(identity),
            "timings": self.timings,
        })
        strategy = self.manifest.get("strategy")
        if isinstance(strategy, dict) and "rounds" in strategy:
            strategy.update(ran_rounds(config))
        if resumed_from is not None:
            self.manifest["resumed_from_step"] = resumed_from
        self.write_manifest()
        self.emit("start", {
            "run_id": self.run_id, "run_dir": str(self.path), "rounds": expected_rounds,
            "sites": self.manifest.get("sites", []), "strategy": config.strategy.name,
            "generator": config.generator.name, "resumed_from": resumed_from, "done": len(self.rounds),
            "notes": self.manifest.get("notes", []), "sites_left_out": self.manifest.get("sites_left_out", []),
        })
        self._metrics = _MetricsLog(self.path / "metrics.jsonl", metric_lines)
        return resumed_from

    def write_manifest(self) -> None:
        write_json(self.path / "manifest.json", self.manifest)

    # -- rounds -------------------------------------------------------------------------------------------
    def record(self, rr: Any, *, reference: bool, score: Scorer) -> dict[str, Any]:
        """Sample, keep (rounds only) and score one finished round's snapshot; append its metrics line.

        The snapshot has ``evaluation.snapshot_rows`` rows (default: ``n_default()`` given to :meth:`callbacks`,
        the training rows) and is sampled with ``random_state = seed + round``.
        """
        assert self._config is not None and self._schema is not None and self._metrics is not None
        t0 = time.perf_counter()
        n_snapshot = int(self._config.evaluation.snapshot_rows or self._n_default())
        synthetic = rr.sample(n_snapshot, random_state=self._config.seed + rr.server_round)
        entry: dict[str, Any] = {"round": rr.server_round, "label": rr.label, "kind": "reference" if reference else "round"}
        if not reference:
            # the local baseline reports one model per site: their snapshots go in snapshots/<site>/
            folder = self.path / "snapshots" if rr.label in ("federated", "centralized") else self.path / "snapshots" / rr.label
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"round-{rr.server_round:03d}.csv"
            write_csv(synthetic, path, self._schema)
            entry["snapshot"] = str(path.relative_to(self.path))
            self.last_snapshot.update(frame=synthetic, round=rr.server_round)
        scores = score(synthetic, rr)
        entry.update(headline(scores))
        entry["components"] = {k: scores[k] for k in COMPONENTS if k in scores}
        entry["scores"] = {k: v for k, v in scores.items() if k not in ("csf", "gsf", *COMPONENTS)}
        entry.update(site_metrics=rr.site_metrics, left_out=rr.left_out, train_seconds=round(rr.seconds, 3),
                     score_seconds=round(time.perf_counter() - t0, 3))
        self._metrics.append(entry)
        return entry

    def callbacks(
        self, score: Scorer, *, n_default: Callable[[], int]
    ) -> tuple[Callable[[Any], None], Callable[[Any], None]]:
        """``(on_round, on_reference)`` for a strategy: each records the round with ``score`` and emits it.

        ``n_default()`` is the snapshot's size when the config sets none (the training rows; in a deployment
        known only once the sites said how many rows they hold)."""
        self._n_default = n_default

        def on_round(rr: Any) -> None:
            entry = self.record(rr, reference=False, score=score)
            self.rounds.append(entry)
            self.emit("round", entry)

        def on_reference(rr: Any) -> None:
            entry = self.record(rr, reference=True, score=score)
            self.references.append(entry)
            self.emit("reference", entry)

        return on_round, on_reference

    # -- the model and the report -------------------------------------------------------------------------
    def save_model(self, result: Any, strategy_name: str) -> None:
        """``model/``: the global generator (the local baseline: one folder per site), written beside and
        renamed into place."""
        model_dir = self.path / "model"
        tmp_dir = self.path / "model.tmp"
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if result.generator is not None and strategy_name != "local":
            result.generator.save(tmp_dir)
        elif strategy_name == "local":
            for site_name, model in result.site_models.items():
                if hasattr(model, "save"):
                    model.save(tmp_dir / site_name)
        if tmp_dir.exists():
            shutil.rmtree(model_dir, ignore_errors=True)
            tmp_dir.replace(model_dir)
        else:
            log.info("no single global generator to save for %s (pooled synthetic rows only)", strategy_name)

    def finish(
        self,
        *,
        left_out: Mapping[str, str],
        final_evaluation: Any = None,
        final_extra: Mapping[str, Any] | None = None,
        report_extra: Mapping[str, Any] | None = None,
        sections: Sequence[ReportSection] = (),
        arms: Sequence[Mapping[str, Any]] = (),
    ) -> RunResult:
        """``report.json``, ``report.html`` and a ``finished`` manifest; the ``done`` event.

        ``final_evaluation`` is the full evaluation of the last snapshot (an ``EvaluationReport``) when the
        engine can compute one; ``final_extra`` goes into the report's ``final`` entry, ``report_extra`` into
        the report itself, ``sections`` below the scores by round in ``report.html``, ``arms`` (the control arms
        :func:`~fedsynth.experiments.run_arms.draw_run_arms` drew) before the final evaluation. A mapping may stand
        for ``final_evaluation`` (its ``to_dict()`` with additions, e.g. the run's privacy guarantee).
        """
        assert self._config is not None
        config = self._config
        final_round = self.rounds[-1] if self.rounds else {}
        report = {
            "run_id": self.run_id,
            "config": config.to_yaml_dict(),
            "strategy": config.strategy.name,
            "generator": config.generator.name,
            "rounds": self.rounds,
            "references": self.references,
            "final": {"round": final_round.get("round"), **headline(final_round),
                      "evaluation": None if final_evaluation is None else (
                          dict(final_evaluation) if isinstance(final_evaluation, Mapping) else final_evaluation.to_dict()),
                      **dict(final_extra or {})},
            "left_out": dict(left_out),
            **dict(report_extra or {}),
        }
        if sections:
            report["sections"] = [s.to_dict() for s in sections]
        write_json(self.path / "report.json", report)
        html_path = self.path / "report.html"
        self.timings["total"] = time.perf_counter() - self.t_start
        write_html(html_path, self.rounds, self.references, final_evaluation, report, sections,
                   title=f"fedsynth run {self.run_id}", arms=arms, facts=run_facts(self.manifest, config,
                                                                                   self.timings["total"]),
                   scored_at_sites=self.manifest.get("engine") == "deployment")
        self.manifest.update(status="finished", finished=datetime.now(UTC).isoformat(timespec="seconds"),
                             last_round=final_round.get("round"))
        self.write_manifest()
        self.emit("done", {"run_dir": str(self.path), "report": str(html_path), **headline(final_round)})
        return RunResult(self.run_id, self.path, html_path, headline(final_round), self.rounds, self.references,
                         dict(self.timings))

    # -- failure ------------------------------------------------------------------------------------------
    def record_end(self, exc: BaseException) -> None:
        """Record in the manifest how the run ended: ``interrupted`` (a signal) or ``failed`` (scrubbed error)."""
        if not self.manifest:
            return
        self.manifest["last_round"] = self.rounds[-1]["round"] if self.rounds else None
        ck = checkpoint_step(self.path)
        if ck is not None:
            self.manifest["checkpoint_step"] = ck
        self.manifest["ended"] = datetime.now(UTC).isoformat(timespec="seconds")
        if isinstance(exc, KeyboardInterrupt):
            self.manifest["status"] = "interrupted"
            self.manifest["signal"] = exc.args[0] if isinstance(exc, RunInterrupted) else "SIGINT"
        else:
            from fedsynth.strategies.records import scrub_error

            self.manifest["status"] = "failed"
            self.manifest["error"] = scrub_error(exc)
        self.write_manifest()


def write_run(run: RunDirectory, body: Callable[[], RunResult]) -> RunResult:
    """Run ``body`` while holding ``run``'s directory: its lock, SIGINT/SIGTERM handlers that set ``run.stop``
    and raise :class:`RunInterrupted`, the manifest's ``failed``/``interrupted`` record on any exception, and the
    clean-up of the private folders (rows always; site state and checkpoint once the run finished).

    Raises
    ------
    FedsynthError
        When another process writes the run directory.
    """
    created = not run.path.exists()
    lock = RunLock(run.path)
    lock.acquire()
    previous_handlers: dict[int, Any] = {}
    try:
        previous_handlers = _install_signal_handlers(run.stop)
        return body()
    except BaseException as exc:
        run.record_end(exc)
        raise
    finally:
        run.stop.set()
        shutil.rmtree(run.path / ".private" / "rows", ignore_errors=True)
        if run.manifest.get("status") == "finished":
            shutil.rmtree(run.path / ".private", ignore_errors=True)
            shutil.rmtree(run.path / "checkpoint", ignore_errors=True)
        _restore_signal_handlers(previous_handlers)
        lock.release()
        if created and not run.manifest:  # refused before it wrote anything (bad input): leave no directory behind
            shutil.rmtree(run.path, ignore_errors=True)


def clear_run_dir(run_dir: Path) -> None:
    """Remove a previous run's artefacts (a fresh start must not leave a killed run's later rounds behind)."""
    for name in _ARTEFACTS:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def checkpoint_step(run_dir: Path) -> int | None:
    """The step of the server checkpoint in ``run_dir`` (``None``: none readable)."""
    try:
        return int(json.loads((run_dir / "checkpoint" / "state.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _resume_records(run_dir: Path, schema: Any) -> tuple[list[str], list[dict[str, Any]], dict[str, Any]]:
    """What a resumed run keeps: metrics lines and round entries up to the checkpoint's last finished round
    (later rounds, references and their snapshots are redone), and the last kept snapshot."""
    try:
        ck = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    except (OSError, ValueError):
        ck = {}
    n_done = len(ck.get("rounds", []))  # rounds the strategy will not run again (FedAvg); none for the BN
    kept_lines: list[str] = []
    rounds: list[dict[str, Any]] = []
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("kind") == "round" and int(entry.get("round", 0)) <= n_done:
            kept_lines.append(line)
            rounds.append(entry)
    kept = {str(r.get("snapshot")) for r in rounds}
    snapshots = run_dir / "snapshots"
    if snapshots.is_dir():
        for path in list(snapshots.rglob("*.csv")):
            if str(path.relative_to(run_dir)) not in kept:
                path.unlink()
    last: dict[str, Any] = {}
    if rounds:
        path = run_dir / str(rounds[-1]["snapshot"])
        last = {"frame": schema.coerce(pd.read_csv(path)[list(schema.model_columns)]), "round": rounds[-1]["round"]}
    return kept_lines, rounds, last


def ran_rounds(config: ExperimentConfig) -> dict[str, Any]:
    """What the manifest records of a strategy's rounds and local epochs: the config's when they act (weight
    averaging), otherwise the one round that ran and no local epochs (the two-step BN, SD-sharing)."""
    from fedsynth.strategies.registry import uses_rounds

    if uses_rounds(config.strategy.name, config.generator.name):
        return {"rounds": config.strategy.rounds, "local_epochs": config.strategy.local_epochs}
    return {"rounds": 1, "local_epochs": None}


def format_duration(seconds: float) -> str:
    """``41.2 s``, ``2 min 41 s``, ``1 h 03 min``: a run's wall time as the report shows it."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def run_facts(manifest: Mapping[str, Any], config: ExperimentConfig, seconds: float) -> list[tuple[str, str]]:
    """The facts ``report.html`` lists under its title, from the manifest: engine and strategy, sites, secure
    aggregation, start and wall time."""
    strategy = dict(manifest.get("strategy") or {})
    secure = strategy.get("secure_aggregation", config.strategy.params.get("secure_aggregation", False))
    engine = str(manifest.get("engine") or strategy.get("engine") or "")
    rounds = strategy.get("rounds")
    facts = [
        ("strategy", f"{config.strategy.name} with {config.generator.name}"
                     + (f", {rounds} round{'s' if rounds != 1 else ''}" if rounds else "")),
        ("engine", {"deployment": "deployment (a coordinator and the sites' own nodes)", "in_process": "in process",
                    "simulation": "Flower simulation"}.get(engine, engine)),
        ("sites", ", ".join(str(s.get("name")) for s in manifest.get("sites") or []) or "none recorded"),
        ("secure aggregation", "on (the coordinator sees only sums over the sites)" if secure else "off"),
        ("started (UTC)", str(manifest.get("started", "—"))),
        ("wall time", format_duration(seconds) + (" (this attempt; resumed)" if "resumed_from_step" in manifest
                                                  else "")),
    ]
    return facts


def write_html(
    path: Path,
    rounds: Sequence[Mapping[str, Any]],
    references: Sequence[Mapping[str, Any]],
    final: Any,
    report: Mapping[str, Any],
    sections: Sequence[ReportSection] = (),
    *,
    title: str,
    arms: Sequence[Mapping[str, Any]] = (),
    facts: Sequence[tuple[str, str]] = (),
    scored_at_sites: bool = False,
) -> None:
    """``report.html``: the run's ``facts``, scores by round with the references' lines, the extra sections, the
    final evaluation."""
    from fedsynth.evaluation import render_rounds_html

    lines: dict[str, dict[str, Any]] = {}
    for ref in references:  # the last round of each reference model is its line
        label = ref["label"] if ref["label"] == "centralized" else f"{ref['label']} alone"
        lines[label] = {k: ref.get(k) for k in ("csf", "gsf", "nndr_p5")}
    by_round = [{k: r.get(k) for k in ("round", "csf", "gsf", "nndr_p5")} for r in rounds]
    try:
        render_rounds_html(by_round, lines, final, path, title=title, sections=[s.to_dict() for s in sections],
                           arms=arms, facts=facts, scored_at_sites=scored_at_sites)
        return
    except Exception as exc:  # noqa: BLE001 - the rounds page must not cost the run: fall back to a plain table
        log.warning("report.html: the evaluation renderer failed (%s); writing a plain table", type(exc).__name__)
    atomic_write_text(path, _fallback_html(rounds, references, report, title))


def _fallback_html(
    rounds: Sequence[Mapping[str, Any]], references: Sequence[Mapping[str, Any]], report: Mapping[str, Any], title: str
) -> str:
    """A plain table of scores by round (written only when the evaluation renderer fails, so the run keeps a page)."""
    import html

    def fmt(v: Any) -> str:
        return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else html.escape(str(v)))

    rows = "".join(
        f"<tr><td>{fmt(r['label'])}</td><td>{fmt(r['round'])}</td><td>{fmt(r.get('csf'))}</td>"
        f"<td>{fmt(r.get('gsf'))}</td><td>{fmt(r.get('nndr'))}</td></tr>"
        for r in [*rounds, *references]
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
        f"<h1>{html.escape(title)}</h1><p>Strategy {html.escape(str(report['strategy']))}, generator "
        f"{html.escape(str(report['generator']))}.</p><table border='1'><tr><th>model</th><th>round</th>"
        f"<th>CSF</th><th>GSF</th><th>NNDR</th></tr>{rows}</table></body></html>"
    )
