"""`payouts dlq list|redrive`: an operator sees why messages were dead-lettered and moves them
back, through the real CLI against the real broker."""

import asyncio
import json
import uuid
from datetime import UTC, datetime

import aio_pika
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from api_service.dashboard.pipeline import redrive_dead_letters
from api_service.errors import ServiceUnavailable
from contracts.db.database_locks import database_lock
from contracts.db.engine import SessionFactory
from contracts.messages import ProcessPayout
from contracts.redelivery import retry_count
from contracts.settings import Settings
from contracts.topology import (
    DEFAULT_EXCHANGE,
    LAST_ERROR_HEADER,
    PAYOUT_COMMANDS,
    WEBHOOK_PARKING_LOT,
    declare_topology_at,
)
from tests.support.amqp import RabbitClient
from tests.support.cli import payouts_said
from tests.support.cli import run_payouts as payouts
from tests.support.infrastructure import TEST_VHOST, Infrastructure, recreate_vhost, with_vhost
from tests.support.polling import eventually
from tests.support.statements import statement_running
from tests.support.webhook_flow import SINGLE_RESENDS


async def queue_depth(amqp_url: str, name: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        queue = await (await connection.channel()).declare_queue(name, passive=True)
        return queue.declaration_result.message_count or 0


async def test_dead_letters_are_listed_with_their_reason_and_redriven(
    service_env: dict[str, str],
) -> None:
    amqp_url = service_env["PAYOUTS_AMQP_URL"]
    await declare_topology_at(amqp_url, webhook_retry_tiers=3)
    command = ProcessPayout(payout_id=str(uuid.uuid4()), merchant_id=str(uuid.uuid4()))
    message_id = f"dlq-test-{uuid.uuid4()}"
    published_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.default_exchange.publish(
            aio_pika.Message(
                command.to_json(),
                message_id=message_id,
                timestamp=published_at,
                headers={LAST_ERROR_HEADER: "unknown payout", "x-payouts-retry-count": 3},
            ),
            routing_key=PAYOUT_COMMANDS.dead_letter_queue,
        )
    dead_before = await queue_depth(amqp_url, PAYOUT_COMMANDS.dead_letter_queue)
    work_before = await queue_depth(amqp_url, PAYOUT_COMMANDS.name)

    listed = payouts(service_env, "dlq", "list", PAYOUT_COMMANDS.name, "--json", "--limit", "500")
    assert listed.returncode == 0, listed.stderr
    letters = [json.loads(line) for line in listed.stdout.splitlines()]
    [ours] = [letter for letter in letters if letter["message_id"] == message_id]
    assert ours["last_error"] == "unknown payout" and ours["failed_attempts"] == 3
    assert await queue_depth(amqp_url, PAYOUT_COMMANDS.dead_letter_queue) == dead_before

    redriven = payouts(service_env, "dlq", "redrive", PAYOUT_COMMANDS.name)
    assert redriven.returncode == 0, redriven.stderr
    assert f"{dead_before} message(s) moved back" in redriven.stdout
    await eventually(
        lambda: _moved(amqp_url, work_before + dead_before), what="messages back in the work queue"
    )
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        queue = await (await connection.channel()).declare_queue(PAYOUT_COMMANDS.name, passive=True)
        while (message := await queue.get(fail=False)) is not None:
            if message.message_id == message_id:
                assert retry_count(message.headers) == 0  # its retries start afresh
                assert LAST_ERROR_HEADER not in (message.headers or {})
                assert message.timestamp == published_at  # the copy had none
                break
        else:
            pytest.fail("the redriven message is not in the work queue")


async def _moved(amqp_url: str, expected: int) -> bool:
    return await queue_depth(amqp_url, PAYOUT_COMMANDS.name) >= expected


def test_an_unknown_queue_is_refused_with_the_known_ones_named(
    service_env: dict[str, str],
) -> None:
    result = payouts(service_env, "dlq", "list", "no-such-queue")
    assert result.returncode != 0
    assert "processor.payout-commands" in result.stderr


@pytest.fixture
def untouched_vhost(service_env: dict[str, str], infrastructure: Infrastructure) -> str:
    """The AMQP URL of a vhost no service has run against yet: its queues do not exist."""
    vhost = f"{TEST_VHOST}-empty"
    recreate_vhost(infrastructure.management_url, vhost)
    return with_vhost(service_env["PAYOUTS_AMQP_URL"], vhost)


@pytest.mark.parametrize(
    ("command", "queue"),
    [
        (("dlq", "list", PAYOUT_COMMANDS.name), PAYOUT_COMMANDS.dead_letter_queue),
        (("dlq", "redrive", PAYOUT_COMMANDS.name), PAYOUT_COMMANDS.dead_letter_queue),
        (("webhooks", "replay-parked"), WEBHOOK_PARKING_LOT),
    ],
)
def test_a_vhost_without_the_topology_is_a_message_not_a_traceback(
    service_env: dict[str, str], untouched_vhost: str, command: tuple[str, ...], queue: str
) -> None:
    done = payouts({**service_env, "PAYOUTS_AMQP_URL": untouched_vhost}, *command)

    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert f"no queue '{queue}'" in done.stderr


async def test_replay_parked_with_mysql_down_publishes_nothing_and_says_so(
    settings: Settings, service_env: dict[str, str], rabbit: RabbitClient
) -> None:
    """It published the copy before reopening the delivery: every try during the outage put one
    more copy in the delivery queue, the message stayed parked, and a traceback was printed."""
    await declare_topology_at(settings.amqp_url, webhook_retry_tiers=3)
    await rabbit.purge(WEBHOOK_PARKING_LOT, SINGLE_RESENDS)
    event = {"id": f"evt_{uuid.uuid4().hex[:24]}", "merchantId": str(uuid.uuid4())}
    await rabbit.publish(
        json.dumps(event).encode(), exchange=DEFAULT_EXCHANGE, routing_key=WEBHOOK_PARKING_LOT
    )
    mysql_down = {**service_env, "PAYOUTS_DATABASE_URL": "mysql+asyncmy://root@127.0.0.1:1/x"}

    for _ in range(2):
        done = payouts(mysql_down, "webhooks", "replay-parked")
        assert done.returncode == 1, done.stdout
        assert "Traceback" not in done.stderr
        assert "MySQL does not answer" in done.stderr

    async def still_parked() -> bool:
        return await rabbit.count(WEBHOOK_PARKING_LOT) == 1

    await eventually(still_parked, what="the message back in the parking lot")
    assert await rabbit.count(SINGLE_RESENDS) == 0
    await rabbit.purge(WEBHOOK_PARKING_LOT)


async def test_a_replay_of_the_parking_lot_waits_for_the_one_under_way(
    settings: Settings,
    service_env: dict[str, str],
    rabbit: RabbitClient,
    engine: AsyncEngine,
    sessions: SessionFactory,
) -> None:
    """A replay of one merchant holds the other merchants' parked messages unacked while it
    runs: a replay of all beside it ran dry early, left them parked, and said nothing of them
    (two operators review). Replays now take turns on a database lock, as `seed` does."""
    await declare_topology_at(settings.amqp_url, webhook_retry_tiers=3)
    await rabbit.purge(WEBHOOK_PARKING_LOT, SINGLE_RESENDS)
    event = {"id": f"evt_{uuid.uuid4().hex[:24]}", "merchantId": str(uuid.uuid4())}
    await rabbit.publish(
        json.dumps(event).encode(), exchange=DEFAULT_EXCHANGE, routing_key=WEBHOOK_PARKING_LOT
    )
    async with (
        engine.connect() as another_replay,
        database_lock(another_replay, "payouts webhooks replay-parked", wait_seconds=0),
    ):
        replaying = asyncio.create_task(payouts_said(service_env, "webhooks", "replay-parked"))
        await eventually(
            lambda: statement_running(sessions, "SELECT GET_LOCK"), what="a replay waiting"
        )
        assert await rabbit.count(WEBHOOK_PARKING_LOT) == 1
    code, said = await replaying

    assert code == 0, said
    assert "moved 1 parked webhook message(s)" in said
    assert await rabbit.count(WEBHOOK_PARKING_LOT) == 0
    await rabbit.purge(SINGLE_RESENDS)


async def test_the_dashboards_redrive_without_the_queue_is_a_dependency_down(
    settings: Settings, untouched_vhost: str
) -> None:
    """The operator's button answers 503 (an error page), not a 500."""
    elsewhere = settings.model_copy(update={"amqp_url": untouched_vhost})

    with pytest.raises(ServiceUnavailable, match=PAYOUT_COMMANDS.dead_letter_queue):
        await redrive_dead_letters(elsewhere, PAYOUT_COMMANDS.name)
