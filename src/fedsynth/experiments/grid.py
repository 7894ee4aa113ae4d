"""A grid of runs -> one comparison: generators x strategies x site layouts x scenarios x seeds, plus baselines.

``fedsynth grid CONFIG --out DIR`` expands a grid config into experiment configs, runs each into
``DIR/runs/<slug>/`` (a finished run is reused only when its resolved config, data fingerprint and fedsynth
version hash the same — otherwise it is rerun and the grid says why; an interrupted or failed run with the
same hash is resumed from its last checkpoint), then
writes ``DIR/summary.json`` and ``DIR/summary.html``: the headline table (mean and spread over seeds), the
round-by-round curves per generator with centralized and local reference lines, and the survival p-value
consistency the GenoMed4All study reports (log-rank p in real data, in each site-alone cohort and in the
federated cohort).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from fedsynth._io import atomic_write_text, write_json
from fedsynth.errors import Problem, ValidationError
from fedsynth.experiments.config import ExperimentConfig, _problems_from_pydantic, parse_config

log = logging.getLogger(__name__)

#: ``progress(event, payload)``: ``"grid"`` (the plan), ``"run"`` (one run starts), ``"reused"``, ``"finished"``,
#: ``"failed"``; each payload names the run.
GridProgress = Callable[[str, Mapping[str, Any]], None]


_SCENARIOS: tuple[Literal["best", "worst"], ...] = ("best", "worst")


class GeneratorEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="a generator of the registry (each planned run's config validates it)")
    params: dict[str, Any] = Field(default_factory=dict)
    strategies: list[str] = Field(description="federated strategies of the registry (baselines come with baselines)")
    rounds: int | None = Field(None, ge=1, description="rounds of the strategies that average weights")
    local_epochs: int | None = Field(None, ge=1, description="local epochs of the strategies that average weights")
    strategy_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="per federated strategy, its strategy.params (e.g. two_step_bn: {secure_aggregation: true})",
    )

    @model_validator(mode="after")
    def _params_of_listed_strategies(self) -> GeneratorEntry:
        unused = sorted(set(self.strategy_params) - set(self.strategies))
        if unused:
            raise ValueError(f"strategy_params names {unused}, not among this generator's strategies {self.strategies}")
        return self


class GridConfig(BaseModel):
    """The grid: a base experiment and the axes to vary."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "grid"
    base: dict[str, Any] = Field(description="an experiment config (without generator/strategy) shared by every run")
    generators: list[GeneratorEntry]
    layouts: dict[str, list[float]] = Field(
        default_factory=lambda: {"3-sites": [60.0, 30.0, 10.0], "5-sites": [45.0, 20.0, 15.0, 10.0, 10.0]}
    )
    scenarios: list[Literal["best", "worst"]] = Field(default_factory=lambda: list(_SCENARIOS))
    seeds: list[int] = Field(default_factory=lambda: [0])
    baselines: bool = Field(True, description="also run centralized and per-site local for every generator")


@dataclass(frozen=True)
class PlannedRun:
    """One cell of the grid."""

    slug: str
    generator: str
    strategy: str
    layout: str
    scenario: str
    seed: int
    config: ExperimentConfig

    @property
    def setting(self) -> tuple[str, str, str, str]:
        return (self.generator, self.strategy, self.layout, self.scenario)


@dataclass
class GridResult:
    out_dir: Path
    summary_json: Path
    summary_html: Path
    runs: list[dict[str, Any]] = field(default_factory=list)


