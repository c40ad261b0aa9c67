"""Sandbox webhook chaos (pure): which attempt of an event a merchant's chaos setting changes, and
how. The delivery (webhook_service.delivery) asks these functions and carries the answer out.

The kinds an event is picked for are laid out on its attempts, one kind per attempt, in this
order, and the attempts past them are clean:

1. `fail_first_attempts` injected failures (no HTTP call);
2. a stale timestamp (for `stale_timestamp_percent` % of events);
3. the previous secret only (with `old_secret_only`, once a rotation's grace period is over:
   during it the previous secret still signs every attempt, and a receiver that accepts it is
   right);
4. a hold: out of order for a payout.processing event (with `out_of_order`), else a delay (with
   `delay_seconds`); the attempt itself is sent clean.

So with one kind on, it is the event's first attempt; with several, a receiver that refuses
what it must refuse meets every one of them (the mangled attempts come before the hold, whose
attempt it should accept). One kind per attempt keeps each attempt's label, and the readiness
report's verdict on it, unambiguous. A duplicate is not an attempt of its own: it follows a 2xx.

Chaos applies to an event's first delivery only (generation 0): a resend is sent clean, which
also keeps the schedule out of the way of the resend a merchant asks for to get an event at last.
Attempts are counted across the first delivery's whole life, replays from the parking lot
included, so a schedule longer than the retry ladder carries on after a replay.

Shares are a hash of the event id and the kind: the same event always gets the same answer
(repeatable tests, and a redelivered message behaves like the original), and the kinds pick
independently of each other.
"""

import hashlib
import math

from contracts.domain.statuses import EVENT_FOR_STATUS, TERMINAL_STATUSES, EventType
from contracts.webhook_chaos import (
    MAX_CHAOS_DELAY_SECONDS,
    MAX_INJECTED_FAILURES,
    ChaosKind,
    WebhookChaos,
)

INJECTED_FAILURE_ERROR = "sandbox chaos: injected failure"
# The events after which a held payout.processing event is sent (out of order).
FINAL_EVENT_TYPES = frozenset(EVENT_FOR_STATUS[status] for status in TERMINAL_STATUSES)
HOLDS = frozenset({ChaosKind.DELAYED, ChaosKind.OUT_OF_ORDER})


def picks(event_id: str, kind: ChaosKind, percent: int) -> bool:
    """Whether the event is among the `percent` % of events that `kind` applies to."""
    digest = hashlib.sha256(f"{kind.value}:{event_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100 < percent


def delay_seconds(chaos: WebhookChaos) -> int:
    return max(0, min(chaos.delay_seconds, MAX_CHAOS_DELAY_SECONDS))


def hold_of(chaos: WebhookChaos, event_type: EventType) -> ChaosKind | None:
    """How the event's hold attempt is held, if at all."""
    if chaos.out_of_order and event_type is EventType.PROCESSING:
        return ChaosKind.OUT_OF_ORDER
    if delay_seconds(chaos) > 0:
        return ChaosKind.DELAYED
    return None


def schedule(
    chaos: WebhookChaos, event_id: str, event_type: EventType, *, has_retired_secret: bool
) -> tuple[ChaosKind, ...]:
    """The chaos of the event's attempts, in order (the module's docstring says why)."""
    kinds = [ChaosKind.INJECTED_FAILURE] * max(
        0, min(chaos.fail_first_attempts, MAX_INJECTED_FAILURES)
    )
    if picks(event_id, ChaosKind.STALE_TIMESTAMP, chaos.stale_timestamp_percent):
        kinds.append(ChaosKind.STALE_TIMESTAMP)
    if chaos.old_secret_only and has_retired_secret:
        kinds.append(ChaosKind.OLD_SECRET)
    hold = hold_of(chaos, event_type)
    if hold is not None:
        kinds.append(hold)
    return tuple(kinds)


def attempt_chaos(
    chaos: WebhookChaos,
    event_id: str,
    event_type: EventType,
    *,
    attempts_made: int,
    generation: int,
    has_retired_secret: bool,
) -> ChaosKind | None:
    """The chaos of the event's next attempt, after `attempts_made` attempts."""
    if generation > 0:
        return None
    kinds = schedule(chaos, event_id, event_type, has_retired_secret=has_retired_secret)
    return kinds[attempts_made] if attempts_made < len(kinds) else None


def sends_duplicate(chaos: WebhookChaos, event_id: str, *, generation: int) -> bool:
    """Whether a 2xx attempt of the event is followed by the same webhook once more."""
    return generation == 0 and picks(event_id, ChaosKind.DUPLICATE, chaos.duplicate_percent)


def extra_lease_seconds(
    chaos: WebhookChaos,
    event_id: str,
    event_type: EventType,
    *,
    timeout_seconds: float,
    out_of_order_limit_seconds: float,
) -> int:
    """How much longer than an ordinary attempt's the lease of the event's delivery must run:
    the longest hold its attempt may get, plus a second HTTP call for a duplicate. Taken
    whichever attempt this is (the attempt count is read with the lease): a longer lease only
    delays the takeover of a delivery whose consumer died."""
    hold = hold_of(chaos, event_type)
    seconds = 0.0
    if hold is ChaosKind.OUT_OF_ORDER:
        seconds += out_of_order_limit_seconds
    elif hold is ChaosKind.DELAYED:
        seconds += delay_seconds(chaos)
    if picks(event_id, ChaosKind.DUPLICATE, chaos.duplicate_percent):
        seconds += timeout_seconds
    return math.ceil(seconds)
