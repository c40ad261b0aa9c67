"""The queue's pure rules: which statuses hold funds, and the strict FIFO head."""

from decimal import Decimal

from contracts.db.models import Payout
from contracts.domain.statuses import (
    EVENT_FOR_STATUS,
    FUNDS_HELD_STATUSES,
    QUEUE_TRANSITIONS,
    TERMINAL_STATUSES,
    EventType,
    PayoutStatus,
    PspOutcome,
    legacy_event_name,
    psp_outcome_allowed,
)
from contracts.payout_queue import _covered_in_order

S = PayoutStatus


def test_queued_holds_nothing_and_is_not_terminal() -> None:
    assert S.QUEUED not in FUNDS_HELD_STATUSES
    assert S.QUEUED not in TERMINAL_STATUSES
    assert set(PayoutStatus) - TERMINAL_STATUSES - {S.QUEUED} == FUNDS_HELD_STATUSES


def test_queued_leaves_only_for_pending_or_failed_and_no_psp_outcome_applies() -> None:
    assert {to for source, to in QUEUE_TRANSITIONS if source is S.QUEUED} == {S.PENDING, S.FAILED}
    assert EVENT_FOR_STATUS[S.QUEUED] is EventType.QUEUED
    assert (EventType.QUEUED.value, EventType.DEQUEUED.value) == (
        "payout.queued",
        "payout.dequeued",
    )
    assert legacy_event_name(EventType.DEQUEUED) == "PAYOUT_UPDATED"
    assert not any(psp_outcome_allowed(S.QUEUED, outcome) for outcome in PspOutcome)


def payouts(*amounts: str) -> list[Payout]:
    return [Payout(id=str(index), amount=Decimal(amount)) for index, amount in enumerate(amounts)]


def test_the_head_that_does_not_fit_blocks_the_ones_behind_it() -> None:
    queue = payouts("100.00", "300.00", "50.00")
    assert [p.id for p in _covered_in_order(queue, Decimal("150.00"))] == ["0"]
    assert [p.id for p in _covered_in_order(queue, Decimal("450.00"))] == ["0", "1", "2"]
    assert _covered_in_order(queue, Decimal("99.99")) == []