def load_grid_config(path: str | Path) -> GridConfig:
    p = Path(path)
    if not p.is_file():
        raise ValidationError("Grid config", [Problem(f"file {str(p)!r}", "does not exist", fix="examples: configs/grid-*.yaml")])
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError:
        raise ValidationError(f"Grid config {p.name}", [Problem("file", "is not valid YAML")]) from None
    try:
        return GridConfig.model_validate(raw)
    except PydanticValidationError as exc:
        raise ValidationError(f"Grid config {p.name}", _problems_from_pydantic(exc, GridConfig)) from None


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def plan(grid: GridConfig) -> list[PlannedRun]:
    """Expand the grid into runs, each with a validated experiment config; all problems reported at once.

    Federated runs skip their own reference fits (``evaluation.references: []``) because the grid runs
    the baselines itself: local once per generator, layout, scenario and seed, and centralized (the whole
    training pool, the upper bound) once per generator and seed. A generator's ``rounds`` and ``local_epochs``
    go to the runs where they act (weight averaging, :func:`fedsynth.strategies.registry.uses_rounds`).
    """
    from fedsynth.strategies.registry import STRATEGIES, uses_rounds

    runs: list[PlannedRun] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    for gen, (layout, props), scenario, seed in itertools.product(
        grid.generators, grid.layouts.items(), grid.scenarios, grid.seeds
    ):
        strategies: list[str] = list(gen.strategies)
        if grid.baselines:
            strategies += ["centralized", "local"]
        for strategy in strategies:
            # The centralized baseline fits the whole training pool (every column), so it does not depend on
            # the layout or the scenario: one run per generator and seed.
            lay, scen = ("pooled", "any") if strategy == "centralized" else (layout, scenario)
            slug = f"{gen.name}-{strategy}-{lay}-seed{seed}" if strategy == "centralized" else f"{gen.name}-{strategy}-{lay}-{scen}-seed{seed}"
            if slug in seen:
                continue
            seen.add(slug)
            strat: dict[str, Any] = {"name": strategy}
            acts = strategy in STRATEGIES and uses_rounds(strategy, gen.name)
            if gen.rounds is not None and acts:
                strat["rounds"] = gen.rounds
            if gen.local_epochs is not None and acts:
                strat["local_epochs"] = gen.local_epochs
            if gen.strategy_params.get(strategy):
                strat["params"] = dict(gen.strategy_params[strategy])
            extra: dict[str, Any] = {}
            if strategy in STRATEGIES and not STRATEGIES[strategy].baseline:
                extra["evaluation"] = {"references": []}
            raw = _merge(
                grid.base,
                {
                    "name": slug,
                    "sites": {"proportions": props},
                    "scenario": {"name": "best" if strategy == "centralized" else scenario},
                    "generator": {"name": gen.name, "params": gen.params},
                    "strategy": strat,
                    "seed": seed,
                    "output": {"run_id": slug},
                    **extra,
                },
            )
            try:
                cfg = parse_config(raw, source=slug)
            except ValidationError as exc:
                problems += [Problem(f"{slug}: {p.where}", p.found, p.valid, p.fix) for p in exc.problems]
                continue
            runs.append(PlannedRun(slug, gen.name, strategy, lay, scen, seed, cfg))
    if problems:
        raise ValidationError("Grid", problems)
    return runs


def reuse_decision(run_dir: Path, identity: Mapping[str, Any]) -> tuple[str, str]:
    """``("reuse" | "resume" | "run", why)`` for a planned run whose identity
    (:func:`fedsynth.experiments.run.run_identity`) is ``identity`` and whose directory is ``run_dir``."""
    from fedsynth.experiments.run_state import identity_changes, read_manifest, run_state

    manifest = read_manifest(run_dir)
    if manifest is None:
        return "run", "not run yet"
    changes = identity_changes(manifest.get("identity"), identity)
    if changes:
        return "run", "rerun: " + "; ".join(changes)
    state = run_state(run_dir)
    if state == "finished" and (run_dir / "report.json").is_file():
        return "reuse", "finished with the same config, data and fedsynth version"
    return "resume", f"{state}: resumed from its last checkpoint"


