"""Every migration's downgrade, on a database of its own: each revision taken down a step and up
again leaves the schema exactly as the upgrades made it, and the whole chain goes down to base.
(0001's downgrade dropped an index a foreign key needed, and 0007's upgrade kept the index its
downgrade adds, so a second downgrade failed.) And `payouts migrate` on a database migrated by
two at once, by a newer code, or stopped half-way through a revision."""

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import datetime

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import create_async_engine

from cli.supervisor import payouts_command
from migrations.runner import alembic_config
from tests.support.cli import run_payouts
from tests.support.infrastructure import Infrastructure
from tests.support.migrations import migrate, scratch_database

_COUNTER = re.compile(r" AUTO_INCREMENT=\d+")
# The index the server makes for a foreign key is named after the column in a CREATE TABLE and
# after the constraint (`<table>_ibfk_<n>`) in an ALTER TABLE: the same index either way.
_FOREIGN_KEY_INDEX = re.compile(r"KEY `\w+_ibfk_\d+` \(`(\w+)`\)")


@pytest.fixture
async def scratch_url(infrastructure: Infrastructure) -> AsyncIterator[str]:
    async with scratch_database(infrastructure) as url:
        yield url


async def schema(url: str) -> dict[str, list[str]]:
    """Each table's CREATE TABLE as a set of lines (columns, keys, options, in any order), but
    its AUTO_INCREMENT counter and how its foreign keys' indexes are named."""
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        tables = [row[0] for row in await connection.exec_driver_sql("SHOW TABLES")]
        created = {}
        for table in tables:
            row = (await connection.exec_driver_sql(f"SHOW CREATE TABLE `{table}`")).one()
            normal = _FOREIGN_KEY_INDEX.sub(
                r"KEY `\1` (`\1`)", _COUNTER.sub("", str(row._mapping["Create Table"]))
            )
            created[table] = sorted(line.strip().rstrip(",") for line in normal.splitlines())
    await engine.dispose()
    return created


async def test_each_revision_goes_down_and_up_again_to_the_same_schema(scratch_url: str) -> None:
    await migrate(scratch_url, "up", "head")
    at_head = await schema(scratch_url)
    script = ScriptDirectory.from_config(alembic_config(scratch_url))

    for revision in script.walk_revisions():  # newest first; the database is at `revision`
        below = revision.down_revision
        assert below is None or isinstance(below, str), revision.revision  # no merges
        made = await schema(scratch_url)
        await migrate(scratch_url, "down", below or "base")
        await migrate(scratch_url, "up", revision.revision)
        assert await schema(scratch_url) == made, f"down and up again at {revision.revision}"
        await migrate(scratch_url, "down", below or "base")

    assert set(await schema(scratch_url)) == {"alembic_version"}
    await migrate(scratch_url, "up", "head")
    assert await schema(scratch_url) == at_head


# A merchant row, for the tests of data migrations (0021 on has these columns).
MERCHANT_M1 = (
    "INSERT INTO merchants (id, name, api_key_hash, is_active, webhook_secret, created_at)"
    " VALUES ('m-1', 'M', 'h', 1, 's', '2026-01-01')"
)


async def test_0022_schedules_the_expiry_of_each_payout_queued_before_it(scratch_url: str) -> None:
    """Queue expiry became a scheduled action: a payout QUEUED when the migration runs gets its
    EXPIRE_QUEUE action, due 72 h of its merchant's sandbox time after its creation; other
    payouts get none."""
    await migrate(scratch_url, "up", "0021")
    engine = create_async_engine(scratch_url)
    async with engine.begin() as connection:
        await connection.exec_driver_sql(MERCHANT_M1)
        await connection.exec_driver_sql(  # the merchant's clock is an hour ahead
            "INSERT INTO sandbox_clocks (merchant_id, offset_seconds, updated_at)"
            " VALUES ('m-1', 3600, '2026-01-01')"
        )
        for payout_id, status in (("p-queued", "QUEUED"), ("p-pending", "PENDING")):
            await connection.exec_driver_sql(
                "INSERT INTO payouts (id, merchant_id, merchant_reference, amount, currency,"
                " dest_type, account_number, account_title, status, attempts, hold_cycle,"
                f" created_at, updated_at) VALUES ('{payout_id}', 'm-1', '{payout_id}', 1, 'PKR',"
                f" 'BANK', '1', 'T', '{status}', 0, 1, '2026-01-01 10:00:00', '2026-01-01')"
            )
    await migrate(scratch_url, "up", "0022")
    async with engine.connect() as connection:
        rows = await connection.exec_driver_sql(
            "SELECT payout_id, hold_cycle, action, expected_status, due_at, applied_at"
            " FROM scheduled_actions"
        )
        actions = [tuple(row) for row in rows]
    await engine.dispose()
    assert actions == [("p-queued", 1, "EXPIRE_QUEUE", "QUEUED", datetime(2026, 1, 4, 11, 0), None)]


