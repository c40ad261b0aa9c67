"""The FastAPI application: routers under /api/v1, one error handler, request ids, body limit."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi_offline import FastAPIOffline
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from api_service import health, webhooks
from api_service.asyncapi import asyncapi_endpoint
from api_service.balance.endpoints import router as balance_router
from api_service.balance.top_up import router as top_up_router
from api_service.client_turns import ClientTurns, ClientTurnsMiddleware
from api_service.dashboard import html_pages as dashboard_html_pages
from api_service.dashboard import install_dashboard
from api_service.dashboard import larger_bodies as dashboard_larger_bodies
from api_service.dashboard.sessions import SignedInMerchants
from api_service.database_time import DatabaseTimeMiddleware, count_database_time
from api_service.directory.endpoints import router as directory_router
from api_service.envelope import json_response
from api_service.errors import (
    PayloadTooLarge,
    RateLimited,
    UnsupportedMediaType,
    ValidationFailed,
    documented_error,
)
from api_service.exception_handlers import install_exception_handlers
from api_service.head_requests import HeadAsGetMiddleware
from api_service.idempotency import IDEMPOTENCY_HEADER, REPLAYED_HEADER
from api_service.keys_in_flight import KeysInFlight
from api_service.merchant_cache import MerchantCache
from api_service.metrics import MetricsMiddleware, RouteTemplates, metrics_endpoint
from api_service.middleware import RequestContextMiddleware
from api_service.payouts.endpoints import router as payouts_router
from api_service.psp.endpoints import router as psp_router
from api_service.request_log.endpoints import REQUESTS_PATH
from api_service.request_log.endpoints import router as request_log_router
from api_service.request_log.recorder import RequestRecorderMiddleware
from api_service.request_log.writer import RequestLogWriter
from api_service.sandbox.clock import router as sandbox_clock_router
from api_service.sandbox.endpoints import SANDBOX_PREFIX
from api_service.sandbox.endpoints import router as sandbox_router
from api_service.sandbox.fault_middleware import FaultInjectionMiddleware
from api_service.sandbox.fault_settings import FaultShares
from api_service.sandbox.openapi import document_the_sandbox
from api_service.server import drain_on_sigterm
from api_service.usage_limits import KeyQuota
from api_service.webhooks.documented import document_the_webhook
from contracts.db.engine import IDLE_TRANSACTION_SECONDS, create_engine, create_session_factory
from contracts.host_lookup import HostResolver
from contracts.settings import Settings, get_settings
from contracts.wire import dumps

API_PREFIX = "/api/v1"
FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
FASTAPI_422_CONTENT = {
    "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.require_safe_for_production()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            lock_wait_seconds=settings.api_lock_wait_seconds,
            timeout_seconds=settings.api_database_timeout_seconds,
            idle_transaction_seconds=IDLE_TRANSACTION_SECONDS,
        )
        count_database_time(engine)
        app.state.settings = settings
        app.state.key_quota = KeyQuota(settings.idempotency_keys_per_merchant_per_day)
        app.state.keys_in_flight = KeysInFlight(settings.api_lock_wait_seconds)
        app.state.merchants = MerchantCache(settings.api_key_cache_seconds)
        app.state.signed_in_merchants = SignedInMerchants(settings)
        app.state.sessions = create_session_factory(engine)
        app.state.fault_shares = FaultShares(app.state.sessions, settings.api_key_cache_seconds)
        app.state.request_log = RequestLogWriter(app.state.sessions)
        app.state.request_log.start()
        app.state.broker_probe = health.BrokerProbe(settings.amqp_url)
        probe_engine = health.database_probe_engine(settings.database_url)
        app.state.database_probe = create_session_factory(probe_engine)
        app.state.host_resolver = HostResolver()  # the webhook URLs' lookups
        app.state.draining = False
        drain_on_sigterm(app.state, settings.shutdown_drain_seconds)
        yield
        app.state.draining = True
        await app.state.request_log.close()
        await app.state.broker_probe.close()
        app.state.host_resolver.close()
        await probe_engine.dispose()
        await engine.dispose()

    # Swagger UI and ReDoc assets come from the fastapi-offline package: no CDN needed.
    app = FastAPIOffline(
        title="Payout Sandbox API",
        version="1.0.0",
        description=(
            "A mock payout PSP for Pakistani merchants (PKR). Authenticate with `X-API-KEY`; "
            "send `X-IDEMPOTENCY-KEY` (a UUID) on every POST."
        ),
        lifespan=lifespan,
    )
    api = APIRouter(prefix=API_PREFIX)
    api.include_router(health.router)
    api.include_router(payouts_router)
    api.include_router(balance_router)
    api.include_router(directory_router)
    api.include_router(psp_router)
    api.include_router(webhooks.router)
    api.include_router(sandbox_router)
    api.include_router(top_up_router)
    api.include_router(sandbox_clock_router)
    api.include_router(request_log_router)
    app.include_router(api)
    probes = frozenset(f"{API_PREFIX}{path}" for path in health.PROBE_PATHS)
    document_the_sandbox(
        app, api_prefix=API_PREFIX, enabled=settings.sandbox_enabled, probes=probes
    )
    document_answers_as_given(app, probes=probes)
    document_the_webhook(app)
    serve_documents_under_the_base_path(app)
    if (metrics := metrics_endpoint(settings)) is not None:
        app.add_route("/metrics", metrics, include_in_schema=False)
    app.add_route("/asyncapi", asyncapi_endpoint, include_in_schema=False)
    install_dashboard(app, settings)
    # With the innermost middleware, for unexpected errors.
    install_exception_handlers(app, dashboard_html_pages(settings))
    # Innermost first: each call's time in the database, HEAD as GET (the routes see GET, the rest
    # HEAD), faults (reading the database in their client's turn; an injected latency gives the
    # turn back while it sleeps), each client's turns, then the request log (which records them
    # all), then request ids.
    app.add_middleware(DatabaseTimeMiddleware, seconds=settings.api_database_time_seconds)
    app.add_middleware(HeadAsGetMiddleware)
    app.add_middleware(
        FaultInjectionMiddleware,
        enabled=settings.sandbox_enabled,
        api_prefix=API_PREFIX,
        exempt_prefixes=(f"{API_PREFIX}{SANDBOX_PREFIX}", f"{API_PREFIX}{REQUESTS_PATH}"),
        probes=probes,
    )
    app.add_middleware(
        ClientTurnsMiddleware,
        turns=ClientTurns(
            per_client=settings.api_max_in_flight_per_key,
            wait_seconds=settings.api_turn_wait_seconds,
        ),
        api_prefix=API_PREFIX,
        probes=probes,
        html_pages=dashboard_html_pages(settings),
    )
    if settings.sandbox_enabled:
        app.add_middleware(
            RequestRecorderMiddleware,
            api_prefix=API_PREFIX,
            unrecorded=frozenset({f"{API_PREFIX}{REQUESTS_PATH}"}),
        )
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        larger_bodies={
            f"{API_PREFIX}/payouts/batch": settings.max_batch_body_bytes,
            **dashboard_larger_bodies(settings),
        },
        probes=probes,
        html_pages=dashboard_html_pages(settings),
    )
    app.add_middleware(MetricsMiddleware, templates=RouteTemplates(app))
    return app


def serve_documents_under_the_base_path(app: FastAPI) -> None:
    """/api/v1/openapi.json and /api/v1/docs, as the contract places every route under its base
    path; FastAPI serves them at the root (/openapi.json, /docs), where they stay."""

    async def openapi_document(_request: Request) -> Response:
        return json_response(dumps(app.openapi()))

    async def docs_page(_request: Request) -> Response:
        return RedirectResponse(app.docs_url or "/docs")

    app.add_route(f"{API_PREFIX}/openapi.json", openapi_document, include_in_schema=False)
    app.add_route(f"{API_PREFIX}/docs", docs_page, include_in_schema=False)


def document_answers_as_given(app: FastAPI, *, probes: frozenset[str]) -> None:
    """FastAPI documents what it would answer by itself; this API answers otherwise, and the
    document is corrected once, when first built:
    - a query or path parameter that fails validation: 400 VALIDATION_ERROR in the error
      envelope (exception_handlers.py), not FastAPI's 422 HTTPValidationError; and every
      operation but the probes may answer 400 to an X-Request-ID it refuses (middleware.py);
    - a call whose client's turn did not come in time: 429 RATE_LIMITED (client_turns.py), on
      every operation but the probes, a PSP's callbacks included;
    - a body that is not JSON: 415 UNSUPPORTED_MEDIA_TYPE (request_body.require_json), on every
      operation that documents one; a body past the limit: 413 PAYLOAD_TOO_LARGE
      (middleware.py), on every operation, as the limit is checked before any route;
    - X-IDEMPOTENCY-KEY: required, though declared optional so that the dependency answers its
      absence itself (400 MISSING_IDEMPOTENCY_KEY)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for path, operations in schema["paths"].items():
                for operation in operations.values():
                    _document_operation(operation, probe=path in probes)
            for name in FASTAPI_VALIDATION_SCHEMAS:
                schema["components"]["schemas"].pop(name, None)
        return app.openapi_schema or build()

    app.openapi = openapi  # type: ignore[method-assign]


