"""The sandbox clock (test mode only; production answers 404): each merchant's sandbox time, and
moving it forward so that what is scheduled for the merchant's payouts happens now.

Advancing is one UPDATE of the merchant's offset; the processor's scheduler loop (polling every
`PAYOUTS_SCHEDULER_POLL_INTERVAL_SECONDS`) applies whatever that made due, in due-time order. In
the same transaction the merchant's webhook retries that came due leave their wait
(api_service.sandbox.webhook_retries). The request then waits (at most
`PAYOUTS_SANDBOX_CLOCK_WAIT_SECONDS`) until none of the merchant's actions or webhook retries due
by its sandbox time is left, nor any payout the processor has yet to pick up, and says so in
`Sandbox-Clock-Settled`.
"""

import asyncio
import logging
import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects.mysql import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from api_service.database_time import not_counted
from api_service.deps import (
    SANDBOX_ONLY,
    CurrentMerchant,
    PublicIdsDep,
    RequestId,
    SessionDep,
    SettingsDep,
)
from api_service.envelope import SuccessEnvelope, json_response, success_body
from api_service.errors import (
    IDEMPOTENCY_ERRORS,
    PayloadTooLarge,
    ValidationFailed,
    error_responses,
)
from api_service.idempotency import IdempotencyDep
from api_service.request_body import documented_body, read_body
from api_service.sandbox.endpoints import SANDBOX_ERRORS
from api_service.sandbox.webhook_retries import count_retries_due, release_retries_due
from api_service.schemas import WHOLE_NUMBER, SettingRequest
from contracts.clock import (
    outcome_waiting_to_be_applied,
    sandbox_now_of,
    waiting_to_be_submitted,
)
from contracts.db.engine import DATABASE_NOW, utcnow
from contracts.db.models import (
    Payout,
    PspCallback,
    SandboxClock,
    SandboxClockAdvance,
    ScheduledAction,
    table_of,
)
from contracts.db.outages import is_outage
from contracts.public_ids import PublicIds
from contracts.wire import TimestampText, format_timestamp

# The clock as the advance left it (this transaction holds its row), kept in its history.
_RECORD_ADVANCE = insert(table_of(SandboxClockAdvance)).from_select(
    ["merchant_id", "advanced_at", "offset_seconds"],
    select(SandboxClock.merchant_id, SandboxClock.updated_at, SandboxClock.offset_seconds).where(
        SandboxClock.merchant_id == bindparam("merchant_id")
    ),
)

router = APIRouter(prefix="/sandbox/clock", tags=["sandbox"], dependencies=SANDBOX_ONLY)

MAX_ADVANCE_SECONDS = 366 * 24 * 3600
# How far ahead a clock may be in all. Far enough for any test; DATETIME ends at 9999-12-31, and
# a clock past it had no sandbox time (500s), and stopped every merchant's scheduled steps.
MAX_OFFSET_YEARS = 100
GREGORIAN_YEAR_SECONDS = 31_556_952  # 365.2425 days (366 days each let a clock 76 days past)
MAX_OFFSET_SECONDS = MAX_OFFSET_YEARS * GREGORIAN_YEAR_SECONDS
LISTED_ACTIONS = 20
SETTLED_HEADER = "Sandbox-Clock-Settled"
SETTLED_HEADER_DOCUMENTED = {
    "description": "Whether everything the advance made due was applied before the answer",
    "required": True,
    "schema": {"type": "string", "enum": ["true", "false"]},
}
WAIT_POLL_SECONDS = 0.1

SCRIPTS_DESCRIPTION = """
What is scheduled in sandbox time (each row a step the processor applies once it is due):

| payout | steps |
|---|---|
| account ends `0006` | `SUCCESS`; 48 h later `REVERSED` (the funds return to available) |
| account ends `0007` | `PROCESSING` (a slow PSP); 30 min later `SUCCESS` |
| account ends `0008` | `PENDING` at the PSP; 2 h later `FAILED`, `BENEFICIARY_BANK_OFFLINE` |
| account ends `0009` | `RETRY`; again after 1 min and 5 min (`RETRY`, attempts 2 and 3); 30 min \
later attempt 4 `FAILED`, `RETRIES_EXHAUSTED` |
| `ON_HOLD` / `IN_REVIEW` | no decision within 72 h (`PAYOUTS_DECISION_SLA_HOURS`): `FAILED`, \
`DECISION_EXPIRED`, the hold released |
| a webhook delivery `RETRYING` | each retry on the ladder (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, \
10 h) is due on your clock: an advance makes those it passes now, one after another, and the \
delivery is `DELIVERED` or, after the last, `PARKED`; `nextAttemptAt` is sandbox time |

(`0001` to `0005` and amounts of 100,000.00 or more, `IN_REVIEW`, are as before; the amount rule
wins over the scripted suffixes.) A step applies only if the payout is still where the step
before left it, in the same attempt: an IPN, a simulation or a reinitiation first makes it a
no-op. Events a step causes carry `sandboxTime` (the sandbox time the step was due at) beside
the real `createdAt`.
"""

