"""What MySQL 8 alone answers, judged by contracts/db/outages.py: "not now", an outage (a 503 to
retry, a consumer's wait), not a bug (a 500, a dead letter). MariaDB answers none of these."""

import pytest
from asyncmy.errors import OperationalError as DriverError
from sqlalchemy.exc import OperationalError

from contracts.db.outages import is_outage


@pytest.mark.parametrize(
    ("code", "said"),
    [
        (3032, "The server is currently in offline mode"),
        (3100, "Error on observer while running replication hook 'before_commit'."),
        (3101, "Plugin instructed the server to rollback the current transaction."),
    ],
    ids=["offline mode", "a replication hook refused the commit", "commit rolled back"],
)
def test_mysql8s_refusals_for_now_are_outages(code: int, said: str) -> None:
    """Offline mode (an operator's maintenance, a member that left its group replication) was a
    logged 500 and a dead letter (MySQL 8 review)."""
    assert is_outage(OperationalError("COMMIT", {}, DriverError(code, said)))


@pytest.mark.parametrize(
    ("code", "said"),
    [
        (1114, "The table 'outbox' is full"),
        (1021, "Disk full (/tmp/#sql_1); waiting for someone to free some space..."),
        (3, "Error writing file '/tmp/MYfd=42' (Errcode: 28 \"No space left on device\")"),
        (1026, "Error writing file './payouts/outbox.ibd' (errno: 28)"),
        (1028, "Sort aborted: Error writing file '/tmp/MYfd=42' (Errcode: 28)"),
        (1030, 'Got error 28 "No space left on device" from storage engine InnoDB'),
    ],
)
def test_a_database_out_of_space_is_an_outage(code: int, said: str) -> None:
    """Writes refused, reads served: each was a bug, a 500 and a dead letter (out-of-space
    review)."""
    assert is_outage(OperationalError("INSERT", {}, DriverError(code, said)))


@pytest.mark.parametrize(
    ("code", "said"),
    [
        (1030, 'Got error 139 "Too big row" from storage engine InnoDB'),
        (1030, 'Got error 131 "Command not supported by the engine" from storage engine'),
        (1030, 'Got error 168 "Unknown (generic) error from engine" from storage engine'),
        (3, "Error writing file '/tmp/MYfd=42' (Errcode: 9 \"Bad file descriptor\")"),
        (1026, "Error writing file './payouts/outbox.ibd' (errno: 13 \"Permission denied\")"),
    ],
)
def test_a_storage_error_that_is_not_out_of_space_is_no_outage(code: int, said: str) -> None:
    """A bug to dead-letter, not a wait for ever (second fixes review)."""
    assert not is_outage(OperationalError("INSERT", {}, DriverError(code, said)))
