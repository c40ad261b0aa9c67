"""Webhook batches meeting delivery rows another transaction holds (a stuck session, a replica
frozen in its lease): several merchants' events leased, sent and recorded together."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from sqlalchemy import select

from contracts.db.engine import SessionFactory
from contracts.db.models import OutboxMessage, WebhookDelivery
from contracts.settings import Settings
from contracts.webhooks import DeliveryStatus
from tests.conftest import MerchantFactory
from tests.support.amqp import RabbitClient
from tests.support.webhook_flow import created_event, event_id_of, quick_webhook_settings, relay
from tests.support.webhook_receiver import Reply, WebhookReceiver


def one_lease_batch(settings: Settings) -> Settings:
    """The tests' webhook service, its lease window long enough to lease a burst together."""
    return quick_webhook_settings(settings).model_copy(update={"webhook_lease_window_seconds": 1.0})


def recorded_together(settings: Settings) -> Settings:
    """As `one_lease_batch`, and the attempts that end within a second recorded together."""
    return one_lease_batch(settings).model_copy(update={"webhook_batch_window_seconds": 1.0})


async def delivered(sessions: SessionFactory, rows: list[OutboxMessage]) -> bool:
    """Every event of `rows` delivered."""
    async with sessions() as session:
        statuses = await session.scalars(
            select(WebhookDelivery.status).where(
                WebhookDelivery.event_id.in_([event_id_of(row) for row in rows])
            )
        )
        return list(statuses) == [DeliveryStatus.DELIVERED] * len(rows)


@asynccontextmanager
async def held(sessions: SessionFactory, rows: list[OutboxMessage]) -> AsyncIterator[None]:
    """The delivery rows of these events locked by another transaction for the block."""
    async with sessions() as holder, holder.begin():
        await holder.execute(
            select(WebhookDelivery.id)
            .where(WebhookDelivery.event_id.in_([event_id_of(row) for row in rows]))
            .with_for_update()
        )
        yield


@dataclass(frozen=True)
class AttemptsInFlight:
    stuck: OutboxMessage  # the one whose row the test holds
    others: list[OutboxMessage]
    answered: asyncio.Event  # set: the endpoint answers them all

    def sent_once_each(self, receiver: WebhookReceiver) -> bool:
        """Each of the others was sent once (not again after its record failed)."""
        sent = [request.webhook_id for request in receiver.requests]
        return all(sent.count(event_id_of(row)) == 1 for row in self.others)


async def three_attempts_in_flight(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
) -> AttemptsInFlight:
    """Three merchants' events relayed to the running webhook service and sent, their endpoint
    answering none of them until `answered` is set."""
    rows = [
        (await created_event(api_client, make_merchant, sessions, receiver.url))[1]
        for _ in range(3)
    ]
    answered = asyncio.Event()
    receiver.always(Reply(held_until=answered))
    for row in rows:
        await relay(rabbit, row)
    await receiver.wait_for_requests(3)
    return AttemptsInFlight(rows[0], rows[1:], answered)
