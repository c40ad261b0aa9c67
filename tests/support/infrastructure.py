"""Where the tests' MariaDB/MySQL and RabbitMQ come from.

`PAYOUTS_DATABASE_URL` / `PAYOUTS_AMQP_URL` set: use those servers, with a database and a vhost
of the tests' own (so a running `make run` is never touched). Not set: start MySQL 8 and
RabbitMQ (with management) containers through testcontainers, from the images named by
`PAYOUTS_MYSQL_IMAGE` and `PAYOUTS_RABBITMQ_IMAGE` (the official ones by default; without a
registry, `scripts/container-engine.sh env` names local builds: MariaDB 10.11 and RabbitMQ 3.10).
"""

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from contracts.db.engine import SessionFactory

# Overridable so that several test runs on one machine never share a database or a vhost; each
# pytest-xdist worker (make test runs two) takes its own, named after it.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_OF_WORKER = f"_{_WORKER}" if _WORKER else ""
TEST_DATABASE = os.environ.get("PAYOUTS_TEST_DATABASE", "payouts_test") + _OF_WORKER
TEST_VHOST = os.environ.get("PAYOUTS_TEST_VHOST", "payouts_test") + _OF_WORKER
MYSQL_IMAGE = os.environ.get("PAYOUTS_MYSQL_IMAGE", "mysql:8.4")
RABBITMQ_IMAGE = os.environ.get("PAYOUTS_RABBITMQ_IMAGE", "rabbitmq:3.13-management")


