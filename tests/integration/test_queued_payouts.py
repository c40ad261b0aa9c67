"""Queue when short (`queueIfLowBalance`): a create the available balance does not cover is
QUEUED with nothing held; a top-up or a released hold starts queued payouts in FIFO order while
the funds last (PENDING, HOLD, ProcessPayout, `payout.dequeued`); the head that does not fit
blocks the ones behind it; queued payouts expire (QUEUE_EXPIRED). Real MariaDB and RabbitMQ."""

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from cli.merchants import NewMerchant
from contracts import ledger
from contracts.clock import SANDBOX_TIME
from contracts.db.engine import SessionFactory, naive_utc, transaction, utcnow
from contracts.db.models import (
    Balance,
    IdempotencyKey,
    LedgerJournal,
    Payout,
    PayoutEvent,
    SandboxClock,
    ScheduledAction,
)
from contracts.domain.money import MAX_BALANCE
from contracts.domain.scheduled_actions import Action
from contracts.domain.statuses import PayoutStatus
from contracts.funding import top_up_and_start_queued
from contracts.messages import ApplyPspOutcome, PayoutStatusChanged
from contracts.payout_queue import expire_queued_payouts
from contracts.reconcile import reconcile
from contracts.settings import Settings
from contracts.topology import APPLY_PSP_OUTCOME_KEY
from processor_service import transitions
from processor_service.handlers import Context, apply_psp_outcome, process_payout
from processor_service.schedule import Timetable
from processor_service.scheduler import Scheduler
from processor_service.transitions import PayoutChange
from tests.conftest import MerchantFactory
from tests.support.api_helpers import (
    API,
    PROCESSING_KEYS,
    auth,
    new_payout_command,
    outbox_for_payout,
    payout_body,
)
from tests.support.cli import payouts_said
from tests.support.payout_records import balance_and_ledger, event_types, journal_kinds
from tests.support.polling import eventually
from tests.support.processing import fail_as_the_processor, running_processor_and_relay
from tests.support.statements import counting_statements

EXPIRY = timedelta(hours=72)


async def create(
    client: httpx.AsyncClient, merchant: NewMerchant, amount: str, **overrides: Any
) -> dict[str, Any]:
    body = payout_body(amount=amount, queueIfLowBalance=True, **overrides)
    response = await client.post(f"{API}/payouts", json=body, headers=auth(merchant))
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def top_up(
    client: httpx.AsyncClient, merchant: NewMerchant, amount: str, key: str | None = None
) -> httpx.Response:
    return await client.post(
        f"{API}/sandbox/top-up", json={"amount": amount}, headers=auth(merchant, key)
    )


async def statuses(sessions: SessionFactory, *payout_ids: str) -> list[str]:
    async with sessions() as session:
        rows = await session.execute(
            select(Payout.id, Payout.status).where(Payout.id.in_(payout_ids))
        )
        found = {payout_id: status for payout_id, status in rows}
    return [found[payout_id] for payout_id in payout_ids]


async def commands_for(sessions: SessionFactory, payout_id: str) -> int:
    rows = await outbox_for_payout(sessions, payout_id)
    return sum(row.routing_key in PROCESSING_KEYS for row in rows)


async def assert_reconciled(sessions: SessionFactory) -> None:
    async with sessions() as session:
        assert await reconcile(session) == []


