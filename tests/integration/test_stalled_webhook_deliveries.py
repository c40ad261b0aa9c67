"""Events whose webhook message no queue carries any more (processor_service.stalled_deliveries),
against the real MariaDB/MySQL, RabbitMQ, webhook service and an HTTP receiver.

The loss: a webhook service crash-looping returns the messages it holds unacknowledged at every
kill, and on RabbitMQ before 4.3 each return counts toward the queue's delivery limit. The
message of an event not yet leased goes to the dead-letter queue with no delivery row made; one
whose attempt died leaves its delivery PENDING.

The test database is shared with tests that leave events undelivered on purpose: each test
dates its own rows two stall times back, sweeps with a stall time longer than the suite runs,
and judges the sweep by the copies of its own payout, never by the number it returns.
"""

import asyncio
import uuid
from datetime import datetime, timedelta

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import delete, insert, select, text, update

import processor_service.stalled_deliveries as stalled_deliveries
from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import OutboxMessage, PayoutEvent, WebhookDelivery
from contracts.settings import Settings
from contracts.topology import PAYOUT_ID_HEADER, RETRY_COUNT_HEADER, RETRY_DUE_HEADER
from contracts.waiting_retries import RECOPY_AFTER_STALLS
from contracts.webhooks import RESEND_GENERATION_HEADER, DeliveryStatus
from processor_service.stalled_deliveries import (
    EventsSwept,
    events_without_delivery,
    resend_stalled_deliveries,
    stalled_pending,
)
from tests.conftest import MerchantFactory
from tests.support.amqp import RabbitClient
from tests.support.statements import explain
from tests.support.webhook_flow import (
    copies_sent_by,
    created_event,
    delivery_of,
    event_id_of,
    quick_webhook_settings,
    reaches,
    recorded_event,
    relay,
    resent_copies,
    running_webhook_service,
    set_delivery,
)
from tests.support.webhook_receiver import WebhookReceiver

STALLED_SECONDS = 3600


def ago(seconds: float) -> datetime:
    return utcnow() - timedelta(seconds=seconds)


@pytest.fixture
def webhook_settings(settings: Settings) -> Settings:
    return quick_webhook_settings(settings)


@pytest.fixture
async def undelivered(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
) -> OutboxMessage:
    """The outbox row of a `payout.created` event recorded two stall times ago, whose message
    died before any webhook batch took it: no delivery row."""
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    async with transaction(sessions) as session:
        await session.execute(
            update(PayoutEvent)
            .where(PayoutEvent.id == event_id_of(row))
            .values(created_at=ago(2 * STALLED_SECONDS))
        )
    return row


async def copies_of(sessions: SessionFactory, row: OutboxMessage) -> list[OutboxMessage]:
    return await resent_copies(sessions, row.headers[PAYOUT_ID_HEADER])


async def sweep(sessions: SessionFactory, row: OutboxMessage) -> int:
    """Run the sweep; how many copies of this payout's event it sent."""
    return await copies_sent_by(
        lambda: resend_stalled_deliveries(sessions, stalled_seconds=STALLED_SECONDS),
        sessions,
        row.headers[PAYOUT_ID_HEADER],
    )


async def test_an_event_dead_lettered_before_its_delivery_row_is_sent_again_and_delivered(
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
    undelivered: OutboxMessage,
    caplog: pytest.LogCaptureFixture,
) -> None:
    event_id = event_id_of(undelivered)
    resent_before = REGISTRY.get_sample_value("payouts_webhook_deliveries_resent_total") or 0.0
    assert await sweep(sessions, undelivered) == 1
    payout_id = undelivered.headers[PAYOUT_ID_HEADER]
    assert any(  # the line names the payouts copied (it said only how many)
        "stalled webhook deliveries again" in r.getMessage() and payout_id in r.getMessage()
        for r in caplog.records
    )
    resent = REGISTRY.get_sample_value("payouts_webhook_deliveries_resent_total")
    assert resent is not None and resent >= resent_before + 1
    # The sweep made its row, so that the copy is recorded and not sent every round.
    made = await delivery_of(sessions, event_id)
    assert made is not None
    assert (made.status, made.attempts, made.lease_token) == (DeliveryStatus.PENDING, 0, None)
    assert made.copied_at is not None
    assert await sweep(sessions, undelivered) == 0

    (copy,) = await copies_of(sessions, undelivered)
    assert copy.body == undelivered.body  # the event as recorded: the same webhook-id
    assert copy.correlation_id == "sweep-stalled-deliveries"  # it had none
    for header in (RESEND_GENERATION_HEADER, RETRY_COUNT_HEADER, RETRY_DUE_HEADER):
        assert header not in copy.headers  # a first delivery, due now
    async with running_webhook_service(webhook_settings):
        await relay(rabbit, copy)
        await reaches(sessions, event_id, DeliveryStatus.DELIVERED, attempts=1)
    assert len(receiver.requests) == 1


