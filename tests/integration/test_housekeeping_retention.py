"""What the relay's clean-up deletes that something else still reads (housekeeping review): a
scheduled action marked ERROR while its payout still waits for it, the only alarm about a payout
whose funds stay held, was deleted with the applied actions after 7 days; and a request-log
cursor the API gave out was a 400 once the clean-up had deleted its call (an empty page until
then)."""

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, insert, select, update

from contracts.clock import SANDBOX_TIME
from contracts.db.engine import SessionFactory, plus_seconds, transaction, utcnow
from contracts.db.models import ApiRequestRecord, Payout, ScheduledAction
from contracts.domain.scheduled_actions import Action, Result
from contracts.domain.statuses import PayoutStatus
from contracts.pipeline_health import Thresholds, pipeline_problems
from processor_service.housekeeping import clean_up
from tests.conftest import MerchantFactory
from tests.support.api_helpers import API, auth, create_payout, new_key, payout_body
from tests.support.polling import eventually
from tests.support.statements import counting_statements

RETENTION = timedelta(hours=24)


async def logged(sessions: SessionFactory, merchant_id: str, count: int) -> None:
    async def probe() -> bool | None:
        async with sessions() as session:
            n = await session.scalar(
                select(func.count())
                .select_from(ApiRequestRecord)
                .where(ApiRequestRecord.merchant_id == merchant_id)
            )
        return True if (n or 0) >= count else None

    await eventually(probe, what=f"{count} logged requests")


async def test_a_failed_action_its_payout_still_waits_for_is_reported_after_a_week(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """An IN_REVIEW payout whose decision window's expiry failed (ERROR) keeps its funds held
    until something happens; reconcile's line about it is the only trace. Eight days on, with
    the payout still IN_REVIEW and its money still held, the line must still be there."""
    merchant = await make_merchant()
    payout = await create_payout(api_client, merchant)
    failed_at = utcnow() - timedelta(days=8)
    async with transaction(sessions) as session:
        await session.execute(
            update(Payout)
            .where(Payout.id == payout["id"])
            .values(status=PayoutStatus.IN_REVIEW.value, updated_at=failed_at)
        )
        await session.execute(
            insert(ScheduledAction).values(
                merchant_id=merchant.merchant_id,
                payout_id=payout["id"],
                hold_cycle=1,
                action=Action.EXPIRE_DECISION.value,
                expected_status=PayoutStatus.IN_REVIEW.value,
                due_at=failed_at,
                created_at=failed_at,
                applied_at=failed_at,
                result=Result.ERROR.value,
            )
        )

    async def reported() -> list[str]:
        async with sessions() as session:
            problems = await pipeline_problems(session, Thresholds(), SANDBOX_TIME)
        return [p for p in problems if payout["id"] in p]

    assert await reported()  # reported before the clean-up

    await clean_up(sessions, outbox_retention=RETENTION)

    async with sessions() as session:
        status = await session.scalar(select(Payout.status).where(Payout.id == payout["id"]))
    assert status == PayoutStatus.IN_REVIEW.value  # funds still held, nothing moved it on
    assert await reported(), (
        "after the clean-up no report names the IN_REVIEW payout whose expiry failed: its "
        "funds stay held and nothing says so"
    )


async def test_a_request_log_cursor_the_api_gave_out_is_not_refused_once_cleaned_up(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """A merchant pages its request log; the call its `nextCursor` names passes the 7 days. Before
    the relay's clean-up the next page is simply empty (the listing stops at 7 days); after it,
    the same cursor is a 400 VALIDATION_ERROR naming `startingAfter`, as if the merchant had made
    it up: the answer depends on whether a 5-minute chore happened to run in between."""
    merchant = await make_merchant()
    for _ in range(2):
        created = await api_client.post(
            f"{API}/payouts", json=payout_body(), headers=auth(merchant, new_key())
        )
        assert created.status_code == 201, created.text
    await logged(sessions, merchant.merchant_id, 2)

    async def page(**params: Any) -> httpx.Response:
        return await api_client.get(f"{API}/requests", params=params, headers=auth(merchant, ""))

    first = (await page(limit=1)).json()["data"]
    cursor = first["pagination"]["nextCursor"]
    assert cursor is not None

    async with transaction(sessions) as session:
        await session.execute(
            # Eight days pass, for every merchant's calls.
            update(ApiRequestRecord).values(
                started_at=plus_seconds(-8 * 86400, ApiRequestRecord.started_at)
            )
        )
    before = await page(limit=1, startingAfter=cursor)
    assert before.status_code == 200, before.text  # aged out: an empty page

    await clean_up(sessions, outbox_retention=RETENTION)

    after = await page(limit=1, startingAfter=cursor)
    assert after.status_code == 200, (
        f"the cursor the API gave out is refused once the clean-up ran: {after.status_code} "
        f"{after.text}"
    )


async def test_each_batch_is_one_delete_that_reads_nothing_back(sessions: SessionFactory) -> None:
    """The ORM read back each row a batch deleted (RETURNING on MariaDB; on MySQL 8, which has
    none, a SELECT of every matching row's key without the batch's LIMIT, before each batch: a
    backlog of expired keys read whole, again and again) (MySQL 8 review)."""
    with counting_statements() as counted:
        await clean_up(sessions, outbox_retention=RETENTION)

    assert counted.statements, "the clean-up sent nothing"
    assert all(sql.startswith("DELETE FROM") for sql in counted.statements), counted.statements
    assert not [sql for sql in counted.statements if "RETURNING" in sql], counted.statements
