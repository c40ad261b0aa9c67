"""Whether the database has this code's migrations: the API's readiness says so, and a consumer
or the outbox relay waits for them before it takes work."""

import asyncio
import contextlib
import logging
from enum import StrEnum

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from contracts.db.engine import SessionFactory
from migrations.runner import lacks_migrations

log = logging.getLogger(__name__)

NO_SUCH_TABLE = 1146  # MySQL's ER_NO_SUCH_TABLE: alembic_version, before any migration
TABLE_ACCESS_DENIED = 1142  # ER_TABLEACCESS_DENIED_ERROR
MIGRATED_POLL_SECONDS = 5.0


class MigrationState(StrEnum):
    OK = "ok"
    UNAVAILABLE = "unavailable"
    NOT_MIGRATED = "not_migrated"  # it answers, but lacks a revision this code needs


async def migration_state(sessions: SessionFactory, timeout_seconds: float) -> MigrationState:
    """The database's state as this code needs it, asked within `timeout_seconds`. An account
    that may not read `alembic_version` (granted table by table) counts as migrated."""
    state, _ = await _checked(sessions, timeout_seconds)
    return state


async def _checked(
    sessions: SessionFactory, timeout_seconds: float
) -> tuple[MigrationState, str | None]:
    """migration_state, and why the database is unavailable (what it or the driver said)."""
    try:
        async with sessions() as session:
            version = await asyncio.wait_for(
                session.scalar(text("SELECT version_num FROM alembic_version")), timeout_seconds
            )
    except DBAPIError as error:
        code = error.orig.args[0] if error.orig is not None and error.orig.args else None
        if code == TABLE_ACCESS_DENIED:
            return MigrationState.OK, None
        if code != NO_SUCH_TABLE:
            return MigrationState.UNAVAILABLE, str(error.orig)
        version = None
    except Exception as error:
        return MigrationState.UNAVAILABLE, repr(error)
    if lacks_migrations(version):
        log.warning("the database lacks migrations (at %s): run `payouts migrate`", version)
        return MigrationState.NOT_MIGRATED, None
    return MigrationState.OK, None


async def until_migrated(
    sessions: SessionFactory, who: str, stop: asyncio.Event | None = None
) -> bool:
    """Return True once the database answers with this code's migrations; False if `stop` was
    set first. A consumer started before `payouts migrate` took work that failed into the
    dead-letter queues (lifecycle review); one started while the database was still booting
    (unreachable) did so too, once it answered (diff review)."""
    stop = stop or asyncio.Event()
    said: tuple[MigrationState, str | None] = (MigrationState.OK, None)
    while (checked := await _checked(sessions, MIGRATED_POLL_SECONDS))[0] is not MigrationState.OK:
        if checked != said:  # a refused login said only "unavailable", like an outage
            state, why = checked
            because = f": {why}" if why else ""
            log.warning("the %s takes no work until the database %s%s", who, _UNTIL[state], because)
            said = checked
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), MIGRATED_POLL_SECONDS)
        if stop.is_set():
            return False
    if said[0] is not MigrationState.OK:
        log.info("the database is migrated: the %s starts", who)
    return True


_UNTIL = {
    MigrationState.UNAVAILABLE: "answers (it is unavailable)",
    MigrationState.NOT_MIGRATED: "is migrated",
}
