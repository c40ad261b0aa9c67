"""Is work flowing? Payouts stuck between statuses, scheduled actions (a scripted step, an expiry)
long due and not run, PSP outcomes accepted and not applied, outbox rows waiting too long to be
published, outbox rows the relay parked, and webhook deliveries no attempt has taken up. Part of
`payouts reconcile`, next to the ledger invariants (contracts.reconcile)."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    SQLColumnExpression,
    and_,
    exists,
    func,
    or_,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from contracts.clock import MerchantTime
from contracts.db.engine import database_now_plus, seconds_between, utcnow
from contracts.db.models import (
    Balance,
    Merchant,
    OutboxMessage,
    Payout,
    PayoutEvent,
    PspCallback,
    ScheduledAction,
    WebhookDelivery,
)
from contracts.domain.money import format_amount
from contracts.domain.scheduled_actions import Action, Result
from contracts.domain.statuses import PayoutStatus
from contracts.settings import Settings
from contracts.waiting_retries import (
    overdue,
    pending_unattempted,
    undelivered_event,
)
from contracts.webhooks import DeliveryStatus

MAX_REPORTED = 20
# An outbox row unsent this long after it fell due: the outbox relay is down or behind.
MAX_OUTBOX_LAG = timedelta(seconds=60)


# How far before the stuck threshold the Operations page looks for events without a delivery
# row (see _listings): this many minutes of events on each view, not a day.
UNDELIVERED_EVENTS_WINDOW = timedelta(minutes=10)


@dataclass(frozen=True)
class Thresholds:
    stuck_after: timedelta = timedelta(minutes=5)
    max_outbox_lag: timedelta = MAX_OUTBOX_LAG
    # A payout in RETRY waits this long for its next attempt by design
    # (PAYOUTS_PROCESSOR_RETRY_DELAY_SECONDS, up to an hour): "stuck" counts from then on.
    retry_delay: timedelta = timedelta(0)
    # How far before the stuck threshold events without a delivery row are looked for: the
    # Operations page's window; `payouts reconcile` reads the relay's sweep's whole day.
    undelivered_events_lookback: timedelta = UNDELIVERED_EVENTS_WINDOW

    @classmethod
    def of(cls, settings: Settings, **overrides: timedelta) -> "Thresholds":
        return cls(
            retry_delay=timedelta(seconds=settings.processor_retry_delay_seconds), **overrides
        )


def _stuck(thresholds: Thresholds) -> ColumnElement[bool]:
    """PROCESSING, RETRY (past its retry delay), or PENDING not yet submitted to the PSP,
    untouched for too long, and waiting for no scheduled step. (PENDING with a PSP reference,
    ON_HOLD and IN_REVIEW wait for an IPN by design; a scripted attempt waits for its next step
    in sandbox time: a 0007 payout is PROCESSING for 30 min, a 0009 one in RETRY for up to 30
    min. With a 30-minute retry delay, a payout in RETRY for 10 was called stuck.)"""
    stuck_since = utcnow() - thresholds.stuck_after
    return and_(
        or_(
            and_(
                Payout.status == PayoutStatus.RETRY.value,
                Payout.updated_at < stuck_since - thresholds.retry_delay,
            ),
            and_(
                or_(
                    Payout.status == PayoutStatus.PROCESSING.value,
                    and_(
                        Payout.status == PayoutStatus.PENDING.value,
                        Payout.psp_reference.is_(None),
                    ),
                ),
                Payout.updated_at < stuck_since,
            ),
        ),
        ~exists().where(  # ix_scheduled_actions_payout
            ScheduledAction.payout_id == Payout.id,
            ScheduledAction.hold_cycle == Payout.hold_cycle,
            ScheduledAction.applied_at.is_(None),
            ScheduledAction.action != Action.EXPIRE_QUEUE.value,  # a started payout's: no step
        ),
    )


def _covered_queue_head(queued_before: datetime) -> ColumnElement[bool]:
    """Over payouts and balances: an active merchant's oldest QUEUED payout, queued or touched
    before `queued_before`, that its available balance covers (ix_payouts_merchant_status_created).
    A deactivated merchant's queue waits for its activation."""
    earlier = aliased(Payout)
    return and_(
        Payout.status == PayoutStatus.QUEUED.value,
        Payout.updated_at < queued_before,
        Balance.merchant_id == Payout.merchant_id,
        Payout.amount <= Balance.available,
        exists().where(Merchant.id == Payout.merchant_id, Merchant.is_active.is_(True)),
        ~exists().where(
            earlier.merchant_id == Payout.merchant_id,
            earlier.status == PayoutStatus.QUEUED.value,
            tuple_(earlier.created_at, earlier.id) < tuple_(Payout.created_at, Payout.id),
        ),
    )


