"""A parked webhook moved out of the parking lot by hand (the management UI's Move messages, a
shovel) goes back to the lot, with x-payouts-last-error naming `payouts webhooks replay-parked`
(docs/operations.md), also when the webhook service first sends it back to wait without an
attempt (its merchant's slow endpoint had its share in flight, the database blinked): the mark
that tells it apart, x-payouts-parked, was dropped on that republish, and the message came back
unmarked, found its delivery PARKED and was acked, gone from the lot and never sent."""

import httpx
import pytest

from contracts.db.engine import (
    SessionFactory,
    create_engine,
    create_session_factory,
    transaction,
    utcnow,
)
from contracts.messages import PayoutStatusChanged
from contracts.redelivery import fresh_headers, retry_headers
from contracts.settings import Settings
from contracts.topology import PARKED_HEADER, RETRY_COUNT_HEADER
from contracts.webhooks import DeliveryStatus
from tests.conftest import MerchantFactory
from tests.support.webhook_flow import (
    LADDER,
    created_event,
    delivery_of,
    event_delivery,
    event_id_of,
    first_request,
    quick_webhook_settings,
    up_the_ladder,
)
from tests.support.webhook_receiver import Reply, WebhookReceiver
from webhook_service.app import waiting_headers
from webhook_service.delivery import MOVED_BY_HAND, Decision, Disposition
from webhook_service.delivery_records import DeliveryRequest, reopen_for_replay


def as_republished(
    headers: dict[str, object], decision: Decision, request: DeliveryRequest
) -> dict:
    """The headers of the copy webhook_service.app._settle republishes for a RETRY decision
    (contracts.redelivery.republish: retry_headers, then waiting_headers on top)."""
    return {
        **retry_headers(headers, error=decision.reason, failed=decision.failed),
        **waiting_headers(decision, request),
    }


async def parked_delivery(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    settings: Settings,
) -> tuple[PayoutStatusChanged, dict[str, object]]:
    """An event whose delivery ran its whole ladder and parked; the headers of its message in
    the parking lot, as the webhook service put it there."""
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    receiver.always(Reply(500))
    request = first_request(row)
    async with event_delivery(sessions, settings, lease_seconds=10, max_batch=4) as delivery:
        last = await up_the_ladder(delivery, request)
        parked = await delivery.deliver(last)
    assert parked.disposition is Disposition.PARK
    stored = await delivery_of(sessions, event_id_of(row))
    assert stored is not None and stored.status == DeliveryStatus.PARKED
    # app._settle, PARK: republish(..., headers={PARKED_HEADER: 1}) of the last retry's message
    last_message = {RETRY_COUNT_HEADER: len(LADDER)}
    lot = {**retry_headers(last_message, error=parked.reason), PARKED_HEADER: 1}
    return request.event, lot


@pytest.fixture
def quick(settings: Settings) -> Settings:
    return quick_webhook_settings(settings)


@pytest.fixture
async def parked(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    quick: Settings,
) -> tuple[PayoutStatusChanged, dict[str, object]]:
    return await parked_delivery(api_client, make_merchant, sessions, receiver, quick)


def moved_by_hand(event: PayoutStatusChanged, headers: dict[str, object]) -> DeliveryRequest:
    """The message as the shovel puts it in the work queue: as it is, headers included."""
    return DeliveryRequest.of_message(event, headers, redelivered=False, exchange="")


async def test_control_a_hand_moved_parked_message_goes_back_to_the_lot(
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    quick: Settings,
    parked: tuple[PayoutStatusChanged, dict[str, object]],
) -> None:
    """Nothing makes the message wait: it goes straight back."""
    event, lot = parked
    async with event_delivery(sessions, quick, lease_seconds=10, max_batch=4) as delivery:
        decision = await delivery.deliver(moved_by_hand(event, lot))
    assert (decision.disposition, decision.reason) == (Disposition.PARK, MOVED_BY_HAND)


async def test_a_hand_moved_parked_message_that_waits_for_a_slot_is_not_lost(
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    quick: Settings,
    parked: tuple[PayoutStatusChanged, dict[str, object]],
) -> None:
    """The merchant's endpoint is slow (its webhooks parked after timeouts, typically) and a
    message of its is in flight: the moved message waits in the first tier, no attempt made.
    Back from that wait it must still go back to the lot; it is acked as already parked."""
    event, lot = parked
    calls_before = len(receiver.requests)
    moved = moved_by_hand(event, lot)
    assert moved.from_parking_lot

    async with event_delivery(sessions, quick, lease_seconds=10, max_batch=4) as delivery:
        slow = delivery.slow_endpoints
        slow.answered(event.merchant_id, 60.0)  # a call that ran to the timeout
        with slow.in_flight(event.merchant_id):  # its share (a quarter of 4) in flight
            waited = await delivery.deliver(moved)
        assert waited.disposition is Disposition.RETRY  # sent to wait, no attempt
        back = moved_by_hand(event, as_republished(lot, waited, moved))
        decision = await delivery.deliver(back)

    assert len(receiver.requests) == calls_before  # never sent
    stored = await delivery_of(sessions, event.id)
    assert stored is not None and stored.status == DeliveryStatus.PARKED
    assert (decision.disposition, decision.reason) == (Disposition.PARK, MOVED_BY_HAND)


async def test_a_hand_moved_parked_message_that_waits_out_a_database_outage_is_not_lost(
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    quick: Settings,
    parked: tuple[PayoutStatusChanged, dict[str, object]],
) -> None:
    """The database blinks while the moved message is taken: it waits the first step (an
    outage takes no step of the ladder) and comes back; it must still go back to the lot."""
    event, lot = parked
    moved = moved_by_hand(event, lot)

    down = create_engine("mysql+asyncmy://root@127.0.0.1:1/nowhere", pool_size=1)
    try:
        async with event_delivery(
            create_session_factory(down), quick, lease_seconds=10, max_batch=4
        ) as delivery:
            waited = await delivery.deliver(moved)
    finally:
        await down.dispose()
    assert (waited.disposition, waited.failed) == (Disposition.RETRY, False)

    back = moved_by_hand(event, as_republished(lot, waited, moved))
    async with event_delivery(sessions, quick, lease_seconds=10, max_batch=4) as delivery:
        decision = await delivery.deliver(back)

    assert (decision.disposition, decision.reason) == (Disposition.PARK, MOVED_BY_HAND)


async def test_a_late_copy_of_a_replayed_ladders_last_retry_is_not_parked_again(
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    quick: Settings,
    parked: tuple[PayoutStatusChanged, dict[str, object]],
) -> None:
    """replay-parked reopens the delivery and sends a fresh copy, which starts anew, unmarked:
    when its ladder parks the delivery again, the other copy of its last retry (an advance
    released one, the TTL queue gave back the other) is acked as already parked. Marked, it was
    parked a second time: two messages in the lot, two ladders at the next replay."""
    event, lot = parked
    async with transaction(sessions) as session:  # replay-parked: reopen, then a fresh copy
        assert await reopen_for_replay(session, event.id, utcnow(), generation=0)
    replayed = moved_by_hand(event, fresh_headers(lot))

    async with event_delivery(sessions, quick, lease_seconds=10, max_batch=4) as delivery:
        last = await up_the_ladder(delivery, replayed)
        assert (await delivery.deliver(last)).disposition is Disposition.PARK
        late = await delivery.deliver(last)

    assert late.disposition is Disposition.DONE, late.reason  # acked, not parked again