async def test_a_short_create_with_the_flag_is_queued_and_holds_nothing(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant(balance="100.00")
    body = payout_body(amount="150.00", queueIfLowBalance=True)

    response = await api_client.post(f"{API}/payouts", json=body, headers=auth(merchant))

    assert response.status_code == 201, response.text
    payout = response.json()["data"]
    assert payout["status"] == "QUEUED"
    assert "queued" in response.json()["message"].lower()
    assert await journal_kinds(sessions, payout["id"]) == ()
    assert await event_types(sessions, payout["id"]) == ("payout.queued",)
    assert [row.routing_key for row in await outbox_for_payout(sessions, payout["id"])] == [
        "payout.queued"
    ]
    assert (await balance_and_ledger(sessions, merchant.merchant_id))[0] == (
        Decimal("100.00"),
        Decimal("0.00"),
    )
    await assert_reconciled(sessions)


async def test_without_the_flag_a_short_create_is_still_refused(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant(balance="100.00")
    for flag in (None, False):
        body = payout_body(amount="150.00", queueIfLowBalance=flag)
        response = await api_client.post(f"{API}/payouts", json=body, headers=auth(merchant))
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "INSUFFICIENT_BALANCE"


async def test_the_flag_must_be_a_boolean(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant(balance="100.00")
    body = payout_body(amount="150.00", queueIfLowBalance="yes")
    response = await api_client.post(f"{API}/payouts", json=body, headers=auth(merchant))
    assert response.status_code == 400, response.text
    assert "queueIfLowBalance" in response.text


async def test_a_covered_create_with_the_flag_is_an_ordinary_create(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant(balance="100.00")
    payout = await create(api_client, merchant, "100.00")
    assert payout["status"] == "PENDING"
    assert await journal_kinds(sessions, payout["id"]) == ("HOLD",)
    assert await event_types(sessions, payout["id"]) == ("payout.created",)
    assert await commands_for(sessions, payout["id"]) == 1


async def test_a_top_up_starts_queued_payouts_in_order_while_funds_last(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant(balance="0.00")
    first, large, small = [
        (await create(api_client, merchant, amount))["id"]
        for amount in ("100.00", "300.00", "50.00")
    ]

    response = await top_up(api_client, merchant, "150.00")

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [payout["id"] for payout in data["startedPayouts"]] == [first]
    assert data["availableBalance"] == "50.00"
    # Strict FIFO: the large one does not fit and blocks the small one behind it.
    assert await statuses(sessions, first, large, small) == ["PENDING", "QUEUED", "QUEUED"]
    assert await journal_kinds(sessions, first) == ("HOLD",)
    assert await event_types(sessions, first) == ("payout.queued", "payout.dequeued")
    assert await commands_for(sessions, first) == 1
    assert await commands_for(sessions, small) == 0

    response = await top_up(api_client, merchant, "300.00")

    started = [payout["id"] for payout in response.json()["data"]["startedPayouts"]]
    assert started == [large, small]
    assert await statuses(sessions, first, large, small) == ["PENDING"] * 3
    for payout_id in (large, small):
        assert await journal_kinds(sessions, payout_id) == ("HOLD",)
        assert await commands_for(sessions, payout_id) == 1
    assert (await balance_and_ledger(sessions, merchant.merchant_id))[0] == (
        Decimal("0.00"),
        Decimal("450.00"),
    )
    await assert_reconciled(sessions)


async def test_the_sandbox_top_up_is_idempotent_and_test_mode_only(
    api_client: httpx.AsyncClient,
    production_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
) -> None:
    merchant = await make_merchant(balance="0.00")
    key = "6f1c5a52-3f0e-4a8e-9d4a-0c6f2f5a7b11"
    first = await top_up(api_client, merchant, "25.50", key)
    again = await top_up(api_client, merchant, "25.50", key)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.content == first.content
    assert (await balance_and_ledger(sessions, merchant.merchant_id))[0][0] == Decimal("25.50")
    missing_key = await top_up(api_client, merchant, "1.00", "")
    assert missing_key.status_code == 400

    refused = await top_up(production_client, merchant, "25.50")
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "NOT_FOUND"


async def test_a_top_up_past_the_largest_balance_is_400_naming_amount_and_writes_nothing(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    service_env: dict[str, str],
) -> None:
    """A balance is DECIMAL(18,2): past it the database's out-of-range error answered 500, and
    `payouts merchant topup` died on a traceback."""
    merchant = await make_merchant(balance="9999999999999990.00")
    before = await balance_and_ledger(sessions, merchant.merchant_id)

    refused = await top_up(api_client, merchant, "100.00")
    code, said = await operator_top_up(service_env, merchant, "100.00")

    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["details"] == [
        {"field": "amount", "message": ledger.TOP_UP_PAST_THE_LIMIT}
    ]
    assert code == 2, said[-600:]
    assert "Traceback" not in said and "9999999999999999.99" in said
    assert await balance_and_ledger(sessions, merchant.merchant_id) == before
    assert (await top_up(api_client, merchant, "9.99")).status_code == 200  # up to the limit


async def test_a_top_up_keeps_room_for_reversing_the_successful_payouts(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """A reversal puts a SUCCESS payout's amount back, whenever the PSP's callback comes. A top-up
    filled the balance to its limit after a payout succeeded: the callback was accepted (200)
    and the processor's REVERSAL could never be posted (BalanceLimitExceeded, dead-lettered)."""
    merchant = await make_merchant(balance=str(MAX_BALANCE - Decimal("100.00")))
    command = await new_payout_command(api_client, sessions, merchant, amount="100.00")
    async with transaction(sessions) as session:
        assert await process_payout(session, command, Context(None, 1000)) == "SUCCESS"
    before = await balance_and_ledger(sessions, merchant.merchant_id)

    refused = await top_up(api_client, merchant, "100.01")  # 200.00 below the limit, 100.00 paid
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["details"] == [
        {"field": "amount", "message": ledger.TOP_UP_PAST_THE_LIMIT}
    ]
    assert await balance_and_ledger(sessions, merchant.merchant_id) == before
    assert (await top_up(api_client, merchant, "100.00")).status_code == 200

    async with transaction(sessions) as session:  # the processor's reversal still fits
        payout = await session.scalar(
            select(Payout).where(Payout.id == command.payout_id).with_for_update()
        )
        assert payout is not None
        change = PayoutChange(payout, correlation_id=None)
        transitions.reverse(change)
        await change.write(session, SANDBOX_TIME)
    assert await statuses(sessions, command.payout_id) == ["REVERSED"]
    assert sum((await balance_and_ledger(sessions, merchant.merchant_id))[0]) == MAX_BALANCE
    await assert_reconciled(sessions)


async def operator_top_up(
    env: dict[str, str], merchant: NewMerchant, amount: str, *options: str
) -> tuple[int, str]:
    """`payouts merchant topup` run as an operator runs it: its exit code and what it said."""
    return await payouts_said(env, "merchant", "topup", merchant.merchant_id, amount, *options)


async def test_an_operator_top_up_run_again_under_its_key_is_made_once(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    service_env: dict[str, str],
) -> None:
    """Found by the operator review: an operator whose `payouts merchant topup` timed out could
    not tell whether it committed, and running it again credited the merchant twice."""
    merchant = await make_merchant(balance="0.00")
    key = "6F9619FF-8B86-D011-B42D-00C04FC964FF"  # any written form of a UUID: one key
    option = ("--idempotency-key", key)

    runs = await asyncio.gather(
        *(operator_top_up(service_env, merchant, "100.00", *option) for _ in range(3))
    )
    again = await operator_top_up(service_env, merchant, "100.00", "--idempotency-key", key.lower())
    other_amount = await operator_top_up(service_env, merchant, "200.00", *option)
    api_with_the_key = await top_up(api_client, merchant, "100.00", key)

    assert sorted(code for code, _ in runs) == [0, 0, 0], runs
    assert sum("topped up 100.00 PKR" in said and "already" not in said for _, said in runs) == 1
    assert again[0] == 0 and "already topped up 100.00 PKR" in again[1], again
    # Its key found taken (an INSERT IGNORE's warning, by design), not a database error shown.
    assert all("Duplicate entry" not in said for _, said in [*runs, again]), [*runs, again]
    assert other_amount[0] == 2 and "used for another request" in other_amount[1], other_amount
    assert api_with_the_key.status_code == 422, api_with_the_key.text
    hundred = Decimal("100.00")
    zero = Decimal("0.00")
    assert await balance_and_ledger(sessions, merchant.merchant_id) == (
        (hundred, zero),
        (hundred, zero),
    )

    # Past the keys' lifetime (a day, as the API's), the key is free again.
    async with transaction(sessions) as session:
        await session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.merchant_id == merchant.merchant_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    a_day_later = await operator_top_up(service_env, merchant, "100.00", *option)
    assert a_day_later[0] == 0 and "already" not in a_day_later[1], a_day_later
    two_hundred = Decimal("200.00")
    assert await balance_and_ledger(sessions, merchant.merchant_id) == (
        (two_hundred, zero),
        (two_hundred, zero),
    )


async def test_a_released_hold_starts_the_next_queued_payout(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant(balance="100.00")
    held = await create(api_client, merchant, "100.00")
    queued = await create(api_client, merchant, "80.00")
    assert queued["status"] == "QUEUED"

    await fail_as_the_processor(sessions, held["id"])

    assert await statuses(sessions, held["id"], queued["id"]) == ["FAILED", "PENDING"]
    assert await journal_kinds(sessions, held["id"]) == ("HOLD", "RELEASE")
    assert await journal_kinds(sessions, queued["id"]) == ("HOLD",)
    assert await event_types(sessions, queued["id"]) == ("payout.queued", "payout.dequeued")
    assert await commands_for(sessions, queued["id"]) == 1
    assert (await balance_and_ledger(sessions, merchant.merchant_id))[0] == (
        Decimal("20.00"),
        Decimal("80.00"),
    )
    await assert_reconciled(sessions)


async def expiries(sessions: SessionFactory, *payout_ids: str) -> dict[str, timedelta]:
    """Each payout's EXPIRE_QUEUE action: how long after its creation it is due."""
    async with sessions() as session:
        rows = await session.execute(
            select(ScheduledAction.payout_id, ScheduledAction.due_at, Payout.created_at)
            .join(Payout, Payout.id == ScheduledAction.payout_id)
            .where(
                ScheduledAction.payout_id.in_(payout_ids),
                ScheduledAction.action == Action.EXPIRE_QUEUE.value,
                ScheduledAction.expected_status == PayoutStatus.QUEUED.value,
            )
        )
        return {payout_id: due_at - created_at for payout_id, due_at, created_at in rows}


async def test_a_queued_payout_expires_and_the_new_head_may_start(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    merchant = await make_merchant(balance="0.00")
    old = await create(api_client, merchant, "100.00")
    behind = await create(api_client, merchant, "40.00")
    response = await top_up(api_client, merchant, "50.00")
    assert response.json()["data"]["startedPayouts"] == []  # the old one blocks
    # Each queued create scheduled its expiry (the processor applies it: test_sandbox_clock.py).
    for due_after in (await expiries(sessions, old["id"], behind["id"])).values():
        assert EXPIRY <= due_after < EXPIRY + timedelta(seconds=5)

    # The old one's expiry made due (the one behind it was queued later: it is not).
    async with transaction(sessions) as session:
        await session.execute(
            update(ScheduledAction)
            .where(ScheduledAction.payout_id == old["id"])
            .values(due_at=utcnow() - timedelta(seconds=1))
        )
    with caplog.at_level(logging.DEBUG, logger="payouts.status"):
        async with transaction(sessions) as session:
            expired, started = await expire_queued_payouts(
                session,
                merchant_id=merchant.merchant_id,
                due_by=utcnow(),
                time=SANDBOX_TIME,
                correlation_id=None,
            )
    assert ([p.id for p in expired], [p.id for p in started]) == ([old["id"]], [behind["id"]])
    # Logged as the processor's changes are, once committed: the queue's moves said nothing.
    assert [(r.levelname, r.payout_id, r.to_status) for r in caplog.records] == [
        ("INFO", old["id"], "FAILED"),
        ("DEBUG", behind["id"], "PENDING"),
    ]

    assert await statuses(sessions, old["id"], behind["id"]) == ["FAILED", "PENDING"]
    async with sessions() as session:
        failed = await session.get_one(Payout, old["id"])
        assert (failed.failure_code, failed.processed_at is not None) == ("QUEUE_EXPIRED", True)
    assert await journal_kinds(sessions, old["id"]) == ()  # nothing held, nothing released
    assert await event_types(sessions, old["id"]) == ("payout.queued", "payout.failed")
    assert await journal_kinds(sessions, behind["id"]) == ("HOLD",)
    # At-least-once: the action run again (a processor killed before its commit) changes nothing.
    async with transaction(sessions) as session:
        again = await expire_queued_payouts(
            session,
            merchant_id=merchant.merchant_id,
            due_by=utcnow(),
            time=SANDBOX_TIME,
            correlation_id=None,
        )
    assert again == ([], [])
    assert await event_types(sessions, old["id"]) == ("payout.queued", "payout.failed")
    await assert_reconciled(sessions)


def clock_past_the_expiry(merchant: NewMerchant) -> SandboxClock:
    """The merchant's sandbox clock an hour past a queued payout's expiry (an advance of 73 h),
    with no scheduled step applied (the scheduler behind it)."""
    offset = int((EXPIRY + timedelta(hours=1)).total_seconds())
    return SandboxClock(
        merchant_id=merchant.merchant_id, offset_seconds=offset, updated_at=utcnow()
    )


async def in_review_until(sessions: SessionFactory, payout_id: str, window: timedelta) -> None:
    """The payout IN_REVIEW, its decision window ending `window` from now (the scheduler fails
    it then, releasing its hold)."""
    now = utcnow()
    async with transaction(sessions) as session:
        payout = await session.get_one(Payout, payout_id)
        payout.status = PayoutStatus.IN_REVIEW.value
        session.add(
            ScheduledAction(
                merchant_id=payout.merchant_id,
                payout_id=payout.id,
                hold_cycle=payout.hold_cycle,
                action=Action.EXPIRE_DECISION.value,
                expected_status=PayoutStatus.IN_REVIEW.value,
                due_at=now + window,
                created_at=now,
            )
        )


async def test_a_top_up_on_a_clock_past_an_expiry_the_scheduler_has_not_applied_starts_nothing(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """The clock advanced 73 h and the scheduler behind it (an advance still running, the
    processor down): the top-up started a payout whose 72 h had run out (mid-flight review).
    The expiry applies first, and the queue's new head, that it unblocks, starts."""
    merchant = await make_merchant(balance="0.00")
    old = await create(api_client, merchant, "100.00")
    behind = await create(api_client, merchant, "40.00")
    async with transaction(sessions) as session:
        session.add(clock_past_the_expiry(merchant))
        # The one behind was queued later: its expiry is not due yet.
        await session.execute(
            update(ScheduledAction)
            .where(ScheduledAction.payout_id == behind["id"])
            .values(due_at=utcnow() + EXPIRY + timedelta(hours=2))
        )

    response = await top_up(api_client, merchant, "100.00")

    assert response.status_code == 200, response.text
    assert [p["id"] for p in response.json()["data"]["startedPayouts"]] == [behind["id"]]
    assert await statuses(sessions, old["id"], behind["id"]) == ["FAILED", "PENDING"]
    async with sessions() as session:
        assert (await session.get_one(Payout, old["id"])).failure_code == "QUEUE_EXPIRED"
        # Done with: the clock lists it no more, as a started payout's expiry (diff review).
        expiry = await session.scalar(
            select(ScheduledAction).where(ScheduledAction.payout_id == old["id"])
        )
        assert expiry is not None and (expiry.result, expiry.status_after) == ("APPLIED", "FAILED")
    assert (await balance_and_ledger(sessions, merchant.merchant_id))[0] == (
        Decimal("60.00"),
        Decimal("40.00"),
    )
    await assert_reconciled(sessions)


async def test_a_top_ups_expiry_carries_the_sandbox_time_it_was_due_at(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """As the scheduler's expiry does: its `payout.failed` had no sandboxTime (diff review)."""
    merchant = await make_merchant(balance="0.00")
    old = await create(api_client, merchant, "100.00")
    async with transaction(sessions) as session:
        session.add(clock_past_the_expiry(merchant))
    async with sessions() as session:
        due_at = await session.scalar(
            select(ScheduledAction.due_at).where(ScheduledAction.payout_id == old["id"])
        )

    response = await top_up(api_client, merchant, "10.00")

    assert response.status_code == 200, response.text
    async with sessions() as session:
        (failed,) = await session.scalars(
            select(PayoutEvent).where(
                PayoutEvent.payout_id == old["id"], PayoutEvent.type == "payout.failed"
            )
        )
    stamped = PayoutStatusChanged.model_validate_json(failed.body).sandbox_time
    assert due_at is not None and stamped is not None
    assert naive_utc(stamped) == due_at.replace(microsecond=due_at.microsecond // 1000 * 1000)


async def test_a_top_up_expires_the_overdue_queue_before_the_other_steps_due(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """An IN_REVIEW payout's decision window ended at +24 h (releasing 10.00: the queued 200.00
    still short), the queued payout's 72 h at +72 h; a top-up of 150.00 on a +73 h clock, the
    scheduler behind. Stopping its expiries at the window's end, the top-up started the payout
    whose 72 h had run out (diff review): it expires it, and the scheduler then fails the
    reviewed one."""
    merchant = await make_merchant(balance="100.00")
    in_review = await create(api_client, merchant, "10.00")
    queued = await create(api_client, merchant, "200.00")
    await in_review_until(sessions, in_review["id"], timedelta(hours=24))
    async with transaction(sessions) as session:
        session.add(clock_past_the_expiry(merchant))

    response = await top_up(api_client, merchant, "150.00")
    assert response.status_code == 200, response.text
    assert response.json()["data"]["startedPayouts"] == []
    await Scheduler(sessions, Timetable(), poll_interval_seconds=0.1).apply_due()

    assert await statuses(sessions, in_review["id"], queued["id"]) == ["FAILED", "FAILED"]
    await assert_reconciled(sessions)


async def test_a_psp_failure_after_an_advance_starts_no_payout_whose_time_ran_out(
    client_that_does_not_wait: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
) -> None:
    """As a top-up behind the clock did (mid-flight review), the PSP's FAILED, applied after a
    73 h advance the scheduler had yet to apply, released a hold that started a queued payout
    whose 72 h had run out. The expiry applies first, as of when the outcome came, and the
    money starts the payout queued later, whose expiry is not due."""
    client = client_that_does_not_wait
    merchant = await make_merchant(balance="100.00")
    held = await create(client, merchant, "100.00")
    old = await create(client, merchant, "80.00")
    behind = await create(client, merchant, "60.00")
    async with transaction(sessions) as session:  # queued later: due an hour after the advance
        await session.execute(
            update(ScheduledAction)
            .where(ScheduledAction.payout_id == behind["id"])
            .values(due_at=utcnow() + EXPIRY + timedelta(hours=2))
        )
    advanced = await client.post(
        f"{API}/sandbox/clock/advance",
        json={"seconds": int((EXPIRY + timedelta(hours=1)).total_seconds())},
        headers=auth(merchant),
    )
    assert advanced.status_code == 200, advanced.text
    simulated = await client.post(
        f"{API}/sandbox/payouts/{held['id']}/simulate",
        json={"outcome": "FAILED"},
        headers=auth(merchant),
    )
    assert simulated.status_code == 202, simulated.text

    [command] = [
        ApplyPspOutcome.model_validate_json(row.body)
        for row in await outbox_for_payout(sessions, held["id"])
        if row.routing_key == APPLY_PSP_OUTCOME_KEY
    ]
    async with transaction(sessions) as session:  # the processor's, the scheduler behind
        assert await apply_psp_outcome(session, command, Context(None, 0)) == "FAILED"

    assert await statuses(sessions, held["id"], old["id"], behind["id"]) == [
        "FAILED",
        "FAILED",
        "PENDING",
    ]
    async with sessions() as session:
        assert (await session.get_one(Payout, old["id"])).failure_code == "QUEUE_EXPIRED"
    assert await journal_kinds(sessions, old["id"]) == ()
    assert (await balance_and_ledger(sessions, merchant.merchant_id))[0] == (
        Decimal("40.00"),
        Decimal("60.00"),
    )
    await assert_reconciled(sessions)


async def test_a_released_hold_a_scheduled_step_applies_starts_what_its_time_had_not_expired(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """The decision window of an IN_REVIEW payout ended at +24 h, on a +73 h clock: its
    release, applied by the scheduler at its due time, starts the queued payout whose expiry
    (+72 h) was not due by then, as applying each step in due order does."""
    merchant = await make_merchant(balance="100.00")
    in_review = await create(api_client, merchant, "100.00")
    queued = await create(api_client, merchant, "80.00")
    await in_review_until(sessions, in_review["id"], timedelta(hours=24))
    async with transaction(sessions) as session:
        session.add(clock_past_the_expiry(merchant))

    await Scheduler(sessions, Timetable(), poll_interval_seconds=0.1).apply_due()

    assert await statuses(sessions, in_review["id"], queued["id"]) == ["FAILED", "PENDING"]
    assert await journal_kinds(sessions, queued["id"]) == ("HOLD",)
    await assert_reconciled(sessions)


async def test_a_later_expiry_applied_first_expires_in_due_order(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """Both expiries overdue (a processor was down), and two processors each took one: the one
    behind the head, applied first, expired both payouts, where in due order the head's
    expiry starts the one behind it (the balance covers it once the head is gone)."""
    merchant = await make_merchant(balance="0.00")
    old = await create(api_client, merchant, "100.00")
    behind = await create(api_client, merchant, "40.00")
    await top_up(api_client, merchant, "50.00")
    now = utcnow()
    for payout, overdue in ((old, timedelta(minutes=2)), (behind, timedelta(minutes=1))):
        async with transaction(sessions) as session:
            await session.execute(
                update(ScheduledAction)
                .where(ScheduledAction.payout_id == payout["id"])
                .values(due_at=now - overdue)
            )

    async with transaction(sessions) as session:  # the later one's action: due by its due time
        expired, started = await expire_queued_payouts(
            session,
            merchant_id=merchant.merchant_id,
            due_by=now - timedelta(minutes=1),
            time=SANDBOX_TIME,
            correlation_id=None,
        )

    assert ([p.id for p in expired], [p.id for p in started]) == ([old["id"]], [behind["id"]])
    assert await statuses(sessions, old["id"], behind["id"]) == ["FAILED", "PENDING"]
    await assert_reconciled(sessions)


async def test_a_payroll_item_with_the_flag_is_queued(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant(balance="100.00")
    items = [
        payout_body(amount="60.00"),
        payout_body(amount="60.00", queueIfLowBalance=True),
        payout_body(amount="60.00"),
        payout_body(amount="30.00"),
    ]
    response = await api_client.post(
        f"{API}/payouts/batch", json={"payouts": items}, headers=auth(merchant)
    )
    assert response.status_code == 200, response.text
    results = response.json()["data"]["results"]
    assert [item["status"] for item in results] == ["created", "created", "invalid", "created"]
    assert [results[i]["payout"]["status"] for i in (0, 1, 3)] == ["PENDING", "QUEUED", "PENDING"]
    queued_id = results[1]["payout"]["id"]
    assert await event_types(sessions, queued_id) == ("payout.queued",)
    assert await journal_kinds(sessions, queued_id) == ()
    assert list(await expiries(sessions, queued_id)) == [queued_id]

    async with transaction(sessions) as session:  # the dashboard and the CLI call this
        done = await top_up_and_start_queued(
            session, merchant.merchant_id, Decimal("50.00"), time=SANDBOX_TIME
        )
    assert [payout.id for payout in done.started] == [queued_id]
    # Its expiry will not apply: skipped at the start, not listed by the clock for 72 h.
    async with sessions() as session:
        expiry = await session.scalar(
            select(ScheduledAction).where(ScheduledAction.payout_id == queued_id)
        )
    assert expiry is not None
    assert (expiry.result, expiry.status_after) == ("SKIPPED", "PENDING")
    await assert_reconciled(sessions)


async def test_a_queued_create_costs_at_most_eleven_statements_and_a_covered_one_nine(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    """The flag's answer is stored after the work (its status is known only then): one UPDATE of
    the idempotency key more than an ordinary create (tests/integration/test_statement_budget.py
    keeps that one at eight); a queued one also reads the clock and schedules its expiry."""
    merchant = await make_merchant(balance="100.00")
    await create(api_client, merchant, "1.00")  # the merchant and the directory are cached now

    for amount, status, ceiling in (("50.00", "PENDING", 9), ("500.00", "QUEUED", 11)):
        with counting_statements() as counted:
            assert (await create(api_client, merchant, amount))["status"] == status
        assert len(counted.own_statements) <= ceiling, "\n".join(counted.statements)
        assert (counted.commits, counted.rollbacks) == (1, 0)


async def test_concurrent_top_ups_and_creates_start_queued_payouts_in_order_once(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """20 creates of 100.00 with the flag and 20 top-ups of 75.00 at once: 1,500.00 for
    2,000.00 of payouts. Whatever the interleaving: 15 held, 5 queued, no overdraft, the started
    queued payouts are the oldest ones, each held and commanded exactly once."""
    merchant = await make_merchant(balance="0.00")
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: create(api_client, merchant, "100.00") for _ in range(20)
    ]
    calls += [lambda: top_up(api_client, merchant, "75.00") for _ in range(20)]
    random.Random(14).shuffle(calls)

    answers = await asyncio.gather(*(call() for call in calls))

    for answer in answers:
        if isinstance(answer, httpx.Response):
            assert answer.status_code == 200, answer.text
    async with sessions() as session:
        payouts = list(
            await session.scalars(
                select(Payout)
                .where(Payout.merchant_id == merchant.merchant_id)
                .order_by(Payout.created_at, Payout.id)
            )
        )
        balance = await session.get_one(Balance, merchant.merchant_id)
        queue_events = {
            (payout_id, event_type): created_at
            for payout_id, event_type, created_at in (
                await session.execute(
                    select(PayoutEvent.payout_id, PayoutEvent.type, PayoutEvent.created_at).where(
                        PayoutEvent.merchant_id == merchant.merchant_id,
                        PayoutEvent.type.in_(["payout.queued", "payout.dequeued"]),
                    )
                )
            )
        }
        holds = list(
            await session.scalars(
                select(LedgerJournal.payout_id).where(
                    LedgerJournal.merchant_id == merchant.merchant_id,
                    LedgerJournal.kind == "HOLD",
                )
            )
        )
    assert [p.status for p in payouts].count("PENDING") == 15
    assert [p.status for p in payouts].count("QUEUED") == 5
    assert (balance.available, balance.held) == (Decimal("0.00"), Decimal("1500.00"))
    pending = {p.id for p in payouts if p.status == "PENDING"}
    # Each started once, none of the queued held.
    assert sorted(str(payout_id) for payout_id in holds) == sorted(pending)
    for payout_id in pending:
        assert await commands_for(sessions, payout_id) == 1
    # Strict FIFO: a payout that left the queue never overtook an older one that was in the
    # queue at that moment (queued and dequeued events are written under the queue's lock, so
    # their times are in lock order). An older create that committed later joins the queue later.
    position = {p.id: index for index, p in enumerate(payouts)}
    dequeued = [pid for (pid, kind) in queue_events if kind == "payout.dequeued"]
    still_queued = [p.id for p in payouts if p.status == "QUEUED"]
    for waiting in still_queued:
        for left in dequeued:
            if position[waiting] < position[left]:
                assert (
                    queue_events[(waiting, "payout.queued")]
                    > queue_events[(left, "payout.dequeued")]
                ), f"{left} started while the older {waiting} waited"
    await assert_reconciled(sessions)


@pytest.fixture
async def processor(settings: Settings) -> AsyncIterator[None]:
    """The processor app and an outbox relay loop, both in this process."""
    async with running_processor_and_relay(settings):
        yield


async def test_a_queued_payout_is_paid_out_after_a_top_up(
    processor: None,
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
) -> None:
    merchant = await make_merchant(balance="0.00")
    payout = await create(
        api_client,
        merchant,
        "250.00",
        destType="BANK",
        bankCode="HBL",
        walletCode=None,
        accountNumber="1234560001",
    )
    assert payout["status"] == "QUEUED"

    response = await top_up(api_client, merchant, "300.00")
    assert response.status_code == 200, response.text

    async def succeeded() -> bool:
        [status] = await statuses(sessions, payout["id"])
        return status == "SUCCESS"

    await eventually(succeeded, within=20, what="the queued 0001 payout's SUCCESS")
    assert await event_types(sessions, payout["id"]) == (
        "payout.queued",
        "payout.dequeued",
        "payout.processing",
        "payout.succeeded",
    )
    assert await journal_kinds(sessions, payout["id"]) == ("HOLD", "PAYOUT")
    assert (await balance_and_ledger(sessions, merchant.merchant_id))[0] == (
        Decimal("50.00"),
        Decimal("0.00"),
    )
