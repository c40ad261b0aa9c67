"""Delayed retries and parking for consumers: the message is republished, with our own retry
count and last error in its headers, to a TTL queue (or a parking lot), then the original is acked.

RabbitMQ >= 3.13 ignores a client-sent `x-death`, so the count lives in our header. Republish
then ack is at-least-once: a crash in between delivers twice, which idempotent consumers absorb.
"""

from collections.abc import Mapping
from typing import Any

from faststream.rabbit import RabbitBroker
from faststream.rabbit.message import RabbitMessage

from contracts.topology import LAST_ERROR_HEADER, RETRY_COUNT_HEADER

MAX_ERROR_LENGTH = 500


def retry_count(headers: Mapping[str, Any] | None) -> int:
    """How many times this message was already sent back for a retry (0 on first delivery)."""
    raw = (headers or {}).get(RETRY_COUNT_HEADER, 0)
    try:
        return max(int(raw), 0)
    except (TypeError, ValueError):
        return 0


def retry_headers(headers: Mapping[str, Any] | None, *, error: str) -> dict[str, Any]:
    """The message's headers with the retry count incremented and the last error recorded."""
    kept = {key: value for key, value in (headers or {}).items() if key != "x-death"}
    return {
        **kept,
        RETRY_COUNT_HEADER: retry_count(headers) + 1,
        LAST_ERROR_HEADER: error[:MAX_ERROR_LENGTH],
    }


async def republish(
    broker: RabbitBroker,
    message: RabbitMessage,
    *,
    queue: str,
    error: str,
    delay_seconds: float | None = None,
) -> None:
    """Send a copy of `message` to `queue` (through the default exchange) and ack the original.

    With a delay, the copy expires after `delay_seconds` in a TTL queue that dead-letters it back
    to the work queue; without one it stays (a parking lot). Persistent, mandatory, confirmed.
    """
    raw = message.raw_message
    await broker.publish(
        raw.body,
        queue=queue,
        persist=True,
        mandatory=True,
        headers=retry_headers(raw.headers, error=error),
        content_type=raw.content_type,
        message_id=raw.message_id,
        correlation_id=raw.correlation_id,
        expiration=max(delay_seconds, 0.001) if delay_seconds is not None else None,
    )
    await message.ack()
