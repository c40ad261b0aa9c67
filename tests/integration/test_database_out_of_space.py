"""A database out of space (its disk, its tablespace) refuses writes and serves reads: an outage,
not a bug. A create was a logged 500 (out-of-space review); the consumers, which judge errors by
the same rule (contracts/db/outages.py), dead-lettered good commands, marked due steps ERROR for
good and parked webhooks with no delivery row."""

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from contracts.db.engine import SessionFactory, create_session_factory
from contracts.db.models import Payout
from contracts.reconcile import reconcile
from contracts.settings import Settings
from tests.conftest import in_process_api
from tests.support.api_helpers import API, assert_error, auth, new_key, new_merchant, payout_body
from tests.support.full_database import FullableDatabase, fullable_database

CREATES_UNTIL_REFUSED = 400


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[FullableDatabase]:
    async with fullable_database(f"{settings.database_url.rsplit('/', 1)[1]}_full") as database:
        yield database


async def test_a_create_on_a_full_database_is_a_503_that_writes_nothing_and_is_retried_once(
    settings: Settings, database: FullableDatabase
) -> None:
    sessions = create_session_factory(database.engine)
    merchant = await new_merchant(sessions)
    full = settings.model_copy(update={"database_url": database.url})
    async with in_process_api(full) as api:
        await database.fill()
        for _ in range(CREATES_UNTIL_REFUSED):  # the pages' last free bytes take a few
            key, body = new_key(), payout_body()
            refused = await api.post(f"{API}/payouts", json=body, headers=auth(merchant, key))
            if refused.status_code != 201:
                break
        read = await api.get(f"{API}/balance", headers=auth(merchant, ""))
        written = await _payouts_referenced(sessions, body["merchantReference"])
        await database.free()
        again = await api.post(f"{API}/payouts", json=body, headers=auth(merchant, key))

    assert_error(refused, 503, "SERVICE_UNAVAILABLE")
    assert read.status_code == 200, read.text  # reads are served meanwhile
    assert written == 0
    assert again.status_code == 201, again.text
    assert await _payouts_referenced(sessions, body["merchantReference"]) == 1
    async with sessions() as session:
        assert await reconcile(session) == []


async def _payouts_referenced(sessions: SessionFactory, reference: str) -> int | None:
    async with sessions() as session:
        return await session.scalar(
            select(func.count()).where(Payout.merchant_reference == reference)
        )
