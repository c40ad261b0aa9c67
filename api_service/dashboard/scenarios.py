"""The scenario table beside the payout form, read from the rules the processor applies
(contracts.domain.scenarios), so a new rule shows up here by itself. In production mode it shows
what runs there: no scripted suffixes, and no Simulate (both test mode only)."""

from dataclasses import dataclass
from datetime import timedelta

from contracts.domain.money import format_amount
from contracts.domain.scenarios import (
    REVIEW_THRESHOLD,
    SCRIPTS,
    SUFFIX_RULES,
    Decision,
    Outcome,
    ScriptStep,
)

_OUTCOMES = {
    Outcome.SUCCESS: "SUCCESS at once",
    Outcome.RETRY: "RETRY (attempt 1), then SUCCESS",
    Outcome.PENDING_AT_PSP: "PENDING at the PSP: waits",
    Outcome.ON_HOLD: "ON_HOLD: waits",
    Outcome.IN_REVIEW: "IN_REVIEW: waits",
    Outcome.SLOW_PSP: "PROCESSING: a slow PSP",
    Outcome.REVERSED: "REVERSED: the bank returned it",
}
# What a waiting payout's page offers in test mode (the IPN settles it in production too).
_SIMULATED = frozenset({Outcome.PENDING_AT_PSP, Outcome.ON_HOLD, Outcome.IN_REVIEW})
# In a script, RETRY waits for the script's next step (not for a second, successful attempt).
_SCRIPTED_RETRY = "RETRY"
# Any other suffix succeeds; this one fills a valid account number that names no rule.
PLAIN_SUFFIX = "1234"
# Account numbers the table fills in: a wallet mobile (03XXXXXXXXX) or a 12-digit bank account.
ACCOUNT_PREFIXES = {"WALLET": "0300123", "BANK": "12345678"}


@dataclass(frozen=True)
class Scenario:
    trigger: str
    outcome: str
    suffix: str | None = None  # fills the account number ending with it
    amount: str | None = None  # fills the amount


def describe(decision: Decision, *, sandbox: bool = True) -> str:
    if decision.outcome is Outcome.FAILED:
        return f"FAILED, {decision.failure_code or decision.reason}"
    text = _OUTCOMES.get(decision.outcome, decision.reason or decision.outcome.value)
    return f"{text} (Simulate)" if sandbox and decision.outcome in _SIMULATED else text


def _duration(delay: timedelta) -> str:
    minutes = int(delay.total_seconds() // 60)
    return f"{minutes // 60} h" if minutes % 60 == 0 else f"{minutes} min"


def describe_script(steps: tuple[ScriptStep, ...]) -> str:
    """Step by step, in sandbox time (the clock the sandbox can advance)."""
    said = [
        _SCRIPTED_RETRY if step.decision.outcome is Outcome.RETRY else describe(step.decision)
        for step in steps
    ]
    later = [
        f"after {_duration(step.after)}: {text}"
        for step, text in zip(steps[1:], said[1:], strict=True)
    ]
    return "; ".join([said[0], *later])


def scenarios(*, sandbox: bool) -> list[Scenario]:
    """The table's rows; `sandbox`: test mode, with the scripts and Simulate."""
    threshold = format_amount(REVIEW_THRESHOLD)
    return [
        Scenario(
            f"amount ≥ {REVIEW_THRESHOLD:,.2f}",
            describe(Decision(Outcome.IN_REVIEW), sandbox=sandbox),
            amount=threshold,
            suffix=PLAIN_SUFFIX,  # a whole payout: "Use" left the account number empty (400)
        ),
        *(
            Scenario(f"account ends {suffix}", describe(decision, sandbox=sandbox), suffix=suffix)
            for suffix, decision in SUFFIX_RULES.items()
        ),
        *(
            Scenario(f"account ends {suffix}", describe_script(steps), suffix=suffix)
            for suffix, steps in (SCRIPTS.items() if sandbox else ())
        ),
        Scenario("any other account", _OUTCOMES[Outcome.SUCCESS], suffix=PLAIN_SUFFIX),
    ]
