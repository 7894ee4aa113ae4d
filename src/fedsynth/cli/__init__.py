"""The ``fedsynth`` command line: one thin function per command; library errors become clean messages."""

from __future__ import annotations

import importlib
import os

import typer

from fedsynth.cli import cohort as _cohort

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

_cohort.register(app)

# Commands contributed by other parts; each module exposes register(app) and imports heavy libraries lazily.
for _module in ("fedsynth.cli.evaluate", "fedsynth.cli.generate", "fedsynth.cli.run", "fedsynth.cli.grid"):
    try:
        importlib.import_module(_module).register(app)
    except ModuleNotFoundError as _exc:  # a part not installed in this build
        if _exc.name != _module:
            raise


def main() -> None:
    """Console-script entry point."""
    app()