log = logging.getLogger("api")


class AdvanceClockRequest(SettingRequest):
    seconds: Annotated[
        int,
        Field(ge=1, le=MAX_ADVANCE_SECONDS, description="How far to move your clock"),
        WHOLE_NUMBER,
    ]


class ScheduledActionView(BaseModel):
    id: int
    payoutId: str
    action: str = Field(description="SCRIPT_STEP | EXPIRE_DECISION | EXPIRE_QUEUE")
    step: int | None
    dueAt: TimestampText = Field(description="Sandbox time")
    appliedAt: TimestampText | None = Field(description="Real time")
    result: str | None = Field(description="APPLIED | SKIPPED | ERROR")
    statusAfter: str | None


class ClockView(BaseModel):
    offsetSeconds: int
    realTime: TimestampText
    sandboxTime: TimestampText
    scheduled: list[ScheduledActionView] = Field(description="The next actions not yet applied")
    recent: list[ScheduledActionView] = Field(description="The latest actions applied")


class ClockEnvelope(SuccessEnvelope[ClockView]):
    pass


class AdvancedClockView(BaseModel):
    offsetSeconds: int
    advancedSeconds: int
    realTime: TimestampText
    sandboxTime: TimestampText
    due: list[ScheduledActionView] = Field(
        description="What the advance made due, in due-time order, as it was when the advance "
        "was made: not applied yet, so appliedAt, result and statusAfter are null (the answer "
        "is replayed byte for byte); GET /sandbox/clock lists how each went, and the steps "
        "these schedule within the window, which run too"
    )
    webhookRetriesReleased: int = Field(
        description="Your webhook retries the advance made due, sent now in due-time order "
        "(retries these schedule within the window follow)"
    )


class AdvancedClockEnvelope(SuccessEnvelope[AdvancedClockView]):
    pass


def _action_json(action: ScheduledAction, public_ids: PublicIds) -> dict[str, Any]:
    return {
        "id": public_ids.public(action.id),  # contracts.public_ids
        "payoutId": action.payout_id,
        "action": action.action,
        "step": action.step,
        "dueAt": format_timestamp(action.due_at),
        "appliedAt": format_timestamp(action.applied_at) if action.applied_at else None,
        "result": action.result,
        "statusAfter": action.status_after,
    }


async def _clock(session: AsyncSession, merchant_id: str) -> tuple[int, datetime, datetime]:
    """The offset, the real time and the merchant's sandbox time (the database's clock)."""
    offset = select(SandboxClock.offset_seconds).where(SandboxClock.merchant_id == merchant_id)
    row = (
        await session.execute(
            select(
                func.coalesce(offset.scalar_subquery(), 0),
                DATABASE_NOW,
                sandbox_now_of(merchant_id),
            )
        )
    ).one()
    return int(row[0]), row[1], row[2]


def _clock_json(offset: int, real: datetime, sandbox: datetime) -> dict[str, Any]:
    return {
        "offsetSeconds": offset,
        "realTime": format_timestamp(real),
        "sandboxTime": format_timestamp(sandbox),
    }


async def _actions(
    session: AsyncSession,
    public_ids: PublicIds,
    merchant_id: str,
    *,
    applied: bool,
    due_by: datetime | None = None,
) -> list[dict[str, Any]]:
    statement = select(ScheduledAction).where(ScheduledAction.merchant_id == merchant_id)
    if applied:
        # The order of ix_scheduled_actions_merchant (id ends every key of it): by applied_at
        # and id, MariaDB sorted all of the merchant's applied actions to list 20 (plans review).
        statement = statement.where(ScheduledAction.applied_at.is_not(None)).order_by(
            ScheduledAction.applied_at.desc(),
            ScheduledAction.due_at.desc(),
            ScheduledAction.id.desc(),
        )
    else:
        statement = statement.where(ScheduledAction.applied_at.is_(None)).order_by(
            ScheduledAction.due_at, ScheduledAction.id
        )
    if due_by is not None:
        statement = statement.where(ScheduledAction.due_at <= due_by)
    rows = await session.scalars(statement.limit(LISTED_ACTIONS if due_by is None else 1000))
    return [_action_json(action, public_ids) for action in rows]


@router.get(
    "",
    response_model=ClockEnvelope,
    responses=error_responses(*SANDBOX_ERRORS),
    summary="Sandbox: your clock, and what is scheduled in sandbox time",
    description=SCRIPTS_DESCRIPTION,
)
async def get_clock(
    merchant: CurrentMerchant, session: SessionDep, public_ids: PublicIdsDep
) -> Response:
    offset, real, sandbox = await _clock(session, merchant.id)
    data = {
        **_clock_json(offset, real, sandbox),
        "scheduled": await _actions(session, public_ids, merchant.id, applied=False),
        "recent": await _actions(session, public_ids, merchant.id, applied=True),
    }
    return json_response(success_body(data))


