"""How long the webhook service keeps writing attempts the database did not record
(webhook_service.delivery.RecordWaits)."""

from sqlalchemy.exc import OperationalError, ProgrammingError

from webhook_service.delivery import RECORD_OUTAGE_WAITS, RECORD_RETRY_WAITS, RecordWaits


def _error(code: int) -> OperationalError:
    return OperationalError("UPDATE ...", {}, Exception(code, "refused"))


GONE = _error(2006)  # the server has gone away
HELD = _error(1205)  # a lock wait timed out


def _waits(after: str, error: Exception) -> list[float]:
    taken, waits = [], RecordWaits()
    while (step := getattr(waits, after)(error)) is not None:
        wait, waits = step
        taken.append(wait)
    return taken


def test_a_database_that_does_not_answer_is_read_again_for_five_minutes() -> None:
    assert _waits("after_unread", GONE) == list(RECORD_OUTAGE_WAITS)
    assert 300 <= sum(RECORD_OUTAGE_WAITS) < 310


def test_a_write_that_fails_while_the_database_answers_is_made_again_twice_briefly() -> None:
    """Its error an outage's (a lost connection) or a row lock's: a write that failed the same
    way while the database answered would have held every other record for 5 minutes."""
    assert _waits("after_unwritten", GONE) == list(RECORD_RETRY_WAITS)
    assert _waits("after_unwritten", HELD) == list(RECORD_RETRY_WAITS)


def test_the_waits_of_an_outage_leave_the_writes_their_own() -> None:
    """Counted together, an outage used up the waits of the write that followed it, and a row
    held as the database came back sent the whole batch again (diff review)."""
    waits = RecordWaits()
    for _ in RECORD_OUTAGE_WAITS:
        step = waits.after_unread(GONE)
        assert step is not None
        waits = step[1]
    assert waits.after_unread(GONE) is None
    assert waits.after_unwritten(HELD) == (RECORD_RETRY_WAITS[0], RecordWaits(waits.unread, 1))


def test_a_bug_is_not_written_again() -> None:
    bug = ProgrammingError("UPDATE ...", {}, Exception(1054, "Unknown column"))
    assert RecordWaits().after_unread(bug) is None
    assert RecordWaits().after_unwritten(bug) is None
