"""The webhook endpoints of the REST API: delivery log, resend, event log, endpoint and secret."""

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from api_service.app import create_app
from api_service.webhooks.service import ATTEMPTS_SHOWN
from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory, utcnow
from contracts.db.models import (
    WITH_WEBHOOK_SECRETS,
    IdempotencyKey,
    Merchant,
    PayoutEvent,
    WebhookDelivery,
)
from contracts.messages import PayoutStatusChanged
from contracts.settings import Settings
from contracts.topology import DEFAULT_EXCHANGE
from contracts.webhooks import RESEND_GENERATION_HEADER, DeliveryStatus
from tests.conftest import MerchantFactory
from tests.support.api_helpers import (
    API,
    assert_error,
    auth,
    create_payout,
    new_key,
    outbox_for_payout,
)
from tests.support.delivery_records import PUBLIC_URL, events_of, seed_delivery
from tests.support.webhook_flow import SINGLE_RESENDS


@pytest.fixture(scope="module")
async def strict_api_client(
    settings: Settings, engine: AsyncEngine
) -> AsyncIterator[httpx.AsyncClient]:
    """The API as in production: webhook URLs must resolve to public addresses."""
    app = create_app(settings.model_copy(update={"webhook_allow_private_urls": False}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


async def merchant_with_deliveries(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> tuple[NewMerchant, list[str], list[PayoutEvent]]:
    """Two payouts: the first event delivered at the second attempt, the second parked."""
    merchant = await make_merchant(webhook_url=PUBLIC_URL)
    events = []
    for _ in range(2):
        payout = await create_payout(api_client, merchant)
        (event,) = await events_of(sessions, payout["id"])
        events.append(event)
    now = utcnow()
    delivered = await seed_delivery(
        sessions, events[0], DeliveryStatus.DELIVERED, [(500, "HTTP 500"), (200, None)], now
    )
    parked = await seed_delivery(
        sessions,
        events[1],
        DeliveryStatus.PARKED,
        [(None, "timed out after 10 s")] * 2,
        now + timedelta(seconds=5),
    )
    return merchant, [delivered, parked], events


async def list_deliveries(
    client: httpx.AsyncClient, merchant: NewMerchant, **query: Any
) -> dict[str, Any]:
    response = await client.get(
        f"{API}/webhooks/deliveries", params=query, headers=auth(merchant, "")
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def test_deliveries_come_with_their_attempts_newest_first(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant, (delivered, parked), events = await merchant_with_deliveries(
        api_client, make_merchant, sessions
    )

    data = await list_deliveries(api_client, merchant)

    assert [d["id"] for d in data["deliveries"]] == [parked, delivered]
    first = data["deliveries"][1]
    assert first["eventId"] == events[0].id and first["payoutId"] == events[0].payout_id
    assert first["eventType"] == "payout.created" and first["url"] == PUBLIC_URL
    assert (first["status"], first["attemptCount"], first["lastStatusCode"]) == (
        "DELIVERED",
        2,
        200,
    )
    assert first["deliveredAt"].endswith("Z")
    assert [(a["attemptNumber"], a["statusCode"], a["error"]) for a in first["attempts"]] == [
        (1, 500, "HTTP 500"),
        (2, 200, None),
    ]
    assert set(first["attempts"][0]) == {
        "attemptNumber",
        "url",
        "statusCode",
        "latencyMs",
        "error",
        "responseExcerpt",
        "chaos",
        "createdAt",
    }
    assert first["attempts"][0]["chaos"] is None
    assert data["pagination"] == {
        "page": 1,
        "limit": 20,
        "total": 2,
        "totalPages": 1,
        "hasMore": False,
        "nextCursor": None,
    }


async def test_a_delivery_shows_its_latest_attempts_and_counts_them_all(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """Resends add attempts without end: a page of deliveries must not carry them all."""
    merchant = await make_merchant(webhook_url=PUBLIC_URL)
    payout = await create_payout(api_client, merchant)
    (event,) = await events_of(sessions, payout["id"])
    made = ATTEMPTS_SHOWN + 5
    await seed_delivery(
        sessions, event, DeliveryStatus.DELIVERED, [(500, "HTTP 500")] * made, utcnow()
    )

    (delivery,) = (await list_deliveries(api_client, merchant))["deliveries"]

    assert delivery["attemptCount"] == made
    assert [a["attemptNumber"] for a in delivery["attempts"]] == list(range(6, made + 1))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status": "PARKED"}, ["parked"]),
        ({"status": "DELIVERED"}, ["delivered"]),
        ({"status": "RETRYING"}, []),
        ({"payoutId": "first"}, ["delivered"]),
        ({"eventId": "second"}, ["parked"]),
        # Event ids compare exactly (the column is general_ci): unicode review.
        ({"eventId": "SECOND"}, []),
        ({"limit": 1, "page": 2}, ["delivered"]),
    ],
)
async def test_deliveries_filter_and_paginate(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    query: dict[str, Any],
    expected: list[str],
) -> None:
    merchant, (delivered, parked), events = await merchant_with_deliveries(
        api_client, make_merchant, sessions
    )
    named = {"delivered": delivered, "parked": parked}
    references = {
        "first": events[0].payout_id,
        "second": events[1].id,
        "SECOND": events[1].id.upper(),
    }
    query = {key: references.get(value, value) for key, value in query.items()}

    data = await list_deliveries(api_client, merchant, **query)

    assert [d["id"] for d in data["deliveries"]] == [named[name] for name in expected]


async def test_an_unknown_delivery_status_is_a_validation_error(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()

    response = await api_client.get(
        f"{API}/webhooks/deliveries", params={"status": "LOST"}, headers=auth(merchant, "")
    )

    assert_error(response, 400, "VALIDATION_ERROR", "status")


async def test_another_merchants_deliveries_are_invisible(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    _, (delivered, _), events = await merchant_with_deliveries(api_client, make_merchant, sessions)
    intruder = await make_merchant(webhook_url=PUBLIC_URL)

    listed = await list_deliveries(api_client, intruder, eventId=events[0].id)
    resend = await api_client.post(
        f"{API}/webhooks/deliveries/{delivered}/resend", headers=auth(intruder)
    )

    assert listed["deliveries"] == []
    assert_error(resend, 404, "NOT_FOUND")


async def test_resend_queues_the_stored_event_through_the_outbox(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant, (delivered, _), events = await merchant_with_deliveries(
        api_client, make_merchant, sessions
    )
    headers = auth(merchant)

    response = await api_client.post(
        f"{API}/webhooks/deliveries/{delivered}/resend", headers=headers
    )
    replay = await api_client.post(f"{API}/webhooks/deliveries/{delivered}/resend", headers=headers)

    assert response.status_code == 202, response.text
    data = response.json()["data"]
    assert (data["id"], data["status"], data["attemptCount"]) == (delivered, "PENDING", 2)
    # As documented: the earlier attempt's answer and time stay until the resend's own attempt.
    assert data["lastStatusCode"] == 200 and data["deliveredAt"] is not None
    assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.content == response.content
    (row,) = [
        r
        for r in await outbox_for_payout(sessions, events[0].payout_id)
        if r.routing_key == SINGLE_RESENDS
    ]
    assert row.exchange == DEFAULT_EXCHANGE and row.sent_at is None
    assert row.correlation_id == response.headers["x-request-id"]
    assert row.headers[RESEND_GENERATION_HEADER] == 1
    resent = PayoutStatusChanged.model_validate_json(row.body)
    assert resent == PayoutStatusChanged.model_validate_json(events[0].body)


async def test_a_resend_with_a_body_not_labelled_json_is_415_and_queues_nothing(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    # It takes no body, as reinitiate does (test_api_hostile_input): a body it cannot read is
    # refused, not ignored.
    merchant, (delivered, _), events = await merchant_with_deliveries(
        api_client, make_merchant, sessions
    )

    response = await api_client.post(
        f"{API}/webhooks/deliveries/{delivered}/resend",
        content=b"resend please",
        headers={**auth(merchant), "Content-Type": "text/plain"},
    )

    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    outbox = await outbox_for_payout(sessions, events[0].payout_id)
    assert [row for row in outbox if row.routing_key == SINGLE_RESENDS] == []


async def test_each_resend_names_the_next_generation_of_the_delivery(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """The webhook service sends a resend unless an attempt at its generation already succeeded:
    a counter, never a comparison of the API's clock with the webhook service's."""
    merchant, (delivered, _), events = await merchant_with_deliveries(
        api_client, make_merchant, sessions
    )

    for _ in range(2):
        response = await api_client.post(
            f"{API}/webhooks/deliveries/{delivered}/resend", headers=auth(merchant)
        )
        assert response.status_code == 202, response.text

    generations = [
        r.headers[RESEND_GENERATION_HEADER]
        for r in await outbox_for_payout(sessions, events[0].payout_id)
        if r.routing_key == SINGLE_RESENDS
    ]
    assert generations == [1, 2]
    async with sessions() as session:
        delivery = await session.get(WebhookDelivery, delivered)
    assert delivery is not None and delivery.generation == 2


async def test_resend_needs_an_idempotency_key_and_an_endpoint(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant, (delivered, _), _ = await merchant_with_deliveries(
        api_client, make_merchant, sessions
    )
    path = f"{API}/webhooks/deliveries/{delivered}/resend"

    without_key = await api_client.post(path, headers=auth(merchant, ""))
    removed = await api_client.put(
        f"{API}/webhook-endpoint", json={"url": None}, headers=auth(merchant, "")
    )
    without_endpoint = await api_client.post(path, headers=auth(merchant))

    assert_error(without_key, 400, "MISSING_IDEMPOTENCY_KEY")
    assert removed.status_code == 200 and removed.json()["data"]["url"] is None
    assert_error(without_endpoint, 409, "WEBHOOK_ENDPOINT_NOT_CONFIGURED")


async def test_a_resend_just_after_the_url_was_set_through_another_api_process_is_queued(
    api_client: httpx.AsyncClient,
    other_api_process: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
) -> None:
    """The README's recovery (set the URL again, then resend) with two API processes: the
    resend's process judged the URL from the merchant it cached with the API key (2 s), and its
    409 WEBHOOK_ENDPOINT_NOT_CONFIGURED, stored under the key, replayed for a day (found by the
    webhook API review)."""
    merchant, (delivered, _), _ = await merchant_with_deliveries(
        api_client, make_merchant, sessions
    )
    removed = await api_client.put(
        f"{API}/webhook-endpoint", json={"url": None}, headers=auth(merchant, "")
    )
    assert removed.status_code == 200, removed.text
    cached = await other_api_process.get(f"{API}/balance", headers=auth(merchant, ""))
    assert cached.status_code == 200  # the other process holds the merchant, without a URL
    restored = await api_client.put(
        f"{API}/webhook-endpoint", json={"url": PUBLIC_URL}, headers=auth(merchant, "")
    )
    assert restored.status_code == 200, restored.text

    resent = await other_api_process.post(
        f"{API}/webhooks/deliveries/{delivered}/resend", headers=auth(merchant)
    )

    assert resent.status_code == 202, resent.text


async def test_event_log_is_the_webhook_bodies_newest_first(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant()
    other = await make_merchant()
    first = await create_payout(api_client, merchant)
    second = await create_payout(api_client, merchant)
    await create_payout(api_client, other)

    response = await api_client.get(f"{API}/events", headers=auth(merchant, ""))

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [e["payout"]["id"] for e in data["events"]] == [second["id"], first["id"]]
    (recorded,) = await events_of(sessions, first["id"])
    assert (
        data["events"][1] == PayoutStatusChanged.model_validate_json(recorded.body).webhook_body()
    )
    assert data["events"][1]["payout"]["status"] == "PENDING"
    assert data["pagination"]["total"] == 2


@pytest.mark.parametrize(
    ("query", "count"),
    [
        ({"type": "payout.created"}, 2),
        ({"type": "payout.succeeded"}, 0),
        ({"payoutId": "first"}, 1),
        ({"payoutId": "first", "type": "payout.created"}, 1),
        ({"limit": 1}, 1),
    ],
)
async def test_event_log_filters(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    query: dict[str, Any],
    count: int,
) -> None:
    merchant = await make_merchant()
    first = await create_payout(api_client, merchant)
    await create_payout(api_client, merchant)
    query = {key: first["id"] if value == "first" else value for key, value in query.items()}

    response = await api_client.get(f"{API}/events", params=query, headers=auth(merchant, ""))

    assert response.status_code == 200, response.text
    assert len(response.json()["data"]["events"]) == count


async def test_event_log_rejects_an_unknown_type(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()

    response = await api_client.get(
        f"{API}/events", params={"type": "payout.exploded"}, headers=auth(merchant, "")
    )

    assert_error(response, 400, "VALIDATION_ERROR", "type")


async def test_webhook_routes_need_an_api_key(api_client: httpx.AsyncClient) -> None:
    for path in ("/webhooks/deliveries", "/events", "/webhook-endpoint"):
        assert_error(await api_client.get(f"{API}{path}"), 401, "MISSING_API_KEY")


async def test_endpoint_is_shown_and_updated_without_secrets(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant(webhook_url="https://old.example/hook")
    headers = auth(merchant, "")

    shown = await api_client.get(f"{API}/webhook-endpoint", headers=headers)
    updated = await api_client.put(
        f"{API}/webhook-endpoint", json={"url": PUBLIC_URL}, headers=headers
    )
    after = await api_client.get(f"{API}/webhook-endpoint", headers=headers)

    assert shown.json()["data"] == {
        "url": "https://old.example/hook",
        "previousSecretExpiresAt": None,
    }
    assert updated.status_code == 200, updated.text
    assert after.json()["data"]["url"] == PUBLIC_URL
    for response in (shown, updated, after):
        assert merchant.webhook_secret not in response.text
        assert "whsec_" not in response.text


async def test_an_endpoint_changed_through_another_api_process_is_shown_at_once(
    api_client: httpx.AsyncClient,
    other_api_process: httpx.AsyncClient,
    make_merchant: MerchantFactory,
) -> None:
    """Found by the multi-process review: GET showed the merchant this process had cached with
    its API key, so right after a PUT answered by another process it showed the old URL."""
    merchant = await make_merchant(webhook_url="https://old.example/hook")
    headers = auth(merchant, "")
    before = await other_api_process.get(f"{API}/webhook-endpoint", headers=headers)
    assert before.json()["data"]["url"] == "https://old.example/hook"  # now cached there

    updated = await api_client.put(
        f"{API}/webhook-endpoint", json={"url": PUBLIC_URL}, headers=headers
    )
    after = await other_api_process.get(f"{API}/webhook-endpoint", headers=headers)

    assert updated.status_code == 200, updated.text
    assert after.json()["data"]["url"] == PUBLIC_URL


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"url": "ftp://merchant.example/hook"}, "http:// or https://"),
        ({"url": "https://user:pw@merchant.example/hook"}, "credentials"),
        ({"url": "https://merchant.example/" + "a" * 2100}, "2048"),
        ({"url": ""}, "at least 1"),
        ({"url": 42}, "string"),
        ({}, "required"),
    ],
)
async def test_endpoint_url_is_validated(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    body: dict[str, Any],
    message: str,
) -> None:
    merchant = await make_merchant(webhook_url=PUBLIC_URL)

    response = await api_client.put(
        f"{API}/webhook-endpoint", json=body, headers=auth(merchant, "")
    )

    error = assert_error(response, 400, "VALIDATION_ERROR", "url")
    assert message in str(error["details"])


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:9000/hook", "is not a public address"),
        # A name: private or missing, the same words (neither maps our network's names).
        ("http://localhost/hook", "host localhost does not resolve to a public address"),
        ("http://[::1]/hook", "is not a public address"),
        ("http://10.0.0.5/hook", "is not a public address"),
        ("http://192.168.1.10/hook", "is not a public address"),
        ("http://169.254.169.254/latest/meta-data", "is not a public address"),
        ("http://0.0.0.0/hook", "is not a public address"),
        ("http://[::7f00:1]:9000/hook", "is not a public address"),  # IPv4-compatible 127.0.0.1
        ("http://[64:ff9b::a00:1]/hook", "is not a public address"),  # NAT64 10.0.0.1
        ("https://no-such-host.invalid/hook", "does not resolve to a public address"),
        # Host names that are no host names: IDNA refuses an empty or over-long label.
        ("http://a..b/hook", "is not a valid host name"),
        ("http://.example.com/hook", "is not a valid host name"),
        (f"https://{'a' * 64}.com/hook", "is not a valid host name"),
        # Addresses and names the sender's parse (httpx) refuses, where the resolver takes them:
        ("https://010.8.8.8/hook", "Invalid IPv4 address"),  # 8.8.8.8 to getaddrinfo
        ("https://93.184.215.014/hook", "Invalid IPv4 address"),
        ("https://\u2603.com/hook", "Invalid IDNA hostname"),
    ],
)
async def test_endpoint_must_resolve_to_a_public_address(
    strict_api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    url: str,
    message: str,
) -> None:
    merchant = await make_merchant(webhook_url=PUBLIC_URL)

    response = await strict_api_client.put(
        f"{API}/webhook-endpoint", json={"url": url}, headers=auth(merchant, "")
    )

    error = assert_error(response, 400, "VALIDATION_ERROR", "url")
    assert message in error["message"]
    assert "127.0.0.1" not in error["message"] or "127.0.0.1" in url  # no map of our names
    async with sessions() as session:
        stored = await session.get(Merchant, merchant.merchant_id, options=[WITH_WEBHOOK_SECRETS])
    assert stored is not None and stored.webhook_url == PUBLIC_URL  # unchanged


async def test_a_public_endpoint_is_accepted_when_private_ones_are_refused(
    strict_api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()

    response = await strict_api_client.put(
        f"{API}/webhook-endpoint", json={"url": PUBLIC_URL}, headers=auth(merchant, "")
    )

    assert response.status_code == 200, response.text
    assert response.json()["data"]["url"] == PUBLIC_URL


async def test_rotating_the_secret_shows_it_once_and_keeps_the_old_one_signing(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    merchant = await make_merchant(webhook_url=PUBLIC_URL)
    headers = auth(merchant)

    rotated = await api_client.post(f"{API}/webhook-endpoint/rotate-secret", headers=headers)
    replay = await api_client.post(f"{API}/webhook-endpoint/rotate-secret", headers=headers)
    shown = await api_client.get(f"{API}/webhook-endpoint", headers=auth(merchant, ""))

    assert rotated.status_code == 200, rotated.text
    data = rotated.json()["data"]
    assert data["secret"].startswith("whsec_") and data["secret"] != merchant.webhook_secret
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.content == rotated.content
    async with sessions() as session:
        stored = await session.get(Merchant, merchant.merchant_id, options=[WITH_WEBHOOK_SECRETS])
    assert stored is not None
    assert (stored.webhook_secret, stored.previous_webhook_secret) == (
        data["secret"],
        merchant.webhook_secret,
    )
    assert stored.previous_secret_expires_at is not None
    grace = stored.previous_secret_expires_at - utcnow()
    assert timedelta(hours=settings.webhook_secret_grace_hours) - grace < timedelta(minutes=1)
    assert shown.json()["data"]["previousSecretExpiresAt"] == data["previousSecretExpiresAt"]
    assert "whsec_" not in shown.text
    assert orjson.loads(rotated.content)["message"]


async def test_a_rotation_can_say_how_long_the_previous_secret_keeps_signing(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """0 retires it at once: a leaked secret, or the readiness report's rotated-out-secret chaos
    on the day of the rotation."""
    merchant = await make_merchant(webhook_url=PUBLIC_URL)
    path = f"{API}/webhook-endpoint/rotate-secret"

    for hours in (0, 2):
        rotated = await api_client.post(
            path, json={"previousSecretGraceHours": hours}, headers=auth(merchant)
        )
        assert rotated.status_code == 200, rotated.text
        async with sessions() as session:
            stored = await session.get_one(Merchant, merchant.merchant_id, populate_existing=True)
        assert stored.previous_secret_expires_at is not None
        left = stored.previous_secret_expires_at - utcnow()
        assert abs(left - timedelta(hours=hours)) < timedelta(minutes=1)
        shown = rotated.json()["data"]["previousSecretExpiresAt"]
        assert (shown is None) == (hours == 0)

    for refused in (-1, 169, "2", 1.5):
        answer = await api_client.post(
            path, json={"previousSecretGraceHours": refused}, headers=auth(merchant)
        )
        assert_error(answer, 400, "VALIDATION_ERROR", "previousSecretGraceHours")
    typo = await api_client.post(path, json={"previousSecretGraceHour": 0}, headers=auth(merchant))
    assert_error(typo, 400, "VALIDATION_ERROR", "previousSecretGraceHour")


async def test_the_rotated_secret_is_never_stored_in_plaintext_for_replays(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant, key = await make_merchant(webhook_url=PUBLIC_URL), new_key()
    rotated = await api_client.post(
        f"{API}/webhook-endpoint/rotate-secret", headers=auth(merchant, key)
    )
    secret = rotated.json()["data"]["secret"]

    async with sessions() as session:
        stored = await session.get_one(IdempotencyKey, (merchant.merchant_id, key))
    assert stored.response_body is not None
    assert secret.encode() not in stored.response_body
    assert secret.removeprefix("whsec_").encode() not in stored.response_body
    replay = await api_client.post(
        f"{API}/webhook-endpoint/rotate-secret", headers=auth(merchant, key)
    )
    assert (replay.status_code, replay.content) == (200, rotated.content)


async def test_setting_the_url_while_the_secret_rotates_is_never_a_503(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """A rotation holds a shared lock on the merchant row (its idempotency key's foreign key),
    then locks the row to rotate; a PUT that queued its lock between the two was InnoDB's
    deadlock victim and answered 503, with the database up and the URL not set."""
    merchant = await make_merchant(webhook_url=PUBLIC_URL)
    for round_ in range(10):
        url = "https://93.184.215.15/webhooks/mypay" if round_ % 2 == 0 else PUBLIC_URL
        rotated, updated = await asyncio.gather(
            api_client.post(
                f"{API}/webhook-endpoint/rotate-secret", headers=auth(merchant, new_key())
            ),
            api_client.put(
                f"{API}/webhook-endpoint", json={"url": url}, headers=auth(merchant, "")
            ),
        )
        assert (rotated.status_code, updated.status_code) == (200, 200), updated.text
        async with sessions() as session:
            stored = await session.get_one(Merchant, merchant.merchant_id, populate_existing=True)
        assert stored.webhook_url == url


async def test_a_webhook_url_is_stored_as_the_merchant_sent_it(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    """A URL's bytes are what it names: composed (NFC) with the free text, a decomposed path
    (`cafe` + U+0301) was sent to as `caf%C3%A9` instead of `cafe%CC%81`, another resource of
    the merchant's server, and read back as a URL the merchant never set (diff review)."""
    merchant = await make_merchant()
    url = "http://127.0.0.1:9/hooks/cafe\u0301"
    answer = await api_client.put(
        f"{API}/webhook-endpoint", json={"url": url}, headers=auth(merchant, "")
    )
    assert answer.status_code == 200, answer.text
    read = await api_client.get(f"{API}/webhook-endpoint", headers=auth(merchant, ""))
    assert read.json()["data"]["url"] == url
