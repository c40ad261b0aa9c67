"""Running an operator command: a queue that is not there (the services have not declared the
topology in this vhost yet), a broker that refuses a message, a connection or does not answer, a
database that does not answer, refuses the login, or is not there or not migrated, or another
process's lock held too long, is a one-line message and exit 1, not a traceback."""

import asyncio
import logging
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from aio_pika.exceptions import DeliveryError
from aiormq.exceptions import AMQPError, ChannelNotFoundEntity
from sqlalchemy.exc import DBAPIError

from contracts.db.database_locks import DatabaseLockTimeout
from contracts.db.outages import database_error_code, is_outage
from contracts.dead_letters import UnreadableDeadLetter

T = TypeVar("T")

# What the database says to a command pointed at the wrong place (a typo in the URL, a database
# not migrated yet): the operator's to fix, where any other refusal is a bug with a traceback.
_WRONG_PLACE = {
    1044: "the user may not use this database",
    1045: "login refused",
    1049: "no such database",
    1054: "a column is missing: has `payouts migrate` run against this database?",
    1142: "the user may not do this to a table",
    1146: "a table is missing: has `payouts migrate` run against this database?",
    1698: "login refused",
}


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
    except UnreadableDeadLetter as stuck:
        typer.echo(f"RabbitMQ: {stuck}", err=True)
        raise typer.Exit(1) from stuck
    except DeliveryError as refused:  # a full queue (reject-publish), an unroutable message
        typer.echo(f"RabbitMQ refused a message, which stays where it was: {refused}", err=True)
        raise typer.Exit(1) from refused
    except DatabaseLockTimeout as waited:  # a TimeoutError: an OSError, but not RabbitMQ's
        typer.echo(f"MySQL: {waited}", err=True)
        raise typer.Exit(1) from waited
    except OSError as down:  # AMQPConnectionError among them
        typer.echo(f"RabbitMQ does not answer: {down!r}", err=True)
        raise typer.Exit(1) from down
    except AMQPError as refused:  # the broker closed the connection it was opening
        typer.echo(f"RabbitMQ refused: {refused!r} (does the vhost exist?)", err=True)
        raise typer.Exit(1) from refused
    except DBAPIError as error:
        wrong_place = _WRONG_PLACE.get(database_error_code(error) or 0)
        if wrong_place is not None:
            typer.echo(f"MySQL refused: {wrong_place} ({error.orig})", err=True)
        elif is_outage(error):
            typer.echo(f"MySQL does not answer: {error.orig!r}", err=True)
        else:
            raise
        raise typer.Exit(1) from error


def run_in_one_line(work: Coroutine[Any, Any, T]) -> T:
    # aiormq logs a connection it loses (a frame it cannot decode) with the traceback, as a
    # warning, and one it cannot open ("error when creating transport") as an error: the
    # command says what went wrong in its one line.
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    with outages_in_one_line():
        return asyncio.run(work)
