"""Counting what the database is sent: every statement and every commit of every engine in this
process while the block runs (but the request log's background writes), with the SQL kept for
the failure message."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.cache_key import HasCacheKey
from sqlalchemy.sql.compiler import SQLCompiler

from api_service.request_log.writer import REQUEST_LOG_OPTION


@dataclass
class Counted:
    statements: list[str] = field(default_factory=list)
    commits: int = 0
    rollbacks: int = 0

    @property
    def round_trips(self) -> int:
        """Statements plus COMMIT and ROLLBACK, each a query the server counts."""
        return len(self.statements) + self.commits + self.rollbacks


def _background(conn: Connection) -> bool:
    """The request log's writer, which flushes beside the requests being counted."""
    return bool(conn.get_execution_options().get(REQUEST_LOG_OPTION))


@contextmanager
def counting_statements() -> Iterator[Counted]:
    counted = Counted()

    def statement(conn: Connection, _cursor: Any, sql: str, *_args: Any) -> None:
        if not _background(conn):
            counted.statements.append(" ".join(sql.split())[:200])

    def commit(conn: Connection) -> None:
        counted.commits += not _background(conn)

    def rollback(conn: Connection) -> None:
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
# run in their task's context. Tasks started before the block (the request log's writer) don't.
_watched: ContextVar[list[str] | None] = ContextVar("statements_built", default=None)


def _record(how: str, sql: Callable[[], str]) -> None:
    if (watched := _watched.get()) is not None:
        watched.append(f"{how}: {' '.join(sql().split())[:200]}")


@contextmanager
def statements_built() -> Iterator[list[str]]:
    """Every statement SQLAlchemy builds or compiles for the block (and the tasks it starts) while
    it runs: one it computes a cache key for is built (or copied) anew, and a compiled one missed
    the cache or was compiled by hand. A hot path's statements are built and compiled once per
    process. Work of tasks that were running before the block is not the block's."""
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
    try:
        yield built
    finally:
        _watched.reset(token)
        setattr(HasCacheKey, "_generate_cache_key", generate)  # noqa: B010
        setattr(SQLCompiler, "__init__", compile_sql)  # noqa: B010