async def test_only_a_pending_delivery_unchanged_free_and_not_copied_is_sent_again(
    sessions: SessionFactory, undelivered: OutboxMessage
) -> None:
    """The delivery of a resend (generation 2) whose attempt died, its message dead-lettered."""
    event_id = event_id_of(undelivered)
    assert await sweep(sessions, undelivered) == 1  # its row, as in the test above
    await set_delivery(sessions, event_id, generation=2, copied_at=None, updated_at=utcnow())
    assert await sweep(sessions, undelivered) == 0  # changed just now: its message is on its way
    await set_delivery(sessions, event_id, updated_at=ago(STALLED_SECONDS + 10))
    # An attempt holds it.
    await set_delivery(sessions, event_id, lease_token="a" * 32, leased_until=ago(-30))
    assert await sweep(sessions, undelivered) == 0
    await set_delivery(
        sessions, event_id, status=DeliveryStatus.RETRYING.value, leased_until=ago(1)
    )
    assert await sweep(sessions, undelivered) == 0  # the retries' own sweep
    await set_delivery(sessions, event_id, status=DeliveryStatus.PENDING.value)
    assert await sweep(sessions, undelivered) == 1  # the lease ran out: its consumer died
    assert await sweep(sessions, undelivered) == 0
    copy = (await copies_of(sessions, undelivered))[-1]
    assert copy.headers[RESEND_GENERATION_HEADER] == 2  # the resend it carries out
    # Resent again by the merchant since the copy, and that message died too.
    await set_delivery(
        sessions, event_id, copied_at=ago(STALLED_SECONDS + 60), updated_at=ago(STALLED_SECONDS)
    )
    assert await sweep(sessions, undelivered) == 1
    # That copy got nowhere for twelve stall times (a webhook service still crash-looping).
    await set_delivery(sessions, event_id, copied_at=ago(RECOPY_AFTER_STALLS * STALLED_SECONDS))
    assert await sweep(sessions, undelivered) == 1
    await set_delivery(sessions, event_id, status=DeliveryStatus.DELIVERED.value)


async def test_an_event_recorded_lately_or_over_a_day_ago_is_left_alone(
    sessions: SessionFactory, undelivered: OutboxMessage
) -> None:
    event_id = event_id_of(undelivered)
    for recorded in (ago(STALLED_SECONDS - 60), ago(25 * 3600)):
        async with transaction(sessions) as session:
            await session.execute(
                update(PayoutEvent).where(PayoutEvent.id == event_id).values(created_at=recorded)
            )
        assert await sweep(sessions, undelivered) == 0
        assert await delivery_of(sessions, event_id) is None


async def test_a_relay_reads_only_the_events_recorded_since_its_last_round(
    sessions: SessionFactory, undelivered: OutboxMessage
) -> None:
    """Its first round reads the whole day; the event, recorded before the round's end, is not
    read again by the next."""
    swept = EventsSwept()

    async def relay_round() -> int:
        return await copies_sent_by(
            lambda: resend_stalled_deliveries(
                sessions, stalled_seconds=STALLED_SECONDS, swept=swept
            ),
            sessions,
            undelivered.headers[PAYOUT_ID_HEADER],
        )

    async with transaction(sessions) as session:  # as if the first round had missed it
        await session.execute(
            update(PayoutEvent)
            .where(PayoutEvent.id == event_id_of(undelivered))
            .values(created_at=ago(23 * 3600))
        )
    swept.until = ago(22 * 3600)
    assert await relay_round() == 0
    assert swept.until is not None and swept.until > ago(STALLED_SECONDS + 60)
    assert await sweep(sessions, undelivered) == 1  # a relay's first round reads it
    await set_delivery(sessions, event_id_of(undelivered), status=DeliveryStatus.DELIVERED.value)


