"""Webhook retries whose message was lost (processor_service.stalled_retries), against the real
MariaDB/MySQL, RabbitMQ, webhook service and an HTTP receiver.

The loss: the webhook service records a failed attempt (the delivery waits for the retry due at
D2), then dies before publishing that retry; the message it was handling (the retry due at D1)
comes back and is superseded. Nothing carries D2 any more.
"""

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, literal_column, select, update

from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import OutboxMessage, WebhookDelivery
from contracts.settings import Settings
from contracts.topology import (
    PAYOUT_ID_HEADER,
    RETRY_CLOCK_OFFSET_HEADER,
    RETRY_COUNT_HEADER,
    RETRY_DUE_HEADER,
)
from contracts.webhooks import RESEND_ROUTING_KEY, DeliveryStatus
from processor_service.stalled_retries import resend_stalled_retries
from tests.conftest import MerchantFactory
from tests.support.amqp import RabbitClient
from tests.support.webhook_flow import (
    created_event,
    delivery_of,
    event_delivery,
    event_id_of,
    first_request,
    quick_webhook_settings,
    reaches,
    relay,
    retry_of,
    running_webhook_service,
)
from tests.support.webhook_receiver import Reply, WebhookReceiver
from webhook_service.delivery import SUPERSEDED, Disposition

STALLED_SECONDS = 60
SECOND = literal_column("SECOND")


@pytest.fixture
def webhook_settings(settings: Settings) -> Settings:
    return quick_webhook_settings(settings)


async def lost_retry(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    settings: Settings,
) -> WebhookDelivery:
    """The delivery of an event, waiting for a retry no message carries."""
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    receiver.reply_with(Reply(status=500), Reply(status=500))
    first = first_request(row)
    async with event_delivery(sessions, settings, lease_seconds=10, max_batch=8) as delivery:
        due_first = retry_of(first, await delivery.deliver(first))
        assert (await delivery.deliver(due_first)).disposition is Disposition.RETRY
        # The retry due at D2 was never published, and the D1 message came back.
        assert (await delivery.deliver(due_first)).reason == SUPERSEDED
    waiting = await delivery_of(sessions, event_id_of(row))
    assert waiting is not None and waiting.status == DeliveryStatus.RETRYING
    return waiting


async def age(sessions: SessionFactory, event_id: str, seconds: int) -> None:
    """As if `seconds` had passed since the delivery's last attempt (due time and update)."""
    columns = (WebhookDelivery.next_attempt_at, WebhookDelivery.updated_at)
    async with transaction(sessions) as session:
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.event_id == event_id)
            .values({column: func.timestampadd(SECOND, -seconds, column) for column in columns})
        )


async def copies_of(sessions: SessionFactory, payout_id: str) -> list[OutboxMessage]:
    async with sessions() as session:
        rows = await session.scalars(
            select(OutboxMessage)
            .where(
                OutboxMessage.routing_key == RESEND_ROUTING_KEY,
                OutboxMessage.headers[PAYOUT_ID_HEADER].as_string() == payout_id,
            )
            .order_by(OutboxMessage.id)
        )
        return list(rows)


async def test_a_retry_whose_message_was_lost_is_sent_again_and_delivered(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    event_id = (
        await lost_retry(api_client, make_merchant, sessions, receiver, webhook_settings)
    ).event_id
    assert await resend_stalled_retries(sessions, stalled_seconds=STALLED_SECONDS) == 0

    await age(sessions, event_id, STALLED_SECONDS + 1)
    sent = await resend_stalled_retries(sessions, stalled_seconds=STALLED_SECONDS)
    assert sent >= 1  # this one, and any other test's left waiting as long
    assert await resend_stalled_retries(sessions, stalled_seconds=STALLED_SECONDS) == 0

    stalled = await delivery_of(sessions, event_id)
    assert stalled is not None and stalled.next_attempt_at is not None
    (copy,) = await copies_of(sessions, stalled.payout_id)
    assert copy.headers[RETRY_COUNT_HEADER] == 2  # the message the retry due at D2 would be
    assert copy.headers[RETRY_DUE_HEADER] == stalled.next_attempt_at.isoformat(
        timespec="microseconds"
    )
    assert copy.headers[RETRY_CLOCK_OFFSET_HEADER] == 0

    async with running_webhook_service(webhook_settings):
        await relay(rabbit, copy)
        await reaches(sessions, event_id, DeliveryStatus.DELIVERED, attempts=3)
    assert len(receiver.requests) == 3


async def test_only_an_overdue_retry_no_attempt_holds_and_nothing_sent_on_is_sent_again(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    waiting = await lost_retry(api_client, make_merchant, sessions, receiver, webhook_settings)

    async def sent_again() -> bool:
        before = len(await copies_of(sessions, waiting.payout_id))
        await resend_stalled_retries(sessions, stalled_seconds=STALLED_SECONDS)
        return len(await copies_of(sessions, waiting.payout_id)) > before

    async def set_row(**values: object) -> None:
        async with transaction(sessions) as session:
            await session.execute(
                update(WebhookDelivery).where(WebhookDelivery.id == waiting.id).values(**values)
            )

    long_ago = utcnow() - timedelta(seconds=STALLED_SECONDS + 1)
    await set_row(next_attempt_at=utcnow(), updated_at=long_ago)  # due only just now
    assert not await sent_again()
    await set_row(next_attempt_at=long_ago, updated_at=utcnow())  # an attempt just recorded
    assert not await sent_again()
    live_lease = utcnow() + timedelta(seconds=30)
    await set_row(updated_at=long_ago, lease_token="a" * 32, leased_until=live_lease)
    assert not await sent_again()
    await set_row(status=DeliveryStatus.PARKED.value, lease_token=None, leased_until=None)
    assert not await sent_again()
    await set_row(status=DeliveryStatus.RETRYING.value, lease_token="a" * 32, leased_until=long_ago)
    assert await sent_again()  # the lease ran out: its consumer died too
    assert not await sent_again()  # and it was marked
