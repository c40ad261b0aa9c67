"""The webhook service: consumes `webhooks.payout-events`, one HTTP attempt per message, the
database work of the messages in flight done in batches (webhook_service.delivery).

After the attempt the message is acked (delivered, already delivered, nothing to send), sent to
the next retry tier with its delay, parked in `webhooks.parking-lot` after the last tier, or, if
it is not a PayoutStatusChanged at all, dead-lettered into `webhooks.payout-events.dead` (with the
validation error in a header) so that it never blocks the queue. Retries count in our own header.

Prefetch is bounded (`webhook_prefetch`, 128) and is also the largest batch. The messages in flight
share two database connections whatever the prefetch: one batch leases while another records,
each one batch at a time, and no connection is held during an HTTP call. (In test mode, a
payout.processing event that sandbox chaos holds out of order reads the database once a second
on its own, for a moment each time.) On shutdown the broker stops consuming and waits for the
in-flight attempts (graceful timeout above the HTTP timeout) before the batches stop and the pool
closes.
"""

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aio_pika.exceptions import AMQPError
from aiormq.exceptions import ChannelInvalidStateError
from faststream import AckPolicy, FastStream
from faststream.exceptions import HandlerException
from faststream.rabbit.annotations import RabbitMessage
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.broker import consumed_message, consumed_queue, create_broker
from contracts.clock import MerchantTime
from contracts.consumer_health import consumer_works
from contracts.db.engine import (
    IDLE_TRANSACTION_SECONDS,
    WORKER_DATABASE_TIMEOUT_SECONDS,
    SessionFactory,
    create_engine,
    create_session_factory,
)
from contracts.heartbeat import BeatWhileWorking, Heartbeat
from contracts.logging import bind_log_context
from contracts.messages import PayoutStatusChanged
from contracts.metrics_server import serve_metrics
from contracts.redelivery import dead_letter, dead_lettering_decoder, republish
from contracts.settings import Settings, get_settings
from contracts.topology import (
    BUSY_WAITS_HEADER,
    OWN_EVENT_HEADER,
    PARKED_HEADER,
    WEBHOOK_PARKING_LOT,
    WorkQueue,
    declare_topology_at,
    webhook_events_queue,
)
from contracts.webhooks import (
    retry_due_headers,
)
from migrations.state import until_migrated
from webhook_service.delivery import Decision, Disposition, EventDelivery, lease_seconds_for
from webhook_service.delivery_records import DeliveryRequest
from webhook_service.endpoints import EndpointCache
from webhook_service.metrics import count_dead_letter, count_outcome
from webhook_service.retry_ladder import RetryLadder
from webhook_service.sender import WebhookSender

log = logging.getLogger("webhooks")

# One connection for the batch being leased, one for the batch being recorded.
DATABASE_CONNECTIONS = 2
# How long a statement waits for a row lock: every transaction of the service is short, and so
# are the relay's and the API's on delivery rows. A row held longer (a stuck session, a frozen
# process) failed its lease batch only after the server's 50 s, while no other delivery was
# leased; now its batch splits within seconds (batch isolation review).
LOCK_WAIT_SECONDS = 5


