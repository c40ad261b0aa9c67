"""The retry ladder: tiers, jitter, Retry-After, parking."""

import math
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.settings import Settings
from contracts.topology import SLOT_WAIT_TIER
from webhook_service.retry_ladder import (
    BUSY_WAITS_IN_FIRST_TIER,
    SLOT_WAIT_SECONDS,
    RetryLadder,
    RetryStep,
    parse_retry_after,
    retry_after_seconds,
)

LADDER = RetryLadder.of([5, 300, 1800])
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("attempt", "step"),
    [(1, RetryStep(1, 5.0)), (2, RetryStep(2, 300.0)), (3, RetryStep(3, 1800.0))],
)
def test_each_failed_attempt_waits_its_tier(attempt: int, step: RetryStep) -> None:
    assert LADDER.after_failure(attempt, draw=0.5) == step


@pytest.mark.parametrize(
    ("ladder", "busy_waits", "step"),
    [
        (LADDER, 0, RetryStep(1, 5.0)),
        (LADDER, BUSY_WAITS_IN_FIRST_TIER - 1, RetryStep(1, 5.0)),
        (LADDER, BUSY_WAITS_IN_FIRST_TIER, RetryStep(SLOT_WAIT_TIER, SLOT_WAIT_SECONDS)),
        (LADDER, 1000, RetryStep(SLOT_WAIT_TIER, SLOT_WAIT_SECONDS)),
        (RetryLadder.of([5]), 1000, RetryStep(SLOT_WAIT_TIER, SLOT_WAIT_SECONDS)),
    ],
)
def test_waiting_for_a_slow_endpoints_slot_moves_to_the_slot_wait_queue_after_a_while(
    ladder: RetryLadder, busy_waits: int, step: RetryStep
) -> None:
    assert ladder.wait_for_a_slot(busy_waits) == step


def test_a_slot_wait_stays_well_under_the_time_the_relay_takes_a_message_for_lost() -> None:
    """Waited in the ladder's second tier (300 s), every webhook of a merchant busy for half a
    minute looked lost to the relay's sweep (PAYOUTS_WEBHOOK_STALLED_RETRY_SECONDS, 300 s), which
    sent a copy of each (the review of the change)."""
    stalled_after = Settings().webhook_stalled_retry_seconds
    assert BUSY_WAITS_IN_FIRST_TIER * LADDER.delays[0] + SLOT_WAIT_SECONDS <= stalled_after / 3


def test_a_failure_after_the_last_tier_parks() -> None:
    assert LADDER.after_failure(4, draw=0.5) is None
    assert LADDER.max_attempts == 4


@pytest.mark.parametrize(("draw", "delay"), [(0.0, 270.0), (0.5, 300.0), (0.999999, 330.0)])
def test_jitter_stays_within_ten_percent(draw: float, delay: float) -> None:
    step = LADDER.after_failure(2, draw=draw)

    assert step is not None
    assert step.delay_seconds == pytest.approx(delay, abs=0.01)
    assert step.tier == 2


def test_random_jitter_spreads_delays_inside_the_band() -> None:
    steps = [LADDER.after_failure(1) for _ in range(200)]
    delays = {step.delay_seconds for step in steps if step is not None}

    assert all(step is not None and step.tier == 1 for step in steps)
    assert all(4.5 <= delay <= 5.5 for delay in delays)
    assert len(delays) > 1


def test_a_retry_after_of_more_digits_than_a_number_holds_waits_the_longest_delay() -> None:
    """Read as unparsable, a 19-digit Retry-After got the first step's 5 seconds."""
    retry_after = retry_after_seconds(429, "9" * 25, now=NOW)

    assert LADDER.after_failure(1, retry_after=retry_after, draw=0.5) == RetryStep(
        LADDER.tiers, LADDER.longest_delay
    )


def test_a_longer_retry_after_is_honoured_in_a_tier_at_least_that_long() -> None:
    step = LADDER.after_failure(1, retry_after=120, draw=0.5)

    assert step == RetryStep(tier=2, delay_seconds=120.0)


@pytest.mark.parametrize(
    ("retry_after", "tier"),
    [(6, 1), (10, 1), (400, 2), (600, 2), (601, 3)],
)
def test_a_retry_after_up_to_twice_a_tiers_base_waits_in_that_tier(
    retry_after: float, tier: int
) -> None:
    """A 6-second Retry-After went to the 300-second tier, where it waited behind that tier's
    head: about five minutes for six seconds asked."""
    assert LADDER.after_failure(1, retry_after=retry_after, draw=0.5) == RetryStep(
        tier, float(retry_after)
    )


def test_a_shorter_retry_after_does_not_shorten_the_ladder() -> None:
    assert LADDER.after_failure(2, retry_after=1, draw=0.5) == RetryStep(2, 300.0)


def test_retry_after_is_capped_at_the_longest_delay() -> None:
    assert LADDER.after_failure(1, retry_after=86_400, draw=0.5) == RetryStep(3, 1800.0)


def test_retry_after_cannot_extend_the_number_of_attempts() -> None:
    assert LADDER.after_failure(4, retry_after=1) is None


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        (format_datetime(NOW - timedelta(seconds=90), usegmt=True), 0.0),
        ("soon", None),
        ("-5", None),
        ("", None),
        (None, None),
        ("\xb2", None),  # '²' in Latin-1: isdigit() is true of it, float() refuses it
        ("\u0661\u0662", None),  # Arabic-Indic digits: a header's digits are ASCII
        ("01 Jan 99999999999999999999 00:00:00 GMT", None),  # a year past a C long
        ("01 Jan 2000 00:00:00 +99999999999999999999", None),  # an offset past a C int
        ("9" * 19, math.inf),  # more seconds than any wait: the longest
        ("0" * 30 + "7", 7.0),
    ],
)
def test_retry_after_header_forms(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


@given(st.text())
def test_any_retry_after_header_reads_as_a_wait_or_none(header: str) -> None:
    """An endpoint's header never raises: an error here escaped the attempt, which was then
    neither recorded nor counted towards parking, and ran again each time its lease expired."""
    seconds = parse_retry_after(header, now=NOW)
    assert seconds is None or seconds >= 0


@pytest.mark.parametrize(
    ("status", "honoured"), [(429, True), (503, True), (500, False), (None, False)]
)
def test_retry_after_only_on_429_and_503(status: int | None, honoured: bool) -> None:
    assert (retry_after_seconds(status, "30", now=NOW) == 30.0) is honoured


def test_ladder_comes_from_settings() -> None:
    settings = Settings(webhook_retry_delays="1, 2,4")

    ladder = RetryLadder.of(settings.webhook_retry_ladder)

    assert ladder.delays == (1.0, 2.0, 4.0)
    assert ladder.tiers == 3


@pytest.mark.parametrize("delays", [[], [0], [5, -1]])
def test_a_ladder_needs_positive_delays(delays: list[float]) -> None:
    with pytest.raises(ValueError):
        RetryLadder.of(delays)


def test_attempts_are_numbered_from_one() -> None:
    with pytest.raises(ValueError):
        LADDER.after_failure(0)


@pytest.mark.parametrize(("wait", "step"), [(15.0, RetryStep(1, 5.0)), (2.0, RetryStep(1, 2.0))])
def test_a_wait_that_is_no_step_is_looked_at_again_from_the_first_tier(
    wait: float, step: RetryStep
) -> None:
    """A dead consumer's 15-second lease went to the 300-second tier by its length."""
    assert LADDER.look_again(wait) == step
