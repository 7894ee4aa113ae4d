"""``fedsynth run CONFIG``: one experiment into reports/<run-id>/, with a live progress display."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer

from fedsynth.cli._common import console, err_console, handle_errors, setup_logging


def register(app: typer.Typer) -> None:
    app.command("run")(run)


def _fmt(v: Any) -> str:
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, (int, float)) else str(v))


def _losses(site_metrics: Mapping[str, Mapping[str, float]]) -> str:
    parts = []
    for site, m in site_metrics.items():
        loss = {k: v for k, v in m.items() if "loss" in k}
        if loss:
            parts.append(f"{site} " + " ".join(f"{k.replace('_loss', '').removeprefix('loss_')}={v:.3g}" for k, v in loss.items()))
    return "; ".join(parts)


@handle_errors
def run(
    config: Path = typer.Argument(..., help="An experiment YAML, e.g. configs/demo.yaml."),
    set_: list[str] = typer.Option([], "--set", help="Override a key, e.g. --set strategy.rounds=5 (repeatable)."),
    out: Path | None = typer.Option(None, "--out", help="Parent folder of the run directory (default: output.dir, i.e. reports/)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log library progress to stderr."),
    federation: str | None = typer.Option(None, "--federation", help="Run on the deployed SuperLink of this Flower "
                                          "connection (see `fedsynth server start`), with `flwr run`."),
    superlink: str | None = typer.Option(None, "--superlink", help="With --federation: HOST:PORT to write into the "
                                         "connection entry."),
    root_cert: Path | None = typer.Option(None, "--root-cert", help="With --superlink: the CA certificate."),
    insecure: bool = typer.Option(False, "--insecure", help="With --superlink: the SuperLink runs without TLS."),
    num_sites: int | None = typer.Option(None, "--num-sites", help="With --federation: site nodes to wait for "
                                         "(default: the config's number of sites)."),
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue this interrupted run directory from its last checkpoint (same config)."
    ),
) -> None:
    """Train and evaluate one experiment; write config, manifest, snapshots, metrics, model and report.

    Ctrl-C or SIGTERM stops the run within seconds (exit 130 / 143) and records it as interrupted; continue it
    with --resume RUN_DIR.
    """
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from fedsynth.errors import Problem, ValidationError
    from fedsynth.experiments.config import load_config
    from fedsynth.experiments.run import run_experiment
    from fedsynth.experiments.run_state import RunInterrupted, read_manifest

    setup_logging(verbose)
    cfg = load_config(config, set_)
    if federation is not None:
        from fedsynth.cli.deploy import run_deployed

        run_deployed(cfg, federation=federation, out=out, superlink=superlink, root_cert=root_cert,
                     insecure=insecure, num_sites=num_sites, resume=resume)
        return
    if resume is not None:
        if read_manifest(resume) is None:
            raise ValidationError("--resume", [Problem(f"{str(resume)!r}", "is not a run directory (no readable manifest.json)",
                                                       "a folder fedsynth run wrote, e.g. reports/<run-id>")])
        cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"run_id": resume.name})})
        out = resume.parent
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    )
    task: dict[str, Any] = {}

    def on_event(event: str, payload: Mapping[str, Any]) -> None:
        if event == "start":
            if payload.get("resumed_from") is not None:
                console.print(f"Resuming {payload['run_id']} from checkpoint step {payload['resumed_from']} "
                              f"({payload.get('done', 0)} finished rounds kept)")
            sites = ", ".join(f"{s['name']} ({s['n_rows']} rows{', lacks ' + str(len(s['lacks'])) + ' cols' if s['lacks'] else ''})"
                              for s in payload["sites"])
            console.print(f"[bold]{payload['run_id']}[/]: {payload['strategy']} x {payload['generator']} over {sites}")
            for note in payload.get("notes") or ():  # what fedsynth decided on its own, said before it runs
                console.print(f"note: {note}", markup=False)
            task["id"] = progress.add_task("starting", total=payload["rounds"], completed=payload.get("done", 0))
        elif event == "phase":
            progress.update(task["id"], description=str(payload["phase"]))
        elif event in ("round", "reference"):
            what = "round" if event == "round" else "reference"
            line = (f"{what} {payload['label']} #{payload['round']}: CSF {_fmt(payload.get('csf'))}  "
                    f"GSF {_fmt(payload.get('gsf'))}  NNDR {_fmt(payload.get('nndr'))}  ({payload['train_seconds']:.1f}s)")
            losses = _losses(payload.get("site_metrics", {}))
            if losses:
                line += f"\n    losses: {losses}"
            if payload.get("left_out"):
                reasons = "; ".join(f"{k}: {v}" for k, v in payload["left_out"].items())
                line += f"\n    [yellow]left out: {escape(reasons)}[/]"
            progress.console.print(line)
            if event == "round":
                progress.advance(task["id"])

    try:
        with progress:
            result = run_experiment(cfg, out_dir=out, progress=on_event, resume=resume is not None)
    except KeyboardInterrupt as exc:
        code = exc.exit_code if isinstance(exc, RunInterrupted) else 130
        err_console.print(f"Interrupted ({exc.args[0] if exc.args else 'SIGINT'}); the run is recorded as interrupted "
                          "and its finished rounds were kept. Continue it with --resume RUN_DIR.", markup=False)
        exit_now_if_threads_linger(code)
        raise typer.Exit(code) from None
    console.print(f"Run directory: {result.run_dir}")
    console.print(f"Report: {result.report_html}")


def exit_now_if_threads_linger(code: int) -> None:
    """End the process with ``code`` at once when engine threads outlive an interrupted run.

    The run has already recorded its state, removed the sites' rows, stopped Ray and released its lock; what
    may remain are Flower's non-daemon worker threads, still waiting on a reply that will never come, which
    would hold the interpreter's exit for minutes.
    """
    import logging
    import os
    import sys
    import threading

    lingering = [t.name for t in threading.enumerate()
                 if t is not threading.main_thread() and t.is_alive() and not t.daemon]
    if lingering:
        logging.getLogger(__name__).info("exiting past %d lingering engine threads", len(lingering))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
