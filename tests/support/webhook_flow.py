"""Helpers for the webhook service's integration tests: a running webhook service, events created
through the API and relayed from the outbox as the relay would, the deliveries and attempts they
record, resends, and counting the statements and transactions of the database side.
"""

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import orjson
from aio_pika.abc import AbstractIncomingMessage
from sqlalchemy import event, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory, transaction
from contracts.db.models import OutboxMessage, PayoutEvent, WebhookAttempt, WebhookDelivery
from contracts.messages import PayoutStatusChanged
from contracts.settings import Settings
from contracts.topology import (
    EVENTS_EXCHANGE,
    PAYOUT_ID_HEADER,
    WEBHOOK_PARKING_LOT,
    declare_topology_at,
    webhook_events_queue,
)
from contracts.webhooks import DeliveryStatus, resend_routing_key
from tests.conftest import MerchantFactory
from tests.support.amqp import RabbitClient, eventually
from tests.support.api_helpers import API, auth, create_payout, outbox_for_payout
from webhook_service.app import create_webhook_app
from webhook_service.delivery import Decision, EventDelivery
from webhook_service.delivery_records import DeliveryRequest
from webhook_service.retry_ladder import RetryLadder
from webhook_service.sender import WebhookSender

LADDER = (0.3, 0.6, 1.2)  # seconds: three retry tiers, so at most four attempts
QUEUE = webhook_events_queue(len(LADDER))
BULK_QUEUE = webhook_events_queue(len(LADDER), in_bulk=True)
SINGLE_RESENDS = resend_routing_key(in_bulk=False)  # the routing key of a single payout's resend


def quick_webhook_settings(settings: Settings, *, timeout_seconds: float = 1.0) -> Settings:
    """The settings of the tests' webhook service: the short LADDER, a short HTTP timeout, and
    private URLs allowed (the receiver listens on 127.0.0.1)."""
    return settings.model_copy(
        update={
            "webhook_retry_delays": ",".join(str(delay) for delay in LADDER),
            "webhook_timeout_seconds": timeout_seconds,
            "webhook_allow_private_urls": True,
        }
    )


@asynccontextmanager
async def running_webhook_service(settings: Settings) -> AsyncIterator[None]:
    app = create_webhook_app(settings)
    await app.start()
    try:
        yield
    finally:
        await app.stop()


async def relay(rabbit: RabbitClient, row: OutboxMessage) -> None:
    """Publish an outbox row as the outbox relay does."""
    await rabbit.publish(
        row.body,
        exchange=row.exchange,
        routing_key=row.routing_key,
        message_id=str(row.id),
        headers=row.headers,
    )


async def created_event(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    webhook_url: str | None,
) -> tuple[NewMerchant, OutboxMessage]:
    """A merchant, one payout, and the outbox row of its `payout.created` event."""
    merchant = await make_merchant(webhook_url=webhook_url)
    return merchant, await new_event_row(api_client, sessions, merchant)


async def new_event_row(
    api_client: httpx.AsyncClient, sessions: SessionFactory, merchant: NewMerchant
) -> OutboxMessage:
    """A new payout of `merchant`, and the outbox row of its `payout.created` event."""
    payout = await create_payout(api_client, merchant)
    return await event_row(sessions, payout["id"])


async def event_row(sessions: SessionFactory, payout_id: str) -> OutboxMessage:
    """The outbox row of the payout's (single) status event."""
    (row,) = [
        r for r in await outbox_for_payout(sessions, payout_id) if r.exchange == EVENTS_EXCHANGE
    ]
    return row


def event_id_of(row: OutboxMessage) -> str:
    return str(orjson.loads(row.body)["id"])


async def recorded_event(sessions: SessionFactory, event_id: str) -> PayoutEvent:
    async with sessions() as session:
        event = await session.get(PayoutEvent, event_id)
    assert event is not None
    return event


async def delivery_of(sessions: SessionFactory, event_id: str) -> WebhookDelivery | None:
    async with sessions() as session:
        return await session.scalar(
            select(WebhookDelivery).where(WebhookDelivery.event_id == event_id)
        )


