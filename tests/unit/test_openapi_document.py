"""The OpenAPI document says what the API answers (exception_handlers.py, request_body.py,
idempotency.py, health.py), not what FastAPI would answer by itself. The answers themselves are
checked against it in tests/integration/test_api_openapi_answers.py."""

from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any

import pytest
import yaml

from api_service.app import create_app
from api_service.sandbox.faults import FAULT_HEADER
from api_service.webhooks.documented import WEBHOOK_NAME
from api_service.webhooks.schemas import PayoutEventView
from contracts.asyncapi import asyncapi_yaml
from contracts.domain.statuses import EventType, PayoutStatus
from contracts.messages import PayoutStatusChanged
from contracts.payout_view import PayoutView
from contracts.settings import Settings
from contracts.webhook_chaos import ChaosKind
from contracts.webhook_signing import webhook_headers

ERROR_ENVELOPE = {"$ref": "#/components/schemas/ErrorEnvelopeSchema"}


@cache
def document() -> dict[str, Any]:
    return create_app(Settings()).openapi()


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, by_method in document()["paths"].items()
        for method, operation in by_method.items()
    ]


def error_schema(operation: dict[str, Any], status: str) -> Any:
    return operation["responses"][status]["content"]["application/json"]["schema"]


def test_the_idempotency_key_is_a_required_text_header_on_every_operation_that_reads_it() -> None:
    declared = [
        (method, path, parameter)
        for method, path, operation in operations()
        for parameter in operation.get("parameters", [])
        if parameter["name"] == "X-IDEMPOTENCY-KEY"
    ]
    assert {(method, path) for method, path, _ in declared} >= {
        ("post", "/api/v1/payouts"),
        ("post", "/api/v1/webhook-endpoint/rotate-secret"),
    }
    for method, path, parameter in declared:
        assert parameter["in"] == "header"
        assert parameter["required"] is True, (method, path)
        assert parameter["schema"] == {"type": "string", "minLength": 32, "maxLength": 45}
        assert "MISSING_IDEMPOTENCY_KEY" in parameter["description"]
        assert (
            "MISSING_IDEMPOTENCY_KEY"
            in document()["paths"][path][method]["responses"]["400"]["description"]
        )


def test_no_operation_documents_fastapis_422_validation_error() -> None:
    assert "HTTPValidationError" not in str(document())
    assert "ValidationError" not in document()["components"]["schemas"]
    for method, path, operation in operations():
        parameters = [p for p in operation.get("parameters", []) if p["name"] != FAULT_HEADER]
        if parameters or "requestBody" in operation:
            assert error_schema(operation, "400") == ERROR_ENVELOPE, (method, path)
            assert "VALIDATION_ERROR" in operation["responses"]["400"]["description"]


def test_a_documented_422_is_still_the_apis_own() -> None:
    created = document()["paths"]["/api/v1/payouts"]["post"]["responses"]["422"]
    assert created["content"]["application/json"]["schema"] == ERROR_ENVELOPE
    assert "INSUFFICIENT_BALANCE" in created["description"]


@pytest.mark.parametrize(
    "path", ["/api/v1/webhook-endpoint", "/api/v1/sandbox/faults", "/api/v1/sandbox/webhook-chaos"]
)
def test_the_put_controls_document_415(path: str) -> None:
    put = document()["paths"][path]["put"]
    assert "UNSUPPORTED_MEDIA_TYPE" in put["responses"]["415"]["description"]
    assert error_schema(put, "415") == ERROR_ENVELOPE


def test_every_operation_with_a_json_body_documents_415() -> None:
    with_body = [(m, p, o) for m, p, o in operations() if "requestBody" in o]
    assert len(with_body) >= 10
    for method, path, operation in with_body:
        assert error_schema(operation, "415") == ERROR_ENVELOPE, (method, path)


