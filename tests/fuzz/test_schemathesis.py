"""Schemathesis against the app's own OpenAPI document: every operation, in-process (ASGI) on the
real MariaDB, as a merchant with a large balance and a fresh idempotency key per request. No 5xx;
every response as documented (status code, content type, body schema, headers, `Allow`); auth
enforced where it is declared; schema-violating requests rejected; and afterwards the ledger still
reconciles.

Then every operation again with latin-1 bytes in each header we parse and 600-character path
ids: never a 5xx.

`FUZZ_EXAMPLES` (default 25) is the number of generated examples per operation; `make fuzz`
raises it.
"""

import os
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from schemathesis.checks import CheckFunction
from schemathesis.python import asgi
from schemathesis.specs.openapi import checks as openapi_checks
from sqlalchemy import func, select, update
from starlette.types import ASGIApp, Receive, Scope, Send

from api_service.app import create_app
from api_service.payouts.schemas import MERCHANT_REFERENCE_PATTERN
from api_service.sandbox.faults import FAULT_HEADER
from contracts.api_keys import hash_api_key, new_api_key
from contracts.db.engine import SessionFactory, transaction
from contracts.db.models import Merchant, Payout
from contracts.reconcile import reconcile
from contracts.settings import Settings
from tests.support.api_helpers import new_merchant

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
LARGE_BALANCE = "1000000000000.00"  # room for 100,000 payouts of the 10,000,000 maximum
# What turns a well-formed generated payout into one the directory and the account rules accept.
DESTINATIONS = {
    "WALLET": {"walletCode": "JAZZCASH", "accountNumber": "03001234567"},
    "BANK": {"bankCode": "HBL", "accountNumber": "1234567890"},
}
Case = schemathesis.Case[Any]
MERCHANT_REFERENCE = re.compile(MERCHANT_REFERENCE_PATTERN)
# field: (maxLength, required) in the request schema
SWAPPABLE = {"walletCode": (20, False), "bankCode": (20, False), "accountNumber": (40, True)}

CHECKS: list[CheckFunction] = [
    schemathesis.checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.allow_header_conformance,
    openapi_checks.unsupported_method,
    openapi_checks.missing_required_header,
    openapi_checks.ignored_auth,
    openapi_checks.negative_data_rejection,
]


# A payroll's items are documented as payout bodies and judged one by one: an item that is not
# one is a 200 listing it invalid (as the operation's description says), not a 400 for the
# payroll. Its body is refused whole only when `payouts` itself is not a list of 1-1,000 items.
CHECKS_OF = {
    "/api/v1/payouts/batch": [
        check for check in CHECKS if check is not openapi_checks.negative_data_rejection
    ]
}


def without_fault_header(document: dict[str, Any]) -> dict[str, Any]:
    for operations in document["paths"].values():
        for operation in operations.values():
            operation["parameters"] = [
                parameter
                for parameter in operation.get("parameters", [])
                if parameter["name"] != FAULT_HEADER
            ]
    return document


class PluggedApp:
    """The ASGI app schemathesis calls. The schema is needed when the module is collected (its
    fixture-based loading breaks on pytest 9), the tests' database settings only later: the `api`
    fixture plugs the real app in."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "the `api` fixture plugs the app in"
        await self.app(scope, receive, send)


plugged = PluggedApp()
# The document does not depend on the settings: any instance of the app generates the same one.
# Without X-Sandbox-Fault: its faults are deliberate 5xx, latency and dropped connections (tested
# in tests/integration/test_sandbox_faults.py).
schema = schemathesis.openapi.from_dict(without_fault_header(create_app(Settings()).openapi()))
schema.app = plugged


# Schemathesis builds some cases (explicit examples, coverage) when the module is collected, before
# any fixture runs: the key exists from then on, and the fuzz merchant is given it.
FUZZ_API_KEY = new_api_key()


@schema.auth(refresh_interval=None)
class MerchantKey:
    """The fuzz merchant's X-API-KEY, left out of the cases that test a missing key."""

    def get(self, case: Case, context: schemathesis.AuthContext) -> str:
        return FUZZ_API_KEY

    def set(self, case: Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers["X-API-KEY"] = data


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: Case, kwargs: dict[str, Any]) -> None:
    # A fresh key per request: a repeated one would replay an earlier answer. A case without one
    # tests the missing key's 400 (the document says the header is required).
    if "X-IDEMPOTENCY-KEY" in (case.headers or {}):
        case.headers["X-IDEMPOTENCY-KEY"] = str(uuid.uuid4())


