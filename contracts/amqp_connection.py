"""A plain aio-pika connection for a short job (an operator's command, a probe, declaring the
topology): a broker that takes the TCP connection and never speaks AMQP (a hung node, a wrong
port on a live host) is a TimeoutError (an OSError) after CONNECT_TIMEOUT_SECONDS. Without a
timeout, `payouts dlq list` and the Operations page's redrive button waited for good. A connect
that fails closes what it opened: aio-pika's own left it to a finalizer, whose close() nothing
awaited (a RuntimeWarning wherever it was collected)."""

import aio_pika
from aio_pika.abc import AbstractConnection
from aio_pika.connection import make_url

CONNECT_TIMEOUT_SECONDS = 5.0


async def connect(amqp_url: str) -> AbstractConnection:
    connection = aio_pika.Connection(make_url(amqp_url))
    try:
        await connection.connect(timeout=CONNECT_TIMEOUT_SECONDS)
    except BaseException:
        await connection.close()
        raise
    return connection
