"""How long the webhook service keeps writing attempts the database did not record
(webhook_service.delivery.RecordWaits)."""

from sqlalchemy.exc import OperationalError, ProgrammingError

from webhook_service.delivery import RECORD_OUTAGE_WAITS, RECORD_RETRY_WAITS, RecordWaits


def _error(code: int) -> OperationalError:
    return OperationalError("UPDATE ...", {}, Exception(code, "refused"))


GONE = _error(2006)  # the server has gone away
READ_ONLY = _error(1290)  # a failover's read-only server refuses the write
HELD = _error(1205)  # a lock wait timed out
TIMED_OUT = _error(1969)  # max_statement_time


def _waits(error: Exception, waits: RecordWaits | None = None) -> list[float]:
    taken, waits = [], waits or RecordWaits()
    while (step := waits.after(error)) is not None:
        wait, waits = step
        taken.append(wait)
    return taken


def test_a_database_down_or_refusing_writes_is_tried_again_for_five_minutes() -> None:
    """A read-only server answers reads and refuses writes: with the short waits, an attempt
    its endpoint took was sent again (late fixes review)."""
    assert _waits(GONE) == _waits(READ_ONLY) == list(RECORD_OUTAGE_WAITS)
    assert 300 <= sum(RECORD_OUTAGE_WAITS) < 310


def test_a_row_lock_or_a_statement_timeout_is_tried_again_twice_briefly() -> None:
    """A cause that lasts would hold every other record of the service for 5 minutes."""
    assert _waits(HELD) == _waits(TIMED_OUT) == list(RECORD_RETRY_WAITS)


def test_the_waits_of_an_outage_leave_a_row_lock_its_own() -> None:
    """Counted together, an outage used up the waits of the row lock that followed it, and a
    row held as the database came back sent the whole batch again (diff review)."""
    waits = RecordWaits()
    for _ in RECORD_OUTAGE_WAITS:
        step = waits.after(GONE)
        assert step is not None
        waits = step[1]
    assert waits.after(GONE) is None
    assert _waits(HELD, waits) == list(RECORD_RETRY_WAITS)


def test_a_bug_is_not_written_again() -> None:
    bug = ProgrammingError("UPDATE ...", {}, Exception(1054, "Unknown column"))
    assert RecordWaits().after(bug) is None
