"""``fedsynth arm``: a synthetic control arm drawn under eligibility criteria, with its report."""

from __future__ import annotations

from pathlib import Path

import typer

from fedsynth.cli._common import console, err_console, handle_errors

CRITERIA_ARG = typer.Argument(..., help="Eligibility criteria (YAML; see configs/arms/).")
MODEL_ARG = typer.Argument(..., help="A model/ folder, a 'fedsynth fit' output folder or a run directory.")
N_OPT = typer.Option(..., "--n", min=1, help="Patients in the arm.")
OUT_OPT = typer.Option(..., "--out", "-o", help="Folder for arm.csv, arm.card.json, arm_report.json/html.")
REFERENCE_OPT = typer.Option(
    None, "--reference", help="CSV of real eligible patients (or a trial's arm) to compare with; used as given.")
POST_OPT = typer.Option(False, "--include-post-baseline", help="Keep columns flagged baseline: false in the arm.")
SEED_OPT = typer.Option(0, "--seed", help="Random seed; the same seed and draw give the same arm.")
MAX_SECONDS_OPT = typer.Option(120.0, "--max-seconds", min=0.1, help="Time bound of rejection sampling (seconds).")
DRAW_OPT = typer.Option(
    "balanced", "--draw", help="balanced: the arm is taken from 10 times as many draws by systematic sampling along "
    "an endpoint, so its curve follows the model's with less of one draw's noise; independent: plain draws.")
ALONG_OPT = typer.Option(
    None, "--along", help="The endpoint a balanced arm follows (default: the schema's first); balanced draws only.")


def register(app: typer.Typer) -> None:
    """Add ``arm`` to ``app``."""
    app.command("arm")(arm)


@handle_errors
def arm(
    criteria_file: Path = CRITERIA_ARG,
    model: Path = MODEL_ARG,
    n: int = N_OPT,
    out: Path = OUT_OPT,
    reference: Path | None = REFERENCE_OPT,
    include_post_baseline: bool = POST_OPT,
    seed: int = SEED_OPT,
    max_seconds: float = MAX_SECONDS_OPT,
    draw: str = DRAW_OPT,
    along: str | None = ALONG_OPT,
) -> None:
    """Draw a synthetic control arm under eligibility criteria and write it with its report.

    Before sampling it says how many training patients met the criteria, from the counts the model kept
    (or that this is not known), and warns when they are none or few.
    """
    import json

    from fedsynth.cli.generate import parse_conditions
    from fedsynth.cohort.criteria import read_criteria
    from fedsynth.experiments.arm import (
        check_draw,
        describe_draw,
        draw_arm,
        read_reference,
        summary_lines,
        training_count,
        write_arm,
    )
    from fedsynth.experiments.export import resolve_source
    from fedsynth.generators import load_generator, survival_notes

    source = resolve_source(model)
    gen = load_generator(source.model_dir)
    check_draw(gen.schema, draw, along)
    criteria = read_criteria(criteria_file, gen.schema)
    domain = getattr(gen, "domain", None)
    request = parse_conditions(criteria.condition_items(), gen.schema, criteria.where(gen.schema), domain)
    ref = read_reference(reference, gen.schema) if reference is not None else None
    count = training_count(criteria, gen.schema, domain)
    console.print(f"Training patients who met the criteria: {count.shown} ({count.source}).",
                  markup=False, highlight=False)
    model_notes = survival_notes(gen, under_condition=True)
    if model_notes:
        model_notes.append("The comparison with the reference below shows whether this arm is affected."
                           if ref is not None else
                           "Compare the arm with real eligible patients (--reference FILE) before relying on its "
                           "survival.")
    for note in [*count.warnings, *request.notes, *model_notes]:
        err_console.print(f"Warning: {note}", markup=False, highlight=False)
    rows = draw_arm(gen, request, n, random_state=seed, max_seconds=max_seconds,
                    include_post_baseline=include_post_baseline, draw=draw, endpoint=along)
    paths = write_arm(out, rows, gen.schema, model_dir=source.model_dir, criteria=criteria, request=request,
                      count=count, random_state=seed, reference=ref, notes=[*request.notes, *model_notes],
                      header={"draw": describe_draw(gen.schema, n, draw, along)})
    report = json.loads(paths["json"].read_text())
    for line in summary_lines(report):
        console.print(line, markup=False, highlight=False)
    console.print(f"Wrote {len(rows):,} arm rows to {paths['csv']}; report {paths['html']} (and {paths['json'].name}, "
                  f"data card {paths['card'].name}).", markup=False, highlight=False)
