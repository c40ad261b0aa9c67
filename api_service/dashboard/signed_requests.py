"""The exact request a webhook attempt sent: its body and its signature headers.

The webhook service records each attempt's time (the time it signed at) but not its headers. The
body is the event's webhook body, serialized as the service serializes it, and the headers follow
from the event id, that time and the secrets that signed then: the merchant's current secret (and
the previous one during its grace period) for an attempt since the last rotation, as sandbox
chaos changed it (a stale timestamp, the previous secret alone). An attempt from before the last
rotation was signed with secrets of which at most one is kept (the one before it may have been
in its grace too), so its signatures are not shown.

The signing functions are the webhook service's own (pure, in contracts/), so what is shown
cannot drift from what is sent, but in one case: a first attempt within ENDPOINT_CACHE_SECONDS
of a rotation may have been signed with the secrets before it (the webhook service's cache of
them), which the page says (signing review).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from api_service.dashboard.rendering import parse_time
from contracts.db.models import Merchant
from contracts.webhook_chaos import ChaosKind, signing_for
from contracts.webhook_signing import (
    ID_HEADER,
    LEGACY_EVENT_HEADER,
    TIMESTAMP_HEADER,
    active_secrets,
    webhook_headers,
)
from contracts.webhooks import ENDPOINT_CACHE_SECONDS
from contracts.wire import dumps

ROTATED_OUT = (
    "Signed before the last secret rotation, with a secret no longer kept: its signature "
    "headers cannot be shown."
)
JUST_ROTATED = (
    f"Sent within {ENDPOINT_CACHE_SECONDS:.0f} s of the last secret rotation: the webhook "
    "service may still have signed it with the secrets before it (it reads them again within "
    f"{ENDPOINT_CACHE_SECONDS:.0f} s). Shown: the signatures of the secrets after it."
)
NOT_SENT = (
    "Not sent: sandbox webhook chaos failed this attempt on purpose, before any call. This is "
    "the request it would have made."
)


@dataclass(frozen=True)
class SignedRequest:
    headers: list[tuple[str, str]]
    body: str
    note: str | None = None


def secrets_at(merchant: Merchant, sent_at: datetime, grace: timedelta) -> list[str] | None:
    """The secrets that signed at `sent_at` (naive UTC), or None when they are not kept.
    `grace`: the default one, for a rotation older than `secret_rotated_at` (migration 0024)."""
    previous, expires = merchant.previous_webhook_secret, merchant.previous_secret_expires_at
    if previous is None or expires is None:  # never rotated, or replaced with no grace (seed)
        replaced_at = merchant.secret_rotated_at
        return (
            None if replaced_at is not None and sent_at < replaced_at else [merchant.webhook_secret]
        )
    # The rotation's own time: with a grace other than the default, `expires - grace` put an
    # attempt signed before it after it (a leaked secret retired at once), or the other way.
    if sent_at < (merchant.secret_rotated_at or expires - grace):  # before the last rotation
        return None
    return active_secrets(merchant.webhook_secret, previous, expires, sent_at)


def signed_request(
    event: dict[str, Any], attempt: dict[str, Any], merchant: Merchant, grace: timedelta
) -> SignedRequest:
    """`event`: the webhook body (GET /events); `attempt`: one of its delivery's attempts, signed
    as the webhook service signed it (a chaos attempt with a stale timestamp, or the previous
    secret alone: contracts.webhook_chaos.signing_for)."""
    chaos = ChaosKind(attempt["chaos"]) if attempt.get("chaos") else None
    notes = [NOT_SENT] if chaos is ChaosKind.INJECTED_FAILURE else []
    body = dumps(event)
    sent_at = parse_time(attempt["createdAt"])
    timestamp = int(sent_at.timestamp())
    secrets = secrets_at(merchant, sent_at.replace(tzinfo=None), grace)
    content_type = ("Content-Type", "application/json")
    if secrets is None:
        headers = [
            content_type,
            (ID_HEADER, str(event["id"])),
            (TIMESTAMP_HEADER, str(timestamp)),
            (LEGACY_EVENT_HEADER, str(event["event"])),
        ]
        return SignedRequest(headers, body.decode(), " ".join([*notes, ROTATED_OUT]))
    rotated_at = merchant.secret_rotated_at
    since_rotation = sent_at.replace(tzinfo=None) - (rotated_at or datetime.min)
    if rotated_at is not None and since_rotation < timedelta(seconds=ENDPOINT_CACHE_SECONDS):
        notes.append(JUST_ROTATED)
    timestamp, secrets = signing_for(
        chaos,
        timestamp=timestamp,
        secrets=secrets,
        previous_secret=merchant.previous_webhook_secret,
    )
    signed = webhook_headers(
        event_id=str(event["id"]),
        legacy_event=str(event["event"]),
        timestamp=timestamp,
        body=body,
        secrets=secrets,
    )
    return SignedRequest([content_type, *signed.items()], body.decode(), " ".join(notes) or None)
