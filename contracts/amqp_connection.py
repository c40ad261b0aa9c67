"""A plain aio-pika connection for a short job (an operator's command, a probe, declaring the
topology): a broker that takes the TCP connection and never speaks AMQP (a hung node, a wrong
port on a live host) is a TimeoutError (an OSError) after CONNECT_TIMEOUT_SECONDS. Without a
timeout, `payouts dlq list` and the Operations page's redrive button waited for good."""

import aio_pika
from aio_pika.abc import AbstractConnection

CONNECT_TIMEOUT_SECONDS = 5.0


async def connect(amqp_url: str) -> AbstractConnection:
    return await aio_pika.connect(amqp_url, timeout=CONNECT_TIMEOUT_SECONDS)
