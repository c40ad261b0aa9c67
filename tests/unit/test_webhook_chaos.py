"""Sandbox webhook chaos, the pure part: which attempt of an event a setting changes, and how."""

import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from contracts.api_keys import new_webhook_secret
from contracts.domain.statuses import EventType
from contracts.webhook_chaos import (
    MAX_CHAOS_DELAY_SECONDS,
    MAX_INJECTED_FAILURES,
    STALE_TIMESTAMP_SECONDS,
    ChaosKind,
    WebhookChaos,
    signing_for,
)
from contracts.webhook_signing import legacy_signature, standard_signature, webhook_headers
from webhook_service.chaos import (
    FINAL_EVENT_TYPES,
    attempt_chaos,
    extra_lease_seconds,
    picks,
    schedule,
    sends_duplicate,
)

EVENT_ID = "evt_0123456789abcdef01234567"
EVENT_IDS = [f"evt_{n:024x}" for n in range(2000)]
INJECTED = ChaosKind.INJECTED_FAILURE
STALE = ChaosKind.STALE_TIMESTAMP
OLD_SECRET = ChaosKind.OLD_SECRET
DELAYED = ChaosKind.DELAYED
OUT_OF_ORDER = ChaosKind.OUT_OF_ORDER


# ---- shares ------------------------------------------------------------------------------------


@pytest.mark.parametrize("percent", [0, 1, 25, 50, 99, 100])
def test_a_share_picks_about_that_percentage_of_events(percent: int) -> None:
    picked = sum(picks(event_id, STALE, percent) for event_id in EVENT_IDS)

    assert abs(picked / len(EVENT_IDS) * 100 - percent) <= 3
    if percent in (0, 100):
        assert picked == len(EVENT_IDS) * percent // 100


def test_a_share_is_the_same_for_the_same_event_every_time() -> None:
    first = [picks(event_id, STALE, 50) for event_id in EVENT_IDS]

    assert [picks(event_id, STALE, 50) for event_id in EVENT_IDS] == first


def test_kinds_pick_their_events_independently() -> None:
    stale = {event_id for event_id in EVENT_IDS if picks(event_id, STALE, 50)}
    duplicated = {event_id for event_id in EVENT_IDS if picks(event_id, ChaosKind.DUPLICATE, 50)}

    assert stale != duplicated
    assert 0.4 < len(stale & duplicated) / len(stale) < 0.6


# ---- which attempts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chaos", "event_type", "has_retired_secret", "expected"),
    [
        (WebhookChaos(), EventType.CREATED, True, ()),
        (WebhookChaos(fail_first_attempts=3), EventType.CREATED, False, (INJECTED,) * 3),
        (WebhookChaos(stale_timestamp_percent=100), EventType.CREATED, False, (STALE,)),
        (WebhookChaos(old_secret_only=True), EventType.CREATED, True, (OLD_SECRET,)),
        # no previous secret (never rotated): nothing to sign with
        (WebhookChaos(old_secret_only=True), EventType.CREATED, False, ()),
        (WebhookChaos(delay_seconds=5), EventType.SUCCEEDED, False, (DELAYED,)),
        (WebhookChaos(out_of_order=True), EventType.PROCESSING, False, (OUT_OF_ORDER,)),
        # only payout.processing is held out of order
        (WebhookChaos(out_of_order=True), EventType.CREATED, False, ()),
        (WebhookChaos(out_of_order=True), EventType.SUCCEEDED, False, ()),
        # both holds set: a processing event is held out of order, the others delayed
        (
            WebhookChaos(out_of_order=True, delay_seconds=5),
            EventType.PROCESSING,
            False,
            (OUT_OF_ORDER,),
        ),
        (WebhookChaos(out_of_order=True, delay_seconds=5), EventType.CREATED, False, (DELAYED,)),
        # several kinds: one per attempt, the mangled ones before the hold
        (
            WebhookChaos(
                fail_first_attempts=2,
                stale_timestamp_percent=100,
                old_secret_only=True,
                delay_seconds=1,
                duplicate_percent=100,
            ),
            EventType.CREATED,
            True,
            (INJECTED, INJECTED, STALE, OLD_SECRET, DELAYED),
        ),
        # values the API never stores are held to the limits
        (
            WebhookChaos(fail_first_attempts=MAX_INJECTED_FAILURES + 5),
            EventType.CREATED,
            False,
            (INJECTED,) * MAX_INJECTED_FAILURES,
        ),
        (WebhookChaos(fail_first_attempts=-1, delay_seconds=-1), EventType.CREATED, False, ()),
    ],
)
def test_the_kinds_an_event_gets_are_laid_out_on_its_attempts_in_order(
    chaos: WebhookChaos,
    event_type: EventType,
    has_retired_secret: bool,
    expected: tuple[ChaosKind, ...],
) -> None:
    assert schedule(chaos, EVENT_ID, event_type, has_retired_secret=has_retired_secret) == expected


