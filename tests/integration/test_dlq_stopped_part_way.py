"""A redrive or a listing that stops part way says where it stopped (dead-letter review): how
many dead letters a redrive moved back before RabbitMQ refused one (it said only that one was
refused, and the Operations page answered 503, a dependency down, from a broker that answered),
how many it left behind past its limit (1,000: it stopped there in silence), and where an
undecodable dead letter sits when readable ones came before it (it said "at its head", and
taking the head off as told deleted a good dead letter)."""

import asyncio
import uuid

import pytest

from api_service.dashboard.pipeline import RedriveRefused, redrive_dead_letters
from contracts.messages import ProcessPayout
from contracts.settings import Settings
from contracts.topology import DEFAULT_EXCHANGE, PAYOUT_COMMANDS, declare_topology_at
from tests.integration.test_operator_tools_odd_input import (
    _take_off_the_undecodable,
    publish_a_message_id_not_utf8,
)
from tests.support.amqp import RabbitClient, eventually
from tests.support.cli import payouts_said
from tests.support.cli import run_payouts as payouts
from tests.support.infrastructure import Infrastructure
from tests.support.queue_policies import length_limit

DEAD = PAYOUT_COMMANDS.dead_letter_queue
WORK = PAYOUT_COMMANDS.name
FULL_AT = 2


async def dead_commands(settings: Settings, rabbit: RabbitClient, count: int) -> list[str]:
    """`count` dead letters (commands of no payout) in an empty dead-letter queue; their ids."""
    await declare_topology_at(settings.amqp_url, webhook_retry_tiers=3)
    await rabbit.purge(DEAD, WORK)
    ids = [f"dead-{uuid.uuid4()}" for _ in range(count)]
    for message_id in ids:
        command = ProcessPayout(payout_id=str(uuid.uuid4()), merchant_id=str(uuid.uuid4()))
        await rabbit.publish(
            command.to_json(), exchange=DEFAULT_EXCHANGE, routing_key=DEAD, message_id=message_id
        )
    return ids


async def test_a_redrive_refused_part_way_says_how_many_it_moved(
    settings: Settings,
    service_env: dict[str, str],
    rabbit: RabbitClient,
    infrastructure: Infrastructure,
) -> None:
    await dead_commands(settings, rabbit, 6)
    try:
        async with length_limit(infrastructure, WORK, FULL_AT):
            done = payouts(service_env, "dlq", "redrive", WORK)
            moved = await rabbit.count(WORK)

        assert done.returncode == 1, done.stdout + done.stderr
        assert 0 < moved < 6  # a quorum queue's max-length lets one or two past it
        assert done.stdout.splitlines() == [f"{moved} message(s) moved back to {WORK}"]
        assert done.stderr.startswith("RabbitMQ refused a message, which stays where it was")
    finally:
        await rabbit.purge(DEAD, WORK)


async def test_the_operations_pages_redrive_refused_part_way_is_a_409_with_the_count(
    settings: Settings, rabbit: RabbitClient, infrastructure: Infrastructure
) -> None:
    await dead_commands(settings, rabbit, 6)
    try:
        async with length_limit(infrastructure, WORK, FULL_AT):
            with pytest.raises(RedriveRefused) as refused:
                await redrive_dead_letters(settings, WORK)
            moved = await rabbit.count(WORK)

        assert refused.value.status_code == 409
        assert 0 < moved < 6
        assert refused.value.message.startswith(
            f"{moved} message(s) moved back to {WORK}, then RabbitMQ refused one"
        )
    finally:
        await rabbit.purge(DEAD, WORK)


async def test_a_redrive_that_leaves_dead_letters_behind_says_so(
    settings: Settings, service_env: dict[str, str], rabbit: RabbitClient
) -> None:
    await dead_commands(settings, rabbit, 3)
    try:
        done = payouts(service_env, "dlq", "redrive", WORK, "--limit", "2")

        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.splitlines() == [f"2 message(s) moved back to {WORK}"]
        assert done.stderr.splitlines() == [f"1 left in {DEAD} (--limit 2): run this again"]
        assert await rabbit.count(DEAD) == 1
    finally:
        await rabbit.purge(DEAD, WORK)


async def test_two_redrives_at_once_move_each_dead_letter_once_and_leave_nothing_said_left(
    settings: Settings, service_env: dict[str, str], rabbit: RabbitClient
) -> None:
    """Two operators (or one and the Operations page) redrive one queue at once: each said
    "144 left (--limit 1000): run this again" of the queue they had emptied between them, its
    count taken at its start (two operators review)."""
    ids = await dead_commands(settings, rabbit, 300)
    try:
        runs = await asyncio.gather(
            payouts_said(service_env, "dlq", "redrive", WORK),
            payouts_said(service_env, "dlq", "redrive", WORK),
        )

        assert [code for code, _ in runs] == [0, 0], runs
        assert await rabbit.count(DEAD) == 0
        assert sorted(m.message_id or "" for m in await rabbit.take(WORK)) == sorted(ids)
        for _, said in runs:
            assert "run this again" not in said, runs
    finally:
        await rabbit.purge(DEAD, WORK)


async def test_a_listing_stopped_by_an_undecodable_letter_behind_a_readable_one_says_so(
    settings: Settings, service_env: dict[str, str], rabbit: RabbitClient
) -> None:
    [good] = await dead_commands(settings, rabbit, 1)
    await publish_a_message_id_not_utf8(DEAD, settings)
    try:
        done = payouts(service_env, "dlq", "list", WORK)

        assert done.returncode == 1, done.stderr[-300:]
        assert "comes after the first 1 message(s), which go back in front of it" in done.stderr
        assert "stays at its head" not in done.stderr

        async def both_back() -> None:
            assert await rabbit.count(DEAD) == 2

        await eventually(both_back)
        head = await (await rabbit.channel.get_queue(DEAD, ensure=False)).get(no_ack=False)
        assert head is not None and head.message_id == good
        await head.ack()  # the readable one taken off: the undecodable is left, at the head
    finally:
        await _take_off_the_undecodable(DEAD, rabbit)
