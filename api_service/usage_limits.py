"""Per-merchant limits counted in MySQL, so every API worker and process shares them: requests
per second per API key, idempotency keys stored per day.

Each meter is a fixed-window counter: one row per (merchant, meter), reset in place when a new
window starts, so the table holds merchants x meters rows and needs no clean-up. One statement
counts a hit and reads the count back: `LAST_INSERT_ID(expr)` puts the new count in the OK
packet's insert id (the cursor's lastrowid), so there is no second round trip, on MySQL 8 and
MariaDB alike. The window is taken from the database clock, so workers whose clocks drift still
agree on it.
"""

import functools
import math
import time
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, cast

from sqlalchemy import CursorResult, Integer, bindparam, case, func
from sqlalchemy.dialects.mysql import Insert, insert
from sqlalchemy.ext.asyncio import AsyncSession

from api_service.errors import ApiError, IdempotencyQuotaExceeded, RateLimited
from contracts.db.engine import utcnow
from contracts.db.models import UsageCounter, table_of


@dataclass(frozen=True)
class Meter:
    name: str
    window_seconds: int

    def seconds_until_next_window(self) -> int:
        """Whole seconds (at least 1) a client should wait: the value of `Retry-After`."""
        now = utcnow().replace(tzinfo=UTC).timestamp()  # the windows are the database's
        return max(1, math.ceil(self.window_seconds - now % self.window_seconds))


REQUESTS_PER_SECOND = Meter("requests", 1)
IDEMPOTENCY_KEYS_PER_DAY = Meter("idempotency_keys", 86_400)  # UTC days
# How long a process refuses a merchant over its daily quota before it asks the database again.
REFUSAL_REMEMBERED_SECONDS = 1.0


async def count_hit(session: AsyncSession, merchant_id: str, meter: Meter, hits: int = 1) -> int:
    """Count `hits` in the current window; the window's hits so far, these included.

    The counter row stays locked until the caller's transaction ends: commit soon."""
    result = cast(
        CursorResult[Any],
        await session.execute(
            _counting(meter.window_seconds),
            {"b_merchant": merchant_id, "b_meter": meter.name, "b_hits": hits},
        ),
    )
    return int(result.lastrowid)


@functools.cache
def _counting(window_seconds: int) -> Insert:
    """The counting statement of a window length, built once (every request runs it)."""
    counters = table_of(UsageCounter)
    window = func.unix_timestamp().op("DIV")(window_seconds)
    hits = bindparam("b_hits", type_=Integer)
    return (
        insert(counters)
        .values(
            merchant_id=bindparam("b_merchant"),
            meter=bindparam("b_meter"),
            window_index=window,
            hits=func.last_insert_id(hits),
        )
        # Assignments run left to right: `hits` must see the old window before it is replaced. A
        # statement's window is when it started: one that waited for the row lock while the
        # window turned counts in the newer window the row is in, and leaves it there.
        .on_duplicate_key_update(
            [
                (
                    "hits",
                    func.last_insert_id(
                        case(
                            (counters.c.window_index >= window, counters.c.hits + hits), else_=hits
                        )
                    ),
                ),
                ("window_index", func.greatest(counters.c.window_index, window)),
            ]
        )
    )


async def enforce_limit(
    session: AsyncSession,
    merchant_id: str,
    meter: Meter,
    limit: int,
    error: type[ApiError],
) -> None:
    """Count a hit; `error` (a 429) with `Retry-After` when the window's hits exceed `limit`."""
    if await count_hit(session, merchant_id, meter) > limit:
        raise error(headers={"Retry-After": str(meter.seconds_until_next_window())})


async def limit_request_rate(session: AsyncSession, merchant_id: str, per_second: int) -> None:
    await enforce_limit(session, merchant_id, REQUESTS_PER_SECOND, per_second, RateLimited)


@dataclass
class KeyQuota:
    """Idempotency keys stored per merchant per UTC day, counted in MySQL in batches.

    The counter row of a merchant is a hot row: counting every key would lock it in every create
    of that merchant. Each API process counts `batch` keys (a thousandth of the quota) before it
    adds them to the shared counter, so a merchant can exceed the quota by less than `batch` keys
    per API process; a quota under 1,000 is counted exactly. Once over, this process refuses the
    merchant without asking for `REFUSAL_REMEMBERED_SECONDS`, then asks the shared counter again:
    the day is the database's, which this process's clock does not know. A key counted in a
    transaction that rolls back is given back (`uncount`): a refused request stores its refusal
    under its key in a second transaction, which counts it again."""

    per_day: int
    _pending: dict[str, int] = field(default_factory=dict)
    _refused_until: dict[str, float] = field(default_factory=dict)  # time.monotonic()

    @property
    def batch(self) -> int:
        return max(1, self.per_day // 1000)

    async def count(self, session: AsyncSession, merchant_id: str) -> int:
        """Count one key stored in the caller's transaction; IdempotencyQuotaExceeded when over.
        How many keys it added to the shared counter in that transaction (0: none yet)."""
        refused_until = self._refused_until.get(merchant_id)
        if refused_until is not None and time.monotonic() < refused_until:
            raise _over_quota()
        pending = self._pending.get(merchant_id, 0) + 1
        if pending < self.batch and refused_until is None:
            self._pending[merchant_id] = pending
            return 0
        self._pending[merchant_id] = 0
        try:
            hits = await count_hit(session, merchant_id, IDEMPOTENCY_KEYS_PER_DAY, pending)
        except BaseException:
            # Its transaction rolls back: the keys stored before this one, which this count
            # carried, are pending again (a lock wait timed out, or the request was cancelled,
            # and they were counted nowhere: cancellation review).
            self.uncount(merchant_id, added=pending)
            raise
        if hits > self.per_day:
            self._refused_until[merchant_id] = time.monotonic() + REFUSAL_REMEMBERED_SECONDS
            raise _over_quota()
        self._refused_until.pop(merchant_id, None)
        return pending

    def uncount(self, merchant_id: str, *, added: int) -> None:
        """The transaction of a `count` that returned `added` rolled back: its key was not
        stored, and the other keys it added to the shared counter are pending again."""
        pending = self._pending.get(merchant_id, 0) - 1 + added
        self._pending[merchant_id] = max(pending, 0)


def _over_quota() -> IdempotencyQuotaExceeded:
    retry_after = IDEMPOTENCY_KEYS_PER_DAY.seconds_until_next_window()
    return IdempotencyQuotaExceeded(headers={"Retry-After": str(retry_after)})
