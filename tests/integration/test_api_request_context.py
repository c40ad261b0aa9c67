"""Request ids on every response, the 64 KiB body limit, malformed JSON as 400 never 500."""

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
from fastapi import FastAPI

from api_service.app import create_app
from cli.merchants import NewMerchant
from contracts.db.engine import SessionFactory
from contracts.settings import Settings
from tests.conftest import MerchantFactory
from tests.support.api_helpers import (
    API,
    GENERATED_REQUEST_ID,
    assert_error,
    auth,
    footprint,
    payout_body,
    psp_headers,
)
from tests.support.api_server import serving_api
from tests.support.raw_http import connect, request

LIMIT = 64 * 1024

Call = Callable[[httpx.AsyncClient, NewMerchant], Awaitable[httpx.Response]]


async def _create(client: httpx.AsyncClient, merchant: NewMerchant) -> httpx.Response:
    return await client.post(f"{API}/payouts", json=payout_body(), headers=auth(merchant))


async def _invalid(client: httpx.AsyncClient, merchant: NewMerchant) -> httpx.Response:
    return await client.post(
        f"{API}/payouts", json=payout_body(amount="-1"), headers=auth(merchant)
    )


async def _unauthenticated(client: httpx.AsyncClient, merchant: NewMerchant) -> httpx.Response:
    return await client.get(f"{API}/balance")


async def _unknown_route(client: httpx.AsyncClient, merchant: NewMerchant) -> httpx.Response:
    return await client.get(f"{API}/nowhere", headers=auth(merchant, ""))


async def _wrong_method(client: httpx.AsyncClient, merchant: NewMerchant) -> httpx.Response:
    return await client.delete(f"{API}/balance", headers=auth(merchant, ""))


async def _too_large(client: httpx.AsyncClient, merchant: NewMerchant) -> httpx.Response:
    return await client.post(f"{API}/payouts", content=b" " * (LIMIT + 1), headers=auth(merchant))


async def _health(client: httpx.AsyncClient, merchant: NewMerchant) -> httpx.Response:
    return await client.get(f"{API}/health")


async def _bad_ipn(client: httpx.AsyncClient, merchant: NewMerchant) -> httpx.Response:
    return await client.post(f"{API}/ipn/psp", content=b"{}")


async def _replay(client: httpx.AsyncClient, merchant: NewMerchant) -> httpx.Response:
    headers, body = auth(merchant), payout_body()
    await client.post(f"{API}/payouts", json=body, headers=headers)
    return await client.post(f"{API}/payouts", json=body, headers=headers)


async def _static_file(client: httpx.AsyncClient, merchant: NewMerchant) -> httpx.Response:
    return await client.get("/dashboard/static/dashboard.css")


CALLS: dict[str, Call] = {
    "created": _create,
    "validation error": _invalid,
    "unauthenticated": _unauthenticated,
    "unknown route": _unknown_route,
    "wrong method": _wrong_method,
    "too large": _too_large,
    "health": _health,
    "ipn without signature": _bad_ipn,
    "idempotent replay": _replay,
    "dashboard static file": _static_file,
}


