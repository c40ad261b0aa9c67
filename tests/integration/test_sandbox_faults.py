"""Faults on request (X-Sandbox-Fault and PUT /sandbox/faults) and the request log that records
them, against the real database, with the API in-process."""

import asyncio
import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, insert, select, update

from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import (
    ApiRequestRecord,
    IdempotencyKey,
    Merchant,
    Payout,
    PayoutEvent,
    WebhookAttempt,
    WebhookDelivery,
)
from contracts.domain.statuses import EventType, PayoutStatus
from contracts.settings import Settings
from contracts.webhook_chaos import ChaosKind
from contracts.webhooks import DeliveryStatus
from contracts.wire import format_timestamp
from tests.conftest import MerchantFactory
from tests.support.api_helpers import (
    API,
    assert_error,
    auth,
    create_payout,
    fail_payout,
    footprint,
    move_payout,
    new_key,
    payout_body,
    process_payout,
)
from tests.support.payout_records import expired_by
from tests.support.polling import eventually
from tests.support.processing import running_processor_and_relay

FAULT = "X-Sandbox-Fault"


async def post_payout(
    client: httpx.AsyncClient, merchant: Any, body: dict[str, Any], key: str, fault: str | None
) -> httpx.Response:
    headers = {**auth(merchant, key), **({FAULT: fault} if fault else {})}
    return await client.post(f"{API}/payouts", json=body, headers=headers)


