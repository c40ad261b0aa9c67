"""Payouts stalled in RETRY (processor_service.stalled_payouts), against the real MariaDB/MySQL,
RabbitMQ and processor.

The loss: a payout that failed transiently (account ending 0002) waits in RETRY for its delayed
command, which RabbitMQ lost (it stopped while dead-lettering the command at the end of its
wait). The test builds that state directly: a payout created through the API, then in RETRY
after its first attempt, long ago, with no command anywhere.

The test database is shared with other tests: each test judges the sweep by its own payout's
outbox rows, never by the number the sweep returns.
"""

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import OutboxMessage, Payout, ScheduledAction
from contracts.domain.statuses import PayoutStatus
from contracts.messages import ProcessPayout
from contracts.settings import Settings
from contracts.topology import COMMANDS_EXCHANGE, PROCESS_PAYOUT_KEY, declare_topology_at
from processor_service.app import create_processor
from processor_service.schedule import Action
from processor_service.stalled_payouts import resend_stalled_payout_retries
from tests.conftest import MerchantFactory
from tests.support.amqp import RabbitClient, eventually
from tests.support.api_helpers import API, auth, outbox_for_payout, payout_body

STALLED_SECONDS = 60
RETRY_DELAY_SECONDS = 30.0


@pytest.fixture
async def stalled(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> Payout:
    """A 0002 payout in RETRY after its first attempt, longer ago than the delay and the stall
    time; its create's messages marked sent (no relay of another test publishes them)."""
    merchant: NewMerchant = await make_merchant()
    body = payout_body(destType="BANK", bankCode="HBL", walletCode=None, accountNumber="1234560002")
    response = await api_client.post(f"{API}/payouts", json=body, headers=auth(merchant))
    assert response.status_code == 201, response.text
    payout_id = response.json()["data"]["id"]
    long_ago = utcnow() - timedelta(seconds=RETRY_DELAY_SECONDS + STALLED_SECONDS + 10)
    await set_payout(sessions, payout_id, status=PayoutStatus.RETRY.value, attempts=1)
    await set_payout(sessions, payout_id, updated_at=long_ago)
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


async def set_payout(sessions: SessionFactory, payout_id: str, **values: Any) -> None:
    async with transaction(sessions) as session:
        await session.execute(update(Payout).where(Payout.id == payout_id).values(**values))


async def commands_of(sessions: SessionFactory, payout: Payout) -> list[OutboxMessage]:
    rows = await outbox_for_payout(sessions, payout.id)
    return [row for row in rows if row.routing_key == PROCESS_PAYOUT_KEY and row.sent_at is None]


async def sweep(sessions: SessionFactory, payout: Payout) -> int:
    """Run the sweep; how many commands of this payout it sent."""
    before = len(await commands_of(sessions, payout))
    await resend_stalled_payout_retries(
        sessions, stalled_seconds=STALLED_SECONDS, retry_delay_seconds=RETRY_DELAY_SECONDS
    )
    return len(await commands_of(sessions, payout)) - before


@pytest.fixture
async def processor(settings: Settings) -> AsyncIterator[None]:
    await declare_topology_at(
        settings.amqp_url, webhook_retry_tiers=len(settings.webhook_retry_ladder)
    )
    async with create_processor(settings):
        yield


async def test_a_payout_stalled_in_retry_gets_its_command_again_and_succeeds(
    sessions: SessionFactory, rabbit: RabbitClient, stalled: Payout, processor: None
) -> None:
    assert await sweep(sessions, stalled) == 1
    (command,) = await commands_of(sessions, stalled)
    sent = ProcessPayout.model_validate_json(command.body)
    assert (sent.payout_id, sent.attempt, sent.hold_cycle) == (stalled.id, 1, stalled.hold_cycle)
    assert (command.exchange, command.delay_ms) == (COMMANDS_EXCHANGE, None)

    await rabbit.publish(
        command.body,
        exchange=COMMANDS_EXCHANGE,
        routing_key=PROCESS_PAYOUT_KEY,
        message_id=str(command.id),
        headers=command.headers,
    )

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


async def test_only_a_payout_in_retry_past_its_delay_and_the_stall_time_not_scripted_is_sent(
    sessions: SessionFactory, stalled: Payout
) -> None:
    # Past the stall time, but not past the delay and the stall time.
    within = utcnow() - timedelta(seconds=STALLED_SECONDS + 5)
    await set_payout(sessions, stalled.id, updated_at=within)
    assert await sweep(sessions, stalled) == 0
    await set_payout(sessions, stalled.id, updated_at=stalled.updated_at)
    await set_payout(sessions, stalled.id, status=PayoutStatus.PENDING.value)
    assert await sweep(sessions, stalled) == 0
    await set_payout(sessions, stalled.id, status=PayoutStatus.RETRY.value)
    # A scripted attempt waits for the sandbox clock, even once its step was applied (or failed).
    async with transaction(sessions) as session:
        session.add(
            ScheduledAction(
                merchant_id=stalled.merchant_id,
                payout_id=stalled.id,
                hold_cycle=stalled.hold_cycle,
                action=Action.SCRIPT_STEP.value,
                step=1,
                expected_status=PayoutStatus.RETRY.value,
                due_at=utcnow(),
                created_at=utcnow(),
                applied_at=utcnow(),
            )
        )
    assert await sweep(sessions, stalled) == 0
    # A step of an earlier attempt (before a reinitiation) does not count.
    await set_payout(sessions, stalled.id, hold_cycle=stalled.hold_cycle + 1)
    assert await sweep(sessions, stalled) == 1
    # Out of later sweeps (another test's relay): scripted again; its funds stay held, as in RETRY.
    await set_payout(sessions, stalled.id, hold_cycle=stalled.hold_cycle)
    for command in await commands_of(sessions, stalled):
        await set_sent(sessions, command)  # no relay of another test sends it
