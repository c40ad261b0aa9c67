"""When the scheduler takes a payout waiting over START_WAIT_LIMIT for stuck: once the processor
has worked an hour, as its heartbeat's check finds (Scheduler.note_working)."""

import time
from collections.abc import Iterator
from unittest.mock import MagicMock

import pytest

from contracts.clock import START_WAIT_LIMIT
from processor_service.schedule import Timetable
from processor_service.scheduler import NOT_WORKING_AFTER_SECONDS, Scheduler

HOUR = START_WAIT_LIMIT.total_seconds()


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    ticking = Clock()
    monkeypatch.setattr(time, "monotonic", ticking)
    yield ticking


def a_scheduler() -> Scheduler:
    return Scheduler(MagicMock(), Timetable(), poll_interval_seconds=0.25)


def test_hours_spent_waiting_for_rabbitmq_at_the_start_are_not_work(clock: Clock) -> None:
    """It counted from its start, and a processor started in a night with RabbitMQ down took
    every payout of the night for stuck once the broker came back (final review)."""
    scheduler = a_scheduler()
    clock.now += 4 * HOUR  # its start waiting for the broker
    assert not scheduler.claim_rules().stuck_ones_aside
    scheduler.note_working(True)
    clock.now += HOUR - 1
    assert not scheduler.claim_rules().stuck_ones_aside
    clock.now += 1
    assert scheduler.claim_rules().stuck_ones_aside


def test_a_check_failing_for_a_moment_does_not_start_the_hour_again(clock: Clock) -> None:
    """A pool busy for the check's 2 s, once an hour, kept a truly stuck payout holding its
    merchant's later steps for ever (final review)."""
    scheduler = a_scheduler()
    scheduler.note_working(True)
    clock.now += 2 * HOUR
    scheduler.note_working(False)
    clock.now += 5
    scheduler.note_working(True)
    assert scheduler.claim_rules().stuck_ones_aside


def test_checks_failing_for_a_minute_start_the_hour_again(clock: Clock) -> None:
    scheduler = a_scheduler()
    scheduler.note_working(True)
    clock.now += 2 * HOUR
    scheduler.note_working(False)
    clock.now += NOT_WORKING_AFTER_SECONDS
    scheduler.note_working(False)
    assert not scheduler.claim_rules().stuck_ones_aside
    scheduler.note_working(True)
    clock.now += HOUR
    assert scheduler.claim_rules().stuck_ones_aside
