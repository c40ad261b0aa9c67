"""The webhook service against the real RabbitMQ, MariaDB/MySQL and a real HTTP receiver.

Events are created through the API (which records them in payout_events and the outbox); the
tests then publish the outbox rows to RabbitMQ as the relay would (message id = outbox id).
"""

import asyncio
import functools
import hashlib
import hmac
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import replace
from datetime import timedelta
from itertools import pairwise
from typing import Any

import httpx
import orjson
import pytest
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.message import IncomingMessage
from prometheus_client import REGISTRY
from sqlalchemy import make_url, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks.webhooks import Webhook

import contracts.redelivery as redelivery
import webhook_service.app as webhook_app
import webhook_service.delivery as delivery_module
from cli.merchants import NewMerchant
from contracts.db.engine import (
    SessionFactory,
    create_engine,
    create_session_factory,
    transaction,
)
from contracts.db.models import (
    Merchant,
    OutboxMessage,
    WebhookDelivery,
)
from contracts.logging import ContextFilter
from contracts.messages import PayoutStatusChanged
from contracts.redelivery import republish, retry_count
from contracts.settings import Settings
from contracts.topology import (
    DEFAULT_EXCHANGE,
    EVENTS_EXCHANGE,
    LAST_ERROR_HEADER,
    RETRY_COUNT_HEADER,
    WEBHOOK_PARKING_LOT,
    webhook_events_queue,
)
from contracts.webhooks import ENDPOINT_CACHE_SECONDS, DeliveryStatus, retry_due_headers
from tests.conftest import MerchantFactory
from tests.support.amqp import RabbitClient, eventually
from tests.support.api_helpers import API, auth
from tests.support.lost_keys import secret_sealed_with_a_lost_key
from tests.support.statements import statements_built
from tests.support.webhook_flow import (
    COMMITS_PER_BATCH,
    LADDER,
    QUEUE,
    STATEMENTS_PER_BATCH,
    attempts_of,
    counting,
    created_event,
    delivery_of,
    event_delivery,
    event_id_of,
    event_id_of_body,
    first_request,
    messages_of,
    new_event_row,
    no_transaction_elsewhere,
    parked_messages,
    purge_webhook_queues,
    quick_webhook_settings,
    reaches,
    recorded_event,
    relay,
    resend,
    retry_of,
    running_webhook_service,
    set_delivery,
    up_the_ladder,
    waiting_copies,
)
from tests.support.webhook_receiver import REFUSED, WEBHOOK_PATH, Reply, WebhookReceiver
from webhook_service.delivery import DELIVERED, DUPLICATE, SUPERSEDED, Disposition
from webhook_service.delivery_records import DeliveryRequest
from webhook_service.endpoints import EndpointCache
from webhook_service.parking_lot import replay_parked
from webhook_service.retry_ladder import RetryStep


@pytest.fixture(autouse=True)
async def no_earlier_messages(rabbit: RabbitClient, settings: Settings) -> None:
    """The webhook queues emptied before each test: a relay an earlier test of the worker ran
    published every event still in the outbox, and a webhook service started here took them
    (another merchant's parked webhook was a second warning in the parking test)."""
    await purge_webhook_queues(rabbit, settings)


@pytest.fixture
def webhook_settings(settings: Settings) -> Settings:
    return quick_webhook_settings(settings)


@pytest.fixture
async def webhook_service(webhook_settings: Settings) -> AsyncIterator[None]:
    async with running_webhook_service(webhook_settings):
        yield


@pytest.mark.usefixtures("webhook_service")
async def test_delivery_is_signed_for_standard_webhooks_and_the_original_clients(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
) -> None:
    merchant, row = await created_event(api_client, make_merchant, sessions, receiver.url)

    await relay(rabbit, row)

    (request,) = await receiver.wait_for_requests(1)
    recorded = await recorded_event(sessions, event_id_of(row))
    expected_body = PayoutStatusChanged.model_validate_json(recorded.body).webhook_body()
    assert Webhook(merchant.webhook_secret).verify(request.body, request.headers) == expected_body
    assert set(expected_body) == {"id", "type", "createdAt", "event", "payout"}
    assert request.method == "POST" and request.path == WEBHOOK_PATH
    assert request.webhook_id == recorded.id
    assert request.headers["x-mypay-signature"] == (
        hmac.new(merchant.webhook_secret.encode(), request.body, hashlib.sha256).hexdigest()
    )
    assert request.headers["x-mypay-event"] == "PAYOUT_CREATED"
    assert request.headers["content-type"] == "application/json"
    delivery = await reaches(sessions, recorded.id, DeliveryStatus.DELIVERED, attempts=1)
    assert delivery.url == receiver.url and delivery.delivered_at is not None
    (attempt,) = await attempts_of(sessions, recorded.id)
    assert (attempt.attempt_number, attempt.status_code, attempt.error) == (1, 200, None)
    assert attempt.response_excerpt == '{"received": true}'


@pytest.fixture
def settlements(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """How the service settles the messages it does not ack: each basic.nack and basic.reject,
    with its requeue."""
    settled: list[tuple[str, bool]] = []
    nack, reject = IncomingMessage.nack, IncomingMessage.reject

    async def noted_nack(message: IncomingMessage, **options: Any) -> None:
        settled.append(("basic.nack", options.get("requeue", True)))
        await nack(message, **options)

    async def noted_reject(message: IncomingMessage, **options: Any) -> None:
        settled.append(("basic.reject", options.get("requeue", False)))
        await reject(message, **options)

    monkeypatch.setattr(IncomingMessage, "nack", noted_nack)
    monkeypatch.setattr(IncomingMessage, "reject", noted_reject)
    return settled


def failing_once(work: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """`work`, failing unexpectedly the first time: its redelivery does it."""
    failed: list[bool] = []

    async def once(*args: Any, **kwargs: Any) -> Any:
        if not failed:
            failed.append(True)
            raise RuntimeError("unexpected")
        return await work(*args, **kwargs)

    return once


@pytest.mark.usefixtures("webhook_service")
async def test_an_unexpected_error_requeues_the_message_as_a_failed_delivery(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
    settlements: list[tuple[str, bool]],
) -> None:
    """By basic.reject: RabbitMQ 4.3 counts a basic.nack as no failed delivery, and a message whose
    handler kept failing was redelivered for ever, never reaching its delivery limit (RabbitMQ
    compatibility review)."""
    deliver = failing_once(delivery_module.EventDelivery.deliver)
    monkeypatch.setattr(delivery_module.EventDelivery, "deliver", deliver)
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)

    await relay(rabbit, row)

    await receiver.wait_for_requests(1)
    assert settlements == [("basic.reject", True)]


@pytest.mark.usefixtures("webhook_service")
async def test_an_unexpected_error_decoding_requeues_the_message_as_a_failed_delivery(
    rabbit: RabbitClient,
    webhook_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    settlements: list[tuple[str, bool]],
) -> None:
    """The decoder (a malformed body's dead-lettering failing) too: it fell to the policy's
    basic.nack (third fixes review)."""
    monkeypatch.setattr(redelivery, "dead_letter", failing_once(redelivery.dead_letter))
    queue = webhook_events_queue(len(webhook_settings.webhook_retry_ladder))
    await rabbit.purge(queue.dead_letter_queue)

    await rabbit.publish(b'{"not": "an event"}', exchange=DEFAULT_EXCHANGE, routing_key=queue.name)

    async def dead_lettered() -> None:
        assert await rabbit.count(queue.dead_letter_queue) == 1

    try:
        await eventually(dead_lettered, timeout=10)
    finally:  # the file's other tests read that queue
        await rabbit.purge(queue.dead_letter_queue)
    assert settlements == [("basic.reject", True)]


@pytest.mark.usefixtures("webhook_service")
async def test_the_consumer_runs_on_the_event_loop_without_a_worker_thread(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    worker_thread_calls: list[object],
) -> None:
    """See the processor's test of the same name: no thread hop per message."""
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)

    await relay(rabbit, row)

    await reaches(sessions, event_id_of(row), DeliveryStatus.DELIVERED, attempts=1)
    assert worker_thread_calls == []