def accepted_outcome_waiting(accepted_by: datetime) -> ColumnElement[bool]:
    """Over payouts and psp_callbacks: an outcome of the payout's current attempt accepted by
    `accepted_by` and not applied (ix_psp_callbacks_unapplied). An outcome of an earlier attempt
    is never applied, and not waited for."""
    return and_(
        PspCallback.payout_id == Payout.id,
        PspCallback.hold_cycle == Payout.hold_cycle,
        PspCallback.applied_at.is_(None),
        PspCallback.received_at <= accepted_by,
    )


async def _and_the_rest(
    session: AsyncSession, lines: list[str], condition: ColumnElement[bool], what: str
) -> list[str]:
    """`lines` (at most MAX_REPORTED of them, the oldest), and a line saying how many more match
    `condition`: 23 stuck payouts were reported as 20 problems, without a word of the others."""
    if len(lines) < MAX_REPORTED:
        return lines
    total = await session.scalar(select(func.count()).where(condition)) or 0
    rest = total - len(lines)
    return [*lines, f"... and {rest} more {what} not listed"] if rest > 0 else lines


@dataclass(frozen=True)
class _Listing:
    """Rows meeting `condition` make a `line` each (of their `columns`, the first of which orders
    them, the oldest first)."""

    condition: ColumnElement[bool]
    columns: tuple[SQLColumnExpression[Any], ...]
    line: Callable[..., str]
    what: str

    async def lines(self, session: AsyncSession) -> list[str]:
        """At most MAX_REPORTED lines, and how many more."""
        rows = await session.execute(
            select(*self.columns)
            .where(self.condition)
            .order_by(self.columns[0])
            .limit(MAX_REPORTED)
        )
        return await _and_the_rest(
            session, [self.line(*row) for row in rows], self.condition, self.what
        )


def failed_action_still_awaited() -> ColumnElement[bool]:
    """A scheduled action that failed (ix_scheduled_actions_result) while its payout is still
    where the action was to move it on from."""
    return and_(
        ScheduledAction.result == Result.ERROR.value,
        exists().where(
            Payout.id == ScheduledAction.payout_id,
            Payout.hold_cycle == ScheduledAction.hold_cycle,
            Payout.status == ScheduledAction.expected_status,
        ),
    )


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}"