@router.post(
    "/advance",
    response_model=AdvancedClockEnvelope,
    responses={
        200: {"headers": {SETTLED_HEADER: SETTLED_HEADER_DOCUMENTED}},
        **error_responses(*SANDBOX_ERRORS, *IDEMPOTENCY_ERRORS, PayloadTooLarge),
    },
    summary="Sandbox: move your clock forward; what falls due in the window happens now",
    description=(
        "Adds `seconds` to your sandbox clock (other merchants' clocks do not move; a clock "
        f"goes at most {MAX_OFFSET_YEARS} years ahead in all). Every "
        "scheduled action of your payouts due by your new sandbox time is applied at once, "
        "in due-time order (after your payouts the processor has yet to take and the PSP "
        "outcomes it has yet to apply, which came before them), and the call waits (a few "
        "seconds at most) until they are: the "
        f"`{SETTLED_HEADER}` header says whether they all were (webhook retries included: an "
        "endpoint that answers slowly can take longer).\n" + SCRIPTS_DESCRIPTION
    ),
    openapi_extra=documented_body(AdvanceClockRequest),
)
async def advance_clock(
    request: Request,
    merchant: CurrentMerchant,
    idempotency: IdempotencyDep,
    session: SessionDep,
    settings: SettingsDep,
    request_id: RequestId,
    public_ids: PublicIdsDep,
) -> Response:

    async def operation() -> tuple[int, bytes]:
        body = await read_body(request, AdvanceClockRequest)
        await session.execute(
            insert(SandboxClock)
            .values(merchant_id=merchant.id, offset_seconds=body.seconds, updated_at=utcnow())
            .on_duplicate_key_update(
                offset_seconds=SandboxClock.offset_seconds + body.seconds,
                # Never back: an advance that waited for another's lock was stamped before it.
                updated_at=func.greatest(SandboxClock.updated_at, utcnow()),
            )
        )
        await session.execute(_RECORD_ADVANCE, {"merchant_id": merchant.id})
        offset, real, sandbox = await _clock(session, merchant.id)
        if offset > MAX_OFFSET_SECONDS:  # rolled back with the request
            raise ValidationFailed.on(
                "seconds",
                f"would take your clock more than {MAX_OFFSET_YEARS} years ahead (it is "
                f"{offset - body.seconds} seconds ahead)",
            )
        data = {
            **_clock_json(offset, real, sandbox),
            "advancedSeconds": body.seconds,
            "due": await _actions(session, public_ids, merchant.id, applied=False, due_by=sandbox),
            "webhookRetriesReleased": await release_retries_due(
                session, merchant.id, offset_before=offset - body.seconds, correlation_id=request_id
            ),
        }
        return 200, success_body(data, "Clock advanced")

    response = await idempotency.run(request, session, operation)
    if response.status_code == 200:
        # The advance committed: its 200 stands, whether its wait runs out of the call's time
        # or meets the database down. A 503 there, and a dashboard form sent again (a new key)
        # advanced the clock twice (dashboard outages review).
        with not_counted():
            try:
                settled = await _wait_until_settled(
                    session, merchant.id, settings.sandbox_clock_wait_seconds
                )
            except (SQLAlchemyError, ConnectionError) as error:
                if not is_outage(error):
                    raise
                log.warning("clock advanced; its wait for what it made due failed: %r", error)
                settled = False
        response.headers[SETTLED_HEADER] = "true" if settled else "false"
    return response


async def _wait_until_settled(session: AsyncSession, merchant_id: str, within: float) -> bool:
    """Whether none of the merchant's actions or webhook retries due by its sandbox time is left,
    nor any payout the processor has yet to submit (it schedules the payout's steps from when
    the payout started: those in the advanced window are due when it has), nor any PSP outcome
    it has yet to apply (the actions due after it wait for it), polled until so or `within`
    seconds have passed."""
    deadline = time.monotonic() + within
    actions_due = (
        select(func.count())
        .select_from(ScheduledAction)
        .where(
            ScheduledAction.merchant_id == merchant_id,
            ScheduledAction.applied_at.is_(None),
            ScheduledAction.due_at <= sandbox_now_of(merchant_id),
        )
        .scalar_subquery()
    )
    unsubmitted = (
        select(func.count())
        .select_from(Payout)
        # ix_payouts_merchant_status_created. A stuck payout, as the scheduler judges it: one
        # made every advance wait out its limit and answer unsettled (clock review).
        .where(*waiting_to_be_submitted(merchant_id))
        .scalar_subquery()
    )
    unapplied = (
        select(func.count())
        .select_from(PspCallback)
        .join(Payout, Payout.id == PspCallback.payout_id)
        .where(*outcome_waiting_to_be_applied(merchant_id))
        .scalar_subquery()
    )
    due = select(actions_due + unsubmitted + unapplied)
    while True:
        left = (await session.scalar(due) or 0) + await count_retries_due(session, merchant_id)
        await session.rollback()  # end the read; nothing is held while waiting
        if not left:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(WAIT_POLL_SECONDS)
