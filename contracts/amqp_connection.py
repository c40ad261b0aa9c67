"""A plain aio-pika connection for a short job (an operator's command, a probe, declaring the
topology): a broker that takes the TCP connection and never speaks AMQP (a hung node, a wrong
port on a live host) is a TimeoutError (an OSError) after CONNECT_TIMEOUT_SECONDS. Without a
timeout, `payouts dlq list` and the Operations page's redrive button waited for good. A connect
that fails closes what it opened: aio-pika's own left it to a finalizer, whose close() nothing
awaited (a RuntimeWarning wherever it was collected)."""

import aio_pika
from aio_pika.abc import AbstractConnection
from aio_pika.connection import make_url
from yarl import URL

CONNECT_TIMEOUT_SECONDS = 5.0
# What a long-lived connection (a consumer's, the relay's) asks for: a broker gone silent (its
# node powered off, a network dropping packets) is noticed after three missed heartbeats, 48 s,
# where aiormq's default of 60 s took 183 s, its consumers idle all along. RabbitMQ's
# maintainers advise 6 to 15 s.
HEARTBEAT_SECONDS = 15


def with_heartbeat(amqp_url: str) -> str:
    """`amqp_url` asking for HEARTBEAT_SECONDS, unless it asks for a heartbeat of its own."""
    url = URL(amqp_url)
    if "heartbeat" in url.query:
        return amqp_url
    return str(url.update_query(heartbeat=HEARTBEAT_SECONDS))


async def connect(amqp_url: str) -> AbstractConnection:
    connection = aio_pika.Connection(make_url(amqp_url))
    try:
        await connection.connect(timeout=CONNECT_TIMEOUT_SECONDS)
    except BaseException:
        await connection.close()
        raise
    return connection