def _listings(thresholds: Thresholds, time: MerchantTime) -> tuple[_Listing, ...]:
    stuck_since = utcnow() - thresholds.stuck_after
    return (
        _Listing(
            _stuck(thresholds),
            (Payout.updated_at, Payout.id, Payout.status),
            lambda since, payout, status: (
                f"payout {payout} stuck in {status} since {_when(since)} UTC"
            ),
            "stuck payouts",
        ),
        # After each commit the queue's head is not covered by the available balance
        # (contracts/payout_queue.py): money that comes back starts it. One covered that long
        # waits for nothing but its expiry, the money there all along.
        _Listing(
            _covered_queue_head(stuck_since),
            (Payout.updated_at, Payout.id, Payout.merchant_id, Payout.amount, Balance.available),
            lambda since, payout, merchant, amount, available: (
                f"payout {payout} of merchant {merchant} QUEUED since {_when(since)} UTC: the "
                f"available balance {format_amount(available)} covers its "
                f"{format_amount(amount)} and it has not started (was the merchant activated "
                "other than by `payouts merchant activate`?)"
            ),
            "covered queued payouts not started",
        ),
        # The processor's scheduler applies (or skips) each action within seconds of its due
        # time on its merchant's clock: one long due and not applied says the scheduler is not
        # running. (A payout waiting for one is not "stuck" above: a 0007 payout is PROCESSING
        # for 30 minutes.)
        _Listing(
            and_(
                ScheduledAction.applied_at.is_(None),
                ScheduledAction.due_at < time.at(ScheduledAction.merchant_id, stuck_since),
            ),
            (ScheduledAction.due_at, ScheduledAction.payout_id, ScheduledAction.action),
            lambda due, payout, action: (
                f"payout {payout}: its {action} due at {_when(due)} "
                "(sandbox time) has not run (is the processor's scheduler running?)"
            ),
            "scheduled actions long due",
        ),
        # An action whose application failed (ERROR, logged by the processor with the error)
        # while its payout still waits for it: an IN_REVIEW payout whose decision window's
        # expiry failed keeps its funds held until an IPN decides, a QUEUED one waits on.
        _Listing(
            failed_action_still_awaited(),
            (ScheduledAction.applied_at, ScheduledAction.payout_id, ScheduledAction.action),
            lambda failed, payout, action: (
                f"payout {payout}: its {action} failed at {_when(failed)} UTC and the payout "
                "still waits for it (the processor's log says why)"
            ),
            "scheduled actions that failed",
        ),
        # The PSP got its 200 and will not send the outcome again: its ApplyPspOutcome was lost
        # (the relay sends one again after PAYOUTS_PROCESSOR_STALLED_RETRY_SECONDS), or no
        # processor is taking it. A payout PENDING at the PSP is not stuck by its status: it
        # waits for an IPN.
        _Listing(
            accepted_outcome_waiting(stuck_since),
            (PspCallback.received_at, Payout.id, Payout.status, PspCallback.outcome),
            lambda received, payout, status, outcome: (
                f"payout {payout} ({status}): PSP outcome "
                f"{outcome} accepted at {_when(received)} UTC and not applied (is the processor "
                "running?)"
            ),
            "accepted PSP outcomes not applied",
        ),
        # Attempted as soon as a webhook service takes its message; a message lost on the way is
        # sent again after PAYOUTS_WEBHOOK_STALLED_RETRY_SECONDS (processor_service/
        # stalled_deliveries.py). Still PENDING past the threshold: no webhook service takes it.
        _Listing(
            pending_unattempted(stuck_since),
            (WebhookDelivery.updated_at, WebhookDelivery.event_type, WebhookDelivery.event_id),
            lambda since, event_type, event: (
                f"webhook {event_type} (event {event}) PENDING "
                f"since {_when(since)} UTC with no attempt (is the webhook service running?)"
            ),
            "webhooks PENDING with no attempt",
        ),
        # A webhook service makes an event's delivery row when it takes its message (parked at
        # once for a merchant without a URL): none past the threshold, no webhook service took
        # it. With the webhook services down the line above said nothing until the relay's
        # sweep made the rows (after PAYOUTS_WEBHOOK_STALLED_RETRY_SECONDS), nor ever with the
        # relay down too. The Operations page reads only the events of its window before the
        # threshold, not the whole day the sweep reads once: past it, the sweep made their rows
        # (the line above), or the relay is down. `payouts reconcile` reads the day: with the
        # relay and the webhook services down once the outbox was sent, no outbox lag shows,
        # and it said "clean" of events 15 minutes old no webhook service ever took up
        # (reconcile review).
        _Listing(
            undelivered_event(stuck_since - thresholds.undelivered_events_lookback, stuck_since),
            (PayoutEvent.created_at, PayoutEvent.type, PayoutEvent.id),
            lambda created, event_type, event: (
                f"webhook {event_type} (event {event}) recorded at {_when(created)} UTC and "
                "taken up by no webhook service (is the webhook service running?)"
            ),
            "events no webhook service took up",
        ),
        # A retry is attempted when its wait in a TTL queue is over; a lost message is sent
        # again by the relay (processor_service/stalled_retries.py), which no webhook service may
        # take.
        _Listing(
            and_(
                WebhookDelivery.status == DeliveryStatus.RETRYING.value,
                overdue(  # late on the merchant's clock as it read `stuck_after` ago
                    seconds_between(
                        WebhookDelivery.next_attempt_at,
                        time.at(WebhookDelivery.merchant_id, stuck_since),
                    ),
                    time,
                ),
            ),
            (WebhookDelivery.next_attempt_at, WebhookDelivery.event_type, WebhookDelivery.event_id),
            lambda due, event_type, event: (
                f"webhook {event_type} (event {event}) retry due at "
                f"{_when(due)} (sandbox time) not attempted (is the webhook service running?)"
            ),
            "webhook retries overdue",
        ),
    )


