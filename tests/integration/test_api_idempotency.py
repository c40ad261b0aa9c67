"""X-IDEMPOTENCY-KEY: replays byte-for-byte, reuse with another request, missing/invalid keys,
4xx stored and 5xx not, and concurrent requests with one key."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from api_service.app import create_app
from api_service.idempotency import request_fingerprint
from contracts import ledger
from contracts.db.engine import SessionFactory, transaction, utcnow
from contracts.db.models import IdempotencyKey, Merchant
from contracts.reconcile import reconcile
from contracts.settings import Settings
from tests.conftest import MerchantFactory
from tests.support.api_helpers import (
    API,
    assert_error,
    auth,
    create_failed_payout,
    create_payout,
    fail_payout,
    footprint,
    get_balance,
    new_key,
    payout_body,
)
from tests.support.polling import eventually

REPLAYED = "idempotent-replayed"
PAYOUT_ID = "00000000-0000-4000-8000-000000000000"
POST_ROUTES = [
    "/payouts",
    f"/payouts/{PAYOUT_ID}/reinitiate",
    "/verify-account",
    f"/sandbox/payouts/{PAYOUT_ID}/simulate",
]


@pytest.mark.parametrize("path", POST_ROUTES)
async def test_missing_idempotency_key_is_400(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, path: str
) -> None:
    merchant = await make_merchant()
    response = await api_client.post(f"{API}{path}", json={}, headers=auth(merchant, ""))
    assert_error(response, 400, "MISSING_IDEMPOTENCY_KEY", "X-IDEMPOTENCY-KEY")


# uuid.UUID reads all of these: it drops hyphens and `urn:`/`uuid:` anywhere and takes what
# int(text, 16) takes, so `+<31 digits>` and `0<31 digits>` were one key (one replayed the other).
HEX = "6754c8d5c4ef44c8b1df1d2941558220"
NOT_UUIDS = [
    "not-a-uuid",
    "12345",
    "0" * 36,
    "0x" + HEX[2:],
    "+" + HEX[1:],
    HEX[:8] + "_" + HEX[8:-1],
    HEX[:10] + "uuid:" + HEX[10:],
    "----" + HEX,
]


@pytest.mark.parametrize("path", POST_ROUTES)
@pytest.mark.parametrize("key", NOT_UUIDS)
async def test_invalid_idempotency_key_is_400(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, path: str, key: str
) -> None:
    merchant = await make_merchant()
    response = await api_client.post(f"{API}{path}", json={}, headers=auth(merchant, key))
    # The header named, as other headers' refusals name theirs (found by the idempotency review).
    assert_error(response, 400, "INVALID_IDEMPOTENCY_KEY", "X-IDEMPOTENCY-KEY")


async def test_replay_returns_the_first_response_byte_for_byte(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant(balance="1000.00")
    headers, body = auth(merchant), payout_body()
    first = await api_client.post(f"{API}/payouts", json=body, headers=headers)
    assert first.status_code == 201
    assert REPLAYED not in first.headers
    after_first = await footprint(sessions, merchant.merchant_id)

    # The same JSON with other key order and spacing is the same request.
    reordered = orjson.dumps(dict(reversed(list(body.items()))), option=orjson.OPT_INDENT_2)
    for content in (orjson.dumps(body), reordered):
        replay = await api_client.post(
            f"{API}/payouts",
            content=content,
            headers={**headers, "Content-Type": "application/json"},
        )
        assert replay.status_code == 201
        assert replay.content == first.content
        assert replay.headers[REPLAYED] == "true"
    assert await footprint(sessions, merchant.merchant_id) == after_first
    assert (await get_balance(api_client, merchant))["availableBalance"] == "900.00"


@pytest.mark.parametrize(
    "written",
    [
        str.upper,
        lambda key: f"{{{key}}}",
        lambda key: f"urn:uuid:{key}",
        lambda key: f"URN:UUID:{key}",  # uuid.UUID strips it in lower case only: it was a 500
        lambda key: key.replace("-", ""),
    ],
    ids=["upper case", "braces", "URN", "URN in upper case", "32 digits"],
)
async def test_key_is_normalized_so_its_written_form_does_not_matter(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, written: Callable[[str], str]
) -> None:
    merchant, key, body = await make_merchant(), new_key(), payout_body()
    first = await api_client.post(f"{API}/payouts", json=body, headers=auth(merchant, key))
    replay = await api_client.post(
        f"{API}/payouts", json=body, headers=auth(merchant, written(key))
    )
    assert (first.status_code, replay.status_code) == (201, 201)
    assert replay.headers[REPLAYED] == "true"


async def test_same_key_with_another_body_is_422_reused(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant, key = await make_merchant(), new_key()
    body = payout_body()
    assert (
        await api_client.post(f"{API}/payouts", json=body, headers=auth(merchant, key))
    ).status_code == 201
    before = await footprint(sessions, merchant.merchant_id)
    changed = await api_client.post(
        f"{API}/payouts", json={**body, "amount": "100.01"}, headers=auth(merchant, key)
    )
    assert_error(changed, 422, "IDEMPOTENCY_KEY_REUSED")
    assert await footprint(sessions, merchant.merchant_id) == before


async def test_same_key_on_another_path_is_422_reused(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant, key = await make_merchant(), new_key()
    payout = await create_payout(api_client, merchant)
    await fail_payout(sessions, payout["id"])
    first = await api_client.post(
        f"{API}/payouts/{payout['id']}/reinitiate", headers=auth(merchant, key)
    )
    assert first.status_code == 200, first.text
    other = await create_payout(api_client, merchant)
    elsewhere = await api_client.post(
        f"{API}/payouts/{other['id']}/reinitiate", headers=auth(merchant, key)
    )
    assert_error(elsewhere, 422, "IDEMPOTENCY_KEY_REUSED")
    verify = await api_client.post(
        f"{API}/verify-account",
        json={"destType": "WALLET", "walletCode": "EASYPAISA", "accountNumber": "03001234567"},
        headers=auth(merchant, key),
    )
    assert_error(verify, 422, "IDEMPOTENCY_KEY_REUSED")


async def test_keys_are_scoped_per_merchant(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    first, second, key = await make_merchant(), await make_merchant(), new_key()
    body = payout_body()
    mine = await api_client.post(f"{API}/payouts", json=body, headers=auth(first, key))
    theirs = await api_client.post(f"{API}/payouts", json=body, headers=auth(second, key))
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert REPLAYED not in theirs.headers
    assert mine.json()["data"]["id"] != theirs.json()["data"]["id"]


async def test_business_4xx_is_stored_and_replayed(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant, key = await make_merchant(balance="50.00"), new_key()
    body = payout_body(amount="100.00")
    refused = await api_client.post(f"{API}/payouts", json=body, headers=auth(merchant, key))
    assert_error(refused, 422, "INSUFFICIENT_BALANCE")
    async with transaction(sessions) as session:
        await ledger.top_up(session, merchant_id=merchant.merchant_id, amount=Decimal("100.00"))
    replay = await api_client.post(f"{API}/payouts", json=body, headers=auth(merchant, key))
    assert replay.status_code == 422
    assert replay.content == refused.content
    assert replay.headers[REPLAYED] == "true"
    assert (await footprint(sessions, merchant.merchant_id)).payouts == 0


async def test_validation_400_is_stored_and_replayed(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant, key = await make_merchant(), new_key()
    body = payout_body(amount="1.001")
    refused = await api_client.post(f"{API}/payouts", json=body, headers=auth(merchant, key))
    assert_error(refused, 400, "VALIDATION_ERROR", "amount")
    replay = await api_client.post(f"{API}/payouts", json=body, headers=auth(merchant, key))
    assert (replay.status_code, replay.content) == (400, refused.content)
    assert replay.headers[REPLAYED] == "true"
    fixed = await api_client.post(
        f"{API}/payouts", json={**body, "amount": "1.00"}, headers=auth(merchant, key)
    )
    assert_error(fixed, 422, "IDEMPOTENCY_KEY_REUSED")


async def _age_key(sessions: SessionFactory, merchant_id: str, key: str, **ages: timedelta) -> None:
    """Move a stored key's timestamps into the past (`locked_at=`, `expires_at=` how long ago)."""
    now = utcnow()
    async with transaction(sessions) as session:
        await session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.merchant_id == merchant_id, IdempotencyKey.key == key)
            .values(**{column: now - age for column, age in ages.items()})
        )


