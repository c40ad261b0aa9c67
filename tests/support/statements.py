"""Counting what the database is sent: every statement and every commit of every engine in this
process while the block runs (but the request log's background writes), with the SQL kept for
the failure message. A request's own statements leave out the reads of a stale cache that
happen to fall in the block (Counted.own_statements)."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ClauseElement, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.cache_key import HasCacheKey
from sqlalchemy.sql.compiler import SQLCompiler

from api_service.request_log.writer import REQUEST_LOG_OPTION
from contracts.db.engine import SessionFactory

# Reads a request makes only when a cache of its API process went stale: the merchant of its API
# key and the sandbox fault settings (2 seconds), the active directory (10 seconds). On a slow
# machine that happens between a test's warm-up request and the request it counts.
CACHE_REFRESHES = (
    "WHERE merchants.api_key_hash =",
    "FROM sandbox_fault_settings",
    "FROM directory_institutions",
)


@dataclass
class Counted:
    statements: list[str] = field(default_factory=list)
    cache_refreshes: list[str] = field(default_factory=list)  # also in statements
    # Neither counts the end of a transaction that only refreshed a cache.
    commits: int = 0
    rollbacks: int = 0

    @property
    def own_statements(self) -> list[str]:
        """The statements but those of a cache's refresh (CACHE_REFRESHES)."""
        return [sql for sql in self.statements if sql not in self.cache_refreshes]


def _background(conn: Connection) -> bool:
    """The request log's writer, which flushes beside the requests being counted."""
    return bool(conn.get_execution_options().get(REQUEST_LOG_OPTION))


@contextmanager
def counting_statements() -> Iterator[Counted]:
    counted = Counted()
    only_refreshing: dict[Connection, bool] = {}  # per open transaction

    def statement(conn: Connection, _cursor: Any, sql: str, *_args: Any) -> None:
        if _background(conn):
            return
        counted.statements.append(shown := " ".join(sql.split())[:200])
        refresh = any(refresh in sql for refresh in CACHE_REFRESHES)
        if refresh:
            counted.cache_refreshes.append(shown)
        only_refreshing[conn] = only_refreshing.get(conn, True) and refresh

    def commit(conn: Connection) -> None:
        if not only_refreshing.pop(conn, False):
            counted.commits += not _background(conn)

    def rollback(conn: Connection) -> None:
        if not only_refreshing.pop(conn, False):
            counted.rollbacks += not _background(conn)

    listeners = (("before_cursor_execute", statement), ("commit", commit), ("rollback", rollback))
    for name, listener in listeners:
        event.listen(Engine, name, listener)
    try:
        yield counted
    finally:
        for name, listener in listeners:
            event.remove(Engine, name, listener)


# Set inside `statements_built`: the tasks a block starts inherit it, and SQLAlchemy's greenlets
# run in their task's context. Tasks started before the block (the request log's writer) don't,
# nor those started in a context of their own (contracts.batching's workers).
_watched: ContextVar[list[str] | None] = ContextVar("statements_built", default=None)
# The lists of the blocks that watch every task of the process (`every_task=True`).
_everywhere: list[list[str]] = []
# Printing a statement compiles it: not the block's doing.
_printing: ContextVar[bool] = ContextVar("statements_built_printing", default=False)


def _record(how: str, sql: Callable[[], str]) -> None:
    lists = list(_everywhere)
    if (watched := _watched.get()) is not None and all(watched is not b for b in lists):
        lists.append(watched)
    if not lists or _printing.get():
        return
    printing = _printing.set(True)
    try:
        text = sql()
    finally:
        _printing.reset(printing)
    for built in lists:
        built.append(f"{how}: {' '.join(text.split())[:200]}")


@contextmanager
def statements_built(*, every_task: bool = False) -> Iterator[list[str]]:
    """Every statement SQLAlchemy builds or compiles for the block (and the tasks it starts) while
    it runs: one it computes a cache key for is built (or copied) anew, and a compiled one missed
    the cache or was compiled by hand. A hot path's statements are built and compiled once per
    process. Work of tasks that were running before the block is not the block's, unless
    `every_task`: then whatever any task builds while the block runs is counted (a batcher's
    worker runs in a context of its own, whoever started it)."""
    built: list[str] = []
    generate, compile_sql = HasCacheKey._generate_cache_key, SQLCompiler.__init__

    def keying(element: HasCacheKey) -> Any:
        _record("keyed", lambda: str(element))
        return generate(element)

    def compiling(compiler: SQLCompiler, *args: Any, **kwargs: Any) -> None:
        compile_sql(compiler, *args, **kwargs)
        _record("compiled", lambda: compiler.string)

    setattr(HasCacheKey, "_generate_cache_key", keying)  # noqa: B010 (methods)
    setattr(SQLCompiler, "__init__", compiling)  # noqa: B010
    token = _watched.set(built)
    if every_task:
        _everywhere.append(built)
    try:
        yield built
    finally:
        _watched.reset(token)
        if every_task:
            _everywhere[:] = [other for other in _everywhere if other is not built]
        setattr(HasCacheKey, "_generate_cache_key", generate)  # noqa: B010
        setattr(SQLCompiler, "__init__", compile_sql)  # noqa: B010


@dataclass(frozen=True)
class Sent:
    sql: str  # as the driver got it, whole
    parameters: Any


@contextmanager
def statements_sent(engine: AsyncEngine | None = None) -> Iterator[list[Sent]]:
    """Every statement any engine of this process sends while the block runs (or `engine` alone:
    an app of the session's, its request log written in the background, sends some of its own),
    whole, with its parameters (to EXPLAIN what a request ran)."""
    sent: list[Sent] = []

    def keep(_conn: Connection, _cursor: Any, sql: str, parameters: Any, *_args: Any) -> None:
        sent.append(Sent(sql, parameters))

    target: Any = Engine if engine is None else engine.sync_engine
    event.listen(target, "before_cursor_execute", keep)
    try:
        yield sent
    finally:
        event.remove(target, "before_cursor_execute", keep)


async def explain_sent(sessions: SessionFactory, statement: Sent) -> list[dict[str, Any]]:
    """The server's plan for a statement sent (statements_sent), one dict per table read."""
    async with sessions() as session:
        connection = await session.connection()
        result = await connection.exec_driver_sql(f"EXPLAIN {statement.sql}", statement.parameters)
        return [dict(row._mapping) for row in result]


async def explain(sessions: SessionFactory, statement: ClauseElement) -> list[dict[str, Any]]:
    """The server's plan for `statement`, one dict per table read, in the order read."""
    async with sessions() as session:
        connection = await session.connection()
        sql = statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})
        result = await connection.exec_driver_sql(f"EXPLAIN {sql}")
        return [dict(row._mapping) for row in result]


async def statement_running(sessions: SessionFactory, statement_start: str) -> bool:
    """A statement of this database that starts so is running now (in a test: waiting on a lock
    another connection holds)."""
    async with sessions() as session:
        running = await session.scalar(
            text(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                "WHERE DB = DATABASE() AND COMMAND = 'Query' AND INFO LIKE :start"
            ),
            {"start": f"{statement_start}%"},
        )
    return bool(running)
