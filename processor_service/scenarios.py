"""The sandbox's test scenarios: which outcome the mock PSP gives a payout. Pure; first match wins.

| rule                      | outcome                                              |
| amount >= 100,000.00      | IN_REVIEW, waits for an IPN decision                 |
| account ends 0001         | SUCCESS at once                                      |
| account ends 0002         | attempt 1: RETRY after a broker delay; then SUCCESS  |
| account ends 0003         | FAILED, ACCOUNT_INVALID                              |
| account ends 0004         | PENDING at the PSP, waits for an IPN                 |
| account ends 0005         | ON_HOLD, waits for an IPN                            |
| anything else             | SUCCESS                                              |
"""

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

REVIEW_THRESHOLD = Decimal("100000.00")


class Outcome(StrEnum):
    IN_REVIEW = "IN_REVIEW"
    SUCCESS = "SUCCESS"
    RETRY = "RETRY"
    FAILED = "FAILED"
    PENDING_AT_PSP = "PENDING_AT_PSP"
    ON_HOLD = "ON_HOLD"


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    failure_code: str | None = None
    reason: str | None = None


IN_REVIEW = Decision(Outcome.IN_REVIEW)
SUCCESS = Decision(Outcome.SUCCESS)
TRANSIENT_FAILURE = Decision(Outcome.RETRY, reason="Transient PSP error; retrying")
ACCOUNT_INVALID = Decision(
    Outcome.FAILED, failure_code="ACCOUNT_INVALID", reason="Account validation failed"
)
PENDING_AT_PSP = Decision(Outcome.PENDING_AT_PSP)
ACCOUNT_BLOCKED = Decision(Outcome.ON_HOLD, reason="Account is blocked or restricted")


def decide(amount: Decimal, account_number: str, attempt: int) -> Decision:
    """The outcome of processing attempt number `attempt` (1-based) of a payout."""
    if amount >= REVIEW_THRESHOLD:
        return IN_REVIEW
    suffix = account_number[-4:]
    if suffix == "0001":
        return SUCCESS
    if suffix == "0002":
        return TRANSIENT_FAILURE if attempt == 1 else SUCCESS
    if suffix == "0003":
        return ACCOUNT_INVALID
    if suffix == "0004":
        return PENDING_AT_PSP
    if suffix == "0005":
        return ACCOUNT_BLOCKED
    return SUCCESS
