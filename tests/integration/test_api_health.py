"""Liveness, readiness naming the failing dependency, and the OpenAPI document."""

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import text

from api_service.app import create_app
from api_service.health import CHECK_TIMEOUT_SECONDS, BrokerProbe
from api_service.metrics import UNMATCHED_ROUTE
from contracts.db.engine import SessionFactory
from contracts.settings import Settings
from tests.support.api_helpers import (
    API,
    assert_error,
    auth,
    create_payout,
    new_key,
    new_merchant,
    payout_body,
)
from tests.support.infrastructure import database_account
from tests.support.private_mariadb import private_mariadb, set_read_only
from tests.support.tcp_proxy import HangingProxy


async def test_health_is_200_healthy(api_client: httpx.AsyncClient) -> None:
    response = await api_client.get(f"{API}/health")
    assert (response.status_code, response.json()) == (200, {"status": "healthy"})


@pytest.mark.parametrize("path", ["/health", "/ready"])
@pytest.mark.parametrize("sent_id", ["r" * 150, "an id with spaces"])
async def test_a_probe_answers_whatever_request_id_a_proxy_sends(
    api_client: httpx.AsyncClient, path: str, sent_id: str
) -> None:
    """An id the API refuses elsewhere (400) made /health and /ready a 400: a proxy that sends
    longer ids made a healthy API look down. The probe answers under an id of its own."""
    response = await api_client.get(f"{API}{path}", headers={"X-Request-ID": sent_id})

    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"].startswith("req_")
    refused = await api_client.get(f"{API}/balance", headers={"X-Request-ID": sent_id})
    assert refused.status_code == 400  # elsewhere, as documented


@pytest.mark.parametrize("path", ["/health", "/ready"])
async def test_head_answers_as_get_without_the_body(
    api_client: httpx.AsyncClient, path: str
) -> None:
    """Uptime monitors and load balancers probe with HEAD; it was 405."""
    got = await api_client.get(f"{API}{path}")
    head = await api_client.head(f"{API}{path}")
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"] != "0"
    assert head.headers["content-type"] == got.headers["content-type"]


async def test_head_is_counted_under_its_route_and_answered_on_dashboard_pages(
    api_client: httpx.AsyncClient,
) -> None:
    def counted() -> float:
        labels = {"method": "HEAD", "route": f"{API}/health", "status": "200"}
        return REGISTRY.get_sample_value("payouts_api_requests_total", labels) or 0.0

    before = counted()
    assert (await api_client.head(f"{API}/health")).status_code == 200
    assert counted() == before + 1  # it was counted as <unmatched>
    page = await api_client.head("/dashboard/sign-in")
    assert (page.status_code, page.content) == (200, b"")


async def test_head_of_a_merchant_resource_is_judged_as_its_get(
    api_client: httpx.AsyncClient, sessions: SessionFactory
) -> None:
    merchant = await new_merchant(sessions)
    payout = await create_payout(api_client, merchant)
    found = await api_client.head(f"{API}/payouts/{payout['id']}", headers=auth(merchant, ""))
    assert (found.status_code, found.content) == (200, b"")
    unknown = await api_client.head(f"{API}/payouts/po_unknown", headers=auth(merchant, ""))
    assert unknown.status_code == 404
    no_key = await api_client.head(f"{API}/payouts/{payout['id']}")
    assert no_key.status_code == 401
    post_only = await api_client.head(
        f"{API}/payouts/{payout['id']}/reinitiate", headers=auth(merchant, "")
    )
    assert (post_only.status_code, post_only.headers["allow"]) == (405, "POST")


