"""Commands that train a generator and draw from it: ``fedsynth fit`` and ``fedsynth sample``."""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any

import typer

from fedsynth.cli._common import console, err_console, handle_errors, load_input

DATA_ARG = typer.Argument(None, help="A CSV file (instead of --cohort).", show_default=False)
COHORT_OPT = typer.Option(None, "--cohort", "-c", help="A registered cohort, e.g. mds-iwgpm.")
DATA_DIR_OPT = typer.Option(None, "--data-dir", help="Folder holding cohort folders (default: $FEDSYNTH_DATA_DIR).")
SCHEMA_OPT = typer.Option(None, "--schema", help="A schema YAML to use instead of the inferred one.")
GENERATOR_OPT = typer.Option(..., "--generator", "-g", help="bayesian_network, ctgan or vae_bgm.")
FIT_OUT_OPT = typer.Option(..., "--out", "-o", help="Output folder: model/, synthetic.csv, report.json/html.")
MODEL_ARG = typer.Argument(..., help="A model/ folder written by 'fedsynth fit' (or a run).")
SAMPLE_N_OPT = typer.Option(..., "--n", help="Rows to draw.")
SAMPLE_OUT_OPT = typer.Option(..., "--out", "-o", help="CSV file to write.")
SET_OPT = typer.Option(None, "--set", help="A generator parameter, key=value (repeatable).")
FIT_SEED_OPT = typer.Option(0, "--seed", help="Seed of the train/holdout split, the training and the sample.")
FIT_N_OPT = typer.Option(None, "--n", help="Synthetic rows to draw (default: as many as training rows).")
HOLDOUT_OPT = typer.Option(0.1, "--holdout-fraction", help="Share of rows held out (not trained on).")
REPORT_OPT = typer.Option(True, "--report/--no-report", help="Score the synthetic cohort (report.json/html).")
WHERE_OPT = typer.Option(None, "--where", help="A pandas query every row must meet, e.g. \"AGE >= 65\".")
CONDITION_OPT = typer.Option(
    None, "--condition", help="COL=VALUE every row must have (repeat a column to accept several values)."
)
SAMPLE_SEED_OPT = typer.Option(0, "--seed", help="Random seed; the same seed gives the same rows.")
MAX_TRIES_OPT = typer.Option(
    10, "--max-tries", min=1,
    help="With --condition/--where: batches drawn before giving up (each batch is larger as the share of "
    "rows that meet the conditions shrinks).",
)


def register(app: typer.Typer) -> None:
    """Add ``fit`` and ``sample`` to ``app``."""
    app.command("fit")(fit)
    app.command("sample")(sample)


def parse_settings(items: list[str], generator: str) -> dict[str, Any]:
    """``key=value`` pairs (values read as YAML, so numbers and booleans work), checked against the generator.

    Unknown names and malformed items are all reported at once, with the valid names.
    """
    import yaml

    from fedsynth.errors import Problem, ValidationError
    from fedsynth.generators import generator_class

    cls = generator_class(generator)
    sig = inspect.signature(cls.__init__)
    valid = [
        n for n, p in sig.parameters.items()
        if n not in ("self", "schema", "domain") and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]
    problems = []
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(Problem(f"--set {item!r}", "is not of the form key=value", fix="e.g. --set max_indegree=2"))
            continue
        if key not in valid:
            problems.append(Problem(f"--set {key}", f"is not a parameter of {generator}", ", ".join(valid)))
            continue
        try:
            params[key] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            problems.append(Problem(f"--set {key}", "has a value that is not valid YAML", fix="quote strings"))
    if problems:
        raise ValidationError("Generator settings", problems)
    return params


def parse_conditions(items: list[str], schema: Any, where: str | None = None, domain: Any = None) -> Any:
    """Check ``--condition`` items and ``--where`` against the model (see
    :func:`fedsynth.cohort.conditions.check_sampling_inputs`); ``domain`` gives training counts and ranges."""
    from fedsynth.cohort.conditions import check_sampling_inputs, domain_limits

    observed, bounds = domain_limits(domain)
    return check_sampling_inputs(list(items), where, schema, observed=observed, bounds=bounds)


