"""The floor: the raw cost of the work a payout create does, without our code.

- `create_transaction_floor`: the SQL statements one `POST /payouts` sent before the API moved
  to one transaction per create (API-key lookup, the idempotency claim, the create transaction:
  three transactions), in the same order, on plain asyncmy connections, one per client: no
  SQLAlchemy, no pool pings, no FastAPI. Left as it was on purpose: it is the fixed reference
  work the targets' ratios divide by, so runs before and after a change of the API compare.
- `broker_floor`: persistent publish (confirms, mandatory) + consume + ack round trips through a
  quorum queue, the same number in flight as there are clients.
- `http_floor`: a trivial FastAPI endpoint (bench/trivial_app.py) under the same load generator.
"""

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aio_pika
import asyncmy
import orjson
from sqlalchemy.engine import URL, make_url

from bench.load import PayoutRequests, Target, closed_loop
from bench.processes import BackgroundProcess
from bench.stats import LatencySummary
from cli.merchants import NewMerchant
from contracts.api_keys import hash_api_key
from tests.support.system import free_port

AMOUNT = Decimal("100.00")
FLOOR_QUEUE = "bench.floor-round-trip"
WARM_UP_SECONDS = 0.5  # before a floor counts: connections made, caches warm
# A payout event body of the size the system stores and publishes.
EVENT_BODY = orjson.dumps(
    {
        "schemaVersion": 1,
        "id": "evt_" + "0" * 24,
        "type": "payout.created",
        "event": "PAYOUT_CREATED",
        "createdAt": "2026-01-01T00:00:00.000Z",
        "merchantId": str(uuid.UUID(int=0)),
        "payout": {
            "id": str(uuid.UUID(int=0)),
            "merchantReference": "bench-floor-000000",
            "amount": "100.00",
            "currency": "PKR",
            "destType": "WALLET",
            "bankCode": None,
            "walletCode": "JAZZCASH",
            "accountNumber": "03001230001",
            "accountTitle": "Account Holder",
            "purpose": None,
            "status": "PENDING",
            "failureReason": None,
            "failureCode": None,
            "pspReference": None,
            "attempts": 0,
            "processedAt": None,
            "createdAt": "2026-01-01T00:00:00.000Z",
            "updatedAt": "2026-01-01T00:00:00.000Z",
        },
    }
)


@dataclass(frozen=True)
class FloorResult:
    name: str
    unit: str  # txn/s, msgs/s, req/s
    per_second: float
    latency: LatencySummary
    errors: int

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "perSecond": self.per_second,
            "latencyMs": self.latency.__dict__,
            "errors": self.errors,
        }


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