async def test_a_405_of_the_dashboards_static_files_names_get_and_head(
    api_client: httpx.AsyncClient,
) -> None:
    response = await api_client.post("/dashboard/static/dashboard.css")
    assert (response.status_code, response.headers["allow"]) == (405, "GET, HEAD")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/payouts", "GET, HEAD, POST"),
        ("PUT", "/payouts/00000000-0000-4000-8000-000000000000", "GET, HEAD"),
        ("PUT", "/balance", "GET, HEAD"),
        ("GET", "/ipn/psp", "POST"),
        ("PUT", "/payouts/batch", "POST"),  # not /payouts/{payout_id}'s
    ],
)
async def test_a_405_names_every_method_the_path_takes(
    api_client: httpx.AsyncClient, method: str, path: str, allowed: str
) -> None:
    """RFC 9110: a 405 carries Allow. It was empty on every route of the API's router."""
    response = await api_client.request(method, f"{API}{path}")
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allowed
    assert response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


async def test_the_metrics_count_any_odd_method_as_other(api_client: httpx.AsyncClient) -> None:
    """A label of bounded values: the server's parser takes methods like UNSUBSCRIBE."""

    def counted(method: str) -> float:
        value = REGISTRY.get_sample_value(
            "payouts_api_requests_total",
            {"method": method, "route": UNMATCHED_ROUTE, "status": "404"},
        )
        return value or 0.0

    before = counted("OTHER")
    for odd in ("UNSUBSCRIBE", "MKCALENDAR", "PURGE"):
        assert (await api_client.request(odd, "/no-such-path")).status_code == 404
    assert counted("OTHER") == before + 3
    assert counted("UNSUBSCRIBE") == 0


async def test_ready_when_mysql_and_rabbitmq_answer(api_client: httpx.AsyncClient) -> None:
    response = await api_client.get(f"{API}/ready")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "rabbitmq": "ok"},
    }


@asynccontextmanager
async def _api_with(settings: Settings, **broken: str) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(settings.model_copy(update=broken))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


async def _ready_with(settings: Settings, **broken: str) -> httpx.Response:
    async with _api_with(settings, **broken) as client:
        return await client.get(f"{API}/ready")


@pytest.mark.parametrize(
    ("broken", "failing", "healthy"),
    [
        ({"amqp_url": "amqp://guest:guest@127.0.0.1:1/"}, "rabbitmq", "database"),
        ({"amqp_url": "amqp://guest:wrong-password@127.0.0.1:5672/"}, "rabbitmq", "database"),
        ({"database_url": "mysql+asyncmy://root@127.0.0.1:1/payouts"}, "database", "rabbitmq"),
    ],
    ids=["rabbitmq unreachable", "rabbitmq refuses login", "mysql unreachable"],
)
async def test_not_ready_is_503_naming_the_failing_dependency(
    settings: Settings, broken: dict[str, str], failing: str, healthy: str
) -> None:
    response = await _ready_with(settings, **broken)
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["checks"] == {failing: "unavailable", healthy: "ok"}
    assert response.headers["x-request-id"]


@pytest.mark.parametrize(
    ("version", "state"),
    [(None, "not_migrated"), ("0030", "not_migrated"), ("9999_of_a_newer_code", "ok")],
    ids=["never migrated", "an older revision", "a revision of a newer code"],
)
async def test_a_database_lacking_migrations_is_not_ready(
    settings: Settings,
    sessions: SessionFactory,
    bare_database: str,
    version: str | None,
    state: str,
) -> None:
    """It was `database: ok`, and every merchant's call a 500 (lifecycle review). A rolling
    upgrade migrates ahead of the processes still running the older code: those stay ready."""
    if version is not None:
        async with sessions() as session:
            bare = bare_database.rsplit("/", 1)[1]
            await session.execute(text(f"CREATE TABLE {bare}.alembic_version (version_num text)"))
            await session.execute(text(f"INSERT INTO {bare}.alembic_version VALUES ('{version}')"))
            await session.commit()

    response = await _ready_with(settings, database_url=bare_database)

    assert response.json()["checks"]["database"] == state
    assert response.status_code == (200 if state == "ok" else 503)


