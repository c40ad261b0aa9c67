"""Webhook signatures: what a Standard Webhooks receiver and an original-mock client verify."""

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from contracts.api_keys import new_webhook_secret
from contracts.webhook_signing import (
    active_secrets,
    signing_key,
    standard_signature,
    webhook_headers,
)

BODY = b'{"id":"evt_1","type":"payout.succeeded","payout":{"amount":"1500.00"}}'
EVENT_ID = "evt_0123456789abcdef01234567"
Tamper = Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]]


def headers_for(*secrets: str, timestamp: int | None = None, body: bytes = BODY) -> dict[str, str]:
    return webhook_headers(
        event_id=EVENT_ID,
        legacy_event="PAYOUT_UPDATED",
        timestamp=int(time.time()) if timestamp is None else timestamp,
        body=body,
        secrets=secrets,
    )


def test_standard_webhooks_library_verifies_our_signature() -> None:
    secret = new_webhook_secret()
    headers = headers_for(secret)

    assert Webhook(secret).verify(BODY, headers) == {
        "id": "evt_1",
        "type": "payout.succeeded",
        "payout": {"amount": "1500.00"},
    }
    assert headers["webhook-id"] == EVENT_ID
    assert headers["X-MyPay-Event"] == "PAYOUT_UPDATED"


def test_signature_is_hmac_of_id_timestamp_body_with_the_decoded_key() -> None:
    key = bytes(range(32))
    secret = "whsec_" + base64.b64encode(key).decode()
    expected = hmac.new(key, f"{EVENT_ID}.1700000000.".encode() + BODY, hashlib.sha256).digest()

    signature = standard_signature(secret, message_id=EVENT_ID, timestamp=1700000000, body=BODY)

    assert signature == "v1," + base64.b64encode(expected).decode()
    assert signing_key(secret) == key


def test_legacy_signature_is_hex_hmac_of_the_body_keyed_with_the_secret_string() -> None:
    secret = new_webhook_secret()

    headers = headers_for(secret)

    assert (
        headers["X-MyPay-Signature"] == hmac.new(secret.encode(), BODY, hashlib.sha256).hexdigest()
    )


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda h, b: ({**h, "webhook-id": "evt_other"}, b), id="other event id"),
        pytest.param(lambda h, b: (h, b.replace(b"1500.00", b"9500.00")), id="changed body"),
        pytest.param(
            lambda h, b: ({**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}, b),
            id="changed timestamp",
        ),
    ],
)
def test_tampering_breaks_verification(tamper: Tamper) -> None:
    secret = new_webhook_secret()
    headers, body = tamper(headers_for(secret), BODY)

    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)


def test_other_secret_does_not_verify() -> None:
    headers = headers_for(new_webhook_secret())

    with pytest.raises(WebhookVerificationError):
        Webhook(new_webhook_secret()).verify(BODY, headers)


def test_during_rotation_both_secrets_sign_and_legacy_uses_the_current_one() -> None:
    current, previous = new_webhook_secret(), new_webhook_secret()

    headers = headers_for(current, previous)

    entries = headers["webhook-signature"].split(" ")
    assert len(entries) == 2 and all(entry.startswith("v1,") for entry in entries)
    assert Webhook(current).verify(BODY, headers)
    assert Webhook(previous).verify(BODY, headers)
    assert (
        headers["X-MyPay-Signature"] == hmac.new(current.encode(), BODY, hashlib.sha256).hexdigest()
    )


def test_previous_secret_signs_only_until_its_grace_period_ends() -> None:
    now = datetime(2025, 1, 1, 12, 0)

    assert active_secrets("new", "old", now + timedelta(seconds=1), now) == ["new", "old"]
    assert active_secrets("new", "old", now, now) == ["new"]
    assert active_secrets("new", None, now + timedelta(hours=1), now) == ["new"]
    assert active_secrets("new", "old", None, now) == ["new"]


def test_a_stale_timestamp_is_rejected_by_receivers() -> None:
    secret = new_webhook_secret()
    headers = headers_for(secret, timestamp=int(time.time()) - 3600)

    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(BODY, headers)


def test_no_secret_is_an_error() -> None:
    with pytest.raises(ValueError):
        headers_for()