async def _create_request_sql(
    cursor: Any, connection: Any, merchant_id: str, key_hash: str
) -> None:
    """What one create sent to MySQL before the one-transaction API: three transactions."""
    now = _now()
    payout_id, idempotency_key = str(uuid.uuid4()), str(uuid.uuid4())
    reference = f"floor-{payout_id[:18]}"
    await cursor.execute(
        "SELECT id, name, api_key_hash, is_active, webhook_url, webhook_secret, "
        "previous_webhook_secret, previous_secret_expires_at, created_at "
        "FROM merchants WHERE api_key_hash = %s",
        (key_hash,),
    )
    await cursor.fetchall()
    await connection.commit()
    await cursor.execute(
        "INSERT INTO idempotency_keys (merchant_id, `key`, method, path, request_hash, locked_at, "
        "created_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            merchant_id,
            idempotency_key,
            "POST",
            "/api/v1/payouts",
            "0" * 64,
            now,
            now,
            now + timedelta(days=1),
        ),
    )
    await connection.commit()
    await cursor.execute(
        "SELECT code, kind, name, iban_code, is_active FROM directory_institutions WHERE code = %s",
        ("JAZZCASH",),
    )
    await cursor.fetchall()
    await cursor.execute(
        "SELECT merchant_id FROM balances WHERE merchant_id = %s FOR UPDATE", (merchant_id,)
    )
    await cursor.fetchall()
    await cursor.execute(
        "SELECT id FROM payouts WHERE merchant_id = %s AND merchant_reference = %s",
        (merchant_id, reference),
    )
    await cursor.fetchall()
    await cursor.execute(
        "INSERT INTO payouts (id, merchant_id, merchant_reference, amount, currency, dest_type, "
        "bank_code, wallet_code, account_number, account_title, purpose, status, failure_reason, "
        "failure_code, psp_reference, attempts, hold_cycle, processed_at, created_at, updated_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            payout_id,
            merchant_id,
            reference,
            AMOUNT,
            "PKR",
            "WALLET",
            None,
            "JAZZCASH",
            "03001230001",
            "Account Holder",
            None,
            "PENDING",
            None,
            None,
            None,
            0,
            1,
            None,
            now,
            now,
        ),
    )
    await cursor.execute(
        "UPDATE balances SET available = available + %s, held = held + %s, "
        "version = version + %s, updated_at = %s WHERE merchant_id = %s AND available >= %s",
        (-AMOUNT, AMOUNT, 1, now, merchant_id, AMOUNT),
    )
    await cursor.execute(
        "SELECT available, held FROM balances WHERE merchant_id = %s", (merchant_id,)
    )
    available, held = (await cursor.fetchall())[0]
    await cursor.execute(
        "INSERT INTO ledger_journals (merchant_id, payout_id, hold_cycle, kind, description, "
        "created_at) VALUES (%s, %s, %s, %s, %s, %s)",
        (merchant_id, payout_id, 1, "HOLD", "Funds held for payout", now),
    )
    journal_id = cursor.lastrowid
    await cursor.executemany(
        "INSERT INTO ledger_lines (journal_id, merchant_id, account, amount, balance_after, "
        "available_after, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        [
            (journal_id, merchant_id, "AVAILABLE", -AMOUNT, available + held, available, now),
            (journal_id, merchant_id, "HELD", AMOUNT, available + held, available, now),
        ],
    )
    await cursor.execute(
        "INSERT INTO payout_events (id, merchant_id, payout_id, type, `body`, created_at) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (f"evt_{uuid.uuid4().hex[:24]}", merchant_id, payout_id, "payout.created", EVENT_BODY, now),
    )
    headers = json.dumps({"x-payout-id": payout_id, "x-merchant-id": merchant_id})
    for exchange, routing_key, body in (
        ("payouts.events", "payout.created", EVENT_BODY),
        ("payouts.commands", "payout.process", EVENT_BODY[:120]),
    ):
        await cursor.execute(
            "INSERT INTO outbox (exchange, routing_key, `body`, headers, correlation_id, "
            "delay_ms, created_at, publish_attempts) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (exchange, routing_key, body, headers, "req_floor", None, now, 0),
        )
    await cursor.execute(
        "UPDATE idempotency_keys SET status_code = %s, response_body = %s "
        "WHERE merchant_id = %s AND `key` = %s",
        (201, EVENT_BODY[:480], merchant_id, idempotency_key),
    )
    await connection.commit()


async def _floor_connection(url: URL) -> asyncmy.Connection:
    connection = await asyncmy.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "root",
        password=url.password or "",
        database=url.database,
        autocommit=False,
    )
    async with connection.cursor() as cursor:
        await cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    return connection