def test_ready_documents_its_503_report() -> None:
    responses = document()["paths"]["/api/v1/ready"]["get"]["responses"]
    # Any X-Request-ID taken, any query ignored; a body past the limit refused (middleware.py).
    assert set(responses) == {"200", "413", "503"}
    report = error_schema({"responses": responses}, "503")["$ref"].rsplit("/", 1)[-1]
    schema = document()["components"]["schemas"][report]
    assert schema["properties"]["status"]["enum"] == ["ready", "not_ready"]
    assert set(schema["required"]) == {"status", "checks"}


def _event(sandbox_time: datetime | None) -> PayoutStatusChanged:
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    payout = PayoutView(
        id="00000000-0000-4000-8000-000000000001",
        merchant_reference="ref-1",
        amount=Decimal("1500.00"),
        currency="PKR",
        dest_type="BANK",
        bank_code="HBL",
        wallet_code=None,
        account_number="1234567890",
        account_title="Account Holder",
        purpose=None,
        status="SUCCESS",
        failure_reason=None,
        failure_code=None,
        psp_reference=None,
        attempts=1,
        processed_at=now,
        created_at=now,
        updated_at=now,
    )
    return PayoutStatusChanged(
        id="evt_1",
        type="payout.succeeded",
        event="PAYOUT_UPDATED",
        created_at=now,
        merchant_id="00000000-0000-4000-8000-000000000002",
        payout=payout,
        sandbox_time=sandbox_time,
    )


@pytest.mark.parametrize("sandbox_time", [None, datetime(2025, 1, 3, tzinfo=UTC)])
def test_the_event_schema_names_every_field_a_webhook_body_carries(
    sandbox_time: datetime | None,
) -> None:
    body = _event(sandbox_time).webhook_body()
    documented = document()["components"]["schemas"]["PayoutEventView"]
    assert set(body) <= set(documented["properties"])
    assert set(documented["required"]) <= set(body)
    parsed = PayoutEventView.model_validate(body)
    assert parsed.model_dump(mode="json", by_alias=True, exclude_unset=True) == body


def test_sandbox_time_is_documented_optional_and_nullable() -> None:
    documented = document()["components"]["schemas"]["PayoutEventView"]
    sandbox_time = documented["properties"]["sandboxTime"]
    assert "sandboxTime" not in documented["required"]
    assert {"type": "null"} in sandbox_time["anyOf"]
    assert "sandbox clock" in sandbox_time["description"]


def test_a_payroll_documents_each_item_as_the_body_of_a_single_create() -> None:
    """Its items were documented as `{}` (any value): a client generated from the document had
    untyped items. They are read as any value still, each judged on its own."""

    def body_schema(path: str) -> Any:
        return document()["paths"][path]["post"]["requestBody"]["content"]["application/json"][
            "schema"
        ]

    item = body_schema("/api/v1/payouts/batch")["properties"]["payouts"]["items"]
    assert item == body_schema("/api/v1/payouts")


def test_every_success_answer_documents_its_body() -> None:
    """A client generated from the document gets typed answers: no 2xx body is `{}`, and each
    `{success, data}` envelope names the `message` some writes add."""
    schemas = document()["components"]["schemas"]
    untyped: list[tuple[str, str, str]] = []
    without_message: list[tuple[str, str, str]] = []
    for method, path, operation in operations():
        if not path.startswith("/api/v1/"):
            continue
        successes = {s: r for s, r in operation["responses"].items() if s.startswith("2")}
        assert successes, (method, path)
        for status, response in successes.items():
            schema = response["content"]["application/json"]["schema"]
            if not schema:
                untyped.append((method, path, status))
                continue
            body = schemas[schema["$ref"].rsplit("/", 1)[-1]] if "$ref" in schema else schema
            properties = body.get("properties", {})
            if "data" in properties and "message" not in properties:
                without_message.append((method, path, status))
    assert untyped == []
    assert without_message == []


