"""`payouts outbox list-parked --json`: what a script reads of a parked row."""

from datetime import datetime

from cli.outbox import _as_json
from contracts.db.models import OutboxMessage


def test_a_parked_rows_time_is_in_utc_and_says_so() -> None:
    """It was printed naive (`2026-03-14T23:59:59.999999`): a script on a Karachi host read it as
    local time, 5 hours off, where the text form says UTC."""
    row = OutboxMessage(
        id=7,
        exchange="payouts.commands",
        routing_key="payout.process",
        headers={},
        publish_attempts=5,
        parked_at=datetime(2026, 3, 14, 23, 59, 59, 999999),  # stored: naive UTC
        last_error="NOT_FOUND",
    )

    assert _as_json(row)["parked_at"] == "2026-03-14T23:59:59.999Z"
