"""Statements and commits per service, counted by the database server itself.

Each service the bench starts logs in as its own MySQL user (`<database>_api`, `..._processor`,
`..._relay`, `..._webhooks`, all privileges on the bench database, no password), so the server
keeps its counters apart:

- MariaDB: INFORMATION_SCHEMA.USER_STATISTICS (the bench turns `userstat` on, and leaves it on:
  turning it off would stop the counters of any other bench running on the same server).
  SELECT_COMMANDS, UPDATE_COMMANDS (INSERT, UPDATE, DELETE, REPLACE) and OTHER_COMMANDS (COMMIT,
  ROLLBACK, BEGIN, SET, ...) add up to every statement the server ran for the user.
  COMMIT_TRANSACTIONS is no count of commits: it also counts every statement that touched InnoDB
  (a statement-level commit), so commits = COMMIT_TRANSACTIONS - SELECT_COMMANDS -
  UPDATE_COMMANDS. That is exact when every SELECT reads a table and no statement fails; a
  table-less `SELECT 1` or a failed statement makes it one lower. ROLLBACK_TRANSACTIONS likewise
  counts a failed statement's own rollback as well as its transaction's.
- MySQL 8: performance_schema.events_statements_summary_by_user_by_event_name, the
  `statement/sql/*` events; commits and rollbacks are the COMMIT and ROLLBACK statements (the
  services never write in autocommit mode). Not exercised on this machine (MariaDB).
"""

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts.db.engine import create_engine


@dataclass(frozen=True)
class Stage:
    name: str  # in the report and in the user's name
    command: str  # `payouts <command>`


STAGES = (
    Stage("api", "api"),
    Stage("processor", "processor"),
    Stage("relay", "outbox-relay"),
    Stage("webhooks", "webhooks"),
)
MYSQL_WRITES = frozenset(
    f"statement/sql/{name}"
    for name in (
        "insert",
        "insert_select",
        "update",
        "update_multi",
        "delete",
        "delete_multi",
        "replace",
        "replace_select",
    )
)


@dataclass(frozen=True)
class StatementCounts:
    selects: int = 0
    writes: int = 0  # INSERT, UPDATE, DELETE, REPLACE
    other: int = 0  # COMMIT, ROLLBACK, BEGIN, SET, ...
    commits: int = 0
    rollbacks: int = 0

    @property
    def statements(self) -> int:
        return self.selects + self.writes + self.other

    def __add__(self, other: "StatementCounts") -> "StatementCounts":
        return StatementCounts(
            *(getattr(self, f.name) + getattr(other, f.name) for f in fields(self))
        )

    def __sub__(self, earlier: "StatementCounts") -> "StatementCounts":
        return StatementCounts(
            *(getattr(self, f.name) - getattr(earlier, f.name) for f in fields(self))
        )

    def floored(self) -> "StatementCounts":
        """The derived MariaDB commit count can dip below zero by a table-less SELECT or two."""
        return replace(self, commits=max(self.commits, 0))

    def per(self, payouts: int) -> dict[str, float]:
        counts = {f.name: getattr(self, f.name) for f in fields(self)}
        counts["statements"] = self.statements
        return {name: value / payouts for name, value in counts.items()}  # judged unrounded


def stage_user(database: str, stage: Stage) -> str:
    """Named after the database too: two benches on one server must not share counters."""
    return f"{database}_{stage.name}"


def stage_database_urls(admin_url: str) -> dict[str, str]:
    """`payouts <command>`: the database URL of its stage's user (same server and database)."""
    parts = urlsplit(admin_url)
    database = parts.path.lstrip("/")
    host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    return {
        stage.command: urlunsplit(parts._replace(netloc=f"{stage_user(database, stage)}@{host}"))
        for stage in STAGES
    }


async def _is_mariadb(connection: AsyncConnection) -> bool:
    version = (await connection.execute(text("SELECT VERSION()"))).scalar_one()
    return "mariadb" in str(version).lower()


