"""Payout statuses, the legal transitions between them, and the webhook event of each."""

from enum import StrEnum


class PayoutStatus(StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    RETRY = "RETRY"
    ON_HOLD = "ON_HOLD"
    IN_REVIEW = "IN_REVIEW"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    REVERSED = "REVERSED"


TERMINAL_STATUSES = frozenset({PayoutStatus.SUCCESS, PayoutStatus.FAILED, PayoutStatus.REVERSED})

# Statuses a PSP callback (IPN) or a sandbox simulation may settle.
AWAITING_PSP_DECISION = frozenset(
    {
        PayoutStatus.PENDING,
        PayoutStatus.ON_HOLD,
        PayoutStatus.IN_REVIEW,
        PayoutStatus.RETRY,
        PayoutStatus.PROCESSING,
    }
)


class PspOutcome(StrEnum):
    """What the PSP (or the sandbox) says happened to a payout."""

    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    REVERSED = "REVERSED"


def psp_outcome_allowed(current: PayoutStatus, outcome: PspOutcome) -> bool:
    """IPN: PENDING/ON_HOLD/IN_REVIEW/RETRY/PROCESSING -> SUCCESS|FAILED, SUCCESS -> REVERSED."""
    if outcome is PspOutcome.REVERSED:
        return current is PayoutStatus.SUCCESS
    return current in AWAITING_PSP_DECISION


class EventType(StrEnum):
    CREATED = "payout.created"
    PROCESSING = "payout.processing"
    RETRYING = "payout.retrying"
    SUCCEEDED = "payout.succeeded"
    FAILED = "payout.failed"
    PENDING = "payout.pending"
    ON_HOLD = "payout.on_hold"
    IN_REVIEW = "payout.in_review"
    REINITIATED = "payout.reinitiated"
    REVERSED = "payout.reversed"


EVENT_FOR_STATUS: dict[PayoutStatus, EventType] = {
    PayoutStatus.PROCESSING: EventType.PROCESSING,
    PayoutStatus.RETRY: EventType.RETRYING,
    PayoutStatus.SUCCESS: EventType.SUCCEEDED,
    PayoutStatus.FAILED: EventType.FAILED,
    PayoutStatus.PENDING: EventType.PENDING,
    PayoutStatus.ON_HOLD: EventType.ON_HOLD,
    PayoutStatus.IN_REVIEW: EventType.IN_REVIEW,
    PayoutStatus.REVERSED: EventType.REVERSED,
}


def legacy_event_name(event_type: EventType) -> str:
    """The original mock's coarse `event` field."""
    if event_type is EventType.CREATED:
        return "PAYOUT_CREATED"
    if event_type is EventType.REINITIATED:
        return "PAYOUT_REINITIATED"
    return "PAYOUT_UPDATED"
