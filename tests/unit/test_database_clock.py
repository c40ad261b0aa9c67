"""contracts.db.database_clock against a fake connection whose round trip a test chooses: the
offset moves only when a reading falls outside what it allows, and by the least it needs."""

from datetime import datetime, timedelta
from typing import Any

import pytest

from contracts.db import database_clock
from contracts.db.database_clock import DatabaseClock

SKEW = timedelta(minutes=2)  # the database's clock ahead of this host's


class Host:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 6, 12, 0, 0)

    def __call__(self) -> datetime:
        return self.now


class Connection:
    """`SELECT UTC_TIMESTAMP(6)` takes `there` to reach the server, which reads its clock
    (`skew` ahead of the host's) then, and `back` to answer."""

    def __init__(self, host: Host, there: timedelta, back: timedelta, skew: timedelta) -> None:
        self.host, self.there, self.back, self.skew = host, there, back, skew
        self.read: datetime | None = None

    def cursor(self) -> Any:
        connection = self

        class Cursor:
            def execute(self, _sql: str) -> None:
                connection.host.now += connection.there
                connection.read = connection.host.now + connection.skew
                connection.host.now += connection.back

            def fetchone(self) -> tuple[datetime | None]:
                return (connection.read,)

            def close(self) -> None:
                pass

        return Cursor()


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Host:
    host = Host()
    monkeypatch.setattr(database_clock, "host_now", host)
    return host


def test_a_quick_reading_after_a_slow_one_does_not_step_the_clock_back(host: Host) -> None:
    """A first round trip of 200 ms whose server read its clock late, then a quick one:
    re-centred on each, the clock stepped back 100 ms between two stamps (diff review)."""
    clock = DatabaseClock()
    clock.measure(Connection(host, timedelta(milliseconds=200), timedelta(0), SKEW))
    host.now += timedelta(milliseconds=10)
    stamped_before = clock.now()

    quick = timedelta(microseconds=100)
    clock.measure(Connection(host, quick, quick, SKEW))

    assert clock.now() >= stamped_before
    assert abs(clock.now() - (host.now + SKEW)) <= 2 * quick


def test_a_reading_that_proves_the_clock_ahead_moves_it_back_the_least_it_must(
    host: Host,
) -> None:
    clock = DatabaseClock()
    clock.offset = SKEW + timedelta(seconds=1)  # a second ahead of the database

    clock.measure(Connection(host, timedelta(milliseconds=1), timedelta(milliseconds=1), SKEW))

    assert clock.offset == SKEW + timedelta(milliseconds=1)  # the window's upper edge
