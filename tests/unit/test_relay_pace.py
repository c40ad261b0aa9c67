"""The outbox relay's poll pace: quick while rows keep coming, slow once the outbox is quiet."""

from processor_service.relay_service import PollPace


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
