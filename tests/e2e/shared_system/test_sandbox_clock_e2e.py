"""The sandbox clock with the real processes: SIGKILL the processor while it applies what an
advance made due; every scheduled step is still applied, exactly once."""

import asyncio
from decimal import Decimal

import httpx
from sqlalchemy import func, select

from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory
from contracts.db.models import Payout, ScheduledAction
from tests.conftest import MerchantFactory
from tests.support.api_helpers import auth, bank_payout_body
from tests.support.payout_records import balance_and_ledger, event_types, journal_kinds
from tests.support.polling import eventually
from tests.support.system import PROCESSOR, RunningSystem

OPENING = Decimal("1000000.00")
AMOUNT = "100.00"
RETRIED, REVERSED = 20, 10  # 0009 payouts (3 steps each to come) and 0006 payouts (1 step)
ACTIONS = RETRIED * 3 + REVERSED
KILLS = 2


async def create(http: httpx.AsyncClient, merchant: NewMerchant, suffix: str) -> str:
    body = bank_payout_body(
        f"123456{suffix}",
        amount=AMOUNT,
    )
    response = await http.post("/payouts", json=body, headers=auth(merchant))
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


async def count_in(sessions: SessionFactory, ids: list[str], status: str) -> int:
    async with sessions() as session:
        counted = await session.scalar(
            select(func.count()).where(Payout.id.in_(ids), Payout.status == status)
        )
        return int(counted or 0)


async def applied(sessions: SessionFactory, merchant_id: str) -> int:
    async with sessions() as session:
        counted = await session.scalar(
            select(func.count()).where(
                ScheduledAction.merchant_id == merchant_id, ScheduledAction.applied_at.is_not(None)
            )
        )
        return int(counted or 0)


async def test_a_processor_killed_mid_advance_loses_nothing_and_applies_nothing_twice(
    system: RunningSystem,
    http: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
) -> None:
    merchant = await make_merchant(balance=OPENING)
    retried = list(await asyncio.gather(*(create(http, merchant, "0009") for _ in range(RETRIED))))
    reversed_ = list(
        await asyncio.gather(*(create(http, merchant, "0006") for _ in range(REVERSED)))
    )

    async def all_started() -> bool:
        return (
            await count_in(sessions, retried, "RETRY") == RETRIED
            and await count_in(sessions, reversed_, "SUCCESS") == REVERSED
        )

    await eventually(all_started, within=30, interval=0.2, what="first steps taken")

    advance = asyncio.create_task(
        http.post("/sandbox/clock/advance", json={"seconds": 49 * 3600}, headers=auth(merchant))
    )
    # Crash the processor each time it has applied more of the window, until it is all done.
    applied_at_kills: list[int] = []
    for _ in range(KILLS):
        before = applied_at_kills[-1] if applied_at_kills else 0

        async def progressed(before: int = before) -> int | None:
            count = await applied(sessions, merchant.merchant_id)
            return count if count > before else None

        count = await eventually(progressed, within=30, interval=0.01, what="progress")
        if count == ACTIONS:
            break
        system.restart(PROCESSOR)
        applied_at_kills.append(count)
    assert applied_at_kills, "the processor finished the window before it could be killed"
    assert (await advance).status_code == 200

    async def all_final() -> bool:
        return (
            await count_in(sessions, retried, "FAILED") == RETRIED
            and await count_in(sessions, reversed_, "REVERSED") == REVERSED
        )

    await eventually(all_final, within=45, interval=0.3, what="every scripted step applied")

    assert not system.group.exited(), system.logs()
    retried_events = (
        "payout.created",
        *("payout.processing", "payout.retrying") * 3,
        "payout.processing",
        "payout.failed",
    )
    reversed_events = ("payout.created", "payout.processing", "payout.succeeded", "payout.reversed")
    for payout_id in retried:
        assert await event_types(sessions, payout_id) == retried_events
        assert await journal_kinds(sessions, payout_id) == ("HOLD", "RELEASE")
    for payout_id in reversed_:
        assert await event_types(sessions, payout_id) == reversed_events
        assert await journal_kinds(sessions, payout_id) == ("HOLD", "PAYOUT", "REVERSAL")
    async with sessions() as session:
        results = (
            await session.execute(
                select(ScheduledAction.result, func.count())
                .where(ScheduledAction.merchant_id == merchant.merchant_id)
                .group_by(ScheduledAction.result)
            )
        ).all()
        assert {result: count for result, count in results} == {"APPLIED": ACTIONS}
    assert await balance_and_ledger(sessions, merchant.merchant_id) == ((OPENING, 0), (OPENING, 0))