async def _claim_without_answer(sessions: SessionFactory, merchant_id: str, key: str) -> None:
    """What a request that claimed `key` and is still running (or died) leaves behind."""
    now = utcnow()
    async with transaction(sessions) as session:
        session.add(
            IdempotencyKey(
                merchant_id=merchant_id,
                key=key,
                method="POST",
                path=f"{API}/payouts",
                request_hash=request_fingerprint(orjson.dumps({"unused": True})),
                locked_at=now,
                created_at=now,
                expires_at=now + timedelta(hours=24),
            )
        )


async def test_expired_key_is_forgotten(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant, key = await make_merchant(), new_key()
    first = await api_client.post(f"{API}/payouts", json=payout_body(), headers=auth(merchant, key))
    assert first.status_code == 201
    await _age_key(sessions, merchant.merchant_id, key, expires_at=timedelta(seconds=1))
    later = await api_client.post(f"{API}/payouts", json=payout_body(), headers=auth(merchant, key))
    assert later.status_code == 201, later.text
    assert REPLAYED not in later.headers
    assert later.json()["data"]["id"] != first.json()["data"]["id"]


async def test_a_claim_stored_without_an_answer_is_409_in_use(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """Left by a version that committed claims before their answers."""
    merchant, key = await make_merchant(), new_key()
    await _claim_without_answer(sessions, merchant.merchant_id, key)
    before = await footprint(sessions, merchant.merchant_id)
    response = await api_client.post(
        f"{API}/payouts", json={"unused": True}, headers=auth(merchant, key)
    )
    assert_error(response, 409, "IDEMPOTENCY_KEY_IN_USE")
    assert await footprint(sessions, merchant.merchant_id) == before


@asynccontextmanager
async def _running_request(
    sessions: SessionFactory, merchant_id: str, key: str, body: dict[str, Any]
) -> AsyncIterator[AsyncSession]:
    """A request with `key` still running: its claim written, its transaction open."""
    async with sessions() as session:
        await session.execute(
            insert(IdempotencyKey).values(
                merchant_id=merchant_id,
                key=key,
                method="POST",
                path=f"{API}/payouts",
                request_hash=request_fingerprint(orjson.dumps(body)),
                status_code=201,
                response_body=b'{"first": "answer"}',
                locked_at=utcnow(),
                created_at=utcnow(),
                expires_at=utcnow() + timedelta(hours=1),
            )
        )
        yield session


async def _a_request_waits_on_a_lock(sessions: SessionFactory) -> None:
    async def waiting() -> int:
        async with sessions() as session:
            query = (  # on this database: another xdist worker's lock waits are not ours
                "SELECT COUNT(*) FROM information_schema.innodb_trx t"
                " JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id"
                " WHERE t.trx_state = 'LOCK WAIT' AND p.db = DATABASE()"
            )
            return int(await session.scalar(text(query)) or 0)

    # InnoDB refreshes what information_schema.innodb_trx shows only when it was last read more
    # than 0.1 s ago: polled faster, it never changes.
    await eventually(waiting, interval=0.25, what="a transaction waiting on the key's row lock")


async def test_a_retry_while_the_first_request_runs_waits_and_replays_its_answer(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant, key, body = await make_merchant(), new_key(), payout_body()
    async with _running_request(sessions, merchant.merchant_id, key, body) as first:
        retry = asyncio.create_task(
            api_client.post(f"{API}/payouts", json=body, headers=auth(merchant, key))
        )
        await _a_request_waits_on_a_lock(sessions)
        assert not retry.done()
        await first.commit()
    replay = await retry
    assert (replay.status_code, replay.content) == (201, b'{"first": "answer"}')
    assert replay.headers[REPLAYED] == "true"


async def test_a_retry_after_the_first_request_died_runs(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """A request that dies takes its claim with it: nothing to take over, nothing stale."""
    merchant, key, body = await make_merchant(), new_key(), payout_body()
    async with _running_request(sessions, merchant.merchant_id, key, body) as first:
        retry = asyncio.create_task(
            api_client.post(f"{API}/payouts", json=body, headers=auth(merchant, key))
        )
        await _a_request_waits_on_a_lock(sessions)
        await first.rollback()
    created = await retry
    assert created.status_code == 201, created.text
    assert REPLAYED not in created.headers
    assert (await footprint(sessions, merchant.merchant_id)).payouts == 1


async def test_a_retry_waits_at_most_the_lock_wait_limit_then_409(
    settings: Settings, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant, key, body = await make_merchant(), new_key(), payout_body()
    app = create_app(settings.model_copy(update={"api_lock_wait_seconds": 1}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client,
        _running_request(sessions, merchant.merchant_id, key, body),
    ):
        started = time.monotonic()
        response = await client.post(f"{API}/payouts", json=body, headers=auth(merchant, key))
        waited = time.monotonic() - started
    assert_error(response, 409, "IDEMPOTENCY_KEY_IN_USE")
    assert 0.9 <= waited < 5


async def test_a_new_key_waiting_on_the_merchants_row_is_not_in_use(
    settings: Settings, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """The key's claim reads the merchant's row (its foreign key): while another request held
    that row for update (a webhook-secret rotation, a PUT /webhook-endpoint), a key no request
    had ever sent was answered 409 IDEMPOTENCY_KEY_IN_USE past the lock-wait limit (found by
    the idempotency review). It is a wait on another request's row: 503, nothing stored."""
    merchant, key = await make_merchant(), new_key()
    app = create_app(settings.model_copy(update={"api_lock_wait_seconds": 1}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client,
        sessions() as other,
    ):
        await client.get(f"{API}/balance", headers=auth(merchant, ""))  # the merchant cached
        await other.execute(
            select(Merchant.id).where(Merchant.id == merchant.merchant_id).with_for_update()
        )
        response = await client.post(
            f"{API}/payouts", json=payout_body(), headers=auth(merchant, key)
        )
        await other.rollback()

    assert_error(response, 503, "SERVICE_UNAVAILABLE")
    async with sessions() as session:
        stored = await session.scalar(
            select(func.count()).select_from(IdempotencyKey).where(IdempotencyKey.key == key)
        )
    assert stored == 0


async def test_a_retry_of_an_expired_key_another_request_holds_is_409_not_503(
    api_client: httpx.AsyncClient,
    settings: Settings,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
) -> None:
    """The key found expired is deleted before it is claimed again; that DELETE waited on the
    other request's lock on the row (a copy that forgot it first and runs under its new claim),
    and its lock-wait timeout was answered 503 DATABASE_UNAVAILABLE, the database up."""
    merchant, key, body = await make_merchant(), new_key(), payout_body()
    first = await api_client.post(f"{API}/payouts", json=body, headers=auth(merchant, key))
    await _age_key(sessions, merchant.merchant_id, key, expires_at=timedelta(minutes=1))
    before = await footprint(sessions, merchant.merchant_id)
    app = create_app(settings.model_copy(update={"api_lock_wait_seconds": 1}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client,
        sessions() as other,
    ):
        await other.execute(
            select(IdempotencyKey)
            .where(IdempotencyKey.merchant_id == merchant.merchant_id, IdempotencyKey.key == key)
            .with_for_update(read=True)
        )
        response = await client.post(f"{API}/payouts", json=body, headers=auth(merchant, key))
        await other.rollback()

    assert first.status_code == 201
    assert_error(response, 409, "IDEMPOTENCY_KEY_IN_USE")
    assert await footprint(sessions, merchant.merchant_id) == before


class OutboxOutage:
    """A real database failure in the middle of a create: the outbox table renamed away."""

    def __init__(self, sessions: SessionFactory) -> None:
        self.sessions = sessions
        self.active = False

    async def _rename(self, old: str, new: str) -> None:
        async with self.sessions() as session:
            await session.execute(text(f"RENAME TABLE {old} TO {new}"))

    async def begin(self) -> None:
        await self._rename("outbox", "outbox_away")
        self.active = True

    async def end(self) -> None:
        if self.active:
            await self._rename("outbox_away", "outbox")
            self.active = False


@pytest.fixture
async def outbox_outage(sessions: SessionFactory) -> AsyncIterator[OutboxOutage]:
    outage = OutboxOutage(sessions)
    try:
        yield outage
    finally:
        await outage.end()


async def test_5xx_is_not_stored_so_the_client_can_retry(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    outbox_outage: OutboxOutage,
) -> None:
    """Also shows create is one transaction: the outbox write is its last step, and its failure
    takes the payout row and the HOLD journal with it."""
    merchant, key, body = await make_merchant(balance="1000.00"), new_key(), payout_body()
    before = await footprint(sessions, merchant.merchant_id)
    await outbox_outage.begin()
    failed = await api_client.post(f"{API}/payouts", json=body, headers=auth(merchant, key))
    await outbox_outage.end()
    # A missing table: a database not migrated yet, a 503 to retry (api_service.errors).
    assert_error(failed, 503, "SERVICE_UNAVAILABLE")
    assert await footprint(sessions, merchant.merchant_id) == before
    retried = await api_client.post(f"{API}/payouts", json=body, headers=auth(merchant, key))
    assert retried.status_code == 201, retried.text
    assert REPLAYED not in retried.headers


async def test_concurrent_requests_with_one_key_make_one_payout_and_never_a_5xx(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant(balance="10000.00")
    headers, body = auth(merchant), payout_body()
    responses = await asyncio.gather(
        *(api_client.post(f"{API}/payouts", json=body, headers=headers) for _ in range(10))
    )
    created = [r for r in responses if r.status_code == 201]
    assert created, [r.text for r in responses]
    assert all(r.status_code in (201, 409) for r in responses), [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert_error(response, 409, "IDEMPOTENCY_KEY_IN_USE")
    originals = [r for r in created if REPLAYED not in r.headers]
    assert len(originals) == 1
    assert all(r.content == originals[0].content for r in created)
    assert (await footprint(sessions, merchant.merchant_id)).payouts == 1
    assert (await get_balance(api_client, merchant))["availableBalance"] == "9900.00"
    async with sessions() as session:
        assert await reconcile(session) == []

    settled = await api_client.post(f"{API}/payouts", json=body, headers=headers)
    assert (settled.status_code, settled.content) == (201, originals[0].content)


async def test_a_body_with_a_key_twice_and_its_correction_are_two_requests(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant, key = await make_merchant(), new_key()
    body = payout_body(amount="1.00")
    twice = orjson.dumps(body)[:-1] + b',"amount":"2.00"}'
    headers = {**auth(merchant, key), "Content-Type": "application/json"}
    refused = await api_client.post(f"{API}/payouts", content=twice, headers=headers)
    assert_error(refused, 400, "VALIDATION_ERROR", "amount")
    corrected = await api_client.post(f"{API}/payouts", json=body, headers=auth(merchant, key))
    assert_error(corrected, 422, "IDEMPOTENCY_KEY_REUSED")


async def test_a_415_is_not_stored_so_the_body_labelled_as_json_runs_under_the_same_key(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    """What `curl -d` sends (form-encoded): the 415 was replayed for 24 h to the fixed request."""
    merchant, key = await make_merchant(), new_key()
    body = orjson.dumps(payout_body())
    mislabelled = {**auth(merchant, key), "Content-Type": "application/x-www-form-urlencoded"}
    refused = await api_client.post(f"{API}/payouts", content=body, headers=mislabelled)
    assert refused.status_code == 415

    fixed = await api_client.post(
        f"{API}/payouts",
        content=body,
        headers={**auth(merchant, key), "Content-Type": "application/json"},
    )

    assert fixed.status_code == 201, fixed.text


async def test_an_idempotency_key_given_twice_is_400_and_writes_nothing(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    # Two values (a proxy adding its own, a client library merging headers): which of them a
    # retry will carry is anybody's guess, so neither is taken.
    merchant = await make_merchant()
    before = await footprint(sessions, merchant.merchant_id)
    headers = [
        ("X-API-KEY", merchant.api_key),
        ("X-IDEMPOTENCY-KEY", new_key()),
        ("X-IDEMPOTENCY-KEY", new_key()),
    ]
    response = await api_client.post(f"{API}/payouts", json=payout_body(), headers=headers)
    error = assert_error(response, 400, "INVALID_IDEMPOTENCY_KEY")
    assert "more than once" in error["message"]
    assert await footprint(sessions, merchant.merchant_id) == before


async def test_a_retry_naming_the_payout_in_the_other_case_is_replayed(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """Ids are matched in any case (GET /payouts/{ID} answers for the lower-case id): a retry
    naming it in the other case is the same request, and got 422 IDEMPOTENCY_KEY_REUSED."""
    merchant = await make_merchant(balance="1000.00")
    payout = await create_failed_payout(api_client, merchant, sessions)
    key = new_key()
    path = f"{API}/payouts/{payout['id']}/reinitiate"

    first = await api_client.post(
        path.replace(payout["id"], payout["id"].upper()), headers=auth(merchant, key)
    )
    retry = await api_client.post(path, headers=auth(merchant, key))

    assert first.status_code == 200, first.text
    assert retry.status_code == 200, retry.text
    assert retry.headers[REPLAYED] == "true" and retry.content == first.content