async def set_delivery(sessions: SessionFactory, event_id: str, **values: Any) -> None:
    """Change the event's delivery row by hand (as a crash, a lease or an old row leaves it)."""
    async with transaction(sessions) as session:
        await session.execute(
            update(WebhookDelivery).where(WebhookDelivery.event_id == event_id).values(**values)
        )


async def attempts_of(sessions: SessionFactory, event_id: str) -> list[WebhookAttempt]:
    async with sessions() as session:
        rows = await session.scalars(
            select(WebhookAttempt)
            .join(WebhookDelivery, WebhookDelivery.id == WebhookAttempt.delivery_id)
            .where(WebhookDelivery.event_id == event_id)
            .order_by(WebhookAttempt.attempt_number)
        )
        return list(rows)


async def reaches(
    sessions: SessionFactory, event_id: str, status: DeliveryStatus, *, attempts: int
) -> WebhookDelivery:
    async def check() -> WebhookDelivery:
        delivery = await delivery_of(sessions, event_id)
        assert delivery is not None, "no delivery recorded yet"
        assert (delivery.status, delivery.attempts) == (status.value, attempts)
        return delivery

    return await eventually(check, timeout=15)


async def parked_messages(rabbit: RabbitClient, event_id: str) -> list[dict[str, Any]]:
    """Take the parking lot's messages of this event (their headers)."""
    parked = await rabbit.take(WEBHOOK_PARKING_LOT)
    return [dict(m.headers or {}) for m in parked if event_id_of_body(m.body) == event_id]