def test_the_asyncapi_says_what_the_webhook_drops_of_the_queued_event() -> None:
    """The webhook channel's message is the queued event; the document said it was "delivered to
    the merchant's webhook URL", and a merchant generating a model from it (merchantId required)
    refused every webhook."""
    event = _event(None)
    dropped = set(event.model_dump(by_alias=True)) - set(event.webhook_body())
    assert dropped == {"merchantId", "schemaVersion", "sandboxTime"}  # the last: when None
    channels = yaml.safe_load(asyncapi_yaml())["channels"].values()
    [description] = [
        channel["description"] for channel in channels if "webhook URL" in channel["description"]
    ]
    assert "without its `merchantId` and `schemaVersion`" in description
    assert (
        "`PayoutEventView`" in description
        and "PayoutEventView" in document()["components"]["schemas"]
    )


def test_statuses_destinations_and_event_types_are_documented_as_enums() -> None:
    """They were plain strings: a client generated from the document lost them."""
    schemas = document()["components"]["schemas"]
    payout = schemas["PayoutView"]["properties"]
    assert payout["status"]["enum"] == [status.value for status in PayoutStatus]
    assert payout["destType"]["enum"] == ["BANK", "WALLET"]
    event_types = schemas["PayoutEventView"]["properties"]["type"]["enum"]
    assert event_types == [event_type.value for event_type in EventType]
    published = yaml.safe_load(asyncapi_yaml())["components"]["schemas"]["PayoutView"]
    assert published["properties"]["status"]["enum"] == payout["status"]["enum"]
    # and the chaos done to an attempt, a readiness item's status, the original mock's event
    chaos = schemas["WebhookAttemptView"]["properties"]["chaos"]["anyOf"][0]["$ref"]
    assert schemas[chaos.split("/")[-1]]["enum"] == [kind.value for kind in ChaosKind]
    verdict = schemas["ReadinessItemView"]["properties"]["status"]["$ref"]
    assert schemas[verdict.split("/")[-1]]["enum"] == ["passed", "failed", "not_tried"]
    legacy = schemas["PayoutEventView"]["properties"]["event"]["enum"]
    assert legacy == ["PAYOUT_CREATED", "PAYOUT_REINITIATED", "PAYOUT_UPDATED"]


def _keywords(node: Any) -> set[str]:
    """Every key of every object in the JSON document `node`, but properties' own names."""
    if isinstance(node, list):
        return set().union(*map(_keywords, node))
    if not isinstance(node, dict):
        return set()
    found = set(node) - {"properties"}
    nested = [*node.values(), *node.get("properties", {}).values()]
    return found.union(*map(_keywords, nested))


def test_bounds_are_written_in_json_schema_keywords() -> None:
    """Counts wrote `ge`/`le` (pydantic's argument names): a client or validator read no bounds,
    and `seconds: 31622401` was valid by the document and a 400 from the API."""
    assert {"ge", "gt", "le", "lt"} & _keywords(document()) == set()
    advance = document()["paths"]["/api/v1/sandbox/clock/advance"]["post"]["requestBody"]
    seconds = advance["content"]["application/json"]["schema"]["properties"]["seconds"]
    assert (seconds["minimum"], seconds["maximum"]) == (1, 31_622_400)


def test_every_envelope_requires_success_as_a_constant() -> None:
    """The contract review: `success` had a default, so generated clients made it optional,
    though every answer carries it and a client checks it first."""
    schemas = document()["components"]["schemas"]
    envelopes = {
        name: s for name, s in schemas.items() if name.endswith(("Envelope", "EnvelopeSchema"))
    }
    assert "ErrorEnvelopeSchema" in envelopes and "PayoutEnvelope" in envelopes
    for name, schema in envelopes.items():
        assert "success" in schema["required"], name
        expected = name != "ErrorEnvelopeSchema"
        assert schema["properties"]["success"]["const"] is expected, name


