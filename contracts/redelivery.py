"""Delayed retries and parking for consumers: the message is republished, with our own retry
count and last error in its headers, to a TTL queue (or a parking lot), then the original is acked.

RabbitMQ >= 3.13 ignores a client-sent `x-death`, so the count lives in our header. Republish
then ack is at-least-once: a crash in between delivers twice, which idempotent consumers absorb.
"""

import logging
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from aiormq.exceptions import DeliveryError
from faststream.exceptions import AckMessage, RejectMessage
from faststream.rabbit import RabbitBroker
from faststream.rabbit.message import RabbitMessage
from pamqp.commands import Basic
from pydantic import BaseModel, ValidationError

from contracts.logging import bind_log_context
from contracts.topology import (
    BUSY_WAITS_HEADER,
    LAST_ERROR_HEADER,
    MERCHANT_ID_HEADER,
    OUTAGE_COUNT_HEADER,
    OWN_EVENT_HEADER,
    PARKED_HEADER,
    PAYOUT_ID_HEADER,
    RETRY_CLOCK_OFFSET_HEADER,
    RETRY_COUNT_HEADER,
    RETRY_DUE_HEADER,
    WorkQueue,
)

# A waiting webhook message's own: set again by whoever sends it on to wait (a fresh copy drops
# them).
WAITING_RETRY_HEADERS = (
    RETRY_DUE_HEADER,
    RETRY_CLOCK_OFFSET_HEADER,
    OWN_EVENT_HEADER,
    BUSY_WAITS_HEADER,
)
# What a fresh copy drops: it starts anew (the parked mark too: replay-parked reopened the
# delivery, and a late copy of the replayed ladder's last retry, marked, was parked a second time).
RETRY_BOOKKEEPING = (
    LAST_ERROR_HEADER,
    RETRY_COUNT_HEADER,
    OUTAGE_COUNT_HEADER,
    PARKED_HEADER,
    *WAITING_RETRY_HEADERS,
)

log = logging.getLogger("redelivery")

MAX_ERROR_LENGTH = 500


def retry_count(headers: Mapping[str, Any] | None) -> int:
    """How many attempts at this message failed so far (0 on first delivery)."""
    return _count(headers, RETRY_COUNT_HEADER)


def outage_count(headers: Mapping[str, Any] | None) -> int:
    """How many outages (the database down) this message has waited out in a row."""
    return _count(headers, OUTAGE_COUNT_HEADER)


def busy_wait_count(headers: Mapping[str, Any] | None) -> int:
    """How many times in a row this webhook message was sent back to wait for a slot of its
    merchant's slow endpoint."""
    return _count(headers, BUSY_WAITS_HEADER)


def _count(headers: Mapping[str, Any] | None, name: str) -> int:
    raw = (headers or {}).get(name, 0)
    try:
        return max(int(raw), 0)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a float infinity
        return 0


def _sendable(value: Any) -> Any:
    """A header value as it can be sent again: a text header that is not UTF-8 (another client
    published it) is read back as `bytes`, which the AMQP encoder refuses, and the one such
    message stopped every redrive and replay at itself, the messages behind it never moved. Sent
    as a byte array instead, byte for byte, at any depth of arrays and tables."""
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, list):
        return [_sendable(item) for item in value]
    if isinstance(value, dict):
        return {key: _sendable(item) for key, item in value.items()}
    return value