@handle_errors
def fit(
    data: Path | None = DATA_ARG,
    cohort: str | None = COHORT_OPT,
    data_dir: Path | None = DATA_DIR_OPT,
    schema: Path | None = SCHEMA_OPT,
    generator: str = GENERATOR_OPT,
    settings: list[str] | None = SET_OPT,
    seed: int = FIT_SEED_OPT,
    n: int | None = FIT_N_OPT,
    holdout_fraction: float = HOLDOUT_OPT,
    out: Path = FIT_OUT_OPT,
    report: bool = REPORT_OPT,
) -> None:
    """Train a generator centrally on the seeded training split and write the model and a synthetic cohort."""
    from fedsynth.cohort.io import write_csv
    from fedsynth.cohort.partition import split_with_notes
    from fedsynth.experiments.export import write_fit_manifest
    from fedsynth.generators import generator_class, make_generator

    params = parse_settings(list(settings or []), generator)
    if "random_state" in inspect.signature(generator_class(generator).__init__).parameters:
        params.setdefault("random_state", seed)
    loaded = load_input(data, cohort, data_dir, schema)
    table_schema = loaded.schema
    for note in loaded.notes:
        console.print(f"Note: {note}", markup=False, highlight=False)
    train, holdout, split_notes = split_with_notes(
        loaded.data, table_schema, holdout_fraction=holdout_fraction, random_state=seed
    )
    for note in split_notes:
        console.print(f"Note: {note}", markup=False, highlight=False)
    gen = make_generator(generator, table_schema, **params)
    started = time.perf_counter()
    gen.fit(train[table_schema.model_columns])
    fit_seconds = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    gen.save(out / "model")
    write_fit_manifest(out, cohort=loaded, generator=generator, params=params, seed=seed,
                       holdout_fraction=holdout_fraction, n_train=len(train), n_holdout=len(holdout),
                       schema_file=schema, fit_seconds=fit_seconds)
    n_rows = int(n) if n is not None else len(train)
    synthetic = gen.sample(n_rows, random_state=seed)
    write_csv(synthetic, out / "synthetic.csv", gen.schema)
    console.print(
        f"Fitted {generator} on {len(train):,} training rows ({len(holdout):,} held out) in {fit_seconds:.1f} s; "
        f"wrote {out / 'model'} and {len(synthetic):,} synthetic rows to {out / 'synthetic.csv'}."
    )
    if not report:
        return
    from fedsynth.evaluation import evaluate

    holdout_data = holdout
    if len(holdout) < 2:
        # privacy baselines compare holdout rows with each other: one row is not enough
        console.print(f"Note: {len(holdout)} held-out row: the report has no holdout-based privacy baselines.")
        holdout_data = None
    result = evaluate(train, synthetic, table_schema, holdout_data=holdout_data, random_state=seed)
    result.to_json(out / "report.json")
    result.to_html(out / "report.html")
    console.print(f"CSF {_fmt(result.csf)}, GSF {_fmt(result.gsf)}, survival-effect fidelity "
                  f"{_fmt(result.survival_effect_fidelity)}; report: {out / 'report.html'} (and report.json).")


def _fmt(value: Any) -> str:
    import math

    return f"{value:.3f}" if isinstance(value, (int, float)) and not math.isnan(value) else "undefined"


@handle_errors
def sample(
    model_dir: Path = MODEL_ARG,
    n: int = SAMPLE_N_OPT,
    where: str | None = WHERE_OPT,
    condition: list[str] | None = CONDITION_OPT,
    seed: int = SAMPLE_SEED_OPT,
    out: Path = SAMPLE_OUT_OPT,
    max_tries: int = MAX_TRIES_OPT,
) -> None:
    """Draw synthetic rows from a saved model, optionally under conditions, and write them as CSV.

    Conditions and the ``where`` expression are checked against the model before any sampling: every
    problem is listed at once, and a condition on a value no training row holds is said.
    """
    from fedsynth.cohort.io import write_csv
    from fedsynth.errors import FedsynthError
    from fedsynth.experiments.card import write_short_card
    from fedsynth.generators import ConditionError, load_generator, survival_notes

    gen = load_generator(model_dir)
    request = parse_conditions(list(condition or []), gen.schema, where, getattr(gen, "domain", None))
    survival = survival_notes(gen, under_condition=bool(request.conditions) or request.where is not None)
    if survival:
        survival.append("Evaluate the rows against real data (fedsynth evaluate) before relying on their survival.")
    for note in [*request.notes, *survival]:
        err_console.print(f"Warning: {note}", markup=False, highlight=False)
    try:
        synthetic = gen.sample(
            n, random_state=seed, conditions=request.conditions or None, where=request.where, max_tries=max_tries
        )
    except ConditionError as exc:
        # The generator speaks of its max_tries parameter; on the command line it is --max-tries.
        text = str(exc).replace("raise max_tries", f"raise --max-tries (now {max_tries})")
        raise FedsynthError(text) from None
    write_csv(synthetic, out, gen.schema)
    card = write_short_card(out, model_dir, n_samples=len(synthetic), random_state=seed,
                            conditions=request.conditions, where=request.where)
    console.print(f"Wrote {len(synthetic):,} rows from {gen.name} to {out} (data card: {card.name}).")
