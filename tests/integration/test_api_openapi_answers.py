"""What the API answers is what its OpenAPI document (/openapi.json) says it answers: the
idempotency key it requires, its 400 for a bad query, its 415 for a non-JSON body, its 503 when
not ready."""

from typing import Any

import httpx
import orjson
import pytest

from api_service.errors import INJECTED_STATUS_ERRORS, GatewayTimeout
from api_service.health import Readiness
from api_service.sandbox.faults import FAULT_HEADER
from contracts.settings import Settings
from tests.conftest import MerchantFactory, in_process_api
from tests.support.api_helpers import (
    API,
    assert_error,
    auth,
    create_payout,
    payout_body,
    psp_headers,
)

ERROR_ENVELOPE = {"$ref": "#/components/schemas/ErrorEnvelopeSchema"}


async def openapi(client: httpx.AsyncClient) -> dict[str, Any]:
    document: dict[str, Any] = (await client.get("/openapi.json")).json()
    return document


def documented(document: dict[str, Any], method: str, path: str, status: str) -> dict[str, Any]:
    responses = document["paths"][f"{API}{path}"][method]["responses"]
    assert status in responses, (method, path, sorted(responses))
    response: dict[str, Any] = responses[status]
    return response


async def test_a_missing_idempotency_key_is_the_documented_400_of_a_required_header(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    document = await openapi(api_client)
    operation = document["paths"][f"{API}/payouts"]["post"]
    [key] = [p for p in operation["parameters"] if p["name"] == "X-IDEMPOTENCY-KEY"]
    assert key["required"] is True
    merchant = await make_merchant()

    response = await api_client.post(
        f"{API}/payouts", json=payout_body(), headers=auth(merchant, "")
    )

    assert_error(response, 400, "MISSING_IDEMPOTENCY_KEY")
    assert (
        "MISSING_IDEMPOTENCY_KEY" in documented(document, "post", "/payouts", "400")["description"]
    )


@pytest.mark.parametrize(
    ("path", "query", "field"),
    [
        ("/payouts", "limit=101", "limit"),
        ("/balance/history", "page=0", "page"),
        ("/webhooks/deliveries", "status=NOPE", "status"),
        ("/events", "type=payout.nope", "type"),
        ("/requests", "limit=0", "limit"),
        # Python's int() grammar: 50, 1 and 5 were listed (the contract review).
        ("/payouts", "limit=5_0", "limit"),
        ("/payouts", "limit=1.0", "limit"),
        ("/events", "page=%2B5", "page"),
        ("/balance/history", "startingAfter=%207", "startingAfter"),
        ("/requests", "startingAfter=1e3", "startingAfter"),
    ],
)
async def test_a_bad_query_is_the_documented_400_not_fastapis_422(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, path: str, query: str, field: str
) -> None:
    document = await openapi(api_client)
    merchant = await make_merchant()

    response = await api_client.get(f"{API}{path}?{query}", headers=auth(merchant, ""))

    assert_error(response, 400, "VALIDATION_ERROR", field)
    answer = documented(document, "get", path, "400")
    assert answer["content"]["application/json"]["schema"] == ERROR_ENVELOPE
    assert "VALIDATION_ERROR" in answer["description"]
    assert "422" not in document["paths"][f"{API}{path}"]["get"]["responses"]


@pytest.mark.parametrize("path", ["/webhook-endpoint", "/sandbox/faults", "/sandbox/webhook-chaos"])
async def test_a_non_json_body_is_the_documented_415(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, path: str
) -> None:
    document = await openapi(api_client)
    merchant = await make_merchant()
    headers = {**auth(merchant, ""), "Content-Type": "text/plain"}

    response = await api_client.put(f"{API}{path}", content=b"{}", headers=headers)

    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    answer = documented(document, "put", path, "415")
    assert answer["content"]["application/json"]["schema"] == ERROR_ENVELOPE


async def test_not_ready_is_the_documented_503(settings: Settings) -> None:
    unreachable_broker = settings.model_copy(update={"amqp_url": "amqp://guest:guest@127.0.0.1:1/"})
    async with in_process_api(unreachable_broker) as client:
        document = await openapi(client)
        response = await client.get(f"{API}/ready")

    assert response.status_code == 503, response.text
    report = Readiness.model_validate(response.json())
    assert (report.status, report.checks.rabbitmq) == ("not_ready", "unavailable")
    schema = documented(document, "get", "/ready", "503")["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/Readiness"}


async def test_a_refused_x_request_id_is_a_documented_answer(
    api_client: httpx.AsyncClient,
) -> None:
    """Judged on every route but the probes (README, "Requests we refuse"), before the key."""
    response = await api_client.get(f"{API}/balance", headers={"X-Request-ID": "two words"})
    assert_error(response, 400, "VALIDATION_ERROR", "X-Request-ID")
    assert documented(await openapi(api_client), "get", "/balance", "400")


@pytest.mark.parametrize("path", ["/health", "/ready"])
async def test_the_probes_document_no_400(api_client: httpx.AsyncClient, path: str) -> None:
    """They answer any X-Request-ID (test_api_health.py) and ignore a query: no 400."""
    responses = (await openapi(api_client))["paths"][f"{API}{path}"]["get"]["responses"]
    assert "400" not in responses, sorted(responses)


@pytest.mark.parametrize(("fault", "status"), [("status=500", 500), ("timeout-after-commit", 504)])
async def test_the_answers_x_sandbox_fault_gives_are_documented(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, fault: str, status: int
) -> None:
    """Every operation names the header, whose faults answer 500 and 504: no operation listed
    them, so a client generated from the document took them for a broken server."""
    merchant = await make_merchant()
    response = await api_client.get(
        f"{API}/balance", headers={**auth(merchant, ""), "X-Sandbox-Fault": fault}
    )
    assert response.status_code == status
    assert documented(await openapi(api_client), "get", "/balance", str(status))


@pytest.mark.parametrize("path", ["/health", "/ready"])
async def test_the_probes_take_no_fault_and_do_not_offer_one(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, path: str
) -> None:
    """A client sending its key on every call reached the probes with it: a fault answered 429
    or 503 there, which the document did not list (and a 503 that was not `Readiness`), and
    told a monitor the sandbox was down."""
    merchant = await make_merchant()
    for fault in ("status=429", "status=503", "status=500"):
        headers = {**auth(merchant, ""), "X-Sandbox-Fault": fault}
        response = await api_client.get(f"{API}{path}", headers=headers)
        assert response.status_code == 200, (fault, response.text)
    operation = (await openapi(api_client))["paths"][f"{API}{path}"]["get"]
    assert "X-Sandbox-Fault" not in str(operation.get("parameters", []))


async def test_the_clock_advance_documents_its_settled_header(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory
) -> None:
    """Sandbox-Clock-Settled was named in the operation's description only: a client generated
    from the document did not read it."""
    merchant = await make_merchant()
    response = await api_client.post(
        f"{API}/sandbox/clock/advance", json={"seconds": 60}, headers=auth(merchant)
    )
    header = documented(await openapi(api_client), "post", "/sandbox/clock/advance", "200")[
        "headers"
    ]["Sandbox-Clock-Settled"]
    assert response.headers["Sandbox-Clock-Settled"] in header["schema"]["enum"]
    assert documented(await openapi(api_client), "post", "/sandbox/clock/advance", "200")[
        "content"
    ]  # the answer's body is still documented beside the header


async def test_every_operation_that_takes_a_fault_documents_each_answer_a_fault_gives(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, settings: Settings
) -> None:
    """The contract review: the PSP's callback takes X-Sandbox-Fault, and a signed callback with
    a merchant's key and `status=429` got a 429 its operation did not list (it gives none of
    its own)."""
    document = await openapi(api_client)
    faulted = [
        (path, method, operation)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if any(p["name"] == FAULT_HEADER for p in operation.get("parameters", []))
    ]
    assert (f"{API}/ipn/psp", "post") in [(path, method) for path, method, _ in faulted]
    for path, method, operation in faulted:
        for status in (*INJECTED_STATUS_ERRORS, GatewayTimeout.status_code):
            assert str(status) in operation["responses"], (method, path, status)
        assert "Retry-After" in operation["responses"]["429"].get("headers", {}), (method, path)

    merchant = await make_merchant()
    payout = await create_payout(api_client, merchant)
    body = orjson.dumps({"eventId": f"evt-{payout['id']}", "payoutId": payout["id"]})
    headers = {
        **psp_headers(settings.psp_secret, body),
        "X-API-KEY": merchant.api_key,
        FAULT_HEADER: "status=429",
    }
    answer = await api_client.post(f"{API}/ipn/psp", content=body, headers=headers)
    assert_error(answer, 429, "RATE_LIMITED")


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/health"), ("get", "/ready"), ("get", "/payouts"), ("delete", "/sandbox/faults")],
)
async def test_a_body_past_the_limit_is_the_documented_413_on_any_operation(
    api_client: httpx.AsyncClient, make_merchant: MerchantFactory, method: str, path: str
) -> None:
    """The limit is checked before any route, on every operation: those without a body of
    their own answered an undocumented 413 (the OpenAPI review)."""
    document = await openapi(api_client)
    merchant = await make_merchant()

    response = await api_client.request(
        method.upper(), f"{API}{path}", content=b"x" * 70_000, headers=auth(merchant, "")
    )

    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    answer = documented(document, method, path, "413")
    assert answer["content"]["application/json"]["schema"] == ERROR_ENVELOPE


MONEY = {"type": "string", "pattern": r"^-?\d+\.\d{2}$", "examples": ["1500.00"]}


@pytest.mark.parametrize(
    ("schema", "field"),
    [
        ("PayoutView", "amount"),
        ("BalanceView", "availableBalance"),
        ("LedgerEntryView", "amount"),
        ("TopUpView", "availableBalance"),
    ],
)
async def test_money_in_answers_is_documented_as_a_string_of_two_decimals(
    api_client: httpx.AsyncClient, schema: str, field: str
) -> None:
    """It was a plain string: a client generated from the document knew nothing of its form."""
    properties = (await openapi(api_client))["components"]["schemas"][schema]["properties"]
    documented_money = properties[field]
    alternatives = documented_money.get("anyOf", [documented_money])
    assert any(MONEY.items() <= option.items() for option in alternatives), documented_money
