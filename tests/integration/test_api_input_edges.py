"""JSON bodies at the edges of what the parser, the fingerprint and the encoder can hold: a
number out of Decimal's range, a lone surrogate, a number where a string belongs, a key spelled
with escapes. Each is a 4xx naming the field (never a 500) and writes nothing, or is read as its
parsed meaning."""

import hashlib
import json
import time
from typing import Any

import httpx
import orjson
import pytest

from api_service.idempotency import request_fingerprint
from contracts.db.engine import SessionFactory
from contracts.settings import Settings
from tests.conftest import MerchantFactory
from tests.support.api_helpers import (
    API,
    assert_error,
    auth,
    create_payout,
    footprint,
    new_key,
    payout_body,
    post_ipn,
)

JSON_HEADERS = {"Content-Type": "application/json"}
# Its exponent does not fit Decimal (decimal.InvalidOperation, an ArithmeticError).
OUT_OF_RANGE = b"1e9999999999999999999"


def _with_raw(body: dict[str, Any], name: str, raw_value: bytes) -> bytes:
    """`body` as JSON with `"name": raw_value` appended as written (no encoder in between)."""
    return orjson.dumps(body).removesuffix(b"}") + b',"' + name.encode() + b'":' + raw_value + b"}"


async def _post(
    client: httpx.AsyncClient, path: str, content: bytes, headers: dict[str, str]
) -> httpx.Response:
    return await client.post(f"{API}{path}", content=content, headers=headers | JSON_HEADERS)


@pytest.mark.parametrize(
    ("path", "content", "field"),
    [
        ("/payouts", _with_raw(payout_body(amount=None), "amount", OUT_OF_RANGE), "amount"),
        (
            "/verify-account",
            _with_raw(
                {"destType": "BANK", "bankCode": "HBL", "accountNumber": "1234567890"},
                "x",
                b"1E-9999999999999999999",
            ),
            "x",
        ),
        ("/payouts", OUT_OF_RANGE, "body"),
    ],
)
async def test_a_number_out_of_decimal_range_is_a_400_naming_its_field(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    path: str,
    content: bytes,
    field: str,
) -> None:
    """Named `body`, where a payroll's item with the same flaw was refused on its field."""
    merchant = await make_merchant()
    before = await footprint(sessions, merchant.merchant_id)

    response = await _post(api_client, path, content, auth(merchant))

    assert_error(response, 400, "VALIDATION_ERROR", field)
    assert await footprint(sessions, merchant.merchant_id) == before


async def test_a_signed_callback_with_a_number_out_of_range_is_a_400_and_changes_nothing(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    settings: Settings,
) -> None:
    merchant = await make_merchant()
    payout = await create_payout(api_client, merchant)
    before = await footprint(sessions, merchant.merchant_id)
    body = _with_raw(
        {"eventId": f"evt-{new_key()}", "payoutId": payout["id"], "status": "FAILED"},
        "n",
        OUT_OF_RANGE,
    )

    response = await post_ipn(api_client, settings.psp_secret, body)

    assert_error(response, 400, "VALIDATION_ERROR", "n")
    assert await footprint(sessions, merchant.merchant_id) == before


