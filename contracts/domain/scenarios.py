"""The sandbox's test scenarios: which outcome the mock PSP gives a payout. Pure; first match wins.
The processor applies them; verify-account reads the account rules from the same table.

| rule                      | outcome                                              |
| amount >= 100,000.00      | IN_REVIEW, waits for an IPN decision                 |
| account ends 0001         | SUCCESS at once                                      |
| account ends 0002         | attempt 1: RETRY after a broker delay; then SUCCESS  |
| account ends 0003         | FAILED, ACCOUNT_INVALID                              |
| account ends 0004         | PENDING at the PSP, waits for an IPN                 |
| account ends 0005         | ON_HOLD, waits for an IPN                            |
| account ends 0006..0009   | scripted (SCRIPTS below): several steps in sandbox time |
| anything else             | SUCCESS                                              |

The scripts run in test mode only (`scripted`): with PAYOUTS_ENV=production, 0006..0009 are
"anything else" (a step a test-mode processor scheduled still runs when due: handlers).

A scripted suffix is a list of steps: the first is the outcome of processing the payout, each
later one happens a delay of sandbox time (the merchant's clock, which the sandbox can advance)
after the step before it, if the payout is still where that step left it.
"""

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from enum import StrEnum

from contracts.domain.statuses import FailureCode

REVIEW_THRESHOLD = Decimal("100000.00")


class Outcome(StrEnum):
    IN_REVIEW = "IN_REVIEW"
    SUCCESS = "SUCCESS"
    RETRY = "RETRY"
    FAILED = "FAILED"
    PENDING_AT_PSP = "PENDING_AT_PSP"
    ON_HOLD = "ON_HOLD"
    SLOW_PSP = "SLOW_PSP"  # stays PROCESSING: the PSP has not answered yet
    REVERSED = "REVERSED"  # the bank returned a paid-out payout


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    failure_code: FailureCode | None = None
    reason: str | None = None


IN_REVIEW = Decision(Outcome.IN_REVIEW)
SUCCESS = Decision(Outcome.SUCCESS)
TRANSIENT_FAILURE = Decision(Outcome.RETRY, reason="Transient PSP error; retrying")
ACCOUNT_INVALID = Decision(
    Outcome.FAILED, failure_code=FailureCode.ACCOUNT_INVALID, reason="Account validation failed"
)
PENDING_AT_PSP = Decision(Outcome.PENDING_AT_PSP)
ACCOUNT_BLOCKED = Decision(Outcome.ON_HOLD, reason="Account is blocked or restricted")
SLOW_PSP = Decision(Outcome.SLOW_PSP)
RETURNED_BY_BANK = Decision(Outcome.REVERSED, reason="Returned by the beneficiary bank")
BANK_OFFLINE = Decision(
    Outcome.FAILED,
    failure_code=FailureCode.BENEFICIARY_BANK_OFFLINE,
    reason="The beneficiary bank is offline",
)
RETRIES_EXHAUSTED = Decision(
    Outcome.FAILED, failure_code=FailureCode.RETRIES_EXHAUSTED, reason="The PSP failed every retry"
)


# What the account number's last four digits choose; any other suffix succeeds.
SUFFIX_RULES: dict[str, Decision] = {
    "0001": SUCCESS,
    "0002": TRANSIENT_FAILURE,  # on the first attempt of a cycle only
    "0003": ACCOUNT_INVALID,
    "0004": PENDING_AT_PSP,
    "0005": ACCOUNT_BLOCKED,
}


@dataclass(frozen=True)
class ScriptStep:
    after: timedelta  # sandbox time since the step before (zero for the first)
    decision: Decision


NOW = timedelta(0)

# Scripted suffixes (test mode): what happens to the payout, step by step, in sandbox time.
# A scripted RETRY waits for its next step in sandbox time (not in a broker queue), so the
# sandbox clock can move it forward; the next step is a new attempt at the PSP.
SCRIPTS: dict[str, tuple[ScriptStep, ...]] = {
    # SUCCESS, then the bank returns the money 48 h later
    "0006": (ScriptStep(NOW, SUCCESS), ScriptStep(timedelta(hours=48), RETURNED_BY_BANK)),
    # a slow PSP: PROCESSING for 30 min, then SUCCESS
    "0007": (ScriptStep(NOW, SLOW_PSP), ScriptStep(timedelta(minutes=30), SUCCESS)),
    # PENDING at the PSP, then FAILED after 2 h
    "0008": (ScriptStep(NOW, PENDING_AT_PSP), ScriptStep(timedelta(hours=2), BANK_OFFLINE)),
    # RETRY three times on a ladder of 1 min, 5 min, 30 min, then FAILED
    "0009": (
        ScriptStep(NOW, TRANSIENT_FAILURE),
        ScriptStep(timedelta(minutes=1), TRANSIENT_FAILURE),
        ScriptStep(timedelta(minutes=5), TRANSIENT_FAILURE),
        ScriptStep(timedelta(minutes=30), RETRIES_EXHAUSTED),
    ),
}


def account_rule(account_number: str, *, scripted: bool = True) -> Decision:
    """The rule the account number alone chooses (the amount and the attempt aside); for a
    scripted suffix, its first step."""
    script = SCRIPTS.get(account_number[-4:]) if scripted else None
    if script is not None:
        return script[0].decision
    return SUFFIX_RULES.get(account_number[-4:], SUCCESS)


def script_of(
    amount: Decimal, account_number: str, *, scripted: bool = True
) -> tuple[ScriptStep, ...]:
    """The steps of the payout's script; none when it is not scripted (or goes to review)."""
    if amount >= REVIEW_THRESHOLD or not scripted:
        return ()
    return SCRIPTS.get(account_number[-4:], ())


def decide(
    amount: Decimal, account_number: str, attempt: int, *, scripted: bool = True
) -> Decision:
    """The outcome of processing attempt number `attempt` (1-based, counted from the payout's
    creation or its latest reinitiation) of a payout; for a scripted payout, its first step."""
    if amount >= REVIEW_THRESHOLD:
        return IN_REVIEW
    rule = account_rule(account_number, scripted=scripted)
    if rule is TRANSIENT_FAILURE and attempt != 1 and account_number[-4:] not in SCRIPTS:
        return SUCCESS
    return rule