def kind_of_attempt(
    chaos: WebhookChaos, attempts_made: int, generation: int = 0
) -> ChaosKind | None:
    return attempt_chaos(
        chaos,
        EVENT_ID,
        EventType.CREATED,
        attempts_made=attempts_made,
        generation=generation,
        has_retired_secret=True,
    )


def test_each_attempt_gets_its_kind_and_the_attempts_after_them_are_clean() -> None:
    chaos = WebhookChaos(fail_first_attempts=1, stale_timestamp_percent=100)

    kinds = [kind_of_attempt(chaos, attempts_made) for attempts_made in range(4)]

    assert kinds == [INJECTED, STALE, None, None]


def test_a_resend_is_sent_clean() -> None:
    chaos = WebhookChaos(fail_first_attempts=2, old_secret_only=True, delay_seconds=3)

    assert kind_of_attempt(chaos, attempts_made=0, generation=1) is None
    assert kind_of_attempt(chaos, attempts_made=4, generation=2) is None


def test_only_a_first_delivery_is_duplicated_and_only_the_events_of_the_share() -> None:
    everything = WebhookChaos(duplicate_percent=100)
    half = WebhookChaos(duplicate_percent=50)

    assert sends_duplicate(everything, EVENT_ID, generation=0)
    assert not sends_duplicate(everything, EVENT_ID, generation=1)
    assert not sends_duplicate(WebhookChaos(), EVENT_ID, generation=0)
    duplicated = sum(sends_duplicate(half, event_id, generation=0) for event_id in EVENT_IDS)
    assert 900 < duplicated < 1100


def test_the_final_events_are_the_terminal_statuses_events() -> None:
    assert {EventType.SUCCEEDED, EventType.FAILED, EventType.REVERSED} == FINAL_EVENT_TYPES


# ---- signing -----------------------------------------------------------------------------------

BODY = b'{"id":"evt_1","type":"payout.created","payout":{"amount":"100.00"}}'


def headers_of(kind: ChaosKind | None, current: str, previous: str | None) -> dict[str, str]:
    """The headers of an attempt with this chaos, signed now (the previous secret's grace period
    is over: only the current secret signs a clean attempt)."""
    timestamp, secrets = signing_for(
        kind, timestamp=int(time.time()), secrets=[current], previous_secret=previous
    )
    return webhook_headers(
        event_id=EVENT_ID,
        legacy_event="PAYOUT_CREATED",
        timestamp=timestamp,
        body=BODY,
        secrets=secrets,
    )


def test_a_stale_timestamp_is_validly_signed_and_refused_for_its_age() -> None:
    secret = new_webhook_secret()

    headers = headers_of(STALE, secret, None)

    stale = int(headers["webhook-timestamp"])
    assert abs(time.time() - STALE_TIMESTAMP_SECONDS - stale) < 5
    assert headers["webhook-signature"] == standard_signature(
        secret, message_id=EVENT_ID, timestamp=stale, body=BODY
    )
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(BODY, headers)


def test_the_old_secret_alone_signs_and_the_current_one_refuses_it() -> None:
    current, previous = new_webhook_secret(), new_webhook_secret()

    headers = headers_of(OLD_SECRET, current, previous)

    assert Webhook(previous).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(current).verify(BODY, headers)
    assert headers["X-MyPay-Signature"] == legacy_signature(previous, BODY)


@pytest.mark.parametrize(
    ("kind", "previous"),
    [(None, "whsec_cHJldmlvdXM="), (OLD_SECRET, None), (INJECTED, None), (DELAYED, None)],
)
def test_other_attempts_are_signed_as_ever(kind: ChaosKind | None, previous: str | None) -> None:
    current = new_webhook_secret()

    headers = headers_of(kind, current, previous)

    assert Webhook(current).verify(BODY, headers)
    assert len(headers["webhook-signature"].split(" ")) == 1


# ---- the lease ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chaos", "event_type", "expected"),
    [
        (WebhookChaos(), EventType.PROCESSING, 0),
        (WebhookChaos(fail_first_attempts=3, stale_timestamp_percent=100), EventType.CREATED, 0),
        (WebhookChaos(delay_seconds=7), EventType.CREATED, 7),
        (WebhookChaos(delay_seconds=MAX_CHAOS_DELAY_SECONDS + 30), EventType.CREATED, 60),
        (WebhookChaos(out_of_order=True), EventType.PROCESSING, 45),
        (WebhookChaos(out_of_order=True, delay_seconds=7), EventType.PROCESSING, 45),
        (WebhookChaos(out_of_order=True), EventType.SUCCEEDED, 0),
        (WebhookChaos(duplicate_percent=100), EventType.CREATED, 3),  # a second call: 2.5 s
        (WebhookChaos(duplicate_percent=100, delay_seconds=7), EventType.CREATED, 10),
    ],
)
def test_a_lease_runs_longer_by_the_longest_hold_and_a_duplicates_call(
    chaos: WebhookChaos, event_type: EventType, expected: int
) -> None:
    seconds = extra_lease_seconds(
        chaos, EVENT_ID, event_type, timeout_seconds=2.5, out_of_order_limit_seconds=45
    )

    assert seconds == expected
