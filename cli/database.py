"""The database engine of an operator command: one connection, and a bound on each wait for
the server (PAYOUTS_COMMAND_DATABASE_TIMEOUT_SECONDS), past which the command says in one line
that MySQL does not answer (cli.outages)."""

from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.db.engine import create_engine
from contracts.settings import Settings


def command_engine(settings: Settings) -> AsyncEngine:
    return create_engine(
        settings.database_url,
        pool_size=1,
        timeout_seconds=settings.command_database_timeout_seconds,
    )
