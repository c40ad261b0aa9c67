"""The retry ladder (pure): after which failed attempt to wait how long, in which retry queue,
and when to park.

A message makes at most `tiers + 1` attempts: attempt n (1-based) that fails waits
`delays[n-1]` (± jitter, so endpoints that failed together are not retried together) in retry
tier n; a failure after the last tier parks it. On 429/503 a `Retry-After` longer than the
ladder's step is honoured, capped at the ladder's longest delay so an endpoint cannot stall its
own retries indefinitely.
"""

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from contracts.topology import SLOT_WAIT_TIER
from contracts.wire import count_or_more

DEFAULT_JITTER = 0.1
# A message sent back this many times in a row to wait for a slot of its merchant's slow endpoint
# waits longer from then on, SLOT_WAIT_SECONDS in the slot-wait queue (RetryLadder.wait_for_a_slot):
# well under PAYOUTS_WEBHOOK_STALLED_RETRY_SECONDS (300 s), past which the outbox relay takes a
# message for lost and sends a copy.
BUSY_WAITS_IN_FIRST_TIER = 6
SLOT_WAIT_SECONDS = 60.0
RETRY_AFTER_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryStep:
    tier: int  # the retry queue (1-based) that holds the message for the wait; or SLOT_WAIT_TIER
    delay_seconds: float


@dataclass(frozen=True)
class RetryLadder:
    delays: tuple[float, ...]
    jitter: float = DEFAULT_JITTER

    def __post_init__(self) -> None:
        if not self.delays or any(delay <= 0 for delay in self.delays):
            raise ValueError("a retry ladder needs at least one positive delay")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be a fraction in [0, 1)")

    @classmethod
    def of(cls, delays: Sequence[float], jitter: float = DEFAULT_JITTER) -> "RetryLadder":
        return cls(tuple(float(delay) for delay in delays), jitter)

    @property
    def tiers(self) -> int:
        return len(self.delays)

    @property
    def max_attempts(self) -> int:
        return self.tiers + 1

    @property
    def longest_delay(self) -> float:
        return max(self.delays)

    def look_again(self, wait: float) -> RetryStep:
        """A wait that is no step of the ladder (another consumer's lease running out): in the
        first tier, at most its base, then looked at again. Sent by its length, a crashed
        consumer's 15-second lease went to the 300-second tier, where a TTL queue expires only
        the message at its head: the webhook waited behind other merchants' retries."""
        return RetryStep(tier=1, delay_seconds=min(max(wait, 0.0), self.delays[0]))

    def wait_for_a_slot(self, busy_waits: int) -> RetryStep:
        """The wait of a message sent back because its merchant's slow endpoint has its share of
        calls in flight, `busy_waits` times in a row before: the first tier's base, and once the
        share has been busy for BUSY_WAITS_IN_FIRST_TIER such waits (a backlog the endpoint
        cannot take soon), SLOT_WAIT_SECONDS in the slot-wait queue. Each sent back every 5 s, a
        hanging endpoint's backlog of thousands went round the shared queue faster than the
        consumer took it, and other merchants' webhooks waited behind it (10 s with 20,000)."""
        if busy_waits < BUSY_WAITS_IN_FIRST_TIER:
            return RetryStep(tier=1, delay_seconds=self.delays[0])
        return RetryStep(tier=SLOT_WAIT_TIER, delay_seconds=SLOT_WAIT_SECONDS)

    def after_failure(
        self, attempt: int, *, retry_after: float | None = None, draw: float | None = None
    ) -> RetryStep | None:
        """The wait after failed attempt `attempt` (1-based), or None: park the message.

        `draw` in [0, 1) picks the jitter (random when omitted; 0.5 means none).
        """
        if attempt < 1:
            raise ValueError("attempts are numbered from 1")
        if attempt > self.tiers:
            return None
        step_delay = self.delays[attempt - 1]
        fraction = random.random() if draw is None else draw
        delay = step_delay * (1 + self.jitter * (2 * fraction - 1))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.longest_delay))
        return RetryStep(tier=self._tier_holding(attempt, delay), delay_seconds=delay)

    def _tier_holding(self, attempt: int, delay: float) -> int:
        """A TTL queue expires only the message at its head: a message waits as long as the one
        ahead of it, and holds up the ones behind it as long as its own wait. A wait about as
        long as its step's stays in the step's tier. A longer one (a Retry-After) goes to the
        tier with the longest base it fills, as long as it is at most twice that base (the waits
        behind it are held up at most that much); a longer one still to the first tier at least
        that long. Always the first tier at least as long sent a 6-second Retry-After to the
        300-second tier, behind waits of up to 300 seconds."""
        if delay <= self.delays[attempt - 1] * (1 + self.jitter):
            return attempt
        filled = [(base, tier) for tier, base in enumerate(self.delays, start=1) if base <= delay]
        if filled and delay <= 2 * max(filled)[0]:
            return max(filled)[1]
        return next(
            (tier for tier, base in enumerate(self.delays, start=1) if base >= delay), attempt
        )


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds (ASCII digits: a header is read
    as Latin-1, where `²` passes isdigit() and fails float()) or an HTTP date; None for anything
    else (a date whose year or offset does not fit a C long overflows in the parser).
    Delta-seconds of more digits than a number holds ask for longer than any wait: infinity,
    which the ladder caps at its longest delay."""
    if value is None:
        return None
    value = value.strip()
    seconds = count_or_more(value)
    if seconds is not None:
        return float(seconds)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    aware_now = now if now.tzinfo else now.replace(tzinfo=UTC)
    return max((when - aware_now).total_seconds(), 0.0)


def retry_after_seconds(
    status_code: int | None, header: str | None, *, now: datetime
) -> float | None:
    """The endpoint's requested wait, honoured only on 429 Too Many Requests and 503."""
    if status_code not in RETRY_AFTER_STATUSES:
        return None
    return parse_retry_after(header, now=now)