@pytest.mark.usefixtures("webhook_service")
async def test_endpoint_failing_twice_gets_a_third_attempt_with_the_same_webhook_id(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
) -> None:
    merchant, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    receiver.reply_with(Reply(500), Reply(502))

    await relay(rabbit, row)

    requests = await receiver.wait_for_requests(3)
    event_id = event_id_of(row)
    await reaches(sessions, event_id, DeliveryStatus.DELIVERED, attempts=3)
    assert {request.webhook_id for request in requests} == {event_id}
    for request in requests:  # each attempt signed afresh, each verifiable
        Webhook(merchant.webhook_secret).verify(request.body, request.headers)
    attempts = await attempts_of(sessions, event_id)
    assert [(a.attempt_number, a.status_code) for a in attempts] == [(1, 500), (2, 502), (3, 200)]
    assert [a.error for a in attempts] == ["HTTP 500", "HTTP 502", None]
    # the waits come from the ladder (jitter at most 10 %)
    gaps = [later.received_at - earlier.received_at for earlier, later in pairwise(requests)]
    assert gaps[0] >= LADDER[0] * 0.9 and gaps[1] >= LADDER[1] * 0.9


async def test_endpoint_that_always_fails_is_parked_after_tiers_plus_one_attempts(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="webhooks")
    caplog.handler.addFilter(ContextFilter())  # the ids a line is about, as our handler adds
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    receiver.always(Reply(500))
    event_id = event_id_of(row)

    async with running_webhook_service(webhook_settings):
        await relay(rabbit, row)
        delivery = await reaches(
            sessions, event_id, DeliveryStatus.PARKED, attempts=len(LADDER) + 1
        )

    assert len(receiver.requests) == len(LADDER) + 1
    assert delivery.last_status_code == 500 and delivery.next_attempt_at is None
    (parked,) = await parked_messages(rabbit, event_id)
    assert retry_count(parked) == len(LADDER) + 1
    assert parked[LAST_ERROR_HEADER] == "HTTP 500"
    # Said once, above INFO (the attempts' own lines are INFO), naming the payout: it was silent.
    (said,) = [r for r in caplog.records if r.name == "webhooks" and r.levelno >= logging.WARNING]
    assert said.getMessage() == f"webhook {event_id} parked: HTTP 500"
    assert getattr(said, "payout_id", None) == delivery.payout_id
    # Each line by the webhook-id the merchant's receiver logged, as a field: it was only in the
    # message's text.
    lines = [r for r in caplog.records if r.name == "webhooks"]
    assert len(lines) > len(LADDER)
    assert {getattr(r, "webhook_id", None) for r in lines} == {event_id}