REQUEST_ID_ANSWER = {
    "description": "The request's id: the X-Request-ID sent, or one assigned (`req_…`)",
    "required": True,
    "schema": {"type": "string"},
}
REPLAYED_ANSWER = {
    "description": "`true` on an answer replayed from an earlier request with the same "
    "X-IDEMPOTENCY-KEY (byte for byte); absent on a first answer",
    "required": False,
    "schema": {"type": "string", "enum": ["true"]},
}


def _document_operation(operation: dict[str, Any], *, probe: bool) -> None:
    responses: dict[str, Any] = operation["responses"]
    if responses.get("422", {}).get("content") == FASTAPI_422_CONTENT:
        del responses["422"]
    if not probe:  # a probe takes any X-Request-ID, and no query, and never waits its turn
        responses.setdefault("400", documented_error(ValidationFailed))  # X-Request-ID
        responses.setdefault("429", documented_error(RateLimited))  # client_turns.py
    # Any body past the limit, on every path and method, the probes too (middleware.py).
    responses.setdefault("413", documented_error(PayloadTooLarge))
    if "requestBody" in operation:
        responses.setdefault("415", documented_error(UnsupportedMediaType))
    keyed = False
    for parameter in operation.get("parameters", []):
        if parameter["name"] == IDEMPOTENCY_HEADER and parameter["in"] == "header":
            parameter["required"] = True
            # Not `format: uuid`: a client generated from it typed the key as a UUID object, which
            # it put in the header as such (refused), and a validating client refused the other
            # written forms the API takes (in braces, urn:uuid:, 32 digits: clients review).
            parameter["schema"] = IDEMPOTENCY_KEY_SCHEMA
            keyed = True
    for status, response in responses.items():
        # Copied: a response may share its headers with others (errors._HEADERS_BY_STATUS).
        response["headers"] = {**response.get("headers", {}), **_answer_headers(status, keyed)}
    operation["responses"] = dict(sorted(responses.items()))


# The shortest written form of a UUID the API takes (32 digits) to the longest (urn:uuid:...).
IDEMPOTENCY_KEY_SCHEMA = {"type": "string", "minLength": 32, "maxLength": 45}


def _answer_headers(status: str, keyed: bool) -> dict[str, Any]:
    """The headers the contract promises on an answer: X-Request-ID on every one, and on a
    keyed operation's 2xx and 4xx (the answers stored under the key) Idempotent-Replayed.
    Undeclared, a client generated from the document had no accessor for either."""
    headers: dict[str, Any] = {"X-Request-ID": REQUEST_ID_ANSWER}
    if keyed and status[0] in "24":
        headers[REPLAYED_HEADER] = REPLAYED_ANSWER
    return headers
