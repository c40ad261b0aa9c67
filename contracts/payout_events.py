"""What a payout's transaction announces: its status events (the event log row and the message
for the webhook service) and its processing commands, collected while the transaction decides and
written with two multi-row INSERTs (`payout_events`, `outbox`), each event serialized once."""

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.db.engine import utcnow
from contracts.db.models import Payout, PayoutEvent, table_of
from contracts.domain.statuses import EventType, PspOutcome, legacy_event_name
from contracts.messages import ApplyPspOutcome, PayoutStatusChanged, ProcessPayout
from contracts.outbox import outbox_row, write_outbox
from contracts.payout_view import PayoutView
from contracts.topology import (
    APPLY_PSP_OUTCOME_KEY,
    BULK_EVENTS_EXCHANGE,
    BULK_PAYOUT_COMMANDS,
    COMMANDS_EXCHANGE,
    DEFAULT_EXCHANGE,
    EVENTS_EXCHANGE,
    PAYOUT_COMMANDS,
)


def new_event_id() -> str:
    return f"evt_{secrets.token_hex(12)}"


_ONE_MILLISECOND = timedelta(milliseconds=1)
_INSERT_EVENTS = insert(table_of(PayoutEvent))  # built once: neither rebuilt nor keyed per call


@dataclass
class Announcements:
    """A payout created several at once (`Payout.in_bulk`) has its commands and events relayed
    after those of payouts started alone (outbox.IN_BULK_DUE_AT), then processed and delivered
    from queues of their own, consumed beside theirs (topology.BULK_PAYOUT_COMMANDS,
    topology.webhook_events_queue): one merchant's payroll does not hold other merchants'
    payouts behind it. For the payout's whole life, so that none of its events overtakes an
    earlier one still in a payroll's backlog."""

    correlation_id: str | None
    _events: list[dict[str, Any]] = field(default_factory=list)
    _messages: list[dict[str, Any]] = field(default_factory=list)
    _last_stamps: dict[str, datetime] = field(default_factory=dict)

    def _stamp(self, payout_id: str) -> datetime:
        """Now, to the millisecond the wire shows, and after the payout's previous event of this
        transaction: a processing event and its outcome were stamped alike, and a merchant
        keeping the state of the event whose `createdAt` is newest (the README's advice for
        webhooks out of order) could not tell which came last."""
        now = utcnow()
        stamp = now.replace(microsecond=now.microsecond // 1000 * 1000)
        previous = self._last_stamps.get(payout_id)
        if previous is not None and stamp <= previous:
            stamp = previous + _ONE_MILLISECOND
        self._last_stamps[payout_id] = stamp
        return stamp

    def after(self, payout_id: str, stamp: datetime) -> None:
        """The payout's next event here comes after `stamp`, its last event's: an earlier
        transaction's, which may have been stamped in the same millisecond."""
        previous = self._last_stamps.get(payout_id)
        if previous is None or previous < stamp:
            self._last_stamps[payout_id] = stamp

    def event(self, payout: Payout, event_type: EventType) -> PayoutStatusChanged:
        """Snapshot the payout as it is now into an event, for the log and the webhook service."""
        event = PayoutStatusChanged(
            id=new_event_id(),
            type=event_type,
            event=legacy_event_name(event_type),
            created_at=self._stamp(payout.id),
            merchant_id=payout.merchant_id,
            payout=PayoutView.of(payout),
        )
        body = event.to_json()
        self._events.append(
            {
                "id": event.id,
                "merchant_id": payout.merchant_id,
                "payout_id": payout.id,
                "type": event_type.value,
                "body": body,
                "created_at": event.created_at,
            }
        )
        self._messages.append(
            outbox_row(
                event,
                body=body,
                exchange=BULK_EVENTS_EXCHANGE if payout.in_bulk else EVENTS_EXCHANGE,
                routing_key=event_type.value,
                payout_id=payout.id,
                merchant_id=payout.merchant_id,
                correlation_id=self.correlation_id,
                in_bulk=payout.in_bulk,
            )
        )
        return event

    def process(self, payout: Payout, *, delay_ms: int | None = None) -> None:
        """A ProcessPayout command; with a delay it goes through the retry queue."""
        delayed = delay_ms is not None
        queue = BULK_PAYOUT_COMMANDS if payout.in_bulk else PAYOUT_COMMANDS
        self._messages.append(
            outbox_row(
                ProcessPayout(
                    payout_id=payout.id,
                    merchant_id=payout.merchant_id,
                    attempt=payout.attempts,
                    hold_cycle=payout.hold_cycle,
                ),
                exchange=DEFAULT_EXCHANGE if delayed else COMMANDS_EXCHANGE,
                routing_key=queue.retry_queue(1) if delayed else queue.routing_keys[0],
                payout_id=payout.id,
                merchant_id=payout.merchant_id,
                correlation_id=self.correlation_id,
                delay_ms=delay_ms,
                in_bulk=payout.in_bulk,
            )
        )

    def apply_outcome(
        self,
        payout: Payout,
        *,
        event_id: str,
        outcome: PspOutcome,
        psp_reference: str | None,
        failure_reason: str | None,
    ) -> None:
        """An ApplyPspOutcome command: apply the outcomes accepted for the payout's attempt."""
        self._messages.append(
            outbox_row(
                ApplyPspOutcome(
                    callback_event_id=event_id,
                    payout_id=payout.id,
                    merchant_id=payout.merchant_id,
                    hold_cycle=payout.hold_cycle,
                    outcome=outcome,
                    psp_reference=psp_reference,
                    failure_reason=failure_reason,
                ),
                exchange=COMMANDS_EXCHANGE,
                routing_key=APPLY_PSP_OUTCOME_KEY,
                payout_id=payout.id,
                merchant_id=payout.merchant_id,
                correlation_id=self.correlation_id,
            )
        )

    async def write(self, session: AsyncSession) -> None:
        """Everything collected so far, in at most two statements; then start afresh."""
        await write_announcements(session, [self])


async def write_announcements(session: AsyncSession, batch: Sequence[Announcements]) -> None:
    """Everything the batch's announcements collected, in at most two statements for all of
    them; then each starts afresh."""
    events = [row for announcements in batch for row in announcements._events]
    if events:
        await session.execute(_INSERT_EVENTS, events)
    await write_outbox(session, [row for announcements in batch for row in announcements._messages])
    for announcements in batch:
        announcements._events, announcements._messages = [], []
