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

    (a deployment, :mod:`fedsynth.experiments.deployed`, adds ``schema.yaml`` and ``audit/<site>.jsonl``, the
    coordinator's copy of every reply received; its snapshots are scored at the sites)

Every file is written atomically (temp file + rename); rounds are recorded as they finish, so a run killed
mid-way keeps its finished rounds and :func:`run_experiment` with ``resume=True`` continues from the last
checkpoint to the same result as an uninterrupted run. The directory is written by
:mod:`fedsynth.experiments.run_writer`, the one writer both engines use. ``manifest.json``'s ``status`` is one of
:data:`RUN_STATES`; a run found ``running`` whose directory is not locked lost its process (SIGKILL, a dead
machine) and is reported as ``interrupted (process gone)``. Library code logs; progress events go to the
optional ``progress`` callback (the CLI draws them).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from fedsynth.cohort.schema import TableSchema
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
    RunInterrupted,
    RunLock,
    identity_changes,
    read_manifest,
    run_hash,
    run_identity,
)
from fedsynth.experiments.run_writer import Progress, RunDirectory, RunResult, write_run

log = logging.getLogger(__name__)

#: The run's public names (some live in run_setup, run_state and run_writer; tests and the grid reach them here).
__all__ = [
    "Progress",
    "RunInterrupted",
    "RunLock",
    "RunResult",
    "build_strategy",
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


# -- evaluation (imported on use; a missing piece degrades to a note, never a crash) -------------------------


def score_snapshot(
    real: pd.DataFrame, synthetic: pd.DataFrame, schema: TableSchema, holdout: pd.DataFrame, *, random_state: int
) -> dict[str, Any]:
    """CSF, GSF, NNDR and fidelity components of one snapshot (``evaluation.quick_scores``)."""
    from fedsynth.evaluation import quick_scores

    return dict(quick_scores(real, synthetic, schema, holdout_data=holdout, random_state=random_state))


def build_strategy(config: ExperimentConfig, schema: TableSchema, run_dir: Path, *, deployed: bool = False) -> Any:
    """The config's federated strategy, with its privacy budget and its checkpoint in ``run_dir/checkpoint``
    (the same for every engine; ``deployed``: with the deployment defaults, secure aggregation on)."""
    from fedsynth.strategies.checkpoint import FileCheckpoint
    from fedsynth.strategies.registry import make_strategy

    strategy = make_strategy(config.strategy.name, schema, **strategy_settings(config, deployed=deployed))
    if config.privacy is not None:
        from fedsynth.privacy.accounting import PrivacyBudget

        strategy.privacy = PrivacyBudget(config.privacy.epsilon, config.privacy.delta)
        # The sites' ledgers record this run's releases under its id, so a resumed run is not charged twice.
        strategy.privacy_run_id = run_dir.name  # type: ignore[attr-defined]
    strategy.checkpoint = FileCheckpoint(run_dir / "checkpoint")
    return strategy


def privacy_summary(config: ExperimentConfig, strategy: Any) -> Any:
    """What the manifest says of differential privacy: the strategy's summary, or that none was asked for."""
    if config.privacy is not None and strategy is not None:
        summary, domain = getattr(strategy, "privacy_summary_", None), getattr(strategy, "domain_privacy_", None)
        return {**summary, **domain} if isinstance(summary, dict) and domain else summary
    return {"budget": None, "note": "no privacy block: no differential privacy, exact releases"}


def privacy_spent_before_end(config: ExperimentConfig, sites_dir: Path, names: list[str]) -> dict[str, Any]:
    """What the manifest says of differential privacy when a private run stops before its end: per simulated
    site, the ε its ledger (``<sites_dir>/<name>/privacy_ledger.json``) records on its rows so far, converted at
    the run's δ (less the δ label selection recorded), as the run's own figure is; a site that released nothing
    is left out. A simulated site's folder is the run's own, so it holds this run's releases only (earlier tries
    of the same run id included, which a resumed run does not charge again)."""
    from fedsynth.privacy.accounting import PrivacyBudget, json_float
    from fedsynth.privacy.ledger import LEDGER_FILE, PrivacyLedger

    budget = config.privacy
    delta = budget.delta if budget is not None else 0.0
    spent: dict[str, float | str] = {}
    for name in names:
        path = sites_dir / name / LEDGER_FILE
        if path.exists():  # the ledger's own budget plays no part in reading it at the run's δ
            spent[name] = json_float(PrivacyLedger(path, PrivacyBudget(math.inf)).epsilon_spent(name, delta=delta))
    return {"budget": None if budget is None else {"epsilon": budget.epsilon, "delta": budget.delta},
            "status": "the run stopped before its end" if spent else "the run stopped before any site released",
            "epsilon_spent_by_site": spent,
            "note": "what each site released before the run stopped, read from its privacy ledger at the run's delta"}


# -- the run ------------------------------------------------------------------------------------------------


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
        run in process. A deployment runs through :mod:`fedsynth.experiments.deployed` instead.
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
    run = RunDirectory(run_id, Path(out_dir or config.output.dir) / run_id, progress=progress)
    return write_run(run, lambda: _run_locked(config, run, engine, resume))


def _simulated_site_policy(cohort_source: str) -> tuple[Any, str | None]:
    """Every simulated site's disclosure policy: the ``site-policy.yaml`` beside the cohort's file when there is
    one (each simulated site stands for a hospital holding part of that file, and follows what its data steward
    wrote there), else the safe defaults; with the file's name, or ``None`` without one.

    Raises
    ------
    ValidationError
        The file is not a valid policy (every problem listed).
    """
    from fedsynth.strategies.policy import POLICY_FILENAME, SitePolicy

    beside = Path(cohort_source).parent / POLICY_FILENAME
    if not beside.is_file():
        return SitePolicy(), None
    policy = SitePolicy.from_file(str(beside))
    log.info("every simulated site follows the policy in %s beside the cohort file", POLICY_FILENAME)
    return policy, POLICY_FILENAME


def _run_locked(config: ExperimentConfig, run: RunDirectory, engine: str | None, resume: bool) -> RunResult:
    from fedsynth.strategies.centralized import run_centralized
    from fedsynth.strategies.policy import BASELINE_POLICY
    from fedsynth.strategies.registry import make_strategy

    run_dir, timings, emit = run.path, run.timings, run.emit
    cohort, part = load_partition(config)
    schema = part.schema
    _check_strata(config, schema)
    arm_plan = plan_arms(config, schema)  # every criteria file read and checked before anything trains
    identity = run_identity(config, cohort.fingerprint())
    seeds = site_seeds(config.seed, len(part.sites))
    settings = strategy_settings(config)
    engine = engine or config.strategy.engine
    facts = {
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
        # What fedsynth decided on its own: config notes, cohort loading (dropped columns, zero times, codes)
        # and partitioning (unstratified split, sites too small to train, left out).
        "notes": [*config.notes, *getattr(cohort, "notes", ()), *part.notes],
        "sites_left_out": [{"name": s.name, "n_rows": s.n_rows} for s in part.left_out],
    }
    site_policy, policy_file = _simulated_site_policy(cohort.source)
    if policy_file is not None:
        facts["site_policy"] = {"file": policy_file, **{k: ("inf" if isinstance(v, float) and math.isinf(v) else v)
                                                        for k, v in site_policy.to_dict().items()}}
    run.begin(config, schema, identity, facts, resume=resume, expected_rounds=_expected_rounds(config, len(part.sites)))

    def score(synthetic: pd.DataFrame, rr: Any) -> dict[str, Any]:  # against the pooled training rows
        return score_snapshot(part.train, synthetic, schema, part.holdout, random_state=config.seed)

    on_round, on_reference = run.callbacks(score, n_default=lambda: len(part.train))

    # -- the run itself -------------------------------------------------------------------------------------
    name = config.strategy.name
    site_frames = [(s.name, s.data) for s in part.sites]
    private = run_dir / ".private"
    strategy = None
    t0 = time.perf_counter()
    emit("phase", {"phase": f"{name} ({engine if name not in ('centralized', 'local') else 'in process'})"})
    if name == "centralized":
        result = run_centralized(part.train, schema, on_round=on_round, seed=config.seed, **settings)
    else:
        strategy = build_strategy(config, schema, run_dir)
        try:
            if name == "local" or engine == "in_process":
                from fedsynth.federation.simulation import private_folder, run_in_process

                private_folder(private)
                result = run_in_process(strategy, site_frames, schema, seeds=seeds, on_round=on_round,
                                        state_root=private / "sites", policy=site_policy)
            else:
                from fedsynth.federation.simulation import run_simulation

                result = run_simulation(strategy, site_frames, schema, seeds=seeds, on_round=on_round,
                                        private_dir=private, stop=run.stop,
                                        policies=[site_policy.to_dict()] * len(site_frames))
        except BaseException:
            if config.privacy is not None:  # the manifest says what the sites released before the run stopped
                try:
                    run.manifest["privacy"] = privacy_spent_before_end(config, private / "sites",
                                                                       [s.name for s in part.sites])
                except Exception:  # never hide the run's own error behind the ledgers'
                    log.exception("could not read the simulated sites' privacy ledgers")
            raise
    timings["strategy"] = time.perf_counter() - t0
    timings.update({f"strategy_{k}": v for k, v in result.timings.items()})
    run.manifest["left_out"] = result.left_out
    run.manifest["privacy"] = privacy_summary(config, strategy)
    run.write_manifest()
    run.save_model(result, name)

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
        run.manifest["failed_references"] = failed_references
        run.write_manifest()
    timings["references"] = time.perf_counter() - t0

    # -- final full evaluation and report ----------------------------------------------------------------------
    emit("phase", {"phase": "final evaluation"})
    t0 = time.perf_counter()
    final_frame = run.last_snapshot.get("frame")
    report_obj = None
    from fedsynth.evaluation import evaluate

    mode = config.evaluation.final
    if final_frame is not None and mode != "none":
        full = mode != "lite"  # lite: no detection AUC, no TSTR
        effects_rows = _effects_sample(result.generator, len(part.train), config.seed)
        report_obj = evaluate(part.train, final_frame, schema, holdout_data=part.holdout, random_state=config.seed,
                              strata=config.evaluation.strata, detection=full, utility=full, effects_data=effects_rows)
    timings["evaluation"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    arms = draw_run_arms(arm_plan, run_dir, real_data=part.train, random_state=config.seed, progress=emit)
    timings["arms"] = time.perf_counter() - t0
    final: Any = report_obj
    dp_line = _dp_statement(run.manifest)
    if report_obj is not None and dp_line is not None:  # the privacy section states the run's guarantee
        final = report_obj.to_dict()
        final["privacy"] = {**final["privacy"], "differential_privacy": dp_line}
    return run.finish(left_out=result.left_out, final_evaluation=final, arms=arms,
                      report_extra={"differential_privacy": run.manifest.get("privacy"),
                                    "arms": arm_summaries(arms)})


def _effects_sample(generator: Any, n_real: int, seed: int) -> pd.DataFrame | None:
    """Unconditioned rows of the final model for the report's strict survival figures, ``EFFECT_ROWS_FACTOR``
    times the training rows (the Cox effects read at the real size with less of one draw's chance); ``None``
    (the snapshot is read instead) without a model or when it cannot sample, logged."""
    from fedsynth.evaluation.survival_effects import EFFECT_ROWS_FACTOR

    if generator is None or not getattr(generator, "fitted_", True):
        return None
    try:
        out: pd.DataFrame = generator.sample(EFFECT_ROWS_FACTOR * n_real, random_state=seed + 7919)
    except Exception as exc:  # noqa: BLE001 - the snapshot still gives the figures, from fewer rows
        log.warning("the strict survival figures read the snapshot: the final model could not sample more rows (%s)",
                    type(exc).__name__)
        return None
    return out


def _dp_statement(manifest: Mapping[str, Any]) -> str | None:
    """The run's differential-privacy guarantee as one sentence (the data card's), ``None`` without a budget."""
    from fedsynth.experiments.card import _epsilon_statement

    found = _epsilon_statement(manifest)
    return None if found is None else found[0]
