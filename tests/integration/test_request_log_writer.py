"""The request log's writer against the real database: a flush returns only once every row added
before it is committed, those a flush already under way took included (the dashboard's
readiness page reads them right after)."""

import asyncio
import uuid

from sqlalchemy import func, select

from api_service.request_log.writer import RequestLogWriter
from contracts.db.engine import SessionFactory, utcnow
from contracts.db.models import ApiRequestRecord


def call_of(merchant_id: str) -> dict[str, object]:
    return {
        "merchant_id": merchant_id,
        "request_id": f"req_{uuid.uuid4().hex}",
        "method": "POST",
        "path": "/api/v1/payouts",
        "status": 201,
        "latency_ms": 3,
        "idempotency_key": None,
        "replayed": False,
        "fault": None,
        "retry_after_seconds": None,
        "request_body": None,
        "response_body": None,
        "started_at": utcnow(),
    }


async def recorded(sessions: SessionFactory, merchant_id: str) -> int:
    async with sessions() as session:
        count = await session.scalar(
            select(func.count()).where(ApiRequestRecord.merchant_id == merchant_id)
        )
        return int(count or 0)


async def test_a_flush_returns_once_the_rows_a_flush_under_way_took_are_written(
    sessions: SessionFactory,
) -> None:
    writer = RequestLogWriter(sessions)
    merchant_id = str(uuid.uuid4())
    writer.add(call_of(merchant_id))
    under_way = asyncio.create_task(writer.flush())  # the timer's flush, say
    await asyncio.sleep(0)  # it took the row and is writing it

    await writer.flush()

    assert under_way.done(), "flush returned while the rows it was asked for were being written"
    assert await recorded(sessions, merchant_id) == 1
