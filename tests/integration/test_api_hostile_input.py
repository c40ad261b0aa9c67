"""Hostile input never gets a 5xx and never writes: latin-1 header bytes, over-long path ids,
database errors that are not outages."""

import json
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DataError, OperationalError
from starlette.requests import Request
from starlette.responses import Response

from api_service.app import create_app
from contracts.db.engine import SessionFactory
from contracts.db.outages import is_outage
from contracts.settings import Settings
from tests.conftest import MerchantFactory
from tests.support.api_helpers import (
    API,
    assert_error,
    auth,
    create_failed_payout,
    create_payout,
    footprint,
    new_key,
    payout_body,
    psp_headers,
)

LATIN_1 = "caf\u00e9 \u00ff\u00e0".encode("latin-1")


async def test_a_non_ascii_psp_signature_is_401(
    api_client: httpx.AsyncClient,
) -> None:
    body = b'{"eventId":"e1","payoutId":"p","status":"SUCCESS"}'
    for signature in (LATIN_1, b"\xe9" * 64, "\u00e9".encode("latin-1") * 32):
        response = await api_client.post(
            f"{API}/ipn/psp", content=body, headers={b"X-PSP-Signature": signature}
        )
        assert_error(response, 401, "INVALID_SIGNATURE")


@pytest.mark.parametrize("header", ["X-API-KEY", "X-IDEMPOTENCY-KEY", "X-Request-ID"])
async def test_latin_1_bytes_in_any_header_are_a_4xx_and_write_nothing(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    header: str,
) -> None:
    merchant = await make_merchant()
    before = await footprint(sessions, merchant.merchant_id)
    headers = {name.encode(): value.encode() for name, value in auth(merchant).items()}
    headers[header.encode()] = LATIN_1
    response = await api_client.post(f"{API}/payouts", json=payout_body(), headers=headers)
    assert 400 <= response.status_code < 500, response.text
    assert await footprint(sessions, merchant.merchant_id) == before


@pytest.mark.parametrize(
    "path",
    [
        "/payouts/{id}/reinitiate",
        "/sandbox/payouts/{id}/simulate",
        "/webhooks/deliveries/{id}/resend",
    ],
)
async def test_an_over_long_path_id_is_404_before_the_database(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    path: str,
) -> None:
    merchant = await make_merchant()
    before = await footprint(sessions, merchant.merchant_id)
    response = await api_client.post(
        API + path.format(id="x" * 600), json={"outcome": "SUCCESS"}, headers=auth(merchant)
    )
    assert_error(response, 404, "NOT_FOUND")
    assert await footprint(sessions, merchant.merchant_id) == before


async def test_a_payout_id_is_a_uuid_in_either_case_and_anything_else_is_404(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    payout = await create_payout(api_client, merchant)
    upper = await api_client.get(
        f"{API}/payouts/{payout['id'].upper()}", headers=auth(merchant, "")
    )
    assert upper.json()["data"]["id"] == payout["id"]
    for payout_id in (payout["id"] + "0", payout["id"][:-1] + "g", "\u00e9" * 36):
        response = await api_client.get(f"{API}/payouts/{payout_id}", headers=auth(merchant, ""))
        assert_error(response, 404, "NOT_FOUND")


def test_only_real_outages_count_as_outages() -> None:
    lost = OperationalError("SELECT 1", {}, Exception(2013, "Lost connection"))
    lock_wait = OperationalError("UPDATE", {}, Exception(1205, "Lock wait timeout"))
    too_long = DataError("INSERT", {}, Exception(1406, "Data too long for column 'path'"))
    unknown_column = OperationalError("SELECT", {}, Exception(1054, "Unknown column"))
    assert is_outage(lost) and is_outage(lock_wait) and is_outage(ConnectionRefusedError())
    assert not is_outage(too_long)
    assert not is_outage(unknown_column)


@pytest.mark.parametrize(
    "statement",
    ["SELECT missing_column FROM payouts", "INSERT INTO directory_institutions (code) VALUES"],
)
async def test_a_database_error_that_is_not_an_outage_is_a_logged_500(
    settings: Settings, caplog: pytest.LogCaptureFixture, statement: str
) -> None:
    """A bug is a 500 an alert can see, never a 503 that sends the client to wait for a
    dependency that is fine."""
    app = create_app(settings)

    async def broken(request: Request) -> Response:
        async with request.app.state.sessions() as session:
            await session.execute(text(statement))
        return Response()

    app.add_route("/broken", broken)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            response = await client.get("/broken")
    assert_error(response, 500, "INTERNAL_ERROR")
    assert any(record.levelname == "ERROR" for record in caplog.records)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("accountTitle", "Ali\u0000Khan"),
        ("accountTitle", "Ali \u001b[31mKhan"),
        ("purpose", "sal\u0085ary"),
        ("accountTitle", "\ud800"),  # a lone surrogate: JSON allows the escape, MySQL no text
    ],
)
async def test_control_characters_in_a_text_field_are_400_naming_it(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    field: str,
    value: str,
) -> None:
    merchant = await make_merchant()
    before = await footprint(sessions, merchant.merchant_id)
    body = orjson.dumps(payout_body()).replace(
        b"}", b',"' + field.encode() + b'":' + _json_string(value) + b"}"
    )
    response = await api_client.post(
        f"{API}/payouts",
        content=body,
        headers={**auth(merchant), "Content-Type": "application/json"},
    )
    assert_error(response, 400, "VALIDATION_ERROR", field)
    assert await footprint(sessions, merchant.merchant_id) == before


