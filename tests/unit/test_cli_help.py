"""Every `imagegate` command's --help renders: it is a newcomer's first command, and help text is
rich markup (a literal `[/variant]` in an option's help once made `imagegate check --help` a
traceback)."""

from __future__ import annotations

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from webhook.cli import app

COMMANDS = sorted(get_command(app).commands)  # type: ignore[attr-defined]


def test_there_are_commands_to_check() -> None:
    assert {"check", "serve", "rebuild", "report", "operator"} <= set(COMMANDS)


@pytest.mark.parametrize("columns", ["80", "200"])
@pytest.mark.parametrize("command", COMMANDS)
def test_help_renders(command: str, columns: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": columns})
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
