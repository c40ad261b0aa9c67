"""One delivery row held by another transaction (a stuck session, a frozen process) stops no
other merchant's webhooks (batch isolation review): the service's lock wait is short, and a
lease batch that fails has each of its requests leased again alone."""

import asyncio
from typing import Any

import httpx
import pytest

from contracts.db.engine import SessionFactory
from contracts.settings import Settings
from contracts.webhooks import DeliveryStatus
from tests.conftest import MerchantFactory
from tests.support.amqp import RabbitClient
from tests.support.held_deliveries import (
    delivered,
    held,
    one_lease_batch,
    recorded_together,
    three_attempts_in_flight,
)
from tests.support.polling import eventually
from tests.support.webhook_flow import (
    created_event,
    event_id_of,
    new_event_row,
    purge_webhook_queues,
    reaches,
    relay,
    running_webhook_service,
)
from tests.support.webhook_receiver import WebhookReceiver
from webhook_service import delivery

HELD = 12  # a lease batch's rows, held by a replica frozen in its lease


async def test_delivery_rows_held_elsewhere_hold_up_no_other_webhook_of_their_batch(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    settings: Settings,
) -> None:
    """Copies of delivered events (at-least-once) whose rows are held, as a webhook replica
    frozen in its lease transaction holds its batch's, leased in one batch with two other
    merchants' events: the batch waited out the server's lock wait (50 s), then every one of
    its events waited as if the database were down and came back with the held ones to wait
    again (batch isolation review). Split with a lock wait of 5 s, each held row's lease then
    took one of the service's 4 connections for 5 s, a dozen of them all of them (diff
    review)."""
    await purge_webhook_queues(rabbit, settings)
    frozen, first = await created_event(api_client, make_merchant, sessions, receiver.url)
    copies = [first] + [await new_event_row(api_client, sessions, frozen) for _ in range(HELD - 1)]
    others = [
        (await created_event(api_client, make_merchant, sessions, receiver.url))[1]
        for _ in range(2)
    ]
    gathering = one_lease_batch(settings)  # the copies and the others

    async with running_webhook_service(gathering):
        for row in copies:
            await relay(rabbit, row)
        await eventually(lambda: delivered(sessions, copies), within=30, what="the first ones")
        async with held(sessions, copies):
            for row in [*copies, *others]:
                await relay(rabbit, row)
            await eventually(
                lambda: delivered(sessions, others), within=15, what="the other webhooks"
            )

    delivered_ids = [request.headers["webhook-id"] for request in receiver.requests]
    assert sorted(delivered_ids) == sorted(event_id_of(row) for row in [*copies, *others])


async def test_a_lease_batch_interrupted_by_a_cancellation_not_its_own_leases_each_alone(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A driver's future cancelled as its connection closed, met by a lease batch: its handlers
    raised BatchInterrupted and their messages were requeued, not leased (diff review)."""
    await purge_webhook_queues(rabbit, settings)
    rows = [
        (await created_event(api_client, make_merchant, sessions, receiver.url))[1]
        for _ in range(2)
    ]
    real_lease = delivery.lease_deliveries

    async def interrupted_when_batched(session: Any, requests: Any, **kwargs: Any) -> None:
        if len(requests) > 1:
            raise asyncio.CancelledError("the connection closed")
        await real_lease(session, requests, **kwargs)

    monkeypatch.setattr(delivery, "lease_deliveries", interrupted_when_batched)
    gathering = one_lease_batch(settings)  # the two
    async with running_webhook_service(gathering):
        for row in rows:
            await relay(rabbit, row)
        for row in rows:
            await reaches(sessions, event_id_of(row), DeliveryStatus.DELIVERED, attempts=1)

    assert len(receiver.requests) == 2


async def test_a_delivery_row_held_after_its_lease_holds_up_no_other_record_of_its_batch(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    settings: Settings,
) -> None:
    """Three webhooks leased and sent together, their attempts recorded in one batch, one of
    their rows held by another transaction once leased: the batch waited out the lock wait
    (5 s), was written again whole twice, then every attempt of it took the ladder and was sent
    again (left open by the batch isolation work). Written again each alone, the others are
    recorded at once."""
    await purge_webhook_queues(rabbit, settings)
    async with running_webhook_service(recorded_together(settings)):
        sent = await three_attempts_in_flight(api_client, make_merchant, sessions, rabbit, receiver)
        async with held(sessions, [sent.stuck]):
            sent.answered.set()
            # One lock wait (5 s) and the first retry's wait: long before the whole batch's
            # three lock waits.
            await eventually(lambda: delivered(sessions, sent.others), within=9, what="others")
        await eventually(lambda: delivered(sessions, [sent.stuck]), within=20, what="the held")

    assert sent.sent_once_each(receiver)
