"""One rule, for every service, for telling a database outage from a bug or bad input.

An outage (the server is down or restarting, the connection was lost, it is out of space, a lock
wait timed out, a deadlock) is nobody's fault and passes: the API answers 503, consumers retry for
as long as it lasts. Anything else from the database (DataError, IntegrityError,
ProgrammingError, an unknown column...) is a bug or input we failed to validate: the API answers
a logged 500, consumers retry a few times and then dead-letter.
"""

import re

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

LOCK_WAIT_TIMEOUT = 1205
# A table of this code's migrations missing: `payouts migrate` has yet to run (a column missing,
# 1054, is rather a bug: a 500 an alert sees).
TABLE_MISSING = 1146
# A locking read with NOWAIT that found the row held: MariaDB answers LOCK_WAIT_TIMEOUT, MySQL 8
# ER_LOCK_NOWAIT.
LOCK_REFUSED = frozenset({LOCK_WAIT_TIMEOUT, 3572})
DEADLOCK = 1213
# A lock wait timed out, NOWAIT found a row held, or a deadlock: one row another transaction
# holds may be all that failed, not the database.
ROW_LOCK_FAILURES = frozenset({*LOCK_REFUSED, DEADLOCK})
# A statement the server timed out: MariaDB's max_statement_time, MySQL's max_execution_time.
STATEMENT_TIMEOUT = frozenset({1969, 3024})
SAVEPOINT_GONE = 1305  # "SAVEPOINT ... does not exist" (also a FUNCTION or PROCEDURE)
# The server out of space (its disk, its tablespace, its temporary directory): writes refused,
# reads served. Each was a bug: the API's 500s, the processor's dead letters, the scheduler's
# actions marked ERROR for good, webhooks parked with no delivery row (out-of-space review).
OUT_OF_SPACE = frozenset(
    {
        1021,  # disk full
        1028,  # a sort aborted (its temporary file)
        1114,  # the table is full (a tablespace that cannot grow)
    }
)
# Errors that are out of space only for the system's or the storage engine's number they carry:
# a write that failed (3, 1026) or any error of the engine (1030: "Got error 139 'Too big row'"
# is a bug; second fixes review).
OUT_OF_SPACE_IF_SAID = frozenset({3, 1026, 1030})
# ENOSPC, EDQUOT; a storage engine's "no more room in the record file", "... in the index file"
_NO_SPACE_NUMBERS = frozenset({28, 122, 135, 136})
_NUMBER_SAID = re.compile(r"(?:Got error|errno:|Errcode:) ?(\d+)")

# The server takes no writes: --read-only (a replica, a primary a failover demoted), a read-only
# transaction or mode.
READ_ONLY = frozenset({1290, 1792, 1836})

# MySQL / MariaDB error numbers that mean "not now", not "never".
OUTAGE_ERROR_CODES = frozenset(
    {
        1040,  # too many connections
        1053,  # server shutdown in progress
        1203,  # user has too many connections
        1226,  # the account's own limit (MAX_USER_CONNECTIONS, MAX_QUERIES_PER_HOUR...) reached
        1129,  # host blocked after too many connection errors (until FLUSH HOSTS)
        1135,  # the server cannot create a thread (out of memory or processes)
        1037,  # the server is out of memory
        1041,  # the server is out of memory
        1637,  # too many active concurrent transactions
        *LOCK_REFUSED,  # a lock wait timed out, or NOWAIT found the row held
        DEADLOCK,  # the transaction was rolled back and may be retried
        1317,  # query interrupted (KILL QUERY, shutdown)
        1927,  # connection killed (MariaDB)
        1158,  # network read error
        1159,  # network read timeout
        1160,  # network write error
        1161,  # network write timeout
        *READ_ONLY,
        *STATEMENT_TIMEOUT,
        *OUT_OF_SPACE,
        2002,  # cannot connect through the socket
        2003,  # cannot connect to the server
        2005,  # unknown server host
        2006,  # server has gone away
        2013,  # lost connection during a query
        2014,  # commands out of sync (a half-read connection)
        2055,  # lost connection at handshake
        4031,  # disconnected by the server (MySQL 8 inactivity)
        3032,  # offline mode (MySQL 8: maintenance, or a member that left its replication group)
        3100,  # a replication hook refused the commit (MySQL group replication, mid-failover)
        3101,  # the commit was rolled back by the replication plugin (a conflict, or no quorum)
    }
)


# The connection lost, or closed by the server: what was sent last (a COMMIT) may or may not
# have been done. The other outages are answers: the statement was refused, nothing was done.
CONNECTION_LOST = frozenset({1158, 1159, 1160, 1161, 1927, 2006, 2013, 2014, 4031})


def lost_the_connection(error: BaseException) -> bool:
    return isinstance(error, DBAPIError) and database_error_code(error) in CONNECTION_LOST


def database_error_code(error: DBAPIError) -> int | None:
    """The server's error number. A deadlock inside a savepoint comes out as the savepoint gone
    (InnoDB rolled the whole transaction back, and SQLAlchemy's ROLLBACK TO SAVEPOINT failed):
    it is that deadlock, found in the context of the error raised."""
    code = _number_of(error.orig)
    savepoint_gone = code == SAVEPOINT_GONE and _message_of(error.orig).startswith("SAVEPOINT")
    if savepoint_gone and DEADLOCK in _numbers_in_context(error):
        return DEADLOCK
    return code


def _number_of(error: BaseException | None) -> int | None:
    args = getattr(error, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _message_of(error: BaseException | None) -> str:
    args: tuple[object, ...] = getattr(error, "args", ())
    message = args[1] if len(args) > 1 else None
    return message if isinstance(message, str) else ""


def _numbers_in_context(error: BaseException) -> set[int | None]:
    numbers = set()
    earlier = error.__context__
    while earlier is not None:
        numbers.add(_number_of(getattr(earlier, "orig", earlier)))
        earlier = earlier.__context__
    return numbers


def is_row_lock_failure(error: BaseException) -> bool:
    return isinstance(error, DBAPIError) and database_error_code(error) in ROW_LOCK_FAILURES


def is_statement_timeout(error: BaseException) -> bool:
    return isinstance(error, DBAPIError) and database_error_code(error) in STATEMENT_TIMEOUT


def is_outage(error: BaseException) -> bool:
    """True when the error says a dependency is unavailable, not that the work is wrong."""
    if isinstance(error, DBAPIError):
        code = database_error_code(error)
        return error.connection_invalidated or code in OUTAGE_ERROR_CODES or _no_space(error)
    return isinstance(error, PoolTimeout | OSError)


def refuses_writes(error: BaseException) -> bool:
    """The server is read-only, or out of space: it may still serve reads."""
    if not isinstance(error, DBAPIError):
        return False
    return database_error_code(error) in READ_ONLY or _no_space(error)


def _no_space(error: DBAPIError) -> bool:
    code = database_error_code(error)
    if code in OUT_OF_SPACE:
        return True
    said = _NUMBER_SAID.search(_message_of(error.orig)) if code in OUT_OF_SPACE_IF_SAID else None
    return said is not None and int(said.group(1)) in _NO_SPACE_NUMBERS