def fresh_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The headers without retry bookkeeping (ours and the broker's dead-lettering): a message
    moved back by an operator starts its retries afresh."""
    return {
        key: _sendable(value)
        for key, value in (headers or {}).items()
        if key not in RETRY_BOOKKEEPING
        and not key.startswith(("x-death", "x-first-death", "x-last-death"))
    }


def fresh_copy(message: AbstractIncomingMessage) -> aio_pika.Message:
    """The message as first published, retry bookkeeping dropped: what an operator moves back."""
    return aio_pika.Message(
        body=message.body,
        headers=fresh_headers(message.headers),
        content_type=message.content_type,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        timestamp=message.timestamp,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def retry_headers(
    headers: Mapping[str, Any] | None, *, error: str, failed: bool = True
) -> dict[str, Any]:
    """The message's headers with the last error recorded and, for a failure, the retry count
    incremented (a waiting retry's due time is the republisher's to set again)."""
    kept = {
        key: _sendable(value)
        for key, value in (headers or {}).items()
        if key != "x-death" and key not in WAITING_RETRY_HEADERS
    }
    return {
        **kept,
        RETRY_COUNT_HEADER: retry_count(headers) + (1 if failed else 0),
        LAST_ERROR_HEADER: error[:MAX_ERROR_LENGTH],
    }


async def republish(
    broker: RabbitBroker,
    message: RabbitMessage,
    *,
    queue: WorkQueue,
    to: str,
    error: str,
    delay_seconds: float | None = None,
    headers: Mapping[str, Any] | None = None,
    failed: bool = True,
) -> bool:
    """Send a copy of `message`, of `queue`, to the queue `to` (through the default exchange)
    and ack the original; False if it went to the dead-letter queue instead (below). `headers`
    are set on the copy besides the retry bookkeeping. A copy that only waits (`failed=False`)
    keeps its retry count: the wait takes no step of the retry ladder.

    With a delay, the copy expires after `delay_seconds` in a TTL queue that dead-letters it back
    to the work queue; without one it stays (a parking lot). Persistent, mandatory, confirmed.

    A copy `to` refuses, at its length limit (an operator's max-length policy on a waiting
    queue), goes to `queue`'s dead-letter queue, the refusal its last error. Sent back to its
    queue, it was refused again at once, ten times in 50 ms, until the broker dead-lettered it
    with no reason (diff review). Refused there too, the original is rejected: the work queue's
    own dead-lettering (at-least-once) holds it until the dead-letter queue takes it. Sent back
    to its queue instead, it went round ten times in 90 ms, and a webhook event's came back as a
    copy its delivery no longer waited for, and was acked (fixes review).
    """
    raw = message.raw_message
    copy = aio_pika.Message(
        body=raw.body,
        headers={**retry_headers(raw.headers, error=error, failed=failed), **(headers or {})},
        content_type=raw.content_type,
        message_id=raw.message_id,
        correlation_id=raw.correlation_id,
        timestamp=raw.timestamp,
        expiration=max(delay_seconds, 0.001) if delay_seconds is not None else None,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )
    try:
        await _publish(broker, copy, to)
    except QueueFull as full:
        if to == queue.dead_letter_queue:
            log.error(
                "%s: message %s rejected, for RabbitMQ to dead-letter once %s takes it",
                full,
                raw.message_id,
                to,
            )
            raise RejectMessage() from None
        log.error("%s: message %s dead-lettered", full, raw.message_id)
        await dead_letter(broker, message, queue=queue, error=str(full))
        return False
    await message.ack()
    return True


class QueueFull(Exception):
    """RabbitMQ refused a copy for a queue at its length limit."""

    def __init__(self, queue: str) -> None:
        super().__init__(
            f"RabbitMQ refused a copy for {queue}: the queue is at its length limit (an "
            "operator's max-length policy?)"
        )


async def _publish(broker: RabbitBroker, copy: aio_pika.Message, queue: str) -> None:
    """`copy` to `queue`, confirmed. One the broker refuses on the service's channel is sent
    once more on a channel of its own: a quorum queue that refused a channel's publish while at
    its length limit (the queues overflow by refusing publishes) kept refusing that channel once
    the limit was lifted (RabbitMQ 3.10), while a new channel's publishes were taken: every later
    copy for that queue failed until the service restarted. QueueFull if refused there too."""
    try:
        await broker.publish(copy, queue=queue, mandatory=True)
        return
    except DeliveryError as refused:
        if not _nacked(refused):  # returned: no such queue
            raise
    log.warning("RabbitMQ refused a copy for %s on the service's channel: sent on a new one", queue)
    connection = await broker.connect()
    try:
        async with connection.channel(publisher_confirms=True, on_return_raises=True) as channel:
            await channel.default_exchange.publish(copy, routing_key=queue, mandatory=True)
    except DeliveryError as refused:
        if not _nacked(refused):
            raise
        raise QueueFull(queue) from None


def _nacked(error: DeliveryError) -> bool:
    """The broker refused the message (a nack), rather than returned it as unroutable."""
    return isinstance(error.frame, Basic.Nack)


async def dead_letter(
    broker: RabbitBroker, message: RabbitMessage, *, queue: WorkQueue, error: str
) -> None:
    """Straight into `<queue>.dead` with the reason in our last-error header (a plain reject
    would dead-letter it too, but an operator could not tell why)."""
    await republish(broker, message, queue=queue, to=queue.dead_letter_queue, error=error)


def validation_summary(model: type[BaseModel], error: ValidationError) -> str:
    """Which fields are wrong and how, never the input (a body can carry account numbers)."""
    problems = [
        f"{'.'.join(str(part) for part in problem['loc']) or 'body'}: {problem['msg']}"
        for problem in error.errors(include_url=False, include_input=False, include_context=False)
    ]
    return f"not a valid {model.__name__}: " + "; ".join(problems[:5])


def message_log_context(
    headers: Mapping[str, Any] | None, correlation_id: str | None
) -> AbstractContextManager[None]:
    """Every log line inside names the payout, merchant and request a message (or the outbox row
    that carries one) is about, as every line about a payout is."""
    headers = headers or {}
    return bind_log_context(
        payout_id=headers.get(PAYOUT_ID_HEADER),
        merchant_id=headers.get(MERCHANT_ID_HEADER),
        correlation_id=correlation_id,
    )


def dead_lettering_decoder(
    broker: RabbitBroker,
    model: type[BaseModel],
    queue: WorkQueue,
    *,
    count_dead_letter: Callable[[], None],
) -> Callable[[RabbitMessage, Callable[[RabbitMessage], Awaitable[Any]]], Awaitable[BaseModel]]:
    """A subscriber decoder: the body validated into `model`, which the handler gets (the
    broker applies no types of its own: contracts.broker). A body which is not a valid `model`
    goes to the dead-letter queue at once, with the validation error in a header, so it never
    blocks the queue; it is counted as the service counts its dead letters, and its line names
    the payout, merchant and request its headers carry (it was counted nowhere, and its line
    named none)."""

    async def decode(
        message: RabbitMessage, _decode_json: Callable[[RabbitMessage], Awaitable[Any]]
    ) -> BaseModel:
        try:
            return model.model_validate_json(message.body)
        except ValidationError as error:
            summary = validation_summary(model, error)
            with message_log_context(message.headers, message.correlation_id):
                log.warning("dead-lettering message %s: %s", message.message_id, summary)
            await dead_letter(broker, message, queue=queue, error=summary)
            count_dead_letter()
            raise AckMessage from None  # dead_letter acked it: the handler never runs

    return decode
