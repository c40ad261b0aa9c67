"""A consumer started before RabbitMQ answers waits for it, saying so in a line with a backoff
(as the outbox relay does): it died with a 30-line aiormq traceback."""

import asyncio
import logging

import pytest

from contracts.topology import declare_topology_at
from tests.support.polling import eventually

NOBODY_LISTENS = "amqp://guest:guest@127.0.0.1:1/"


async def test_declaring_the_topology_waits_for_rabbitmq_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="topology")
    declaring = asyncio.create_task(declare_topology_at(NOBODY_LISTENS, webhook_retry_tiers=3))

    async def three_waits() -> list[str] | None:
        assert not declaring.done(), declaring  # it gave up (the traceback) instead of waiting
        lines = [r.getMessage() for r in caplog.records if r.name == "topology"]
        return lines if len(lines) >= 3 else None

    lines = await eventually(three_waits, within=10, what="three lines saying it waits")
    declaring.cancel()
    assert lines[0].startswith("RabbitMQ unavailable (") and lines[0].endswith("retrying in 0.2s")
    assert lines[1].endswith("retrying in 0.4s") and lines[2].endswith("retrying in 0.8s")
    ours = [record for record in caplog.records if record.name == "topology"]
    assert all(record.exc_info is None for record in ours)  # a line, no traceback