def run_grid(
    grid: GridConfig,
    out_dir: str | Path,
    *,
    progress: GridProgress | None = None,
    run_progress: Callable[[str, Mapping[str, Any]], None] | None = None,
    only: Callable[[PlannedRun], bool] | None = None,
) -> GridResult:
    """Run every planned run not already finished under ``out_dir/runs/``, then write the summary."""
    from fedsynth.experiments import run as run_mod
    from fedsynth.experiments.run_state import run_identity

    emit = progress or (lambda event, payload: None)
    fingerprints: dict[str, str] = {}

    def identity(config: ExperimentConfig) -> dict[str, Any]:
        key = json.dumps(config.cohort.model_dump(mode="json"), sort_keys=True)
        if key not in fingerprints:
            fingerprints[key] = run_mod.data_fingerprint(config)
        return run_identity(config, fingerprints[key])

    out = Path(out_dir)
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    planned = [r for r in plan(grid) if only is None or only(r)]
    emit("grid", {"n_runs": len(planned), "out_dir": str(out)})
    records = []
    for i, run in enumerate(planned):
        run_dir = runs_dir / run.slug
        info = {"index": i, "n_runs": len(planned), "slug": run.slug, "run_dir": str(run_dir)}
        decision, why = reuse_decision(run_dir, identity(run.config))
        info["reason"] = why
        if decision == "reuse":
            emit("reused", info)
        else:
            emit("run", info)
            if decision != "run" or why != "not run yet":
                log.info("grid: %s: %s", run.slug, why)
            t0 = time.perf_counter()
            try:
                run_mod.run_experiment(run.config, out_dir=runs_dir, progress=run_progress, resume=decision == "resume")
            except Exception as exc:  # noqa: BLE001 - one failed cell must not lose the others; the summary marks it
                log.error("run %s failed: %s: %s", run.slug, type(exc).__name__, exc)
                emit("failed", {**info, "error": f"{type(exc).__name__}: {exc}"})
                records.append({**_describe(run), "status": "failed", "error": f"{type(exc).__name__}"})
                continue
            emit("finished", {**info, "seconds": round(time.perf_counter() - t0, 1)})
        records.append({**_describe(run), "status": "finished", **read_run(run_dir)})
    summary = summarize(records, grid)
    summary_json = write_json(out / "summary.json", summary, indent=1)
    from fedsynth.experiments.grid_report import render_summary_html

    summary_html = atomic_write_text(out / "summary.html", render_summary_html(summary))
    return GridResult(out, summary_json, summary_html, records)


def _describe(run: PlannedRun) -> dict[str, Any]:
    return {"slug": run.slug, "generator": run.generator, "strategy": run.strategy, "layout": run.layout,
            "scenario": run.scenario, "seed": run.seed}


# -- reading a run's figures --------------------------------------------------------------------------------


def dig(obj: Any, path: str) -> Any:
    """``obj['a']['b']...`` for ``path='a.b...'``; None where any step is missing."""
    for part in path.split("."):
        if isinstance(obj, Mapping) and part in obj:
            obj = obj[part]
        else:
            return None
    return obj


#: The headline figures: column name -> dotted path in a run's final full evaluation (report.json);
#: ``{endpoint}`` is the report's first survival endpoint (the schema's first, whatever its name).
HEADLINE: dict[str, str] = {
    "csf": "scores.csf.value",
    "gsf": "scores.gsf.value",
    "nndr_p5": "privacy.nndr.synthetic.p5",
    "nndr_p5_holdout": "privacy.nndr.holdout.p5",
    "dcr_share": "privacy.dcr_share",
    "mia_auc": "privacy.mia_auc",
    "tstr_cindex": "utility.endpoints.{endpoint}.c_index_train_synthetic",
    "trtr_cindex": "utility.endpoints.{endpoint}.c_index_train_real",
    "survival_agreement": "scores.csf.components.clinical_survival_agreement.value",
    "gene_survival_agreement": "scores.gsf.components.gene_survival_agreement.value",
}


def _endpoints(section: Any) -> list[str]:
    """Endpoint names of a report section (``survival`` or ``utility.endpoints``), in the report's order."""
    if not isinstance(section, Mapping):
        return []
    names = section.get("endpoint_names")
    if isinstance(names, list):
        return [str(n) for n in names]
    return [str(k) for k, v in section.items() if isinstance(v, Mapping)]