async def test_a_parked_webhook_moved_out_by_hand_goes_back_to_the_lot(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    """Moved with the management UI (or a shovel) rather than `replay-parked`: its delivery is
    still PARKED, so it makes no attempt and goes back to the lot, saying how to send it. It was
    acked as a late copy of its ladder: gone from the lot, and never sent (the ladder review)."""
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    receiver.always(Reply(500))
    event_id = event_id_of(row)

    async with running_webhook_service(webhook_settings):
        await relay(rabbit, row)
        await reaches(sessions, event_id, DeliveryStatus.PARKED, attempts=len(LADDER) + 1)

        async def parked_message() -> list[AbstractIncomingMessage]:
            taken = await rabbit.take(WEBHOOK_PARKING_LOT)
            mine = [message for message in taken if event_id_of_body(message.body) == event_id]
            assert mine
            return mine

        (parked,) = await eventually(parked_message)
        await rabbit.publish(  # Move messages: the message as it is, into the work queue
            parked.body,
            exchange=DEFAULT_EXCHANGE,
            routing_key=QUEUE.name,
            message_id=parked.message_id,
            headers=dict(parked.headers or {}),
        )
        (back,) = await eventually(parked_message)

    assert len(receiver.requests) == len(LADDER) + 1
    assert "replay-parked" in str((back.headers or {})[LAST_ERROR_HEADER])
    stored = await delivery_of(sessions, event_id)
    assert stored is not None and stored.status == DeliveryStatus.PARKED


async def test_a_copy_that_parked_its_delivery_redelivered_after_a_crash_is_parked(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Killed between recording PARKED and publishing to the parking lot: the copy comes back
    and must go to the lot, where `payouts webhooks replay-parked` finds it (acked as
    superseded, it left the delivery parked with nothing in the lot)."""
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    receiver.always(Reply(500))
    event_id = event_id_of(row)
    parkings: list[str] = []

    async def publish_to_the_lot_dying_once(broker: Any, message: Any, **kwargs: Any) -> None:
        if kwargs["to"] == WEBHOOK_PARKING_LOT:
            parkings.append(message.message_id)
            if len(parkings) == 1:
                raise ConnectionError("killed before publishing to the parking lot")
        await republish(broker, message, **kwargs)

    monkeypatch.setattr(webhook_app, "republish", publish_to_the_lot_dying_once)
    async with running_webhook_service(webhook_settings):
        await relay(rabbit, row)
        await eventually(lambda: _parked_twice(parkings), timeout=30)

    delivery = await reaches(sessions, event_id, DeliveryStatus.PARKED, attempts=len(LADDER) + 1)
    assert len(receiver.requests) == len(LADDER) + 1  # parked again, not attempted again
    (parked,) = await parked_messages(rabbit, event_id)
    assert parked[LAST_ERROR_HEADER] == "HTTP 500" == delivery.last_error


async def test_a_copy_that_parked_its_delivery_redelivered_goes_to_the_lot_for_a_slow_endpoint(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    """The merchant's endpoint was slow, with its share of calls in flight: the redelivered copy
    was sent back to wait before its delivery was read, republished as a new message (no longer
    redelivered), and acked as already parked when it came back: nothing in the lot."""
    merchant, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    receiver.always(Reply(500))
    last_retry = replace(first_request(row), ladder_attempt=len(LADDER) + 1, original=False)
    async with event_delivery(sessions, webhook_settings, lease_seconds=10, max_batch=4) as sent:
        assert (await sent.deliver(last_retry)).disposition is Disposition.PARK
        # ... killed before the lot had it. Meanwhile the endpoint turned slow, a call in flight.
        slow = sent.slow_endpoints
        slow.answered(merchant.merchant_id, seconds=webhook_settings.webhook_timeout_seconds)
        with slow.in_flight(merchant.merchant_id):
            assert not slow.admits(merchant.merchant_id)
            again = await sent.deliver(replace(last_retry, redelivered=True))

    assert (again.disposition, again.reason) == (Disposition.PARK, "HTTP 500")


async def _parked_twice(parkings: list[str]) -> None:
    assert len(parkings) == 2


@pytest.mark.usefixtures("webhook_service")
async def test_a_redirect_is_a_failed_attempt_and_is_not_followed(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
) -> None:
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    receiver.reply_with(Reply(302, headers={"Location": receiver.url + "/moved"}))

    await relay(rabbit, row)

    event_id = event_id_of(row)
    await reaches(sessions, event_id, DeliveryStatus.DELIVERED, attempts=2)
    assert [request.path for request in receiver.requests] == [WEBHOOK_PATH, WEBHOOK_PATH]
    first, second = await attempts_of(sessions, event_id)
    assert first.status_code == 302 and first.error == "HTTP 302: redirects are not followed"
    assert second.status_code == 200


@pytest.mark.usefixtures("webhook_service")
async def test_a_timeout_is_a_failed_attempt(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
) -> None:
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    receiver.reply_with(Reply(hang=True))

    await relay(rabbit, row)

    event_id = event_id_of(row)
    await reaches(sessions, event_id, DeliveryStatus.DELIVERED, attempts=2)
    first, second = await attempts_of(sessions, event_id)
    assert first.status_code is None and first.error == "timed out after 1 s"
    assert 900 <= first.latency_ms < 3000
    assert second.status_code == 200


@pytest.mark.usefixtures("webhook_service")
async def test_retry_after_on_429_is_honoured(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
) -> None:
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    receiver.reply_with(Reply(429, headers={"Retry-After": "1"}))

    await relay(rabbit, row)

    first, second = await receiver.wait_for_requests(2)
    await reaches(sessions, event_id_of(row), DeliveryStatus.DELIVERED, attempts=2)
    # without Retry-After the ladder would have waited 0.3 s (± 10 %)
    assert second.received_at - first.received_at >= 0.95


@pytest.mark.usefixtures("webhook_service")
@pytest.mark.parametrize("retry_after", ["\xb2", "01 Jan 99999999999999999999 00:00:00 GMT"])
async def test_a_429_whose_retry_after_does_not_read_is_a_recorded_failed_attempt(
    retry_after: str,
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
) -> None:
    """`Retry-After: ²` failed the attempt with a ValueError before it was recorded (a date past
    the parser's integers, with an OverflowError): the delivery stayed PENDING with no attempt,
    and was attempted again each time its lease ran out."""
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    receiver.reply_with(Reply(429, headers={"Retry-After": retry_after}))

    await relay(rabbit, row)

    await reaches(sessions, event_id_of(row), DeliveryStatus.DELIVERED, attempts=2)
    first, second = await attempts_of(sessions, event_id_of(row))
    assert (first.status_code, second.status_code) == (429, 200)


OUTCOMES = "payouts_webhook_outcomes_total"


@pytest.mark.usefixtures("webhook_service")
async def test_malformed_messages_are_dead_lettered_and_the_queue_keeps_moving(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
) -> None:
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    dead_lettered_before = REGISTRY.get_sample_value(OUTCOMES, {"outcome": "dead_lettered"}) or 0
    malformed = [
        b"{not json",
        orjson.dumps({"schemaVersion": 1, "id": f"evt_{uuid.uuid4().hex}"}),
        orjson.dumps({**orjson.loads(row.body), "schemaVersion": 2}),
    ]
    for body in malformed:
        await rabbit.publish(body, exchange=EVENTS_EXCHANGE, routing_key="payout.created")

    await relay(rabbit, row)

    await reaches(sessions, event_id_of(row), DeliveryStatus.DELIVERED, attempts=1)

    bodies: list[bytes] = []  # gathered over the polls: one take may find only some

    async def dead_lettered() -> None:
        bodies.extend(m.body for m in await rabbit.take(QUEUE.dead_letter_queue))
        assert sorted(bodies) == sorted(malformed)

    await eventually(dead_lettered)
    assert len(receiver.requests) == 1
    # Counted as dead letters: the decoder's were counted nowhere.
    counted = REGISTRY.get_sample_value(OUTCOMES, {"outcome": "dead_lettered"})
    assert counted == dead_lettered_before + len(malformed)


async def test_a_recorded_event_unknown_to_the_database_is_dead_lettered(
    rabbit: RabbitClient, webhook_settings: Settings, sessions: SessionFactory
) -> None:
    """A well-formed message naming no recorded event cannot be delivered: dead-letter it."""
    phantom_id = f"evt_{uuid.uuid4().hex[:24]}"
    phantom = {
        "schemaVersion": 1,
        "id": phantom_id,
        "type": "payout.created",
        "event": "PAYOUT_CREATED",
        "createdAt": "2025-01-01T00:00:00.000Z",
        "merchantId": str(uuid.uuid4()),
        "payout": {
            "id": str(uuid.uuid4()),
            "merchantReference": "ref-1",
            "amount": "10.00",
            "currency": "PKR",
            "destType": "WALLET",
            "bankCode": None,
            "walletCode": "JAZZCASH",
            "accountNumber": "03001234567",
            "accountTitle": "Account Holder",
            "purpose": None,
            "status": "PENDING",
            "failureReason": None,
            "failureCode": None,
            "pspReference": None,
            "attempts": 0,
            "processedAt": None,
            "createdAt": "2025-01-01T00:00:00.000Z",
            "updatedAt": "2025-01-01T00:00:00.000Z",
        },
    }
    body = orjson.dumps(phantom)
    PayoutStatusChanged.model_validate_json(body)  # well-formed indeed

    async with running_webhook_service(webhook_settings):
        await rabbit.publish(body, exchange=EVENTS_EXCHANGE, routing_key="payout.created")

        async def dead_lettered() -> None:
            bodies = [m.body for m in await rabbit.take(QUEUE.dead_letter_queue)]
            assert bodies == [body]

        await eventually(dead_lettered)
    assert await delivery_of(sessions, phantom_id) is None


async def test_duplicate_messages_of_one_event_deliver_once(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    receiver.always(Reply(delay_seconds=0.3))  # the copies arrive while the first is in flight
    settled_before = settled_for_good()

    async with running_webhook_service(webhook_settings):
        for _ in range(4):  # at-least-once: the relay may publish a row more than once
            await relay(rabbit, row)
        await reaches(sessions, event_id_of(row), DeliveryStatus.DELIVERED, attempts=1)
        await copies_settled(settled_before, 4)  # a copy that met the lease looked again later
    # the service stopped gracefully: every copy was handled, none is left or requeued

    assert await waiting_copies(rabbit, event_id_of(row)) == 0
    assert len(receiver.requests) == 1
    assert len(await attempts_of(sessions, event_id_of(row))) == 1


def settled_for_good() -> float:
    """Messages the webhook services of this process acked as done (sent or not needed)."""
    return sum(
        REGISTRY.get_sample_value("payouts_webhook_outcomes_total", {"outcome": outcome}) or 0.0
        for outcome in ("delivered", "already_delivered", "duplicate")
    )


async def copies_settled(since: float, copies: int) -> None:
    """Every copy was acked as done, including those that met the lease and looked again."""

    async def all_done() -> None:
        assert settled_for_good() - since == copies

    await eventually(all_done)


async def test_copies_of_a_message_on_two_consumers_send_once(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    """Two replicas get copies of one message: the one that leases the delivery sends it, the
    other finds it leased, looks again after a wait, and finds it delivered."""
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    receiver.always(Reply(delay_seconds=0.3))
    settled_before = settled_for_good()

    async with (
        running_webhook_service(webhook_settings),
        running_webhook_service(webhook_settings),
    ):
        for _ in range(6):
            await relay(rabbit, row)
        await reaches(sessions, event_id_of(row), DeliveryStatus.DELIVERED, attempts=1)
        await copies_settled(settled_before, 6)

    assert await waiting_copies(rabbit, event_id_of(row)) == 0
    assert len(receiver.requests) == 1
    assert len(await attempts_of(sessions, event_id_of(row))) == 1


async def drained(rabbit: RabbitClient) -> None:
    """The queue has no message waiting (one in flight ends when the service stops)."""

    async def empty() -> None:
        assert await rabbit.count(QUEUE.name) == 0

    await eventually(empty)


async def test_resend_delivers_the_stored_event_again_with_the_same_webhook_id(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    merchant, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    event_id = event_id_of(row)

    async with running_webhook_service(webhook_settings):
        await relay(rabbit, row)
        delivery = await reaches(sessions, event_id, DeliveryStatus.DELIVERED, attempts=1)

        resent = await resend(api_client, sessions, merchant, delivery)
        await relay(rabbit, resent)
        await reaches(sessions, event_id, DeliveryStatus.DELIVERED, attempts=2)

        await relay(rabbit, resent)  # a duplicate of the resend message is not sent again
        await drained(rabbit)
    # stopped gracefully: the duplicate was handled

    first, second = receiver.requests
    assert first.webhook_id == second.webhook_id == event_id
    assert first.body == second.body  # the event as recorded, not the payout as it is now
    Webhook(merchant.webhook_secret).verify(second.body, second.headers)
    assert len(await attempts_of(sessions, event_id)) == 2


async def skew_delivered_at(sessions: SessionFactory, event_id: str, skew: timedelta) -> None:
    """Rewrite `delivered_at` as a webhook host whose clock is `skew` off the API's writes it."""
    async with transaction(sessions) as session:
        delivery = await session.scalar(
            select(WebhookDelivery).where(WebhookDelivery.event_id == event_id)
        )
        assert delivery is not None and delivery.delivered_at is not None
        delivery.delivered_at += skew


@pytest.mark.parametrize(
    "skew",
    [timedelta(hours=1), -timedelta(hours=1)],
    ids=["webhook host ahead", "webhook host behind"],
)
async def test_a_resend_is_sent_once_whatever_the_webhook_hosts_clock_says(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
    skew: timedelta,
) -> None:
    """`delivered_at` comes from the webhook host's clock, a resend's request from the API's.
    Compared, a host behind sent a duplicate of the resend message again (delivered "before" it
    was asked for); a host ahead must not drop the resend either. Generations compare no clocks."""
    merchant, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    event_id = event_id_of(row)

    async with running_webhook_service(webhook_settings):
        await relay(rabbit, row)
        delivery = await reaches(sessions, event_id, DeliveryStatus.DELIVERED, attempts=1)
        await skew_delivered_at(sessions, event_id, skew)

        resent = await resend(api_client, sessions, merchant, delivery)
        await relay(rabbit, resent)
        await reaches(sessions, event_id, DeliveryStatus.DELIVERED, attempts=2)
        await skew_delivered_at(sessions, event_id, skew)

        await relay(rabbit, resent)  # a duplicate of the resend message
        await drained(rabbit)

    assert len(receiver.requests) == 2
    assert len(await attempts_of(sessions, event_id)) == 2


@pytest.mark.usefixtures("webhook_service")
async def test_after_rotation_both_secrets_sign(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
) -> None:
    merchant = await make_merchant(webhook_url=receiver.url)
    rotated = await api_client.post(f"{API}/webhook-endpoint/rotate-secret", headers=auth(merchant))
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["data"]["secret"]
    row = await new_event_row(api_client, sessions, merchant)

    await relay(rabbit, row)

    (request,) = await receiver.wait_for_requests(1)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    Webhook(new_secret).verify(request.body, request.headers)
    Webhook(merchant.webhook_secret).verify(request.body, request.headers)
    assert request.headers["x-mypay-signature"] == (
        hmac.new(new_secret.encode(), request.body, hashlib.sha256).hexdigest()
    )


async def test_a_retry_after_a_rotation_without_grace_is_signed_with_the_new_secret(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first attempt may still be signed with the secret just retired (the endpoint is
    cached, for 2 s; for a minute here, so that a slow machine cannot let it expire first) and
    be refused; its retry reads the endpoint again. Before, the whole ladder (after a clock
    advance, a fraction of a second) ran on the cached endpoint, and every attempt was
    refused."""
    monkeypatch.setattr(webhook_app, "EndpointCache", functools.partial(EndpointCache, 60.0))
    merchant = await make_merchant(webhook_url=receiver.url)
    warm_up = await new_event_row(api_client, sessions, merchant)
    async with running_webhook_service(webhook_settings):
        await relay(rabbit, warm_up)
        await reaches(sessions, event_id_of(warm_up), DeliveryStatus.DELIVERED, attempts=1)
        rotated = await api_client.post(
            f"{API}/webhook-endpoint/rotate-secret",
            json={"previousSecretGraceHours": 0},
            headers=auth(merchant),
        )
        assert rotated.status_code == 200, rotated.text
        receiver.verify_with(rotated.json()["data"]["secret"])
        row = await new_event_row(api_client, sessions, merchant)

        await relay(rabbit, row)

        await reaches(sessions, event_id_of(row), DeliveryStatus.DELIVERED, attempts=2)
    attempts = await attempts_of(sessions, event_id_of(row))
    assert [attempt.status_code for attempt in attempts] == [REFUSED, 200]


async def test_private_destination_is_refused_at_delivery_time(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    """The URL was stored earlier (or its DNS changed since): the check runs at connect time."""
    strict = webhook_settings.model_copy(update={"webhook_allow_private_urls": False})
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    event_id = event_id_of(row)

    async with running_webhook_service(strict):
        await relay(rabbit, row)
        await reaches(sessions, event_id, DeliveryStatus.PARKED, attempts=len(LADDER) + 1)

    assert receiver.requests == []
    for attempt in await attempts_of(sessions, event_id):
        assert attempt.status_code is None
        assert attempt.error is not None and "is not a public address" in attempt.error
    assert len(await parked_messages(rabbit, event_id)) == 1


@pytest.mark.usefixtures("webhook_service")
async def test_merchant_without_webhook_url_gets_no_call_and_a_parked_delivery(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    webhook_settings: Settings,
) -> None:
    merchant, row = await created_event(api_client, make_merchant, sessions, webhook_url=None)

    await relay(rabbit, row)

    delivery = await reaches(sessions, event_id_of(row), DeliveryStatus.PARKED, attempts=0)
    assert delivery.last_error == "merchant has no webhook URL configured"
    assert await attempts_of(sessions, event_id_of(row)) == []
    assert await parked_messages(rabbit, event_id_of(row)) == []  # nothing for an operator
    # An operator's replay moves nothing, and says what is left to the merchant: it said "moved
    # 0", and the operator who had fixed the URL waited for webhooks (docs-examples review).
    replayed = await replay_parked(
        webhook_settings.amqp_url, sessions, merchant_id=merchant.merchant_id
    )
    assert (replayed.moved, replayed.still_parked) == (0, 1)


@pytest.mark.usefixtures("webhook_service")
async def test_a_merchant_whose_secret_no_key_opens_is_parked_and_the_others_are_delivered(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
) -> None:
    """The endpoints of a batch's merchants are read in one statement: one secret that no key
    opened failed it, and every event in the batch went back to the queue again and again
    (secrets review). That merchant's delivery is parked, naming the key."""
    _, good_row = await created_event(api_client, make_merchant, sessions, receiver.url)
    lost, lost_row = await created_event(api_client, make_merchant, sessions, receiver.url)
    async with secret_sealed_with_a_lost_key(
        sessions, lost.merchant_id, lost.webhook_secret
    ) as lost_key_id:
        await relay(rabbit, lost_row)
        await relay(rabbit, good_row)

        await reaches(sessions, event_id_of(good_row), DeliveryStatus.DELIVERED, attempts=1)
        parked = await reaches(sessions, event_id_of(lost_row), DeliveryStatus.PARKED, attempts=0)

    assert parked.last_error is not None and lost_key_id in parked.last_error
    assert [request.webhook_id for request in receiver.requests] == [event_id_of(good_row)]


@pytest.mark.usefixtures("webhook_service")
async def test_a_merchant_that_rotated_away_from_a_secret_no_key_opens_gets_its_webhooks(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
) -> None:
    """The rotation kept the lost secret as the previous one, to sign beside the new one for
    the grace period: every webhook was still parked (found by the webhook API review). The
    lost secret is dropped, and the new one signs alone."""
    merchant = await make_merchant(webhook_url=receiver.url)
    async with secret_sealed_with_a_lost_key(
        sessions, merchant.merchant_id, merchant.webhook_secret
    ):
        rotated = await api_client.post(
            f"{API}/webhook-endpoint/rotate-secret", headers=auth(merchant)
        )
        assert rotated.status_code == 200, rotated.text
        receiver.verify_with(rotated.json()["data"]["secret"])
        row = await new_event_row(api_client, sessions, merchant)
        await relay(rabbit, row)

        await reaches(sessions, event_id_of(row), DeliveryStatus.DELIVERED, attempts=1)
    (request,) = receiver.requests
    assert len(request.headers["webhook-signature"].split()) == 1  # the new secret's alone


async def test_replay_parked_moves_a_merchants_messages_back_and_they_are_delivered(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    merchant, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    _, other_row = await created_event(api_client, make_merchant, sessions, receiver.url)
    event_id, other_event_id = event_id_of(row), event_id_of(other_row)
    receiver.always(Reply(503))
    lot_before = await rabbit.count(WEBHOOK_PARKING_LOT)

    async with running_webhook_service(webhook_settings):
        await relay(rabbit, row)
        await relay(rabbit, other_row)
        parked = len(LADDER) + 1
        await reaches(sessions, event_id, DeliveryStatus.PARKED, attempts=parked)
        await reaches(sessions, other_event_id, DeliveryStatus.PARKED, attempts=parked)

        async def both_in_the_lot() -> None:  # published after the PARKED row commits
            assert await rabbit.count(WEBHOOK_PARKING_LOT) >= lot_before + 2

        await eventually(both_in_the_lot)
        receiver.always(Reply(200))

        result = await replay_parked(
            webhook_settings.amqp_url, sessions, merchant_id=merchant.merchant_id
        )

        assert result.moved == 1 and result.kept >= 1
        await reaches(sessions, event_id, DeliveryStatus.DELIVERED, attempts=parked + 1)

    other = await delivery_of(sessions, other_event_id)
    assert other is not None and other.status == DeliveryStatus.PARKED
    assert len(await parked_messages(rabbit, other_event_id)) == 1
    assert await parked_messages(rabbit, event_id) == []


async def test_replay_parked_moves_one_message_per_event_and_drops_its_copies(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    """A delivery parked once, whose message is in the lot twice (a last retry's waiting copy,
    redelivered for a reason of its own, was taken for the copy that parked it): replayed, the
    delivery gets one ladder. Both moved, it had two, and parked again, two messages."""
    merchant, event_id = await parked_twice(
        api_client, make_merchant, sessions, rabbit, receiver, webhook_settings
    )
    receiver.always(Reply(200))
    async with running_webhook_service(webhook_settings):
        result = await replay_parked(
            webhook_settings.amqp_url, sessions, merchant_id=merchant.merchant_id
        )

        await reaches(sessions, event_id, DeliveryStatus.DELIVERED, attempts=len(LADDER) + 2)
    assert (result.moved, result.dropped) == (1, 1)
    assert await waiting_copies(rabbit, event_id) == 0


class Killed(Exception):
    pass


async def test_a_copy_a_killed_replay_left_in_the_lot_is_moved_and_delivered_once(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lot holds a parked delivery's message twice; the replay moves the first and is
    killed before it drops the second. The next replay moves that one (its delivery, PENDING,
    may wait for it: a state does not tell a copy from the message it waits for), and the
    webhook is sent once: the second copy finds it delivered."""
    merchant, event_id = await parked_twice(
        api_client, make_merchant, sessions, rabbit, receiver, webhook_settings
    )
    calls_before = len(receiver.requests)
    real_ack = IncomingMessage.ack
    acks = 0

    async def killed_at_the_second_ack(self: IncomingMessage, multiple: bool = False) -> None:
        nonlocal acks
        acks += 1
        if acks == 2:
            raise Killed
        await real_ack(self, multiple)

    monkeypatch.setattr(IncomingMessage, "ack", killed_at_the_second_ack)
    with pytest.raises(Killed):
        await replay_parked(webhook_settings.amqp_url, sessions, merchant_id=merchant.merchant_id)
    monkeypatch.setattr(IncomingMessage, "ack", real_ack)

    again = await replay_parked(
        webhook_settings.amqp_url, sessions, merchant_id=merchant.merchant_id
    )

    assert (again.moved, again.dropped) == (1, 0)
    receiver.always(Reply(200))
    settled_before = settled_for_good()
    async with running_webhook_service(webhook_settings):
        await reaches(sessions, event_id, DeliveryStatus.DELIVERED, attempts=len(LADDER) + 2)
        await copies_settled(settled_before, 2)
    assert len(receiver.requests) - calls_before == 1


async def test_a_parked_resend_of_a_delivery_delivered_before_it_is_moved(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    """A resend asked while the first attempt was under way leaves the delivery DELIVERED at
    generation 0 of 1; the resend's message was parked (the database failed through its
    ladder). The replay moves it: nothing else sends the resend the API answered 202 for (the
    relay's sweeps take PENDING and RETRYING deliveries only). Dropped as "not parked", it was
    lost."""
    merchant, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    event_id = event_id_of(row)
    async with running_webhook_service(webhook_settings.model_copy(update=PATIENT)):
        resent = await resent_under_way(api_client, sessions, rabbit, receiver, merchant, row)
    await park_row(rabbit, resent, {})

    result = await replay_parked(
        webhook_settings.amqp_url, sessions, merchant_id=merchant.merchant_id
    )

    assert (result.moved, result.dropped) == (1, 0)
    async with running_webhook_service(webhook_settings):

        async def resend_delivered() -> None:
            delivery = await delivery_of(sessions, event_id)
            assert delivery is not None and delivery.delivered_generation == 1

        await eventually(resend_delivered)


async def test_a_database_outage_takes_no_step_of_the_ladder(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    """The database down (not the endpoint failing): each batch's failure took a step of the
    ladder, and an outage as long as the ladder parked webhooks never sent, with no delivery
    row to show them (found by the consumer review). An outage only waits: the ladder's last
    retry meeting one waits the first step's base and keeps its place."""
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    last = replace(first_request(row), ladder_attempt=len(LADDER) + 1, original=False)
    unreachable = make_url(webhook_settings.database_url).set(port=1)  # refused: an outage
    engine = create_engine(unreachable.render_as_string(hide_password=False), pool_size=1)
    try:
        async with event_delivery(
            create_session_factory(engine), webhook_settings, lease_seconds=10, max_batch=1
        ) as delivery:
            decision = await delivery.deliver(last)
    finally:
        await engine.dispose()

    assert decision.disposition is Disposition.RETRY, decision
    assert not decision.failed and decision.step == RetryStep(tier=1, delay_seconds=LADDER[0])
    assert receiver.requests == []


async def test_a_last_retry_parked_by_a_database_failure_is_moved(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ladder's last retry met a database failure (not an outage: that only waits): with no
    step left it is parked at once, and the delivery stays RETRYING, waiting for it. The replay
    moves it. Dropped as "not parked", the delivery waited for the relay's stall sweep: the
    stall time plus a quarter of the last wait late, 2 h 35 min on the README ladder."""
    merchant, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    event_id = event_id_of(row)
    receiver.always(Reply(503))
    request = first_request(row)
    async with event_delivery(
        sessions, webhook_settings, lease_seconds=10, max_batch=1
    ) as delivery:
        for _ in LADDER:
            decision = await delivery.deliver(request)
            assert decision.due_at is not None
            request = replace(
                request,
                ladder_attempt=request.ladder_attempt + 1,
                due_at=decision.due_at,
                clock_offset=decision.clock_offset,
            )
    stored = await delivery_of(sessions, event_id)
    assert stored is not None and stored.status == DeliveryStatus.RETRYING

    async def database_fails(*args: object, **kwargs: object) -> None:
        raise OperationalError("INSERT", None, Exception(1146, "Table doesn't exist"))

    assert request.due_at is not None
    with monkeypatch.context() as patch:
        patch.setattr(delivery_module, "lease_deliveries", database_fails)
        async with running_webhook_service(webhook_settings):
            await rabbit.publish(  # the last retry, back from its tier
                row.body,
                exchange=DEFAULT_EXCHANGE,
                routing_key=QUEUE.name,
                message_id=str(row.id),
                headers={
                    **(row.headers or {}),
                    RETRY_COUNT_HEADER: len(LADDER),
                    **retry_due_headers(request.due_at, clock_offset=request.clock_offset),
                },
            )
            parked = await eventually(lambda: parked_message_of(rabbit, event_id))
    await rabbit.publish(
        parked.body,
        exchange=DEFAULT_EXCHANGE,
        routing_key=WEBHOOK_PARKING_LOT,
        message_id=parked.message_id,
        headers=parked.headers,
    )

    result = await replay_parked(
        webhook_settings.amqp_url, sessions, merchant_id=merchant.merchant_id
    )

    assert (result.moved, result.dropped) == (1, 0)


async def parked_message_of(rabbit: RabbitClient, event_id: str) -> AbstractIncomingMessage:
    """Take the parking lot's message of the event (it must be there, and once)."""
    found = await messages_of(rabbit, WEBHOOK_PARKING_LOT, event_id)
    assert len(found) == 1
    return found[0]


async def test_two_parked_copies_of_a_retry_its_delivery_waits_for_are_moved_once(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    """The ladder's last retry parked twice while the database was down (a crash between
    parking it and the ack), its delivery RETRYING for it: one copy is moved, one ladder. Both
    moved, the second leased the delivery again and made one more attempt at once."""
    merchant, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    receiver.always(Reply(503))
    request = first_request(row)
    async with event_delivery(sessions, webhook_settings, lease_seconds=10, max_batch=1) as d:
        request = await up_the_ladder(d, request)
    stored = await delivery_of(sessions, event_id_of(row))
    assert stored is not None and stored.status == DeliveryStatus.RETRYING
    async with running_webhook_service(webhook_settings):
        pass  # the topology is declared
    for _ in range(2):
        await park_row(rabbit, row, {RETRY_COUNT_HEADER: len(LADDER) + 1})

    result = await replay_parked(
        webhook_settings.amqp_url, sessions, merchant_id=merchant.merchant_id
    )

    assert (result.moved, result.dropped) == (1, 1)


async def test_a_late_copy_of_the_original_message_leaves_a_parked_delivery_parked(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    """The ladder ran out and parked the delivery; then a copy of the event's first message
    arrives (at-least-once: the relay published it twice). It is acked: the delivery stays
    parked, no call is made. It leased the delivery and started a second ladder."""
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    receiver.always(Reply(503))
    request = first_request(row)
    async with event_delivery(sessions, webhook_settings, lease_seconds=10, max_batch=1) as d:
        request = await up_the_ladder(d, request)
        assert (await d.deliver(request)).disposition == Disposition.PARK

        late_copy = await d.deliver(first_request(row))

    assert late_copy.disposition == Disposition.DONE
    assert len(receiver.requests) == len(LADDER) + 1
    stored = await delivery_of(sessions, event_id_of(row))
    assert stored is not None
    assert (stored.status, stored.attempts) == (DeliveryStatus.PARKED, len(LADDER) + 1)


async def test_a_resend_during_the_ladders_last_attempt_is_delivered(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    """The merchant resends while the last attempt of the ladder is in flight: that attempt
    fails, and the delivery waits for the resend (PENDING), not parked: parked, the resend's
    message would find it parked and be taken for a late copy."""
    merchant, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    last_answer = asyncio.Event()
    receiver.reply_with(*[Reply(503)] * len(LADDER), Reply(503, held_until=last_answer))
    request = first_request(row)
    async with event_delivery(sessions, webhook_settings, lease_seconds=10, max_batch=1) as d:
        request = await up_the_ladder(d, request)
        last_attempt = asyncio.create_task(d.deliver(request))
        await receiver.wait_for_requests(len(LADDER) + 1)
        leased = await delivery_of(sessions, event_id_of(row))
        assert leased is not None
        resent = await resend(api_client, sessions, merchant, leased)
        last_answer.set()
        assert (await last_attempt).disposition == Disposition.PARK
        stored = await delivery_of(sessions, event_id_of(row))
        assert stored is not None and stored.status == DeliveryStatus.PENDING

        resend_request = DeliveryRequest.of_message(
            PayoutStatusChanged.model_validate_json(resent.body),
            resent.headers or {},
            redelivered=False,
            exchange=resent.exchange,
        )
        assert (await d.deliver(resend_request)).reason == DELIVERED

    await reaches(sessions, event_id_of(row), DeliveryStatus.DELIVERED, attempts=len(LADDER) + 2)


async def test_a_copy_of_the_events_message_once_its_ladder_started_makes_no_attempt(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    """The relay publishes at least once: a second copy of the event's message, come after the
    first attempt failed, called the endpoint again at once, outside the ladder (whose retries
    then took a step more to park). It is superseded: the retry carries the event on."""
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    receiver.always(Reply(500))
    request = first_request(row)
    async with event_delivery(sessions, webhook_settings, lease_seconds=10, max_batch=4) as d:
        failed = await d.deliver(request)
        copy = await d.deliver(request)
        retried = await d.deliver(retry_of(request, failed))

    assert (failed.disposition, copy.disposition, copy.reason) == (
        Disposition.RETRY,
        Disposition.DONE,
        SUPERSEDED,
    )
    assert retried.disposition is Disposition.RETRY  # the ladder's second attempt, on time
    assert len(receiver.requests) == 2
    stored = await delivery_of(sessions, event_id_of(row))
    assert stored is not None and (stored.status, stored.attempts) == ("RETRYING", 2)


async def test_a_resend_during_a_failing_attempt_is_delivered_and_its_retry_dropped(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    """The merchant resends while the first attempt is in flight, and that attempt fails: the
    delivery waits for the resend (PENDING), not for the attempt's retry, whose message is
    dropped when it comes. Left RETRYING, the resend's message was taken for a late copy."""
    merchant, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    answer = asyncio.Event()
    receiver.reply_with(Reply(503, held_until=answer), Reply(200))
    request = first_request(row)
    async with event_delivery(sessions, webhook_settings, lease_seconds=10, max_batch=1) as d:
        attempt = asyncio.create_task(d.deliver(request))
        await receiver.wait_for_requests(1)
        leased = await delivery_of(sessions, event_id_of(row))
        assert leased is not None
        resent = await resend(api_client, sessions, merchant, leased)
        answer.set()
        failed = await attempt
        assert failed.disposition is Disposition.RETRY
        stored = await delivery_of(sessions, event_id_of(row))
        assert stored is not None
        assert (stored.status, stored.next_attempt_at) == (DeliveryStatus.PENDING, None)

        resend_request = DeliveryRequest.of_message(
            PayoutStatusChanged.model_validate_json(resent.body),
            resent.headers or {},
            redelivered=False,
            exchange=resent.exchange,
        )
        assert (await d.deliver(resend_request)).reason == DELIVERED
        late_retry = await d.deliver(retry_of(request, failed))

    assert late_retry.disposition is Disposition.DONE
    assert len(receiver.requests) == 2
    await reaches(sessions, event_id_of(row), DeliveryStatus.DELIVERED, attempts=2)


async def test_a_parked_resend_of_a_delivery_waiting_for_it_is_moved(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    """A resend's message parked (the database failed through its ladder), its delivery PENDING
    at the resend's generation: moved. Dropped as "not parked", only the relay's sweep of
    PENDING deliveries sent it, PAYOUTS_WEBHOOK_STALLED_RETRY_SECONDS later."""
    merchant, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    async with event_delivery(sessions, webhook_settings, lease_seconds=10, max_batch=1) as d:
        await d.deliver(first_request(row))
    stored = await delivery_of(sessions, event_id_of(row))
    assert stored is not None and stored.status == DeliveryStatus.DELIVERED
    resent = await resend(api_client, sessions, merchant, stored)
    async with running_webhook_service(webhook_settings):
        pass  # the topology is declared
    await park_row(rabbit, resent, {RETRY_COUNT_HEADER: len(LADDER) + 1})

    result = await replay_parked(
        webhook_settings.amqp_url, sessions, merchant_id=merchant.merchant_id
    )

    assert (result.moved, result.dropped) == (1, 0)


async def park_row(rabbit: RabbitClient, row: OutboxMessage, headers: dict[str, Any]) -> None:
    """The outbox row's message in the parking lot, with these headers besides its own."""
    await rabbit.publish(
        row.body,
        exchange=DEFAULT_EXCHANGE,
        routing_key=WEBHOOK_PARKING_LOT,
        message_id=str(row.id),
        headers={**(row.headers or {}), **headers},
    )


async def parked_twice(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> tuple[NewMerchant, str]:
    """An event whose delivery was parked once, and its message twice in the lot (the webhook
    service stopped); the merchant and the event."""
    merchant, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    event_id = event_id_of(row)
    receiver.always(Reply(503))
    async with running_webhook_service(webhook_settings):
        await relay(rabbit, row)
        await reaches(sessions, event_id, DeliveryStatus.PARKED, attempts=len(LADDER) + 1)

        # published after the PARKED row commits
        message = await eventually(lambda: parked_message_of(rabbit, event_id))
    for _ in range(2):
        await rabbit.publish(
            message.body,
            exchange=DEFAULT_EXCHANGE,
            routing_key=WEBHOOK_PARKING_LOT,
            message_id=message.message_id,
            headers=message.headers,
        )
    return merchant, event_id


# --- Lease, call, record: the database side of a delivery ---------------------------------------


@pytest.mark.parametrize("size", [1, 20])
async def test_a_batch_of_deliveries_costs_a_fixed_number_of_statements(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
    size: int,
) -> None:
    merchant = await make_merchant(webhook_url=receiver.url)
    rows = [await new_event_row(api_client, sessions, merchant) for _ in range(size)]
    engine = create_engine(webhook_settings.database_url, pool_size=2)
    try:
        async with engine.connect() as connection:  # connect before counting
            await connection.execute(text("SELECT 1"))
        # A long window: the whole batch is leased together and recorded together. And a long
        # timeout: 20 calls at once on a busy machine took more than 1 s (a red full run).
        async with event_delivery(
            create_session_factory(engine),
            webhook_settings.model_copy(update={"webhook_timeout_seconds": 10.0}),
            lease_seconds=15,
            max_batch=size,
            window_seconds=5.0,
        ) as delivery:
            with counting(engine) as seen:
                decisions = await asyncio.gather(
                    *(delivery.deliver(first_request(row)) for row in rows)
                )
    finally:
        await engine.dispose()

    assert {(d.disposition, d.reason) for d in decisions} == {(Disposition.DONE, DELIVERED)}
    assert len(receiver.requests) == size
    for row in rows:
        await reaches(sessions, event_id_of(row), DeliveryStatus.DELIVERED, attempts=1)
    assert len(seen.statements) <= STATEMENTS_PER_BATCH, seen.statements
    assert seen.commits <= COMMITS_PER_BATCH


async def test_a_second_batch_of_the_same_padded_size_builds_no_statement(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    """Every statement of a batch is built and compiled once per batch size, not once per
    batch: the lease and the recording are compiled by hand, once per size (SQLAlchemy caches no
    multi-row INSERT). And sizes are padded to a power of two: a batch of 3 reuses the
    statements of a batch of 4."""
    merchant = await make_merchant(webhook_url=receiver.url)
    rows = [await new_event_row(api_client, sessions, merchant) for _ in range(7)]
    async with event_delivery(
        sessions, webhook_settings, lease_seconds=10, max_batch=4, window_seconds=1.0
    ) as delivery:
        for batch in (rows[:4], rows[4:]):
            with statements_built(every_task=True) as built:
                decisions = await asyncio.gather(
                    *(delivery.deliver(first_request(row)) for row in batch)
                )
            assert {d.disposition for d in decisions} == {Disposition.DONE}

    # The second batch's; the API's request log, flushed in the background for the creates
    # above, is not the webhook service's.
    assert [statement for statement in built if "api_requests" not in statement] == []


async def test_a_webhook_is_sent_once_leased_not_once_its_record_batch_gathered(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    """Leases and records gather for windows of their own: every webhook waits the lease
    window before its call, and none the record window, made after it (at 20 ms for both, half
    of peak's created→webhook p99 in make bench was about twice what it is at a 5 ms lease)."""
    merchant = await make_merchant(webhook_url=receiver.url)
    row = await new_event_row(api_client, sessions, merchant)
    async with event_delivery(
        sessions,
        webhook_settings,
        lease_seconds=10,
        max_batch=4,
        window_seconds=0,
        record_window_seconds=5.0,
    ) as delivery:
        delivering = asyncio.create_task(delivery.deliver(first_request(row)))
        await receiver.wait_for_requests(1, within=4.0)
        recorded_yet = delivering.done()
        decision = await delivering

    assert not recorded_yet  # its record batch still gathering when the webhook arrived
    assert decision.disposition is Disposition.DONE


async def test_a_prepared_delivery_compiles_nothing_for_its_first_batch(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    """The webhook service compiles the lease and the recording of every batch size when it
    opens (EventDelivery.prepare): the first burst of each size does not pay for them. A new
    engine is a new dialect, which nothing was compiled for yet, as in a new process."""
    merchant = await make_merchant(webhook_url=receiver.url)
    engine = create_engine(webhook_settings.database_url)
    sessions = create_session_factory(engine)
    rows = [await new_event_row(api_client, sessions, merchant) for _ in range(3)]
    try:
        async with event_delivery(
            sessions, webhook_settings, lease_seconds=10, max_batch=4, window_seconds=1.0
        ) as delivery:
            await delivery.prepare()
            with statements_built(every_task=True) as built:
                decisions = await asyncio.gather(
                    *(delivery.deliver(first_request(row)) for row in rows)
                )
    finally:
        await engine.dispose()

    assert {d.disposition for d in decisions} == {Disposition.DONE}
    batch_statements = ("INSERT IGNORE INTO webhook_deliveries", "UPDATE webhook_deliveries")
    assert [s for s in built if s.split(": ", 1)[1].startswith(batch_statements)] == []


async def test_a_delivery_prepared_while_the_database_is_down_starts_anyway(
    webhook_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The service still consumes (its batches fail and retry until the database is back);
    the batch statements are compiled when first used."""
    engine = create_engine("mysql+asyncmy://root@127.0.0.1:1/nowhere")
    try:
        async with event_delivery(
            create_session_factory(engine), webhook_settings, lease_seconds=10, max_batch=4
        ) as delivery:
            await delivery.prepare()
    finally:
        await engine.dispose()

    assert "batch statements are compiled when used" in caplog.text


async def test_no_transaction_or_row_lock_is_held_while_the_endpoint_is_called(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    engine: AsyncEngine,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    event_id = event_id_of(row)
    answer = asyncio.Event()
    receiver.reply_with(Reply(held_until=answer))
    patient = webhook_settings.model_copy(update={"webhook_timeout_seconds": 5.0})
    await purge_webhook_queues(rabbit, patient)  # no other message's transactions meanwhile

    async with running_webhook_service(patient):
        await relay(rabbit, row)
        await receiver.wait_for_requests(1)
        try:  # the request is in flight, unanswered, for up to 5 s
            await no_transaction_elsewhere(engine)
            assert len(receiver.requests) == 1  # still the first call: no retry came in between
            async with engine.connect() as connection:
                leased = (
                    await connection.execute(
                        select(WebhookDelivery.lease_token, WebhookDelivery.leased_until)
                        .where(WebhookDelivery.event_id == event_id)
                        .with_for_update(nowait=True)  # raises if anyone holds the row
                    )
                ).one()
                await connection.rollback()
        finally:
            answer.set()
        delivery = await reaches(sessions, event_id, DeliveryStatus.DELIVERED, attempts=1)

    assert leased.lease_token is not None and leased.leased_until is not None
    assert delivery.lease_token is None and delivery.leased_until is None


async def test_a_resend_asked_while_an_attempt_is_in_flight_is_sent_again(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    """The resend does not wait for the attempt (no lock is held across the call), and the
    attempt under way cannot honour it: it was leased before the resend was asked."""
    merchant, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    event_id = event_id_of(row)
    settled_before = settled_for_good()

    async with running_webhook_service(webhook_settings.model_copy(update=PATIENT)):
        resent = await resent_under_way(api_client, sessions, rabbit, receiver, merchant, row)
        await relay(rabbit, resent)
        second = await reaches(sessions, event_id, DeliveryStatus.DELIVERED, attempts=2)
        await relay(rabbit, resent)  # a duplicate of the resend message is not sent again
        await copies_settled(settled_before, 3)

    assert (second.generation, second.delivered_generation) == (1, 1)
    assert len(receiver.requests) == 2
    assert len(await attempts_of(sessions, event_id)) == 2


# An attempt held open while the test calls the API must not time out meanwhile.
PATIENT = {"webhook_timeout_seconds": 5.0}


async def resent_under_way(
    api_client: httpx.AsyncClient,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    merchant: NewMerchant,
    row: OutboxMessage,
) -> OutboxMessage:
    """Relay the event to the running webhook service (PATIENT) and ask its resend while the first
    attempt is under way; once that attempt is recorded (DELIVERED at generation 0 of 1), the
    resend's outbox row, not relayed."""
    event_id = event_id_of(row)
    answer = asyncio.Event()
    receiver.reply_with(Reply(held_until=answer))  # the service runs with PATIENT settings
    await relay(rabbit, row)
    await receiver.wait_for_requests(1)
    try:
        leased = await delivery_of(sessions, event_id)
        assert leased is not None
        resent = await resend(api_client, sessions, merchant, leased)
    finally:
        answer.set()
    first = await reaches(sessions, event_id, DeliveryStatus.DELIVERED, attempts=1)
    assert (first.generation, first.delivered_generation) == (1, 0)
    return resent


async def _killed_mid_attempt(
    sessions: SessionFactory,
    settings: Settings,
    receiver: WebhookReceiver,
    row: OutboxMessage,
    lease_seconds: int,
) -> None:
    """A consumer killed while its first attempt waits on the endpoint: nothing is recorded and
    the delivery's lease stays behind."""
    async with event_delivery(
        sessions, settings, lease_seconds=lease_seconds, max_batch=1
    ) as doomed:
        attempt = asyncio.create_task(doomed.deliver(first_request(row)))
        await receiver.wait_for_requests(1)
        attempt.cancel()
        with suppress(asyncio.CancelledError):
            await attempt


async def test_a_lease_left_by_a_consumer_killed_mid_attempt_is_taken_over_when_it_expires(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    event_id = event_id_of(row)
    receiver.reply_with(Reply(hang=True))  # the first attempt never gets its answer
    lease_seconds = 2
    await _killed_mid_attempt(sessions, webhook_settings, receiver, row, lease_seconds)
    orphaned = await delivery_of(sessions, event_id)
    assert orphaned is not None and orphaned.lease_token is not None and orphaned.attempts == 0

    async with running_webhook_service(webhook_settings):
        await relay(rabbit, row)  # as RabbitMQ redelivers the dead consumer's unacked message
        delivery = await reaches(sessions, event_id, DeliveryStatus.DELIVERED, attempts=1)

    killed, taken_over = receiver.requests
    assert killed.webhook_id == taken_over.webhook_id == event_id
    assert taken_over.received_at - killed.received_at >= lease_seconds * 0.75  # not before
    assert delivery.lease_token is None


async def test_waiting_for_a_dead_consumers_lease_takes_no_step_of_the_retry_ladder(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    """The redelivered copy goes round the retry tiers until the dead attempt's lease runs out.
    Each round counted as a failed attempt, so the webhook's first real failure parked it."""
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    event_id = event_id_of(row)
    receiver.reply_with(Reply(hang=True), Reply(500))  # then 200
    lease_seconds = 7  # over three times the whole ladder's waits
    await _killed_mid_attempt(sessions, webhook_settings, receiver, row, lease_seconds)

    async with running_webhook_service(webhook_settings):
        await relay(rabbit, row)
        await reaches(sessions, event_id, DeliveryStatus.DELIVERED, attempts=2)

    attempts = await attempts_of(sessions, event_id)
    assert [(a.attempt_number, a.status_code) for a in attempts] == [(1, 500), (2, 200)]


async def test_an_endpoint_change_reaches_deliveries_within_the_cache_time(
    make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant(webhook_url="https://old.example/hook")
    loaded_at = now = 100.0
    cache = EndpointCache(clock=lambda: now)

    async def url_seen() -> str | None:
        async with sessions() as session:
            endpoints = await cache.endpoints(session, [merchant.merchant_id])
        return endpoints[merchant.merchant_id].url

    assert await url_seen() == "https://old.example/hook"
    async with transaction(sessions) as session:
        stored = await session.get_one(Merchant, merchant.merchant_id)
        stored.webhook_url = "https://new.example/hook"

    now = loaded_at + ENDPOINT_CACHE_SECONDS - 0.1
    assert await url_seen() == "https://old.example/hook"
    now = loaded_at + ENDPOINT_CACHE_SECONDS
    assert await url_seen() == "https://new.example/hook"


async def test_a_url_set_is_seen_at_once_by_a_merchant_that_had_none(
    make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """Without a URL a delivery is parked at once, with no retry that would find the URL set
    later: an endpoint without one is never cached, or a merchant setting its URL (then
    resending, or creating a payout) within the cache time had those webhooks parked too."""
    merchant = await make_merchant(webhook_url=None)
    cache = EndpointCache(clock=lambda: 100.0)  # the clock stands still: nothing expires

    async def url_seen() -> str | None:
        async with sessions() as session:
            endpoints = await cache.endpoints(session, [merchant.merchant_id])
        return endpoints[merchant.merchant_id].url

    assert await url_seen() is None
    async with transaction(sessions) as session:
        stored = await session.get_one(Merchant, merchant.merchant_id)
        stored.webhook_url = "https://new.example/hook"

    assert await url_seen() == "https://new.example/hook"


async def test_a_stale_retry_copy_in_the_batch_of_the_live_one_does_not_swallow_it(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
) -> None:
    """The retry due at D1 failed, so the delivery waits for D2. The D1 message comes back
    (its consumer died after republishing the D2 copy, before acking) in one batch with the D2
    message, D1 first. The D2 copy carries the event: it is attempted, not acked as D1's
    duplicate while D1 is answered superseded (which left the delivery RETRYING for good)."""
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    receiver.reply_with(Reply(status=500), Reply(status=500))
    first = first_request(row)
    async with event_delivery(
        sessions, webhook_settings, lease_seconds=10, max_batch=8
    ) as delivery:
        failed = await delivery.deliver(first)
        due_first = retry_of(first, failed)
        failed_again = await delivery.deliver(due_first)
        due_next = retry_of(due_first, failed_again)
    assert failed_again.due_at is not None and failed.due_at is not None
    assert failed_again.due_at > failed.due_at

    async with event_delivery(
        sessions, webhook_settings, lease_seconds=10, max_batch=8, window_seconds=0.5
    ) as delivery:
        stale, live = await asyncio.gather(delivery.deliver(due_first), delivery.deliver(due_next))

    assert (stale.disposition, stale.reason) == (Disposition.DONE, DUPLICATE)
    assert (live.disposition, live.reason) == (Disposition.DONE, DELIVERED)
    assert len(receiver.requests) == 3
    await reaches(sessions, event_id_of(row), DeliveryStatus.DELIVERED, attempts=3)


async def test_a_record_that_committed_but_failed_on_the_way_back_keeps_its_retry(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The retry due at D1 fails; its record commits, then the connection is lost before the
    answer (error 2013). The message must go on as the retry due at D2, which the delivery now
    waits for: with D1 it came back superseded and was acked, and the delivery waited for good."""
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    receiver.reply_with(Reply(status=500), Reply(status=500))
    first = first_request(row)
    async with event_delivery(
        sessions, webhook_settings, lease_seconds=10, max_batch=8
    ) as delivery:
        failed = await delivery.deliver(first)
        due_first = retry_of(first, failed)
        with connection_lost_after_a_record_commits(monkeypatch):
            failed_again = await delivery.deliver(due_first)
        waits_for = await delivery_of(sessions, event_id_of(row))
        assert waits_for is not None and waits_for.next_attempt_at != failed.due_at
        assert failed_again.disposition is Disposition.RETRY
        assert failed_again.due_at == waits_for.next_attempt_at

        comes_back = retry_of(due_first, failed_again)
        assert (await delivery.deliver(comes_back)).reason == DELIVERED
    assert len(receiver.requests) == 3


@pytest.mark.parametrize("refusal", ["gone once", "read-only for 3 s"])
async def test_an_attempt_the_database_did_not_record_is_recorded_not_sent_again(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    refusal: str,
) -> None:
    """The endpoint took the webhook (200); writing the attempt failed, nothing committed: the
    server gone once (2006), or a failover's read-only server (1290) refusing it for 3 s while
    it answered reads. It is written again: before, the message took the retry ladder and the
    endpoint got the webhook a second time (the read-only server's refusals were written again
    twice within 1.2 s: late fixes review)."""
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    real_record = delivery_module.record_attempts
    loop = asyncio.get_running_loop()
    read_only_until = loop.time() + 3.0
    gone = [OperationalError("UPDATE", None, Exception(2006, "MySQL server has gone away"))]

    async def record(*args: Any, **kwargs: Any) -> int:
        if refusal == "gone once" and gone:
            raise gone.pop()
        if refusal == "read-only for 3 s" and loop.time() < read_only_until:
            raise OperationalError("UPDATE", None, Exception(1290, "running with --read-only"))
        return await real_record(*args, **kwargs)

    monkeypatch.setattr(delivery_module, "record_attempts", record)
    async with event_delivery(
        sessions, webhook_settings, lease_seconds=10, max_batch=8
    ) as delivery:
        decision = await delivery.deliver(first_request(row))

    assert (decision.disposition, decision.reason) == (Disposition.DONE, DELIVERED)
    assert len(receiver.requests) == 1
    await reaches(sessions, event_id_of(row), DeliveryStatus.DELIVERED, attempts=1)
    assert len(await attempts_of(sessions, event_id_of(row))) == 1


async def test_a_record_lost_on_the_way_back_for_a_row_that_changed_hands_is_not_written_again(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    receiver: WebhookReceiver,
    webhook_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The record commits, its answer is lost (2013), and the row shows another lease (ours ran
    out while the database was slow): nothing tells the attempt is not written, and writing it
    again recorded the one call twice."""
    _, row = await created_event(api_client, make_merchant, sessions, receiver.url)
    event_id = event_id_of(row)
    with connection_lost_after_a_record_commits(monkeypatch):
        losing_record = delivery_module.record_attempts

        async def record(*args: Any, **kwargs: Any) -> int:
            await set_delivery(sessions, event_id, lease_token="another-replicas-lease")
            return await losing_record(*args, **kwargs)

        monkeypatch.setattr(delivery_module, "record_attempts", record)
        async with event_delivery(
            sessions, webhook_settings, lease_seconds=10, max_batch=8
        ) as delivery:
            await delivery.deliver(first_request(row))

    assert len(receiver.requests) == 1
    assert len(await attempts_of(sessions, event_id)) == 1


@contextmanager
def connection_lost_after_a_record_commits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    recording = False
    real_record, real_transaction = delivery_module.record_attempts, delivery_module.transaction

    async def record(*args: Any, **kwargs: Any) -> int:
        nonlocal recording
        recording = True
        return await real_record(*args, **kwargs)

    @asynccontextmanager
    async def transaction(sessions: SessionFactory) -> AsyncIterator[Any]:
        nonlocal recording
        async with real_transaction(sessions) as session:
            yield session
        if recording:  # committed
            recording = False
            raise OperationalError("COMMIT", None, Exception(2013, "Lost connection"))

    with monkeypatch.context() as patch:
        patch.setattr(delivery_module, "record_attempts", record)
        patch.setattr(delivery_module, "transaction", transaction)
        yield
