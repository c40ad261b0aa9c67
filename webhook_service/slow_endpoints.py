"""A fair share of the consumer for a merchant whose endpoint answers slowly. Every merchant's
messages share the prefetch, and a call holds its slot until it ends: an endpoint that hangs
(each call running to the 10-second timeout) held every slot, and every other merchant's webhooks
waited behind its payroll (about 20 minutes for 5,000 payouts). Once one of its calls took half
the timeout or more, a merchant may have only a quarter of the prefetch in flight for a minute,
and the slow merchants together half of it (four of them at a quarter each held every slot, and
the others' webhooks moved up the queue a timeout at a time); their other messages wait a little
in the first retry tier (no step of their ladder taken), so the slots go to the messages behind
them, and after six such waits in a row in the second (RetryLadder.wait_for_a_slot). An
endpoint that answers within that is never limited (a busy host's second-long answers do not
count)."""

import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager

from contracts.expiring_map import ExpiringMap
from webhook_service.in_flight import counted

REMEMBERED_SECONDS = 60.0


class SlowEndpoints:
    def __init__(
        self, max_batch: int, timeout_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_in_flight_when_slow = max(1, max_batch // 4)
        self.max_in_flight_of_the_slow = max(1, max_batch // 2)
        self.slow_call_seconds = max(1.0, timeout_seconds / 2)
        self._slow: ExpiringMap[str, bool] = ExpiringMap(REMEMBERED_SECONDS, clock)
        self._in_flight: Counter[str] = Counter()  # per merchant

    def admits(self, merchant_id: str) -> bool:
        if self._slow.get(merchant_id) is None:
            return True
        of_the_slow = sum(n for other, n in self._in_flight.items() if self._slow.get(other))
        return (
            self._in_flight[merchant_id] < self.max_in_flight_when_slow
            and of_the_slow < self.max_in_flight_of_the_slow
        )

    def in_flight(self, merchant_id: str) -> AbstractContextManager[None]:
        """A message of the merchant, from its admission until its attempt is recorded."""
        return counted(self._in_flight, merchant_id)

    def answered(self, merchant_id: str, seconds: float) -> None:
        """A call to the merchant's endpoint ended after `seconds` (answered or not)."""
        if seconds >= self.slow_call_seconds:
            self._slow.put(merchant_id, True)