async def pipeline_problems(
    session: AsyncSession, thresholds: Thresholds, time: MerchantTime
) -> list[str]:
    """What is not flowing; due times read on `time` (test mode's sandbox clocks, or real time)."""
    problems: list[str] = []
    for listing in _listings(thresholds, time):
        problems += await listing.lines(session)
    now = utcnow()
    oldest_lagging = (
        await session.execute(
            select(OutboxMessage.id, OutboxMessage.routing_key, OutboxMessage.created_at)
            .add_columns(func.count().over())
            .where(
                UNSENT,
                OutboxMessage.created_at < now - thresholds.max_outbox_lag,
            )
            .order_by(OutboxMessage.created_at, OutboxMessage.id)
            .limit(1)
        )
    ).first()
    if oldest_lagging is not None:
        row_id, routing_key, created_at, lagging = oldest_lagging
        problems.append(
            f"outbox lag {(now - created_at).total_seconds():.0f}s: {lagging} unsent "
            f"message(s) older than {thresholds.max_outbox_lag.total_seconds():.0f}s, the "
            f"oldest outbox row {row_id} (routing key {routing_key!r}) (is the outbox relay "
            "running?)"
        )
    problems += await _and_the_rest(
        session,
        [
            f"outbox row {row.id} parked after {row.publish_attempts} refused publishes "
            f"(exchange {row.exchange!r}, routing key {row.routing_key!r}): {row.last_error}"
            for row in await parked_outbox_rows(session, MAX_REPORTED)
        ],
        PARKED,
        "parked outbox rows",
    )
    return problems


# An outbox row the relay gave up on (it waits for `payouts outbox retry`).
PARKED = OutboxMessage.sent_at.is_(None) & OutboxMessage.parked_at.is_not(None)
# An outbox row the relay will send: due, or backing off after a refusal.
UNSENT = OutboxMessage.sent_at.is_(None) & OutboxMessage.parked_at.is_(None)


async def relay_keeps_up(session: AsyncSession) -> bool:
    """No outbox row the relay will send waited over MAX_OUTBOX_LAG for it (over the unsent
    rows of ix_outbox_claim): a row never tried, since it was written (such a row is due since
    the epoch, contracts/outbox.py); a row the broker refused, since its next try fell due (it
    backs off for up to an hour before it parks: timed from its writing, one such row said the
    relay lagged all that hour)."""
    cutoff = database_now_plus(-int(MAX_OUTBOX_LAG.total_seconds()))
    never_tried = OutboxMessage.publish_attempts == 0
    overdue = or_(
        and_(never_tried, OutboxMessage.created_at < cutoff),
        and_(~never_tried, OutboxMessage.next_attempt_at < cutoff),
    )
    return not await session.scalar(select(exists().where(UNSENT, overdue)))


async def parked_outbox_rows(session: AsyncSession, limit: int) -> list[OutboxMessage]:
    """Rows the relay gave up on, oldest first; they wait for `payouts outbox retry`."""
    rows = await session.scalars(
        select(OutboxMessage).where(PARKED).order_by(OutboxMessage.id).limit(limit)
    )
    return list(rows)


async def count_parked_deliveries(session: AsyncSession, merchant_id: str | None = None) -> int:
    """Webhook deliveries PARKED (of `merchant_id`, if given): in the parking lot, or parked with
    no message there (no webhook URL, secrets not opened), which their merchant resends."""
    statement = (
        select(func.count())
        .select_from(WebhookDelivery)
        .where(WebhookDelivery.status == DeliveryStatus.PARKED.value)
    )
    if merchant_id is not None:
        statement = statement.where(WebhookDelivery.merchant_id == merchant_id)
    return int(await session.scalar(statement) or 0)
