"""The ``evaluate`` command: score a synthetic CSV against the real one and write report.json and report.html."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

import typer

from fedsynth.cli._common import console, err_console, handle_errors, print_json


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


class CoxEngine(str, Enum):
    batched = "batched"
    lifelines = "lifelines"


REAL_OPT = typer.Option(..., "--real", help="The real training data (CSV).", show_default=False)
SYN_OPT = typer.Option(..., "--synthetic", help="The synthetic data (CSV).", show_default=False)
OUT_OPT = typer.Option(..., "--out", help="Folder for report.json and report.html.", show_default=False)
HOLDOUT_OPT = typer.Option(None, "--holdout", help="Real rows kept out of training (CSV): privacy baselines and TSTR.")
COHORT_OPT = typer.Option(None, "--cohort", "-c", help="Validate against this registered cohort's schema, e.g. mds-iwgpm.")
SCHEMA_OPT = typer.Option(None, "--schema", help="A schema YAML (instead of --cohort).")
SEED_OPT = typer.Option(0, "--seed", help="Seed of every random choice of the evaluation.")
FORMAT_OPT = typer.Option(OutputFormat.text, "--format", help="text for people, json for machines.")
COX_OPT = typer.Option(
    CoxEngine.batched, "--cox-engine",
    help="How Cox models are fitted: batched (fedsynth, all models at once) or lifelines (one CoxPHFitter each, "
         "~10 s slower on the MDS cohort); the two agree to 1e-6.",
)


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` command to ``app``."""
    app.command("evaluate")(evaluate)


@handle_errors
def evaluate(
    real: Path = REAL_OPT,
    synthetic: Path = SYN_OPT,
    out: Path = OUT_OPT,
    holdout: Path | None = HOLDOUT_OPT,
    cohort: str | None = COHORT_OPT,
    schema: Path | None = SCHEMA_OPT,
    seed: int = SEED_OPT,
    format: OutputFormat = FORMAT_OPT,
    cox_engine: CoxEngine = COX_OPT,
) -> None:
    """Score SYNTHETIC against REAL (SAFE-style CSF, GSF, fidelity, survival, privacy); write report.json and report.html."""
    from fedsynth.errors import Problem, ValidationError

    if (cohort is None) == (schema is None):
        raise ValidationError(
            "Command line",
            [Problem("schema", "give exactly one of --cohort NAME or --schema FILE", "e.g. --cohort mds-iwgpm")],
        )
    table_schema = _schema(cohort, schema)
    real_df = _read(real, table_schema, "--real")
    syn_df = _read(synthetic, table_schema, "--synthetic")
    hold_df = _read(holdout, table_schema, "--holdout") if holdout is not None else None

    from fedsynth.evaluation import evaluate as run_evaluation

    report = run_evaluation(
        real_df, syn_df, table_schema, holdout_data=hold_df, random_state=seed, cox_engine=cox_engine.value
    )
    out.mkdir(parents=True, exist_ok=True)
    json_path = report.to_json(out / "report.json")
    html_path = report.to_html(out / "report.html", title=f"Evaluation of {synthetic.name}")
    summary = _summary(report.to_dict(), json_path, html_path)
    if format is OutputFormat.json:
        print_json(summary)
        return
    _print_summary(summary)


def _schema(cohort: str | None, schema_file: Path | None) -> Any:
    from fedsynth.cohort.schema import TableSchema

    if schema_file is not None:
        return TableSchema.from_yaml(schema_file)
    from fedsynth.cohort.datasets import NAMED_COHORTS
    from fedsynth.errors import Problem, ValidationError

    if cohort not in NAMED_COHORTS:
        raise ValidationError(
            "Command line", [Problem("--cohort", f"unknown cohort {cohort!r}", ", ".join(sorted(NAMED_COHORTS)))]
        )
    return NAMED_COHORTS[cohort].schema_factory()


def _read(path: Path, schema: Any, option: str) -> Any:
    """Read a CSV, validate it against the schema's data columns (ids and sites may be absent), coerce and
    recompute derived columns.

    A constant or all-missing column is no reason to refuse scoring (a holdout sample may lack a rare
    mutation; a poor generator may emit a constant column): those findings are left out, every other
    problem is reported at once.
    """
    from fedsynth.cohort.validation import conform, read_csv_checked

    data_schema = schema.select(schema.data_columns)
    raw = read_csv_checked(path)
    keep = [c for c in raw.columns if c in data_schema and data_schema[c].derived is None]
    # conform: the one loading rule (codes, time zero = half a day with a note, every problem at once)
    done = conform(raw[keep], data_schema, subject=f"{option} file {path.name!r}", unusable="keep", canonical_01=True)
    for note in done.notes:
        err_console.print(f"Note ({option}): {note}", markup=False, highlight=False)
    return done.data


