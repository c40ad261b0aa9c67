"""The dashboard's deliveries table: one cell says what the endpoint last answered."""

import re
from typing import Any

import pytest

from api_service.dashboard.rendering import environment


def last_response(**delivery: Any) -> str:
    macro = environment.get_template("deliveries_table.html").module.deliveries_table  # type: ignore[attr-defined]
    row = {
        "id": "d1",
        "eventType": "payout.succeeded",
        "payoutId": "p" * 36,
        "status": "RETRYING",
        "attemptCount": 1,
        "createdAt": "2026-12-05T00:00:00.000Z",
        "updatedAt": "2026-12-05T00:00:00.000Z",
        **delivery,
    }
    html = str(macro([row], "csrf_token", "t", "/dashboard/webhooks"))
    [cell] = re.findall(r'<td class="truncate">(.*?)</td>', html, re.S)
    return " ".join(cell.split())


@pytest.mark.parametrize(
    ("code", "error", "shown"),
    [
        (500, "HTTP 500", "HTTP 500"),  # was "HTTP 500 HTTP 500"
        (302, "HTTP 302: redirects are not followed", "HTTP 302: redirects are not followed"),
        (200, None, "HTTP 200"),
        (None, "timed out after 10 s", "timed out after 10 s"),
        (None, None, ""),
    ],
)
def test_the_last_response_is_said_once(code: int | None, error: str | None, shown: str) -> None:
    assert last_response(lastStatusCode=code, lastError=error) == shown
