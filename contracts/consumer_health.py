"""Whether a consumer (the processor, the webhook service) works, as its heartbeat
(contracts/heartbeat.py) asks every few seconds: every subscriber consuming, its broker connection
up, and its database answering with this code's migrations, as the API's readiness asks. Without
the database, the processor and the webhook service beat on through an outage that turned the
API's /ready and the relay's heartbeat unhealthy (diff review).

A queue deleted under its consumer (the management UI's "Delete queue") cancels the consumer
and nothing declared it again: the service beat on, healthy, and consumed nothing until it was
restarted (RabbitMQ operator review). Such a beat fails and declares the topology again, and
aio-pika's robust channel, which retries a cancelled consumer until its queue exists, consumes
from it again."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

import aiormq
from faststream.rabbit import RabbitBroker
from faststream.rabbit.subscriber.usecase import RabbitSubscriber

from contracts.db.engine import SessionFactory
from migrations.state import DatabaseState, database_state

log = logging.getLogger(__name__)

# A broker or a database that does not answer within this counts as down for this beat.
CHECK_SECONDS = 2.0
# Declaring the topology again, with a broker that has just answered.
DECLARE_SECONDS = 10.0

DeclareTopology = Callable[[], Awaitable[None]]


async def consumer_works(
    broker: RabbitBroker, sessions: SessionFactory, declare_topology: DeclareTopology
) -> bool:
    if not all(subscriber.running for subscriber in broker.subscribers):
        return False
    if not await broker.ping(timeout=CHECK_SECONDS):  # a robust connection that is reconnecting
        return False
    lost = [str(s.queue.name) for s in _rabbit(broker) if not await _consuming(s)]
    if lost:
        log.warning(
            "the broker cancelled the consumer of %s (its queue deleted?): declaring the "
            "topology again",
            ", ".join(lost),
        )
        await asyncio.wait_for(declare_topology(), DECLARE_SECONDS)
        return False
    return await database_state(sessions, CHECK_SECONDS) is DatabaseState.OK


def _rabbit(broker: RabbitBroker) -> list[RabbitSubscriber]:
    return [s for s in broker.subscribers if isinstance(s, RabbitSubscriber)]


async def _consuming(subscriber: RabbitSubscriber) -> bool:
    """Its consumer is on its channel: FastStream's `running` stays true when the broker cancels
    it, and aiormq drops its tag from the channel's consumers (aio-pika restores it under the
    same tag once it consumes again)."""
    tag: str | None = subscriber._consumer_tag
    queue: Any = subscriber._queue_obj
    if tag is None or queue is None:
        return False
    channel = cast(aiormq.Channel, await queue.channel.get_underlay_channel())
    return tag in channel.consumers
