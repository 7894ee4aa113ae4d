"""``fedsynth grid``: many runs, one comparison, one progress display."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer

from fedsynth.cli._common import console, handle_errors, print_json


def register(app: typer.Typer) -> None:
    app.command("grid")(grid)


@handle_errors
def grid(
    config: Path = typer.Argument(..., help="A grid YAML, e.g. configs/grid-smoke.yaml."),
    out: Path = typer.Option(..., "--out", help="Folder for runs/, summary.json and summary.html."),
    plan_only: bool = typer.Option(False, "--plan", help="List the runs the grid would make, run nothing."),
    format: str = typer.Option("text", "--format", help="text or json"),
) -> None:
    """Run generators x strategies x site layouts x scenarios x seeds (+ baselines).

    A finished run is reused only when its config, data and fedsynth version are unchanged (otherwise it is
    rerun, and the grid says why); an interrupted run is resumed from its last checkpoint.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fedsynth.experiments.grid import load_grid_config, plan, run_grid

    cfg = load_grid_config(config)
    if plan_only:
        runs = plan(cfg)
        if format == "json":
            print_json([r.slug for r in runs])
        else:
            for r in runs:
                console.print(r.slug)
            console.print(f"{len(runs)} runs")
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task("grid", total=None)

        def on_event(event: str, payload: Mapping[str, Any]) -> None:
            if event == "grid":
                bar.update(task, total=payload["n_runs"])
            elif event in ("reused", "finished", "failed"):
                bar.advance(task)
                note = {"reused": f"reused ({payload.get('reason', '')})", "finished": f"{payload.get('seconds', 0):.0f}s",
                        "failed": payload.get("error", "")}[event]
                bar.console.print(f"  {payload['slug']}: {note}", markup=False)
            elif event == "run":
                bar.update(task, description=f"grid: {payload['slug']}")
                if payload.get("reason") not in (None, "not run yet"):
                    bar.console.print(f"  {payload['slug']}: {payload['reason']}", markup=False)

        try:
            result = run_grid(cfg, out, progress=on_event)
        except KeyboardInterrupt as exc:
            from fedsynth.experiments.run_state import RunInterrupted

            bar.console.print("Interrupted; the current run is recorded as interrupted and resumes on the next "
                              "fedsynth grid.", markup=False)
            from fedsynth.cli.run import exit_now_if_threads_linger

            code = exc.exit_code if isinstance(exc, RunInterrupted) else 130
            exit_now_if_threads_linger(code)
            raise typer.Exit(code) from None
    if format == "json":
        print_json({"summary_json": str(result.summary_json), "summary_html": str(result.summary_html),
                    "runs": [{k: r.get(k) for k in ("slug", "status", "csf", "gsf")} for r in result.runs]})
        return
    console.print(f"Summary: {result.summary_html}\n         {result.summary_json}")
