"""Writing the request log without slowing the calls it records: each finished call is queued
in memory, and one background task inserts what has queued every `FLUSH_SECONDS`, in one
statement. The log is evidence for the merchant, not the ledger: an API process killed between
an answer and the next flush loses that flush's rows (at most `FLUSH_SECONDS` of calls), and
while the database is away the rows wait in memory, up to `MAX_QUEUED` (the 503s of an outage
are what a merchant most needs to see: they were dropped at the first failed flush, reqlog
review). A row left out for want of room is counted and logged."""

import asyncio
import logging
from contextlib import suppress
from typing import Any

from sqlalchemy import insert
from sqlalchemy.exc import SQLAlchemyError

from api_service.metrics import REQUEST_LOG_ROWS_LEFT_OUT
from contracts.db.engine import SessionFactory
from contracts.db.models import ApiRequestRecord, table_of
from contracts.db.outages import is_outage, lost_the_connection
from contracts.logging import LogThrottle

log = logging.getLogger("api.request_log")
_THROTTLED = LogThrottle(seconds=60.0)

FLUSH_SECONDS = 0.2
# Marks the writer's connection: the tests that count a request's statements leave it out (it
# runs beside the requests, not in them; the bench counts it with the API's statements).
REQUEST_LOG_OPTION = "request_log"
MAX_QUEUED = 10_000  # beyond this (the database is down for long) new rows are left out
_INSERT_ROWS = insert(table_of(ApiRequestRecord))  # built once: neither rebuilt nor keyed per flush


class CommitUnanswered(Exception):
    """The connection was lost as the rows' COMMIT went out: written or not, nobody knows. Sent
    again, rows the server had committed were written twice (diff review); they are not."""


class RequestLogWriter:
    def __init__(self, sessions: SessionFactory) -> None:
        self.sessions = sessions
        self._rows: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._flushing = asyncio.Lock()

    def add(self, row: dict[str, Any]) -> None:
        if len(self._rows) < MAX_QUEUED:
            self._rows.append(row)
        else:
            _left_out(1)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop flushing on a timer and write what is queued."""
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
        if self._rows:  # the database away as the API stops
            log.warning("request log: %d rows not written: the API stops", len(self._rows))

    async def flush(self) -> None:
        """Write every row added before the call, those a flush under way took included: it
        returns once they are committed (or their write failed)."""
        async with self._flushing:
            rows, self._rows = self._rows, []
            if not rows:
                return
            try:
                await self._insert(rows)
            except CommitUnanswered as unanswered:
                log.warning(
                    "request log: %d rows written or not: %r", len(rows), unanswered.__cause__
                )
            except SQLAlchemyError as exc:
                if is_outage(exc):  # written at a later flush, the earliest first
                    kept = rows + self._rows
                    self._rows = kept[:MAX_QUEUED]
                    _left_out(len(kept) - len(self._rows))
                    if _THROTTLED.admit("outage") is not None:
                        log.warning(
                            "request log: %d rows wait for the database: %r", len(kept), exc
                        )
                    return
                if len(rows) == 1:
                    log.warning("request log: a row not written: %r", exc)
                    return
                # A row the database refuses must not take the flush's other rows with it.
                for row in rows:
                    try:
                        await self._insert([row])
                    except (SQLAlchemyError, CommitUnanswered) as refused:
                        log.warning("request log: a row not written: %s", type(refused).__name__)

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        """Nothing written when it raises SQLAlchemyError; CommitUnanswered: maybe written."""
        async with self.sessions() as session:
            await session.connection(execution_options={REQUEST_LOG_OPTION: True})
            await session.execute(_INSERT_ROWS, rows)
            try:
                await session.commit()
            except SQLAlchemyError as refused:
                if lost_the_connection(refused):
                    raise CommitUnanswered from refused
                raise  # an answer (a deadlock, read-only): nothing was done

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            # Shielded: close() cancels this loop, and a cancelled flush lost the rows it had
            # taken (close()'s own flush waits for this one instead).
            await asyncio.shield(self.flush())


def _left_out(count: int) -> None:
    if count:
        REQUEST_LOG_ROWS_LEFT_OUT.inc(count)
        if _THROTTLED.admit("full") is not None:
            log.warning("request log: %d rows left out: %d wait already", count, MAX_QUEUED)
