"""A consumer's start waits out any failure to reach RabbitMQ, not only a refusal: a broker that
took the connection and closed it before the handshake ended aiormq's frames, a RuntimeError the
start did not catch (a traceback and exit 1: lifecycle review)."""

import pytest
from aio_pika.abc import AbstractConnection

from contracts import topology
from contracts.settings import Settings


async def test_a_connection_closed_before_the_handshake_is_waited_out(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_connect = topology.connect
    failures = [RuntimeError("async generator raised StopAsyncIteration")]

    async def closed_once(url: str) -> AbstractConnection:
        if failures:
            raise failures.pop()
        return await real_connect(url)

    monkeypatch.setattr(topology, "connect", closed_once)

    await topology.declare_topology_at(
        settings.amqp_url, webhook_retry_tiers=len(settings.webhook_retry_ladder)
    )

    assert failures == []
