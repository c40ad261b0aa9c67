"""Properties of webhook signing (contracts.webhook_signing) against the reference verifier, the
`standardwebhooks` package: whatever we sign verifies, any changed byte does not, and the legacy
X-MyPay-Signature is the hex HMAC-SHA256 of the body a hand-written receiver would compute."""

import hashlib
import hmac
import string
import time

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from contracts.webhook_signing import LEGACY_SIGNATURE_HEADER, webhook_headers
from tests.support.strategies import webhook_secrets

# standardwebhooks rejects timestamps more than 5 minutes from its own clock.
TOLERANCE_SECONDS = 4 * 60

event_ids = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=40).map(
    lambda suffix: "evt_" + suffix
)
# Receivers decode the body as UTF-8 text before verifying; our bodies are UTF-8 JSON.
bodies = st.text(max_size=2_000).map(str.encode)
clock_skews = st.integers(-TOLERANCE_SECONDS, TOLERANCE_SECONDS)
# Secrets are issued padded; an operator may paste one without its `=` padding.
any_secrets = webhook_secrets() | webhook_secrets().map(lambda secret: secret.rstrip("="))
legacy_events = st.sampled_from(["PAYOUT_CREATED", "PAYOUT_UPDATED", "PAYOUT_REINITIATED"])


def sign(secrets: list[str], event_id: str, body: bytes, skew: int) -> dict[str, str]:
    return webhook_headers(
        event_id=event_id,
        legacy_event="PAYOUT_UPDATED",
        timestamp=int(time.time()) + skew,
        body=body,
        secrets=secrets,
    )


@given(any_secrets, event_ids, bodies, clock_skews)
def test_what_we_sign_verifies(secret: str, event_id: str, body: bytes, skew: int) -> None:
    headers = sign([secret], event_id, body, skew)
    Webhook(secret).verify(body, headers, json_parse=False)


@given(any_secrets, any_secrets, event_ids, bodies, clock_skews)
def test_both_secrets_verify_during_rotation(
    current: str, previous: str, event_id: str, body: bytes, skew: int
) -> None:
    headers = sign([current, previous], event_id, body, skew)
    Webhook(current).verify(body, headers, json_parse=False)
    Webhook(previous).verify(body, headers, json_parse=False)


@given(webhook_secrets(), webhook_secrets(), event_ids, bodies, clock_skews)
def test_another_secret_does_not_verify(
    secret: str, other: str, event_id: str, body: bytes, skew: int
) -> None:
    assume(other != secret)
    headers = sign([secret], event_id, body, skew)
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers, json_parse=False)


@given(webhook_secrets(), event_ids, bodies.filter(bool), clock_skews, st.data())
def test_a_changed_byte_fails_verification(
    secret: str, event_id: str, body: bytes, skew: int, data: st.DataObject
) -> None:
    headers = sign([secret], event_id, body, skew)
    position = data.draw(st.integers(0, len(body) - 1), label="position")
    new_byte = data.draw(st.integers(0, 255).filter(lambda b: b != body[position]), label="byte")
    tampered = body[:position] + bytes([new_byte]) + body[position + 1 :]
    try:
        tampered_text = tampered.decode()
    except UnicodeDecodeError:
        tampered_text = None
    if tampered_text is not None:
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(tampered, headers, json_parse=False)
    # Whether or not it is still UTF-8, the legacy signature must not match either.
    assert headers[LEGACY_SIGNATURE_HEADER] != hand_computed_legacy(secret, tampered)


@given(webhook_secrets(), event_ids, bodies, clock_skews, st.data())
def test_changed_id_or_timestamp_fails_verification(
    secret: str, event_id: str, body: bytes, skew: int, data: st.DataObject
) -> None:
    headers = sign([secret], event_id, body, skew)
    changed = dict(headers)
    if data.draw(st.booleans(), label="change id"):
        changed["webhook-id"] = data.draw(event_ids.filter(lambda other: other != event_id))
    else:
        timestamp = int(headers["webhook-timestamp"])
        shift = data.draw(st.integers(-60, 60).filter(bool), label="shift")
        changed["webhook-timestamp"] = str(timestamp + shift)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, changed, json_parse=False)


def hand_computed_legacy(secret: str, body: bytes) -> str:
    """What the original mock's clients compute: createHmac('sha256', secret), hex digest."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


@given(
    st.lists(webhook_secrets(), min_size=1, max_size=2),
    event_ids,
    bodies,
    st.integers(0, 2**32),
    legacy_events,
)
def test_legacy_headers_match_a_hand_computed_hmac(
    secrets: list[str], event_id: str, body: bytes, timestamp: int, legacy_event: str
) -> None:
    headers = webhook_headers(
        event_id=event_id,
        legacy_event=legacy_event,
        timestamp=timestamp,
        body=body,
        secrets=secrets,
    )
    # Only the current secret signs the single-valued legacy header.
    assert headers[LEGACY_SIGNATURE_HEADER] == hand_computed_legacy(secrets[0], body)
    assert headers["X-MyPay-Event"] == legacy_event
    assert headers["webhook-id"] == event_id
    assert headers["webhook-timestamp"] == str(timestamp)