def read_run(run_dir: Path) -> dict[str, Any]:
    """Headline figures, the round curve and the first stratum's log-rank p-values of one finished run."""
    report = json.loads((run_dir / "report.json").read_text())
    final = dig(report, "final.evaluation") or {}
    endpoint = next(iter(_endpoints(dig(final, "survival")) or _endpoints(dig(final, "utility.endpoints"))), "")
    out: dict[str, Any] = {k: _num(dig(final, path.format(endpoint=endpoint))) for k, path in HEADLINE.items()}
    for key in ("csf", "gsf"):
        if out[key] is None:
            out[key] = _num(dig(report, f"final.{key}"))
    out["rounds"] = [
        {"round": r.get("round"), "label": r.get("label"), "csf": _num(r.get("csf")), "gsf": _num(r.get("gsf")),
         "nndr": _num(r.get("nndr"))}
        for r in report.get("rounds", [])
    ]
    out["logrank"] = _logrank(final)
    out["snapshot_logrank"] = snapshot_logrank(run_dir, report)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    out["seconds"] = _num(dig(manifest, "timings.total"))
    return out


def _logrank(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """Log-rank p of the first stratum the evaluation used, on its first endpoint, in real and synthetic data."""
    survival = dig(evaluation, "survival")
    for endpoint in _endpoints(survival):
        strata = dig(survival, f"{endpoint}.strata")
        if not isinstance(strata, Mapping):
            continue
        for name, info in strata.items():
            if isinstance(info, Mapping):
                return {"endpoint": endpoint, "stratum": name, "real_p": _num(info.get("logrank_p_real")),
                        "synthetic_p": _num(info.get("logrank_p_synthetic"))}
        return {}
    return {}


def snapshot_logrank(run_dir: Path, report: Mapping[str, Any], stratum: str | None = None) -> list[dict[str, Any]]:
    """Log-rank p (the evaluator's :func:`~fedsynth.evaluation.survival.logrank`) of ``stratum`` on the first
    endpoint inside each cohort's last snapshot.

    The endpoint is the schema's first (from the report); ``stratum`` defaults to the first stratum column the
    final evaluation used (``evaluation.strata`` or the evaluator's default). Without either there is nothing
    to test and the list is empty. One entry per cohort label: the federated model's last round, or each site
    of a ``local`` run, so the summary can set the p-value inside every site-alone cohort beside the federated
    one and the real data.
    """
    import pandas as pd

    from fedsynth.cohort.schema import TableSchema
    from fedsynth.evaluation.survival import logrank

    schema_dict = dig(report, "final.evaluation.info.schema")
    endpoints = TableSchema.from_dict(schema_dict).endpoints if isinstance(schema_dict, Mapping) else []
    if stratum is None:
        used = dig(report, "final.evaluation.survival.strata_columns")
        stratum = str(used[0]) if isinstance(used, list) and used else None
    if not endpoints or stratum is None:
        return []
    dur, ev = endpoints[0].duration_col, endpoints[0].event_col
    last: dict[str, str] = {}
    for entry in report.get("rounds", []):
        if entry.get("snapshot"):
            last[str(entry.get("label"))] = str(entry["snapshot"])
    out = []
    for label, rel in last.items():
        path = run_dir / rel
        try:
            frame = pd.read_csv(path, usecols=[dur, ev, stratum]).dropna()
        except (OSError, ValueError):
            continue
        sizes = frame[stratum].value_counts()
        if (sizes >= 2).sum() < 2:  # fewer than two groups of two: no test
            p = None
        else:
            keep = frame[frame[stratum].isin(sizes[sizes >= 2].index)]
            value = logrank(keep[dur].to_numpy(), keep[stratum].astype(str).to_numpy(), keep[ev].to_numpy())
            p = value if math.isfinite(value) else None
        out.append({"cohort": label, "stratum": stratum, "n": len(frame), "p": p})
    return out


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


# -- the summary ----------------------------------------------------------------------------------------------


def _mean_sd(values: Sequence[float | None]) -> dict[str, float | int | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "sd": None, "n": 0}
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return {"mean": m, "sd": sd, "n": len(vals)}


def _site_alone(ok: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each site alone (``local`` runs, every site's last round; per-round fast scores), mean over seeds,
    beside the federated strategies' last round on the same layout and scenario."""
    by_key: dict[tuple[str, str, str, str], list[Mapping[str, Any]]] = {}
    for r in ok:
        if r["strategy"] == "local":
            last: dict[str, Mapping[str, Any]] = {}
            for entry in r.get("rounds", []):
                last[str(entry.get("label"))] = entry
            for site, entry in last.items():
                by_key.setdefault((r["generator"], r["layout"], r["scenario"], site), []).append(entry)
        elif r["strategy"] in ("fedavg", "two_step_bn", "sd_sharing") and r.get("rounds"):
            by_key.setdefault((r["generator"], r["layout"], r["scenario"], r["strategy"]), []).append(r["rounds"][-1])
    return [
        {"generator": g, "layout": lay, "scenario": sc, "cohort": who,
         "csf": _mean_sd([_num(e.get("csf")) for e in es]), "gsf": _mean_sd([_num(e.get("gsf")) for e in es])}
        for (g, lay, sc, who), es in sorted(by_key.items())
    ]


def summarize(records: Sequence[Mapping[str, Any]], grid: GridConfig) -> dict[str, Any]:
    """Aggregate runs by setting (generator, strategy, layout, scenario): mean and spread over seeds."""
    ok = [r for r in records if r.get("status") == "finished"]
    settings: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for r in ok:
        settings.setdefault((r["generator"], r["strategy"], r["layout"], r["scenario"]), []).append(r)
    table = []
    for (gen, strat, layout, scenario), rs in sorted(settings.items()):
        row: dict[str, Any] = {"generator": gen, "strategy": strat, "layout": layout, "scenario": scenario,
                               "seeds": sorted(r["seed"] for r in rs)}
        for key in HEADLINE:
            row[key] = _mean_sd([r.get(key) for r in rs])
        row["nndr_ok"] = _nndr_ok(row)
        table.append(row)
    curves: dict[str, Any] = {}
    for r in ok:
        if r["strategy"] in ("fedavg", "two_step_bn", "sd_sharing") and r["seed"] == min(grid.seeds):
            curves.setdefault(r["generator"], []).append(
                {"label": f"{r['strategy']} {r['layout']} {r['scenario']}", "rounds": r.get("rounds", [])}
            )
    references: dict[str, Any] = {}
    for r in ok:
        if r["strategy"] in ("centralized", "local") and r["seed"] == min(grid.seeds):
            ref = references.setdefault(r["generator"], {})
            for entry in r.get("rounds", []):  # in round order: each label keeps its last round
                label = "centralized" if r["strategy"] == "centralized" else str(entry.get("label") or "local")
                ref[f"{label} ({r['layout']}, {r['scenario']})" if r["strategy"] == "local" else label] = entry
    site_alone = _site_alone(ok)
    consistency = [
        {"slug": r["slug"], "generator": r["generator"], "strategy": r["strategy"], "layout": r["layout"],
         "scenario": r["scenario"], **(r.get("logrank") or {}), "snapshots": r.get("snapshot_logrank", [])}
        for r in ok if r["seed"] == min(grid.seeds)
    ]
    return {
        "grid": grid.name,
        "n_runs": len(records),
        "n_failed": len([r for r in records if r.get("status") != "finished"]),
        "failed": [{"slug": r["slug"], "error": r.get("error")} for r in records if r.get("status") != "finished"],
        "table": table,
        "curves": curves,
        "references": references,
        "site_alone": site_alone,
        "survival_consistency": consistency,
        "definitions": {
            "csf": "clinical synthetic fidelity (DESIGN.md section 5), higher is better",
            "gsf": "genomic synthetic fidelity (DESIGN.md section 5), higher is better",
            "nndr_p5": "5th percentile of synthetic-to-training NNDR (Gower); nndr_p5_holdout is the same for holdout rows",
            "dcr_share": "share of synthetic rows closer to training than to an equal-sized holdout sample (0.5 ideal)",
            "mia_auc": "distance-based membership-inference AUC (0.5 = members cannot be told apart)",
            "tstr_cindex": "C-index on real data of a Cox model trained on synthetic data (trtr: trained on real)",
            "mean_sd": "mean and sample standard deviation over seeds (n = number of seeds)",
        },
    }


def _nndr_ok(row: Mapping[str, Any]) -> bool | None:
    syn, hold = row["nndr_p5"]["mean"], row["nndr_p5_holdout"]["mean"]
    if syn is None or hold is None:
        return None
    return bool(syn >= hold)
