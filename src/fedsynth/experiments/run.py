"""One experiment run -> one run directory (config, manifest, per-round snapshots and scores, model, report).

Layout of ``<out>/<run-id>/``::

    config.yaml            the resolved config
    manifest.json          versions, seeds (per-site seeds from SeedSequence(seed).spawn(n_sites)), data
                           fingerprint, per-site row counts and lacking columns, timings, status
    snapshots/round-NNN.csv  a synthetic cohort sampled after every federated round
    metrics.jsonl          one line per round (and per reference run): CSF, GSF, NNDR, fidelity components,
                           site metrics (losses, row counts), sites left out and why
    model/                 the global generator (generator.save; fedsynth.generators.load_generator reads it)
    arms/<name>/           each control arm of evaluation.arms (experiments.run_arms): arm.csv, arm.card.json,
                           arm_report.json/html against the real eligible training patients
    report.json, report.html  scores by round with the centralised and local references, and the final
                           snapshot's full evaluation

    checkpoint/            the server's state after every finished round (two-step BN: every answered count
                           request), JSON + .npz, removed when the run finishes
    .private/              mode 0700: ``rows/`` (the sites' rows for the simulated nodes, removed on every exit
                           path and by the next start after a SIGKILL) and ``sites/<name>/`` (each site's own
                           state between rounds, kept until the run finishes so it can resume)
    .lock                  held (``fcntl.flock``) while a process writes the directory

Every file is written atomically (temp file + rename); rounds are recorded as they finish, so a run killed
mid-way keeps its finished rounds and :func:`run_experiment` with ``resume=True`` continues from the last
checkpoint to the same result as an uninterrupted run. ``manifest.json``'s ``status`` is one of
:data:`RUN_STATES`; a run found ``running`` whose directory is not locked lost its process (SIGKILL, a dead
machine) and is reported as ``interrupted (process gone)``. Library code logs; progress events go to the
optional ``progress`` callback (the CLI draws them).
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
from fedsynth.experiments.run_arms import arm_summaries, draw_run_arms, plan_arms
from fedsynth.experiments.run_setup import (
    _check_strata,
    _expected_rounds,
    _references,
    _run_id,
    data_fingerprint,
    load_partition,
    site_seeds,
    strategy_settings,
)
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
    run_identity,
)

log = logging.getLogger(__name__)

#: The run's public names (some live in run_setup and run_state; tests and the grid reach them here).
__all__ = [
    "RunInterrupted",
    "RunLock",
    "RunResult",
    "data_fingerprint",
    "identity_changes",
    "load_partition",
    "read_manifest",
    "run_experiment",
    "run_hash",
    "run_identity",
    "score_snapshot",
    "site_seeds",
    "strategy_settings",
]

#: ``progress(event, payload)``: events ``"start"``, ``"round"``, ``"reference"``, ``"phase"``, ``"done"``.
Progress = Callable[[str, Mapping[str, Any]], None]


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


# -- evaluation (imported on use; a missing piece degrades to a note, never a crash) -------------------------


def score_snapshot(
    real: pd.DataFrame, synthetic: pd.DataFrame, schema: TableSchema, holdout: pd.DataFrame, *, random_state: int
) -> dict[str, Any]:
    """CSF, GSF, NNDR and fidelity components of one snapshot (``evaluation.quick_scores``)."""
    from fedsynth.evaluation import quick_scores

    return dict(quick_scores(real, synthetic, schema, holdout_data=holdout, random_state=random_state))


def _headline(scores: Mapping[str, Any]) -> dict[str, Any]:
    nndr = scores.get("nndr")
    p5 = scores.get("nndr_p5")
    if isinstance(nndr, Mapping):
        syn = nndr.get("synthetic", nndr)
        nndr = syn.get("mean") if isinstance(syn, Mapping) else None
        if p5 is None and isinstance(syn, Mapping):
            p5 = syn.get("p5")
    return {"csf": scores.get("csf"), "gsf": scores.get("gsf"), "nndr": nndr, "nndr_p5": p5}


#: Keys of ``quick_scores`` kept as "components" in metrics.jsonl.
_COMPONENTS = ("csf_components", "gsf_components", "column_fidelity", "pair_fidelity", "tests_passed")


# -- the run ------------------------------------------------------------------------------------------------


def _clear_run_dir(run_dir: Path) -> None:
    """Remove a previous run's artefacts (a fresh start must not leave a killed run's later rounds behind)."""
    for name in _ARTEFACTS:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def run_experiment(
    config: ExperimentConfig,
    *,
    out_dir: str | Path | None = None,
    progress: Progress | None = None,
    engine: str | None = None,
    resume: bool = False,
) -> RunResult:
    """Run ``config`` end to end and write its run directory under ``out_dir`` (default ``config.output.dir``).

    Parameters
    ----------
    engine : str, optional
        ``"simulation"`` (Flower's simulation engine) or ``"in_process"`` (same strategy and handlers without
        Flower's engine); default ``config.strategy.engine``. The baselines ``centralized`` and ``local`` always
        run in process.
    resume : bool
        Continue the run in ``<out_dir>/<run_id>`` from its last checkpoint (its finished rounds are kept);
        without a checkpoint it starts that run afresh. Without ``resume``, an existing run directory of the
        same id is replaced.

    Raises
    ------
    FedsynthError
        When another process writes the run directory, or ``resume`` finds a run made with another config,
        other data or another fedsynth version.
    RunInterrupted
        On SIGINT or SIGTERM (the manifest says ``interrupted``; the run can be resumed).
    """
    run_id = _run_id(config)
    run_dir = Path(out_dir or config.output.dir) / run_id
    created = not run_dir.exists()
    lock = RunLock(run_dir)
    lock.acquire()
    stop = threading.Event()
    previous_handlers: dict[int, Any] = {}
    manifest: dict[str, Any] = {}
    state: dict[str, Any] = {"rounds": []}
    try:
        previous_handlers = _install_signal_handlers(stop)
        return _run_locked(config, run_id, run_dir, manifest, state, stop, progress, engine, resume)
    except BaseException as exc:
        if manifest:
            rounds = state["rounds"]
            manifest["last_round"] = rounds[-1]["round"] if rounds else None
            ck = _checkpoint_step(run_dir)
            if ck is not None:
                manifest["checkpoint_step"] = ck
            manifest["ended"] = datetime.now(UTC).isoformat(timespec="seconds")
            if isinstance(exc, KeyboardInterrupt):
                manifest["status"] = "interrupted"
                manifest["signal"] = exc.args[0] if isinstance(exc, RunInterrupted) else "SIGINT"
            else:
                from fedsynth.strategies.records import scrub_error

                manifest["status"] = "failed"
                manifest["error"] = scrub_error(exc)
            write_json(run_dir / "manifest.json", manifest)
        raise
    finally:
        stop.set()
        shutil.rmtree(run_dir / ".private" / "rows", ignore_errors=True)
        if manifest.get("status") == "finished":
            shutil.rmtree(run_dir / ".private", ignore_errors=True)
            shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
        _restore_signal_handlers(previous_handlers)
        lock.release()
        if created and not manifest:  # refused before it wrote anything (bad input): leave no directory behind
            shutil.rmtree(run_dir, ignore_errors=True)


def _checkpoint_step(run_dir: Path) -> int | None:
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


def _run_locked(
    config: ExperimentConfig,
    run_id: str,
    run_dir: Path,
    manifest: dict[str, Any],
    state: dict[str, Any],
    stop: threading.Event,
    progress: Progress | None,
    engine: str | None,
    resume: bool,
) -> RunResult:
    from fedsynth.strategies.centralized import run_centralized
    from fedsynth.strategies.checkpoint import FileCheckpoint
    from fedsynth.strategies.policy import BASELINE_POLICY
    from fedsynth.strategies.registry import make_strategy

    emit: Progress = progress or (lambda event, payload: None)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    cohort, part = load_partition(config)
    schema = part.schema
    _check_strata(config, schema)
    arm_plan = plan_arms(config, schema)  # every criteria file read and checked before anything trains
    identity = run_identity(config, cohort.fingerprint())
    before = read_manifest(run_dir)
    if before is not None and before.get("status") == "running":  # nobody holds the lock: its process is gone
        log.warning("run %s was found running with no process behind it: interrupted (process gone)", run_id)
        before.update(status="interrupted", note="interrupted (process gone)")
        write_json(run_dir / "manifest.json", before)
    resumed_from: int | None = None
    if resume and before is not None:
        changes = identity_changes(before.get("identity"), identity)
        if changes:
            raise ValidationError(
                f"Resume of {run_dir}",
                [Problem("run", change, "the config, data and fedsynth version the run was made with",
                         "resume with the same config, or start the run afresh without --resume") for change in changes],
            )
        resumed_from = _checkpoint_step(run_dir)
    if resumed_from is None:
        _clear_run_dir(run_dir)
        metric_lines: list[str] = []
        rounds: list[dict[str, Any]] = state["rounds"]
        last_snapshot: dict[str, Any] = {}
    else:
        shutil.rmtree(run_dir / ".private" / "rows", ignore_errors=True)  # left by a SIGKILL
        metric_lines, kept_rounds, last_snapshot = _resume_records(run_dir, schema)
        rounds = state["rounds"]
        rounds.extend(kept_rounds)
    (run_dir / "snapshots").mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config.to_yaml_dict(), sort_keys=False))
    seeds = site_seeds(config.seed, len(part.sites))
    settings = strategy_settings(config)
    engine = engine or config.strategy.engine
    manifest.update({
        "run_id": run_id,
        "status": "running",
        "pid": os.getpid(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "seeds": {"seed": config.seed, "site_seeds": dict(zip([s.name for s in part.sites], seeds))},
        "data": {
            "cohort": cohort.name,
            "fingerprint": identity["data_fingerprint"],
            "n_rows": len(cohort.data),
            "n_train": len(part.train),
            "n_holdout": len(part.holdout),
        },
        "sites": [{"name": s.name, "n_rows": s.n_rows, "lacks": list(s.lacks)} for s in part.sites],
        "strategy": {"name": config.strategy.name, "engine": engine, **{k: v for k, v in settings.items() if k != "params"}},
        "identity": identity,
        "run_hash": run_hash(identity),
        "timings": timings,
        # What fedsynth decided on its own: config notes, cohort loading (dropped columns, zero times, codes)
        # and partitioning (unstratified split, sites too small to train, left out).
        "notes": [*config.notes, *getattr(cohort, "notes", ()), *part.notes],
        "sites_left_out": [{"name": s.name, "n_rows": s.n_rows} for s in part.left_out],
    })
    if resumed_from is not None:
        manifest["resumed_from_step"] = resumed_from
    write_json(run_dir / "manifest.json", manifest)
    emit("start", {"run_id": run_id, "run_dir": str(run_dir), "rounds": _expected_rounds(config, len(part.sites)),
                   "sites": manifest["sites"], "strategy": config.strategy.name, "generator": config.generator.name,
                   "resumed_from": resumed_from, "done": len(rounds), "notes": manifest["notes"],
                   "sites_left_out": manifest["sites_left_out"]})

    metrics = _MetricsLog(run_dir / "metrics.jsonl", metric_lines)
    n_snapshot = int(config.evaluation.snapshot_rows or len(part.train))
    references: list[dict[str, Any]] = []

    def record(rr: Any, *, reference: bool) -> dict[str, Any]:
        t0 = time.perf_counter()
        synthetic = rr.sample(n_snapshot, random_state=config.seed + rr.server_round)
        entry: dict[str, Any] = {"round": rr.server_round, "label": rr.label, "kind": "reference" if reference else "round"}
        if not reference:
            # the local baseline reports one model per site: their snapshots go in snapshots/<site>/
            folder = run_dir / "snapshots" if rr.label in ("federated", "centralized") else run_dir / "snapshots" / rr.label
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"round-{rr.server_round:03d}.csv"
            write_csv(synthetic, path, schema)
            entry["snapshot"] = str(path.relative_to(run_dir))
            last_snapshot.update(frame=synthetic, round=rr.server_round)
        scores = score_snapshot(part.train, synthetic, schema, part.holdout, random_state=config.seed)
        entry.update(_headline(scores))
        entry["components"] = {k: scores[k] for k in _COMPONENTS if k in scores}
        entry["scores"] = {k: v for k, v in scores.items() if k not in ("csf", "gsf", *_COMPONENTS)}
        entry.update(site_metrics=rr.site_metrics, left_out=rr.left_out, train_seconds=round(rr.seconds, 3),
                     score_seconds=round(time.perf_counter() - t0, 3))
        metrics.append(entry)
        return entry

    def on_round(rr: Any) -> None:
        entry = record(rr, reference=False)
        rounds.append(entry)
        emit("round", entry)

    def on_reference(rr: Any) -> None:
        entry = record(rr, reference=True)
        references.append(entry)
        emit("reference", entry)

    # -- the run itself -------------------------------------------------------------------------------------
    name = config.strategy.name
    site_frames = [(s.name, s.data) for s in part.sites]
    private = run_dir / ".private"
    t0 = time.perf_counter()
    emit("phase", {"phase": f"{name} ({engine if name not in ('centralized', 'local') else 'in process'})"})
    if name == "centralized":
        result = run_centralized(part.train, schema, on_round=on_round, seed=config.seed, **settings)
    else:
        strategy = make_strategy(name, schema, **settings)
        if config.privacy is not None:
            from fedsynth.privacy.accounting import PrivacyBudget

            strategy.privacy = PrivacyBudget(config.privacy.epsilon, config.privacy.delta)  # type: ignore[attr-defined]
            # The sites' ledgers record this run's releases under its id, so a resumed run is not charged twice.
            strategy.privacy_run_id = run_dir.name  # type: ignore[attr-defined]
        strategy.checkpoint = FileCheckpoint(run_dir / "checkpoint")
        if name == "local" or engine == "in_process":
            from fedsynth.federation.simulation import private_folder, run_in_process

            private_folder(private)
            result = run_in_process(strategy, site_frames, schema, seeds=seeds, on_round=on_round,
                                    state_root=private / "sites")
        else:
            from fedsynth.federation.simulation import run_simulation

            result = run_simulation(strategy, site_frames, schema, seeds=seeds, on_round=on_round,
                                    private_dir=private, stop=stop)
    timings["strategy"] = time.perf_counter() - t0
    timings.update({f"strategy_{k}": v for k, v in result.timings.items()})
    manifest["left_out"] = result.left_out
    manifest["privacy"] = (getattr(strategy, "privacy_summary_", None) if config.privacy is not None and name != "centralized"
                           else {"budget": None, "note": "no privacy block: no differential privacy, exact releases"})
    write_json(run_dir / "manifest.json", manifest)

    # -- the model --------------------------------------------------------------------------------------
    model_dir = run_dir / "model"
    tmp_dir = run_dir / "model.tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    if result.generator is not None and name != "local":
        result.generator.save(tmp_dir)
    elif name == "local":
        for site_name, model in result.site_models.items():
            if hasattr(model, "save"):
                model.save(tmp_dir / site_name)
    if tmp_dir.exists():
        shutil.rmtree(model_dir, ignore_errors=True)
        tmp_dir.replace(model_dir)
    else:
        log.info("no single global generator to save for %s (pooled synthetic rows only)", name)

    # -- references: centralized and per-site local with the same generator ---------------------------------
    t0 = time.perf_counter()
    failed_references: dict[str, str] = {}
    for ref in _references(config):
        emit("phase", {"phase": f"reference: {ref}"})
        try:
            if ref == "centralized":
                run_centralized(part.train, schema, on_round=on_reference, seed=config.seed, **settings)
            else:
                from fedsynth.federation.simulation import run_in_process

                # A site alone discloses to no one: its counts stay in its own process (trusted policy).
                run_in_process(make_strategy("local", schema, **settings), site_frames, schema, seeds=seeds,
                               on_round=on_reference, policy=BASELINE_POLICY)
        except Exception as exc:  # noqa: BLE001 - a reference is a comparison: failing, it must not cost the run
            from fedsynth.strategies.records import scrub_error

            failed_references[ref] = scrub_error(exc)
            log.warning("reference %s failed and is left out of the report: %s", ref, failed_references[ref])
    if failed_references:
        manifest["failed_references"] = failed_references
        write_json(run_dir / "manifest.json", manifest)
    timings["references"] = time.perf_counter() - t0

    # -- final full evaluation and report ----------------------------------------------------------------------
    emit("phase", {"phase": "final evaluation"})
    t0 = time.perf_counter()
    final_frame = last_snapshot.get("frame")
    final_json: Any = None
    report_obj = None
    from fedsynth.evaluation import evaluate

    mode = config.evaluation.final
    if final_frame is not None and mode != "none":
        full = mode != "lite"  # lite: no detection AUC, no TSTR
        report_obj = evaluate(part.train, final_frame, schema, holdout_data=part.holdout, random_state=config.seed,
                              strata=config.evaluation.strata, detection=full, utility=full)
        final_json = report_obj.to_dict()
        dp_line = _dp_statement(manifest)
        if dp_line is not None:  # the privacy section states the run's guarantee
            final_json["privacy"] = {**final_json["privacy"], "differential_privacy": dp_line}
            report_obj = final_json
    timings["evaluation"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    arms = draw_run_arms(arm_plan, run_dir, real_data=part.train, random_state=config.seed, progress=emit)
    timings["arms"] = time.perf_counter() - t0
    final_round = rounds[-1] if rounds else {}
    report = {
        "run_id": run_id,
        "config": config.to_yaml_dict(),
        "strategy": name,
        "generator": config.generator.name,
        "rounds": rounds,
        "references": references,
        "final": {"round": final_round.get("round"), **_headline(final_round), "evaluation": final_json},
        "left_out": result.left_out,
        "differential_privacy": manifest.get("privacy"),
        "arms": arm_summaries(arms),
    }
    write_json(run_dir / "report.json", report)
    html_path = run_dir / "report.html"
    _write_html(html_path, rounds, references, report_obj, report, title=f"fedsynth run {run_id}", arms=arms)
    timings["total"] = time.perf_counter() - t_start
    manifest.update(status="finished", finished=datetime.now(UTC).isoformat(timespec="seconds"),
                    last_round=final_round.get("round"))
    write_json(run_dir / "manifest.json", manifest)
    emit("done", {"run_dir": str(run_dir), "report": str(html_path), **_headline(final_round)})
    return RunResult(run_id, run_dir, html_path, _headline(final_round), rounds, references, dict(timings))


def _dp_statement(manifest: Mapping[str, Any]) -> str | None:
    """The run's differential-privacy guarantee as one sentence (the data card's), ``None`` without a budget."""
    from fedsynth.experiments.card import _epsilon_statement

    found = _epsilon_statement(manifest)
    return None if found is None else found[0]


def _write_html(
    path: Path,
    rounds: Sequence[Mapping[str, Any]],
    references: Sequence[Mapping[str, Any]],
    final: Any,
    report: Mapping[str, Any],
    *,
    title: str,
    arms: Sequence[Mapping[str, Any]] = (),
) -> None:
    from fedsynth.evaluation import render_rounds_html

    lines: dict[str, dict[str, Any]] = {}
    for ref in references:  # the last round of each reference model is its line
        label = ref["label"] if ref["label"] == "centralized" else f"{ref['label']} alone"
        lines[label] = {k: ref.get(k) for k in ("csf", "gsf", "nndr_p5")}
    by_round = [{k: r.get(k) for k in ("round", "csf", "gsf", "nndr_p5")} for r in rounds]
    try:
        render_rounds_html(by_round, lines, final, path, title=title, arms=arms)
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
