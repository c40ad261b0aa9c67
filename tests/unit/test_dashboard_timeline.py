"""When a payout page stops refreshing itself (api_service.dashboard.timeline.Timeline.settled)."""

from typing import Any

import pytest

from api_service.dashboard.timeline import Timeline, TimelineEntry


def timeline(status: str, *deliveries: dict[str, Any] | None) -> Timeline:
    entries = [
        TimelineEntry({"id": f"evt_{number}"}, delivery, [])
        for number, delivery in enumerate(deliveries)
    ]
    return Timeline({"status": status}, entries, [])


@pytest.mark.parametrize(
    ("payout", "delivery", "settled"),
    [
        ("SUCCESS", {"status": "DELIVERED"}, True),
        ("SUCCESS", {"status": "PARKED"}, True),
        ("SUCCESS", {"status": "RETRYING"}, False),
        ("SUCCESS", {"status": "PENDING"}, False),
        # The final event is recorded; its delivery row comes when the webhook service takes
        # the message. A page that stopped here never showed the attempt.
        ("SUCCESS", None, False),
        ("PROCESSING", {"status": "DELIVERED"}, False),
    ],
)
def test_a_page_refreshes_until_the_payout_is_final_and_every_webhook_has_an_outcome(
    payout: str, delivery: dict[str, Any] | None, settled: bool
) -> None:
    assert timeline(payout, {"status": "DELIVERED"}, delivery).settled is settled
