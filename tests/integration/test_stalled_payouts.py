"""Payouts waiting for a lost command (processor_service.stalled_payouts), against the real
MariaDB/MySQL, RabbitMQ and processor.

The losses: a payout that failed transiently (account ending 0002) waits in RETRY for its delayed
command, which RabbitMQ lost (it stopped while dead-lettering the command at the end of its
wait); a new payout, or an accepted IPN, whose command a crash-looping processor pushed past its
delivery limit into the dead-letter queue. The tests build those states directly: a payout
created through the API, long ago, with no command anywhere.

The test database is shared with other tests: each test judges the sweep by its own payout's
outbox rows, never by the number the sweep returns.
"""

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import aio_pika
import httpx
import pytest
from sqlalchemy import update

from cli.merchants import NewMerchant
from contracts.clock import REAL_TIME, SANDBOX_TIME, MerchantTime, stamping_sandbox_time
from contracts.db.engine import SessionFactory, naive_utc, transaction, utcnow
from contracts.db.models import OutboxMessage, Payout, PspCallback, ScheduledAction
from contracts.domain.scheduled_actions import Action
from contracts.domain.statuses import EventType, PayoutStatus
from contracts.messages import ProcessPayout
from contracts.payout_events import Announcements
from contracts.pipeline_health import Thresholds, pipeline_problems
from contracts.settings import Settings
from contracts.topology import (
    COMMANDS_EXCHANGE,
    PAYOUT_COMMANDS,
    declare_topology_at,
)
from processor_service.app import create_processor
from processor_service.stalled_payouts import (
    awaiting_accepted_outcomes,
    awaiting_processing,
    resend_stalled_payout_commands,
)
from tests.conftest import MerchantFactory
from tests.support.amqp import RabbitClient, eventually
from tests.support.api_helpers import (
    API,
    OUTCOME_KEYS,
    PROCESSING_KEYS,
    auth,
    bank_payout_body,
    outbox_for_payout,
    payout_body,
    send_ipn,
)
from tests.support.statements import explain
from tests.support.webhook_flow import relay

STALLED_SECONDS = 60
RETRY_DELAY_SECONDS = 30.0


@pytest.fixture
async def stalled(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> Payout:
    """A 0002 payout in RETRY after its first attempt, longer ago than the delay and the stall
    time; its create's messages marked sent (no relay of another test publishes them)."""
    merchant: NewMerchant = await make_merchant()
    body = bank_payout_body("1234560002")
    response = await api_client.post(f"{API}/payouts", json=body, headers=auth(merchant))
    assert response.status_code == 201, response.text
    payout_id = response.json()["data"]["id"]
    await set_payout(sessions, payout_id, status=PayoutStatus.RETRY.value, attempts=1)
    await set_payout(sessions, payout_id, updated_at=long_ago())
    async with transaction(sessions) as session:
        await session.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.id.in_(
                    [row.id for row in await outbox_for_payout(sessions, payout_id)]
                )
            )
            .values(sent_at=utcnow())
        )
    async with sessions() as session:
        return await session.get_one(Payout, payout_id)


def long_ago() -> datetime:
    """Longer ago than the delay and the stall time, and than whatever other tests left waiting
    in the shared database (many PENDING payouts no processor took): the sweep takes the oldest
    first, BATCH at a time."""
    return utcnow() - timedelta(days=3650)


async def set_payout(sessions: SessionFactory, payout_id: str, **values: Any) -> None:
    async with transaction(sessions) as session:
        await session.execute(update(Payout).where(Payout.id == payout_id).values(**values))


async def commands_of(sessions: SessionFactory, payout: Payout) -> list[OutboxMessage]:
    return await unsent_commands(sessions, payout.id, PROCESSING_KEYS)


async def sweep(sessions: SessionFactory, payout: Payout, time: MerchantTime = SANDBOX_TIME) -> int:
    """Run the sweep; how many commands of this payout it sent."""
    before = len(await commands_of(sessions, payout))
    await resend(sessions, time)
    return len(await commands_of(sessions, payout)) - before


@pytest.fixture
async def processor(settings: Settings) -> AsyncIterator[None]:
    await declare_topology_at(
        settings.amqp_url, webhook_retry_tiers=len(settings.webhook_retry_ladder)
    )
    async with create_processor(settings):
        yield


