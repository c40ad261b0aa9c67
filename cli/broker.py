"""Running an operator command against RabbitMQ: a queue that is not there (the services have not
declared the topology in this vhost yet) or a broker that does not answer is a one-line message
and exit 1, not a traceback."""

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import typer
from aiormq.exceptions import AMQPConnectionError, ChannelNotFoundEntity

T = TypeVar("T")


def on_the_broker(work: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(work)
    except ChannelNotFoundEntity as missing:
        typer.echo(
            f"{missing} (each service declares the topology when it starts: has one run "
            "against this vhost?)",
            err=True,
        )
        raise typer.Exit(1) from missing
    except (AMQPConnectionError, OSError) as down:
        typer.echo(f"RabbitMQ does not answer: {down!r}", err=True)
        raise typer.Exit(1) from down
