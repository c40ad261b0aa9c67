"""Webhook signatures (pure): Standard Webhooks plus the original mock's headers.

- `webhook-id` is the event id (stable across retries and resends: receivers dedupe on it);
- `webhook-timestamp` is unix seconds, fresh on every attempt;
- `webhook-signature` is `v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>`, where the key is
  the base64-decoded part of the secret after `whsec_`. During a rotation's grace period the
  current and the previous secret both sign: two space-separated `v1,` entries, current first.
- `X-MyPay-Signature` is the hex HMAC-SHA256 of the raw body keyed with the secret string
  itself (`whsec_...` as UTF-8 bytes), which is what the original mock's clients compute with
  `createHmac('sha256', secret)`. It is a single value, so only the current secret signs it.
- `X-MyPay-Event` carries the original mock's event name (PAYOUT_CREATED, PAYOUT_UPDATED, ...).
"""

import base64
import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
LEGACY_SIGNATURE_HEADER = "X-MyPay-Signature"
LEGACY_EVENT_HEADER = "X-MyPay-Event"


def signing_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret, as Standard Webhooks defines it."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    return base64.b64decode(encoded + "=" * (-len(encoded) % 4))


def standard_signature(secret: str, *, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def legacy_signature(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def active_secrets(
    current: str, previous: str | None, previous_expires_at: datetime | None, now: datetime
) -> list[str]:
    """The secrets that sign now: the current one, and the previous one during its grace period."""
    if previous and previous_expires_at is not None and previous_expires_at > now:
        return [current, previous]
    return [current]


def webhook_headers(
    *, event_id: str, legacy_event: str, timestamp: int, body: bytes, secrets: Sequence[str]
) -> dict[str, str]:
    """The signature headers of one attempt; `secrets[0]` is the current secret."""
    if not secrets:
        raise ValueError("at least one secret must sign")
    signatures = " ".join(
        standard_signature(secret, message_id=event_id, timestamp=timestamp, body=body)
        for secret in secrets
    )
    return {
        ID_HEADER: event_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signatures,
        LEGACY_SIGNATURE_HEADER: legacy_signature(secrets[0], body),
        LEGACY_EVENT_HEADER: legacy_event,
    }
