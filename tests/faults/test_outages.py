"""Outages under a background load of payouts across the scenario table: RabbitMQ down, MariaDB
down, a webhook receiver that hangs, connections cut. After recovery every accepted payout
settles exactly once, every status event reaches the merchant, and the ledger reconciles.
Each test prints its Jepsen-style table and saves it under .run/fault-reports/."""

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from decimal import Decimal

import httpx
from sqlalchemy.exc import DBAPIError

from contracts.db.engine import SessionFactory
from contracts.reconcile import reconcile
from tests.conftest import MerchantFactory
from tests.faults.outages import FaultServers
from tests.support.fault_load import (
    Load,
    Verdict,
    all_at_rest,
    event_ids,
    settled,
    undelivered,
    verdict,
)
from tests.support.infrastructure import Infrastructure
from tests.support.polling import eventually
from tests.support.system import RunningSystem
from tests.support.webhook_receiver import Reply, WebhookReceiver

BALANCE = Decimal("1000000000.00")
RECOVERY_DEADLINE_SECONDS = 120.0

Fault = Callable[[httpx.AsyncClient, WebhookReceiver], Awaitable[None]]


async def readiness(http: httpx.AsyncClient) -> tuple[int, dict[str, str]]:
    response = await http.get("/ready", timeout=10)
    return response.status_code, response.json().get("checks", {})


async def under_load(
    name: str,
    fault: Fault,
    *,
    system: RunningSystem,
    http: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
) -> Verdict:
    async with WebhookReceiver() as receiver:
        merchant = await make_merchant(balance=BALANCE, webhook_url=receiver.url)
        load = Load(http, merchant)
        loading = asyncio.create_task(load.run())
        await eventually(lambda: _accepted(load, 20), what="load under way")
        await fault(http, receiver)
        accepted_at_recovery = len(load.accepted)
        await eventually(
            lambda: _accepted(load, accepted_at_recovery + 20), what="load after recovery"
        )
        load.stop.set()
        await loading

        await eventually(
            lambda: _all_settled(sessions, load),
            within=RECOVERY_DEADLINE_SECONDS,
            interval=0.5,
            what=f"{name}: every accepted payout settled",
        )
        try:
            await eventually(
                lambda: _all_delivered(sessions, load, receiver),
                within=RECOVERY_DEADLINE_SECONDS,
                interval=0.5,
                what=f"{name}: every status event delivered",
            )
        except AssertionError as missed:
            sent = {request.headers["webhook-id"] for request in receiver.requests}
            missing, where = await undelivered(sessions, load.merchant.merchant_id, sent)
            logged = system.lines_naming(missing)
            raise AssertionError(f"{missed}\n{where}\n{logged}\n{system.logs()}") from None
        result = await verdict(name, load, sessions, receiver)
    result.save()
    print(f"\n{name}\n{result.table()}")
    assert not system.group.exited(), system.logs()
    assert (result.lost, result.duplicated_effects, result.undelivered_events) == (0, 0, 0)
    assert set(result.answers) <= {"201", "503"}, result.answers  # no 500, no hang
    async with sessions() as session:
        assert await reconcile(session) == []
    return result


async def _accepted(load: Load, count: int) -> bool:
    return len(load.accepted) >= count


async def _all_settled(sessions: SessionFactory, load: Load) -> bool:
    with suppress(DBAPIError):  # the test's own pooled connections died with the server
        return await settled(sessions, load.accepted) == len(load.accepted) and await all_at_rest(
            sessions, load.merchant.merchant_id
        )
    return False


async def _all_delivered(sessions: SessionFactory, load: Load, receiver: WebhookReceiver) -> bool:
    delivered = {request.headers["webhook-id"] for request in receiver.requests}
    with suppress(DBAPIError):
        return await event_ids(sessions, load.merchant.merchant_id) <= delivered
    return False


def server_down(
    stop: Callable[[], None], start: Callable[[], None], dependency: str, *, seconds: float
) -> Fault:
    """Stop a server for `seconds`: /ready must name it as unavailable meanwhile."""

    async def fault(http: httpx.AsyncClient, _receiver: WebhookReceiver) -> None:
        await asyncio.to_thread(stop)
        try:
            _, checks = await eventually(
                lambda: _not_ready(http), what=f"readiness reports {dependency} down"
            )
            assert checks[dependency] == "unavailable"
            await asyncio.sleep(seconds)  # the outage itself
        finally:
            await asyncio.to_thread(start)
        await eventually(lambda: _ready(http), within=60, what="ready again")

    return fault


async def test_rabbitmq_down_for_20_seconds(
    servers: FaultServers,
    system: RunningSystem,
    http: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
) -> None:
    result = await under_load(
        "rabbitmq-down-20s",
        server_down(servers.stop_rabbitmq, servers.start_rabbitmq, "rabbitmq", seconds=20),
        system=system,
        http=http,
        make_merchant=make_merchant,
        sessions=sessions,
    )
    assert result.answers.get("503", 0) == 0  # payouts are accepted while the broker is down


async def test_mariadb_down_for_10_seconds(
    servers: FaultServers,
    system: RunningSystem,
    http: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
) -> None:
    result = await under_load(
        "mariadb-down-10s",
        server_down(servers.stop_mariadb, servers.start_mariadb, "database", seconds=10),
        system=system,
        http=http,
        make_merchant=make_merchant,
        sessions=sessions,
    )
    assert result.answers.get("503", 0) > 0  # the API said so while its database was away


async def test_webhook_receiver_hangs_then_recovers(
    system: RunningSystem,
    http: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
) -> None:
    async def fault(_: httpx.AsyncClient, receiver: WebhookReceiver) -> None:
        receiver.always(Reply(hang=True))
        hung_from = len(receiver.requests)
        await receiver.wait_for_requests(hung_from + 10, within=30)  # attempts time out
        await asyncio.sleep(8)
        receiver.always(Reply())

    await under_load(
        "webhook-receiver-hangs",
        fault,
        system=system,
        http=http,
        make_merchant=make_merchant,
        sessions=sessions,
    )


async def test_broker_connections_cut_by_an_operator(
    system: RunningSystem,
    http: httpx.AsyncClient,
    make_merchant: MerchantFactory,
    sessions: SessionFactory,
    infrastructure: Infrastructure,
    servers: FaultServers,
) -> None:
    vhost = infrastructure.amqp_url.rsplit("/", 1)[-1]

    async def fault(http: httpx.AsyncClient, _receiver: WebhookReceiver) -> None:
        for _round in range(2):
            # relay, processor and webhooks reconnect by themselves (the API's readiness probe
            # only when /ready is next asked): wait until the three are back, then cut again
            await eventually(
                lambda: _listed(servers, vhost, 3), within=60, what="services reconnected"
            )
            assert await asyncio.to_thread(servers.close_connections, vhost) >= 3
            await asyncio.sleep(2)
        await eventually(lambda: _ready(http), within=60, what="ready again")

    await under_load(
        "connections-cut",
        fault,
        system=system,
        http=http,
        make_merchant=make_merchant,
        sessions=sessions,
    )


async def _listed(servers: FaultServers, vhost: str, count: int) -> bool:
    return len(await asyncio.to_thread(servers.connections_of, vhost)) >= count


async def _not_ready(http: httpx.AsyncClient) -> tuple[int, dict[str, str]] | None:
    status, checks = await readiness(http)
    return (status, checks) if status == 503 else None


async def _ready(http: httpx.AsyncClient) -> bool:
    return (await readiness(http))[0] == 200
