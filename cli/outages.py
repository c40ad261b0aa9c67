"""Running an operator command: a queue that is not there (the services have not declared the
topology in this vhost yet), a broker that refuses a message or does not answer, or a database
that does not answer is a one-line message and exit 1, not a traceback."""

import asyncio
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from aio_pika.exceptions import DeliveryError
from aiormq.exceptions import AMQPConnectionError, ChannelNotFoundEntity
from sqlalchemy.exc import DBAPIError

from contracts.db.outages import is_outage

T = TypeVar("T")


@contextmanager
def outages_in_one_line() -> Iterator[None]:
    try:
        yield
    except ChannelNotFoundEntity as missing:
        typer.echo(
            f"{missing} (each service declares the topology when it starts: has one run "
            "against this vhost?)",
            err=True,
        )
        raise typer.Exit(1) from missing
    except DeliveryError as refused:  # a full queue (reject-publish), an unroutable message
        typer.echo(f"RabbitMQ refused a message, which stays where it was: {refused}", err=True)
        raise typer.Exit(1) from refused
    except (AMQPConnectionError, OSError) as down:
        typer.echo(f"RabbitMQ does not answer: {down!r}", err=True)
        raise typer.Exit(1) from down
    except DBAPIError as error:
        if not is_outage(error):
            raise
        typer.echo(f"MySQL does not answer: {error.orig!r}", err=True)
        raise typer.Exit(1) from error


def run_in_one_line(work: Coroutine[Any, Any, T]) -> T:
    with outages_in_one_line():
        return asyncio.run(work)
