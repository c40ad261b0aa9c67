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

import pytest

import processor_service.scheduler as scheduler_module
from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import SandboxClock, ScheduledAction
from contracts.domain.scheduled_actions import Action
from contracts.domain.statuses import PayoutStatus
from contracts.settings import Settings
from processor_service.schedule import Timetable
from tests.conftest import MerchantFactory
from tests.support.polling import eventually
from tests.support.processing import running_processor_and_relay

A_ACTIONS = 40


def _action(merchant_id: str, due_in: timedelta) -> ScheduledAction:
    now = utcnow()
    return ScheduledAction(
        merchant_id=merchant_id,
        payout_id=str(uuid.uuid4()),
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
