"""What every CLI command shares: one console, one error handler, one way to name the input data."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from fedsynth.errors import FedsynthError

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])

#: Exit code for bad input (a usage error, as click uses).
EXIT_BAD_INPUT = 2


def handle_errors(func: F) -> F:
    """Turn fedsynth's own errors (and pydantic's) into a clean message and exit code 2, with no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except FedsynthError as exc:
            _print_error(str(exc))
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except KeyboardInterrupt:
            err_console.print("Interrupted; finished artefacts were kept.")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _print_error(text: str) -> None:
    err_console.print("[bold red]Error:[/]", end=" ")
    err_console.print(text, markup=False, highlight=False)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def load_input(
    data: Path | None,
    cohort: str | None,
    data_dir: Path | None,
    schema_file: Path | None,
) -> Any:
    """Load the input named on the command line: ``--cohort NAME`` or a CSV path, with an optional schema."""
    from fedsynth.cohort.datasets import load
    from fedsynth.cohort.schema import TableSchema
    from fedsynth.errors import Problem, ValidationError

    if (data is None) == (cohort is None):
        raise ValidationError(
            "Command line",
            [Problem("input", "give exactly one of --cohort NAME or a DATA.csv path", "e.g. --cohort mds-iwgpm")],
        )
    schema = TableSchema.from_yaml(schema_file) if schema_file else None
    if cohort is not None:
        return load(cohort, data_dir_=data_dir, schema=schema)
    return load(str(data), schema=schema)


def print_json(obj: Any) -> None:
    """Machine output: plain JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
