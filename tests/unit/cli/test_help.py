"""``--help`` as a newcomer reads it: a docstring's paragraphs, not its source line breaks."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from fedsynth.cli import app

runner = CliRunner()


def _help(*command: str) -> str:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return re.sub(r"[ \t]+\n", "\n", result.output)


def test_a_later_paragraph_of_a_command_help_reads_as_one_paragraph() -> None:
    # The docstring of `run` wraps "continue it" / "with --resume RUN_DIR." over two source lines
    text = _help("run")
    assert "continue it with --resume RUN_DIR." in text
    assert "continue it\n" not in text


def test_sub_command_help_is_reflowed_too() -> None:
    text = _help("site", "start")
    assert "checks the data, schema, key and the SuperLink's certificate first." in text