@dataclass(frozen=True)
class Infrastructure:
    database_url: str  # mysql+asyncmy://... pointing at the tests' own database
    amqp_url: str  # amqp://... pointing at the tests' own vhost
    management_url: str  # http://user:pass@host:15672


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@asynccontextmanager
async def database_account(
    sessions: SessionFactory, database_url: str, name: str, *, granted: str, limits: str = ""
) -> AsyncIterator[str]:
    """An account of the database server granted only `granted` of the database `database_url`
    names (`"SELECT ON *"`: read it all; `"SELECT ON merchants"`: one table), for a block: the
    URL as that account. Named after the xdist worker too (the workers share the server).
    `limits`: its resource limits (`"MAX_USER_CONNECTIONS 2"`)."""
    user = f"{name}{_OF_WORKER}"
    parts = urlsplit(database_url)
    privileges, _, tables = granted.partition(" ON ")
    async with sessions() as session:
        await session.execute(text(f"DROP USER IF EXISTS '{user}'@'%'"))
        limited = f" WITH {limits}" if limits else ""
        await session.execute(text(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'{limited}"))
        on = f"`{parts.path.lstrip('/')}`.{tables}"
        await session.execute(text(f"GRANT {privileges} ON {on} TO '{user}'@'%'"))
    try:
        yield urlunsplit(parts._replace(netloc=f"{user}:pw@{parts.hostname}:{parts.port}"))
    finally:
        async with sessions() as session:
            await session.execute(text(f"DROP USER IF EXISTS '{user}'@'%'"))


def with_vhost(url: str, vhost: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{quote(vhost, safe='')}"))


def management_url_for(amqp_url: str) -> str:
    parts = urlsplit(amqp_url)
    user = parts.username or "guest"
    password = parts.password or "guest"
    return os.environ.get(
        "PAYOUTS_RABBITMQ_MANAGEMENT_URL", f"http://{user}:{password}@{parts.hostname}:15672"
    )


def recreate_database(database_url: str) -> None:
    """Drop and create the database the URL names (runs before any event loop exists)."""
    parts = urlsplit(database_url)
    database = parts.path.lstrip("/")

    async def _recreate() -> None:
        engine = create_async_engine(urlunsplit(parts._replace(path="/")))
        async with engine.begin() as connection:
            await connection.execute(text(f"DROP DATABASE IF EXISTS `{database}`"))
            await connection.execute(text(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4"))
        await engine.dispose()

    asyncio.run(_recreate())


class ManagementApiDown(RuntimeError):
    """RabbitMQ's management API does not answer; on a fresh machine its plugin is off."""


def management_client(management_url: str) -> httpx.AsyncClient:
    """RabbitMQ's management API (http://user:pass@host:15672) as a client."""
    parts = urlsplit(management_url)
    return httpx.AsyncClient(
        base_url=urlunsplit(parts._replace(netloc=f"{parts.hostname}:{parts.port or 15672}")),
        auth=(parts.username or "guest", parts.password or "guest"),
        timeout=30,
    )


def recreate_vhost(management_url: str, vhost: str) -> None:
    parts = urlsplit(management_url)
    base = urlunsplit(parts._replace(netloc=f"{parts.hostname}:{parts.port or 15672}"))
    auth = (parts.username or "guest", parts.password or "guest")
    name = quote(vhost, safe="")
    try:
        with httpx.Client(base_url=base, auth=auth, timeout=30) as client:
            client.delete(f"/api/vhosts/{name}")
            client.put(f"/api/vhosts/{name}").raise_for_status()
            client.put(
                f"/api/permissions/{name}/{auth[0]}",
                json={"configure": ".*", "write": ".*", "read": ".*"},
            ).raise_for_status()
    except httpx.ConnectError as exc:
        raise ManagementApiDown(
            f"RabbitMQ's management API does not answer at {base} ({exc}). "
            "scripts/local-services.sh starts the services and enables it; "
            "make test, make bench and make run call it first."
        ) from exc


@contextmanager
def provide_infrastructure() -> Iterator[Infrastructure]:
    database_url = os.environ.get("PAYOUTS_DATABASE_URL")
    amqp_url = os.environ.get("PAYOUTS_AMQP_URL")
    with ExitStack() as stack:
        if not database_url:
            database_url = stack.enter_context(_mysql_container())
        if not amqp_url:
            amqp_url = stack.enter_context(_rabbitmq_container())
        infra = Infrastructure(
            database_url=with_database(database_url, TEST_DATABASE),
            amqp_url=with_vhost(amqp_url, TEST_VHOST),
            management_url=management_url_for(amqp_url),
        )
        recreate_database(infra.database_url)
        recreate_vhost(infra.management_url, TEST_VHOST)
        yield infra


@contextmanager
def _mysql_container() -> Iterator[str]:
    from testcontainers.mysql import MySqlContainer

    # Waits for the second "ready for connections" in the log: the official images (and the
    # local MariaDB build) first run a socket-only server that creates the users.
    with MySqlContainer(MYSQL_IMAGE, username="root", password="test", dbname="payouts") as mysql:
        host, port = mysql.get_container_host_ip(), mysql.get_exposed_port(3306)
        yield f"mysql+asyncmy://root:test@{host}:{port}/payouts"


@contextmanager
def _rabbitmq_container() -> Iterator[str]:
    from testcontainers.rabbitmq import RabbitMqContainer

    with RabbitMqContainer(RABBITMQ_IMAGE).with_exposed_ports(5672, 15672) as rabbit:
        host = rabbit.get_container_host_ip()
        port = rabbit.get_exposed_port(5672)
        management = rabbit.get_exposed_port(15672)
        management_url = f"http://guest:guest@{host}:{management}"
        # The container counts as started once AMQP answers; the management listener (which
        # creates the tests' vhost) can come up a moment later.
        _wait_for_management(management_url, timeout=60)
        os.environ["PAYOUTS_RABBITMQ_MANAGEMENT_URL"] = management_url
        yield f"amqp://guest:guest@{host}:{port}/"


def _wait_for_management(management_url: str, timeout: float) -> None:
    parts = urlsplit(management_url)
    base = urlunsplit(parts._replace(netloc=f"{parts.hostname}:{parts.port}"))
    auth = (parts.username or "guest", parts.password or "guest")
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/api/overview", auth=auth, timeout=5).is_success:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"RabbitMQ management API at {base} did not answer in {timeout} s")
        time.sleep(0.5)
