"""A bound on each request's database work as a whole: past it, the request's next statement is
refused, its transaction rolled back, and the call answered 503 (an outage: nothing written, so
retrying it is safe). Each statement already waited at most PAYOUTS_API_DATABASE_TIMEOUT_SECONDS
for its answer, but a database slow enough, answering each statement just within that, made one
create take 147 s (slow dependencies review): a merchant's client gave up long before, on a
payout then created.

The bound is checked before each statement, not by cancelling one under way: a statement cut
mid-answer leaves its connection unusable. So a call answers within the bound and one timeout."""

import time
from contextvars import ContextVar
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Receive, Scope, Send

_DEADLINE: ContextVar[float | None] = ContextVar("database_deadline", default=None)


class DatabaseDeadlinePassed(TimeoutError):
    """An outage to the API's error handling (contracts.db.outages.is_outage: an OSError)."""


class DatabaseDeadlineMiddleware:
    """Each HTTP call's database work ends within `seconds` of the call's start here (inside
    its client's turn and any latency a sandbox fault injected)."""

    def __init__(self, app: ASGIApp, *, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = _DEADLINE.set(time.monotonic() + self.seconds)
        try:
            await self.app(scope, receive, send)
        finally:
            _DEADLINE.reset(token)


def refuse_statements_past_the_deadline(engine: AsyncEngine) -> None:
    """On `engine`, a call's statement once its deadline passed raises DatabaseDeadlinePassed;
    a rollback still runs (it ends the transaction). Work outside a call (the request log's
    writer) has no deadline."""
    event.listen(engine.sync_engine, "before_cursor_execute", _refuse_past_the_deadline)


def _refuse_past_the_deadline(
    _connection: Any,
    _cursor: Any,
    statement: str,
    _parameters: Any,
    _context: Any,
    _executemany: bool,
) -> None:
    deadline = _DEADLINE.get()
    if deadline is None or time.monotonic() <= deadline or statement.startswith("ROLLBACK"):
        return
    raise DatabaseDeadlinePassed("the database took too long for this call")
