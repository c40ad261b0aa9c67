"""Engine and session factory; one engine per process, created at start-up."""

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import ColumnElement, SQLColumnExpression, cast, event, func, literal_column, text
from sqlalchemy.dialects.mysql import DATETIME
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from contracts.db.connecting import connect_as_outages
from contracts.db.database_clock import DATABASE_CLOCK
from contracts.db.dead_peers import DEAD_PEER_SECONDS, drop_silent_peers

SessionFactory = async_sessionmaker[AsyncSession]

# Warnings the server gives by design, which asyncmy logs like any other (WARNING): an INSERT
# IGNORE of a key taken already printed "Duplicate entry '…' for key 'PRIMARY'" to an operator's
# terminal (an idempotency claim found the key of an earlier run: replicas review), and
# alembic's primary key name, which MariaDB ignores. The keys the INSERT IGNOREs meet by design
# alone (an idempotency key's, a webhook delivery's event): a duplicate of any other stays
# logged (MySQL 8 names the key with its table).
EXPECTED_SERVER_WARNINGS = re.compile(
    r"Duplicate entry '.*' for key '(\w+\.)?(PRIMARY|uq_webhook_delivery_event)'"
    r"|Name 'alembic_version_pkc' ignored for PRIMARY key\.",
    re.DOTALL,
)

T = TypeVar("T")


def _unexpected(record: logging.LogRecord) -> bool:
    return EXPECTED_SERVER_WARNINGS.fullmatch(record.getMessage()) is None


logging.getLogger("asyncmy").addFilter(_unexpected)

# The consumers' and the relay's `timeout_seconds`: longer than any statement of theirs may wait
# for a row lock (the server's default lock wait, 50 s).
WORKER_DATABASE_TIMEOUT_SECONDS = 120.0
# A pooled connection is replaced after this long; the server keeps an idle one longer, whatever
# its own wait_timeout (minutes, on hosted databases): it closed them in a quiet spell, and the
# first call after it (a PSP's callback, a create) met the closed connection, a 503 on a
# database that was up, as was /ready (idle connections review).
POOL_RECYCLE_SECONDS = 1800
IDLE_CONNECTION_SECONDS = 2 * POOL_RECYCLE_SECONDS
# The services' `idle_transaction_seconds`: past any pause of theirs inside a transaction (the
# relay's publishes, at most 10 s, are the longest).
IDLE_TRANSACTION_SECONDS = 60


def create_engine(
    database_url: str,
    *,
    pool_size: int = 20,
    max_overflow: int | None = None,
    lock_wait_seconds: int | None = None,
    timeout_seconds: float | None = None,
    idle_transaction_seconds: int | None = None,
    dead_peer_seconds: int = DEAD_PEER_SECONDS,
) -> AsyncEngine:
    """`max_overflow`: connections beyond the pool under a burst (as many as the pool when
    None). `lock_wait_seconds`: how long a statement waits for a row lock before it fails (the
    server's default, 50 s, when None), set once per connection. `timeout_seconds`: how long
    any one read waits for the server (a statement's answer, a new connection's greeting)
    before the connection is dropped as lost, error 2013, an outage; and, as long, for a
    connection of the pool (PoolTimeout, an outage too; none when None: a migration's ALTER may
    take its time). The services set one: a database that hangs rather than fails (its network
    dropping packets) held them for as long as it hung, and the requests queued for the pool
    behind them up to its default 30 s. `idle_transaction_seconds`: how long the server keeps
    a transaction whose client says nothing before it closes the connection and rolls the
    transaction back (MariaDB; MySQL 8 has no such setting). A client that gave up on a
    connection whose network drops packets never tells the server, which kept its transaction,
    and its row locks, for hours (a merchant's balance row: each create a 503), until
    `wait_timeout` (half-open connections review). `dead_peer_seconds`: how long a connection
    whose peer went silent stays open (contracts/db/dead_peers.py)."""
    connect_args: dict[str, object] = {
        "init_command": _session_settings(lock_wait_seconds, idle_transaction_seconds)
    }
    pool_options: dict[str, object] = {}
    if timeout_seconds is not None:
        connect_args["read_timeout"] = timeout_seconds
        pool_options["pool_timeout"] = timeout_seconds
    engine = create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        **pool_options,
        # No pre-ping: it costs a round trip per checkout on the hot path. A connection found
        # dead fails its one request (API: 503, retryable; consumers: retried) and SQLAlchemy
        # then invalidates the whole pool, so an outage costs one error, not one per connection.
        pool_pre_ping=False,
        pool_recycle=POOL_RECYCLE_SECONDS,
        # Sessions and connections end their own transactions (commit, or rollback on close):
        # a second ROLLBACK as each connection returns to the pool would be a statement per
        # request for nothing.
        pool_reset_on_return=None,
        isolation_level="READ COMMITTED",
        connect_args=connect_args,
        # An error's text (a log line, a dead letter's last-error header) shows its statement,
        # not its values: a beneficiary's account, name and purpose (pii review).
        hide_parameters=True,
    )
    event.listen(engine.sync_engine, "connect", DATABASE_CLOCK.measure)
    drop_silent_peers(engine, dead_peer_seconds)
    connect_as_outages(engine)
    return engine


