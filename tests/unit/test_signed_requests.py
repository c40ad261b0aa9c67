"""The request the dashboard shows for a webhook attempt: one that sandbox chaos failed before
any call says it was not sent."""

import base64
from datetime import timedelta

import pytest

from api_service.dashboard.signed_requests import NOT_SENT, signed_request
from contracts.db.models import Merchant

EVENT = {"id": "evt_1", "event": "payout.created", "type": "payout.created", "data": {}}
SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()


@pytest.mark.parametrize(
    ("chaos", "note"),
    [(None, None), ("stale_timestamp", None), ("injected_failure", NOT_SENT)],
)
def test_an_attempt_chaos_failed_before_any_call_is_shown_as_not_sent(
    chaos: str | None, note: str | None
) -> None:
    merchant = Merchant(webhook_secret=SECRET)
    attempt = {"createdAt": "2026-12-01T10:00:03.123Z", "chaos": chaos}

    shown = signed_request(EVENT, attempt, merchant, timedelta(hours=24))

    assert shown.note == note
    assert ("webhook-id", "evt_1") in shown.headers
