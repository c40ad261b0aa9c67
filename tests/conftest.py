"""Shared fixtures: the real MariaDB/MySQL and RabbitMQ (own database, own vhost), the API app."""

import base64
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import anyio.to_thread
import httpx
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from api_service.app import create_app
from cli.merchants import NewMerchant, create_merchant
from contracts.db.engine import SessionFactory, create_engine, create_session_factory, transaction
from contracts.secrets_at_rest import DEVELOPMENT_SECRETS_KEY
from contracts.settings import Environment, Settings
from migrations.runner import upgrade_to_head
from tests.support.amqp import RabbitClient, open_rabbit
from tests.support.infrastructure import Infrastructure, provide_infrastructure
from tests.support.system import RunningSystem
from tests.support.webhook_receiver import WebhookReceiver

MerchantFactory = Callable[..., Awaitable[NewMerchant]]

# The property tests judge answers, not speed: on a shared host an example stalled past
# Hypothesis's default deadline (200 ms) failed its test as "flaky".
hypothesis_settings.register_profile(
    "payouts", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.load_profile("payouts")


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[Infrastructure]:
    with provide_infrastructure() as infra:
        upgrade_to_head(infra.database_url)
        yield infra


@pytest.fixture(scope="session")
def settings(infrastructure: Infrastructure) -> Settings:
    return Settings(
        database_url=infrastructure.database_url,
        amqp_url=infrastructure.amqp_url,
        psp_secret="psp_secret_of_the_tests",
        processor_retry_delay_seconds=1.0,
        webhook_retry_delays="1,2,4",
        webhook_allow_private_urls=True,
        # The database is shared with tests that leave events undelivered and retries waiting
        # on purpose: a relay would sweep them (processor_service.stalled_deliveries and
        # stalled_retries) into the queue of a later test's webhook service. The sweeps are
        # tested on their own.
        webhook_stalled_retry_seconds=3600,
        log_format="text",
    )


@pytest.fixture(scope="session")
def service_env(settings: Settings) -> dict[str, str]:
    """Environment for service processes started by end-to-end tests."""
    return {
        **os.environ,
        "PAYOUTS_DATABASE_URL": settings.database_url,
        "PAYOUTS_AMQP_URL": settings.amqp_url,
        "PAYOUTS_PSP_SECRET": settings.psp_secret,
        "PAYOUTS_PROCESSOR_RETRY_DELAY_SECONDS": str(settings.processor_retry_delay_seconds),
        "PAYOUTS_WEBHOOK_RETRY_DELAYS": settings.webhook_retry_delays,
        "PAYOUTS_WEBHOOK_ALLOW_PRIVATE_URLS": "true",
        "PAYOUTS_LOG_FORMAT": "text",
        "PAYOUTS_WEBHOOK_STALLED_RETRY_SECONDS": str(settings.webhook_stalled_retry_seconds),
    }


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.database_url, pool_size=60)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def sessions(engine: AsyncEngine) -> SessionFactory:
    return create_session_factory(engine)


@pytest.fixture
def make_merchant(sessions: SessionFactory) -> MerchantFactory:
    async def factory(
        balance: Decimal | str = "1000000.00", webhook_url: str | None = None, name: str = "Test"
    ) -> NewMerchant:
        async with transaction(sessions) as session:
            return await create_merchant(
                session, name=name, balance=Decimal(balance), webhook_url=webhook_url
            )

    return factory


@asynccontextmanager
async def in_process_api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the API app in-process (ASGI), against the real database."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


@pytest.fixture(scope="session")
async def api_client(settings: Settings, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_api(settings) as client:
        yield client


@pytest.fixture
async def client_that_does_not_wait(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API, its clock's advance answering at once: no scheduler applies what it made due."""
    async with in_process_api(settings.model_copy(update={"sandbox_clock_wait_seconds": 0})) as c:
        yield c


@pytest.fixture(scope="module")
async def other_api_process(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A second API app beside api_client's: copies of a keyed request sent to both meet only in
    the database (in one process, a copy waits for the first in memory: keys_in_flight)."""
    async with in_process_api(settings) as client:
        yield client


PRODUCTION_SECRETS_KEY = base64.b64encode(b"production key of the tests: 32B").decode()


def in_production(settings: Settings, **changes: Any) -> Settings:
    """The settings in production mode, which refuses webhook URLs into private networks, and a
    sealing key of its own (the public development key still opens the tests' secrets)."""
    production = {
        "env": Environment.PRODUCTION,
        "webhook_allow_private_urls": False,
        "secrets_keys": f"{PRODUCTION_SECRETS_KEY},{DEVELOPMENT_SECRETS_KEY}",
    }
    return settings.model_copy(update=production | changes)


@pytest.fixture(scope="module")
async def production_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API app in production mode (sandbox controls off)."""
    async with in_process_api(in_production(settings)) as client:
        yield client


@pytest.fixture
async def rabbit(settings: Settings) -> AsyncIterator[RabbitClient]:
    """A client of the tests' RabbitMQ vhost, for publishing and taking messages by hand."""
    async with open_rabbit(settings.amqp_url) as client:
        yield client


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """A real HTTP endpoint on 127.0.0.1 that records the webhooks it gets."""
    async with WebhookReceiver() as running:
        yield running


@pytest.fixture
async def http(system: RunningSystem) -> AsyncIterator[httpx.AsyncClient]:
    """A merchant's HTTP client for the `system` of the test's folder (e2e/, faults/)."""
    async with httpx.AsyncClient(base_url=f"{system.base_url}/api/v1", timeout=30) as client:
        yield client


@pytest.fixture
def worker_thread_calls(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The functions handed to a worker thread (anyio's, which fast_depends uses) from now on."""
    calls: list[object] = []
    run_sync = anyio.to_thread.run_sync

    async def recording(func: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(func)
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", recording)
    return calls


@pytest.fixture
async def bare_database(settings: Settings, sessions: SessionFactory) -> AsyncIterator[str]:
    """A database `payouts migrate` never ran on: its URL."""
    name = f"{make_url(settings.database_url).database}_bare"
    async with sessions() as session:
        await session.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        await session.execute(text(f"CREATE DATABASE {name}"))
    yield settings.database_url.rsplit("/", 1)[0] + f"/{name}"
    async with sessions() as session:
        await session.execute(text(f"DROP DATABASE {name}"))
