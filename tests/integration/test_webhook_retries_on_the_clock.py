"""Webhook retries on a merchant's sandbox clock, attempt by attempt (EventDelivery driven by
hand, against the real database and a real local endpoint): the copies an advance sends and the
waiting messages they overtake."""

from dataclasses import replace

import httpx
from sqlalchemy import select

from contracts.db.engine import SessionFactory
from contracts.db.models import OutboxMessage
from contracts.redelivery import retry_count
from contracts.topology import PAYOUT_ID_HEADER, RETRY_CLOCK_OFFSET_HEADER, RETRY_DUE_HEADER
from contracts.webhooks import RESEND_ROUTING_KEY, retry_clock_offset, retry_due
from tests.conftest import MerchantFactory
from tests.support.api_helpers import API, auth
from tests.support.webhook_flow import created_event, delivery_of, event_id_of, first_request
from tests.support.webhook_receiver import Reply, WebhookReceiver
from webhook_service.delivery import Disposition, EventDelivery
from webhook_service.delivery_records import DeliveryRequest
from webhook_service.retry_ladder import RetryLadder
from webhook_service.sender import WebhookSender

LADDER = (5, 300, 1800)  # three tiers: four attempts


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


async def test_the_waiting_message_of_a_last_retry_an_advance_ran_is_dropped_not_parked(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
) -> None:
    """An advance sends a copy of the ladder's last retry, which fails and parks the delivery;
    the retry's own message, back from its TTL queue, was parked too: two messages in the lot
    for one delivery, and two ladders for it when the lot was replayed."""
    receiver.always(Reply(500))
    merchant, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    sender = WebhookSender(timeout_seconds=2, allow_private_urls=True)
    delivery = EventDelivery(
        sessions=sessions,
        sender=sender,
        ladder=RetryLadder.of(LADDER),
        lease_seconds=10,
        max_batch=8,
        window_seconds=0.005,
    )
    try:
        request = first_request(row)
        # Attempts 1..3 fail (as real time would make them); the retry they leave is the last
        # one, waiting 30 min in the last tier's TTL queue.
        for _ in range(len(LADDER)):
            decision = await delivery.deliver(request)
            assert decision.disposition is Disposition.RETRY
            request = replace(
                request,
                ladder_attempt=request.ladder_attempt + 1,
                due_at=decision.due_at,
                clock_offset=decision.clock_offset,
            )
        waiting_in_ttl_queue = request
        assert waiting_in_ttl_queue.ladder_attempt == len(LADDER) + 1

        # The merchant advances its clock past it: the advance sends a copy of it.
        advanced = await api_client.post(
            f"{API}/sandbox/clock/advance", json={"seconds": 3600}, headers=auth(merchant)
        )
        assert advanced.status_code == 200, advanced.text
        assert advanced.json()["data"]["webhookRetriesReleased"] == 1
        (copy_row,) = await copies_of(sessions, waiting_in_ttl_queue.event.payout.id)
        headers = copy_row.headers or {}
        copy = DeliveryRequest(
            waiting_in_ttl_queue.event,
            ladder_attempt=retry_count(headers) + 1,
            generation=0,
            due_at=retry_due(headers.get(RETRY_DUE_HEADER)),
            clock_offset=retry_clock_offset(headers.get(RETRY_CLOCK_OFFSET_HEADER)),
        )
        # The copy makes the last attempt, which fails: parked, to the parking lot.
        assert (await delivery.deliver(copy)).disposition is Disposition.PARK
        stored = await delivery_of(sessions, event_id_of(row))
        assert stored is not None and stored.status == "PARKED"
        assert stored.attempts == len(LADDER) + 1

        # 30 min of real time later the TTL copy comes back: the delivery no longer waits for
        # it, so it is to be dropped (acked), not parked once more.
        came_back = await delivery.deliver(waiting_in_ttl_queue)
    finally:
        await delivery.aclose()
        await sender.aclose()
    assert came_back.disposition is Disposition.DONE, came_back
