"""What a merchant's sandbox clock read at a moment in the past (contracts.clock.sandbox_time_at):
every advance is kept. No processor runs here: the tests hand commands to its handlers."""

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from cli.merchants import NewMerchant
from contracts.clock import sandbox_time_then
from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import Payout, SandboxClockAdvance, ScheduledAction
from contracts.settings import Settings
from processor_service.handlers import Context, process_payout
from tests.conftest import MerchantFactory, in_process_api
from tests.support.api_helpers import API, auth, new_payout_command

HOUR = 3600
AMOUNT = "1500.00"


async def advance(client: httpx.AsyncClient, merchant: NewMerchant, seconds: int) -> None:
    response = await client.post(
        f"{API}/sandbox/clock/advance", json={"seconds": seconds}, headers=auth(merchant)
    )
    assert response.status_code == 200, response.text


async def test_each_advance_is_kept_with_the_offset_it_left(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """What the clock read at a moment in the past is the offset of the last advance before it
    (a payout picked up late, `payouts reconcile`)."""
    merchant = await make_merchant()
    before = utcnow()
    await advance(api_client, merchant, 60)
    between = utcnow()
    await advance(api_client, merchant, 30)

    async with sessions() as session:
        advances = await session.execute(
            select(SandboxClockAdvance.offset_seconds)
            .where(SandboxClockAdvance.merchant_id == merchant.merchant_id)
            .order_by(SandboxClockAdvance.id)
        )
        assert list(advances.scalars()) == [60, 90]
        then = [
            await sandbox_time_then(session, merchant.merchant_id, moment) - moment
            for moment in (before, between, utcnow())
        ]
    assert then == [timedelta(0), timedelta(seconds=60), timedelta(seconds=90)]


@pytest.mark.parametrize(
    ("suffix", "amount", "after"),
    [("0006", AMOUNT, timedelta(hours=48)), ("7777", "150000.00", timedelta(hours=72))],
    ids=["0006 reversal", "decision window"],
)
async def test_a_payout_picked_up_after_two_advances_runs_from_its_start(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
    suffix: str,
    amount: str,
    after: timedelta,
) -> None:
    """The processor behind: the payout is picked up after two advances. Its step was due from
    the first advance's end (the clock kept only the offset before its last advance)."""
    merchant = await make_merchant()
    account = {"destType": "BANK", "bankCode": "HBL", "walletCode": None}
    command = await new_payout_command(
        api_client,
        sessions,
        merchant,
        amount=amount,
        accountNumber=f"123456{suffix}",
        **account,
    )
    # Behind: the first advance answered Sandbox-Clock-Settled: false, and the merchant went on.
    unsettled = settings.model_copy(update={"sandbox_clock_wait_seconds": 0.0})
    async with in_process_api(unsettled) as quick_client:
        for hours in (30, 20):
            await advance(quick_client, merchant, hours * HOUR)

    async with transaction(sessions) as session:
        await process_payout(session, command, Context(correlation_id=None, retry_delay_ms=0))
    async with sessions() as session:
        payout_row = await session.get(Payout, command.payout_id)
        due = await session.scalar(
            select(ScheduledAction.due_at).where(ScheduledAction.payout_id == command.payout_id)
        )
    assert payout_row is not None and due is not None
    assert after <= due - payout_row.created_at < after + timedelta(seconds=5)