def _session_settings(lock_wait_seconds: int | None, idle_transaction_seconds: int | None) -> str:
    """One SET for all (the connection's one init command). The idle transaction's limit in a
    comment that MariaDB (10.3 and later) runs and MySQL skips."""
    lock_wait = (
        "@@global.innodb_lock_wait_timeout" if lock_wait_seconds is None else lock_wait_seconds
    )
    settings = (
        f"SET SESSION innodb_lock_wait_timeout = {lock_wait}, "
        f"wait_timeout = {IDLE_CONNECTION_SECONDS}"
    )
    if idle_transaction_seconds is None:
        return settings
    return f"{settings} /*M!100300 , idle_transaction_timeout = {int(idle_transaction_seconds)} */"


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def transaction(sessions: SessionFactory) -> AsyncIterator[AsyncSession]:
    """One unit of work: commits on success, rolls back on any error."""
    async with sessions() as session, session.begin():
        yield session


async def committed(sessions: SessionFactory, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """`work(session)`, then a commit; rolled back on any error. Unlike `transaction`, the work
    may roll back and go on in the same session (`run_again_after_deadlocks`): inside
    `session.begin()` it cannot, and an operator command's retry after a deadlock failed on a
    closed transaction (second diff review)."""
    async with sessions() as session:
        done = await work(session)
        await session.commit()
        return done


_SNAPSHOT_ISOLATION = text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")


async def begin_snapshot(session: AsyncSession) -> None:
    """A session that has not begun a transaction reads everything from one REPEATABLE READ
    snapshot, so a live system never shows a transaction between two of its statements."""
    if not session.in_transaction():
        # A statement of the transaction, for the next one only: set as an execution option,
        # the driver's error on a connection the server had closed (a restart) escaped
        # SQLAlchemy, which neither wrapped it (an unhandled 500) nor dropped the connection
        # (the next calls' 500s: dashboard outages and third fixes reviews).
        await session.execute(_SNAPSHOT_ISOLATION)


async def read_one_snapshot(session: AsyncSession) -> None:
    """`begin_snapshot` for a request that only reads (a page's `total` then counts the rows it
    lists): what it read so far (the API key's lookup) is committed first, since a transaction's
    isolation level is set before it begins."""
    if session.in_transaction():
        await session.commit()
    await begin_snapshot(session)


def utcnow() -> datetime:
    """Naive UTC, as stored in DATETIME(6) columns, on the database server's clock."""
    return DATABASE_CLOCK.now()


def naive_utc(value: datetime) -> datetime:
    """`value` as stored (naive UTC); a time without an offset is read as UTC. ValueError for a
    time before year 1 in UTC (0001-01-01T00:00:00+00:01): no instant a column can hold."""
    try:
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    except OverflowError:
        raise ValueError("is out of range: no such time in UTC") from None


# The database's clock (UTC, microseconds), for times several hosts compare: one clock for all.
DATABASE_NOW: ColumnElement[datetime] = literal_column("UTC_TIMESTAMP(6)")


def plus_seconds(
    seconds: int | SQLColumnExpression[int], moment: datetime | SQLColumnExpression[datetime]
) -> ColumnElement[datetime]:
    """`moment` plus `seconds`; a time of ours is sent as text, which the server adds to as text
    unless it is cast (a string where a datetime was selected)."""
    return func.timestampadd(literal_column("SECOND"), seconds, _as_datetime(moment))


def seconds_between(
    start: SQLColumnExpression[datetime | None],
    end: datetime | SQLColumnExpression[datetime | None],
) -> ColumnElement[int]:
    return func.timestampdiff(literal_column("SECOND"), start, _as_datetime(end))


def _as_datetime(
    moment: datetime | SQLColumnExpression[datetime | None],
) -> SQLColumnExpression[datetime | None]:
    return cast(moment, DATETIME(fsp=6)) if isinstance(moment, datetime) else moment


def database_now_plus(seconds: int | SQLColumnExpression[int]) -> ColumnElement[datetime]:
    return plus_seconds(seconds, DATABASE_NOW)
