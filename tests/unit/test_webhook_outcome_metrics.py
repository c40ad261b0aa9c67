"""payouts_webhook_outcomes_total: `retry` counts attempts that failed. A message sent back with
no attempt made, to wait for a slot of its merchant's slow endpoint or for the database to come
back, was counted `retry` too (another consumer's lease had its own outcome): a backlog at one
slow, healthy endpoint or a database blip read as a burst of failed webhooks (metrics review)."""

import pytest
from prometheus_client import REGISTRY

from webhook_service.delivery import ENDPOINT_BUSY, Decision, Disposition
from webhook_service.metrics import count_outcome
from webhook_service.retry_ladder import RetryLadder

LADDER = RetryLadder.of((5, 300, 1800))


def counted(outcome: str) -> float:
    sample = REGISTRY.get_sample_value("payouts_webhook_outcomes_total", {"outcome": outcome})
    return sample or 0.0


@pytest.mark.parametrize(
    ("decision", "outcome"),
    [
        (
            Decision(Disposition.RETRY, ENDPOINT_BUSY, LADDER.wait_for_a_slot(0), failed=False),
            "endpoint_busy",
        ),
        (
            Decision(
                Disposition.RETRY,
                "database unavailable: OperationalError",
                LADDER.look_again(5),
                failed=False,
            ),
            "database_wait",
        ),
        (Decision(Disposition.RETRY, "HTTP 503", LADDER.look_again(5)), "retry"),
    ],
    ids=["a wait for a slot", "a wait for the database", "an attempt that failed"],
)
def test_a_message_is_counted_by_what_happened_to_it(decision: Decision, outcome: str) -> None:
    before = {name: counted(name) for name in ("retry", outcome)}

    count_outcome(decision)

    assert counted(outcome) == before[outcome] + 1
    if outcome != "retry":
        assert counted("retry") == before["retry"], "a wait was counted as a failed attempt"