async def create_transaction_floor(
    database_url: str, merchants: Sequence[NewMerchant], *, concurrency: int, duration: float
) -> FloorResult:
    """Counted over `duration` after every client has connected and warmed up: connecting is
    not the work this floor measures (counted, it lowered the floor the targets divide by)."""
    url = make_url(database_url)
    latencies: list[float] = []
    errors = 0
    connections = await asyncio.gather(*(_floor_connection(url) for _ in range(concurrency)))
    started = time.perf_counter() + WARM_UP_SECONDS
    deadline = started + duration

    async def client(number: int, connection: asyncmy.Connection) -> None:
        nonlocal errors
        merchant = merchants[number % len(merchants)]
        key_hash = hash_api_key(merchant.api_key)
        async with connection.cursor() as cursor:
            while (began := time.perf_counter()) < deadline:
                counted = began >= started
                try:
                    await _create_request_sql(cursor, connection, merchant.merchant_id, key_hash)
                except asyncmy.errors.Error:  # a deadlock counts; the next one goes on
                    errors += counted
                    await connection.rollback()
                    continue
                if counted:
                    latencies.append(time.perf_counter() - began)

    try:
        await asyncio.gather(*(client(n, c) for n, c in enumerate(connections)))
    finally:
        for connection in connections:
            connection.close()
    elapsed = time.perf_counter() - started
    return FloorResult(
        "create request SQL via asyncmy",
        "txn/s",
        len(latencies) / elapsed,
        LatencySummary.of_seconds(latencies),
        errors,
    )


async def broker_floor(amqp_url: str, *, concurrency: int, duration: float) -> FloorResult:
    """Round trips through one quorum queue: publish persistent + confirm, consume, ack."""
    publisher = await aio_pika.connect(amqp_url)
    consumer = await aio_pika.connect(amqp_url)
    latencies: list[float] = []
    errors = 0
    waiting: dict[str, asyncio.Future[None]] = {}
    try:
        channel = await publisher.channel(publisher_confirms=True, on_return_raises=True)
        queue = await channel.declare_queue(
            FLOOR_QUEUE, durable=True, arguments={"x-queue-type": "quorum"}
        )
        consuming = await consumer.channel()
        await consuming.set_qos(prefetch_count=concurrency * 2)
        consumed_queue = await consuming.get_queue(FLOOR_QUEUE)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            future = waiting.pop(message.message_id or "", None)
            if future is not None and not future.done():
                future.set_result(None)

        consumer_tag = await consumed_queue.consume(on_message)
        deadline = time.perf_counter() + duration
        ids = itertools.count()

        async def client() -> None:
            nonlocal errors
            loop = asyncio.get_running_loop()
            while time.perf_counter() < deadline:
                message_id = str(next(ids))
                arrived = waiting[message_id] = loop.create_future()
                started = time.perf_counter()
                try:
                    await channel.default_exchange.publish(
                        aio_pika.Message(
                            EVENT_BODY,
                            message_id=message_id,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=FLOOR_QUEUE,
                        mandatory=True,
                    )
                    await asyncio.wait_for(arrived, timeout=10)
                except (aio_pika.exceptions.AMQPError, TimeoutError):
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        await consumed_queue.cancel(consumer_tag)  # before the delete, so the broker need not
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await consumer.close()
        await publisher.close()
    return FloorResult(
        "RabbitMQ publish+consume round trip (confirms, persistent, quorum)",
        "msgs/s",
        len(latencies) / elapsed,
        LatencySummary.of_seconds(latencies),
        errors,
    )


async def http_floor(
    python: str, *, concurrency: int, duration: float, log_path: Any
) -> FloorResult:
    """A trivial FastAPI endpoint served like the API, driven by the same load generator."""
    port = free_port()
    server = BackgroundProcess.start(
        [python, "-m", "bench.trivial_app", "--port", str(port)], log_path
    )
    try:
        await server.wait_for_port(port)
        requests = PayoutRequests(["mpk_test_floor"], run_tag="floor")
        target = Target("127.0.0.1", port)
        await closed_loop(target, requests, concurrency=concurrency, duration=WARM_UP_SECONDS)
        started = time.perf_counter()
        results = await closed_loop(target, requests, concurrency=concurrency, duration=duration)
        elapsed = time.perf_counter() - started
    finally:
        server.stop()
    ok = [result for result in results if result.ok]
    return FloorResult(
        "trivial FastAPI endpoint (uvicorn, 1 worker)",
        "req/s",
        len(ok) / elapsed,
        LatencySummary.of_seconds(result.latency for result in ok),
        len(results) - len(ok),
    )
