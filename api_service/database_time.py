"""A bound on the time each call spends in the database as a whole: past it, the call's next
statement is refused, its transaction rolled back, and the call answered 503 (an outage, to
retry under the same key: what the call had committed before stays, a payroll's earlier chunks).
Each statement already waited at most PAYOUTS_API_DATABASE_TIMEOUT_SECONDS for its answer, but a
database slow enough, answering each statement just within that, made one create take 147 s
(slow dependencies review): a merchant's client gave up long before, on a payout then created.

The time counted is the statements' own, from each one sent to its answer: a call waiting for
its body (a client sending it slowly) or for its turn spends none. The bound is checked before
each statement, not by cancelling one under way: a statement cut mid-answer leaves its
connection unusable."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Receive, Scope, Send

_STARTED = "payouts_statement_started"  # in the connection's `info`: its statement under way


@dataclass
class _CallsDatabaseTime:
    allowed: float
    spent: float = 0.0


_CALL: ContextVar[_CallsDatabaseTime | None] = ContextVar("database_time", default=None)


class DatabaseTimeUsedUp(TimeoutError):
    """An outage to the API's error handling (contracts.db.outages.is_outage: an OSError)."""


class DatabaseTimeMiddleware:
    """Each HTTP call may spend `seconds` in the database."""

    def __init__(self, app: ASGIApp, *, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = _CALL.set(_CallsDatabaseTime(self.seconds))
        try:
            await self.app(scope, receive, send)
        finally:
            _CALL.reset(token)


@contextmanager
def not_counted() -> Iterator[None]:
    """Statements run in the block neither count nor are refused: a call's reads once its work
    committed (the sandbox clock's wait for what its advance made due), whose 503 would say
    "retry, nothing written" of a change made (fixes review)."""
    token = _CALL.set(None)
    try:
        yield
    finally:
        _CALL.reset(token)


def count_database_time(engine: AsyncEngine) -> None:
    """On `engine`, each statement of a call counts towards its time, and one sent once that is
    used up raises DatabaseTimeUsedUp; a rollback still runs (it ends the transaction). Work
    outside a call (the request log's writer) is not counted."""
    event.listen(engine.sync_engine, "before_cursor_execute", _before_statement)
    event.listen(engine.sync_engine, "after_cursor_execute", _after_statement)
    event.listen(engine.sync_engine, "handle_error", _after_failed_statement)


def _before_statement(connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
    call = _CALL.get()
    if call is None:
        return
    if call.spent > call.allowed and not statement.startswith("ROLLBACK"):
        raise DatabaseTimeUsedUp("the database took too long for this call")
    connection.info[_STARTED] = time.monotonic()


def _after_statement(connection: Any, *_: Any) -> None:
    started = connection.info.pop(_STARTED, None)
    call = _CALL.get()
    if call is not None and started is not None:
        call.spent += time.monotonic() - started


def _after_failed_statement(context: ExceptionContext) -> None:
    """A statement that failed took its time too (a lock wait that timed out: 5 s)."""
    if context.connection is not None:
        _after_statement(context.connection)
