"""A merchant's clock advance is not held behind another merchant's (neighbours review): the
scheduler claimed an action due on an advanced clock across every advanced clock at once, and
the sort locked every due action of them all; one loop applied every merchant's actions in due
order, about 100 a second, and a merchant's advance over 1,000 scripted payouts held another's
advance for 10 s (its answer said `Sandbox-Clock-Settled: false`). Now each processor runs
several scheduler workers, and a claim locks one merchant's clock and its earliest action: the
other workers take another merchant's meanwhile."""

import asyncio
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

import processor_service.scheduler as scheduler_module
from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import Payout, SandboxClock, SandboxClockAdvance, ScheduledAction
from contracts.domain.scheduled_actions import Action
from contracts.domain.statuses import PayoutStatus
from contracts.settings import Settings
from processor_service.schedule import Timetable
from processor_service.scheduler import Scheduler
from tests.conftest import MerchantFactory
from tests.support.api_helpers import create_payout
from tests.support.polling import eventually
from tests.support.processing import running_processor_and_relay

A_ACTIONS = 40


def _action(merchant_id: str, due_in: timedelta, payout_id: str | None = None) -> ScheduledAction:
    now = utcnow()
    return ScheduledAction(
        merchant_id=merchant_id,
        payout_id=payout_id or str(uuid.uuid4()),
        hold_cycle=1,
        action=Action.SCRIPT_STEP.value,
        step=1,
        expected_status=PayoutStatus.PROCESSING.value,
        due_at=now + due_in,
        created_at=now,
    )


