"""The ``fedsynth`` command line: one thin function per command; library errors become clean messages."""

from __future__ import annotations

import inspect
import os

import typer

from fedsynth.cli import arm, cohort, deploy, evaluate, export, generate, grid, run

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

app = typer.Typer(
    name="fedsynth",
    help=(
        "Federated synthetic patient cohorts: train generators across hospital sites without moving records, "
        "and score what they release (fidelity, clinical utility, privacy)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each command module exposes register(app) and imports heavy libraries inside its commands, so that
# `fedsynth --help` stays fast.
for _module in (cohort, evaluate, generate, arm, run, grid, export, deploy):
    _module.register(app)


def _paragraphs(doc: str) -> str:
    """A command's docstring as ``--help`` should show it: Typer 0.20's rich help keeps the wrapped lines of every
    paragraph after the first as line breaks, so each paragraph's lines are joined here (blank lines stay)."""
    return "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(doc).split("\n\n"))


def _reflow_help(typer_app: typer.Typer) -> None:
    for info in typer_app.registered_commands:
        doc = info.help or (info.callback.__doc__ if info.callback is not None else None)
        if doc:
            info.help = _paragraphs(doc)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _reflow_help(group.typer_instance)


_reflow_help(app)


def main() -> None:
    """Console-script entry point."""
    app()
