"""What happens to a payout later, in its merchant's sandbox time: the rows of
`scheduled_actions` a change leaves behind (the next step of a scripted scenario, the expiry of
an ON_HOLD / IN_REVIEW payout's decision window), written in the change's transaction."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.clock import REAL_TIME, SANDBOX_TIME, MerchantTime
from contracts.db.engine import utcnow
from contracts.db.models import Payout, ScheduledAction, table_of
from contracts.domain.scenarios import ScriptStep
from contracts.domain.scheduled_actions import Action
from contracts.domain.statuses import PayoutStatus

# Waiting for an IPN decision, for at most the decision window.
AWAITING_DECISION = frozenset({PayoutStatus.ON_HOLD, PayoutStatus.IN_REVIEW})


@dataclass(frozen=True)
class Timetable:
    decision_sla: timedelta = timedelta(hours=72)
    scripted: bool = True  # test mode: the scripted suffixes run, on the merchants' sandbox clocks

    @property
    def time(self) -> MerchantTime:
        """Merchants' sandbox clocks in test mode; real time in production."""
        return SANDBOX_TIME if self.scripted else REAL_TIME


def follow_ups(
    payout: Payout,
    *,
    script: tuple[ScriptStep, ...],
    step: int | None,
    at: datetime,
    timetable: Timetable,
) -> list[dict[str, Any]]:
    """The actions a change that left the payout as it is now, at sandbox time `at`, schedules:
    the script's step after `step` (None: not a script step), and the decision window's expiry
    when the payout now waits for a decision."""
    rows: list[dict[str, Any]] = []
    if step is not None and step + 1 < len(script):
        following = script[step + 1]
        rows.append(_row(payout, Action.SCRIPT_STEP, step + 1, at + following.after))
    if PayoutStatus(payout.status) in AWAITING_DECISION:
        rows.append(_row(payout, Action.EXPIRE_DECISION, None, at + timetable.decision_sla))
    return rows


def _row(payout: Payout, action: Action, step: int | None, due_at: datetime) -> dict[str, Any]:
    return {
        "merchant_id": payout.merchant_id,
        "payout_id": payout.id,
        "hold_cycle": payout.hold_cycle,
        "action": action.value,
        "step": step,
        "expected_status": payout.status,
        "due_at": due_at,
        "created_at": utcnow(),
    }


async def write_actions(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(table_of(ScheduledAction)), rows)
