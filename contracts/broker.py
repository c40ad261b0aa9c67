"""The FastStream broker every consuming service uses: confirms on, returns raise, bounded
prefetch, the whole topology declared before any subscriber starts."""

import logging

from faststream.rabbit import RabbitBroker, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage
from faststream.rabbit.prometheus import RabbitPrometheusMiddleware
from faststream.rabbit.schemas import Channel, QueueType
from prometheus_client import REGISTRY

from contracts.amqp_connection import with_heartbeat
from contracts.amqp_decoding import read_deliveries_leniently
from contracts.settings import CONSUMER_GRACEFUL_TIMEOUT_SECONDS
from contracts.topology import WorkQueue


def create_broker(amqp_url: str, *, prefetch: int, app_name: str = "payouts") -> RabbitBroker:
    read_deliveries_leniently()
    channel = Channel(prefetch_count=prefetch, publisher_confirms=True, on_return_raises=True)
    metrics = RabbitPrometheusMiddleware(registry=REGISTRY, app_name=app_name)
    return RabbitBroker(
        with_heartbeat(amqp_url),
        default_channel=channel,
        graceful_timeout=CONSUMER_GRACEFUL_TIMEOUT_SECONDS,
        middlewares=[metrics],
        logger=logging.getLogger(f"faststream.{app_name}"),  # our log format, not FastStream's
        log_level=logging.DEBUG,  # "Received"/"Processed" per message: debug, not info
        # No FastDepends: a handler gets what its subscriber's decoder returns, the body already
        # validated into its model (contracts.redelivery.dead_lettering_decoder). FastDepends
        # parsed and validated every body a second time: 5 % of the webhook service's CPU.
        apply_types=False,
    )


def consumed_queue(queue: WorkQueue) -> RabbitQueue:
    """A queue the topology module declared; FastStream only consumes from it."""
    return RabbitQueue(queue.name, queue_type=QueueType.QUORUM, declare=False)


def consumed_message(broker: RabbitBroker) -> RabbitMessage:
    """The message a subscriber of `broker` is handling now.

    Read from the broker's context, not asked for as a handler parameter: FastStream resolves a
    context parameter with a synchronous call that fast_depends runs in a worker thread, a thread
    hop per message that cost the consumers about a tenth of their CPU."""
    message: RabbitMessage | None = broker.context.get_local("message")
    assert message is not None, "called outside a subscriber's handler"
    return message
