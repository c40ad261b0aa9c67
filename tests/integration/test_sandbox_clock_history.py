"""What a merchant's sandbox clock read at a moment in the past (contracts.clock.sandbox_time_at):
every advance is kept. No processor runs here: the tests hand commands to its handlers."""

import uuid
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import insert, select

from cli.merchants import NewMerchant
from contracts.clock import SANDBOX_TIME, offset_as_reached
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
            await SANDBOX_TIME.then(session, merchant.merchant_id, moment) - moment
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


# ---- offset_as_reached, against the history read by brute force ------------------------------

BASE = datetime(2026, 6, 1, 12, 0, 0)
HOUR = 3600
HISTORIES = {
    "one": [(BASE, 10 * HOUR)],
    "several": [
        (BASE, 10 * HOUR),
        (BASE + timedelta(hours=1), 30 * HOUR),
        (BASE + timedelta(hours=5), 31 * HOUR),
    ],
    "same stamp": [(BASE, 2 * HOUR), (BASE, 5 * HOUR)],
    "fractional": [
        (BASE + timedelta(microseconds=700_000), 3 * HOUR),
        (BASE + timedelta(seconds=90.25), 4 * HOUR),
    ],
}


def offset_reading_the_history(
    advances: list[tuple[datetime, int]], sandbox_time: datetime
) -> float:
    """The sandbox time less the first real moment the clock read it, advance by advance."""
    spans = [(datetime(1000, 1, 1), 0), *sorted(advances)]
    for (start, offset), (end, _) in zip(spans, [*spans[1:], (datetime.max, 0)], strict=True):
        reached = max(start, sandbox_time - timedelta(seconds=offset))
        if reached < end:
            return (sandbox_time - reached).total_seconds()
    raise AssertionError("the clock never read it")


def around_each_advance(advances: list[tuple[datetime, int]]) -> list[datetime]:
    """Sandbox times just before, at and after each advance and each jump's end, and later."""
    deltas = (-1.5, -0.5, 0, 0.3, 0.5, 1, 1799.7)
    return [
        at + timedelta(seconds=delta)
        for at, offset in advances
        for delta in (*deltas, offset - 1, offset, offset + 0.4, offset + 10, offset + 3 * HOUR)
    ]


@pytest.mark.parametrize("history", list(HISTORIES))
async def test_the_offset_as_the_clock_reached_a_time_is_read_off_its_advances(
    sessions: SessionFactory, history: str
) -> None:
    """Reached as the clock ran, the offset of the time; jumped over by an advance, the time
    less the advance's moment; before any advance, zero."""
    advances = HISTORIES[history]
    merchant_id = str(uuid.uuid4())
    async with transaction(sessions) as session:
        await session.execute(
            insert(SandboxClockAdvance),
            [
                {"merchant_id": merchant_id, "advanced_at": at, "offset_seconds": offset}
                for at, offset in advances
            ],
        )
    wrong = []
    async with sessions() as session:
        for moment in around_each_advance(advances):
            read = int(
                (await session.execute(select(offset_as_reached(merchant_id, moment)))).scalar_one()
            )
            expected = offset_reading_the_history(advances, moment)
            if abs(read - expected) >= 1:
                wrong.append((moment.isoformat(), read, expected))
    assert wrong == []
