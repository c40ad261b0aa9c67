"""database_error_code: a deadlock inside a savepoint comes out as the savepoint gone (1305), the
deadlock in its context, and is that deadlock; 1305 is also a missing FUNCTION or PROCEDURE,
which stays what it is."""

from asyncmy.errors import OperationalError as DriverError
from sqlalchemy.exc import OperationalError

from contracts.db.outages import DEADLOCK, SAVEPOINT_GONE, database_error_code


def raised_while_handling_a_deadlock(message: str) -> OperationalError:
    try:
        try:
            raise OperationalError(
                "INSERT ...", {}, DriverError(DEADLOCK, "Deadlock found when trying to get lock")
            )
        except OperationalError as deadlock:
            raise OperationalError(
                "ROLLBACK TO SAVEPOINT", {}, DriverError(SAVEPOINT_GONE, message)
            ) from deadlock
    except OperationalError as error:
        return error


def test_the_savepoint_gone_after_a_deadlock_is_the_deadlock() -> None:
    error = raised_while_handling_a_deadlock("SAVEPOINT sa_savepoint_1 does not exist")
    assert database_error_code(error) == DEADLOCK


def test_a_missing_stored_function_after_a_deadlock_is_not_a_deadlock() -> None:
    error = raised_while_handling_a_deadlock("FUNCTION payouts.nope does not exist")
    assert database_error_code(error) == SAVEPOINT_GONE


def test_the_savepoint_gone_alone_is_not_a_deadlock() -> None:
    error = OperationalError(
        "ROLLBACK TO SAVEPOINT", {}, DriverError(SAVEPOINT_GONE, "SAVEPOINT x does not exist")
    )
    assert database_error_code(error) == SAVEPOINT_GONE
