"""The ``fedsynth`` command line: one thin function per command; library errors become clean messages."""

from __future__ import annotations

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


def main() -> None:
    """Console-script entry point."""
    app()
