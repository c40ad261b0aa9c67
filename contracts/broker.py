"""The FastStream broker every consuming service uses: confirms on, returns raise, bounded
prefetch, the whole topology declared before any subscriber starts."""

from faststream.rabbit import RabbitBroker, RabbitQueue
from faststream.rabbit.schemas import Channel, QueueType

from contracts.topology import WorkQueue


def create_broker(amqp_url: str, *, prefetch: int) -> RabbitBroker:
    channel = Channel(prefetch_count=prefetch, publisher_confirms=True, on_return_raises=True)
    return RabbitBroker(amqp_url, default_channel=channel, graceful_timeout=15.0)


def consumed_queue(queue: WorkQueue) -> RabbitQueue:
    """A queue the topology module declared; FastStream only consumes from it."""
    return RabbitQueue(queue.name, queue_type=QueueType.QUORUM, declare=False)