async def test_a_key_given_twice_in_a_nested_object_is_named_by_its_path(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    """Named by the bare key (`a`), where a payroll's item was refused on `meta.a`."""
    merchant = await make_merchant()
    content = _with_raw(payout_body(), "meta", b'{"a":1,"a":2}')

    response = await _post(api_client, "/payouts", content, auth(merchant))

    assert_error(response, 400, "VALIDATION_ERROR", "meta.a")


async def test_a_repeated_lone_surrogate_key_is_a_400_naming_its_escape(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant()
    before = await footprint(sessions, merchant.merchant_id)

    response = await _post(api_client, "/payouts", rb'{"\ud800":1,"\ud800":2}', auth(merchant))

    assert_error(response, 400, "VALIDATION_ERROR", r"\ud800")
    assert await footprint(sessions, merchant.merchant_id) == before


@pytest.mark.parametrize("reference", [b"123", b"1.5", rb'"\ud800"'])
async def test_a_batch_item_whose_reference_is_no_plain_string_is_invalid_on_its_own(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    reference: bytes,
) -> None:
    merchant = await make_merchant()
    bad_item = _with_raw(payout_body(merchantReference=None), "merchantReference", reference)
    content = b'{"payouts":[' + bad_item + b"," + orjson.dumps(payout_body()) + b"]}"

    response = await _post(api_client, "/payouts/batch", content, auth(merchant))

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["summary"] == {"created": 1, "duplicate": 0, "invalid": 1}
    invalid = data["results"][0]
    assert (invalid["status"], invalid["merchantReference"]) == ("invalid", None)
    assert [error["field"] for error in invalid["errors"]] == ["merchantReference"]
    assert (await footprint(sessions, merchant.merchant_id)).payouts == 1


async def test_a_number_and_a_string_of_the_same_digits_are_different_requests(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, sessions: SessionFactory
) -> None:
    merchant = await make_merchant()
    key = new_key()
    body = payout_body(merchantReference="1.5")
    first = await api_client.post(f"{API}/payouts", json=body, headers=auth(merchant, key))
    assert first.status_code == 201, first.text

    as_number = _with_raw(payout_body(merchantReference=None), "merchantReference", b"1.5")
    second = await _post(api_client, "/payouts", as_number, auth(merchant, key))

    assert_error(second, 422, "IDEMPOTENCY_KEY_REUSED")
    assert (await footprint(sessions, merchant.merchant_id)).payouts == 1


def test_the_fingerprint_of_a_body_without_fractions_is_the_one_stored_before() -> None:
    """Keys stored before numbers were told from strings keep matching their retries."""
    body = json.dumps(
        {"b": [1, True, None, {"z": "caf\u00e9", "a": "\ud800"}], "a": "100.00", "n": -7}
    ).encode()
    before = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()

    assert request_fingerprint(body) == hashlib.sha256(before).hexdigest()
    assert request_fingerprint(b'{"n":1.5}') != request_fingerprint(b'{"n":"1.5"}')


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("PUT", "/sandbox/faults", {"fault": "status=503", "percent": 5, "precent": 50}, "precent"),
        ("PUT", "/sandbox/webhook-chaos", {"failFirstAttemps": 2}, "failFirstAttemps"),
        ("POST", "/sandbox/clock/advance", {"seconds": 60, "second": 1}, "second"),
    ],
)
async def test_a_sandbox_setting_with_a_field_it_does_not_know_is_refused_naming_it(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    method: str,
    path: str,
    body: dict[str, object],
    field: str,
) -> None:
    """A typo must not save the setting with the misspelt field off (and answer 200)."""
    merchant = await make_merchant()
    headers = auth(merchant, new_key()) | JSON_HEADERS
    state_path = path.removesuffix("/advance")

    async def state() -> dict[str, Any]:
        data = (await api_client.get(f"{API}{state_path}", headers=headers)).json()["data"]
        return {name: value for name, value in data.items() if not name.endswith("Time")}

    before = await state()

    response = await api_client.request(method, f"{API}{path}", json=body, headers=headers)

    error = assert_error(response, 400, "VALIDATION_ERROR", field)
    assert error["details"] == [{"field": field, "message": "is not a field of this body"}]
    assert await state() == before


@pytest.mark.parametrize(
    ("path", "content", "field"),
    [
        ("/sandbox/faults", b'{"fault":"status=500","percent":1e1000000}', "percent"),
        ("/sandbox/faults", b'{"fault":"status=500","percent":-1e999999999999999999}', "percent"),
        ("/sandbox/webhook-chaos", b'{"delaySeconds":1e999999999999999999}', "delaySeconds"),
    ],
)
async def test_an_absurd_count_is_refused_at_once(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    path: str,
    content: bytes,
    field: str,
) -> None:
    """int(Decimal("1e1000000")) alone takes seconds of the event loop's CPU."""
    merchant = await make_merchant()
    headers = auth(merchant, "") | JSON_HEADERS
    before = (await api_client.get(f"{API}{path}", headers=headers)).json()
    # The event loop's CPU time (this thread's), not the wall clock a loaded host stretches.
    started = time.thread_time()

    response = await api_client.put(f"{API}{path}", content=content, headers=headers)

    assert time.thread_time() - started < 1
    assert_error(response, 400, "VALIDATION_ERROR", field)
    assert (await api_client.get(f"{API}{path}", headers=headers)).json() == before


@pytest.mark.parametrize(
    "content",
    [
        _with_raw(payout_body(amount="100.00"), r"queueIfLowBalanc\u0065", b"true"),
        orjson.dumps(payout_body(amount="100.00", queueIfLowBalance=True))
        .decode()
        .encode("utf-16"),
    ],
    ids=["escaped-key", "utf-16"],
)
async def test_the_queue_flag_is_read_from_the_parsed_body_however_spelled(
    api_client: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    content: bytes,
) -> None:
    merchant = await make_merchant(balance="50.00")
    before = await footprint(sessions, merchant.merchant_id)

    response = await _post(api_client, "/payouts", content, auth(merchant))

    assert response.status_code == 201, response.text
    assert response.json()["data"]["status"] == "QUEUED"
    after = await footprint(sessions, merchant.merchant_id)
    assert (after.payouts, after.journals) == (1, before.journals)  # queued: nothing held


async def test_spaces_around_a_reference_are_trimmed_as_the_readme_says(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    merchant = await make_merchant()
    trimmed = await create_payout(api_client, merchant, merchantReference=" pay-1 ")
    assert trimmed["merchantReference"] == "pay-1"
    again = await api_client.post(
        f"{API}/payouts", json=payout_body(merchantReference="pay-1"), headers=auth(merchant)
    )
    assert_error(again, 409, "DUPLICATE_REFERENCE")
