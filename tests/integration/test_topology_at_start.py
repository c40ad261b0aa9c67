"""A consumer's start: it waits out any failure to reach RabbitMQ, saying why in a line, and a
vhost that holds another version's queue stops it in one line."""

import asyncio
import logging
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest
from aio_pika.abc import AbstractConnection

from contracts import topology
from contracts.settings import Settings
from tests.support.infrastructure import (
    Infrastructure,
    management_client,
    management_url_for,
    recreate_vhost,
    with_vhost,
)
from tests.support.polling import eventually

ROOT = Path(__file__).resolve().parents[2]


async def test_a_connection_closed_before_the_handshake_is_waited_out(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It ended aiormq's frames, a RuntimeError the start did not catch (a traceback and exit
    1: lifecycle review)."""
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


@pytest.fixture
async def spare_vhost(infrastructure: Infrastructure) -> AsyncIterator[str]:
    """A vhost of the test's own, deleted after it."""
    vhost = f"payouts_spare_{uuid.uuid4().hex[:8]}"
    management_url = management_url_for(infrastructure.amqp_url)
    recreate_vhost(management_url, vhost)
    yield vhost
    async with management_client(management_url) as management:
        await management.delete(f"/api/vhosts/{vhost}")


async def test_a_vhost_that_does_not_exist_is_named_in_the_line_that_waits_for_it(
    infrastructure: Infrastructure, caplog: pytest.LogCaptureFixture
) -> None:
    """A typo in PAYOUTS_AMQP_URL's vhost: the start retried for ever with "RabbitMQ unavailable
    (Expected one of ['Connection.OpenOk'], got <Connection.Close object at 0x...>)", naming
    neither the vhost nor why (topology review)."""
    caplog.set_level(logging.WARNING, logger="topology")
    missing = with_vhost(infrastructure.amqp_url, "payouts_no_such_vhost")
    declaring = asyncio.create_task(topology.declare_topology_at(missing, webhook_retry_tiers=3))

    async def a_line() -> list[str]:
        return [record.getMessage() for record in caplog.records if record.name == "topology"]

    try:
        [line, *_] = await eventually(a_line, within=10, what="a line about the connection")
    finally:
        declaring.cancel()
    assert "does vhost 'payouts_no_such_vhost' exist" in line, line
    assert "object at 0x" not in line, line


@pytest.mark.parametrize("service", ["processor", "webhooks"])
async def test_a_queue_left_by_an_older_version_stops_the_service_in_one_line(
    infrastructure: Infrastructure, service_env: dict[str, str], spare_vhost: str, service: str
) -> None:
    """docs/operations.md: changing an argument of an existing queue makes every service fail at
    start with PRECONDITION_FAILED. It did, as a 100-line aiormq traceback and exit 1, in a loop
    under compose's restart policy (topology review)."""
    name = "processor.payout-commands" if service == "processor" else "webhooks.payout-events"
    management_url = management_url_for(infrastructure.amqp_url)
    async with management_client(management_url) as management:
        made = await management.put(  # an older version's: a classic queue, no dead-lettering
            f"/api/queues/{quote(spare_vhost)}/{name}",
            json={"durable": True, "arguments": {"x-queue-type": "classic"}},
        )
    assert made.status_code in (201, 204), made.text
    env = {
        **service_env,
        "PAYOUTS_AMQP_URL": with_vhost(infrastructure.amqp_url, spare_vhost),
        "PAYOUTS_METRICS_PORT": "0",
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cli.main", service],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stderr + done.stdout
    assert done.returncode == 2, output[-3000:]
    assert "PRECONDITION_FAILED" in output and "older version" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]


async def test_a_vhost_at_its_queue_limit_is_not_said_to_hold_an_older_versions_queue(
    settings: Settings, infrastructure: Infrastructure, spare_vhost: str
) -> None:
    """An operator capped the vhost's queues: the start said "a queue left by an older version.
    Empty and delete it", advice that loses messages and mends nothing (broker limits review)."""
    amqp_url = with_vhost(infrastructure.amqp_url, spare_vhost)
    tiers = len(settings.webhook_retry_ladder)
    async with management_client(management_url_for(infrastructure.amqp_url)) as management:
        capped = await management.put(
            f"/api/vhost-limits/{quote(spare_vhost)}/max-queues", json={"value": 1}
        )
        assert capped.status_code in (201, 204), capped.text

    with pytest.raises(topology.TopologyConflict) as refused:
        await topology.declare_topology_at(amqp_url, webhook_retry_tiers=tiers)

    said = str(refused.value)
    assert "queue limit is reached" in said and "clear_vhost_limits" in said, said
    assert "older version" not in said, said
