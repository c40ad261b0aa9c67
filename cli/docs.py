"""`payouts docs asyncapi`: write the AsyncAPI document of every message (what `make docs` runs)."""

from pathlib import Path
from typing import Annotated

import typer

from cli.output_files import write_output
from contracts.asyncapi import asyncapi_yaml

docs_app = typer.Typer(help="Generated documentation.", no_args_is_help=True)
DEFAULT_OUTPUT = Path("docs/asyncapi.yaml")


@docs_app.command("asyncapi")
def asyncapi_command(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write it")
    ] = DEFAULT_OUTPUT,
) -> None:
    """Write the AsyncAPI 3.0 document (YAML); the API also serves it at /asyncapi."""
    write_output(output, asyncapi_yaml())
    typer.echo(f"wrote {output}")
