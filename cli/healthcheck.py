"""`payouts healthcheck`: exit 0 while the service in this container works (its heartbeat file,
contracts/heartbeat.py, touched lately), else 1 with one line saying why. docker-compose.yml runs
it as `python -m cli.healthcheck` every few seconds in each consumer's container: it loads no
more than it needs (the whole CLI takes a second of CPU to load, settings a third of one)."""

import time
from pathlib import Path
from typing import Annotated

import typer

from contracts.heartbeat import BEAT_EVERY_SECONDS, HEARTBEAT_FILE_VARIABLE, heartbeat_problem

DEFAULT_MAX_AGE_SECONDS = 6 * BEAT_EVERY_SECONDS


def healthcheck_command(
    max_age_seconds: Annotated[
        float,
        typer.Option(
            min=BEAT_EVERY_SECONDS, help="The oldest heartbeat that still says the service works"
        ),
    ] = DEFAULT_MAX_AGE_SECONDS,
    heartbeat_file: Annotated[
        Path | None,
        typer.Option(envvar=HEARTBEAT_FILE_VARIABLE, help="The file the service touches"),
    ] = None,
) -> None:
    """Whether the service in this container works (for a container healthcheck)."""
    problem = heartbeat_problem(heartbeat_file, max_age_seconds=max_age_seconds, now=time.time())
    if problem is not None:
        typer.echo(problem, err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(healthcheck_command)