async def test_0029_down_keeps_the_offset_before_the_last_advance(scratch_url: str) -> None:
    """Three advances, the last two stamped alike (the last waited for the other's lock, and
    the clock's stamp never goes back): 0027's previous offset is the second one's. Read as the
    last advance before the clock's stamp, it was the first one's."""
    await migrate(scratch_url, "up", "0029")
    engine = create_async_engine(scratch_url)
    async with engine.begin() as connection:
        await connection.exec_driver_sql(MERCHANT_M1)
        await connection.exec_driver_sql(
            "INSERT INTO sandbox_clocks (merchant_id, offset_seconds, updated_at)"
            " VALUES ('m-1', 600, '2026-01-01 10:00:00')"
        )
        await connection.exec_driver_sql(
            "INSERT INTO sandbox_clock_advances (merchant_id, advanced_at, offset_seconds) VALUES"
            " ('m-1', '2026-01-01 09:00:00', 100), ('m-1', '2026-01-01 10:00:00', 300),"
            " ('m-1', '2026-01-01 10:00:00', 600)"
        )
    await migrate(scratch_url, "down", "0028")
    async with engine.connect() as connection:
        rows = await connection.exec_driver_sql(
            "SELECT offset_seconds, previous_offset_seconds FROM sandbox_clocks"
        )
        clocks = [tuple(row) for row in rows]
    await engine.dispose()
    assert clocks == [(600, 300)]


async def test_two_migrates_at_once_take_turns_and_both_end_well(
    scratch_url: str, service_env: dict[str, str]
) -> None:
    """Both applied the same revisions: one died half-way through one ("Table ... already
    exists", or the directory loaded twice). The second now waits and finds the database at
    head."""
    env = {**service_env, "PAYOUTS_DATABASE_URL": scratch_url}
    runs = [
        await asyncio.create_subprocess_exec(
            *payouts_command("migrate"),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    ended = [await asyncio.wait_for(run.communicate(), timeout=300) for run in runs]

    assert [run.returncode for run in runs] == [0, 0], [err.decode()[-600:] for _, err in ended]
    head = ScriptDirectory.from_config(alembic_config(scratch_url)).get_current_head()
    engine = create_async_engine(scratch_url)
    async with engine.connect() as connection:
        versions = list((await connection.exec_driver_sql("SELECT * FROM alembic_version")).all())
        banks = (
            await connection.exec_driver_sql(
                "SELECT COUNT(*) FROM directory_institutions WHERE code = 'HBL'"
            )
        ).scalar()
    await engine.dispose()
    assert (versions, banks) == ([(head,)], 1)


async def execute(url: str, statement: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.exec_driver_sql(statement)
    await engine.dispose()


async def version_of(url: str) -> list[str]:
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        rows = await connection.exec_driver_sql("SELECT version_num FROM alembic_version")
        versions = [row[0] for row in rows]
    await engine.dispose()
    return versions


async def test_migrate_on_a_database_a_newer_code_migrated_says_so_in_one_line(
    scratch_url: str, service_env: dict[str, str]
) -> None:
    """A revision this code does not know is a newer code's: the services run on it
    (migrations/state.py), and `payouts migrate` (compose's one-shot, which every service waits
    for) has nothing to do. It died with Alembic's "Can't locate revision" traceback."""
    await migrate(scratch_url, "up", "head")
    await execute(scratch_url, "UPDATE alembic_version SET version_num = '9999_of_a_newer_code'")

    done = await asyncio.to_thread(
        run_payouts, {**service_env, "PAYOUTS_DATABASE_URL": scratch_url}, "migrate"
    )

    assert (done.returncode, done.stderr) == (0, ""), done.stderr[-800:]
    assert "9999_of_a_newer_code" in done.stdout
    assert await version_of(scratch_url) == ["9999_of_a_newer_code"]


# The first DDL statement of a revision, run by itself: what MariaDB and MySQL keep of a revision
# stopped after it (each DDL statement commits; alembic_version is written last).
HALF_APPLIED = {
    "0035": (
        "0034",
        "CREATE INDEX ix_payouts_readiness ON payouts (merchant_id, created_at, status, amount,"
        " account_number, failure_code, hold_cycle)",
    ),
    "0037": (
        "0036",
        "CREATE INDEX ix_events_payout_type_time ON payout_events (payout_id, type, created_at)",
    ),
}


@pytest.mark.parametrize("revision", list(HALF_APPLIED))
async def test_migrate_finishes_a_revision_stopped_half_way(
    scratch_url: str, service_env: dict[str, str], revision: str
) -> None:
    """0035 builds seven indexes on the biggest tables: a migrate stopped among them (a deploy's
    timeout, a SIGKILL, a lost connection) left the first ones built and alembic_version at
    0034, and every later `payouts migrate` died on "Duplicate key name"."""
    below, first_statement = HALF_APPLIED[revision]
    await migrate(scratch_url, "up", below)
    await execute(scratch_url, first_statement)

    done = await asyncio.to_thread(
        run_payouts, {**service_env, "PAYOUTS_DATABASE_URL": scratch_url}, "migrate"
    )

    assert done.returncode == 0, done.stderr[-600:]
    head = ScriptDirectory.from_config(alembic_config(scratch_url)).get_current_head()
    assert await version_of(scratch_url) == [head]