async def test_an_injected_status_answers_at_once_with_retry_after_and_writes_nothing(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant()
    before = await footprint(sessions, merchant.merchant_id)
    key = new_key()
    for status, code in ((503, "SERVICE_UNAVAILABLE"), (429, "RATE_LIMITED")):
        response = await post_payout(api_client, merchant, payout_body(), key, f"status={status}")
        assert_error(response, status, code)
        assert response.headers["retry-after"] == "2"
    failed = await post_payout(api_client, merchant, payout_body(), key, "status=500")
    assert_error(failed, 500, "INTERNAL_ERROR")
    assert "retry-after" not in failed.headers

    assert await footprint(sessions, merchant.merchant_id) == before
    async with sessions() as session:
        assert await session.get(IdempotencyKey, (merchant.merchant_id, key)) is None
    # The key was never used: the same request without a fault goes through with it.
    assert (await post_payout(api_client, merchant, payout_body(), key, None)).status_code == 201


async def test_a_fault_is_injected_only_into_a_merchants_call(
    api_client: httpx.AsyncClient,
) -> None:
    """Without a merchant's key, authentication answers first, as it does without the header:
    no injected status, and no latency that would hold the connection for an unknown caller."""
    for headers, code in (
        ({}, "MISSING_API_KEY"),
        ({"X-API-KEY": "sk_test_nobody"}, "INVALID_API_KEY"),
    ):
        for spec in ("status=503", "latency=30000", "drop-connection", "explode"):
            response = await api_client.get(f"{API}/balance", headers={**headers, FAULT: spec})
            assert_error(response, 401, code)


async def test_a_fault_header_that_names_no_fault_is_a_400_naming_it(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    for spec in ("status=404", "latency=999999", "explode", "latency=-1"):
        response = await post_payout(api_client, merchant, payout_body(), new_key(), spec)
        assert_error(response, 400, "VALIDATION_ERROR", FAULT)


async def test_latency_delays_the_call_which_then_runs(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    started = time.monotonic()
    response = await post_payout(api_client, merchant, payout_body(), new_key(), "latency=300")
    assert response.status_code == 201, response.text
    assert time.monotonic() - started >= 0.3


async def test_timeout_after_commit_then_a_same_key_retry_replays_the_one_payout(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant()
    body, key = payout_body(), new_key()

    lost = await post_payout(api_client, merchant, body, key, "timeout-after-commit")
    assert_error(lost, 504, "GATEWAY_TIMEOUT")
    retried = await post_payout(api_client, merchant, body, key, None)

    assert retried.status_code == 201, retried.text
    assert retried.headers["idempotent-replayed"] == "true"
    async with sessions() as session:
        payouts = await session.scalar(
            select(func.count()).where(
                Payout.merchant_id == merchant.merchant_id,
                Payout.merchant_reference == body["merchantReference"],
            )
        )
    assert payouts == 1


async def test_a_merchant_wide_fault_hits_its_share_and_spares_the_sandbox_controls(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant, other = await make_merchant(), await make_merchant()
    headers = {"X-API-KEY": merchant.api_key}
    saved = await api_client.put(
        f"{API}/sandbox/faults", json={"fault": "status=503", "percent": 100}, headers=headers
    )
    assert saved.status_code == 200, saved.text
    assert saved.json()["data"] == {"fault": "status=503", "percent": 100}

    hit = await api_client.get(f"{API}/balance", headers=headers)
    assert_error(hit, 503, "SERVICE_UNAVAILABLE")
    assert (await api_client.get(f"{API}/balance", headers=auth(other, ""))).status_code == 200
    setting = await api_client.get(f"{API}/sandbox/faults", headers=headers)
    assert setting.json()["data"] == {"fault": "status=503", "percent": 100}
    # The request log, where the merchant sees what its faults did, is spared too.
    logged = await api_client.get(f"{API}/requests", headers=headers)
    assert logged.status_code == 200, logged.text
    # A call sent with two keys is nobody's, as authentication refuses it: neither key's
    # merchant-wide fault strikes it, whichever comes first.
    for both in ((other, merchant), (merchant, other)):
        twice = [("X-API-KEY", one.api_key) for one in both]
        assert_error(await api_client.get(f"{API}/balance", headers=twice), 401, "INVALID_API_KEY")
    # Nor the probes, which a client sending its key on every call reaches with it: 503 means
    # only that a dependency is down.
    for probe in ("/health", "/ready"):
        assert (await api_client.get(f"{API}{probe}", headers=headers)).status_code == 200

    assert (await api_client.delete(f"{API}/sandbox/faults", headers=headers)).status_code == 200
    assert (await api_client.get(f"{API}/balance", headers=headers)).status_code == 200


async def test_a_merchant_wide_fault_setting_is_validated_field_by_field(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    headers = {"X-API-KEY": merchant.api_key}
    for body, field in (
        ({"fault": "status=418", "percent": 10}, "fault"),
        ({"fault": "status=503", "percent": 0}, "percent"),
        ({"fault": "status=503", "percent": 101}, "percent"),
        ({"percent": 10}, "fault"),
        ({"fault": "latency=\u0661\u0662", "percent": 10}, "fault"),  # Arabic-Indic digits
        ({"fault": "status=\uff15\uff10\uff13", "percent": 10}, "fault"),  # fullwidth
    ):
        response = await api_client.put(f"{API}/sandbox/faults", json=body, headers=headers)
        assert_error(response, 400, "VALIDATION_ERROR", field)


async def test_production_refuses_faults_and_the_sandbox_controls_with_404(
    production_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    refused = await post_payout(production_client, merchant, payout_body(), new_key(), "status=503")
    assert_error(refused, 404, "NOT_FOUND")
    # Its production document lists that 404 (every merchant operation's), not the header.
    create = (await production_client.get("/openapi.json")).json()["paths"][f"{API}/payouts"]
    assert "NOT_FOUND" in create["post"]["responses"]["404"]["description"]
    assert "X-Sandbox-Fault" not in str(create)
    headers = {"X-API-KEY": merchant.api_key}
    for path in ("/sandbox/faults", "/sandbox/webhook-chaos", "/sandbox/readiness", "/requests"):
        assert_error(await production_client.get(f"{API}{path}", headers=headers), 404, "NOT_FOUND")
    # Before anything else is judged: no key, no idempotency key.
    simulate = f"{API}/sandbox/payouts/{uuid.uuid4()}/simulate"
    for sent in ({}, headers):
        refused = await production_client.post(simulate, json={"outcome": "SUCCESS"}, headers=sent)
        assert_error(refused, 404, "NOT_FOUND")


async def logged_requests(
    client: httpx.AsyncClient, merchant: Any, count: int, **params: Any
) -> list[dict[str, Any]]:
    """The merchant's request log once it holds `count` calls (it is written just after)."""

    async def probe() -> list[dict[str, Any]] | None:
        response = await client.get(
            f"{API}/requests", params={"limit": 100, **params}, headers=auth(merchant, "")
        )
        assert response.status_code == 200, response.text
        requests: list[dict[str, Any]] = response.json()["data"]["requests"]
        return requests if len(requests) >= count else None

    return await eventually(probe, what=f"{count} logged requests")


async def test_the_request_log_shows_each_call_with_its_fault_replay_and_masked_bodies(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant, other = await make_merchant(), await make_merchant()
    body, key = payout_body(accountNumber="03001234567"), new_key()
    await post_payout(api_client, merchant, body, key, "timeout-after-commit")
    await post_payout(api_client, merchant, body, key, None)
    await api_client.get(f"{API}/payouts", params={"limit": 1}, headers=auth(merchant, ""))

    retried_list, retry, lost = await logged_requests(api_client, merchant, 3)

    assert (lost["method"], lost["path"], lost["status"]) == ("POST", f"{API}/payouts", 504)
    assert (lost["fault"], lost["idempotencyKey"], lost["replayed"]) == (
        "timeout-after-commit",
        key,
        False,
    )
    assert lost["lostStatus"] == 201, "the answer the fault hid: the payout was created"
    assert (retry["status"], retry["replayed"], retry["fault"]) == (201, True, None)
    assert retry["lostStatus"] is None
    assert retried_list["path"] == f"{API}/payouts?limit=1"
    for logged in (lost, retry):
        assert "03001234567" not in logged["requestBody"]
        assert "*******4567" in logged["requestBody"]
        assert body["merchantReference"] in logged["requestBody"]
    assert "03001234567" not in retry["responseBody"]
    assert lost["latencyMs"] >= 0 and lost["requestId"].startswith("req_")
    others = await api_client.get(f"{API}/requests", headers=auth(other, ""))
    assert others.json()["data"]["requests"] == []


async def test_the_request_log_keeps_a_query_as_sent_and_masked_as_a_body(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    """A key or an account number sent in the query (each refused: 400) was kept whole in the
    request log's path for 7 days, though a body's are masked; and a query is the call made (a
    `%2B` decoded to `+` is a space: the logged path sent again was another call, a 400)."""
    merchant = await make_merchant()
    plus_five = f"{API}/payouts?createdFrom=2026-01-01T00:00:00%2B05:00"
    assert (await api_client.get(plus_five, headers=auth(merchant, ""))).status_code == 200
    sent = ({"api_key": merchant.api_key}, {"accountNumber": "+923001234567"})
    # Read as 03001234567 by the API, the digits not in one run: kept whole as such.
    dashed = {"accountNumber": "0300-1234567"}
    for params in (*sent, dashed):
        refused = await api_client.get(f"{API}/balance", params=params, headers=auth(merchant, ""))
        assert refused.status_code == 400

    dashed_account, account, key, listed = await logged_requests(api_client, merchant, 4)

    assert listed["path"] == plus_five
    assert merchant.api_key not in key["path"] and "[REDACTED]" in key["path"]
    # An account field's value is masked whatever it holds, as a JSON body's.
    assert account["path"] == f"{API}/balance?accountNumber=*********4567"
    assert dashed_account["path"] == f"{API}/balance?accountNumber=********4567"


async def test_the_request_log_masks_a_secret_in_the_path_or_the_idempotency_key(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    """Masked in the query and the body, they were kept whole in the path (a key pasted as a
    payout id, an account number looked up as one) and as the idempotency key (a webhook secret
    pasted in the wrong header, refused as not a UUID)."""
    merchant = await make_merchant()
    for path in (f"{API}/payouts/{merchant.api_key}", f"{API}/payouts/03001234567"):
        answer = await api_client.get(path, headers=auth(merchant, ""))
        assert answer.status_code == 404, answer.text
    secret = "whsec_" + "S" * 40
    refused = await api_client.post(
        f"{API}/payouts", json=payout_body(), headers=auth(merchant, secret)
    )
    assert refused.status_code == 400, refused.text
    # A key is no secret, kept as sent: the readiness report tells a retry by it. A UUID of 32
    # digits was masked as an account number, and two such keys ending alike were one.
    digits = "1" * 28 + "0001"
    created = await api_client.post(
        f"{API}/payouts", json=payout_body(), headers=auth(merchant, digits)
    )
    assert created.status_code == 201, created.text

    # An API key sent as the request id was kept whole, and shown on the dashboard (reqlog
    # review); a request id of digits stays as sent, as in the service logs.
    # Masked, an id of 100 characters ending in a key is longer than its column: it was left
    # out of the log (diff review).
    longest = "a" * 90 + "mpk_test_x"
    for request_id in (merchant.api_key, digits, longest):
        answer = await api_client.get(
            f"{API}/balance", headers={**auth(merchant, ""), "X-Request-ID": request_id}
        )
        assert answer.status_code == 200, answer.text

    longest_id, digit_id, key_id, digit_keyed, keyed, account, api_key = await logged_requests(
        api_client, merchant, 7
    )

    assert merchant.api_key not in api_key["path"] and "[REDACTED]" in api_key["path"]
    assert account["path"] == f"{API}/payouts/*******4567"
    assert keyed["idempotencyKey"] == "whsec_[REDACTED]"
    assert digit_keyed["idempotencyKey"] == digits
    assert key_id["requestId"] == "mpk_test_[REDACTED]"
    assert digit_id["requestId"] == digits
    assert longest_id["requestId"] == ("a" * 90 + "mpk_test_[REDACTED]")[:100]


async def test_the_request_log_pages_newest_first(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    for _ in range(5):
        await api_client.get(f"{API}/balance", headers=auth(merchant, ""))
    everything = await logged_requests(api_client, merchant, 5)
    first = (
        await api_client.get(f"{API}/requests", params={"limit": 2}, headers=auth(merchant, ""))
    ).json()["data"]
    second = (
        await api_client.get(
            f"{API}/requests",
            params={"limit": 2, "startingAfter": first["pagination"]["nextCursor"]},
            headers=auth(merchant, ""),
        )
    ).json()["data"]

    started = [r["startedAt"] for r in everything]
    assert started == sorted(started, reverse=True)
    assert [r["id"] for r in first["requests"] + second["requests"]] == [
        r["id"] for r in everything[:4]
    ]
    assert first["pagination"]["hasMore"] is True


async def test_the_request_log_lists_the_last_week_newest_first_by_start(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """A row is logged once its call has answered: listed by id, a slow call came above the
    quicker calls that started after it. And a call of 8 days ago was listed (only the relay's
    clean-up, every 5 minutes, kept the week)."""
    merchant, other = await make_merchant(), await make_merchant()
    now = utcnow()

    def call(path: str, started_seconds_ago: float, who: NewMerchant = merchant) -> dict[str, Any]:
        return {
            "merchant_id": who.merchant_id,
            "request_id": f"req_{uuid.uuid4().hex}",
            "method": "GET",
            "path": path,
            "status": 200,
            "latency_ms": 1,
            "started_at": now - timedelta(seconds=started_seconds_ago),
        }

    async with transaction(sessions) as session:  # logged in this order
        for row in (
            call("/quick", 10),
            call("/slow", 30),  # started first, answered last
            call("/old", 8 * 24 * 3600),
            call("/theirs", 5, other),
        ):
            await session.execute(insert(ApiRequestRecord).values(**row))

    async def page(**params: Any) -> httpx.Response:
        return await api_client.get(f"{API}/requests", params=params, headers=auth(merchant, ""))

    first = (await page(limit=1)).json()["data"]
    second = (await page(limit=1, startingAfter=first["pagination"]["nextCursor"])).json()["data"]
    assert [r["path"] for r in first["requests"] + second["requests"]] == ["/quick", "/slow"]
    assert second["pagination"] == {"limit": 1, "hasMore": False, "nextCursor": None}
    async with sessions() as session:
        theirs = await session.scalar(
            select(ApiRequestRecord.id).where(ApiRequestRecord.merchant_id == other.merchant_id)
        )
    assert_error(await page(startingAfter=theirs), 400, "VALIDATION_ERROR", "startingAfter")


async def readiness(client: httpx.AsyncClient, merchant: Any) -> dict[str, dict[str, Any]]:
    response = await client.get(f"{API}/sandbox/readiness", headers=auth(merchant, ""))
    assert response.status_code == 200, response.text
    return {item["id"]: item for item in response.json()["data"]["items"]}


async def test_readiness_tells_a_careful_retry_from_a_careless_one(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    """Each client also sends another payout (its own body and key) between a failed call and
    its retry, as a client with several workers does: that call is not the retry."""
    careful, careless = await make_merchant(), await make_merchant()
    for merchant in (careful, careless):
        body, key = payout_body(), new_key()
        await post_payout(api_client, merchant, body, key, "timeout-after-commit")
        await post_payout(api_client, merchant, payout_body(), new_key(), None)
        retry_key = key if merchant is careful else new_key()
        await post_payout(api_client, merchant, body, retry_key, None)
        body, key = payout_body(), new_key()
        limited = await post_payout(api_client, merchant, body, key, "status=429")
        await post_payout(api_client, merchant, payout_body(), new_key(), None)
        if merchant is careful:  # a client honouring Retry-After waits, by design
            await asyncio.sleep(float(limited.headers["retry-after"]))
        await post_payout(api_client, merchant, body, key, None)
        await logged_requests(api_client, merchant, 6)

    good, bad = await readiness(api_client, careful), await readiness(api_client, careless)

    assert good["timeout_retry_same_key"]["status"] == "passed"
    assert good["retry_after_honoured"]["status"] == "passed"
    assert bad["timeout_retry_same_key"]["status"] == "failed"
    assert bad["timeout_retry_same_key"]["evidence"] == "1 retry sent a new key"
    assert bad["retry_after_honoured"]["status"] == "failed"
    assert good["scenario_0001"]["status"] == "not_tried"
    assert good["reinitiate_done"]["status"] == "not_tried"


async def test_readiness_judges_the_retry_of_a_post_without_a_body(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """A reinitiation refused 429, retried at once. The refusal was logged with no digest (no
    body), its retry with idempotency's fingerprint of the empty body: not "the same request",
    so the early retry was never found (found by the readiness review)."""
    merchant = await make_merchant()
    payout = await create_payout(api_client, merchant)
    await fail_payout(sessions, payout["id"])
    path, key = f"{API}/payouts/{payout['id']}/reinitiate", new_key()
    refused = await api_client.post(path, headers={**auth(merchant, key), FAULT: "status=429"})
    assert refused.status_code == 429, refused.text
    retried = await api_client.post(path, headers=auth(merchant, key))  # at once: too early
    assert retried.status_code == 200, retried.text
    await logged_requests(api_client, merchant, 3)

    item = (await readiness(api_client, merchant))["retry_after_honoured"]
    assert (item["status"], item["evidence"]) == ("failed", "1 retried too early")


async def test_readiness_takes_no_retry_of_a_request_refused_behind_a_timeout_as_evidence(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    """The fault hid a 400 (nothing was written) behind its 504, and the retry with the same key
    passed "reused its idempotency key": a client that never met a write whose answer was lost
    was told it handles one. The request log keeps the status the fault hid."""
    merchant = await make_merchant()
    body, key = payout_body(amount="-1.00"), new_key()
    lost = await post_payout(api_client, merchant, body, key, "timeout-after-commit")
    assert lost.status_code == 504
    await post_payout(api_client, merchant, body, key, None)
    retry, logged = await logged_requests(api_client, merchant, 2)

    assert (logged["status"], logged["lostStatus"], retry["status"]) == (504, 400, 400)
    item = (await readiness(api_client, merchant))["timeout_retry_same_key"]
    assert item["status"] == "not_tried"
    assert "1 such request refused behind the fault" in item["evidence"]


async def test_readiness_takes_a_retry_refused_for_a_repeated_key_header_for_no_retry_alike(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    """The retry carried X-IDEMPOTENCY-KEY twice, the lost request's key first (a client library
    merging headers): the API read no key (400 INVALID_IDEMPOTENCY_KEY), but the log kept the
    first, and the report passed "reused its idempotency key"."""
    merchant = await make_merchant()
    body, key = payout_body(), new_key()
    await post_payout(api_client, merchant, body, key, "timeout-after-commit")
    headers = [("X-API-KEY", merchant.api_key), ("X-IDEMPOTENCY-KEY", key)]
    retry = await api_client.post(
        f"{API}/payouts", json=body, headers=[*headers, ("X-IDEMPOTENCY-KEY", new_key())]
    )
    assert_error(retry, 400, "INVALID_IDEMPOTENCY_KEY")
    logged_retry, _ = await logged_requests(api_client, merchant, 2)

    assert logged_retry["idempotencyKey"] is None
    item = (await readiness(api_client, merchant))["timeout_retry_same_key"]
    assert item["status"] == "failed", item


async def test_readiness_tells_two_accounts_ending_alike_apart(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    """A worker's verify-account times out after commit; another worker verifies another account
    of the same scenario suffix with its own key; the first retries with its key. The log masks
    both accounts to *******0001: judged by the masked body, that other call was the retry, with
    a new key."""
    merchant = await make_merchant()
    body = {"destType": "WALLET", "walletCode": "JAZZCASH", "accountNumber": "03001230001"}
    key = new_key()
    headers = {**auth(merchant, key), FAULT: "timeout-after-commit"}
    lost = await api_client.post(f"{API}/verify-account", json=body, headers=headers)
    assert lost.status_code == 504, lost.text
    other = {**body, "accountNumber": "03007770001"}
    response = await api_client.post(f"{API}/verify-account", json=other, headers=auth(merchant))
    assert response.status_code == 200, response.text
    # The same request, its keys in another order: the same to idempotency, and to readiness.
    reordered = dict(reversed(body.items()))
    retry = await api_client.post(
        f"{API}/verify-account", json=reordered, headers=auth(merchant, key)
    )
    assert retry.headers.get("idempotent-replayed") == "true", retry.text
    await logged_requests(api_client, merchant, 3)

    item = (await readiness(api_client, merchant))["timeout_retry_same_key"]
    assert (item["status"], item["evidence"]) == ("passed", "1 retried alike")


async def delivered_reversal(
    sessions: SessionFactory, merchant: NewMerchant, payout: dict[str, Any]
) -> str:
    """The payout's payout.reversed event, and its webhook delivered (as the webhook service
    records one): the delivery's id."""
    now, event_id, delivery_id = utcnow(), f"evt_reversed_{payout['id'][:8]}", str(uuid.uuid4())
    async with transaction(sessions) as session:
        await session.execute(
            insert(PayoutEvent).values(
                id=event_id,
                merchant_id=merchant.merchant_id,
                payout_id=payout["id"],
                type=EventType.REVERSED.value,
                body=b"{}",
                created_at=now,
            )
        )
        await session.execute(
            insert(WebhookDelivery).values(
                id=delivery_id,
                event_id=event_id,
                merchant_id=merchant.merchant_id,
                payout_id=payout["id"],
                event_type=EventType.REVERSED.value,
                status=DeliveryStatus.DELIVERED.value,
                attempts=1,
                delivered_at=now,
                created_at=now,
                updated_at=now,
            )
        )
    return delivery_id


async def test_a_restarted_readiness_report_counts_only_what_came_after(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """The report counted everything ever done: a receiver that once accepted a stale delivery,
    or one retry sent too early, kept its item failed for good, however the integration was
    fixed since."""
    merchant = await make_merchant()
    body, key = payout_body(), new_key()
    await post_payout(api_client, merchant, body, key, "status=429")
    await post_payout(api_client, merchant, body, key, None)  # at once: too early
    failed = await create_payout(api_client, merchant, accountNumber="03001230003")
    await process_payout(sessions, failed["id"], PayoutStatus.FAILED)
    reversed_payout = await create_payout(api_client, merchant)
    await move_payout(sessions, reversed_payout["id"], PayoutStatus.REVERSED)
    delivery_id = await delivered_reversal(sessions, merchant, reversed_payout)
    async with transaction(sessions) as session:  # the receiver took a stale delivery
        await session.execute(
            insert(WebhookAttempt).values(
                delivery_id=delivery_id,
                attempt_number=1,
                url="https://merchant.example/webhooks",
                status_code=200,
                latency_ms=5,
                chaos=ChaosKind.STALE_TIMESTAMP.value,
                created_at=utcnow(),
            )
        )
    await logged_requests(api_client, merchant, 4)
    before = await readiness(api_client, merchant)
    assert [
        before[item]["status"]
        for item in ("retry_after_honoured", "stale_timestamp_refused", "scenario_0003")
    ] == ["failed", "failed", "passed"]
    assert before["reversal_received"]["status"] == "passed"

    key = new_key()
    restarted = await api_client.post(
        f"{API}/sandbox/readiness/restart", headers=auth(merchant, key)
    )
    assert restarted.status_code == 200, restarted.text
    report = restarted.json()["data"]
    assert report["since"] is not None
    assert {item["status"] for item in report["items"]} == {"not_tried"}, report["items"]
    replayed = await api_client.post(
        f"{API}/sandbox/readiness/restart", headers=auth(merchant, key)
    )
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.json()["data"] == report
    async with sessions() as session:  # the replay did not move the run's start
        since = await session.scalar(
            select(Merchant.readiness_since).where(Merchant.id == merchant.merchant_id)
        )
    assert since is not None and format_timestamp(since) == report["since"]

    # What comes after counts again.
    body, key = payout_body(), new_key()
    await post_payout(api_client, merchant, body, key, "status=429")
    await post_payout(api_client, merchant, body, key, None)

    async def early_retry_counted() -> bool:
        item = (await readiness(api_client, merchant))["retry_after_honoured"]
        return item["status"] == "failed"

    await eventually(early_retry_counted, what="the retry after the restart counted")
    # A payout that failed before the restart, reinitiated after it: a reinitiation of the run.
    reinitiated = await api_client.post(
        f"{API}/payouts/{failed['id']}/reinitiate", headers=auth(merchant)
    )
    assert reinitiated.status_code == 200, reinitiated.text
    after = await readiness(api_client, merchant)
    assert after["scenario_0001"]["status"] == "not_tried"  # the new create has not ended yet
    assert (after["reinitiate_done"]["status"], after["reinitiate_done"]["evidence"]) == (
        "passed",
        "1 reinitiations",
    )


async def test_readiness_counts_reinitiations_and_reversals_delivered(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant()
    failed = await create_payout(api_client, merchant)
    for _ in range(2):
        await fail_payout(sessions, failed["id"])
        response = await api_client.post(
            f"{API}/payouts/{failed['id']}/reinitiate", headers=auth(merchant)
        )
        assert response.status_code == 200, response.text
    reversed_payout = await create_payout(api_client, merchant)
    await move_payout(sessions, reversed_payout["id"], PayoutStatus.REVERSED)
    await delivered_reversal(sessions, merchant, reversed_payout)
    undelivered = await create_payout(api_client, merchant)  # reversed, its webhook not in yet
    await move_payout(sessions, undelivered["id"], PayoutStatus.REVERSED)

    items = await readiness(api_client, merchant)

    assert (items["reinitiate_done"]["status"], items["reinitiate_done"]["evidence"]) == (
        "passed",
        "2 reinitiations",
    )
    assert items["reversal_received"]["status"] == "passed"
    assert items["reversal_received"]["evidence"] == "1 payout.reversed webhooks delivered"

    # Sent again by the merchant (to test its deduplication), and failing this time.
    async with transaction(sessions) as session:
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.payout_id == reversed_payout["id"])
            .values(status=DeliveryStatus.RETRYING.value)
        )
    items = await readiness(api_client, merchant)
    assert items["reversal_received"]["evidence"] == "1 payout.reversed webhooks delivered"


async def test_reinitiating_a_failed_payout_keeps_its_scenario_passed_in_readiness(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """The report's hint says to reinitiate a FAILED payout; doing so put the scenario it had
    finished back to "not tried" until it failed again."""
    merchant = await make_merchant()
    failed = await create_payout(api_client, merchant, accountNumber="03001230003")
    await process_payout(sessions, failed["id"], PayoutStatus.FAILED)
    assert (await readiness(api_client, merchant))["scenario_0003"]["status"] == "passed"
    reinitiated = await api_client.post(
        f"{API}/payouts/{failed['id']}/reinitiate", headers=auth(merchant)
    )
    assert reinitiated.status_code == 200, reinitiated.text

    items = await readiness(api_client, merchant)
    assert (items["scenario_0003"]["status"], items["scenario_0003"]["evidence"]) == (
        "passed",
        "1 of 1 final",
    )


async def test_a_scenario_an_earlier_psp_outcome_skipped_is_not_passed_in_readiness(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, settings: Settings
) -> None:
    """An outcome simulated before the processor took the payout wins over its scenario: a
    payout to ...0003 ended SUCCESS without failing, one of 100,000 without any review, one to
    ...0005 without being held. Each read "seen to its final status"."""
    merchant = await make_merchant(balance="500000.00")
    skipped = {
        "0003": {"accountNumber": "03001230003"},
        "in_review": {"amount": "100000.00"},
        "0005": {"accountNumber": "03001230005"},
    }
    for overrides in skipped.values():
        payout = await create_payout(api_client, merchant, **overrides)
        simulated = await api_client.post(
            f"{API}/sandbox/payouts/{payout['id']}/simulate",
            json={"outcome": "SUCCESS"},
            headers=auth(merchant),
        )
        assert simulated.status_code == 202, simulated.text
    ran = await create_payout(api_client, merchant, amount="100000.00")

    async with running_processor_and_relay(settings):

        async def taken() -> bool | None:
            listed = await api_client.get(f"{API}/payouts", headers=auth(merchant, ""))
            statuses = [payout["status"] for payout in listed.json()["data"]["payouts"]]
            done = statuses.count("SUCCESS") == len(skipped) and "IN_REVIEW" in statuses
            return done or None

        await eventually(taken, what="the simulated outcomes applied, one payout in review")
        decided = await api_client.post(
            f"{API}/sandbox/payouts/{ran['id']}/simulate",
            json={"outcome": "FAILED"},
            headers=auth(merchant),
        )
        assert decided.status_code == 202, decided.text

        async def judged() -> dict[str, str] | None:
            items = await readiness(api_client, merchant)
            judged = {scenario: items[f"scenario_{scenario}"]["status"] for scenario in skipped}
            return judged if judged["in_review"] == "passed" else None

        # The payout that went through review passes its item; the skipped ones pass nothing.
        assert await eventually(judged, what="the reviewed payout final") == {
            "0003": "not_tried",
            "in_review": "passed",
            "0005": "not_tried",
        }


async def test_a_scenario_a_simulated_outcome_skipped_is_not_passed_until_it_ran(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, settings: Settings
) -> None:
    """An outcome simulated before the processor took the payout skips its scenario. Each read
    "seen to its final status": a script's (0008 never pending at the PSP, 0009 never retried)
    and a rule's without a status of its own on the way (0001, 0003: nothing checked that the
    processor took them); and a 0005 payout failed so, then reinitiated and held by the
    processor: the release of its first cycle counted as its scenario's end (found by the
    readiness review)."""
    merchant = await make_merchant()
    skipped = {
        "0001": "SUCCESS",
        "0003": "FAILED",
        "0005": "FAILED",
        "0008": "FAILED",
        "0009": "FAILED",
    }
    payout_ids = {}
    for suffix, outcome in skipped.items():
        payout = await create_payout(api_client, merchant, accountNumber=f"0300123{suffix}")
        simulated = await api_client.post(
            f"{API}/sandbox/payouts/{payout['id']}/simulate",
            json={"outcome": outcome},
            headers=auth(merchant),
        )
        assert simulated.status_code == 202, simulated.text
        payout_ids[payout["id"]] = suffix

    async def statuses_are(wanted: dict[str, str]) -> bool | None:
        listed = await api_client.get(f"{API}/payouts", headers=auth(merchant, ""))
        payouts = listed.json()["data"]["payouts"]
        return {payout_ids[payout["id"]]: payout["status"] for payout in payouts} == wanted or None

    async with running_processor_and_relay(settings):
        await eventually(lambda: statuses_are(skipped), what="the simulated outcomes applied")
        on_hold = next(id_ for id_, suffix in payout_ids.items() if suffix == "0005")
        reinitiated = await api_client.post(
            f"{API}/payouts/{on_hold}/reinitiate", headers=auth(merchant)
        )
        assert reinitiated.status_code == 200, reinitiated.text
        held = {**skipped, "0005": "ON_HOLD"}
        await eventually(lambda: statuses_are(held), what="the reinitiated 0005 held")

    items = await readiness(api_client, merchant)
    judged = {suffix: items[f"scenario_{suffix}"]["status"] for suffix in skipped}
    assert judged == dict.fromkeys(skipped, "not_tried"), items


async def test_a_payout_that_expired_in_the_queue_shows_no_scenario_in_readiness(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """Queued, then failed QUEUE_EXPIRED before it started: final, but the merchant saw no retry,
    no PSP wait, no IPN of the account's scenario."""
    merchant = await make_merchant(balance="10.00")
    queued = []
    for suffix in ("0002", "0004"):
        body = payout_body(
            amount="150.00", queueIfLowBalance=True, accountNumber=f"0300123{suffix}"
        )
        created = await api_client.post(f"{API}/payouts", json=body, headers=auth(merchant))
        assert created.json()["data"]["status"] == PayoutStatus.QUEUED.value, created.text
        queued.append(created.json()["data"]["id"])
    expired = await expired_by(sessions, merchant.merchant_id, utcnow() + timedelta(hours=73))
    assert sorted(payout.id for payout in expired) == sorted(queued)

    report = await api_client.get(f"{API}/sandbox/readiness", headers=auth(merchant))
    items = {item["id"]: item for item in report.json()["data"]["items"]}
    for suffix in ("0002", "0004"):
        assert (items[f"scenario_{suffix}"]["status"], items[f"scenario_{suffix}"]["evidence"]) == (
            "not_tried",
            "none yet",
        )

    # Reinitiated once funded, it waits at the PSP: its scenario has not ended. It passed, as
    # a payout reinitiated after its scenario failed it (that one reached its end).
    funded = await api_client.post(
        f"{API}/sandbox/top-up", json={"amount": "500.00"}, headers=auth(merchant)
    )
    assert funded.status_code == 200, funded.text
    again = await api_client.post(f"{API}/payouts/{queued[1]}/reinitiate", headers=auth(merchant))
    assert again.json()["data"]["status"] == PayoutStatus.PENDING.value, again.text
    items = await readiness(api_client, merchant)
    assert (items["scenario_0004"]["status"], items["scenario_0004"]["evidence"]) == (
        "not_tried",
        "1 created, none final yet",
    )


async def test_a_fault_switched_off_through_one_api_process_is_off_in_another_at_once(
    api_client: httpx.AsyncClient,
    other_api_process: httpx.AsyncClient,
    make_merchant: MerchantFactory,
) -> None:
    """Found by the multi-process review: each process kept every merchant's setting for 2 s,
    so the merchant's next call after the DELETE, answered behind a load balancer by another
    process, still got the injected 503."""
    merchant = await make_merchant()
    put = await api_client.put(
        f"{API}/sandbox/faults",
        json={"fault": "status=503", "percent": 100},
        headers=auth(merchant, ""),
    )
    assert put.status_code == 200, put.text

    async def other_injects() -> bool:
        answer = await other_api_process.get(f"{API}/balance", headers=auth(merchant, ""))
        return answer.status_code == 503

    await eventually(other_injects, within=10, what="the other process injecting the fault")
    cleared = await api_client.delete(f"{API}/sandbox/faults", headers=auth(merchant, ""))
    assert cleared.status_code == 200, cleared.text

    answer = await other_api_process.get(f"{API}/balance", headers=auth(merchant, ""))
    assert answer.status_code == 200, answer.text
