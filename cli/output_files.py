"""Writing a command's output file: a path that cannot be written (a directory, no permission,
a read-only disk) is a one-line message and exit 1, not a traceback."""

from pathlib import Path

import typer


def write_output(output: Path, text: str) -> None:
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
    except OSError as exc:
        typer.echo(f"cannot write {output}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from exc