async def test_one_merchants_advance_does_not_wait_for_anothers(
    settings: Settings,
    sessions: SessionFactory,
    make_merchant: MerchantFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = await make_merchant(), await make_merchant()
    async with transaction(sessions) as session:
        for merchant in (a, b):  # both advanced an hour
            clock = SandboxClock(merchant_id=merchant.merchant_id, offset_seconds=3600)
            clock.updated_at = utcnow()
            session.add(clock)
        session.add_all(
            _action(a.merchant_id, timedelta(minutes=10, seconds=n)) for n in range(A_ACTIONS)
        )
        session.add(_action(b.merchant_id, timedelta(minutes=50)))  # due after all of A's
    applied: list[str] = []

    async def slow_apply(
        _session: object, action: ScheduledAction, _timetable: Timetable
    ) -> PayoutStatus | None:
        await asyncio.sleep(0.05)  # a real action's round trips
        action.applied_at, action.result = utcnow(), "APPLIED"
        applied.append(action.merchant_id)
        return None

    monkeypatch.setattr(scheduler_module, "apply_scheduled_action", slow_apply)
    async with running_processor_and_relay(settings):

        async def all_applied() -> bool:
            return applied.count(a.merchant_id) == A_ACTIONS and b.merchant_id in applied

        await eventually(all_applied, within=30, what="every action applied")

    assert applied.index(b.merchant_id) < A_ACTIONS // 2, applied.index(b.merchant_id)


async def test_a_merchant_with_an_action_nothing_holds_back_is_not_crowded_out(
    api_client: httpx.AsyncClient,
    sessions: SessionFactory,
    make_merchant: MerchantFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A claim tries the first MERCHANTS_TRIED advanced merchants with an action due: merchants
    whose due actions all wait for a payout to be submitted (advanced during a backlog) filled
    them, and another merchant's action, which nothing held back, was not applied for up to an
    hour (found by the scheduler review)."""
    monkeypatch.setattr(scheduler_module, "MERCHANTS_TRIED", 2)
    waiting = [await make_merchant() for _ in range(2)]
    free = await make_merchant()
    pending = [(await create_payout(api_client, merchant))["id"] for merchant in waiting]
    now = utcnow()
    async with transaction(sessions) as session:
        for n, merchant in enumerate([*waiting, free]):  # advanced an hour, the free one last
            clock = SandboxClock(merchant_id=merchant.merchant_id, offset_seconds=3600)
            clock.updated_at = now - timedelta(minutes=10) + timedelta(seconds=n)
            session.add(clock)
            # After its payout started (offset 0 then), before the processor submitted it.
            session.add(
                SandboxClockAdvance(
                    merchant_id=merchant.merchant_id, advanced_at=now, offset_seconds=3600
                )
            )
        for merchant, payout_id in zip(waiting, pending, strict=True):
            session.add(_action(merchant.merchant_id, timedelta(minutes=30), payout_id))
        free_action = _action(free.merchant_id, timedelta(minutes=30))
        session.add(free_action)

    await Scheduler(sessions, Timetable(), poll_interval_seconds=0.1).apply_due()

    async with sessions() as session:
        applied = await session.get_one(ScheduledAction, free_action.id, populate_existing=True)
        blocked = await session.scalars(
            select(ScheduledAction.applied_at).where(ScheduledAction.payout_id.in_(pending))
        )
        assert list(blocked) == [None, None]
    assert applied.applied_at is not None


async def test_an_action_whose_payout_row_is_held_elsewhere_holds_up_no_other_action(
    api_client: httpx.AsyncClient,
    sessions: SessionFactory,
    make_merchant: MerchantFactory,
) -> None:
    """The earliest due action's payout row held by another transaction (a stuck session, a
    frozen process): the scheduler waited out the lock wait (50 s), then claimed the same
    action again, and every worker that took it did the same; a few such payouts stopped every
    merchant's scheduled steps (left open by the batch isolation work). The action is now
    passed over a while, and the others applied meanwhile."""
    held_merchant, other_merchant = await make_merchant(), await make_merchant()
    held_payout = (await create_payout(api_client, held_merchant))["id"]
    other_payout = (await create_payout(api_client, other_merchant))["id"]
    async with transaction(sessions) as session:  # due before either payout started
        held_action = _action(held_merchant.merchant_id, timedelta(minutes=-2), held_payout)
        other_action = _action(other_merchant.merchant_id, timedelta(minutes=-1), other_payout)
        session.add_all([held_action, other_action])
    scheduler = Scheduler(sessions, Timetable(), poll_interval_seconds=0.1)

    async def applied_at(action: ScheduledAction) -> object:
        async with sessions() as session:
            return await session.scalar(
                select(ScheduledAction.applied_at).where(ScheduledAction.id == action.id)
            )

    async with sessions() as holder, holder.begin():
        await holder.execute(select(Payout.id).where(Payout.id == held_payout).with_for_update())
        await asyncio.wait_for(scheduler.apply_due(), timeout=10)
        assert await applied_at(other_action) is not None
        assert await applied_at(held_action) is None

    async def held_action_applied() -> bool:
        await scheduler.apply_due()
        return await applied_at(held_action) is not None

    await eventually(held_action_applied, within=10, what="the held payout's action applied")


async def test_a_merchants_later_action_waits_while_another_claim_holds_its_earlier_one(
    api_client: httpx.AsyncClient,
    sessions: SessionFactory,
    make_merchant: MerchantFactory,
) -> None:
    """Another worker (or processor) has claimed the merchant's earlier action and is applying
    it, its row locked: the claim skipped that row and took the merchant's later action (a
    queue's expiry applied before the release that starts the queue: second diff review). Now
    a merchant's actions are claimed one at a time, in due-time order; another merchant's go
    on."""
    merchant, other = await make_merchant(), await make_merchant()
    payouts = [(await create_payout(api_client, m))["id"] for m in (merchant, merchant, other)]
    async with transaction(sessions) as session:  # due before the payouts started
        earlier = _action(merchant.merchant_id, timedelta(minutes=-3), payouts[0])
        later = _action(merchant.merchant_id, timedelta(minutes=-2), payouts[1])
        others = _action(other.merchant_id, timedelta(minutes=-1), payouts[2])
        session.add_all([earlier, later, others])
    scheduler = Scheduler(sessions, Timetable(), poll_interval_seconds=0.1)

    async def applied(action: ScheduledAction) -> bool:
        async with sessions() as session:
            found = await session.scalar(
                select(ScheduledAction.applied_at).where(ScheduledAction.id == action.id)
            )
            return found is not None

    async with sessions() as other_claim, other_claim.begin():
        await other_claim.execute(
            select(ScheduledAction.id).where(ScheduledAction.id == earlier.id).with_for_update()
        )
        await asyncio.wait_for(scheduler.apply_due(), timeout=10)
        assert await applied(others)
        assert not await applied(later)

    await asyncio.wait_for(scheduler.apply_due(), timeout=10)
    assert await applied(earlier) and await applied(later)
