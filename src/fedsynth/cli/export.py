"""The ``export`` command: a released synthetic cohort with its data dictionary, data card and teaching kit."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from fedsynth.cli._common import console, handle_errors, print_json


class Purpose(str, Enum):
    teaching = "teaching"


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


SOURCE_ARG = typer.Argument(..., help="A run directory, a 'fedsynth fit' output folder, or a model/ folder.",
                            show_default=False)
PURPOSE_OPT = typer.Option(Purpose.teaching, "--purpose", help="What the export is for (decides the extra files).")
N_OPT = typer.Option(..., "--n", help="Synthetic rows to release.", show_default=False)
OUT_OPT = typer.Option(..., "--out", "-o", help="Folder to write (CSV, dictionary, card, teaching kit).",
                       show_default=False)
SEED_OPT = typer.Option(0, "--seed", help="Seed of the sample, the evaluation and the teaching split.")
REAL_OPT = typer.Option(None, "--real", help="The real rows the model was trained on (CSV); default: reloaded "
                                             "from the run's or fit's configuration.")
HOLDOUT_OPT = typer.Option(None, "--holdout", help="Real rows the model never saw (CSV); with --real.")
ALLOW_OPT = typer.Option(None, "--allow-flagged", metavar="REASON",
                         help="Release even if the privacy gate flags the cohort; REASON is written in the card.")
LICENCE_OPT = typer.Option(None, "--licence", help="Licence of a source cohort fedsynth does not know.")
ATTRIBUTION_OPT = typer.Option(None, "--attribution", help="Whom to credit for a source cohort fedsynth does not know.")
EXACT_OPT = typer.Option(0.0, "--max-exact-copies-excess", help="Gate: exact copies allowed above the holdout's rate (share).")
NNDR_OPT = typer.Option(None, "--nndr-p5-margin", help="Gate: NNDR p5 margin below the holdout's (default: 2 bootstrap SE).")
MIA_OPT = typer.Option(0.6, "--max-mia-auc", help="Gate: largest membership-inference AUC released.")
DATA_DIR_OPT = typer.Option(None, "--data-dir", help="Folder holding cohort folders (default: $FEDSYNTH_DATA_DIR).")
FORMAT_OPT = typer.Option(OutputFormat.text, "--format", help="text for people, json for machines.")


def register(app: typer.Typer) -> None:
    """Add the ``export`` command to ``app``."""
    app.command("export")(export)


@handle_errors
def export(
    source: Path = SOURCE_ARG,
    purpose: Purpose = PURPOSE_OPT,
    n: int = N_OPT,
    out: Path = OUT_OPT,
    seed: int = SEED_OPT,
    real: Path | None = REAL_OPT,
    holdout: Path | None = HOLDOUT_OPT,
    allow_flagged: str | None = ALLOW_OPT,
    licence: str | None = LICENCE_OPT,
    attribution: str | None = ATTRIBUTION_OPT,
    max_exact_copies_excess: float = EXACT_OPT,
    nndr_p5_margin: float | None = NNDR_OPT,
    max_mia_auc: float = MIA_OPT,
    data_dir: Path | None = DATA_DIR_OPT,
    format: OutputFormat = FORMAT_OPT,
) -> None:
    """Release N synthetic rows from a model as a dataset that explains itself (behind the privacy gate)."""
    from fedsynth.errors import Problem, ValidationError
    from fedsynth.evaluation.gate import GateThresholds
    from fedsynth.experiments.export import export_cohort, resolve_source

    thresholds = GateThresholds(exact_copies_margin=max_exact_copies_excess, nndr_p5_margin=nndr_p5_margin,
                                mia_auc_above=max_mia_auc)
    src = resolve_source(source)
    real_df = holdout_df = None
    if (real is None) != (holdout is None):
        raise ValidationError("Command line", [Problem("--real/--holdout", "only one was given",
                                                       fix="give both, or neither to reload them from the run")])
    if real is not None and holdout is not None:
        from fedsynth.cli.evaluate import _read
        from fedsynth.generators import load_generator

        schema = load_generator(src.model_dir).schema
        real_df, holdout_df = _read(real, schema, "--real"), _read(holdout, schema, "--holdout")
    result = export_cohort(
        src, n_samples=n, out_dir=out, purpose=purpose.value, random_state=seed, real_data=real_df,
        holdout_data=holdout_df, real_files=[p.name for p in (real, holdout) if p is not None],
        thresholds=thresholds, allow_flagged=allow_flagged, licence=licence, attribution=attribution,
        data_dir=data_dir,
    )
    card = result.card
    summary = {
        "out": str(result.out_dir), "files": {k: str(v) for k, v in result.files.items()},
        "gate": result.gate.to_dict(), "csf": card["fidelity"]["csf"], "gsf": card["fidelity"]["gsf"],
        "licence": card["licence"]["licence_id"] or card["licence"]["licence"],
    }
    if format is OutputFormat.json:
        print_json(summary)
        return
    gate = "passed" if result.gate.passed else f"[red]flagged[/] ({result.gate.explain()}); released because: {allow_flagged}"
    console.print(f"Exported {card['rows']:,} synthetic rows to {result.out_dir}: synthetic.csv, data dictionary, "
                  f"card.html/.md/.json" + (", train/test split and notebook" if "notebook" in result.files else "") + ".")
    console.print(f"CSF {_fmt(card['fidelity']['csf'])}, GSF {_fmt(card['fidelity']['gsf'])}; privacy gate {gate}.")
    console.print(f"Licence: {summary['licence']}. Open {result.files['card_html']}.")


def _fmt(v: float | None) -> str:
    return "undefined" if v is None else f"{v:.3f}"
