"""The outbox relay's poll pace: quick while rows keep coming, slow once the outbox is quiet; and
the wait between rounds the relay loop takes from it (RelayPacing)."""

import pytest

from processor_service.outbox_relay import RoundResult
from processor_service.relay_service import MAX_BACKOFF_SECONDS, PollPace, RelayPacing


def pace() -> PollPace:
    return PollPace(busy_interval=0.01, idle_interval=0.05, busy_for=1.0)


def test_an_idle_relay_polls_at_the_idle_interval() -> None:
    relay = pace()
    assert relay.interval(0, round_started=100.0) == 0.05
    assert relay.interval(0, round_started=100.05) == 0.05


def test_a_round_that_found_rows_makes_the_relay_busy() -> None:
    relay = pace()
    assert relay.interval(3, round_started=100.0) == 0.01


def test_empty_rounds_within_the_busy_period_keep_the_busy_pace() -> None:
    relay = pace()
    relay.interval(1, round_started=100.0)
    assert relay.interval(0, round_started=100.5) == 0.01
    assert relay.interval(0, round_started=100.99) == 0.01


def test_the_relay_turns_idle_a_busy_period_after_its_last_rows() -> None:
    relay = pace()
    relay.interval(1, round_started=100.0)
    relay.interval(2, round_started=100.6)  # rows again: the busy period starts over
    assert relay.interval(0, round_started=101.5) == 0.01
    assert relay.interval(0, round_started=101.6) == 0.05


BATCH = 200


def pacing() -> RelayPacing:
    return RelayPacing(pace(), first_backoff=0.05)


def test_a_round_waits_what_is_left_of_the_interval_after_its_own_time() -> None:
    """Rows committed during a round wait one interval from its start, not the round's time on
    top of it: the publishes' confirms are on every payout's way to its webhook, twice."""
    relay = pacing()
    waited = relay.after_round(
        RoundResult(claimed=5, sent=5), batch_size=BATCH, round_started=100.0, now=100.004
    )
    assert waited == pytest.approx(0.006)  # the busy interval, 10 ms, from the round's start
    assert (
        relay.after_round(
            RoundResult(claimed=5, sent=5), batch_size=BATCH, round_started=100.01, now=100.03
        )
        == 0.0
    )  # a round longer than the interval: the next one at once


def test_a_full_batch_is_followed_by_the_next_round_at_once() -> None:
    relay = pacing()
    assert (
        relay.after_round(
            RoundResult(claimed=BATCH, sent=BATCH), batch_size=BATCH, round_started=5.0, now=5.0
        )
        == 0.0
    )


def test_a_quiet_outbox_is_polled_at_the_idle_interval() -> None:
    relay = pacing()
    waited = relay.after_round(RoundResult(0, 0), batch_size=BATCH, round_started=9.0, now=9.001)
    assert waited == pytest.approx(0.049)


def test_a_round_whose_every_row_was_refused_waits_a_whole_interval_after_it() -> None:
    relay = pacing()
    waited = relay.after_round(RoundResult(3, 0), batch_size=BATCH, round_started=1.0, now=1.5)
    assert waited == 0.01  # busy: it found rows; and not shortened by its own half second


def test_failures_and_a_silent_broker_back_off_doubling_up_to_the_cap_until_a_round_works() -> None:
    relay = pacing()
    silent = RoundResult(claimed=4, sent=0, unanswered=4)
    waits = [
        relay.after_failure(),
        relay.after_round(silent, batch_size=BATCH, round_started=0.0, now=0.0),
    ]
    waits += [relay.after_failure() for _ in range(10)]
    assert waits[:4] == [0.05, 0.1, 0.2, 0.4]
    assert max(waits) == MAX_BACKOFF_SECONDS == waits[-1]
    relay.after_round(RoundResult(1, 1), batch_size=BATCH, round_started=0.0, now=0.0)
    assert relay.after_failure() == 0.05  # a round that worked starts the backoff over


def test_the_relay_is_idle_until_rows_then_a_busy_period_after_them() -> None:
    """The loop probes before claiming only while idle (OutboxRelay.relay_once probe_first)."""
    relay = pace()
    assert relay.idle(100.0)
    relay.interval(1, round_started=100.0)
    assert not relay.idle(100.0)
    assert not relay.idle(100.9)
    assert relay.idle(101.0)
