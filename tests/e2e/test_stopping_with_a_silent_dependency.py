"""Services stop in bounded time when a dependency has gone silent (behind a proxy that forwards
nothing), and start whatever a broker not ready yet does (lifecycle review). The relay ran 170 s
after SIGTERM with the database silent; a consumer waited 45 s for the broker's heartbeat, and a
second SIGTERM did nothing; a broker that accepted and closed before the handshake crashed a
consumer at start (a traceback and exit 1)."""

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cli.supervisor import Service, ServiceGroup
from contracts.stopping import STOP_WITHIN_SECONDS, STOPPED_AT_ONCE
from tests.support.polling import eventually
from tests.support.tcp_proxy import HangingProxy, at_local_port

CONSUMERS = ["processor", "webhooks"]
RETRIES = 5  # 6 s of backoff


def _text(log: Path) -> str:
    return log.read_text()


async def _logged(log: Path, line: str, process: subprocess.Popen[bytes]) -> None:
    async def said() -> bool:
        assert process.poll() is None, _text(log)[-3000:]
        return line in _text(log)

    await eventually(said, within=30, interval=0.1, what=f"{line!r} in {log.name}")


async def _exit_code_within(process: subprocess.Popen[bytes], seconds: float) -> int:
    async def exited() -> bool:
        return process.poll() is not None

    await eventually(exited, within=seconds, interval=0.1, what="the process's exit")
    return process.returncode


@pytest.fixture
def group(service_env: dict[str, str], tmp_path: Path) -> ServiceGroup:
    return ServiceGroup(env={**service_env, "PAYOUTS_METRICS_PORT": "0"}, log_dir=tmp_path)


@pytest.fixture
async def stopped(group: ServiceGroup) -> AsyncIterator[ServiceGroup]:
    yield group
    for name in list(group.processes):
        group.kill(name)
    group.stop()


async def test_the_relay_stops_within_its_deadline_while_the_database_is_silent(
    stopped: ServiceGroup, service_env: dict[str, str], tmp_path: Path
) -> None:
    database = service_env["PAYOUTS_DATABASE_URL"]
    async with HangingProxy.in_front_of(database) as proxy:
        env = {"PAYOUTS_DATABASE_URL": proxy.url_through(database)}
        relay = stopped.start(Service("outbox-relay", ("outbox-relay",), env))
        await _logged(tmp_path / "outbox-relay.log", "outbox relay started", relay)
        proxy.hang()
        relay.send_signal(signal.SIGTERM)

        await _exit_code_within(relay, STOP_WITHIN_SECONDS + 5)


@pytest.mark.parametrize("service", CONSUMERS)
async def test_a_second_signal_stops_a_consumer_at_once_while_the_broker_is_silent(
    stopped: ServiceGroup, service_env: dict[str, str], tmp_path: Path, service: str
) -> None:
    broker = service_env["PAYOUTS_AMQP_URL"]
    async with HangingProxy.in_front_of(broker) as proxy:
        env = {"PAYOUTS_AMQP_URL": proxy.url_through(broker)}
        process = stopped.start(Service(service, (service,), env))
        await _logged(tmp_path / f"{service}.log", "started successfully", process)
        proxy.hang()
        process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)  # an operator's second Ctrl-C
        process.send_signal(signal.SIGTERM)

        code = await _exit_code_within(process, 5)

        assert code == STOPPED_AT_ONCE, _text(tmp_path / f"{service}.log")[-3000:]


async def _closes_at_once(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Whether the client then reads a reset, an end of stream before its protocol header is out,
    or one after it is a race: each attempt may fail otherwise."""
    writer.close()


@pytest.mark.parametrize("service", CONSUMERS)
async def test_a_consumer_waits_for_a_broker_that_closes_before_the_handshake(
    stopped: ServiceGroup, service_env: dict[str, str], tmp_path: Path, service: str
) -> None:
    """RabbitMQ still starting, or a port forwarder with no broker behind it yet."""
    closing = await asyncio.start_server(_closes_at_once, "127.0.0.1", 0)
    async with closing:
        port = closing.sockets[0].getsockname()[1]
        env = {"PAYOUTS_AMQP_URL": at_local_port(service_env["PAYOUTS_AMQP_URL"], port)}
        process = stopped.start(Service(service, (service,), env))
        log = tmp_path / f"{service}.log"

        async def retried() -> bool:
            assert process.poll() is None, _text(log)[-3000:]
            return _text(log).count("RabbitMQ unavailable") >= RETRIES

        await eventually(retried, within=30, interval=0.1, what=f"{RETRIES} retries")
        process.send_signal(signal.SIGTERM)
        assert await _exit_code_within(process, STOP_WITHIN_SECONDS + 5) == 0
