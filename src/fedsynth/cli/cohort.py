"""Commands about data and configs: describe, partition, fetch, config validate."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from fedsynth.cli._common import console, handle_errors, load_input, print_json


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


DATA_ARG = typer.Argument(None, help="A CSV file (instead of --cohort).", show_default=False)
COHORT_OPT = typer.Option(None, "--cohort", "-c", help="A registered cohort, e.g. mds-iwgpm.")
DATA_DIR_OPT = typer.Option(None, "--data-dir", help="Folder holding cohort folders (default: $FEDSYNTH_DATA_DIR).")
SCHEMA_OPT = typer.Option(None, "--schema", help="A schema YAML to use instead of the inferred one.")
FORMAT_OPT = typer.Option(OutputFormat.text, "--format", help="text for people, json for machines.")
SCHEMA_OUT_OPT = typer.Option(None, "--schema-out", help="Write the (inferred) schema as YAML here.")
SITES_OPT = typer.Option("60,30,10", "--sites", help="Site proportions, e.g. 60,30,10 or 45,20,15,10,10.")
BY_OPT = typer.Option(None, "--by", help="Split by this column: one site per value (a centre column).")
DIRICHLET_OPT = typer.Option(None, "--dirichlet", help="Non-IID over --by with this Dirichlet alpha.")
SCENARIO_OPT = typer.Option("best", "--scenario", help="best (all sites hold all columns) or worst.")
HOLDOUT_OPT = typer.Option(0.1, "--holdout", help="Share of rows held out for privacy baselines and TSTR.")
SEED_OPT = typer.Option(0, "--seed", help="Seed for the split and the sites.")
PARTITION_OUT_OPT = typer.Option(..., "--out", help="Folder for <site>.csv, <site>.holdout.csv, holdout.csv, "
                                 "schema.yaml and partition.json.")
FETCH_COHORT_ARG = typer.Argument("mds-iwgpm", help="Registered cohort to fetch.")
OFFLINE_OPT = typer.Option(False, "--offline", help="Build from source files already placed in the target folder.")
CONFIG_FILE_ARG = typer.Argument(..., help="An experiment YAML, e.g. configs/smoke.yaml.")
SET_OPT = typer.Option([], "--set", help="Override a key, e.g. --set strategy.rounds=5.")

config_app = typer.Typer(help="Experiment configs.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("describe")(describe)
    app.command("partition")(partition)
    app.command("fetch")(fetch)
    app.command("cohorts")(cohorts)
    app.add_typer(config_app, name="config")


@handle_errors
def describe(
    data: Path | None = DATA_ARG,
    cohort: str | None = COHORT_OPT,
    data_dir: Path | None = DATA_DIR_OPT,
    schema: Path | None = SCHEMA_OPT,
    format: OutputFormat = FORMAT_OPT,
    schema_out: Path | None = SCHEMA_OUT_OPT,
) -> None:
    """Show the schema and a per-column summary of a cohort or CSV file (aggregates only)."""
    from fedsynth.cohort.datasets import summary_frame

    loaded = load_input(data, cohort, data_dir, schema)
    summary = summary_frame(loaded)
    if schema_out:
        loaded.schema.to_yaml(schema_out)
    if format is OutputFormat.json:
        print_json(
            {
                "name": loaded.name,
                "n_rows": len(loaded.data),
                "schema": loaded.schema.to_dict(),
                "columns": summary.to_dict(orient="records"),
                "notes": list(loaded.notes),
            }
        )
        return
    from rich.table import Table

    table = Table(title=f"{loaded.name}: {len(loaded.data):,} rows, {len(loaded.schema)} columns")
    for col in ("column", "kind", "role", "missing %", "distinct", "summary"):
        table.add_column(col, overflow="fold")
    for row in summary.itertuples(index=False):
        table.add_row(row.column, row.kind, row.role, f"{row.missing_pct:.1f}", str(row.distinct), row.summary)
    console.print(table)
    eps = ", ".join(f"{e.name} ({e.duration_col}, {e.event_col}; {e.time_unit})" for e in loaded.schema.endpoints)
    console.print(f"Survival endpoints: {eps or 'none found'}")
    post = loaded.schema.post_baseline_columns
    if post:
        console.print(f"Recorded after baseline (baseline: false): {', '.join(post)}", markup=False, highlight=False)
    for note in loaded.notes:
        console.print(f"Note: {note}", markup=False, highlight=False)
    if schema_out:
        console.print(f"Schema written to {schema_out} (every column of the file is in it: declared, or under 'drop:')")


@handle_errors
def partition(
    data: Path | None = DATA_ARG,
    cohort: str | None = COHORT_OPT,
    data_dir: Path | None = DATA_DIR_OPT,
    schema: Path | None = SCHEMA_OPT,
    sites: str = SITES_OPT,
    by: str | None = BY_OPT,
    dirichlet: float | None = DIRICHLET_OPT,
    scenario: str = SCENARIO_OPT,
    holdout: float = HOLDOUT_OPT,
    seed: int = SEED_OPT,
    out: Path = PARTITION_OUT_OPT,
    format: OutputFormat = FORMAT_OPT,
) -> None:
    """Split a cohort into a holdout and sites; write one CSV per site, each site's share of the holdout,
    holdout.csv and partition.json.

    Each site's own holdout (rows that train nothing, split as the sites were) is written beside its training
    file as <site>.holdout.csv: `fedsynth site start --data <site>.csv` scores privacy figures against it.
    """
    from fedsynth.cohort.partition import make_partition, parse_proportions

    loaded = load_input(data, cohort, data_dir, schema)
    if by is not None and dirichlet is None:
        method, props = "by_column", None
    elif dirichlet is not None:
        method, props = "dirichlet", parse_proportions(sites)
    else:
        method, props = "iid", parse_proportions(sites)
    part = make_partition(
        loaded.data, loaded.schema, proportions=props, method=method, by=by, alpha=dirichlet or 0.5,
        holdout_fraction=holdout, scenario=scenario, random_state=seed,
    )
    path = part.write(out)
    info = part.to_dict()
    notes = list(loaded.notes) + list(part.notes)
    if format is OutputFormat.json:
        print_json({**info, "notes": notes, "out": str(out)})
        return
    from rich.table import Table

    table = Table(title=f"{loaded.name}: {info['n_train']:,} training rows over {len(part.sites)} sites, {info['n_holdout']:,} held out")
    for col in ("site", "rows", "share", "holdout rows", "lacks"):
        table.add_column(col)
    for s in info["sites"]:
        held = "-" if s["n_holdout"] is None else f"{s['n_holdout']:,}"
        table.add_row(s["name"], f"{s['n_rows']:,}", f"{100 * s['share']:.1f}%", held, ", ".join(s["lacks"]) or "-")
    console.print(table)
    for note in notes:
        console.print(f"Note: {note}", markup=False, highlight=False)
    from fedsynth.cohort.partition import site_holdout_file

    console.print(f"Written to {out}:", markup=False, highlight=False)
    for s in part.sites:
        held = f", {site_holdout_file(s.name)} (its holdout)" if s.name in part.site_holdouts else ""
        console.print(f"  {s.name}.csv{held}", markup=False, highlight=False)
    console.print(f"  holdout.csv (every held-out row), schema.yaml, {path.name}", markup=False, highlight=False)


@handle_errors
def fetch(
    cohort: str = FETCH_COHORT_ARG,
    data_dir: Path | None = DATA_DIR_OPT,
    offline: bool = OFFLINE_OPT,
) -> None:
    """Download a public cohort's source files at a pinned commit, check them and build its CSV."""
    from fedsynth.cohort.datasets import fetch_cohort

    path = fetch_cohort(cohort, data_dir, offline=offline)
    console.print(f"Cohort {cohort!r} ready at {path} (checksum verified)")