EXISTING_USERS = text("SELECT User FROM mysql.user WHERE Host = '%' AND User IN :users").bindparams(
    bindparam("users", expanding=True)
)


async def create_stage_users(admin_url: str) -> None:
    """One user per stage (kept from run to run: the counters are read as differences) with
    every privilege on the bench database; on MariaDB also switch the per-user statistics on."""
    database = urlsplit(admin_url).path.lstrip("/")
    users = [stage_user(database, stage) for stage in STAGES]
    engine = create_engine(admin_url, pool_size=1)
    try:
        async with engine.begin() as connection:
            if await _is_mariadb(connection):
                await connection.execute(text("SET GLOBAL userstat = 1"))
            # Not `IF NOT EXISTS`/`IF EXISTS`: the server's note on an existing user is printed.
            existing = set((await connection.execute(EXISTING_USERS, {"users": users})).scalars())
            for user in users:
                if user not in existing:
                    await connection.execute(text(f"CREATE USER '{user}'@'%'"))
                await connection.execute(
                    text(f"GRANT ALL PRIVILEGES ON `{database}`.* TO '{user}'@'%'")
                )
    finally:
        await engine.dispose()


MARIADB_COUNTS = text(
    "SELECT USER, SELECT_COMMANDS, UPDATE_COMMANDS, OTHER_COMMANDS, COMMIT_TRANSACTIONS, "
    "ROLLBACK_TRANSACTIONS FROM information_schema.USER_STATISTICS WHERE USER IN :users"
).bindparams(bindparam("users", expanding=True))
MYSQL_COUNTS = text(
    "SELECT USER, EVENT_NAME, COUNT_STAR "
    "FROM performance_schema.events_statements_summary_by_user_by_event_name "
    "WHERE USER IN :users AND EVENT_NAME LIKE 'statement/sql/%' AND COUNT_STAR > 0"
).bindparams(bindparam("users", expanding=True))


def _mariadb_counts(row: Any) -> StatementCounts:
    _, selects, writes, other, engine_commits, rollbacks = row
    return StatementCounts(
        selects=selects,
        writes=writes,
        other=other,
        commits=engine_commits - selects - writes,  # see the module's docstring
        rollbacks=rollbacks,
    )


def _mysql_counts(events: Mapping[str, int]) -> StatementCounts:
    writes = sum(count for name, count in events.items() if name in MYSQL_WRITES)
    selects = events.get("statement/sql/select", 0)
    return StatementCounts(
        selects=selects,
        writes=writes,
        other=sum(events.values()) - selects - writes,
        commits=events.get("statement/sql/commit", 0),
        rollbacks=events.get("statement/sql/rollback", 0),
    )


async def read_stage_counts(engine: AsyncEngine, database: str) -> dict[str, StatementCounts]:
    """Cumulative counts per stage (zeros for a user that has not run anything yet)."""
    users = {stage_user(database, stage): stage.name for stage in STAGES}
    counts = dict.fromkeys(users.values(), StatementCounts())
    async with engine.connect() as connection:
        if await _is_mariadb(connection):
            for row in await connection.execute(MARIADB_COUNTS, {"users": list(users)}):
                counts[users[row[0]]] = _mariadb_counts(row)
            return counts
        events: dict[str, dict[str, int]] = {}
        for user, event, count in await connection.execute(MYSQL_COUNTS, {"users": list(users)}):
            events.setdefault(user, {})[event] = int(count)
        counts.update({users[user]: _mysql_counts(by_event) for user, by_event in events.items()})
        return counts


def counts_per_payout(
    changes: Mapping[str, StatementCounts], payouts: int
) -> dict[str, dict[str, float]]:
    """Each stage's counts divided by the payouts created, and the total of all stages."""
    if not changes or payouts == 0:
        return {}
    stages = {name: change.floored() for name, change in changes.items()}
    stages["total"] = sum(stages.values(), StatementCounts())
    return {name: change.per(payouts) for name, change in stages.items()}