@contextmanager
def _sending_request_id(client: httpx.AsyncClient, request_id: str) -> Iterator[None]:
    client.headers["X-Request-ID"] = request_id
    try:
        yield
    finally:
        del client.headers["X-Request-ID"]


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
async def test_request_id_is_generated_on_every_response(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, call: Call
) -> None:
    response = await call(api_client, await make_merchant())
    request_id = response.headers["x-request-id"]
    assert GENERATED_REQUEST_ID.fullmatch(request_id)
    if response.status_code >= 400:
        assert response.json()["error"]["requestId"] == request_id


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
async def test_request_id_is_echoed_on_every_response(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, call: Call
) -> None:
    merchant = await make_merchant()
    with _sending_request_id(api_client, "client-req-42"):
        response = await call(api_client, merchant)
    assert response.headers["x-request-id"] == "client-req-42"
    if response.status_code >= 400:
        assert response.json()["error"]["requestId"] == "client-req-42"


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
async def test_no_answer_may_be_sniffed(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, call: Call
) -> None:
    """A merchant's text in JSON, or a static file, is never taken for HTML by a browser."""
    response = await call(api_client, await make_merchant())
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.fixture(scope="module")
async def failing_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real app plus one route that crashes, to see what an unexpected error looks like."""
    app: FastAPI = create_app(settings)

    async def crash() -> None:
        raise RuntimeError("boom")

    app.add_api_route(f"{API}/crash", crash)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


async def test_unexpected_error_is_a_500_envelope_with_the_request_id(
    failing_client: httpx.AsyncClient,
) -> None:
    generated = await failing_client.get(f"{API}/crash")
    assert_error(generated, 500, "INTERNAL_ERROR")
    assert "boom" not in generated.text
    echoed = await failing_client.get(f"{API}/crash", headers={"X-Request-ID": "crash-1"})
    assert echoed.headers["x-request-id"] == "crash-1"
    assert echoed.headers["x-content-type-options"] == "nosniff"
    assert_error(echoed, 500, "INTERNAL_ERROR")


async def test_body_over_64_kib_is_413_and_writes_nothing(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant()
    before = await footprint(sessions, merchant.merchant_id)
    padded = payout_body(purpose="x" * LIMIT)
    response = await api_client.post(f"{API}/payouts", json=padded, headers=auth(merchant))
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert await footprint(sessions, merchant.merchant_id) == before


@pytest.mark.parametrize(
    "declared",
    [
        "100000",
        "9999999999999999999",  # 19 digits, still below 2**64 (what the HTTP parser holds)
        "0000000000000000000100000",  # 100,000 with leading zeros (RFC 9110: 1*DIGIT)
    ],
)
async def test_a_body_declared_past_the_limit_is_413_at_once_however_many_digits(
    declared: str, settings: Settings, make_merchant: MerchantFactory
) -> None:
    """Past 18 digits a Content-Length read as "none declared": the server waited for the body
    (408 after the body deadline, the connection held meanwhile) instead of answering 413
    (numeric review)."""
    merchant = await make_merchant()
    head = [*auth(merchant).items(), ("Content-Type", "application/json")]
    async with serving_api(settings) as port:
        connection = await connect(port)
        try:
            await connection.send(
                request("POST", f"{API}/payouts", [*head, ("Content-Length", declared)]) + b"{}"
            )
            answer = await connection.answer(within=10)
        finally:
            await connection.close()
    assert answer.status == 413, (answer.status, answer.body)


async def test_chunked_body_over_64_kib_is_413(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b" " * (16 * 1024)

    response = await api_client.post(
        f"{API}/payouts", content=chunks(), headers=auth(await make_merchant())
    )
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


async def test_a_payroll_posted_with_a_trailing_slash_is_sent_on_not_refused_for_size(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    """The batch's 1 MiB limit was looked up by the exact path: /payouts/batch/ got 64 KiB, a
    413, where any smaller body is redirected to /payouts/batch (307: sent again there)."""
    response = await api_client.post(
        f"{API}/payouts/batch/",
        content=b" " * (2 * LIMIT),
        headers={**auth(await make_merchant()), "Content-Type": "application/json"},
    )
    assert response.status_code == 307, response.text
    assert response.headers["location"].endswith(f"{API}/payouts/batch")


async def test_body_of_exactly_64_kib_is_read(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    response = await api_client.post(
        f"{API}/payouts",
        content=b" " * LIMIT,
        headers={**auth(await make_merchant()), "Content-Type": "application/json"},
    )
    assert_error(response, 400, "VALIDATION_ERROR", "body")


MALFORMED = {
    "truncated": b'{"amount": ',
    "not json": b"amount=100",
    "empty": b"",
    "array": b"[]",
    "string": b'"payout"',
    "null": b"null",
    "invalid utf-8": b'{"merchantReference": "\xff\xfe"}',
    "deeply nested": b"[" * 60_000,
    "trailing garbage": b'{"amount": "1.00"} x',
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_json_is_400_validation_error_naming_the_body(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    body: bytes,
) -> None:
    merchant = await make_merchant()
    before = await footprint(sessions, merchant.merchant_id)
    for path in ("/payouts", "/verify-account"):
        response = await api_client.post(
            f"{API}{path}",
            content=body,
            headers={**auth(merchant), "Content-Type": "application/json"},
        )
        assert_error(response, 400, "VALIDATION_ERROR", "body")
    assert await footprint(sessions, merchant.merchant_id) == before


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_signed_ipn_is_400_validation_error(
    api_client: httpx.AsyncClient, settings: Settings, body: bytes
) -> None:
    response = await api_client.post(
        f"{API}/ipn/psp", content=body, headers=psp_headers(settings.psp_secret, body)
    )
    assert_error(response, 400, "VALIDATION_ERROR")


async def test_idempotency_key_is_checked_before_the_body(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    missing = await api_client.post(
        f"{API}/payouts", content=b"{", headers=auth(merchant, idempotency_key="")
    )
    assert_error(missing, 400, "MISSING_IDEMPOTENCY_KEY")
    invalid = await api_client.post(
        f"{API}/payouts", content=b"{", headers=auth(merchant, idempotency_key="nope")
    )
    assert_error(invalid, 400, "INVALID_IDEMPOTENCY_KEY")