@handle_errors
def cohorts(format: OutputFormat = FORMAT_OPT) -> None:
    """List the registered cohorts and where fedsynth looks for them."""
    from fedsynth.cohort.datasets import NAMED_COHORTS, cohort_path

    rows = [
        {"name": c.name, "description": c.description, "path": str(cohort_path(c.name)),
         "found": cohort_path(c.name).is_file(), "licence": c.licence, "citation": c.citation}
        for c in NAMED_COHORTS.values()
    ]
    if format is OutputFormat.json:
        print_json(rows)
        return
    for r in rows:
        status = "found" if r["found"] else "not found (see: fedsynth fetch)"
        console.print(f"[bold]{r['name']}[/]: {r['description']}\n  {r['path']} - {status}\n  Licence: {r['licence']}\n  Cite: {r['citation']}")


@config_app.command("validate")
@handle_errors
def config_validate(
    file: Path = CONFIG_FILE_ARG,
    set_: list[str] = SET_OPT,
    format: OutputFormat = FORMAT_OPT,
) -> None:
    """Check an experiment config; print the resolved config or every problem at once."""
    import yaml

    from fedsynth.experiments.config import load_config

    cfg = load_config(file, set_)
    if format is OutputFormat.json:
        print_json(cfg.to_yaml_dict())
        return
    console.print(f"[green]{file} is valid.[/] Resolved config:")
    for note in cfg.notes:
        console.print(f"Note: {note}", markup=False, highlight=False)
    console.print(yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False), markup=False, highlight=False)
