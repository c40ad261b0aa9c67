"""The request the dashboard shows for a webhook attempt: one that sandbox chaos failed before
any call says it was not sent."""

import base64
from datetime import UTC, datetime, timedelta

import pytest

from api_service.dashboard.signed_requests import (
    JUST_ROTATED,
    NOT_SENT,
    ROTATED_OUT,
    signed_request,
)
from contracts.db.models import Merchant
from contracts.webhook_chaos import STALE_TIMESTAMP_SECONDS
from contracts.webhook_signing import webhook_headers
from contracts.wire import dumps

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


OLD, NEW = SECRET, "whsec_" + base64.b64encode(b"n" * 24).decode()
ROTATED = datetime(2026, 12, 1, 10, 0)  # naive UTC, as the merchant's row holds it


def rotated(grace: timedelta) -> Merchant:
    return Merchant(
        webhook_secret=NEW,
        previous_webhook_secret=OLD,
        previous_secret_expires_at=ROTATED + grace,
        secret_rotated_at=ROTATED,
    )


def shown_at(merchant: Merchant, sent_at: datetime, chaos: str | None = None) -> dict[str, str]:
    attempt = {"createdAt": sent_at.isoformat() + "Z", "chaos": chaos}
    shown = signed_request(EVENT, attempt, merchant, timedelta(hours=24))
    return dict(shown.headers) | ({"note": shown.note} if shown.note else {})


def sent(sent_at: datetime, secrets: list[str], timestamp_shift: int = 0) -> dict[str, str]:
    """The headers the webhook service signs with (contracts.webhook_signing)."""
    timestamp = int(sent_at.replace(tzinfo=UTC).timestamp()) - timestamp_shift
    signed = webhook_headers(
        event_id="evt_1",
        legacy_event="payout.created",
        timestamp=timestamp,
        body=dumps(EVENT),
        secrets=secrets,
    )
    return {"Content-Type": "application/json", **signed}


def test_after_a_rotation_with_no_grace_no_earlier_attempt_shows_the_new_secret() -> None:
    """The rotation was placed at `expires - 24 h`: with `previousSecretGraceHours: 0`, an
    attempt signed before it with the old secret was shown signed with the new one too."""
    merchant = rotated(timedelta(0))
    before, after = ROTATED - timedelta(minutes=1), ROTATED + timedelta(minutes=1)
    assert shown_at(merchant, before)["note"] == ROTATED_OUT
    assert shown_at(merchant, after) == sent(after, [NEW])


def test_after_the_seed_replaced_the_secret_no_earlier_attempt_shows_the_new_one() -> None:
    """`payouts seed --webhook-secret` keeps no previous secret: an attempt signed before it was
    shown signed with the new secret, headers it never carried."""
    merchant = Merchant(webhook_secret=NEW, secret_rotated_at=ROTATED)
    before, after = ROTATED - timedelta(minutes=1), ROTATED + timedelta(minutes=1)
    assert shown_at(merchant, before)["note"] == ROTATED_OUT
    assert shown_at(merchant, after) == sent(after, [NEW])


def test_a_rotation_with_a_grace_over_the_default_shows_both_secrets_within_it() -> None:
    merchant = rotated(timedelta(hours=48))
    within = ROTATED + timedelta(hours=1)  # `expires - 24 h` called it before the rotation
    assert shown_at(merchant, within) == sent(within, [NEW, OLD])


def test_chaos_attempts_are_shown_as_chaos_signed_them() -> None:
    merchant = rotated(timedelta(hours=48))
    at = ROTATED + timedelta(hours=1)
    stale = shown_at(merchant, at, "stale_timestamp")
    assert stale == sent(at, [NEW, OLD], timestamp_shift=STALE_TIMESTAMP_SECONDS)
    assert shown_at(merchant, at, "old_secret") == sent(at, [OLD])


def test_a_first_attempt_just_after_a_rotation_says_it_may_carry_the_secrets_before_it() -> None:
    """The webhook service keeps a merchant's secrets 2 s for first attempts: one made that
    soon after a rotation may have gone out signed with the old secret alone, while the page
    showed the new secrets' signatures as "the exact request" (signing review)."""
    merchant = rotated(timedelta(hours=24))
    just_after, later = ROTATED + timedelta(seconds=1), ROTATED + timedelta(seconds=2)
    assert shown_at(merchant, just_after)["note"] == JUST_ROTATED
    assert shown_at(merchant, later) == sent(later, [NEW, OLD])