async def test_a_payout_stalled_in_retry_gets_its_command_again_and_succeeds(
    sessions: SessionFactory,
    rabbit: RabbitClient,
    stalled: Payout,
    processor: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert await sweep(sessions, stalled) == 1
    assert any(  # the line names the payouts (it said only how many)
        "sent again the commands" in r.getMessage() and stalled.id in r.getMessage()
        for r in caplog.records
    )
    (command,) = await commands_of(sessions, stalled)
    sent = ProcessPayout.model_validate_json(command.body)
    assert (sent.payout_id, sent.attempt, sent.hold_cycle) == (stalled.id, 1, stalled.hold_cycle)
    assert (command.exchange, command.delay_ms) == (COMMANDS_EXCHANGE, None)
    assert command.correlation_id == "sweep-stalled-payouts"  # it had none

    await relay(rabbit, command)

    async def succeeded() -> None:
        async with sessions() as session:
            payout = await session.get_one(Payout, stalled.id, populate_existing=True)
        assert (payout.status, payout.attempts) == (PayoutStatus.SUCCESS.value, 2)

    await eventually(succeeded)
    await set_sent(sessions, command)


async def set_sent(sessions: SessionFactory, row: OutboxMessage) -> None:
    async with transaction(sessions) as session:
        await session.execute(
            update(OutboxMessage).where(OutboxMessage.id == row.id).values(sent_at=utcnow())
        )


async def schedule(
    sessions: SessionFactory,
    payout: Payout,
    action: Action,
    expected: PayoutStatus,
    **fields: Any,
) -> None:
    """A scheduled action of the payout's current attempt, due now unless told."""
    async with transaction(sessions) as session:
        session.add(
            ScheduledAction(
                merchant_id=payout.merchant_id,
                payout_id=payout.id,
                hold_cycle=payout.hold_cycle,
                action=action.value,
                expected_status=expected.value,
                due_at=utcnow(),
                created_at=utcnow(),
                **fields,
            )
        )


async def test_only_a_payout_in_retry_past_its_delay_and_the_stall_time_not_scripted_is_sent(
    sessions: SessionFactory, stalled: Payout
) -> None:
    # Past the stall time, but not past the delay and the stall time.
    within = utcnow() - timedelta(seconds=STALLED_SECONDS + 5)
    await set_payout(sessions, stalled.id, updated_at=within)
    assert await sweep(sessions, stalled) == 0
    await set_payout(sessions, stalled.id, updated_at=stalled.updated_at)
    # Submitted to the PSP, a PENDING payout waits for an IPN by design.
    await set_payout(
        sessions, stalled.id, status=PayoutStatus.PENDING.value, psp_reference="PSP-SUBMITTED"
    )
    assert await sweep(sessions, stalled) == 0
    await set_payout(sessions, stalled.id, status=PayoutStatus.RETRY.value, psp_reference=None)
    # A scripted attempt waits for the sandbox clock, even once its step was applied (or failed).
    await schedule(
        sessions, stalled, Action.SCRIPT_STEP, PayoutStatus.RETRY, step=1, applied_at=utcnow()
    )
    assert await sweep(sessions, stalled) == 0
    # A step of an earlier attempt (before a reinitiation) does not count.
    await set_payout(sessions, stalled.id, hold_cycle=stalled.hold_cycle + 1)
    assert await sweep(sessions, stalled) == 1
    # Out of later sweeps (another test's relay): scripted again; its funds stay held, as in RETRY.
    await set_payout(sessions, stalled.id, hold_cycle=stalled.hold_cycle)
    for command in await commands_of(sessions, stalled):
        await set_sent(sessions, command)  # no relay of another test sends it


async def test_a_started_queued_payout_stalls_like_any_other_despite_its_queue_expiry(
    sessions: SessionFactory, stalled: Payout
) -> None:
    """A payout queued, then started, keeps its EXPIRE_QUEUE action (due later, then skipped):
    no scripted step, so the sweep sends its command again and the pipeline check reports it."""
    await schedule(sessions, stalled, Action.EXPIRE_QUEUE, PayoutStatus.QUEUED)
    # The oldest of the shared database's stuck payouts: the report names the first 20.
    await set_payout(sessions, stalled.id, updated_at=datetime(2000, 1, 1))
    async with sessions() as session:
        problems = await pipeline_problems(
            session, Thresholds(stuck_after=timedelta(days=1)), SANDBOX_TIME
        )
    assert [problem for problem in problems if stalled.id in problem] != []
    assert await sweep(sessions, stalled) == 1
    for command in await commands_of(sessions, stalled):
        await set_sent(sessions, command)  # no relay of another test sends it


async def test_a_pending_payout_whose_command_a_crash_loop_dead_lettered_is_processed(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    settings: Settings,
) -> None:
    """A processor killed mid-message again and again (RabbitMQ 3.x counts each return as a
    delivery) sends an innocent command to `.dead` at its delivery limit; the payout, PENDING
    and never submitted, would wait for an operator for ever, its funds held."""
    await declare_topology_at(
        settings.amqp_url, webhook_retry_tiers=len(settings.webhook_retry_ladder)
    )
    await rabbit.purge(PAYOUT_COMMANDS.name, PAYOUT_COMMANDS.dead_letter_queue)
    merchant = await make_merchant()
    response = await api_client.post(f"{API}/payouts", json=payout_body(), headers=auth(merchant))
    payout_id = response.json()["data"]["id"]
    (command,) = await unsent_commands(sessions, payout_id, PROCESSING_KEYS)
    await relay(rabbit, command)
    await set_sent(sessions, command)

    async def dead_lettered() -> None:
        """One more life and death, until the command is past its delivery limit."""
        await take_and_die(settings.amqp_url, PAYOUT_COMMANDS.name)
        dead = await rabbit.take(PAYOUT_COMMANDS.dead_letter_queue)
        assert [message.headers["x-death"][0]["reason"] for message in dead] == ["delivery_limit"]

    await eventually(dead_lettered, timeout=60)
    await set_payout(sessions, payout_id, updated_at=long_ago())

    await resend(sessions)
    (again,) = await unsent_commands(sessions, payout_id, PROCESSING_KEYS)
    sent = ProcessPayout.model_validate_json(again.body)
    assert (sent.payout_id, sent.attempt) == (payout_id, 0)
    async with create_processor(settings):
        await relay(rabbit, again)
        await set_sent(sessions, again)
        await eventually(lambda: has_status(sessions, payout_id, PayoutStatus.SUCCESS))


async def test_an_accepted_outcome_whose_command_was_dead_lettered_is_applied(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    rabbit: RabbitClient,
    settings: Settings,
) -> None:
    """The PSP got 200 for its IPN and sends it no more (a copy is answered as a duplicate, a new
    event for the same outcome is refused); its ApplyPspOutcome is in `.dead`. Only the outcomes
    of the payout's current attempt are waited for."""
    await declare_topology_at(
        settings.amqp_url, webhook_retry_tiers=len(settings.webhook_retry_ladder)
    )
    merchant = await make_merchant()
    body = payout_body(accountNumber="1234560004")  # PENDING at the PSP, waiting for an IPN
    response = await api_client.post(f"{API}/payouts", json=body, headers=auth(merchant))
    payout_id = response.json()["data"]["id"]
    for row in await outbox_for_payout(sessions, payout_id):
        await set_sent(sessions, row)  # the command that would process it: lost too
    await set_payout(sessions, payout_id, psp_reference="PSP-4-SUBMITTED")
    ipn = await send_ipn(api_client, settings.psp_secret, payout_id, "SUCCESS")
    assert ipn.status_code == 200, ipn.text
    (lost,) = await unsent_commands(sessions, payout_id, OUTCOME_KEYS)
    await set_sent(sessions, lost)  # dead-lettered: never applied
    await resend(sessions)
    assert await unsent_commands(sessions, payout_id, OUTCOME_KEYS) == []  # too recent

    async with transaction(sessions) as session:
        await session.execute(
            update(PspCallback)
            .where(PspCallback.payout_id == payout_id)
            .values(received_at=long_ago())
        )
    await set_payout(sessions, payout_id, hold_cycle=2)  # reinitiated: the outcome is not its own
    await resend(sessions)
    assert await unsent_commands(sessions, payout_id, OUTCOME_KEYS) == []
    await set_payout(sessions, payout_id, hold_cycle=1)
    await resend(sessions)
    (again,) = await unsent_commands(sessions, payout_id, OUTCOME_KEYS)
    assert again.body == lost.body
    async with create_processor(settings):
        await relay(rabbit, again)
        await set_sent(sessions, again)
        await eventually(lambda: has_status(sessions, payout_id, PayoutStatus.SUCCESS))
    async with sessions() as session:
        payout = await session.get_one(Payout, payout_id)
    assert payout.accepted_outcome is None


async def resend(sessions: SessionFactory, time: MerchantTime = SANDBOX_TIME) -> None:
    await resend_stalled_payout_commands(
        sessions,
        stalled_seconds=STALLED_SECONDS,
        retry_delay_seconds=RETRY_DELAY_SECONDS,
        time=time,
    )


async def unsent_commands(
    sessions: SessionFactory, payout_id: str, routing_keys: frozenset[str]
) -> list[OutboxMessage]:
    rows = await outbox_for_payout(sessions, payout_id)
    return [row for row in rows if row.routing_key in routing_keys and row.sent_at is None]


async def take_and_die(amqp_url: str, queue_name: str) -> None:
    """One life of a processor killed holding a delivery: taken, never acknowledged."""
    connection = await aio_pika.connect(amqp_url)
    try:
        queue = await (await connection.channel()).get_queue(queue_name, ensure=False)
        await queue.get(no_ack=False, fail=False, timeout=10)
    finally:
        await connection.close()


async def has_status(sessions: SessionFactory, payout_id: str, status: PayoutStatus) -> None:
    async with sessions() as session:
        payout = await session.get_one(Payout, payout_id, populate_existing=True)
    assert payout.status == status.value


async def test_both_sweeps_read_an_index(sessions: SessionFactory) -> None:
    """Every round of every relay runs them: a range on an index, not a scan of payouts or of
    psp_callbacks."""
    # A bound few rows pass, as in a healthy sandbox (this shared database holds thousands of
    # payouts no processor took, for which a scan is the cheaper plan).
    now = utcnow() - timedelta(days=36500)
    [payouts, _scheduled] = await explain(sessions, awaiting_processing(now))
    assert (payouts["type"], payouts["key"]) == ("range", "ix_payouts_status_updated"), payouts
    [callbacks, _payouts] = await explain(sessions, awaiting_accepted_outcomes(now))
    assert callbacks["key"] == "ix_psp_callbacks_unapplied", callbacks


@pytest.mark.parametrize("time", [SANDBOX_TIME, REAL_TIME], ids=["test mode", "production"])
async def test_a_command_sent_again_for_a_payout_a_clock_step_started_carries_its_sandbox_time(
    sessions: SessionFactory, stalled: Payout, time: MerchantTime
) -> None:
    """A payout a clock step started (from the queue, at that step's sandbox time) runs its
    script from that time, which its command carries. Sent again without it, it ran from the
    clock's time when the copy was taken: a 0006 payout a 51-hour advance started at 10 h had its
    reversal put off by 41 hours (a suspicion of the time-travel review). In production (a
    payout started in test mode on the same database) it carries none."""
    stepped_at = datetime(2031, 1, 2, 10, 0)
    async with transaction(sessions) as session:
        payout = await session.get_one(Payout, stalled.id)
        announcements = Announcements(correlation_id=None)
        with stamping_sandbox_time(stepped_at):
            announcements.event(payout, EventType.RETRYING)
        await announcements.write(session)
    for row in await outbox_for_payout(sessions, stalled.id):
        await set_sent(sessions, row)  # no relay of another test sends the event

    assert await sweep(sessions, stalled, time) == 1
    commands = await commands_of(sessions, stalled)
    for command in commands:
        await set_sent(sessions, command)
    (sent,) = [ProcessPayout.model_validate_json(command.body) for command in commands]
    carried = None if sent.sandbox_time is None else naive_utc(sent.sandbox_time)
    assert carried == (stepped_at if time.sandbox_clocks else None)
