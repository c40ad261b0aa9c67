"""Webhook retries whose message was lost (processor_service.stalled_retries), against the real
MariaDB/MySQL, RabbitMQ, webhook service and an HTTP receiver.

The loss: the webhook service records a failed attempt (the delivery waits for the retry due at
D2), then dies before publishing that retry; the message it was handling (the retry due at D1)
comes back and is superseded. Nothing carries D2 any more.

The test database is shared with other tests, which leave retrying deliveries of their own: each
test judges the sweep by the copies of its own payout, never by the number the sweep returns.
"""

import asyncio
import logging
from datetime import timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select, update
from sqlalchemy.dialects.mysql import insert

from api_service.sandbox.webhook_retries import release_retries_due
from contracts.clock import SANDBOX_TIME
from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import OutboxMessage, PayoutEvent, SandboxClock, WebhookDelivery
from contracts.settings import Settings
from contracts.topology import (
    RETRY_CLOCK_OFFSET_HEADER,
    RETRY_COUNT_HEADER,
    RETRY_DUE_HEADER,
)
from contracts.waiting_retries import RECOPY_AFTER_STALLS
from contracts.webhooks import DeliveryStatus
from processor_service import stalled_retries
from processor_service.stalled_retries import (
    release_retries_due_on_advanced_clocks,
    resend_stalled_retries,
)
from tests.conftest import MerchantFactory
from tests.support.amqp import RabbitClient
from tests.support.webhook_flow import (
    copies_sent_by,
    created_event,
    delivery_of,
    event_delivery,
    event_id_of,
    first_request,
    quick_webhook_settings,
    reaches,
    relay,
    resent_copies,
    retry_of,
    running_webhook_service,
)
from tests.support.webhook_receiver import Reply, WebhookReceiver
from webhook_service.delivery import SUPERSEDED, Disposition, EventDelivery
from webhook_service.retry_ladder import RetryLadder
from webhook_service.sender import WebhookSender

STALLED_SECONDS = 60
DAY = 86_400


@pytest.fixture
def webhook_settings(settings: Settings) -> Settings:
    return quick_webhook_settings(settings)