def _summary(rep: dict[str, Any], json_path: Path, html_path: Path) -> dict[str, Any]:
    pv = rep["privacy"]
    return {
        "csf": rep["scores"]["csf"]["value"],
        "gsf": rep["scores"]["gsf"]["value"],
        "csf_components": {k: v["value"] for k, v in rep["scores"]["csf"]["components"].items()},
        "gsf_components": {k: v["value"] for k, v in rep["scores"]["gsf"]["components"].items()},
        "column_fidelity": rep["fidelity"]["mean_similarity"],
        "pair_fidelity": rep["fidelity"]["pairs"]["mean_similarity"],
        "detection_auc": (rep["fidelity"].get("detection") or {}).get("auc"),
        "survival_effect_fidelity": rep["survival_effects"].get("fidelity"),
        "survival_flags": rep["survival_effects"].get("flags", []),
        "survival_counts": rep["survival_effects"].get("counts", {}),
        "endpoint_rules": rep["survival_effects"].get("endpoint_rules", []),
        "privacy": {
            "nndr": pv["nndr"]["synthetic"], "nndr_holdout": pv["nndr"]["holdout"], "dcr_share": pv["dcr_share"],
            "exact_copies": pv["exact_copies"], "exact_copies_counts": pv.get("exact_copies_counts"),
            "mia_auc": pv["mia_auc"], "flags": pv["flags"],
        },
        "rows": rep["info"]["rows"],
        "seconds": rep["info"]["timings_s"]["total"],
        "report_json": str(json_path),
        "report_html": str(html_path),
    }


def _f(v: Any) -> str:
    return "—" if v is None else f"{v:.3f}"


def _print_summary(s: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"Evaluation ({s['rows']['synthetic']:,} synthetic vs {s['rows']['real']:,} real rows)")
    table.add_column("score")
    table.add_column("value", justify="right")
    table.add_row("[bold]CSF[/]", f"[bold]{_f(s['csf'])}[/]")
    from fedsynth.evaluation.scores import LABELS  # direction-only components are not called agreement

    for k, v in s["csf_components"].items():
        table.add_row(f"  {LABELS.get(k, k)}", _f(v))
    table.add_row("[bold]GSF[/]", f"[bold]{_f(s['gsf'])}[/]")
    for k, v in s["gsf_components"].items():
        table.add_row(f"  {LABELS.get(k, k)}", _f(v))
    table.add_row("column fidelity", _f(s["column_fidelity"]))
    table.add_row("pair fidelity", _f(s["pair_fidelity"]))
    table.add_row("detection AUC", _f(s["detection_auc"]))
    table.add_row("[bold]survival-effect fidelity[/]", f"[bold]{_f(s['survival_effect_fidelity'])}[/]")
    for rule in s["endpoint_rules"]:
        table.add_row(f"  rows breaking {rule['rule']}", str(rule["violations_synthetic"]))
        if rule.get("tied_real") is not None and rule.get("tied_synthetic") is not None:
            shares = f"{rule['tied_synthetic']:.2f} / {rule['tied_real']:.2f}"
            table.add_row("  both times equal, synthetic / real", f"[red]{shares}[/]" if rule.get("tied_flagged")
                          else shares)
    p = s["privacy"]
    base = p["nndr_holdout"] or {}
    table.add_row("NNDR mean / p5", f"{_f(p['nndr']['mean'])} / {_f(p['nndr']['p5'])}")
    table.add_row("  holdout baseline", f"{_f(base.get('mean'))} / {_f(base.get('p5'))}")
    table.add_row("DCR share", _f(p["dcr_share"]))
    table.add_row("exact copies", "—" if p["exact_copies"] is None else f"{100 * p['exact_copies']:.2f}%")
    c = p.get("exact_copies_counts")
    if c:
        table.add_row("  of shared records with no number (set apart)", f"{c['copies_shared']} of {c['synthetic_rows']} rows")
        if c["holdout_rows"]:
            table.add_row("  holdout baseline", f"{c['holdout_copies'] - c['holdout_copies_shared']} of "
                          f"{c['holdout_rows']} rows (+ {c['holdout_copies_shared']} set apart)")
    table.add_row("membership-inference AUC", _f(p["mia_auc"]))
    console.print(table)
    flags = p["flags"]
    console.print(f"Privacy flags: [red]{', '.join(flags)}[/]" if flags else "Privacy flags: [green]none[/]")
    sflags = s["survival_flags"]
    console.print(f"Survival flags ({len(sflags)}; all in the report): [red]{'; '.join(sflags[:5])}"
                  f"{'; ...' if len(sflags) > 5 else ''}[/]" if sflags else "Survival flags: [green]none[/]")
    sc = s.get("survival_counts") or {}
    if sc.get("effects") and sc.get("expected_lost_population") is not None:
        console.print(f"Real-significant Cox effects lost: {sc['effects_lost']} of {sc['effects']} (expected by "
                      f"chance: about {sc['expected_lost_by_chance']:.1f} for a generator reproducing these "
                      f"patients' estimates exactly, {sc['expected_lost_population']:.1f} for one faithful to their "
                      "population)", markup=False, highlight=False)
    console.print(f"Wrote {s['report_json']} and {s['report_html']} ({s['seconds']:.1f} s)")