# Not JSON (RFC 8259), though Python's json module reads them unless told not to.
NOT_JSON_CONSTANTS = {
    "NaN": (b"note", b"NaN"),
    "NaN amount": (b"amount", b"NaN"),
    "Infinity": (b"note", b"Infinity"),
    "-Infinity in a list": (b"note", b"[-Infinity]"),
}


@pytest.mark.parametrize(
    ("key", "value"), NOT_JSON_CONSTANTS.values(), ids=NOT_JSON_CONSTANTS.keys()
)
async def test_a_body_holding_nan_or_infinity_anywhere_is_400_and_writes_nothing(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    key: bytes,
    value: bytes,
) -> None:
    """Named as what it is, in the amount or in a field the payout ignores, where `NaN` was
    read and the payout created (201)."""
    merchant = await make_merchant()
    before = await footprint(sessions, merchant.merchant_id)
    body = orjson.dumps(payout_body(**{key.decode(): None}))[:-1] + b', "%s": %s}' % (key, value)
    response = await api_client.post(
        f"{API}/payouts",
        content=body,
        headers={**auth(merchant), "Content-Type": "application/json"},
    )
    assert_error(response, 400, "VALIDATION_ERROR", "body")
    assert value.strip(b"[]-") in response.json()["error"]["message"].encode()
    assert await footprint(sessions, merchant.merchant_id) == before


def _json_string(value: str) -> bytes:
    """A JSON string with every non-ASCII character escaped (a lone surrogate included)."""
    return json.dumps(value, ensure_ascii=True).encode()


