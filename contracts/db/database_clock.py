"""This host's clock, set by the database server's: the times every service stamps are on one
clock.

A service stamps most times itself (a payout's `created_at`, a scripted step's due time, a
webhook retry's) and they are compared with other hosts' stamps and with the database's own
clock (`UTC_TIMESTAMP(6)`: leases, due steps, rate-limit windows). A host whose clock was
minutes off moved scripted steps by as much (a `0009` retry fired at once), ordered
`GET /payouts` by the writers' clocks and set off `payouts reconcile`'s alarms (clock-skew
review). So each process reads the database's clock as it opens a connection, before the
connection serves anything (one `SELECT`, never on a request's path), and `DATABASE_CLOCK.now()`
is its host's clock plus the offset measured.

The database read its clock somewhere in the round trip, so a reading bounds the offset to a
window that long. The offset moves only when it falls outside the window, and then by the least
that puts it inside (its error: at most a round trip, well under a millisecond on a LAN): on one
host (compose, `make run`, the tests) it stays zero, and the clock steps back only when a
reading proves it ahead, by no more than it was. Re-centred on each reading, a quick reading
after a slow one stepped it back by the slow one's jitter (diff review). A connection lives at
most `pool_recycle` (30 minutes), so a drifting host is measured again at least that often.
"""

from datetime import UTC, datetime, timedelta
from typing import Any


def host_now() -> datetime:
    """This host's own clock, naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


class DatabaseClock:
    def __init__(self) -> None:
        self.offset = timedelta(0)  # the database's clock minus this host's

    def now(self) -> datetime:
        """The database's time, naive UTC (as stored in DATETIME(6) columns), read on this
        host's clock."""
        return host_now() + self.offset

    def measure(self, dbapi_connection: Any, _connection_record: Any = None) -> None:
        """Reads the database's clock on a new connection (the pool's `connect` event)."""
        cursor = dbapi_connection.cursor()
        try:
            before = host_now()
            cursor.execute("SELECT UTC_TIMESTAMP(6)")
            database_now: datetime = cursor.fetchone()[0]
            after = host_now()
        finally:
            cursor.close()
        # The offsets this reading allows: from the database's clock read as the round trip
        # ended to the same read as it began.
        lowest, highest = database_now - after, database_now - before
        self.offset = min(max(self.offset, lowest), highest)


DATABASE_CLOCK = DatabaseClock()
