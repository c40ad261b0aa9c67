"""contracts.domain.statuses: the IPN transition table and webhook event names."""

import pytest

from contracts.domain.statuses import (
    EVENT_FOR_STATUS,
    FAILURE_CODE_MEANINGS,
    TERMINAL_STATUSES,
    EventType,
    FailureCode,
    PayoutStatus,
    PspOutcome,
    legacy_event_name,
    psp_outcome_allowed,
)
from contracts.payout_view import PayoutView

S = PayoutStatus
AWAITING = [S.PENDING, S.ON_HOLD, S.IN_REVIEW, S.RETRY, S.PROCESSING]

# (current status, outcome) pairs the contract allows; every other pair is INVALID_TRANSITION.
ALLOWED = {
    (status, outcome) for status in AWAITING for outcome in (PspOutcome.SUCCESS, PspOutcome.FAILED)
} | {(S.SUCCESS, PspOutcome.REVERSED)}


@pytest.mark.parametrize("outcome", list(PspOutcome))
@pytest.mark.parametrize("status", list(PayoutStatus))
def test_psp_outcome_transition_table(status: PayoutStatus, outcome: PspOutcome) -> None:
    assert psp_outcome_allowed(status, outcome) is ((status, outcome) in ALLOWED)


def test_terminal_statuses() -> None:
    assert {S.SUCCESS, S.FAILED, S.REVERSED} == TERMINAL_STATUSES


def test_every_status_after_creation_has_an_event() -> None:
    assert set(EVENT_FOR_STATUS) == set(PayoutStatus)
    assert len(set(EVENT_FOR_STATUS.values())) == len(EVENT_FOR_STATUS)


@pytest.mark.parametrize(
    ("event_type", "legacy"),
    [
        (EventType.CREATED, "PAYOUT_CREATED"),
        (EventType.REINITIATED, "PAYOUT_REINITIATED"),
        (EventType.SUCCEEDED, "PAYOUT_UPDATED"),
        (EventType.REVERSED, "PAYOUT_UPDATED"),
    ],
)
def test_legacy_event_names(event_type: EventType, legacy: str) -> None:
    assert legacy_event_name(event_type) == legacy


def test_every_failure_code_is_documented_with_its_meaning() -> None:
    """The API schema's description of `failureCode` is built from these meanings."""
    assert set(FAILURE_CODE_MEANINGS) == set(FailureCode)
    described = PayoutView.model_json_schema()["properties"]["failureCode"]["description"]
    assert all(f"`{code}`" in described for code in FailureCode)
