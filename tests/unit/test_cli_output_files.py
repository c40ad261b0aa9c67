"""`payouts docs asyncapi` and `payouts topology export` write a file: one they cannot write is a
one-line message and exit 1. It was an IsADirectoryError or PermissionError traceback."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app


@pytest.mark.parametrize("command", [["docs", "asyncapi"], ["topology", "export"]])
def test_an_output_that_cannot_be_written_is_one_line_and_exit_1(
    command: list[str], tmp_path: Path
) -> None:
    result = CliRunner().invoke(app, [*command, "--output", str(tmp_path)])  # a directory

    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"cannot write {tmp_path}: Is a directory" in result.output


@pytest.mark.parametrize("command", [["docs", "asyncapi"], ["topology", "export"]])
def test_the_output_is_written_where_asked(command: list[str], tmp_path: Path) -> None:
    output = tmp_path / "new" / "file"
    result = CliRunner().invoke(app, [*command, "--output", str(output)])

    assert result.exit_code == 0, result.output
    assert output.read_text()
