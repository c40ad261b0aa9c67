"""Payout statuses, the legal transitions between them, and the webhook event of each."""

from enum import StrEnum
from typing import Final


class PayoutStatus(StrEnum):
    # Queue when short (`queueIfLowBalance`): accepted, nothing held yet. It leaves only for
    # PENDING (the funds held: `payout.dequeued`) or FAILED (QUEUE_EXPIRED, nothing to release).
    QUEUED = "QUEUED"
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    RETRY = "RETRY"
    ON_HOLD = "ON_HOLD"
    IN_REVIEW = "IN_REVIEW"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    REVERSED = "REVERSED"


TERMINAL_STATUSES = frozenset({PayoutStatus.SUCCESS, PayoutStatus.FAILED, PayoutStatus.REVERSED})

# Statuses whose payout has its amount held: every status but the terminal ones and QUEUED.
FUNDS_HELD_STATUSES = frozenset(set(PayoutStatus) - TERMINAL_STATUSES - {PayoutStatus.QUEUED})

# The queue's own transitions (the processor's and the PSP's are below and in
# processor_service/transitions.py), with the event each emits:
#   (created) -> QUEUED   payout.queued    create with queueIfLowBalance, available balance short
#   QUEUED -> PENDING     payout.dequeued  funds arrived (top-up, released hold, reversal, or the
#                                          queue's head expired): held, then processed as usual
#   QUEUED -> FAILED      payout.failed    not started within PAYOUTS_QUEUED_EXPIRY_HOURS of sandbox
#                                          time (failureCode QUEUE_EXPIRED); nothing was held
QUEUE_TRANSITIONS: frozenset[tuple[PayoutStatus, PayoutStatus]] = frozenset(
    {
        (PayoutStatus.QUEUED, PayoutStatus.PENDING),
        (PayoutStatus.QUEUED, PayoutStatus.FAILED),
    }
)


class FailureCode(StrEnum):
    """A payout's `failureCode`: why it FAILED, or why it was REVERSED (its `failureReason` says
    it in words). A reversal had none: a merchant switching on the code got nothing for it."""

    ACCOUNT_INVALID = "ACCOUNT_INVALID"
    BENEFICIARY_BANK_OFFLINE = "BENEFICIARY_BANK_OFFLINE"
    RETRIES_EXHAUSTED = "RETRIES_EXHAUSTED"
    PSP_REJECTED = "PSP_REJECTED"
    DECISION_EXPIRED = "DECISION_EXPIRED"
    QUEUE_EXPIRED = "QUEUE_EXPIRED"
    RETURNED_BY_BANK = "RETURNED_BY_BANK"


FAILURE_CODE_MEANINGS: Final = {
    FailureCode.ACCOUNT_INVALID: "the account failed validation (test scenario 0003)",
    FailureCode.BENEFICIARY_BANK_OFFLINE: "the beneficiary bank was offline (scenario 0008)",
    FailureCode.RETRIES_EXHAUSTED: "every retry at the PSP failed (scenario 0009)",
    FailureCode.PSP_REJECTED: "the PSP rejected it (an IPN or a simulated outcome said FAILED)",
    FailureCode.DECISION_EXPIRED: "ON_HOLD or IN_REVIEW, no decision came within its window",
    FailureCode.QUEUE_EXPIRED: "QUEUED, never started: the available balance stayed short",
    FailureCode.RETURNED_BY_BANK: "REVERSED: the beneficiary bank returned the money",
}

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


def psp_outcome_of(status: PayoutStatus) -> PspOutcome | None:
    """The outcome a callback naming this status reports (None: none moves a payout there)."""
    return next((outcome for outcome in PspOutcome if outcome.value == status.value), None)


def psp_outcome_allowed(current: PayoutStatus, outcome: PspOutcome) -> bool:
    """IPN: PENDING/ON_HOLD/IN_REVIEW/RETRY/PROCESSING -> SUCCESS|FAILED, SUCCESS -> REVERSED."""
    if outcome is PspOutcome.REVERSED:
        return current is PayoutStatus.SUCCESS
    return current in AWAITING_PSP_DECISION


class EventType(StrEnum):
    CREATED = "payout.created"
    QUEUED = "payout.queued"  # created QUEUED: the available balance was short
    DEQUEUED = "payout.dequeued"  # QUEUED -> PENDING: its funds are held now
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
    PayoutStatus.QUEUED: EventType.QUEUED,
    PayoutStatus.PROCESSING: EventType.PROCESSING,
    PayoutStatus.RETRY: EventType.RETRYING,
    PayoutStatus.SUCCESS: EventType.SUCCEEDED,
    PayoutStatus.FAILED: EventType.FAILED,
    PayoutStatus.PENDING: EventType.PENDING,
    PayoutStatus.ON_HOLD: EventType.ON_HOLD,
    PayoutStatus.IN_REVIEW: EventType.IN_REVIEW,
    PayoutStatus.REVERSED: EventType.REVERSED,
}


# The original mock's coarse `event` field: created, reinitiated, and every other change.
LEGACY_EVENT_NAMES = ("PAYOUT_CREATED", "PAYOUT_REINITIATED", "PAYOUT_UPDATED")


def legacy_event_name(event_type: EventType) -> str:
    """The original mock's coarse `event` field."""
    created, reinitiated, updated = LEGACY_EVENT_NAMES
    if event_type is EventType.CREATED:
        return created
    if event_type is EventType.REINITIATED:
        return reinitiated
    return updated