def test_every_answer_declares_its_request_id_and_a_keyed_one_its_replay_mark() -> None:
    """The contract review: the document declared neither header the contract promises, so a
    client generated from it had no accessor for X-Request-ID or Idempotent-Replayed."""
    for method, path, operation in operations():
        keyed = any(p["name"] == "X-IDEMPOTENCY-KEY" for p in operation.get("parameters", []))
        for status, answer in operation["responses"].items():
            headers = answer.get("headers", {})
            assert headers.get("X-Request-ID", {}).get("required") is True, (method, path, status)
            replay_marked = "Idempotent-Replayed" in headers
            assert replay_marked is (keyed and status[0] in "24"), (method, path, status)
    payouts = document()["paths"]["/api/v1/payouts"]["post"]["responses"]
    assert "Retry-After" in payouts["429"]["headers"]  # kept beside the added ones


def _time_properties(schemas: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every property of the schemas named as a time (…At, …Time, timestamp, since)."""
    return [
        (name, field, schema)
        for name, component in schemas.items()
        for field, schema in component.get("properties", {}).items()
        if field.endswith(("At", "Time")) or field in ("timestamp", "since")
    ]


def _formats(schema: dict[str, Any]) -> set[str | None]:
    branches = [b for b in schema.get("anyOf", [schema]) if b.get("type") != "null"]
    return {branch.get("format") for branch in branches}


def test_every_time_on_the_wire_is_documented_as_a_date_time() -> None:
    """They were plain strings in the OpenAPI (and date-times in the AsyncAPI, for the same
    payout): a client generated from it took `createdAt` for text (found by a review that
    generated models from both documents)."""
    schemas = document()["components"]["schemas"]
    times = _time_properties(schemas)
    assert {"PayoutView", "ErrorBody", "WebhookDeliveryView", "ClockView"} <= {
        name for name, _, _ in times
    }
    for name, field, schema in times:
        assert _formats(schema) == {"date-time"}, (name, field, schema)


def test_every_409_and_503_documents_the_retry_after_it_may_carry() -> None:
    """An injected 503 and a reinitiate's 409 while a failure is applied carry Retry-After; the
    document listed it on 429s only, so a generated client never read it (the review of
    generated clients)."""
    answers = [
        (method, path, status, answer)
        for method, path, operation in operations()
        for status, answer in operation["responses"].items()
        if status in ("409", "503") and path != "/api/v1/ready"  # its 503 is a report
    ]
    assert ("post", "/api/v1/payouts/{payout_id}/reinitiate", "409") in {
        (method, path, status) for method, path, status, _ in answers
    }
    for method, path, status, answer in answers:
        retry_after = answer.get("headers", {}).get("Retry-After")
        assert retry_after is not None, (method, path, status)
        assert retry_after["required"] is False, (method, path, status)


def test_the_webhook_is_documented_with_every_header_it_is_sent_with_and_its_body() -> None:
    """Neither document described the webhook: its body was only an answer of GET /events,
    its headers nowhere (the review of generated clients)."""
    [(name, webhook)] = document()["webhooks"].items()
    operation = webhook["post"]
    sent = webhook_headers(
        event_id="evt_1",
        legacy_event="PAYOUT_CREATED",
        timestamp=1,
        body=b"{}",
        secrets=["whsec_" + "A" * 32],
    )

    assert name == WEBHOOK_NAME
    assert {p["name"] for p in operation["parameters"]} == set(sent)
    assert all(p["in"] == "header" and p["required"] for p in operation["parameters"])
    [body] = operation["requestBody"]["content"].values()
    assert body["schema"]["$ref"].split("/")[-1] in document()["components"]["schemas"]


def test_an_errors_details_and_a_batch_items_reference_are_typed() -> None:
    """A generated client had `field` and `message` of every detail as untyped extras, and a
    batch item's merchantReference as `unknown` (clients review)."""
    schemas = document()["components"]["schemas"]
    detail = schemas["ErrorDetail"]
    assert detail["required"] == ["field", "message"]
    assert schemas["ErrorBody"]["properties"]["details"]["anyOf"][0]["items"] == {
        "$ref": "#/components/schemas/ErrorDetail"
    }
    reference = schemas["PayoutBatchItem"]["properties"]["merchantReference"]
    assert [kind.get("type") for kind in reference["anyOf"]] == ["string", "null"]