def _may_swap(body: dict[str, Any], field: str) -> bool:
    """Whether the schema accepts `body[field]` (or its absence): then swapping in another value
    it accepts leaves a valid case valid and an invalid one invalid."""
    value, (max_length, required) = body.get(field), SWAPPABLE[field]
    if value is None:
        return not required
    return isinstance(value, str) and 1 <= len(value) <= max_length


@schema.hook.apply_to(method="POST", path="/api/v1/payouts")  # type: ignore[attr-defined,untyped-decorator]
def map_body(context: schemathesis.HookContext, body: Any) -> Any:
    """Generated payouts get a directory code, an account number the rules accept and a fresh
    reference, so the fuzzing reaches the ledger (the coverage phase, which skips this hook,
    keeps exercising the validation). Only values the schema accepts are swapped, for others it
    accepts: a case meant to break the schema still does."""
    if not isinstance(body, dict) or body.get("destType") not in DESTINATIONS:
        return body
    replacement = DESTINATIONS[body["destType"]]
    if not all(_may_swap(body, field) for field in replacement):
        return body
    swapped = {**body, **replacement}
    # Hypothesis repeats small references ("0"): most payouts would be duplicates (409).
    if isinstance(body.get("merchantReference"), str) and MERCHANT_REFERENCE.match(
        body["merchantReference"]
    ):
        swapped["merchantReference"] = f"fuzz-{uuid.uuid4().hex}"
    return swapped


@pytest.fixture(scope="module")
async def fuzz_merchant(sessions: SessionFactory) -> str:
    """The id of a merchant with a large balance, whose API key is FUZZ_API_KEY."""
    merchant = await new_merchant(sessions, balance=LARGE_BALANCE)
    async with transaction(sessions) as session:
        await session.execute(
            update(Merchant)
            .where(Merchant.id == merchant.merchant_id)
            .values(api_key_hash=hash_api_key(FUZZ_API_KEY))
        )
    return merchant.merchant_id


@pytest.fixture(scope="module")
def api(settings: Settings, fuzz_merchant: str) -> Iterator[None]:
    # No processor runs here: an advance waits for the payouts it has yet to submit, up to the
    # clock's wait, then says Sandbox-Clock-Settled: false. Its default (10 s) is the client's
    # read timeout.
    plugged.app = create_app(settings.model_copy(update={"sandbox_clock_wait_seconds": 0.2}))
    # Started now, not at the first call that happens to enter a client: the unsupported-method
    # check calls without one, and the middleware needs what the lifespan sets up.
    with asgi.get_client(plugged):
        pass
    yield
    asgi.shutdown_lifespans()  # schemathesis started the app in its own event-loop thread
    plugged.app = None


@schema.parametrize()
@hypothesis.settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_every_operation_answers_as_documented(case: Case, api: None) -> None:
    case.call_and_validate(checks=CHECKS_OF.get(case.operation.path, CHECKS))


async def test_ledger_reconciles_after_fuzzing(
    sessions: SessionFactory, fuzz_merchant: str
) -> None:
    async with sessions() as session:
        assert await reconcile(session) == []
        payouts = await session.scalar(
            select(func.count()).select_from(Payout).where(Payout.merchant_id == fuzz_merchant)
        )
    assert payouts, "the fuzzing created no payout: run the whole module"


# Every operation of the document, with what a schema-driven fuzzer never sends: latin-1 bytes
# in each header we parse, and path ids far longer than any column.
HOSTILE_HEADER_VALUES = ("caf\u00e9 \u00ff".encode("latin-1"), b"\xe9" * 64, b"x" * 4000)
PARSED_HEADERS = (
    b"x-api-key",
    b"x-idempotency-key",
    b"x-request-id",
    b"x-psp-signature",
    b"x-sandbox-fault",
)
PATH_PARAMETER = re.compile(r"\{[^}]+\}")
OPERATIONS = [
    (method.upper(), path)
    for path, item in create_app(Settings()).openapi()["paths"].items()
    for method in item
]


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
async def test_hostile_headers_and_over_long_path_ids_never_get_a_5xx(
    api_client: httpx.AsyncClient, fuzz_merchant: str, method: str, path: str
) -> None:
    url = PATH_PARAMETER.sub("x" * 600, path)
    valid = {b"x-api-key": FUZZ_API_KEY.encode(), b"content-type": b"application/json"}
    for header in PARSED_HEADERS:
        for value in HOSTILE_HEADER_VALUES:
            headers = {**valid, b"x-idempotency-key": str(uuid.uuid4()).encode(), header: value}
            response = await api_client.request(method, url, headers=headers, content=b"{}")
            assert response.status_code < 500, (header, value[:20], response.text)