async def test_an_event_whose_row_another_relay_made_meanwhile_is_not_copied_again(
    sessions: SessionFactory, undelivered: OutboxMessage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two relays' rounds overlap: both read the event without a row, and the second's insert
    finds the first's row. Seen from the second, its read is stale."""
    event_id = event_id_of(undelivered)
    assert await sweep(sessions, undelivered) == 1  # the first relay: the row and a copy
    stale_read = select(
        PayoutEvent.id,
        PayoutEvent.merchant_id,
        PayoutEvent.payout_id,
        PayoutEvent.type,
        PayoutEvent.body,
    ).where(PayoutEvent.id == event_id)
    monkeypatch.setattr(
        stalled_deliveries, "events_without_delivery", lambda _since, _until: stale_read
    )
    assert await sweep(sessions, undelivered) == 0
    await set_delivery(sessions, event_id, status=DeliveryStatus.DELIVERED.value)


async def test_a_delivery_another_transaction_locks_is_skipped_without_waiting(
    sessions: SessionFactory, undelivered: OutboxMessage
) -> None:
    event_id = event_id_of(undelivered)
    assert await sweep(sessions, undelivered) == 1
    await set_delivery(sessions, event_id, copied_at=None, updated_at=ago(STALLED_SECONDS + 10))
    async with transaction(sessions) as holder:  # a webhook batch leasing or recording it
        await holder.execute(
            select(WebhookDelivery.id).where(WebhookDelivery.event_id == event_id).with_for_update()
        )
        assert await asyncio.wait_for(sweep(sessions, undelivered), timeout=10) == 0
    assert await sweep(sessions, undelivered) == 1
    await set_delivery(sessions, event_id, status=DeliveryStatus.DELIVERED.value)


async def test_the_sweeps_read_through_their_indexes(
    sessions: SessionFactory, undelivered: OutboxMessage
) -> None:
    """As on a sandbox with a history: many events, few of them in the day looked at, and many
    deliveries, few of them PENDING (on a small table a scan is the cheaper plan)."""
    recorded = await recorded_event(sessions, event_id_of(undelivered))
    history = [
        {
            "id": f"evt_history_{number}_{recorded.id}"[:40],
            "merchant_id": recorded.merchant_id,
            "payout_id": recorded.payout_id,
            "type": recorded.type,
            "body": b"{}",
            "created_at": ago(3 * 365 * 86_400 + number),
        }
        for number in range(2_000)
    ]
    delivered = [
        {
            "id": str(uuid.uuid4()),
            "event_id": event["id"],
            "merchant_id": recorded.merchant_id,
            "payout_id": recorded.payout_id,
            "event_type": recorded.type,
            "status": DeliveryStatus.DELIVERED.value,
            "attempts": 1,
            "created_at": event["created_at"],
            "updated_at": event["created_at"],
        }
        for event in history
    ]
    async with transaction(sessions) as session:
        await session.execute(insert(PayoutEvent), history)
        await session.execute(insert(WebhookDelivery), delivered)
        await session.execute(text("ANALYZE TABLE payout_events, webhook_deliveries"))
    try:
        day = events_without_delivery(ago(86_400), ago(STALLED_SECONDS))
        [events, _deliveries, lane] = await explain(sessions, day)
        assert (events["type"], events["key"]) == ("range", "ix_events_created"), events
        [deliveries, _events, lane_too] = await explain(sessions, stalled_pending(STALLED_SECONDS))
        assert deliveries["key"] == "ix_deliveries_status", deliveries
        # Each copy's lane: its payout's row, by its primary key.
        assert {(plan["table"], plan["key"]) for plan in (lane, lane_too)} == {
            ("payouts", "PRIMARY")
        }
    finally:
        async with transaction(sessions) as session:
            await session.execute(
                delete(WebhookDelivery).where(
                    WebhookDelivery.id.in_([row["id"] for row in delivered])
                )
            )
            await session.execute(
                delete(PayoutEvent).where(PayoutEvent.id.in_([row["id"] for row in history]))
            )
            # Out of the day a later test's relay sweeps (its receiver is gone).
            await session.execute(
                update(PayoutEvent)
                .where(PayoutEvent.id == recorded.id)
                .values(created_at=ago(3 * 365 * 86_400))
            )
