"""A command whose work meets an outage (the database down): retried later and later, without
using up its retries (processor_service.consumer)."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import aio_pika
from asyncmy.errors import OperationalError as DriverOperationalError
from faststream.rabbit import RabbitBroker
from faststream.rabbit.message import RabbitMessage
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.engine import create_engine, create_session_factory
from contracts.topology import PAYOUT_COMMANDS
from processor_service.consumer import MAX_OUTAGE_DELAY_SECONDS, Consumer
from processor_service.handlers import Context

NOWHERE = "mysql+asyncmy://root@127.0.0.1:9/never_connected"  # the work fails before any SQL


@dataclass
class Raw:
    headers: dict[str, Any]
    body: bytes = b"{}"
    content_type: str = "application/json"
    message_id: str = "outbox-1"
    correlation_id: str | None = None
    timestamp: datetime | None = None


@dataclass
class Delivered:
    """What the consumer reads of a delivered message, and whether it acked it."""

    raw_message: Raw
    acked: bool = False
    message_id: str = "outbox-1"
    correlation_id: str | None = None

    @property
    def headers(self) -> dict[str, Any]:
        return self.raw_message.headers

    async def ack(self) -> None:
        self.acked = True


@dataclass
class Published:
    """The broker's publish, recorded: where each copy went, with what headers and TTL."""

    copies: list[dict[str, Any]] = field(default_factory=list)

    async def publish(self, copy: aio_pika.Message, *, queue: str, **_options: Any) -> None:
        self.copies.append({"queue": queue, "headers": copy.headers, "expiration": copy.expiration})


def outage() -> OperationalError:
    return OperationalError("SELECT 1", {}, DriverOperationalError(2003, "Can't connect"))


async def test_outage_retries_back_off_and_leave_the_retries_to_real_failures() -> None:
    """Each outage retry waited the first delay and counted as a failure: a backlog cycled
    through the retry queue every 2 s, and after five outage deliveries the first real error
    dead-lettered a message that had never failed on its own."""
    engine = create_engine(NOWHERE)
    broker = Published()
    consumer = Consumer(
        cast(RabbitBroker, broker), create_session_factory(engine), 2.0, max_retries=5
    )
    headers: dict[str, Any] = {}

    async def deliver_failing_with(error: Exception) -> dict[str, Any]:
        async def work(session: AsyncSession, context: Context) -> None:
            raise error

        message = Delivered(Raw(headers=dict(headers)))
        await consumer.run(cast(RabbitMessage, message), PAYOUT_COMMANDS, work, inbox=False)
        assert message.acked
        return broker.copies[-1]

    try:
        for _ in range(6):  # the database down for a while
            headers = (await deliver_failing_with(outage()))["headers"]
        delays = [copy["expiration"] for copy in broker.copies]
        real_failure = await deliver_failing_with(RuntimeError("transient"))
    finally:
        await engine.dispose()

    assert delays == [2.0, 4.0, 8.0, *[MAX_OUTAGE_DELAY_SECONDS] * 3]
    assert real_failure["queue"] == PAYOUT_COMMANDS.retry_queue(1)  # a retry, not .dead
    assert real_failure["expiration"] == 2.0
