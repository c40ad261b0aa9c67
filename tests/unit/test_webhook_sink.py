"""`payouts webhook-sink`: verifies what it receives and prints one line per event."""

import time

import httpx
import orjson
import pytest

from cli.webhooks import build_sink, sink_line
from contracts.api_keys import new_webhook_secret
from contracts.webhook_signing import webhook_headers

EVENT = {
    "id": "evt_abc",
    "type": "payout.succeeded",
    "createdAt": "2025-01-01T00:00:00.000Z",
    "event": "PAYOUT_UPDATED",
    "payout": {"id": "p-1", "status": "SUCCESS", "amount": "1500.00"},
}
BODY = orjson.dumps(EVENT)


async def post(secret: str | None, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=build_sink(secret))
    async with httpx.AsyncClient(transport=transport, base_url="http://sink") as client:
        return await client.post("/webhooks", content=BODY, headers=headers)


def signed(secret: str) -> dict[str, str]:
    return webhook_headers(
        event_id="evt_abc",
        legacy_event="PAYOUT_UPDATED",
        timestamp=int(time.time()),
        body=BODY,
        secrets=[secret],
    )


async def test_a_signed_event_is_accepted_and_printed(capsys: pytest.CaptureFixture[str]) -> None:
    secret = new_webhook_secret()

    response = await post(secret, signed(secret))

    assert response.status_code == 204
    assert capsys.readouterr().out.strip() == (
        "2025-01-01T00:00:00.000Z evt_abc payout.succeeded payout=p-1 status=SUCCESS "
        "amount=1500.00 [signature ok]"
    )


async def test_a_bad_signature_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    response = await post(new_webhook_secret(), signed(new_webhook_secret()))

    assert response.status_code == 401
    assert "REJECTED evt_abc" in capsys.readouterr().err


async def test_without_a_secret_events_are_printed_unverified(
    capsys: pytest.CaptureFixture[str],
) -> None:
    response = await post(None, {})

    assert response.status_code == 204
    assert capsys.readouterr().out.strip().endswith("[unverified: no --secret]")


def test_a_body_prints_on_one_line_without_its_escape_sequences() -> None:
    """Unverified (no --secret; compose's sink listens on every address), a body is anyone's:
    its ESC sequences reached the operator's terminal, its newline forged a line (taint
    review)."""
    body = orjson.dumps({"id": "evt_1\u001b]0;owned\u0007", "type": "a\nb", "payout": {}})

    line = sink_line(body, None, "unverified")

    assert line.startswith("None evt_1\\x1b]0;owned\\x07 a\\nb payout=None")
