"""When a failed webhook attempt's next retry is due, on the merchant's sandbox clock."""

from datetime import datetime, timedelta

from webhook_service.delivery import Decision, Disposition, on_sandbox_clock
from webhook_service.retry_ladder import RetryStep

NOW = datetime(2026, 12, 1, 12, 0, 0)  # real time
HOUR = 3600
STEP = 600.0  # the ladder's wait after this attempt
RETRY = Decision(Disposition.RETRY, "HTTP 500", RetryStep(tier=2, delay_seconds=STEP))


def timed(*, due_at: datetime | None, clock_offset: int | None, offset_seconds: int) -> Decision:
    return on_sandbox_clock(
        RETRY, due_at=due_at, clock_offset=clock_offset, offset_seconds=offset_seconds, now=NOW
    )


def wait_of(decision: Decision) -> float:
    assert decision.step is not None
    return decision.step.delay_seconds


def test_without_a_clock_the_retry_waits_the_ladders_step() -> None:
    decision = timed(due_at=None, clock_offset=None, offset_seconds=0)
    assert wait_of(decision) == STEP
    assert (decision.due_at, decision.clock_offset) == (NOW + timedelta(seconds=STEP), 0)


def test_due_times_are_on_the_merchants_sandbox_clock() -> None:
    decision = timed(due_at=None, clock_offset=None, offset_seconds=2 * HOUR)
    assert decision.due_at == NOW + timedelta(seconds=2 * HOUR + STEP)
    assert (wait_of(decision), decision.clock_offset) == (STEP, 2 * HOUR)


def test_a_retry_late_in_real_time_still_waits_its_whole_step() -> None:
    late = timed(due_at=NOW - timedelta(hours=1), clock_offset=0, offset_seconds=0)
    assert (wait_of(late), late.due_at) == (STEP, NOW + timedelta(seconds=STEP))


def test_a_retry_the_clock_jumped_past_counts_from_its_due_time_and_the_next_goes_on_at_once() -> (
    None
):
    # Waited under offset 0 and due now (on time in real time); the clock jumped 4 h meanwhile.
    due = NOW
    decision = timed(due_at=due, clock_offset=0, offset_seconds=4 * HOUR)
    assert decision.due_at == due + timedelta(seconds=STEP)
    assert wait_of(decision) == 0
    assert decision.clock_offset == 0  # the next copy knows the jump made it due, as this one did


def test_the_chain_ends_where_the_jump_ends_and_the_rest_waits_in_real_time() -> None:
    # The jump was 1 h; this retry was due 100 s before the jump's end (sandbox time).
    sandbox_now = NOW + timedelta(hours=1)
    due = sandbox_now - timedelta(seconds=100)
    decision = timed(due_at=due, clock_offset=0, offset_seconds=HOUR)
    assert wait_of(decision) == STEP - 100
    assert (decision.due_at, decision.clock_offset) == (due + timedelta(seconds=STEP), HOUR)


def test_lateness_beyond_the_jump_is_real_lateness() -> None:
    # Due 3 h ago in sandbox time, the clock jumped only 1 h since: 2 h late in real time.
    sandbox_now = NOW + timedelta(hours=1)
    due = sandbox_now - timedelta(hours=3)
    decision = timed(due_at=due, clock_offset=0, offset_seconds=HOUR)
    assert decision.due_at == sandbox_now - timedelta(hours=1) + timedelta(seconds=STEP)
    assert wait_of(decision) == 0