async def test_a_key_given_twice_is_400_naming_it(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant()
    before = await footprint(sessions, merchant.merchant_id)
    body = orjson.dumps(payout_body(amount="1.00")).replace(b"}", b',"amount":"9000.00"}')
    response = await api_client.post(
        f"{API}/payouts",
        content=body,
        headers={**auth(merchant), "Content-Type": "application/json"},
    )
    assert_error(response, 400, "VALIDATION_ERROR", "amount")
    assert await footprint(sessions, merchant.merchant_id) == before


def _with_member(body: dict[str, Any], member: bytes) -> bytes:
    """The body's JSON with a member added as written (a raw escape, a flaw the encoder would
    not write)."""
    return orjson.dumps(body)[:-1] + b"," + member + b"}"


@pytest.mark.parametrize(
    ("member", "field"),
    [
        (rb'"x":{"\ud800":{"a":1,"a":2}}', "x.\\ud800.a"),
        (rb'"\ud800":1e9999999999999999999', "\\ud800"),
    ],
)
async def test_a_flaw_under_a_lone_surrogate_key_is_400_naming_its_path(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    member: bytes,
    field: str,
) -> None:
    """The path named the raw key, which no answer can encode: a 500, of a payroll as a whole
    too (json review)."""
    merchant = await make_merchant()
    before = await footprint(sessions, merchant.merchant_id)
    headers = {**auth(merchant), "Content-Type": "application/json"}
    single = await api_client.post(
        f"{API}/payouts", content=_with_member(payout_body(), member), headers=headers
    )
    payroll = b'{"payouts":[' + _with_member(payout_body(), member) + b"]}"
    batch = await api_client.post(
        f"{API}/payouts/batch", content=payroll, headers={**headers, **auth(merchant)}
    )

    assert_error(single, 400, "VALIDATION_ERROR", field)
    [item] = batch.json()["data"]["results"]
    assert item["status"] == "invalid" and item["errors"][0]["field"] == field, item
    assert await footprint(sessions, merchant.merchant_id) == before


EMOJI_AS_TWO_SURROGATES = b"\xed\xa0\xbd\xed\xb8\x80"  # CESU-8: not UTF-8


async def test_a_body_not_utf_8_is_not_taken_for_its_utf_8_spelling(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """An emoji's surrogates encoded one by one read as the emoji: both spellings had one
    fingerprint, and under one idempotency key the refused one was answered with the other's
    201 (json review)."""
    merchant = await make_merchant()
    key = new_key()
    body = payout_body(accountTitle="\U0001f600")
    created = await api_client.post(f"{API}/payouts", json=body, headers=auth(merchant, key))
    assert created.status_code == 201, created.text
    other_spelling = orjson.dumps(body).replace("\U0001f600".encode(), EMOJI_AS_TWO_SURROGATES)
    headers = {"Content-Type": "application/json"}

    refused = await api_client.post(
        f"{API}/payouts", content=other_spelling, headers={**headers, **auth(merchant)}
    )
    again = await api_client.post(
        f"{API}/payouts", content=other_spelling, headers={**headers, **auth(merchant, key)}
    )

    error = assert_error(refused, 400, "VALIDATION_ERROR", "body")
    assert error["details"][0]["message"] == "is not valid UTF-8 text", error
    assert again.status_code != 201 and "idempotent-replayed" not in again.headers, again.text


@pytest.mark.parametrize(
    ("other_spelling", "field"),
    [
        ({"wallet_code": "EASYPAISA"}, "walletCode"),
        ({"merchant_reference": "other-ref"}, "merchantReference"),
        ({"queue_if_low_balance": True}, "queueIfLowBalance"),
    ],
)
async def test_a_field_under_both_its_spellings_is_400_naming_it(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    other_spelling: dict[str, Any],
    field: str,
) -> None:
    """A body takes a field by its Python name too (`wallet_code`); under both, one of them won
    in silence (a payout to JAZZCASH for a body that also said EASYPAISA). In a payroll item, the
    item is invalid on it; a sandbox setting is refused the same way."""
    merchant = await make_merchant()
    before = await footprint(sessions, merchant.merchant_id)
    body = payout_body(queueIfLowBalance=False) | other_spelling

    single = await api_client.post(f"{API}/payouts", json=body, headers=auth(merchant))
    batch = await api_client.post(
        f"{API}/payouts/batch", json={"payouts": [body]}, headers=auth(merchant)
    )

    error = assert_error(single, 400, "VALIDATION_ERROR", field)
    assert error["details"][0]["message"].startswith("is given twice"), error
    [item] = batch.json()["data"]["results"]
    assert item["status"] == "invalid" and item["errors"][0]["field"] == field, item
    assert await footprint(sessions, merchant.merchant_id) == before
    chaos = {"duplicatePercent": 5, "duplicate_percent": 50}
    headers = auth(merchant, "")
    refused = await api_client.put(f"{API}/sandbox/webhook-chaos", json=chaos, headers=headers)
    assert_error(refused, 400, "VALIDATION_ERROR", "duplicatePercent")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_a_body_that_is_not_labelled_json_is_415(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    content_type: str | None,
) -> None:
    merchant = await make_merchant()
    before = await footprint(sessions, merchant.merchant_id)
    headers = auth(merchant)
    if content_type:
        headers["Content-Type"] = content_type
    response = await api_client.post(
        f"{API}/payouts", content=orjson.dumps(payout_body()), headers=headers
    )
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert await footprint(sessions, merchant.merchant_id) == before


async def test_a_reinitiate_with_a_body_not_labelled_json_is_415_and_changes_nothing(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    """It reads no body, so it took any: a text/plain one reinitiated and held the funds. So did
    a readiness restart (json review)."""
    merchant = await make_merchant()
    payout = await create_failed_payout(api_client, merchant, sessions)
    before = await footprint(sessions, merchant.merchant_id)
    for path in (f"payouts/{payout['id']}/reinitiate", "sandbox/readiness/restart"):
        response = await api_client.post(
            f"{API}/{path}",
            content=b"please",
            headers={**auth(merchant), "Content-Type": "text/plain"},
        )
        assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert await footprint(sessions, merchant.merchant_id) == before


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/vnd.mypay+json"],
)
async def test_json_media_types_are_accepted(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, content_type: str
) -> None:
    merchant = await make_merchant()
    response = await api_client.post(
        f"{API}/payouts",
        content=orjson.dumps(payout_body()),
        headers={**auth(merchant), "Content-Type": content_type},
    )
    assert response.status_code == 201, response.text


async def test_a_signed_ipn_labelled_text_is_415(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, settings: Settings
) -> None:
    merchant = await make_merchant()
    payout = await create_payout(api_client, merchant)
    body = orjson.dumps({"eventId": "e-415", "payoutId": payout["id"], "status": "SUCCESS"})
    headers = {**psp_headers(settings.psp_secret, body), "Content-Type": "text/plain"}
    response = await api_client.post(f"{API}/ipn/psp", content=body, headers=headers)
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