def event_id_of_body(body: bytes) -> str | None:
    try:
        value = orjson.loads(body).get("id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, str) else None


async def purge_webhook_queues(rabbit: RabbitClient, settings: Settings) -> None:
    """Empty the delivery queue and its retry queues: the worker's earlier tests leave messages
    there (retries waiting out their tier, backlogs of endpoints that hung), which a webhook
    service started now would take, to receivers long gone, with transactions of their own."""
    await declare_topology_at(settings.amqp_url, webhook_retry_tiers=len(LADDER))
    for queue in (QUEUE, BULK_QUEUE):
        await rabbit.purge(queue.name, *queue.waiting_queues())


async def waiting_copies(rabbit: RabbitClient, event_id: str) -> int:
    """Messages of the event ready in the delivery queue and its retry queues. They are taken:
    earlier tests of the worker leave other events' messages there (retries waiting out their
    tier), which are no test's business once its webhook service stopped."""
    queues = [QUEUE.name, *QUEUE.waiting_queues()]
    return sum([len(await messages_of(rabbit, queue, event_id)) for queue in queues])


async def messages_of(
    rabbit: RabbitClient, queue: str, event_id: str
) -> list[AbstractIncomingMessage]:
    """Take the messages ready in `queue`; the event's."""
    return [m for m in await rabbit.take(queue) if event_id_of_body(m.body) == event_id]


async def resend(
    api_client: httpx.AsyncClient,
    sessions: SessionFactory,
    merchant: NewMerchant,
    delivery: WebhookDelivery,
) -> OutboxMessage:
    """Ask the API to resend the delivery; the outbox row of the (single) resend message."""
    response = await api_client.post(
        f"{API}/webhooks/deliveries/{delivery.id}/resend", headers=auth(merchant)
    )
    assert response.status_code == 202, response.text
    assert response.json()["data"]["status"] == "PENDING"
    (row,) = [
        r
        for r in await outbox_for_payout(sessions, delivery.payout_id)
        if r.routing_key == SINGLE_RESENDS
    ]
    return row


@dataclass
class StatementLog:
    statements: list[str] = field(default_factory=list)
    commits: int = 0


@contextmanager
def counting(engine: AsyncEngine) -> Iterator[StatementLog]:
    """Every statement and commit the engine sends while the block runs."""
    seen = StatementLog()

    def on_statement(*args: Any) -> None:
        seen.statements.append(args[2])  # (connection, cursor, statement, ...)

    def on_commit(_connection: Any) -> None:
        seen.commits += 1

    event.listen(engine.sync_engine, "before_cursor_execute", on_statement)
    event.listen(engine.sync_engine, "commit", on_commit)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", on_statement)
        event.remove(engine.sync_engine, "commit", on_commit)


@asynccontextmanager
async def event_delivery(
    sessions: SessionFactory,
    settings: Settings,
    *,
    lease_seconds: int,
    max_batch: int,
    window_seconds: float = 0.005,
    record_window_seconds: float | None = None,
) -> AsyncIterator[EventDelivery]:
    """The webhook service's delivery, without the broker: the test submits the messages. Its
    batches of leases and of records gather for `window_seconds` (records: for
    `record_window_seconds`, when given)."""
    sender = WebhookSender(
        timeout_seconds=settings.webhook_timeout_seconds,
        allow_private_urls=settings.webhook_allow_private_urls,
    )
    delivery = EventDelivery(
        sessions=sessions,
        sender=sender,
        ladder=RetryLadder.of(LADDER),
        lease_seconds=lease_seconds,
        max_batch=max_batch,
        lease_window_seconds=window_seconds,
        record_window_seconds=window_seconds
        if record_window_seconds is None
        else record_window_seconds,
    )
    try:
        yield delivery
    finally:
        await delivery.aclose()
        await sender.aclose()


def first_request(row: OutboxMessage) -> DeliveryRequest:
    """The message of the row's event, as it comes through the events exchange."""
    return own_message(PayoutStatusChanged.model_validate_json(row.body))


def own_message(event: PayoutStatusChanged) -> DeliveryRequest:
    """The event's own message, as it comes through the events exchange."""
    return DeliveryRequest(event, ladder_attempt=1, generation=0, original=True)


def retry_of(request: DeliveryRequest, failed: Decision) -> DeliveryRequest:
    """The message a failed attempt republishes: the ladder's next attempt, due when the
    decision says."""
    return replace(
        request, ladder_attempt=request.ladder_attempt + 1, due_at=failed.due_at, original=False
    )


async def up_the_ladder(delivery: EventDelivery, request: DeliveryRequest) -> DeliveryRequest:
    """Every attempt of the ladder but the last, each failing (the receiver refuses them): the
    message of the ladder's last attempt, not sent yet."""
    for _ in LADDER:
        request = retry_of(request, await delivery.deliver(request))
    return request


# A batch: the endpoints not cached, the lease, the read of the leased rows, commit; after the
# calls: the deliveries' new states, the attempts, commit. None of it grows with the batch.
STATEMENTS_PER_BATCH = 5
COMMITS_PER_BATCH = 2


async def no_transaction_elsewhere(engine: AsyncEngine, within: float = 2.0) -> None:
    """Poll until no transaction is open on the test database but the poll's own. The API's
    request log commits a flush every 0.2 s beside everything else (and a slow host may catch
    one open), so a single look cannot tell it from a transaction of the code under test:
    callers assert afterwards that what they watch (a hold, a call in flight) is still under
    way, and keep `within` shorter than it lasts."""

    async def none_open() -> None:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT t.trx_mysql_thread_id, t.trx_state, t.trx_rows_locked"
                    " FROM information_schema.innodb_trx t"
                    " JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id"
                    " WHERE p.db = DATABASE() AND t.trx_mysql_thread_id <> CONNECTION_ID()"
                )
            )
            assert list(rows) == []

    await eventually(none_open, timeout=within)


async def resent_copies(sessions: SessionFactory, payout_id: str) -> list[OutboxMessage]:
    """The outbox rows of the payout's events sent straight to the webhook queue (resends, the
    relay's copies of lost messages), oldest first."""
    async with sessions() as session:
        rows = await session.scalars(
            select(OutboxMessage)
            .where(
                OutboxMessage.routing_key == SINGLE_RESENDS,
                OutboxMessage.headers[PAYOUT_ID_HEADER].as_string() == payout_id,
            )
            .order_by(OutboxMessage.id)
        )
        return list(rows)


async def copies_sent_by(
    sweep: Callable[[], Awaitable[object]], sessions: SessionFactory, payout_id: str
) -> int:
    """Run `sweep`; how many copies of the payout's events it sent (the test database is shared:
    a sweep is judged by one payout's copies, never by the number it returns)."""
    before = len(await resent_copies(sessions, payout_id))
    await sweep()
    return len(await resent_copies(sessions, payout_id)) - before
