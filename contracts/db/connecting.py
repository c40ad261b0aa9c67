"""How the services' engines connect: as SQLAlchemy's asyncmy dialect does, but a connection the
server closes as it is made is a lost connection (2013, an outage) whatever asyncmy noticed.

At the server's connection limit (1040), asyncmy sometimes found the transport closed before it
read the server's refusal, and raised RuntimeError ("Transport does not expose socket instance"):
no database error, so a bug to every service. The API answered 500s, the webhook service
redelivered at once until its messages were dead-lettered, the processor dead-lettered commands
(idle connections review).
"""

from typing import Any

import asyncmy
from asyncmy.errors import OperationalError
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

LOST_CONNECTION = 2013


async def _connect(*args: Any, **kwargs: Any) -> Any:
    try:
        return await asyncmy.connect(*args, **kwargs)
    except RuntimeError as closed:
        raise OperationalError(
            LOST_CONNECTION, f"Lost connection to MySQL server while connecting: {closed}"
        ) from closed


def connect_as_outages(engine: AsyncEngine) -> None:
    """`engine`'s new connections made by `_connect`, with the arguments the dialect made of its
    URL."""

    @event.listens_for(engine.sync_engine, "do_connect")
    def through_connect(_dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> None:
        # The dialect's DBAPI adapter awaits this function in place of asyncmy.connect.
        params["async_creator_fn"] = _connect
