"""What happened to the payouts a phase created, read from where a merchant or an operator would
see it: the payout rows and the event log (MySQL), and the webhooks the receiver got."""

import asyncio
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts.domain.statuses import PayoutStatus

NOT_FINAL = tuple(
    status.value
    for status in PayoutStatus
    if status not in (PayoutStatus.SUCCESS, PayoutStatus.FAILED, PayoutStatus.REVERSED)
)
SUCCEEDED_EVENT = "payout.succeeded"


def naive_utc(moment: float) -> datetime:
    return datetime.fromtimestamp(moment, UTC).replace(tzinfo=None)


def epoch(value: datetime | str) -> float:
    """Seconds since the epoch of a naive-UTC DATETIME or an ISO-8601 wire timestamp."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


@dataclass(frozen=True)
class PayoutOutcome:
    status: str
    created_at: float
    final_at: float | None  # when its payout.succeeded event was recorded


@dataclass(frozen=True)
class Receipt:
    received_at: float
    webhook_id: str
    type: str
    payout_id: str
    payout_created_at: float
    event_created_at: float
    signature_valid: bool
    client_port: int


class Receiver:
    """The control routes of bench.receiver."""

    def __init__(self, base_url: str) -> None:
        self.client = httpx.AsyncClient(base_url=base_url, timeout=30)

    async def add_secrets(self, secrets: dict[str, str]) -> None:
        (await self.client.post("/_bench/secrets", json=secrets)).raise_for_status()

    async def count(self, since: float) -> int:
        """Distinct webhooks received of the events created since `since` (epoch seconds)."""
        answer = await self.client.get("/_bench/count", params={"since": repr(since)})
        count: int = answer.json()["count"]
        return count

    async def take(self) -> tuple[list[Receipt], int]:
        """Every receipt since the last take (and how many bodies were malformed), then forget."""
        data = (await self.client.get("/_bench/received", params={"clear": "1"})).json()
        receipts = [
            Receipt(
                received_at=raw["received_at"],
                webhook_id=raw["webhook_id"],
                type=raw["type"],
                payout_id=raw["payout_id"],
                payout_created_at=epoch(raw["payout_created_at"]),
                event_created_at=epoch(raw["event_created_at"]),
                signature_valid=raw["signature_valid"],
                client_port=raw["client_port"],
            )
            for raw in data["receipts"]
        ]
        return receipts, int(data["malformed"])

    async def close(self) -> None:
        await self.client.aclose()


async def _scalar(engine: AsyncEngine, sql: str, **params: Any) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text(sql), params)).scalar_one())


async def drain(
    engine: AsyncEngine, receiver: Receiver | None, since: float, limit_seconds: float
) -> float:
    """Wait until every payout created since `since` is final and (with webhooks) every event
    recorded since then was received; returns the seconds it took (>= limit: gave up)."""
    started = time.monotonic()
    # Whole milliseconds: the events' wire createdAt (which the receiver compares) has no more.
    since = math.floor(since * 1000) / 1000
    statuses = ", ".join(f"'{status}'" for status in NOT_FINAL)
    while time.monotonic() - started < limit_seconds:
        pending = await _scalar(
            engine,
            f"SELECT COUNT(*) FROM payouts WHERE status IN ({statuses}) AND created_at >= :since",
            since=naive_utc(since),
        )
        if pending == 0 and receiver is not None:
            events = await _scalar(
                engine,
                "SELECT COUNT(*) FROM payout_events WHERE created_at >= :since",
                since=naive_utc(since),
            )
            pending = events - await receiver.count(since)
        if pending <= 0:
            return time.monotonic() - started
        await asyncio.sleep(0.25)
    return time.monotonic() - started


async def payout_outcomes(engine: AsyncEngine, since: float) -> dict[str, PayoutOutcome]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT p.id, p.status, p.created_at, e.created_at FROM payouts p "
                "LEFT JOIN payout_events e ON e.payout_id = p.id AND e.type = :succeeded "
                "WHERE p.created_at >= :since"
            ),
            {"succeeded": SUCCEEDED_EVENT, "since": naive_utc(since)},
        )
        return {
            payout_id: PayoutOutcome(
                status, epoch(created_at), epoch(final_at) if final_at else None
            )
            for payout_id, status, created_at, final_at in rows
        }


async def recorded_event_ids(engine: AsyncEngine, since: float) -> set[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT id FROM payout_events WHERE created_at >= :since"),
            {"since": naive_utc(since)},
        )
        return {event_id for (event_id,) in rows}


DATABASE_COUNTERS = (
    "Com_commit",
    "Innodb_data_fsyncs",
    "Innodb_row_lock_waits",
    "Innodb_row_lock_time",
    "Innodb_deadlocks",
    "Questions",
)


async def database_counters(engine: AsyncEngine) -> dict[str, int]:
    """Server-wide counters (anyone else's queries included): statements, commits, fsyncs,
    row-lock waits, to tell waiting on locks or disk from burning CPU."""
    names = ", ".join(f"'{name}'" for name in DATABASE_COUNTERS)
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(f"SHOW GLOBAL STATUS WHERE Variable_name IN ({names})")
        )
        return {name: int(value) for name, value in rows}


async def outbox_rows_sent(engine: AsyncEngine, start: float, end: float) -> int:
    """Messages the relays published in [start, end]: the system's own broker throughput."""
    return await _scalar(
        engine,
        "SELECT COUNT(*) FROM outbox WHERE sent_at >= :start AND sent_at < :end",
        start=naive_utc(start),
        end=naive_utc(end),
    )
