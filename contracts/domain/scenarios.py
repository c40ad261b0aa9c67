"""The sandbox's test scenarios: which outcome the mock PSP gives a payout. Pure; first match wins.
The processor applies them; verify-account reads the account rules from the same table.

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


# What the account number's last four digits choose; any other suffix succeeds.
SUFFIX_RULES: dict[str, Decision] = {
    "0001": SUCCESS,
    "0002": TRANSIENT_FAILURE,  # on the first attempt of a cycle only
    "0003": ACCOUNT_INVALID,
    "0004": PENDING_AT_PSP,
    "0005": ACCOUNT_BLOCKED,
}


def account_rule(account_number: str) -> Decision:
    """The rule the account number alone chooses (the amount and the attempt aside)."""
    return SUFFIX_RULES.get(account_number[-4:], SUCCESS)


def decide(amount: Decimal, account_number: str, attempt: int) -> Decision:
    """The outcome of processing attempt number `attempt` (1-based, counted from the payout's
    creation or its latest reinitiation) of a payout."""
    if amount >= REVIEW_THRESHOLD:
        return IN_REVIEW
    rule = account_rule(account_number)
    if rule is TRANSIENT_FAILURE and attempt != 1:
        return SUCCESS
    return rule
