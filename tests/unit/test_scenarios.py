"""The contract's scenario table, row by row: which outcome the mock PSP gives a payout."""

from decimal import Decimal

import pytest

from contracts.domain.scenarios import Decision, Outcome, decide

ORDINARY = Decimal("1500.00")


@pytest.mark.parametrize(
    ("amount", "account_number", "attempt", "outcome"),
    [
        # amount >= 100,000.00 -> IN_REVIEW, whatever the account says (first match wins)
        (Decimal("100000.00"), "03001234567", 1, Outcome.IN_REVIEW),
        (Decimal("100000.00"), "1234567890000001", 1, Outcome.IN_REVIEW),
        (Decimal("250000.50"), "1234567890000003", 1, Outcome.IN_REVIEW),
        (Decimal("10000000.00"), "1234567890000002", 2, Outcome.IN_REVIEW),
        # one paisa below the threshold falls through to the account rules
        (Decimal("99999.99"), "1234567890000001", 1, Outcome.SUCCESS),
        (Decimal("99999.99"), "1234567890000005", 1, Outcome.ON_HOLD),
        # account ends 0001 -> SUCCESS at once
        (ORDINARY, "1234567890000001", 1, Outcome.SUCCESS),
        # account ends 0002 -> a transient failure on attempt 1, then SUCCESS
        (ORDINARY, "1234567890000002", 1, Outcome.RETRY),
        (ORDINARY, "1234567890000002", 2, Outcome.SUCCESS),
        (ORDINARY, "03000000002", 1, Outcome.RETRY),
        # account ends 0003 -> FAILED
        (ORDINARY, "1234567890000003", 1, Outcome.FAILED),
        # account ends 0004 -> PENDING at the PSP
        (ORDINARY, "1234567890000004", 1, Outcome.PENDING_AT_PSP),
        # account ends 0005 -> ON_HOLD
        (ORDINARY, "1234567890000005", 1, Outcome.ON_HOLD),
        # anything else -> SUCCESS (the suffix is the last four characters only)
        (ORDINARY, "03001234567", 1, Outcome.SUCCESS),
        (ORDINARY, "1234567890000006", 1, Outcome.SUCCESS),
        (ORDINARY, "1234567890001000", 1, Outcome.SUCCESS),
        (ORDINARY, "1234567800010000", 1, Outcome.SUCCESS),
        (ORDINARY, "PK36SCBL0000001123456702", 1, Outcome.SUCCESS),
        (ORDINARY, "PK36SCBL0000001123450003", 1, Outcome.FAILED),
    ],
)
def test_scenario_table(
    amount: Decimal, account_number: str, attempt: int, outcome: Outcome
) -> None:
    assert decide(amount, account_number, attempt).outcome is outcome


def test_account_invalid_failure_is_named() -> None:
    assert decide(ORDINARY, "1234567890000003", 1) == Decision(
        Outcome.FAILED, failure_code="ACCOUNT_INVALID", reason="Account validation failed"
    )


def test_blocked_account_reason() -> None:
    assert decide(ORDINARY, "1234567890000005", 1).reason == "Account is blocked or restricted"


@pytest.mark.parametrize("account_number", ["1234567890000001", "03001234567"])
def test_success_carries_no_failure(account_number: str) -> None:
    decision = decide(ORDINARY, account_number, 1)
    assert (decision.failure_code, decision.reason) == (None, None)
