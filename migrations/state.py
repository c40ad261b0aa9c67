"""Whether the database can take this code's work (it answers, accepts writes, and has this
code's migrations): the API's readiness says so, and a consumer or the outbox relay waits for it
before it takes work."""

import asyncio
import contextlib
import logging
from enum import StrEnum

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.engine import SessionFactory
from migrations.runner import lacks_migrations

log = logging.getLogger(__name__)

NO_SUCH_TABLE = 1146  # MySQL's ER_NO_SUCH_TABLE: alembic_version, before any migration
TABLE_ACCESS_DENIED = 1142  # ER_TABLEACCESS_DENIED_ERROR
MIGRATED_POLL_SECONDS = 5.0
# As text: MySQL 8 says '0' or '1', MariaDB 'OFF' or 'ON' (an ENUM in newer releases, whose
# 'OFF', read as a value, was true).
READ_ONLY = text("SELECT CAST(@@global.read_only AS CHAR)")
WRITABLE = ("0", "OFF")


class DatabaseState(StrEnum):
    OK = "ok"
    UNAVAILABLE = "unavailable"
    # It answers, but refuses writes: a replica, or a primary demoted by a failover, which the
    # API's readiness called ok (a load balancer kept sending it merchants' calls, each a 503).
    READ_ONLY = "read_only"
    NOT_MIGRATED = "not_migrated"  # it answers, but lacks a revision this code needs


async def database_state(sessions: SessionFactory, timeout_seconds: float) -> DatabaseState:
    """The database's state as this code needs it, asked within `timeout_seconds`. An account
    that may not read `alembic_version` (granted table by table) counts as migrated."""
    state, _ = await _checked(sessions, timeout_seconds)
    return state


async def _checked(
    sessions: SessionFactory, timeout_seconds: float
) -> tuple[DatabaseState, str | None]:
    """database_state, and why the database is unavailable (what it or the driver said)."""
    try:
        async with sessions() as session:
            return await asyncio.wait_for(_state(session), timeout_seconds), None
    except DBAPIError as error:
        return DatabaseState.UNAVAILABLE, str(error.orig)
    except Exception as error:
        return DatabaseState.UNAVAILABLE, repr(error)


async def _state(session: AsyncSession) -> DatabaseState:
    if await session.scalar(READ_ONLY) not in WRITABLE:
        return DatabaseState.READ_ONLY
    try:
        version = await session.scalar(text("SELECT version_num FROM alembic_version"))
    except DBAPIError as error:
        code = error.orig.args[0] if error.orig is not None and error.orig.args else None
        if code == TABLE_ACCESS_DENIED:
            return DatabaseState.OK
        if code != NO_SUCH_TABLE:
            raise
        version = None
    if lacks_migrations(version):
        log.warning("the database lacks migrations (at %s): run `payouts migrate`", version)
        return DatabaseState.NOT_MIGRATED
    return DatabaseState.OK


async def until_migrated(
    sessions: SessionFactory, who: str, stop: asyncio.Event | None = None
) -> bool:
    """Return True once the database answers with this code's migrations; False if `stop` was
    set first. A consumer started before `payouts migrate` took work that failed into the
    dead-letter queues (lifecycle review); one started while the database was still booting
    (unreachable) did so too, once it answered (diff review)."""
    stop = stop or asyncio.Event()
    said: tuple[DatabaseState, str | None] = (DatabaseState.OK, None)
    while (checked := await _checked(sessions, MIGRATED_POLL_SECONDS))[0] is not DatabaseState.OK:
        if checked != said:  # a refused login said only "unavailable", like an outage
            state, why = checked
            because = f": {why}" if why else ""
            log.warning("the %s takes no work until the database %s%s", who, _UNTIL[state], because)
            said = checked
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), MIGRATED_POLL_SECONDS)
        if stop.is_set():
            return False
    if said[0] is not DatabaseState.OK:
        log.info("the database is migrated: the %s starts", who)
    return True


_UNTIL = {
    DatabaseState.UNAVAILABLE: "answers (it is unavailable)",
    DatabaseState.READ_ONLY: "accepts writes (it is read-only)",
    DatabaseState.NOT_MIGRATED: "is migrated",
}