async def test_a_read_only_database_is_not_ready(settings: Settings) -> None:
    """A read-only server (a replica, or a primary a failover demoted) answers reads: /ready
    said `database: ok`, a load balancer kept the API in, and each merchant's write was a 503
    (failover review). Writable again, it is judged on its migrations as any other."""
    with private_mariadb("--read-only") as url:
        response = await _ready_with(settings, database_url=url)
        assert response.status_code == 503
        assert response.json()["checks"] == {"database": "read_only", "rabbitmq": "ok"}

        await set_read_only(url, False)
        assert (await _ready_with(settings, database_url=url)).json()["checks"] == {
            "database": "not_migrated",
            "rabbitmq": "ok",
        }


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/balance", None),
        ("GET", "/directory", None),
        ("POST", "/payouts", payout_body()),
        ("POST", "/ipn/psp", {"eventId": "e1", "payoutId": "p", "status": "SUCCESS"}),
    ],
    ids=["balance", "directory", "create", "ipn"],
)
async def test_a_merchants_call_to_a_database_lacking_migrations_is_a_503(
    settings: Settings,
    bare_database: str,
    method: str,
    path: str,
    body: object,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """/ready said `not_migrated`, and each merchant's call was a 500 INTERNAL_ERROR, logged as
    an unhandled error (found by the lifecycle review): a 503 to retry, as for an outage. Logged
    once, with its request id: refused where the sandbox faults look the key up, it went
    unlogged (truth review)."""
    caplog.set_level(logging.WARNING, logger="api")
    async with _api_with(settings, database_url=bare_database) as client:
        response = await client.request(
            method,
            f"{API}{path}",
            json=body,
            headers={"X-API-KEY": "mpk_test_" + "a" * 43, "X-IDEMPOTENCY-KEY": new_key()},
        )

    error = assert_error(response, 503, "SERVICE_UNAVAILABLE")
    assert "payouts migrate" in error["message"]
    [line] = [r for r in caplog.records if r.name == "api" and "payouts migrate" in r.getMessage()]
    assert "ProgrammingError 1146: Table" in line.getMessage(), line.getMessage()
    assert getattr(line, "request_id", None) == response.headers["x-request-id"]


async def test_an_account_that_may_not_read_the_version_is_ready(
    settings: Settings, sessions: SessionFactory
) -> None:
    """Granted table by table, without alembic_version: the database answers, its version is
    unknown. It was ready before /ready asked the version; a 1142 (denied) made it unavailable
    for ever (diff review's suspicion)."""
    merchants_only = database_account(
        sessions, settings.database_url, "payouts_tables_only", granted="SELECT ON merchants"
    )
    async with merchants_only as url:
        response = await _ready_with(settings, database_url=url)

    assert response.json()["checks"]["database"] == "ok", response.text


@dataclass
class SilentBroker:
    """A broker that takes connections and never speaks AMQP; `connections` counts them."""

    url: str
    connections: int = 0


@pytest.fixture
async def silent_broker() -> AsyncIterator[SilentBroker]:
    broker = SilentBroker(url="")

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        broker.connections += 1
        await asyncio.sleep(30)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    broker.url = f"amqp://guest:guest@127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    try:
        yield broker
    finally:
        server.close()


@pytest.fixture
def silent_amqp_url(silent_broker: SilentBroker) -> str:
    return silent_broker.url


async def test_concurrent_probes_of_a_silent_broker_share_one_check(
    settings: Settings, silent_broker: SilentBroker
) -> None:
    """Each probe waited behind a lock for a 2 s check of its own: four concurrent probes (an
    orchestrator, a load balancer, a monitor) answered after 2, 4, 6 and 8 s, past the compose
    healthcheck's 4 s. Counted, not timed: one check, one connection to the broker, for all
    four (a timed bound failed on a loaded host)."""
    async with _api_with(settings, amqp_url=silent_broker.url) as client:
        before = silent_broker.connections
        answers = await asyncio.gather(*(client.get(f"{API}/ready") for _ in range(4)))
        checks = silent_broker.connections - before

    assert [answer.status_code for answer in answers] == [503] * 4
    assert checks == 1


async def test_ready_answers_within_one_check_when_both_dependencies_hang(
    settings: Settings, silent_amqp_url: str
) -> None:
    """A network partition takes MySQL and RabbitMQ together: the two checks ran one after the
    other, 2 s each, past the compose healthcheck's 4 s (found by the lifecycle review)."""
    async with HangingProxy.in_front_of(settings.database_url) as proxy:
        hanging = proxy.url_through(settings.database_url)
        async with _api_with(settings, database_url=hanging, amqp_url=silent_amqp_url) as client:
            proxy.hang()
            started = time.monotonic()
            response = await client.get(f"{API}/ready")
            took = time.monotonic() - started

    assert response.json()["checks"] == {"database": "unavailable", "rabbitmq": "unavailable"}
    assert took < 2 * CHECK_TIMEOUT_SECONDS, took


async def test_a_probe_its_caller_left_opens_no_connection_after_shutdown(
    settings: Settings,
) -> None:
    """A /ready whose client gave up left the shared check running; the API shut down meanwhile,
    and the check opened its AMQP connection after close() had run: nothing ever closed it."""
    probe = BrokerProbe(settings.amqp_url)
    caller = asyncio.create_task(probe.ok())
    await asyncio.sleep(0)  # the caller starts the shared check and waits on it
    caller.cancel()
    await asyncio.gather(caller, return_exceptions=True)

    await probe.close()
    await asyncio.sleep(CHECK_TIMEOUT_SECONDS)  # as long as the check could still take

    assert probe.connection is None


async def test_a_closed_probe_answers_not_ready_and_opens_nothing(settings: Settings) -> None:
    """A probe after close() opened a connection nothing would close; a /ready waiting on the
    check that close() cancelled died with CancelledError instead of an answer."""
    probe = BrokerProbe(settings.amqp_url)
    waiting = asyncio.create_task(probe.ok())
    await asyncio.sleep(0)  # it starts the shared check and waits on it

    await probe.close()

    assert await waiting is False
    assert await probe.ok() is False
    assert probe.connection is None


async def test_a_cancelled_close_is_cancelled(settings: Settings) -> None:
    """close() swallowed a cancel meant for itself (a shutdown that timed out went on)."""
    probe = BrokerProbe(settings.amqp_url)
    caller = asyncio.create_task(probe.ok())
    await asyncio.sleep(0)
    closing = asyncio.create_task(probe.close())
    await asyncio.sleep(0)
    closing.cancel()

    results = await asyncio.gather(closing, caller, return_exceptions=True)

    assert isinstance(results[0], asyncio.CancelledError), results
    await probe.close()


async def test_docs_are_served_without_a_key(api_client: httpx.AsyncClient) -> None:
    response = await api_client.get("/docs")
    assert response.status_code == 200
    assert "swagger" in response.text.lower()


async def test_the_documents_are_under_the_base_path_too(api_client: httpx.AsyncClient) -> None:
    """The contract places every route, /docs and /openapi.json with them, under /api/v1."""
    at_root = await api_client.get("/openapi.json")
    under_base = await api_client.get(f"{API}/openapi.json")
    assert under_base.status_code == 200
    assert under_base.headers["content-type"].startswith("application/json")
    assert under_base.json() == at_root.json()
    docs = await api_client.get(f"{API}/docs", follow_redirects=True)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


@pytest.fixture(scope="module")
async def openapi(api_client: httpx.AsyncClient) -> AsyncIterator[dict[str, Any]]:
    response = await api_client.get("/openapi.json")
    assert response.status_code == 200
    yield response.json()


def _error_codes(operation: dict[str, Any], status: str) -> set[str]:
    return set(operation["responses"][status]["description"].split(" | "))


ERRORS = [
    ("post", "/payouts", "401", {"MISSING_API_KEY", "INVALID_API_KEY"}),
    ("post", "/payouts", "400", {"VALIDATION_ERROR", "MISSING_IDEMPOTENCY_KEY"}),
    ("post", "/payouts", "409", {"DUPLICATE_REFERENCE", "IDEMPOTENCY_KEY_IN_USE"}),
    ("post", "/payouts", "413", {"PAYLOAD_TOO_LARGE"}),
    ("post", "/payouts", "422", {"INSUFFICIENT_BALANCE", "IDEMPOTENCY_KEY_REUSED"}),
    ("post", "/payouts", "503", {"SERVICE_UNAVAILABLE"}),
    ("get", "/payouts/{payout_id}", "404", {"NOT_FOUND"}),
    ("post", "/payouts/{payout_id}/reinitiate", "409", {"INVALID_STATUS"}),
    ("post", "/payouts/{payout_id}/reinitiate", "422", {"INSUFFICIENT_BALANCE"}),
    ("get", "/payouts", "400", {"VALIDATION_ERROR"}),
    ("get", "/balance", "401", {"MISSING_API_KEY"}),
    ("get", "/balance/history", "401", {"INVALID_API_KEY"}),
    ("get", "/directory", "401", {"MISSING_API_KEY"}),
    ("post", "/verify-account", "400", {"MISSING_IDEMPOTENCY_KEY"}),
    ("post", "/ipn/psp", "401", {"INVALID_SIGNATURE"}),
    ("post", "/ipn/psp", "409", {"INVALID_TRANSITION"}),
    ("post", "/sandbox/payouts/{payout_id}/simulate", "409", {"INVALID_TRANSITION"}),
]


@pytest.mark.parametrize(("method", "path", "status", "codes"), ERRORS)
async def test_error_responses_are_documented(
    openapi: dict[str, Any], method: str, path: str, status: str, codes: set[str]
) -> None:
    operation = openapi["paths"][f"{API}{path}"][method]
    assert codes <= _error_codes(operation, status)
    schema = operation["responses"][status]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/ErrorEnvelopeSchema"}


@pytest.mark.parametrize(
    ("path", "required"),
    [
        ("/payouts", {"merchantReference", "amount", "destType", "accountNumber"}),
        ("/verify-account", {"destType", "accountNumber"}),
        ("/ipn/psp", {"eventId", "payoutId", "status"}),
        ("/sandbox/payouts/{payout_id}/simulate", {"outcome"}),
    ],
)
async def test_request_bodies_are_documented(
    openapi: dict[str, Any], path: str, required: set[str]
) -> None:
    body = openapi["paths"][f"{API}{path}"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = openapi["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    assert required <= set(schema["required"])
    assert body["required"] is True


async def test_success_responses_are_documented(openapi: dict[str, Any]) -> None:
    created = openapi["paths"][f"{API}/payouts"]["post"]["responses"]
    assert "201" in created
    assert "200" not in created


async def test_every_merchant_route_documents_the_api_key(openapi: dict[str, Any]) -> None:
    public = {f"{API}/health", f"{API}/ready", f"{API}/ipn/psp"}
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            if path in public:
                assert "security" not in operation, (method, path)
            else:
                assert "401" in operation["responses"], (method, path)
                assert operation.get("security"), (method, path)


async def test_production_documents_neither_the_sandbox_controls_nor_the_fault_header(
    production_client: httpx.AsyncClient, openapi: dict[str, Any]
) -> None:
    """They answer 404 there: a document generated into a production client listed them."""
    document = (await production_client.get("/openapi.json")).json()
    sandbox_only = {f"{API}/sandbox/faults", f"{API}/sandbox/clock/advance", f"{API}/requests"}
    assert sandbox_only <= set(openapi["paths"])
    assert not sandbox_only & set(document["paths"])
    assert not [path for path in document["paths"] if path.startswith(f"{API}/sandbox")]
    assert f"{API}/payouts" in document["paths"]
    assert "X-Sandbox-Fault" in str(openapi["paths"][f"{API}/payouts"])
    assert "X-Sandbox-Fault" not in str(document)
