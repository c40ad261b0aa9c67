"""RabbitMQ and polling helpers for integration tests: publish raw messages (a payout command
among them), take or count the messages of a queue by name, bind a probe queue of our own, wait
for dead letters, and wait with a deadline (never a blind sleep)."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from contracts.topology import (
    COMMANDS_EXCHANGE,
    DEFAULT_EXCHANGE,
    PAYOUT_COMMANDS,
    PROCESS_PAYOUT_KEY,
    WorkQueue,
)

T = TypeVar("T")


class RabbitClient:
    """One confirmed channel in the tests' vhost."""

    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel

    async def publish(
        self,
        body: bytes,
        *,
        exchange: str,
        routing_key: str,
        message_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        expiration: float | None = None,
        correlation_id: str | None = None,
    ) -> None:
        """Persistent and mandatory, like the relay: an unroutable message raises."""
        target = (
            self.channel.default_exchange
            if exchange == DEFAULT_EXCHANGE
            else await self.channel.get_exchange(exchange, ensure=False)
        )
        message = aio_pika.Message(
            body,
            headers=dict(headers or {}),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
            expiration=expiration,
            correlation_id=correlation_id,
        )
        await target.publish(message, routing_key=routing_key, mandatory=True)

    async def take(self, queue: str, *, limit: int = 100_000) -> list[AbstractIncomingMessage]:
        """Remove and return the messages ready in `queue` now (at most `limit`)."""
        source = await self.channel.get_queue(queue, ensure=False)
        taken: list[AbstractIncomingMessage] = []
        while len(taken) < limit:
            message = await source.get(no_ack=True, fail=False)
            if message is None:
                break
            taken.append(message)
        return taken

    async def count(self, queue: str) -> int:
        """Messages ready in `queue` (not those delivered and unacked)."""
        declared = await self.channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)

    async def purge(self, *queues: str) -> None:
        for name in queues:
            await (await self.channel.get_queue(name, ensure=False)).purge()

    async def probe_queue(self, arguments: Mapping[str, Any] | None = None) -> str:
        """A queue of the test's own (reachable by name through the default exchange); it
        disappears with the connection."""
        name = f"test-probe.{uuid.uuid4().hex[:12]}"
        await self.channel.declare_queue(
            name, exclusive=True, auto_delete=True, arguments=dict(arguments or {})
        )
        return name

    async def bind_probe(self, exchange: str, routing_key: str) -> str:
        """A probe queue that also receives what `exchange` routes with `routing_key`."""
        name = await self.probe_queue()
        probe = await self.channel.get_queue(name, ensure=False)
        await probe.bind(exchange, routing_key=routing_key)
        return name


@asynccontextmanager
async def open_rabbit(amqp_url: str) -> AsyncIterator[RabbitClient]:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        yield RabbitClient(channel)


async def eventually(
    check: Callable[[], Awaitable[T]],
    timeout: float = 10.0,  # noqa: ASYNC109 - the polling's deadline, not a cancel scope
    interval: float = 0.05,
) -> T:
    """Poll `check` until it stops raising AssertionError; its last failure once `timeout` is up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        await asyncio.sleep(interval)


async def consistently(
    check: Callable[[], Awaitable[object]], duration: float, interval: float = 0.1
) -> None:
    """Assert `check` keeps passing for `duration` seconds: proves nothing else happens."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        await check()
        await asyncio.sleep(interval)
    await check()


async def dead_letters(
    rabbit: RabbitClient, message_ids: set[str], queue: WorkQueue = PAYOUT_COMMANDS
) -> dict[str, AbstractIncomingMessage]:
    """Wait until every message in `message_ids` is in `queue`'s dead-letter queue."""
    found: dict[str, AbstractIncomingMessage] = {}

    async def all_there() -> dict[str, AbstractIncomingMessage]:
        for message in await rabbit.take(queue.dead_letter_queue):
            found[str(message.message_id)] = message
        assert message_ids <= set(found), f"missing {message_ids - set(found)}"
        return found

    return await eventually(all_there)


async def publish_command(rabbit: RabbitClient, body: bytes) -> str:
    message_id = f"test-{uuid.uuid4().hex}"
    await rabbit.publish(
        body, exchange=COMMANDS_EXCHANGE, routing_key=PROCESS_PAYOUT_KEY, message_id=message_id
    )
    return message_id