class PayoutEventConsumer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ladder = RetryLadder.of(settings.webhook_retry_ladder)
        self.broker = create_broker(
            settings.amqp_url, prefetch=settings.webhook_prefetch, app_name="webhooks"
        )
        # The events of payouts started several at once have a queue of their own, with its own
        # waiting queues, consumed beside the others' (topology.webhook_events_queue).
        for in_bulk in (False, True):
            self._consume(webhook_events_queue(self.ladder.tiers, in_bulk=in_bulk))
        self._engine: AsyncEngine | None = None
        self._sender: WebhookSender | None = None
        self._delivery: EventDelivery | None = None
        self._sessions: SessionFactory | None = None

    async def open(self) -> None:
        """Open the pool, wait for the database's migrations, open the HTTP client, compile the
        batch statements, and declare the topology, before consuming: declared first, a queue
        deleted while the service waited for the migrations (a broker reset) was missing when it
        came to consume, and the service exited (restore review)."""
        serve_metrics(self.settings)
        # httpx logs every request URL at INFO; merchants' URLs may embed their own tokens.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self._engine = create_engine(
            self.settings.database_url,
            pool_size=DATABASE_CONNECTIONS,
            lock_wait_seconds=LOCK_WAIT_SECONDS,
            timeout_seconds=WORKER_DATABASE_TIMEOUT_SECONDS,
            idle_transaction_seconds=IDLE_TRANSACTION_SECONDS,
        )
        self._sender = WebhookSender(
            timeout_seconds=self.settings.webhook_timeout_seconds,
            allow_private_urls=self.settings.webhook_allow_private_urls,
        )
        self._sessions = sessions = create_session_factory(self._engine)
        await until_migrated(sessions, "webhook service")
        self._delivery = EventDelivery(
            sessions=sessions,
            sender=self._sender,
            ladder=self.ladder,
            lease_seconds=lease_seconds_for(self.settings.webhook_timeout_seconds),
            max_batch=self.settings.webhook_prefetch,
            lease_window_seconds=self.settings.webhook_lease_window_seconds,
            record_window_seconds=self.settings.webhook_batch_window_seconds,
            # Sandbox webhook chaos: test mode only; production never reads the settings.
            endpoints=EndpointCache(with_chaos=self.settings.sandbox_enabled),
            # Retries on merchants' sandbox clocks: test mode only.
            time=MerchantTime.of(self.settings),
        )
        await self._delivery.prepare()
        await self._declare_topology()

    async def works(self) -> bool:
        """For the heartbeat: consuming, with the broker and the database answering."""
        sessions = self._sessions
        return sessions is not None and await consumer_works(
            self.broker, sessions, self._declare_topology
        )

    async def _declare_topology(self) -> None:
        await declare_topology_at(self.settings.amqp_url, webhook_retry_tiers=self.ladder.tiers)

    async def close(self) -> None:
        if self._delivery is not None:
            await self._delivery.aclose()
        if self._sender is not None:
            await self._sender.aclose()
        if self._engine is not None:
            await self._engine.dispose()

    def _consume(self, queue: WorkQueue) -> None:
        validated = dead_lettering_decoder(
            self.broker, PayoutStatusChanged, queue, count_dead_letter=count_dead_letter
        )

        async def decode(
            message: RabbitMessage, decode_json: Callable[[RabbitMessage], Awaitable[Any]]
        ) -> BaseModel:
            return await _requeued_on_error(message, validated(message, decode_json))

        async def deliver(event: PayoutStatusChanged) -> None:
            message = consumed_message(self.broker)
            await _requeued_on_error(message, self.deliver_payout_event(event, queue))

        self.broker.subscriber(
            consumed_queue(queue),
            decoder=decode,
            # Only unexpected errors reach the policy (settled by _requeued_on_error).
            ack_policy=AckPolicy.NACK_ON_ERROR,
            title=f"deliver-payout-event:{queue.name}",
        )(deliver)

    async def deliver_payout_event(self, event: PayoutStatusChanged, queue: WorkQueue) -> None:
        """`event`, a message of `queue`: delivered, sent to wait in `queue`'s waiting queues,
        parked or dead-lettered."""
        assert self._delivery is not None, "open() runs before the broker starts"
        message = consumed_message(self.broker)
        headers = message.headers or {}
        with bind_log_context(
            payout_id=event.payout.id,
            merchant_id=event.merchant_id,
            correlation_id=message.correlation_id,
            webhook_id=event.id,  # the merchant's receiver logs it: the webhook-id header
        ):
            raw = message.raw_message
            request = DeliveryRequest.of_message(
                event, headers, redelivered=bool(raw.redelivered), exchange=raw.exchange
            )
            await self._settle(message, await self._delivery.deliver(request), request, queue)

    async def _settle(
        self,
        message: RabbitMessage,
        decision: Decision,
        request: DeliveryRequest,
        queue: WorkQueue,
    ) -> None:
        count_outcome(decision)
        if decision.disposition is Disposition.DONE:
            await message.ack()
            return
        if decision.disposition is Disposition.DEAD_LETTER:
            log.warning("dead-lettering message %s: %s", message.message_id, decision.reason)
            await dead_letter(self.broker, message, queue=queue, error=decision.reason)
            return
        if decision.disposition is Disposition.RETRY:
            assert decision.step is not None
            waits = decision.step.delay_seconds > 0  # not a retry the sandbox clock passed
            sent_on = await republish(
                self.broker,
                message,
                queue=queue,
                to=queue.retry_queue(decision.step.tier) if waits else queue.name,
                error=decision.reason,
                delay_seconds=decision.step.delay_seconds if waits else None,
                headers=waiting_headers(decision, request),
                failed=decision.failed,
            )
        else:  # once per delivery given up: the attempts' own lines are at INFO
            log.warning("webhook %s parked: %s", request.event.id, decision.reason)
            sent_on = await republish(
                self.broker,
                message,
                queue=queue,
                to=WEBHOOK_PARKING_LOT,
                error=decision.reason,
                headers={PARKED_HEADER: 1},
            )
        if not sent_on:  # its waiting queue, or the parking lot, refused it: full
            count_dead_letter()


def waiting_headers(decision: Decision, request: DeliveryRequest) -> dict[str, str | int]:
    """What a message sent on to wait carries besides the retry bookkeeping: a retry's due time
    on the sandbox clock; or, for the event's own message sent back with no attempt made (a
    lease to wait out, the database down), that it still is the event's own; and, sent back for
    a slot of its merchant's slow endpoint, how many times in a row."""
    headers: dict[str, str | int] = {}
    if decision.due_at is not None:
        headers.update(retry_due_headers(decision.due_at, clock_offset=decision.clock_offset))
    elif request.original:
        headers[OWN_EVENT_HEADER] = 1
    if decision.busy_waits:
        headers[BUSY_WAITS_HEADER] = decision.busy_waits
    return headers


T = TypeVar("T")


async def _requeued_on_error(message: RabbitMessage, work: Awaitable[T]) -> T:
    """`work`; on an unexpected error, the message requeued, bounded by the delivery limit, by
    basic.reject: RabbitMQ 4.3 counts FastStream's basic.nack as no failed delivery, and a message
    whose handler (or decoder) kept failing looped for ever (RabbitMQ compatibility review). A
    settlement asked of FastStream (contracts/redelivery.py) passes as asked."""
    try:
        return await work
    except HandlerException:
        raise
    except Exception:
        # A channel closed meanwhile returns the message itself; the error stays the one logged.
        with contextlib.suppress(AMQPError, ChannelInvalidStateError):
            await message.reject(requeue=True)  # FastStream's nack then does nothing
        raise


def create_webhook_app(settings: Settings | None = None) -> FastStream:
    settings = settings or get_settings()
    settings.require_safe_webhooks_in_production()
    consumer = PayoutEventConsumer(settings)
    # Touched once the consumers are subscribed, never while `open` waits for the migrations, nor
    # while the broker or the database is down.
    beating = BeatWhileWorking(Heartbeat.at(settings.heartbeat_file), consumer.works)
    return FastStream(
        consumer.broker,
        on_startup=[beating.clear, consumer.open],
        after_startup=[beating.start],
        on_shutdown=[beating.stop],
        after_shutdown=[consumer.close],
    )
