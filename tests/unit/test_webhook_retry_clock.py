"""When a failed webhook attempt's next retry is due, on the merchant's sandbox clock."""

from datetime import datetime, timedelta

from webhook_service.delivery import Decision, Disposition, on_sandbox_clock
from webhook_service.retry_ladder import RetryStep

NOW = datetime(2026, 12, 1, 12, 0, 0)
HOUR = 3600
STEP = 600.0  # the ladder's wait after this attempt
RETRY = Decision(Disposition.RETRY, "HTTP 500", RetryStep(tier=2, delay_seconds=STEP))


def timed(*, due_at: datetime | None, released: bool, offset_seconds: int = 0) -> Decision:
    return on_sandbox_clock(
        RETRY, due_at=due_at, released=released, offset_seconds=offset_seconds, now=NOW
    )


def test_without_a_clock_the_retry_waits_the_ladders_step() -> None:
    decision = timed(due_at=None, released=False)
    assert decision.step == RetryStep(tier=2, delay_seconds=STEP)
    assert decision.due_at == NOW + timedelta(seconds=STEP) and not decision.released


def test_a_retry_late_in_real_time_still_waits_its_whole_step() -> None:
    late = timed(due_at=NOW - timedelta(hours=1), released=False)
    assert late.step is not None and late.step.delay_seconds == STEP
    assert late.due_at == NOW + timedelta(seconds=STEP)


def test_due_times_are_on_the_merchants_sandbox_clock() -> None:
    decision = timed(due_at=None, released=False, offset_seconds=2 * HOUR)
    assert decision.due_at == NOW + timedelta(seconds=2 * HOUR + STEP)
    assert decision.step is not None and decision.step.delay_seconds == STEP


def test_a_released_retry_whose_next_step_the_clock_passed_too_goes_on_at_once() -> None:
    # The clock moved 4 h past a retry due 1 h ago (sandbox): the next is due 10 min after it.
    sandbox_now = NOW + timedelta(hours=4)
    due = sandbox_now - timedelta(hours=1)
    decision = timed(due_at=due, released=True, offset_seconds=4 * HOUR)
    assert decision.due_at == due + timedelta(seconds=STEP)
    assert decision.step is not None and decision.step.delay_seconds == 0
    assert decision.released


def test_a_released_retry_whose_next_step_is_ahead_waits_for_the_rest_of_it() -> None:
    sandbox_now = NOW + timedelta(hours=1)
    due = sandbox_now - timedelta(seconds=100)
    decision = timed(due_at=due, released=True, offset_seconds=HOUR)
    assert decision.step is not None and decision.step.delay_seconds == STEP - 100
    assert decision.due_at == due + timedelta(seconds=STEP) and not decision.released
