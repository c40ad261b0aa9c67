"""The scripted suffixes (0006-0009) as data, and what each step schedules next."""

from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from contracts.db.models import Payout
from contracts.domain.scenarios import (
    NOW,
    REVIEW_THRESHOLD,
    SCRIPTS,
    SUFFIX_RULES,
    Outcome,
    decide,
    script_of,
)
from contracts.domain.scheduled_actions import Action
from processor_service.schedule import Timetable, follow_ups

ORDINARY = Decimal("1500.00")
HOUR = timedelta(hours=1)
START = datetime(2026, 1, 1, 12, 0)


def outcomes(suffix: str) -> list[tuple[timedelta, Outcome, str | None]]:
    return [
        (step.after, step.decision.outcome, step.decision.failure_code) for step in SCRIPTS[suffix]
    ]


def test_the_original_suffixes_are_not_scripted() -> None:
    assert set(SCRIPTS).isdisjoint(SUFFIX_RULES)
    assert set(SUFFIX_RULES) == {"0001", "0002", "0003", "0004", "0005"}


@pytest.mark.parametrize(
    ("suffix", "steps"),
    [
        ("0006", [(NOW, Outcome.SUCCESS, None), (48 * HOUR, Outcome.REVERSED, None)]),
        ("0007", [(NOW, Outcome.SLOW_PSP, None), (HOUR / 2, Outcome.SUCCESS, None)]),
        (
            "0008",
            [
                (NOW, Outcome.PENDING_AT_PSP, None),
                (2 * HOUR, Outcome.FAILED, "BENEFICIARY_BANK_OFFLINE"),
            ],
        ),
        (
            "0009",
            [
                (NOW, Outcome.RETRY, None),
                (HOUR / 60, Outcome.RETRY, None),
                (HOUR / 12, Outcome.RETRY, None),
                (HOUR / 2, Outcome.FAILED, "RETRIES_EXHAUSTED"),
            ],
        ),
    ],
)
def test_script_table(suffix: str, steps: list[tuple[timedelta, Outcome, str | None]]) -> None:
    assert outcomes(suffix) == steps
    # The first step is what processing decides, on any attempt of a cycle.
    assert decide(ORDINARY, f"123456{suffix}", 1).outcome is steps[0][1]
    assert decide(ORDINARY, f"123456{suffix}", 2).outcome is steps[0][1]


def test_the_review_amount_wins_over_a_script() -> None:
    assert script_of(REVIEW_THRESHOLD, "1234560006") == ()
    assert decide(REVIEW_THRESHOLD, "1234560009", 1).outcome is Outcome.IN_REVIEW
    assert script_of(ORDINARY, "1234560001") == ()


def payout(account: str, status: str, hold_cycle: int = 1) -> Payout:
    return Payout(
        id="p" * 36,
        merchant_id="m" * 36,
        amount=ORDINARY,
        account_number=account,
        status=status,
        hold_cycle=hold_cycle,
    )


def test_each_step_schedules_the_next_from_its_own_due_time() -> None:
    script = SCRIPTS["0009"]
    rows = follow_ups(
        payout("1234560009", "RETRY", 2), script=script, step=1, at=START, timetable=Timetable()
    )
    assert [
        (r["action"], r["step"], r["due_at"], r["expected_status"], r["hold_cycle"]) for r in rows
    ] == [(Action.SCRIPT_STEP.value, 2, START + timedelta(minutes=5), "RETRY", 2)]
    last = follow_ups(
        payout("1234560009", "FAILED"), script=script, step=3, at=START, timetable=Timetable()
    )
    assert last == []


@pytest.mark.parametrize("status", ["ON_HOLD", "IN_REVIEW"])
def test_waiting_for_a_decision_schedules_its_expiry(status: str) -> None:
    rows = follow_ups(
        payout("1234560005", status),
        script=(),
        step=0,
        at=START,
        timetable=Timetable(decision_sla=timedelta(hours=72)),
    )
    assert [(r["action"], r["due_at"], r["expected_status"]) for r in rows] == [
        (Action.EXPIRE_DECISION.value, START + timedelta(hours=72), status)
    ]