@pytest.fixture
async def waiting(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> WebhookDelivery:
    return await a_waiting_delivery(api_client, make_merchant, sessions, receiver, webhook_settings)


async def a_waiting_delivery(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> WebhookDelivery:
    """The delivery of an event, waiting for a retry no message carries."""
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    receiver.reply_with(Reply(status=500), Reply(status=500))
    first = first_request(row)
    async with event_delivery(
        sessions, webhook_settings, lease_seconds=10, max_batch=8
    ) as delivery:
        due_first = retry_of(first, await delivery.deliver(first))
        assert (await delivery.deliver(due_first)).disposition is Disposition.RETRY
        # The retry due at D2 was never published, and the D1 message came back.
        assert (await delivery.deliver(due_first)).reason == SUPERSEDED
    waiting = await delivery_of(sessions, event_id_of(row))
    assert waiting is not None and waiting.status == DeliveryStatus.RETRYING
    return waiting


async def set_row(sessions: SessionFactory, delivery: WebhookDelivery, **values: Any) -> None:
    async with transaction(sessions) as session:
        await session.execute(
            update(WebhookDelivery).where(WebhookDelivery.id == delivery.id).values(**values)
        )


async def copies_of(sessions: SessionFactory, delivery: WebhookDelivery) -> list[OutboxMessage]:
    return await resent_copies(sessions, delivery.payout_id)


async def sweep(sessions: SessionFactory, delivery: WebhookDelivery) -> int:
    """Run the sweep; how many copies of this delivery's retry it sent."""
    return await copies_sent_by(
        lambda: resend_stalled_retries(
            sessions, stalled_seconds=STALLED_SECONDS, time=SANDBOX_TIME
        ),
        sessions,
        delivery.payout_id,
    )


def _names(caplog: pytest.LogCaptureFixture, line: str, payout_id: str) -> bool:
    """A sweep's line names the payouts it copied (it said only how many)."""
    return any(line in r.getMessage() and payout_id in r.getMessage() for r in caplog.records)


def ago(seconds: float) -> Any:
    return utcnow() - timedelta(seconds=seconds)


async def test_a_retry_whose_message_was_lost_is_sent_again_once_and_delivered(
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
    waiting: WebhookDelivery,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert await sweep(sessions, waiting) == 0  # not overdue yet

    assert waiting.next_attempt_at is not None
    overdue = timedelta(seconds=STALLED_SECONDS + 5)  # the wait itself (0.6 s) kept as it was
    await set_row(
        sessions,
        waiting,
        next_attempt_at=waiting.next_attempt_at - overdue,
        updated_at=waiting.updated_at - overdue,
    )
    resent_before = REGISTRY.get_sample_value("payouts_webhook_retries_resent_total") or 0.0
    assert await sweep(sessions, waiting) == 1
    assert _names(caplog, "overdue webhook retries again", waiting.payout_id)
    resent = REGISTRY.get_sample_value("payouts_webhook_retries_resent_total")
    assert resent is not None and resent >= resent_before + 1  # and others' leftovers
    assert await sweep(sessions, waiting) == 0  # one copy per due time

    stalled = await delivery_of(sessions, waiting.event_id)
    assert stalled is not None and stalled.next_attempt_at is not None
    assert stalled.copied_due_at == stalled.next_attempt_at
    (copy,) = await copies_of(sessions, waiting)
    assert copy.headers[RETRY_COUNT_HEADER] == 2  # the message the retry due at D2 would be
    assert copy.headers[RETRY_DUE_HEADER] == stalled.next_attempt_at.isoformat(
        timespec="microseconds"
    )
    assert copy.headers[RETRY_CLOCK_OFFSET_HEADER] == 0
    assert copy.correlation_id == "sweep-stalled-retries"  # it had none

    async with running_webhook_service(webhook_settings):
        await relay(rabbit, copy)
        await reaches(sessions, waiting.event_id, DeliveryStatus.DELIVERED, attempts=3)
    assert len(receiver.requests) == 3


async def test_only_a_retry_late_beyond_its_allowance_held_by_no_attempt_and_not_copied_is_sent(
    sessions: SessionFactory, waiting: WebhookDelivery
) -> None:
    late = ago(STALLED_SECONDS + 10)
    # Due only just now.
    await set_row(sessions, waiting, next_attempt_at=utcnow(), updated_at=ago(3600))
    assert await sweep(sessions, waiting) == 0
    # Late by the stall time, but its wait was long: a quarter of it (twice the stall time) is
    # the lateness a live message can have in its TTL queue.
    await set_row(sessions, waiting, next_attempt_at=late, updated_at=ago(9 * STALLED_SECONDS + 10))
    assert await sweep(sessions, waiting) == 0
    await set_row(sessions, waiting, updated_at=ago(STALLED_SECONDS + 20))
    # An attempt holds it.
    await set_row(sessions, waiting, lease_token="a" * 32, leased_until=ago(-30))
    assert await sweep(sessions, waiting) == 0
    await set_row(sessions, waiting, status=DeliveryStatus.PARKED.value, leased_until=ago(1))
    assert await sweep(sessions, waiting) == 0
    copied = {"copied_due_at": late, "copied_at": utcnow()}
    await set_row(sessions, waiting, status=DeliveryStatus.RETRYING.value, **copied)
    assert await sweep(sessions, waiting) == 0  # a copy was sent for this due time
    await set_row(sessions, waiting, copied_due_at=ago(3600))  # for an earlier due time
    assert await sweep(sessions, waiting) == 1  # and the lease ran out: its consumer died too
    assert await sweep(sessions, waiting) == 0
    # That copy got nowhere for twelve stall times (parked after failing on the database).
    await set_row(sessions, waiting, copied_at=ago(RECOPY_AFTER_STALLS * STALLED_SECONDS + 10))
    assert await sweep(sessions, waiting) == 1


async def test_a_delivery_whose_stored_event_does_not_read_is_left_out_and_logged(
    sessions: SessionFactory, waiting: WebhookDelivery, caplog: pytest.LogCaptureFixture
) -> None:
    await set_row(sessions, waiting, next_attempt_at=ago(STALLED_SECONDS + 10))
    async with transaction(sessions) as session:
        await session.execute(
            update(PayoutEvent).where(PayoutEvent.id == waiting.event_id).values(body=b"{}")
        )
    assert await sweep(sessions, waiting) == 0
    assert f"webhook delivery {waiting.id}: its stored event does not read" in caplog.text
    # Out of later sweeps' way (other tests' relays share the database).
    await set_row(sessions, waiting, status=DeliveryStatus.PARKED.value)


async def test_deliveries_whose_stored_event_does_not_read_hold_up_no_later_retry(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sweep takes a batch of candidates in due order: a batch whose events do not read was
    left uncopied, so it was the first batch of every sweep, and no later retry was sent."""
    unreadable, later = [
        await a_waiting_delivery(api_client, make_merchant, sessions, receiver, webhook_settings)
        for _ in range(2)
    ]
    # Due before any other test's: the first of the sweep's candidates.
    await set_row(sessions, unreadable, next_attempt_at=ago(2 * 365 * DAY))
    await set_row(sessions, later, next_attempt_at=ago(365 * DAY))
    async with transaction(sessions) as session:
        await session.execute(
            update(PayoutEvent).where(PayoutEvent.id == unreadable.event_id).values(body=b"{}")
        )
    monkeypatch.setattr(stalled_retries, "BATCH", 1)

    assert [await sweep(sessions, later) for _ in range(2)] == [0, 1]

    await set_row(sessions, unreadable, status=DeliveryStatus.PARKED.value)


async def test_a_delivery_another_transaction_locks_is_skipped_without_waiting(
    sessions: SessionFactory, waiting: WebhookDelivery
) -> None:
    await set_row(sessions, waiting, next_attempt_at=ago(STALLED_SECONDS + 10))
    async with transaction(sessions) as holder:  # a webhook batch leasing or recording it
        await holder.execute(
            select(WebhookDelivery.id).where(WebhookDelivery.id == waiting.id).with_for_update()
        )
        assert await asyncio.wait_for(sweep(sessions, waiting), timeout=10) == 0
    assert await sweep(sessions, waiting) == 1


async def test_lateness_is_judged_on_the_merchants_sandbox_clock(
    sessions: SessionFactory, waiting: WebhookDelivery
) -> None:
    """A day ahead: a retry due in a day of real time is overdue on the merchant's clock."""
    async with transaction(sessions) as session:
        session.add(
            SandboxClock(merchant_id=waiting.merchant_id, offset_seconds=DAY, updated_at=utcnow())
        )
    await set_row(
        sessions,
        waiting,
        next_attempt_at=ago(STALLED_SECONDS + 10 - DAY),
        updated_at=ago(STALLED_SECONDS + 20),
    )
    assert await sweep(sessions, waiting) == 1
    (copy,) = await copies_of(sessions, waiting)
    assert copy.headers[RETRY_CLOCK_OFFSET_HEADER] == DAY


async def test_two_advances_before_a_retrys_copy_is_taken_send_it_once(
    sessions: SessionFactory, waiting: WebhookDelivery
) -> None:
    """Each advance copied every retry due, copied already or not: the second copy was dropped
    as superseded, but `webhookRetriesReleased` counted it."""
    await set_row(sessions, waiting, next_attempt_at=ago(1))
    released = []
    for _ in range(2):
        async with transaction(sessions) as session:
            released.append(
                await release_retries_due(
                    session, waiting.merchant_id, offset_before=0, correlation_id=None
                )
            )
    assert released == [1, 0]
    assert len(await copies_of(sessions, waiting)) == 1


async def test_a_retry_an_advanced_clock_made_due_after_the_advance_is_sent_on_once(
    sessions: SessionFactory, waiting: WebhookDelivery, caplog: pytest.LogCaptureFixture
) -> None:
    """An advance that stopped short of the retry: its message waits its whole step of real
    time, while the merchant's clock passes its due time. It waited (until the stall sweep,
    five minutes later, logged it as lost)."""

    async def release() -> int:
        return await copies_sent_by(
            lambda: release_retries_due_on_advanced_clocks(sessions), sessions, waiting.payout_id
        )

    async def clock_at(offset_seconds: int, *, advanced: Any) -> None:
        async with transaction(sessions) as session:
            await session.merge(
                SandboxClock(
                    merchant_id=waiting.merchant_id,
                    offset_seconds=offset_seconds,
                    updated_at=advanced,
                )
            )

    caplog.set_level(logging.INFO, logger="outbox-relay")
    due = ago(-30)  # in 30 s of real time
    await set_row(sessions, waiting, next_attempt_at=due, updated_at=ago(10))
    assert await release() == 0  # no clock
    await clock_at(20, advanced=ago(5))
    assert await release() == 0  # advanced after the attempt, not past the due time yet
    await clock_at(40, advanced=ago(5))  # or 20, and 20 s of real time gone by since
    assert await release() == 1
    assert _names(caplog, "advanced clock made due", waiting.payout_id)
    (copy,) = await copies_of(sessions, waiting)
    assert copy.headers[RETRY_CLOCK_OFFSET_HEADER] == 40
    assert copy.headers[RETRY_DUE_HEADER] == due.isoformat(timespec="microseconds")
    assert await release() == 0  # copied for that due time

    # A retry whose attempt was recorded well after the advance was timed on the advanced clock.
    await clock_at(40, advanced=ago(30))
    await set_row(sessions, waiting, copied_due_at=None, updated_at=ago(5))
    assert await release() == 0


async def test_a_retry_timed_while_an_advance_was_under_way_is_sent_on_too(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
) -> None:
    """An attempt that fails while an advance is under way (its clock stamped, not committed)
    reads the old offset, so its retry waits a whole step of real time; it is recorded after
    the stamp, and the advance's own release skipped it (leased). The relay sent no copy."""
    merchant, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    answer = asyncio.Event()
    receiver.reply_with(Reply(status=500, held_until=answer))
    sender = WebhookSender(timeout_seconds=10, allow_private_urls=True)
    delivery = EventDelivery(
        sessions=sessions,
        sender=sender,
        ladder=RetryLadder.of((600, 600), jitter=0),
        lease_seconds=30,
        max_batch=8,
        lease_window_seconds=0.005,
        record_window_seconds=0.005,
    )
    try:
        attempt = asyncio.create_task(delivery.deliver(first_request(row)))
        await receiver.wait_for_requests(1)
        async with sessions() as advance:  # POST /sandbox/clock/advance, up to its commit
            await advance.execute(
                insert(SandboxClock)
                .values(merchant_id=merchant.merchant_id, offset_seconds=3600, updated_at=utcnow())
                .on_duplicate_key_update(
                    offset_seconds=SandboxClock.offset_seconds + 3600, updated_at=utcnow()
                )
            )
            released = await release_retries_due(
                advance, merchant.merchant_id, offset_before=0, correlation_id=None
            )
            answer.set()  # the endpoint answers 500 now; the failure is recorded
            assert (await asyncio.wait_for(attempt, 30)).disposition is Disposition.RETRY
            await advance.commit()
    finally:
        await delivery.aclose()
        await sender.aclose()
    assert released == 0  # it was being attempted

    copies = await copies_sent_by(
        lambda: release_retries_due_on_advanced_clocks(sessions),
        sessions,
        (await delivery_of(sessions, event_id_of(row))).payout_id,
    )
    assert copies == 1
